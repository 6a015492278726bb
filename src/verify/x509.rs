//! X.509 certificates: the few fields a signature check needs (issuer, serial, subject key
//! identifier, public key), read from DER, and certificate files (PEM bundles or one DER
//! certificate), which become the trusted certificates.

use super::der::{ctx, ctx_prim};
use super::der::{magnitude, oid_name, Der, Tlv, BIT_STRING, INTEGER, OCTET_STRING, OID, SEQUENCE};
use super::{dn, hex, pem};

const OID_SKI: &[u8] = &[0x55, 0x1d, 0x0e]; // 2.5.29.14
pub const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]; // 1.2.840.113549.1.1.1
pub const OID_EC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7

/// The largest certificate file we read. A certificate is 1-2 KiB; a bundle of many is still far
/// below this.
pub const MAX_FILE: usize = 1 << 20;

/// A serial as people read it: hex, without the sign byte DER adds.
pub fn serial_hex(serial: &[u8]) -> String {
    match magnitude(serial) {
        [] => "00".into(),
        m => hex(m),
    }
}

/// The parts of an X.509 certificate we use, borrowed from its DER.
pub struct Cert<'a> {
    pub serial: &'a [u8],
    /// Names as the content of their SEQUENCE, compared byte for byte: signers copy the issuer
    /// verbatim from the certificate.
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    pub key_alg: &'a [u8],
    pub key_params: Option<Tlv<'a>>,
    pub key: &'a [u8],
    pub ski: Option<&'a [u8]>,
}

/// Reads one certificate from the start of `der`; what follows it is returned too.
pub fn read_cert(der: &[u8]) -> Result<(Cert<'_>, &[u8]), String> {
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
    Ok((Cert { serial, issuer, subject, key_alg, key_params, key, ski }, outer.rest()))
}

#[derive(Clone, Debug)]
pub enum Key {
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
    pub key: Key,
}

impl TrustedCert {
    pub fn new(cert: &Cert<'_>, source: &str) -> Result<TrustedCert, String> {
        let subject = dn::text(cert.subject);
        let key = if cert.key_alg == OID_RSA {
            let unreadable = |e: String| format!("the RSA key of {subject} is unreadable: {e}");
            let mut k = Der::new(Der::new(cert.key).expect(SEQUENCE, "the RSA key").map_err(unreadable)?);
            let n = k.expect(INTEGER, "the modulus").map_err(unreadable)?;
            let e = k.expect(INTEGER, "the exponent").map_err(unreadable)?;
            let (n, e) = (rsa::BigUint::from_bytes_be(magnitude(n)), rsa::BigUint::from_bytes_be(magnitude(e)));
            // 8192 bits: larger than anyone signs with, small enough to verify fast.
            Key::Rsa(
                rsa::RsaPublicKey::new_with_max_size(n, e, 8192)
                    .map_err(|e| format!("the RSA key of {subject} is unusable: {e}"))?,
            )
        } else if cert.key_alg == OID_EC_KEY {
            match cert.key_params.filter(|p| p.tag == OID).map(|p| p.body) {
                Some(OID_P256) => Key::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(cert.key)
                        .map_err(|_| format!("the P-256 key of {subject} is not a valid curve point"))?,
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

    /// Whether this is the certificate with this issuer (DER, compared byte for byte) and serial.
    pub fn is(&self, issuer: &[u8], serial: &[u8]) -> bool {
        serial == self.serial && issuer == self.issuer
    }

    /// Whether this certificate's subject key identifier is `id`.
    pub fn has_key_id(&self, id: &[u8]) -> bool {
        self.ski.as_deref() == Some(id)
    }
}

/// Certificates from a file: PEM (every CERTIFICATE block in it) or a single DER certificate.
/// `source` is a path, kept in each certificate for messages; errors do not repeat it. One bad
/// block makes the whole file unusable: a file cut short must not pass as its first half.
pub fn parse_certificates(bytes: &[u8], source: &str) -> Result<Vec<TrustedCert>, String> {
    if bytes.len() > MAX_FILE {
        return Err(format!("it is {} bytes, more than the {MAX_FILE} a certificate file may have", bytes.len()));
    }
    if bytes.first() == Some(&SEQUENCE) {
        let cert = match read_cert(bytes) {
            Ok((cert, [])) => cert,
            Ok(_) => return Err("not a DER X.509 certificate: data follows it".into()),
            Err(e) => return Err(format!("not a DER X.509 certificate: {e}")),
        };
        return Ok(vec![TrustedCert::new(&cert, source)?]);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return Err(format!("neither PEM nor DER (not text at byte {})", e.valid_up_to())),
    };
    let mut certs = Vec::new();
    for block in pem::blocks(text)? {
        // OpenSSL reads these three labels as certificates; a file may also hold keys, skip those.
        if !matches!(block.label, "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE") {
            continue;
        }
        let index = certs.len() + 1;
        let der = block.decode().map_err(|e| format!("certificate {index}: base64 {e}"))?;
        // A TRUSTED CERTIFICATE is the certificate followed by OpenSSL trust settings.
        let cert = match read_cert(&der) {
            Ok((cert, [])) => cert,
            Ok((cert, _)) if block.label == "TRUSTED CERTIFICATE" => cert,
            Ok(_) => return Err(format!("certificate {index} is not valid X.509: data follows it")),
            Err(e) => return Err(format!("certificate {index} is not valid X.509: {e}")),
        };
        certs.push(TrustedCert::new(&cert, source)?);
    }
    if certs.is_empty() {
        return Err("it holds no certificate (expected PEM \"BEGIN CERTIFICATE\" or DER)".into());
    }
    Ok(certs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verify::fixtures::fixture;

    pub fn certs(files: &[(&[u8], &str)]) -> Vec<TrustedCert> {
        files.iter().flat_map(|(b, n)| parse_certificates(b, n).unwrap()).collect()
    }

    /// The RSA and the EC test certificates.
    pub fn trusted() -> Vec<TrustedCert> {
        certs(&[(fixture!("trusted.crt"), "trusted.crt"), (fixture!("trusted-ec.crt"), "trusted-ec.crt")])
    }

    pub const RSA_SUBJECT: &str = "CN=initrd-sysext test signer, O=Example";

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
        let der = super::super::base64::decode(b64.as_bytes()).unwrap();
        assert_eq!(parse_certificates(&der, "ec.der").unwrap()[0].subject, "CN=initrd-sysext EC signer");
    }

    #[test]
    fn certificate_garbage_is_named() {
        let e = parse_certificates(b"hello\n", "/etc/verity.d/x.crt").unwrap_err();
        assert!(e.starts_with("it holds no certificate"), "{e}");
        let e =
            parse_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "a.crt").unwrap_err();
        assert!(e.starts_with("certificate 1 is not valid X.509"), "{e}");
        let e = parse_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n", "b.crt").unwrap_err();
        assert!(e.contains("has no END line"), "{e}");
        assert!(parse_certificates(&[0x30, 0x82, 0xff], "c.der").unwrap_err().starts_with("not a DER X.509"));
        // A whole DER certificate with bytes after it: the file is not what it claims to be.
        let pem = std::str::from_utf8(fixture!("trusted-ec.crt")).unwrap();
        let mut der = pem::blocks(pem).unwrap()[0].decode().unwrap();
        der.extend_from_slice(b"junk");
        let e = parse_certificates(&der, "d.der").unwrap_err();
        assert_eq!(e, "not a DER X.509 certificate: data follows it");
    }
}
