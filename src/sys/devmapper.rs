//! Read-only dm-verity devices through four device-mapper ioctls on /dev/mapper/control, written
//! with rustix (no libdevmapper, no udev in the loop): create, load the table, resume, remove.
//!
//! A device lives exactly as long as its user: `with_verity` creates it, lets the caller mount it,
//! and then, whatever happened, asks for a *deferred* remove. The kernel removes an unused device
//! at once and a used one when its last opener closes it: the mount (so the device goes with the
//! overlay, as our autoclear loop devices do), or udev still probing a device whose mount just
//! failed, which makes an immediate remove fail with EBUSY and leak the device.
//!
//! Every device gets a name of its own (`initrd-sysext-NAME-PID-N`), so a device of the same
//! image that is still on its way out (a lazily unmounted merge) never blocks a new one.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, Ioctl, IoctlOutput, Opcode};

use crate::error::{Context, Error, Result};

const DM_CONTROL: &str = "/dev/mapper/control";
/// `sizeof(struct dm_ioctl)`.
const HEADER: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const TARGET_SPEC: usize = 40;
/// `DM_NAME_LEN`, with its NUL.
const NAME_LEN: usize = 128;
const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_DEFERRED_REMOVE: u32 = 1 << 17;
/// Names tried before giving up when each is taken (only a reused process ID can take one).
const NAME_ATTEMPTS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Create = 3,
    Remove = 4,
    /// DM_DEV_SUSPEND without the suspend flag: resume, which activates a loaded table.
    Resume = 6,
    TableLoad = 9,
}

/// Where requests go: /dev/mapper/control, or a recording fake in the tests.
pub trait Control {
    /// Send `buf` (a `struct dm_ioctl` and its payload); the kernel may write the header back.
    fn call(&self, cmd: Cmd, buf: &mut [u8]) -> rustix::io::Result<()>;
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

/// /dev/mapper/control.
struct Mapper(OwnedFd);

impl Control for Mapper {
    fn call(&self, cmd: Cmd, buf: &mut [u8]) -> rustix::io::Result<()> {
        // SAFETY: `buf` is a dm_ioctl header of `data_size` bytes followed by its payload; the
        // kernel writes back at most `data_size` bytes.
        unsafe { ioctl(self.0.as_fd(), DmIoctl { cmd, buf }) }
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

/// `initrd-sysext-LABEL-PID-N`: the image it belongs to, then what makes it unique. A long label
/// is cut (on a character boundary) so that the name fits DM_NAME_LEN.
fn device_name(label: &str, pid: u32, n: u32) -> String {
    let unique = format!("-{pid}-{n}");
    let room = NAME_LEN - 1 - "initrd-sysext-".len() - unique.len();
    let mut cut = label.len().min(room);
    while !label.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("initrd-sysext-{}{unique}", &label[..cut])
}

/// One number per device this process creates.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A created device: its name and `/dev/dm-N`.
struct Device {
    name: String,
    path: String,
}

/// DM_DEV_CREATE under a fresh name; a name still taken (EBUSY) is skipped for the next one.
fn create(ctl: &dyn Control, label: &str) -> Result<Device> {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let mut last = None;
    for _ in 0..NAME_ATTEMPTS {
        let name = device_name(label, pid, NEXT.fetch_add(1, Ordering::Relaxed));
        let mut req = request(&name, 0, 0, &[]);
        match ctl.call(Cmd::Create, &mut req) {
            Ok(()) => {
                let dev = u64::from_ne_bytes(req[40..48].try_into().expect("8 bytes"));
                let minor = ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32;
                return Ok(Device { name, path: format!("/dev/dm-{minor}") });
            }
            Err(Errno::BUSY) => last = Some(name),
            Err(e) => return Err(e).with_context(|| format!("creating device-mapper device {name}")),
        }
    }
    Err(Errno::BUSY).with_context(|| {
        format!(
            "creating a device-mapper device for {label}: {NAME_ATTEMPTS} names taken, the last {}",
            last.unwrap_or_default()
        )
    })
}

/// Load the read-only verity table and resume: the device becomes readable.
fn activate(ctl: &dyn Control, dev: &Device, sectors: u64, table: &str) -> Result<()> {
    let mut load = request(&dev.name, DM_READONLY_FLAG, 1, &target(sectors, "verity", table));
    ctl.call(Cmd::TableLoad, &mut load)
        .with_context(|| format!("loading the verity table of {} (is the dm_verity module loaded?)", dev.name))?;
    let mut resume = request(&dev.name, 0, 0, &[]);
    ctl.call(Cmd::Resume, &mut resume).with_context(|| format!("activating {}", dev.name))
}

/// Remove the device once nothing holds it open (at once if nothing does). Already gone is fine.
fn remove_deferred(ctl: &dyn Control, dev: &Device) -> Result<()> {
    let mut rm = request(&dev.name, DM_DEFERRED_REMOVE, 0, &[]);
    match ctl.call(Cmd::Remove, &mut rm) {
        Ok(()) | Err(Errno::NXIO) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing device-mapper device {}", dev.name)),
    }
}

/// Create a read-only verity device of `sectors` 512-byte sectors for the image `label`, with
/// `table` (the verity target's parameters: data and hash devices by path, block sizes, root
/// hash, salt), and hand its path to `use_it` (a mount). Whatever `use_it` returns, the device is
/// then scheduled for removal: it goes when its last user does. If that cannot be scheduled, the
/// result is dropped (the mount lets go of the device) and removal is tried once more, so no
/// path leaves a device behind that nothing will remove.
pub fn with_verity<T>(label: &str, sectors: u64, table: &str, use_it: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let ctl = rustix::fs::open(DM_CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {DM_CONTROL} (is the dm_mod module loaded?)"))?;
    with_verity_on(&Mapper(ctl), label, sectors, table, use_it)
}

fn with_verity_on<T>(
    ctl: &dyn Control,
    label: &str,
    sectors: u64,
    table: &str,
    use_it: impl FnOnce(&str) -> Result<T>,
) -> Result<T> {
    let dev = create(ctl, label)?;
    let used = activate(ctl, &dev, sectors, table).and_then(|()| use_it(&dev.path));
    match (used, remove_deferred(ctl, &dev)) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(removal)) => Err(Error::msg(format!("{e}; {removal}"))),
        (Ok(value), Err(removal)) => {
            drop(value);
            Err(match remove_deferred(ctl, &dev) {
                Ok(()) => Error::msg(format!("{removal}; gave up the mount and removed it")),
                Err(again) => Error::msg(format!("{removal}; gave up the mount, and again: {again}")),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn request_layout_matches_struct_dm_ioctl() {
        let r = request("x", DM_READONLY_FLAG, 1, &target(8, "verity", "1 a b"));
        assert_eq!(u32::from_ne_bytes(r[12..16].try_into().unwrap()) as usize, r.len());
        assert_eq!(u32::from_ne_bytes(r[16..20].try_into().unwrap()) as usize, HEADER);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(r[28..32].try_into().unwrap()), DM_READONLY_FLAG);
        assert_eq!(&r[48..49], b"x");
        let t = &r[HEADER..];
        assert_eq!(t.len() % 8, 0);
        assert_eq!(u64::from_ne_bytes(t[8..16].try_into().unwrap()), 8);
        assert_eq!(u32::from_ne_bytes(t[20..24].try_into().unwrap()) as usize, t.len());
        assert_eq!(&t[24..30], b"verity");
        assert_eq!(&t[TARGET_SPEC..TARGET_SPEC + 6], b"1 a b\0");
        // _IOWR(0xfd, 4, struct dm_ioctl), as <linux/dm-ioctl.h> gives DM_DEV_REMOVE.
        assert_eq!(DmIoctl { cmd: Cmd::Remove, buf: &mut [] }.opcode(), 0xc138_fd04);
    }

    #[test]
    fn names_say_whose_device_it_is_and_fit() {
        assert_eq!(device_name("podman", 812, 0), "initrd-sysext-podman-812-0");
        let long = "é".repeat(200);
        let n = device_name(&long, 4_194_304, u32::MAX);
        assert!(n.len() < NAME_LEN && n.starts_with("initrd-sysext-é") && n.ends_with("-4194304-4294967295"), "{n}");
        assert_ne!(device_name("a", 1, 0), device_name("a", 1, 1));
    }

    /// What a request did: the command, the device name and the flags.
    type Sent = (Cmd, String, u32);

    /// A control device that records requests and fails the scripted ones, in order.
    #[derive(Default)]
    struct Fake {
        sent: RefCell<Vec<Sent>>,
        /// (command, error) pairs, each used once, first match first.
        failures: RefCell<Vec<(Cmd, Errno)>>,
        /// What else happened, in order with the requests (the mount being dropped).
        events: RefCell<Vec<String>>,
    }

    impl Fake {
        fn failing(failures: &[(Cmd, Errno)]) -> Fake {
            Fake { failures: RefCell::new(failures.to_vec()), ..Fake::default() }
        }
        fn sent(&self) -> Vec<(Cmd, u32)> {
            self.sent.borrow().iter().map(|(c, _, f)| (*c, *f)).collect()
        }
    }

    impl Control for Fake {
        fn call(&self, cmd: Cmd, buf: &mut [u8]) -> rustix::io::Result<()> {
            let name = String::from_utf8_lossy(&buf[48..176]).trim_end_matches('\0').to_string();
            let flags = u32::from_ne_bytes(buf[28..32].try_into().unwrap());
            self.sent.borrow_mut().push((cmd, name.clone(), flags));
            self.events.borrow_mut().push(format!("{cmd:?}"));
            let mut failures = self.failures.borrow_mut();
            if let Some(i) = failures.iter().position(|(c, _)| *c == cmd) {
                return Err(failures.remove(i).1);
            }
            if cmd == Cmd::Create {
                buf[40..48].copy_from_slice(&((253u64 << 8) | 7).to_ne_bytes());
                // 253:7
            }
            Ok(())
        }
    }

    /// A mount stand-in that notes when it is let go of.
    struct Mounted<'a>(&'a Fake);
    impl Drop for Mounted<'_> {
        fn drop(&mut self) {
            self.0.events.borrow_mut().push("unmounted".into());
        }
    }

    const DEFERRED: u32 = DM_DEFERRED_REMOVE;

    #[test]
    fn a_mounted_device_is_removed_with_its_mount() {
        let fake = Fake::default();
        let path = with_verity_on(&fake, "podman", 16, "1 a b", |p| Ok(p.to_string())).unwrap();
        assert_eq!(path, "/dev/dm-7");
        assert_eq!(
            fake.sent(),
            [(Cmd::Create, 0), (Cmd::TableLoad, DM_READONLY_FLAG), (Cmd::Resume, 0), (Cmd::Remove, DEFERRED)]
        );
        let names: Vec<String> = fake.sent.borrow().iter().map(|(_, n, _)| n.clone()).collect();
        assert!(names.iter().all(|n| n == &names[0] && n.starts_with("initrd-sysext-podman-")), "{names:?}");
    }

    #[test]
    fn every_failure_removes_the_device_deferred() {
        // The mount fails (udev may still hold the device open: only a deferred remove works).
        let fake = Fake::default();
        let e = with_verity_on(&fake, "x", 16, "t", |_| -> Result<()> { Err(Error::msg("mounting erofs")) });
        assert_eq!(e.unwrap_err().to_string(), "mounting erofs");
        assert_eq!(fake.sent().last(), Some(&(Cmd::Remove, DEFERRED)));
        // The table is refused, or the resume: the mount is never tried.
        for cmd in [Cmd::TableLoad, Cmd::Resume] {
            let fake = Fake::failing(&[(cmd, Errno::INVAL)]);
            let e = with_verity_on(&fake, "x", 16, "t", |_| -> Result<()> { panic!("mounted") }).unwrap_err();
            assert!(e.to_string().contains("Invalid argument"), "{e}");
            assert_eq!(fake.sent().last(), Some(&(Cmd::Remove, DEFERRED)), "{cmd:?}");
        }
        // Nothing is ever removed without the deferred flag.
        assert!(fake.sent().iter().all(|(c, f)| *c != Cmd::Remove || *f == DEFERRED));
    }

    #[test]
    fn a_removal_that_fails_gives_up_the_mount_then_tries_again() {
        let fake = Fake::failing(&[(Cmd::Remove, Errno::NOMEM)]);
        let e = with_verity_on(&fake, "x", 16, "t", |_| Ok(Mounted(&fake))).err().unwrap();
        assert!(e.to_string().contains("gave up the mount and removed it"), "{e}");
        assert_eq!(*fake.events.borrow(), ["Create", "TableLoad", "Resume", "Remove", "unmounted", "Remove"]);
        // Both fail: both errors are named.
        let fake = Fake::failing(&[(Cmd::Remove, Errno::NOMEM), (Cmd::Remove, Errno::NOMEM)]);
        let e = with_verity_on(&fake, "x", 16, "t", |_| Ok(Mounted(&fake))).err().unwrap();
        assert!(e.to_string().contains("gave up the mount, and again: removing"), "{e}");
        // A device someone else removed already is gone, which is what we wanted.
        let fake = Fake::failing(&[(Cmd::Remove, Errno::NXIO)]);
        assert!(with_verity_on(&fake, "x", 16, "t", |_| Ok(())).is_ok());
    }

    #[test]
    fn a_taken_name_is_skipped_not_waited_for() {
        let fake = Fake::failing(&[(Cmd::Create, Errno::BUSY), (Cmd::Create, Errno::BUSY)]);
        with_verity_on(&fake, "podman", 16, "t", |_| Ok(())).unwrap();
        let sent = fake.sent.borrow();
        let creates: Vec<&String> = sent.iter().filter(|(c, _, _)| *c == Cmd::Create).map(|(_, n, _)| n).collect();
        assert_eq!(creates.len(), 3);
        assert!(creates[0] != creates[1] && creates[1] != creates[2], "{creates:?}");
        assert!(sent[3..].iter().all(|(_, n, _)| n == creates[2]));
        // Every name taken: an error naming the image, and no device to remove.
        let fake = Fake::failing(&[(Cmd::Create, Errno::BUSY); NAME_ATTEMPTS as usize]);
        let e = with_verity_on(&fake, "podman", 16, "t", |_| Ok(())).err().unwrap();
        assert!(e.to_string().starts_with("creating a device-mapper device for podman: 16 names taken"), "{e}");
        assert!(fake.sent().iter().all(|(c, _)| *c == Cmd::Create));
        // Any other error at create is not retried.
        let fake = Fake::failing(&[(Cmd::Create, Errno::NOMEM)]);
        assert!(with_verity_on(&fake, "podman", 16, "t", |_| Ok(())).is_err());
        assert_eq!(fake.sent().len(), 1);
    }
}
