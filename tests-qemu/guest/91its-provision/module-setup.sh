#!/usr/bin/env bash
# shellcheck disable=SC2154 # initdir, moddir, systemdsystemunitdir... are set by dracut
# Test-only dracut module: a provisioning step like Ignition's files stage.
check() { return 255; }
depends() { echo systemd; }
install() {
    inst_multiple sh mkdir ln
    inst_simple "$moddir/its-provision.sh" /usr/bin/its-provision
    inst_simple "$moddir/its-provision.service" "$systemdsystemunitdir/its-provision.service"
    $SYSTEMCTL -q --root "$initdir" enable its-provision.service
}
