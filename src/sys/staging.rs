//! A private mount namespace to stage layers in. overlayfs clones every layer privately when the
//! superblock is created, and refuses layers that are not mounted in the caller's namespace
//! (fs/namespace.c, clone_private_mount: check_mnt; 7.1 also takes the root of a detached tree,
//! 6.12 does not); a freshly fsmount()ed image is in none. So layers are attached under a tmpfs in a namespace of our own, the overlay
//! is created there (detached), and we return to the original namespace to attach it. Nobody else
//! ever sees a staging mount, and they all vanish with the namespace.
//!
//! The namespace lives as long as this value: after attaching, we may come back to build a
//! hierarchy again (see apply.rs), with every image still attached here.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{mkdirat, Mode, OFlags, CWD};
use rustix::mount::{mount_change, MountPropagationFlags};
use rustix::process::{chdir, fchdir};
use rustix::thread::{move_into_link_name_space, unshare_unsafe, LinkNameSpaceType, UnshareFlags};

use crate::error::{Context, Error, Result};
use crate::sys::fs::proc_path;
use crate::sys::mount::{self, Flags, Mechanism, OverlayApi, OverlaySpec};

/// Where the staging tmpfs goes inside our own namespace; /run is what systemd-sysext uses too.
const DIR: &str = "/run";

pub struct Staging {
    original: OwnedFd,
    /// Held so that the namespace, and everything attached in it, lives while we are out of it.
    staging: Option<OwnedFd>,
    /// Whether we are in the staging namespace now.
    inside: bool,
    count: usize,
}

impl Staging {
    pub fn enter() -> Result<Staging> {
        let open_ns = || {
            rustix::fs::open("/proc/self/ns/mnt", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .context("opening /proc/self/ns/mnt")
        };
        let original = open_ns()?;
        // SAFETY: NEWNS (with the CLONE_FS it implies) changes only this thread's mount namespace
        // and root; no file descriptor table is unshared. Other threads of ours (the clash checks)
        // stay where they are and use nothing but file descriptors. The kernel lets a thread come
        // back (setns) only while no other thread shares its fs_struct, so no thread is started
        // between here and `leave`.
        unsafe { unshare_unsafe(UnshareFlags::NEWNS) }.context("unshare(CLONE_NEWNS) for staging")?;
        let mut staging = Staging { original, staging: None, inside: true, count: 0 };
        staging.staging = Some(open_ns()?);
        // Private, so nothing we mount here propagates back to the real namespace.
        mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
            .context("making the staging namespace private")?;
        let tmp = mount::tmpfs(0o755, Some("1m"))?;
        mount::attach_at(tmp.as_fd(), DIR)?;
        Ok(staging)
    }

    /// A fresh directory in the staging tmpfs, by absolute path.
    fn new_dir(&mut self) -> Result<String> {
        self.count += 1;
        let path = format!("{DIR}/{}", self.count);
        mkdirat(CWD, path.as_str(), Mode::from_raw_mode(0o700)).context("creating a staging directory")?;
        Ok(path)
    }

    /// Attach a detached mount in the staging area, and say where. The fd keeps pointing at the
    /// mount, now attached here, so fds opened through it are valid overlay layers.
    pub fn add(&mut self, mnt: &OwnedFd) -> Result<String> {
        let path = self.new_dir()?;
        mount::attach_at(mnt.as_fd(), &path)?;
        Ok(path)
    }

    /// What this kernel's overlayfs does with fsconfig keys.
    pub fn probe_overlay_api(&self) -> Result<OverlayApi> {
        mount::probe_overlay_api(DIR)
    }

    /// An overlay of `layers` (directories, top first), detached; `spec` gives everything but
    /// the paths: the mount source, the options and flags. With `upper`, writes go there.
    pub fn overlay(
        &mut self,
        layers: &[BorrowedFd],
        upper: Option<&UpperIn>,
        how: Mechanism,
        mut spec: OverlaySpec,
    ) -> Result<OwnedFd> {
        if how == Mechanism::Options {
            return self.overlay_by_options(layers, upper, spec);
        }
        spec.lowers = layers.iter().map(|fd| proc_path(*fd)).collect();
        spec.upper = upper.map(|u| u.paths(&proc_path(u.parent)));
        mount::overlay_fsconfig(&spec, how == Mechanism::Append)
    }

    /// The classic option string, kept short whatever the number of layers: each layer is bound
    /// to a directory named by its position in a fresh staging directory, and mount(2) runs
    /// from there, so `lowerdir=0:1:2:…` needs at most four bytes a layer (2 KB for overlayfs's
    /// 500). Binding the opened directory, not naming a path, keeps every layer where it was
    /// resolved (inside its image, inside the sysroot). An upper and its work directory must be on
    /// one mount: their parent is bound once, as `u`.
    fn overlay_by_options(
        &mut self,
        layers: &[BorrowedFd],
        upper: Option<&UpperIn>,
        mut spec: OverlaySpec,
    ) -> Result<OwnedFd> {
        let dir = self.new_dir()?;
        let names: Vec<String> = (0..layers.len()).map(|i| i.to_string()).collect();
        let parent = upper.map(|u| (u.parent, "u".to_string()));
        for (layer, name) in layers.iter().copied().zip(names.iter().cloned()).chain(parent) {
            let bind = mount::clone_dir(layer)?;
            let path = format!("{dir}/{name}");
            mkdirat(CWD, path.as_str(), Mode::from_raw_mode(0o700)).context("creating a staging directory")?;
            mount::attach_at(bind.as_fd(), &path)?;
        }
        spec.lowers = names;
        spec.upper = upper.map(|u| u.paths("u"));
        let target = "overlay";
        mkdirat(CWD, format!("{dir}/{target}").as_str(), Mode::from_raw_mode(0o700))
            .context("creating a staging directory")?;
        let here = rustix::fs::open(dir.as_str(), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("opening {dir}"))?;
        fchdir(&here).with_context(|| format!("changing into {dir}"))?;
        let overlay = mount::overlay_mount(&spec, target);
        chdir("/").context("changing back to /")?;
        overlay
    }

    /// The overlay with its subdirectory `sub` made a read-only bind mount of itself, as a new
    /// detached tree: what systemd does to `.systemd-confext` of a writable merge, done here so
    /// the tree is complete before anyone can see it.
    pub fn with_read_only_subdir(&mut self, overlay: &OwnedFd, sub: &str, flags: Flags) -> Result<OwnedFd> {
        let path = self.add(overlay)?;
        mount::bind_read_only(&format!("{path}/{sub}"), flags)?;
        mount::clone_tree(&path)
    }

    /// Back to the namespace we came from, where the overlays get attached.
    pub fn leave(&mut self) -> Result<()> {
        move_into_link_name_space(self.original.as_fd(), Some(LinkNameSpaceType::Mount))
            .context("returning to the original mount namespace")?;
        self.inside = false;
        Ok(())
    }

    /// Into the staging namespace again, where every staged image still is.
    pub fn reenter(&mut self) -> Result<()> {
        let ns = self.staging.as_ref().ok_or_else(|| Error::msg("the staging namespace is gone"))?;
        move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Mount))
            .context("entering the staging namespace again")?;
        self.inside = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.inside {
            if let Err(e) = self.leave() {
                // Nothing sane can follow: every later mount would land in a namespace nobody sees.
                eprintln!("initrd-sysext: {e}");
                std::process::abort();
            }
        }
    }
}

/// Where a writable overlay writes: `upper` and `work`, two entries of the directory `parent`
/// (a directory of the staging namespace, so overlayfs takes it).
pub struct UpperIn<'a> {
    pub parent: BorrowedFd<'a>,
    pub upper: &'a str,
    pub work: &'a str,
}

impl UpperIn<'_> {
    fn paths(&self, parent: &str) -> mount::Upper {
        mount::Upper { upper: format!("{parent}/{}", self.upper), work: format!("{parent}/{}", self.work) }
    }
}

/// An absolute path opened as a directory (`O_PATH`) in the current namespace.
pub fn open_path(path: &str) -> Result<OwnedFd> {
    rustix::fs::openat(CWD, path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {path}"))
}
