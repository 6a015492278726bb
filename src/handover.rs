//! Step 8: hand the merge over to the booted system, in systemd's own terms. The initrd's /run
//! becomes the booted system's /run (systemd's switch-root and initramfs-tools both carry it
//! over), so what we write there is read by the booted PID 1, systemd-sysext and systemd-confext:
//!
//! - `/run/initrd-sysext/state`: what the initrd saw and merged, per class, for `initrd-sysext
//!   refresh-needed` (src/refresh_check.rs) to compare with what is there at boot;
//! - `/run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf` (and
//!   `systemd-confext.service.d`): where the root's systemd has no refresh skip of its own
//!   (before 260), an `ExecCondition=` running that comparison, `refresh` instead of 252's
//!   `merge`, and `--image-policy=` where that is the only way to pass the policy (257); for
//!   confexts also `--mutable=` when the mode came from confext.conf, which 257 does not read;
//! - `/run/systemd/sysext.conf.d/initrd-sysext.conf` (and `confext.conf.d`): `ImagePolicy=` where
//!   systemd reads it (262), and a confext `Mutable=` given to us on our command line;
//! - `/run/verity.d/*.crt`: the initrd's trusted certificates, PEM, where systemd's userspace
//!   signature check looks, so signed images still verify after switch-root; and a mask
//!   (a symlink to /dev/null) for each name masked in the initrd, so a key revoked there is not
//!   trusted from the root's /usr/lib/verity.d after switch-root.
//!
//! What the root's systemd-sysext can do is read from its binary (the strings of the code paths
//! in question), not from a version number: an unknown build gets the most conservative setup.

use std::os::fd::{AsFd, BorrowedFd};

use log::{info, warn};
use rustix::fs::{fstat, FileType, OFlags};

use crate::class::{Class, Hierarchy};
use crate::cmdline::Policy;
use crate::discover::Origin;
use crate::mutable::{Layout, Source};
use crate::plan::{Action, Decision, Outcome, Plan};
use crate::report::TARGET;
use crate::sys::fs::{open_dir_in_root, open_in_root, read_limited};
use crate::verify::x509::TrustedCert;
use crate::verify::{hex, Kind};

/// Where systemd keeps systemd-sysext, inside the root.
const SYSEXT_BINARIES: [&str; 2] = ["usr/bin/systemd-sysext", "usr/lib/systemd/systemd-sysext"];
/// The state file, below the run directory.
pub const STATE: &str = "initrd-sysext/state";
const CERTS: &str = "verity.d";
const STATE_HEADER: &str = "initrd-sysext-state 2";

/// The unit drop-in for the class's service, below the run directory.
fn dropin_path(class: Class) -> String {
    format!("systemd/system/{}.service.d/initrd-sysext.conf", class.tool())
}

/// The class's configuration drop-in (`sysext.conf.d`, `confext.conf.d`), below the run directory.
fn conf_path(class: Class) -> String {
    format!("systemd/{}.conf.d/initrd-sysext.conf", class.name())
}

/// What the root's systemd-sysext does, as far as our merge is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Systemd {
    /// `refresh` leaves an unchanged merge alone (systemd ≥ 260, `.systemd-sysext/origin`).
    pub refresh_skip: bool,
    /// `ImagePolicy=` in `[SysExt]` of sysext.conf (262).
    pub config_policy: bool,
    /// `--image-policy=` on the command line (257).
    pub policy_option: bool,
    /// It is also systemd-confext (254 and later).
    pub confext: bool,
    /// It reads `[ConfExt]` of confext.conf, `Mutable=` and `ImagePolicy=` (259 and later).
    pub confext_config: bool,
    /// It has the mutable modes, `--mutable=` and `SYSTEMD_CONFEXT_MUTABLE_MODE` (256 and later).
    pub mutable_modes: bool,
}

impl Systemd {
    /// From the systemd-sysext binary's bytes: the message of the refresh skip, the config
    /// keys next to their section names, the option name, the confext metadata directory, the
    /// mutable mode's variable.
    pub fn from_binary(bytes: &[u8]) -> Systemd {
        // Candidates by their first byte, then one comparison each: a slice comparison at every
        // offset of the ~100 KB binary costs milliseconds under TCG.
        let has = |needle: &[u8]| {
            let (first, rest) = needle.split_first().expect("needles are not empty");
            let mut at = 0;
            while let Some(i) = bytes[at..].iter().position(|b| b == first) {
                at += i + 1;
                if bytes[at..].starts_with(rest) {
                    return true;
                }
            }
            false
        };
        let policy_key = has(b"ImagePolicy\0");
        Systemd {
            refresh_skip: has(b"Skipping extension refresh because no change was found"),
            config_policy: policy_key && has(b"SysExt\0"),
            policy_option: has(b"image-policy\0"),
            confext: has(b".systemd-confext\0"),
            confext_config: policy_key && has(b"ConfExt\0"),
            mutable_modes: has(b"SYSTEMD_CONFEXT_MUTABLE_MODE\0"),
        }
    }

    /// Whether it reads a class's configuration file (`ImagePolicy=`).
    fn reads_config(&self, class: Class) -> bool {
        match class {
            Class::Sysext => self.config_policy,
            Class::Confext => self.confext_config,
        }
    }

    fn describe(&self) -> String {
        let skip = if self.refresh_skip { "skips an unchanged refresh" } else { "has no refresh skip" };
        let policy = match (self.config_policy, self.policy_option) {
            (true, _) => "reads ImagePolicy= from sysext.conf",
            (false, true) => "takes --image-policy=",
            (false, false) => "has no image policy",
        };
        format!("{skip} and {policy}")
    }
}

/// systemd's image policy for ours. A plain file system image counts as a `root` partition (a
/// sysext DDI may carry `usr` instead, a confext is only ever `root`); `absent` lets the other
/// one be missing; partitions we never merge are ignored. `any` is systemd's default, so
/// nothing is written for it.
pub fn image_policy(policy: Policy, class: Class) -> Option<&'static str> {
    match (policy, class) {
        (Policy::Signed, Class::Sysext) => Some("root=signed+absent:usr=signed+absent:=ignore"),
        (Policy::Signed, Class::Confext) => Some("root=signed+absent:=ignore"),
        // "signed" too: a signature that does not verify still passes on its verity, as ours does.
        (Policy::Verity, Class::Sysext) => Some("root=verity+signed+absent:usr=verity+signed+absent:=ignore"),
        (Policy::Verity, Class::Confext) => Some("root=verity+signed+absent:=ignore"),
        (Policy::Any, _) => None,
    }
}

/// What the initrd decided about one class, for the booted side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassState {
    pub class: Class,
    /// Every hierarchy that had something to merge was merged.
    pub complete: bool,
    /// Confexts: the mutable mode the initrd merged with, and whether the unit drop-in gives it
    /// to systemd-confext on its command line (else it takes its own: environment, or `no`).
    pub mode: Option<(String, bool)>,
    /// `/usr`, `/opt`, `/etc` with the overlay's `MAJOR:MINOR`.
    pub merged: Vec<(String, (u32, u32))>,
    /// Every image found, one canonical line each (see `seen_line`), sorted.
    pub seen: Vec<String>,
    /// The `seen` lines of the DDIs the policy admitted: their verdict depends on the file alone,
    /// so the booted side takes it as it is while the file is unchanged.
    pub admitted: Vec<String>,
}

/// What the initrd decided, for the booted side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub systemd: Systemd,
    pub policy: Policy,
    /// The classes the initrd decided about (not turned off, not merged before it).
    pub classes: Vec<ClassState>,
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\\' => "\\\\".to_string(),
            c if c.is_control() => format!("\\x{:02x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// One image as both sides see it: name, resolved path and file identity. Equal lines mean the
/// same file at the same place through the same mount.
pub fn seen_line(name: &str, origin: &Origin) -> String {
    let id = match &origin.file {
        Ok(f) => {
            let handle = match &f.handle {
                Some((kind, bytes)) => format!("fh={kind}:{}", hex(bytes)),
                None => format!("ino={}", f.inode),
            };
            format!("mnt={} {handle} crtime={} mtime={}", f.mount_id, f.crtime_us, f.mtime_us)
        }
        Err(_) => "unidentified".to_string(),
    };
    format!("{}\t{}\t{id}", escape(name), escape(&origin.path))
}

impl State {
    pub fn to_text(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut out = format!(
            "{STATE_HEADER}\nrefresh-skip {}\npolicy-config {}\npolicy-option {}\nconfext-config {}\npolicy {}\n",
            yes(self.systemd.refresh_skip),
            yes(self.systemd.config_policy),
            yes(self.systemd.policy_option),
            yes(self.systemd.confext_config),
            self.policy.as_str(),
        );
        for c in &self.classes {
            out.push_str(&format!("class {}\ncomplete {}\n", c.class, yes(c.complete)));
            if let Some((mode, argv)) = &c.mode {
                out.push_str(&format!("mode {mode} {}\n", if *argv { "argv" } else { "own" }));
            }
            for (h, (major, minor)) in &c.merged {
                out.push_str(&format!("merged {h} {major}:{minor}\n"));
            }
            for line in &c.seen {
                out.push_str(&format!("image {line}\n"));
            }
            for line in &c.admitted {
                out.push_str(&format!("admitted {line}\n"));
            }
        }
        out
    }

    /// What the initrd decided about a class, if it decided.
    pub fn class(&self, class: Class) -> Option<&ClassState> {
        self.classes.iter().find(|c| c.class == class)
    }

    /// `None` for anything but the exact format we write: the booted side then lets systemd
    /// refresh as if we had never been there.
    pub fn parse(text: &str) -> Option<State> {
        let mut lines = text.lines();
        if lines.next()? != STATE_HEADER {
            return None;
        }
        let flag = |v: &str| match v {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        };
        let mut state = State { systemd: Systemd::default(), policy: Policy::Any, classes: Vec::new() };
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "refresh-skip" => state.systemd.refresh_skip = flag(value)?,
                "policy-config" => state.systemd.config_policy = flag(value)?,
                "policy-option" => state.systemd.policy_option = flag(value)?,
                "confext-config" => state.systemd.confext_config = flag(value)?,
                "policy" => {
                    state.policy = match value {
                        "signed" => Policy::Signed,
                        "verity" => Policy::Verity,
                        "any" => Policy::Any,
                        _ => return None,
                    }
                }
                "class" => state.classes.push(ClassState {
                    class: Class::parse(value)?,
                    complete: false,
                    mode: None,
                    merged: Vec::new(),
                    seen: Vec::new(),
                    admitted: Vec::new(),
                }),
                _ => {
                    let c = state.classes.last_mut()?;
                    match key {
                        "complete" => c.complete = flag(value)?,
                        "mode" => {
                            let (mode, how) = value.split_once(' ')?;
                            c.mode = Some((mode.to_string(), how == "argv"));
                        }
                        "merged" => {
                            let (h, dev) = value.split_once(' ')?;
                            c.merged.push((h.to_string(), crate::state::parse_dev(dev)?));
                        }
                        "image" => c.seen.push(value.to_string()),
                        "admitted" => c.admitted.push(value.to_string()),
                        _ => return None,
                    }
                }
            }
        }
        Some(state)
    }
}

/// The mutable mode to give the root's systemd-confext on its command line: one from
/// confext.conf where it does not read that file (before 259), or one given to us on ours.
pub fn mode_argument(systemd: Systemd, layout: Option<&Layout>) -> Option<&'static str> {
    let l = layout?;
    let unseen = match &l.choice.source {
        Source::Config(_) => !systemd.confext_config,
        Source::Argv => !systemd.confext_config,
        _ => false,
    };
    (unseen && systemd.mutable_modes).then(|| l.choice.mode.as_str())
}

/// The unit drop-in for the class's service, or `None` when systemd needs none. `binary` is our
/// binary's path in the booted system, `None` if the root has none (then no condition: systemd
/// refreshes as it would). `mode` is a confext mutable mode for the command line.
pub fn dropin(
    systemd: Systemd,
    policy: Policy,
    class: Class,
    binary: Option<&str>,
    mode: Option<&str>,
) -> Option<String> {
    let condition = binary.filter(|_| !systemd.refresh_skip || policy != Policy::Any);
    let option = image_policy(policy, class).filter(|_| !systemd.reads_config(class) && systemd.policy_option);
    let exec = !systemd.refresh_skip && (condition.is_some() || option.is_some() || mode.is_some());
    if condition.is_none() && !exec {
        return None;
    }
    let mut out = String::from(
        "# Written in the initrd by initrd-sysext, which merged the extensions before switch-root\n\
         # (journalctl -b -t initrd-sysext). Gone at the next boot, like everything in /run.\n[Service]\n",
    );
    if let Some(bin) = condition {
        match class {
            Class::Sysext => out.push_str(&format!("ExecCondition={bin} refresh-needed\n")),
            _ => out.push_str(&format!("ExecCondition={bin} refresh-needed --class {class}\n")),
        }
    }
    if exec {
        let mut refresh = format!("{} refresh", class.tool());
        if let Some(p) = option {
            refresh.push_str(&format!(" --image-policy={p}"));
        }
        if let Some(m) = mode {
            refresh.push_str(&format!(" --mutable={m}"));
        }
        out.push_str(&format!("ExecStart=\nExecStart={refresh}\n"));
        if option.is_some() || mode.is_some() {
            out.push_str(&format!("ExecReload=\nExecReload={refresh}\n"));
        }
    }
    Some(out)
}

/// The class's configuration drop-in, where systemd reads one (262): the image policy, and a
/// confext mutable mode that was given to us on our command line (the booted systemd-confext
/// finds the other sources itself).
pub fn conf(systemd: Systemd, policy: Policy, class: Class, layout: Option<&Layout>) -> Option<String> {
    if !systemd.reads_config(class) {
        return None;
    }
    let p = image_policy(policy, class);
    let mode = layout.filter(|l| l.choice.source == Source::Argv).map(|l| l.choice.mode);
    if p.is_none() && mode.is_none() {
        return None;
    }
    let section = match class {
        Class::Sysext => "SysExt",
        Class::Confext => "ConfExt",
    };
    let mut out = format!(
        "# Written in the initrd by initrd-sysext: the policy its merge used (rd.sysext.policy={}).\n[{section}]\n",
        policy.as_str()
    );
    if let Some(p) = p {
        out.push_str(&format!("ImagePolicy={p}\n"));
    }
    if let Some(m) = mode {
        out.push_str(&format!("Mutable={m}\n"));
    }
    Some(out)
}

/// PEM, as systemd's userspace check reads certificates (`PEM_read_X509`, the first one in a file).
pub fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// What the root's systemd-sysext can do; an unreadable one counts as the oldest (252).
pub fn detect(root: BorrowedFd) -> (Systemd, Option<&'static str>) {
    for path in SYSEXT_BINARIES {
        let Ok(fd) = open_in_root(root, path, OFlags::RDONLY | OFlags::NONBLOCK) else { continue };
        if let Ok(bytes) = read_limited(&fd, 16 << 20) {
            return (Systemd::from_binary(&bytes), Some(path));
        }
    }
    (Systemd::default(), None)
}

/// Our own binary in the booted root: where the initrd's copy runs from (dracut installs the
/// host's path), else /usr/bin. It must be an executable regular file there.
pub fn booted_binary(root: BorrowedFd) -> Option<String> {
    let here = std::env::current_exe().ok().map(|p| p.to_string_lossy().into_owned());
    here.into_iter().chain(["/usr/bin/initrd-sysext".to_string()]).find(|p| {
        open_in_root(root, p, OFlags::PATH)
            .ok()
            .and_then(|fd| fstat(fd.as_fd()).ok())
            .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_mode & 0o111 != 0)
    })
}

/// Write `content` to `run/rel` (creating directories), atomically: a reader sees the old file
/// or the new one.
fn write(run: &str, rel: &str, content: &str) -> std::io::Result<String> {
    let path = std::path::Path::new(run).join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path.to_string_lossy().into_owned())
}

/// The certificates directory below the run directory.
fn certs_dir(run: &str) -> String {
    format!("{}/{CERTS}", run.trim_end_matches('/'))
}

/// The initrd's trusted certificates that the booted root does not have (those from the
/// sysroot's /usr/lib/verity.d are there already), as `(file name, PEM)`. A PEM file is copied
/// as it is, a DER one converted.
fn certificates(trusted: &[TrustedCert], sysroot: &str) -> Vec<(String, std::io::Result<String>)> {
    let inside = format!("{}/", sysroot.trim_end_matches('/'));
    let mut files: Vec<(String, std::io::Result<String>)> = Vec::new();
    for source in trusted.iter().map(|c| c.source.as_str()).filter(|s| sysroot != "/" && !s.starts_with(&inside)) {
        let Some(name) = std::path::Path::new(source).file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        // The first directory wins a name, as in systemd's own search (/etc before /usr/lib).
        if files.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let text = std::fs::read(source).map(|bytes| match std::str::from_utf8(&bytes) {
            Ok(t) if t.contains("-----BEGIN ") => t.to_string(),
            _ => pem(&bytes),
        });
        files.push((name, text));
    }
    files
}

/// The initrd's certificates, for the booted system: the trusted ones, and the names masked
/// (revoked) there.
pub struct Certs<'a> {
    pub trusted: &'a [TrustedCert],
    pub masked: &'a [String],
}

/// Mask `name` in the run directory's verity.d (a symlink to /dev/null), as systemd reads masks:
/// it comes before the root's /usr/lib/verity.d, so a key revoked in the initrd stays revoked.
fn mask(run: &str, name: &str) -> std::io::Result<()> {
    let dir = certs_dir(run);
    std::fs::create_dir_all(&dir)?;
    let path = std::path::Path::new(&dir).join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => std::fs::remove_file(&path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink("/dev/null", path)
}

/// One class's merge, for the hand-over.
pub struct Pass<'a> {
    pub plan: &'a Plan,
    pub outcomes: &'a [(Hierarchy, Outcome)],
}

/// What the initrd decided about one class.
fn class_state(root: BorrowedFd, systemd: Systemd, pass: &Pass) -> ClassState {
    let plan = pass.plan;
    let merged = pass
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Merged { .. }))
        .filter_map(|(h, _)| {
            let dir = open_dir_in_root(root, h.dir()).ok()?;
            let m = crate::state::read(dir.as_fd(), *h).ok()??;
            Some((h.path().to_string(), m.dev))
        })
        .collect();
    let line = |d: &Decision| d.origin.as_ref().filter(|o| o.file.is_ok()).map(|o| seen_line(&d.name, o));
    let mut seen: Vec<String> =
        plan.images.iter().filter_map(|d| d.origin.as_ref().map(|o| seen_line(&d.name, o))).collect();
    seen.sort();
    // A merge decision, or a failure after the checks, means the policy admitted it; an
    // unidentified file is never taken as known.
    let mut admitted: Vec<String> = plan
        .images
        .iter()
        .filter(|d| d.kind == Some(Kind::Ddi) && (matches!(d.action, Action::Merge) || d.failed))
        .filter_map(line)
        .collect();
    admitted.sort();
    // A failure (not a rule) here, e.g. no dm-verity in the initrd, or a hierarchy the initrd
    // left to the booted system: it may do better.
    let complete = !pass.outcomes.iter().any(|(_, o)| matches!(o, Outcome::Failed { .. }))
        && !plan.images.iter().any(|d| d.failed)
        && !plan.hierarchies.iter().any(|h| h.skipped.is_some());
    let layout = plan.hierarchy(Hierarchy::Etc).and_then(|h| h.layout.as_ref());
    let mode = layout.map(|l| (l.choice.mode.to_string(), mode_argument(systemd, Some(l)).is_some()));
    ClassState { class: plan.class, complete, mode, merged, seen, admitted }
}

/// Hand over after the merge decisions. Failures are logged and never stop boot: without these
/// files the booted systemd-sysext.service and systemd-confext.service just do what they would
/// have done anyway. `found` is where the root's systemd-sysext binary is, if it has one.
#[allow(clippy::too_many_arguments)]
pub fn hand_over(
    root: BorrowedFd,
    sysroot: &str,
    run: &str,
    (systemd, found): (Systemd, Option<&str>),
    policy: Policy,
    certs: Certs,
    passes: &[Pass],
) {
    let binary = booted_binary(root);
    let classes = passes.iter().map(|p| class_state(root, systemd, p)).collect();
    let state = State { systemd, policy, classes };
    let what = match found {
        Some(path) => format!("/{path} {}", systemd.describe()),
        None => "no systemd-sysext in the root (assuming the oldest behaviour)".to_string(),
    };
    let mut wrote = Vec::new();
    if let Err(e) = write(run, STATE, &state.to_text()) {
        warn!(target: TARGET, "booted system: cannot write {run}/{STATE}: {e}; systemd-sysext.service will refresh as usual");
        return;
    }
    let mut copied = 0;
    for (name, text) in certificates(certs.trusted, sysroot) {
        match text.and_then(|t| write(&certs_dir(run), &name, &t)) {
            Ok(_) => copied += 1,
            Err(e) => warn!(target: TARGET, "booted system: cannot copy certificate {name} to {}: {e}", certs_dir(run)),
        }
    }
    if copied > 0 {
        wrote.push(format!("{copied} certificate(s) to {}", certs_dir(run)));
    }
    let mut masks = 0;
    for name in certs.masked {
        match mask(run, name) {
            Ok(()) => masks += 1,
            Err(e) => warn!(target: TARGET, "booted system: cannot mask certificate {name} in {}: {e}", certs_dir(run)),
        }
    }
    if masks > 0 {
        wrote.push(format!("{masks} mask(s) to {}", certs_dir(run)));
    }
    for pass in passes {
        let class = pass.plan.class;
        // The root's systemd has no systemd-confext (252): nothing to tell it.
        if class == Class::Confext && !systemd.confext {
            continue;
        }
        let layout = pass.plan.hierarchy(Hierarchy::Etc).and_then(|h| h.layout.as_ref());
        let mode = mode_argument(systemd, layout);
        for (rel, text, why) in [
            (conf_path(class), conf(systemd, policy, class, layout), "configuration"),
            (dropin_path(class), dropin(systemd, policy, class, binary.as_deref(), mode), "the service's conditions"),
        ] {
            let Some(text) = text else { continue };
            match write(run, &rel, &text) {
                Ok(path) => wrote.push(format!("{path} ({why})")),
                Err(e) => warn!(target: TARGET, "booted system: cannot write {run}/{rel}: {e}"),
            }
        }
    }
    wrote.insert(0, format!("{run}/{STATE}"));
    info!(target: TARGET, "booted system: {what}; policy {}: wrote {}", policy.as_str(), wrote.join(", "));
    if binary.is_none() && !systemd.refresh_skip {
        warn!(target: TARGET,
            "booted system: the root has no initrd-sysext binary to check for changes, so its systemd-sysext.service \
             will not leave this merge alone (install initrd-sysext in the root, e.g. with make install)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::identity::FileId;

    const V252: Systemd = Systemd {
        refresh_skip: false,
        config_policy: false,
        policy_option: false,
        confext: false,
        confext_config: false,
        mutable_modes: false,
    };
    const V257: Systemd = Systemd { policy_option: true, confext: true, mutable_modes: true, ..V252 };
    const V262: Systemd = Systemd {
        refresh_skip: true,
        config_policy: true,
        policy_option: true,
        confext: true,
        confext_config: true,
        mutable_modes: true,
    };

    fn dropin(systemd: Systemd, policy: Policy, binary: Option<&str>) -> Option<String> {
        super::dropin(systemd, policy, Class::Sysext, binary, None)
    }

    fn conf(systemd: Systemd, policy: Policy) -> Option<String> {
        super::conf(systemd, policy, Class::Sysext, None)
    }

    #[test]
    fn features_come_from_the_binary() {
        assert_eq!(Systemd::from_binary(b"\0merge\0refresh\0"), V252);
        assert_eq!(
            Systemd::from_binary(b"\0image-policy\0refresh\0.systemd-confext\0SYSTEMD_CONFEXT_MUTABLE_MODE\0"),
            V257
        );
        let v262 = b"x\0image-policy\0SysExt\0ConfExt\0ImagePolicy\0Skipping extension refresh because no change was \
                     found, use\0.systemd-confext\0SYSTEMD_CONFEXT_MUTABLE_MODE\0";
        assert_eq!(Systemd::from_binary(v262), V262);
        // The words alone, not as separate strings, are not the config key.
        assert!(!Systemd::from_binary(b"ImagePolicyX SysExtY").config_policy);
    }

    #[test]
    fn policies_in_systemds_syntax() {
        let p = |policy| image_policy(policy, Class::Sysext);
        assert_eq!(p(Policy::Signed), Some("root=signed+absent:usr=signed+absent:=ignore"));
        assert_eq!(p(Policy::Verity), Some("root=verity+signed+absent:usr=verity+signed+absent:=ignore"));
        assert_eq!(p(Policy::Any), None);
        // systemd's confext policy honours the root partition only.
        assert_eq!(image_policy(Policy::Signed, Class::Confext), Some("root=signed+absent:=ignore"));
        assert_eq!(image_policy(Policy::Verity, Class::Confext), Some("root=verity+signed+absent:=ignore"));
    }

    fn layout(mode: crate::mutable::Mode, source: Source) -> Layout {
        Layout {
            choice: crate::mutable::Choice { mode, source },
            upper: crate::mutable::Upper::Ephemeral,
            import: None,
            host_lower: true,
            recorded: None,
        }
    }

    #[test]
    fn systemd_confext_gets_the_policy_and_the_mode_it_would_not_find_itself() {
        use crate::mutable::Mode;
        let cfg = layout(Mode::Auto, Source::Config("/etc/systemd/confext.conf".into()));
        // 257 does not read confext.conf: the mode goes on its command line, with the policy.
        assert_eq!(mode_argument(V257, Some(&cfg)), Some("auto"));
        let d = super::dropin(V257, Policy::Signed, Class::Confext, Some("/b"), Some("auto")).unwrap();
        let refresh = "systemd-confext refresh --image-policy=root=signed+absent:=ignore --mutable=auto";
        assert!(d.contains("ExecCondition=/b refresh-needed --class confext\n"), "{d}");
        assert!(d.contains(&format!("\nExecStart=\nExecStart={refresh}\nExecReload=\nExecReload={refresh}\n")), "{d}");
        // The environment reaches systemd-confext as it reached us; the default needs nothing.
        let env = layout(Mode::Ephemeral, Source::Environment);
        assert_eq!(mode_argument(V257, Some(&env)), None);
        assert_eq!(mode_argument(V257, Some(&layout(Mode::No, Source::Default))), None);
        // 262 reads confext.conf itself, and gets a mode given to us on our command line there.
        assert_eq!(mode_argument(V262, Some(&cfg)), None);
        let argv = layout(Mode::Ephemeral, Source::Argv);
        let c = super::conf(V262, Policy::Any, Class::Confext, Some(&argv)).unwrap();
        assert!(c.ends_with("[ConfExt]\nMutable=ephemeral\n"), "{c}");
        let c = super::conf(V262, Policy::Signed, Class::Confext, Some(&cfg)).unwrap();
        assert!(c.ends_with("[ConfExt]\nImagePolicy=root=signed+absent:=ignore\n"), "{c}");
        assert_eq!(super::conf(V262, Policy::Any, Class::Confext, Some(&cfg)), None);
        assert_eq!(super::dropin(V262, Policy::Any, Class::Confext, Some("/b"), None), None);
        // 252 has no mutable modes to pass.
        assert_eq!(mode_argument(V252, Some(&cfg)), None);
    }

    #[test]
    fn systemd_252_gets_a_condition_and_refresh_instead_of_merge() {
        let d = dropin(V252, Policy::Signed, Some("/usr/bin/initrd-sysext")).unwrap();
        assert!(d.contains("\nExecCondition=/usr/bin/initrd-sysext refresh-needed\n"), "{d}");
        assert!(d.contains("\nExecStart=\nExecStart=systemd-sysext refresh\n"), "{d}");
        assert!(!d.contains("ExecReload") && !d.contains("image-policy"), "{d}");
        assert_eq!(conf(V252, Policy::Signed), None);
        // Without our binary in the root there is nothing to decide with: systemd as it is.
        assert_eq!(dropin(V252, Policy::Signed, None), None);
    }

    #[test]
    fn systemd_257_gets_the_policy_on_its_command_line() {
        let d = dropin(V257, Policy::Signed, Some("/usr/bin/initrd-sysext")).unwrap();
        let refresh = "systemd-sysext refresh --image-policy=root=signed+absent:usr=signed+absent:=ignore";
        assert!(d.contains(&format!("\nExecStart=\nExecStart={refresh}\nExecReload=\nExecReload={refresh}\n")), "{d}");
        let any = dropin(V257, Policy::Any, Some("/b")).unwrap();
        assert!(any.contains("ExecCondition=/b refresh-needed\n") && !any.contains("image-policy"), "{any}");
        // No binary: the policy still goes on systemd's command line.
        assert!(dropin(V257, Policy::Signed, None).unwrap().contains(refresh));
    }

    #[test]
    fn systemd_262_decides_itself_and_reads_the_policy_from_its_config() {
        assert_eq!(dropin(V262, Policy::Any, Some("/b")), None);
        let d = dropin(V262, Policy::Signed, Some("/b")).unwrap();
        assert!(d.contains("ExecCondition=/b refresh-needed\n") && !d.contains("ExecStart"), "{d}");
        let c = conf(V262, Policy::Verity).unwrap();
        assert!(c.ends_with("[SysExt]\nImagePolicy=root=verity+signed+absent:usr=verity+signed+absent:=ignore\n"));
        assert_eq!(conf(V262, Policy::Any), None);
    }

    #[test]
    fn state_round_trips_and_rejects_anything_else() {
        let file = FileId { mount_id: 7, handle: Some((248, vec![0, 0xab])), inode: 9, crtime_us: 1, mtime_us: 2 };
        let origin = Origin { path: "/var/lib/extensions/a b\tc.raw".into(), file: Ok(file) };
        let line = seen_line("a", &origin);
        assert_eq!(line, "a\t/var/lib/extensions/a b\\x09c.raw\tmnt=7 fh=248:00ab crtime=1 mtime=2");
        // The state keeps what the booted side needs of the binary's features.
        let systemd = Systemd { confext: false, mutable_modes: false, ..V257 };
        let state = State {
            systemd,
            policy: Policy::Signed,
            classes: vec![
                ClassState {
                    class: Class::Sysext,
                    complete: true,
                    mode: None,
                    merged: vec![("/usr".into(), (0, 49))],
                    seen: vec![line.clone()],
                    admitted: vec![line.clone()],
                },
                ClassState {
                    class: Class::Confext,
                    complete: false,
                    mode: Some(("auto".into(), true)),
                    merged: vec![("/etc".into(), (0, 50))],
                    seen: vec![line],
                    admitted: vec![],
                },
            ],
        };
        let back = State::parse(&state.to_text()).unwrap();
        assert_eq!(back, state);
        assert!(State::parse("initrd-sysext-state 1\n").is_none());
        assert!(State::parse("initrd-sysext-state 2\ncomplete yes\n").is_none(), "a class's line outside a class");
        assert!(State::parse(&format!("{}policy strict\n", state.to_text())).is_none());
    }

    #[test]
    fn pem_is_base64_in_lines_of_64() {
        assert_eq!(pem(b"Man"), "-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n");
        assert!(pem(b"Ma").contains("\nTWE=\n") && pem(b"M").contains("\nTQ==\n"));
        // What openssl writes for the same certificate, byte for byte.
        let der = include_bytes!("../tests/fixtures/signing/trusted.der");
        assert_eq!(pem(der), include_str!("../tests/fixtures/signing/trusted.crt"));
    }
}
