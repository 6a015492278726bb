//! The verity signature partition of a DDI, as systemd-repart writes it: JSON
//! `{"rootHash":"<hex>","signature":"<base64 DER PKCS#7>"}`, possibly with other keys, then NUL
//! padding to the partition's end.

use super::{base64, json, unhex};

/// The largest verity signature partition we read, as systemd.
pub const MAX_PARTITION: usize = 4 << 20;
/// The largest JSON text in it. Real ones are a few KiB.
pub const MAX_JSON: usize = 1 << 20;

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
    let mut p = json::Reader::new(text);
    p.ws();
    if p.at_end() {
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
    if !p.at_end() {
        return Err(format!("is not valid JSON: data after the object at byte {}", p.pos));
    }
    let root_hash = root_hash.ok_or("lacks the \"rootHash\" key")?;
    let signature = signature.ok_or("lacks the \"signature\" key")?;
    let root_hash = unhex(&root_hash).map_err(|e| format!("has a rootHash that is not hex: {e}"))?;
    let signature =
        base64::decode(signature.as_bytes()).map_err(|e| format!("has a signature that is not base64: {e}"))?;
    Ok(SignatureBlob { root_hash, signature })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::fixtures::{fixture, ROOT};
    use crate::verify::hex;
    use crate::verify::pkcs7::check;
    use crate::verify::x509::tests::{certs, trusted, RSA_SUBJECT};

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
}
