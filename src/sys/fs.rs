//! fd-based file helpers. Paths inside the sysroot are always resolved with openat2
//! `RESOLVE_IN_ROOT`, so an absolute symlink such as Flatcar's
//! `/etc/extensions/podman.raw -> /opt/extensions/…` means `<sysroot>/opt/…`, and `..` can never
//! climb out of the sysroot.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};

use crate::error::{Context, Result};

pub fn open_in_root(root: BorrowedFd, path: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "." } else { path };
    // openat2 refuses flags that O_PATH ignores, so NOCTTY only goes with real opens.
    let extra = if flags.contains(OFlags::PATH) { OFlags::CLOEXEC } else { OFlags::CLOEXEC | OFlags::NOCTTY };
    Ok(openat2(root, path, flags | extra, Mode::empty(), ResolveFlags::IN_ROOT)?)
}

/// A directory we will list or walk.
pub fn open_dir_in_root(root: BorrowedFd, path: &str) -> std::io::Result<OwnedFd> {
    open_in_root(root, path, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// The magic-link path of an fd: how overlayfs and mount(2) are told about a layer we hold open.
pub fn proc_path(fd: BorrowedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The path the kernel has for an fd, for messages and for mountinfo lookups.
pub fn real_path(fd: BorrowedFd) -> Result<String> {
    let p = std::fs::read_link(proc_path(fd)).context("reading /proc/self/fd (is /proc mounted?)")?;
    Ok(p.to_string_lossy().into_owned())
}

/// Re-open an `O_PATH` fd for reading. We never open an unknown file for reading directly,
/// because opening a fifo blocks and opening a device can have side effects.
pub fn reopen_read(fd: BorrowedFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(proc_path(fd), OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty())?)
}

/// Read at most `max + 1` bytes, so the caller can tell "exactly max" from "too big".
/// The buffer is sized from the file's length up front: read_to_end on a `Take` cannot ask for
/// it and would grow from 32 bytes, one read per doubling.
pub fn read_limited(fd: impl AsFd, max: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::from(fd.as_fd().try_clone_to_owned()?);
    let size = rustix::fs::fstat(&file).map_or(0, |st| usize::try_from(st.st_size).unwrap_or(0));
    let mut buf = Vec::with_capacity(size.min(max) + 1);
    file.take(max as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Entry names of a directory, sorted, without `.` and `..`.
pub fn list_dir(fd: BorrowedFd) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> =
        list_dir_raw(fd)?.into_iter().map(|n| n.unwrap_or_else(|b| String::from_utf8_lossy(&b).into_owned())).collect();
    names.sort();
    Ok(names)
}

/// Entry names of a directory with the type the directory entry gives (`Unknown` where the file
/// system does not say), sorted, without `.` and `..`.
pub fn list_dir_typed(fd: BorrowedFd) -> std::io::Result<Vec<(String, rustix::fs::FileType)>> {
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    let mut entries = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            entries.push((String::from_utf8_lossy(name).into_owned(), entry.file_type()));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Entry names of a directory, sorted by their bytes, without `.` and `..`; a name that is not
/// UTF-8 is given as its bytes.
pub fn list_dir_raw(fd: BorrowedFd) -> std::io::Result<Vec<std::result::Result<String, Vec<u8>>>> {
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| String::from_utf8(n).map_err(|e| e.into_bytes())).collect())
}

pub fn describe_type(mode: u32) -> &'static str {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::RegularFile => "regular file",
        rustix::fs::FileType::Directory => "directory",
        rustix::fs::FileType::Symlink => "symlink",
        rustix::fs::FileType::Fifo => "fifo",
        rustix::fs::FileType::Socket => "socket",
        rustix::fs::FileType::CharacterDevice => "character device",
        rustix::fs::FileType::BlockDevice => "block device",
        rustix::fs::FileType::Unknown => "unknown file type",
    }
}

/// Whether `path` inside `root` is the root of a mount (resolved inside `root`, like every path
/// we open there). `STATX_ATTR_MOUNT_ROOT` says so directly (Linux 5.8); without it, a mount
/// point is where the device changes from the parent.
pub fn is_mount_point(root: BorrowedFd, path: &str) -> std::io::Result<bool> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};
    let fd = open_in_root(root, path, OFlags::PATH)?;
    let st = statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
    if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    let parent = open_in_root(fd.as_fd(), "..", OFlags::PATH)?;
    let up = statx(&parent, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
    Ok((st.stx_dev_major, st.stx_dev_minor) != (up.stx_dev_major, up.stx_dev_minor))
}

/// Create `path` inside `root` and any missing parents (`mkdir -p`, new directories with
/// `mode`), resolved inside the root like every path there, and open it.
pub fn mkdir_all_in_root(root: BorrowedFd, path: &str, mode: u32) -> std::io::Result<OwnedFd> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let parent = open_in_root(root, if at.is_empty() { "." } else { &at }, OFlags::PATH | OFlags::DIRECTORY)?;
        match rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        at = format!("{at}/{part}");
    }
    open_dir_in_root(root, path)
}

/// Whether the file system an fd is on is mounted read-only.
pub fn read_only_fs(fd: BorrowedFd) -> std::io::Result<bool> {
    let st = rustix::fs::fstatvfs(fd)?;
    Ok(st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// `rm -rf` of the entry `name` of the directory `dir`, never following a symlink: a link is
/// removed, not what it points to. `depth` bounds a hostile tree.
pub fn remove_tree(dir: BorrowedFd, name: &[u8], depth: usize) -> std::io::Result<()> {
    use rustix::fs::{statat, unlinkat, AtFlags, FileType};
    let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        r => r?,
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(unlinkat(dir, name, AtFlags::empty())?);
    }
    if depth == 0 {
        let name = String::from_utf8_lossy(name);
        return Err(std::io::Error::other(format!("{name}: too deep to remove")));
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for entry in list_dir_raw(sub.as_fd())? {
        let entry = entry.map_or_else(|bytes| bytes, String::into_bytes);
        remove_tree(sub.as_fd(), &entry, depth - 1)?;
    }
    Ok(unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Whether an fd is on overlayfs (`OVERLAYFS_SUPER_MAGIC`); `false` when the kernel will not say.
pub fn on_overlayfs(fd: BorrowedFd) -> bool {
    const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
    rustix::fs::fstatfs(fd).is_ok_and(|st| st.f_type as u64 == OVERLAYFS_SUPER_MAGIC)
}
