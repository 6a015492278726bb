# shellcheck shell=bash disable=SC2034,SC2154 # tables read by run.sh; res, PODMAN_* set there
# Upstream's own initrd merge (issue 9), on the forky guest (systemd 262,
# dracut 112): systemd-sysext-sysroot.service, which dracut's systemd-sysext
# module enables. Its unit is ordered Before=initrd-root-fs.target; a
# provisioning step (Ignition's files stage) writes /sysroot/etc/extensions
# after that target and before initrd-parse-etc.service, and our unit runs
# after initrd-fs.target. Forky's initrds carry a test provisioning unit
# (guest/91its-provision) that links the images a scenario leaves in
# /var/lib/its/provision into /etc/extensions.
#   upstream-both       (test)  both modules in one initrd: ours merges podman
#                               and the provisioned image, upstream's unit
#                               never starts (our module masks it)
#   upstream-provision  (bench) upstream's unit alone, the same images
#   forky-ours, forky-upstream (bench) the side-by-side timing of bench.sh
SCENARIOS+=(upstream-both)
BENCH_SCENARIOS+=(upstream-provision forky-ours forky-upstream)
S_INITRD+=([upstream-both]=both [upstream-provision]=upstream [forky-ours]=ours [forky-upstream]=upstream)
S_GUEST+=([upstream-both]=forky [upstream-provision]=forky [forky-ours]=forky [forky-upstream]=forky)

# The unit's Description in systemd 262; its Starting/Finished lines are
# what the journal shows of it.
upstream_unit='systemd-sysext-sysroot.service - Merge System Extension Images into /sysroot/usr/ and /sysroot/opt/'

# podman in /var/lib/extensions as usual; its-udev (a udev rule) left for
# the provisioning unit, so only a merge before switch-root applies it.
prep_provision() {
    put_podman "$1"
    put_udev_ext "$1"
    mkdir -p "$1/var/lib/its/provision"
    mv "$1/var/lib/extensions/its-udev.raw" "$1/var/lib/its/provision/"
    checks "$1" ""
}
provisioned() {
    has "the provisioning unit linked its-udev into /etc/extensions" journal \
        'its-provision: linked /etc/extensions/its-udev.raw -> /var/lib/its/provision/its-udev.raw'
}

prep_upstream_both() { prep_provision "$@"; }
check_upstream_both() {
    provisioned
    has "our unit merged the provisioned image on this first boot" journal \
        'initrd-sysext\[[0-9]+\]: merged its-udev from /etc/extensions/its-udev.raw'
    merged_by_us
    merged_by_us its-udev
    merged_before_switch_root
    udev_applied
    hasnt "upstream's systemd-sysext-sysroot.service never started (masked)" journal "$upstream_unit"
    one_overlay
    quadlet_ran
    no_boot_reload
}

# What upstream's unit does with a provisioned image: it runs before
# initrd-root-fs.target, so before the provisioning step.
prep_upstream_provision() { prep_provision "$@"; }
check_upstream_provision() {
    provisioned
    has "systemd-sysext-sysroot.service ran" journal "Finished $upstream_unit"
    has "it merged podman from /var/lib/extensions" sysext-status "$PODMAN_NAME"
    hasnt "it did not merge the provisioned its-udev" sysext-status 'its-udev'
    hasnt "so its udev rule was not applied" udev '^E: ITS_UDEV_EXTENSION=applied$'
    quadlet_ran
}

prep_forky_ours() { put_podman "$1"; checks "$1" "plot"; }
check_forky_ours() { merged_by_us; quadlet_ran; }
prep_forky_upstream() { put_podman "$1"; checks "$1" "plot"; }
check_forky_upstream() {
    has "systemd-sysext-sysroot.service ran" journal "Finished $upstream_unit"
    has "findmnt /usr shows the overlay" findmnt-usr 'overlay'
    quadlet_ran
}
