//! After our initrd merge, the booted system's own systemd-sysext: the real binaries of
//! systemd 262 (Debian forky) and 257 (trixie) in minimal roots built once by
//! tests/sysroots/build.sh, and the host's 252 (bookworm). In a private mount namespace: merge
//! with our binary into the root (its /run is the one the booted system gets), move the root
//! as switch-root does, then run what systemd-sysext.service runs (our ExecCondition where the
//! handover installed one, then ExecStart), and `status`, a changed set, `unmerge`. "The same
//! mount" is the unique mount ID (statx STATX_MNT_ID_UNIQUE) of /usr before and after.

mod common;

use std::process::Command;

use common::*;

/// Build (or find in the cache) the root of a Debian suite.
fn sysroot(suite: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sysroots/build.sh");
    let out = Command::new(script).arg(suite).output().expect("running tests/sysroots/build.sh");
    assert!(out.status.success(), "building the {suite} root failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Shell helpers for every scenario: `mntid PATH` prints the unique mount ID (perl is in every
/// Debian), `unit` runs what systemd-sysext.service would: the drop-in's ExecCondition, then
/// its ExecStart (else `refresh`), with `$RUN` as the command prefix (chroot, or nothing).
const HELPERS: &str = r#"
mntid() { perl -e 'my $b = "\0" x 256; syscall(332, -100, $ARGV[0], 0x100, 0x4000, $b) == 0 or die "statx: $!";
  die "no unique mount ID\n" unless unpack("L", $b) & 0x4000; print unpack("Q", substr($b, 144, 8)), "\n"' "$1"; }
unit() {
  local dropin=$RUNDIR/systemd/system/systemd-sysext.service.d/initrd-sysext.conf cond start rc
  cond=$(sed -n 's/^ExecCondition=//p' "$dropin" 2>/dev/null)
  start=$(sed -n 's/^ExecStart=\(..*\)$/\1/p' "$dropin" 2>/dev/null | tail -n 1)
  if [ -n "$cond" ]; then
    # shellcheck disable=SC2086
    $RUN $cond; rc=$?; echo "condition-rc=$rc"
    [ "$rc" = 0 ] || return 0
  fi
  # shellcheck disable=SC2086
  $RUN ${start:-systemd-sysext refresh} $ROOTARG 2>&1; echo "start-rc=$?"
}
"#;

/// An overlay (writable, in memory) over the cached root as the sysroot `$R`, shared like a
/// real root so systemd-sysext's own mounts show; its /run a tmpfs, our binary in /usr/bin.
const CHROOT_SETUP: &str = r#"
mkdir -p "$D/up" "$D/root" "$D/booted"
mount -t tmpfs tmpfs "$D/up" && mkdir "$D/up/u" "$D/up/w"
mount -t overlay overlay -o "lowerdir=$L,upperdir=$D/up/u,workdir=$D/up/w" "$D/root"
mount --make-rshared "$D/root"
R=$D/root
mount -t tmpfs -o mode=0755 run "$R/run"
install -m 0755 "$B" "$R/usr/bin/initrd-sysext"
mkdir -p "$R/var/lib/extensions" "$R/etc/extensions" "$R/opt/extensions/flat" "$R/usr/share/builtin"
"#;

/// switch-root: the sysroot mount moves (keeping its mounts and their IDs); the booted system
/// gets /proc, /sys and /dev.
const SWITCH_ROOT: &str = r#"
mount --move "$R" "$D/booted"; R=$D/booted
mount -t proc proc "$R/proc"; mount -t sysfs sysfs "$R/sys"; mount --rbind /dev "$R/dev"
RUN="chroot $R" RUNDIR=$R/run ROOTARG=
"#;

/// The images: a plain erofs image, a directory, Flatcar's layout (a link in /etc/extensions
/// to a versioned file in /opt), and a built-in image inside /usr behind a link (Flatcar's
/// own), which the booted system sees through our overlay. `added` comes later.
fn images(s: &Scratch) {
    for (name, fs) in [("plain", "erofs"), ("flat", "squashfs"), ("builtin", "erofs"), ("added", "erofs")] {
        let t = s.ext_tree(name, "ID=_any\n");
        let dest = format!("images/{name}.raw");
        if fs == "erofs" {
            s.erofs(&t, &dest)
        } else {
            s.squashfs(&t, &dest)
        }
    }
    s.ext_tree("dir", "ID=_any\n");
}

const PLACE_IMAGES: &str = r#"
cp "$S/images/plain.raw" "$R/var/lib/extensions/"
cp -a "$D/trees/dir" "$R/var/lib/extensions/dir"
cp "$S/images/flat.raw" "$R/opt/extensions/flat/flat-1.raw"
ln -s /opt/extensions/flat/flat-1.raw "$R/etc/extensions/flat.raw"
cp "$S/images/builtin.raw" "$R/usr/share/builtin/builtin.raw"
ln -s /usr/share/builtin/builtin.raw "$R/etc/extensions/builtin.raw"
"#;

/// The output up to the line starting with `marker`: what happened before it.
fn before<'a>(out: &'a Output, marker: &str) -> &'a str {
    out.stdout.split(marker).next().unwrap_or_default()
}

fn value<'a>(out: &'a Output, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    out.stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key}= in:\n{}", out.all()))
}

/// Merge, boot, let the unit run on the unchanged set, then on a set with one image added.
fn unchanged_then_changed(suite: &str) -> Output {
    let s = Scratch::new();
    images(&s);
    s.cmdline("root=/dev/vda1 ro\n");
    let script = format!(
        "{HELPERS}{CHROOT_SETUP}{PLACE_IMAGES}
        \"$B\" merge --sysroot \"$R\" --cmdline \"$C\" --report \"$D/report.json\" --run \"$R/run\"; echo merge-rc=$?
        {SWITCH_ROOT}
        echo mnt-merged=$(mntid \"$R/usr\")
        chroot \"$R\" systemd-sysext status
        unit
        echo mnt-after-unit=$(mntid \"$R/usr\")
        cp \"$S/images/added.raw\" \"$R/var/lib/extensions/added.raw\"
        unit
        echo mnt-after-change=$(mntid \"$R/usr\")
        echo extensions=$(cat \"$R/usr/.systemd-sysext/extensions\")
        chroot \"$R\" systemd-sysext unmerge; echo unmerge-rc=$?
        echo overlays=$(grep -c \" $R/usr \" /proc/self/mountinfo)"
    );
    s.sh_env(&script, &[("L", &sysroot(suite))])
}

#[test]
fn systemd_262_skips_the_refresh_itself_and_refreshes_a_changed_set() {
    let out = unchanged_then_changed("forky");
    assert_eq!(value(&out, "merge-rc"), "0", "{}", out.all());
    assert!(out.stderr.contains("skips an unchanged refresh and reads ImagePolicy= from sysext.conf"), "{}", out.all());
    // systemd 262 decides by itself: no condition, no policy to carry.
    assert!(!out.stdout.contains("condition-rc"), "{}", out.all());
    assert!(out.stdout.contains("/usr      builtin    "), "{}", out.all());
    let unit = before(&out, "mnt-after-unit=");
    assert!(unit.contains("Skipping extension refresh because no change was found"), "{}", out.all());
    assert!(!unit.contains("Unmerged"), "{}", out.all());
    assert_eq!(value(&out, "mnt-after-unit"), value(&out, "mnt-merged"), "{}", out.all());
    // A changed set is refreshed: a new overlay with the new image.
    assert_ne!(value(&out, "mnt-after-change"), value(&out, "mnt-merged"), "{}", out.all());
    assert_eq!(value(&out, "extensions"), "added builtin dir flat plain", "{}", out.all());
    assert_eq!((value(&out, "unmerge-rc"), value(&out, "overlays")), ("0", "0"), "{}", out.all());
}

#[test]
fn systemd_257_is_left_alone_by_our_condition_and_refreshes_a_changed_set() {
    let out = unchanged_then_changed("trixie");
    assert_eq!(value(&out, "merge-rc"), "0", "{}", out.all());
    assert!(out.stderr.contains("has no refresh skip and takes --image-policy="), "{}", out.all());
    assert!(out.stdout.contains("/usr      builtin    "), "{}", out.all());
    assert!(!before(&out, "mnt-after-unit=").contains("Unmerged"), "{}", out.all());
    let conditions: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("condition-rc=")).collect();
    assert_eq!(conditions, ["condition-rc=1", "condition-rc=0"], "{}", out.all());
    assert!(
        out.stderr.contains("not refreshing: the 4 image(s) are unchanged since the initrd merged them"),
        "{}",
        out.all()
    );
    assert_eq!(value(&out, "mnt-after-unit"), value(&out, "mnt-merged"), "{}", out.all());
    assert!(
        out.stderr.contains("systemd-sysext may refresh: the images changed since the initrd (added added)"),
        "{}",
        out.all()
    );
    assert_ne!(value(&out, "mnt-after-change"), value(&out, "mnt-merged"), "{}", out.all());
    assert_eq!(value(&out, "extensions"), "added builtin dir flat plain", "{}", out.all());
    assert_eq!((value(&out, "unmerge-rc"), value(&out, "overlays")), ("0", "0"), "{}", out.all());
}

/// systemd 252 is the host's: a plain sysroot (bind-mounted shared) with the host's
/// systemd-sysext binary in it for the handover to read, `--root` instead of a chroot.
#[test]
fn systemd_252_is_left_alone_by_our_condition_and_refreshes_a_changed_set() {
    let s = Scratch::new();
    images(&s);
    let script = format!(
        "{HELPERS}
        mount --bind \"$S\" \"$S\" && mount --make-rshared \"$S\"
        install -m 0755 \"$(command -v systemd-sysext)\" \"$S/usr/bin/systemd-sysext\"
        install -m 0755 \"$B\" \"$S/usr/bin/initrd-sysext\"
        cp \"$S/images/plain.raw\" \"$S/var/lib/extensions/\"; cp -a \"$D/trees/dir\" \"$S/var/lib/extensions/dir\"
        \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" --run \"$S/run\"; echo merge-rc=$?
        RUN= RUNDIR=$S/run ROOTARG=--root=$S
        sed -i \"s|^ExecCondition=.*|ExecCondition=$B refresh-needed --sysroot $S --run $S/run|\" \
          \"$S/run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf\"
        echo mnt-merged=$(mntid \"$S/usr\")
        unit
        echo mnt-after-unit=$(mntid \"$S/usr\")
        cp \"$S/images/added.raw\" \"$S/var/lib/extensions/added.raw\"
        unit
        echo mnt-after-change=$(mntid \"$S/usr\")
        echo extensions=$(cat \"$S/usr/.systemd-sysext/extensions\")"
    );
    let out = s.sh(&script);
    assert_eq!(value(&out, "merge-rc"), "0", "{}", out.all());
    assert!(out.stderr.contains("has no refresh skip and has no image policy"), "{}", out.all());
    let conditions: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("condition-rc=")).collect();
    assert_eq!(conditions, ["condition-rc=1", "condition-rc=0"], "{}", out.all());
    assert_eq!(value(&out, "mnt-after-unit"), value(&out, "mnt-merged"), "{}", out.all());
    // 252's unit says `merge`, which refuses a merged /usr; the drop-in makes it `refresh`.
    assert_ne!(value(&out, "mnt-after-change"), value(&out, "mnt-merged"), "{}", out.all());
    assert_eq!(value(&out, "extensions"), "added dir plain", "{}", out.all());
}

/// Policy `signed` with only unsigned images: the initrd merges nothing. After switch-root our
/// condition keeps systemd-sysext.service from running; systemd's own refresh, run anyway with
/// the policy we carried over, refuses the unsigned image too.
fn refused_after_boot(suite: &str) -> Output {
    let s = Scratch::new();
    images(&s);
    s.cmdline("root=/dev/vda1 ro rd.sysext.policy=signed\n");
    let script = format!(
        "{HELPERS}{CHROOT_SETUP}
        cp \"$S/images/plain.raw\" \"$R/var/lib/extensions/\"; cp -a \"$D/trees/dir\" \"$R/var/lib/extensions/dir\"
        \"$B\" merge --sysroot \"$R\" --cmdline \"$C\" --report \"$D/report.json\" --run \"$R/run\"; echo merge-rc=$?
        {SWITCH_ROOT}
        cat \"$R/run/systemd/sysext.conf.d/initrd-sysext.conf\" \"$R/run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf\" 2>/dev/null
        unit
        echo overlays=$(grep -c \" $R/usr \" /proc/self/mountinfo)
        rm -r \"$R/var/lib/extensions/dir\"
        start=$(sed -n 's/^ExecStart=\\(..*\\)$/\\1/p' \"$R/run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf\")
        chroot \"$R\" ${{start:-systemd-sysext refresh}} 2>&1; echo systemd-rc=$?
        echo overlays-systemd=$(grep -c \" $R/usr \" /proc/self/mountinfo)"
    );
    s.sh_env(&script, &[("L", &sysroot(suite))])
}

fn assert_refused_after_boot(out: &Output) {
    assert_eq!(value(out, "merge-rc"), "0", "{}", out.all());
    assert_eq!(value(out, "condition-rc"), "1", "{}", out.all());
    assert!(out.stderr.contains("not refreshing: policy signed (from the initrd) refuses "), "{}", out.all());
    let plain = "plain (/var/lib/extensions/plain.raw): unsigned: it has no dm-verity data and no signature \
                 (policy signed); systemd-sysext would fail the whole refresh on it";
    assert!(out.stderr.contains(plain), "{}", out.all());
    // systemd's image policy does not cover directories.
    let dir = "dir (/var/lib/extensions/dir): unsigned: it has no dm-verity data and no signature (policy signed); \
               systemd-sysext would merge it";
    assert!(out.stderr.contains(dir), "{}", out.all());
    assert_eq!(value(out, "overlays"), "0", "{}", out.all());
    // systemd itself, with the policy we handed over, refuses the unsigned image.
    assert!(out.stdout.contains("Image does not match image policy"), "{}", out.all());
    assert_ne!(value(out, "systemd-rc"), "0", "{}", out.all());
    assert_eq!(value(out, "overlays-systemd"), "0", "{}", out.all());
}

#[test]
fn systemd_262_gets_the_policy_in_sysext_conf() {
    let out = refused_after_boot("forky");
    assert!(
        out.stdout.contains("[SysExt]\nImagePolicy=root=signed+absent:usr=signed+absent:=ignore\n"),
        "{}",
        out.all()
    );
    assert_refused_after_boot(&out);
}

#[test]
fn systemd_257_gets_the_policy_on_its_command_line() {
    let out = refused_after_boot("trixie");
    assert!(!out.stdout.contains("[SysExt]"), "{}", out.all());
    assert!(out.stdout.contains("--image-policy=root=signed+absent:usr=signed+absent:=ignore"), "{}", out.all());
    assert_refused_after_boot(&out);
}

/// 252 has no image policy: our condition is all that keeps the refused image out, and
/// systemd's own refresh, run anyway, would merge it.
#[test]
fn systemd_252_has_only_our_condition_against_a_refused_image() {
    let s = Scratch::new();
    images(&s);
    s.cmdline("root=/dev/vda1 ro rd.sysext.policy=signed\n");
    let script = format!(
        "{HELPERS}
        mount --bind \"$S\" \"$S\" && mount --make-rshared \"$S\"
        install -m 0755 \"$(command -v systemd-sysext)\" \"$S/usr/bin/systemd-sysext\"
        install -m 0755 \"$B\" \"$S/usr/bin/initrd-sysext\"
        cp \"$S/images/plain.raw\" \"$S/var/lib/extensions/\"
        \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" --run \"$S/run\"; echo merge-rc=$?
        \"$B\" refresh-needed --sysroot \"$S\" --run \"$S/run\"; echo condition-rc=$?
        systemd-sysext refresh --root=\"$S\" 2>&1; echo systemd-rc=$?
        echo extensions=$(cat \"$S/usr/.systemd-sysext/extensions\" 2>/dev/null)"
    );
    let out = s.sh(&script);
    assert_eq!(value(&out, "merge-rc"), "0", "{}", out.all());
    assert_eq!(value(&out, "condition-rc"), "1", "{}", out.all());
    assert!(out.stderr.contains("(policy signed); systemd-sysext would merge it"), "{}", out.all());
    assert_eq!(value(&out, "extensions"), "plain", "what 252 does without the condition:\n{}", out.all());
}
