#!/usr/bin/env bash
# Build (once) a QEMU test guest and print its directory:
#   tests-qemu/build-guest.sh [bookworm|trixie|forky]     (default: trixie)
# The directory holds vmlinuz, root.img (ext4) and initrd-VARIANT.img, one
# per initrd variant of that suite (below), built by the guest's own dracut:
#   ours     our dracut module (every suite)
#   plain    no merge in the initrd (trixie: the after-boot baselines)
#   sysroot  a test module running systemd-sysext --root=/sysroot merge (trixie)
#   signed   ours, built while the guest's /etc/verity.d held $ITS_TRUSTED_CRT,
#            so the module puts that certificate into it (trixie)
#   upstream dracut's own systemd-sysext module, no initrd-sysext (forky)
#   both     ours and dracut's systemd-sysext module together (forky)
# Forky's initrds also carry a test provisioning unit (its-provision), which
# acts only for scenarios that leave images in /var/lib/its/provision.
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
*) echo "build-guest: unknown suite: $suite (bookworm, trixie or forky)" >&2 && exit 2 ;;
esac

base=$(bash "$repo/guest/base.sh" "$suite")
binsum=none
[[ -x $bin ]] && binsum=$(sha256sum <"$bin")
key=$({
    echo "$suite $base $binsum"
    [[ -z $crt ]] || cat "$crt"
    cat "${BASH_SOURCE[0]}" "$here/kernel.sh"
    find "$here/guest" "$repo/dracut" -type f -print0 | sort -z | xargs -0 cat
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

# Our binary and dracut module, installed as a package would install them.
install_activator() {
    DESTDIR=$tree PREFIX=/usr bash "$repo/dracut/install.sh" "$bin"
}
if [[ $binsum != none ]]; then
    install_activator
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
# disks never uses.
initrds() {
    local kver=$1 dir=$2 v
    shift 2
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --propagation private bash -euc '
        tree=$1 kver=$2; shift 2
        mount --rbind /dev "$tree/dev"
        mount -t proc proc "$tree/proc"
        mount -t sysfs sys "$tree/sys"
        for v in "$@"; do
            add=(); [[ -n ${v#*:} ]] && add=(--add "${v#*:}")
            chroot "$tree" dracut --quiet --force --no-hostonly --no-hostonly-cmdline \
                --compress zstd --drivers "virtio_blk virtio_pci" "${add[@]}" \
                --omit "nvdimm overlay-root resume lunmask hwdb virtfs virtiofs qemu" \
                --omit "systemd-pcrphase systemd-battery-check terminfo" --kver "$kver" "/boot/its-${v%%:*}.img"
        done' _ "$tree" "$kver" "$@" >&2
    mkdir -p "$dir"
    for v in "$@"; do
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
