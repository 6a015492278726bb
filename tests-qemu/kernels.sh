#!/usr/bin/env bash
# The overlay on every kernel we support, without a distribution around it:
# each suite's cloud kernel (tests-qemu/kernel.sh) boots under TCG with a tiny
# initramfs (static busybox, our binary, that kernel's virtio_blk, loop,
# squashfs, erofs and overlay modules) and an ext4 disk of sysroots with small
# images, squashfs and erofs by turns, and merges each. Needs `make build`.
#
#   tests-qemu/kernels.sh [SUITE...]      1, 130 and 499 images per kernel: all
#                                         but the oldest of 499 (overlayfs
#                                         stacks 500 with META and the host)
#   tests-qemu/kernels.sh -n N [SUITE...] benchmark: N boots per kernel. The
#       first merge of a boot (1 image, or KERNELS_COLD=podman) is on a cold
#       kernel; then 4 (KERNELS_ROUNDS) rounds of 1 and 2 images and, when it
#       and a trixie base are built, the podman image over the base's /usr,
#       each after dropping the page cache. Prints medians of `done in`. With
#       KERNELS_COMPARE="BIN...", those binaries take turns with ours in every
#       boot (who goes first rotates), for a fair comparison.
# Suites default to bullseye (5.10), bookworm (6.1), trixie (6.12), forky (7.2).
# KERNELS_BIN replaces our binary; KERNELS_APPEND adds to the kernel command
# line (KEY=value there is in the environment of /init); KERNELS_QEMU adds
# QEMU options (`-icount shift=0,sleep=off` counts instructions instead of
# time); KERNELS_QUIET= boots without `quiet`, as the QEMU scenarios do (the
# console then prints every kmsg line); KERNELS_LOG=FILE collects the
# benchmark's console logs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${KERNELS_BIN:-$(dirname "$here")/target/x86_64-unknown-linux-musl/release/initrd-sysext}
read -ra compare <<<"${KERNELS_COMPARE:-}"
bins=("$bin" "${compare[@]}")
bench=0
if [[ ${1:-} == -n ]]; then bench=$2 && shift 2; fi
suites=("$@")
((${#suites[@]})) || suites=(bullseye bookworm trixie forky)
[[ -x $bin ]] || { echo "kernels.sh: no $bin (make build)" >&2; exit 1; }
# A trixie base tree (tests-qemu/build-guest.sh) has a static busybox.
busybox=$( (grep -l '^VERSION_ID="13"' /var/cache/initrd-sysext/base-*/usr/lib/os-release 2>/dev/null || true) | head -n1 | sed 's|lib/os-release$|bin/busybox|')
# The benchmark also merges the podman image (the erofs one, as the QEMU guests
# do) over that base's /usr, when both are built.
podman=
for f in /var/cache/initrd-sysext/podman-*/podman-*-debian-13-x86-64.raw; do
    [[ -f $f && $(od -An -tx1 -j1024 -N4 "$f" | tr -d ' ') == e2e1f5e0 ]] && podman=$f && break
done
[[ -n $busybox ]] || { echo "kernels.sh: no static busybox in a base tree (tests-qemu/build-guest.sh)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/kernels.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
max=499

# images N: ext-001 … ext-N in $tmp/images, made once; erofs (what the podman
# image is) and squashfs by turns.
images() {
    local i t
    mkdir -p "$tmp/images"
    for i in $(seq -w 1 "$max" | head -n "$1"); do
        [[ -f $tmp/images/ext-$i.raw ]] && continue
        t=$tmp/tree/ext-$i
        mkdir -p "$t/usr/lib/extension-release.d" "$t/usr/bin"
        printf 'ID=debian\nVERSION_ID=13\n' >"$t/usr/lib/extension-release.d/extension-release.ext-$i"
        echo "$i" >"$t/usr/bin/ext-$i"
        if ((10#$i % 2)); then
            mkfs.erofs --quiet --all-root "$tmp/images/ext-$i.raw" "$t"
        else
            mksquashfs "$t" "$tmp/images/ext-$i.raw" -quiet -no-progress -all-root >/dev/null
        fi
    done
}

# root PROGRAM COUNT...: the initramfs tree in $tmp/root (our binary as b0, the
# ones to compare with as b1, b2 …) and the disk $tmp/disk.img with sysroot /d/sN for
# each COUNT; /init sets up, then runs PROGRAM (a file) and powers off.
root() {
    local r=$tmp/root d=$tmp/disk program=$1 n i
    shift
    rm -rf "$r" "$d" && mkdir -p "$r"/{bin,proc,sys,dev,run,d,lib/modules} "$d"
    cp "$busybox" "$r/bin/busybox"
    for i in "${!bins[@]}"; do cp "${bins[$i]}" "$r/bin/b$i"; done
    for n in "$@"; do
        if [[ $n == podman ]]; then
            # The guest's base /usr and the podman image: what a real first boot merges.
            mkdir -p "$d/s$n"/{etc,opt,var/lib/extensions}
            cp -a "$(dirname "$(dirname "$busybox")")" "$d/s$n/usr"
            cp "$podman" "$d/s$n/var/lib/extensions/podman.raw"
            continue
        fi
        images "$n"
        mkdir -p "$d/s$n"/{usr/lib,usr/bin,etc,opt,var/lib/extensions}
        printf 'ID=debian\nVERSION_ID=13\n' >"$d/s$n/usr/lib/os-release"
        echo base >"$d/s$n/usr/bin/base"
        for i in $(seq -w 1 "$max" | head -n "$n"); do cp "$tmp/images/ext-$i.raw" "$d/s$n/var/lib/extensions/"; done
    done
    rm -f "$tmp/disk.img"
    mkfs.ext4 -q -d "$d" -L sysroots "$tmp/disk.img" "$(($(du -sm "$d" | cut -f1) * 3 / 2 + 64))M" >/dev/null 2>&1
    {
        cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" || echo "insmod $m failed"; done
while [ ! -b /dev/vda ]; do sleep 0.1; done
mount -t ext4 /dev/vda /d
echo "== kernel $(uname -r)"
# merge BIN N: merge sysroot N with BIN, print the result, unmerge.
merge() {
    read -r r0 _ </sys/block/vda/stat
    "/bin/$1" merge --sysroot "/d/s$2" --report /run/report.json >/run/log 2>&1; rc=$?
    read -r r1 _ </sys/block/vda/stat
    grep -E '^(initrd-sysext: (/usr|done in|skipped)|prof)' /run/log | sed -E 's/overlay of (.{40}).* \(top first\)/overlay of \1… (top first)/'
    echo "result $2 images: rc=$rc, $(wc -l </d/s$2/usr/.systemd-sysext/extensions) listed, $(ls /d/s$2/usr/bin | wc -l) files in /usr/bin, $(grep -c ' overlay ' /proc/mounts) overlay(s), $(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l) loop device(s), $((r1 - r0)) disk reads"
    "/bin/$1" unmerge --sysroot "/d/s$2" >/dev/null || echo "unmerge failed"
}
EOF
        cat "$program"
        echo 'echo "== end"'
        echo 'poweroff -f'
    } >"$r/init"
    chmod +x "$r/init"
}

# modules K NAME...: the named modules of kernel tree K and what they depend
# on (their depends=, as modinfo shows it), uncompressed, into the initramfs,
# with lib/modules/order listing them dependencies first.
modules() {
    local k=$1 dest=$tmp/root/lib/modules m
    shift
    local order=()
    add() {
        local f d
        [[ " ${order[*]} " == *" $1 "* ]] && return 0
        f=$(find "$k/modules" -name "$1.ko*" -print -quit)
        [[ -n $f ]] || return 0 # built in
        case $f in
        *.xz) xz -dc "$f" >"$dest/$1.ko" ;;
        *.zst) zstd -qdc "$f" >"$dest/$1.ko" ;;
        *) cp "$f" "$dest/$1.ko" ;;
        esac
        for d in $(grep -a -o -m1 'depends=[a-z0-9_,-]*' "$dest/$1.ko" | cut -d= -f2 | tr ',' ' '); do add "$d"; done
        order+=("$1")
    }
    for m in "$@"; do add "$m"; done
    printf '%s\n' "${order[@]}" >"$dest/order"
}

# boot SUITE LOG: boot the suite's kernel with the initramfs in $tmp/root.
boot() {
    local k
    k=$("$here/kernel.sh" "$1")
    modules "$k" virtio_pci virtio_blk loop squashfs erofs overlay
    (cd "$tmp/root" && find . | cpio -o -H newc --quiet) >"$tmp/initrd"
    # shellcheck disable=SC2086 # options, split on purpose
    timeout 900 qemu-system-x86_64 -accel tcg ${KERNELS_QEMU:-} -cpu max -m 1536 -nodefaults -display none -no-reboot \
        -drive "file=$tmp/disk.img,if=virtio,format=raw,cache=unsafe" \
        -serial stdio -kernel "$k/vmlinuz" -initrd "$tmp/initrd" \
        -append "console=ttyS0 ${KERNELS_QUIET-quiet} panic=-1 rdinit=/init ${KERNELS_APPEND:-}" </dev/null | tr -d '\r' |
        sed -n '/^== kernel/,/^== end/p' >"$2"
}

# check LOG: each sysroot merged in one overlay, all but the oldest of 499.
check() {
    local n want bad=0
    for n in 1 130 "$max"; do
        want=$((n > 498 ? 498 : n))
        grep -q "^result $n images: rc=0, $want listed, $((want + 1)) files in /usr/bin, 1 overlay(s), " "$1" ||
            { echo "FAIL: $n images" >&2; bad=1; }
    done
    grep -q "^initrd-sysext: skipped ext-001 (/var/lib/extensions/ext-001.raw): left out of /usr" "$1" ||
        { echo "FAIL: ext-001 was not left out of $max" >&2; bad=1; }
    return "$bad"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Correctness: each count once.
cat >"$tmp/check.sh" <<EOF
for n in 1 130 $max; do merge b0 "\$n"; done
EOF
# Benchmark: TURNS (on the kernel command line) says who goes first; the first
# merge of the boot is cold, the rounds after it start from a dropped cache.
cat >"$tmp/bench.sh" <<'EOF'
sample() { merge "$1" "$2" >/run/out; sed -n "s/^initrd-sysext: done in \([0-9]*\) ms.*/sample $1 $2 $3 \1/p" /run/out; cat /run/out; }
sample "${TURNS%%,*}" "$COLD" cold
for r in $(seq "$ROUNDS"); do
    for b in $(echo "$TURNS" | tr , ' '); do
        for n in 1 2 $(ls -d /d/spodman 2>/dev/null | cut -c5-); do
            sync; echo 3 >/proc/sys/vm/drop_caches; sample "$b" "$n" warm
        done
    done
done
EOF

failed=()
for s in "${suites[@]}"; do
    if ((bench)); then
        root "$tmp/bench.sh" 1 2 ${podman:+podman}
        : >"$tmp/samples"
        for k in $(seq "$bench"); do
            # Everyone goes first in turn.
            turns=$(for i in "${!bins[@]}"; do echo "b$(((i + k) % ${#bins[@]}))"; done | paste -sd,)
            KERNELS_APPEND="${KERNELS_APPEND:-} TURNS=$turns ROUNDS=${KERNELS_ROUNDS:-4} COLD=${KERNELS_COLD:-1}" boot "$s" "$tmp/log"
            grep '^sample ' "$tmp/log" >>"$tmp/samples" || true
            [[ -z ${KERNELS_LOG:-} ]] || cat "$tmp/log" >>"$KERNELS_LOG"
        done
        for i in "${!bins[@]}"; do
            b=b$i line="$s, ${bins[$i]}:"
            for c in "${KERNELS_COLD:-1} cold" "1 warm" "2 warm" ${podman:+"podman warm"}; do
                read -r n kind <<<"$c"
                awk -v b="$b" -v n="$n" -v k="$kind" '$2 == b && $3 == n && $4 == k { print $5 }' "$tmp/samples" >"$tmp/ms"
                line+=" $n $kind: median $(median <"$tmp/ms") ms ($(wc -l <"$tmp/ms") runs: $(sort -n "$tmp/ms" | paste -sd' '));"
            done
            echo "$line"
        done
        continue
    fi
    root "$tmp/check.sh" 1 130 "$max"
    start=$(date +%s)
    boot "$s" "$tmp/$s.log"
    echo "== $s ($(($(date +%s) - start)) s)"
    cat "$tmp/$s.log"
    check "$tmp/$s.log" || failed+=("$s")
done
((${#failed[@]} == 0)) || { echo "kernels.sh: failed on ${failed[*]}" >&2; exit 1; }
((bench)) || echo "kernels.sh: every kernel merged 1, 130 and 498 layers in one overlay"
