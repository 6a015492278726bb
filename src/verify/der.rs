//! DER, the encoding of X.509 certificates and PKCS#7 signatures: a small walker over the few
//! fixed structures we read, and object identifiers as people read them.
//!
//! We do not use generic ASN.1 decoders (cms, x509-cert): the initrd binary is ~100 KiB smaller,
//! and since names, serials and signed attributes stay raw bytes, nothing is re-encoded or sorted
//! (the generic decoders sort every SET OF, which a crafted 60 KB signature turned into 11 s of
//! CPU). Every read is bounded by the bytes given and never panics.

use super::hex;

// DER tags.
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
/// [n] constructed and primitive context-specific tags.
pub const fn ctx(n: u8) -> u8 {
    0xa0 | n
}
pub const fn ctx_prim(n: u8) -> u8 {
    0x80 | n
}

/// A reader over the content of one DER value: a sequence of elements, read in order.
#[derive(Clone, Copy)]
pub struct Der<'a> {
    rest: &'a [u8],
}

/// One element: its tag, its content, and its whole encoding.
#[derive(Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub body: &'a [u8],
    pub raw: &'a [u8],
}

impl<'a> Der<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// What has not been read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, whatever it is.
    pub fn any(&mut self, what: &str) -> Result<Tlv<'a>, String> {
        let b = self.rest;
        let (&tag, &first) = match (b.first(), b.get(1)) {
            (Some(t), Some(l)) => (t, l),
            _ => return Err(format!("{what} is missing (the data ends)")),
        };
        if tag & 0x1f == 0x1f {
            return Err(format!("{what} has a multi-byte tag, which PKCS#7 does not use"));
        }
        let (len, header) = match first {
            0..=0x7f => (first as usize, 2),
            0x80 => return Err(format!("{what} has an indefinite length (BER, not DER)")),
            0x81..=0x84 => {
                let n = (first & 0x7f) as usize;
                let bytes = b.get(2..2 + n).ok_or_else(|| format!("{what} is truncated"))?;
                (bytes.iter().fold(0usize, |acc, &x| acc << 8 | x as usize), 2 + n)
            }
            _ => return Err(format!("{what} has an impossible length")),
        };
        let end = header.checked_add(len).filter(|&e| e <= b.len()).ok_or_else(|| format!("{what} is truncated"))?;
        self.rest = &b[end..];
        Ok(Tlv { tag, body: &b[header..end], raw: &b[..end] })
    }

    /// The next element, which must have this tag; returns its content.
    pub fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.peek_tag() {
            Some(t) if t != tag => Err(format!("{what} is missing (found tag 0x{t:02x} instead of 0x{tag:02x})")),
            _ => Ok(self.any(what)?.body),
        }
    }

    /// The next element if it has this tag.
    pub fn optional(&mut self, tag: u8, what: &str) -> Result<Option<Tlv<'a>>, String> {
        if self.peek_tag() == Some(tag) {
            self.any(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An AlgorithmIdentifier: its OID and the raw parameters, if any.
    pub fn algorithm(&mut self, what: &str) -> Result<(&'a [u8], Option<Tlv<'a>>), String> {
        let mut alg = Der::new(self.expect(SEQUENCE, what)?);
        let oid = alg.expect(OID, what)?;
        let params = if alg.is_empty() { None } else { Some(alg.any(what)?) };
        Ok((oid, params))
    }
}

/// An unsigned INTEGER's magnitude: without the leading zero bytes of its encoding.
pub fn magnitude(int: &[u8]) -> &[u8] {
    let zeros = int.iter().take_while(|&&b| b == 0).count();
    &int[zeros..]
}

/// An OID's DER content in dotted form (or hex, if it is not a valid OID).
pub fn oid_dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for (i, &b) in oid.iter().enumerate() {
        if acc > u64::MAX >> 7 || (acc == 0 && b == 0x80) {
            return format!("#{}", hex(oid));
        }
        acc = acc << 7 | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        } else if i == oid.len() - 1 {
            return format!("#{}", hex(oid));
        }
    }
    if arcs.is_empty() {
        return "#".into();
    }
    arcs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(".")
}
/// Names for the OIDs a user is likely to meet in a message; the rest print dotted.
pub fn oid_name(oid: &[u8]) -> String {
    let dotted = oid_dotted(oid);
    let name = match dotted.as_str() {
        "1.2.840.113549.1.7.1" => "data",
        "1.2.840.113549.1.7.2" => "signedData",
        "1.2.840.113549.1.7.3" => "envelopedData",
        "1.3.14.3.2.26" => "sha1",
        "1.2.840.113549.2.5" => "md5",
        "2.16.840.1.101.3.4.2.4" => "sha224",
        "2.16.840.1.101.3.4.2.1" => "sha256",
        "2.16.840.1.101.3.4.2.2" => "sha384",
        "2.16.840.1.101.3.4.2.3" => "sha512",
        "1.2.840.113549.1.1.1" => "rsaEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.10045.2.1" => "id-ecPublicKey",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.3.1.7" => "P-256",
        "1.3.132.0.34" => "P-384",
        "1.3.132.0.35" => "P-521",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.1" => "DSA",
        _ => return dotted,
    };
    format!("{dotted} ({name})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_print_dotted() {
        assert_eq!(oid_dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]), "1.2.840.113549.1.7.2");
        assert_eq!(oid_dotted(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]), "2.16.840.1.101.3.4.2.1");
        assert_eq!(oid_dotted(&[0x55, 0x1d, 0x0e]), "2.5.29.14");
        assert_eq!(oid_name(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]), "1.2.840.10045.3.1.7 (P-256)");
        assert_eq!(oid_dotted(&[0x2a, 0x86]), "#2a86");
        assert_eq!(oid_dotted(&[0xff; 12]), "#ffffffffffffffffffffffff");
        assert_eq!(oid_dotted(&[]), "#");
    }
}
