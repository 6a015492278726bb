#!/usr/bin/env bash
# Called by build.sh: the dm-verity outputs of a plain image NAME.raw, written
# to OUTDIR. Sidecars NAME.verity, NAME.roothash and NAME.roothash.p7s, and
# NAME.CLASS.raw, a signed GPT disk image (DDI) of the same tree made by
# systemd-repart --make-ddi=CLASS (sysext, the default, or confext). Bytes
# depend only on the image and the signing key.
# usage: verity.sh ROOT IMAGE FORMAT KEY CERT OUTDIR [CLASS]
set -euo pipefail
# Make INT and TERM run the EXIT trap (cleanup of temporary trees).
trap 'exit 130' INT TERM
umask 022
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
die() { echo "verity.sh: error: $*" >&2; exit 1; }

root=$1 image=$2 format=$3 key=$4 cert=$5 outdir=$6 class=${7:-sysext}
base=$(basename "$image" .raw)
case $class in sysext) top=usr ;; confext) top=etc ;; *) die "unknown class: $class" ;; esac
(($(stat -c %s "$image") % 4096 == 0)) || die "$image is not a whole number of 4 KiB blocks"

# The target's tools (trixie's or newer), in a copy of the target root kept in the cache.
tools_pkgs=(systemd-repart erofs-utils squashfs-tools cryptsetup-bin)
tkey=$({
	printf '%s\n' "$root" "${tools_pkgs[@]}"
	cat "$root/var/lib/dpkg/status"
} | sha256sum | cut -c1-16)
tools=$cache/podman-tools-$tkey
exec 8>"$tools.lock"
flock 8
if [[ ! -d "$tools" ]]; then
	trap 'rm -rf "$tools.tmp"' EXIT
	rm -rf "$tools.tmp"
	cp -a "$root" "$tools.tmp"
	apt_install "$tools.tmp" "${tools_pkgs[@]}"
	mv -T "$tools.tmp" "$tools"
fi
exec 8>&-

work=$(mktemp -d "$tools/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
w=/${work##*/}
cp "$image" "$work/image.raw"

# Salt, UUIDs and seed come from the image's hash, so a rebuild is identical.
h=$(sha256sum <"$image" | cut -c1-64)
derive() { printf '%s %s' "$h" "$1" | sha256sum | cut -c1-64; }
uuid() { local x=$1; echo "${x:0:8}-${x:8:4}-${x:12:4}-${x:16:4}-${x:20:12}"; }

# Sidecars: the hash tree with its superblock at offset 0; the root hash as
# lowercase hex without a newline; a detached PKCS#7 signature of exactly that
# text, made as systemd-repart makes its own (sha256, no signed attributes,
# signer certificate included).
chroot "$tools" veritysetup format --hash=sha256 --data-block-size=4096 --hash-block-size=4096 \
	--salt="$(derive salt)" --uuid="$(uuid "$(derive uuid)")" --root-hash-file="$w/roothash" \
	"$w/image.raw" "$w/image.verity" >/dev/null
grep -qx '[0-9a-f]\{64\}' "$work/roothash" || die "veritysetup wrote no root hash"
openssl smime -sign -binary -noattr -md sha256 -outform DER -in "$work/roothash" \
	-signer "$cert" -inkey "$key" -passin pass: -out "$work/roothash.p7s"

# The DDI holds the tree of the plain image, extracted with its xattr. Every
# inode there carries stage.sh's SOURCE_DATE_EPOCH.
if [[ $format == erofs ]]; then
	chroot "$tools" fsck.erofs --xattrs --extract="$w/tree" "$w/image.raw" >/dev/null
	mkfs_opts=(SYSTEMD_REPART_MKFS_OPTIONS_EROFS="-zlz4hc -C262144 -Eztailpacking --all-root")
else
	chroot "$tools" unsquashfs -quiet -no-progress -d "$w/tree" "$w/image.raw" >/dev/null
	mkfs_opts=(SYSTEMD_REPART_MKFS_OPTIONS_SQUASHFS="-comp zstd -all-root -xattrs-include ^user\.extension-release\.strict\$")
fi
sde=$(stat -c %Y "$work/tree/$top")
# repart needs /proc: mount it in a private namespace, gone when repart ends.
# Key and certificate reach it as open files, so they are never copied.
# shellcheck disable=SC2016 # expanded by the inner shell
if ! unshare -m --propagation private sh -c 'mount -t proc proc "$1/proc" && exec chroot "$@"' sh \
	"$tools" env SOURCE_DATE_EPOCH="$sde" SYSTEMD_REPART_OVERRIDE_FSTYPE_ROOT="$format" "${mkfs_opts[@]}" \
	systemd-repart --make-ddi="$class" --copy-source="$w/tree" --architecture=x86-64 \
	--seed="$(uuid "$(derive seed)")" --offline=yes --private-key=/proc/self/fd/3 \
	--certificate=/proc/self/fd/4 --pretty=no --json=off "$w/ddi.raw" \
	3<"$key" 4<"$cert" >"$work/repart.log" 2>&1; then
	tr '\r' '\n' <"$work/repart.log" | tail -n 20 >&2
	die "systemd-repart failed"
fi

chmod 644 "$work/image.verity" "$work/roothash"
mv "$work/image.verity" "$outdir/$base.verity"
mv "$work/roothash" "$outdir/$base.roothash"
mv "$work/roothash.p7s" "$outdir/$base.roothash.p7s"
mv "$work/ddi.raw" "$outdir/$base.$class.raw"
