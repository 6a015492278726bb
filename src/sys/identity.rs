//! How systemd-sysext (≥ 260) recognises an image file or directory again without reading it:
//! its mount ID, a file handle (or the inode number where the file system has no handles), its
//! creation time and, for a file, its modification time. Computed with the same calls and
//! fallbacks as systemd's discover-image.c and mountpoint-util.c, on the same kernel, so the
//! initrd and the booted system get the same answer for the same file through the same mount.
#![allow(unsafe_code)] // name_to_handle_at has no safe wrapper in rustix.

use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::fs::{statx, AtFlags, FileType, StatxFlags, StatxTimestamp};
use rustix::io::Errno;

/// `AT_HANDLE_FID` (Linux 6.5): a handle that identifies, even where it cannot be opened again.
const AT_HANDLE_FID: i32 = 0x200;
/// `AT_HANDLE_MNT_ID_UNIQUE` (Linux 6.12): the mount ID written is the 64-bit unique one.
const AT_HANDLE_MNT_ID_UNIQUE: i32 = 0x001;
/// `STATX_MNT_ID_UNIQUE` (Linux 6.8).
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
/// The handle size the API started with; the kernel tells us if it needs more.
const FIRST_HANDLE_SIZE: usize = 128;

/// What systemd's origin file records about an image that has no dm-verity root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileId {
    /// The unique mount ID where the kernel has one (6.8+), else the classic one.
    pub mount_id: u64,
    /// `(handle_type, handle bytes)`; `None` when the file system gives no handles.
    pub handle: Option<(i32, Vec<u8>)>,
    pub inode: u64,
    /// Birth time in µs (statx, or the older `user.crtime_usec` xattr if that is earlier); 0 if unknown.
    pub crtime_us: u64,
    /// Modification time in µs; systemd leaves it 0 for directories.
    pub mtime_us: u64,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

/// systemd's ERRNO_IS_NOT_SUPPORTED.
fn not_supported(e: Errno) -> bool {
    matches!(
        e,
        Errno::OPNOTSUPP
            | Errno::NOTTY
            | Errno::NOSYS
            | Errno::AFNOSUPPORT
            | Errno::PFNOSUPPORT
            | Errno::PROTONOSUPPORT
            | Errno::SOCKTNOSUPPORT
            | Errno::NOPROTOOPT
    )
}

/// Errors of name_to_handle_at after which systemd tries the next method instead of failing:
/// not supported, not permitted (seccomp), and EOVERFLOW/EINVAL (autofs, unknown flags).
fn handle_unavailable(e: Errno) -> bool {
    not_supported(e) || matches!(e, Errno::ACCESS | Errno::PERM | Errno::OVERFLOW | Errno::INVAL)
}

/// One `name_to_handle_at(fd, "", …, AT_EMPTY_PATH | flags)`, growing the buffer on EOVERFLOW.
/// Returns the handle and the mount ID (64 bits wide with `AT_HANDLE_MNT_ID_UNIQUE`).
fn handle_at(fd: BorrowedFd, flags: i32) -> Result<((i32, Vec<u8>), u64), Errno> {
    let mut size = FIRST_HANDLE_SIZE;
    loop {
        // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes; u32s keep it aligned.
        let mut buf = vec![0u32; 2 + size.div_ceil(4)];
        buf[0] = size as u32;
        let mut mount_id = 0u64;
        // SAFETY: `buf` holds the 8-byte header plus `size` bytes, as handle_bytes says; the
        // mount ID pointer is a u64, wide enough for both the classic int and the unique ID;
        // the empty path is a valid C string; the fd is borrowed and open.
        let r = unsafe {
            libc::name_to_handle_at(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast::<libc::file_handle>(),
                (&mut mount_id as *mut u64).cast::<libc::c_int>(),
                libc::AT_EMPTY_PATH | flags,
            )
        };
        if r == 0 {
            let len = (buf[0] as usize).min(size);
            let bytes: Vec<u8> = buf[2..].iter().flat_map(|w| w.to_ne_bytes()).take(len).collect();
            let id = if flags & AT_HANDLE_MNT_ID_UNIQUE != 0 { mount_id } else { mount_id as u32 as u64 };
            return Ok(((buf[1] as i32, bytes), id));
        }
        let e = errno(std::io::Error::last_os_error());
        // EOVERFLOW with a bigger size asks for a bigger buffer; without, it means something else.
        if e == Errno::OVERFLOW && (buf[0] as usize) > size {
            size = buf[0] as usize;
            continue;
        }
        return Err(e);
    }
}

fn mount_id_statx(fd: BorrowedFd, unique: bool) -> Result<u64, Errno> {
    let mask = if unique { StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE) } else { StatxFlags::MNT_ID };
    let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT | AtFlags::STATX_DONT_SYNC;
    let st = statx(fd, "", flags, mask)?;
    if st.stx_mask & mask.bits() != mask.bits() {
        return Err(Errno::UNATCH);
    }
    Ok(st.stx_mnt_id)
}

/// systemd's name_to_handle_at_loop: the unique mount ID in the call (6.12), else the handle
/// and the unique ID from statx (6.8), else the handle and the classic mount ID.
fn handle_loop(fd: BorrowedFd, flags: i32) -> Result<((i32, Vec<u8>), u64), Errno> {
    match handle_at(fd, flags | AT_HANDLE_MNT_ID_UNIQUE) {
        Ok(r) => return Ok(r),
        Err(Errno::INVAL) => {}
        Err(e) => return Err(e),
    }
    let (handle, classic) = handle_at(fd, flags)?;
    match mount_id_statx(fd, true) {
        Ok(unique) => Ok((handle, unique)),
        Err(Errno::UNATCH) => Ok((handle, classic)),
        Err(e) => Err(e),
    }
}

fn micros(t: &StatxTimestamp) -> Option<u64> {
    let secs = u64::try_from(t.tv_sec).ok()?;
    secs.checked_mul(1_000_000)?.checked_add(u64::from(t.tv_nsec) / 1000)
}

/// statx's birth time, or the `user.crtime_usec` xattr systemd wrote before statx existed,
/// whichever is earlier; 0 when neither is there.
fn crtime(fd: BorrowedFd) -> u64 {
    let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
    let btime = statx(fd, "", flags, StatxFlags::BTIME)
        .ok()
        .filter(|st| st.stx_mask & StatxFlags::BTIME.bits() != 0 && st.stx_btime.tv_sec != 0)
        .and_then(|st| micros(&st.stx_btime));
    // getxattr refuses O_PATH fds; the magic link reaches the same inode.
    let mut le = [0u8; 8];
    let xattr = rustix::fs::getxattr(format!("/proc/self/fd/{}", fd.as_raw_fd()), "user.crtime_usec", &mut le[..])
        .ok()
        .filter(|n| *n == 8)
        .map(|_| u64::from_le_bytes(le))
        .filter(|u| *u != 0 && *u != u64::MAX);
    match (btime, xattr) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(0),
    }
}

/// The identity of an opened (`O_PATH` is enough) image file or directory, as image_make()
/// computes it. An error means systemd itself would fail to discover the image.
pub fn identify(fd: BorrowedFd) -> std::io::Result<FileId> {
    let st = statx(fd, "", AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC, StatxFlags::BASIC_STATS)?;
    // Try a FID handle first; kernels before 6.5 refuse the flag with EINVAL, then without.
    let attempt = match handle_loop(fd, AT_HANDLE_FID) {
        Err(e) if handle_unavailable(e) => handle_loop(fd, 0),
        r => r,
    };
    let (handle, mount_id) = match attempt {
        Ok((h, id)) => (Some(h), id),
        Err(e) if handle_unavailable(e) => {
            let id = match mount_id_statx(fd, true) {
                Ok(id) => id,
                Err(e) if e == Errno::UNATCH || not_supported(e) => mount_id_statx(fd, false)?,
                Err(e) => return Err(e.into()),
            };
            (None, id)
        }
        Err(e) => return Err(e.into()),
    };
    let is_dir = FileType::from_raw_mode(st.stx_mode.into()) == FileType::Directory;
    Ok(FileId {
        mount_id,
        handle,
        inode: st.stx_ino,
        crtime_us: crtime(fd),
        mtime_us: if is_dir { 0 } else { micros(&st.stx_mtime).unwrap_or(u64::MAX) },
    })
}
