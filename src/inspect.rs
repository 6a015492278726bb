//! Step 4: what an image holds, for the planner: its release files, whether it carries
//! os-release, which hierarchies it fills, and where it would clash with the base; for a
//! confext, which of the base's sensitive files in /etc it replaces. Read-only; paths inside the
//! image are resolved inside the image.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fstat, openat, statat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::class::{Class, Hierarchy};
use crate::error::{Context, Result};
use crate::mutable::Entry;
use crate::plan::Facts;
use crate::release;
use crate::sys::fs::{list_dir, list_dir_typed, open_in_root, read_limited};
use crate::validate::{conflicts, Conflict, Node, ReleaseFile};
use crate::verify::gpt::Role;

/// A mounted image. A plain image or a DDI's root partition holds `usr/` and `opt/`; a DDI's
/// usr partition is the `/usr` tree itself, so its paths lose the `usr/` prefix.
#[derive(Clone, Copy)]
pub struct ImageRoot<'a> {
    pub fd: BorrowedFd<'a>,
    pub role: Role,
}

impl ImageRoot<'_> {
    /// Open `path` as seen from the extension's root (`usr/lib/os-release`), inside the image.
    pub fn open(&self, path: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
        match (self.role, path.strip_prefix("usr")) {
            (Role::Root, _) => open_in_root(self.fd, path, flags),
            (Role::Usr, Some(rest)) if rest.is_empty() || rest.starts_with('/') => open_in_root(self.fd, rest, flags),
            (Role::Usr, _) => Err(Errno::NOENT.into()),
        }
    }

    fn open_dir(&self, path: &str) -> std::io::Result<OwnedFd> {
        self.open(path, OFlags::RDONLY | OFlags::DIRECTORY)
    }
}

/// Files of /etc whose replacement by a confext the admin should hear about: what PID 1 and the
/// initrd read early, and the configuration of systemd-sysext and systemd-confext themselves.
pub const SENSITIVE: [&str; 12] = [
    "etc/machine-id",
    "etc/fstab",
    "etc/os-release",
    "etc/passwd",
    "etc/group",
    "etc/shadow",
    "etc/gshadow",
    "etc/systemd/confext.conf",
    "etc/systemd/confext.conf.d",
    "etc/systemd/sysext.conf",
    "etc/systemd/sysext.conf.d",
    "etc/extensions",
];
/// More candidates than this is not a real image; stop reading.
const MAX_RELEASE_FILES: usize = 64;
/// Deeper than any real /usr; a bound on a hostile image.
const MAX_DEPTH: usize = 64;

fn missing(e: &std::io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::NOENT | Errno::NOTDIR))
}

fn node(st: &rustix::fs::Stat) -> Node {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => Node::Directory,
        FileType::Symlink => Node::Symlink,
        // overlayfs's whiteout: a character device 0:0.
        FileType::CharacterDevice if st.st_rdev == 0 => Node::Whiteout,
        _ => Node::Other,
    }
}

/// What sits at `path` (relative, resolved inside `root`) for PID 1's machine-id check: a file
/// with an ID, an empty or `uninitialized` one, a whiteout; `None` when nothing is there.
pub fn entry_at(root: BorrowedFd, path: &str) -> std::io::Result<Option<Entry>> {
    let (dir, name) = path.rsplit_once('/').unwrap_or((".", path));
    let dirfd = match open_in_root(root, dir, OFlags::PATH | OFlags::DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if missing(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = match statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if node(&st) == Node::Whiteout {
        return Ok(Some(Entry::Whiteout));
    }
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(Some(Entry::Present));
    }
    let fd = open_in_root(root, path, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let text = read_limited(&fd, 64)?;
    let unset = text.iter().all(u8::is_ascii_whitespace) || text.trim_ascii() == b"uninitialized";
    Ok(Some(if unset { Entry::Unset } else { Entry::Present }))
}

fn release_files(image: ImageRoot, class: Class, name: &str) -> Result<Vec<ReleaseFile>> {
    let dir_path = class.release_dir();
    let dir = match image.open_dir(dir_path) {
        Ok(d) => d,
        Err(e) if missing(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("opening {dir_path}")),
    };
    let exact = format!("extension-release.{name}");
    let mut out = Vec::new();
    for entry in list_dir(dir.as_fd()).context(format!("listing {dir_path}"))? {
        let Some(suffix) = entry.strip_prefix("extension-release.") else {
            continue;
        };
        if out.len() == MAX_RELEASE_FILES {
            break;
        }
        // The exact name may be a symlink (inside the image); the fallback takes regular files only.
        let path = format!("{dir_path}/{entry}");
        let fd = if entry == exact {
            image.open(&path, OFlags::RDONLY | OFlags::NONBLOCK)
        } else {
            openat(
                &dir,
                entry.as_str(),
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(Into::into)
        };
        let Ok(fd) = fd else { continue };
        if fstat(&fd).map(|st| FileType::from_raw_mode(st.st_mode)).ok() != Some(FileType::RegularFile) {
            continue;
        }
        let mut xattr = [0u8; 64];
        let strict_xattr = rustix::fs::fgetxattr(&fd, "user.extension-release.strict", &mut xattr[..])
            .ok()
            .map(|n| String::from_utf8_lossy(&xattr[..n]).trim().to_string());
        let content = read_limited(&fd, release::MAX_SIZE).with_context(|| format!("reading {path}"))?;
        out.push(ReleaseFile { suffix: suffix.to_string(), strict_xattr, content });
    }
    Ok(out)
}

/// A directory's entries, with the type each directory entry gives.
type Entries = Vec<(String, FileType)>;

/// What an image entry is. The directory entry's type says it without a stat, except for a
/// character device (a whiteout is one with device 0:0) and where the file system leaves the type
/// unknown.
fn image_node(image: BorrowedFd, name: &str, kind: FileType, path: &str) -> Result<Node> {
    Ok(match kind {
        FileType::Directory => Node::Directory,
        FileType::Symlink => Node::Symlink,
        FileType::CharacterDevice | FileType::Unknown => {
            node(&statat(image, name, AtFlags::SYMLINK_NOFOLLOW).with_context(|| format!("stat {path}/{name}"))?)
        }
        _ => Node::Other,
    })
}

/// Walk the image's directory (its `entries`) against the base's, only where both have
/// directories: below a path the base lacks, nothing can clash.
fn walk(
    image: BorrowedFd,
    entries: &[(String, FileType)],
    base: BorrowedFd,
    path: &str,
    depth: usize,
    out: &mut Vec<Conflict>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for (name, kind) in entries {
        let kind = *kind;
        let Ok(theirs) = statat(base, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let (b, i) = (node(&theirs), image_node(image, name, kind, path)?);
        let child = format!("{path}/{name}");
        if conflicts(b, i) {
            out.push(Conflict { path: child, base: b, image: i });
        } else if b == Node::Directory && i == Node::Directory {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let sub_image = openat(image, name.as_str(), flags, Mode::empty())
                .with_context(|| format!("opening {child} in the image"))?;
            let Ok(sub_base) = openat(base, name.as_str(), flags, Mode::empty()) else {
                continue;
            };
            let sub_entries =
                list_dir_typed(sub_image.as_fd()).with_context(|| format!("listing {child} in the image"))?;
            walk(sub_image.as_fd(), &sub_entries, sub_base.as_fd(), &child, depth + 1, out)?;
        }
    }
    Ok(())
}

/// The image's directory for a hierarchy and its entries, if it has a non-empty one.
fn hierarchy_dir(image: ImageRoot, h: Hierarchy) -> Result<Option<(OwnedFd, Entries)>> {
    let fd = match image.open_dir(h.dir()) {
        Ok(fd) => fd,
        Err(e) if missing(&e) => return Ok(None),
        Err(e) => return Err(e).context(format!("opening {} in the image", h.path())),
    };
    let entries = list_dir_typed(fd.as_fd()).with_context(|| format!("listing {} in the image", h.path()))?;
    Ok((!entries.is_empty()).then_some((fd, entries)))
}

/// The sensitive files of /etc a confext has an entry for, each with whether the base has one.
fn sensitive(image: ImageRoot, base: Option<BorrowedFd>) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for path in SENSITIVE {
        let (dir, name) = path.rsplit_once('/').expect("every sensitive path is inside etc/");
        let Ok(fd) = image.open(dir, OFlags::PATH | OFlags::DIRECTORY) else { continue };
        match statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e).context(format!("stat {path} in the image")),
            Ok(_) => {}
        }
        let rel = path.strip_prefix("etc/").expect("inside etc/");
        let in_base = base.is_some_and(|b| open_in_root(b, rel, OFlags::PATH | OFlags::NOFOLLOW).is_ok());
        out.push((format!("/{path}"), in_base));
    }
    Ok(out)
}

/// The clash check of one image: its hierarchy directories against the base's. The longest part
/// of the inspection, so it runs on a thread of its own from the moment the image is mounted,
/// while the rest is inspected, the plan is made and the overlay is built. It owns its file
/// descriptors.
pub struct Walk {
    root: OwnedFd,
    role: Role,
    class: Class,
    bases: Vec<(Hierarchy, OwnedFd)>,
}

impl Walk {
    pub fn new(image: ImageRoot, class: Class, bases: &[(Hierarchy, BorrowedFd)]) -> Result<Walk> {
        let dup = |fd: BorrowedFd| fd.try_clone_to_owned().context("duplicating a file descriptor for the clash check");
        let bases = bases.iter().map(|(h, fd)| Ok((*h, dup(*fd)?))).collect::<Result<_>>()?;
        Ok(Walk { root: dup(image.fd)?, role: image.role, class, bases })
    }

    pub fn run(&self) -> Result<Vec<Conflict>> {
        let image = ImageRoot { fd: self.root.as_fd(), role: self.role };
        let mut clashes = Vec::new();
        for (h, base) in self.bases.iter().filter(|(h, _)| self.class.hierarchies().contains(h)) {
            if let Some((dir, entries)) = hierarchy_dir(image, *h)? {
                walk(dir.as_fd(), &entries, base.as_fd(), h.path(), 0, &mut clashes)?;
            }
        }
        Ok(clashes)
    }
}

/// `bases` are the sysroot's hierarchy directories that exist, opened before any merge. The
/// facts come without `conflicts`: a `Walk` finds those.
pub fn inspect(image: ImageRoot, class: Class, name: &str, bases: &[(Hierarchy, BorrowedFd)]) -> Result<Facts> {
    let release_files = release_files(image, class, name)?;
    let has_os_release = match image.open("usr/lib/os-release", OFlags::PATH) {
        Ok(_) => true,
        Err(e) if missing(&e) => false,
        Err(e) => return Err(e).context("checking for usr/lib/os-release"),
    };
    let mut content = Vec::new();
    for &h in class.hierarchies() {
        if hierarchy_dir(image, h)?.is_some() {
            content.push(h);
        }
    }
    let (sensitive, machine_id) = match class {
        Class::Sysext => (Vec::new(), None),
        Class::Confext => {
            let base = bases.iter().find(|(h, _)| *h == Hierarchy::Etc).map(|(_, fd)| *fd);
            let id = entry_at(image.fd, "etc/machine-id").context("looking at etc/machine-id in the image")?;
            (sensitive(image, base)?, id)
        }
    };
    Ok(Facts { release_files, has_os_release, content, conflicts: Vec::new(), sensitive, machine_id })
}
