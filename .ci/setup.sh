#!/usr/bin/env bash
# Install what the build and the tests need, and only what is missing, so a
# second run is a quick no-op: the Debian packages in .ci/packages and the
# musl target of the Rust toolchain.
#   .ci/setup.sh [rust|packages]   (default: both)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target=x86_64-unknown-linux-musl

setup_rust() {
    command -v cargo >/dev/null || { echo "setup: no cargo: install Rust first (https://rustup.rs)" >&2; return 1; }
    [[ -d $(rustc --print sysroot)/lib/rustlib/$target/lib ]] && return 0
    command -v rustup >/dev/null ||
        { echo "setup: the Rust target $target is missing and there is no rustup to add it" >&2; return 1; }
    rustup target add "$target"
}

# The packages of .ci/packages that are not installed and whose command (a second word) is
# missing, one per line.
missing_packages() {
    local pkg cmd want=()
    declare -A installed=()
    while read -r pkg cmd; do
        [[ -z $pkg || $pkg == \#* ]] && continue
        [[ -n $cmd ]] && command -v "$cmd" >/dev/null && continue
        want+=("$pkg")
    done <"$here/packages"
    ((${#want[@]})) || return 0
    # One query for all; unknown packages only print to stderr.
    while read -r pkg cmd; do
        [[ $cmd == ii ]] && installed[$pkg]=1
    done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${want[@]}" 2>/dev/null || true)
    for pkg in "${want[@]}"; do
        [[ -n ${installed[$pkg]:-} ]] || echo "$pkg"
    done
}

setup_packages() {
    local round missing
    if ! command -v dpkg-query >/dev/null; then
        echo "setup: not a Debian system; make sure the packages in $here/packages (or their equivalents) are installed" >&2
        return 0
    fi
    # Two rounds: an install may remove what satisfied another line. Where a machine carries
    # a backported qemu-utils, bookworm's qemu-system-x86 removes it, and qemu-img with it;
    # the second round installs bookworm's qemu-utils. The third only checks.
    for round in 1 2 3; do
        mapfile -t missing < <(missing_packages)
        ((${#missing[@]})) || return 0
        if ((round == 3)); then
            echo "setup: still missing after installing: ${missing[*]}" >&2
            return 1
        elif ((EUID != 0)); then
            echo "setup: missing packages, run as root: apt-get install ${missing[*]}" >&2
            return 1
        fi
        echo "setup: installing ${missing[*]} (round $round)" >&2
        export DEBIAN_FRONTEND=noninteractive
        ((round > 1)) || apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    done
}

case ${1:-all} in
rust) setup_rust ;;
packages) setup_packages ;;
all) setup_packages && setup_rust ;;
*) echo "usage: $0 [rust|packages]" >&2; exit 2 ;;
esac
