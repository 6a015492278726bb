#!/usr/bin/env bash
# Build (once) the QEMU test guest and print its directory:
#   vmlinuz, root.img (ext4), initrd-ours.img (our dracut module),
#   initrd-plain.img (no module), initrd-sysroot.img (scenario 8 baseline),
#   initrd-signed.img (ours, built while the guest's /etc/verity.d held
#   $ITS_TRUSTED_CRT, so the module puts that certificate into it).
# Cached under $INITRD_SYSEXT_CACHE keyed by a hash of everything that goes
# into it: the base tree, this recipe, tests-qemu/guest/, dracut/, the
# activator binary and the certificate. Scenario-specific files are added per scenario by run.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}
bin=${INITRD_SYSEXT_BIN:-$repo/target/x86_64-unknown-linux-musl/release/initrd-sysext}
crt=${ITS_TRUSTED_CRT:-}

base=$(bash "$repo/guest/base.sh")
binsum=none
[[ -x $bin ]] && binsum=$(sha256sum <"$bin")
key=$({
    echo "$base $binsum"
    [[ -z $crt ]] || cat "$crt"
    cat "${BASH_SOURCE[0]}"
    find "$here/guest" "$repo/dracut" -type f -print0 | sort -z | xargs -0 cat
} | sha256sum | cut -c1-16)
out=$cache/guest-$key

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
install -m 0644 "$here/guest/its-collect.service" "$here/guest/ensure-sysext.service" \
    "$tree/etc/systemd/system/"
mkdir -p "$tree/etc/systemd/system/multi-user.target.wants" "$tree/etc/its"
ln -s ../its-collect.service "$tree/etc/systemd/system/multi-user.target.wants/"
cp -r "$here/guest/91its-sysroot-merge" "$tree/usr/lib/dracut/modules.d/"

# Our install recipe, as a package would run it.
if [[ $binsum != none ]]; then
    DESTDIR=$tree PREFIX=/usr bash "$repo/dracut/install.sh" "$bin"
else
    echo "build-guest: no activator at $bin; scenarios 1-6 will fail" >&2
fi

# The initrds are built inside the guest root, with the guest's dracut and
# kernel; a private mount namespace drops the bind mounts on exit. Under TCG
# every module and udev rule costs: take only the virtio disk driver (the
# dracut modules add their own) and drop what a VM on plain disks never uses.
kver=$(ls "$tree/usr/lib/modules")
initrds() { # NAME:DRACUT-MODULE...
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --propagation private bash -euc '
        tree=$1 kver=$2; shift 2
        mount --rbind /dev "$tree/dev"
        mount -t proc proc "$tree/proc"
        mount -t sysfs sys "$tree/sys"
        for v in "$@"; do
            add=(); [[ -n ${v#*:} ]] && add=(--add "${v#*:}")
            chroot "$tree" dracut --quiet --force --no-hostonly --no-hostonly-cmdline \
                --compress zstd --drivers virtio_blk "${add[@]}" \
                --omit "nvdimm overlay-root resume lunmask hwdb virtfs virtiofs qemu" \
                --omit "systemd-pcrphase systemd-battery-check terminfo" --kver "$kver" "/boot/its-${v%%:*}.img"
        done' _ "$tree" "$kver" "$@" >&2
    for v in "$@"; do
        mv "$tree/boot/its-${v%%:*}.img" "$tmp/initrd-${v%%:*}.img"
    done
}
variants=(plain: sysroot:its-sysroot-merge)
[[ $binsum != none ]] && variants+=(ours:initrd-sysext)
initrds "${variants[@]}"
# The certificate is only in the initrd: the root stays as it was.
if [[ $binsum != none && -n $crt ]]; then
    install -D -m 0644 "$crt" "$tree/etc/verity.d/its-trusted.crt"
    initrds signed:initrd-sysext
    rm -r "$tree/etc/verity.d"
fi
cp "$tree/boot/vmlinuz-$kver" "$tmp/vmlinuz"
rm -f "$tree/boot/initrd.img-$kver"

# 3 GiB sparse: room for the extension images and podman's storage.
mkfs.ext4 -q -L root -d "$tree" "$tmp/root.img" 3G >&2
rm -rf "$tree"
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
