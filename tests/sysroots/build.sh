#!/usr/bin/env bash
# Build (once) a minimal Debian root that stands in for a booted system in the
# compatibility tests: its own systemd and systemd-sysext, nothing else. Prints
# the root's absolute path. Usage: build.sh SUITE (trixie: systemd 257, forky: 262).
set -euo pipefail

suite=${1:?usage: build.sh SUITE}
mirror=${INITRD_SYSEXT_MIRROR:-http://deb.debian.org/debian}
cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}
# forky's Release file has an expired Valid-Until.
aptopts=(--aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Check-Valid-Until "false"')

key=$(cat "${BASH_SOURCE[0]}" - <<<"$suite $mirror" | sha256sum | cut -c1-16)
out="$cache/sysroot-$suite-$key"
mkdir -p "$cache"
exec 9>"$out.lock"
flock 9
if [[ -d "$out" ]]; then
	echo "$out"
	exit 0
fi
tmp="$out.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "sysroots/build.sh: building $suite into $out" >&2
# essential + systemd: dpkg, coreutils, libc, systemd and its libraries. No apt
# inside, no documentation: the tests only run systemd-sysext in it.
mmdebstrap --mode=root --variant=essential "${aptopts[@]}" --include=systemd \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
	"$suite" "$tmp" "$mirror" >&2
mv -T "$tmp" "$out"
trap - EXIT
echo "$out"
