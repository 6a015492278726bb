#!/usr/bin/env bash
# Scenario table (sourced after lib.sh). Each scenario NAME has:
#   S_INITRD[NAME]   initrd variant: ours | plain | sysroot | signed (ours
#                    with the test certificate in /etc/verity.d)
#   S_CMDLINE[NAME]  extra kernel arguments
#   S_GUEST[NAME]    guest suite: bookworm | trixie (default) | forky |
#                    trixie-itools (initramfs-tools instead of dracut)
#   S_KERNEL[NAME]   another suite's kernel on that guest: bullseye |
#                    bookworm | forky (default: the guest's own)
#   prep_NAME MNT DIR  adds files to the mounted guest root
#   check_NAME         judges $res (the guest's evidence), via has/hasnt
# shellcheck disable=SC2034,SC2154 # tables read by run.sh; res, PODMAN_* set there
SCENARIOS=(first-boot toggle-off bad-image flatcar-layout after-boot-compat
    signed-ddi tampered
    kernel-bullseye kernel-bookworm kernel-forky
    after-boot-compat-bookworm after-boot-compat-forky)
# Upstream's ways, no code of ours under test: booted by `make bench` (and by
# name), not by `make test`.
BENCH_SCENARIOS=(ensure-sysext ensure-sysext-without-oneshot systemd-sysroot)
declare -A S_INITRD=(
    [first-boot]=ours [toggle-off]=ours [bad-image]=ours [flatcar-layout]=ours
    [after-boot-compat]=ours [ensure-sysext]=plain
    [ensure-sysext-without-oneshot]=plain [systemd-sysroot]=sysroot
    [signed-ddi]=signed [tampered]=signed
    [kernel-bullseye]=ours [kernel-bookworm]=ours [kernel-forky]=ours
    [after-boot-compat-bookworm]=ours [after-boot-compat-forky]=ours)
declare -A S_CMDLINE=([toggle-off]="rd.sysext=0"
    [flatcar-layout]="mount.usr=/dev/disk/by-id/virtio-usr mount.usrfstype=ext4 mount.usrflags=ro")
declare -A S_GUEST=([after-boot-compat-bookworm]=bookworm [after-boot-compat-forky]=forky)
declare -A S_KERNEL=([kernel-bullseye]=bullseye [kernel-bookworm]=bookworm [kernel-forky]=forky)

# --- evidence helpers ------------------------------------------------------
fails=0
ev() { sed 's/^/          | /' | cut -c1-150; }
# has DESC FILE ERE: pass when a line of FILE matches; those lines are shown.
has() {
    if grep -Eq -- "$3" "$res/$2" 2>/dev/null; then
        echo "    ok    $1"; grep -E -m4 -- "$3" "$res/$2" | ev
    else
        echo "    FAIL  $1: no /$3/ in $2"; { tail -n3 "$res/$2" 2>&1 || true; } | ev
        fails=$((fails + 1))
    fi
}
# hasnt DESC FILE ERE: pass when no line of FILE matches.
hasnt() {
    if [[ ! -e $res/$2 ]]; then
        echo "    FAIL  $1: $2 missing"; fails=$((fails + 1))
    elif grep -Eq -- "$3" "$res/$2"; then
        echo "    FAIL  $1: /$3/ in $2"; grep -E -m4 -- "$3" "$res/$2" | ev
        fails=$((fails + 1))
    else
        echo "    ok    $1 (no /$3/ in $2)"
    fi
}
# one overlay on /usr, not two stacked
usr_overlays() { awk '$5 == "/usr" && / - overlay /' "$res/mountinfo" | wc -l; }
one_overlay() {
    local n; n=$(usr_overlays)
    if [[ $n == 1 ]]; then echo "    ok    exactly one overlay on /usr"
    else echo "    FAIL  $n overlays on /usr"; fails=$((fails + 1)); fi
}

# --- building blocks -------------------------------------------------------
checks() { echo "$2" >"$1/etc/its/checks"; }
put_podman() { install -D -m 0644 "$PODMAN_RAW" "$1/var/lib/extensions/$PODMAN_NAME.raw"; }
quadlet_ran() {
    has "quadlet unit was generated" hello-show '^LoadState=loaded'
    has "quadlet unit ran to completion" hello-show '^ExecMainExitTimestampMonotonic=[1-9]'
    has "quadlet unit succeeded" hello-show '^ExecMainStatus=0'
    has "container output in the journal" hello-journal 'ITS-CONTAINER-OUTPUT'
}
merged_by_us() { # [NAME]: default the podman image
    local n=${1:-$PODMAN_NAME}
    has "our merge decision in journalctl -b" journal "initrd-sysext\[[0-9]+\]: merged $n from "
    has "systemd-sysext status lists $n" sysext-status "$n"
    has "findmnt /usr shows the overlay" findmnt-usr 'overlay'
}
# make_ext IMAGE NAME ROOT TREE: TREE as an uncompressed erofs extension
# (host mkfs.erofs, features every kernel from 5.4 reads), its release file
# matching the guest root ROOT (ID, and VERSION_ID where the root has one:
# testing has none) and asking for a manager reload, as podman's does.
make_ext() {
    local rel=$4/usr/lib/extension-release.d/extension-release.$2
    mkdir -p "${rel%/*}"
    { grep -E '^(ID|VERSION_ID)=' "$3/usr/lib/os-release"; echo EXTENSION_RELOAD_MANAGER=1; } >"$rel"
    mkfs.erofs "$1" "$4" >/dev/null
}
# its-udev.raw: a udev rule that marks the results disk, so the collector
# can tell it was applied when udev first saw the disk.
put_udev_ext() {
    local t=$its_tmp/udev-ext
    rm -rf "$t" && mkdir -p "$t/usr/lib/udev/rules.d"
    echo 'KERNEL=="vd*[!0-9]", ATTRS{serial}=="results", ENV{ITS_UDEV_EXTENSION}="applied", SYMLINK+="its-udev-extension"' \
        >"$t/usr/lib/udev/rules.d/90-its-udev.rules"
    mkdir -p "$1/var/lib/extensions"
    make_ext "$1/var/lib/extensions/its-udev.raw" its-udev "$1" "$t"
}
udev_applied() {
    has "the extension's udev rule was applied on first boot" udev '^E: ITS_UDEV_EXTENSION=applied$'
    has "… and made its symlink" udev '^S: its-udev-extension$'
}
# 130 small images (its-many-001 … its-many-130), each with one file in
# /usr/share/its-many, made once per run for the guest's os-release.
put_many() {
    local t=$its_tmp/many-$ITS_SUITE i n
    if [[ ! -d $t/images ]]; then
        mkdir -p "$t/images"
        for i in $(seq -w 1 130); do
            n=its-many-$i
            mkdir -p "$t/$n/usr/share/its-many"
            echo "$n" >"$t/$n/usr/share/its-many/$i"
            make_ext "$t/images/$n.raw" "$n" "$1" "$t/$n"
        done
    fi
    mkdir -p "$1/var/lib/extensions"
    cp "$t/images/"*.raw "$1/var/lib/extensions/"
}
many_merged() {
    local f=$fails
    has "our binary merged all 132 (podman, its-udev, 130 small)" journal 'initrd-sysext\[[0-9]+\]: done in .*: 132 merged'
    one_overlay
    has "/usr shows the files of all 130 small images" many '^130$'
    if [[ $(grep -cE "^($PODMAN_NAME|its-udev|its-many-[0-9]{3})\$" "$res/sysext-extensions" 2>/dev/null) == 132 ]]; then
        echo "    ok    the overlay's .systemd-sysext/extensions names all 132"
    else
        echo "    FAIL  the overlay's .systemd-sysext/extensions does not name all 132; other lines:"
        { grep -vE "^($PODMAN_NAME|its-udev|its-many-[0-9]{3})\$" "$res/sysext-extensions" 2>&1 || true; } | ev
        fails=$((fails + 1))
    fi
    ((fails == f)) || {
        echo "          our binary's other lines:"
        grep -E 'initrd-sysext\[[0-9]+\]: ' "$res/journal" | grep -vE ': (merged its-many-|its-many-[0-9]+: not signed)' | ev
    }
}

# --- 1 ---------------------------------------------------------------------
prep_first_boot() { put_podman "$1"; checks "$1" "podman plot"; }
# built_with ERE: how the /usr overlay was made, as the journal says: what
# each kernel's overlayfs really took, found by behaviour. 7.2 and 6.12 take
# one lowerdir+ per layer; 6.1 (the legacy context) one fsconfig lowerdir=
# list; 5.10's 132 layers do not fit in one fsconfig value and go in the
# mount(2) option string.
built_with() {
    has "/usr overlay made with ${1//\\/}" journal "/usr: overlay of .* mounted in [0-9]+ ms with $1\$"
}
check_first_boot() {
    quadlet_ran
    built_with 'lowerdir\+'
    hasnt "PID 1 did not reload" pid1 'Reloading'
    merged_by_us
    has "podman run --rootfs works" podman-run 'ITS-PODMAN-RUN-OK'
    has "report.json present" report.json '.'
    # The service manager's start of the process used CPU before our main.
    has "report.json says where the time went" report.json '"timeline":\{"cpu_before_main_us":[1-9]'
    has "policy.json copied though /etc/containers/systemd existed" policy '^rc=0'
    has "/etc/containers/systemd was there before boot" etc-containers 'hello.container'
}
# --- 2 ---------------------------------------------------------------------
prep_toggle_off() { put_podman "$1"; checks "$1" ""; }
check_toggle_off() {
    hasnt "nothing merged on /usr" findmnt-usr 'overlay'
    has "multi-user.target reached" multi-user '^active'
    has "quadlet unit does not exist" hello-show '^LoadState=not-found'
    has "the activator's own lines" journal 'initrd-sysext\[[0-9]+\]: '
}
# --- 3 ---------------------------------------------------------------------
prep_bad_image() {
    put_podman "$1"
    head -c 4M /dev/urandom >"$1/var/lib/extensions/garbage.raw"
    # The real superblock, full size, random blocks after it: identified as
    # erofs and mountable, then unreadable.
    local size; size=$(stat -c %s "$PODMAN_RAW")
    { head -c 4096 "$PODMAN_RAW"; head -c $((size - 4096)) /dev/urandom; } \
        >"$1/var/lib/extensions/corrupt.raw"
    checks "$1" "podman rootless"
}
check_bad_image() {
    has "multi-user.target reached" multi-user '^active'
    quadlet_ran
    merged_by_us
    has "podman run works" podman-run 'ITS-PODMAN-RUN-OK'
    has "garbage.raw named with its reason" journal 'initrd-sysext\[[0-9]+\]: skipped garbage \(.*\): '
    has "corrupt.raw named with its reason" journal 'initrd-sysext\[[0-9]+\]: skipped corrupt \(.*\): '
    has "rootless podman run as tester" rootless 'ITS-ROOTLESS-OK uid=0'
    has "user namespace mapped from /etc/subuid" rootless '^ +1 +100000 +65536'
}
# --- 4 ---------------------------------------------------------------------
prep_flatcar_layout() {
    local f=podman-$PODMAN_VERSION.raw
    install -D -m 0644 "$PODMAN_RAW" "$1/opt/extensions/podman/$f"
    mkdir -p "$1/etc/extensions"
    ln -s "/opt/extensions/podman/$f" "$1/etc/extensions/$PODMAN_NAME.raw"
    checks "$1" "podman"
    # /usr moves to its own read-only partition; root keeps the empty dir.
    mkfs.ext4 -q -L usr -d "$1/usr" "$2/usr.raw" 2G >/dev/null
    find "$1/usr" -mindepth 1 -delete
}
check_flatcar_layout() {
    has "/usr partition mounted read-only under the overlay" mountinfo ' /usr ro.* - ext4 /dev/vd'
    has "image reached through the /etc/extensions symlink" journal "initrd-sysext\[[0-9]+\]: merged $PODMAN_NAME from /etc/extensions/$PODMAN_NAME.raw"
    merged_by_us
    quadlet_ran
    has "podman run works" podman-run 'ITS-PODMAN-RUN-OK'
}
# --- 5 ---------------------------------------------------------------------
# Also the suite boots (trixie here, bookworm and forky below): an
# extension's udev rule, and systemd-sysext.service's refresh leaving our
# merge alone.
prep_after_boot_compat() {
    [[ -z $PODMAN_RAW ]] || put_podman "$1"
    put_udev_ext "$1"
    ln -s /usr/lib/systemd/system/systemd-sysext.service \
        "$1/etc/systemd/system/sysinit.target.wants/systemd-sysext.service"
    ln -s ../its-mntid.service "$1/etc/systemd/system/sysinit.target.wants/"
    cat >"$1/etc/its/scenario.sh" <<'EOS'
#!/bin/bash
ov() { awk '$5 == "/usr" && / - overlay /' /proc/self/mountinfo | wc -l; }
echo "before: overlays=$(ov)"; systemd-sysext status
systemd-sysext unmerge; echo "unmerge rc=$? overlays=$(ov)"
systemd-sysext merge; echo "merge rc=$? overlays=$(ov)"; systemd-sysext status
EOS
    chmod +x "$1/etc/its/scenario.sh"
    checks "$1" ""
}
check_after_boot_compat() {
    has "systemd-sysext.service left our merge alone (our ExecCondition)" journal \
        'initrd-sysext\[[0-9]+\]: not refreshing: the [0-9]+ image\(s\) are unchanged since the initrd merged them'
    after_boot_compat
}
# What every suite's boot checks, whoever kept the refresh from acting.
after_boot_compat() {
    if [[ -n $PODMAN_RAW ]]; then
        merged_by_us
        quadlet_ran
    else
        echo "    skip  podman and quadlet: bookworm's podman 4.3 has no quadlet (it came with 4.4)"
    fi
    merged_by_us its-udev
    one_overlay
    has "no second overlay stacked by the refresh" scenario '^before: overlays=1$'
    has "systemd-sysext unmerge works on our state" scenario '^unmerge rc=0 overlays=0$'
    has "systemd-sysext merge works after it" scenario '^merge rc=0 overlays=1$'
    udev_applied
    refresh_kept_merge
}
# The refresh found our state current: /usr is the same mount before and
# after it (statx's unique mount ID where the kernel has one, else the
# reusable ID; the mountinfo lines in both cases), nothing was unmerged and
# PID 1 did not reload for it.
refresh_kept_merge() {
    has "systemd-sysext.service was started in the booted system" sysext-unit '^InactiveExitTimestampMonotonic=[1-9]'
    # 252's unit runs `merge`, which fails on a merged /usr unless told otherwise.
    has "… and did not fail" sysext-unit '^Result=(success|exec-condition)$'
    has "its-mntid.service recorded /usr before systemd-sysext.service" mntid-before '^(unique-)?mount-id '
    if [[ -s $res/mntid-before ]] && diff -q "$res/mntid-before" <(grep -v '^rc=' "$res/mntid-after") >/dev/null; then
        echo "    ok    /usr is the same mount before and after systemd-sysext.service"
        ev <"$res/mntid-before"
        grep -q '^unique-mount-id' "$res/mntid-before" ||
            echo "          (no STATX_MNT_ID_UNIQUE on this kernel: reusable ID and mountinfo compared; the journal decides)"
    else
        echo "    FAIL  /usr is another mount after systemd-sysext.service:"
        { diff "$res/mntid-before" <(grep -v '^rc=' "$res/mntid-after") 2>&1 || true; } | ev
        fails=$((fails + 1))
    fi
    hasnt "systemd-sysext did not unmerge /usr" journal 'Unmerged'
    no_boot_reload
}
# The booted PID 1 did not reload on its way up: Reloading lines between
# switch-root (the initrd's PID 1 reloads for x-initrd.mount entries) and the
# collector (whose scenario.sh may unmerge and merge, and reload, on purpose).
no_boot_reload() {
    local s c reloads
    # No `Switching root` in an initrd without systemd: then from the start.
    s=$(grep -m1 'Switching root' "$res/journal" 2>/dev/null | sed -E 's/^\[ *([0-9.]+)\].*/\1/') || true
    c=$(grep -m1 'ITS-COLLECT-BEGIN' "$res/journal" 2>/dev/null | sed -E 's/^\[ *([0-9.]+)\].*/\1/') || true
    reloads=$(awk -v s="${s:-0}" -v c="${c:-1e9}" '/Reloading\.\.\./ {
        t = $1 $2; gsub(/[][]/, "", t); if (t + 0 > s + 0 && t + 0 < c + 0) print }' "$res/pid1")
    if [[ -z $reloads ]]; then
        echo "    ok    the booted PID 1 did not reload before the collector started"
    else
        echo "    FAIL  the booted PID 1 reloaded:"; ev <<<"$reloads"; fails=$((fails + 1))
    fi
}
# --- 7 ---------------------------------------------------------------------
enable_sysext() {
    ln -s /usr/lib/systemd/system/systemd-sysext.service \
        "$1/etc/systemd/system/sysinit.target.wants/systemd-sysext.service"
}
prep_ensure_sysext() {
    put_podman "$1"; enable_sysext "$1"
    ln -s ../ensure-sysext.service "$1/etc/systemd/system/sysinit.target.wants/"
    checks "$1" "plot"
}
check_ensure_sysext() {
    has "merged after boot by systemd-sysext.service" findmnt-usr 'overlay'
    has "PID 1 reloaded (the workaround's cost)" pid1 'Reloading'
    quadlet_ran
}
prep_ensure_sysext_without_oneshot() { put_podman "$1"; enable_sysext "$1"; checks "$1" ""; }
check_ensure_sysext_without_oneshot() {
    has "merged after boot by systemd-sysext.service" findmnt-usr 'overlay'
    has "quadlet unit not started on first boot" hello-show '^ExecMainStartTimestampMonotonic=0$'
    hasnt "no container output" hello-journal 'ITS-CONTAINER-OUTPUT'
}
# --- 8 ---------------------------------------------------------------------
# systemd 257 run in the initrd checks the initrd's scope: the image must say
# SYSEXT_SCOPE=initrd or it silently merges nothing (and still "succeeds").
prep_systemd_sysroot() {
    install -D -m 0644 "$PODMAN_SCOPED_RAW" "$1/var/lib/extensions/$PODMAN_NAME.raw"
    checks "$1" "plot"
}
check_systemd_sysroot() {
    has "systemd-sysext merged in the initrd" journal 'Finished its-sysroot-merge.service'
    has "findmnt /usr shows the overlay" findmnt-usr 'overlay'
    hasnt "PID 1 did not reload" pid1 'Reloading'
    quadlet_ran
}
# --- 9: verified images (issue 5) ------------------------------------------
# The signed initrd trusts the test certificate KEYS/trusted.crt, so the
# default policy is "signed". A file of the image is read back after boot.
put_ddi() { install -D -m 0644 "$2" "$1/var/lib/extensions/$PODMAN_NAME.raw"; }
read_back() { echo "/$PODMAN_PROBE" >"$1/etc/its/read-files"; }
dm_backed() {
    has "the erofs layer is mounted from a device-mapper device" dm '^erofs mounted from dm-[0-9]+$'
    has "that dm device sits on the image's loop device(s)" dm '^dm-[0-9]+ name=.* slaves=loop[0-9]+'
    has "a dm-verity target is loaded" dm '^dm_verity refcnt: [1-9]'
    has "it hashes with the SHA-256 the initrd loaded early" journal \
        'device-mapper: verity: sha256 using shash "sha256-(ni|avx2|avx|ssse3)"'
}
prep_signed_ddi() { put_ddi "$1" "$PODMAN_DDI"; read_back "$1"; checks "$1" ""; }
check_signed_ddi() {
    quadlet_ran
    has "policy signed, from the certificate in the initrd" journal 'initrd-sysext\[[0-9]+\]: policy signed: 1 trusted'
    has "merged the DDI, verity and signer named" journal \
        "initrd-sysext\[[0-9]+\]: merged $PODMAN_NAME from /var/lib/extensions/$PODMAN_NAME.raw \(ddi.*dm-verity, signed by .*$KEYS_TRUSTED_CN"
    has "findmnt /usr shows the overlay" findmnt-usr 'overlay'
    dm_backed
    has "a file of the image reads back intact" read-files "^$PODMAN_PROBE_SUM  /$PODMAN_PROBE\$"
}
prep_tampered() {
    put_ddi "$1" "$PODMAN_DDI"
    tamper "$1/var/lib/extensions/$PODMAN_NAME.raw" "$PODMAN_PROBE"
    # A second copy whose erofs superblock is flipped: its mount must fail.
    install -m 0644 "$PODMAN_DDI" "$1/var/lib/extensions/$PODMAN_NAME-sb.raw"
    tamper_superblock "$1/var/lib/extensions/$PODMAN_NAME-sb.raw"
    # And one signed by a key the initrd does not trust.
    install -m 0644 "$PODMAN_DDI_UNKNOWN" "$1/var/lib/extensions/$PODMAN_NAME-unknown.raw"
    read_back "$1"; checks "$1" ""
}
check_tampered() {
    has "merged (dm-verity checks blocks when they are read)" journal \
        "initrd-sysext\[[0-9]+\]: merged $PODMAN_NAME from .*dm-verity, signed by "
    has "multi-user.target reached" multi-user '^active'
    dm_backed
    has "reading the tampered file fails with EIO" read-files "/$PODMAN_PROBE: Input/output error"
    hasnt "no bytes of it were returned" read-files '^[0-9a-f]{64} '
    has "dm-verity named the corrupted block" journal 'device-mapper: verity: .*data block [0-9]+ is corrupted'
    has "a flipped superblock: the mount fails and the image is skipped, with the reason" journal \
        "initrd-sysext\[[0-9]+\]: skipped $PODMAN_NAME-sb \(.*\): cannot be mounted after passing its checks \(dm-verity, signed by .*\): mounting erofs"
    hasnt "its verity device was removed again" dm "name=initrd-sysext-$PODMAN_NAME-sb"
    has "the unknown signer's image refused" journal \
        "initrd-sysext\[[0-9]+\]: skipped $PODMAN_NAME-unknown \(/var/lib/extensions/$PODMAN_NAME-unknown.raw\): unknown signer"
    has "… naming the trusted certificate dracut put into the initrd" journal \
        "unknown signer: .*$KEYS_TRUSTED_CN from /etc/verity.d/its-trusted.crt"
    hasnt "… and no device-mapper device made for it" dm "name=initrd-sysext-$PODMAN_NAME-unknown"
}
# --- 10: the policy after switch-root (issue 10, item 2) --------------------
# Signed initrd (policy signed), the signed podman DDI and a valid but unsigned
# image, systemd-sysext.service enabled. The initrd merges only the DDI and
# hands the policy over; in the booted system (systemd 257) our ExecCondition
# keeps the service from refreshing, so the unsigned image stays out and the
# merge stays as it is.
SCENARIOS+=(policy-after-boot)
S_INITRD[policy-after-boot]=signed
prep_policy_after_boot() {
    put_ddi "$1" "$PODMAN_DDI"; enable_sysext "$1"
    local t=$2/unsigned-tree
    mkdir -p "$t/usr/lib/extension-release.d" "$t/usr/share"
    echo ID=_any >"$t/usr/lib/extension-release.d/extension-release.unsigned"
    echo ITS-UNSIGNED >"$t/usr/share/its-unsigned"
    mkfs.erofs --quiet "$1/var/lib/extensions/unsigned.raw" "$t"
    cat >"$1/etc/its/scenario.sh" <<'EOS'
#!/bin/bash
ov() { awk '$5 == "/usr" && / - overlay /' /proc/self/mountinfo | wc -l; }
echo "overlays=$(ov) unsigned-visible=$(test -e /usr/share/its-unsigned && echo yes || echo no)"
systemctl show systemd-sysext.service -p Result,ActiveState
cat /run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf
head -n 1 /run/verity.d/*.crt
EOS
    chmod +x "$1/etc/its/scenario.sh"
    checks "$1" ""
}
check_policy_after_boot() {
    has "initrd: the signed DDI merged" journal \
        "initrd-sysext\[[0-9]+\]: merged $PODMAN_NAME from .*dm-verity, signed by .*$KEYS_TRUSTED_CN"
    has "initrd: the unsigned image refused" journal \
        'initrd-sysext\[[0-9]+\]: skipped unsigned \(/var/lib/extensions/unsigned.raw\): unsigned'
    has "initrd: policy and certificate handed over" journal \
        'initrd-sysext\[[0-9]+\]: booted system: .* takes --image-policy=; policy signed: .*1 certificate\(s\) to /run/verity.d'
    has "booted: our condition names the refused image" journal \
        'initrd-sysext\[[0-9]+\]: not refreshing: policy signed \(from the initrd\) refuses unsigned '
    has "systemd-sysext.service skipped by its ExecCondition" scenario '^Result=exec-condition$'
    has "the drop-in passes systemd the same policy" scenario \
        '^ExecStart=systemd-sysext refresh --image-policy=root=signed\+absent:usr=signed\+absent:=ignore$'
    has "the certificate is in /run/verity.d, PEM" scenario '^-----BEGIN CERTIFICATE-----$'
    has "the unsigned image is not merged" scenario '^overlays=1 unsigned-visible=no$'
    hasnt "systemd-sysext status does not list it" sysext-status 'unsigned'
    has "the signed one stays merged" sysext-status "$PODMAN_NAME"
    one_overlay
    hasnt "no Unmerged line" journal "Unmerged"
    quadlet_ran
}
# --- 11: dm-verity device lifecycle (issue 10, item 8) ---------------------
# One boot; in the booted guest the real binary runs 25 times in a tight loop
# against scratch sysroots: failed mounts of a signed DDI with a flipped
# superblock, then merge/unmerge of the good one, while a prober holds every
# dm device open for a moment as udev does (guest/dm-lifecycle.sh). No device
# may be left behind and no create may fail.
SCENARIOS+=(dm-lifecycle)
S_INITRD[dm-lifecycle]=signed
prep_dm_lifecycle() {
    local d=$1/var/lib/its/dm v
    for v in bad good; do
        install -D -m 0644 "$1/usr/lib/os-release" "$d/$v/usr/lib/os-release"
        install -D -m 0644 "$KEYS/trusted.crt" "$d/$v/usr/lib/verity.d/its-trusted.crt"
        mkdir -p "$d/$v/var/lib/extensions"
    done
    install -m 0644 "$PODMAN_DDI" "$d/good/var/lib/extensions/$PODMAN_NAME.raw"
    install -m 0644 "$PODMAN_DDI" "$d/bad/var/lib/extensions/$PODMAN_NAME-sb.raw"
    tamper_superblock "$d/bad/var/lib/extensions/$PODMAN_NAME-sb.raw"
    echo "rd.sysext.policy=signed" >"$d/cmdline"
    printf 'runs=25 name=%s\n' "$PODMAN_NAME" >"$d/params"
    install -m 0755 "$here/guest/dm-lifecycle.sh" "$1/etc/its/scenario.sh"
    checks "$1" ""
}
check_dm_lifecycle() {
    has "every failed mount skipped the image, no create failed" scenario \
        '^failed mounts: runs=25 skipped=25 create-failures=0$'
    has "merge/unmerge 25 times, every create worked" scenario \
        '^merge loop: runs=25 merged=25 unmerged=25 create-failures=0$'
    has "no dm device left once the prober let go" scenario '^dm devices left after both loops: 0$'
    hasnt "no device removal failed" scenario '(cannot remove|removing) device-mapper device'
}
# --- kernels (issue 9): the trixie guest on bullseye's 5.10, bookworm's 6.1
# and forky's 7.x cloud kernels, each with its own initrd from the guest's
# dracut. 6.12 is first-boot. The oldest and the newest also merge 130 small
# images next to podman, in one overlay. No systemd-sysext.service here, so
# the udev rule can only have come with our merge. The newest also has /var
# on its own disk.
prep_kernel() { put_podman "$1"; put_udev_ext "$1"; checks "$1" "podman"; }
kernel_first_boot() { # SUITE whose kernel was booted
    has "booted $1's kernel" versions "^$(sed 's/[.+]/\\&/g' "$BOOT/kver")\$"
    hasnt "the kernel accepts the podman image's erofs features" journal 'erofs.*(unidentified|unsupported|incompatible)'
    quadlet_ran
    no_boot_reload
    merged_by_us
    has "podman run --rootfs works" podman-run 'ITS-PODMAN-RUN-OK'
    merged_by_us its-udev
    udev_applied
}
# Linux 5.10 reads neither big physical clusters (5.13) nor tail packing
# (5.17), which the recipe's erofs image uses: on that kernel the same tree,
# repacked with the host's mkfs.erofs defaults (lz4hc, 4 KiB clusters).
prep_kernel_bullseye() {
    local old m=$its_tmp/podman-5.10
    old=$cache/its-podman-erofs-5.10-$(sha256sum <"$PODMAN_RAW" | cut -c1-16).raw
    if [[ ! -f $old ]]; then
        mkdir -p "$m"; its_mounts+=("$m")
        mount -o loop,ro "$PODMAN_RAW" "$m"
        mkfs.erofs --quiet -zlz4hc --all-root "$old.tmp" "$m" && mv "$old.tmp" "$old"
        umount "$m"
    fi
    PODMAN_RAW=$old prep_kernel "$1"
    put_many "$1"
}
check_kernel_bullseye() { kernel_first_boot bullseye; many_merged; built_with 'mount\(2\) options'; }
prep_kernel_bookworm() { prep_kernel "$1"; }
check_kernel_bookworm() { kernel_first_boot bookworm; built_with 'fsconfig lowerdir='; }
prep_kernel_forky() { prep_kernel "$1"; put_many "$1"; put_var_disk "$1" "$2"; }
check_kernel_forky() { kernel_first_boot forky; many_merged; var_disk_works; built_with 'lowerdir\+'; }
# --- suites (issue 9): scenario 5 on bookworm (systemd 252, dracut 059,
# 6.1) and forky (262, 112, 7.x). Bookworm's podman 4.3 has no quadlet (it
# came with 4.4), so that guest has no podman image and no quadlet check.
prep_after_boot_compat_bookworm() { prep_after_boot_compat "$@"; }
check_after_boot_compat_bookworm() { check_after_boot_compat; }
# systemd 262 skips an unchanged refresh itself, judged by the origin file.
prep_after_boot_compat_forky() { prep_after_boot_compat "$@"; }
check_after_boot_compat_forky() {
    has "systemd-sysext 262 found nothing changed (our origin file)" journal \
        'Skipping extension refresh because no change was found'
    after_boot_compat
}
# Separate /var (issue 9): /var on its own disk, mounted in the initrd
# (x-initrd.mount), so images in /var/lib/extensions merge before switch-root
# and /var works as usual after boot. Called last in a prep: it moves /var.
put_var_disk() {
    mkfs.ext4 -q -L var -d "$1/var" "$2/var.raw" 2G >/dev/null
    find "$1/var" -mindepth 1 -delete
    echo '/dev/disk/by-id/virtio-var /var ext4 defaults,x-initrd.mount 0 2' >>"$1/etc/fstab"
}
var_disk_works() {
    has "/var is the second disk" findmnt-var '^/var +/dev/vd[a-z]+ +ext4 '
    has "merged podman from /var/lib/extensions" journal \
        "initrd-sysext\[[0-9]+\]: merged $PODMAN_NAME from /var/lib/extensions/$PODMAN_NAME.raw"
    merged_before_switch_root
    has "podman's storage is on /var" var-use '^/var$'
    has "the journal was flushed to /var/log/journal" var-use '^system\.journal$'
}
merged_before_switch_root() {
    local m s
    m=$(grep -m1 -E 'initrd-sysext\[[0-9]+\]: merged ' "$res/journal" | sed -E 's/^\[ *([0-9.]+)\].*/\1/')
    s=$(grep -m1 'Switching root' "$res/journal" | sed -E 's/^\[ *([0-9.]+)\].*/\1/')
    if [[ -n $m && -n $s ]] && awk -v m="$m" -v s="$s" 'BEGIN { exit !(m < s) }'; then
        echo "    ok    merged at ${m} s, before switch-root at ${s} s"
    else
        echo "    FAIL  no merge before switch-root (merge: ${m:-none}, switch-root: ${s:-none})"
        fails=$((fails + 1))
    fi
}

# Further scenario groups, one file per topic, in the same form as above.
for f in "$here"/scenarios.d/*.sh; do
    [[ -e $f ]] || continue
    # shellcheck source=/dev/null
    . "$f"
done
