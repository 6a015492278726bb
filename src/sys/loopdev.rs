//! Loop devices through two ioctls, written with rustix instead of the loopdev crate: loopdev's
//! maintained fork runs bindgen, which would need libclang at build time for two small structs.
//!
//! Each image gets a fresh read-only device with autoclear, so the kernel frees it as soon as the
//! last mount of it goes away: nothing to clean up after an unmerge or a rollback.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, Ioctl, IoctlOutput, Opcode, Setter};

use crate::error::{Context, Error, Result};

const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `LOOP_CTL_GET_FREE` returns the device number as the ioctl's result.
struct GetFree;

unsafe impl Ioctl for GetFree {
    type Output = u32;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }
    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        core::ptr::null_mut()
    }
    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut core::ffi::c_void) -> rustix::io::Result<u32> {
        u32::try_from(out).map_err(|_| Errno::INVAL)
    }
}

/// An attached loop device. Dropping it closes our fd; with autoclear, the kernel then frees the
/// device unless a mount still holds it.
pub struct LoopDevice {
    pub path: String,
    /// How many free devices it was handed: more than one when another process configured the
    /// first before we could.
    pub tries: usize,
    /// Holds the device until a mount does; autoclear frees it once neither does.
    _hold: OwnedFd,
}

/// Which bytes of the backing file the device shows: a whole image, or one partition of a DDI.
#[derive(Clone, Copy)]
pub struct Range {
    pub offset: u64,
    /// 0: to the end of the file.
    pub size: u64,
}

impl Range {
    pub const WHOLE: Range = Range { offset: 0, size: 0 };
}

fn configure(dev: BorrowedFd, backing: BorrowedFd, range: Range, direct_io: bool) -> rustix::io::Result<()> {
    let mut flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    if direct_io {
        flags |= LO_FLAGS_DIRECT_IO;
    }
    // SAFETY: all-zero is a valid loop_config; we only set plain integers.
    let mut cfg: LoopConfig = unsafe { core::mem::zeroed() };
    cfg.fd = rustix::fd::AsRawFd::as_raw_fd(&backing) as u32;
    cfg.info.flags = flags;
    cfg.info.offset = range.offset;
    cfg.info.sizelimit = range.size;
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `LoopConfig` mirrors.
    unsafe { ioctl(dev, Setter::<LOOP_CONFIGURE, LoopConfig>::new(cfg)) }
}

/// One attach at a time among our own threads: `LOOP_CTL_GET_FREE` hands every caller the same
/// free device until one of them has configured it, and the others must ask again. With several
/// images opened at once on two busy CPUs, a thread lost that race 16 times in a row (two 5.10
/// boots in 31 with 132 images: `no free loop device`).
static ATTACH: Mutex<()> = Mutex::new(());

/// Attach `backing` (a file opened read-only) to a free loop device, read-only with autoclear,
/// with direct I/O where the backing file system supports it (no double page cache).
pub fn attach(backing: BorrowedFd, range: Range, loop_control: &str) -> Result<LoopDevice> {
    let ctl = rustix::fs::open(loop_control, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {loop_control} (is the loop module loaded?)"))?;
    let _one_at_a_time = ATTACH.lock().unwrap_or_else(PoisonError::into_inner);
    // Another process may still take the device between GET_FREE and CONFIGURE: then ask again.
    for tries in 1..=16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { ioctl(ctl.as_fd(), GetFree) }.context("no free loop device (LOOP_CTL_GET_FREE)")?;
        let path = format!("/dev/loop{n}");
        let dev = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("opening {path}"))?;
        // overlayfs takes O_DIRECT for files whose real file system does not do it (squashfs):
        // an image seen through a merged /usr (a confext a sysext ships) would read as EINVAL.
        let direct_io = !crate::sys::fs::on_overlayfs(backing);
        let mut res = configure(dev.as_fd(), backing, range, direct_io);
        if res == Err(Errno::INVAL) {
            // The backing file system cannot do direct I/O (tmpfs, for one).
            res = configure(dev.as_fd(), backing, range, false);
        }
        match res {
            Ok(()) => return Ok(LoopDevice { path, tries, _hold: dev }),
            Err(Errno::BUSY) => continue,
            Err(e) => return Err(e).with_context(|| format!("configuring {path} (LOOP_CONFIGURE)")),
        }
    }
    Err(Error::msg("no free loop device: every device was taken before we could configure it"))
}
