//! The boot flow, one step per module: cmdline → discover → verify → validate (inspect) → plan →
//! apply → report, once per image class: sysexts, then confexts (so that confexts a sysext
//! ships in /usr/lib/confexts are found). `context` reads what both passes share (the command
//! line, the certificates); `prepare` gathers plain data and builds a class's plan; `merge`
//! applies each in turn, then reports and hands over once.
//!
//! The slow reads run beside the rest, on threads of their own: the sysexts are found while the
//! certificates are read, and each image's clash check runs from its mount on while the plan is
//! made and the overlay is built. That plan assumes no clash (nearly always so); apply takes the
//! checks in before it attaches anything, and builds again without an image they refused.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use rustix::fs::{fstat, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::apply::{self, Faults, Stageable, Staged, Target};
use crate::class::Class;
use crate::cmdline::{self, Cmdline, Policy, Selection};
use crate::discover::{self, Found, Object};
use crate::error::{Context as _, Result};
use crate::etc;
use crate::handover::{self, Systemd};
use crate::inspect;
use crate::parallel::{self, Feed, Later};
use crate::plan::{self, Hierarchy, HierarchyState, ImageInput, Inputs, Outcome, Plan};
use crate::release;
use crate::report;
use crate::sys::fs::{describe_type, open_dir_in_root, open_in_root, read_limited, real_path, reopen_read};
use crate::timeline;
use crate::validate::{native_architecture, Conflict, Host};
use crate::verify::evidence::{self, Source};
use crate::verify::x509::TrustedCert;
use crate::verify::{self, certificates, Kind, Trust};

pub struct Options {
    pub sysroot: String,
    pub cmdline: String,
    /// The initrd's certificate directories; the sysroot's `/usr/lib/verity.d` is always added.
    pub cert_dirs: Vec<String>,
    pub report: String,
    /// The initrd's /run, which becomes the booted system's: where the handover goes.
    pub run: String,
    pub json: bool,
    /// `--mutable=MODE`: the confext mutable mode, over every other source.
    pub mutable: Option<String>,
    /// `refresh-needed --class`: the service asking.
    pub class: Class,
}

/// What both passes share.
pub struct Shared {
    pub root: OwnedFd,
    pub cmdline: Cmdline,
    pub faults: Faults,
    pub policy: Policy,
    pub trusted: Vec<TrustedCert>,
    /// Certificate names masked in the initrd, for the booted system.
    pub masked: Vec<String>,
    /// What the root's systemd-sysext (and -confext) can do, and where it is: read from its
    /// ~100 KB binary on a thread of its own while the images are looked at.
    pub systemd: Later<(Systemd, Option<&'static str>)>,
    /// Lines for the log that belong to no class (the command line's, the certificates').
    pub notes: Vec<String>,
    /// The sysexts and discovery's notes, looked for on a thread of their own from the start;
    /// the sysext pass takes them.
    sysexts: Option<Later<Discovered>>,
}

/// What discovery found, and its notes.
type Discovered = (Vec<Found>, Vec<String>);
/// What one image's clash check found, or why it could not look.
type Walked = std::result::Result<Vec<Conflict>, String>;

/// One class's plan, and what applying it needs.
pub struct Prepared {
    /// Made before the clash checks are in, as if they find nothing (they nearly always do):
    /// `pending` says what they found.
    pub plan: Plan,
    pub staged: HashMap<String, Staged>,
    pub targets: Vec<Target>,
    /// A decision was made here (not disabled, not merged before us): hand it over.
    pub decided: bool,
    pub pending: Option<Pending>,
}

impl Prepared {
    /// The plan with what the clash checks found.
    pub fn into_plan(self) -> Plan {
        self.pending.and_then(Pending::settle).unwrap_or(self.plan)
    }
}

/// The clash checks (inspect.rs `Walk`), running on a thread of their own while the overlays
/// are built, and what the plan was made from.
pub struct Pending {
    inputs: Inputs,
    notes: Vec<String>,
    /// Per image walked: its index in `inputs.images`, and what the walk found.
    walker: Option<Feed<(usize, inspect::Walk), (usize, Walked)>>,
}

impl Pending {
    /// The plan again with the clashes found, or `None` when there were none: the plan made
    /// before stands.
    pub fn settle(mut self) -> Option<Plan> {
        let mut changed = false;
        for (i, found) in self.walker.take().map(Feed::finish).unwrap_or_default() {
            // An image whose inspection failed is skipped for that reason already.
            let Some(Ok(facts)) = &mut self.inputs.images[i].facts else { continue };
            match found {
                Ok(clashes) if clashes.is_empty() => continue,
                Ok(clashes) => facts.conflicts = clashes,
                Err(e) => self.inputs.images[i].facts = Some(Err(e)),
            }
            changed = true;
        }
        changed.then(|| make_plan(&self.inputs, self.notes))
    }
}

fn make_plan(inputs: &Inputs, notes: Vec<String>) -> Plan {
    let mut plan = plan::build(inputs);
    plan.notes.splice(0..0, notes);
    plan
}

pub fn open_root(sysroot: &str) -> Result<OwnedFd> {
    rustix::fs::open(sysroot, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening the sysroot {sysroot}"))
}

/// The root's os-release: /etc first, then /usr/lib, as systemd reads it; the class picks the
/// level key.
fn host(root: &OwnedFd, class: Class) -> std::result::Result<Host, String> {
    for p in ["etc/os-release", "usr/lib/os-release"] {
        let Ok(fd) = open_in_root(root.as_fd(), p, OFlags::RDONLY | OFlags::NONBLOCK) else {
            continue;
        };
        let bytes = read_limited(&fd, release::MAX_SIZE).map_err(|e| format!("/{p}: {e}"))?;
        let info = release::parse(&bytes).map_err(|e| format!("/{p} {e}"))?;
        return Host::from_release(&info, native_architecture(), class).map_err(|e| format!("/{p}: {e}"));
    }
    Err("neither /etc/os-release nor /usr/lib/os-release exists".into())
}

fn target(root: &OwnedFd, h: Hierarchy) -> Result<Target> {
    let mut path = format!("{}/{}", real_path(root.as_fd())?.trim_end_matches('/'), h.dir());
    let (fd, state) = match open_in_root(root.as_fd(), h.dir(), OFlags::PATH) {
        Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => (None, HierarchyState::Missing),
        Err(e) => (None, HierarchyState::Unusable { reason: format!("{path}: {e}") }),
        Ok(fd) => {
            // Where a symlinked hierarchy (ostree's /opt -> var/opt) really is, inside the root:
            // that path is the one to mount on, look for submounts under and unmount.
            path = real_path(fd.as_fd())?;
            let st = fstat(&fd).with_context(|| format!("stat {path}"))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                let reason = format!("{path} is a {}, not a directory", describe_type(st.st_mode));
                (None, HierarchyState::Unusable { reason })
            } else {
                let dir = open_dir_in_root(root.as_fd(), h.dir()).with_context(|| format!("opening {path}"))?;
                match crate::state::read(dir.as_fd(), h)
                    .with_context(|| format!("reading the merge state of {path}"))?
                {
                    Some(m) => (Some(fd), HierarchyState::Merged { extensions: m.extensions }),
                    None => (Some(fd), HierarchyState::Ready),
                }
            }
        }
    };
    Ok(Target { hierarchy: h, path, fd, state })
}

/// Step 3: the kind of a found object, or why it is not an image.
pub fn identify(object: &Object, size: u64) -> std::result::Result<Kind, String> {
    let fd = match object {
        Object::Dir(_) => return Ok(Kind::Directory),
        Object::File(fd) => reopen_read(fd.as_fd()).map_err(|e| format!("cannot open: {e}"))?,
    };
    let mut head = vec![0u8; verify::HEAD_LEN];
    let n =
        rustix::io::pread(&fd, &mut head[..], 0).map_err(|e| format!("cannot read: {}", std::io::Error::from(e)))?;
    verify::identify(&head[..n], size)
}

/// Step 3b for one image file: its evidence, or why it is broken.
pub fn examine(root: &OwnedFd, f: &Found, fd: &OwnedFd, kind: Kind, class: Class, trusted: &[TrustedCert]) -> Examined {
    let readable = reopen_read(fd.as_fd()).map_err(|e| format!("cannot open: {e}"))?;
    let sidecars = evidence::sidecars(root.as_fd(), &f.path, f.target.as_deref())?;
    evidence::examine(&readable, f.size, kind, class.roles(), sidecars, trusted)
}

pub type Examined = std::result::Result<(Trust, Source), String>;

/// Step 1 and the certificates: what every class's pass shares.
pub fn shared(opts: &Options) -> Result<Shared> {
    let faults = Faults::from_env();
    let root = open_root(&opts.sysroot)?;
    let sysexts = Some(on_the_side(&root, |root| {
        let mut notes = Vec::new();
        (discover::discover(root, Class::Sysext, &mut notes), notes)
    }));
    let mut notes = Vec::new();
    let cmdline = match std::fs::read_to_string(&opts.cmdline) {
        Ok(text) => cmdline::parse(&text),
        Err(e) => {
            notes.push(format!("cannot read {}: {e}; using the defaults", opts.cmdline));
            cmdline::parse("")
        }
    };
    notes.extend(cmdline.warnings.iter().cloned());
    let certs = certificates::load(&opts.cert_dirs, root.as_fd(), &opts.sysroot, &mut notes);
    let policy = cmdline.policy.unwrap_or(plan::default_policy(certs.any_installed()));
    let unusable = match certs.unusable.len() {
        0 => String::new(),
        n => format!(", {n} unusable"),
    };
    log::info!(target: report::TARGET, "policy {}: {} trusted certificate(s){unusable}", policy.as_str(), certs.trusted.len());
    let systemd = on_the_side(&root, handover::detect);
    timeline::mark(None, "read");
    let (trusted, masked) = (certs.trusted, certs.masked);
    Ok(Shared { root, cmdline, faults, policy, trusted, masked, systemd, notes, sysexts })
}

/// `job` on the root, on a thread of its own (or here, if the fd cannot be duplicated).
fn on_the_side<T: Send + 'static>(root: &OwnedFd, job: impl FnOnce(BorrowedFd) -> T + Send + 'static) -> Later<T> {
    match root.try_clone() {
        Ok(fd) => Later::spawn(move || job(fd.as_fd())),
        Err(_) => Later::ready(job(root.as_fd())),
    }
}

/// Steps 2 to 5 for one class: what is there, what it is, and the plan.
pub fn prepare(ctx: &mut Shared, opts: &Options, class: Class) -> Result<Prepared> {
    // The sysext pass takes what was found on the side since `shared`.
    let early = match class {
        Class::Sysext => ctx.sysexts.take(),
        Class::Confext => None,
    };
    let ctx: &Shared = ctx;
    let root = &ctx.root;
    let mut notes = Vec::new();
    // What does not need the images comes first: the sysexts are still being looked for.
    let targets = class.hierarchies().iter().map(|h| target(root, *h)).collect::<Result<Vec<_>>>()?;
    let host = host(root, class);
    let hierarchies: Vec<_> = targets.iter().map(|t| (t.hierarchy, t.state.clone())).collect();
    let bases: Vec<_> = targets.iter().filter_map(|t| t.fd.as_ref().map(|fd| (t.hierarchy, fd.as_fd()))).collect();
    // Opening images costs a loop device and a mount each: only do it if they could be merged.
    let open_images = !matches!(ctx.cmdline.selection(class), Selection::Disabled { .. })
        && plan::already_merged(&hierarchies).is_none();
    let decided = open_images;

    let found = match early {
        Some(later) => {
            let (found, discovered) = later.into_inner();
            notes.extend(discovered);
            found
        }
        None => discover::discover(root.as_fd(), class, &mut notes),
    };
    timeline::mark(Some(class), "found");
    let kinds: Vec<_> =
        found.iter().map(|f| f.object.as_ref().map_err(Clone::clone).and_then(|o| identify(o, f.size))).collect();
    let wanted = |i: usize| match (&found[i].object, &kinds[i]) {
        (Ok(object), Ok(k)) if open_images && plan::selected(&ctx.cmdline, class, &found[i].name) => Some((object, *k)),
        _ => None,
    };
    let (policy, trusted, faults) = (ctx.policy, &ctx.trusted, &ctx.faults);
    // The clash checks, one image after another as they are mounted, on a thread of their own:
    // they go on while the plan is made and the overlays are built, and apply takes them in
    // before it attaches anything.
    let walker = (0..found.len())
        .any(|i| wanted(i).is_some())
        .then(|| Feed::spawn(|(i, w): (usize, inspect::Walk)| (i, w.run().map_err(|e| e.to_string()))));
    // Examine, then stage and inspect only what the policy admits: a refused image never
    // reaches the kernel's file system code.
    let opened = parallel::map(found.len(), |i| {
        let (object, kind) = wanted(i)?;
        let f = &found[i];
        let (trust, source) = match object {
            Object::Dir(_) => (Ok(Trust::none()), None),
            Object::File(fd) => match examine(root, f, fd, kind, class, trusted) {
                Ok((t, s)) => (Ok(t), Some(s)),
                Err(e) => (Err(e), None),
            },
        };
        let admitted = trust.as_ref().is_ok_and(|t| plan::admit(policy, t).is_ok());
        let staged = admitted.then(|| {
            let what = match (object, &source) {
                (Object::File(_), Some(src)) => Stageable::File(src),
                (Object::Dir(fd), _) | (Object::File(fd), None) => Stageable::Dir(fd.as_fd()),
            };
            let s = apply::stage(&f.name, what, faults).map_err(|e| e.to_string())?;
            let walk = inspect::Walk::new(s.root(), class, &bases).map_err(|e| e.to_string())?;
            walker.as_ref().expect("there is a walker when an image is wanted").send((i, walk));
            let facts = inspect::inspect(s.root(), class, &f.name, &bases).map_err(|e| e.to_string())?;
            Ok((s, facts))
        });
        Some((trust, staged))
    });
    if let Some(w) = &walker {
        w.close();
    }
    timeline::mark(Some(class), "opened");
    // The mutable mode and /etc are looked at only when there is a confext to merge.
    let etc = (class == Class::Confext && opened.iter().any(Option::is_some)).then(|| {
        etc::gather(root.as_fd(), &opts.run, opts.mutable.as_deref(), &ctx.cmdline, &ctx.systemd.get().0, &mut notes)
    });
    let mut staged = HashMap::new();
    let mut images = Vec::new();
    for ((f, kind), opened) in found.into_iter().zip(kinds).zip(opened) {
        let (trust, facts) = match opened {
            Some((trust, facts)) => (Some(trust), facts),
            None => (None, None),
        };
        let facts = facts.map(|r| {
            r.map(|(s, facts)| {
                staged.insert(f.name.clone(), s);
                facts
            })
        });
        images.push(ImageInput {
            name: f.name,
            path: f.path,
            target: f.target,
            size: f.size,
            kind,
            trust,
            facts,
            origin: f.origin,
        });
    }
    if class == Class::ALL[0] {
        notes.splice(0..0, ctx.notes.iter().cloned());
    }
    let cmdline = ctx.cmdline.clone();
    let inputs = Inputs { class, cmdline, policy, host, hierarchies, images, etc };
    let plan = make_plan(&inputs, notes.clone());
    timeline::mark(Some(class), "planned");
    // Images we will not merge let go of their loop devices now.
    let merging = plan.merged_names();
    staged.retain(|name, _| merging.contains(name));
    Ok(Prepared { plan, staged, targets, decided, pending: Some(Pending { inputs, notes, walker }) })
}

/// The whole merge: sysexts, then confexts. Returns whether every hierarchy that had something
/// to merge got merged.
pub fn merge(opts: &Options) -> Result<bool> {
    let start = Instant::now();
    let mut ctx = shared(opts)?;
    let mut passes: Vec<(Prepared, Vec<(Hierarchy, Outcome)>)> = Vec::new();
    for class in Class::ALL {
        let mut p = prepare(&mut ctx, opts, class)?;
        let pending = p.pending.take();
        let settle = || pending.and_then(Pending::settle);
        let outcomes = apply::apply(&mut p.plan, &p.staged, ctx.root.as_fd(), &mut p.targets, &ctx.faults, settle);
        let took = |name: &str| p.staged.get(name).map(|s| s.took);
        report::log_merge(&p.plan, &outcomes, &took);
        timeline::mark(Some(class), "logged");
        passes.push((p, outcomes));
    }
    let total = start.elapsed();
    let merged: usize = passes.iter().map(|(p, _)| p.plan.merged_names().len()).sum();
    let found: usize = passes.iter().map(|(p, _)| p.plan.images.len()).sum();
    log::info!(target: report::TARGET, "done in {} ms: {merged} merged, {} skipped", total.as_millis(), found - merged);
    timeline::mark(None, "done");
    // The report and the hand-over are written side by side: they only read the passes.
    let written = std::thread::scope(|scope| {
        let report = scope.spawn(|| {
            let plans: Vec<_> = passes.iter().map(|(p, o)| (&p.plan, Some(o.as_slice()))).collect();
            report::write_report(&opts.report, &report::to_json(&opts.sysroot, &plans, Some(total)))
        });
        let decided: Vec<handover::Pass> = passes
            .iter()
            .filter(|(p, _)| p.decided)
            .map(|(p, o)| handover::Pass { plan: &p.plan, outcomes: o })
            .collect();
        if !decided.is_empty() {
            let certs = handover::Certs { trusted: &ctx.trusted, masked: &ctx.masked };
            let systemd = *ctx.systemd.get();
            handover::hand_over(ctx.root.as_fd(), &opts.sysroot, &opts.run, systemd, ctx.policy, certs, &decided);
        }
        report.join().expect("writing the report does not panic")
    });
    if let Err(e) = written {
        log::warn!(target: report::TARGET, "cannot write {}: {e}", opts.report);
    }
    Ok(!passes.iter().flat_map(|(_, o)| o).any(|(_, o)| matches!(o, Outcome::Failed { .. })))
}
