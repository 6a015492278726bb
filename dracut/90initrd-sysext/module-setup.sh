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
    # dm_mod and dm_verity: verity-protected images (DDIs, sidecar hash trees).
    # hostonly='': needed whether or not the building host has them loaded.
    hostonly='' instmods loop squashfs erofs overlay dm_mod dm_verity
    # dm-verity picks the best SHA-256 registered when its table is loaded and
    # keeps it for the life of the device. On x86-64 that is the built-in
    # generic code unless sha256_ssse3 (SSSE3/AVX2/SHA-NI) is loaded first.
    hostonly='' instmods sha256_ssse3
    if [[ -n $(find "$initdir" -path '*/modules/*' -name 'sha256-ssse3.ko*' -print -quit) ]]; then
        mkdir -p "$initdir/usr/lib/modules-load.d"
        echo sha256_ssse3 >"$initdir/usr/lib/modules-load.d/initrd-sysext-sha256.conf"
    fi
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
    # Certificates that verity root hash signatures are checked against, at
    # the paths the activator reads in the initrd. With one present, its
    # default policy is to merge signed images only.
    local crt
    for crt in "$dracutsysrootdir"/etc/verity.d/*.crt "$dracutsysrootdir"/usr/lib/verity.d/*.crt; do
        [[ -f $crt ]] && inst_simple "${crt#"$dracutsysrootdir"}"
    done
    $SYSTEMCTL -q --root "$initdir" enable initrd-sysext.service
    # We are the merger in this initrd: keep upstream's from merging again.
    $SYSTEMCTL -q --root "$initdir" mask systemd-sysext-sysroot.service
}
