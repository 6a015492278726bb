#!/bin/bash
# Guest side of tests-qemu/bench-verity.sh, run by the collector as
# /etc/its/scenario.sh. In a private mount namespace, merges the extension
# into each scratch sysroot under /var/lib/its/bench and unmerges it again,
# RUNS times per variant, interleaved, the page cache dropped before each
# merge; a first round is a warm-up. Prints, per merge:
#   line VARIANT MERGE-LINE                        (warm-up round)
#   run VARIANT WALL_US DONE_MS IMAGE_MS DM_GONE_MS
# DONE_MS is the binary's "done in", IMAGE_MS its "merged NAME … in N ms",
# DM_GONE_MS how long a device-mapper device outlived `unmerge`.
# shellcheck disable=SC1091,SC2154 # runs, name, variants, modules come from params
set -u
b=/var/lib/its/bench
# runs=, name=, variants=, modules=
. "$b/params"
if [[ ${1:-} != inner ]]; then
    # shellcheck disable=SC2086 # a word list
    [[ -z $modules ]] || modprobe -a $modules
    # The SHA-256 that dm-verity will get: the highest priority one.
    echo "sha256: $(awk -F' *: ' '$1 == "name" { n = $2 } $1 == "driver" { d = $2 }
        $1 == "priority" && n == "sha256" && $2 > p { p = $2; best = d } END { print best }' /proc/crypto)"
    exec unshare -m --propagation private "$0" inner
fi

one() { # VARIANT warm-up|run
    local v=$1 t0 t1 t2 out line done_ms image_ms
    sync
    echo 3 >/proc/sys/vm/drop_caches
    t0=${EPOCHREALTIME/./}
    out=$(initrd-sysext merge --sysroot "$b/$v" --cmdline "$b/$v.cmdline" --report /tmp/report.json 2>&1)
    t1=${EPOCHREALTIME/./}
    line=$(grep "merged $name from" <<<"$out") || { echo "failed $v: $out"; return; }
    initrd-sysext unmerge --sysroot "$b/$v" >/dev/null 2>&1 || echo "unmerge failed $v"
    t2=${EPOCHREALTIME/./}
    while compgen -G '/sys/block/dm-*' >/dev/null && ((${EPOCHREALTIME/./} - t2 < 5000000)); do
        sleep 0.01
    done
    compgen -G '/sys/block/dm-*' >/dev/null && echo "leak after $v: $(ls -d /sys/block/dm-*)"
    if [[ $2 == warm-up ]]; then
        echo "line $v $line"
        return
    fi
    done_ms=$(sed -nE 's/.*done in ([0-9]+) ms.*/\1/p' <<<"$out")
    image_ms=$(sed -nE 's/.* in ([0-9]+) ms$/\1/p' <<<"$line")
    echo "run $v $((t1 - t0)) ${done_ms:--} ${image_ms:--} $(((${EPOCHREALTIME/./} - t2) / 1000))"
}

for v in $variants; do one "$v" warm-up; done
for ((r = 0; r < runs; r++)); do
    for v in $variants; do one "$v" run; done
done
