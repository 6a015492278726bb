//! PKCS#7 signatures of verity root hashes, checked against trusted X.509 certificates.
//!
//! Pure: bytes in, a decision out. The signature partition of a DDI is untrusted input, so every
//! parser here is bounded and never panics (fuzzed by fuzz/fuzz_targets/signature.rs).
//!
//! Semantics follow systemd's userspace check: the signer must be one of the trusted
//! certificates (certificates carried inside the signature are never trusted), every signerInfo
//! must verify, and no certificate chain is built.

use std::fmt;

use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier, SignerInfo, SignerInfos};
use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, OctetString, UintRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;

/// The largest verity signature partition we read, as systemd.
pub const MAX_PARTITION: usize = 4 << 20;
/// The largest JSON text in it. Real ones are a few KiB.
pub const MAX_JSON: usize = 1 << 20;
/// The largest PKCS#7 blob. The kernel takes at most 32 KiB; a signer certificate is ~1-2 KiB.
pub const MAX_PKCS7: usize = 64 << 10;
/// JSON nesting we follow before giving up.
const MAX_DEPTH: usize = 32;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_EC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");

/// Names for the OIDs a user is likely to meet in a message; the rest print dotted.
fn oid_name(oid: &ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
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
        _ => return oid.to_string(),
    };
    format!("{oid} ({name})")
}

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

/// A serial as people read it: hex, without the sign byte DER adds.
fn serial_hex(serial: &SerialNumber) -> String {
    let b = serial.as_bytes();
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len().saturating_sub(1));
    hex(b.get(first..).unwrap_or_default())
}

/// A distinguished name in RFC 4514 order (most specific first), bounded so that a hostile
/// certificate cannot flood the journal.
fn name_string(name: &Name) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for rdn in name.0.iter().rev() {
        for (i, atv) in rdn.0.iter().enumerate() {
            if !out.is_empty() {
                out.push_str(if i == 0 { ", " } else { "+" });
            }
            let key = match atv.oid.to_string().as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.4" => "SN".to_string(),
                "2.5.4.5" => "serialNumber".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.9" => "street".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "2.5.4.12" => "title".to_string(),
                "2.5.4.42" => "GN".to_string(),
                "1.2.840.113549.1.9.1" => "emailAddress".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                other => other.to_string(),
            };
            out.push_str(&key);
            out.push('=');
            let raw = atv.value.value();
            let text = match atv.value.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString | Tag::TeletexString => {
                    Some(String::from_utf8_lossy(raw).into_owned())
                }
                Tag::BmpString if raw.len() % 2 == 0 => {
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
                    out.push_str(&hex(raw.get(..64).unwrap_or(raw)));
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
    issuer: Name,
    serial: SerialNumber,
    ski: Option<Vec<u8>>,
    key: Key,
}

impl TrustedCert {
    fn from_cert(cert: &Certificate, source: &str) -> Result<TrustedCert, String> {
        let tbs = &cert.tbs_certificate;
        let subject = name_string(&tbs.subject);
        let spki = &tbs.subject_public_key_info;
        let key_bits = spki.subject_public_key.as_bytes().unwrap_or_default();
        let key = if spki.algorithm.oid == OID_RSA {
            let k = rsa::pkcs1::RsaPublicKey::from_der(key_bits)
                .map_err(|e| format!("{source}: the RSA key of {subject} is unreadable: {e}"))?;
            let n = rsa::BigUint::from_bytes_be(k.modulus.as_bytes());
            let e = rsa::BigUint::from_bytes_be(k.public_exponent.as_bytes());
            // 8192 bits: larger than anyone signs with, small enough to verify fast.
            Key::Rsa(
                rsa::RsaPublicKey::new_with_max_size(n, e, 8192)
                    .map_err(|e| format!("{source}: the RSA key of {subject} is unusable: {e}"))?,
            )
        } else if spki.algorithm.oid == OID_EC_KEY {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(c) if c == OID_P256 => Key::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                        .map_err(|_| format!("{source}: the P-256 key of {subject} is not a valid curve point"))?,
                ),
                Some(c) => Key::Unsupported(format!("an elliptic curve key on curve {}", oid_name(&c))),
                None => Key::Unsupported("an elliptic curve key on an unnamed curve".into()),
            }
        } else {
            Key::Unsupported(format!("a {} key", oid_name(&spki.algorithm.oid)))
        };
        let ski = tbs
            .extensions
            .iter()
            .flatten()
            .find(|x| x.extn_id == OID_SKI)
            .and_then(|x| OctetString::from_der(x.extn_value.as_bytes()).ok().map(|o| o.as_bytes().to_vec()));
        Ok(TrustedCert {
            subject,
            source: source.to_string(),
            issuer: tbs.issuer.clone(),
            serial: tbs.serial_number.clone(),
            ski,
            key,
        })
    }

    fn matches(&self, sid: &SignerIdentifier) -> bool {
        match sid {
            SignerIdentifier::IssuerAndSerialNumber(is) => is.serial_number == self.serial && is.issuer == self.issuer,
            SignerIdentifier::SubjectKeyIdentifier(id) => self.ski.as_deref() == Some(id.0.as_bytes()),
        }
    }
}

/// Certificates from a file: PEM (every CERTIFICATE block in it) or a single DER certificate.
/// `source` is a path for messages.
pub fn parse_certificates(bytes: &[u8], source: &str) -> Result<Vec<TrustedCert>, String> {
    if bytes.len() > MAX_PARTITION {
        return Err(format!("{source}: {} bytes is too large for a certificate file", bytes.len()));
    }
    if bytes.first() == Some(&0x30) {
        let cert = Certificate::from_der(bytes).map_err(|e| format!("{source}: not a DER X.509 certificate: {e}"))?;
        return Ok(vec![TrustedCert::from_cert(&cert, source)?]);
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
        // A TRUSTED CERTIFICATE is the certificate followed by OpenSSL trust settings: read the first.
        let cert = if label == "TRUSTED CERTIFICATE" {
            SliceReader::new(&der).and_then(|mut r| Certificate::decode(&mut r))
        } else {
            Certificate::from_der(&der)
        }
        .map_err(|e| format!("{source}: certificate {index} is not valid X.509: {e}"))?;
        certs.push(TrustedCert::from_cert(&cert, source)?);
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
    fn from_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        match *oid {
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

/// The parts of a SignedData we use. Certificates and CRLs are kept raw: they are never trusted,
/// and a strict parse of them would refuse signatures OpenSSL accepts.
struct SignedData<'a> {
    certificates: Option<AnyRef<'a>>,
    signer_infos: SignerInfos,
}

fn parse_content_info(der: &[u8]) -> Result<ContentInfo, Failure> {
    let malformed = |e: der::Error| Failure::Malformed(format!("the signature is not DER PKCS#7 (CMS) data: {e}"));
    // Like OpenSSL's d2i_PKCS7, bytes after the first object are ignored.
    let ci = SliceReader::new(der).and_then(|mut r| ContentInfo::decode(&mut r)).map_err(malformed)?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(Failure::Malformed(format!("the PKCS#7 data is {}, not signedData", oid_name(&ci.content_type))));
    }
    if ci.content.tag() != Tag::Sequence {
        return Err(Failure::Malformed("the PKCS#7 signedData is not a SEQUENCE".into()));
    }
    Ok(ci)
}

fn parse_signed_data_body(body: &[u8]) -> der::Result<SignedData<'_>> {
    let mut r = SliceReader::new(body)?;
    let _version = UintRef::decode(&mut r)?;
    let _digest_algorithms = AnyRef::decode(&mut r)?;
    let _content = EncapsulatedContentInfo::decode(&mut r)?;
    let mut certificates = None;
    while let Ok(Tag::ContextSpecific { number, .. }) = r.peek_tag() {
        let any = AnyRef::decode(&mut r)?;
        if number.value() == 0 {
            certificates = Some(any);
        }
    }
    let signer_infos = SignerInfos::decode(&mut r)?;
    r.finish(SignedData { certificates, signer_infos })
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
    let ci = parse_content_info(pkcs7_der)?;
    let sd = parse_signed_data_body(ci.content.value())
        .map_err(|e| Failure::Malformed(format!("the PKCS#7 signedData is not valid DER: {e}")))?;
    if sd.signer_infos.0.is_empty() {
        return Err(Failure::Malformed("the PKCS#7 signedData has no signer".into()));
    }
    let mut subjects = Vec::new();
    for si in sd.signer_infos.0.iter() {
        let candidates: Vec<&TrustedCert> = trusted.iter().filter(|t| t.matches(&si.sid)).collect();
        let Some(first) = candidates.first() else {
            return Err(Failure::UnknownSigner(unknown_signer(&si.sid, sd.certificates, trusted)));
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

/// Checks one signerInfo against one certificate; the error completes "the signature by X …".
fn verify_one(si: &SignerInfo, content: &[u8], cert: &TrustedCert) -> Result<(), String> {
    let Some(hash) = Hash::from_oid(&si.digest_alg.oid) else {
        return Err(format!(
            "uses the digest algorithm {}, which is not supported (sha256, sha384 and sha512 are)",
            oid_name(&si.digest_alg.oid)
        ));
    };
    // Without signed attributes the signature covers the content; with them, it covers their DER
    // SET OF encoding, and the messageDigest attribute binds the content.
    let attrs_der;
    let signed: &[u8] = match &si.signed_attrs {
        None => content,
        Some(attrs) => {
            let mut digests = attrs.iter().filter(|a| a.oid == OID_MESSAGE_DIGEST);
            let (Some(attr), None) = (digests.next(), digests.next()) else {
                return Err("has signed attributes without exactly one messageDigest".into());
            };
            let mut values = attr.values.iter();
            let (Some(value), None) = (values.next(), values.next()) else {
                return Err("has a messageDigest attribute without exactly one value".into());
            };
            let Ok(md) = value.decode_as::<OctetString>() else {
                return Err("has a messageDigest attribute that is not an OCTET STRING".into());
            };
            if md.as_bytes() != hash.digest(content).as_slice() {
                return Err(format!(
                    "was made over a different root hash: its {} message digest does not match this one",
                    hash.name()
                ));
            }
            attrs_der = attrs.to_der().map_err(|e| format!("has signed attributes that cannot be re-encoded: {e}"))?;
            &attrs_der
        }
    };
    let digest = hash.digest(signed);
    let sig = si.signature.as_bytes();
    let alg = &si.signature_algorithm.oid;
    let implied = match *alg {
        OID_RSA_SHA256 | OID_ECDSA_SHA256 => Some(Hash::Sha256),
        OID_RSA_SHA384 | OID_ECDSA_SHA384 => Some(Hash::Sha384),
        OID_RSA_SHA512 | OID_ECDSA_SHA512 => Some(Hash::Sha512),
        _ => None,
    };
    if implied.is_some_and(|h| h != hash) {
        return Err(format!("names the signature algorithm {} with the digest {}", oid_name(alg), hash.name()));
    }
    let is_rsa = matches!(*alg, OID_RSA | OID_RSA_SHA256 | OID_RSA_SHA384 | OID_RSA_SHA512);
    let is_ecdsa = matches!(*alg, OID_EC_KEY | OID_ECDSA_SHA256 | OID_ECDSA_SHA384 | OID_ECDSA_SHA512);
    let ok = match &cert.key {
        Key::Unsupported(what) => return Err(format!("cannot be checked: the certificate holds {what}")),
        Key::Rsa(key) if is_rsa => {
            let scheme = match hash {
                Hash::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                Hash::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                Hash::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            key.verify(scheme, &digest, sig).is_ok()
        }
        Key::P256(key) if is_ecdsa => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            ecdsa_signature(sig).is_some_and(|s| key.verify_prehash(&digest, &s).is_ok())
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

/// An ECDSA-Sig-Value (SEQUENCE of r and s) as a P-256 signature.
fn ecdsa_signature(der: &[u8]) -> Option<p256::ecdsa::Signature> {
    let mut r = SliceReader::new(der).ok()?;
    let (a, b) = r.sequence(|r| Ok((UintRef::decode(r)?, UintRef::decode(r)?))).ok()?;
    r.finish(()).ok()?;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() > 32 || b.len() > 32 {
        return None;
    }
    let mut raw = [0u8; 64];
    raw[32 - a.len()..32].copy_from_slice(a);
    raw[64 - b.len()..].copy_from_slice(b);
    p256::ecdsa::Signature::from_slice(&raw).ok()
}

/// Names the signer that no trusted certificate matches: by the subject of the certificate the
/// signature carries (informative only, never trusted), else by what the signerInfo says.
fn unknown_signer(sid: &SignerIdentifier, certificates: Option<AnyRef<'_>>, trusted: &[TrustedCert]) -> String {
    let carried: Vec<Certificate> = certificates
        .and_then(|set| SliceReader::new(set.value()).ok())
        .map(|mut r| {
            let mut v = Vec::new();
            while !r.is_finished() {
                let Ok(any) = AnyRef::decode(&mut r) else { break };
                if let Ok(c) = any.to_der().and_then(|d| Certificate::from_der(&d)) {
                    v.push(c);
                }
            }
            v
        })
        .unwrap_or_default();
    let own = carried.iter().find(|c| match sid {
        SignerIdentifier::IssuerAndSerialNumber(is) => {
            c.tbs_certificate.serial_number == is.serial_number && c.tbs_certificate.issuer == is.issuer
        }
        SignerIdentifier::SubjectKeyIdentifier(id) => c.tbs_certificate.extensions.iter().flatten().any(|x| {
            x.extn_id == OID_SKI
                && OctetString::from_der(x.extn_value.as_bytes()).is_ok_and(|o| o.as_bytes() == id.0.as_bytes())
        }),
    });
    let who = match (sid, own) {
        (SignerIdentifier::IssuerAndSerialNumber(is), Some(c)) => {
            format!("{} (serial {})", name_string(&c.tbs_certificate.subject), serial_hex(&is.serial_number))
        }
        (SignerIdentifier::IssuerAndSerialNumber(is), None) => {
            format!("a certificate issued by {} with serial {}", name_string(&is.issuer), serial_hex(&is.serial_number))
        }
        (SignerIdentifier::SubjectKeyIdentifier(id), Some(c)) => {
            format!("{} (subject key identifier {})", name_string(&c.tbs_certificate.subject), hex(id.0.as_bytes()))
        }
        (SignerIdentifier::SubjectKeyIdentifier(id), None) => {
            format!("the certificate with subject key identifier {}", hex(id.0.as_bytes()))
        }
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
    let root_hash = hex_decode(&root_hash).map_err(|e| format!("has a rootHash that is not hex: {e}"))?;
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

/// Hex of either case, even length, nothing else.
fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
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
    fn repart_signature_partition() {
        let blob = parse_signature_json(fixture!("repart-signature.json")).unwrap();
        assert_eq!(hex(&blob.root_hash).as_bytes(), ROOT);
        assert_eq!(blob.signature, fixture!("rsa-noattr.p7s"));
        assert_eq!(check(&blob.signature, hex(&blob.root_hash).as_bytes(), &trusted()), Ok(RSA_SUBJECT.into()));
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
        assert_eq!(hex_decode("00aBfF").unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode(b"+/+/").unwrap(), vec![0xfb, 0xff, 0xbf]);
    }
}
