//! The verity signature partition and the PKCS#7 inside it come from untrusted images: parsing
//! and checking must never panic, whatever the bytes.
#![no_main]

use std::sync::OnceLock;

use initrd_sysext::verify::pkcs7::{self, Failure};
use initrd_sysext::verify::x509::{self, TrustedCert};
use initrd_sysext::verify::{hex, signature};
use libfuzzer_sys::fuzz_target;

/// The root hash the fixture signatures were made over.
const ROOT: &[u8] = include_bytes!("../../tests/fixtures/signing/roothash.txt");

fn trusted() -> &'static [TrustedCert] {
    static CERTS: OnceLock<Vec<TrustedCert>> = OnceLock::new();
    CERTS.get_or_init(|| {
        let mut v = x509::parse_certificates(include_bytes!("../../tests/fixtures/signing/trusted.crt"), "rsa")
            .expect("fixture");
        v.extend(
            x509::parse_certificates(include_bytes!("../../tests/fixtures/signing/trusted-ec.crt"), "ec")
                .expect("fixture"),
        );
        v
    })
}

fn check(der: &[u8], content: &[u8]) {
    match pkcs7::check(der, content, trusted()) {
        // Only trusted certificates can sign.
        Ok(subject) => assert!(trusted().iter().any(|t| subject.contains(&t.subject)), "{subject}"),
        Err(Failure::Malformed(m) | Failure::UnknownSigner(m) | Failure::BadSignature(m)) => assert!(!m.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    // As a signature partition, then its signature over its own root hash.
    match signature::parse_signature_json(data) {
        Ok(blob) => {
            assert!(!blob.root_hash.is_empty() && !blob.signature.is_empty());
            check(&blob.signature, hex(&blob.root_hash).as_bytes());
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
    // As a bare PKCS#7 blob over the fixtures' root hash, and as a certificate file.
    check(data, ROOT);
    if let Err(reason) = x509::parse_certificates(data, "fuzz") {
        assert!(!reason.is_empty());
    }
});
