//! Read-only dm-verity devices through four device-mapper ioctls on /dev/mapper/control, written
//! with rustix (no libdevmapper, no udev in the loop): create, load the table, resume, and a
//! deferred remove once the file system is mounted, so the device goes away by itself when the
//! last mount of it does, as our autoclear loop devices do.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{ioctl, Ioctl, IoctlOutput, Opcode};

use crate::error::{Context, Error, Result};

const DM_CONTROL: &str = "/dev/mapper/control";
/// `sizeof(struct dm_ioctl)`.
const HEADER: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const TARGET_SPEC: usize = 40;
const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_DEFERRED_REMOVE: u32 = 1 << 17;

#[derive(Clone, Copy)]
enum Cmd {
    Create = 3,
    Remove = 4,
    Suspend = 6,
    TableLoad = 9,
}

/// `_IOWR(0xfd, cmd, struct dm_ioctl)`; the kernel reads the real size from `data_size`.
struct DmIoctl<'a> {
    cmd: Cmd,
    buf: &'a mut [u8],
}

unsafe impl Ioctl for DmIoctl<'_> {
    type Output = ();
    const IS_MUTATING: bool = true;
    fn opcode(&self) -> Opcode {
        (3 << 30) | ((HEADER as Opcode) << 16) | (0xfd << 8) | self.cmd as Opcode
    }
    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        self.buf.as_mut_ptr().cast()
    }
    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut core::ffi::c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

/// A `struct dm_ioctl` header (version 4.0.0) naming `name`, followed by `payload`.
fn request(name: &str, flags: u32, target_count: u32, payload: &[u8]) -> Vec<u8> {
    let size = HEADER + payload.len();
    let mut b = vec![0u8; size];
    b[0..4].copy_from_slice(&4u32.to_ne_bytes());
    b[12..16].copy_from_slice(&(size as u32).to_ne_bytes()); // data_size
    b[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes()); // data_start
    b[20..24].copy_from_slice(&target_count.to_ne_bytes());
    b[28..32].copy_from_slice(&flags.to_ne_bytes());
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    b[HEADER..].copy_from_slice(payload);
    b
}

/// One `struct dm_target_spec` covering `sectors`, then its parameter string, 8-byte aligned.
fn target(sectors: u64, kind: &str, params: &str) -> Vec<u8> {
    let len = (TARGET_SPEC + params.len() + 1).next_multiple_of(8);
    let mut t = vec![0u8; len];
    t[8..16].copy_from_slice(&sectors.to_ne_bytes());
    t[20..24].copy_from_slice(&(len as u32).to_ne_bytes()); // next
    t[24..24 + kind.len()].copy_from_slice(kind.as_bytes());
    t[TARGET_SPEC..TARGET_SPEC + params.len()].copy_from_slice(params.as_bytes());
    t
}

fn call(ctl: BorrowedFd, cmd: Cmd, buf: &mut [u8]) -> rustix::io::Result<()> {
    // SAFETY: `buf` is a dm_ioctl header of `data_size` bytes followed by its payload; the kernel
    // writes back at most `data_size` bytes.
    unsafe { ioctl(ctl, DmIoctl { cmd, buf }) }
}

/// An active verity device. Dropping it before `release` removes it at once.
pub struct VerityDevice {
    ctl: OwnedFd,
    pub name: String,
    /// `/dev/dm-N`.
    pub path: String,
    released: bool,
}

/// Create the read-only verity device `name` of `sectors` 512-byte sectors with `table` (the
/// verity target's parameters). Devices are given as `major:minor`, so no device node is needed.
pub fn create_verity(name: &str, sectors: u64, table: &str) -> Result<VerityDevice> {
    if name.len() >= 128 {
        return Err(Error::msg(format!("device-mapper name too long: {name}")));
    }
    let ctl = rustix::fs::open(DM_CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {DM_CONTROL} (is the dm_mod module loaded?)"))?;
    let mut create = request(name, 0, 0, &[]);
    // A device of this name from a merge just undone may still be on its way out: the kernel
    // runs deferred removals from a work queue. Give it a moment.
    let mut created = call(ctl.as_fd(), Cmd::Create, &mut create);
    for _ in 0..40 {
        if created != Err(rustix::io::Errno::BUSY) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
        create = request(name, 0, 0, &[]);
        created = call(ctl.as_fd(), Cmd::Create, &mut create);
    }
    created.with_context(|| format!("creating device-mapper device {name}"))?;
    let dev = u64::from_ne_bytes(create[40..48].try_into().expect("8 bytes"));
    let minor = ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32;
    let device = VerityDevice { ctl, name: name.into(), path: format!("/dev/dm-{minor}"), released: false };
    let mut load = request(name, DM_READONLY_FLAG, 1, &target(sectors, "verity", table));
    call(device.ctl.as_fd(), Cmd::TableLoad, &mut load)
        .with_context(|| format!("loading the verity table of {name} (is the dm_verity module loaded?)"))?;
    let mut resume = request(name, 0, 0, &[]);
    call(device.ctl.as_fd(), Cmd::Suspend, &mut resume).with_context(|| format!("activating {name}"))?;
    Ok(device)
}

impl VerityDevice {
    /// Hand the device over to its mount: removed by the kernel once nothing holds it open.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        let mut rm = request(&self.name, DM_DEFERRED_REMOVE, 0, &[]);
        call(self.ctl.as_fd(), Cmd::Remove, &mut rm).with_context(|| format!("scheduling the removal of {}", self.name))
    }
}

impl Drop for VerityDevice {
    fn drop(&mut self) {
        if !self.released {
            let mut rm = request(&self.name, 0, 0, &[]);
            if let Err(e) = call(self.ctl.as_fd(), Cmd::Remove, &mut rm) {
                log::warn!(target: crate::report::TARGET, "cannot remove device-mapper device {}: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_struct_dm_ioctl() {
        let r = request("x", DM_READONLY_FLAG, 1, &target(8, "verity", "1 a b"));
        assert_eq!(u32::from_ne_bytes(r[12..16].try_into().unwrap()) as usize, r.len());
        assert_eq!(&r[48..49], b"x");
        let t = &r[HEADER..];
        assert_eq!(t.len() % 8, 0);
        assert_eq!(u32::from_ne_bytes(t[20..24].try_into().unwrap()) as usize, t.len());
        assert_eq!(&t[24..30], b"verity");
        assert_eq!(&t[TARGET_SPEC..TARGET_SPEC + 6], b"1 a b\0");
    }
}
