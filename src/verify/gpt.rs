//! A DDI's partition table. We read the GPT ourselves (no libblkid in the initrd) and pick the
//! partitions a system extension may have by their Discoverable Partitions Specification type:
//! one data partition (root or usr), its verity hash partition and its verity signature
//! partition. Anything ambiguous is refused, because guessing which partition the publisher
//! meant is exactly what an attacker would exploit.

use std::fmt;

/// The partition types we look for, for the architecture we run on.
struct Types {
    root: &'static str,
    root_verity: &'static str,
    root_verity_sig: &'static str,
    usr: &'static str,
    usr_verity: &'static str,
    usr_verity_sig: &'static str,
}

#[cfg(target_arch = "x86_64")]
const TYPES: Types = Types {
    root: "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
    root_verity: "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
    root_verity_sig: "41092b05-9fc8-4523-994f-2def0408b176",
    usr: "8484680c-9521-48c6-9c11-b0720656f69e",
    usr_verity: "77ff5f63-e7b6-4633-acf4-1565b864c0e6",
    usr_verity_sig: "e7bb33fb-06cf-4e81-8273-e543b413e2e2",
};

#[cfg(target_arch = "aarch64")]
const TYPES: Types = Types {
    root: "b921b045-1df0-41c3-af44-4c6f280d3fae",
    root_verity: "df3300ce-d69f-4c92-978c-9bfb0f38d820",
    root_verity_sig: "6db69de6-29f4-4758-a7a5-962190f00ce3",
    usr: "b0e01050-ee5f-4390-949a-9101b17104e9",
    usr_verity: "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e",
    usr_verity_sig: "c23ce4ff-44bd-4b00-b2d4-b41b3419e02a",
};

/// Partitions with this attribute bit are not for automatic use (DPS "no-auto").
const NO_AUTO: u64 = 1 << 63;
/// A real GPT has 128 entries of 128 bytes; this bounds what a hostile header can make us read.
const MAX_TABLE: u64 = 1 << 20;

/// Which kind of data partition the image has. A root partition holds `usr/` and `opt/`; a usr
/// partition is the `/usr` tree itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Root,
    Usr,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Root => "root",
            Role::Usr => "usr",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Byte offset and length inside the image.
    pub offset: u64,
    pub size: u64,
    /// The partition's own UUID, in the byte order of its text form. systemd-repart sets the
    /// data and hash partitions' UUIDs to the first and last 128 bits of the root hash: an
    /// unsigned DDI's root hash is read from them. A signed one's is not compared with them:
    /// systemd uses the UUIDs only to pick partitions when a root hash comes from outside the
    /// image, and the check of the root hash against the tree's top block binds it more tightly.
    pub uuid: [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub role: Role,
    pub data: Partition,
    pub verity: Option<Partition>,
    pub signature: Option<Partition>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// CRC-32 (IEEE), as the GPT header and entry array use. Bitwise: the table is a few KiB.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The on-disk GUID (first three fields little-endian) in text byte order.
fn guid(raw: &[u8]) -> [u8; 16] {
    let mut g: [u8; 16] = raw[..16].try_into().expect("16 bytes");
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

pub fn uuid_text(g: &[u8; 16]) -> String {
    let h: String = g.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Parse the GPT of an image of `size` bytes, taking a data partition of one of `roles` (what
/// systemd's image policy for the class honours: root or usr for a sysext, root for a confext;
/// partitions of other roles are ignored, as that policy ignores them). `read(offset, len)`
/// returns exactly `len` bytes or an error; it is the only I/O, so this is tested on byte arrays.
pub fn parse(
    size: u64,
    roles: &[Role],
    read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, String>,
) -> Result<Layout, String> {
    // The header sits in LBA 1; the sector size is 512 or 4096.
    let (sector, header) = [512u64, 4096]
        .into_iter()
        .filter(|s| s + 512 <= size)
        .find_map(|s| read(s, 92).ok().filter(|h| h.starts_with(b"EFI PART")).map(|h| (s, h)))
        .ok_or("has no GPT header")?;
    let header_size = le32(&header, 12) as usize;
    if !(92..=sector as usize).contains(&header_size) {
        return Err(format!("has a GPT header of impossible size {header_size}"));
    }
    let mut full = read(sector, header_size)?;
    let stored = le32(&full, 16);
    full[16..20].fill(0);
    if crc32(&full) != stored {
        return Err("has a corrupt GPT header (CRC mismatch)".into());
    }
    let (entries_lba, count, entry_size, entries_crc) =
        (le64(&full, 72), le32(&full, 80) as u64, le32(&full, 84) as u64, le32(&full, 88));
    let table_len = count.checked_mul(entry_size).filter(|&n| n <= MAX_TABLE);
    let Some(table_len) = table_len.filter(|_| entry_size >= 128 && entry_size % 8 == 0) else {
        return Err(format!("has an unsupported GPT entry array ({count} entries of {entry_size} bytes)"));
    };
    let table_at = entries_lba
        .checked_mul(sector)
        .filter(|o| o.checked_add(table_len).is_some_and(|end| end <= size))
        .ok_or("has a GPT entry array outside the image")?;
    let table = read(table_at, table_len as usize)?;
    if crc32(&table) != entries_crc {
        return Err("has a corrupt GPT entry array (CRC mismatch)".into());
    }

    let mut found: Vec<(&'static str, Partition)> = Vec::new();
    for e in table.chunks_exact(entry_size as usize) {
        let type_id = uuid_text(&guid(&e[0..16]));
        let (first, last, attrs) = (le64(e, 32), le64(e, 40), le64(e, 48));
        let kind = [
            (TYPES.root, "root"),
            (TYPES.root_verity, "root-verity"),
            (TYPES.root_verity_sig, "root-verity-sig"),
            (TYPES.usr, "usr"),
            (TYPES.usr_verity, "usr-verity"),
            (TYPES.usr_verity_sig, "usr-verity-sig"),
        ]
        .into_iter()
        .find(|(t, _)| *t == type_id)
        .map(|(_, k)| k);
        let Some(kind) = kind else { continue };
        let usr = kind.starts_with("usr");
        if !roles.contains(if usr { &Role::Usr } else { &Role::Root }) {
            continue;
        }
        if attrs & NO_AUTO != 0 {
            continue;
        }
        let span = last.checked_sub(first).and_then(|n| n.checked_add(1)).and_then(|n| n.checked_mul(sector));
        let offset = first.checked_mul(sector);
        match (offset, span) {
            (Some(o), Some(s)) if o.checked_add(s).is_some_and(|end| end <= size) => {
                found.push((kind, Partition { offset: o, size: s, uuid: guid(&e[16..32]) }))
            }
            _ => return Err(format!("has a {kind} partition that lies outside the image (LBA {first}..{last})")),
        }
    }
    pick(&found, roles)
}

/// Exactly one of a kind, or none; two is ambiguous.
fn one(found: &[(&str, Partition)], kind: &str) -> Result<Option<Partition>, String> {
    let mut it = found.iter().filter(|(k, _)| *k == kind);
    match (it.next(), it.next()) {
        (Some(_), Some(_)) => Err(format!("has more than one {kind} partition; which one to use is ambiguous")),
        (first, _) => Ok(first.map(|(_, p)| p.clone())),
    }
}

fn pick(found: &[(&str, Partition)], roles: &[Role]) -> Result<Layout, String> {
    let root = one(found, "root")?;
    let usr = one(found, "usr")?;
    let (role, data, prefix) = match (root, usr) {
        (Some(_), Some(_)) => return Err("has both a root and a usr partition; a system extension has one".into()),
        (Some(p), None) => (Role::Root, p, "root"),
        (None, Some(p)) => (Role::Usr, p, "usr"),
        (None, None) if !roles.contains(&Role::Usr) => {
            return Err(format!(
                "has no root partition for this architecture ({}); a configuration extension's /etc lives in one",
                std::env::consts::ARCH
            ))
        }
        (None, None) => {
            return Err(format!("has no root or usr partition for this architecture ({})", std::env::consts::ARCH))
        }
    };
    let verity = one(found, &format!("{prefix}-verity"))?;
    let signature = one(found, &format!("{prefix}-verity-sig"))?;
    if signature.is_some() && verity.is_none() {
        return Err(format!("has a {prefix}-verity-sig partition but no {prefix}-verity partition"));
    }
    // A verity partition of the other role would be ignored silently; name it instead.
    let other = if role == Role::Root { "usr" } else { "root" };
    if found.iter().any(|(k, _)| k.starts_with(other)) {
        return Err(format!("has {other} verity partitions next to a {prefix} partition; they do not belong together"));
    }
    Ok(Layout { role, data, verity, signature })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const ROOT: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    pub const ROOT_VERITY: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
    pub const ROOT_SIG: &str = "41092b05-9fc8-4523-994f-2def0408b176";
    pub const USR: &str = "8484680c-9521-48c6-9c11-b0720656f69e";
    pub const USR_VERITY: &str = "77ff5f63-e7b6-4633-acf4-1565b864c0e6";

    fn raw_guid(text: &str) -> [u8; 16] {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        let mut g = [0u8; 16];
        for (i, b) in g.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        guid(&g) // the swap is its own inverse
    }

    /// A 1 MiB image with 512-byte sectors and the given (type, first LBA, last LBA, attrs).
    pub fn image(parts: &[(&str, u64, u64, u64)]) -> Vec<u8> {
        image_with(parts, |_| {})
    }

    /// The same, with `edit` applied to the 92-byte header before its CRC is computed.
    pub fn image_with(parts: &[(&str, u64, u64, u64)], edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut img = vec![0u8; 1 << 20];
        let mut table = vec![0u8; 128 * 128];
        for (i, (t, first, last, attrs)) in parts.iter().enumerate() {
            let e = &mut table[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&raw_guid(t));
            e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            e[48..56].copy_from_slice(&attrs.to_le_bytes());
        }
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&table).to_le_bytes());
        edit(&mut h);
        let c = crc32(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        img[512..604].copy_from_slice(&h);
        img[1024..1024 + table.len()].copy_from_slice(&table);
        img
    }

    pub fn parse_bytes(img: &[u8]) -> Result<Layout, String> {
        parse_roles(img, &[Role::Root, Role::Usr])
    }

    fn parse_roles(img: &[u8], roles: &[Role]) -> Result<Layout, String> {
        parse(img.len() as u64, roles, &mut |o, n| {
            img.get(o as usize..o as usize + n).map(<[u8]>::to_vec).ok_or_else(|| "short read".to_string())
        })
    }

    #[test]
    fn a_confext_takes_its_root_partition_and_ignores_usr_ones() {
        let both = image(&[(ROOT, 34, 99, 0), (USR, 100, 199, 0), (USR_VERITY, 200, 209, 0)]);
        let l = parse_roles(&both, &[Role::Root]).unwrap();
        assert_eq!((l.role, l.data.offset, l.verity), (Role::Root, 34 * 512, None));
        let usr_only = parse_roles(&image(&[(USR, 34, 99, 0)]), &[Role::Root]).unwrap_err();
        assert!(usr_only.starts_with("has no root partition for this architecture"), "{usr_only}");
        assert!(usr_only.ends_with("a configuration extension's /etc lives in one"), "{usr_only}");
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn finds_root_verity_and_signature() {
        let l = parse_bytes(&image(&[(ROOT, 34, 1033, 0), (ROOT_VERITY, 1034, 1533, 0), (ROOT_SIG, 1534, 1541, 0)]))
            .unwrap();
        assert_eq!(l.role, Role::Root);
        assert_eq!((l.data.offset, l.data.size), (34 * 512, 1000 * 512));
        assert_eq!(l.verity.unwrap().offset, 1034 * 512);
        assert_eq!(l.signature.unwrap().size, 8 * 512);
        assert_eq!(l.data.uuid, [1; 16]);
    }

    #[test]
    fn ambiguity_and_absence_are_refused_with_reasons() {
        let two = parse_bytes(&image(&[(USR, 34, 99, 0), (USR, 100, 199, 0)])).unwrap_err();
        assert_eq!(two, "has more than one usr partition; which one to use is ambiguous");
        let none = parse_bytes(&image(&[("0fc63daf-8483-4772-8e79-3d69d8477de4", 34, 99, 0)])).unwrap_err();
        assert!(none.starts_with("has no root or usr partition"), "{none}");
        let both = parse_bytes(&image(&[(ROOT, 34, 99, 0), (USR, 100, 199, 0)])).unwrap_err();
        assert!(both.contains("both a root and a usr"), "{both}");
        let sig_alone = parse_bytes(&image(&[(ROOT, 34, 99, 0), (ROOT_SIG, 100, 107, 0)])).unwrap_err();
        assert!(sig_alone.contains("no root-verity partition"), "{sig_alone}");
    }

    #[test]
    fn no_auto_partitions_are_ignored() {
        let l = parse_bytes(&image(&[(USR, 34, 99, NO_AUTO), (USR, 100, 199, 0)])).unwrap();
        assert_eq!(l.data.offset, 100 * 512);
    }

    #[test]
    fn corrupt_or_hostile_tables() {
        let mut img = image(&[(ROOT, 34, 99, 0)]);
        img[1024 + 40] ^= 1; // an entry changed after the CRC was computed
        assert_eq!(parse_bytes(&img).unwrap_err(), "has a corrupt GPT entry array (CRC mismatch)");
        let outside = parse_bytes(&image(&[(ROOT, 34, 1 << 40, 0)])).unwrap_err();
        assert!(outside.contains("outside the image"), "{outside}");
        let backwards = parse_bytes(&image(&[(ROOT, 99, 34, 0)])).unwrap_err();
        assert!(backwards.contains("outside the image"), "{backwards}");
        assert_eq!(parse_bytes(&[0u8; 4096]).unwrap_err(), "has no GPT header");
    }

    #[test]
    fn header_numbers_never_overflow() {
        // The entry array's LBA times the sector size fits in 64 bits; plus the array, it does not.
        for lba in [u64::MAX / 512, u64::MAX / 512 - 1, u64::MAX] {
            let img = image_with(&[(ROOT, 34, 99, 0)], |h| h[72..80].copy_from_slice(&lba.to_le_bytes()));
            assert_eq!(parse_bytes(&img).unwrap_err(), "has a GPT entry array outside the image", "LBA {lba}");
        }
        // The most entries of the largest size the header can name.
        let img = image_with(&[(ROOT, 34, 99, 0)], |h| {
            h[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
            h[84..88].copy_from_slice(&(!7u32).to_le_bytes());
        });
        assert!(parse_bytes(&img).unwrap_err().starts_with("has an unsupported GPT entry array"));
        // Partitions at the very end of the LBA range.
        for (first, last) in [(u64::MAX - 1, u64::MAX), (0, u64::MAX), (u64::MAX / 512, u64::MAX / 512 + 1)] {
            let e = parse_bytes(&image(&[(ROOT, first, last, 0)])).unwrap_err();
            assert!(e.contains("outside the image"), "{first}..{last}: {e}");
        }
    }
}
