//! Configuration extensions (confexts) onto /etc as a user sees them: real images, a scratch
//! sysroot, a private mount namespace; each of systemd-confext's mutable modes, and the refusals.

mod common;

use common::*;

/// What is mounted on and below the sysroot's /etc: `TARGET SOURCE OPTIONS` lines.
const ETC_MOUNTS: &str =
    "echo '--mounts'; findmnt -rn -o TARGET,SOURCE,OPTIONS | awk -v s=\"$S/etc\" 'index($1, s) == 1'; echo '--end'";

fn etc_mounts(out: &Output) -> Vec<String> {
    let s = out.stdout.split("--mounts\n").nth(1).and_then(|r| r.split("--end").next()).unwrap_or("");
    s.lines().map(str::to_owned).collect()
}

/// The options of the mount on /etc itself.
fn etc_options(s: &Scratch, out: &Output) -> String {
    let etc = format!("{}/etc ", s.sysroot.display());
    let line = etc_mounts(out)
        .into_iter()
        .find(|l| l.starts_with(&etc))
        .unwrap_or_else(|| panic!("/etc is not mounted:\n{}", out.all()));
    line.split(' ').nth(2).unwrap_or_default().to_string()
}

fn value<'a>(out: &'a Output, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    out.stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key}= in:\n{}", out.all()))
}

/// merge, then `after`; `args` go to merge.
fn merge_with(s: &Scratch, args: &str, after: &str) -> Output {
    s.sh(&format!("\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" {args}; echo \"rc=$?\"\n{after}"))
}

const MUTABLE: &str = "var/lib/extensions.mutable/etc";
const WORK: &str = "var/lib/extensions.mutable/.systemd-etc-workdir";

#[test]
fn confexts_merge_read_only_onto_etc_in_systemds_format() {
    let s = Scratch::new();
    s.machine_id();
    std::fs::write(s.path("etc/hostname"), "base\n").unwrap();
    let a = s.confext_tree("site-1", GOOD, &[("etc/containers/policy.json", "{1}\n"), ("etc/site", "1\n")]);
    s.squashfs(&a, "var/lib/confexts/site-1.raw");
    let b = s.confext_tree("site-10", GOOD, &[("etc/site", "10\n")]);
    s.erofs(&b, "usr/lib/confexts/site-10.confext.raw");
    s.confext_tree("dir", GOOD, &[("etc/dir.conf", "dir\n")]);
    std::fs::rename(s.dir.join("trees/dir"), s.path("var/lib/confexts/dir.confext")).unwrap();
    let out = merge_with(
        &s,
        "",
        &format!(
            "cat \"$S/etc/site\" \"$S/etc/hostname\" \"$S/etc/containers/policy.json\" \"$S/etc/dir.conf\"\n\
             cat \"$S/etc/.systemd-confext/confexts\"; ls \"$S/etc/.systemd-confext\"\n\
             echo dev=$(cat \"$S/etc/.systemd-confext/dev\") stat=$(stat -c '%Hd:%Ld' \"$S/etc\")\n\
             echo x > \"$S/etc/probe\" 2>/dev/null && echo write=ok || echo write=refused\n\
             \"$B\" status --sysroot \"$S\"; \"$B\" status --sysroot \"$S\" --json; echo\n{ETC_MOUNTS}\n\
             \"$B\" unmerge --sysroot \"$S\"; echo after=$(findmnt -rn \"$S/etc\" | wc -l) $(ls \"$S/etc\")"
        ),
    );
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    // Version order: site-10 above site-1; the host below them all.
    assert!(out.stdout.contains("10\nbase\n{1}\ndir\ndir\nsite-1\nsite-10\n"), "{}", out.all());
    assert!(
        out.stdout.contains("\nbacking\nconfexts\ndev\norigin\n"),
        "no work_dir for a read-only merge:\n{}",
        out.all()
    );
    let devline = out.stdout.lines().find(|l| l.starts_with("dev=")).unwrap();
    let (dev, stat) = devline.trim_start_matches("dev=").split_once(" stat=").unwrap();
    assert_eq!(dev, stat, "the dev file must hold the overlay's own st_dev");
    assert_eq!(value(&out, "write"), "refused", "{}", out.all());
    // systemd-confext's flags and mount source; nothing but the overlay is mounted.
    let mounts = etc_mounts(&out);
    assert_eq!(mounts.len(), 1, "{}", out.all());
    assert!(
        mounts[0].starts_with(&format!("{}/etc confext ro,nosuid,nodev,noexec,", s.sysroot.display())),
        "{mounts:?}"
    );
    assert!(out.stdout.contains("/etc\tdir site-1 site-10\tsince 20"), "{}", out.all());
    assert!(out.stdout.contains("\tmutable no, read-only\n"), "{}", out.all());
    assert!(
        out.stdout.contains(r#"{"hierarchy":"/etc","extensions":["dir","site-1","site-10"],"since":"#),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains(r#""mode":"no","read_only":true}"#), "{}", out.all());
    assert_eq!(value(&out, "after"), "0 hostname machine-id os-release", "{}", out.all());
    let lines = [
        "merged confext dir from /var/lib/confexts/dir.confext (directory",
        "merged confext site-10 from /usr/lib/confexts/site-10.confext.raw (erofs, ",
        "/etc: overlay of site-10, site-1, dir (top first) over the host, read-only (mutable mode no, the default), ro,nosuid,nodev,noexec",
        // Nobody chose the mode: one line says what that means and how to choose.
        "/etc will be read-only: mutable mode no is systemd's default, nobody chose it; nothing can write to /etc until the next boot",
    ];
    for l in lines {
        assert!(out.stderr.contains(l), "{l}\n{}", out.stderr);
    }
    let report = s.report();
    assert!(
        report.contains(r#""class":"confext","name":"site-10","path":"/usr/lib/confexts/site-10.confext.raw""#),
        "{report}"
    );
    assert!(
        report.contains(r#""path":"/etc","class":"confext","state":"ready","layers":["site-10","site-1","dir"],"mode":"no","mode_source":"default","read_only":true"#),
        "{report}"
    );
}

#[test]
fn no_read_only_etc_without_a_machine_id_unless_chosen() {
    let s = Scratch::new();
    s.confext("site", GOOD);
    // The base has no /etc/machine-id: by default nothing is merged, and the reason says why.
    let out = merge_with(&s, "", ETC_MOUNTS);
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    assert!(etc_mounts(&out).is_empty(), "{}", out.all());
    let why = "skipped confext site (/var/lib/confexts/site.raw): /etc is not merged: mutable mode no, the default, \
               would leave /etc read-only and without /etc/machine-id, and PID 1 has no /etc/machine-id and cannot write one";
    assert!(out.stderr.contains(why), "{}", out.stderr);
    assert!(out.stderr.contains("/etc: not merged: mutable mode no, the default"), "{}", out.stderr);
    // A mode chosen explicitly is obeyed, as systemd obeys it, with a warning.
    let out = merge_with(&s, "--mutable no", ETC_MOUNTS);
    assert_eq!(etc_mounts(&out).len(), 1, "{}", out.all());
    assert!(
        out.stderr.contains("/etc will be read-only (mutable mode no from --mutable) and has no /etc/machine-id"),
        "{}",
        out.stderr
    );
    // A confext that takes the base's machine-id away (a whiteout) counts as none.
    s.machine_id();
    let wo = s.confext_tree("wo", GOOD, &[]);
    run_ok(std::process::Command::new("mknod").arg(wo.join("etc/machine-id")).args(["c", "0", "0"]));
    s.squashfs(&wo, "var/lib/confexts/wo.raw");
    let out = merge_with(&s, "", ETC_MOUNTS);
    assert!(etc_mounts(&out).is_empty(), "{}", out.all());
    assert!(
        out.stderr.contains("skipped confext wo (/var/lib/confexts/wo.raw): /etc is not merged: mutable mode no"),
        "{}",
        out.stderr
    );
    // A writable /etc needs none of this.
    let out =
        merge_with(&s, "--mutable ephemeral", &format!("test -e \"$S/etc/machine-id\" || echo gone=yes\n{ETC_MOUNTS}"));
    assert_eq!(etc_mounts(&out).len(), 2, "{}", out.all());
    assert_eq!(value(&out, "gone"), "yes", "{}", out.all());
}

#[test]
fn mutable_yes_writes_to_the_mutable_directory_and_unmerge_removes_its_work_directory() {
    let s = Scratch::new();
    s.machine_id();
    s.confext("site", GOOD);
    std::fs::set_permissions(s.path("etc"), std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
    let out = merge_with(
        &s,
        "--mutable yes",
        &format!(
            "echo written > \"$S/etc/probe\" && echo write=ok\n\
             echo mutable=$(cat \"$S/{MUTABLE}/probe\") mode=$(stat -c %a \"$S/{MUTABLE}\") base=$(ls \"$S/etc/../etc\" | grep -c probe)\n\
             echo work_dir=$(cat \"$S/etc/.systemd-confext/work_dir\")\n\
             touch \"$S/etc/.systemd-confext/x\" 2>/dev/null && echo meta=writable || echo meta=read-only\n{ETC_MOUNTS}\n\
             \"$B\" unmerge --sysroot \"$S\"\n\
             test -e \"$S/{WORK}\" && echo workdir=left || echo workdir=removed\n\
             echo kept=$(cat \"$S/{MUTABLE}/probe\") base=$(test -e \"$S/etc/probe\" && echo has-probe || echo clean)"
        ),
    );
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    assert_eq!(value(&out, "write"), "ok", "{}", out.all());
    // Created with /etc's mode, as systemd 262 creates it.
    assert!(out.stdout.contains("mutable=written mode=751 "), "{}", out.all());
    assert_eq!(value(&out, "work_dir"), WORK, "{}", out.all());
    assert_eq!(value(&out, "meta"), "read-only", "{}", out.all());
    let opts = etc_options(&s, &out);
    assert!(opts.starts_with("rw,nosuid,nodev,noexec,noatime,"), "{opts}");
    assert!(opts.contains(",redirect_dir=on"), "{opts}");
    let meta = format!("{}/etc/.systemd-confext confext[/.systemd-confext] ro,", s.sysroot.display());
    assert!(etc_mounts(&out).iter().any(|l| l.starts_with(&meta)), "{}", out.all());
    assert_eq!(value(&out, "workdir"), "removed", "{}", out.all());
    assert!(out.stdout.contains("kept=written base=clean"), "{}", out.all());
    assert!(
        out.stderr.contains("writable: writes go to /var/lib/extensions.mutable/etc (mutable mode yes from --mutable), rw,nosuid,nodev,noexec,noatime"),
        "{}",
        out.stderr
    );
}

#[test]
fn mutable_auto_with_the_mutable_directory_a_link_to_etc_writes_to_etc_itself() {
    let s = Scratch::new();
    s.machine_id();
    std::fs::write(s.path("etc/shared"), "host\n").unwrap();
    let t = s.confext_tree("site", GOOD, &[("etc/shared", "confext\n"), ("etc/only-confext", "c\n")]);
    s.squashfs(&t, "var/lib/confexts/site.raw");
    // Without the directory, auto is read-only.
    let out = merge_with(
        &s,
        "--mutable auto",
        &format!("echo x > \"$S/etc/probe\" 2>/dev/null || echo write=refused\n{ETC_MOUNTS}"),
    );
    assert_eq!(value(&out, "write"), "refused", "{}", out.all());
    assert!(etc_options(&s, &out).starts_with("ro,"), "{}", out.all());
    // Flatcar's layout: the mutable directory is /etc itself, so the host's /etc is the upper.
    std::fs::create_dir_all(s.path("var/lib/extensions.mutable")).unwrap();
    std::os::unix::fs::symlink("/etc", s.path(MUTABLE)).unwrap();
    let out = merge_with(
        &s,
        "--mutable auto",
        &format!(
            "cat \"$S/etc/shared\" \"$S/etc/only-confext\"; echo new > \"$S/etc/probe\" && echo write=ok\n\
             echo work_dir=$(cat \"$S/etc/.systemd-confext/work_dir\"); test -d \"$S/.systemd-etc-workdir\" && echo workdir=there\n\
             grep -o '\"/etc\" : \"[^\"]*\"' \"$S/etc/.systemd-confext/origin\"\n{ETC_MOUNTS}\n\
             \"$B\" unmerge --sysroot \"$S\"; echo after=$(cat \"$S/etc/probe\") $(test -e \"$S/.systemd-etc-workdir\" || echo workdir-removed)"
        ),
    );
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    // The host wins over the confext: it is the upper.
    assert!(out.stdout.contains("host\nc\n"), "{}", out.all());
    assert_eq!(value(&out, "write"), "ok", "{}", out.all());
    assert_eq!(value(&out, "work_dir"), ".systemd-etc-workdir", "{}", out.all());
    assert!(out.stdout.contains("\"/etc\" : \"/etc\""), "{}", out.all());
    assert_eq!(value(&out, "after"), "new workdir-removed", "{}", out.all());
    assert!(
        out.stderr.contains("with the host's /etc as the upper, writable: writes go to /etc itself"),
        "{}",
        out.stderr
    );
}

#[test]
fn mutable_import_shows_earlier_edits_read_only() {
    let s = Scratch::new();
    s.machine_id();
    s.confext("site", GOOD);
    std::fs::create_dir_all(s.path(MUTABLE)).unwrap();
    std::fs::write(s.path(&format!("{MUTABLE}/edited")), "earlier edit\n").unwrap();
    std::fs::write(s.path(&format!("{MUTABLE}/site.conf")), "edited site\n").unwrap();
    let out = merge_with(
        &s,
        "--mutable import",
        &format!("cat \"$S/etc/edited\" \"$S/etc/site.conf\"; echo x > \"$S/etc/probe\" 2>/dev/null || echo write=refused\n{ETC_MOUNTS}"),
    );
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    // Imported right below META: above the confexts.
    assert!(out.stdout.contains("earlier edit\nedited site\n"), "{}", out.all());
    assert_eq!(value(&out, "write"), "refused", "{}", out.all());
    assert!(etc_options(&s, &out).starts_with("ro,nosuid,nodev,noexec,"), "{}", out.all());
    // Imported when it is /etc itself would loop: systemd refuses (ELOOP), so do we.
    std::fs::remove_dir_all(s.path(MUTABLE)).unwrap();
    std::os::unix::fs::symlink("../../../etc", s.path(MUTABLE)).unwrap();
    let out = merge_with(&s, "--mutable import", ETC_MOUNTS);
    assert!(etc_mounts(&out).is_empty(), "{}", out.all());
    assert!(out.stderr.contains("/etc is not merged: /var/lib/extensions.mutable/etc is /etc itself, which cannot be imported below /etc (systemd: ELOOP)"), "{}", out.stderr);
}

#[test]
fn mutable_ephemeral_writes_are_gone_after_unmerge() {
    let s = Scratch::new();
    s.machine_id();
    s.confext("site", GOOD);
    std::fs::create_dir_all(s.path(MUTABLE)).unwrap();
    std::fs::write(s.path(&format!("{MUTABLE}/edited")), "earlier edit\n").unwrap();
    for mode in ["ephemeral", "ephemeral-import"] {
        let out = merge_with(
            &s,
            &format!("--mutable {mode}"),
            &format!(
                "echo new > \"$S/etc/probe\" && echo write=ok; cat \"$S/etc/edited\" 2>/dev/null || echo edited=hidden\n\
                 ls \"$S/etc/.systemd-confext\" | tr '\\n' ' '; echo\n\
                 grep -o '\"/etc\" : \"[^\"]*\"' \"$S/etc/.systemd-confext/origin\"\n{ETC_MOUNTS}\n\
                 \"$B\" unmerge --sysroot \"$S\"; echo after=$(ls \"$S/etc\" | tr '\\n' ' '); echo mutable=$(ls \"$S/{MUTABLE}\")"
            ),
        );
        assert_eq!(value(&out, "rc"), "0", "{mode}: {}", out.all());
        assert_eq!(value(&out, "write"), "ok", "{mode}: {}", out.all());
        match mode {
            "ephemeral" => assert_eq!(value(&out, "edited"), "hidden", "{}", out.all()),
            _ => assert!(out.stdout.contains("earlier edit\n"), "{}", out.all()),
        }
        assert!(out.stdout.contains("backing confexts dev origin \n"), "no work_dir: {}", out.all());
        assert!(out.stdout.contains("\"/etc\" : \"/run/systemd/sysext/etc\""), "{}", out.all());
        assert!(etc_options(&s, &out).starts_with("rw,nosuid,nodev,noexec,noatime,"), "{}", out.all());
        // The write went to the tmpfs: gone with the merge, the base and M untouched.
        assert_eq!(value(&out, "after"), "machine-id os-release", "{mode}: {}", out.all());
        assert_eq!(value(&out, "mutable"), "edited", "{mode}: {}", out.all());
    }
}

#[test]
fn the_mode_is_chosen_as_systemd_chooses_it() {
    let s = Scratch::new();
    s.machine_id();
    s.confext("site", GOOD);
    let mode = |out: &Output| {
        let r = out.stdout.clone();
        let at = r.find("\"mode\":").unwrap_or_else(|| panic!("{}", out.all()));
        r[at..].split(',').take(2).collect::<Vec<_>>().join(",")
    };
    let plan =
        |env: &str| s.sh(&format!("{env} \"$B\" plan --json --sysroot \"$S\" --cmdline \"$C\" --run \"$D/run\""));
    std::fs::create_dir_all(s.path("etc/systemd/confext.conf.d")).unwrap();
    std::fs::write(s.path("etc/systemd/confext.conf"), "[ConfExt]\nMutable=import\n").unwrap();
    assert_eq!(mode(&plan("")), r#""mode":"import","mode_source":"/etc/systemd/confext.conf""#);
    // A drop-in wins over the main file; one of the same name in an earlier directory hides it.
    std::fs::create_dir_all(s.path("usr/lib/systemd/confext.conf.d")).unwrap();
    std::fs::write(s.path("usr/lib/systemd/confext.conf.d/50-vendor.conf"), "[ConfExt]\nMutable=ephemeral\n").unwrap();
    assert_eq!(mode(&plan("")), r#""mode":"ephemeral","mode_source":"/usr/lib/systemd/confext.conf.d/50-vendor.conf""#);
    std::os::unix::fs::symlink("/dev/null", s.path("etc/systemd/confext.conf.d/50-vendor.conf")).unwrap();
    assert_eq!(mode(&plan("")), r#""mode":"import","mode_source":"/etc/systemd/confext.conf""#);
    // The initrd's /run (the booted system's) counts too.
    std::fs::create_dir_all(s.dir.join("run/systemd/confext.conf.d")).unwrap();
    std::fs::write(s.dir.join("run/systemd/confext.conf.d/x.conf"), "[ConfExt]\nMutable=yes\n").unwrap();
    let out = plan("");
    assert!(
        mode(&out).starts_with(r#""mode":"yes","mode_source":""#)
            && mode(&out).ends_with(r#"/run/systemd/confext.conf.d/x.conf""#),
        "{}",
        mode(&out)
    );
    // The kernel command line's systemd.setenv= (for initrds without PID 1), the environment, argv.
    s.cmdline("root=/dev/vda1 systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=auto");
    assert_eq!(mode(&plan("")), r#""mode":"auto","mode_source":"systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE""#);
    assert_eq!(
        mode(&plan("SYSTEMD_CONFEXT_MUTABLE_MODE=no")),
        r#""mode":"no","mode_source":"$SYSTEMD_CONFEXT_MUTABLE_MODE""#
    );
    let out = s.sh("SYSTEMD_CONFEXT_MUTABLE_MODE=no \"$B\" plan --json --mutable ephemeral-import --sysroot \"$S\" --cmdline \"$C\"");
    assert_eq!(mode(&out), r#""mode":"ephemeral-import","mode_source":"--mutable""#);
    // A value systemd cannot parse is skipped with a warning, as systemd skips it.
    let out = s.sh("SYSTEMD_CONFEXT_MUTABLE_MODE=sometimes \"$B\" plan --sysroot \"$S\" --cmdline root=/dev/vda1 --run \"$D/run\" 2>&1");
    assert!(
        out.stdout.contains("ignoring mutable mode \"sometimes\" from $SYSTEMD_CONFEXT_MUTABLE_MODE"),
        "{}",
        out.all()
    );
    // A file systemd cannot parse makes it ignore the whole configuration.
    std::fs::write(s.path("etc/systemd/confext.conf"), "[ConfExt\nMutable=yes\n").unwrap();
    s.cmdline("root=/dev/vda1");
    std::fs::remove_file(s.dir.join("run/systemd/confext.conf.d/x.conf")).unwrap();
    let out = plan("");
    assert_eq!(mode(&out), r#""mode":"no","mode_source":"default""#);
    assert!(
        out.stdout.contains(
            "ignoring the confext configuration, as systemd does: /etc/systemd/confext.conf:1: invalid section header"
        ),
        "{}",
        out.all()
    );
    // Unsupported: the overlay options variable is named.
    let out = s.sh("SYSTEMD_CONFEXT_OVERLAYFS_MOUNT_OPTIONS=x \"$B\" plan --sysroot \"$S\" --cmdline \"$C\"");
    assert!(
        out.stdout.contains("SYSTEMD_CONFEXT_OVERLAYFS_MOUNT_OPTIONS is set: initrd-sysext does not honour it"),
        "{}",
        out.all()
    );
}

#[test]
fn modes_systemd_cannot_honour_here_leave_etc_with_the_reason() {
    let s = Scratch::new();
    s.machine_id();
    s.confext("site", GOOD);
    // The root is mounted read-only (`ro` on the kernel command line): no persistent upper.
    let out = s.sh(&format!(
        "mount --bind \"$S\" \"$S\" && mount -o remount,bind,ro \"$S\"\n\
         \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$D/report.json\" --mutable yes; echo rc=$?\n{ETC_MOUNTS}"
    ));
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    assert!(etc_mounts(&out).is_empty(), "{}", out.all());
    assert!(
        out.stderr.contains("/etc is not merged: mutable mode yes needs /var/lib/extensions.mutable/etc created, and its file system is read-only (the sysroot is mounted ro: add rw to the kernel command line)"),
        "{}",
        out.stderr
    );
    // A mutable directory whose mode differs from /etc's: systemd refuses it (EINVAL).
    std::fs::create_dir_all(s.path(MUTABLE)).unwrap();
    std::fs::set_permissions(s.path(MUTABLE), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = merge_with(&s, "--mutable auto", ETC_MOUNTS);
    assert!(etc_mounts(&out).is_empty(), "{}", out.all());
    assert!(out.stderr.contains("/var/lib/extensions.mutable/etc has mode 0700, /etc has 0755"), "{}", out.stderr);
    // A separate /var the initrd has not mounted: the booted system will see another M.
    std::fs::set_permissions(s.path(MUTABLE), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(s.path("etc/fstab"), "LABEL=var /var ext4 defaults 0 2\n").unwrap();
    let out = merge_with(&s, "--mutable yes", ETC_MOUNTS);
    assert!(etc_mounts(&out).is_empty(), "{}", out.all());
    assert!(out.stderr.contains("mutable mode yes needs /var/lib/extensions.mutable/etc, but /var is a separate file system (LABEL=var in /etc/fstab) that is not mounted in the initrd: add x-initrd.mount"), "{}", out.stderr);
    // Ephemeral does not need it.
    let out = merge_with(&s, "--mutable ephemeral", ETC_MOUNTS);
    assert_eq!(etc_mounts(&out).len(), 2, "{}", out.all());
}

#[test]
fn confexts_follow_systemd_confexts_rules_and_switches() {
    let s = Scratch::new();
    s.machine_id();
    s.image("podman", GOOD);
    s.confext("good", GOOD);
    s.confext("scope", "ID=debian\nVERSION_ID=13\nCONFEXT_SCOPE=initrd\n");
    // SYSEXT_SCOPE is a sysext's key: a confext ignores it.
    s.confext("sysext-scope", "ID=debian\nVERSION_ID=13\nSYSEXT_SCOPE=initrd\n");
    // A sysext put where confexts go has no confext release file.
    let sysext = s.ext_tree("lost", GOOD);
    s.squashfs(&sysext, "var/lib/confexts/lost.raw");
    let os = s.confext_tree("os", GOOD, &[("usr/lib/os-release", "ID=evil\n")]);
    s.squashfs(&os, "var/lib/confexts/os.raw");
    // An empty directory earlier in the search path masks an image of its name.
    s.confext("masked", GOOD);
    std::fs::create_dir_all(s.path("run/confexts/masked")).unwrap();
    // x.sysext.raw among confexts keeps its .sysext: only the class's own suffix goes.
    let named = s.confext_tree("x.sysext", GOOD, &[("etc/x", "x")]);
    s.squashfs(&named, "var/lib/confexts/x.sysext.raw");
    let out = s.plan();
    assert_merge(&out, "good");
    assert_merge(&out, "sysext-scope");
    assert_merge(&out, "x.sysext");
    assert_merge(&out, "podman");
    assert_skip(&out, "scope", "CONFEXT_SCOPE \"initrd\" does not include \"system\"");
    assert_skip(&out, "lost", "no etc/extension-release.d/extension-release.lost");
    assert_skip(&out, "os", "contains usr/lib/os-release, which only the base OS may carry");
    assert!(
        out.stdout.contains("masked\t/var/lib/confexts/masked.raw\t-\tskip: masked by /run/confexts/masked"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains(
            "\n/etc: x.sysext, sysext-scope, good (top first), over the host, read-only (mutable mode no, the default)"
        ),
        "{}",
        out.all()
    );
    // Selection by name, and the switches: ours and upstream's turn confexts off, not sysexts.
    s.cmdline("rd.confext=good");
    let out = s.plan();
    assert_merge(&out, "good");
    assert_skip(&out, "x.sysext", "not listed in rd.confext=good");
    for off in ["rd.confext=0", "rd.systemd.confext=0", "systemd.confext=0"] {
        s.cmdline(off);
        let out = merge_with(&s, "", ETC_MOUNTS);
        assert!(etc_mounts(&out).is_empty(), "{off}: {}", out.all());
        assert!(
            out.stderr
                .contains(&format!("skipped confext good (/var/lib/confexts/good.raw): merging is disabled by {off}")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("merged podman from"), "{off}: {}", out.stderr);
    }
    s.cmdline("rd.sysext=0");
    let out = merge_with(&s, "", ETC_MOUNTS);
    assert_eq!(etc_mounts(&out).len(), 1, "{}", out.all());
    // CONFEXT_LEVEL of the host's os-release decides over VERSION_ID when both have one.
    std::fs::write(s.path("usr/lib/os-release"), "ID=debian\nVERSION_ID=13\nCONFEXT_LEVEL=2\n").unwrap();
    s.cmdline("root=/dev/vda1");
    s.confext("level", "ID=debian\nCONFEXT_LEVEL=3\n");
    assert_skip(&s.plan(), "level", "CONFEXT_LEVEL 3 does not match host 2");
    // The same policy as for sysexts: an unsigned confext has no dm-verity data.
    s.cmdline("rd.sysext.policy=verity");
    assert_skip(&s.plan(), "good", "has no dm-verity data (policy verity)");
}

#[test]
fn files_a_confext_replaces_are_named_and_merged_as_systemd_merges_them() {
    let s = Scratch::new();
    s.machine_id();
    std::fs::write(s.path("etc/fstab"), "LABEL=host /mnt/host tmpfs defaults 0 0\n").unwrap();
    std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", s.path("etc/localtime")).unwrap();
    let t = s.confext_tree(
        "shadow",
        GOOD,
        &[
            ("etc/machine-id", ""),
            ("etc/fstab", "LABEL=c /mnt/confext tmpfs defaults 0 0\n"),
            ("etc/localtime", "a file\n"),
        ],
    );
    s.squashfs(&t, "var/lib/confexts/shadow.raw");
    let out = merge_with(
        &s,
        "",
        &format!("cat \"$S/etc/fstab\" \"$S/etc/localtime\"; wc -c < \"$S/etc/machine-id\"\n{ETC_MOUNTS}"),
    );
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    assert!(out.stdout.contains("LABEL=c /mnt/confext tmpfs defaults 0 0\na file\n0\n"), "{}", out.all());
    for w in [
        "confext shadow: not signed: merged because the policy is any; /etc/localtime is a file in the image and would replace the base's symlink",
        "replaces the base's /etc/machine-id: PID 1 takes the machine ID from it",
        "replaces the base's /etc/fstab: the initrd has mounted by the base's already; it governs the booted system's mounts",
        // An empty machine-id on a read-only /etc: the consequence is named.
        "the machine ID is transient (a new one every boot, from /run)",
    ] {
        assert!(out.stderr.contains(w), "{w}\n{}", out.stderr);
    }
}

/// A sysext may ship confexts in /usr/lib/confexts: merged after it, read through the merged
/// /usr (a squashfs one through a loop device without direct I/O, which overlayfs over
/// squashfs would accept and then fail; an erofs one straight from the file).
#[test]
fn a_confext_a_sysext_ships_is_merged_after_it() {
    let s = Scratch::new();
    s.machine_id();
    let sysext =
        s.tree("vendor", &[("usr/lib/extension-release.d/extension-release.vendor", GOOD), ("usr/bin/vendor", "v\n")]);
    std::fs::create_dir_all(sysext.join("usr/lib/confexts")).unwrap();
    for (name, erofs) in [("vendor-etc", true), ("vendor-sq", false)] {
        let file = format!("etc/{name}.conf");
        let c = s.confext_tree(name, GOOD, &[(&file, "from the sysext's confext\n")]);
        let dest = format!("trees/{name}.raw");
        if erofs {
            s.erofs(&c, &dest)
        } else {
            s.squashfs(&c, &dest)
        }
        std::fs::rename(s.path(&dest), sysext.join(format!("usr/lib/confexts/{name}.raw"))).unwrap();
    }
    s.squashfs(&sysext, "var/lib/extensions/vendor.raw");
    let out = merge_with(
        &s,
        "",
        "cat \"$S/etc/vendor-etc.conf\" \"$S/etc/vendor-sq.conf\"; cat \"$S/usr/.systemd-sysext/extensions\" \"$S/etc/.systemd-confext/confexts\"",
    );
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    assert!(
        out.stdout.contains("from the sysext's confext\nfrom the sysext's confext\nvendor\nvendor-etc\nvendor-sq\n"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains("merged confext vendor-etc from /usr/lib/confexts/vendor-etc.raw (erofs"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("merged confext vendor-sq from /usr/lib/confexts/vendor-sq.raw (squashfs"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failure_after_attaching_etc_is_rolled_back_with_its_state_mount() {
    let s = Scratch::new();
    s.machine_id();
    s.confext("site", GOOD);
    s.confext("other", GOOD);
    let faults = "INITRD_SYSEXT_TEST_FAULTS=attach=etc";
    let out = s.sh(&format!(
        "{faults} \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" --mutable yes; echo rc=$?\n{ETC_MOUNTS}\n\
         ls -A \"$S/{MUTABLE}\""
    ));
    assert_eq!(value(&out, "rc"), "1", "{}", out.all());
    assert!(etc_mounts(&out).is_empty(), "{}", out.all());
    assert!(
        out.stderr.contains("/etc: merge failed, left untouched: injected failure after mounting the overlay on"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
    // One confext the overlay refuses costs only itself.
    let out = s.sh(&format!(
        "INITRD_SYSEXT_TEST_FAULTS=overlay=other \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" --mutable ephemeral; echo rc=$?\n\
         cat \"$S/etc/.systemd-confext/confexts\"\n{ETC_MOUNTS}"
    ));
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    assert!(out.stdout.contains("\nsite\n--mounts"), "{}", out.all());
    assert!(
        out.stderr.contains("skipped confext other (/var/lib/confexts/other.raw): overlay refused it"),
        "{}",
        out.stderr
    );
}

#[test]
fn submounts_of_etc_stay_visible_and_come_back_after_unmerge() {
    let s = Scratch::new();
    s.machine_id();
    s.confext("site", GOOD);
    std::fs::create_dir_all(s.path("etc/sub")).unwrap();
    let out = s.sh(&format!(
        "mount -t tmpfs sub \"$S/etc/sub\" && echo mounted > \"$S/etc/sub/file\"\n\
         \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" --mutable ephemeral; echo rc=$?\n\
         cat \"$S/etc/sub/file\" \"$S/etc/site.conf\"; echo\n\"$B\" unmerge --sysroot \"$S\"\n\
         cat \"$S/etc/sub/file\"; {ETC_MOUNTS}"
    ));
    assert_eq!(value(&out, "rc"), "0", "{}", out.all());
    assert!(
        out.stdout.contains("mounted\nsite\nunmerged ") && out.stdout.contains("/etc\nmounted\n--mounts"),
        "{}",
        out.all()
    );
    let mounts = etc_mounts(&out);
    assert!(
        mounts.len() == 1 && mounts[0].starts_with(&format!("{}/etc/sub sub rw,", s.sysroot.display())),
        "{}",
        out.all()
    );
}
