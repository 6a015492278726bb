#!/usr/bin/env bash
# Build the Debian package from a staged tree with dpkg-deb and print its path
# (the last line of stdout):
#   pkg/deb/build.sh [BINARY] [OUTDIR]   -> OUTDIR/initrd-sysext_VERSION_amd64.deb
# OUTDIR defaults to target/deb. Reproducible: SOURCE_DATE_EPOCH (default: the
# last commit's time) for every timestamp, root:root owners, fixed modes,
# gzip -n; dpkg-deb sorts the members.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$(dirname "$here")")
bin=${1:-$repo/target/x86_64-unknown-linux-musl/release/initrd-sysext}
out=${2:-$repo/target/deb}
maintainer=${DEB_MAINTAINER:-initrd-sysext developers <initrd-sysext@localhost>}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export LC_ALL=C TZ=UTC
umask 022

[[ -x $bin ]] || { echo "deb: no binary at $bin (make build)" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root doc=$stage/root/usr/share/doc/initrd-sysext

DESTDIR=$root PREFIX=/usr bash "$repo/pkg/install.sh" "$bin"
# The package puts the module into every initrd dracut builds, as installing
# it does for initramfs-tools; /etc/dracut.conf.d/ can still omit it.
install -D -m 0644 "$repo/dracut/dracut.conf.d-initrd-sysext.conf" \
    "$root/usr/lib/dracut/dracut.conf.d/initrd-sysext.conf"
gzip -9n "$root/usr/share/man/man8/initrd-sysext.8"
install -D -m 0644 "$here/copyright" "$doc/copyright"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/initrd-sysext"
gzip -9n <"$repo/README.md" >"$doc/README.md.gz"
{
    echo "initrd-sysext ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the initrd-sysext repository; see README.md."
    echo
    echo " -- $maintainer  $(date -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

install -d "$root/DEBIAN"
install -m 0644 "$here/triggers" "$root/DEBIAN/triggers"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$root/DEBIAN/md5sums"
size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@MAINTAINER@|$maintainer|" -e "s|@SIZE@|$size|" \
    "$here/control.in" >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb=$out/initrd-sysext_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
