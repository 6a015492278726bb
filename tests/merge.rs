//! The merge as a user sees it: real images, a scratch sysroot, a private mount namespace.

mod common;

use common::*;

/// The mount table lines (mountinfo) under the sysroot, shown from inside the namespace.
const MOUNTS: &str =
    "echo '--mounts'; findmnt -rn -o TARGET,FSTYPE,SOURCE | awk -v s=\"$S\" 'index($1, s) == 1'; echo '--end'";

fn mounts(out: &Output) -> Vec<String> {
    let s = out.stdout.split("--mounts\n").nth(1).and_then(|r| r.split("--end").next()).unwrap_or("");
    s.lines().map(str::to_owned).collect()
}

#[test]
fn merges_squashfs_and_erofs_in_version_order_in_systemd_format() {
    let s = Scratch::new();
    let a = s.tree(
        "tool-1",
        &[("usr/lib/extension-release.d/extension-release.tool-1", GOOD), ("usr/bin/tool", "from tool-1\n")],
    );
    let b = s.tree(
        "tool-10",
        &[("usr/lib/extension-release.d/extension-release.tool-10", GOOD), ("usr/bin/tool", "from tool-10\n")],
    );
    let c = s.tree(
        "tool-9",
        &[("usr/lib/extension-release.d/extension-release.tool-9", GOOD), ("usr/bin/tool", "from tool-9\n")],
    );
    s.squashfs(&a, "var/lib/extensions/tool-1.raw");
    s.erofs(&b, "var/lib/extensions/tool-10.raw");
    s.squashfs(&c, "etc/extensions/tool-9.raw");
    let out = s.merge_then(&format!(
        "cat \"$S/usr/bin/tool\" \"$S/usr/bin/base-tool\"; cat \"$S/usr/.systemd-sysext/extensions\"; \
         echo dev=$(cat \"$S/usr/.systemd-sysext/dev\") stat=$(stat -c '%Hd:%Ld' \"$S/usr\"); {MOUNTS}"
    ));
    assert!(out.stdout.contains("rc=0"), "{}", out.all());
    // The name that sorts last by version (tool-10, not tool-9) is the top layer.
    assert!(out.stdout.contains("from tool-10\nbase\ntool-1\ntool-9\ntool-10\n"), "{}", out.all());
    let devline = out.stdout.lines().find(|l| l.starts_with("dev=")).unwrap();
    let (dev, stat) = devline.trim_start_matches("dev=").split_once(" stat=").unwrap();
    assert_eq!(dev, stat, "the dev file must hold the overlay's own st_dev");
    // Only the overlay is in the mount table: no staging mounts, no image mounts.
    let m = mounts(&out);
    assert_eq!(m, [format!("{}/usr overlay sysext", s.sysroot.display())], "{}", out.all());
    assert!(out.stderr.contains("merged tool-10 from /var/lib/extensions/tool-10.raw (erofs, "), "{}", out.stderr);
    assert!(out.stderr.contains("/usr: overlay of tool-10, tool-9, tool-1 (top first)"), "{}", out.stderr);
    let report = s.report();
    assert!(
        report.contains(r#""name":"tool-10","path":"/var/lib/extensions/tool-10.raw","target":null,"kind":"erofs""#),
        "{report}"
    );
    assert!(report.contains(r#""layers":["tool-10","tool-9","tool-1"]"#), "{report}");
    // Where the time went: every step, in the order the pipeline runs them, each no earlier than
    // the one before and never with more CPU time than time passed (one thread marks them all).
    let steps = timeline(&report);
    let names: Vec<_> = steps.iter().map(|(step, ..)| step.as_str()).collect();
    assert_eq!(
        names,
        [
            "read",
            "sysext found",
            "sysext opened",
            "sysext planned",
            "sysext built",
            "sysext checked",
            "sysext attached",
            "sysext origin",
            "sysext logged",
            "confext found",
            "confext opened",
            "confext planned",
            "confext logged",
            "done"
        ],
        "{report}"
    );
    assert!(steps.windows(2).all(|w| w[0].1 <= w[1].1), "{report}");
    assert!(steps.iter().all(|(_, us, cpu)| cpu <= us), "{report}");
    // The report's total (from the merge's start) ends with the last step.
    let total_ms: u64 = report.split(r#""ms":"#).last().and_then(|r| r.split(',').next()).unwrap().parse().unwrap();
    assert!(total_ms * 1000 <= steps.last().unwrap().1, "{report}");
}

/// report.json's timeline as (class and step, µs since main, CPU µs).
fn timeline(report: &str) -> Vec<(String, u64, u64)> {
    let field = |s: &str, key: &str| {
        s.split(&format!("\"{key}\":")).nth(1).unwrap().split([',', '}']).next().unwrap().to_owned()
    };
    let steps = report.split(r#""steps":["#).nth(1).expect("the report has a timeline");
    steps
        .split(r#"{"class":"#)
        .skip(1)
        .map(|s| {
            let class = s.split(',').next().unwrap().trim_matches('"');
            let step = field(s, "step").trim_matches('"').to_owned();
            let name = if class == "null" { step } else { format!("{class} {step}") };
            (name, field(s, "us").parse().unwrap(), field(s, "cpu_us").parse().unwrap())
        })
        .collect()
}

#[test]
fn systemd_sysext_recognises_and_unmerges_our_merge() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let out = s.merge_then(&format!(
        "systemd-sysext merge --root=\"$S\" 2>&1; echo sd-merge-rc=$?\n\
         systemd-sysext unmerge --root=\"$S\" 2>&1; echo sd-unmerge-rc=$?\n\
         ls \"$S/usr/bin\"; {MOUNTS}; sleep 0.2; losetup -j \"$S/var/lib/extensions/podman.raw\" | wc -l"
    ));
    assert!(out.stdout.contains("rc=0"), "{}", out.all());
    // systemd-sysext sees its own format: it refuses to merge again and unmerges cleanly.
    assert!(out.stdout.contains("already merged") && out.stdout.contains("sd-merge-rc=1"), "{}", out.all());
    assert!(out.stdout.contains("sd-unmerge-rc=0"), "{}", out.all());
    assert!(
        out.stdout.contains("base-tool\n--mounts\n--end\n0\n"),
        "base back, no mounts, loop device freed:\n{}",
        out.all()
    );
}

#[test]
fn our_unmerge_and_status() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let out = s.merge_then(&format!(
        "\"$B\" status --sysroot \"$S\"; \"$B\" status --sysroot \"$S\" --json; echo\n\
         \"$B\" unmerge --sysroot \"$S\"; \"$B\" status --sysroot \"$S\"; {MOUNTS}; sleep 0.2; losetup -j \"$S/var/lib/extensions/podman.raw\" | wc -l"
    ));
    assert!(out.stdout.contains("/usr\tpodman\tsince 20"), "{}", out.all());
    assert!(out.stdout.contains(r#"{"hierarchy":"/usr","extensions":["podman"],"since":"#), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("unmerged {}/usr\n/usr\tnone\n/opt\tnone\n", s.sysroot.display())),
        "{}",
        out.all()
    );
    assert!(out.stdout.ends_with("--mounts\n--end\n0\n"), "{}", out.all());
}

#[test]
fn running_twice_never_stacks_a_second_overlay() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let out =
        s.merge_then(&format!("\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc2=$?; {MOUNTS}"));
    assert!(out.stdout.contains("rc=0") && out.stdout.contains("rc2=0"), "{}", out.all());
    assert!(
        out.stderr.contains("skipped podman (/var/lib/extensions/podman.raw): already merged into /usr"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("/usr: already merged (podman), left alone"), "{}", out.stderr);
    assert_eq!(mounts(&out).len(), 1, "{}", out.all());
}

#[test]
fn plan_changes_no_mount() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let out = s.sh("before=$(cat /proc/self/mountinfo); \"$B\" plan --sysroot \"$S\" --cmdline \"$C\"; \
                    [ \"$before\" = \"$(cat /proc/self/mountinfo)\" ] && echo unchanged; sleep 0.2; losetup -j \"$S/var/lib/extensions/podman.raw\" | wc -l");
    assert_merge(&out, "podman");
    assert!(
        out.stdout.contains(
            "/usr: podman (top first), then the host\n/opt: nothing to merge\n/etc: nothing to merge\nunchanged\n0\n"
        ),
        "{}",
        out.all()
    );
}

#[test]
fn kernel_command_line() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    s.image("other", GOOD);
    s.cmdline("quiet rd.sysext=podman");
    let out = s.plan();
    assert_merge(&out, "podman");
    assert_skip(&out, "other", "not listed in rd.sysext=podman");
    for off in ["rd.sysext=0", "rd.systemd.sysext=0", "systemd.sysext=no"] {
        s.cmdline(off);
        let out = s.merge_then(MOUNTS);
        assert!(out.stdout.contains("rc=0"), "{}", out.all());
        assert!(mounts(&out).is_empty(), "{off}: {}", out.all());
        assert!(
            out.stderr
                .contains(&format!("skipped podman (/var/lib/extensions/podman.raw): merging is disabled by {off}")),
            "{}",
            out.stderr
        );
    }
    s.cmdline("rd.sysext=,,");
    let out = s.plan();
    assert!(
        out.stdout.contains("note: ignoring rd.sysext=,,: expected 0, 1 or a comma-separated list"),
        "{}",
        out.all()
    );
    assert_merge(&out, "podman");
}

#[test]
fn release_file_problems_are_named_and_the_good_image_still_merges() {
    let s = Scratch::new();
    s.image("good", GOOD);
    let cases: &[(&str, &str, &str)] = &[
        ("wrong-id", "ID=fedora\nVERSION_ID=13\n", "ID fedora does not match host debian"),
        ("wrong-version", "ID=debian\nVERSION_ID=12\n", "VERSION_ID 12 does not match host 13"),
        ("no-version", "ID=debian\n", "extension-release has no VERSION_ID, host has 13"),
        (
            "wrong-arch",
            "ID=debian\nVERSION_ID=13\nARCHITECTURE=arm64\n",
            "ARCHITECTURE arm64 does not match host x86-64",
        ),
        (
            "wrong-scope",
            "ID=debian\nVERSION_ID=13\nSYSEXT_SCOPE=initrd\n",
            "SYSEXT_SCOPE \"initrd\" does not include \"system\"",
        ),
        ("junk", "\u{0}\u{1}ELF\u{0}", "extension-release.junk is binary (contains NUL bytes)"),
        ("comments-only", "# nothing\n", "extension-release.comments-only has no KEY=value lines"),
    ];
    for (name, release, _) in cases {
        s.image(name, release);
    }
    let huge = "#".repeat(70 * 1024);
    s.image("huge", &huge);
    let level = s.ext_tree("level", "ID=debian\nSYSEXT_LEVEL=2\n");
    std::fs::write(s.path("usr/lib/os-release"), "ID=debian\nVERSION_ID=13\nSYSEXT_LEVEL=1\n").unwrap();
    s.squashfs(&level, "var/lib/extensions/level.raw");
    let nofile = s.tree("no-release", &[("usr/bin/x", "x")]);
    s.squashfs(&nofile, "var/lib/extensions/no-release.raw");

    let out = s.merge_then(MOUNTS);
    assert!(out.stdout.contains("rc=0"), "{}", out.all());
    for (name, _, reason) in cases {
        assert!(
            out.stderr.contains(&format!("skipped {name} (/var/lib/extensions/{name}.raw): {reason}")),
            "{name}: {}",
            out.stderr
        );
    }
    assert!(
        out.stderr
            .contains("skipped huge (/var/lib/extensions/huge.raw): extension-release.huge is larger than 64 KiB"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("skipped level (/var/lib/extensions/level.raw): SYSEXT_LEVEL 2 does not match host 1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("skipped no-release (/var/lib/extensions/no-release.raw): no usr/lib/extension-release.d/extension-release.no-release"), "{}", out.stderr);
    assert!(out.stderr.contains("merged good from"), "{}", out.stderr);
    assert_eq!(mounts(&out).len(), 1);
}

#[test]
fn renamed_images_strict_xattr_and_two_release_files() {
    let s = Scratch::new();
    // Flatcar#1338: the file was renamed, the release file kept the old name.
    let renamed = s.ext_tree("podman", GOOD);
    s.squashfs(&renamed, "var/lib/extensions/podman-5.4.raw");
    // A version after `_` is not part of the name the release file must carry (systemd 257).
    let versioned = s.ext_tree("tools", GOOD);
    s.squashfs(&versioned, "var/lib/extensions/tools_1.2.raw");
    // The escape hatch: the author marked the release file as not strict.
    let relaxed = s.ext_tree("relaxed", GOOD);
    run_ok(
        std::process::Command::new("setfattr")
            .args(["-n", "user.extension-release.strict", "-v", "false"])
            .arg(relaxed.join("usr/lib/extension-release.d/extension-release.relaxed")),
    );
    s.squashfs(&relaxed, "var/lib/extensions/relaxed-2.raw");
    // Two relaxed release files, neither with the image's name: ambiguous.
    let two = s.tree(
        "two",
        &[
            ("usr/lib/extension-release.d/extension-release.a", GOOD),
            ("usr/lib/extension-release.d/extension-release.b", GOOD),
            ("usr/bin/two", "2"),
        ],
    );
    for f in ["a", "b"] {
        run_ok(
            std::process::Command::new("setfattr")
                .args(["-n", "user.extension-release.strict", "-v", "0"])
                .arg(two.join(format!("usr/lib/extension-release.d/extension-release.{f}"))),
        );
    }
    s.squashfs(&two, "var/lib/extensions/two.raw");
    let out = s.plan();
    assert_skip(&out, "podman-5.4", "no usr/lib/extension-release.d/extension-release.podman-5.4; found extension-release.podman, which does not set user.extension-release.strict=false (image renamed?)");
    assert_merge(&out, "relaxed-2");
    assert_merge(&out, "tools_1.2");
    assert_skip(
        &out,
        "two",
        "ambiguous: 2 release files could belong to this image (extension-release.a, extension-release.b)",
    );
}

#[test]
fn forbidden_content_and_shadowed_base_symlinks() {
    let s = Scratch::new();
    let os = s
        .tree("os", &[("usr/lib/extension-release.d/extension-release.os", GOOD), ("usr/lib/os-release", "ID=evil\n")]);
    s.squashfs(&os, "var/lib/extensions/os.raw");
    // sysext-bakery#131: a real usr/sbin directory over the base's usr/sbin -> bin symlink.
    let sbin = s.tree("sbin", &[("usr/lib/extension-release.d/extension-release.sbin", GOOD), ("usr/sbin/tool", "x")]);
    s.squashfs(&sbin, "var/lib/extensions/sbin.raw");
    let hide =
        s.tree("hide", &[("usr/lib/extension-release.d/extension-release.hide", GOOD), ("usr/bin", "->/nowhere")]);
    s.squashfs(&hide, "var/lib/extensions/hide.raw");
    // A whiteout (character device 0:0) over the base's usr/bin: the directory entry says only
    // "character device", so this one takes a stat.
    let whiteout = s.tree("whiteout", &[("usr/lib/extension-release.d/extension-release.whiteout", GOOD)]);
    let mknod = std::process::Command::new("mknod").arg(whiteout.join("usr/bin")).args(["c", "0", "0"]).status();
    assert!(mknod.is_ok_and(|st| st.success()), "mknod");
    s.squashfs(&whiteout, "var/lib/extensions/whiteout.raw");
    // The clash checks run while the overlay is built: the refused images must not cost this one.
    s.image("good", GOOD);
    let plan = s.plan();
    assert!(
        plan.stdout.contains("/usr/sbin is a directory in the image and would replace the base's symlink"),
        "{}",
        plan.all()
    );
    let out = s.merge_then(&format!("ls \"$S/usr/sbin/\"; cat \"$S/usr/.systemd-sysext/extensions\"; {MOUNTS}"));
    assert!(
        out.stderr.contains(
            "skipped os (/var/lib/extensions/os.raw): contains usr/lib/os-release, which only the base OS may carry"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("skipped sbin (/var/lib/extensions/sbin.raw): /usr/sbin is a directory in the image and would replace the base's symlink (sysext-bakery#131)"), "{}", out.stderr);
    assert!(out.stderr.contains("skipped hide (/var/lib/extensions/hide.raw): /usr/bin is a symlink in the image and would hide the base's directory"), "{}", out.stderr);
    assert!(out.stderr.contains("skipped whiteout (/var/lib/extensions/whiteout.raw): /usr/bin is a whiteout in the image and would hide the base's directory"), "{}", out.stderr);
    assert!(out.stdout.contains("rc=0\nbase-tool\ngood\ngood\n--mounts\n"), "only good merged:\n{}", out.all());
    assert_eq!(mounts(&out).len(), 1, "one overlay:\n{}", out.all());
}

#[test]
fn broken_files_are_skipped_with_a_reason() {
    let s = Scratch::new();
    s.image("good", GOOD);
    let ext = s.path("var/lib/extensions");
    // Incompressible content, so that cutting the file in half cuts into the file system.
    let mut x = 1u64;
    let noise: String = (0..100_000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            char::from(b'a' + (x >> 59) as u8 % 26)
        })
        .collect();
    let big = s.tree(
        "truncated",
        &[("usr/lib/extension-release.d/extension-release.truncated", GOOD), ("usr/share/noise", &noise)],
    );
    s.squashfs(&big, "var/lib/extensions/truncated.raw");
    let full = std::fs::read(ext.join("truncated.raw")).unwrap();
    std::fs::write(ext.join("truncated.raw"), &full[..full.len() / 2]).unwrap();
    std::fs::write(ext.join("empty.raw"), b"").unwrap();
    std::fs::write(ext.join("garbage.raw"), b"this is not an image\n".repeat(300)).unwrap();
    std::fs::write(ext.join("notes.txt"), b"hello").unwrap();
    run_ok(std::process::Command::new("mkfifo").arg(ext.join("fifo.raw")));
    run_ok(std::process::Command::new("mknod").arg(ext.join("dev.raw")).args(["c", "1", "3"]));
    let out = s.merge_then(MOUNTS);
    assert!(out.stdout.contains("rc=0"), "{}", out.all());
    let e = &out.stderr;
    assert!(
        e.contains("skipped truncated (/var/lib/extensions/truncated.raw): is truncated: its squashfs superblock says"),
        "{e}"
    );
    assert!(e.contains("skipped empty (/var/lib/extensions/empty.raw): is empty (0 bytes)"), "{e}");
    assert!(
        e.contains("skipped garbage (/var/lib/extensions/garbage.raw): is not a squashfs, erofs, ext4 or GPT image"),
        "{e}"
    );
    assert!(
        e.contains("skipped notes.txt (/var/lib/extensions/notes.txt): not an image: regular files must end in .raw"),
        "{e}"
    );
    assert!(
        e.contains("skipped fifo.raw (/var/lib/extensions/fifo.raw): is a fifo, not a regular file or directory"),
        "{e}"
    );
    assert!(
        e.contains(
            "skipped dev.raw (/var/lib/extensions/dev.raw): is a character device, not a regular file or directory"
        ),
        "{e}"
    );
    assert!(e.contains("merged good from"), "{e}");
}

/// An erofs image with a feature this kernel does not read (older kernels and big physical clusters
/// or tail packing) is skipped with the kernel's own reason, and the next image still merges.
#[test]
fn an_erofs_feature_the_kernel_lacks_is_named() {
    let s = Scratch::new();
    s.image("good", GOOD);
    let t = s.ext_tree("future", GOOD);
    s.erofs(&t, "var/lib/extensions/future.raw");
    // The superblock at 1024: feature_compat at +8 (bit 0: checksum), feature_incompat at +80.
    let path = s.path("var/lib/extensions/future.raw");
    let mut img = std::fs::read(&path).unwrap();
    img[1024 + 8] &= !1;
    img[1024 + 83] |= 0x80;
    std::fs::write(&path, img).unwrap();
    let out = s.merge_then(MOUNTS);
    let e = &out.stderr;
    assert!(
        e.contains("skipped future (/var/lib/extensions/future.raw): mounting erofs")
            && e.contains("[kernel: erofs")
            && e.contains("incompatible feature"),
        "{}",
        out.all()
    );
    assert!(e.contains("merged good from"), "{e}");
}

#[test]
fn symlinks_resolve_inside_the_sysroot() {
    let s = Scratch::new();
    // Flatcar's layout: an absolute link into /opt of the sysroot, not of the host.
    let t = s.ext_tree("podman", GOOD);
    s.squashfs(&t, "opt/extensions/podman/podman-5.4.raw");
    std::fs::create_dir_all(s.path("etc/extensions")).unwrap();
    std::os::unix::fs::symlink("/opt/extensions/podman/podman-5.4.raw", s.path("etc/extensions/podman.raw")).unwrap();
    std::os::unix::fs::symlink("loop-b.raw", s.path("etc/extensions/loop-a.raw")).unwrap();
    std::os::unix::fs::symlink("loop-a.raw", s.path("etc/extensions/loop-b.raw")).unwrap();
    // Exists on the host, not in the sysroot: must not be used.
    let host_file = s.dir.join("outside.raw");
    std::fs::copy(s.path("opt/extensions/podman/podman-5.4.raw"), &host_file).unwrap();
    std::os::unix::fs::symlink(&host_file, s.path("etc/extensions/outside.raw")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../etc/passwd", s.path("etc/extensions/escape.raw")).unwrap();
    let out = s.merge_then("cat \"$S/usr/bin/podman\"; echo");
    let e = &out.stderr;
    assert!(
        e.contains("merged podman from /etc/extensions/podman.raw -> /opt/extensions/podman/podman-5.4.raw (squashfs"),
        "{e}"
    );
    assert!(out.stdout.contains("rc=0\npodman\n"), "{}", out.all());
    assert!(e.contains("skipped loop-a.raw (/etc/extensions/loop-a.raw): symlink loop"), "{e}");
    assert!(
        e.contains(&format!(
            "skipped outside.raw (/etc/extensions/outside.raw): dangling symlink: {} does not exist inside the sysroot",
            host_file.display()
        )),
        "{e}"
    );
    assert!(e.contains("skipped escape.raw (/etc/extensions/escape.raw): dangling symlink: ../../../../../../../../etc/passwd does not exist inside the sysroot"), "{e}");
}

#[test]
fn first_in_search_order_wins_and_empty_directory_masks() {
    let s = Scratch::new();
    let a = s
        .tree("dup-etc", &[("usr/lib/extension-release.d/extension-release.dup", GOOD), ("usr/bin/dup", "from etc\n")]);
    let b = s
        .tree("dup-var", &[("usr/lib/extension-release.d/extension-release.dup", GOOD), ("usr/bin/dup", "from var\n")]);
    s.squashfs(&a, "etc/extensions/dup.raw");
    s.squashfs(&b, "var/lib/extensions/dup.sysext.raw");
    s.image("masked", GOOD);
    std::fs::create_dir_all(s.path("etc/extensions/masked")).unwrap();
    let out = s.merge_then("cat \"$S/usr/bin/dup\"");
    let e = &out.stderr;
    assert!(out.stdout.contains("from etc"), "{}", out.all());
    assert!(e.contains("skipped dup (/var/lib/extensions/dup.sysext.raw): masked by /etc/extensions/dup.raw, which has the same name and comes first"), "{e}");
    assert!(e.contains("skipped masked (/var/lib/extensions/masked.raw): masked by /etc/extensions/masked"), "{e}");
    assert!(
        e.contains("skipped masked (/etc/extensions/masked): no usr/lib/extension-release.d/extension-release.masked"),
        "{e}"
    );
}

/// Names follow systemd's rule: a hidden name is an image like any other, a ".#" temporary
/// file and a name that is not UTF-8 are not.
#[test]
fn hidden_names_are_images_and_invalid_names_are_not() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    s.image(".hidden", GOOD);
    let ext = s.path("var/lib/extensions");
    std::fs::copy(ext.join(".hidden.raw"), ext.join(".#tmp.raw")).unwrap();
    std::fs::copy(ext.join(".hidden.raw"), ext.join(std::ffi::OsStr::from_bytes(b"bad\xff.raw"))).unwrap();
    let out = s.merge_then("cat \"$S/usr/bin/.hidden\"");
    let e = &out.stderr;
    assert!(out.stdout.contains("rc=0\n.hidden"), "{}", out.all());
    assert!(e.contains("merged .hidden from /var/lib/extensions/.hidden.raw"), "{e}");
    assert!(e.contains("skipped .#tmp.raw (/var/lib/extensions/.#tmp.raw): not a valid image name"), "{e}");
    assert!(
        e.contains(
            "skipped bad\u{fffd}.raw (/var/lib/extensions/bad\u{fffd}.raw): not a valid image name: it is not UTF-8"
        ),
        "{e}"
    );
}

/// A separate /var that the initrd does not mount hides /var/lib/extensions: one note says so and
/// names the fix (issue 9). A tmpfs stands in for the /var disk.
#[test]
fn a_separate_var_not_mounted_in_the_initrd_is_named() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let fstab = "# <file system> <mount point> <type> <options>\nUUID=1234 / ext4 defaults 0 1\n\
                 LABEL=var\t/var/ ext4 defaults,nofail 0 2\n/dev/vdb1 none swap sw 0 0\n";
    std::fs::write(s.path("etc/fstab"), fstab).unwrap();
    let note = |dir| {
        format!(
            "note: /var is a separate file system (LABEL=var in /etc/fstab) that is not mounted in the initrd, \
             so images in {dir} cannot be seen: add x-initrd.mount to the options of its fstab entry"
        )
    };
    let out = s.plan();
    assert_eq!(
        out.stdout.lines().filter(|l| l.contains("x-initrd.mount")).collect::<Vec<_>>(),
        [note("/var/lib/extensions"), note("/var/lib/confexts")],
        "{}",
        out.all()
    );
    let out = s.sh("mount -t tmpfs var \"$S/var\" && \"$B\" plan --sysroot \"$S\" --cmdline \"$C\"");
    assert!(out.code == 0 && !out.stdout.contains("x-initrd.mount"), "{}", out.all());
    // Asked for in the initrd, and still not there: its mount failed.
    std::fs::write(s.path("etc/fstab"), "LABEL=var /var ext4 x-initrd.mount 0 2\n").unwrap();
    assert!(s.plan().stdout.contains("its fstab entry has x-initrd.mount, so its mount in the initrd failed"));
    // Without a /var entry, nothing to say.
    std::fs::write(s.path("etc/fstab"), "UUID=1234 / ext4 defaults 0 1\n").unwrap();
    assert!(!s.plan().stdout.contains("x-initrd.mount"));
}

#[test]
fn directory_extensions_and_opt_with_submounts_kept() {
    let s = Scratch::new();
    // A directory extension that adds to /opt, where the base has a submount (Flatcar#2111).
    s.tree(
        "../sysroot/var/lib/extensions/tools",
        &[("usr/lib/extension-release.d/extension-release.tools", GOOD), ("opt/tools/bin", "tool\n")],
    );
    let out = s.sh(&format!(
        "mkdir -p \"$S/opt/data\" && mount -t tmpfs data \"$S/opt/data\" && echo kept > \"$S/opt/data/file\"\n\
         \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?\n\
         cat \"$S/opt/tools/bin\" \"$S/opt/data/file\"; cat \"$S/opt/.systemd-sysext/extensions\"; {MOUNTS}\n\
         \"$B\" unmerge --sysroot \"$S\"; cat \"$S/opt/data/file\"; ls \"$S/opt\""
    ));
    assert!(out.stdout.contains("rc=0\ntool\nkept\ntools\n"), "{}", out.all());
    let m = mounts(&out);
    let root = s.sysroot.display();
    assert!(
        m.contains(&format!("{root}/opt overlay sysext")) && m.contains(&format!("{root}/opt/data tmpfs data")),
        "{m:?}"
    );
    // After unmerge the original submount is back, unchanged.
    assert!(out.stdout.ends_with("kept\ndata\n"), "{}", out.all());
}

#[test]
fn hierarchy_that_is_not_a_directory() {
    let s = Scratch::new();
    std::fs::remove_dir(s.path("opt")).unwrap();
    std::fs::write(s.path("opt"), "not a dir").unwrap();
    s.image("usr-only", GOOD);
    let both = s.tree("both", &[("usr/lib/extension-release.d/extension-release.both", GOOD), ("opt/x", "x")]);
    s.squashfs(&both, "var/lib/extensions/both.raw");
    let out = s.plan();
    assert_merge(&out, "usr-only");
    assert_skip(
        &out,
        "both",
        &format!(
            "needs /opt, which cannot be merged onto: {}/opt is a regular file, not a directory",
            s.sysroot.display()
        ),
    );
}

#[test]
fn no_free_loop_device() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let out = s.sh_env(
        "\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?",
        &[("INITRD_SYSEXT_TEST_FAULTS", "loop-control=/dev/null")],
    );
    assert!(out.stdout.contains("rc=0"), "{}", out.all());
    assert!(
        out.stderr.contains("skipped podman (/var/lib/extensions/podman.raw): no free loop device (LOOP_CTL_GET_FREE)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_layer_the_overlay_refuses_costs_only_itself() {
    let s = Scratch::new();
    s.image("good", GOOD);
    s.image("bad", GOOD);
    let out = s.sh_env(
        &format!("\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?; cat \"$S/usr/.systemd-sysext/extensions\"; {MOUNTS}"),
        &[("INITRD_SYSEXT_TEST_FAULTS", "overlay=bad")],
    );
    assert!(out.stdout.contains("rc=0\ngood\n"), "{}", out.all());
    assert!(
        out.stderr.contains(
            "skipped bad (/var/lib/extensions/bad.raw): overlay refused it: overlay: injected failure for layer bad"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(mounts(&out).len(), 1);
}

#[test]
fn failure_after_mounting_rolls_the_hierarchy_back() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let out = s.sh_env(
        &format!("\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?; ls \"$S/usr\"; {MOUNTS}; sleep 0.2; losetup -j \"$S/var/lib/extensions/podman.raw\" | wc -l"),
        &[("INITRD_SYSEXT_TEST_FAULTS", "attach=usr")],
    );
    // The hierarchy is exactly as before, the loop device is gone, and the exit status says so.
    assert!(out.stdout.contains("rc=1\nbin\nlib\nsbin\n--mounts\n--end\n0\n"), "{}", out.all());
    assert!(
        out.stderr.contains(&format!(
            "/usr: merge failed, left untouched: injected failure after mounting the overlay on {}/usr; rolled back",
            s.sysroot.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("skipped podman (/var/lib/extensions/podman.raw): its hierarchies could not be merged"),
        "{}",
        out.stderr
    );
    assert!(s.report().contains(r#""result":"failed""#));
}

/// Merge with the overlay made as on a kernel with `lowerdir+` (6.8+), as on one without it
/// (fsconfig `lowerdir=` when the list fits in 255 bytes, else the mount(2) option string), and
/// with mount(2) always; show the extension list's length, the files and the log line.
const ALL_APIS: [&str; 3] = ["lowerdir+", "lowerdir", "mount"];

fn merge_with_overlay_apis(s: &Scratch, apis: &[&'static str]) -> Vec<(&'static str, Output)> {
    apis.iter()
        .copied()
        .map(|api| {
            let out = s.sh_env(
                &format!(
                    "\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?\n\
                     wc -l < \"$S/usr/.systemd-sysext/extensions\"; ls \"$S/usr/bin\" | wc -l; {MOUNTS}"
                ),
                &[("INITRD_SYSEXT_TEST_FAULTS", &format!("overlay-api={api}"))],
            );
            (api, out)
        })
        .collect()
}

#[test]
fn many_layers_merge_in_one_overlay_whatever_the_kernel_takes() {
    let s = Scratch::new();
    for i in 0..128 {
        let name = format!("extension-with-a-rather-long-name-to-fill-the-option-string-{i:03}");
        s.image(&name, GOOD);
    }
    for (api, out) in merge_with_overlay_apis(&s, &ALL_APIS) {
        assert!(out.stdout.contains("rc=0\n128\n129\n"), "{api}: {}", out.all());
        assert_eq!(mounts(&out).len(), 1, "{api}: {}", out.all());
        // 128 paths never fit in one fsconfig value: without lowerdir+ it is mount(2).
        let via = if api == "lowerdir+" { "lowerdir+" } else { "mount(2) options" };
        assert!(out.stderr.contains("-000 (top first) over the host, mounted in "), "{api}: {}", out.stderr);
        assert!(out.stderr.contains(&format!(" ms with {via}\n")), "{api}: {}", out.stderr);
    }
}

#[test]
fn a_short_list_goes_in_one_fsconfig_value() {
    let s = Scratch::new();
    s.image("a", GOOD);
    s.image("b", GOOD);
    for (api, out) in merge_with_overlay_apis(&s, &ALL_APIS) {
        assert!(out.stdout.contains("rc=0\n2\n3\n"), "{api}: {}", out.all());
        let via = match api {
            "lowerdir" => "fsconfig lowerdir=",
            "mount" => "mount(2) options",
            _ => "lowerdir+",
        };
        assert!(out.stderr.contains("/usr: overlay of b, a (top first) over the host, mounted in "), "{}", out.stderr);
        assert!(out.stderr.contains(&format!(" ms with {via}\n")), "{api}: {}", out.stderr);
    }
}

/// `n` directory extensions `dir-001`…: layers without loop devices.
fn directory_extensions(s: &Scratch, n: usize) {
    for i in 1..=n {
        let name = format!("dir-{i:03}");
        s.tree(
            &format!("../sysroot/var/lib/extensions/{name}"),
            &[
                (&format!("usr/lib/extension-release.d/extension-release.{name}"), GOOD),
                (&format!("usr/bin/{name}"), "x"),
            ],
        );
    }
}

#[test]
fn more_than_a_page_of_options_still_merges() {
    // 300 layers as /proc/self/fd paths are more than 4 KiB: mount(2) gets short names instead.
    let s = Scratch::new();
    directory_extensions(&s, 300);
    for (api, out) in merge_with_overlay_apis(&s, &ALL_APIS) {
        assert!(out.stdout.contains("rc=0\n300\n301\n"), "{api}: {}", out.all());
        let via = if api == "lowerdir+" { "lowerdir+" } else { "mount(2) options" };
        assert!(out.stderr.contains(&format!(" ms with {via}\n")), "{api}: {}", out.stderr);
    }
}

#[test]
fn beyond_overlayfs_limit_the_oldest_are_left_out() {
    // META, 498 extensions and the host are overlayfs's 500 layers; the oldest extension goes.
    // Without lowerdir+ this is mount(2), so `lowerdir` would only repeat `mount`.
    let s = Scratch::new();
    directory_extensions(&s, 499);
    for (api, out) in merge_with_overlay_apis(&s, &["lowerdir+", "mount"]) {
        assert!(out.stdout.contains("rc=0\n498\n499\n"), "{api}: {}", out.all());
        assert!(
            out.stderr.contains(
                "skipped dir-001 (/var/lib/extensions/dir-001): left out of /usr: overlayfs stacks at most 500 layers, and 498 newer extensions fill it"
            ),
            "{api}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("done in ") && out.stderr.contains(": 498 merged, 1 skipped"),
            "{api}: {}",
            out.stderr
        );
    }
}

#[test]
fn decisions_reach_the_kernel_log() {
    let s = Scratch::new();
    // A name no other run uses, so the line we find is ours.
    let name = format!(
        "kmsg-{}-{}",
        std::process::id(),
        s.dir.file_name().unwrap().to_string_lossy().rsplit('-').next().unwrap()
    );
    s.image(&name, GOOD);
    let out = s.sh_env(
        &format!("\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; dmesg | grep -F ' merged {name} '"),
        &[("INITRD_SYSEXT_LOG", "kmsg")],
    );
    assert!(
        out.stdout.contains("initrd-sysext[")
            && out.stdout.contains(&format!("]: merged {name} from /var/lib/extensions/{name}.raw (squashfs")),
        "{}",
        out.all()
    );
}

/// In the initrd, a unit whose stderr is its journal stream (`$JOURNAL_STREAM` names the file)
/// logs there, each line with its syslog level, and not to /dev/kmsg, whose every record the
/// console prints; without that stream, the lines go to the kernel log.
#[test]
fn in_a_unit_decisions_go_to_its_journal_stream_else_to_the_kernel_log() {
    let s = Scratch::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let name = format!("stream{}x{}", std::process::id(), now.as_nanos());
    s.image(&name, GOOD);
    let merge = "\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"";
    let out = s.sh_env(
        &format!(
            "mkdir \"$D/u\" \"$D/w\" && mount -t overlay etc -o \"lowerdir=/etc,upperdir=$D/u,workdir=$D/w\" /etc\n\
             echo ID=test >/etc/initrd-release && : >\"$D/stream\"\n\
             JOURNAL_STREAM=$(stat -c %d:%i \"$D/stream\") {merge} 2>>\"$D/stream\"\n\
             \"$B\" unmerge --sysroot \"$S\" >/dev/null\n\
             echo \"kmsg: $(dmesg | grep -cF ' merged {name} ')\"\n\
             {merge} 2>>\"$D/stream\"\n\
             echo \"kmsg: $(dmesg | grep -cF ' merged {name} ')\"\n\
             cat \"$D/stream\""
        ),
        &[("INITRD_SYSEXT_LOG", "")],
    );
    assert!(out.stdout.starts_with("kmsg: 0\nkmsg: 1\n"), "{}", out.all());
    assert_eq!(
        out.stdout.matches(&format!("<5>merged {name} from /var/lib/extensions/{name}.raw")).count(),
        1,
        "{}",
        out.all()
    );
}

/// The kernel rate-limits writes to /dev/kmsg per open file (10 records per 5 s unless
/// `printk.devkmsg=on`); a boot with many images logs more lines than that within a second, and
/// every one of them must reach the kernel log.
#[test]
fn every_decision_reaches_the_kernel_log_past_its_rate_limit() {
    let s = Scratch::new();
    // Names no other run uses, so the lines we count are ours.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let tag = format!("kmsg{}x{}", std::process::id(), now.as_nanos());
    for i in 1..=30 {
        let name = format!("{tag}-{i:02}");
        s.tree(
            &format!("../sysroot/var/lib/extensions/{name}"),
            &[
                (&format!("usr/lib/extension-release.d/extension-release.{name}"), GOOD),
                (&format!("usr/bin/{name}"), "x"),
            ],
        );
    }
    let out = s.sh_env(
        &format!(
            "\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?\n\
             dmesg | grep -cE 'initrd-sysext\\[[0-9]+\\]: merged {tag}-[0-9]{{2}} from '"
        ),
        &[("INITRD_SYSEXT_LOG", "kmsg")],
    );
    assert!(out.stdout.contains("rc=0\n30\n"), "{}", out.all());
}

/// Issue 10, item 6: a fifo planted at `.systemd-sysext/dev` (or `extensions`) of a mounted
/// hierarchy must not hang `status` or `merge` until the unit's timeout. It is not a merge.
#[test]
fn a_fifo_in_the_merge_state_hangs_nothing() {
    let s = Scratch::new();
    s.image("podman", GOOD);
    let out = s.sh(&format!(
        "mount -t tmpfs tmpfs \"$S/opt\" && mkdir \"$S/opt/.systemd-sysext\" && \
         mkfifo \"$S/opt/.systemd-sysext/dev\" \"$S/opt/.systemd-sysext/extensions\"\n\
         timeout 20 \"$B\" status --sysroot \"$S\"; echo status-rc=$?\n\
         timeout 20 \"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo merge-rc=$?\n{MOUNTS}"
    ));
    assert!(out.stdout.contains("/opt\tnone\n/etc\tnone\nstatus-rc=0\n"), "{}", out.all());
    assert!(out.stdout.contains("merge-rc=0"), "{}", out.all());
    assert!(mounts(&out).contains(&format!("{}/usr overlay sysext", s.sysroot.display())), "{}", out.all());
}

#[test]
fn clashes_below_the_top_are_found_in_every_image_that_has_them() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("usr/lib/modules/6.1")).unwrap();
    // One walker checks every image against the same base directories: each image gets its
    // own answer in /usr/lib and /usr/lib/modules.
    let flat =
        s.tree("flat", &[("usr/lib/extension-release.d/extension-release.flat", GOOD), ("usr/lib/modules", "x")]);
    s.squashfs(&flat, "var/lib/extensions/flat.raw");
    let deeper = s.tree(
        "deeper",
        &[("usr/lib/extension-release.d/extension-release.deeper", GOOD), ("usr/lib/modules/6.1", "->/nowhere")],
    );
    s.squashfs(&deeper, "var/lib/extensions/deeper.raw");
    let extra = s.tree(
        "extra",
        &[("usr/lib/extension-release.d/extension-release.extra", GOOD), ("usr/lib/modules/6.1/extra.ko", "ko\n")],
    );
    s.squashfs(&extra, "var/lib/extensions/extra.raw");
    // A file over a base file: no clash.
    let tool =
        s.tree("tool", &[("usr/lib/extension-release.d/extension-release.tool", GOOD), ("usr/bin/base-tool", "new\n")]);
    s.squashfs(&tool, "var/lib/extensions/tool.raw");
    let out = s.merge_then(
        "cat \"$S/usr/lib/modules/6.1/extra.ko\" \"$S/usr/bin/base-tool\" \"$S/usr/.systemd-sysext/extensions\"",
    );
    assert!(out.stderr.contains("skipped flat (/var/lib/extensions/flat.raw): /usr/lib/modules is a file in the image and would hide the base's directory"), "{}", out.stderr);
    assert!(out.stderr.contains("skipped deeper (/var/lib/extensions/deeper.raw): /usr/lib/modules/6.1 is a symlink in the image and would hide the base's directory"), "{}", out.stderr);
    assert!(out.stdout.contains("rc=0\nko\nnew\nextra\ntool\n"), "{}", out.all());
}

#[test]
fn a_layer_that_clashes_only_with_the_host_costs_only_itself() {
    let s = Scratch::new();
    // A directory extension that lives inside the /opt it extends: overlayfs refuses a layer
    // inside another layer ("overlapping"), but only once the host's /opt is a layer too.
    s.tree(
        "../sysroot/opt/extensions/inside",
        &[("usr/lib/extension-release.d/extension-release.inside", GOOD), ("opt/inside/file", "inside\n")],
    );
    std::fs::create_dir_all(s.path("etc/extensions")).unwrap();
    std::os::unix::fs::symlink("/opt/extensions/inside", s.path("etc/extensions/inside")).unwrap();
    let good =
        s.tree("good", &[("usr/lib/extension-release.d/extension-release.good", GOOD), ("opt/good/file", "good\n")]);
    s.squashfs(&good, "var/lib/extensions/good.raw");
    let out = s.merge_then(&format!("cat \"$S/opt/good/file\"; cat \"$S/opt/.systemd-sysext/extensions\"; {MOUNTS}"));
    assert!(out.stdout.contains("rc=0\ngood\ngood\n"), "{}", out.all());
    assert!(
        out.stderr.contains("skipped inside (/etc/extensions/inside -> /opt/extensions/inside): overlay refused it: creating overlay superblock [kernel: overlayfs: overlapping lowerdir path]"),
        "{}",
        out.stderr
    );
    let root = s.sysroot.display();
    assert_eq!(
        mounts(&out),
        [format!("{root}/usr overlay sysext"), format!("{root}/opt overlay sysext")],
        "{}",
        out.all()
    );
}

#[test]
fn the_extension_list_names_exactly_what_is_mounted() {
    let s = Scratch::new();
    s.image("usr-ext", GOOD);
    let both =
        s.tree("both-ext", &[("usr/lib/extension-release.d/extension-release.both-ext", GOOD), ("opt/x/file", "x")]);
    s.squashfs(&both, "var/lib/extensions/both-ext.raw");
    // /usr fails after /opt was built with both names; usr-ext, which only /usr needed, is lost.
    // systemd 252's `status --root` opens the state outside the root, so it reads a bind of /opt.
    let out = s.sh_env(
        &format!(
            "\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?\n\
             echo list; cat \"$S/opt/.systemd-sysext/extensions\"; echo ours; \"$B\" status --sysroot \"$S\"\n\
             {MOUNTS}; echo systemd; mount --bind \"$S/opt\" /opt && systemd-sysext status --no-pager 2>&1"
        ),
        &[("INITRD_SYSEXT_TEST_FAULTS", "attach=usr")],
    );
    assert!(out.stdout.contains("rc=1\nlist\nboth-ext\nours\n/usr\tnone\n/opt\tboth-ext\tsince "), "{}", out.all());
    let systemd = out.stdout.split("systemd\n").nth(1).unwrap();
    assert!(systemd.contains("both-ext") && !systemd.contains("usr-ext"), "{}", out.all());
    assert!(
        out.stderr.contains("skipped usr-ext (/var/lib/extensions/usr-ext.raw): its hierarchies could not be merged"),
        "{}",
        out.stderr
    );
    assert_eq!(mounts(&out), [format!("{}/opt overlay sysext", s.sysroot.display())], "{}", out.all());
}

/// A sysroot whose /opt is a symlink (`link`) to var/opt, with a submount at var/opt/data, and
/// an image that adds /opt/tools.
fn symlinked_opt(link: &str) -> Scratch {
    let s = Scratch::new();
    std::fs::remove_dir(s.path("opt")).unwrap();
    std::fs::create_dir_all(s.path("var/opt/data")).unwrap();
    std::fs::write(s.path("var/opt/base-file"), "base\n").unwrap();
    std::os::unix::fs::symlink(link, s.path("opt")).unwrap();
    let t =
        s.tree("tools", &[("usr/lib/extension-release.d/extension-release.tools", GOOD), ("opt/tools/bin", "tool\n")]);
    s.squashfs(&t, "var/lib/extensions/tools.raw");
    s
}

/// Mount the submount and, in this namespace only, a decoy over the initrd's own /var/opt: an
/// absolute link must never lead there.
const SYMLINK_SETUP: &str = "mount -t tmpfs data \"$S/var/opt/data\" && echo kept > \"$S/var/opt/data/file\"\n\
     mkdir -p /var/opt && mount -t tmpfs decoy /var/opt && echo initrd > /var/opt/decoy\n";

fn merge_and_unmerge_through_a_symlinked_hierarchy(link: &str) {
    let s = symlinked_opt(link);
    // Read through the link's target: in this namespace an absolute link leads to the decoy.
    let out = s.sh(&format!(
        "{SYMLINK_SETUP}\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?\n\
         O=\"$S/var/opt\"; cat \"$O/tools/bin\" \"$O/base-file\" \"$O/data/file\"; ls \"$O\" /var/opt; {MOUNTS}\n\
         \"$B\" status --sysroot \"$S\"; \"$B\" unmerge --sysroot \"$S\"; echo unmerge=$?; ls \"$O\"; {MOUNTS}"
    ));
    let root = s.sysroot.display();
    // The merge sits on the link's target inside the sysroot, over the sysroot's own files, with
    // the submount kept and nothing of the initrd's /var/opt.
    assert!(
        out.stdout.contains(&format!(
            "rc=0\ntool\nbase\nkept\n{root}/var/opt:\nbase-file\ndata\ntools\n\n/var/opt:\ndecoy\n"
        )),
        "{link}: {}",
        out.all()
    );
    let first = out.stdout.split("--end").next().unwrap();
    assert!(
        first.contains(&format!("{root}/var/opt overlay sysext\n{root}/var/opt/data tmpfs data")),
        "{link}: {}",
        out.all()
    );
    assert!(out.stdout.contains("/opt\ttools\tsince "), "{link}: {}", out.all());
    assert!(
        out.stdout.contains(&format!(
            "unmerged {root}/var/opt\nunmerge=0\nbase-file\ndata\n--mounts\n{root}/var/opt/data tmpfs data\n--end"
        )),
        "{link}: {}",
        out.all()
    );
}

#[test]
fn a_relative_symlink_hierarchy_is_merged_where_it_leads() {
    merge_and_unmerge_through_a_symlinked_hierarchy("var/opt");
}

#[test]
fn an_absolute_symlink_hierarchy_is_merged_inside_the_sysroot() {
    merge_and_unmerge_through_a_symlinked_hierarchy("/var/opt");
}

#[test]
fn a_symlinked_hierarchy_is_rolled_back_where_it_leads() {
    for link in ["var/opt", "/var/opt"] {
        let s = symlinked_opt(link);
        let out = s.sh_env(
            &format!(
                "{SYMLINK_SETUP}\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo rc=$?\n\
                 ls \"$S/var/opt\"; cat \"$S/var/opt/data/file\"; {MOUNTS}"
            ),
            &[("INITRD_SYSEXT_TEST_FAULTS", "attach=opt")],
        );
        let root = s.sysroot.display();
        assert!(
            out.stdout.contains(&format!(
                "rc=1\nbase-file\ndata\nkept\n--mounts\n{root}/var/opt/data tmpfs data\n{root}/usr overlay sysext\n--end"
            )),
            "{link}: {}",
            out.all()
        );
        assert!(
            out.stderr.contains(&format!(
                "/opt: merge failed, left untouched: injected failure after mounting the overlay on {root}/var/opt; rolled back"
            )),
            "{link}: {}",
            out.stderr
        );
    }
}
