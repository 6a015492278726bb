//! Distinguished names (an X.509 issuer or subject) as text, RFC 4514 style: `CN=podman, O=Example`.
//! Only for messages: names are compared as raw DER, never as this text.

use super::der::{oid_dotted, Der, OID, SEQUENCE, SET};
use super::hex;

/// A distinguished name (the content of its SEQUENCE) in RFC 4514 order, most specific first;
/// bounded, so that a hostile certificate cannot flood the journal.
pub fn text(name: &[u8]) -> String {
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
