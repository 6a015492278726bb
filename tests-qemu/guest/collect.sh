#!/usr/bin/env bash
# Runs in the guest after multi-user.target: waits for the job queue to drain,
# records evidence into /run/its, writes it as a tar to the results disk (a raw
# virtio disk with serial "results") and powers off. The host never scrapes
# the console for state; the serial markers only say how far we got.
set -uo pipefail
[[ -e /run/its-collected ]] && exit 0 # a target restart may start us again
: >/run/its-collected
echo "ITS-COLLECT-BEGIN"
out=/run/its
mkdir -p "$out"
# What to gather beyond the basics: its.checks=a,b on the kernel command line
# (bench.sh) or the scenario's /etc/its/checks.
checks=$(sed -n 's/.*its\.checks=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
[[ -n $checks ]] || checks=$(cat /etc/its/checks 2>/dev/null)
want() { [[ " $checks " == *" $1 "* ]]; }
# rec NAME CMD...: output and exit status of CMD into NAME.
rec() { local f=$out/$1; shift; "$@" >"$f" 2>&1; echo "rc=$?" >>"$f"; }

# Boot finished means the job queue drained, the restarts that the
# ensure-sysext baseline queues with --no-block (and so the quadlet unit) too.
timeout 300 systemctl is-system-running --wait >"$out/system-state"

rec cmdline cat /proc/cmdline
rec versions sh -c 'uname -r; systemctl --version | head -n1; grep -E "^(VERSION_ID|VERSION_CODENAME)=" /etc/os-release'
# Which mount /usr is now, and (its-mntid.service) before systemd-sysext.service.
rec mntid-after /usr/local/lib/its/mntid
[[ -e /run/its-mntid-before ]] && cp /run/its-mntid-before "$out/mntid-before"
rec findmnt-usr findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS /usr
rec findmnt-opt findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS /opt
rec mountinfo cat /proc/self/mountinfo
rec findmnt-var findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS /var
rec losetup losetup -l -n
rec sysext-status systemd-sysext status
rec ours-status initrd-sysext status --sysroot /
rec sysext-extensions cat /usr/.systemd-sysext/extensions
rec sysext-unit systemctl show systemd-sysext.service -p Result,ActiveState,InactiveExitTimestampMonotonic
rec many sh -c 'ls /usr/share/its-many 2>/dev/null | wc -l'
# The test extension's udev rule (its-udev.raw) marks the results disk.
rec udev udevadm info /dev/disk/by-id/virtio-results
rec udev-link readlink -f /dev/its-udev-extension
cp /run/initrd-sysext/report.json "$out/" 2>/dev/null
cp /run/its-initrd-times "$out/initrd-times" 2>/dev/null
# Device-mapper devices (verity images): name, what backs them, and which
# block devices carry a mounted erofs (the layers live in a private mount
# namespace, so mountinfo does not show them). dm_verity's refcnt counts
# loaded verity targets.
dm() {
    local d
    for d in /sys/block/dm-*; do
        [[ -e $d ]] || continue
        echo "${d##*/} name=$(<"$d/dm/name") uuid=$(<"$d/dm/uuid") ro=$(<"$d/ro") slaves=$(cd "$d/slaves" && echo *)"
    done
    for d in /sys/fs/erofs/*; do
        [[ ${d##*/} == features ]] || echo "erofs mounted from ${d##*/}"
    done
    echo "dm_verity refcnt: $(cat /sys/module/dm_verity/refcnt)"
}
rec dm dm
command -v dmsetup >/dev/null && rec dm-table dmsetup table
# Files the scenario wants read back (one path a line): a hash, or the error.
[[ -s /etc/its/read-files ]] && rec read-files xargs -d '\n' -a /etc/its/read-files sha256sum
rec hello-show systemctl show hello.service -p LoadState,ActiveState,Result,ExecMainStatus,ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic
rec hello-journal journalctl -b -u hello.service -o short-monotonic --no-pager
rec multi-user systemctl is-active multi-user.target
rec failed systemctl --failed --no-legend
rec etc-containers ls -la /etc/containers /etc/containers/systemd
rec policy test -s /etc/containers/policy.json
rec analyze systemd-analyze
if want podman; then
    rec podman-run podman run --rm --network none --rootfs /var/lib/its/busybox \
        /bin/busybox echo ITS-PODMAN-RUN-OK
fi
if want rootless; then
    # No login session here: cgroupfs, and a runtime dir of our own.
    # shellcheck disable=SC2016 # expanded by the user's shell
    rec rootless runuser -u tester -- env XDG_RUNTIME_DIR=/tmp/its-run-1000 \
        sh -c 'mkdir -p -m 700 "$XDG_RUNTIME_DIR" && cd /tmp &&
            podman --cgroup-manager=cgroupfs run --rm --network none --cgroups=disabled \
                --rootfs /var/lib/its/busybox /bin/busybox sh -c "echo ITS-ROOTLESS-OK uid=\$(id -u)" &&
            podman --cgroup-manager=cgroupfs unshare cat /proc/self/uid_map'
fi
# podman's storage and the persistent journal, on whatever disk /var is.
rec var-use sh -c 'findmnt -n -o TARGET -T /var/lib/containers/storage; ls /var/log/journal/*/'
[[ -x /etc/its/scenario.sh ]] && rec scenario /etc/its/scenario.sh
want plot && systemd-analyze plot >"$out/plot.svg" 2>/dev/null
# Last, so it has every line above.
rec journal journalctl -b -o short-monotonic --no-pager
rec pid1 journalctl -b _PID=1 -o short-monotonic --no-pager

tar -C "$out" -cf /dev/disk/by-id/virtio-results . && sync
echo "ITS-COLLECT-DONE"
systemctl --no-block poweroff
