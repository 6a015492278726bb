#!/usr/bin/env bash
# Shared by run.sh, bench.sh and demo.sh (sourced): accelerator choice,
# per-scenario disk images, one boot with its evidence read back from a
# results disk. Every temp file, mount and qemu process is registered here
# and removed by the EXIT trap.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}
its_tmp=$(mktemp -d /tmp/its.XXXXXX)
its_mounts=()
its_pids=()

its_cleanup() {
    local p m
    for p in "${its_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for m in "${its_mounts[@]}"; do
        mountpoint -q "$m" && umount -l "$m" # autoclear frees the loop
    done
    rm -rf "$its_tmp"
}
trap its_cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%T)] $*" >&2; }

# KVM only when a guest kernel really gets to its root-mount panic under it:
# here /dev/kvm exists but the vCPU aborts or hangs.
its_accel() {
    [[ -n ${its_accel_args:-} ]] && return 0
    local want=${ITS_ACCEL:-auto} probe=$its_tmp/kvm-probe.log
    if [[ $want != tcg && -w /dev/kvm ]] &&
        (timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults \
            -display none -no-reboot -serial "file:$probe" -kernel "$GUEST/vmlinuz" \
            -append "console=ttyS0 panic=-1 root=/dev/its-none"; exit $?) >/dev/null 2>&1 &&
        grep -q 'Kernel panic' "$probe"; then
        its_accel_args="-accel kvm -cpu host"
    elif [[ $want == kvm ]]; then
        log "KVM requested but does not work here"; return 1
    else
        its_accel_args="-accel tcg -cpu max"
    fi
    log "accelerator: $its_accel_args"
}

# Test keys, made once: "trusted" (its certificate goes into the signed
# initrd) and "unknown" (trusted nowhere). Sets KEYS and KEYS_TRUSTED_CN.
its_keys() {
    # shellcheck disable=SC2034 # used by scenarios.sh
    KEYS=$cache/its-keys KEYS_TRUSTED_CN="initrd-sysext QEMU test key trusted"
    [[ -f $KEYS/unknown.crt ]] && return 0
    mkdir -p "$KEYS"
    (
        flock 8
        for k in trusted unknown; do
            [[ -f $KEYS/$k.crt ]] && continue
            openssl req -x509 -newkey rsa:3072 -nodes -days 36500 -keyout "$KEYS/$k.key" \
                -subj "/CN=initrd-sysext QEMU test key $k" -out "$KEYS/$k.crt.tmp" 2>/dev/null
            mv "$KEYS/$k.crt.tmp" "$KEYS/$k.crt"
        done
    ) 8>"$KEYS.lock"
}

# Guests and podman images by suite, built once per run (cached across runs).
declare -A its_guests=() its_podmans=()

# its_guest [SUITE]: that suite's guest (default trixie), built once and
# cached, selected with its own kernel (its_select).
its_guest() {
    local suite=${1:-trixie} crt='' t0=$SECONDS
    if [[ -z ${its_guests[$suite]:-} ]]; then
        its_keys
        # The test certificate goes into trixie's signed initrds only.
        [[ $suite == trixie* ]] && crt=$KEYS/trusted.crt
        its_guests[$suite]=$(ITS_TRUSTED_CRT=$crt bash "$here/build-guest.sh" "$suite" \
            2>"$its_tmp/build-guest-$suite.log" | tail -n1) || {
            cat "$its_tmp/build-guest-$suite.log" >&2; return 1; }
        log "guest $suite: ${its_guests[$suite]} ($((SECONDS - t0)) s)"
    fi
    its_select "$suite"
}

# its_select SUITE [KERNEL]: boot SUITE's guest (built) with its own kernel,
# or with the kernel of suite KERNEL that the guest carries. Sets GUEST (its
# root and initrds), BOOT (vmlinuz and initrd-VARIANT.img), ITS_SUITE and
# PODMAN_RAW (that suite's podman image, empty if it has none).
its_select() {
    ITS_SUITE=$1 GUEST=${its_guests[$1]} BOOT=${its_guests[$1]}
    [[ -z ${2:-} ]] || BOOT=$GUEST/kernels/$2
    [[ -f $BOOT/vmlinuz ]] || { log "guest $1 carries no kernel ${2:-}"; return 1; }
    PODMAN_RAW=${its_podmans[$1]:-}
}

# its_podman [SUITE]: that suite's podman extension image (default trixie;
# bookworm has none: its podman 4.3 has no quadlet). ITS_PODMAN_RAW and
# ITS_PODMAN_RAW_FORKY override. Updates PODMAN_RAW for the selected suite.
its_podman() {
    local suite=${1:-trixie} raw='' args=() t0=$SECONDS
    if [[ -z ${its_podmans[$suite]:-} ]]; then
        case $suite in
        trixie) raw=${ITS_PODMAN_RAW:-} ;;
        trixie-itools) its_podman trixie && raw=${its_podmans[trixie]} ;;
        forky) raw=${ITS_PODMAN_RAW_FORKY:-} args=(--target debian-forky --out "$cache/out/podman-forky") ;;
        *) return 0 ;;
        esac
        if [[ -z $raw ]]; then
            raw=$(bash "$repo/sysext/podman/build.sh" "${args[@]}" 2>"$its_tmp/podman-$suite.log" | tail -n1) || {
                cat "$its_tmp/podman-$suite.log" >&2; return 1; }
        fi
        [[ -f $raw ]] || { log "no podman image at '$raw'"; return 1; }
        its_podmans[$suite]=$raw
        log "podman image ($suite): $raw ($((SECONDS - t0)) s)"
    fi
    # shellcheck disable=SC2034 # used by scenarios.sh
    [[ ${ITS_SUITE:-} != "$suite" ]] || PODMAN_RAW=${its_podmans[$suite]}
}

# PODMAN_NAME / PODMAN_VERSION from the trixie image's release file, and the
# initrd-scoped copy for scenario 8 (cached next to the guest).
its_podman_meta() {
    [[ -n ${PODMAN_NAME:-} ]] && return 0
    local m=$its_tmp/podman-mnt raw=${its_podmans[trixie]} rel sum
    mkdir -p "$m"; its_mounts+=("$m")
    mount -o loop,ro "$raw" "$m"
    rel=$(ls "$m"/usr/lib/extension-release.d/)
    PODMAN_NAME=${rel#extension-release.}
    # podman-<ver>-debian-13-x86-64.raw
    PODMAN_VERSION=$(basename "$raw" .raw)
    PODMAN_VERSION=${PODMAN_VERSION#podman-}
    PODMAN_VERSION=${PODMAN_VERSION%%-debian*}
    # A file no boot step reads, to read back in the verity scenarios.
    PODMAN_PROBE=usr/share/bash-completion/completions/podman
    # shellcheck disable=SC2034 # used by scenarios.sh
    PODMAN_PROBE_SUM=$(sha256sum <"$m/$PODMAN_PROBE" | cut -d' ' -f1)
    sum=$(sha256sum <"$raw" | cut -c1-16)
    PODMAN_SCOPED_RAW=$cache/its-podman-scope-initrd-$sum.raw
    if [[ ! -f $PODMAN_SCOPED_RAW ]]; then
        cp -a "$m" "$its_tmp/scoped"
        rel=$its_tmp/scoped/usr/lib/extension-release.d/$rel
        sed -i '/^SYSEXT_SCOPE=/d' "$rel"
        echo 'SYSEXT_SCOPE=initrd system portable' >>"$rel"
        mkfs.erofs -zlz4hc "$PODMAN_SCOPED_RAW.tmp" "$its_tmp/scoped" >/dev/null
        mv "$PODMAN_SCOPED_RAW.tmp" "$PODMAN_SCOPED_RAW"
        rm -rf "$its_tmp/scoped"
    fi
    umount "$m"
    log "podman extension: name=$PODMAN_NAME version=$PODMAN_VERSION"
}

# The podman extension as a signed DDI (sysext/podman/build.sh's
# NAME.sysext.raw): PODMAN_DDI signed by the trusted test key, PODMAN_DDI_UNKNOWN
# by the unknown one; PODMAN_SIDECAR is the trusted build's plain image path
# without .raw, next to its .verity, .roothash and .roothash.p7s.
# ITS_PODMAN_DDI and ITS_PODMAN_DDI_UNKNOWN override the DDIs.
its_signed() {
    [[ -n ${PODMAN_DDI:-} ]] && return 0
    local k raw t0=$SECONDS
    its_keys
    for k in trusted unknown; do
        raw=$(bash "$repo/sysext/podman/build.sh" --key "$KEYS/$k.key" --cert "$KEYS/$k.crt" \
            --out "$cache/its-signed/$k" 2>"$its_tmp/podman-$k.log" | tail -n1) || {
            cat "$its_tmp/podman-$k.log" >&2; return 1; }
        if [[ $k == trusted ]]; then
            # shellcheck disable=SC2034 # used by bench-verity.sh
            PODMAN_SIDECAR=${raw%.raw} PODMAN_DDI=${ITS_PODMAN_DDI:-${raw%.raw}.sysext.raw}
        else
            PODMAN_DDI_UNKNOWN=${ITS_PODMAN_DDI_UNKNOWN:-${raw%.raw}.sysext.raw}
        fi
    done
    [[ -f $PODMAN_DDI && -f $PODMAN_DDI_UNKNOWN ]] || { log "no signed DDIs"; return 1; }
    log "signed DDIs: $PODMAN_DDI, $PODMAN_DDI_UNKNOWN ($((SECONDS - t0)) s)"
}

# tamper IMG PATH: flip one byte in the first data block of PATH (inside the
# image) in IMG's x86-64 root partition, after signing. Checked here: the
# file no longer reads back as it was.
tamper() {
    local img=$1 path=$2 m=$its_tmp/tamper start size phys before after
    read -r start size < <(root_part "$img") || return 1
    mkdir -p "$m"; its_mounts+=("$m")
    part_mount() { mount -o "ro,loop,offset=$((start * 512)),sizelimit=$((size * 512))" "$img" "$m"; }
    part_mount
    before=$(sha256sum <"$m/$path")
    # filefrag -b1: byte offsets; the first extent's physical start, which
    # must be a block of its own (not inline in the metadata).
    phys=$(filefrag -v -b1 "$m/$path" | awk '$1 == "0:" && !/inline/ { sub(/\.\./, "", $4); print $4 }')
    umount "$m"
    if [[ -z $phys ]] || ((phys % 4096)); then
        log "tamper: /$path has no data block of its own"; return 1
    fi
    flip "$img" $((start * 512 + phys + 100))
    part_mount
    after=$(sha256sum <"$m/$path" 2>/dev/null) || true
    umount "$m"
    [[ $after != "$before" ]] || { log "tamper: /$path unchanged after the flip"; return 1; }
    log "tamper: flipped the first data block of /$path in $img"
}

# root_part IMG: start and size (sectors) of the DDI's x86-64 root partition.
root_part() {
    local found
    found=$(sfdisk -d "$1" |
        sed -nE 's/.*start= *([0-9]+), size= *([0-9]+), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709.*/\1 \2/p')
    [[ -n $found ]] || { log "tamper: no x86-64 root partition in $1"; return 1; }
    echo "$found"
}

# flip IMG POS: invert the byte at POS.
flip() {
    local byte
    byte=$(od -An -tu1 -j "$2" -N1 "$1")
    # shellcheck disable=SC2059 # the format is the byte
    printf "\\$(printf %03o $((byte ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# tamper_superblock IMG: flip a byte of the root partition's erofs superblock
# that our own pre-mount checks do not read (magic, block size and count stay
# intact), so only dm-verity can notice: the mount must fail.
tamper_superblock() {
    local start
    read -r start _ < <(root_part "$1") || return 1
    flip "$1" $((start * 512 + 1024 + 48))
    log "tamper: flipped a byte of the erofs superblock in $1"
}

# its_image DIR PREP: DIR/root.raw = the guest root plus what the function
# PREP (called with the mounted root) adds, and the modules of the selected
# kernel if it is another suite's. PREP may create DIR/usr.raw, DIR/var.raw.
its_image() {
    local dir=$1 prep=$2 mnt=$1/mnt
    mkdir -p "$mnt"
    cp --sparse=always "$GUEST/root.img" "$dir/root.raw"
    its_mounts+=("$mnt")
    mount -o loop "$dir/root.raw" "$mnt"
    [[ $BOOT == "$GUEST" ]] || cp -a "$BOOT/modules" "$mnt/usr/lib/modules/$(cat "$BOOT/kver")"
    "$prep" "$mnt" "$dir"
    umount "$mnt"
}

# its_boot DIR INITRD CMDLINE...: its_boot_once, retried twice when the guest
# kernel panicked. About one boot in 60 dies 1.5-4 s in, before the initrd
# runs: an `Oops: int3` where the kernel patches its own code while the other
# vCPU runs it (a static key, e.g. at "sched_clock: Marking stable"), which
# multi-threaded TCG does not always see in time; it came twice in a row once.
# A real panic repeats every time.
its_boot() {
    local try
    for try in 1 2 3; do
        its_boot_once "$@" && return 0
        grep -q 'Kernel panic' "$1/res/console.log" 2>/dev/null || return 1
        cp "$1/res/console.log" "$1/panic-$try.log"
        ((try < 3)) && log "guest kernel panicked (console: $1/panic-$try.log); retrying"
    done
    return 1
}

# its_boot_once DIR INITRD CMDLINE...: boot DIR's images on a fresh qcow2 overlay,
# extract the guest's evidence to DIR/res (console log in DIR/res/console.log).
# Returns non-zero when the guest never finished collecting.
its_boot_once() {
    local dir=$1 initrd=$2; shift 2
    local res=$dir/res t0=$SECONDS pid rc=0 drives=() d
    # The guest finds its disks by serial: /dev/disk/by-id/virtio-NAME.
    disk() { drives+=(-drive "if=none,id=$2,$1" -device "virtio-blk-pci,drive=$2,serial=$2"); }
    rm -rf "$res" && mkdir -p "$res"
    qemu-img create -q -f qcow2 -F raw -b "$dir/root.raw" "$dir/root.qcow2"
    disk "file=$dir/root.qcow2,format=qcow2,cache=unsafe" root
    for d in usr var; do
        [[ -f $dir/$d.raw ]] || continue
        qemu-img create -q -f qcow2 -F raw -b "$dir/$d.raw" "$dir/$d.qcow2"
        disk "file=$dir/$d.qcow2,format=qcow2,cache=unsafe" "$d"
    done
    truncate -s 0 "$dir/results.img" && truncate -s 64M "$dir/results.img"
    disk "file=$dir/results.img,format=raw" results
    # shellcheck disable=SC2086 # its_accel_args is a word list
    timeout "${ITS_BOOT_TIMEOUT:-480}" qemu-system-x86_64 $its_accel_args \
        -smp 2 -m 2048 -nodefaults -display none -no-reboot \
        -device virtio-rng-pci "${drives[@]}" -serial "file:$res/console.log" \
        -kernel "$BOOT/vmlinuz" -initrd "$BOOT/initrd-$initrd.img" \
        -append "console=ttyS0 root=/dev/disk/by-id/virtio-root rw panic=-1 $*" \
        >"$res/qemu.log" 2>&1 &
    pid=$!
    its_pids+=("$pid")
    wait "$pid" || rc=$?
    rm -f "$dir/root.qcow2" "$dir/usr.qcow2" "$dir/var.qcow2"
    tar -C "$res" -xf "$dir/results.img" 2>/dev/null || true
    log "boot done in $((SECONDS - t0)) s (qemu rc=$rc)"
    grep -q ITS-COLLECT-DONE "$res/console.log"
}
