#!/usr/bin/env bash
# shellcheck disable=SC2154 # initdir, moddir, systemdsystemunitdir... are set by dracut
# Test-only dracut module: a provisioning step like Ignition's files stage, and
# for bench.sh a record of the merge units' timestamps and a unit that runs
# /usr/bin/true and one that runs our binary doing nothing, to compare them with.
check() { return 255; }
depends() { echo systemd; }
install() {
    inst_multiple sh mkdir ln systemctl true
    inst_simple "$moddir/its-provision.sh" /usr/bin/its-provision
    local u
    for u in its-provision.service its-initrd-times.service its-true.service its-idle.service; do
        inst_simple "$moddir/$u" "$systemdsystemunitdir/$u"
        $SYSTEMCTL -q --root "$initdir" enable "$u"
    done
}
