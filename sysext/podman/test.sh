#!/usr/bin/env bash
# Tests for the podman system extension image (issue 3). One line per check,
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

passed=0 failed=0
check() { # check NAME COMMAND...: run COMMAND, record its result under NAME
	local label=$1
	shift
	if "$@" >"$t/check.log" 2>&1; then
		echo "ok - $label"
		passed=$((passed + 1))
	else
		echo "FAIL - $label"
		sed 's/^/    /' "$t/check.log" | tail -n 20
		failed=$((failed + 1))
	fi
}

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
apt_install "$r" erofs-utils
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
"$here/build.sh" --no-cache --out "$t/out2" >/dev/null 2>"$t/build2.log" || true
check "second uncached build is byte-identical" cmp "$img" "$t/out2/$name"

# --- squashfs option
sq=$("$here/build.sh" --format squashfs --out "$t/outsq" 2>"$t/buildsq.log") || true
check "squashfs (zstd) option builds a squashfs" test "$(od -An -c -N4 "$sq" 2>/dev/null | tr -d ' ')" = hsqs

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
	other=$("$here/build.sh" --version-id 12 --out "$t/out12" 2>"$t/build12.log") || true
	rm -f "$sys/var/lib/extensions/"*
	cp "$other" "$sys/var/lib/extensions/"
	check "plan: skip (VERSION_ID) for an image built for VERSION_ID=12" plan "$sys" "$other" 'skip.*VERSION_ID'
else
	check "initrd-sysext binary at $bin (cargo build --release --target x86_64-unknown-linux-musl)" test -x "$bin"
fi

done=1
echo "$passed passed, $failed failed"
((failed == 0))
