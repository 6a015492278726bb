//! Step 3b: what protects an image file. A DDI carries its hash tree and signature in GPT
//! partitions; a plain image may have them as sidecar files next to it (`NAME.verity`,
//! `NAME.roothash`, `NAME.roothash.p7s`, systemd's convention). Everything is read and checked
//! here, before any loop device or mount exists: the plan refuses an image by its evidence
//! without ever letting the kernel parse its file system.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fstat, FileType, OFlags};
use rustix::io::Errno;

use super::gpt::{self, Role};
use super::pkcs7::{self, Failure};
use super::signature;
use super::verity::{self, Superblock, TopBlock};
use super::x509::TrustedCert;
use super::{hex, identify, Kind, Signature, Trust, HEAD_LEN};
use crate::sys::fs::{describe_type, open_in_root, read_limited, reopen_read};

/// A byte range of an open file: a whole image, a partition, a `.verity` file.
pub struct Region {
    pub fd: OwnedFd,
    pub offset: u64,
    pub size: u64,
}

/// What the kernel needs for a dm-verity device.
pub struct VerityData {
    pub hash: Region,
    pub superblock: Superblock,
    pub root_hash: Vec<u8>,
}

/// How to mount an image file: where its file system is and what checks its reads.
pub struct Source {
    pub data: Region,
    pub fs: Kind,
    pub role: Role,
    pub verity: Option<VerityData>,
}

/// The sidecar files of a plain image, opened for reading, each if present.
#[derive(Default)]
pub struct Sidecars {
    pub verity: Option<(OwnedFd, u64)>,
    pub roothash: Option<Vec<u8>>,
    /// The DER, or why it was not read (too large).
    pub signature: Option<Result<Vec<u8>, Failure>>,
}

/// The largest `.roothash` file: a sha512 root hash in hex is 128 bytes, whitespace aside.
const MAX_ROOTHASH: u64 = 1024;

pub const SIDECAR_SUFFIXES: [&str; 3] = [".verity", ".roothash", ".roothash.p7s"];

fn read_at(fd: BorrowedFd, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let at = checked(offset, done as u64)?;
        match rustix::io::pread(fd, &mut buf[done..], at) {
            Ok(0) => return Err(format!("is shorter than expected (nothing to read at byte {at})")),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("cannot be read at byte {at}: {}", std::io::Error::from(e))),
        }
    }
    Ok(buf)
}

fn region(fd: &OwnedFd, offset: u64, size: u64) -> Result<Region, String> {
    let fd = fd.try_clone().map_err(|e| format!("cannot duplicate its fd: {e}"))?;
    Ok(Region { fd, offset, size })
}

/// Whether the signature can be checked, and what the check says.
fn judge(der: Result<&[u8], &Failure>, root_hash: &[u8], trusted: &[TrustedCert]) -> Signature {
    if trusted.is_empty() {
        return Signature::Unchecked;
    }
    match der.map_err(Clone::clone).and_then(|der| pkcs7::check(der, hex(root_hash).as_bytes(), trusted)) {
        Ok(signer) => Signature::Valid { signer },
        Err(failure) => Signature::Invalid { reason: failure.to_string() },
    }
}

/// "the partition UUIDs give", "the .roothash file gives".
fn gives(what: &str) -> String {
    if what.ends_with('s') {
        format!("{what} give")
    } else {
        format!("{what} gives")
    }
}

/// `base + offset`, for offsets an image supplies.
fn checked(base: u64, offset: u64) -> Result<u64, String> {
    base.checked_add(offset).ok_or_else(|| format!("has an offset beyond any file ({base} + {offset})"))
}

/// The superblock of a hash region, checked against the data it covers and the root hash. `what`
/// says where the root hash came from; `data_what` names the data (partition or file).
fn verity_data(
    hash: Region,
    data: &Region,
    root_hash: Vec<u8>,
    what: &str,
    data_what: &str,
) -> Result<VerityData, String> {
    let data_size = data.size;
    let sb = verity::parse_superblock(&read_at(hash.fd.as_fd(), hash.offset, verity::SUPERBLOCK_LEN)?)?;
    let (blocks, block) = (sb.data_blocks, sb.data_block_size);
    // The device is sized from the superblock: data beyond what the tree covers cannot be read,
    // so the file system must lie within it (systemd-repart pads a small one's partition and
    // hashes the file system only), and a tree larger than the data cannot be right.
    match sb.data_bytes() {
        Some(n) if n == data_size => {}
        Some(n) if n < data_size => {
            let head = read_at(data.fd.as_fd(), data.offset, HEAD_LEN.min(n as usize))?;
            identify(&head, n).map_err(|e| {
                format!(
                    "has a hash tree that covers only {n} of the {data_size} bytes of its {data_what} \
                     ({blocks} blocks of {block} bytes), and the file system there {e}"
                )
            })?;
        }
        _ => {
            return Err(format!(
                "has a verity superblock for {blocks} blocks of {block} bytes, more than the {data_size} bytes of its {data_what}"
            ))
        }
    }
    let (alg, len) = (sb.algorithm.name(), sb.algorithm.digest_len());
    if root_hash.len() != len {
        return Err(format!("{} a {}-byte root hash, but {alg} needs {len} bytes", gives(what), root_hash.len()));
    }
    if sb.hash_bytes().map_or(true, |n| n > hash.size) {
        return Err(format!("has a hash tree that does not fit in its {} bytes", hash.size));
    }
    let top = match sb.top_block() {
        TopBlock::Hash { offset, len } => read_at(hash.fd.as_fd(), checked(hash.offset, offset)?, len)?,
        TopBlock::Data { len } => read_at(data.fd.as_fd(), data.offset, len)?,
    };
    if !sb.root_hash_matches(&top, &root_hash) {
        return Err(format!(
            "root hash does not match: {} {}, which is not the root of the hash tree",
            gives(what),
            hex(&root_hash)
        ));
    }
    Ok(VerityData { hash, superblock: sb, root_hash })
}

/// The file system in a data region: it must be one we mount, and fit.
fn data_kind(fd: &OwnedFd, offset: u64, size: u64) -> Result<Kind, String> {
    let head = read_at(fd.as_fd(), offset, HEAD_LEN.min(size as usize))?;
    match identify(&head, size) {
        Ok(Kind::Ddi) => Err("has a GPT inside its data partition".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(format!("has a data partition that {e}")),
    }
}

fn examine_ddi(fd: &OwnedFd, size: u64, roles: &[Role], trusted: &[TrustedCert]) -> Result<(Trust, Source), String> {
    let layout = gpt::parse(size, roles, &mut |o, n| read_at(fd.as_fd(), o, n))?;
    let fs = data_kind(fd, layout.data.offset, layout.data.size)?;
    let data = region(fd, layout.data.offset, layout.data.size)?;
    let Some(v) = &layout.verity else {
        return Ok((Trust::none(), Source { data, fs, role: layout.role, verity: None }));
    };
    let hash = region(fd, v.offset, v.size)?;
    let (root_hash, sig, what) = match &layout.signature {
        Some(s) => {
            let role = layout.role;
            if s.size > signature::MAX_PARTITION as u64 {
                return Err(format!(
                    "has a {role}-verity-sig partition of {} bytes, more than the {} a signature partition may have",
                    s.size,
                    signature::MAX_PARTITION
                ));
            }
            let bytes = read_at(fd.as_fd(), s.offset, s.size as usize)?;
            let blob = signature::parse_signature_json(&bytes)
                .map_err(|e| format!("has a {role}-verity-sig partition that is not a signature: {e}"))?;
            let sig = judge(Ok(&blob.signature), &blob.root_hash, trusted);
            (blob.root_hash, sig, "the signature partition")
        }
        // Without a signature, the partition UUIDs carry the root hash (its two halves).
        None => ([layout.data.uuid, v.uuid].concat(), Signature::Absent, "the partition UUIDs"),
    };
    let verity = verity_data(hash, &data, root_hash, what, "data partition")?;
    let trust = Trust { root_hash: Some(hex(&verity.root_hash)), signature: sig };
    Ok((trust, Source { data, fs, role: layout.role, verity: Some(verity) }))
}

fn examine_plain(
    fd: &OwnedFd,
    size: u64,
    fs: Kind,
    sidecars: Sidecars,
    trusted: &[TrustedCert],
) -> Result<(Trust, Source), String> {
    let data = region(fd, 0, size)?;
    let (hash, roothash) = match (sidecars.verity, sidecars.roothash) {
        (None, None) if sidecars.signature.is_some() => {
            return Err("has a .roothash.p7s but no .roothash and .verity".into())
        }
        (None, None) => return Ok((Trust::none(), Source { data, fs, role: Role::Root, verity: None })),
        (Some(_), None) => return Err("has a .verity file but no .roothash file".into()),
        (None, Some(_)) => return Err("has a .roothash file but no .verity file".into()),
        (Some(v), Some(r)) => (v, r),
    };
    let root_hash =
        verity::parse_hex(&String::from_utf8_lossy(&roothash)).map_err(|e| format!("has a .roothash that {e}"))?;
    let sig = match &sidecars.signature {
        Some(der) => judge(der.as_deref(), &root_hash, trusted),
        None => Signature::Absent,
    };
    let hash = Region { fd: hash.0, offset: 0, size: hash.1 };
    let verity = verity_data(hash, &data, root_hash, "the .roothash file", "image file")?;
    let trust = Trust { root_hash: Some(hex(&verity.root_hash)), signature: sig };
    Ok((trust, Source { data, fs, role: Role::Root, verity: Some(verity) }))
}

/// `NAME.verity`, `NAME.roothash` and `NAME.roothash.p7s` of `NAME.raw`: next to the path we
/// found, or else next to where its symlink leads (Flatcar links from /etc/extensions).
pub fn sidecars(root: BorrowedFd, path: &str, target: Option<&str>) -> Result<Sidecars, String> {
    for base in std::iter::once(path).chain(target) {
        let Some(stem) = base.strip_suffix(".raw") else { continue };
        // Looked at through O_PATH first: only a regular file is opened for reading.
        let open = |suffix: &str| -> Result<Option<(OwnedFd, u64)>, String> {
            let path = format!("{stem}{suffix}");
            let fd = match open_in_root(root, &path, OFlags::PATH) {
                Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(format!("cannot open {path}: {e}")),
                Ok(fd) => fd,
            };
            let st = fstat(&fd).map_err(|e| format!("cannot stat {path}: {e}"))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(format!("{path} is a {}, not a regular file", describe_type(st.st_mode)));
            }
            let fd = reopen_read(fd.as_fd()).map_err(|e| format!("cannot open {path}: {e}"))?;
            Ok(Some((fd, st.st_size as u64)))
        };
        let read = |fd: OwnedFd, max: u64| {
            read_limited(fd, max as usize).map_err(|e| format!("cannot read a sidecar of {base}: {e}"))
        };
        let roothash = match open(".roothash")? {
            Some((_, size)) if size > MAX_ROOTHASH => {
                return Err(format!(
                    "has a .roothash of {size} bytes, more than the {MAX_ROOTHASH} a root hash file holds"
                ))
            }
            Some((fd, _)) => Some(read(fd, MAX_ROOTHASH)?),
            None => None,
        };
        // An oversized signature is not read, but named with its real size.
        let signature = match open(".roothash.p7s")? {
            Some((_, size)) if size > pkcs7::MAX_PKCS7 as u64 => Some(Err(pkcs7::oversized(size))),
            Some((fd, _)) => Some(Ok(read(fd, pkcs7::MAX_PKCS7 as u64)?)),
            None => None,
        };
        let found = Sidecars { verity: open(".verity")?, roothash, signature };
        if found.verity.is_some() || found.roothash.is_some() || found.signature.is_some() {
            return Ok(found);
        }
    }
    Ok(Sidecars::default())
}

/// Gather and check an image file's evidence. `fd` is open for reading; `roles` are the DDI
/// data partitions the image's class may use.
pub fn examine(
    fd: &OwnedFd,
    size: u64,
    kind: Kind,
    roles: &[Role],
    sidecars: Sidecars,
    trusted: &[TrustedCert],
) -> Result<(Trust, Source), String> {
    match kind {
        Kind::Ddi => examine_ddi(fd, size, roles, trusted),
        Kind::Directory => Err("is a directory, not an image file".into()),
        fs => examine_plain(fd, size, fs, sidecars, trusted),
    }
}
