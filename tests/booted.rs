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
/// Debian), `unit` runs what systemd-sysext.service (`$SVC`: or systemd-confext.service) would:
/// the drop-in's ExecCondition, then its ExecStart (else `refresh`), with `$RUN` as the command
/// prefix (chroot, or nothing).
const HELPERS: &str = r#"
mntid() { perl -e 'my $b = "\0" x 256; syscall(332, -100, $ARGV[0], 0x100, 0x4000, $b) == 0 or die "statx: $!";
  die "no unique mount ID\n" unless unpack("L", $b) & 0x4000; print unpack("Q", substr($b, 144, 8)), "\n"' "$1"; }
unit() {
  local svc=${SVC:-systemd-sysext}
  local dropin=$RUNDIR/systemd/system/$svc.service.d/initrd-sysext.conf cond start rc
  cond=$(sed -n 's/^ExecCondition=//p' "$dropin" 2>/dev/null)
  start=$(sed -n 's/^ExecStart=\(..*\)$/\1/p' "$dropin" 2>/dev/null | tail -n 1)
  if [ -n "$cond" ]; then
    # shellcheck disable=SC2086
    $RUN $cond; rc=$?; echo "condition-rc=$rc"
    [ "$rc" = 0 ] || return 0
  fi
  # shellcheck disable=SC2086
  $RUN ${start:-$svc refresh} $ROOTARG 2>&1; echo "start-rc=$?"
}
"#;

/// An overlay (writable, in memory) over the cached root as the sysroot `$R` (or, with `$COPY`,
/// a copy in a tmpfs), shared like a real root so systemd-sysext's own mounts show; its /run a
/// tmpfs, our binary in /usr/bin.
const CHROOT_SETUP: &str = r#"
mkdir -p "$D/up" "$D/root" "$D/booted"
# A persistent confext upper cannot be on overlayfs: with $COPY the root is a tmpfs copy.
if [ -n "${COPY:-}" ]; then
  mount -t tmpfs -o mode=0755 root "$D/root" && cp -a "$L/." "$D/root/"
else
  mount -t tmpfs tmpfs "$D/up" && mkdir "$D/up/u" "$D/up/w"
  mount -t overlay overlay -o "lowerdir=$L,upperdir=$D/up/u,workdir=$D/up/w" "$D/root"
fi
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

/// A confext mutable mode as the root is set up for it: `config` goes into the root's
/// /etc/systemd/confext.conf, `env` into the environment of the merge and of the unit (as PID 1
/// gives `systemd.setenv=` to both), `link` makes /var/lib/extensions.mutable/etc a link to /etc
/// (Flatcar's layout), `import` leaves an earlier edit in that directory.
#[derive(Clone, Copy)]
struct Setup {
    config: Option<&'static str>,
    env: Option<&'static str>,
    link: bool,
    import: bool,
}

const DEFAULT: Setup = Setup { config: None, env: None, link: false, import: false };

/// Merge two confexts into the root's /etc, boot, let systemd-confext.service run on the
/// unchanged set, then on a set with one confext added, then `systemd-confext unmerge`.
fn confext_after_boot(suite: &str, setup: Setup) -> Output {
    let s = Scratch::new();
    for name in ["site", "added"] {
        let conf = format!("etc/{name}.conf");
        let t = s.confext_tree(name, "ID=_any\n", &[(&conf, name)]);
        s.erofs(&t, &format!("images/{name}.raw"));
    }
    s.confext_tree("cdir", "ID=_any\n", &[("etc/cdir.conf", "cdir")]);
    s.cmdline("root=/dev/vda1 rw\n");
    let mut prep = String::from("mkdir -p \"$R/var/lib/confexts\" \"$R/var/lib/extensions.mutable\"\n");
    if let Some(mode) = setup.config {
        prep += &format!(
            "mkdir -p \"$R/etc/systemd\"; printf '[ConfExt]\\nMutable={mode}\\n' > \"$R/etc/systemd/confext.conf\"\n"
        );
    }
    if let Some(mode) = setup.env {
        prep += &format!("export SYSTEMD_CONFEXT_MUTABLE_MODE={mode}\n");
    }
    if setup.link {
        prep += "ln -s /etc \"$R/var/lib/extensions.mutable/etc\"\n";
    }
    if setup.import {
        prep += "mkdir -p \"$R/var/lib/extensions.mutable/etc\"; echo earlier > \"$R/var/lib/extensions.mutable/etc/edited\"\n";
    }
    // A persistent upper needs a root on a file system overlayfs writes to.
    let persistent = setup.link || [setup.config, setup.env].contains(&Some("yes"));
    let copy = if persistent { "1" } else { "" };
    let script = format!(
        "{HELPERS}{CHROOT_SETUP}{prep}
        cp \"$S/images/site.raw\" \"$R/var/lib/confexts/\"; cp -a \"$D/trees/cdir\" \"$R/var/lib/confexts/cdir\"
        \"$B\" merge --sysroot \"$R\" --cmdline \"$C\" --report \"$D/report.json\" --run \"$R/run\"; echo merge-rc=$?
        grep -A1 '^class confext' \"$R/run/initrd-sysext/state\"; grep '^mode ' \"$R/run/initrd-sysext/state\"
        {SWITCH_ROOT}
        SVC=systemd-confext
        echo mnt-merged=$(mntid \"$R/etc\")
        chroot \"$R\" systemd-confext status
        echo probe > \"$R/etc/probe\" 2>/dev/null && echo write=ok || echo write=refused
        cat \"$R/etc/edited\" 2>/dev/null
        unit
        echo mnt-after-unit=$(mntid \"$R/etc\")
        cp \"$S/images/added.raw\" \"$R/var/lib/confexts/added.raw\"
        unit
        echo mnt-after-change=$(mntid \"$R/etc\")
        echo confexts=$(cat \"$R/etc/.systemd-confext/confexts\")
        echo probe > \"$R/etc/probe2\" 2>/dev/null && echo write-after-change=ok || echo write-after-change=refused
        chroot \"$R\" systemd-confext unmerge; echo unmerge-rc=$?
        echo overlays=$(grep -c \" $R/etc \" /proc/self/mountinfo)
        test -e \"$R/var/lib/extensions.mutable/.systemd-etc-workdir\" -o -e \"$R/.systemd-etc-workdir\" && echo workdir=left || echo workdir=gone"
    );
    s.sh_env(&script, &[("L", &sysroot(suite)), ("COPY", copy)])
}

/// What every mode shares after boot: merged, refreshed on a change with one more confext,
/// unmerged by systemd-confext with its work directory gone; `writable` is the mode's /etc.
fn assert_confext_after_boot(out: &Output, writable: bool) {
    let w = if writable { "ok" } else { "refused" };
    assert_eq!(value(out, "merge-rc"), "0", "{}", out.all());
    assert!(out.stdout.contains("/etc      cdir       "), "systemd-confext status lists ours:\n{}", out.all());
    assert_eq!(value(out, "write"), w, "{}", out.all());
    assert!(!before(out, "mnt-after-unit=").contains("Unmerged"), "{}", out.all());
    assert_eq!(value(out, "mnt-after-unit"), value(out, "mnt-merged"), "{}", out.all());
    assert_ne!(value(out, "mnt-after-change"), value(out, "mnt-merged"), "{}", out.all());
    assert_eq!(value(out, "confexts"), "added cdir site", "{}", out.all());
    assert_eq!(value(out, "write-after-change"), w, "the refresh keeps the mode:\n{}", out.all());
    assert_eq!((value(out, "unmerge-rc"), value(out, "overlays")), ("0", "0"), "{}", out.all());
    assert_eq!(value(out, "workdir"), "gone", "{}", out.all());
}

/// systemd 262 takes our merge of /etc for its own and skips the refresh itself, in every mode.
fn confext_262(setup: Setup, writable: bool) -> Output {
    let out = confext_after_boot("forky", setup);
    let unit = before(&out, "mnt-after-unit=");
    assert!(unit.contains("Skipping extension refresh because no change was found"), "{}", out.all());
    assert!(!out.stdout.contains("condition-rc"), "{}", out.all());
    assert_confext_after_boot(&out, writable);
    out
}

#[test]
fn systemd_262_skips_the_confext_refresh_itself_read_only() {
    let out = confext_262(DEFAULT, false);
    assert!(out.stdout.contains("class confext\ncomplete yes\nmode no own\n"), "{}", out.all());
}

#[test]
fn systemd_262_skips_the_confext_refresh_itself_ephemeral() {
    confext_262(Setup { config: Some("ephemeral"), ..DEFAULT }, true);
}

#[test]
fn systemd_262_skips_the_confext_refresh_itself_auto_with_etc_as_upper() {
    let out = confext_262(Setup { config: Some("auto"), link: true, ..DEFAULT }, true);
    // The host's /etc was the upper: the probe is in it after the unmerge.
    assert!(!out.stdout.contains("workdir=left"), "{}", out.all());
}

#[test]
fn systemd_262_skips_the_confext_refresh_itself_yes() {
    confext_262(Setup { config: Some("yes"), ..DEFAULT }, true);
}

#[test]
fn systemd_262_skips_the_confext_refresh_itself_import() {
    let out = confext_262(Setup { config: Some("import"), import: true, ..DEFAULT }, false);
    assert!(out.stdout.contains("\nearlier\n"), "{}", out.all());
}

#[test]
fn systemd_262_skips_the_confext_refresh_itself_mode_from_the_environment() {
    confext_262(Setup { env: Some("ephemeral-import"), import: true, ..DEFAULT }, true);
}

/// systemd 257 always merges again; our condition leaves an unchanged merge alone, and a
/// changed set is refreshed with the mode the initrd used (from confext.conf, which 257 does not
/// read, on its command line).
fn confext_257(setup: Setup, writable: bool) -> Output {
    let out = confext_after_boot("trixie", setup);
    let conditions: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("condition-rc=")).collect();
    assert_eq!(conditions, ["condition-rc=1", "condition-rc=0"], "{}", out.all());
    assert!(
        out.stderr.contains("not refreshing: the 2 image(s) are unchanged since the initrd merged them"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains("systemd-confext may refresh: the images changed since the initrd (added added)"),
        "{}",
        out.all()
    );
    assert_confext_after_boot(&out, writable);
    out
}

#[test]
fn systemd_257_leaves_the_confext_merge_alone_read_only() {
    confext_257(DEFAULT, false);
}

#[test]
fn systemd_257_gets_the_mode_of_confext_conf_on_its_command_line() {
    let out = confext_257(Setup { config: Some("ephemeral"), ..DEFAULT }, true);
    assert!(out.stdout.contains("mode ephemeral argv\n"), "{}", out.all());
    assert!(
        out.stderr.contains(
            "Mutable=ephemeral from /etc/systemd/confext.conf: the root's systemd-confext does not read confext.conf"
        ),
        "{}",
        out.all()
    );
}

#[test]
fn systemd_257_leaves_the_confext_merge_alone_auto_with_etc_as_upper() {
    confext_257(Setup { config: Some("auto"), link: true, ..DEFAULT }, true);
}

#[test]
fn systemd_257_leaves_the_confext_merge_alone_yes_from_the_environment() {
    let out = confext_257(Setup { env: Some("yes"), ..DEFAULT }, true);
    assert!(out.stdout.contains("mode yes own\n"), "{}", out.all());
}
