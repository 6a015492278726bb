//! In the booted system, as `ExecCondition=` of systemd-sysext.service (see src/handover.rs):
//! does systemd-sysext need to refresh, or is the initrd's merge still exactly what it would
//! make? systemd before 260 cannot tell and always unmerges and merges again, remounting /usr
//! while early services start; systemd 252 has no image policy at all.
//!
//! It refuses (exit 1, systemd skips the unit) when an image present is refused by the policy
//! the initrd used: systemd would merge it (252) or fail the whole refresh on it (257, 262).
//! Otherwise, where systemd cannot skip an unchanged refresh itself, it refuses when every image
//! is the same file at the same place, through the same mount, as the initrd saw, and the
//! hierarchies still carry the initrd's overlays. Anything else, or any doubt, lets systemd run.

use std::os::fd::{AsFd, OwnedFd};

use crate::cmdline::Policy;
use crate::discover::{self, Found, Object};
use crate::handover::{self, State};
use crate::pipeline;
use crate::plan::{self, Hierarchy};
use crate::sys::fs::open_dir_in_root;
use crate::verify::x509::TrustedCert;
use crate::verify::{certificates, Kind, Trust};

/// What systemd-sysext.service should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Refresh(String),
    Leave(String),
}

/// Whether the policy admits this image, from its evidence alone (nothing is mounted).
fn admitted(root: &OwnedFd, f: &Found, policy: Policy, trusted: &[TrustedCert]) -> Result<(), String> {
    let trust = match &f.object {
        Ok(Object::Dir(_)) => Trust::none(),
        Ok(object @ Object::File(fd)) => {
            let kind = pipeline::identify(object, f.size)?;
            if kind == Kind::Directory {
                Trust::none()
            } else {
                pipeline::examine(root, f, fd, kind, trusted)?.0
            }
        }
        Err(e) => return Err(e.clone()),
    };
    plan::admit(policy, &trust).map(|_| ())
}

/// Images present now that the policy refuses, as "NAME (PATH): reason; what systemd would do".
fn refused(root: &OwnedFd, found: &[Found], state: &State, run: &str, root_path: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let certs = format!("{}/verity.d", run.trim_end_matches('/'));
    let trusted = certificates::load(&[certs], root.as_fd(), root_path, &mut notes).trusted;
    // systemd applies an image policy to image files only, never to directories.
    let enforced = state.systemd.config_policy || state.systemd.policy_option;
    found
        .iter()
        .filter(|f| f.origin.is_some())
        .filter_map(|f| {
            let e = admitted(root, f, state.policy, &trusted).err()?;
            let would = match f.object {
                Ok(Object::File(_)) if enforced => "systemd-sysext would fail the whole refresh on it",
                _ => "systemd-sysext would merge it",
            };
            Some(format!("{} ({}): {e}; {would}", f.name, f.path))
        })
        .collect()
}

/// systemd's mutable mode from the unit's environment: anything but "no" is a different merge.
fn mutable_requested() -> bool {
    std::env::var("SYSTEMD_SYSEXT_MUTABLE_MODE")
        .is_ok_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "no" | "0" | "false" | "off" | "n" | "f"))
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

/// The decision, for the root at `root_path` whose /run is `run`.
pub fn check(root_path: &str, run: &str) -> Verdict {
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
    let found = discover::discover(root.as_fd(), &mut Vec::new());
    if state.policy != Policy::Any {
        let refused = refused(&root, &found, &state, run, root_path);
        if !refused.is_empty() {
            return Verdict::Leave(format!(
                "policy {} (from the initrd) refuses {}; leaving the initrd's merge as it is",
                state.policy.as_str(),
                refused.join("; ")
            ));
        }
    }
    if state.systemd.refresh_skip {
        return Verdict::Refresh("systemd-sysext compares the merge with the images itself".into());
    }
    if std::env::var_os("SYSTEMD_SYSEXT_HIERARCHIES").is_some() || mutable_requested() {
        return Verdict::Refresh("systemd-sysext is set up for other hierarchies or a mutable merge".into());
    }
    if !state.complete {
        return Verdict::Refresh("the initrd could not merge everything it admitted".into());
    }
    let merged: Vec<(String, (u32, u32))> = Hierarchy::ALL
        .iter()
        .filter_map(|h| {
            let dir = open_dir_in_root(root.as_fd(), h.dir()).ok()?;
            let m = crate::state::read(dir.as_fd()).ok()??;
            Some((h.path().to_string(), m.dev))
        })
        .collect();
    if merged != state.merged {
        return Verdict::Refresh("the hierarchies no longer carry the initrd's merge".into());
    }
    let mut now: Vec<String> =
        found.iter().filter_map(|f| f.origin.as_ref().map(|o| handover::seen_line(&f.name, o))).collect();
    now.sort();
    if now == state.seen {
        return Verdict::Leave(format!(
            "the {} image(s) are unchanged since the initrd merged them: nothing to refresh",
            state.seen.len()
        ));
    }
    Verdict::Refresh(format!("the images changed since the initrd ({})", difference(&state.seen, &now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let then = vec!["a\t/x/a.raw\tmnt=1".to_string(), "b\t/x/b.raw\tmnt=1".to_string()];
        let now = vec!["b\t/x/b.raw\tmnt=2".to_string(), "c\t/x/c.raw\tmnt=1".to_string()];
        assert_eq!(difference(&then, &now), "added c; removed a; replaced or touched b");
    }
}
