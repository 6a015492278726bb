//! Base64, standard alphabet (RFC 4648), as PEM bodies and the signature partition's JSON use it.

/// Standard-alphabet base64 with optional '=' padding; trailing whitespace is ignored, any
/// other is refused.
pub fn decode(s: &[u8]) -> Result<Vec<u8>, String> {
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

    #[test]
    fn padding_is_optional_and_checked() {
        assert_eq!(decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode(b"+/+/").unwrap(), vec![0xfb, 0xff, 0xbf]);
        assert_eq!(decode(b"aGVsbG8=\n").unwrap(), b"hello");
        assert_eq!(decode(b"A").unwrap_err(), "bad length 1 (with 0 '=')");
        assert_eq!(decode(b"AA=A").unwrap_err(), "'=' at position 2");
        assert_eq!(decode(b"").unwrap_err(), "it is empty");
    }
}
