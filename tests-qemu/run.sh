#!/usr/bin/env bash
# Boot the QEMU scenarios and judge each from the evidence the guest wrote to
# its results disk:  tests-qemu/run.sh [scenario...]   (default: SCENARIOS)
# ITS_OUT=DIR keeps each scenario's evidence in DIR/NAME/res; ITS_ACCEL=tcg|kvm
# skips the probe; ITS_PODMAN_RAW=FILE (trixie) and ITS_PODMAN_RAW_FORKY=FILE
# use that image instead of building it.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scenarios.sh
. "$here/scenarios.sh"

names=("$@")
((${#names[@]})) || names=("${SCENARIOS[@]}")
suites=()
for name in "${names[@]}"; do
    [[ -n ${S_INITRD[$name]:-} ]] || {
        echo "unknown scenario $name (${SCENARIOS[*]} ${BENCH_SCENARIOS[*]})" >&2; exit 2; }
    s=${S_GUEST[$name]:-trixie}
    [[ " ${suites[*]} " == *" $s "* ]] || suites+=("$s")
done
t0=$SECONDS passed=0 failed=0 signed=:
for name in "${names[@]}"; do [[ ${S_INITRD[$name]} == signed ]] && signed=its_signed; done
# Each guest the scenarios boot, and its podman image; the trixie image
# names the extension for every scenario.
setup() {
    local s
    for s in "${suites[@]}"; do its_guest "$s" && its_podman "$s" || return 1; done
    its_podman trixie && its_podman_meta && its_accel && "$signed"
}
if ! setup; then
    echo "set-up failed"
    echo "0 passed, ${#names[@]} failed"
    exit 1
fi
for name in "${names[@]}"; do
    fn=${name//-/_} dir=${ITS_OUT:-$its_tmp}/$name fails=0
    its_select "${S_GUEST[$name]:-trixie}" "${S_KERNEL[$name]:-}"
    log "== $name (guest: $ITS_SUITE, kernel: ${S_KERNEL[$name]:-own} $(cat "$BOOT/kver" 2>/dev/null)," \
        "initrd: ${S_INITRD[$name]}, cmdline: ${S_CMDLINE[$name]:-})"
    its_image "$dir" "prep_$fn"
    echo "$name:"
    if its_boot "$dir" "${S_INITRD[$name]}" "${S_CMDLINE[$name]:-}"; then
        res=$dir/res
        # In a condition, so a failing command inside a check cannot end the whole run
        # (has/hasnt count the failures).
        "check_$fn" || { echo "    FAIL  check_$fn stopped with status $?"; fails=$((fails + 1)); }
    else
        echo "    FAIL  guest did not finish; console tail:"
        tail -n 15 "$dir/res/console.log" | ev
        fails=1
    fi
    rm -f "$dir/root.raw" "$dir/usr.raw" "$dir/var.raw" "$dir/results.img"
    if ((fails)); then
        echo "FAIL $name"; failed=$((failed + 1))
    else
        echo "PASS $name"; passed=$((passed + 1))
    fi
done
log "total $((SECONDS - t0)) s"
echo "$passed passed, $failed failed"
((failed == 0))
