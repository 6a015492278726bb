//! In the booted system, as `ExecCondition=` of systemd-sysext.service and systemd-confext.service
//! (see src/handover.rs): does systemd need to refresh, or is the initrd's merge still exactly
//! what it would make? systemd before 260 cannot tell and always unmerges and merges again,
//! remounting /usr or /etc while early services start; systemd 252 has no image policy at all.
//!
//! It refuses (exit 1, systemd skips the unit) when an image present is refused by the policy
//! the initrd used: systemd would merge it (252) or fail the whole refresh on it (257, 262).
//! Otherwise, where systemd cannot skip an unchanged refresh itself, it refuses when every image
//! is the same file at the same place, through the same mount, as the initrd saw, and the
//! hierarchies still carry the initrd's overlays. Anything else, or any doubt, lets systemd run.

use std::os::fd::{AsFd, OwnedFd};

use crate::class::Class;
use crate::cmdline::{Policy, MUTABLE_ENV};
use crate::discover::{self, Found, Object};
use crate::handover::{self, ClassState, State};
use crate::mutable::Mode;
use crate::pipeline;
use crate::plan;
use crate::sys::fs::open_dir_in_root;
use crate::verify::x509::TrustedCert;
use crate::verify::{certificates, evidence, Kind, Trust};

/// What systemd-sysext.service should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Refresh(String),
    Leave(String),
}

/// Whether the policy admits this image, from its evidence alone (nothing is mounted).
fn admitted(root: &OwnedFd, f: &Found, class: Class, policy: Policy, trusted: &[TrustedCert]) -> Result<(), String> {
    let trust = match &f.object {
        Ok(Object::Dir(_)) => Trust::none(),
        Ok(object @ Object::File(fd)) => {
            let kind = pipeline::identify(object, f.size)?;
            if kind == Kind::Directory {
                Trust::none()
            } else {
                pipeline::examine(root, f, fd, kind, class, trusted)?.0
            }
        }
        Err(e) => return Err(e.clone()),
    };
    plan::admit(policy, &trust).map(|_| ())
}

/// A DDI the initrd admitted and still the same file: its verdict stands without checking its
/// signature again (seconds under emulation). Its sidecars are looked up as the full check does:
/// a broken one refuses any image.
fn still_admitted(root: &OwnedFd, f: &Found, admitted: &[String]) -> bool {
    f.origin.as_ref().is_some_and(|o| o.file.is_ok() && admitted.contains(&handover::seen_line(&f.name, o)))
        && evidence::sidecars(root.as_fd(), &f.path, f.target.as_deref()).is_ok()
}

/// Images present now that the policy refuses, as "NAME (PATH): reason; what systemd would do".
fn refused(root: &OwnedFd, found: &[Found], class: Class, state: &State, run: &str, root_path: &str) -> Vec<String> {
    let known = state.class(class).map_or(&[][..], |c| c.admitted.as_slice());
    let pending: Vec<&Found> = found.iter().filter(|f| f.origin.is_some() && !still_admitted(root, f, known)).collect();
    if pending.is_empty() {
        return Vec::new();
    }
    let mut notes = Vec::new();
    let certs = format!("{}/verity.d", run.trim_end_matches('/'));
    let trusted = certificates::load(&[certs], root.as_fd(), root_path, &mut notes).trusted;
    // systemd applies an image policy to image files only, never to directories.
    let enforced = state.systemd.config_policy || state.systemd.policy_option;
    let tool = class.tool();
    pending
        .into_iter()
        .filter_map(|f| {
            let e = admitted(root, f, class, state.policy, &trusted).err()?;
            let would = match f.object {
                Ok(Object::File(_)) if enforced => format!("{tool} would fail the whole refresh on it"),
                _ => format!("{tool} would merge it"),
            };
            Some(format!("{} ({}): {e}; {would}", f.name, f.path))
        })
        .collect()
}

/// systemd-sysext's mutable mode from the unit's environment: anything but "no" is a different
/// merge from our read-only one.
fn mutable_requested() -> bool {
    std::env::var("SYSTEMD_SYSEXT_MUTABLE_MODE").is_ok_and(|v| Mode::parse(&v) != Some(Mode::No))
}

/// Whether systemd-confext would merge with another mode than the initrd: its command line has
/// the initrd's mode when the drop-in put it there; else its environment decides, or `no`.
fn other_mode(c: &ClassState) -> Option<String> {
    let (mode, on_argv) = c.mode.as_ref()?;
    if *on_argv {
        return None;
    }
    let theirs = std::env::var(MUTABLE_ENV).ok().and_then(|v| Mode::parse(&v)).unwrap_or(Mode::No);
    (theirs.as_str() != mode)
        .then(|| format!("systemd-confext would merge with mutable mode {theirs}, the initrd merged with {mode}"))
}

fn names(lines: &[String]) -> Vec<&str> {
    lines.iter().map(|l| l.split('\t').next().unwrap_or_default()).collect()
}

/// "added a, b; removed c; replaced d" between the initrd's view and now.
fn difference(then: &[String], now: &[String]) -> String {
    let (old, new) = (names(then), names(now));
    let added: Vec<&str> = new.iter().filter(|n| !old.contains(n)).copied().collect();
    let removed: Vec<&str> = old.iter().filter(|n| !new.contains(n)).copied().collect();
    let replaced: Vec<&str> = now
        .iter()
        .filter(|l| !then.contains(l))
        .map(|l| names(std::slice::from_ref(l))[0])
        .filter(|n| old.contains(n))
        .collect();
    [("added", added), ("removed", removed), ("replaced or touched", replaced)]
        .iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(what, list)| format!("{what} {}", list.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The decision about the class's service, for the root at `root_path` whose /run is `run`.
pub fn check(root_path: &str, run: &str, class: Class) -> Verdict {
    let path = format!("{}/{}", run.trim_end_matches('/'), handover::STATE);
    let state = match std::fs::read_to_string(&path) {
        Ok(text) => match State::parse(&text) {
            Some(s) => s,
            None => return Verdict::Refresh(format!("{path} is not in a format this binary knows")),
        },
        Err(e) => return Verdict::Refresh(format!("no state from the initrd ({path}: {e})")),
    };
    let root = match pipeline::open_root(root_path) {
        Ok(fd) => fd,
        Err(e) => return Verdict::Refresh(e.to_string()),
    };
    let found = discover::discover(root.as_fd(), class, &mut Vec::new());
    if state.policy != Policy::Any {
        let refused = refused(&root, &found, class, &state, run, root_path);
        if !refused.is_empty() {
            return Verdict::Leave(format!(
                "policy {} (from the initrd) refuses {}; leaving the initrd's merge as it is",
                state.policy.as_str(),
                refused.join("; ")
            ));
        }
    }
    let tool = class.tool();
    if state.systemd.refresh_skip {
        return Verdict::Refresh(format!("{tool} compares the merge with the images itself"));
    }
    let Some(c) = state.class(class) else {
        return Verdict::Refresh(format!("the initrd did not decide about {}s", class.name()));
    };
    let hierarchies_env = match class {
        Class::Sysext => "SYSTEMD_SYSEXT_HIERARCHIES",
        Class::Confext => "SYSTEMD_CONFEXT_HIERARCHIES",
    };
    if std::env::var_os(hierarchies_env).is_some() || class == Class::Sysext && mutable_requested() {
        return Verdict::Refresh(format!("{tool} is set up for other hierarchies or a mutable merge"));
    }
    if let Some(why) = other_mode(c) {
        return Verdict::Refresh(why);
    }
    if !c.complete {
        return Verdict::Refresh("the initrd could not merge everything it admitted".into());
    }
    let merged: Vec<(String, (u32, u32))> = class
        .hierarchies()
        .iter()
        .filter_map(|h| {
            let dir = open_dir_in_root(root.as_fd(), h.dir()).ok()?;
            let m = crate::state::read(dir.as_fd(), *h).ok()??;
            Some((h.path().to_string(), m.dev))
        })
        .collect();
    if merged != c.merged {
        return Verdict::Refresh("the hierarchies no longer carry the initrd's merge".into());
    }
    let mut now: Vec<String> =
        found.iter().filter_map(|f| f.origin.as_ref().map(|o| handover::seen_line(&f.name, o))).collect();
    now.sort();
    if now == c.seen {
        return Verdict::Leave(format!(
            "the {} image(s) are unchanged since the initrd merged them: nothing to refresh",
            c.seen.len()
        ));
    }
    Verdict::Refresh(format!("the images changed since the initrd ({})", difference(&c.seen, &now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::{seen_line, Systemd};

    /// A root with one file that is no image at all, and the initrd's state for it under policy
    /// signed: admitted as a DDI, or only seen. The booted systemd skips an unchanged refresh
    /// itself, so the only question left is whether the policy refuses the file.
    fn verdict_for_garbage(dir: &std::path::Path, admitted: bool, touch: bool) -> Verdict {
        let (root, run) = (dir.join("root"), dir.join("run"));
        std::fs::create_dir_all(root.join("var/lib/extensions")).unwrap();
        std::fs::create_dir_all(run.join("initrd-sysext")).unwrap();
        let image = root.join("var/lib/extensions/x.raw");
        std::fs::write(&image, b"no image").unwrap();
        let fd = pipeline::open_root(root.to_str().unwrap()).unwrap();
        let found = discover::discover(fd.as_fd(), Class::Sysext, &mut Vec::new());
        let line = seen_line(&found[0].name, found[0].origin.as_ref().unwrap());
        let class = ClassState {
            class: Class::Sysext,
            complete: true,
            mode: None,
            merged: vec![],
            seen: vec![line.clone()],
            admitted: if admitted { vec![line] } else { vec![] },
        };
        let systemd = Systemd { refresh_skip: true, ..Systemd::default() };
        let state = State { systemd, policy: Policy::Signed, classes: vec![class] };
        std::fs::write(run.join(handover::STATE), state.to_text()).unwrap();
        if touch {
            std::fs::File::options()
                .write(true)
                .open(&image)
                .unwrap()
                .set_modified(std::time::SystemTime::UNIX_EPOCH)
                .unwrap();
        }
        check(root.to_str().unwrap(), run.to_str().unwrap(), Class::Sysext)
    }

    #[test]
    fn an_unchanged_admitted_image_is_not_examined_again() {
        let dir = std::env::temp_dir().join(format!("initrd-sysext-refresh-{}", std::process::id()));
        let refused =
            |v: &Verdict| matches!(v, Verdict::Leave(why) if why.contains("refuses x (/var/lib/extensions/x.raw): "));
        // Not admitted by the initrd, or changed since: examined, and refused (it is no image).
        assert!(refused(&verdict_for_garbage(&dir.join("seen"), false, false)));
        assert!(refused(&verdict_for_garbage(&dir.join("touched"), true, true)));
        // The initrd's verdict, for the very same file, stands.
        let v = verdict_for_garbage(&dir.join("same"), true, false);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(v, Verdict::Refresh("systemd-sysext compares the merge with the images itself".into()));
    }

    #[test]
    fn differences_are_named() {
        let then = vec!["a\t/x/a.raw\tmnt=1".to_string(), "b\t/x/b.raw\tmnt=1".to_string()];
        let now = vec!["b\t/x/b.raw\tmnt=2".to_string(), "c\t/x/c.raw\tmnt=1".to_string()];
        assert_eq!(difference(&then, &now), "added c; removed a; replaced or touched b");
    }
}
