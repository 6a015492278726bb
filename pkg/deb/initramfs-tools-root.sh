#!/usr/bin/env bash
# Build (once) the trixie base (guest/base.sh) switched from dracut to
# initramfs-tools, Debian's default initrd builder, and print its path. Cached
# next to the base, keyed by the base and this script; a lock serialises
# callers. Read-only for its users: mount an overlay on it to change anything.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}
base=$(bash "$repo/guest/base.sh")
key=$({ echo "$base"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
out=$cache/itools-$key

exec 9>"$out.lock"
flock 9
if [[ -d $out ]]; then
    echo "$out"
    exit 0
fi
echo "initramfs-tools-root: building $out" >&2
tmp=$out.tmp.$$
trap 'rm -rf "$tmp"' EXIT
cp -a "$base" "$tmp"
# Installing initramfs-tools removes dracut (they conflict) and builds the
# kernel's initramfs once through its own trigger.
# shellcheck disable=SC2016 # expanded by the inner shell
unshare -m --propagation private bash -euc '
    mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc"; mount -t sysfs sys "$1/sys"
    chroot "$1" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$1" apt-get install -y -qq --no-install-recommends initramfs-tools
    chroot "$1" apt-get clean' _ "$tmp" >&2
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
