#!/usr/bin/env bash
# The Debian package as an admin meets it, without QEMU. One line per check,
# then "N passed, N failed"; the exit status is non-zero on any failure.
#   pkg/deb/test.sh [BINARY]
# - make deb gives the same bytes twice, with the files the man page names;
# - in the trixie base switched to initramfs-tools (initramfs-tools-root.sh, under
#   an overlay, so the cached tree stays as it is), `apt install ./the.deb`
#   rebuilds the initramfs through the trigger, with the activator, its boot
#   script (before udev's), its modules and the trusted certificate, and
#   `apt remove` rebuilds it without them;
# - the boot script, run inside that initramfs (its busybox sh and
#   /scripts/functions) against a scratch root, merges an image, logs to kmsg
#   and leaves its report in /run; it merges nothing with rd.sysext=0, and it
#   exits 0 with no mount left when the activator fails, crashes or hangs.
set -euo pipefail
# The checks mount in a private namespace of their own; the scratch directory is
# removed from this one, where nothing is mounted below it.
if [[ -z ${PKG_TEST_DIR:-} ]]; then
    t=$(mktemp -d /tmp/pkg-test.XXXXXX)
    rc=0
    PKG_TEST_DIR=$t unshare -m --propagation private "$0" "$@" || rc=$?
    rm -rf "$t"
    exit "$rc"
fi
t=$PKG_TEST_DIR
trap 'exit 130' INT TERM
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${1:-$repo/target/x86_64-unknown-linux-musl/release/initrd-sysext}

# shellcheck source-path=SCRIPTDIR source=../../tests/common/checks.sh
. "$repo/tests/common/checks.sh"
done=0
cleanup() {
    if ((!done)); then
        echo "FAIL - test setup (see above)"
        echo "$passed passed, $((failed + 1)) failed"
    fi
}
trap cleanup EXIT

# --- the package file ---
deb=$(bash "$here/build.sh" "$bin" "$t/a" 2>/dev/null | tail -n1)
deb2=$(bash "$here/build.sh" "$bin" "$t/b" 2>/dev/null | tail -n1)
check "make deb twice gives the same bytes" cmp "$deb" "$deb2"
dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' >"$t/files"
has_file() { grep -qxF -e "$1" "$t/files"; }
for f in "-rwxr-xr-x root/root ./usr/bin/initrd-sysext" \
    "-rwxr-xr-x root/root ./usr/lib/dracut/modules.d/90initrd-sysext/module-setup.sh" \
    "-rw-r--r-- root/root ./usr/lib/dracut/modules.d/90initrd-sysext/initrd-sysext.service" \
    "-rw-r--r-- root/root ./usr/lib/dracut/dracut.conf.d/initrd-sysext.conf" \
    "-rwxr-xr-x root/root ./usr/share/initramfs-tools/hooks/initrd-sysext" \
    "-rwxr-xr-x root/root ./usr/share/initramfs-tools/scripts/init-bottom/initrd-sysext" \
    "-rw-r--r-- root/root ./usr/share/man/man8/initrd-sysext.8.gz" \
    "-rw-r--r-- root/root ./usr/share/doc/initrd-sysext/copyright"; do
    check "the package holds ${f##* }" has_file "$f"
done
check "the package activates the update-initramfs trigger" \
    grep -qx 'activate-noawait update-initramfs' <(dpkg-deb --info "$deb" triggers)

# --- apt install in a chroot with initramfs-tools ---
itools=$(bash "$here/initramfs-tools-root.sh")
r=$t/root
mkdir -p "$r" "$t/upper" "$t/work"
mount -t overlay overlay -o "lowerdir=$itools,upperdir=$t/upper,workdir=$t/work" "$r"
mount --rbind /dev "$r/dev"
mount -t proc proc "$r/proc"
mount -t sysfs sys "$r/sys"
kver=$(ls "$r/usr/lib/modules")
initrd=/boot/initrd.img-$kver
# A trusted certificate on the host: the hook must copy it into the initramfs.
mkdir -p "$r/etc/verity.d"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=pkg-test \
    -keyout "$t/key.pem" -out "$r/etc/verity.d/pkg-test.crt" 2>/dev/null
cp "$deb" "$r/tmp/"
in_root() { chroot "$r" env DEBIAN_FRONTEND=noninteractive "$@"; }
lsinit() { in_root lsinitramfs "$initrd" >"$t/lsinit"; }
lists() { for p; do grep -qxF "$p" "$t/lsinit" || { echo "missing: $p"; return 1; }; done; }
lacks() { for p; do ! grep -qxF "$p" "$t/lsinit" || { echo "still there: $p"; return 1; }; done; }

touch "$t/before-install"
check "apt install ./initrd-sysext.deb succeeds" \
    in_root sh -c "cd /tmp && apt-get install -y --no-install-recommends ./${deb##*/}"
check "the trigger rebuilt the initramfs" test "$r$initrd" -nt "$t/before-install"
lsinit
mods=$kver/kernel
check "the initramfs holds the activator, its boot script and the certificate" lists \
    usr/bin/initrd-sysext scripts/init-bottom/initrd-sysext etc/verity.d/pkg-test.crt
check "the initramfs holds loop, squashfs, erofs, overlay, dm-mod, dm-verity, sha256-ssse3" lists \
    "usr/lib/modules/$mods/drivers/block/loop.ko.xz" "usr/lib/modules/$mods/fs/squashfs/squashfs.ko.xz" \
    "usr/lib/modules/$mods/fs/erofs/erofs.ko.xz" "usr/lib/modules/$mods/fs/overlayfs/overlay.ko.xz" \
    "usr/lib/modules/$mods/drivers/md/dm-mod.ko.xz" "usr/lib/modules/$mods/drivers/md/dm-verity.ko.xz" \
    "usr/lib/modules/$mods/arch/x86/crypto/sha256-ssse3.ko.xz"

# --- the boot script, inside that initramfs ---
in_root unmkinitramfs "$initrd" /tmp/unpacked
i=$r/tmp/unpacked
[[ -d $i/main ]] && i=$i/main
check "init loads the modules before the root is mounted (conf/modules)" \
    diff <(printf '%s\n' loop squashfs erofs overlay dm_mod dm_verity sha256_ssse3) "$i/conf/modules"
check "the boot script runs in init-bottom before udev's" \
    diff <(grep -o '^/scripts/init-bottom/[^ ]*' "$i/scripts/init-bottom/ORDER") \
    <(printf '%s\n' /scripts/init-bottom/initrd-sysext /scripts/init-bottom/udev)
check "the activator in the initramfs is the packaged one" cmp "$i/usr/bin/initrd-sysext" "$bin"

# A scratch real root at init's ${rootmnt} (/root), with one extension image.
mkdir -p "$i/root" "$i/dev" "$i/proc" "$i/run" "$i/out" "$i/.old" \
    "$t/ext/usr/lib/extension-release.d" "$t/ext/usr/share/pkg-test"
mount --bind "$i" "$i" # to be the root of each boot's mount namespace, as rootfs is
mount -t tmpfs tmpfs "$i/root"
mkdir -p "$i/root/etc" "$i/root/usr/bin" "$i/root/usr/lib" "$i/root/opt" "$i/root/var/lib/extensions"
cp "$bin" "$i/root/usr/bin/initrd-sysext" # installed in the root too, as the package does
printf 'ID=debian\nVERSION_ID=13\n' >"$i/root/etc/os-release"
printf 'ID=debian\nVERSION_ID=13\n' >"$t/ext/usr/lib/extension-release.d/extension-release.pkg-test"
echo hello >"$t/ext/usr/share/pkg-test/hello"
mksquashfs "$t/ext" "$i/root/var/lib/extensions/pkg-test.raw" -quiet -all-root -noappend >/dev/null
mount --rbind /dev "$i/dev"
mount -t proc proc "$i/proc"
touch "$t/kmsg" "$t/cmdline"
mount --bind "$t/kmsg" "$i/dev/kmsg" # the activator's log lines, instead of the host's kernel log
mount --bind "$t/cmdline" "$i/proc/cmdline"
mkdir -p "$t/out"
mount --bind "$t/out" "$i/out"
# Inside the initramfs, with its busybox: what init does around the script
# (a /run tmpfs), then what the checks read (mounts, the merged file, /run).
printf '%s\n' 'umount -l /.old' 'mount -t tmpfs tmpfs /run' \
    '/bin/sh /scripts/init-bottom/initrd-sysext >/out/console 2>&1' \
    'echo "boot script exit status $?" >>/out/console' \
    'cat /proc/self/mountinfo >/out/mountinfo' \
    'cat /root/usr/share/pkg-test/hello >/out/hello 2>/dev/null' \
    'cp -r /run /out/run' >"$i/pkg-test-boot"
# boot CMDLINE [ENV...]: run the boot script as init does, with this kernel
# command line, in a mount namespace whose root is the initramfs: setns() back
# from the activator's staging namespace lands there, as at boot (in a mere
# chroot it would land in the host's root). Its mounts end with it.
boot() {
    echo "$1" >"$t/cmdline"
    shift
    : >"$t/kmsg"
    rm -rf "${t:?}/out/"*
    # shellcheck disable=SC2016 # expanded by the inner shell
    timeout 60 env -i PATH=/sbin:/usr/sbin:/bin:/usr/bin rootmnt=/root quiet=n "$@" \
        unshare -m sh -c 'cd "$1" && pivot_root . .old && exec /bin/sh /pkg-test-boot' _ "$i" || return
    cat "$t/out/console"
    grep -qx "boot script exit status 0" "$t/out/console"
}
mounted_at() { awk -v m="$1" '$5 == m { for (f = 7; f <= NF; f++) if ($f == "-") print $(f + 1) }' "$t/out/mountinfo"; }
merged() { [[ $(mounted_at /root/usr) == overlay ]] && grep -qx hello "$t/out/hello"; }
no_mount() { ! awk '$5 ~ "^/root/"' "$t/out/mountinfo" | grep . || { cat "$t/out/console" "$t/kmsg"; false; }; }
logged() { grep -q "initrd-sysext\[[0-9]*\]: .*$1" "$t/kmsg" || { cat "$t/kmsg"; false; }; }

check "policy any: the boot script exits 0" boot "quiet rd.sysext.policy=any"
check "policy any: the image is merged onto \${rootmnt}/usr" merged
check "policy any: the decision reaches kmsg with the identifier initrd-sysext" logged "merged pkg-test"
check "policy any: the report is in /run, which init moves to the real root" \
    grep -q '"name":"pkg-test"' "$t/out/run/initrd-sysext/report.json"
check "policy any: the hand-over to the booted systemd-sysext is in /run too" \
    ls "$t/out/run/initrd-sysext/state" "$t/out/run/verity.d/pkg-test.crt" \
    "$t/out/run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf"
check "policy any: its drop-in runs the root's initrd-sysext as ExecCondition" grep -qx \
    "ExecCondition=/usr/bin/initrd-sysext refresh-needed" \
    "$t/out/run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf"
check "the certificate in the initramfs makes the default policy signed; exit 0" boot "quiet"
check "signed: the unsigned image is skipped with its reason" logged "skipped pkg-test .*policy signed"
check "signed: nothing is mounted" no_mount
check "rd.sysext=0: exit 0" boot "rd.sysext=0 rd.sysext.policy=any"
check "rd.sysext=0: nothing is mounted" no_mount
check "rd.sysext=0: the reason is logged" logged "rd.sysext=0"
check "a failure after the overlay is attached: exit 0" \
    boot "rd.sysext.policy=any" INITRD_SYSEXT_TEST_FAULTS=attach=usr
check "a failure after the overlay is attached: it is rolled back, no mount left" no_mount
check "a failure is reported on the console" grep -q "initrd-sysext exited with status 1" "$t/out/console"
# Activators that crash or hang, in place of the real one.
printf '#!/bin/sh\nkill -SEGV $$\n' >"$t/crash"
printf '#!/bin/sh\nexec sleep 600\n' >"$t/hang"
chmod +x "$t/crash" "$t/hang"
for stub in crash hang; do
    mount --bind "$t/$stub" "$i/usr/bin/initrd-sysext"
    check "an activator that crashes or hangs ($stub): the boot script still exits 0" \
        boot "rd.sysext.policy=any" INITRD_SYSEXT_TIMEOUT=2
    check "an activator that crashes or hangs ($stub): no mount left" no_mount
    umount "$i/usr/bin/initrd-sysext"
done

# --- apt remove ---
umount -R "$i"
check "apt remove initrd-sysext succeeds" in_root apt-get remove -y initrd-sysext
lsinit
check "the trigger rebuilt the initramfs without the activator and its script" \
    lacks usr/bin/initrd-sysext scripts/init-bottom/initrd-sysext

done=1
summary
