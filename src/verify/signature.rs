//! PKCS#7 signatures of verity root hashes, checked against trusted X.509 certificates.
//!
//! Pure: bytes in, a decision out. The signature partition of a DDI is untrusted input, so every
//! parser here is bounded and never panics (fuzzed by fuzz/fuzz_targets/signature.rs).
//!
//! Semantics follow systemd's userspace check: the signer must be one of the trusted
//! certificates (certificates carried inside the signature are never trusted), every signerInfo
//! must verify, and no certificate chain is built.
//!
//! DER is read by a small walker over the few fixed structures we need rather than by generic
//! ASN.1 decoders (cms, x509-cert): the initrd binary is ~100 KiB smaller, and since names,
//! serials and signed attributes stay raw bytes, nothing is re-encoded or sorted (the generic
//! decoders sort every SET OF, which a crafted 60 KB signature turned into 11 s of CPU).

use std::fmt;

use super::{hex, unhex};

/// The largest verity signature partition we read, as systemd.
pub const MAX_PARTITION: usize = 4 << 20;
/// The largest JSON text in it. Real ones are a few KiB.
pub const MAX_JSON: usize = 1 << 20;
/// The largest PKCS#7 blob. The kernel takes at most 32 KiB; a signer certificate is ~1-2 KiB.
pub const MAX_PKCS7: usize = 64 << 10;
/// JSON nesting we follow before giving up.
const MAX_DEPTH: usize = 32;

// DER tags.
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// [n] constructed and primitive context-specific tags.
const fn ctx(n: u8) -> u8 {
    0xa0 | n
}
const fn ctx_prim(n: u8) -> u8 {
    0x80 | n
}

// OIDs, as the bytes of their DER content.
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]; // 1.2.840.113549.1.7.2
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04]; // 1.2.840.113549.1.9.4
const OID_SKI: &[u8] = &[0x55, 0x1d, 0x0e]; // 2.5.29.14
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]; // 2.16.840.1.101.3.4.2.1
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]; // 1.2.840.113549.1.1.1
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_EC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]; // 1.2.840.10045.4.3.2
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

/// A reader over the content of one DER value: a sequence of elements, read in order.
#[derive(Clone, Copy)]
struct Der<'a> {
    rest: &'a [u8],
}

/// One element: its tag, its content, and its whole encoding.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, whatever it is.
    fn any(&mut self, what: &str) -> Result<Tlv<'a>, String> {
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
    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.peek_tag() {
            Some(t) if t != tag => Err(format!("{what} is missing (found tag 0x{t:02x} instead of 0x{tag:02x})")),
            _ => Ok(self.any(what)?.body),
        }
    }

    /// The next element if it has this tag.
    fn optional(&mut self, tag: u8, what: &str) -> Result<Option<Tlv<'a>>, String> {
        if self.peek_tag() == Some(tag) {
            self.any(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An AlgorithmIdentifier: its OID and the raw parameters, if any.
    fn algorithm(&mut self, what: &str) -> Result<(&'a [u8], Option<Tlv<'a>>), String> {
        let mut alg = Der::new(self.expect(SEQUENCE, what)?);
        let oid = alg.expect(OID, what)?;
        let params = if alg.is_empty() { None } else { Some(alg.any(what)?) };
        Ok((oid, params))
    }
}

/// An unsigned INTEGER's magnitude: without the leading zero bytes of its encoding.
fn magnitude(int: &[u8]) -> &[u8] {
    let zeros = int.iter().take_while(|&&b| b == 0).count();
    &int[zeros..]
}

/// An OID's DER content in dotted form (or hex, if it is not a valid OID).
fn oid_dotted(oid: &[u8]) -> String {
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
fn oid_name(oid: &[u8]) -> String {
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

/// A serial as people read it: hex, without the sign byte DER adds.
fn serial_hex(serial: &[u8]) -> String {
    match magnitude(serial) {
        [] => "00".into(),
        m => hex(m),
    }
}

/// A distinguished name (the content of its SEQUENCE) in RFC 4514 order, most specific first;
/// bounded, so that a hostile certificate cannot flood the journal.
fn name_string(name: &[u8]) -> String {
    const MAX: usize = 200;
    let mut rdns = Vec::new();
    let mut seq = Der::new(name);
    while let Ok(rdn) = seq.expect(SET, "RDN") {
        rdns.push(rdn);
    }
    if !seq.is_empty() {
        return format!("(unreadable name {})", hex(name.get(..32).unwrap_or(name)));
    }
    let mut out = String::new();
    for rdn in rdns.iter().rev() {
        let mut set = Der::new(rdn);
        let mut first = true;
        while let Ok(atv) = set.expect(SEQUENCE, "attribute") {
            let mut atv = Der::new(atv);
            let (Ok(oid), Ok(value)) = (atv.expect(OID, "type"), atv.any("value")) else { break };
            if !out.is_empty() {
                out.push_str(if first { ", " } else { "+" });
            }
            first = false;
            let dotted = oid_dotted(oid);
            out.push_str(match dotted.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.4" => "SN",
                "2.5.4.5" => "serialNumber",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.9" => "street",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.12" => "title",
                "2.5.4.42" => "GN",
                "1.2.840.113549.1.9.1" => "emailAddress",
                "0.9.2342.19200300.100.1.1" => "UID",
                "0.9.2342.19200300.100.1.25" => "DC",
                other => other,
            });
            out.push('=');
            let raw = value.body;
            let text = match value.tag {
                // UTF8String, PrintableString, TeletexString, IA5String, VisibleString.
                0x0c | 0x13 | 0x14 | 0x16 | 0x1a => Some(String::from_utf8_lossy(raw).into_owned()),
                // BMPString: UTF-16BE.
                0x1e if raw.len() % 2 == 0 => {
                    let units = raw.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    Some(char::decode_utf16(units).map(|c| c.unwrap_or('\u{fffd}')).collect())
                }
                _ => None,
            };
            match text {
                Some(t) => {
                    for (j, c) in t.chars().enumerate() {
                        match c {
                            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                                out.push('\\');
                                out.push(c);
                            }
                            '#' | ' ' if j == 0 => {
                                out.push('\\');
                                out.push(c);
                            }
                            c if c.is_control() => out.push_str(&format!("\\{:02x}", c as u32 & 0xff)),
                            c => out.push(c),
                        }
                    }
                }
                None => {
                    out.push('#');
                    out.push_str(&hex(value.raw.get(..64).unwrap_or(value.raw)));
                }
            }
            if out.len() > MAX {
                let mut cut = MAX;
                while !out.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.truncate(cut);
                out.push('…');
                return out;
            }
        }
    }
    if out.is_empty() {
        out.push_str("(empty name)");
    }
    out
}

/// The parts of an X.509 certificate we use, borrowed from its DER.
struct Cert<'a> {
    serial: &'a [u8],
    /// Names as the content of their SEQUENCE, compared byte for byte: signers copy the issuer
    /// verbatim from the certificate.
    issuer: &'a [u8],
    subject: &'a [u8],
    key_alg: &'a [u8],
    key_params: Option<Tlv<'a>>,
    key: &'a [u8],
    ski: Option<&'a [u8]>,
}

/// Reads one certificate from the start of `der`; what follows it is returned too.
fn read_cert(der: &[u8]) -> Result<(Cert<'_>, &[u8]), String> {
    let mut outer = Der::new(der);
    let mut cert = Der::new(outer.expect(SEQUENCE, "the certificate")?);
    let mut tbs = Der::new(cert.expect(SEQUENCE, "the certificate's TBSCertificate")?);
    tbs.optional(ctx(0), "version")?;
    let serial = tbs.expect(INTEGER, "the serial number")?;
    tbs.expect(SEQUENCE, "the signature algorithm")?;
    let issuer = tbs.expect(SEQUENCE, "the issuer")?;
    tbs.expect(SEQUENCE, "the validity")?;
    let subject = tbs.expect(SEQUENCE, "the subject")?;
    let mut spki = Der::new(tbs.expect(SEQUENCE, "the public key")?);
    let (key_alg, key_params) = spki.algorithm("the public key algorithm")?;
    let key = match spki.expect(BIT_STRING, "the public key")? {
        [0, key @ ..] => key,
        _ => return Err("the public key is not a whole number of bytes".into()),
    };
    tbs.optional(ctx_prim(1), "issuerUniqueID")?;
    tbs.optional(ctx_prim(2), "subjectUniqueID")?;
    let mut ski = None;
    if let Some(exts) = tbs.optional(ctx(3), "extensions")? {
        let mut list = Der::new(Der::new(exts.body).expect(SEQUENCE, "the extensions")?);
        while !list.is_empty() {
            let mut ext = Der::new(list.expect(SEQUENCE, "an extension")?);
            let id = ext.expect(OID, "an extension's OID")?;
            ext.optional(0x01, "an extension's critical flag")?;
            let value = ext.expect(OCTET_STRING, "an extension's value")?;
            if id == OID_SKI {
                ski = Some(Der::new(value).expect(OCTET_STRING, "the subject key identifier")?);
            }
        }
    }
    Ok((Cert { serial, issuer, subject, key_alg, key_params, key, ski }, outer.rest))
}

#[derive(Clone, Debug)]
enum Key {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    /// A key we cannot check signatures with; the text says what it is.
    Unsupported(String),
}

/// A trusted certificate, parsed once.
#[derive(Clone, Debug)]
pub struct TrustedCert {
    /// The subject, as "CN=…, O=…".
    pub subject: String,
    /// Where it came from (a path), for messages.
    pub source: String,
    issuer: Vec<u8>,
    serial: Vec<u8>,
    ski: Option<Vec<u8>>,
    key: Key,
}

impl TrustedCert {
    fn new(cert: &Cert<'_>, source: &str) -> Result<TrustedCert, String> {
        let subject = name_string(cert.subject);
        let key = if cert.key_alg == OID_RSA {
            let unreadable = |e: String| format!("{source}: the RSA key of {subject} is unreadable: {e}");
            let mut k = Der::new(Der::new(cert.key).expect(SEQUENCE, "the RSA key").map_err(unreadable)?);
            let n = k.expect(INTEGER, "the modulus").map_err(unreadable)?;
            let e = k.expect(INTEGER, "the exponent").map_err(unreadable)?;
            let (n, e) = (rsa::BigUint::from_bytes_be(magnitude(n)), rsa::BigUint::from_bytes_be(magnitude(e)));
            // 8192 bits: larger than anyone signs with, small enough to verify fast.
            Key::Rsa(
                rsa::RsaPublicKey::new_with_max_size(n, e, 8192)
                    .map_err(|e| format!("{source}: the RSA key of {subject} is unusable: {e}"))?,
            )
        } else if cert.key_alg == OID_EC_KEY {
            match cert.key_params.filter(|p| p.tag == OID).map(|p| p.body) {
                Some(OID_P256) => Key::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(cert.key)
                        .map_err(|_| format!("{source}: the P-256 key of {subject} is not a valid curve point"))?,
                ),
                Some(curve) => Key::Unsupported(format!("an elliptic curve key on curve {}", oid_name(curve))),
                None => Key::Unsupported("an elliptic curve key on an unnamed curve".into()),
            }
        } else {
            Key::Unsupported(format!("a {} key", oid_name(cert.key_alg)))
        };
        Ok(TrustedCert {
            subject,
            source: source.to_string(),
            issuer: cert.issuer.to_vec(),
            serial: cert.serial.to_vec(),
            ski: cert.ski.map(<[u8]>::to_vec),
            key,
        })
    }

    fn matches(&self, sid: &SignerId<'_>) -> bool {
        match *sid {
            SignerId::IssuerSerial { issuer, serial } => serial == self.serial && issuer == self.issuer,
            SignerId::KeyId(id) => self.ski.as_deref() == Some(id),
        }
    }
}

/// Certificates from a file: PEM (every CERTIFICATE block in it) or a single DER certificate.
/// `source` is a path for messages.
pub fn parse_certificates(bytes: &[u8], source: &str) -> Result<Vec<TrustedCert>, String> {
    if bytes.len() > MAX_PARTITION {
        return Err(format!("{source}: {} bytes is too large for a certificate file", bytes.len()));
    }
    if bytes.first() == Some(&SEQUENCE) {
        let cert = match read_cert(bytes) {
            Ok((cert, [])) => cert,
            Ok(_) => return Err(format!("{source}: not a DER X.509 certificate: data follows it")),
            Err(e) => return Err(format!("{source}: not a DER X.509 certificate: {e}")),
        };
        return Ok(vec![TrustedCert::new(&cert, source)?]);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return Err(format!("{source}: neither PEM nor DER (not text at byte {})", e.valid_up_to())),
    };
    let mut certs = Vec::new();
    let mut rest = text;
    let mut index = 0;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin + 11..];
        let Some(label_end) = after.find("-----") else { break };
        let label = &after[..label_end];
        let body_and_rest = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_and_rest.find(&end_marker) else {
            return Err(format!("{source}: PEM block \"{}\" has no END line", label.escape_debug()));
        };
        let body = &body_and_rest[..body_end];
        rest = &body_and_rest[body_end + end_marker.len()..];
        // OpenSSL reads these three labels as certificates; a file may also hold keys, skip those.
        if !matches!(label, "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE") {
            continue;
        }
        index += 1;
        let compact: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let der = base64_decode(&compact).map_err(|e| format!("{source}: certificate {index}: base64 {e}"))?;
        // A TRUSTED CERTIFICATE is the certificate followed by OpenSSL trust settings.
        let cert = match read_cert(&der) {
            Ok((cert, [])) => cert,
            Ok((cert, _)) if label == "TRUSTED CERTIFICATE" => cert,
            Ok(_) => return Err(format!("{source}: certificate {index} is not valid X.509: data follows it")),
            Err(e) => return Err(format!("{source}: certificate {index} is not valid X.509: {e}")),
        };
        certs.push(TrustedCert::new(&cert, source)?);
    }
    if certs.is_empty() {
        return Err(format!("{source}: holds no certificate (expected PEM \"BEGIN CERTIFICATE\" or DER)"));
    }
    Ok(certs)
}

/// Why a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Not decodable: bad DER, base64 or JSON.
    Malformed(String),
    /// Decodable, but made by no trusted certificate.
    UnknownSigner(String),
    /// Made by a trusted certificate, but it does not verify over this content (or cannot be checked).
    BadSignature(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Malformed(m) => write!(f, "malformed signature: {m}"),
            Failure::UnknownSigner(m) => write!(f, "unknown signer: {m}"),
            Failure::BadSignature(m) => write!(f, "bad signature: {m}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: &[u8]) -> Option<Hash> {
        match oid {
            OID_SHA256 => Some(Hash::Sha256),
            OID_SHA384 => Some(Hash::Sha384),
            OID_SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }
}

/// How a signerInfo names its certificate.
enum SignerId<'a> {
    IssuerSerial { issuer: &'a [u8], serial: &'a [u8] },
    KeyId(&'a [u8]),
}

struct Signer<'a> {
    id: SignerId<'a>,
    digest_alg: &'a [u8],
    /// The content of the [0] IMPLICIT SET OF Attribute, if present.
    signed_attrs: Option<&'a [u8]>,
    signature_alg: &'a [u8],
    signature: &'a [u8],
}

struct SignedData<'a> {
    /// The content of the [0] certificates, never trusted: only used to name an unknown signer.
    certificates: Option<&'a [u8]>,
    signers: Vec<Signer<'a>>,
}

fn read_signed_data(der: &[u8]) -> Result<SignedData<'_>, Failure> {
    read_signed_data_inner(der).map_err(|e| Failure::Malformed(format!("the PKCS#7 data is not valid: {e}")))
}

fn read_signed_data_inner(der: &[u8]) -> Result<SignedData<'_>, String> {
    // Like OpenSSL's d2i_PKCS7, bytes after the first value are ignored.
    let mut ci = Der::new(Der::new(der).expect(SEQUENCE, "the ContentInfo")?);
    let content_type = ci.expect(OID, "the content type")?;
    if content_type != OID_SIGNED_DATA {
        return Err(format!("its content is {}, not signedData", oid_name(content_type)));
    }
    let mut sd = Der::new(Der::new(ci.expect(ctx(0), "the content")?).expect(SEQUENCE, "the signedData")?);
    sd.expect(INTEGER, "the version")?;
    sd.expect(SET, "the digest algorithms")?;
    sd.expect(SEQUENCE, "the encapsulated content info")?;
    let certificates = sd.optional(ctx(0), "the certificates")?.map(|t| t.body);
    sd.optional(ctx(1), "the CRLs")?;
    let mut infos = Der::new(sd.expect(SET, "the signerInfos")?);
    let mut signers = Vec::new();
    while !infos.is_empty() {
        let mut si = Der::new(infos.expect(SEQUENCE, "a signerInfo")?);
        si.expect(INTEGER, "a signerInfo's version")?;
        let id = match si.peek_tag() {
            Some(SEQUENCE) => {
                let mut is = Der::new(si.expect(SEQUENCE, "the issuer and serial number")?);
                let issuer = is.expect(SEQUENCE, "the signer's issuer")?;
                let serial = is.expect(INTEGER, "the signer's serial number")?;
                SignerId::IssuerSerial { issuer, serial }
            }
            Some(t) if t == ctx_prim(0) => SignerId::KeyId(si.any("the subject key identifier")?.body),
            _ => return Err("a signerInfo names its signer neither by issuer and serial nor by key identifier".into()),
        };
        let (digest_alg, _) = si.algorithm("a signerInfo's digest algorithm")?;
        let signed_attrs = si.optional(ctx(0), "the signed attributes")?.map(|t| t.body);
        let (signature_alg, _) = si.algorithm("a signerInfo's signature algorithm")?;
        let signature = si.expect(OCTET_STRING, "a signerInfo's signature")?;
        signers.push(Signer { id, digest_alg, signed_attrs, signature_alg, signature });
    }
    if signers.is_empty() {
        return Err("it has no signerInfo".into());
    }
    Ok(SignedData { certificates, signers })
}

/// Check a detached PKCS#7/CMS SignedData (DER) over `content` (the root hash in lowercase hex,
/// no newline). Every signer must be a trusted certificate and verify, as with OpenSSL's
/// PKCS7_verify. Returns the signer's subject (signers joined by " and ").
pub fn check(pkcs7_der: &[u8], content: &[u8], trusted: &[TrustedCert]) -> Result<String, Failure> {
    // Like systemd (validate_signature_userspace() in dissect-image.c: PKCS7_verify with PKCS7_NOVERIFY), we
    // never check validity periods: the initrd's clock may be wrong, and the kernel keyring path ignores it too.
    if pkcs7_der.len() > MAX_PKCS7 {
        return Err(Failure::Malformed(format!(
            "the signature is {} bytes, more than the {} allowed",
            pkcs7_der.len(),
            MAX_PKCS7
        )));
    }
    let sd = read_signed_data(pkcs7_der)?;
    let mut subjects = Vec::new();
    for si in &sd.signers {
        let candidates: Vec<&TrustedCert> = trusted.iter().filter(|t| t.matches(&si.id)).collect();
        let Some(first) = candidates.first() else {
            return Err(Failure::UnknownSigner(unknown_signer(&si.id, sd.certificates, trusted)));
        };
        // Two trusted files may hold certificates with the same issuer and serial: any may verify.
        let mut failure = None;
        for cert in &candidates {
            match verify_one(si, content, cert) {
                Ok(()) => {
                    failure = None;
                    subjects.push(cert.subject.clone());
                    break;
                }
                Err(f) => failure = failure.or(Some(f)),
            }
        }
        if let Some(f) = failure {
            return Err(Failure::BadSignature(format!("the signature by {} ({}) {f}", first.subject, first.source)));
        }
    }
    Ok(subjects.join(" and "))
}

/// The messageDigest attribute's value, from the content of the signed attributes' SET.
fn message_digest(attrs: &[u8]) -> Result<&[u8], String> {
    let mut found = None;
    let mut list = Der::new(attrs);
    while !list.is_empty() {
        let mut attr = Der::new(list.expect(SEQUENCE, "a signed attribute")?);
        if attr.expect(OID, "a signed attribute's type")? != OID_MESSAGE_DIGEST {
            continue;
        }
        let mut values = Der::new(attr.expect(SET, "the messageDigest values")?);
        let digest = values.expect(OCTET_STRING, "the messageDigest")?;
        if found.is_some() || !values.is_empty() {
            return Err("has more than one messageDigest".into());
        }
        found = Some(digest);
    }
    found.ok_or_else(|| "has signed attributes without a messageDigest".into())
}

/// Checks one signerInfo against one certificate; the error completes "the signature by X …".
fn verify_one(si: &Signer<'_>, content: &[u8], cert: &TrustedCert) -> Result<(), String> {
    let Some(hash) = Hash::from_oid(si.digest_alg) else {
        return Err(format!(
            "uses the digest algorithm {}, which is not supported (sha256, sha384 and sha512 are)",
            oid_name(si.digest_alg)
        ));
    };
    // Without signed attributes the signature covers the content; with them, it covers their DER
    // encoding as a SET OF (RFC 5652 5.4), and the messageDigest attribute binds the content.
    let attrs_der;
    let signed: &[u8] = match si.signed_attrs {
        None => content,
        Some(attrs) => {
            let md = message_digest(attrs).map_err(|e| format!("is not valid: its signed attributes {e}"))?;
            if md != hash.digest(content).as_slice() {
                return Err(format!(
                    "was made over a different root hash: its {} message digest does not match this one",
                    hash.name()
                ));
            }
            attrs_der = der_set(attrs);
            &attrs_der
        }
    };
    let digest = hash.digest(signed);
    let alg = si.signature_alg;
    let implied = match alg {
        OID_RSA_SHA256 | OID_ECDSA_SHA256 => Some(Hash::Sha256),
        OID_RSA_SHA384 | OID_ECDSA_SHA384 => Some(Hash::Sha384),
        OID_RSA_SHA512 | OID_ECDSA_SHA512 => Some(Hash::Sha512),
        _ => None,
    };
    if implied.is_some_and(|h| h != hash) {
        return Err(format!("names the signature algorithm {} with the digest {}", oid_name(alg), hash.name()));
    }
    let is_rsa = matches!(alg, OID_RSA | OID_RSA_SHA256 | OID_RSA_SHA384 | OID_RSA_SHA512);
    let is_ecdsa = matches!(alg, OID_EC_KEY | OID_ECDSA_SHA256 | OID_ECDSA_SHA384 | OID_ECDSA_SHA512);
    let ok = match &cert.key {
        Key::Unsupported(what) => return Err(format!("cannot be checked: the certificate holds {what}")),
        Key::Rsa(key) if is_rsa => {
            let scheme = match hash {
                Hash::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                Hash::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                Hash::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            key.verify(scheme, &digest, si.signature).is_ok()
        }
        Key::P256(key) if is_ecdsa => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            ecdsa_signature(si.signature).is_some_and(|s| key.verify_prehash(&digest, &s).is_ok())
        }
        Key::Rsa(_) | Key::P256(_) if !is_rsa && !is_ecdsa => {
            return Err(format!(
                "uses the signature algorithm {}, which is not supported (RSA PKCS#1 v1.5 and ECDSA P-256 are)",
                oid_name(alg)
            ))
        }
        Key::Rsa(_) => return Err("is an ECDSA signature, but the certificate holds an RSA key".into()),
        Key::P256(_) => return Err("is an RSA signature, but the certificate holds a P-256 key".into()),
    };
    if ok {
        Ok(())
    } else if si.signed_attrs.is_some() {
        Err("does not verify: its signed attributes were altered, or it was made with another key".into())
    } else {
        Err("does not verify: it was made over a different root hash, or altered".into())
    }
}

/// `content` as the DER of a SET: the tag and length the [0] IMPLICIT encoding replaced.
fn der_set(content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![SET];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// An ECDSA-Sig-Value (SEQUENCE of r and s) as a P-256 signature.
fn ecdsa_signature(der: &[u8]) -> Option<p256::ecdsa::Signature> {
    let mut outer = Der::new(der);
    let mut seq = Der::new(outer.expect(SEQUENCE, "").ok()?);
    let (r, s) = (magnitude(seq.expect(INTEGER, "").ok()?), magnitude(seq.expect(INTEGER, "").ok()?));
    if r.len() > 32 || s.len() > 32 || !seq.is_empty() || !outer.is_empty() {
        return None;
    }
    let mut raw = [0u8; 64];
    raw[32 - r.len()..32].copy_from_slice(r);
    raw[64 - s.len()..].copy_from_slice(s);
    p256::ecdsa::Signature::from_slice(&raw).ok()
}

/// Names the signer that no trusted certificate matches: by the subject of the certificate the
/// signature carries (informative only, never trusted), else by what the signerInfo says.
fn unknown_signer(id: &SignerId<'_>, certificates: Option<&[u8]>, trusted: &[TrustedCert]) -> String {
    let mut carried = Der::new(certificates.unwrap_or_default());
    let mut own = None;
    while let Ok(tlv) = carried.any("a certificate") {
        let Ok((c, _)) = read_cert(tlv.raw) else { continue };
        let is_own = match *id {
            SignerId::IssuerSerial { issuer, serial } => c.serial == serial && c.issuer == issuer,
            SignerId::KeyId(key_id) => c.ski == Some(key_id),
        };
        if is_own {
            own = Some(name_string(c.subject));
            break;
        }
    }
    let who = match (id, own) {
        (SignerId::IssuerSerial { serial, .. }, Some(subject)) => format!("{subject} (serial {})", serial_hex(serial)),
        (SignerId::IssuerSerial { issuer, serial }, None) => {
            format!("a certificate issued by {} with serial {}", name_string(issuer), serial_hex(serial))
        }
        (SignerId::KeyId(key_id), Some(subject)) => format!("{subject} (subject key identifier {})", hex(key_id)),
        (SignerId::KeyId(key_id), None) => format!("the certificate with subject key identifier {}", hex(key_id)),
    };
    let among = match trusted.len() {
        0 => return format!("the signature was made by {who}, and no certificate is trusted"),
        1 => "the 1 trusted certificate".to_string(),
        n => format!("the {n} trusted certificates"),
    };
    let mut list: Vec<String> = trusted.iter().take(4).map(|t| format!("{} from {}", t.subject, t.source)).collect();
    if trusted.len() > 4 {
        list.push(format!("{} more", trusted.len() - 4));
    }
    format!("the signature was made by {who}, which is not among {among} ({})", list.join("; "))
}

/// The verity signature partition of a DDI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureBlob {
    pub root_hash: Vec<u8>,
    /// DER PKCS#7.
    pub signature: Vec<u8>,
}

/// Parses the verity signature partition: JSON `{"rootHash":"<hex>","signature":"<base64 DER>"}`,
/// possibly with other keys, then NUL padding to the partition's end (as systemd, data after the
/// first NUL must be NULs too).
pub fn parse_signature_json(bytes: &[u8]) -> Result<SignatureBlob, String> {
    if bytes.len() > MAX_PARTITION {
        return Err(format!(
            "is {} bytes, more than the {} a signature partition may have",
            bytes.len(),
            MAX_PARTITION
        ));
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    if let Some(at) = bytes[end..].iter().position(|&b| b != 0) {
        return Err(format!("has data after its NUL padding (at byte {})", end + at));
    }
    let text = &bytes[..end];
    if text.len() > MAX_JSON {
        return Err(format!("holds {} bytes of JSON, more than the {} allowed", text.len(), MAX_JSON));
    }
    if let Err(e) = std::str::from_utf8(text) {
        return Err(format!("is not UTF-8 text (at byte {})", e.valid_up_to()));
    }
    let mut p = Json { s: text, pos: 0 };
    p.ws();
    if p.pos == text.len() {
        return Err("is empty".into());
    }
    let (mut root_hash, mut signature) = (None, None);
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.pos += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let slot = match key.as_str() {
                "rootHash" => Some(&mut root_hash),
                "signature" => Some(&mut signature),
                _ => None,
            };
            match slot {
                Some(slot) => {
                    if slot.is_some() {
                        return Err(format!("has the key \"{key}\" twice"));
                    }
                    if p.peek() != Some(b'"') {
                        return Err(format!("has a \"{key}\" that is not a string"));
                    }
                    *slot = Some(p.string()?);
                }
                None => p.value(1)?,
            }
            p.ws();
            match p.peek() {
                Some(b',') => p.pos += 1,
                Some(b'}') => {
                    p.pos += 1;
                    break;
                }
                _ => return Err(p.error("',' or '}'")),
            }
        }
    }
    p.ws();
    if p.pos != text.len() {
        return Err(format!("is not valid JSON: data after the object at byte {}", p.pos));
    }
    let root_hash = root_hash.ok_or("lacks the \"rootHash\" key")?;
    let signature = signature.ok_or("lacks the \"signature\" key")?;
    let root_hash = unhex(&root_hash).map_err(|e| format!("has a rootHash that is not hex: {e}"))?;
    let signature =
        base64_decode(signature.as_bytes()).map_err(|e| format!("has a signature that is not base64: {e}"))?;
    Ok(SignatureBlob { root_hash, signature })
}

/// A strict, bounded JSON reader: just enough to pick two strings out of an object.
struct Json<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn error(&self, expected: &str) -> String {
        match self.peek() {
            Some(c) if c.is_ascii_graphic() => {
                format!("is not valid JSON: expected {expected} at byte {}, found '{}'", self.pos, c as char)
            }
            Some(c) => format!("is not valid JSON: expected {expected} at byte {}, found byte 0x{c:02x}", self.pos),
            None => format!("is not valid JSON: expected {expected} at byte {}, found the end", self.pos),
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("'{}'", c as char)))
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self.peek().and_then(|c| (c as char).to_digit(16)).ok_or_else(|| self.error("a hex digit"))?;
            self.pos += 1;
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let start = self.pos;
            match self.next() {
                None => return Err(format!("is not valid JSON: a string is not closed at byte {start}")),
                Some(b'"') => break,
                Some(c) if c < 0x20 => {
                    return Err(format!("is not valid JSON: control byte 0x{c:02x} in a string at byte {start}"))
                }
                Some(b'\\') => {
                    let c = match self.next() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                                    return Err(format!(
                                        "is not valid JSON: lone surrogate \\u{hi:04x} at byte {start}"
                                    ));
                                }
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(format!("is not valid JSON: bad surrogate pair at byte {start}"));
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| {
                                format!("is not valid JSON: lone surrogate \\u{hi:04x} at byte {start}")
                            })?
                        }
                        _ => return Err(format!("is not valid JSON: bad escape at byte {start}")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(c) => out.push(c),
            }
        }
        // The whole text was checked to be UTF-8 and escapes add whole characters.
        String::from_utf8(out).map_err(|_| "is not valid JSON: a string is not UTF-8".to_string())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Skips one value, following at most MAX_DEPTH levels of nesting.
    fn value(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("is not valid JSON here: nested deeper than {MAX_DEPTH} levels at byte {}", self.pos));
        }
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(open @ (b'{' | b'[')) => {
                self.pos += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                self.ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => continue,
                        Some(c) if c == close => return Ok(()),
                        _ => {
                            self.pos -= 1;
                            return Err(self.error(if open == b'{' { "',' or '}'" } else { "',' or ']'" }));
                        }
                    }
                }
            }
            Some(b't') => self.word("true"),
            Some(b'f') => self.word("false"),
            Some(b'n') => self.word("null"),
            Some(b'-' | b'0'..=b'9') => {
                if self.peek() == Some(b'-') {
                    self.pos += 1;
                }
                match self.peek() {
                    Some(b'0') => self.pos += 1,
                    Some(b'1'..=b'9') => {
                        self.digits();
                    }
                    _ => return Err(self.error("a digit")),
                }
                if self.peek() == Some(b'.') {
                    self.pos += 1;
                    if self.digits() == 0 {
                        return Err(self.error("a digit"));
                    }
                }
                if matches!(self.peek(), Some(b'e' | b'E')) {
                    self.pos += 1;
                    if matches!(self.peek(), Some(b'+' | b'-')) {
                        self.pos += 1;
                    }
                    if self.digits() == 0 {
                        return Err(self.error("a digit"));
                    }
                }
                Ok(())
            }
            _ => Err(self.error("a value")),
        }
    }

    fn word(&mut self, w: &str) -> Result<(), String> {
        if self.s.get(self.pos..self.pos + w.len()) == Some(w.as_bytes()) {
            self.pos += w.len();
            Ok(())
        } else {
            Err(self.error(w))
        }
    }
}

/// Standard-alphabet base64 with optional '=' padding; trailing whitespace is ignored, any
/// other is refused.
fn base64_decode(s: &[u8]) -> Result<Vec<u8>, String> {
    let s = s.trim_ascii_end();
    if s.is_empty() {
        return Err("it is empty".into());
    }
    let data = s.len() - s.iter().rev().take_while(|&&c| c == b'=').count();
    let padding = s.len() - data;
    if padding > 2 || (padding > 0 && s.len() % 4 != 0) || data % 4 == 1 {
        return Err(format!("bad length {} (with {padding} '=')", s.len()));
    }
    let mut out = Vec::with_capacity(data / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, &c) in s[..data].iter().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("'{}' at position {i}", c.escape_ascii())),
        };
        acc = (acc << 6 | v as u32) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing/", $name)).as_slice()
        };
    }

    const ROOT: &[u8] = fixture!("roothash.txt");

    fn certs(files: &[(&[u8], &str)]) -> Vec<TrustedCert> {
        files.iter().flat_map(|(b, n)| parse_certificates(b, n).unwrap()).collect()
    }

    fn trusted() -> Vec<TrustedCert> {
        certs(&[(fixture!("trusted.crt"), "trusted.crt"), (fixture!("trusted-ec.crt"), "trusted-ec.crt")])
    }

    const RSA_SUBJECT: &str = "CN=initrd-sysext test signer, O=Example";

    fn bad(r: Result<String, Failure>) -> String {
        match r {
            Err(Failure::BadSignature(m)) => m,
            other => panic!("expected BadSignature, got {other:?}"),
        }
    }

    #[test]
    fn certificates_parse_pem_der_and_bundles() {
        let t = trusted();
        assert_eq!(t[0].subject, RSA_SUBJECT);
        assert_eq!(t[0].source, "trusted.crt");
        assert_eq!(serial_hex(&t[0].serial), "1a2b3c");
        assert!(matches!(t[0].key, Key::Rsa(_)) && matches!(t[1].key, Key::P256(_)));
        // A bundle of two PEM certificates, with a private key block in between to skip.
        let mut bundle = fixture!("trusted.crt").to_vec();
        bundle.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        bundle.extend_from_slice(fixture!("unknown.crt"));
        let both = parse_certificates(&bundle, "bundle.pem").unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].subject, "CN=someone else");
        // DER.
        let pem = std::str::from_utf8(fixture!("trusted-ec.crt")).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64_decode(b64.as_bytes()).unwrap();
        assert_eq!(parse_certificates(&der, "ec.der").unwrap()[0].subject, "CN=initrd-sysext EC signer");
    }

    #[test]
    fn certificate_garbage_is_named() {
        let e = parse_certificates(b"hello\n", "/etc/verity.d/x.crt").unwrap_err();
        assert!(e.starts_with("/etc/verity.d/x.crt: holds no certificate"), "{e}");
        let e =
            parse_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "a.crt").unwrap_err();
        assert!(e.starts_with("a.crt: certificate 1 is not valid X.509"), "{e}");
        let e = parse_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n", "b.crt").unwrap_err();
        assert!(e.contains("has no END line"), "{e}");
        assert!(parse_certificates(&[0x30, 0x82, 0xff], "c.der").unwrap_err().starts_with("c.der: not a DER X.509"));
    }

    #[test]
    fn rsa_without_attributes_as_repart_signs() {
        assert_eq!(check(fixture!("rsa-noattr.p7s"), ROOT, &trusted()), Ok(RSA_SUBJECT.into()));
    }

    #[test]
    fn rsa_with_signed_attributes() {
        assert_eq!(check(fixture!("rsa-attrs.p7s"), ROOT, &trusted()), Ok(RSA_SUBJECT.into()));
        assert_eq!(check(fixture!("rsa-sha512.p7s"), ROOT, &trusted()), Ok(RSA_SUBJECT.into()));
    }

    #[test]
    fn signer_by_subject_key_identifier() {
        assert_eq!(check(fixture!("rsa-keyid.p7s"), ROOT, &trusted()), Ok(RSA_SUBJECT.into()));
    }

    #[test]
    fn ecdsa_p256() {
        let want = Ok("CN=initrd-sysext EC signer".to_string());
        assert_eq!(check(fixture!("ec-noattr.p7s"), ROOT, &trusted()), want);
        assert_eq!(check(fixture!("ec-attrs.p7s"), ROOT, &trusted()), want);
    }

    #[test]
    fn unknown_signer_is_named() {
        let Err(Failure::UnknownSigner(m)) = check(fixture!("unknown.p7s"), ROOT, &trusted()) else { panic!() };
        assert_eq!(
            m,
            "the signature was made by CN=someone else (serial 0bad), which is not among the 2 trusted certificates \
             (CN=initrd-sysext test signer, O=Example from trusted.crt; CN=initrd-sysext EC signer from trusted-ec.crt)"
        );
        // No certificate in the signature: named by its key identifier.
        let Err(Failure::UnknownSigner(m)) = check(fixture!("unknown-keyid.p7s"), ROOT, &trusted()) else { panic!() };
        assert!(m.starts_with("the signature was made by the certificate with subject key identifier "), "{m}");
        // Only the EC certificate trusted: the RSA signer is unknown, named by issuer and serial.
        let ec = certs(&[(fixture!("trusted-ec.crt"), "ec.crt")]);
        let f = check(fixture!("rsa-noattr.p7s"), ROOT, &ec).unwrap_err();
        assert!(matches!(f, Failure::UnknownSigner(_)));
        assert!(f.to_string().starts_with(&format!("unknown signer: the signature was made by {RSA_SUBJECT} (serial 1a2b3c), which is not among the 1 trusted certificate")), "{f}");
        let f = check(fixture!("rsa-noattr.p7s"), ROOT, &[]).unwrap_err();
        assert!(f.to_string().ends_with("and no certificate is trusted"), "{f}");
    }

    #[test]
    fn signature_over_another_root_hash_is_bad() {
        let m = bad(check(fixture!("other-noattr.p7s"), ROOT, &trusted()));
        assert_eq!(
            m,
            format!("the signature by {RSA_SUBJECT} (trusted.crt) does not verify: it was made over a different root hash, or altered")
        );
        let m = bad(check(fixture!("other-attrs.p7s"), ROOT, &trusted()));
        assert!(
            m.ends_with("was made over a different root hash: its sha256 message digest does not match this one"),
            "{m}"
        );
        // And the right signature over the wrong content.
        bad(check(fixture!("rsa-noattr.p7s"), fixture!("other-roothash.txt"), &trusted()));
        bad(check(fixture!("ec-noattr.p7s"), &ROOT[1..], &trusted()));
        // The content is the hex text exactly: no trailing newline, lowercase.
        let mut nl = ROOT.to_vec();
        nl.push(b'\n');
        bad(check(fixture!("rsa-noattr.p7s"), &nl, &trusted()));
        bad(check(fixture!("rsa-noattr.p7s"), ROOT.to_ascii_uppercase().as_slice(), &trusted()));
    }

    #[test]
    fn altered_signature_bytes_are_bad() {
        // With no unsigned attributes, the signature value is the last bytes of the blob.
        for sig in [fixture!("rsa-noattr.p7s"), fixture!("ec-noattr.p7s")] {
            let mut sig = sig.to_vec();
            let n = sig.len();
            sig[n - 3] ^= 1;
            bad(check(&sig, ROOT, &trusted()));
        }
    }

    #[test]
    fn validity_periods_are_not_checked_like_systemd() {
        // Both carry a signingTime attribute (outside the expired certificate's window, too).
        let t = certs(&[(fixture!("expired.crt"), "expired.crt"), (fixture!("notyet.crt"), "notyet.crt")]);
        assert_eq!(check(fixture!("expired.p7s"), ROOT, &t), Ok("CN=initrd-sysext expired signer".into()));
        assert_eq!(check(fixture!("notyet.p7s"), ROOT, &t), Ok("CN=initrd-sysext notyet signer".into()));
    }

    #[test]
    fn key_and_algorithm_mismatches_name_what_failed() {
        // A trusted certificate whose key is not the kind the signature was made with.
        let mut t = trusted();
        t[0].key = t[1].key.clone();
        let m = bad(check(fixture!("rsa-noattr.p7s"), ROOT, &t));
        assert!(m.ends_with("is an RSA signature, but the certificate holds a P-256 key"), "{m}");
        t[0].key = Key::Unsupported("a 1.3.101.112 (Ed25519) key".into());
        let m = bad(check(fixture!("rsa-noattr.p7s"), ROOT, &t));
        assert!(m.ends_with("cannot be checked: the certificate holds a 1.3.101.112 (Ed25519) key"), "{m}");
    }

    #[test]
    fn unsupported_digest_names_the_oid() {
        // Swap sha256 for sha1 in the signerInfo's digestAlgorithm (the last sha256 OID before it).
        let mut sig = fixture!("rsa-noattr.p7s").to_vec();
        let sha256 = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00];
        let at = sig.windows(sha256.len()).rposition(|w| w == sha256).unwrap();
        // 1.3.14.3.2.26 is 5 bytes shorter: keep lengths by giving sha1 parameters of the same size.
        let sha1 = [0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x04, 0x04, 0, 0, 0, 0];
        sig[at..at + sha256.len()].copy_from_slice(&sha1);
        let m = bad(check(&sig, ROOT, &trusted()));
        assert!(m.contains("uses the digest algorithm 1.3.14.3.2.26 (sha1), which is not supported"), "{m}");
    }

    #[test]
    fn malformed_input() {
        let t = trusted();
        for junk in [&b""[..], b"\x30", b"hello", &[0x30, 0x03, 0x06, 0x01, 0x00]] {
            assert!(matches!(check(junk, ROOT, &t), Err(Failure::Malformed(_))), "{junk:?}");
        }
        let sig = fixture!("rsa-noattr.p7s");
        for cut in [1, 10, sig.len() / 2, sig.len() - 1] {
            assert!(matches!(check(&sig[..cut], ROOT, &t), Err(Failure::Malformed(_))), "cut at {cut}");
        }
        let f = check(&vec![0x30; MAX_PKCS7 + 1], ROOT, &t).unwrap_err();
        assert_eq!(
            f.to_string(),
            format!("malformed signature: the signature is {} bytes, more than the 65536 allowed", MAX_PKCS7 + 1)
        );
        // Data, not signedData: the OID is named.
        let data =
            [0x30, 0x0f, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0xa0, 0x02, 0x05, 0x00];
        let f = check(&data, ROOT, &t).unwrap_err();
        assert!(f.to_string().contains("1.2.840.113549.1.7.1 (data), not signedData"), "{f}");
    }

    #[test]
    fn ber_and_many_elements() {
        // Indefinite lengths are BER, which signers do not write and we do not read.
        let f = check(&[0x30, 0x80, 0, 0], ROOT, &trusted()).unwrap_err();
        assert_eq!(f.to_string(), "malformed signature: the PKCS#7 data is not valid: the ContentInfo has an indefinite length (BER, not DER)");
        // Thousands of signed attributes cost one pass: nothing is decoded into sets and sorted.
        let mut attrs = Vec::new();
        for i in (0..5000u16).rev() {
            attrs.extend_from_slice(&[0x30, 0x06, 0x06, 0x01, 0x2a, 0x31, 0x01, i as u8]);
        }
        let t = Instant::now();
        assert_eq!(message_digest(&attrs), Err("has signed attributes without a messageDigest".to_string()));
        assert!(t.elapsed().as_millis() < 500);
    }

    #[test]
    fn oids_print_dotted() {
        assert_eq!(oid_dotted(OID_SIGNED_DATA), "1.2.840.113549.1.7.2");
        assert_eq!(oid_dotted(OID_SHA256), "2.16.840.1.101.3.4.2.1");
        assert_eq!(oid_dotted(OID_SKI), "2.5.29.14");
        assert_eq!(oid_name(OID_P256), "1.2.840.10045.3.1.7 (P-256)");
        assert_eq!(oid_dotted(&[0x2a, 0x86]), "#2a86");
        assert_eq!(oid_dotted(&[0xff; 12]), "#ffffffffffffffffffffffff");
        assert_eq!(oid_dotted(&[]), "#");
    }

    #[test]
    fn repart_signature_partition() {
        let blob = parse_signature_json(fixture!("repart-signature.json")).unwrap();
        assert_eq!(hex(&blob.root_hash).as_bytes(), ROOT);
        assert_eq!(blob.signature, fixture!("rsa-noattr.p7s"));
        assert_eq!(check(&blob.signature, hex(&blob.root_hash).as_bytes(), &trusted()), Ok(RSA_SUBJECT.into()));
    }

    #[test]
    fn real_systemd_repart_252_partition() {
        // The whole 16 KiB usr-verity-sig partition of a DDI made by systemd-repart 252.
        let blob = parse_signature_json(fixture!("repart252-partition.bin")).unwrap();
        assert_eq!(hex(&blob.root_hash), "bdc8fe596a2e11c20fb5eb906daccc4e1f81098ea33074f57c444eea85632002");
        let t = certs(&[(fixture!("repart252.crt"), "repart252.crt")]);
        assert_eq!(check(&blob.signature, hex(&blob.root_hash).as_bytes(), &t), Ok("CN=repart test".into()));
        let f = check(&blob.signature, hex(&blob.root_hash).as_bytes(), &trusted()).unwrap_err();
        assert!(
            f.to_string().starts_with("unknown signer: the signature was made by CN=repart test (serial 33ddef"),
            "{f}"
        );
    }

    #[test]
    fn json_forms() {
        let ok = |s: &str| parse_signature_json(s.as_bytes());
        let b = ok(r#" { "x": [1, -2.5e+3, {"y": null}, true, false, "\u00e9\ud83d\ude00"], "rootHash" : "00FF", "signature": "AAEC" } "#)
            .unwrap();
        assert_eq!(b, SignatureBlob { root_hash: vec![0, 255], signature: vec![0, 1, 2] });
        assert_eq!(ok(r#"{"signature":"AAE=","rootHash":"0a"}"#).unwrap().signature, vec![0, 1]);
        assert_eq!(ok(r#"{"signature":"AAE","rootHash":"0a"}"#).unwrap().signature, vec![0, 1]);
        assert_eq!(ok("{\"signature\":\"AAE=\\n\",\"rootHash\":\"0a\"}").unwrap().signature, vec![0, 1]);
        // An escaped key is the same key.
        assert!(ok(r#"{"root\u0048ash":"0a","signature":"AA=="}"#).is_ok());
    }

    #[test]
    fn json_refusals_say_why() {
        let err = |s: &[u8]| parse_signature_json(s).unwrap_err();
        assert_eq!(err(b""), "is empty");
        assert_eq!(err(b"\0\0\0"), "is empty");
        assert_eq!(err(b"{}\0\0x\0"), "has data after its NUL padding (at byte 4)");
        assert_eq!(err(b"{}"), "lacks the \"rootHash\" key");
        assert_eq!(err(br#"{"rootHash":"00"}"#), "lacks the \"signature\" key");
        assert_eq!(err(br#"{"rootHash":0,"signature":"AA=="}"#), "has a \"rootHash\" that is not a string");
        assert_eq!(err(br#"{"rootHash":"0","signature":"AA=="}"#), "has a rootHash that is not hex: odd length 1");
        assert_eq!(
            err(br#"{"rootHash":"0g","signature":"AA=="}"#),
            "has a rootHash that is not hex: 'g' at position 1"
        );
        assert_eq!(err(br#"{"rootHash":"","signature":"AA=="}"#), "has a rootHash that is not hex: it is empty");
        assert_eq!(
            err(br#"{"rootHash":"00","signature":"A A="}"#),
            "has a signature that is not base64: ' ' at position 1"
        );
        assert_eq!(
            err(br#"{"rootHash":"00","signature":"A"}"#),
            "has a signature that is not base64: bad length 1 (with 0 '=')"
        );
        assert_eq!(
            err(br#"{"rootHash":"00","signature":"AA=A"}"#),
            "has a signature that is not base64: '=' at position 2"
        );
        assert_eq!(err(br#"{"rootHash":"00","rootHash":"00"}"#), "has the key \"rootHash\" twice");
        assert_eq!(
            err(br#"{"rootHash":"00" "signature":"AA=="}"#),
            "is not valid JSON: expected ',' or '}' at byte 17, found '\"'"
        );
        assert_eq!(err(br#"{"a":tru}"#), "is not valid JSON: expected true at byte 5, found 't'");
        assert_eq!(err(br#"{"a":01}"#), "is not valid JSON: expected ',' or '}' at byte 6, found '1'");
        assert_eq!(err(b"{\"a\":\"\x01\"}"), "is not valid JSON: control byte 0x01 in a string at byte 6");
        assert_eq!(err(br#"{"a":"\ud800"}"#), "is not valid JSON: lone surrogate \\ud800 at byte 6");
        assert_eq!(err(br#"{"a":1} x"#), "is not valid JSON: data after the object at byte 8");
        assert_eq!(err(b"[1]"), "is not valid JSON: expected '{' at byte 0, found '['");
        assert_eq!(err(b"{\"a\":\"\xff\"}"), "is not UTF-8 text (at byte 6)");
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(err(deep.as_bytes()).contains("nested deeper than 32 levels"));
        let huge = vec![b' '; MAX_JSON + 1];
        assert!(err(&huge).starts_with("holds 1048577 bytes of JSON"));
        assert!(err(&vec![0; MAX_PARTITION + 1]).starts_with("is 4194305 bytes"));
    }

    #[test]
    fn failure_display_names_the_kind() {
        assert_eq!(Failure::Malformed("x".into()).to_string(), "malformed signature: x");
        assert_eq!(Failure::UnknownSigner("x".into()).to_string(), "unknown signer: x");
        assert_eq!(Failure::BadSignature("x".into()).to_string(), "bad signature: x");
    }

    #[test]
    fn hex_and_names() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00aBfF").unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode(b"+/+/").unwrap(), vec![0xfb, 0xff, 0xbf]);
    }
}
