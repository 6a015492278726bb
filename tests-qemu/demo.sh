#!/usr/bin/env bash
# Boot the first-boot scenario once and show what happened on that boot:
# the quadlet container's output, the activator's decisions, and what
# systemd-sysext and findmnt say in the booted system.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scenarios.sh
. "$here/scenarios.sh"
its_guest trixie && its_accel && its_podman trixie && its_podman_meta
dir=${ITS_OUT:-$its_tmp}/first-boot res=$dir/res
its_image "$dir" prep_first_boot
log "booting (TCG takes a minute or two)"
its_boot "$dir" ours "its.checks=podman" || { tail -n 20 "$res/console.log"; exit 1; }
rm -f "$dir/root.raw" "$dir/results.img"
show() { echo; echo "## $1"; grep -v '^rc=' "$res/$2" | grep -E -- "${3:-.}" || echo "(none)"; }
show "serial console: the quadlet container's output" console.log 'ITS-CONTAINER-OUTPUT'
show "journalctl -b: initrd-sysext in the initrd" journal 'initrd-sysext'
show "systemd-sysext status (booted system)" sysext-status
show "findmnt /usr" findmnt-usr
show "podman run --rootfs (booted system)" podman-run
show "PID 1 reloads during boot (none expected)" pid1 'Reloading'
show "systemd-analyze" analyze
