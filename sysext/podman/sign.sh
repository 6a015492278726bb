#!/usr/bin/env bash
# sign.sh DIR KEY CERT: write DIR/SHA256SUMS over DIR's images (*.raw, which
# includes the *.sysext.raw DDIs), *.packages and verity sidecars,
# a detached DER CMS signature DIR/SHA256SUMS.p7s, and publish the
# certificate as DIR/signing.crt, so a node verifies with stock openssl:
#   openssl cms -verify -binary -inform DER -in SHA256SUMS.p7s \
#     -content SHA256SUMS -CAfile signing.crt -purpose any -out /dev/null
set -euo pipefail
export LC_ALL=C
dir=$1 key=$2 cert=$3

(cd "$dir" && find . -maxdepth 1 -type f \( -name '*.raw' -o -name '*.packages' -o -name '*.verity' \
	-o -name '*.roothash' -o -name '*.roothash.p7s' \) -printf '%P\n' |
	sort | xargs -r -d '\n' sha256sum) >"$dir/.SHA256SUMS.tmp"
openssl cms -sign -binary -noattr -md sha256 -outform DER -in "$dir/.SHA256SUMS.tmp" \
	-signer "$cert" -inkey "$key" -passin pass: -out "$dir/.SHA256SUMS.p7s.tmp"
cp "$cert" "$dir/.signing.crt.tmp"
mv -f "$dir/.signing.crt.tmp" "$dir/signing.crt"
mv -f "$dir/.SHA256SUMS.tmp" "$dir/SHA256SUMS"
mv -f "$dir/.SHA256SUMS.p7s.tmp" "$dir/SHA256SUMS.p7s"
