#!/usr/bin/env bash
# Print the .systemd-sysext/origin that systemd 262 itself writes when it merges one
# extension KIND (raw: an erofs file; dir: a directory) into a forky root. The unit
# tests compare our writer with its output (tests/fixtures/systemd-262/). Needs root.
set -euo pipefail
kind=${1:?usage: origin-fixture.sh raw|dir}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$("$here/build.sh" forky)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2016 # expanded by the inner shell
unshare -m --propagation private bash -euc '
	lower=$1 work=$2 kind=$3
	mount -t tmpfs tmpfs "$work"
	mkdir -p "$work/u" "$work/w" "$work/r" "$work/t/usr/lib/extension-release.d" "$work/t/usr/bin"
	mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/u,workdir=$work/w" "$work/r"
	mount --make-rshared "$work/r"
	r=$work/r
	mount -t proc proc "$r/proc"; mount -t sysfs sysfs "$r/sys"; mount --rbind /dev "$r/dev"
	mount -t tmpfs tmpfs "$r/run"
	echo ID=_any >"$work/t/usr/lib/extension-release.d/extension-release.hello"
	echo hello >"$work/t/usr/bin/hello"
	mkdir -p "$r/var/lib/extensions"
	case $kind in
	raw) mkfs.erofs --quiet "$r/var/lib/extensions/hello.raw" "$work/t" ;;
	dir) cp -a "$work/t" "$r/var/lib/extensions/hello" ;;
	esac
	chroot "$r" systemd-sysext merge >&2
	cat "$r/usr/.systemd-sysext/origin"
' - "$root" "$work" "$kind"
