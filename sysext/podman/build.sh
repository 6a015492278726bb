#!/usr/bin/env bash
# Build the podman system extension image from Debian packages, reproducibly,
# and publish it with its verity sidecars, a signed DDI, SHA256SUMS and a
# detached CMS signature. Prints the plain image's path on stdout; progress
# goes to stderr. See README.md.
set -euo pipefail
# Make INT and TERM run the EXIT trap (cleanup of temporary trees).
trap 'exit 130' INT TERM
umask 022
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

die() { echo "build.sh: error: $*" >&2; exit 1; }
say() { echo "build.sh: $*" >&2; }
usage() {
	cat <<EOF
usage: build.sh [--target debian-13|debian-forky|ROOTDIR] [--out DIR] [--format erofs|squashfs]
                [--key KEY.pem --cert CERT.pem] [--version-id V | --sysext-level L]
                [--no-cache]
EOF
}

target=debian-13 out=$cache/out/podman format=erofs key='' cert=''
version_id='' level='' use_cache=1
while (($#)); do
	case $1 in
	--target | --out | --format | --key | --cert | --version-id | --sysext-level)
		(($# >= 2)) || die "$1 needs a value"
		case $1 in
		--target) target=$2 ;;
		--out) out=$2 ;;
		--format) format=$2 ;;
		--key) key=$2 ;;
		--cert) cert=$2 ;;
		--version-id) version_id=$2 ;;
		--sysext-level) level=$2 ;;
		esac
		shift 2
		;;
	--no-cache) use_cache=0 && shift ;;
	-h | --help) usage && exit 0 ;;
	*) usage >&2 && die "unknown argument: $1" ;;
	esac
done

# pair_matches KEY CERT: both readable, and the certificate is the key's.
pair_matches() {
	local pub
	pub=$(openssl pkey -in "$1" -passin pass: -pubout 2>/dev/null) &&
		[[ "$pub" == "$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null)" ]]
}
# Refuse a bad key before any work is done.
if [[ -n "$key$cert" ]]; then
	[[ -n "$key" && -n "$cert" ]] || die "--key and --cert must be given together"
	[[ -f "$key" ]] || die "key not found: $key"
	openssl pkey -in "$key" -passin pass: -noout 2>/dev/null || die "key unreadable: $key"
	openssl x509 -in "$cert" -noout 2>/dev/null || die "certificate unreadable: $cert"
	pair_matches "$key" "$cert" || die "key $key does not match certificate $cert"
fi
case $format in erofs | squashfs) ;; *) die "unknown format: $format (erofs or squashfs)" ;; esac
[[ -z "$version_id" || -z "$level" ]] || die "--version-id and --sysext-level exclude each other"

# The target OS, whose own apt sources give the packages: Debian 13
# (trixie) or testing (forky).
case $target in
debian-13) root=$("$here/../../guest/base.sh" trixie) ;;
debian-forky) root=$("$here/../../guest/base.sh" forky) ;;
*)
	[[ -d "$target" ]] || die "unknown target OS: $target (known: debian-13, debian-forky, or a root directory)"
	root=$(cd "$target" && pwd)
	;;
esac
osrel=$(os_release "$root")
[[ -f "$osrel" ]] || die "unknown target OS: no os-release in $root"
os_id=$(osr ID "$osrel")
os_version=$(osr VERSION_ID "$osrel")
# Testing has no VERSION_ID until its release, only its code name.
codename=$(osr VERSION_CODENAME "$osrel")
case "$os_id-${os_version:-$codename}" in
debian-13 | debian-forky) ;;
*) die "unknown target OS: ID=$os_id VERSION_ID=$os_version in $root (known: debian-13, debian-forky)" ;;
esac
level=${level:-$(osr SYSEXT_LEVEL "$osrel")}
# With neither on the target, the image carries neither, and matches it.
[[ -n "$level" ]] || version_id=${version_id:-$os_version}

# Requested packages, and their closure against the target: what apt would add
# to it. The closure only depends on the target's dpkg status and apt lists.
mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$here/packages")
ckey=$({
	printf '%s\n' "${pkgs[@]}" "${aptq[@]}"
	cat "$root/var/lib/dpkg/status" "$root"/var/lib/apt/lists/*Release
} | sha256sum | cut -c1-16)
mkdir -p "$cache/closures"
if [[ -f "$cache/closures/$ckey" ]]; then
	closure=$(cat "$cache/closures/$ckey")
else
	# A missing package fails here, by name.
	mapfile -t known < <(chroot "$root" apt-cache "${aptq[@]}" policy "${pkgs[@]}" 2>/dev/null |
		awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} /Candidate:/ && $2 != "(none)" {print p}')
	for p in "${pkgs[@]}"; do
		[[ " ${known[*]} " == *" $p "* ]] || die "package not in the repository: $p"
	done
	sim=$(chroot "$root" apt-get "${aptq[@]}" -s install "${pkgs[@]}" 2>&1) ||
		die "apt cannot install the packages into $root: $sim"
	closure=$(awk '$1 == "Inst" {v = $3; gsub(/[()]/, "", v); print $2 "=" v}' <<<"$sim" | sort)
	if [[ -n "$closure" ]]; then
		printf '%s\n' "$closure" >"$cache/closures/.$ckey.$$"
		mv -f "$cache/closures/.$ckey.$$" "$cache/closures/$ckey"
	fi
fi
[[ -n "$closure" ]] || die "empty closure: is podman already in $root?"
pver=$(sed -n 's/^podman=//p' <<<"$closure" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[+~].*//')
[[ -n "$pver" ]] || die "podman is not in the closure (already in $root?)"

name="podman-$pver-$os_id-${level:-${version_id:-$codename}}-x86-64.raw"
# The podman-etc confext of the same defaults: architecture-independent,
# matched by CONFEXT_LEVEL or VERSION_ID (forky: neither, named by code name).
clevel=$(osr CONFEXT_LEVEL "$osrel")
cname="podman-etc-$pver-$os_id-${clevel:-${version_id:-${os_version:-$codename}}}.raw"
key16=$({
	cat "$here/build.sh" "$here/lib.sh" "$here/stage.sh" "$here/packages"
	printf '%s\n' "$format" "$os_id" "$version_id" "$level" "${SOURCE_DATE_EPOCH:-}" "$closure"
} | sha256sum | cut -c1-16)
entry=$cache/podman-$key16

mkdir -p "$cache"
exec 9>"$entry.lock"
flock 9
if ((use_cache)) && [[ -f "$entry/$name" && -f "$entry/$cname" ]]; then
	say "cached: $entry/$name"
else
	start=$SECONDS
	say "building $name (closure: $(wc -l <<<"$closure") packages)"
	tmp="$entry.tmp.$$"
	rm -rf "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp"
	"$here/stage.sh" "$root" "$tmp/$name" "$format" "$os_id" "${version_id:-}" "${level:-}" \
		"$pver" "$key16" "$tmp/$cname" "${pkgs[@]}" <<<"$closure"
	printf '%s\n' "$closure" >"$tmp/packages"
	rm -rf "$entry"
	mv -T "$tmp" "$entry"
	trap - EXIT
	say "built in $((SECONDS - start)) s: $(du -b "$entry/$name" | cut -f1) bytes"
fi

# Publish: every file goes in under a temporary name and is renamed into place.
mkdir -p "$out"
out=$(cd "$out" && pwd)
put() { cp "$1" "$out/.$2.tmp" && mv -f "$out/.$2.tmp" "$out/$2"; }
put "$entry/$name" "$name"
put "$entry/$cname" "$cname"
put "$entry/packages" "${name%.raw}.packages"
if [[ -z "$key" ]]; then
	key=$out/test-signing.key cert=$out/test-signing.crt
	echo "build.sh: WARNING: no --key/--cert given: signing with a THROW-AWAY TEST key" >&2
	echo "build.sh: WARNING: $key is not a release key; do not trust it" >&2
	# Kept while valid for another day, so cached signed outputs stay valid.
	if ! pair_matches "$key" "$cert" || ! openssl x509 -in "$cert" -noout -checkend 86400 >/dev/null 2>&1; then
		openssl req -x509 -newkey rsa:3072 -nodes -days 30 -subj "/CN=initrd-sysext throw-away test key" \
			-keyout "$out/.key.tmp" -out "$out/.crt.tmp" 2>/dev/null
		mv -f "$out/.key.tmp" "$key"
		mv -f "$out/.crt.tmp" "$cert"
	fi
fi

# Verity sidecars and the signed DDI, cached per signing certificate (the
# three most recent ones).
signer=$({
	cat "$here/verity.sh"
	openssl x509 -in "$cert" -outform DER
} | sha256sum | cut -c1-16)
signed=$entry/signed-$signer
if ((use_cache)) && [[ -f "$signed/${name%.raw}.sysext.raw" && -f "$signed/${cname%.raw}.confext.raw" ]]; then
	say "cached: $signed"
	touch "$signed"
else
	start=$SECONDS
	rm -rf "$signed" "$signed.tmp"
	trap 'rm -rf "$signed.tmp"' EXIT
	mkdir "$signed.tmp"
	"$here/verity.sh" "$root" "$entry/$name" "$format" "$key" "$cert" "$signed.tmp"
	"$here/verity.sh" "$root" "$entry/$cname" "$format" "$key" "$cert" "$signed.tmp" confext
	mv -T "$signed.tmp" "$signed"
	trap - EXIT
	find "$entry" -maxdepth 1 -name 'signed-*' -printf '%T@ %p\n' | sort -rn | tail -n +4 |
		cut -d' ' -f2- | xargs -r -d '\n' rm -rf
	say "verity outputs in $((SECONDS - start)) s: $(cd "$signed" && du -b -- * | tr '\t\n' ' ')"
fi
for f in "$signed"/*; do put "$f" "${f##*/}"; done
"$here/sign.sh" "$out" "$key" "$cert"
echo "$out/$name"
