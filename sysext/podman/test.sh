#!/usr/bin/env bash
# Tests for the podman system extension image (issues 3 and 5). One line per check,
# then "N passed, N failed"; exit status is non-zero on any failure.
set -euo pipefail
# Make INT and TERM run the EXIT trap (cleanup of temporary trees).
trap 'exit 130' INT TERM
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
bin=${INITRD_SYSEXT_BIN:-$repo/target/x86_64-unknown-linux-musl/release/initrd-sysext}

# shellcheck source-path=SCRIPTDIR source=../../tests/common/checks.sh
. "$repo/tests/common/checks.sh"

mkdir -p "$cache"
t=$(mktemp -d "$cache/test.XXXXXX")
done=0
cleanup() {
	# A step outside any check failed: still end with the closing line.
	if ((!done)); then
		echo "FAIL - test setup (see above)"
		echo "$passed passed, $((failed + 1)) failed"
	fi
	umount "$t/root/proc" 2>/dev/null || true
	umount "$t/mnt" 2>/dev/null || true
	rm -rf "$t"
}
trap cleanup EXIT

base=$("$repo/guest/base.sh")
echo "building the image (cached after the first time)" >&2
img=$("$here/build.sh" --out "$t/out")
name=$(basename "$img")
out=$t/out

# A chroot of base + image: trixie's fsck.erofs unpacks the image in it.
r=$t/root
cp -a "$base" "$r"
apt_install "$r" erofs-utils cryptsetup-bin jq
cp "$img" "$r/image.raw"
chroot "$r" fsck.erofs --xattrs --extract=/x /image.raw >/dev/null
x=$r/x
cp -a "$x/usr/." "$r/usr/"
mount -t proc proc "$r/proc"

pver=$(sed -n 's/^podman=//p' "$out/${name%.raw}.packages" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[+~].*//')

# --- contents
check "image is erofs" test "$(od -An -tx1 -j1024 -N4 "$img" | tr -d ' ')" = e2e1f5e0
check "file name is podman-<version>-debian-13-x86-64.raw" test "$name" = "podman-$pver-debian-13-x86-64.raw"
check "only /usr at the top" test "$(ls -A "$x")" = usr
not() { ! "$@"; }
podman_version() { chroot "$r" podman --version | grep -Fx "podman version $pver"; }
check "podman --version runs in base + image" podman_version
for tool in conmon crun fuse-overlayfs /usr/lib/podman/netavark /usr/lib/podman/aardvark-dns \
	catatonit pasta nft; do
	check "$tool --version runs in base + image" chroot "$r" "$tool" --version
done
in_image() { [[ -e "$x/usr/$1" || -L "$x/usr/$1" ]] && [[ -e "$r/usr/$1" ]]; }
for f in lib/systemd/system-generators/podman-system-generator \
	lib/systemd/user-generators/podman-user-generator \
	lib/systemd/system/podman.socket lib/systemd/system/podman.service \
	share/containers/storage.conf share/containers/containers.conf; do
	check "usr/$f present" in_image "$f"
done
check "generator resolves to an executable" test -x "$r/usr/lib/systemd/system-generators/podman-system-generator"
trimmed() {
	not grep . < <(find "$x/usr" \( -path '*/share/doc' -o -path '*/share/man' -o -path '*/share/locale' \
		-o -path '*/usr/include' -o -name '*.a' -o -name '*.la' \))
}
check "no docs, man pages, locales, headers, static libraries" trimmed
no_subid() { not grep -rs 'sub[ug]id' "$x/usr/lib/tmpfiles.d" && not grep . < <(find "$x" -name 'sub[ug]id'); }
check "no /etc/subuid or /etc/subgid in the image" no_subid
links_resolve() {
	local l bad=0
	while read -r l; do
		chroot "$r" test -e "${l#.}" || { echo "dangling: $l"; bad=1; }
	done < <(cd "$x" && find . -type l)
	return "$bad"
}
check "every symlink resolves in base + image" links_resolve

release() {
	cat <<EOF
ID=debian
VERSION_ID=13
ARCHITECTURE=x86-64
SYSEXT_ID=podman
SYSEXT_VERSION_ID=$pver
EXTENSION_RELOAD_MANAGER=1
EOF
}
check "release file is right" diff <(release) "$x/usr/lib/extension-release.d/extension-release.podman"
check "release file has user.extension-release.strict=false" test \
	"$(getfattr --only-values -n user.extension-release.strict "$x/usr/lib/extension-release.d/extension-release.podman")" = false

tmpfiles=$x/usr/lib/tmpfiles.d/podman-etc.conf
per_file() { # each default file has exactly one C rule and each rule names one file
	local defaults=$x/usr/share/podman/etc
	diff <(cd "$defaults" && find . ! -type d | sed 's#^\./##' | sort) \
		<(grep -v '^#' "$tmpfiles" | awk '$1 == "C" && $2 == "/etc/" substr($7, 23) && \
			$7 ~ "^/usr/share/podman/etc/" {print substr($2, 6)}' | sort)
	[[ $(grep -vc '^#' "$tmpfiles") == $(cd "$defaults" && find . ! -type d | wc -l) ]]
}
check "tmpfiles: one C rule per default file" per_file
for f in containers/policy.json containers/registries.conf fuse.conf; do
	check "tmpfiles: /etc/$f has its rule" grep -qx "C /etc/$f - - - - /usr/share/podman/etc/$f" "$tmpfiles"
done

# --- tmpfiles behaviour, with trixie's systemd-tmpfiles
scratch() { rm -rf "$r/s" && mkdir -p "$r/s" && cp -a "$x/usr" "$r/s/"; }
scratch
mkdir -p "$r/s/etc/containers/systemd"
echo '[Container]' >"$r/s/etc/containers/systemd/x.container"
chroot "$r" systemd-tmpfiles --create --root=/s >"$t/tmpfiles.log" 2>&1 || true
check "tmpfiles: policy.json copied although /etc/containers/systemd/x.container exists" \
	cmp "$r/s/etc/containers/policy.json" "$x/usr/share/podman/etc/containers/policy.json"
check "tmpfiles: x.container left alone" test "$(cat "$r/s/etc/containers/systemd/x.container")" = '[Container]'
scratch
mkdir -p "$r/s/etc/containers"
printf '{"default":[{"type":"reject"}]}' >"$r/s/etc/containers/policy.json"
cp -p "$r/s/etc/containers/policy.json" "$t/policy.mine"
chroot "$r" systemd-tmpfiles --create --root=/s >"$t/tmpfiles.log" 2>&1 || true
check "tmpfiles: existing policy.json unchanged byte for byte" cmp "$t/policy.mine" "$r/s/etc/containers/policy.json"
check "tmpfiles: other defaults still copied beside it" test -f "$r/s/etc/containers/registries.conf"

# --- signature
verify() { # verify SUMS P7S
	openssl cms -verify -binary -inform DER -in "$2" -content "$1" \
		-CAfile "$out/signing.crt" -purpose any -out /dev/null
}
sums_ok() { (cd "$out" && grep -q " $name\$" SHA256SUMS && sha256sum -c --strict SHA256SUMS); }
check "SHA256SUMS lists the image and matches" sums_ok
check "signature verifies with the published certificate" verify "$out/SHA256SUMS" "$out/SHA256SUMS.p7s"
cp "$out/SHA256SUMS" "$t/sums.bad"
printf '%s' "$(head -c1 "$t/sums.bad" | tr '0-9a-f' '1-9a-f0')" | dd of="$t/sums.bad" bs=1 count=1 conv=notrunc status=none
check "SHA256SUMS was changed by one byte" test "$(cmp -l "$out/SHA256SUMS" "$t/sums.bad" | wc -l)" = 1
check "signature fails on a one-byte change" not verify "$t/sums.bad" "$out/SHA256SUMS.p7s"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other -keyout "$t/other.key" -out "$t/other.crt" 2>/dev/null
openssl cms -sign -binary -noattr -outform DER -in "$out/SHA256SUMS" -signer "$t/other.crt" \
	-inkey "$t/other.key" -out "$t/other.p7s"
check "signature by another key fails" not verify "$out/SHA256SUMS" "$t/other.p7s"

# --- verity sidecars of the plain image (systemd's NAME.raw -> NAME.verity,
# NAME.roothash, NAME.roothash.p7s), checked with trixie's veritysetup
stem=${name%.raw}
v=$r/v
mkdir -p "$v"
cp "$img" "$out/$stem.verity" "$v/"
roothash=$(cat "$out/$stem.roothash")
hex64() { [[ $(wc -c <"$1") == 64 ]] && grep -qx '[0-9a-f]\{64\}' "$1"; }
check "sidecar .roothash: 64 lowercase hex digits, no newline" hex64 "$out/$stem.roothash"
superblock() { # superblock FILE: a verity superblock at offset 0: sha256, 4 KiB blocks
	chroot "$r" veritysetup dump "$1" >"$t/dump" &&
		grep -Eq '^Hash algorithm:[[:space:]]+sha256$' "$t/dump" &&
		grep -Eq '^Data block size:[[:space:]]+4096$' "$t/dump" &&
		grep -Eq '^Hash block size:[[:space:]]+4096$' "$t/dump"
}
check "sidecar .verity: superblock at offset 0, sha256, 4096/4096" superblock "/v/$stem.verity"
check "veritysetup verify: image against .verity and .roothash" \
	chroot "$r" veritysetup verify "/v/$name" "/v/$stem.verity" "$roothash"
cp "$img" "$v/bad.raw"
mid=$(($(stat -c %s "$img") / 2))
byte=$(od -An -tu1 -j "$mid" -N1 "$img" | tr -d ' ')
# shellcheck disable=SC2059 # the format is the octal escape
printf "\\$(printf %03o $(((byte + 1) % 256)))" | dd of="$v/bad.raw" bs=1 seek="$mid" conv=notrunc status=none
check "copy of the image was changed by one byte" test "$(cmp -l "$img" "$v/bad.raw" | wc -l)" = 1
check "veritysetup verify fails on a one-byte change" \
	not chroot "$r" veritysetup verify /v/bad.raw "/v/$stem.verity" "$roothash"
rm -f "$v/bad.raw"
p7s() { # p7s CONTENT SIG: detached DER PKCS#7 by signing.crt's key, and no other
	openssl smime -verify -binary -inform DER -in "$2" -content "$1" -nointern \
		-certfile "$out/signing.crt" -noverify -out /dev/null
}
check ".roothash.p7s verifies over .roothash with signing.crt" p7s "$out/$stem.roothash" "$out/$stem.roothash.p7s"
check ".roothash.p7s has no signed attributes" \
	not grep -q messageDigest < <(openssl asn1parse -inform DER -in "$out/$stem.roothash.p7s")
printf '%s\n' "$roothash" >"$t/roothash.nl"
check ".roothash.p7s fails over the hash plus a newline" not p7s "$t/roothash.nl" "$out/$stem.roothash.p7s"
openssl smime -sign -binary -noattr -md sha256 -outform DER -in "$out/$stem.roothash" \
	-signer "$t/other.crt" -inkey "$t/other.key" -out "$t/other.roothash.p7s"
check ".roothash.p7s by another key fails" not p7s "$out/$stem.roothash" "$t/other.roothash.p7s"
sums_all() { for f in "$stem".{verity,roothash,roothash.p7s,sysext.raw}; do grep -q " $f\$" "$out/SHA256SUMS" || return 1; done; }
check "SHA256SUMS lists the sidecars and the DDI" sums_all

# --- the DDI (systemd-repart --make-ddi=sysext), by its GPT
ddi=$out/$stem.sysext.raw
declare -A dps=(
	[root]=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 [usr]=8484680C-9521-48C6-9C11-B0720656F69E
	[root-verity]=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5 [usr-verity]=77FF5F63-E7B6-4633-ACF4-1565B864C0E6
	[root-verity-sig]=41092B05-9FC8-4523-994F-2DEF0408B176 [usr-verity-sig]=E7BB33FB-06CF-4E81-8273-E543B413E2E2
)
sfdisk --json "$ddi" >"$t/ddi.json"
chroot "$r" jq -r '.partitiontable | .label, .sectorsize,
	(.partitions[] | "\(.type) \(.uuid) \(.start) \(.size)")' <"$t/ddi.json" >"$t/ddi.parts"
ss=$(sed -n 2p "$t/ddi.parts")
n() { grep -c "^${dps[$1]} " "$t/ddi.parts" || true; }
kind=root
(($(n usr) == 0)) || kind=usr
layout() {
	[[ $(head -n1 "$t/ddi.parts") == gpt ]] && (($(wc -l <"$t/ddi.parts") == 5)) &&
		(($(n root) + $(n usr) == 1 && $(n "$kind-verity") == 1 && $(n "$kind-verity-sig") == 1))
}
check "DDI: GPT of exactly one $kind, one $kind-verity, one $kind-verity-sig partition (x86-64 types)" layout
field() { awk -v t="${dps[$1]}" -v f="$2" '$1 == t {print $f}' "$t/ddi.parts"; } # 2 uuid, 3 start, 4 size
part() { # part KIND FILE: copy a partition out of the DDI
	dd if="$ddi" of="$2" bs="$ss" skip="$(field "$1" 3)" count="$(field "$1" 4)" status=none
}
part "$kind" "$v/ddi.data"
part "$kind-verity" "$v/ddi.verity"
part "$kind-verity-sig" "$t/ddi.sig"
tr -d '\0' <"$t/ddi.sig" >"$t/ddi.json.sig"
sig() { chroot "$r" jq -r ".$1" <"$t/ddi.json.sig"; }
ddi_hash=$(sig rootHash)
printf '%s' "$ddi_hash" >"$t/ddi.roothash"
sig signature | base64 -d >"$t/ddi.p7s"
uuids=$(field "$kind" 2)$(field "$kind-verity" 2)
check "DDI: rootHash = data partition UUID + verity partition UUID" \
	test "$ddi_hash" = "$(tr -d - <<<"$uuids" | tr A-F a-f)"
check "DDI: verity partition: superblock at offset 0, sha256, 4096/4096" superblock /v/ddi.verity
check "DDI: veritysetup verify of the data partition against rootHash" \
	chroot "$r" veritysetup verify /v/ddi.data /v/ddi.verity "$ddi_hash"
check "DDI: the signature verifies over rootHash with signing.crt" p7s "$t/ddi.roothash" "$t/ddi.p7s"
check "DDI: certificateFingerprint is signing.crt's SHA-256" test "$(sig certificateFingerprint)" = \
	"$(openssl x509 -in "$out/signing.crt" -outform DER | sha256sum | cut -c1-64)"
openssl smime -sign -binary -noattr -md sha256 -outform DER -in "$t/ddi.roothash" \
	-signer "$out/signing.crt" -inkey "$out/test-signing.key" -out "$t/resigned.p7s"
check ".roothash.p7s is made exactly as systemd-repart signs" cmp "$t/ddi.p7s" "$t/resigned.p7s"
rm -f "$v"/ddi.*
m=$t/mnt
mkdir -p "$m"
check "DDI: the $kind partition mounts read-only from a loop device at its offset" mount -t erofs \
	-o "ro,loop,offset=$(($(field "$kind" 3) * ss)),sizelimit=$(($(field "$kind" 4) * ss))" "$ddi" "$m"
check "DDI: usr/bin/podman is in it" test -x "$m/usr/bin/podman"
check "DDI: release file is right" diff <(release) "$m/usr/lib/extension-release.d/extension-release.podman"
check "DDI: release file keeps user.extension-release.strict=false" test \
	"$(getfattr --only-values -n user.extension-release.strict "$m/usr/lib/extension-release.d/extension-release.podman")" = false
listing() { (cd "$1" && find . -printf '%M %U %G %T@ %l %p\n' | sort); } # sizes: diff -r
same_tree() { diff <(listing "$1") <(listing "$2") && diff -r --no-dereference "$1" "$2"; }
check "DDI: the same files, modes, owners, times and contents as the plain image" same_tree "$x" "$m"
umount "$m" 2>/dev/null || true

# --- the podman-etc configuration extension: the same /etc defaults, signed
cname=podman-etc-$pver-debian-13.raw
cimg=$out/$cname
cstem=${cname%.raw}
check "confext: file name is podman-etc-<version>-debian-13.raw, erofs" \
	test "$(od -An -tx1 -j1024 -N4 "$cimg" | tr -d ' ')" = e2e1f5e0
cp "$cimg" "$r/etc.raw"
chroot "$r" fsck.erofs --xattrs --extract=/cx /etc.raw >/dev/null
cx=$r/cx
check "confext: only /etc at the top" test "$(ls -A "$cx")" = etc
crelease() {
	printf '%s\n' ID=debian VERSION_ID=13 CONFEXT_SCOPE=system CONFEXT_ID=podman-etc "CONFEXT_VERSION_ID=$pver"
}
crel=$cx/etc/extension-release.d/extension-release.podman-etc
check "confext: release file is right" diff <(crelease) "$crel"
check "confext: release file has user.extension-release.strict=false" \
	test "$(getfattr --only-values -n user.extension-release.strict "$crel")" = false
same_defaults() { # the files of /usr/share/podman/etc, byte for byte, and nothing else
	diff -r --no-dereference -x extension-release.d "$x/usr/share/podman/etc" "$cx/etc"
}
check "confext: holds exactly the sysext's /etc defaults" same_defaults
rules_match() { # every tmpfiles C rule names a file the confext has: installing both is fine
	local f
	while read -r f; do [[ -f "$cx$f" ]] || { echo "no $f"; return 1; }; done \
		< <(awk '$1 == "C" {print $2}' "$tmpfiles")
}
check "confext: every file the tmpfiles rules copy is in it" rules_match
csums() { for f in "$cname" "$cstem".{verity,roothash,roothash.p7s,confext.raw}; do grep -q " $f\$" "$out/SHA256SUMS" || return 1; done; }
check "confext: SHA256SUMS lists the image, its sidecars and its DDI" csums
cp "$cimg" "$out/$cstem.verity" "$v/"
check "confext: veritysetup verify against its .verity and .roothash" \
	chroot "$r" veritysetup verify "/v/$cname" "/v/$cstem.verity" "$(cat "$out/$cstem.roothash")"
check "confext: .roothash.p7s verifies with signing.crt" p7s "$out/$cstem.roothash" "$out/$cstem.roothash.p7s"
cddi=$out/$cstem.confext.raw
sfdisk --json "$cddi" | chroot "$r" jq -r '.partitiontable.partitions[] | "\(.type) \(.start) \(.size)"' >"$t/cddi.parts"
croot() { awk -v t="${dps[root]}" -v f="$1" '$1 == t {print $f}' "$t/cddi.parts"; }
clayout() {
	[[ $(wc -l <"$t/cddi.parts") == 3 ]] && for k in root root-verity root-verity-sig; do
		grep -q "^${dps[$k]} " "$t/cddi.parts" || return 1
	done
}
check "confext DDI: root, root-verity and root-verity-sig partitions" clayout
check "confext DDI: its root partition mounts read-only" mount -t erofs \
	-o "ro,loop,offset=$(($(croot 2) * ss)),sizelimit=$(($(croot 3) * ss))" "$cddi" "$m"
check "confext DDI: the same tree as the plain image" same_tree "$cx" "$m"
umount "$m" 2>/dev/null || true

# --- the forky target: testing's os-release has no VERSION_ID, so neither
# has the image's release file (it matches any forky root, as systemd rules)
fimg=$("$here/build.sh" --target debian-forky --out "$t/outf" 2>"$t/buildf.log") || true
fver=$(sed -n 's/^podman=//p' "${fimg%.raw}.packages" 2>/dev/null | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[+~].*//')
check "forky target: file name is podman-<version>-debian-forky-x86-64.raw" \
	test "$(basename "${fimg:-none}")" = "podman-$fver-debian-forky-x86-64.raw"
forky_release() {
	printf '%s\n' ID=debian ARCHITECTURE=x86-64 SYSEXT_ID=podman "SYSEXT_VERSION_ID=$fver" EXTENSION_RELOAD_MANAGER=1 |
		diff - "$m/usr/lib/extension-release.d/extension-release.podman"
}
if mount -t erofs -o ro,loop "$fimg" "$m" 2>/dev/null; then
	check "forky target: release file has ID=debian and no VERSION_ID" forky_release
	check "forky target: podman 5.8 or newer" sort -V -C <(printf '%s\n' 5.8 "$fver")
	check "forky target: quadlet's generator resolves in the image" \
		test -x "$m/usr/lib/systemd/system-generators/podman-system-generator"
	umount "$m"
else
	check "forky target: the image mounts" false
fi
fcimg=$t/outf/podman-etc-$fver-debian-forky.raw
forky_crelease() {
	printf '%s\n' ID=debian CONFEXT_SCOPE=system CONFEXT_ID=podman-etc "CONFEXT_VERSION_ID=$fver" |
		diff - "$m/etc/extension-release.d/extension-release.podman-etc"
}
if mount -t erofs -o ro,loop "$fcimg" "$m" 2>/dev/null; then
	check "forky target: podman-etc-<version>-debian-forky.raw has ID=debian and no VERSION_ID" forky_crelease
	umount "$m"
else
	check "forky target: podman-etc-$fver-debian-forky.raw mounts" false
fi

# --- bad input fails early, naming the culprit
fails_with() { # fails_with TEXT COMMAND...: COMMAND fails and says TEXT
	local text=$1
	shift
	! "$@" >"$t/bad.log" 2>&1 && grep -F -- "$text" "$t/bad.log"
}
check "missing key is refused" fails_with "key not found: $t/nokey" "$here/build.sh" --out "$t/o" --key "$t/nokey" --cert "$out/signing.crt"
echo garbage >"$t/garbage.key"
check "unreadable key is refused" fails_with "key unreadable" "$here/build.sh" --out "$t/o" --key "$t/garbage.key" --cert "$out/signing.crt"
check "refused key left no output" test ! -e "$t/o"
check "unknown target OS is named" fails_with "unknown target OS: fedora-41" "$here/build.sh" --target fedora-41
mkdir -p "$t/copy/guest" "$t/copy/sysext"
cp -a "$repo/guest/base.sh" "$t/copy/guest/"
cp -a "$here" "$t/copy/sysext/"
echo no-such-package-xyz >>"$t/copy/sysext/podman/packages"
check "missing package is named" fails_with "package not in the repository: no-such-package-xyz" \
	"$t/copy/sysext/podman/build.sh" --out "$t/o"
check "no temporary files left in the output" not grep . < <(find "$out" -name '.*')

# --- reproducibility: a second, uncached build gives the same bytes
"$here/build.sh" --no-cache --out "$t/out2" --key "$out/test-signing.key" --cert "$out/test-signing.crt" \
	>/dev/null 2>"$t/build2.log" || true
check "second uncached build is byte-identical" cmp "$img" "$t/out2/$name"
for f in "$stem".{sysext.raw,verity,roothash,roothash.p7s} "$cname" "$cstem".{confext.raw,verity,roothash,roothash.p7s}; do
	check "second uncached build: $f is byte-identical" cmp "$out/$f" "$t/out2/$f"
done

# --- squashfs option
sq=$("$here/build.sh" --format squashfs --out "$t/outsq" 2>"$t/buildsq.log") || true
check "squashfs (zstd) option builds a squashfs" test "$(od -An -c -N4 "$sq" 2>/dev/null | tr -d ' ')" = hsqs
# shellcheck disable=SC2016 # $t is jq's
sq_ddi() { # its DDI's root partition is squashfs and keeps the release file's xattr
	local start size ok=0
	read -r start size < <(sfdisk --json "${sq%.raw}.sysext.raw" | chroot "$r" jq -r --arg t "${dps[root]}" \
		'.partitiontable.partitions[] | select(.type == $t) | "\(.start) \(.size)"')
	mount -t squashfs -o "ro,loop,offset=$((start * ss)),sizelimit=$((size * ss))" "${sq%.raw}.sysext.raw" "$m" || return 1
	[[ $(getfattr --only-values -n user.extension-release.strict \
		"$m/usr/lib/extension-release.d/extension-release.podman") == false ]] || ok=1
	umount "$m"
	return "$ok"
}
check "squashfs option: the DDI holds a squashfs with the release file's xattr" sq_ddi

# --- initrd-sysext plan against a sysroot made from the base
plan() { # plan SYSROOT IMAGE WANT
	"$bin" plan --sysroot "$1" >"$t/plan.out" 2>&1 || true
	cat "$t/plan.out"
	grep -F "$(basename "$2")" "$t/plan.out" | grep -E "$3"
}
if [[ -x "$bin" ]]; then
	sys=$t/sysroot
	cp -a "$base" "$sys"
	mkdir -p "$sys/var/lib/extensions"
	cp "$img" "$sys/var/lib/extensions/"
	check "plan: merge for the image under its published name in /var/lib/extensions" plan "$sys" "$img" 'merge'
	mv "$sys/var/lib/extensions/$name" "$sys/var/lib/extensions/podman.raw"
	check "plan: merge for the image installed as podman.raw" plan "$sys" podman.raw 'merge'
	mkdir -p "$sys/var/lib/confexts"
	cp "$cimg" "$sys/var/lib/confexts/podman-etc.raw"
	check "plan: merge for podman-etc installed in /var/lib/confexts" plan "$sys" podman-etc.raw 'merge'
	cp "$out/$cstem.confext.raw" "$sys/var/lib/confexts/podman-etc.raw"
	# Without device-mapper (this host) the DDI stops after its checks, at dm-verity.
	check "plan: its DDI is recognised and passes its checks" plan "$sys" podman-etc.raw \
		'ddi[[:space:]](merge|skip: cannot be mounted after passing its checks \(dm-verity)'
	other=$("$here/build.sh" --version-id 12 --out "$t/out12" 2>"$t/build12.log") || true
	rm -f "$sys/var/lib/extensions/"* "$sys/var/lib/confexts/"*
	cp "$other" "$sys/var/lib/extensions/"
	check "plan: skip (VERSION_ID) for an image built for VERSION_ID=12" plan "$sys" "$other" 'skip.*VERSION_ID'
	cp "$t/out12/podman-etc-$pver-debian-12.raw" "$sys/var/lib/confexts/" 2>/dev/null || true
	check "plan: skip (VERSION_ID) for podman-etc built for VERSION_ID=12" plan "$sys" "podman-etc-$pver-debian-12.raw" 'skip.*VERSION_ID'
else
	check "initrd-sysext binary at $bin (cargo build --release --target x86_64-unknown-linux-musl)" test -x "$bin"
fi

done=1
summary
