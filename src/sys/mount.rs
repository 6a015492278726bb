//! The new mount API (fsopen/fsconfig/fsmount/move_mount). Every file system we create starts as
//! a detached mount: it is in no mount table, nobody else can see it, and it vanishes when we
//! close its fd. Only the final overlays are attached. When the kernel refuses a mount, it explains
//! why on the fs-context fd; we put that text into the error instead of a bare EINVAL.

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::CWD;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, unmount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use crate::error::{Context, Error, Result};

/// An fs context being configured.
pub struct FsContext {
    fd: OwnedFd,
    fstype: &'static str,
}

impl FsContext {
    pub fn new(fstype: &'static str) -> Result<Self> {
        let fd = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
            .with_context(|| format!("fsopen({fstype}) (is the {fstype} module loaded?)"))?;
        Ok(FsContext { fd, fstype })
    }

    /// What the kernel logged on this context, e.g. "overlayfs: failed to resolve '…'".
    fn kernel_messages(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = rustix::io::read(&self.fd, &mut buf) {
            if n == 0 {
                break;
            }
            let msg = String::from_utf8_lossy(&buf[..n]);
            // Each message starts with a severity letter and a space.
            out.push(msg.get(2..).unwrap_or(&msg).trim().to_string());
        }
        out.join("; ")
    }

    fn fail(&self, what: String, e: rustix::io::Errno) -> Error {
        let msgs = self.kernel_messages();
        let what = if msgs.is_empty() { what } else { format!("{what} [kernel: {msgs}]") };
        Err::<(), _>(e).context(what).unwrap_err()
    }

    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.fail(format!("{}: setting {key}={value}", self.fstype), e))
    }

    /// Create the superblock and a detached mount of it.
    pub fn mount(self, attrs: MountAttrFlags) -> Result<OwnedFd> {
        fsconfig_create(&self.fd).map_err(|e| self.fail(format!("creating {} superblock", self.fstype), e))?;
        fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.fail(format!("fsmount of {}", self.fstype), e))
    }
}

/// Attach a detached mount on top of the directory `target` (an fd, so nothing can swap the path).
pub fn attach(mount: BorrowedFd, target: BorrowedFd, what: &str) -> Result<()> {
    move_mount(mount, "", target, "", MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH)
        .with_context(|| format!("attaching {what}"))
}

/// Attach a detached mount at an absolute path.
pub fn attach_at(mount: BorrowedFd, path: &str) -> Result<()> {
    move_mount(mount, "", CWD, path, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .with_context(|| format!("attaching at {path}"))
}

/// A detached copy of the mount tree at `path`, submounts included.
pub fn clone_tree(path: &str) -> Result<OwnedFd> {
    open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE,
    )
    .with_context(|| format!("cloning the mount tree at {path}"))
}

/// A detached bind mount of the directory `dir`.
pub fn clone_tree_fd(dir: BorrowedFd) -> Result<OwnedFd> {
    open_tree(
        dir,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .context("open_tree")
}

/// Lazy unmount, never following a symlink: systemd-sysext's way to unmerge.
pub fn detach(path: &str) -> Result<()> {
    unmount(path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).with_context(|| format!("unmounting {path}"))
}

/// A fresh tmpfs, for the META layer that carries `.systemd-sysext/`.
pub fn tmpfs() -> Result<OwnedFd> {
    let ctx = FsContext::new("tmpfs")?;
    ctx.set("mode", "0755")?;
    ctx.set("size", "1m")?;
    ctx.mount(MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC)
}

/// Mount a block device read-only and detached.
pub fn block_fs(fstype: &'static str, device: &str) -> Result<OwnedFd> {
    let ctx = FsContext::new(fstype)?;
    ctx.set("source", device)?;
    fsconfig_set_flag(&ctx.fd, "ro").map_err(|e| ctx.fail(format!("{fstype}: setting ro"), e))?;
    ctx.mount(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV)
}

/// Mount points below `dir` (absolute), from /proc/self/mountinfo, outermost first.
pub fn submounts(dir: &str) -> Result<Vec<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_submounts(&info, dir))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_submounts(info: &str, dir: &str) -> Vec<String> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut points: Vec<String> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape).filter(|p| p.starts_with(&prefix)).collect();
    points.sort();
    points.dedup();
    // Keep only the outermost: a recursive clone brings the nested ones along.
    let mut top: Vec<String> = Vec::new();
    for p in points {
        if !top.iter().any(|t| p.starts_with(&format!("{t}/"))) {
            top.push(p);
        }
    }
    top
}

/// Mount a read-only overlay from layer paths (top first) as a detached mount. `lowerdir+` (Linux
/// 6.8) takes one layer per call, so no option string limits the number of layers; older kernels
/// get the classic colon list, which must fit in a page.
pub fn overlay(layers: &[String]) -> Result<OwnedFd> {
    let ctx = FsContext::new("overlay")?;
    ctx.set("source", "sysext")?;
    match layers.split_first() {
        Some((first, rest)) if fsconfig_set_string(&ctx.fd, "lowerdir+", first.as_str()).is_ok() => {
            for l in rest {
                ctx.set("lowerdir+", l)?;
            }
        }
        _ => ctx.set("lowerdir", &layers.join(":"))?,
    }
    ctx.mount(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:40 / /sysroot/usr rw - ext4 /dev/sda2 ro
31 22 0:41 / /sysroot/opt rw - tmpfs tmpfs rw
32 31 0:42 / /sysroot/opt/data rw - tmpfs tmpfs rw
33 32 0:43 / /sysroot/opt/data/inner rw - tmpfs tmpfs rw
34 31 0:44 / /sysroot/opt/with\\040space rw - tmpfs tmpfs rw
35 22 0:45 / /sysroot/optional rw - tmpfs tmpfs rw
";

    #[test]
    fn outermost_submounts_only() {
        assert_eq!(parse_submounts(INFO, "/sysroot/opt"), ["/sysroot/opt/data", "/sysroot/opt/with space"]);
        assert!(parse_submounts(INFO, "/sysroot/usr").is_empty());
    }
}
