//! Step 6: make the plan true. Images become detached read-only mounts on autoclear loop
//! devices; each hierarchy gets one overlay `META : newest … oldest : host`, built detached and
//! attached in one move. Staging never shows in the mount table, and the loop devices go away
//! with the overlay (Flatcar#1976).
//!
//! All or nothing per hierarchy: an overlay that cannot be built is retried without the layer
//! that broke it, so one bad image never costs the good ones; a failure after attaching detaches
//! the overlay again and leaves the hierarchy as it was.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{mkdirat, Mode, OFlags};

use crate::error::{Context, Error, Result};
use crate::inspect::ImageRoot;
use crate::plan::{Action, Hierarchy, HierarchyState, Plan};
use crate::state;
use crate::sys::fs::{open_in_root, proc_path};
use crate::sys::identity;
use crate::sys::loopdev::{self, Range};
use crate::sys::staging::{self, Staging};
use crate::sys::{devmapper, mount};
use crate::verify::evidence::{Region, Source};
use crate::verify::gpt::Role;

/// Failures to inject in tests, from `INITRD_SYSEXT_TEST_FAULTS`, e.g.
/// `overlay=bad,attach=usr,loop-control=/dev/null`. Empty in real boots.
#[derive(Debug, Default)]
pub struct Faults {
    overlay: Vec<String>,
    attach: Vec<String>,
    pub loop_control: Option<String>,
}

impl Faults {
    pub fn from_env() -> Faults {
        let mut f = Faults::default();
        for item in std::env::var("INITRD_SYSEXT_TEST_FAULTS").unwrap_or_default().split(',') {
            match item.split_once('=') {
                Some(("overlay", v)) => f.overlay.push(v.into()),
                Some(("attach", v)) => f.attach.push(v.into()),
                Some(("loop-control", v)) => f.loop_control = Some(v.into()),
                _ => {}
            }
        }
        f
    }
}

/// An image ready to be a layer: a detached mount of it (a clone, for a directory).
pub struct Staged {
    pub mount: OwnedFd,
    /// Whether the mount is the image's root or its `/usr` (a DDI usr partition).
    pub role: Role,
    pub took: Duration,
}

impl Staged {
    pub fn root(&self) -> ImageRoot<'_> {
        ImageRoot { fd: self.mount.as_fd(), role: self.role }
    }
}

/// What to stage: a directory, or an image file with its examined source.
pub enum Stageable<'a> {
    Dir(BorrowedFd<'a>),
    File(&'a Source),
}

fn attach_region(r: &Region, faults: &Faults) -> Result<loopdev::LoopDevice> {
    let control = faults.loop_control.as_deref().unwrap_or("/dev/loop-control");
    loopdev::attach(r.fd.as_fd(), Range { offset: r.offset, size: r.size }, control)
}

/// The device to mount a source from: its loop device, or a dm-verity device over the data and
/// hash loop devices. The verity device goes away with the last mount of it (or at once, if the
/// mount fails), and its loop devices with it.
fn mount_source(name: &str, src: &Source, faults: &Faults) -> Result<OwnedFd> {
    let fstype = src.fs.fstype().ok_or_else(|| Error::msg(format!("{} images cannot be mounted", src.fs)))?;
    let data = attach_region(&src.data, faults)?;
    let Some(v) = &src.verity else {
        return mount::block_fs(fstype, &data.path).with_context(|| format!("mounting {fstype} from {}", data.path));
    };
    let hash = attach_region(&v.hash, faults).context("attaching the hash tree")?;
    let sectors = v.superblock.data_bytes().unwrap_or(0) / 512;
    let table = v.superblock.table(&data.path, &hash.path, &v.root_hash);
    devmapper::with_verity(name, sectors, &table, |dev| {
        mount::block_fs(fstype, dev).with_context(|| format!("mounting {fstype} from {dev}"))
    })
}

/// Mount one image, detached and read-only. Device fds are closed on return, so from then on
/// the mount alone keeps the devices alive.
pub fn stage(name: &str, what: Stageable, faults: &Faults) -> Result<Staged> {
    let start = Instant::now();
    let (mount, role) = match what {
        Stageable::Dir(fd) => (mount::clone_tree_fd(fd).context("cloning the directory")?, Role::Root),
        Stageable::File(src) => (mount_source(name, src, faults)?, src.role),
    };
    Ok(Staged { mount, role, took: start.elapsed() })
}

/// A hierarchy of the sysroot, as found before merging.
pub struct Target {
    pub hierarchy: Hierarchy,
    /// Absolute path on this system, where the hierarchy really is: `/sysroot/usr`, or
    /// `/sysroot/var/opt` when `/opt` is a symlink to `var/opt` (ostree).
    pub path: String,
    /// `O_PATH` fd of the directory before any merge; `None` if it does not exist.
    pub fd: Option<OwnedFd>,
    pub state: HierarchyState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Merged { layers: Vec<String>, took: Duration },
    AlreadyMerged { extensions: Vec<String> },
    Nothing,
    Failed { reason: String },
}

fn has_entries(fd: BorrowedFd) -> bool {
    open_in_root(fd, ".", OFlags::RDONLY | OFlags::DIRECTORY)
        .ok()
        .and_then(|d| crate::sys::fs::list_dir(d.as_fd()).ok())
        .is_some_and(|l| !l.is_empty())
}

/// Build one hierarchy's overlay, detached, inside the staging namespace. `host` is the
/// hierarchy's path, opened here so that it is a mount of this namespace.
fn build(
    staging: &mut Staging,
    h: Hierarchy,
    layers: &[String],
    names: &[String],
    staged: &HashMap<String, Staged>,
    host: Option<&str>,
    faults: &Faults,
) -> Result<(OwnedFd, OwnedFd)> {
    if let Some(bad) = layers.iter().find(|l| faults.overlay.contains(l)) {
        return Err(Error::msg(format!("overlay: injected failure for layer {bad}")));
    }
    let meta = mount::tmpfs()?;
    state::write_extensions(meta.as_fd(), names)?;
    staging.add(&meta)?;
    // Keep every layer's fd open until the overlay holds its own references.
    let mut fds =
        vec![open_in_root(meta.as_fd(), ".", OFlags::PATH | OFlags::DIRECTORY).context("opening the META layer")?];
    for name in layers {
        let image = staged.get(name).ok_or_else(|| Error::msg(format!("{name} was not staged")))?.root();
        // Resolved inside the image: a `usr` symlink in an image cannot point at our own root.
        fds.push(
            image
                .open(h.dir(), OFlags::PATH | OFlags::DIRECTORY)
                .with_context(|| format!("opening {} in {name}", h.path()))?,
        );
    }
    // An empty host directory is left out, as systemd does.
    let host = host.map(staging::open_path).transpose()?.filter(|fd| has_entries(fd.as_fd()));
    let paths: Vec<String> = fds.iter().chain(&host).map(|fd| proc_path(fd.as_fd())).collect();
    let overlay = mount::overlay(&paths)?;
    state::write_dev(meta.as_fd(), overlay.as_fd())?;
    if let Some(host) = &host {
        state::write_backing(meta.as_fd(), host.as_fd())?;
    }
    Ok((overlay, meta))
}

/// Attach a built overlay; keep submounts visible by re-attaching recursive clones of them on top
/// (Flatcar#2111). The originals stay underneath, so an unmerge gives them back unchanged.
fn attach(t: &Target, overlay: &OwnedFd, faults: &Faults) -> Result<()> {
    let fd = t.fd.as_ref().ok_or_else(|| Error::msg(format!("{} does not exist", t.path)))?;
    let subs = mount::submounts(&t.path)?;
    let clones = subs.iter().map(|p| mount::clone_tree(p)).collect::<Result<Vec<_>>>()?;
    mount::attach(overlay.as_fd(), fd.as_fd(), &format!("the overlay on {}", t.path))?;
    let after = || -> Result<()> {
        if faults.attach.iter().any(|a| a == t.hierarchy.dir()) {
            return Err(Error::msg(format!("injected failure after mounting the overlay on {}", t.path)));
        }
        for (clone, path) in clones.iter().zip(&subs) {
            mount::attach_at(clone.as_fd(), path).context("restoring a submount")?;
        }
        Ok(())
    };
    after().map_err(|e| match mount::detach(&t.path) {
        Ok(()) => Error::msg(format!("{e}; rolled back, {} is as it was", t.path)),
        Err(undo) => Error::msg(format!("{e}; rollback failed too: {undo}")),
    })
}

/// Per hierarchy: its layers, the overlay and its META layer (still writable), and the build time.
type Built = Vec<(Hierarchy, Vec<String>, OwnedFd, OwnedFd, Duration)>;

/// Build every overlay the plan asks for. Each round either builds them all or removes at least
/// one image (or gives up on a hierarchy), so this ends.
fn build_all(
    plan: &mut Plan,
    staged: &HashMap<String, Staged>,
    targets: &[Target],
    faults: &Faults,
    outcomes: &mut HashMap<Hierarchy, Outcome>,
) -> Result<Built> {
    let mut staging = Staging::enter()?;
    for s in staged.values() {
        staging.add(&s.mount)?;
    }
    'round: loop {
        let names = plan.merged_names();
        let mut built = Vec::new();
        for hp in plan.hierarchies.clone() {
            if hp.layers.is_empty() || outcomes.contains_key(&hp.hierarchy) {
                continue;
            }
            let t = targets.iter().find(|t| t.hierarchy == hp.hierarchy).expect("a target per hierarchy");
            let host = t.fd.as_ref().map(|_| t.path.as_str());
            let start = Instant::now();
            match build(&mut staging, hp.hierarchy, &hp.layers, &names, staged, host, faults) {
                Ok((o, meta)) => built.push((hp.hierarchy, hp.layers.clone(), o, meta, start.elapsed())),
                Err(e) => {
                    // Which layers cannot be stacked even alone? Those go; the rest are retried.
                    let bad: Vec<(String, Error)> = hp
                        .layers
                        .iter()
                        .filter_map(|l| {
                            build(&mut staging, hp.hierarchy, std::slice::from_ref(l), &names, staged, None, faults)
                                .err()
                                .map(|e| (l.clone(), e))
                        })
                        .collect();
                    if bad.is_empty() {
                        outcomes.insert(hp.hierarchy, Outcome::Failed { reason: e.to_string() });
                    }
                    for (name, err) in bad {
                        plan.demote(&name, format!("overlay refused it: {err}"));
                    }
                    continue 'round;
                }
            }
        }
        staging.leave()?;
        return Ok(built);
    }
}

/// An image stored inside a hierarchy we merged (Flatcar's built-in images live in
/// /usr/share/flatcar/sysext) is seen by the booted system through our overlay, with the
/// overlay's mount ID and handle: identify it again the way the booted system will.
fn identify_through_merge(plan: &mut Plan, root: BorrowedFd, merged: &[Hierarchy]) {
    let inside = |path: &str| merged.iter().any(|h| path.starts_with(&format!("{}/", h.path())));
    for d in &mut plan.images {
        let Some(origin) = d.origin.as_mut().filter(|o| inside(&o.path)) else { continue };
        origin.file = open_in_root(root, &origin.path, OFlags::PATH)
            .and_then(|fd| identity::identify(fd.as_fd()))
            .map_err(|e| format!("cannot identify it through the merged hierarchy: {e}"));
    }
}

/// Write `.systemd-sysext/origin` into every merged hierarchy. Nothing has looked it up through
/// the overlays yet, so it is seen there like the other META files. Without it the merge is still
/// valid; systemd ≥ 260 just merges again at boot, which the note says.
fn write_origin(plan: &mut Plan, metas: &HashMap<Hierarchy, OwnedFd>) {
    let written = state::origin_for(plan)
        .map_err(Error::msg)
        .and_then(|text| metas.values().try_for_each(|meta| state::write_origin(meta.as_fd(), &text)));
    if let Err(e) = written {
        plan.notes.push(format!("not writing .systemd-sysext/origin ({e}): systemd 260 and later will merge again"));
    }
}

/// Apply the plan. Images that break an overlay are demoted in the plan with the reason; a
/// hierarchy that fails as a whole is left untouched.
pub fn apply(
    plan: &mut Plan,
    staged: &HashMap<String, Staged>,
    root: BorrowedFd,
    targets: &mut [Target],
    faults: &Faults,
) -> Vec<(Hierarchy, Outcome)> {
    let mut outcomes: HashMap<Hierarchy, Outcome> = HashMap::new();
    let built = build_all(plan, staged, targets, faults, &mut outcomes).unwrap_or_else(|e| {
        for hp in plan.hierarchies.iter().filter(|hp| !hp.layers.is_empty()) {
            outcomes.insert(hp.hierarchy, Outcome::Failed { reason: e.to_string() });
        }
        Vec::new()
    });
    let mut metas = HashMap::new();
    for (h, layers, overlay, meta, took) in built {
        let t = targets.iter_mut().find(|t| t.hierarchy == h).expect("a target per hierarchy");
        if t.fd.is_none() {
            // A missing hierarchy is created, as systemd-sysext does.
            let made = mkdirat(root, h.dir(), Mode::from_raw_mode(0o755))
                .with_context(|| format!("creating {}", t.path))
                .and_then(|()| {
                    open_in_root(root, h.dir(), OFlags::PATH | OFlags::DIRECTORY)
                        .with_context(|| format!("opening {}", t.path))
                });
            match made {
                Ok(fd) => t.fd = Some(fd),
                Err(e) => {
                    outcomes.insert(h, Outcome::Failed { reason: e.to_string() });
                    continue;
                }
            }
        }
        let start = Instant::now();
        let outcome = match attach(t, &overlay, faults) {
            Ok(()) => {
                metas.insert(h, meta);
                Outcome::Merged { layers, took: took + start.elapsed() }
            }
            Err(e) => Outcome::Failed { reason: e.to_string() },
        };
        outcomes.insert(h, outcome);
    }
    // An image is not merged if every hierarchy it needed failed.
    let failed: Vec<Hierarchy> =
        outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Failed { .. })).map(|(h, _)| *h).collect();
    let lost: Vec<String> = plan
        .images
        .iter()
        .filter(|d| d.action == Action::Merge && d.content.iter().all(|h| failed.contains(h)))
        .map(|d| d.name.clone())
        .collect();
    for name in lost {
        plan.demote(&name, "its hierarchies could not be merged (see above)".into());
    }
    if !metas.is_empty() {
        identify_through_merge(plan, root, &metas.keys().copied().collect::<Vec<_>>());
        write_origin(plan, &metas);
    }
    targets
        .iter()
        .map(|t| {
            let o = outcomes.remove(&t.hierarchy).unwrap_or(match &t.state {
                HierarchyState::Merged { extensions } => Outcome::AlreadyMerged { extensions: extensions.clone() },
                _ => Outcome::Nothing,
            });
            (t.hierarchy, o)
        })
        .collect()
}
