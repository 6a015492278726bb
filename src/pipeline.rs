//! The boot flow, one step per module: cmdline → discover → verify → validate (inspect) → plan →
//! apply → report. `prepare` gathers plain data and builds the plan; `merge` applies it.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use rustix::fs::{fstat, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::apply::{self, Faults, Outcome, Staged, Target};
use crate::cmdline::{self, Selection};
use crate::discover::{self, Object};
use crate::error::{Context, Result};
use crate::inspect;
use crate::plan::{self, Hierarchy, HierarchyState, ImageInput, Inputs, Plan};
use crate::release;
use crate::report;
use crate::sys::fs::{
    describe_type, open_dir_in_root, open_in_root, read_limited, real_path, reopen_read,
};
use crate::validate::{native_architecture, Host};
use crate::verify::{self, Kind};

pub struct Options {
    pub sysroot: String,
    pub cmdline: String,
    pub report: String,
    pub json: bool,
}

pub struct Prepared {
    pub root: OwnedFd,
    pub plan: Plan,
    pub staged: HashMap<String, Staged>,
    pub targets: Vec<Target>,
    pub faults: Faults,
}

pub fn open_root(sysroot: &str) -> Result<OwnedFd> {
    rustix::fs::open(
        sysroot,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening the sysroot {sysroot}"))
}

/// The root's os-release: /etc first, then /usr/lib, as systemd reads it.
fn host(root: &OwnedFd) -> std::result::Result<Host, String> {
    for p in ["etc/os-release", "usr/lib/os-release"] {
        let Ok(fd) = open_in_root(root.as_fd(), p, OFlags::RDONLY | OFlags::NONBLOCK) else {
            continue;
        };
        let bytes = read_limited(&fd, release::MAX_SIZE).map_err(|e| format!("/{p}: {e}"))?;
        let info = release::parse(&bytes).map_err(|e| format!("/{p} {e}"))?;
        return Host::from_release(&info, native_architecture()).map_err(|e| format!("/{p}: {e}"));
    }
    Err("neither /etc/os-release nor /usr/lib/os-release exists".into())
}

fn target(root: &OwnedFd, h: Hierarchy) -> Result<Target> {
    let path = format!(
        "{}/{}",
        real_path(root.as_fd())?.trim_end_matches('/'),
        h.dir()
    );
    let (fd, state) = match open_in_root(root.as_fd(), h.dir(), OFlags::PATH) {
        Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => (None, HierarchyState::Missing),
        Err(e) => (
            None,
            HierarchyState::Unusable {
                reason: format!("{path}: {e}"),
            },
        ),
        Ok(fd) => {
            let st = fstat(&fd).with_context(|| format!("stat {path}"))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                let reason = format!("{path} is a {}, not a directory", describe_type(st.st_mode));
                (None, HierarchyState::Unusable { reason })
            } else {
                let dir = open_dir_in_root(root.as_fd(), h.dir())
                    .with_context(|| format!("opening {path}"))?;
                match crate::state::read(dir.as_fd())
                    .with_context(|| format!("reading the merge state of {path}"))?
                {
                    Some(m) => (
                        Some(fd),
                        HierarchyState::Merged {
                            extensions: m.extensions,
                        },
                    ),
                    None => (Some(fd), HierarchyState::Ready),
                }
            }
        }
    };
    Ok(Target {
        hierarchy: h,
        path,
        fd,
        state,
    })
}

/// Step 3: the kind of a found object, or why it is not an image.
fn identify(object: &Object, size: u64) -> std::result::Result<Kind, String> {
    let fd = match object {
        Object::Dir(_) => return Ok(Kind::Directory),
        Object::File(fd) => reopen_read(fd.as_fd()).map_err(|e| format!("cannot open: {e}"))?,
    };
    let mut head = vec![0u8; verify::HEAD_LEN];
    let n = rustix::io::pread(&fd, &mut head[..], 0)
        .map_err(|e| format!("cannot read: {}", std::io::Error::from(e)))?;
    verify::identify(&head[..n], size)
}

pub fn prepare(opts: &Options) -> Result<Prepared> {
    let faults = Faults::from_env();
    let root = open_root(&opts.sysroot)?;
    let mut notes = Vec::new();
    let cmdline = match std::fs::read_to_string(&opts.cmdline) {
        Ok(text) => cmdline::parse(&text),
        Err(e) => {
            notes.push(format!(
                "cannot read {}: {e}; using the defaults",
                opts.cmdline
            ));
            cmdline::parse("")
        }
    };
    let targets = Hierarchy::ALL
        .iter()
        .map(|h| target(&root, *h))
        .collect::<Result<Vec<_>>>()?;
    let hierarchies: Vec<_> = targets
        .iter()
        .map(|t| (t.hierarchy, t.state.clone()))
        .collect();
    let bases: Vec<_> = targets
        .iter()
        .filter_map(|t| t.fd.as_ref().map(|fd| (t.hierarchy, fd.as_fd())))
        .collect();
    // Opening images costs a loop device and a mount each: only do it if they could be merged.
    let open_images = !matches!(cmdline.selection, Selection::Disabled { .. })
        && plan::already_merged(&hierarchies).is_none();

    let mut staged = HashMap::new();
    let mut images = Vec::new();
    for found in discover::discover(root.as_fd(), &mut notes) {
        let kind = found
            .object
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|o| identify(o, found.size));
        let facts = match (&found.object, &kind) {
            (Ok(object), Ok(k))
                if *k != Kind::Ddi && open_images && plan::selected(&cmdline, &found.name) =>
            {
                let facts = apply::stage(object, *k, &faults).and_then(|s| {
                    let f = inspect::inspect(s.mount.as_fd(), &found.name, &bases);
                    staged.insert(found.name.clone(), s);
                    f
                });
                Some(facts.map_err(|e| e.to_string()))
            }
            _ => None,
        };
        images.push(ImageInput {
            name: found.name,
            path: found.path,
            target: found.target,
            size: found.size,
            kind,
            facts,
        });
    }
    let mut plan = plan::build(&Inputs {
        cmdline,
        host: host(&root),
        hierarchies,
        images,
    });
    plan.notes.splice(0..0, notes);
    // Images we will not merge let go of their loop devices now.
    staged.retain(|name, _| plan.merged_names().contains(name));
    Ok(Prepared {
        root,
        plan,
        staged,
        targets,
        faults,
    })
}

/// The whole merge. Returns whether every hierarchy that had something to merge got merged.
pub fn merge(opts: &Options) -> Result<bool> {
    let start = Instant::now();
    let mut p = prepare(opts)?;
    let outcomes = apply::apply(
        &mut p.plan,
        &p.staged,
        p.root.as_fd(),
        &mut p.targets,
        &p.faults,
    );
    let took = |name: &str| p.staged.get(name).map(|s| s.took);
    report::log_merge(&p.plan, &outcomes, &took);
    let total = start.elapsed();
    let merged = p.plan.merged_names().len();
    log::info!(target: report::TARGET, "done in {} ms: {merged} merged, {} skipped", total.as_millis(), p.plan.images.len() - merged);
    let doc = report::to_json(&opts.sysroot, &p.plan, Some(&outcomes), Some(total));
    if let Err(e) = report::write_report(&opts.report, &doc) {
        log::warn!(target: report::TARGET, "cannot write {}: {e}", opts.report);
    }
    Ok(!outcomes
        .iter()
        .any(|(_, o)| matches!(o, Outcome::Failed { .. })))
}
