//! PEM armor (RFC 7468): `-----BEGIN LABEL-----`, base64, `-----END LABEL-----`, as OpenSSL
//! writes certificate files. Text outside the blocks is ignored, as OpenSSL does.

use super::base64;

/// One block: its label and its base64 body, still encoded.
pub struct Block<'a> {
    pub label: &'a str,
    body: &'a str,
}

impl Block<'_> {
    /// The DER the block holds; whitespace inside the body is ignored.
    pub fn decode(&self) -> Result<Vec<u8>, String> {
        let compact: Vec<u8> = self.body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        base64::decode(&compact)
    }
}

/// Every block of `text`, in order. A BEGIN line without its END line is an error: the file was
/// cut short.
pub fn blocks(text: &str) -> Result<Vec<Block<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin + 11..];
        let Some(label_end) = after.find("-----") else { break };
        let label = &after[..label_end];
        let body_and_rest = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_and_rest.find(&end_marker) else {
            return Err(format!("PEM block \"{}\" has no END line", label.escape_debug()));
        };
        out.push(Block { label, body: &body_and_rest[..body_end] });
        rest = &body_and_rest[body_end + end_marker.len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_their_labels() {
        let text = "junk\n-----BEGIN A-----\naGVs\nbG8=\n-----END A-----\n-----BEGIN B-----\nAA==-----END B-----";
        let b = blocks(text).unwrap();
        assert_eq!(b.iter().map(|b| b.label).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(b[0].decode().unwrap(), b"hello");
        assert_eq!(blocks("-----BEGIN C-----\nAAAA\n").err().unwrap(), "PEM block \"C\" has no END line");
        assert!(blocks("no armor at all").unwrap().is_empty());
    }
}
