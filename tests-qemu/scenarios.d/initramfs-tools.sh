# shellcheck shell=bash
# initramfs-tools (issue 11), sourced by scenarios.sh: the trixie guest with
# initramfs-tools instead of dracut (build-guest.sh trixie-itools), the
# activator installed from its Debian package, whose trigger built the
# initramfs. No systemd in the initrd: the hook's boot script runs the binary
# in init-bottom with INITRD_SYSEXT_LOG=kmsg.
# shellcheck disable=SC2034,SC2154 # tables read by run.sh; res, KEYS_*, PODMAN_* set there
SCENARIOS+=(itools-first-boot itools-toggle-off itools-signed-ddi)
S_INITRD+=([itools-first-boot]=ours [itools-toggle-off]=ours [itools-signed-ddi]=signed)
S_GUEST+=([itools-first-boot]=trixie-itools [itools-toggle-off]=trixie-itools [itools-signed-ddi]=trixie-itools)
S_CMDLINE+=([itools-toggle-off]="rd.sysext=0")

# The package, as dpkg knows it in the booted guest.
put_dpkg_probe() {
    printf '%s\n' '#!/bin/sh' "dpkg-query -W -f='\${Package} \${Status}\\n' initrd-sysext" >"$1/etc/its/scenario.sh"
    chmod +x "$1/etc/its/scenario.sh"
}
initramfs_tools_booted() {
    has "the guest has the package installed" scenario '^initrd-sysext install ok installed$'
    has "initramfs-tools ran the package's boot script" console.log 'Begin: Merging system extensions'
    hasnt "no systemd in the initrd (no switch-root by systemd)" journal 'Switching root'
}

# First boot, a bad image next to the good one, and the kernel's rate limit
# on /dev/kmsg (10 lines per 5 s per open file): podman, a random file, a
# corrupt erofs and 130 small images, each decision one line in the journal.
prep_itools_first_boot() { prep_bad_image "$@"; put_many "$1"; put_dpkg_probe "$1"; }
check_itools_first_boot() {
    initramfs_tools_booted
    quadlet_ran
    hasnt "PID 1 did not reload" pid1 'Reloading'
    merged_by_us
    one_overlay
    has "podman run --rootfs works" podman-run 'ITS-PODMAN-RUN-OK'
    has "garbage.raw named with its reason" journal 'initrd-sysext\[[0-9]+\]: skipped garbage \(.*\): '
    has "corrupt.raw named with its reason" journal 'initrd-sysext\[[0-9]+\]: skipped corrupt \(.*\): '
    has "/usr shows the files of all 130 small images" many '^130$'
    local n
    n=$(grep -cE 'initrd-sysext\[[0-9]+\]: merged its-many-[0-9]{3} from ' "$res/journal" || true)
    if [[ $n == 130 ]]; then
        echo "    ok    all 130 'merged its-many-NNN' lines reached the journal through /dev/kmsg"
    else
        echo "    FAIL  $n of 130 'merged its-many-NNN' lines reached the journal"; fails=$((fails + 1))
    fi
    hasnt "the kernel suppressed none of our lines" journal 'printk: initrd-sysext: [0-9]+ output lines suppressed'
    has "the summary line arrived" journal 'initrd-sysext\[[0-9]+\]: done in .*: 131 merged, 2 skipped'
    has "report.json present" report.json '.'
}
prep_itools_toggle_off() { prep_toggle_off "$@"; put_dpkg_probe "$1"; }
check_itools_toggle_off() {
    initramfs_tools_booted
    check_toggle_off
    has "the reason is logged" journal 'initrd-sysext\[[0-9]+\]: .*rd\.sysext=0'
}
# The signed initramfs: rebuilt by update-initramfs while /etc/verity.d held
# the test certificate, so the hook put it, dm-mod, dm-verity and
# sha256_ssse3 in.
prep_itools_signed_ddi() { prep_signed_ddi "$@"; put_dpkg_probe "$1"; }
check_itools_signed_ddi() {
    initramfs_tools_booted
    check_signed_ddi
    hasnt "PID 1 did not reload" pid1 'Reloading'
}
