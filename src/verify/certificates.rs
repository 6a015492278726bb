//! The certificates signatures are checked against. Read once per boot; a file that cannot be
//! used is named in a note and skipped, never fatal.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

use super::x509::{self, TrustedCert};
use crate::sys::fs::{list_dir, open_in_root, read_limited};

/// Trusted certificates: the initrd's directories, then the sysroot's `/usr/lib/verity.d`
/// (trusted because /usr is the verified base; its /etc is writable, so it is not read).
pub fn load(initrd_dirs: &[String], root: BorrowedFd, sysroot: &str, notes: &mut Vec<String>) -> Vec<TrustedCert> {
    const DIR: &str = "usr/lib/verity.d";
    let mut dirs: Vec<(String, Option<OwnedFd>)> = initrd_dirs.iter().map(|d| (d.clone(), None)).collect();
    if let Ok(fd) = open_in_root(root, DIR, OFlags::PATH | OFlags::DIRECTORY) {
        dirs.push((format!("{}/{DIR}", sysroot.trim_end_matches('/')), Some(fd)));
    }
    let mut certs = Vec::new();
    for (dir, fd) in dirs {
        let opened = match &fd {
            Some(fd) => open_in_root(fd.as_fd(), ".", OFlags::RDONLY | OFlags::DIRECTORY),
            None => rustix::fs::open(dir.as_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(Into::into),
        };
        let Ok(dirfd) = opened else { continue };
        for name in list_dir(dirfd.as_fd()).unwrap_or_default().into_iter().filter(|n| n.ends_with(".crt")) {
            let path = format!("{dir}/{name}");
            let parsed = open_in_root(dirfd.as_fd(), &name, OFlags::RDONLY | OFlags::NONBLOCK)
                .and_then(|f| read_limited(f, 1 << 20))
                .map_err(|e| e.to_string())
                .and_then(|bytes| x509::parse_certificates(&bytes, &path));
            match parsed {
                Ok(c) => certs.extend(c),
                Err(e) => notes.push(format!("ignoring certificate {path}: {e}")),
            }
        }
    }
    certs
}
