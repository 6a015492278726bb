#!/usr/bin/env bash
# Merge 1, 16, 64 and 128 small squashfs images into a scratch sysroot, with initrd-sysext and
# with the host's systemd-sysext, each inside a private mount namespace, and print the median
# wall time of merge (unmerge is not timed). Usage: bench/merge.sh [RUNS]
set -euo pipefail

bin=$(realpath "${INITRD_SYSEXT_BIN:-target/x86_64-unknown-linux-musl/release/initrd-sysext}")
runs=${1:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make_sysroot() { # DIR COUNT
  local s=$1/sysroot i name
  mkdir -p "$s/usr/lib" "$s/usr/bin" "$s/etc" "$s/opt" "$s/var/lib/extensions" "$1/tree"
  printf 'ID=debian\nVERSION_ID=13\n' >"$s/usr/lib/os-release"
  : >"$s/usr/bin/base"
  for ((i = 0; i < $2; i++)); do
    name=$(printf 'ext-%03d' "$i")
    rm -rf "$1/tree" && mkdir -p "$1/tree/usr/lib/extension-release.d" "$1/tree/usr/bin"
    printf 'ID=debian\nVERSION_ID=13\n' >"$1/tree/usr/lib/extension-release.d/extension-release.$name"
    echo "$name" >"$1/tree/usr/bin/$name"
    mksquashfs "$1/tree" "$s/var/lib/extensions/$name.raw" -quiet -no-progress -all-root >/dev/null
  done
}

# Prints one duration in ms per run, or "failed" with systemd's message.
time_merges() { # SYSROOT MERGE-CMD UNMERGE-CMD
  S=$1 MERGE=$2 UNMERGE=$3 RUNS=$runs unshare -m --propagation private bash -c '
    for ((r = 0; r < RUNS; r++)); do
      t0=$(date +%s%N)
      if ! out=$(eval "$MERGE" 2>&1); then echo "failed: ${out##*$'"'"'\n'"'"'}"; exit 0; fi
      t1=$(date +%s%N)
      eval "$UNMERGE" >/dev/null 2>&1
      echo $(((t1 - t0) / 1000))
    done'
}

median_ms() { # reads microseconds, prints the median in ms
  sort -n | awk '{a[NR] = $1} END {printf "%.1f", a[int((NR + 1) / 2)] / 1000}'
}

printf '%-7s %16s %16s %8s %14s\n' images initrd-sysext systemd-sysext ratio "ours per image"
for n in 1 16 64 128; do
  d=$work/$n
  make_sysroot "$d" "$n"
  ours=$(time_merges "$d/sysroot" "'$bin' merge --sysroot \$S --cmdline /dev/null --report $d/report.json" "'$bin' unmerge --sysroot \$S")
  theirs=$(time_merges "$d/sysroot" "systemd-sysext merge --root=\$S" "systemd-sysext unmerge --root=\$S")
  o=$(median_ms <<<"$ours")
  if [[ $theirs == failed* ]]; then
    t=$theirs ratio=-
  else
    t=$(median_ms <<<"$theirs") ratio=$(awk -v a="$t" -v b="$o" 'BEGIN {printf "%.0fx", a / b}')
  fi
  printf '%-7s %13s ms %16s %8s %11.2f ms\n' "$n" "$o" "$t${t:+ ms}" "$ratio" "$(awk -v a="$o" -v n="$n" 'BEGIN {print a / n}')"
done
echo "medians of $runs runs; $(uname -r); $(systemd-sysext --version | head -1)"
