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
    install_certificates
    $SYSTEMCTL -q --root "$initdir" enable initrd-sysext.service
    # We are the merger in this initrd: keep upstream's from merging again.
    $SYSTEMCTL -q --root "$initdir" mask systemd-sysext-sysroot.service systemd-confext-sysroot.service
}

# The certificates verity root hash signatures are checked against: this
# system's /etc/verity.d and /usr/lib/verity.d, taken now, by root, at the same
# paths in the initrd, where they are trusted as much as the initrd itself. At
# boot the activator reads these and the sysroot's /usr/lib/verity.d, never its
# /etc/verity.d. Masks (a symlink to /dev/null, an empty file) are copied
# too: they revoke a key of that name in a later directory, the sysroot's
# /usr/lib/verity.d included. A broken entry is copied as it is, so the
# initrd fails closed on it (policy signed, the entry named in the log).
install_certificates() {
    local crt rel
    for crt in "$dracutsysrootdir"/etc/verity.d/*.crt "$dracutsysrootdir"/usr/lib/verity.d/*.crt; do
        [[ -e $crt || -L $crt ]] || continue
        rel=${crt#"$dracutsysrootdir"}
        if [[ -L $crt && ( $(readlink "$crt") == /dev/null || ! -e $crt ) ]]; then
            [[ -e $crt ]] || dwarn "initrd-sysext: $crt is a dangling symlink; the initrd will trust nothing by it"
            mkdir -p "$initdir${rel%/*}"
            ln -sfn "$(readlink "$crt")" "$initdir$rel"
        elif [[ -f $crt ]]; then
            inst_simple "$rel"
        else
            dwarn "initrd-sysext: $crt is not a regular file; the initrd will trust nothing by it"
            mkdir -p "$initdir$rel"
        fi
    done
}
