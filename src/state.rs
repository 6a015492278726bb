//! systemd-sysext's on-disk merge state, read and written exactly as systemd does, so that
//! `systemd-sysext status/refresh/unmerge` in the booted system treat our merge as their own.
//!
//! A hierarchy is merged when it is a mount point whose `.systemd-sysext/dev` holds
//! `MAJOR:MINOR` of the hierarchy's own st_dev; `.systemd-sysext/extensions` lists the names,
//! oldest first, one per line. systemd 260 and later also write `origin`, a JSON description of
//! every merged image that `refresh` compares with a fresh one to skip an unchanged set, and
//! `backing`, the block device under the host's hierarchy.

use std::os::fd::BorrowedFd;

use rustix::fs::{fstat, major, minor, mkdirat, openat, statx, AtFlags, FileType, Mode, OFlags, StatxFlags};

use crate::error::{Context, Result};
use crate::json::Json;
use crate::plan::{Action, Plan};
use crate::sys::fs::read_limited;
use crate::sys::identity::FileId;

pub const META_DIR: &str = ".systemd-sysext";

/// What a merged hierarchy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub extensions: Vec<String>,
    /// The overlay's device, as `.systemd-sysext/dev` records it.
    pub dev: (u32, u32),
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

/// A state file, or `None`. Opened without blocking and only if it is a regular file: a fifo
/// planted at `.systemd-sysext/dev` must not hang `merge` and `status` until the unit times out.
fn read_meta(dir: BorrowedFd, file: &str) -> Option<String> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = openat(dir, format!("{META_DIR}/{file}"), flags, Mode::empty()).ok()?;
    if FileType::from_raw_mode(fstat(&fd).ok()?.st_mode) != FileType::RegularFile {
        return None;
    }
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
    Ok(Some(Merged { extensions, dev, since: st.st_mtime }))
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

/// Record the block device under the host's hierarchy, as systemd ≥ 260 does when the host is a
/// layer; systemd writes nothing when the file system has no device number of its own.
pub fn write_backing(meta: BorrowedFd, host: BorrowedFd) -> Result<()> {
    let st = fstat(host).context("stat of the host hierarchy")?;
    if major(st.st_dev) == 0 {
        return Ok(());
    }
    write(meta, "backing", &format!("{}:{}\n", major(st.st_dev), minor(st.st_dev)))
}

/// Record where the merged images came from, once the overlays are in place (systemd writes it
/// after mounting too); `refresh` of systemd ≥ 260 compares it with its own computation.
pub fn write_origin(meta: BorrowedFd, content: &str) -> Result<()> {
    write(meta, "origin", content)
}

/// How systemd ≥ 260 identifies one merged image: by its dm-verity root hash when it has one,
/// else by the file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity<'a> {
    Verity(&'a str),
    File(&'a FileId),
}

fn identity_fields(path: &str, id: &Identity) -> Vec<(&'static str, Json)> {
    let mut fields = vec![("path", Json::from(path))];
    match id {
        Identity::Verity(hash) => fields.push(("verityHash", Json::from(*hash))),
        Identity::File(f) => {
            fields.push(("onMountId", Json::Num(f.mount_id)));
            match &f.handle {
                Some((kind, bytes)) => fields.push((
                    "fileHandle",
                    Json::Obj(vec![("type", Json::Int((*kind).into())), ("handle", crate::verify::hex(bytes).into())]),
                )),
                None => fields.push(("inode", Json::Num(f.inode))),
            }
            fields.push(("crtime", Json::Num(f.crtime_us)));
            fields.push(("mtime", Json::Num(f.mtime_us)));
        }
    }
    fields
}

/// The origin file for `(name, path, identity)` of each merged image: mutable mode "no" (our
/// merge is read-only), no `mountOptions` (we add none), in systemd's own layout.
pub fn origin_json(images: &[(&str, &str, Identity)]) -> String {
    let extensions = images.iter().map(|(name, path, id)| (name.to_string(), Json::Obj(identity_fields(path, id))));
    let mut doc = vec![("mutable", Json::Obj(vec![("mode", "no".into())]))];
    if !images.is_empty() {
        doc.push(("extensions", Json::Map(extensions.collect())));
    }
    Json::Obj(doc).pretty()
}

/// The origin file for the images the plan merges, or why none can be written (an image the
/// kernel gave no identity for: systemd could not discover it either).
pub fn origin_for(plan: &Plan) -> std::result::Result<String, String> {
    let mut images = Vec::new();
    for d in plan.images.iter().filter(|d| d.action == Action::Merge) {
        let origin = d.origin.as_ref().ok_or_else(|| format!("{} has no origin data", d.name))?;
        let id = match (&d.root_hash, &origin.file) {
            (Some(hash), _) => Identity::Verity(hash),
            (None, Ok(file)) => Identity::File(file),
            (None, Err(e)) => return Err(format!("{}: {e}", d.name)),
        };
        images.push((d.name.as_str(), origin.path.as_str(), id));
    }
    Ok(origin_json(&images))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        crate::verify::unhex(s).unwrap()
    }

    /// The fixtures are what systemd 262's own `systemd-sysext merge` wrote for one erofs image
    /// and one directory (tests/sysroots/origin-fixture.sh); ours must be the same bytes.
    #[test]
    fn origin_is_what_systemd_262_writes() {
        let raw = FileId {
            mount_id: 2147531914,
            handle: Some((248, unhex("00000000fb21040156d3b6ca042d4c7e8ee2538f181ceddb4d0021c41300000000000000"))),
            inode: 11,
            crtime_us: 1796186624769570,
            mtime_us: 1796186624773078,
        };
        let images = [("hello", "/var/lib/extensions/hello.raw", Identity::File(&raw))];
        assert_eq!(origin_json(&images), include_str!("../tests/fixtures/systemd-262/origin-raw.json"));
        let dir = FileId {
            mount_id: 2147532018,
            handle: Some((248, unhex("00000000fb21040143cc751e51c04d218a40e9115ed8463882003d521300000000000000"))),
            inode: 12,
            crtime_us: 1796186624954669,
            mtime_us: 0,
        };
        let images = [("hello", "/var/lib/extensions/hello", Identity::File(&dir))];
        assert_eq!(origin_json(&images), include_str!("../tests/fixtures/systemd-262/origin-dir.json"));
    }

    /// Shapes from sysext.c's merge_subprocess: the root hash replaces the file's identity; the
    /// inode replaces a handle the file system does not give.
    #[test]
    fn origin_with_a_root_hash_or_without_a_handle() {
        let file = FileId { mount_id: 31, handle: None, inode: 77, crtime_us: 0, mtime_us: 5 };
        let hash = "ab".repeat(32);
        let text =
            origin_json(&[("a", "/etc/extensions/a.raw", Identity::Verity(&hash)), ("b", "/b", Identity::File(&file))]);
        let want = format!(
            "{{\n\t\"mutable\" : {{\n\t\t\"mode\" : \"no\"\n\t}},\n\t\"extensions\" : {{\n\
             \t\t\"a\" : {{\n\t\t\t\"path\" : \"/etc/extensions/a.raw\",\n\t\t\t\"verityHash\" : \"{hash}\"\n\t\t}},\n\
             \t\t\"b\" : {{\n\t\t\t\"path\" : \"/b\",\n\t\t\t\"onMountId\" : 31,\n\t\t\t\"inode\" : 77,\n\
             \t\t\t\"crtime\" : 0,\n\t\t\t\"mtime\" : 5\n\t\t}}\n\t}}\n}}\n"
        );
        assert_eq!(text, want);
        // Nothing merged: systemd leaves "extensions" out.
        assert_eq!(origin_json(&[]), "{\n\t\"mutable\" : {\n\t\t\"mode\" : \"no\"\n\t}\n}\n");
    }

    #[test]
    fn dev_format() {
        assert_eq!(parse_dev("0:123\n"), Some((0, 123)));
        assert_eq!(parse_dev("259:3"), Some((259, 3)));
        assert_eq!(parse_dev("x:1"), None);
        assert_eq!(parse_dev(""), None);
    }
}
