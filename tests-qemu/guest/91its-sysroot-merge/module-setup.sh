#!/usr/bin/env bash
# shellcheck disable=SC2154 # initdir, moddir, systemdsystemunitdir... are set by dracut
# Test-only dracut module for the scenario 8 baseline.
check() { return 255; }
depends() { echo systemd; }
installkernel() { instmods loop squashfs erofs overlay; }
install() {
    inst_multiple systemd-sysext
    inst_simple "$moddir/modules-load.conf" /usr/lib/modules-load.d/its-sysroot-merge.conf
    inst_simple "$moddir/its-sysroot-merge.service" \
        "$systemdsystemunitdir/its-sysroot-merge.service"
    $SYSTEMCTL -q --root "$initdir" enable its-sysroot-merge.service
}
