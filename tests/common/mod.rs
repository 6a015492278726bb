//! Root-level test scaffolding: a scratch sysroot on disk, real squashfs/erofs images built with
//! mksquashfs and mkfs.erofs, and the binary run inside a private mount namespace
//! (`unshare -m --propagation private`), so every mount and loop device it makes goes away with
//! the namespace, even when a test fails.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_initrd-sysext");
pub const GOOD: &str = "ID=debian\nVERSION_ID=13\n";
/// A machine ID for a base /etc, as systemd-machine-id-setup writes it.
pub const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef\n";

pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("running id");
    assert!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "these tests mount file systems and need root (run them as root, or run `cargo test --bins` for the unit tests only)"
    );
}

pub struct Scratch {
    pub dir: PathBuf,
    pub sysroot: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Scratch {
    /// A sysroot like a small Debian 13: os-release, /usr/bin, the /usr/sbin -> bin symlink, /opt.
    pub fn new() -> Scratch {
        require_root();
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "initrd-sysext-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        let sysroot = dir.join("sysroot");
        for d in ["usr/lib", "usr/bin", "opt", "etc", "var/lib/extensions", "run"] {
            fs::create_dir_all(sysroot.join(d)).unwrap();
        }
        fs::write(sysroot.join("usr/lib/os-release"), "NAME=Debian\nID=debian\nVERSION_ID=\"13\"\n").unwrap();
        symlink("../usr/lib/os-release", sysroot.join("etc/os-release")).unwrap();
        fs::write(sysroot.join("usr/bin/base-tool"), "base\n").unwrap();
        symlink("bin", sysroot.join("usr/sbin")).unwrap();
        fs::write(dir.join("cmdline"), "root=/dev/vda1 ro\n").unwrap();
        Scratch { dir, sysroot }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.sysroot.join(rel.trim_start_matches('/'))
    }

    pub fn cmdline(&self, text: &str) {
        fs::write(self.dir.join("cmdline"), text).unwrap();
    }

    /// A source tree for an image: `files` are (path, content); a content of "->target" makes a
    /// symlink, and a path ending in '/' a directory.
    pub fn tree(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = self.dir.join("trees").join(name);
        fs::create_dir_all(&root).unwrap();
        for (p, content) in files {
            let f = root.join(p);
            fs::create_dir_all(if p.ends_with('/') { f.clone() } else { f.parent().unwrap().to_path_buf() }).unwrap();
            if p.ends_with('/') {
                continue;
            }
            match content.strip_prefix("->") {
                Some(target) => symlink(target, &f).unwrap(),
                None => fs::write(&f, content).unwrap(),
            }
        }
        root
    }

    /// The usual image tree: a release file for `name` and one file in /usr/bin.
    pub fn ext_tree(&self, name: &str, release: &str) -> PathBuf {
        self.tree(
            name,
            &[
                (&format!("usr/lib/extension-release.d/extension-release.{name}"), release),
                (&format!("usr/bin/{name}"), name),
            ],
        )
    }

    /// A configuration extension's tree: its release file `etc/extension-release.d/…` and `files`
    /// (paths relative to the tree, as for `tree`).
    pub fn confext_tree(&self, name: &str, release: &str, files: &[(&str, &str)]) -> PathBuf {
        let release_file = format!("etc/extension-release.d/extension-release.{name}");
        let mut all = vec![(release_file.as_str(), release)];
        all.extend_from_slice(files);
        self.tree(name, &all)
    }

    /// A squashfs confext in /var/lib/confexts with a release file and `etc/NAME.conf`.
    pub fn confext(&self, name: &str, release: &str) {
        let conf = format!("etc/{name}.conf");
        let t = self.confext_tree(name, release, &[(&conf, name)]);
        self.squashfs(&t, &format!("var/lib/confexts/{name}.raw"));
    }

    /// Give the base /etc a machine ID, as an installed system has.
    pub fn machine_id(&self) {
        fs::write(self.path("etc/machine-id"), MACHINE_ID).unwrap();
    }

    pub fn squashfs(&self, tree: &Path, dest: &str) {
        let out = self.path(dest);
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        run_ok(Command::new("mksquashfs").arg(tree).arg(&out).args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-all-root",
        ]));
    }

    pub fn erofs(&self, tree: &Path, dest: &str) {
        let out = self.path(dest);
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        run_ok(Command::new("mkfs.erofs").arg("-x1").arg(&out).arg(tree));
    }

    /// A named squashfs extension in /var/lib/extensions with a release file.
    pub fn image(&self, name: &str, release: &str) {
        let t = self.ext_tree(name, release);
        self.squashfs(&t, &format!("var/lib/extensions/{name}.raw"));
    }

    /// Run a shell script in a private mount namespace. `$B` is the binary, `$S` the sysroot,
    /// `$C` the cmdline file, `$R` the report path, `$D` the scratch dir.
    pub fn sh(&self, script: &str) -> Output {
        self.sh_env(script, &[])
    }

    pub fn sh_env(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "bash", "-c"])
            // A /run of its own: what merge hands over to the booted system (drop-ins for
            // systemd-sysext.service, certificates) must never reach the host's /run.
            .arg(format!("set -u\nmount -t tmpfs -o mode=0755 test-run /run || exit 99\n{script}"))
            .env("B", BIN)
            .env("S", &self.sysroot)
            .env("C", self.dir.join("cmdline"))
            .env("R", self.dir.join("report.json"))
            .env("D", &self.dir)
            .env("INITRD_SYSEXT_LOG", "stderr")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .output()
            .expect("running unshare");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `merge`, then whatever `after` shows, in one namespace.
    pub fn merge_then(&self, after: &str) -> Output {
        self.sh(&format!("\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\"; echo \"rc=$?\"\n{after}"))
    }

    pub fn plan(&self) -> Output {
        self.sh("\"$B\" plan --sysroot \"$S\" --cmdline \"$C\"")
    }

    pub fn report(&self) -> String {
        fs::read_to_string(self.dir.join("report.json")).unwrap_or_default()
    }
}

pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The line of `plan` output for image `name`.
pub fn plan_line<'a>(out: &'a Output, name: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("no plan line for {name} in:\n{}", out.all()))
}

pub fn assert_skip(out: &Output, name: &str, reason: &str) {
    let line = plan_line(out, name);
    assert!(line.contains(&format!("skip: {reason}")), "expected {name} to be skipped for {reason:?}, got: {line}");
}

pub fn assert_merge(out: &Output, name: &str) {
    let line = plan_line(out, name);
    assert!(line.ends_with("\tmerge"), "expected {name} to merge, got: {line}");
}
