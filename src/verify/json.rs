//! A strict, bounded JSON reader (RFC 8259) for the verity signature partition: strings with
//! every escape, numbers, literals and nesting up to MAX_DEPTH levels, each error with its byte
//! offset.

/// JSON nesting we follow before giving up.
const MAX_DEPTH: usize = 32;

/// A strict, bounded JSON reader over UTF-8 text: just enough to pick strings out of an object
/// and skip everything else.
pub struct Reader<'a> {
    s: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Reader { s: text, pos: 0 }
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.s.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    pub fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    pub fn error(&self, expected: &str) -> String {
        match self.peek() {
            Some(c) if c.is_ascii_graphic() => {
                format!("is not valid JSON: expected {expected} at byte {}, found '{}'", self.pos, c as char)
            }
            Some(c) => format!("is not valid JSON: expected {expected} at byte {}, found byte 0x{c:02x}", self.pos),
            None => format!("is not valid JSON: expected {expected} at byte {}, found the end", self.pos),
        }
    }

    pub fn expect(&mut self, c: u8) -> Result<(), String> {
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

    pub fn string(&mut self) -> Result<String, String> {
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
    pub fn value(&mut self, depth: usize) -> Result<(), String> {
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
