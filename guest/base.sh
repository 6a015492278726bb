#!/usr/bin/env bash
# Build (once) a Debian base OS shared by the podman sysext recipe
# (dependency-closure target) and the QEMU tests (guest root), and print the
# absolute path of its root tree on stdout. Progress goes to stderr.
#   guest/base.sh [bookworm|trixie|forky]     (default: trixie)
set -euo pipefail

suite=${1:-trixie}
mirror=${INITRD_SYSEXT_MIRROR:-http://deb.debian.org/debian}
# The same names in every suite: systemd-sysext is part of systemd up to forky
# (262), dracut pulls dracut-core, busybox-static and uidmap exist in all.
packages=(
	systemd systemd-sysv udev kmod dbus dracut linux-image-cloud-amd64
	busybox-static zstd uidmap e2fsprogs
)
aptopts=()
case $suite in
bookworm | trixie) ;;
# Testing's Release carries a Valid-Until that lapses between its updates;
# the option stays in the tree for apt runs inside it (the podman closure).
forky) aptopts=(--aptopt='Acquire::Check-Valid-Until "false"') ;;
*) echo "base.sh: unknown suite: $suite (bookworm, trixie or forky)" >&2 && exit 2 ;;
esac
cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}

# The key covers this script (packages, user, hooks), the suite and the
# mirror; package versions are whatever the mirror had on the first build.
key=$(cat "${BASH_SOURCE[0]}" - <<<"$suite $mirror" | sha256sum | cut -c1-16)
out="$cache/base-$suite-$key"

mkdir -p "$cache"
# Serialise concurrent callers; the second one reuses the first one's tree.
exec 9>"$out.lock"
flock 9
if [[ -d "$out" ]]; then
	echo "$out"
	exit 0
fi

tmp="$out.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "base.sh: building $suite base into $out" >&2
# Keep apt lists so apt inside can compute dependency closures later;
# recommends off so the base is exactly the listed packages and their Depends.
# shellcheck disable=SC2016 # the hooks' "$1" is expanded by mmdebstrap
mmdebstrap --mode=root --variant=minbase --skip=cleanup/apt/lists \
	--aptopt='APT::Install-Recommends "false"' "${aptopts[@]}" \
	--include="$(IFS=,; echo "${packages[*]}")" \
	--customize-hook='chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash tester' \
	--customize-hook='echo tester:100000:65536 >"$1/etc/subuid"' \
	--customize-hook='echo tester:100000:65536 >"$1/etc/subgid"' \
	"$suite" "$tmp" "$mirror" >&2
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
