#!/usr/bin/env bash
# shellcheck disable=SC2154 # initdir, moddir, systemdsystemunitdir... are set by dracut
# dracut module: install the initrd-sysext activator and its unit.
# Include it with `dracut --add initrd-sysext` or add_dracutmodules+=" initrd-sysext ".

# 255: only when asked for; a generic host initrd must not grow a merger.
check() {
    return 255
}

depends() {
    echo systemd
}

installkernel() {
    instmods loop squashfs erofs overlay
}

install() {
    # Where the host has the binary; INITRD_SYSEXT_BIN overrides for builds
    # from a source tree.
    local bin=${INITRD_SYSEXT_BIN:-/usr/bin/initrd-sysext}
    if [[ ! -x $dracutsysrootdir$bin ]]; then
        derror "initrd-sysext: $dracutsysrootdir$bin not found"
        return 1
    fi
    inst_simple "$bin" /usr/bin/initrd-sysext
    inst_simple "$moddir/initrd-sysext.service" \
        "$systemdsystemunitdir/initrd-sysext.service"
    inst_simple "$moddir/modules-load.conf" /usr/lib/modules-load.d/initrd-sysext.conf
    $SYSTEMCTL -q --root "$initdir" enable initrd-sysext.service
    # We are the merger in this initrd: keep upstream's from merging again.
    $SYSTEMCTL -q --root "$initdir" mask systemd-sysext-sysroot.service
}
