//! Step 3: what is this file? We trust magic numbers, never names, and check the size a file
//! system claims against the file we have, so a truncated download is named as such instead of
//! failing somewhere inside the kernel.

// Test fixtures first: the macro is then in scope in every module below.
#[cfg(test)]
pub(crate) mod fixtures {
    /// A file of tests/fixtures/signing, as bytes.
    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing/", $name)).as_slice()
        };
    }
    pub(crate) use fixture;

    /// The root hash the fixture signatures were made over.
    pub const ROOT: &[u8] = fixture!("roothash.txt");
}

// What protects an image: its evidence, and the formats it is written in.
pub mod base64;
pub mod certificates;
pub mod der;
pub mod dn;
pub mod evidence;
pub mod gpt;
pub mod json;
pub mod pem;
pub mod pkcs7;
pub mod signature;
pub mod verity;
pub mod x509;

use std::fmt;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hex of either case, even length, nothing else.
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() % 2 != 0 {
        return Err(format!("odd length {}", s.len()));
    }
    let digit = |i: usize| -> Result<u8, String> {
        let c = s.as_bytes()[i];
        (c as char).to_digit(16).map(|d| d as u8).ok_or_else(|| format!("'{}' at position {i}", c.escape_ascii()))
    };
    (0..s.len() / 2).map(|i| Ok(digit(2 * i)? << 4 | digit(2 * i + 1)?)).collect()
}

/// What a signature check said, as plain data for the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// The image ships no signature.
    Absent,
    /// Signed, but no trusted certificate is installed to check it against.
    Unchecked,
    Valid {
        signer: String,
    },
    /// Unknown signer, bad signature or a malformed one; the reason says which.
    Invalid {
        reason: String,
    },
}

/// What protects an image, for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The root hash dm-verity will enforce, in hex; `None` without dm-verity.
    pub root_hash: Option<String>,
    pub signature: Signature,
}

impl Trust {
    pub fn none() -> Trust {
        Trust { root_hash: None, signature: Signature::Absent }
    }

    /// A few words for the log line of a merged image.
    pub fn describe(&self) -> String {
        match (&self.root_hash, &self.signature) {
            (_, Signature::Valid { signer }) => format!("dm-verity, signed by {signer}"),
            (Some(_), Signature::Unchecked) => "dm-verity, signature not checked".into(),
            (Some(_), _) => "dm-verity, unsigned".into(),
            (None, _) => "no dm-verity, unsigned".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    Squashfs,
    Erofs,
    Ext4,
    /// A GPT disk image (Discoverable Disk Image).
    Ddi,
}

impl Kind {
    /// The kernel file system type to mount, for the kinds we mount from a loop device.
    pub fn fstype(self) -> Option<&'static str> {
        match self {
            Kind::Squashfs => Some("squashfs"),
            Kind::Erofs => Some("erofs"),
            Kind::Ext4 => Some("ext4"),
            Kind::Directory | Kind::Ddi => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Directory => "directory",
            Kind::Squashfs => "squashfs",
            Kind::Erofs => "erofs",
            Kind::Ext4 => "ext4",
            Kind::Ddi => "ddi",
        })
    }
}

/// How many bytes of a file `identify` wants to see.
pub const HEAD_LEN: usize = 8192;

fn le16(b: &[u8], at: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as u64)
}
fn le32(b: &[u8], at: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as u64)
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Identify a raw image from its first bytes and its size. Pure, so it is unit-tested and fuzzed.
pub fn identify(head: &[u8], size: u64) -> Result<Kind, String> {
    if size == 0 {
        return Err("is empty (0 bytes)".into());
    }
    let (kind, claimed) = if head.starts_with(b"hsqs") {
        (Kind::Squashfs, le64(head, 40))
    } else if le32(head, 1024) == Some(0xE0F5_E1E2) {
        // Block count times block size; blkszbits is a byte at offset 12 of the superblock.
        let bits = head.get(1024 + 12).copied().unwrap_or(0) as u32;
        (Kind::Erofs, le32(head, 1024 + 36).and_then(|n| n.checked_shl(bits).filter(|_| bits < 32)))
    } else if le16(head, 1024 + 0x38) == Some(0xEF53) {
        let shift = le32(head, 1024 + 24).unwrap_or(0);
        let block = if shift < 16 { Some(1024u64 << shift) } else { None };
        (Kind::Ext4, le32(head, 1024 + 4).zip(block).and_then(|(n, b)| n.checked_mul(b)))
    } else if head.get(512..520) == Some(b"EFI PART") || head.get(4096..4104) == Some(b"EFI PART") {
        return Ok(Kind::Ddi);
    } else {
        return Err(format!(
            "is not a squashfs, erofs, ext4 or GPT image (unknown magic in its first {} bytes)",
            head.len().min(HEAD_LEN)
        ));
    };
    match claimed {
        Some(n) if n > size => Err(format!("is truncated: its {kind} superblock says {n} bytes, the file has {size}")),
        Some(_) => Ok(kind),
        None => Err(format!("has an unreadable {kind} superblock ({size} bytes)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squashfs(bytes_used: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"hsqs");
        h[40..48].copy_from_slice(&bytes_used.to_le_bytes());
        h
    }

    fn erofs(blocks: u32, bits: u8) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        h[1024 + 12] = bits;
        h[1024 + 36..1024 + 40].copy_from_slice(&blocks.to_le_bytes());
        h
    }

    #[test]
    fn kinds_by_magic() {
        assert_eq!(identify(&squashfs(4096), 4096), Ok(Kind::Squashfs));
        assert_eq!(identify(&erofs(2, 12), 8192), Ok(Kind::Erofs));
        let mut ext4 = vec![0u8; 4096];
        ext4[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        ext4[1024 + 4..1024 + 8].copy_from_slice(&8u32.to_le_bytes());
        ext4[1024 + 24] = 2; // 4 KiB blocks
        assert_eq!(identify(&ext4, 32768), Ok(Kind::Ext4));
        let mut gpt = vec![0u8; 4096];
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(identify(&gpt, 1 << 20), Ok(Kind::Ddi));
    }

    #[test]
    fn truncation_is_named() {
        let e = identify(&squashfs(1 << 20), 4096).unwrap_err();
        assert_eq!(e, "is truncated: its squashfs superblock says 1048576 bytes, the file has 4096");
        assert!(identify(&erofs(100, 12), 8192).unwrap_err().starts_with("is truncated: its erofs"));
        assert!(identify(b"hsqs", 4).unwrap_err().contains("unreadable squashfs superblock"));
    }

    #[test]
    fn junk_and_empty() {
        assert_eq!(identify(&[], 0).unwrap_err(), "is empty (0 bytes)");
        let e = identify(b"hello, I am a text file\n", 24).unwrap_err();
        assert!(e.starts_with("is not a squashfs, erofs, ext4 or GPT image"), "{e}");
    }

    #[test]
    fn absurd_fields_do_not_overflow() {
        assert!(identify(&erofs(u32::MAX, 255), 1 << 30).is_err());
    }

    #[test]
    fn hex_both_ways() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00aBfF").unwrap(), vec![0, 0xab, 0xff]);
    }
}
