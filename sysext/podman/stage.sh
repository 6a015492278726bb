#!/usr/bin/env bash
# Called by build.sh: install the closure into a copy of the target root,
# assemble the /usr-only tree and make the filesystem image, and the podman-etc
# configuration extension of the same /etc defaults (ETC_IMAGE).
# usage: stage.sh ROOT IMAGE FORMAT ID VERSION_ID LEVEL PODMAN_VERSION KEY ETC_IMAGE PKG... <closure
set -euo pipefail
# Make INT and TERM run the EXIT trap (cleanup of temporary trees).
trap 'exit 130' INT TERM
umask 022
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
die() { echo "stage.sh: error: $*" >&2; exit 1; }

base=$1 image=$2 format=$3 os_id=$4 version_id=$5 level=$6 pver=$7 key=$8 etc_image=$9
shift 9
mapfile -t closure
# Needed only by maintainer scripts at install time, not at run time.
exclude_pkgs=(adduser)

work=$(mktemp -d "$cache/podman-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
r=$work/root
cp -a "$base" "$r"
apt_install "$r" "$@"
# shellcheck disable=SC2016 # dpkg-query's format, not ours
for pv in "${closure[@]}"; do
	[[ "$(chroot "$r" dpkg-query -W -f='${Package}=${Version}' "${pv%%=*}")" == "$pv" ]] ||
		die "installed closure differs from the computed one at $pv"
done

# The files the closure's packages own. /bin, /sbin and /lib fold into /usr.
for pv in "${closure[@]}"; do
	p=${pv%%=*}
	[[ " ${exclude_pkgs[*]} " == *" $p "* ]] || chroot "$r" dpkg-query -L "$p"
done | grep '^/' | sed -E 's#^/(bin|sbin|lib|lib64)(/|$)#/usr/\1\2#' | sort -u >"$work/files"

stage=$r/build/tree
mkdir -p "$stage/usr/share/podman/etc"
grep '^/usr/' "$work/files" | while read -r f; do
	[[ -e "$r$f" || -L "$r$f" ]] && echo "${f#/}"
done >"$work/usr"
# tar drops xattrs, so file capabilities would be lost: refuse if any.
if (cd "$r" && xargs -d '\n' getfattr -h -m '^security\.capability$' -- <"$work/usr" 2>/dev/null) | grep -q .; then
	die "a file carries security.capability; the image would lose it"
fi
tar -C "$r" --numeric-owner --no-recursion -T "$work/usr" -cf - | tar -C "$stage" --numeric-owner -xpf -

# /etc defaults move under /usr/share/podman/etc; the rest of /etc is dropped.
grep -E '^/etc/(containers/|fuse\.conf$)' "$work/files" | while read -r f; do
	[[ -d "$r$f" && ! -L "$r$f" ]] || echo "${f#/}"
done >"$work/etc"
tar -C "$r" --numeric-owner --no-recursion -T "$work/etc" -cf - |
	tar -C "$stage/usr/share/podman" --numeric-owner -xpf -

# Pin time to the newest packaged file unless the caller pins it.
sde=${SOURCE_DATE_EPOCH:-$(find "$stage" -type f -printf '%T@\n' | sort -n | tail -n1 | cut -d. -f1)}

# Not needed at run time; README.md says why for each.
rm -rf "${stage:?}"/usr/share/{doc,man,info,locale,lintian,bug,zsh,fish,initramfs-tools} \
	"$stage/usr/include" \
	"$stage/usr/libexec/podman/podman-testing" \
	"$stage/usr/bin/containers-storage" \
	"$stage/usr/lib/podman/netavark-dhcp-proxy-client"
find "$stage" \( -name '*.a' -o -name '*.la' -o -name pkgconfig \) -prune -exec rm -rf {} +

# Links into /etc/alternatives would dangle without /etc: point them at the target.
find "$stage" -type l -lname '/etc/*' | while read -r l; do
	t=$(chroot "$r" readlink -f "/${l#"$stage"/}")
	[[ "$t" == /usr/* ]] || die "${l#"$stage"} resolves outside /usr: $t"
	ln -sfn "$t" "$l"
done
find "$stage" -mindepth 1 -depth -type d -empty -delete

# One C rule per file: a rule for a whole directory does nothing once that
# directory exists (e.g. /etc/containers/systemd/ written by provisioning).
mkdir -p "$stage/usr/lib/tmpfiles.d" "$stage/usr/lib/extension-release.d"
{
	echo "# podman's /etc defaults; an existing file is never touched."
	(cd "$stage/usr/share/podman/etc" && find . ! -type d | sort) | while read -r f; do
		echo "C /etc/${f#./} - - - - /usr/share/podman/etc/${f#./}"
	done
} >"$stage/usr/lib/tmpfiles.d/podman-etc.conf"

{
	echo "ID=$os_id"
	if [[ -n "$level" ]]; then echo "SYSEXT_LEVEL=$level"; elif [[ -n "$version_id" ]]; then echo "VERSION_ID=$version_id"; fi
	echo "ARCHITECTURE=x86-64"
	echo "SYSEXT_ID=podman"
	echo "SYSEXT_VERSION_ID=$pver"
	echo "EXTENSION_RELOAD_MANAGER=1"
} >"$stage/usr/lib/extension-release.d/extension-release.podman"
# The image keeps matching when installed under another name than podman.raw,
# such as its versioned published name.
setfattr -n user.extension-release.strict -v false \
	"$stage/usr/lib/extension-release.d/extension-release.podman"
# That must be the only xattr: anything else came from the build host.
xattrs=$(cd "$stage" && getfattr -R -h -d -m - . 2>/dev/null | grep -v -e '^#' -e '^$')
[[ "$xattrs" == 'user.extension-release.strict="false"' ]] || die "unexpected xattrs in the tree: $xattrs"

! find "$stage" -mindepth 1 -maxdepth 1 ! -name usr | grep -q . || die "something outside /usr in the tree"

# podman-etc: the same /etc defaults as a configuration extension, an
# alternative to the tmpfiles rules (README.md says when to use which). It
# matches the target by CONFEXT_LEVEL, else VERSION_ID (neither on a target
# without either); the defaults are not architecture-specific.
etree=$r/build/etc-tree
mkdir -p "$etree/etc/extension-release.d"
cp -a "$stage/usr/share/podman/etc/." "$etree/etc/"
osrel=$(os_release "$base")
clevel=$(osr CONFEXT_LEVEL "$osrel")
cver=${version_id:-$(osr VERSION_ID "$osrel")}
{
	echo "ID=$os_id"
	if [[ -n "$clevel" ]]; then echo "CONFEXT_LEVEL=$clevel"; elif [[ -n "$cver" ]]; then echo "VERSION_ID=$cver"; fi
	echo "CONFEXT_SCOPE=system"
	echo "CONFEXT_ID=podman-etc"
	echo "CONFEXT_VERSION_ID=$pver"
} >"$etree/etc/extension-release.d/extension-release.podman-etc"
setfattr -n user.extension-release.strict -v false "$etree/etc/extension-release.d/extension-release.podman-etc"
! find "$etree" -mindepth 1 -maxdepth 1 ! -name etc | grep -q . || die "something outside /etc in the confext tree"

# The target's tools: the host's (bookworm's) mkfs.erofs is too old.
apt_install "$r" erofs-utils squashfs-tools
find "$stage" "$etree" -exec touch -h -d "@$sde" {} +
# mkimage TREE OUT SALT: the file system image of /build/TREE, its UUID from the key.
mkimage() {
	local h uuid
	h=$(printf '%s%s' "$key" "$3" | sha256sum)
	uuid="${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"
	if [[ $format == erofs ]]; then
		# 256 KiB physical clusters: about 7 MiB smaller than the 4 KiB default.
		chroot "$r" mkfs.erofs --quiet -zlz4hc -C262144 -Eztailpacking --all-root \
			-T "$sde" -U "$uuid" "/build/$2" "/build/$1" >&2
	else
		chroot "$r" mksquashfs "/build/$1" "/build/$2" -quiet -noappend -comp zstd \
			-all-root -xattrs-include '^user\.extension-release\.strict$' -mkfs-time "$sde" -all-time "$sde" >&2
	fi
}
mkimage tree image.raw ''
mkimage etc-tree etc.raw etc
mv "$r/build/image.raw" "$image"
mv "$r/build/etc.raw" "$etc_image"
