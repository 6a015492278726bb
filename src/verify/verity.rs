//! The dm-verity hash device: its superblock (what veritysetup and systemd-repart write at the
//! start of the hash partition or `.verity` file) and the root hash. The kernel checks every
//! block against the root hash as it is read; here we check, before any device exists, that the
//! superblock is sane and that the root hash we were given really is the hash of the tree's top
//! block, so a mismatch is a clear refusal instead of an I/O error at mount time.

use sha2::{Digest, Sha256, Sha512};

use super::{hex, unhex};

pub const SUPERBLOCK_LEN: usize = 512;

/// The hash algorithms we accept: those systemd-repart and veritysetup write and the kernel
/// checks with. Each gets every pre-check; anything else is refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The length of a digest, and so of the root hash.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    /// A block's hash in a format 1 tree: the salt first, then the block.
    fn hash(self, salt: &[u8], block: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Sha256 => Sha256::new().chain_update(salt).chain_update(block).finalize().to_vec(),
            Algorithm::Sha512 => Sha512::new().chain_update(salt).chain_update(block).finalize().to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBlock {
    /// At `offset` in the hash device.
    Hash { offset: u64, len: usize },
    /// The first block of the data device.
    Data { len: usize },
}

/// What the kernel's verity target needs besides the two devices and the root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub algorithm: Algorithm,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

fn block_size_ok(n: u32) -> bool {
    n.is_power_of_two() && (512..=512 * 1024).contains(&n)
}

/// Parse the 512-byte superblock. Only format 1 (the one everything current writes) is taken.
pub fn parse_superblock(b: &[u8]) -> Result<Superblock, String> {
    let b = b.get(..SUPERBLOCK_LEN).ok_or("has a truncated verity superblock")?;
    if &b[0..8] != b"verity\0\0" {
        return Err("has no verity superblock (bad magic)".into());
    }
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let (version, hash_type) = (u32_at(8), u32_at(12));
    if version != 1 || hash_type != 1 {
        return Err(format!(
            "has a verity superblock of version {version}, hash type {hash_type}; only 1/1 is supported"
        ));
    }
    let alg_raw = &b[32..64];
    let name = &alg_raw[..alg_raw.iter().position(|c| *c == 0).unwrap_or(32)];
    let algorithm = match name {
        b"sha256" => Algorithm::Sha256,
        b"sha512" => Algorithm::Sha512,
        _ if !name.is_empty() && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') => {
            return Err(format!(
                "has a verity superblock with the hash algorithm {}, which is not accepted (sha256 and sha512 are)",
                name.escape_ascii()
            ))
        }
        _ => return Err(format!("has a verity superblock with an invalid hash algorithm \"{}\"", name.escape_ascii())),
    };
    let (data_block_size, hash_block_size) = (u32_at(64), u32_at(68));
    if !block_size_ok(data_block_size) || !block_size_ok(hash_block_size) {
        return Err(format!(
            "has a verity superblock with invalid block sizes (data {data_block_size}, hash {hash_block_size})"
        ));
    }
    let data_blocks = u64::from_le_bytes(b[72..80].try_into().expect("8 bytes"));
    let salt_size = u16::from_le_bytes([b[80], b[81]]) as usize;
    if data_blocks == 0 || salt_size > 256 {
        return Err(format!("has a verity superblock with {data_blocks} data blocks and a {salt_size}-byte salt"));
    }
    Ok(Superblock { algorithm, data_block_size, hash_block_size, data_blocks, salt: b[88..88 + salt_size].to_vec() })
}

impl Superblock {
    /// Bytes of data the tree covers; the data device must be at least this big.
    pub fn data_bytes(&self) -> Option<u64> {
        self.data_blocks.checked_mul(self.data_block_size as u64)
    }

    /// The hash area starts right after the superblock, at the next hash block.
    pub fn hash_start_block(&self) -> u64 {
        1
    }

    /// Bytes the hash device needs: the superblock block plus every level of the tree. A single
    /// data block has no tree: the root hash is that block's hash.
    pub fn hash_bytes(&self) -> Option<u64> {
        // As the kernel: a power of two of digests per block, at least two.
        let digest = self.algorithm.digest_len().next_power_of_two() as u64;
        let per_block = (self.hash_block_size as u64 / digest).max(2);
        let (mut level, mut blocks) = (self.data_blocks, 0u64);
        while level > 1 {
            level = level.div_ceil(per_block);
            blocks = blocks.checked_add(level)?;
        }
        blocks.checked_add(self.hash_start_block())?.checked_mul(self.hash_block_size as u64)
    }

    /// The kernel table line for the verity target (format 1).
    pub fn table(&self, data_dev: &str, hash_dev: &str, root_hash: &[u8]) -> String {
        let salt = if self.salt.is_empty() { "-".to_string() } else { hex(&self.salt) };
        format!(
            "1 {data_dev} {hash_dev} {} {} {} {} {} {} {salt}",
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block(),
            self.algorithm.name(),
            hex(root_hash)
        )
    }

    /// The block the root hash is the hash of: the tree's top block, stored first in the hash
    /// area, or the only data block when there is no tree.
    pub fn top_block(&self) -> TopBlock {
        if self.data_blocks == 1 {
            TopBlock::Data { len: self.data_block_size as usize }
        } else {
            TopBlock::Hash {
                offset: self.hash_start_block() * self.hash_block_size as u64,
                len: self.hash_block_size as usize,
            }
        }
    }

    /// Whether `root_hash` is the hash of the tree's top block.
    pub fn root_hash_matches(&self, top_block: &[u8], root_hash: &[u8]) -> bool {
        self.algorithm.hash(&self.salt, top_block) == root_hash
    }
}

/// A root hash written as hex (a `.roothash` file, the `rootHash` of a signature), trimmed.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    if t.len() > 128 {
        return Err(format!("is not a root hash: {} characters", t.len()));
    }
    unhex(t).map_err(|e| format!("is not a hex root hash: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn superblock(data_blocks: u64, salt: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    #[test]
    fn parses_and_builds_the_table() {
        let sb = parse_superblock(&superblock(244, &[0xab, 0xcd])).unwrap();
        assert_eq!(sb.data_bytes(), Some(244 * 4096));
        // 244 digests fit in 2 blocks, those in 1: three blocks after the superblock.
        assert_eq!(sb.hash_bytes(), Some(4 * 4096));
        assert_eq!(sb.table("7:1", "7:2", &[0x12, 0x34]), "1 7:1 7:2 4096 4096 244 1 sha256 1234 abcd");
        let unsalted = parse_superblock(&superblock(1, &[])).unwrap();
        assert_eq!(unsalted.hash_bytes(), Some(4096));
        assert_eq!(unsalted.top_block(), TopBlock::Data { len: 4096 });
        assert_eq!(sb.top_block(), TopBlock::Hash { offset: 4096, len: 4096 });
        assert!(unsalted.table("a", "b", &[1]).ends_with(" 01 -"));
    }

    #[test]
    fn wrong_superblocks_are_named() {
        assert_eq!(parse_superblock(&[0u8; 512]).unwrap_err(), "has no verity superblock (bad magic)");
        let mut v2 = superblock(1, &[]);
        v2[8] = 2;
        assert!(parse_superblock(&v2).unwrap_err().contains("version 2"));
        let mut odd = superblock(1, &[]);
        odd[64..68].copy_from_slice(&1000u32.to_le_bytes());
        assert!(parse_superblock(&odd).unwrap_err().contains("invalid block sizes (data 1000"));
        let mut salty = superblock(1, &[]);
        salty[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert!(parse_superblock(&salty).unwrap_err().contains("300-byte salt"));
        assert_eq!(parse_superblock(b"verity").unwrap_err(), "has a truncated verity superblock");
    }

    #[test]
    fn root_hash_is_salt_then_top_block() {
        let sb = parse_superblock(&superblock(1, b"salt")).unwrap();
        let block = vec![7u8; 4096];
        let mut h = Sha256::new();
        h.update(b"salt");
        h.update(&block);
        let good = h.finalize()[..].to_vec();
        assert!(sb.root_hash_matches(&block, &good));
        assert!(!sb.root_hash_matches(&block[..4095], &good));
    }

    #[test]
    fn sha512_is_checked_like_sha256_and_others_are_refused_by_name() {
        let mut b = superblock(244, b"salt");
        b[32..38].copy_from_slice(b"sha512");
        let sb = parse_superblock(&b).unwrap();
        assert_eq!(sb.algorithm, Algorithm::Sha512);
        // 64 digests of 64 bytes per block: 244 take 4 blocks, those 1; five after the superblock.
        assert_eq!(sb.hash_bytes(), Some(6 * 4096));
        let block = vec![7u8; 4096];
        let good = Sha512::new().chain_update(b"salt").chain_update(&block).finalize().to_vec();
        assert!(sb.root_hash_matches(&block, &good));
        assert!(!sb.root_hash_matches(&block, &good[..32]));
        assert!(sb.table("a", "b", &good).contains(" sha512 "));
        for (name, want) in [
            (&b"sha1"[..], "the hash algorithm sha1, which is not accepted (sha256 and sha512 are)"),
            (b"md5", "the hash algorithm md5, which is not accepted"),
            (b"", "an invalid hash algorithm \"\""),
            (b"sha\n256", "an invalid hash algorithm \"sha\\n256\""),
        ] {
            let mut b = superblock(1, &[]);
            b[32..64].fill(0);
            b[32..32 + name.len()].copy_from_slice(name);
            let e = parse_superblock(&b).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn hex_root_hashes() {
        assert_eq!(parse_hex("0a0B\n").unwrap(), vec![10, 11]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("").is_err());
    }
}
