//! Step 6: make the plan true. Images become detached read-only mounts on autoclear loop
//! devices; each hierarchy gets one overlay `META : newest … oldest : host`, built detached and
//! attached in one move. Staging never shows in the mount table, and the loop devices go away
//! with the overlay (Flatcar#1976). A writable /etc (a confext mutable mode) also gets its upper
//! and work directory, and its `.systemd-confext` is bound read-only before the tree is attached.
//!
//! All or nothing per hierarchy: an overlay that cannot be built is retried without the layers
//! that broke it, so one bad image never costs the good ones; a failure after attaching detaches
//! the overlay again and leaves the hierarchy as it was. What each overlay's extension list
//! names is exactly what is merged.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{fchmod, fstat, mkdirat, Mode, OFlags};

use crate::class::Class;
use crate::error::{Context, Error, Result};
use crate::inspect::ImageRoot;
use crate::mutable::{Layout, Upper, WORK_DIR};
use crate::plan::{Action, Hierarchy, HierarchyPlan, HierarchyState, Outcome, Plan};
use crate::state;
use crate::sys::fs::{mkdir_all_in_root, open_dir_in_root, open_in_root, proc_path, real_path};
use crate::sys::identity;
use crate::sys::loopdev::{self, Range};
use crate::sys::mount::{Flags, Mechanism, OverlayApi, OverlaySpec};
use crate::sys::staging::{self, Staging, UpperIn};
use crate::sys::{devmapper, mount};
use crate::timeline;
use crate::verify::evidence::{Region, Source};
use crate::verify::gpt::Role;

/// Failures to inject in tests, from `INITRD_SYSEXT_TEST_FAULTS`, e.g.
/// `overlay=bad,attach=usr,loop-control=/dev/null`. Empty in real boots.
#[derive(Debug, Default)]
pub struct Faults {
    overlay: Vec<String>,
    attach: Vec<String>,
    pub loop_control: Option<String>,
    /// `overlay-api=lowerdir+|lowerdir|mount`: act as on a kernel with `lowerdir+`, as on one
    /// without (fsconfig `lowerdir=` when it fits, else mount(2)), or always use mount(2).
    overlay_api: Option<OverlayApi>,
    overlay_options: bool,
}

impl Faults {
    pub fn from_env() -> Faults {
        let mut f = Faults::default();
        for item in std::env::var("INITRD_SYSEXT_TEST_FAULTS").unwrap_or_default().split(',') {
            match item.split_once('=') {
                Some(("overlay", v)) => f.overlay.push(v.into()),
                Some(("attach", v)) => f.attach.push(v.into()),
                Some(("loop-control", v)) => f.loop_control = Some(v.into()),
                Some(("overlay-api", "lowerdir+")) => f.overlay_api = Some(OverlayApi::Append),
                Some(("overlay-api", "lowerdir")) => f.overlay_api = Some(OverlayApi::Parsed),
                Some(("overlay-api", "mount")) => (f.overlay_api, f.overlay_options) = (Some(OverlayApi::Parsed), true),
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

/// Mount a source from the file itself where the kernel can (erofs, a whole file, no dm-verity),
/// else from its loop device, or a dm-verity device over the data and hash loop devices. The
/// verity device goes away with the last mount of it (or at once, if the mount fails), and its
/// loop devices with it.
fn mount_source(name: &str, src: &Source, faults: &Faults) -> Result<OwnedFd> {
    let fstype = src.fs.fstype().ok_or_else(|| Error::msg(format!("{} images cannot be mounted", src.fs)))?;
    if src.verity.is_none()
        && src.data.offset == 0
        && fstat(&src.data.fd).is_ok_and(|st| st.st_size as u64 == src.data.size)
    {
        if let Some(m) = mount::file_fs(fstype, src.data.fd.as_fd()).with_context(|| format!("mounting {fstype}"))? {
            return Ok(m);
        }
    }
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

fn has_entries(fd: BorrowedFd) -> bool {
    open_in_root(fd, ".", OFlags::RDONLY | OFlags::DIRECTORY)
        .ok()
        .and_then(|d| crate::sys::fs::list_dir(d.as_fd()).ok())
        .is_some_and(|l| !l.is_empty())
}

/// Builds overlays inside the staging namespace.
struct Builder<'a> {
    staging: &'a mut Staging,
    staged: &'a HashMap<String, Staged>,
    faults: &'a Faults,
    api: OverlayApi,
}

/// A built overlay, detached, waiting to be attached.
struct Built {
    hierarchy: Hierarchy,
    layers: Vec<String>,
    overlay: OwnedFd,
    /// The META layer, still writable: the origin file goes in once the merge is known.
    meta: OwnedFd,
    took: Duration,
    via: Mechanism,
}

/// What became of one hierarchy in a round of building.
enum Step {
    Built(Built),
    /// These images (name, reason) must go; the names of the merge changed, so the round starts over.
    LeftOut(Vec<(String, String)>),
    Failed(String),
}

/// Everything of one hierarchy's overlay but its extension layers, opened in the staging
/// namespace (overlayfs takes only mounts of the caller's namespace).
struct Shape {
    hierarchy: Hierarchy,
    /// The host hierarchy's permission bits: the overlay's root has those of its top layer.
    mode: u32,
    /// The host directory as the lowest layer; `None` when it is empty or the upper.
    host: Option<OwnedFd>,
    /// A mutable directory imported read-only below META.
    import: Option<OwnedFd>,
    upper: Option<UpperSource>,
    /// META's `work_dir`, for a persistent upper.
    work_dir_file: Option<String>,
}

/// Where the writes of a writable overlay go.
enum UpperSource {
    /// A directory of the root and its work directory, both entries of `parent`.
    Persistent { parent: OwnedFd, upper: String },
    /// A fresh tmpfs per overlay, gone with it.
    Ephemeral,
}

impl Shape {
    /// systemd's per-mount flags for the class: sysexts `ro,nodev`; confexts also `nosuid,noexec`,
    /// and a writable one `noatime` instead of `ro`.
    fn flags(&self) -> Flags {
        let confext = self.hierarchy.class() == Class::Confext;
        let writable = self.upper.is_some();
        Flags { read_only: !writable, nosuid: confext, noexec: confext, noatime: writable }
    }

    /// What systemd adds to a writable overlay's options (262's `MUTABLE_EXTENSIONS_MOUNT_OPTIONS`
    /// without `noatime`, which is a flag): no needless copy-ups, no half-copied files, an
    /// upper that may be used again with other lower layers.
    fn options(&self) -> Vec<(&'static str, &'static str)> {
        match self.upper {
            Some(_) => vec![("redirect_dir", "on"), ("metacopy", "off"), ("index", "off")],
            None => Vec::new(),
        }
    }
}

impl Builder<'_> {
    /// One overlay `META : import : layers : host`; `names` is what META's list says.
    fn build(&mut self, shape: &Shape, layers: &[String], names: &[String]) -> Result<(OwnedFd, OwnedFd, Mechanism)> {
        let h = shape.hierarchy;
        let class = h.class();
        if let Some(bad) = layers.iter().find(|l| self.faults.overlay.contains(l)) {
            return Err(Error::msg(format!("overlay: injected failure for layer {bad}")));
        }
        let meta = mount::tmpfs(shape.mode, Some("1m"))?;
        state::write_extensions(meta.as_fd(), class, names)?;
        if let Some(w) = &shape.work_dir_file {
            state::write_work_dir(meta.as_fd(), class, w)?;
        }
        self.staging.add(&meta)?;
        // Keep every layer's fd open until the overlay holds its own references.
        let mut fds =
            vec![open_in_root(meta.as_fd(), ".", OFlags::PATH | OFlags::DIRECTORY).context("opening the META layer")?];
        for name in layers {
            let image = self.staged.get(name).ok_or_else(|| Error::msg(format!("{name} was not staged")))?.root();
            // Resolved inside the image: a `usr` symlink in an image cannot point at our own root.
            fds.push(
                image
                    .open(h.dir(), OFlags::PATH | OFlags::DIRECTORY)
                    .with_context(|| format!("opening {} in {name}", h.path()))?,
            );
        }
        let mut borrowed: Vec<BorrowedFd> = fds.iter().map(|fd| fd.as_fd()).collect();
        if let Some(import) = &shape.import {
            borrowed.insert(1, import.as_fd());
        }
        borrowed.extend(shape.host.as_ref().map(|fd| fd.as_fd()));
        let paths: Vec<String> = borrowed.iter().map(|fd| proc_path(*fd)).collect();
        let via = if self.faults.overlay_options { Mechanism::Options } else { self.api.mechanism(&paths) };
        let ephemeral = match shape.upper {
            Some(UpperSource::Ephemeral) => Some(self.ephemeral_upper(h, shape.mode)?),
            _ => None,
        };
        let upper = match (&shape.upper, &ephemeral) {
            (Some(UpperSource::Persistent { parent, upper }), _) => {
                Some(UpperIn { parent: parent.as_fd(), upper: upper.as_str(), work: WORK_DIR })
            }
            (_, Some(tmp)) => Some(UpperIn { parent: tmp.as_fd(), upper: h.dir(), work: WORK_DIR }),
            _ => None,
        };
        let spec = OverlaySpec {
            source: class.mount_source(),
            lowers: Vec::new(),
            upper: None,
            options: shape.options(),
            flags: shape.flags(),
        };
        let overlay = self.staging.overlay(&borrowed, upper.as_ref(), via, spec)?;
        state::write_dev(meta.as_fd(), class, overlay.as_fd())?;
        if let Some(host) = &shape.host {
            state::write_backing(meta.as_fd(), class, host.as_fd())?;
        }
        // A writable merge keeps its state files from being written through it.
        let overlay = match upper {
            Some(_) => self.staging.with_read_only_subdir(&overlay, class.meta_dir(), shape.flags())?,
            None => overlay,
        };
        Ok((overlay, meta, via))
    }

    /// A fresh tmpfs for an ephemeral upper, attached here, with the upper (the hierarchy's mode)
    /// and its work directory in it; systemd makes them in its workspace tmpfs.
    fn ephemeral_upper(&mut self, h: Hierarchy, mode: u32) -> Result<OwnedFd> {
        let tmp = mount::tmpfs(0o700, None)?;
        self.staging.add(&tmp)?;
        mkdirat(&tmp, h.dir(), Mode::from_raw_mode(0o755)).context("creating the ephemeral upper directory")?;
        let upper = open_dir_in_root(tmp.as_fd(), h.dir()).context("opening the ephemeral upper directory")?;
        fchmod(&upper, Mode::from_raw_mode(mode)).context("setting the ephemeral upper's mode")?;
        mkdirat(&tmp, WORK_DIR, Mode::from_raw_mode(0o700)).context("creating the ephemeral work directory")?;
        Ok(tmp)
    }

    /// The overlay of one hierarchy, or which images must go for it to be built: one bad image
    /// never costs the good ones.
    fn hierarchy(&mut self, shape: &Shape, layers: &[String], names: &[String]) -> Step {
        let start = Instant::now();
        let h = shape.hierarchy;
        // META, an import and the host are layers too; the oldest extensions give way.
        let room =
            mount::MAX_LOWER_LAYERS - 1 - usize::from(shape.host.is_some()) - usize::from(shape.import.is_some());
        if layers.len() > room {
            let reason = format!(
                "left out of {}: overlayfs stacks at most {} layers, and {room} newer extensions fill it",
                h.path(),
                mount::MAX_LOWER_LAYERS
            );
            return Step::LeftOut(layers[room..].iter().map(|n| (n.clone(), reason.clone())).collect());
        }
        let error = match self.build(shape, layers, names) {
            Ok((overlay, meta, via)) => {
                let layers = layers.to_vec();
                return Step::Built(Built { hierarchy: h, layers, overlay, meta, took: start.elapsed(), via });
            }
            Err(e) => e,
        };
        // A layer the kernel refuses next to the host alone goes.
        let alone: Vec<(String, String)> = layers
            .iter()
            .filter_map(|l| {
                let e = self.build(shape, std::slice::from_ref(l), names).err()?;
                Some((l.clone(), format!("overlay refused it: {e}")))
            })
            .collect();
        if !alone.is_empty() {
            return Step::LeftOut(alone);
        }
        // Refused only together with others: stack them newest first and leave out each layer
        // that breaks the overlay.
        let mut kept: Vec<String> = Vec::new();
        let mut refused = Vec::new();
        for l in layers {
            kept.push(l.clone());
            if let Err(e) = self.build(shape, &kept, names) {
                kept.pop();
                refused.push((l.clone(), format!("overlay refused it below {} newer layer(s): {e}", kept.len())));
            }
        }
        if refused.is_empty() {
            Step::Failed(error.to_string())
        } else {
            Step::LeftOut(refused)
        }
    }
}

/// The host directory as a layer, opened in the staging namespace so that it is a mount of it;
/// `None` when it is empty, which systemd leaves out too, or when it is the upper.
fn host_layer(t: &Target, layout: Option<&Layout>) -> Result<Option<OwnedFd>> {
    if t.fd.is_none() || layout.is_some_and(|l| !l.host_lower) {
        return Ok(None);
    }
    let fd = staging::open_path(&t.path)?;
    Ok(has_entries(fd.as_fd()).then_some(fd))
}

/// The rest of a hierarchy's overlay, opened in the staging namespace: the host layer, and for
/// a mutable /etc the imported directory and the upper's parent. `root_path` is the sysroot's
/// real path (the same in both namespaces).
fn shape(t: &Target, hp: &HierarchyPlan, root_path: &str) -> Result<Shape> {
    let layout = hp.layout.as_ref();
    let mode = match &t.fd {
        Some(fd) => fstat(fd).with_context(|| format!("stat {}", t.path))?.st_mode & 0o777,
        None => 0o755,
    };
    let in_root = |p: &str| format!("{}{p}", root_path.trim_end_matches('/'));
    let import = match layout.and_then(|l| l.import.as_deref()) {
        Some(dir) => Some(staging::open_path(&in_root(dir))?),
        None => None,
    };
    let upper = match layout.map(|l| &l.upper) {
        Some(Upper::Persistent { dir, .. }) => {
            let (parent, name) = dir.rsplit_once('/').ok_or_else(|| Error::msg(format!("{dir} is not absolute")))?;
            Some(UpperSource::Persistent { parent: staging::open_path(&in_root(parent))?, upper: name.to_string() })
        }
        Some(Upper::Ephemeral) => Some(UpperSource::Ephemeral),
        Some(Upper::None) | None => None,
    };
    let work_dir_file = layout.and_then(Layout::work_dir_file);
    Ok(Shape { hierarchy: t.hierarchy, mode, host: host_layer(t, layout)?, import, upper, work_dir_file })
}

/// Images whose every hierarchy failed are not merged; say whether there were any new ones.
fn demote_lost(plan: &mut Plan, outcomes: &HashMap<Hierarchy, Outcome>) -> bool {
    let failed = |h: &Hierarchy| matches!(outcomes.get(h), Some(Outcome::Failed { .. }));
    let lost: Vec<String> = plan
        .images
        .iter()
        .filter(|d| d.action == Action::Merge && d.content.iter().all(failed))
        .map(|d| d.name.clone())
        .collect();
    for name in &lost {
        plan.demote(name, "its hierarchies could not be merged (see above)".into());
    }
    !lost.is_empty()
}

/// Build every overlay the plan asks for that has no outcome yet. Each pass either builds them
/// all, or removes at least one image, or gives up on a hierarchy, so this ends.
fn build_round(
    b: &mut Builder,
    plan: &mut Plan,
    targets: &[Target],
    root_path: &str,
    outcomes: &mut HashMap<Hierarchy, Outcome>,
) -> Vec<Built> {
    'round: loop {
        let names = plan.merged_names();
        let mut built = Vec::new();
        for hp in plan.hierarchies.clone() {
            if hp.layers.is_empty() || outcomes.contains_key(&hp.hierarchy) {
                continue;
            }
            let t = targets.iter().find(|t| t.hierarchy == hp.hierarchy).expect("a target per hierarchy");
            let step = match shape(t, &hp, root_path) {
                Ok(shape) => b.hierarchy(&shape, &hp.layers, &names),
                Err(e) => Step::Failed(e.to_string()),
            };
            match step {
                Step::Built(o) => built.push(o),
                Step::LeftOut(images) => {
                    for (name, reason) in images {
                        plan.demote(&name, reason);
                    }
                    continue 'round;
                }
                Step::Failed(reason) => {
                    outcomes.insert(hp.hierarchy, Outcome::Failed { reason });
                    // The overlays built so far list names that are now lost.
                    if demote_lost(plan, outcomes) {
                        continue 'round;
                    }
                }
            }
        }
        return built;
    }
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
        // What systemd will check: the merged tree shows our state (an upper directory holding a
        // stale .systemd-confext would hide it, and systemd would not know the merge).
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir =
            rustix::fs::open(t.path.as_str(), flags, Mode::empty()).with_context(|| format!("opening {}", t.path))?;
        match state::merged_dev(dir.as_fd(), t.hierarchy.class())? {
            Some(_) => Ok(()),
            None => Err(Error::msg(format!(
                "the merged {} does not show its {}/dev (is there one in the upper directory?)",
                t.path,
                t.hierarchy.class().meta_dir()
            ))),
        }
    };
    after().map_err(|e| match mount::detach(&t.path) {
        Ok(()) => Error::msg(format!("{e}; rolled back, {} is as it was", t.path)),
        Err(undo) => Error::msg(format!("{e}; rollback failed too: {undo}")),
    })
}

/// A missing hierarchy is created, as systemd-sysext does.
fn create(root: BorrowedFd, t: &mut Target) -> Result<()> {
    mkdirat(root, t.hierarchy.dir(), Mode::from_raw_mode(0o755)).with_context(|| format!("creating {}", t.path))?;
    let fd = open_in_root(root, t.hierarchy.dir(), OFlags::PATH | OFlags::DIRECTORY)
        .with_context(|| format!("opening {}", t.path))?;
    t.fd = Some(fd);
    Ok(())
}

/// Attach what was built; the hierarchies attached now. `metas` gets their META layers.
fn attach_all(
    built: Vec<Built>,
    root: BorrowedFd,
    targets: &mut [Target],
    faults: &Faults,
    outcomes: &mut HashMap<Hierarchy, Outcome>,
    metas: &mut HashMap<Hierarchy, OwnedFd>,
) -> Vec<Hierarchy> {
    let mut attached = Vec::new();
    for b in built {
        let t = targets.iter_mut().find(|t| t.hierarchy == b.hierarchy).expect("a target per hierarchy");
        let start = Instant::now();
        let outcome = match (if t.fd.is_none() { create(root, t) } else { Ok(()) })
            .and_then(|()| attach(t, &b.overlay, faults))
        {
            Ok(()) => {
                attached.push(b.hierarchy);
                metas.insert(b.hierarchy, b.meta);
                Outcome::Merged { layers: b.layers, took: b.took + start.elapsed(), via: b.via.as_str() }
            }
            Err(e) => Outcome::Failed { reason: e.to_string() },
        };
        outcomes.insert(b.hierarchy, outcome);
    }
    attached
}

/// Take in the plan as the clash checks settled it, the first time only. Says whether it merges
/// other images than the plan had, so that what was built for that one must go.
fn settle_into(plan: &mut Plan, settle: &mut Option<impl FnOnce() -> Option<Plan>>) -> bool {
    let Some(settled) = settle.take().and_then(|f| f()) else { return false };
    let changed = !plan.same_merge(&settled);
    *plan = settled;
    changed
}

/// Build and attach until what is mounted and what each overlay's extension list says agree.
#[allow(clippy::too_many_arguments)]
fn apply_rounds(
    plan: &mut Plan,
    settle: &mut Option<impl FnOnce() -> Option<Plan>>,
    staged: &HashMap<String, Staged>,
    root: BorrowedFd,
    targets: &mut [Target],
    faults: &Faults,
    outcomes: &mut HashMap<Hierarchy, Outcome>,
    metas: &mut HashMap<Hierarchy, OwnedFd>,
) -> Result<()> {
    let root_path = real_path(root)?;
    let mut staging = Staging::enter()?;
    for s in staged.values() {
        staging.add(&s.mount)?;
    }
    let api = match faults.overlay_api {
        Some(api) => api,
        None => staging.probe_overlay_api()?,
    };
    loop {
        let mut builder = Builder { staging: &mut staging, staged, faults, api };
        let built = build_round(&mut builder, plan, targets, &root_path, outcomes);
        timeline::mark(Some(plan.class), "built");
        // The clash checks ran while these were built. Nothing is attached yet: if they refused
        // an image, build again without it.
        if settle_into(plan, settle) {
            outcomes.clear();
            continue;
        }
        timeline::mark(Some(plan.class), "checked");
        staging.leave()?;
        let attached = attach_all(built, root, targets, faults, outcomes, metas);
        timeline::mark(Some(plan.class), "attached");
        // Every overlay lists all merged names: one attached before another hierarchy failed may
        // name an image that is now lost. Take it off and build it again without.
        if !demote_lost(plan, outcomes) || attached.is_empty() {
            return Ok(());
        }
        for h in attached {
            let t = targets.iter().find(|t| t.hierarchy == h).expect("a target per hierarchy");
            metas.remove(&h);
            match mount::detach(&t.path) {
                Ok(()) => outcomes.remove(&h),
                Err(e) => outcomes.insert(
                    h,
                    Outcome::Failed {
                        reason: format!("it names images that are not merged, and taking it off failed: {e}"),
                    },
                ),
            };
        }
        staging.reenter()?;
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
    let class = plan.class;
    let written = state::origin_for(plan)
        .map_err(Error::msg)
        .and_then(|text| metas.values().try_for_each(|meta| state::write_origin(meta.as_fd(), class, &text)));
    if let Err(e) = written {
        plan.notes
            .push(format!("not writing {}/origin ({e}): systemd 260 and later will merge again", class.meta_dir()));
    }
}

/// A persistent upper that does not exist yet is created as systemd creates it (`mkdir -p`,
/// then the hierarchy's mode), and its work directory next to it; both on the root's own file
/// systems, so this happens in our namespace, before staging.
fn make_upper(plan: &Plan, root: BorrowedFd, targets: &[Target]) -> Result<()> {
    for hp in plan.hierarchies.iter().filter(|hp| !hp.layers.is_empty()) {
        let Some(Upper::Persistent { dir, work, create }) = hp.layout.as_ref().map(|l| &l.upper) else { continue };
        let t = targets.iter().find(|t| t.hierarchy == hp.hierarchy).expect("a target per hierarchy");
        if *create {
            let mode = match &t.fd {
                Some(fd) => fstat(fd).with_context(|| format!("stat {}", t.path))?.st_mode & 0o777,
                None => 0o755,
            };
            let fd = mkdir_all_in_root(root, dir, 0o755).with_context(|| format!("creating {dir}"))?;
            fchmod(&fd, Mode::from_raw_mode(mode)).with_context(|| format!("setting the mode of {dir}"))?;
        }
        let (parent, name) = work.rsplit_once('/').unwrap_or(("", work));
        let parent = open_in_root(root, parent, OFlags::PATH | OFlags::DIRECTORY)
            .with_context(|| format!("opening the parent of {work}"))?;
        match mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("creating {work}")),
        }
    }
    Ok(())
}

/// Apply the plan. Images that break an overlay are demoted in the plan with the reason; a
/// hierarchy that fails as a whole is left untouched. `settle` gives the plan as the clash checks
/// leave it, if they changed it; it is taken in before anything is attached.
pub fn apply(
    plan: &mut Plan,
    staged: &HashMap<String, Staged>,
    root: BorrowedFd,
    targets: &mut [Target],
    faults: &Faults,
    settle: impl FnOnce() -> Option<Plan>,
) -> Vec<(Hierarchy, Outcome)> {
    let mut settle = Some(settle);
    // A persistent upper is created only for the plan that stands.
    let creates = |hp: &HierarchyPlan| matches!(hp.layout.as_ref().map(|l| &l.upper), Some(Upper::Persistent { .. }));
    if plan.hierarchies.iter().any(creates) {
        settle_into(plan, &mut settle);
    }
    let mut outcomes: HashMap<Hierarchy, Outcome> = HashMap::new();
    let mut metas = HashMap::new();
    // Nothing to build (no extensions of this class, the common case for confexts): no staging.
    let applied = if plan.hierarchies.iter().any(|hp| !hp.layers.is_empty()) {
        make_upper(plan, root, targets)
            .and_then(|()| apply_rounds(plan, &mut settle, staged, root, targets, faults, &mut outcomes, &mut metas))
    } else {
        Ok(())
    };
    // Not taken in when no round was built: nothing is attached.
    settle_into(plan, &mut settle);
    if let Err(e) = applied {
        for hp in plan.hierarchies.iter().filter(|hp| !hp.layers.is_empty()) {
            outcomes.entry(hp.hierarchy).or_insert_with(|| Outcome::Failed { reason: e.to_string() });
        }
    }
    demote_lost(plan, &outcomes);
    if !metas.is_empty() {
        identify_through_merge(plan, root, &metas.keys().copied().collect::<Vec<_>>());
        write_origin(plan, &metas);
        timeline::mark(Some(plan.class), "origin");
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
