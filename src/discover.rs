//! Step 2: find extension images of a class the way systemd-sysext and systemd-confext do.
//! Search order, naming, first-wins de-duplication and masking follow discover-image.c; symlinks
//! are resolved inside the sysroot.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fstat, statat, AtFlags, FileType, OFlags};
use rustix::io::Errno;

use crate::class::Class;
use crate::fstab;
use crate::sys::fs::{
    describe_type, is_mount_point, list_dir_raw, open_dir_in_root, open_in_root, read_limited, real_path,
};
use crate::sys::identity::{self, FileId};

pub enum Object {
    /// An `O_PATH` fd of a regular file, to identify and attach.
    File(OwnedFd),
    /// An `O_PATH` fd of a directory extension.
    Dir(OwnedFd),
}

pub struct Found {
    pub name: String,
    /// Inside the root, as listed: `/etc/extensions/podman.raw`.
    pub path: String,
    /// Inside the root, where a symlink led.
    pub target: Option<String>,
    pub size: u64,
    /// The opened object, or why this entry is not an image.
    pub object: Result<Object, String>,
    /// For an image: how the booted system's systemd-sysext will name and recognise it.
    pub origin: Option<Origin>,
}

/// An image as systemd-sysext (≥ 260) records it in `.systemd-sysext/origin`, gathered from the
/// fd we hold, so that it describes the very file we merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Inside the root, every symlink resolved: systemd names an image by where it really is.
    pub path: String,
    /// Its identity, or why the kernel would not give one.
    pub file: Result<FileId, String>,
}

/// Whether `name` (suffixes gone) is an image name, by systemd's rule (`image_name_is_valid()`):
/// a file name (not empty, `.` or `..`, no `/`, at most 255 bytes), no ASCII control character,
/// UTF-8 (a `&str` is), and not a `.#` temporary file. The one rule for discovery and for the
/// names of `rd.sysext=`.
pub fn image_name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.bytes().any(|b| b < b' ' || b == 0x7f)
        && !name.starts_with(".#")
}

/// The image name for a directory entry, by the type it resolves to: `.raw` is required of a
/// file, the class's suffix (`.sysext`, `.confext`) is optional and dropped.
pub fn image_name(entry: &str, is_dir: bool, class: Class) -> Result<String, String> {
    let stem = if is_dir {
        entry
    } else {
        entry.strip_suffix(".raw").ok_or("not an image: regular files must end in .raw")?
    };
    let name = stem.strip_suffix(class.suffix()).unwrap_or(stem);
    if image_name_is_valid(name) {
        Ok(name.to_string())
    } else {
        Err(format!("not a valid image name: {name:?}"))
    }
}

fn open_error(e: Errno, link: Option<&str>) -> String {
    match (e, link) {
        (Errno::LOOP, _) => "symlink loop: too many levels of symbolic links".into(),
        (Errno::NOENT, Some(l)) => {
            format!("dangling symlink: {l} does not exist inside the sysroot")
        }
        (e, _) => format!("cannot open: {}", std::io::Error::from(e)),
    }
}

/// One search directory's entries, opened. `root_real` is the sysroot's real path, to turn the
/// kernel's paths back into paths inside the root.
fn scan_dir(root: BorrowedFd, root_real: &str, dir: &str, class: Class, notes: &mut Vec<String>) -> Vec<(Found, bool)> {
    let dirfd = match open_dir_in_root(root, dir) {
        Ok(fd) => fd,
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => return Vec::new(),
        Err(e) => {
            notes.push(format!("cannot read {dir}: {e}"));
            return Vec::new();
        }
    };
    let names = match list_dir_raw(dirfd.as_fd()) {
        Ok(n) => n,
        Err(e) => {
            notes.push(format!("cannot list {dir}: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    // Sidecars (`NAME.verity`, …) belong to their image; they are not images themselves.
    // systemd-sysupdate's temporary files are not images yet.
    let is_sidecar = |n: &str| crate::verify::evidence::SIDECAR_SUFFIXES.iter().any(|s| n.ends_with(s));
    for raw in names {
        let entry = match &raw {
            Ok(n) => n.clone(),
            Err(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        };
        if is_sidecar(&entry) || entry.starts_with(".sysupdate.") {
            continue;
        }
        let path = format!("{dir}/{entry}");
        if raw.is_err() {
            let object = Err("not a valid image name: it is not UTF-8".into());
            out.push((Found { name: entry, path, target: None, size: 0, object, origin: None }, false));
            continue;
        }
        let link = statat(&dirfd, entry.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
            .map(|_| {
                rustix::fs::readlinkat(&dirfd, entry.as_str(), Vec::new())
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        let mut found =
            Found { name: entry.clone(), path, target: None, size: 0, object: Err(String::new()), origin: None };
        let opened = open_in_root(root, &found.path, OFlags::PATH)
            .map_err(|e| open_error(Errno::from_io_error(&e).unwrap_or(Errno::IO), link.as_deref()));
        let fd = match opened {
            Ok(fd) => fd,
            Err(reason) => {
                found.object = Err(reason);
                // An entry we cannot open claims no name, as in systemd.
                out.push((found, false));
                continue;
            }
        };
        let resolved = real_path(fd.as_fd()).ok().map(|p| match p.strip_prefix(root_real) {
            Some(rest) if root_real != "/" => rest.to_string(),
            _ => p,
        });
        if link.is_some() {
            found.target = resolved.clone();
        }
        let st = match fstat(&fd) {
            Ok(st) => st,
            Err(e) => {
                found.object = Err(format!("cannot stat: {}", std::io::Error::from(e)));
                out.push((found, false));
                continue;
            }
        };
        let ftype = FileType::from_raw_mode(st.st_mode);
        let is_dir = ftype == FileType::Directory;
        if !is_dir && ftype != FileType::RegularFile {
            found.object = Err(format!("is a {}, not a regular file or directory", describe_type(st.st_mode)));
            out.push((found, false));
            continue;
        }
        match image_name(&entry, is_dir, class) {
            Ok(name) => {
                found.name = name;
                found.size = st.st_size as u64;
                let path = resolved.unwrap_or_else(|| found.path.clone());
                let file = identity::identify(fd.as_fd()).map_err(|e| format!("cannot identify it: {e}"));
                found.origin = Some(Origin { path, file });
                found.object = Ok(if is_dir { Object::Dir(fd) } else { Object::File(fd) });
                out.push((found, true));
            }
            Err(reason) => {
                found.object = Err(reason);
                out.push((found, false));
            }
        }
    }
    out
}

/// A search path the sysroot's fstab puts on a file system of its own that is not mounted yet
/// (a separate /var without `x-initrd.mount`) cannot be searched: say so, once per file system.
fn unmounted_search_paths(root: BorrowedFd, class: Class, notes: &mut Vec<String>) {
    for u in unmounted(root, class.search_paths(), notes) {
        notes.push(format!(
            "{} is a separate file system ({} in /etc/fstab) that is not mounted in the initrd, so images in {} cannot be seen: {}",
            u.target,
            u.source,
            u.below.join(" and "),
            u.fix
        ));
    }
}

/// A file system the sysroot's fstab lists that the initrd has not mounted.
pub struct Unmounted<'a> {
    pub target: String,
    pub source: String,
    /// What to do about it.
    pub fix: &'static str,
    /// The paths asked about that lie on it.
    pub below: Vec<&'a str>,
}

/// Of `paths` (inside the root), those the sysroot's fstab puts on a file system of its own
/// that the initrd has not mounted (a separate /var without `x-initrd.mount`), by file system.
pub fn unmounted<'a>(root: BorrowedFd, paths: &[&'a str], notes: &mut Vec<String>) -> Vec<Unmounted<'a>> {
    let Ok(fd) = open_in_root(root, "etc/fstab", OFlags::RDONLY | OFlags::NONBLOCK) else { return Vec::new() };
    let text = match read_limited(fd, MAX_FSTAB) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            notes.push(format!("cannot read /etc/fstab: {e}"));
            return Vec::new();
        }
    };
    let entries = fstab::parse(&text);
    let mut named: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for dir in paths {
        let Some(e) = fstab::holding(&entries, dir).filter(|e| !named.contains(&e.target.as_str())) else { continue };
        named.push(&e.target);
        let mounted = match is_mount_point(root, &e.target) {
            Ok(m) => m,
            Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => false,
            Err(err) => {
                notes.push(format!("cannot tell whether {} is mounted: {err}", e.target));
                continue;
            }
        };
        if !mounted {
            let below: Vec<&str> = paths.iter().copied().filter(|d| fstab::holding(&entries, d) == Some(e)).collect();
            let fix = if e.has_option("x-initrd.mount") {
                "its fstab entry has x-initrd.mount, so its mount in the initrd failed (see its mount unit)"
            } else {
                "add x-initrd.mount to the options of its fstab entry"
            };
            out.push(Unmounted { target: e.target.clone(), source: e.source.clone(), fix, below });
        }
    }
    out
}

/// The largest /etc/fstab we read; real ones are a few hundred bytes.
const MAX_FSTAB: usize = 1 << 20;

/// All entries of the class's search paths, in search order. Later entries with a name already
/// taken are reported as masked; an empty directory in an earlier path (/etc/extensions,
/// /var/lib/confexts) masks an image on purpose.
pub fn discover(root: BorrowedFd, class: Class, notes: &mut Vec<String>) -> Vec<Found> {
    unmounted_search_paths(root, class, notes);
    let root_real = real_path(root).unwrap_or_default();
    let mut taken: Vec<(String, String)> = Vec::new();
    let mut all = Vec::new();
    for dir in class.search_paths() {
        for (mut found, claims) in scan_dir(root, &root_real, dir, class, notes) {
            if claims {
                if let Some((_, first)) = taken.iter().find(|(n, _)| *n == found.name) {
                    found.object = Err(format!("masked by {first}, which has the same name and comes first"));
                    found.origin = None;
                } else {
                    taken.push((found.name.clone(), found.path.clone()));
                }
            }
            all.push(found);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysext(entry: &str, is_dir: bool) -> Result<String, String> {
        image_name(entry, is_dir, Class::Sysext)
    }

    #[test]
    fn names() {
        assert_eq!(sysext("podman.raw", false).unwrap(), "podman");
        assert_eq!(sysext("podman.sysext.raw", false).unwrap(), "podman");
        assert_eq!(sysext("podman-5.4.raw", false).unwrap(), "podman-5.4");
        assert_eq!(sysext("podman", true).unwrap(), "podman");
        assert_eq!(sysext("podman.sysext", true).unwrap(), "podman");
        assert_eq!(sysext("podman.img", false).unwrap_err(), "not an image: regular files must end in .raw");
        assert!(sysext(".raw", false).is_err());
        assert!(sysext("a\u{7}b.raw", false).is_err());
        assert!(sysext(".#tmp.raw", false).is_err());
    }

    #[test]
    fn confext_names_drop_their_own_suffix_only() {
        let confext = |e, d| image_name(e, d, Class::Confext);
        assert_eq!(confext("podman-etc.confext.raw", false).unwrap(), "podman-etc");
        assert_eq!(confext("site.confext", true).unwrap(), "site");
        // systemd strips only the class's suffix: a sysext's name is a name like any other here.
        assert_eq!(confext("x.sysext.raw", false).unwrap(), "x.sysext");
        assert_eq!(sysext("x.confext.raw", false).unwrap(), "x.confext");
    }

    #[test]
    fn image_names_follow_systemds_rule() {
        // image_name_is_valid() in systemd's os-util.c: a file name, no ASCII control character,
        // UTF-8, not a ".#" temporary file. Hidden names and other Unicode are fine.
        let long = "x".repeat(255);
        for ok in ["podman", ".hidden", "a b", "x\u{85}y", "é", "...", long.as_str()] {
            assert_eq!(sysext(&format!("{ok}.raw"), false).as_deref(), Ok(ok), "{ok:?}");
        }
        let too_long = "x".repeat(256);
        for bad in ["", ".", "..", ".#tmp", "a\u{1}b", "a\u{7f}b", too_long.as_str()] {
            assert!(sysext(bad, true).is_err(), "{bad:?}");
        }
    }
}
