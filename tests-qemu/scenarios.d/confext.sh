# shellcheck shell=bash
# Configuration extensions (issue 12), sourced by scenarios.sh. /etc becomes a
# noexec overlay, so /etc/its/scenario.sh cannot run: the evidence comes from
# its-confext-probe.service, which runs a script from /usr/local and writes
# into the collector's /run/its.
# shellcheck disable=SC2034,SC2154 # tables read by run.sh; res, KEYS_*, PODMAN_* set there
SCENARIOS+=(confext-first-boot confext-shadow)
S_INITRD[confext-first-boot]=signed
S_INITRD[confext-shadow]=ours

# make_confext IMAGE NAME ROOT TREE: TREE as an erofs confext whose release
# file matches the guest root ROOT (ID and VERSION_ID).
make_confext() {
    local rel=$4/etc/extension-release.d/extension-release.$2
    mkdir -p "${rel%/*}"
    grep -E '^(ID|VERSION_ID)=' "$3/usr/lib/os-release" >"$rel"
    mkfs.erofs "$1" "$4" >/dev/null
}
# sum_in IMAGE PATH: sha256 of PATH inside the erofs IMAGE.
sum_in() {
    local m=$its_tmp/sum-in s
    mkdir -p "$m"; its_mounts+=("$m")
    mount -o loop,ro "$1" "$m"
    s=$(sha256sum <"$m/$2" | cut -d' ' -f1)
    umount "$m"
    echo "$s"
}
# The probe: which mount /etc is, and the files and units the checks read.
# Scenario lines for its output file "confext" come on stdin.
put_confext_probe() {
    local lib=$1/usr/local/lib/its units=$1/etc/systemd/system
    sed 's#"/usr"#"/etc"#' "$here/guest/mntid" >"$lib/mntid-etc"
    chmod 0755 "$lib/mntid-etc"
    {
        cat <<'EOS'
#!/bin/bash
out=/run/its; mkdir -p "$out"
cp /run/its-etc-mntid-before "$out/etc-mntid-before" 2>/dev/null
/usr/local/lib/its/mntid-etc >"$out/etc-mntid-after" 2>&1
systemd-confext status >"$out/confext-status" 2>&1
journalctl -b -u systemd-confext.service -o cat --no-pager >"$out/confext-journal" 2>&1
exec >"$out/confext" 2>&1
echo "etc: $(findmnt -n -o FSTYPE,SOURCE,OPTIONS /etc)"
echo "machine-id=$(cat /etc/machine-id)"
if echo probe >/etc/its-write-probe; then echo write-probe=ok; else echo write-probe=refused; fi
EOS
        cat
        echo 'exit 0 # the evidence is what it wrote'
    } >"$lib/confext-probe.sh"
    chmod 0755 "$lib/confext-probe.sh"
    cat >"$units/its-etc-mntid.service" <<'EOU'
[Unit]
Description=Record /etc's mount before systemd-confext.service (QEMU test)
DefaultDependencies=no
After=local-fs.target
Before=systemd-confext.service sysinit.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/usr/local/lib/its/mntid-etc >/run/its-etc-mntid-before'
EOU
    cat >"$units/its-confext-probe.service" <<'EOU'
[Unit]
Description=Confext evidence for the collector (QEMU test)
After=multi-user.target
Before=its-collect.service
[Service]
Type=oneshot
ExecStart=/usr/local/lib/its/confext-probe.sh
EOU
    ln -s ../its-etc-mntid.service "$units/sysinit.target.wants/"
    ln -s ../its-confext-probe.service "$units/multi-user.target.wants/"
}

# --- 1 and 3: a confext "site" with the quadlet and its own policy.json,
# podman's podman-etc beneath it, and the podman sysext; /etc writable as
# Flatcar has it (Mutable=auto in confext.conf, the mutable directory a link
# to /etc). The booted systemd-confext.service is enabled and must leave the
# merge alone: on trixie (257) by our condition, on forky (262) by itself.
SCENARIOS+=(confext-first-boot-forky)
S_INITRD[confext-first-boot-forky]=ours
S_GUEST[confext-first-boot-forky]=forky

# put_site_confexts ROOT DIR PODMAN-ETC [signed]: site and podman-etc (the
# build's plain image PODMAN-ETC.raw, or its DDI PODMAN-ETC.confext.raw) in
# /var/lib/confexts, signed DDIs or plain erofs images.
put_site_confexts() {
    local t=$2/site-tree pe=$3 c=$1/var/lib/confexts
    rm -f "$1/etc/containers/systemd/hello.container"
    install -D -m 0644 "$here/guest/hello.container" "$t/etc/containers/systemd/hello.container"
    echo '{"default": [{"type": "reject"}], "transports": {"docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}}}' \
        >"$t/etc/containers/policy.json"
    make_confext "$2/site.raw" site "$1" "$t"
    mkdir -p "$c"
    if [[ ${4:-} == signed ]]; then
        bash "$repo/sysext/podman/verity.sh" "$(bash "$repo/guest/base.sh" trixie)" "$2/site.raw" erofs \
            "$KEYS/trusted.key" "$KEYS/trusted.crt" "$2" confext
        install -m 0644 "$2/site.confext.raw" "$c/site.raw"
        install -m 0644 "$pe.confext.raw" "$c/podman-etc.raw"
    else
        install -m 0644 "$2/site.raw" "$c/site.raw"
        install -m 0644 "$pe.raw" "$c/podman-etc.raw"
    fi
    CONFEXT_POLICY_SUM=$(sha256sum <"$t/etc/containers/policy.json" | cut -d' ' -f1)
    CONFEXT_REGISTRIES_SUM=$(sum_in "$pe.raw" etc/containers/registries.conf)
    mkdir -p "$1/var/lib/extensions.mutable"
    ln -s /etc "$1/var/lib/extensions.mutable/etc"
    printf '[ConfExt]\nMutable=auto\n' >"$1/etc/systemd/confext.conf"
    ln -sf /usr/lib/systemd/system/systemd-confext.service "$1/etc/systemd/system/sysinit.target.wants/"
    put_confext_probe "$1" <<'EOS'
echo "policy.json $(sha256sum </etc/containers/policy.json)"
echo "registries.conf $(sha256sum </etc/containers/registries.conf)"
systemctl show systemd-confext.service -p Result,InactiveExitTimestampMonotonic
cat /run/systemd/system/systemd-confext.service.d/initrd-sysext.conf
EOS
    checks "$1" ""
}
prep_confext_first_boot() {
    put_ddi "$1" "$PODMAN_DDI"
    put_site_confexts "$1" "$2" "${PODMAN_SIDECAR%/*}/podman-etc-$PODMAN_VERSION-debian-13" signed
}
prep_confext_first_boot_forky() {
    local v=${PODMAN_RAW##*/podman-}
    put_podman "$1"
    put_site_confexts "$1" "$2" "${PODMAN_RAW%/*}/podman-etc-${v%%-debian*}-debian-forky"
}
# site_confexts_merged HOW: what both suites show; HOW is the ERE of the
# images' kind and trust in our merged lines.
site_confexts_merged() {
    quadlet_ran
    no_boot_reload
    merged_by_us
    has "confext site merged" journal "initrd-sysext\[[0-9]+\]: merged confext site from /var/lib/confexts/site.raw \($1"
    has "confext podman-etc merged" journal \
        "initrd-sysext\[[0-9]+\]: merged confext podman-etc from /var/lib/confexts/podman-etc.raw \($1"
    has "/etc: site over podman-etc, the host's /etc the upper (Mutable=auto from confext.conf)" journal \
        "initrd-sysext\[[0-9]+\]: /etc: overlay of site, podman-etc \(top first\) with the host's /etc as the upper, writable: writes go to /etc itself \(mutable mode auto from /etc/systemd/confext.conf\), rw,nosuid,nodev,noexec,noatime"
    has "/etc is the confext overlay, rw,nosuid,nodev,noexec" mountinfo \
        ' /etc rw,nosuid,nodev,noexec,noatime( [^ ]+)* - overlay confext '
    has "policy.json is the site confext's (top layer)" confext "^policy.json $CONFEXT_POLICY_SUM "
    has "registries.conf is podman-etc's" confext "^registries.conf $CONFEXT_REGISTRIES_SUM "
    has "/etc is writable" confext '^write-probe=ok$'
    has "initrd-sysext status: both on /etc, mutable auto" ours-status $'^/etc\tpodman-etc site\tsince .*\tmutable auto, writable$'
    has "systemd-confext status lists podman-etc" confext-status 'podman-etc'
    has "systemd-confext status lists site" confext-status 'site'
    has "systemd-confext.service was started" confext '^InactiveExitTimestampMonotonic=[1-9]'
    same_etc_mount
    hasnt "nothing was unmerged" journal 'Unmerged'
    hasnt "no failed unit" failed '\.(service|mount)'
}
check_confext_first_boot() {
    site_confexts_merged "ddi.*dm-verity, signed by .*$KEYS_TRUSTED_CN"
    has "the drop-in: our condition" confext '^ExecCondition=/[^ ]*initrd-sysext refresh-needed --class confext$'
    has "… and 257's refresh with the policy and --mutable=auto (257 does not read confext.conf)" confext \
        '^ExecStart=systemd-confext refresh --image-policy=root=signed\+absent:=ignore --mutable=auto$'
    has "systemd-confext.service skipped by our condition" confext '^Result=exec-condition$'
    has "… which found the 2 confexts unchanged" confext-journal \
        'not refreshing: the 2 image\(s\) are unchanged since the initrd merged them'
}
check_confext_first_boot_forky() {
    site_confexts_merged "erofs, "
    # Its merge process, (sd-merge), logs outside the unit: take the lines of its run.
    sed -n '/Starting systemd-confext.service/,/Finished systemd-confext.service/p' "$res/journal" >"$res/confext-run"
    has "systemd-confext 262 found nothing changed (our origin file)" confext-run \
        '\(sd-merge\)\[[0-9]+\]: Skipping extension refresh because no change was found'
    has "… and succeeded" confext '^Result=success$'
}
# /etc is the same mount before systemd-confext.service and after boot (as
# refresh_kept_merge compares /usr).
same_etc_mount() {
    has "its-etc-mntid.service recorded /etc before systemd-confext.service" etc-mntid-before '^(unique-)?mount-id '
    if [[ -s $res/etc-mntid-before ]] && diff -q "$res/etc-mntid-before" "$res/etc-mntid-after" >/dev/null; then
        echo "    ok    /etc is the same mount before and after systemd-confext.service"
        ev <"$res/etc-mntid-before"
    else
        echo "    FAIL  /etc is another mount after systemd-confext.service:"
        { diff "$res/etc-mntid-before" "$res/etc-mntid-after" 2>&1 || true; } | ev
        fails=$((fails + 1))
    fi
}

# --- 2: a confext hiding the base's /etc/machine-id (with an empty one) and
# /etc/fstab, no mutable mode chosen: merged read-only as systemd-confext
# merges it, with the warnings; PID 1 makes the machine ID transient, the
# booted system mounts by the confext's fstab; multi-user is reached.
CONFEXT_HOST_ID=0123456789abcdef0123456789abcdef
prep_confext_shadow() {
    local t=$2/shadow-tree
    echo "$CONFEXT_HOST_ID" >"$1/etc/machine-id"
    mkdir -p "$1/mnt/its-host" "$1/mnt/its-confext" "$t/etc" "$1/var/lib/confexts"
    cp "$1/etc/fstab" "$t/etc/fstab"
    echo 'tmpfs /mnt/its-host tmpfs defaults 0 0' >>"$1/etc/fstab"
    echo 'tmpfs /mnt/its-confext tmpfs defaults 0 0' >>"$t/etc/fstab"
    : >"$t/etc/machine-id"
    make_confext "$1/var/lib/confexts/shadow.raw" shadow "$1" "$t"
    put_confext_probe "$1" <<'EOS'
for m in /mnt/its-confext /mnt/its-host /etc/machine-id; do findmnt -n -o TARGET,FSTYPE "$m"; done
EOS
    checks "$1" ""
}
check_confext_shadow() {
    has "multi-user.target reached" multi-user '^active'
    has "merged confext shadow" journal "initrd-sysext\[[0-9]+\]: merged confext shadow from /var/lib/confexts/shadow.raw "
    has "warned: it hides the base's machine-id and fstab" journal \
        "initrd-sysext\[[0-9]+\]: confext shadow: .*replaces the base's /etc/machine-id: PID 1 takes the machine ID from it; replaces the base's /etc/fstab: the initrd has mounted by the base's already; it governs the booted system's mounts"
    has "warned: read-only /etc by default, machine ID transient" journal \
        "initrd-sysext\[[0-9]+\]: /etc will be read-only: mutable mode no is systemd's default, nobody chose it; the machine ID is transient"
    has "/etc: read-only overlay over the host" journal \
        "initrd-sysext\[[0-9]+\]: /etc: overlay of shadow \(top first\) over the host, read-only \(mutable mode no, the default\), ro,nosuid,nodev,noexec"
    has "/etc is the confext overlay, ro,nosuid,nodev,noexec" mountinfo \
        ' /etc ro,nosuid,nodev,noexec[^ ]*( [^ ]+)* - overlay confext '
    has "/etc is read-only" confext '^write-probe=refused$'
    has "PID 1 installed a transient machine ID" journal 'systemd\[1\]: Installed transient /etc/machine-id file\.'
    has "… and did not commit it: /etc is read-only" journal \
        'systemd-machine-id-commit\.service .* skipped, unmet condition check ConditionPathIsReadWrite=/etc'
    has "… bind-mounted over /etc/machine-id" confext '^/etc/machine-id '
    has "the machine ID is set" confext '^machine-id=[0-9a-f]{32}$'
    hasnt "… and is not the hidden base's" confext "^machine-id=$CONFEXT_HOST_ID\$"
    has "the confext's fstab entry is mounted" confext '^/mnt/its-confext +tmpfs$'
    hasnt "the base's fstab entry is not" confext '^/mnt/its-host '
}
