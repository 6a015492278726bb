#!/usr/bin/env bash
# Boot-time figures from the guests' journals (printed, never asserted):
#   tests-qemu/bench.sh [-n BOOTS] [--svg-dir DIR] [trixie] [forky]
# ITS_OUT=DIR keeps each scenario's last boot in DIR/NAME/res.
# trixie: scenarios 1 (ours), 8 (systemd-sysext --root=/sysroot in the
# initrd) and 7 (systemd-sysext + daemon-reload after boot). forky (systemd
# 262, dracut 112): ours against upstream's systemd-sysext-sysroot.service
# (dracut's systemd-sysext module), the same podman image. Interleaved, BOOTS
# each (default 3); both sets by default. Times are CLOCK_MONOTONIC seconds
# since kernel start. The plots of each scenario's first boot go to DIR
# (default /tmp/initrd-sysext-plots; --svg-dir tests-qemu/plots refreshes the
# README's).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scenarios.sh
. "$here/scenarios.sh"
boots=3 svgdir=/tmp/initrd-sysext-plots sets=()
while (($#)); do
    case $1 in
    -n) boots=$2; shift 2 ;;
    --svg-dir) svgdir=$2; shift 2 ;;
    trixie | forky) sets+=("$1"); shift ;;
    *) echo "usage: bench.sh [-n BOOTS] [--svg-dir DIR] [trixie] [forky]" >&2; exit 2 ;;
    esac
done
((${#sets[@]})) || sets=(trixie forky)
bench=()
for s in "${sets[@]}"; do
    case $s in
    trixie) bench+=(first-boot systemd-sysroot ensure-sysext) ;;
    forky) bench+=(forky-ours forky-upstream) ;;
    esac
    its_guest "$s" && its_podman "$s"
done
its_accel && its_podman trixie && its_podman_meta
for name in "${bench[@]}"; do
    its_select "${S_GUEST[$name]:-trixie}" && its_podman "$ITS_SUITE"
    its_image "${ITS_OUT:-$its_tmp}/$name" "prep_${name//-/_}"
done
# The initrd merge unit each scenario runs (none: merged after boot).
declare -A unit=([first-boot]=initrd-sysext.service [forky-ours]=initrd-sysext.service
    [systemd-sysroot]=its-sysroot-merge.service [forky-upstream]=systemd-sysext-sysroot.service)

# mono FILE ERE: the journal timestamp of the first line matching ERE.
mono() { grep -E -m1 -- "$2" "$1" 2>/dev/null | sed -E 's/^\[ *([0-9]+\.[0-9]{3}).*/\1/'; }
sub() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
# times FILE UNIT A B: A - B in seconds, from `systemctl show` blocks of
# *TimestampMonotonic (microseconds) properties. A oneshot unit without
# RemainAfterExit= (ours) never enters "active": its activation ends when it
# enters "inactive" again.
times() {
    [[ -n $2 && -s $1 ]] || return 0
    awk -v u="$2" -v a="$3" -v b="$4" -F= '
        /^Id=/ { id = $2 }
        id == u { t[$1] = $2 }
        END {
            x = t[a "TimestampMonotonic"]; y = t[b "TimestampMonotonic"]
            if (a == "ActiveEnter" && !(x > 0)) x = t["InactiveEnterTimestampMonotonic"]
            if (x > 0 && y > 0) printf "%.3f", (x - y) / 1e6
        }' "$1"
}
declare -A vals # "metric scenario" -> values, one per line
add() { [[ -n $3 ]] && vals["$1 $2"]+="$3"$'\n'; return 0; }
# Our report's timeline (src/timeline.rs), in ms: "CLASS-STEP since-main cpu"
# per line, CLASS "null" for the shared steps; "before - cpu" first.
timeline() {
    [[ -s $1 ]] || return 0
    sed -n 's/.*"timeline":{"cpu_before_main_us":\([0-9]*\).*/before - \1/p' "$1"
    sed -n 's/.*"timeline":.*"steps":\[\(.*\)\]}}$/\1/p' "$1" | grep -o '{[^}]*}' |
        sed -E 's/\{"class":"?([a-z]+)"?,"step":"([a-z]+)","us":([0-9]+),"cpu_us":([0-9]+)\}/\1-\2 \3 \4/'
}
steps=() # our timeline's steps, in order

mkdir -p "$svgdir"
for round in $(seq "$boots"); do
    for name in "${bench[@]}"; do
        dir=${ITS_OUT:-$its_tmp}/$name u=${unit[$name]:-}
        res=$dir/res j=$dir/res/journal
        its_select "${S_GUEST[$name]:-trixie}"
        log "round $round/$boots: $name"
        # its.checks: skip the slow podman runs; only the plot is wanted.
        its_boot "$dir" "${S_INITRD[$name]}" "${S_CMDLINE[$name]:-} its.checks=plot" || { log "  boot failed"; continue; }
        [[ -z $u ]] || add act "$name" "$(sub "$(mono "$j" "Finished $u")" "$(mono "$j" "Starting $u")")"
        # PID 1's own timestamps of the unit (guest/91its-provision): activation
        # (the plot's bar) and the process's life, fork to exit.
        exact=$(times "$res/initrd-times" "$u" ActiveEnter InactiveExit)
        idle=$(times "$res/initrd-times" its-idle.service ActiveEnter InactiveExit)
        add exact "$name" "$exact"
        add process "$name" "$(times "$res/initrd-times" "$u" ExecMainExit ExecMainStart)"
        add true "$name" "$(times "$res/initrd-times" its-true.service ActiveEnter InactiveExit)"
        # Our binary doing nothing, and what the merge adds to that in the same boot.
        add idle "$name" "$idle"
        add share "$name" "$(sub "$exact" "$idle")"
        add self "$name" "$(sed -nE 's/.*initrd-sysext\[[0-9]+\]: done in ([0-9]+) ms.*/\1/p' "$j" |
            awk '{ printf "%.3f", $1 / 1000 }')"
        add unit "$name" "$(awk -F= '/^ExecMainStartTimestampMonotonic=[1-9]/ { printf "%.3f", $2 / 1e6 }' "$res/hello-show")"
        add out "$name" "$(mono "$j" 'hello\[[0-9]+\]: ITS-CONTAINER-OUTPUT')"
        add reload "$name" "$(sed -nE 's/.*Reloading finished in ([0-9]+) ms.*/\1/p' "$res/pid1" |
            awk '{ s += $1 } END { if (NR) printf "%.3f", s / 1000 }')"
        add userspace "$name" "$(mono "$j" 'Switching root')"
        add multiuser "$name" "$(mono "$j" 'Reached target multi-user.target')"
        while read -r step at cpu; do
            [[ " ${steps[*]} " == *" $step "* ]] || steps+=("$step")
            add "at:$step" "$name" "$(awk -v v="$at" 'BEGIN { if (v != "-") printf "%.1f", v / 1000 }')"
            add "cpu:$step" "$name" "$(awk -v v="$cpu" 'BEGIN { printf "%.1f", v / 1000 }')"
        done < <([[ $name != forky-ours ]] || timeline "$res/report.json")
        ((round == 1)) && [[ -s $res/plot.svg ]] && cp "$res/plot.svg" "$svgdir/$name.svg"
    done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (!NR) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# A metric no boot gave (a unit that never ran) is n/a, not the end of the table.
med() { printf '%s' "${vals["$1 $2"]:-}" | { grep . || true; } | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { printf '%-52s %10s %10s %10s   %s\n' "$@"; }

echo
echo "medians over $boots boots each, seconds since kernel start (${its_accel_args})"
if [[ " ${sets[*]} " == *" trixie "* ]]; then
    echo "trixie (systemd 257):"
    row "" "ours (1)" "sysroot(8)" "ensure(7)" "ratio"
    a1=$(med act first-boot) a8=$(med act systemd-sysroot)
    row "activation unit in the initrd (Starting->Finished)" "$a1" "$a8" "-" "ours/8 = $(ratio "$a1" "$a8")"
    row "  ours, as the binary reports it ('done in')" "$(med self first-boot)" "-" "-" ""
    row "switch-root (initrd done)" "$(med userspace first-boot)" "$(med userspace systemd-sysroot)" "$(med userspace ensure-sysext)" ""
    u1=$(med unit first-boot) u7=$(med unit ensure-sysext)
    row "quadlet unit started" "$u1" "$(med unit systemd-sysroot)" "$u7" "ours/7 = $(ratio "$u1" "$u7")"
    o1=$(med out first-boot) o7=$(med out ensure-sysext)
    row "container output" "$o1" "$(med out systemd-sysroot)" "$o7" "ours/7 = $(ratio "$o1" "$o7")"
    row "PID 1 reload time (sum)" "$(med reload first-boot)" "$(med reload systemd-sysroot)" "$(med reload ensure-sysext)" ""
fi
if [[ " ${sets[*]} " == *" forky "* ]]; then
    its_select forky
    echo "forky (systemd 262, dracut 112): ours against systemd-sysext-sysroot.service"
    row "" "ours" "upstream" "" "ratio"
    ao=$(med act forky-ours) au=$(med act forky-upstream) so=$(med self forky-ours)
    row "merge unit in the initrd (Starting->Finished)" "$ao" "$au" "" "ours/upstream = $(ratio "$ao" "$au")"
    eo=$(med exact forky-ours) eu=$(med exact forky-upstream)
    row "  the same, PID 1's timestamps (activating->active)" "$eo" "$eu" "" "ours/upstream = $(ratio "$eo" "$eu")"
    row "  its process, fork to exit" "$(med process forky-ours)" "$(med process forky-upstream)" "" ""
    row "a oneshot unit running /usr/bin/true, same boots" "$(med true forky-ours)" "$(med true forky-upstream)" "" ""
    io=$(med idle forky-ours)
    row "a oneshot unit running initrd-sysext --version" "$io" "-" "" "/upstream = $(ratio "$io" "$au")"
    row "  our merge unit less that one, same boot" "$(med share forky-ours)" "-" "" ""
    row "  ours, as the binary reports it ('done in')" "$so" "-" "" "ours/upstream = $(ratio "$so" "$au")"
    echo "  our process step by step (report.json's timeline; ms since main, and the main"
    echo "  thread's CPU ms by then; 'before' is the CPU of fork, systemd-executor and exec):"
    for step in "${steps[@]}"; do
        printf '    %-24s %8s %8s\n' "${step#null-}" "$(med "at:$step" forky-ours)" "$(med "cpu:$step" forky-ours)"
    done
    row "switch-root (initrd done)" "$(med userspace forky-ours)" "$(med userspace forky-upstream)" "" ""
    row "quadlet unit started" "$(med unit forky-ours)" "$(med unit forky-upstream)" "" ""
    row "multi-user.target reached" "$(med multiuser forky-ours)" "$(med multiuser forky-upstream)" "" ""
    row "initrd size (bytes, zstd)" "$(stat -c %s "$BOOT/initrd-ours.img")" "$(stat -c %s "$BOOT/initrd-upstream.img")" "" ""
fi
echo
echo "per boot:"
for k in "${!vals[@]}"; do printf '  %-28s %s\n' "$k" "$(printf '%s' "${vals[$k]}" | tr '\n' ' ')"; done | sort
echo "plots:" "$svgdir"/*.svg
