#!/usr/bin/env bash
# Merge 1, 16, 64 and 128 small squashfs images into a scratch sysroot, with initrd-sysext and
# with the host's systemd-sysext, each inside a private mount namespace, and print the median
# wall time of merge (unmerge is not timed). Then 1, 16 and 64 small confexts onto /etc of a
# copy of the minimal forky root (tests/sysroots/build.sh), read-only and ephemeral, with ours
# and with that root's systemd-confext (262, through chroot).
# Usage: bench/merge.sh [RUNS] [sysext|confext] (default: both tables)
set -euo pipefail

bin=$(realpath "${INITRD_SYSEXT_BIN:-target/x86_64-unknown-linux-musl/release/initrd-sysext}")
runs=${1:-7} tables=${2:-sysext confext}
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

# Runs inside the namespace: prints one duration in microseconds per run, or "failed: …".
# $EPOCHREALTIME, not date(1), so that no fork is timed but the command's own.
merge_loop() { # RUNS MERGE-CMD UNMERGE-CMD [SETUP-CMD]
  local r t0 t1 out merge unmerge
  read -ra merge <<<"$2"
  read -ra unmerge <<<"$3"
  [[ -z ${4:-} ]] || eval "$4"
  for ((r = 0; r < $1; r++)); do
    t0=${EPOCHREALTIME/./}
    if ! out=$("${merge[@]}" 2>&1); then
      echo "failed: $(tail -n 1 <<<"$out")"
      return
    fi
    t1=${EPOCHREALTIME/./}
    "${unmerge[@]}" >/dev/null 2>&1
    echo $((t1 - t0))
  done
}

time_merges() { # MERGE-CMD UNMERGE-CMD [SETUP-CMD] (no spaces inside arguments)
  unshare -m --propagation private bash -c "$(declare -f merge_loop); merge_loop \"\$@\"" - "$runs" "$1" "$2" "${3:-}"
}

median_ms() { # reads microseconds, prints the median in ms
  sort -n | awk '{a[NR] = $1} END {printf "%.1f", a[int((NR + 1) / 2)] / 1000}'
}

sysext_table() {
  printf '%-7s %16s %16s %8s %14s\n' images initrd-sysext systemd-sysext ratio "ours per image"
  for n in 1 16 64 128; do
    d=$work/$n
    make_sysroot "$d" "$n"
    s=$d/sysroot
    ours=$(time_merges "$bin merge --sysroot $s --cmdline /dev/null --report $d/report.json" "$bin unmerge --sysroot $s")
    theirs=$(time_merges "systemd-sysext merge --root=$s" "systemd-sysext unmerge --root=$s")
    o=$(median_ms <<<"$ours")
    if [[ $theirs == failed* ]]; then
      t=$theirs ratio=-
    else
      t=$(median_ms <<<"$theirs") ratio=$(awk -v a="$t" -v b="$o" 'BEGIN {printf "%.0fx", a / b}')
    fi
    printf '%-7s %13s ms %16s %8s %11.2f ms\n' "$n" "$o" "$t${t:+ ms}" "$ratio" "$(awk -v a="$o" -v n="$n" 'BEGIN {print a / n}')"
  done
  echo "medians of $runs runs; $(uname -r); $(systemd-sysext --version | head -1)"
}

# Confexts onto /etc. The root is a plain copy (a persistent upper cannot be on overlayfs),
# bound onto itself and shared (systemd-confext 262 cannot read an image's metadata otherwise);
# systemd-confext runs in it with /proc, /sys, /dev and a /run of its own.
make_confexts() { # ROOT COUNT
  local i name t=$work/ctree
  mkdir -p "$1/var/lib/confexts"
  for ((i = 0; i < $2; i++)); do
    name=$(printf 'conf-%03d' "$i")
    rm -rf "$t" && mkdir -p "$t/etc/extension-release.d"
    printf 'ID=_any\n' >"$t/etc/extension-release.d/extension-release.$name"
    echo "$name" >"$t/etc/$name.conf"
    mksquashfs "$t" "$1/var/lib/confexts/$name.raw" -quiet -no-progress -all-root >/dev/null
  done
}
confext_table() {
  local root
  root=$(tests/sysroots/build.sh forky 2>/dev/null) || { echo "no forky root: confexts not measured"; return 0; }
  printf '%-9s %10s %12s %6s %14s %16s %6s\n' confexts "ours ro" "262 ro" ratio "ours ephemeral" "262 ephemeral" ratio
  for n in 1 16 64; do
    r=$work/root-$n
    cp -a "$root" "$r"
    make_confexts "$r" "$n"
    setup="mount --bind $r $r && mount --make-rshared $r && mount -t proc proc $r/proc && mount -t tmpfs run $r/run && mount -t sysfs sysfs $r/sys && mount --rbind /dev $r/dev"
    row=()
    for mode in no ephemeral; do
      ours=$(time_merges "$bin merge --sysroot $r --cmdline /dev/null --report $work/report.json --run $work/run --mutable $mode" \
        "$bin unmerge --sysroot $r" "$setup")
      theirs=$(time_merges "env SYSTEMD_CONFEXT_MUTABLE_MODE=$mode chroot $r systemd-confext merge" \
        "chroot $r systemd-confext unmerge" "$setup")
      if [[ $ours == failed* || $theirs == failed* ]]; then
        echo "mode $mode, $n confexts: ours: ${ours:0:200}; systemd-confext: ${theirs:0:200}" >&2
        row+=(failed failed -)
        continue
      fi
      o=$(median_ms <<<"$ours") t=$(median_ms <<<"$theirs")
      row+=("$o ms" "$t ms" "$(awk -v a="$t" -v b="$o" 'BEGIN {printf "%.0fx", a / b}')")
    done
    printf '%-9s %10s %12s %6s %14s %16s %6s\n' "$n" "${row[@]}"
    rm -rf "$r"
  done
  echo "medians of $runs runs; systemd-confext: $(chroot "$root" systemd-confext --version | head -1)"
}

for t in $tables; do
  case $t in
  sysext) sysext_table ;;
  confext) confext_table ;;
  *) echo "unknown table: $t (sysext or confext)" >&2 && exit 2 ;;
  esac
  echo
done
