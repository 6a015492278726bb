//! Step 8: hand the merge over to the booted system, in systemd's own terms. The initrd's /run
//! becomes the booted system's /run (systemd's switch-root and initramfs-tools both carry it
//! over), so what we write there is read by the booted PID 1 and systemd-sysext:
//!
//! - `/run/initrd-sysext/state`: what the initrd saw and merged, for `initrd-sysext
//!   refresh-needed` (src/refresh_check.rs) to compare with what is there at boot;
//! - `/run/systemd/system/systemd-sysext.service.d/initrd-sysext.conf`: where the root's
//!   systemd-sysext has no refresh skip of its own (before 260), an `ExecCondition=` running
//!   that comparison, `refresh` instead of 252's `merge`, and `--image-policy=` where that is
//!   the only way to pass the policy (257);
//! - `/run/systemd/sysext.conf.d/initrd-sysext.conf`: `ImagePolicy=` where systemd-sysext
//!   reads it (262);
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

use crate::cmdline::Policy;
use crate::discover::Origin;
use crate::plan::Outcome;
use crate::plan::{Hierarchy, Plan};
use crate::report::TARGET;
use crate::sys::fs::{open_dir_in_root, open_in_root, read_limited};
use crate::verify::hex;
use crate::verify::x509::TrustedCert;

/// Where systemd keeps systemd-sysext, inside the root.
const SYSEXT_BINARIES: [&str; 2] = ["usr/bin/systemd-sysext", "usr/lib/systemd/systemd-sysext"];
/// The state file, below the run directory.
pub const STATE: &str = "initrd-sysext/state";
const DROPIN: &str = "systemd/system/systemd-sysext.service.d/initrd-sysext.conf";
const CONF: &str = "systemd/sysext.conf.d/initrd-sysext.conf";
const CERTS: &str = "verity.d";
const STATE_HEADER: &str = "initrd-sysext-state 1";

/// What the root's systemd-sysext does, as far as our merge is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Systemd {
    /// `refresh` leaves an unchanged merge alone (systemd ≥ 260, `.systemd-sysext/origin`).
    pub refresh_skip: bool,
    /// `ImagePolicy=` in `[SysExt]` of sysext.conf (262).
    pub config_policy: bool,
    /// `--image-policy=` on the command line (257).
    pub policy_option: bool,
}

impl Systemd {
    /// From the systemd-sysext binary's bytes: the message of the refresh skip, the config
    /// key next to its section name, the option name.
    pub fn from_binary(bytes: &[u8]) -> Systemd {
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        Systemd {
            refresh_skip: has(b"Skipping extension refresh because no change was found"),
            config_policy: has(b"ImagePolicy\0") && has(b"SysExt\0"),
            policy_option: has(b"image-policy\0"),
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
/// DDI may carry `usr` instead); `absent` lets the other one be missing; partitions we never
/// merge are ignored. `any` is systemd's default for sysext, so nothing is written for it.
pub fn image_policy(policy: Policy) -> Option<&'static str> {
    match policy {
        Policy::Signed => Some("root=signed+absent:usr=signed+absent:=ignore"),
        // "signed" too: a signature that does not verify still passes on its verity, as ours does.
        Policy::Verity => Some("root=verity+signed+absent:usr=verity+signed+absent:=ignore"),
        Policy::Any => None,
    }
}

/// What the initrd decided, for the booted side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub systemd: Systemd,
    pub policy: Policy,
    /// Every hierarchy that had something to merge was merged.
    pub complete: bool,
    /// `/usr` or `/opt` with the overlay's `MAJOR:MINOR`.
    pub merged: Vec<(String, (u32, u32))>,
    /// Every image found, one canonical line each (see `seen_line`), sorted.
    pub seen: Vec<String>,
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
            "{STATE_HEADER}\nrefresh-skip {}\npolicy-config {}\npolicy-option {}\npolicy {}\ncomplete {}\n",
            yes(self.systemd.refresh_skip),
            yes(self.systemd.config_policy),
            yes(self.systemd.policy_option),
            self.policy.as_str(),
            yes(self.complete)
        );
        for (h, (major, minor)) in &self.merged {
            out.push_str(&format!("merged {h} {major}:{minor}\n"));
        }
        for line in &self.seen {
            out.push_str(&format!("image {line}\n"));
        }
        out
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
        let mut state = State {
            systemd: Systemd::default(),
            policy: Policy::Any,
            complete: false,
            merged: Vec::new(),
            seen: Vec::new(),
        };
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "refresh-skip" => state.systemd.refresh_skip = flag(value)?,
                "policy-config" => state.systemd.config_policy = flag(value)?,
                "policy-option" => state.systemd.policy_option = flag(value)?,
                "complete" => state.complete = flag(value)?,
                "policy" => {
                    state.policy = match value {
                        "signed" => Policy::Signed,
                        "verity" => Policy::Verity,
                        "any" => Policy::Any,
                        _ => return None,
                    }
                }
                "merged" => {
                    let (h, dev) = value.split_once(' ')?;
                    state.merged.push((h.to_string(), crate::state::parse_dev(dev)?));
                }
                "image" => state.seen.push(value.to_string()),
                _ => return None,
            }
        }
        Some(state)
    }
}

/// The unit drop-in, or `None` when systemd needs none. `binary` is our binary's path in the
/// booted system, `None` if the root has none (then no condition: systemd refreshes as it would).
pub fn dropin(systemd: Systemd, policy: Policy, binary: Option<&str>) -> Option<String> {
    let condition = binary.filter(|_| !systemd.refresh_skip || policy != Policy::Any);
    let option = image_policy(policy).filter(|_| !systemd.config_policy && systemd.policy_option);
    let exec = !systemd.refresh_skip && (condition.is_some() || option.is_some());
    if condition.is_none() && !exec {
        return None;
    }
    let mut out = String::from(
        "# Written in the initrd by initrd-sysext, which merged the extensions before switch-root\n\
         # (journalctl -b -t initrd-sysext). Gone at the next boot, like everything in /run.\n[Service]\n",
    );
    if let Some(bin) = condition {
        out.push_str(&format!("ExecCondition={bin} refresh-needed\n"));
    }
    if exec {
        let refresh = match option {
            Some(p) => format!("systemd-sysext refresh --image-policy={p}"),
            None => "systemd-sysext refresh".to_string(),
        };
        out.push_str(&format!("ExecStart=\nExecStart={refresh}\n"));
        if option.is_some() {
            out.push_str(&format!("ExecReload=\nExecReload={refresh}\n"));
        }
    }
    Some(out)
}

/// sysext.conf drop-in with the image policy, where systemd-sysext reads one.
pub fn conf(systemd: Systemd, policy: Policy) -> Option<String> {
    let p = image_policy(policy).filter(|_| systemd.config_policy)?;
    Some(format!(
        "# Written in the initrd by initrd-sysext: the policy its merge used (rd.sysext.policy={}).\n\
         [SysExt]\nImagePolicy={p}\n",
        policy.as_str()
    ))
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

/// Hand over after a merge decision. Failures are logged and never stop boot: without these
/// files the booted systemd-sysext.service just does what it would have done anyway.
pub fn hand_over(
    root: BorrowedFd,
    sysroot: &str,
    run: &str,
    policy: Policy,
    certs: Certs,
    plan: &Plan,
    outcomes: &[(Hierarchy, Outcome)],
) {
    let (systemd, found) = detect(root);
    let binary = booted_binary(root);
    let merged = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Merged { .. }))
        .filter_map(|(h, _)| {
            let dir = open_dir_in_root(root, h.dir()).ok()?;
            let m = crate::state::read(dir.as_fd()).ok()??;
            Some((h.path().to_string(), m.dev))
        })
        .collect();
    let mut seen: Vec<String> =
        plan.images.iter().filter_map(|d| d.origin.as_ref().map(|o| seen_line(&d.name, o))).collect();
    seen.sort();
    // A failure (not a rule) here, e.g. no dm-verity in the initrd: the booted system may retry.
    let complete =
        !outcomes.iter().any(|(_, o)| matches!(o, Outcome::Failed { .. })) && !plan.images.iter().any(|d| d.failed);
    let state = State { systemd, policy, complete, merged, seen };
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
    for (rel, text, why) in [
        (CONF, conf(systemd, policy), "ImagePolicy="),
        (DROPIN, dropin(systemd, policy, binary.as_deref()), "the service's conditions"),
    ] {
        let Some(text) = text else { continue };
        match write(run, rel, &text) {
            Ok(path) => wrote.push(format!("{path} ({why})")),
            Err(e) => warn!(target: TARGET, "booted system: cannot write {run}/{rel}: {e}"),
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

    const V252: Systemd = Systemd { refresh_skip: false, config_policy: false, policy_option: false };
    const V257: Systemd = Systemd { refresh_skip: false, config_policy: false, policy_option: true };
    const V262: Systemd = Systemd { refresh_skip: true, config_policy: true, policy_option: true };

    #[test]
    fn features_come_from_the_binary() {
        assert_eq!(Systemd::from_binary(b"\0merge\0refresh\0"), V252);
        assert_eq!(Systemd::from_binary(b"\0image-policy\0refresh\0"), V257);
        let v262 = b"x\0image-policy\0SysExt\0ImagePolicy\0Skipping extension refresh because no change was found, use";
        assert_eq!(Systemd::from_binary(v262), V262);
        // The words alone, not as separate strings, are not the config key.
        assert!(!Systemd::from_binary(b"ImagePolicyX SysExtY").config_policy);
    }

    #[test]
    fn policies_in_systemds_syntax() {
        assert_eq!(image_policy(Policy::Signed), Some("root=signed+absent:usr=signed+absent:=ignore"));
        assert_eq!(image_policy(Policy::Verity), Some("root=verity+signed+absent:usr=verity+signed+absent:=ignore"));
        assert_eq!(image_policy(Policy::Any), None);
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
        let state = State {
            systemd: V257,
            policy: Policy::Signed,
            complete: true,
            merged: vec![("/usr".into(), (0, 49))],
            seen: vec![line],
        };
        let back = State::parse(&state.to_text()).unwrap();
        assert_eq!(back, state);
        assert!(State::parse("initrd-sysext-state 2\n").is_none());
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
