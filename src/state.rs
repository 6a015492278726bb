//! systemd-sysext's and systemd-confext's on-disk merge state, read and written exactly as
//! systemd does, so that `systemd-sysext` and `systemd-confext` `status/refresh/unmerge` in the
//! booted system treat our merge as their own.
//!
//! A hierarchy is merged when it is a mount point whose `.systemd-sysext/dev` (confexts:
//! `.systemd-confext/dev`) holds `MAJOR:MINOR` of the hierarchy's own st_dev; the list file
//! (`extensions`, `confexts`) has the names, oldest first, one per line. systemd 260 and later
//! also write `origin`, a JSON description of every merged image and of the mutable mode that
//! `refresh` compares with a fresh one to skip an unchanged set, and `backing`, the block device
//! under the host's hierarchy. A writable merge with a persistent upper records its work
//! directory in `work_dir`, relative to the root, which systemd removes at unmerge.

use std::os::fd::BorrowedFd;

use rustix::fs::{fstat, major, minor, mkdirat, openat, statx, AtFlags, FileType, Mode, OFlags, StatxFlags};

use crate::class::{Class, Hierarchy};
use crate::error::{Context, Result};
use crate::json::Json;
use crate::plan::{Action, Plan};
use crate::sys::fs::read_limited;
use crate::sys::identity::FileId;

/// What a merged hierarchy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub extensions: Vec<String>,
    /// The overlay's device, as `.systemd-sysext/dev` records it.
    pub dev: (u32, u32),
    /// Seconds since the epoch when the merge was made (the hierarchy's mtime, as systemd shows).
    pub since: i64,
    /// `work_dir`, unescaped: the work directory of a persistent upper, relative to the root.
    pub work_dir: Option<String>,
    /// The mutable mode `origin` records (systemd ≥ 260 and we write it).
    pub mode: Option<String>,
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
fn read_meta(dir: BorrowedFd, class: Class, file: &str) -> Option<String> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = openat(dir, format!("{}/{file}", class.meta_dir()), flags, Mode::empty()).ok()?;
    if FileType::from_raw_mode(fstat(&fd).ok()?.st_mode) != FileType::RegularFile {
        return None;
    }
    String::from_utf8(read_limited(&fd, 1 << 20).ok()?).ok()
}

/// The overlay's device if `dir` (the hierarchy of `class`, opened through any mount on it) is
/// a live merge: a mount point whose `dev` file names its own device. Reads nothing but `dev`:
/// the origin file is written after this check, and a lookup of it before would leave the
/// overlay a cached "not there".
pub fn merged_dev(dir: BorrowedFd, class: Class) -> Result<Option<(u32, u32)>> {
    if !is_mount_root(dir)? {
        return Ok(None);
    }
    let Some(dev) = read_meta(dir, class, "dev").as_deref().and_then(parse_dev) else {
        return Ok(None);
    };
    let st = fstat(dir).context("stat")?;
    // Not equal: an unpacked copy of a merged tree, not a live merge.
    Ok(((major(st.st_dev), minor(st.st_dev)) == dev).then_some(dev))
}

/// `dir` is the hierarchy `h`, opened (`O_RDONLY|O_DIRECTORY`) through any mount on it.
pub fn read(dir: BorrowedFd, h: Hierarchy) -> Result<Option<Merged>> {
    let class = h.class();
    let Some(dev) = merged_dev(dir, class)? else {
        return Ok(None);
    };
    let st = fstat(dir).context("stat")?;
    let extensions = read_meta(dir, class, class.list_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let work_dir = read_meta(dir, class, "work_dir").and_then(|w| cunescape(w.trim_end_matches('\n')));
    let mode = read_meta(dir, class, "origin").and_then(|o| origin_mode(&o));
    Ok(Some(Merged { extensions, dev, since: st.st_mtime, work_dir, mode }))
}

/// `mutable.mode` of an origin file.
fn origin_mode(text: &str) -> Option<String> {
    use crate::verify::json::Reader;
    // Walks {"mutable": {"mode": "…", …}, …}, skipping everything else.
    fn member<'a>(r: &mut Reader<'a>, wanted: &str) -> Option<()> {
        r.ws();
        r.expect(b'{').ok()?;
        loop {
            r.ws();
            let key = r.string().ok()?;
            r.ws();
            r.expect(b':').ok()?;
            r.ws();
            if key == wanted {
                return Some(());
            }
            r.value(0).ok()?;
            r.ws();
            r.expect(b',').ok()?;
        }
    }
    let mut r = Reader::new(text.as_bytes());
    member(&mut r, "mutable")?;
    member(&mut r, "mode")?;
    r.string().ok()
}

/// systemd's `cescape()`: C escapes, and octal for other bytes below blank or from 127.
pub fn cescape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            7 => out.push_str("\\a"),
            8 => out.push_str("\\b"),
            12 => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            11 => out.push_str("\\v"),
            b'\\' | b'"' | b'\'' => {
                out.push('\\');
                out.push(b as char);
            }
            b if !(b' '..127).contains(&b) => out.push_str(&format!("\\{b:03o}")),
            b => out.push(b as char),
        }
    }
    out
}

/// The reverse of `cescape()` (and of systemd's `\xNN`); `None` for anything else.
pub fn cunescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1)?;
        let (byte, len) = match c {
            b'a' => (7, 2),
            b'b' => (8, 2),
            b'f' => (12, 2),
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b't' => (b'\t', 2),
            b'v' => (11, 2),
            b'\\' | b'"' | b'\'' => (c, 2),
            b'x' => (u8::from_str_radix(std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?, 16).ok()?, 4),
            b'0'..=b'3' => (u8::from_str_radix(std::str::from_utf8(b.get(i + 1..i + 4)?).ok()?, 8).ok()?, 4),
            _ => return None,
        };
        out.push(byte);
        i += len;
    }
    String::from_utf8(out).ok()
}

fn write(dir: BorrowedFd, class: Class, file: &str, content: &str) -> Result<()> {
    let path = format!("{}/{file}", class.meta_dir());
    let fd = openat(
        dir,
        path.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .with_context(|| format!("creating {path}"))?;
    rustix::io::write(&fd, content.as_bytes()).with_context(|| format!("writing {path}"))?;
    Ok(())
}

/// Fill a fresh META layer with the list of names, before the overlay exists.
pub fn write_extensions(meta: BorrowedFd, class: Class, names: &[String]) -> Result<()> {
    mkdirat(meta, class.meta_dir(), Mode::from_raw_mode(0o755)).context(format!("creating {}", class.meta_dir()))?;
    let list: String = names.iter().map(|n| format!("{n}\n")).collect();
    write(meta, class, class.list_file(), &list)
}

/// Record the overlay's own device, once the overlay exists. Writing into a lower layer of a
/// mounted overlay is fine here: nothing has looked the file up through the overlay yet.
pub fn write_dev(meta: BorrowedFd, class: Class, overlay: BorrowedFd) -> Result<()> {
    let st = fstat(overlay).context("stat of the new overlay")?;
    write(meta, class, "dev", &format!("{}:{}\n", major(st.st_dev), minor(st.st_dev)))
}

/// Record the block device under the host's hierarchy, as systemd ≥ 260 does when the host is a
/// layer; systemd writes nothing when the file system has no device number of its own.
pub fn write_backing(meta: BorrowedFd, class: Class, host: BorrowedFd) -> Result<()> {
    let st = fstat(host).context("stat of the host hierarchy")?;
    if major(st.st_dev) == 0 {
        return Ok(());
    }
    write(meta, class, "backing", &format!("{}:{}\n", major(st.st_dev), minor(st.st_dev)))
}

/// Record the work directory of a persistent upper, relative to the root, C-escaped, as systemd
/// does: its unmerge removes that directory (`rm -rf`), so it is derived from the very upper the
/// overlay uses.
pub fn write_work_dir(meta: BorrowedFd, class: Class, relative: &str) -> Result<()> {
    write(meta, class, "work_dir", &format!("{}\n", cescape(relative)))
}

/// Record where the merged images came from, once the overlays are in place (systemd writes it
/// after mounting too); `refresh` of systemd ≥ 260 compares it with its own computation.
pub fn write_origin(meta: BorrowedFd, class: Class, content: &str) -> Result<()> {
    write(meta, class, "origin", content)
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

/// How a merge is mutable, as `origin` records it: the mode, and for each hierarchy with a
/// mutable directory, that directory as systemd names it.
pub struct Mutable<'a> {
    pub mode: &'a str,
    pub dirs: Vec<(&'static str, String)>,
}

/// The origin file for `(name, path, identity)` of each merged image, the mutable mode (sysexts:
/// always "no", our merge of them is read-only), no `mountOptions` (we add none), in systemd's
/// own layout.
pub fn origin_json(mutable: &Mutable, images: &[(&str, &str, Identity)]) -> String {
    let extensions = images.iter().map(|(name, path, id)| (name.to_string(), Json::Obj(identity_fields(path, id))));
    let mut m = vec![("mode", mutable.mode.into())];
    if !mutable.dirs.is_empty() {
        let dirs = mutable.dirs.iter().map(|(h, d)| (h.to_string(), Json::from(d.as_str())));
        m.push(("mutableDirs", Json::Map(dirs.collect())));
    }
    let mut doc = vec![("mutable", Json::Obj(m))];
    if !images.is_empty() {
        doc.push(("extensions", Json::Map(extensions.collect())));
    }
    Json::Obj(doc).pretty()
}

/// The origin file for the images the plan merges, or why none can be written (an image the
/// kernel gave no identity for: systemd could not discover it either).
pub fn origin_for(plan: &Plan) -> std::result::Result<String, String> {
    let layouts: Vec<_> = plan.hierarchies.iter().filter_map(|hp| Some((hp.hierarchy, hp.layout.as_ref()?))).collect();
    let mutable = Mutable {
        mode: layouts.first().map_or("no", |(_, l)| l.choice.mode.as_str()),
        dirs: layouts.iter().filter_map(|(h, l)| Some((h.path(), l.recorded.clone()?))).collect(),
    };
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
    Ok(origin_json(&mutable, &images))
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
        assert_eq!(origin_json(&NO, &images), include_str!("../tests/fixtures/systemd-262/origin-raw.json"));
        let dir = FileId {
            mount_id: 2147532018,
            handle: Some((248, unhex("00000000fb21040143cc751e51c04d218a40e9115ed8463882003d521300000000000000"))),
            inode: 12,
            crtime_us: 1796186624954669,
            mtime_us: 0,
        };
        let images = [("hello", "/var/lib/extensions/hello", Identity::File(&dir))];
        assert_eq!(origin_json(&NO, &images), include_str!("../tests/fixtures/systemd-262/origin-dir.json"));
    }

    /// Shapes from sysext.c's merge_subprocess: the root hash replaces the file's identity; the
    /// inode replaces a handle the file system does not give.
    #[test]
    fn origin_with_a_root_hash_or_without_a_handle() {
        let file = FileId { mount_id: 31, handle: None, inode: 77, crtime_us: 0, mtime_us: 5 };
        let hash = "ab".repeat(32);
        let text = origin_json(
            &NO,
            &[("a", "/etc/extensions/a.raw", Identity::Verity(&hash)), ("b", "/b", Identity::File(&file))],
        );
        let want = format!(
            "{{\n\t\"mutable\" : {{\n\t\t\"mode\" : \"no\"\n\t}},\n\t\"extensions\" : {{\n\
             \t\t\"a\" : {{\n\t\t\t\"path\" : \"/etc/extensions/a.raw\",\n\t\t\t\"verityHash\" : \"{hash}\"\n\t\t}},\n\
             \t\t\"b\" : {{\n\t\t\t\"path\" : \"/b\",\n\t\t\t\"onMountId\" : 31,\n\t\t\t\"inode\" : 77,\n\
             \t\t\t\"crtime\" : 0,\n\t\t\t\"mtime\" : 5\n\t\t}}\n\t}}\n}}\n"
        );
        assert_eq!(text, want);
        // Nothing merged: systemd leaves "extensions" out.
        assert_eq!(origin_json(&NO, &[]), "{\n\t\"mutable\" : {\n\t\t\"mode\" : \"no\"\n\t}\n}\n");
    }

    const NO: Mutable = Mutable { mode: "no", dirs: Vec::new() };

    /// A writable confext merge records its mode and mutable directory, as sysext.c's
    /// merge_subprocess builds them.
    #[test]
    fn origin_of_a_mutable_merge() {
        let hash = "cd".repeat(32);
        let m = Mutable { mode: "ephemeral", dirs: vec![("/etc", "/run/systemd/sysext/etc".into())] };
        let text = origin_json(&m, &[("site", "/var/lib/confexts/site.raw", Identity::Verity(&hash))]);
        let want = format!(
            "{{\n\t\"mutable\" : {{\n\t\t\"mode\" : \"ephemeral\",\n\t\t\"mutableDirs\" : {{\n\
             \t\t\t\"/etc\" : \"/run/systemd/sysext/etc\"\n\t\t}}\n\t}},\n\t\"extensions\" : {{\n\
             \t\t\"site\" : {{\n\t\t\t\"path\" : \"/var/lib/confexts/site.raw\",\n\t\t\t\"verityHash\" : \"{hash}\"\n\t\t}}\n\t}}\n}}\n"
        );
        assert_eq!(text, want);
        assert_eq!(origin_mode(&text).as_deref(), Some("ephemeral"));
        assert_eq!(
            origin_mode("{\"extensions\":{},\"mutable\":{\"mutableDirs\":{\"/etc\":\"/x\"},\"mode\":\"yes\"}}")
                .as_deref(),
            Some("yes")
        );
        assert_eq!(origin_mode("[]"), None);
    }

    #[test]
    fn work_dir_escapes_as_systemd_does() {
        assert_eq!(
            cescape("var/lib/extensions.mutable/.systemd-etc-workdir"),
            "var/lib/extensions.mutable/.systemd-etc-workdir"
        );
        assert_eq!(cescape("a b\nc\\d\"é"), "a b\\nc\\\\d\\\"\\303\\251");
        for s in ["var/lib/x", "a b\nc\\d\"é\t", ".systemd-etc-workdir"] {
            assert_eq!(cunescape(&cescape(s)).as_deref(), Some(s));
        }
        assert_eq!(cunescape("a\\x41").as_deref(), Some("aA"));
        assert_eq!(cunescape("bad\\q"), None);
        assert_eq!(cunescape("trailing\\"), None);
    }

    #[test]
    fn dev_format() {
        assert_eq!(parse_dev("0:123\n"), Some((0, 123)));
        assert_eq!(parse_dev("259:3"), Some((259, 3)));
        assert_eq!(parse_dev("x:1"), None);
        assert_eq!(parse_dev(""), None);
    }
}
