#!/usr/bin/env bash
# Build (once) a QEMU test guest and print its directory:
#   tests-qemu/build-guest.sh [bookworm|trixie|forky|trixie-itools]  (default: trixie)
# The activator is installed from its Debian package (pkg/deb/build.sh, made
# from the binary under test) with dpkg -i inside the guest root. The
# directory holds vmlinuz, root.img (ext4) and initrd-VARIANT.img, one per
# initrd variant of that suite (below), built by the guest's own dracut:
#   ours     our dracut module (every suite)
#   plain    no merge in the initrd (trixie: the after-boot baselines)
#   sysroot  a test module running systemd-sysext --root=/sysroot merge (trixie)
#   signed   ours, built while the guest's /etc/verity.d held $ITS_TRUSTED_CRT,
#            so the module puts that certificate into it (trixie)
#   upstream dracut's own systemd-sysext module, no initrd-sysext (forky)
#   both     ours and dracut's systemd-sysext module together (forky)
# Forky's initrds also carry a test provisioning unit (its-provision), which
# acts only for scenarios that leave images in /var/lib/its/provision.
# The package makes dracut add our module to every initrd, so variants without
# it omit it. trixie-itools is the trixie guest with initramfs-tools instead of
# dracut (pkg/deb/initramfs-tools-root.sh): its "ours" is the initramfs the
# package's update-initramfs trigger built, "signed" one rebuilt with the
# certificate in /etc/verity.d.
# and kernels/SUITE/{vmlinuz,kver,modules,initrd-ours.img} for each other
# suite's kernel the guest boots (trixie: bullseye, bookworm, forky). Their
# modules stay out of root.img; lib.sh copies them in for a scenario that
# boots that kernel.
# Cached under $INITRD_SYSEXT_CACHE keyed by a hash of everything that goes
# into it: the base tree, this recipe, kernel.sh, tests-qemu/guest/, dracut/,
# the activator binary and the certificate. Scenario-specific files are added
# per scenario by run.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}
bin=${INITRD_SYSEXT_BIN:-$repo/target/x86_64-unknown-linux-musl/release/initrd-sysext}
suite=${1:-trixie}
crt=${ITS_TRUSTED_CRT:-}

# Per suite: initrd variants besides "ours" (NAME:DRACUT-MODULE) and other
# suites' kernels. Adding a variant is one word here.
variants=() kernels=() ours=initrd-sysext
case $suite in
trixie) variants=(plain: sysroot:its-sysroot-merge) kernels=(bullseye bookworm forky) ;;
bookworm) ;;
forky) ours="initrd-sysext its-provision" variants=("upstream:systemd-sysext its-provision") ;;
trixie-itools) ;;
*) echo "build-guest: unknown suite: $suite (bookworm, trixie, forky or trixie-itools)" >&2 && exit 2 ;;
esac

if [[ $suite == trixie-itools ]]; then
    base=$(bash "$repo/pkg/deb/initramfs-tools-root.sh")
else
    base=$(bash "$repo/guest/base.sh" "$suite")
fi
binsum=none
[[ -x $bin ]] && binsum=$(sha256sum <"$bin")
# The package's inputs, not the .deb's bytes: its changelog date moves with
# every commit.
key=$({
    echo "$suite $base $binsum"
    [[ -z $crt ]] || cat "$crt"
    cat "${BASH_SOURCE[0]}" "$here/kernel.sh"
    find "$here/guest" "$repo/dracut" "$repo/initramfs-tools" "$repo/pkg/install.sh" "$repo/pkg/deb/build.sh" \
        "$repo/pkg/deb/control.in" "$repo/pkg/deb/triggers" -type f -print0 | sort -z | xargs -0 cat
} | sha256sum | cut -c1-16)
out=$cache/guest-$suite-$key

mkdir -p "$cache"
exec 9>"$out.lock"
flock 9
if [[ -d $out ]]; then
    echo "$out"
    exit 0
fi
echo "build-guest: building $out (activator: $binsum)" >&2
tmp=$out.tmp.$$
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/tree
mkdir -p "$tmp"
cp -a "$base" "$tree"

# serial-getty's vhangup() cuts the console log short. The others are
# periodic maintenance that only steals TCG cycles from the boots we time.
for unit in serial-getty@ttyS0.service e2scrub_reap.service e2scrub_all.timer \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer; do
    ln -sf /dev/null "$tree/etc/systemd/system/$unit"
done
echo its-guest >"$tree/etc/hostname"

# Container root for quadlet's Rootfs= (there is no registry): static busybox.
rootfs=$tree/var/lib/its/busybox
mkdir -p "$rootfs"/{bin,etc,dev,proc,sys,tmp,run}
cp "$tree/usr/bin/busybox" "$rootfs/bin/busybox"
for applet in sh echo cat id ls sleep true; do
    ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

# The quadlet exists before first boot (so does /etc/containers/systemd).
install -D -m 0644 "$here/guest/hello.container" \
    "$tree/etc/containers/systemd/hello.container"
install -D -m 0755 "$here/guest/collect.sh" "$tree/usr/local/lib/its/collect.sh"
install -m 0755 "$here/guest/mntid" "$tree/usr/local/lib/its/mntid"
install -m 0644 "$here/guest/its-collect.service" "$here/guest/ensure-sysext.service" \
    "$here/guest/its-mntid.service" "$tree/etc/systemd/system/"
mkdir -p "$tree/etc/systemd/system/multi-user.target.wants" "$tree/etc/its"
ln -s ../its-collect.service "$tree/etc/systemd/system/multi-user.target.wants/"
cp -r "$here/guest/91its-sysroot-merge" "$here/guest/91its-provision" "$tree/usr/lib/dracut/modules.d/"
# dracut 112's systemd-sysext module needs systemd-veritysetup, which is in
# systemd-cryptsetup (not in the base).
if [[ $suite == forky ]]; then
    # shellcheck source=../sysext/podman/lib.sh
    . "$repo/sysext/podman/lib.sh"
    apt_install "$tree" systemd-cryptsetup >&2
fi

# in_tree CMD...: run CMD chrooted in the guest tree with /dev, /proc and /sys;
# a private mount namespace drops them on exit. INITRD_SYSEXT_BIN names the
# binary under test on this host: our dracut module would look for it in the
# tree, fail, and leave itself out of the initrd.
in_tree() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --propagation private bash -euc '
        mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc"; mount -t sysfs sys "$1/sys"
        exec env -u INITRD_SYSEXT_BIN chroot "$@"' _ "$tree" "$@" >&2
}

# The activator from its package, as an admin installs it. On dracut guests
# INITRD=No keeps the update-initramfs trigger from building an initrd nobody
# boots (the variants below are built explicitly; forky's dracut 112 builds
# one anyway, removed below); on trixie-itools the trigger builds the
# initramfs that is booted.
if [[ $binsum != none ]]; then
    deb=$(bash "$repo/pkg/deb/build.sh" "$bin" "$tmp/deb" 2>/dev/null | tail -n1)
    cp "$deb" "$tree/tmp/"
    no_initrd=(env INITRD=No)
    [[ $suite != trixie-itools ]] || no_initrd=()
    in_tree "${no_initrd[@]}" dpkg -i "/tmp/${deb##*/}"
    rm "$tree/tmp/${deb##*/}"
    variants+=("ours:$ours")
    [[ $suite != forky ]] || variants+=("both:$ours systemd-sysext")
else
    echo "build-guest: no activator at $bin; scenarios with our initrd will fail" >&2
fi

# initrds KVER DIR NAME:DRACUT-MODULE...: DIR/initrd-NAME.img for kernel
# KVER, built inside the guest root with the guest's dracut; a private mount
# namespace drops the bind mounts on exit. Under TCG every module and udev
# rule costs: take only the virtio disk driver and its PCI transport (a module
# before 6.12; the dracut modules add their own) and drop what a VM on plain
# disks never uses. A variant whose modules do not name initrd-sysext omits it.
# trixie-itools: the initramfs update-initramfs made (the package's trigger),
# or, for "signed", a new one.
initrds() {
    local kver=$1 dir=$2 v add
    shift 2
    mkdir -p "$dir"
    for v in "$@"; do
        if [[ $suite == trixie-itools ]]; then
            [[ $v == ours:* ]] || in_tree update-initramfs -u -k "$kver"
            cp "$tree/boot/initrd.img-$kver" "$dir/initrd-${v%%:*}.img"
            continue
        fi
        add=()
        [[ " ${v#*:} " == *" initrd-sysext "* ]] || add=(--omit initrd-sysext)
        [[ -z ${v#*:} ]] || add+=(--add "${v#*:}")
        in_tree dracut --quiet --force --no-hostonly --no-hostonly-cmdline \
            --compress zstd --drivers "virtio_blk virtio_pci" "${add[@]}" \
            --omit "nvdimm overlay-root resume lunmask hwdb virtfs virtiofs qemu" \
            --omit "systemd-pcrphase systemd-battery-check terminfo" --kver "$kver" "/boot/its-${v%%:*}.img"
        mv "$tree/boot/its-${v%%:*}.img" "$dir/initrd-${v%%:*}.img"
    done
}
kver=$(ls "$tree/usr/lib/modules")
initrds "$kver" "$tmp" "${variants[@]}"
# The certificate is only in the initrd: the root stays as it was.
if [[ $binsum != none && -n $crt ]]; then
    install -D -m 0644 "$crt" "$tree/etc/verity.d/its-trusted.crt"
    initrds "$kver" "$tmp" signed:initrd-sysext
    rm -r "$tree/etc/verity.d"
fi
# Split kernel packages (forky) ship it in the module directory; their
# postinst links it into /boot.
vmlinuz=$tree/boot/vmlinuz-$kver
[[ -e $vmlinuz ]] || vmlinuz=$tree/usr/lib/modules/$kver/vmlinuz
cp "$vmlinuz" "$tmp/vmlinuz"
rm -f "$tree/boot/initrd.img-$kver"

# Other suites' kernels: their modules go into the tree aside the guest's own
# (only unpacked, never installed: a bookworm package carries /lib), get
# their modules.dep from the guest's depmod and an initrd from its dracut,
# then move out again.
if [[ $binsum != none ]]; then
    for k in "${kernels[@]}"; do
        kdir=$(bash "$here/kernel.sh" "$k")
        kv=$(cat "$kdir/kver")
        cp -a "$kdir/modules/$kv" "$tree/usr/lib/modules/"
        chroot "$tree" depmod -a "$kv"
        initrds "$kv" "$tmp/kernels/$k" ours:initrd-sysext
        mv "$tree/usr/lib/modules/$kv" "$tmp/kernels/$k/modules"
        cp "$kdir/vmlinuz" "$tmp/kernels/$k/vmlinuz"
        echo "$kv" >"$tmp/kernels/$k/kver"
    done
fi

# 3 GiB sparse: room for the extension images and podman's storage.
mkfs.ext4 -q -L root -d "$tree" "$tmp/root.img" 3G >&2
rm -rf "$tree"
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
