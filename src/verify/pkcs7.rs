//! PKCS#7 (CMS) detached signatures of verity root hashes, checked against trusted X.509
//! certificates.
//!
//! Pure: bytes in, a decision out. A signature comes from an untrusted image, so every read is
//! bounded and never panics (fuzzed by fuzz/fuzz_targets/signature.rs).
//!
//! Semantics follow systemd's userspace check: the signer must be one of the trusted
//! certificates (certificates carried inside the signature are never trusted), every signerInfo
//! must verify, and no certificate chain is built.

use std::fmt;

use super::der::{ctx, ctx_prim, magnitude, oid_name, Der, INTEGER, OCTET_STRING, OID, SEQUENCE, SET};
use super::x509::{read_cert, serial_hex, Key, TrustedCert, OID_EC_KEY, OID_RSA};
use super::{dn, hex};

/// The largest PKCS#7 blob. The kernel takes at most 32 KiB; a signer certificate is ~1-2 KiB.
pub const MAX_PKCS7: usize = 64 << 10;

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]; // 1.2.840.113549.1.7.2
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04]; // 1.2.840.113549.1.9.4
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]; // 2.16.840.1.101.3.4.2.1
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]; // 1.2.840.10045.4.3.2
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

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

impl SignerId<'_> {
    fn names(&self, cert: &TrustedCert) -> bool {
        match *self {
            SignerId::IssuerSerial { issuer, serial } => cert.is(issuer, serial),
            SignerId::KeyId(id) => cert.has_key_id(id),
        }
    }
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

/// The refusal of a signature of `len` bytes, more than MAX_PKCS7. A caller that does not read
/// an oversized file whole still states its real size.
pub fn oversized(len: u64) -> Failure {
    Failure::Malformed(format!("the signature is {len} bytes, more than the {MAX_PKCS7} allowed"))
}

/// Check a detached PKCS#7/CMS SignedData (DER) over `content` (the root hash in lowercase hex,
/// no newline). Every signer must be a trusted certificate and verify, as with OpenSSL's
/// PKCS7_verify. Returns the signer's subject (signers joined by " and ").
pub fn check(pkcs7_der: &[u8], content: &[u8], trusted: &[TrustedCert]) -> Result<String, Failure> {
    // Like systemd (validate_signature_userspace() in dissect-image.c: PKCS7_verify with PKCS7_NOVERIFY), we
    // never check validity periods: the initrd's clock may be wrong, and the kernel keyring path ignores it too.
    if pkcs7_der.len() > MAX_PKCS7 {
        return Err(oversized(pkcs7_der.len() as u64));
    }
    let sd = read_signed_data(pkcs7_der)?;
    let mut subjects = Vec::new();
    for si in &sd.signers {
        let candidates: Vec<&TrustedCert> = trusted.iter().filter(|t| si.id.names(t)).collect();
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
            own = Some(dn::text(c.subject));
            break;
        }
    }
    let who = match (id, own) {
        (SignerId::IssuerSerial { serial, .. }, Some(subject)) => format!("{subject} (serial {})", serial_hex(serial)),
        (SignerId::IssuerSerial { issuer, serial }, None) => {
            format!("a certificate issued by {} with serial {}", dn::text(issuer), serial_hex(serial))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::fixtures::{fixture, ROOT};
    use crate::verify::x509::tests::{certs, trusted, RSA_SUBJECT};
    use std::time::Instant;

    fn bad(r: Result<String, Failure>) -> String {
        match r {
            Err(Failure::BadSignature(m)) => m,
            other => panic!("expected BadSignature, got {other:?}"),
        }
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
    fn failure_display_names_the_kind() {
        assert_eq!(Failure::Malformed("x".into()).to_string(), "malformed signature: x");
        assert_eq!(Failure::UnknownSigner("x".into()).to_string(), "unknown signer: x");
        assert_eq!(Failure::BadSignature("x".into()).to_string(), "bad signature: x");
    }
}
