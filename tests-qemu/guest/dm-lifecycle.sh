#!/bin/bash
# Guest side of the dm-lifecycle scenario, run by the collector as
# /etc/its/scenario.sh. In a private mount namespace, the real binary runs
# RUNS times in a tight loop (nothing waits for udev in between) against two
# scratch sysroots under /var/lib/its/dm:
#   bad   a signed DDI whose erofs superblock is flipped: every mount fails
#         after the checks pass, while udev probes the new dm device
#   good  the signed DDI: merge, unmerge, merge, ... (a device of the same
#         image may still be on its way out when the next one is created)
# Meanwhile a prober opens every new dm device at once and holds it 1.5 s, as
# udev's blkid does for a moment when a device appears: under TCG udev is
# slower than a failed mount, so the race where an immediate remove meets
# EBUSY would rarely show; here it does. Then, with the prober gone and udev
# settled, no device-mapper device may be left. Prints one summary line per
# phase; the host judges them.
# shellcheck disable=SC1091,SC2154 # runs and name come from params
set -u
d=/var/lib/its/dm
# runs=, name=
. "$d/params"
if [[ ${1:-} != inner ]]; then
    modprobe -a loop erofs dm_mod dm_verity
    exec unshare -m --propagation private "$0" inner
fi
dms() { compgen -G '/sys/block/dm-*' | wc -l; }
# settled PHASE: wait (at most 10 s) for udev and deferred removals, then count.
settled() {
    local t=0
    udevadm settle --timeout=10
    while (($(dms) > 0 && t < 100)); do sleep 0.1; t=$((t + 1)); done
    echo "dm devices left after $1: $(dms)"
    local x
    for x in /sys/block/dm-*; do [[ -e $x ]] && echo "  ${x##*/} $(<"$x/dm/name")"; done
}
# What merge hands over to a booted system goes to a scratch /run, not the guest's.
merge() {
    initrd-sysext merge --sysroot "$d/$1" --cmdline "$d/cmdline" --report /tmp/dm-report.json --run /tmp/dm-run 2>&1
}
# create_failed OUTPUT: whether a device could not be created or removed in it.
create_failed() { grep -Eq 'creating (a )?device-mapper device|(cannot remove|removing) device-mapper device' <<<"$1"; }

# hold: while /tmp/dm-hold exists, open each dm device the moment it appears
# and keep it open 1.5 s. Only builtins in the loop (a fork costs ~10 ms under
# TCG): it polls every millisecond or so, on a pipe that never answers.
hold() {
    local d n now fd tick
    local -A fds=() since=() present=() seen=()
    exec {tick}<> <(:)
    while [[ -e /tmp/dm-hold ]]; do
        now=${EPOCHREALTIME/./}
        seen=()
        for d in /sys/block/dm-*; do
            [[ -e $d ]] || continue
            n=${d##*/}
            seen[$n]=1
            [[ -n ${present[$n]:-} ]] && continue
            # Its node may come a moment after its sysfs entry: then next time.
            { exec {fd}<"/dev/$n"; } 2>/dev/null || continue
            fds[$n]=$fd since[$n]=$now present[$n]=1
        done
        for n in "${!present[@]}"; do [[ -n ${seen[$n]:-} ]] || unset "present[$n]"; done
        for n in "${!fds[@]}"; do
            if ((now - since[$n] > 1500000)); then
                fd=${fds[$n]}
                exec {fd}<&-
                unset "fds[$n]" "since[$n]"
            fi
        done
        read -rt 0.001 -u "$tick" || true
    done
    for fd in "${fds[@]}"; do exec {fd}<&-; done
}
: >/tmp/dm-hold
hold &
holder=$!

skipped=0 create=0
for ((i = 0; i < runs; i++)); do
    out=$(merge bad)
    if grep -q "skipped $name-sb (.*cannot be mounted after passing its checks" <<<"$out"; then
        skipped=$((skipped + 1))
    else
        echo "run $i, bad: $out"
    fi
    create_failed "$out" && { create=$((create + 1)); echo "run $i, bad: $out"; }
done
echo "failed mounts: runs=$runs skipped=$skipped create-failures=$create"

merged=0 create=0 unmerged=0
for ((i = 0; i < runs; i++)); do
    out=$(merge good)
    if grep -q "merged $name from" <<<"$out"; then
        merged=$((merged + 1))
    else
        echo "run $i, good: $out"
    fi
    create_failed "$out" && create=$((create + 1))
    initrd-sysext unmerge --sysroot "$d/good" >/dev/null 2>&1 && unmerged=$((unmerged + 1))
done
echo "merge loop: runs=$runs merged=$merged unmerged=$unmerged create-failures=$create"
rm /tmp/dm-hold
wait "$holder"
settled "both loops"
