//! The certificates signatures are checked against, read once per boot.
//!
//! Where they come from, most trusted first: the initrd's own directories (copied by the dracut
//! module when the initrd was built, so trusted as much as the initrd), then the sysroot's
//! `/usr/lib/verity.d` (as trusted as /usr itself). The sysroot's `/etc/verity.d` is never read:
//! anyone who can write the disk can write there.
//!
//! As in systemd's `verity.d` directories, a name seen in an earlier directory hides the same
//! name in later ones, and a symlink to /dev/null or an empty file masks it.
//!
//! Fail closed: every `*.crt` entry counts. One that cannot be used (unreadable, malformed, a
//! key we cannot load, masked) trusts nothing, is named in a note with its reason, and still makes
//! the default policy `signed`, so a broken certificate never relaxes the policy.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fstat, major, minor, openat, readlinkat, statat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::x509::{self, TrustedCert};
use crate::sys::fs::{describe_type, list_dir, open_in_root, read_limited, reopen_read};

/// The sysroot's certificate directory, relative to its root.
const SYSROOT_DIR: &str = "usr/lib/verity.d";

/// What the certificate directories hold.
#[derive(Default)]
pub struct Certificates {
    pub trusted: Vec<TrustedCert>,
    /// Paths of the entries (or directories) that trust nothing; each has a note saying why.
    pub unusable: Vec<String>,
    /// File names that are masked (`NAME.crt`): the booted system must not trust them either.
    pub masked: Vec<String>,
}

impl Certificates {
    /// Whether any certificate is installed, usable or not: then the default policy is `signed`.
    pub fn any_installed(&self) -> bool {
        !self.trusted.is_empty() || !self.unusable.is_empty()
    }
}

/// A directory to read, and how paths in it resolve.
struct Dir<'a> {
    /// As shown in messages: `/etc/verity.d`, `/sysroot/usr/lib/verity.d`.
    shown: String,
    fd: OwnedFd,
    /// The sysroot, for its directory: symlinks there resolve inside it, as everywhere else.
    /// `None` for the initrd's own directories.
    root: Option<BorrowedFd<'a>>,
}

enum Entry {
    Trusted(Vec<TrustedCert>),
    Masked(&'static str),
}

const DEV_NULL: (u32, u32) = (1, 3);

/// Open, check and parse one `*.crt` entry.
fn entry(dir: &Dir, name: &str, path: &str) -> Result<Entry, String> {
    let link = statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| format!("cannot stat it: {}", std::io::Error::from(e)))?;
    let target = (FileType::from_raw_mode(link.st_mode) == FileType::Symlink)
        .then(|| readlinkat(&dir.fd, name, Vec::new()).map(|t| t.to_string_lossy().into_owned()))
        .transpose()
        .map_err(|e| format!("cannot read the symlink: {}", std::io::Error::from(e)))?;
    if target.as_deref() == Some("/dev/null") {
        return Ok(Entry::Masked("a symlink to /dev/null"));
    }
    let opened = match dir.root {
        Some(root) => {
            open_in_root(root, &format!("{SYSROOT_DIR}/{name}"), OFlags::PATH).map_err(|e| Errno::from_io_error(&e))
        }
        None => openat(&dir.fd, name, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(Some),
    };
    let fd = match (opened, &target) {
        (Ok(fd), _) => fd,
        (Err(Some(Errno::NOENT)), Some(t)) => return Err(format!("it is a dangling symlink to {t}")),
        (Err(Some(Errno::LOOP)), _) => return Err("it is a symlink loop".into()),
        (Err(e), _) => return Err(format!("cannot open it: {}", std::io::Error::from(e.unwrap_or(Errno::IO)))),
    };
    let st = fstat(&fd).map_err(|e| format!("cannot stat it: {}", std::io::Error::from(e)))?;
    let size = st.st_size as u64;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::CharacterDevice if (major(st.st_rdev), minor(st.st_rdev)) == DEV_NULL => {
            return Ok(Entry::Masked("a symlink to /dev/null"))
        }
        FileType::RegularFile if size == 0 => return Ok(Entry::Masked("an empty file")),
        FileType::RegularFile if size > x509::MAX_FILE as u64 => {
            return Err(format!("it is {size} bytes, more than the {} a certificate file may have", x509::MAX_FILE))
        }
        FileType::RegularFile => {}
        _ => return Err(format!("it is a {}, not a regular file", describe_type(st.st_mode))),
    }
    let bytes = reopen_read(fd.as_fd())
        .and_then(|f| read_limited(f, x509::MAX_FILE))
        .map_err(|e| format!("cannot read it: {e}"))?;
    x509::parse_certificates(&bytes, path).map(Entry::Trusted)
}

/// The initrd's directories (absolute paths in the initrd), then `<sysroot>/usr/lib/verity.d`.
/// A directory that does not exist holds nothing; one that cannot be read counts as unusable.
fn dirs<'a>(
    initrd_dirs: &[String],
    root: BorrowedFd<'a>,
    sysroot: &str,
    out: &mut Certificates,
    notes: &mut Vec<String>,
) -> Vec<Dir<'a>> {
    let mut dirs = Vec::new();
    let mut unreadable = |shown: String, e: std::io::Error| {
        notes.push(format!("certificate directory {shown} cannot be read, so it trusts nothing: {e}"));
        out.unusable.push(shown);
    };
    for d in initrd_dirs {
        match rustix::fs::open(d.as_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => dirs.push(Dir { shown: d.clone(), fd, root: None }),
            Err(Errno::NOENT) => {}
            Err(e) => unreadable(d.clone(), e.into()),
        }
    }
    let shown = format!("{}/{SYSROOT_DIR}", sysroot.trim_end_matches('/'));
    match open_in_root(root, SYSROOT_DIR, OFlags::RDONLY | OFlags::DIRECTORY) {
        Ok(fd) => dirs.push(Dir { shown, fd, root: Some(root) }),
        Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => {}
        Err(e) => unreadable(shown, e),
    }
    dirs
}

/// Every `*.crt` of the certificate directories; each one that trusts nothing gets a note.
pub fn load(initrd_dirs: &[String], root: BorrowedFd, sysroot: &str, notes: &mut Vec<String>) -> Certificates {
    let mut out = Certificates::default();
    let mut seen: Vec<String> = Vec::new();
    for dir in dirs(initrd_dirs, root, sysroot, &mut out, notes) {
        let names = match list_dir(dir.fd.as_fd()) {
            Ok(names) => names,
            Err(e) => {
                notes.push(format!("certificate directory {} cannot be listed, so it trusts nothing: {e}", dir.shown));
                out.unusable.push(dir.shown);
                continue;
            }
        };
        for name in names.into_iter().filter(|n| n.ends_with(".crt")) {
            // An earlier directory's entry of this name replaces this one (or masks it).
            if seen.contains(&name) {
                continue;
            }
            let path = format!("{}/{name}", dir.shown);
            match entry(&dir, &name, &path) {
                Ok(Entry::Trusted(certs)) => out.trusted.extend(certs),
                Ok(Entry::Masked(how)) => {
                    notes.push(format!("certificate {path} is masked ({how}): it trusts nothing"));
                    out.unusable.push(path);
                    out.masked.push(name.clone());
                }
                Err(reason) => {
                    notes.push(format!("certificate {path} is unusable and trusts nothing: {reason}"));
                    out.unusable.push(path);
                }
            }
            seen.push(name);
        }
    }
    out
}
