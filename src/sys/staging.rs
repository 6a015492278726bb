//! A private mount namespace to stage layers in. overlayfs clones every layer privately when the
//! superblock is created, and refuses layers that are not mounted in the caller's namespace;
//! a freshly fsmount()ed image is in none. So layers are attached under a tmpfs in a namespace
//! of our own, the overlay is created there (detached), and we return to the original namespace
//! to attach it. Nobody else ever sees a staging mount, and they all vanish with the namespace.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{mkdirat, Mode, OFlags, CWD};
use rustix::mount::{mount_change, MountPropagationFlags};
use rustix::thread::{move_into_link_name_space, unshare_unsafe, LinkNameSpaceType, UnshareFlags};

use crate::error::{Context, Result};
use crate::sys::mount;

/// Where the staging tmpfs goes inside our own namespace; /run is what systemd-sysext uses too.
const DIR: &str = "/run";

pub struct Staging {
    original: Option<OwnedFd>,
    count: usize,
}

impl Staging {
    pub fn enter() -> Result<Staging> {
        let original = rustix::fs::open("/proc/self/ns/mnt", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .context("opening /proc/self/ns/mnt")?;
        // SAFETY: NEWNS only changes this (single-threaded) process's mount namespace; no file
        // descriptor table is unshared.
        unsafe { unshare_unsafe(UnshareFlags::NEWNS) }.context("unshare(CLONE_NEWNS) for staging")?;
        let staging = Staging { original: Some(original), count: 0 };
        // Private, so nothing we mount here propagates back to the real namespace.
        mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
            .context("making the staging namespace private")?;
        let tmp = mount::tmpfs()?;
        mount::attach_at(tmp.as_fd(), DIR)?;
        Ok(staging)
    }

    /// Attach a detached mount in the staging area. The fd keeps pointing at the mount, now
    /// attached here, so fds opened through it are valid overlay layers.
    pub fn add(&mut self, mnt: &OwnedFd) -> Result<()> {
        self.count += 1;
        let name = self.count.to_string();
        let dir = rustix::fs::open(DIR, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .context("opening the staging tmpfs")?;
        mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700)).context("creating a staging directory")?;
        let path = format!("{DIR}/{name}");
        mount::attach_at(mnt.as_fd(), &path)
    }

    /// Back to the namespace we came from, where the overlays get attached.
    pub fn leave(mut self) -> Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> Result<()> {
        match self.original.take() {
            Some(fd) => move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Mount))
                .context("returning to the original mount namespace"),
            None => Ok(()),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            // Nothing sane can follow: every later mount would land in a namespace nobody sees.
            eprintln!("initrd-sysext: {e}");
            std::process::abort();
        }
    }
}

/// An absolute path opened as a directory (`O_PATH`) in the current namespace.
pub fn open_path(path: &str) -> Result<OwnedFd> {
    rustix::fs::openat(CWD, path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {path}"))
}
