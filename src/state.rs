//! systemd-sysext's on-disk merge state, read and written exactly as systemd does, so that
//! `systemd-sysext status/refresh/unmerge` in the booted system treat our merge as their own.
//!
//! A hierarchy is merged when it is a mount point whose `.systemd-sysext/dev` holds
//! `MAJOR:MINOR` of the hierarchy's own st_dev; `.systemd-sysext/extensions` lists the names,
//! oldest first, one per line.

use std::os::fd::BorrowedFd;

use rustix::fs::{fstat, major, minor, mkdirat, openat, statx, AtFlags, Mode, OFlags, StatxFlags};

use crate::error::{Context, Result};
use crate::sys::fs::read_limited;

pub const META_DIR: &str = ".systemd-sysext";

/// What a merged hierarchy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub extensions: Vec<String>,
    /// Seconds since the epoch when the merge was made (the hierarchy's mtime, as systemd shows).
    pub since: i64,
}

fn is_mount_root(dir: BorrowedFd) -> Result<bool> {
    let st = statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS).context("statx")?;
    Ok(st.stx_attributes_mask.contains(rustix::fs::StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(rustix::fs::StatxAttributes::MOUNT_ROOT))
}

pub fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim_end_matches('\n').split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn read_meta(dir: BorrowedFd, file: &str) -> Option<String> {
    let fd =
        openat(dir, format!("{META_DIR}/{file}"), OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
            .ok()?;
    String::from_utf8(read_limited(&fd, 1 << 20).ok()?).ok()
}

/// `dir` is the hierarchy, opened (`O_RDONLY|O_DIRECTORY`) through any mount on it.
pub fn read(dir: BorrowedFd) -> Result<Option<Merged>> {
    if !is_mount_root(dir)? {
        return Ok(None);
    }
    let Some(dev) = read_meta(dir, "dev").as_deref().and_then(parse_dev) else {
        return Ok(None);
    };
    let st = fstat(dir).context("stat")?;
    if (major(st.st_dev), minor(st.st_dev)) != dev {
        // An unpacked copy of a merged tree, not a live merge.
        return Ok(None);
    }
    let extensions =
        read_meta(dir, "extensions").unwrap_or_default().lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
    Ok(Some(Merged { extensions, since: st.st_mtime }))
}

fn write(dir: BorrowedFd, file: &str, content: &str) -> Result<()> {
    let fd = openat(
        dir,
        format!("{META_DIR}/{file}"),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .with_context(|| format!("creating {META_DIR}/{file}"))?;
    rustix::io::write(&fd, content.as_bytes()).with_context(|| format!("writing {META_DIR}/{file}"))?;
    Ok(())
}

/// Fill a fresh META layer with the extension list, before the overlay exists.
pub fn write_extensions(meta: BorrowedFd, names: &[String]) -> Result<()> {
    mkdirat(meta, META_DIR, Mode::from_raw_mode(0o755)).context(format!("creating {META_DIR}"))?;
    let list: String = names.iter().map(|n| format!("{n}\n")).collect();
    write(meta, "extensions", &list)
}

/// Record the overlay's own device, once the overlay exists. Writing into a lower layer of a
/// mounted overlay is fine here: nothing has looked the file up through the overlay yet.
pub fn write_dev(meta: BorrowedFd, overlay: BorrowedFd) -> Result<()> {
    let st = fstat(overlay).context("stat of the new overlay")?;
    write(meta, "dev", &format!("{}:{}\n", major(st.st_dev), minor(st.st_dev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_format() {
        assert_eq!(parse_dev("0:123\n"), Some((0, 123)));
        assert_eq!(parse_dev("259:3"), Some((259, 3)));
        assert_eq!(parse_dev("x:1"), None);
        assert_eq!(parse_dev(""), None);
    }
}
