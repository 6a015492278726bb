#!/usr/bin/env bash
# Fetch (once) a Debian suite's cloud kernel and print the directory it was
# unpacked into: DIR/vmlinuz and DIR/modules/KVER (KVER is in DIR/kver).
#   tests-qemu/kernel.sh bullseye|bookworm|trixie|forky
# The chain is checked as apt would: InRelease against the host's archive
# keyring, Packages.xz against InRelease, the .deb against Packages (expired
# Valid-Until dates are accepted, as the forky mirror needs). The package is
# only unpacked aside, never installed: a bookworm package carries /lib,
# which must not land on a merged-/usr root.
set -euo pipefail
suite=${1:?usage: kernel.sh SUITE}
mirror=${INITRD_SYSEXT_MIRROR:-http://deb.debian.org/debian}
cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$cache/kernels"
exec 9>"$cache/kernels/$suite.lock"
flock 9
tmp=$(mktemp -d "$cache/kernels/$suite.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

curl -fsS -o "$tmp/InRelease" "$mirror/dists/$suite/InRelease"
gpgv --keyring "$keyring" --output "$tmp/Release" "$tmp/InRelease" 2>/dev/null
sum=$(awk '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && $3 == "main/binary-amd64/Packages.xz" { print $1 }' "$tmp/Release")
[[ -n $sum ]] || { echo "kernel.sh: no Packages.xz in $suite's Release" >&2; exit 1; }
curl -fsS -o "$tmp/Packages.xz" "$mirror/dists/$suite/main/binary-amd64/Packages.xz"
echo "$sum  $tmp/Packages.xz" | sha256sum -c --quiet
xz -d "$tmp/Packages.xz"

# field PACKAGE FIELD: a field of a package's stanza.
field() { awk -v p="Package: $1\n" -v f="$2:" 'BEGIN { RS = "" } index($0 "\n", p) == 1 {
    n = split($0, l, "\n"); for (i = 1; i <= n; i++) if (index(l[i], f " ") == 1) { print substr(l[i], length(f) + 2); exit } }' "$tmp/Packages"; }
# The metapackage depends on the versioned image package.
pkg=$(field linux-image-cloud-amd64 Depends | tr ',' '\n' | sed -nE 's/^ *(linux-image-[0-9][^ ]*-cloud-amd64(-unsigned)?).*/\1/p' | head -n1)
[[ -n $pkg ]] || { echo "kernel.sh: no cloud kernel in $suite" >&2; exit 1; }
version=$(field "$pkg" Version)
# The recipe is part of the name: a fixed unpacking step fetches again.
recipe=$(sha256sum <"${BASH_SOURCE[0]}" | cut -c1-8)
out=$cache/kernels/$suite-$pkg-$version-$recipe
if [[ ! -d $out ]]; then
    echo "kernel.sh: fetching $pkg $version ($suite)" >&2
    # Newer suites split the kernel into linux-binary-* (vmlinuz),
    # linux-modules-* and linux-base-KVER (modules.builtin, modules.order)
    # packages that the image package depends on.
    mapfile -t parts < <(echo "$pkg"; field "$pkg" Depends | tr ',' '\n' |
        sed -nE 's/^ *(linux-(binary|modules|base)-[0-9][^ ]+).*/\1/p')
    for p in "${parts[@]}"; do
        curl -fsS -o "$tmp/k.deb" "$mirror/$(field "$p" Filename)"
        echo "$(field "$p" SHA256)  $tmp/k.deb" | sha256sum -c --quiet
        dpkg-deb -x "$tmp/k.deb" "$tmp/root"
    done
    mods=$(find "$tmp/root" -maxdepth 3 -type d -path '*lib/modules' | head -n1)
    kver=$(ls "$mods")
    mkdir -p "$tmp/out"
    # /boot/vmlinuz-KVER, or (forky's layout) modules/KVER/vmlinuz.
    vmlinuz=$(find "$tmp/root" \( -name "vmlinuz-$kver" -o -path "*/modules/$kver/vmlinuz" \) -print -quit)
    mv "$mods" "$tmp/out/modules"
    mv "${vmlinuz/$mods/$tmp/out/modules}" "$tmp/out/vmlinuz"
    echo "$kver" >"$tmp/out/kver"
    mv -T "$tmp/out" "$out"
fi
echo "$out"
