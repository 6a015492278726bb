#!/usr/bin/env bash
# Verified activation against unverified, on the same image contents (issue 5):
#   [ITS_BENCH_MODULES="sha256_ssse3"] tests-qemu/bench-verity.sh [-n RUNS]
# One guest boot. In the booted guest the real binary merges the podman
# extension into scratch sysroots and unmerges it again, RUNS times per
# variant (default 15), interleaved, with the page cache dropped before each
# merge (at boot the image is cold too), after loading ITS_BENCH_MODULES:
#   plain    the erofs image, no dm-verity (rd.sysext.policy=any)
#   sidecar  the same erofs file + .verity/.roothash/.roothash.p7s (policy signed)
#   ddi      the signed DDI of the same tree (policy signed)
# Prints the medians of the binary's own "done in" time, of its time for the
# image ("merged NAME … in N ms") and of the wall time of `initrd-sysext
# merge`, the ratios to plain (goal <= 1.5) and the size of the binary. The
# guest side is guest/bench-verity.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scenarios.sh
. "$here/scenarios.sh"
runs=15
while (($#)); do
    case $1 in
    -n) runs=$2; shift 2 ;;
    *) echo "usage: bench-verity.sh [-n RUNS]" >&2; exit 2 ;;
    esac
done
bin=${INITRD_SYSEXT_BIN:-$repo/target/x86_64-unknown-linux-musl/release/initrd-sysext}
its_guest trixie && its_accel && its_podman trixie && its_podman_meta && its_signed
variants=(plain ddi)
[[ -n ${PODMAN_SIDECAR:-} ]] && variants=(plain sidecar ddi)

# /var/lib/its/bench/VARIANT is a scratch sysroot: the guest's os-release, the
# trusted certificate in its /usr/lib/verity.d, the image(s) in
# /var/lib/extensions; VARIANT.cmdline sets the policy.
prep_bench() {
    local b=$1/var/lib/its/bench v ext
    for v in "${variants[@]}"; do
        ext=$b/$v/var/lib/extensions
        install -D -m 0644 "$1/usr/lib/os-release" "$b/$v/usr/lib/os-release"
        install -D -m 0644 "$KEYS/trusted.crt" "$b/$v/usr/lib/verity.d/its-trusted.crt"
        mkdir -p "$ext"
        echo "rd.sysext.policy=signed" >"$b/$v.cmdline"
    done
    echo "rd.sysext.policy=any" >"$b/plain.cmdline"
    cp "$PODMAN_RAW" "$b/plain/var/lib/extensions/$PODMAN_NAME.raw"
    cp "$PODMAN_DDI" "$b/ddi/var/lib/extensions/$PODMAN_NAME.raw"
    if [[ -n ${PODMAN_SIDECAR:-} ]]; then
        local s
        for s in raw verity roothash roothash.p7s; do
            cp "$PODMAN_SIDECAR.$s" "$b/sidecar/var/lib/extensions/$PODMAN_NAME.$s"
        done
    fi
    printf 'runs=%s name=%s variants="%s" modules="%s"\n' "$runs" "$PODMAN_NAME" "${variants[*]}" \
        "${ITS_BENCH_MODULES:-}" >"$b/params"
    install -m 0755 "$here/guest/bench-verity.sh" "$1/etc/its/scenario.sh"
    checks "$1" ""
}
dir=${ITS_OUT:-$its_tmp}/bench res=${ITS_OUT:-$its_tmp}/bench/res
its_image "$dir" prep_bench
log "booting; $runs runs of ${variants[*]} in the guest"
ITS_BOOT_TIMEOUT=$((480 + runs * 30)) its_boot "$dir" ours "" || {
    tail -n 20 "$res/console.log"; exit 1; }
rm -f "$dir/root.raw" "$dir/results.img"

median() { sort -n | awk '{ v[NR] = $1 } END { if (!NR) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# col VARIANT FIELD: the median of that field over the variant's runs.
col() { awk -v v="$1" -v f="$2" '$1 == "run" && $2 == v && $f != "-" { print $f }' "$res/scenario" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }

echo
grep -E '^(line|failed|leak|unmerge failed|sha256)' "$res/scenario" | sed 's/^line //' || true
echo
echo "medians of $runs merges each, in the booted guest (${its_accel_args}), page cache dropped before each"
printf '%-8s %10s %10s %10s   %s\n' variant "done in" "image" "wall" "ratio to plain (done, image, wall)"
pd=$(col plain 4) pi=$(col plain 5) pw=$(col plain 3)
for v in "${variants[@]}"; do
    d=$(col "$v" 4) i=$(col "$v" 5) w=$(col "$v" 3)
    printf '%-8s %7s ms %7s ms %7s ms   %s %s %s\n' "$v" "$d" "$i" "$(ms "$w")" \
        "$(ratio "$d" "$pd")" "$(ratio "$i" "$pi")" "$(ratio "$w" "$pw")"
done
echo "goal: verified <= 1.5 x plain"
echo "binary: $(stat -c %s "$bin") bytes ($bin)"
awk '$1 == "run" && $7 > 20 { n++; if ($7 > m) m = $7 } END { if (n) printf "a dm device outlived unmerge by more than 20 ms in %d runs (at most %d ms)\n", n, m }' "$res/scenario"
echo "per run, done in / image / wall (ms):"
awk '$1 == "run" { a[$2] = a[$2] sprintf(" %s/%s/%.0f", $4, $5, $3 / 1000) } END { for (v in a) print "  " v ":" a[v] }' "$res/scenario" | sort
