//! os-release(5) syntax, for the host's os-release and the extensions' extension-release files.
//!
//! The rules follow systemd's environment-file parser: `KEY=value` lines, `#`/`;` comments,
//! single quotes (literal), double quotes (backslash escapes `"\`$` and line continuation),
//! unquoted values with backslash escapes and trailing white space dropped. Lines whose key is not
//! a valid variable name are ignored, as systemd ignores them.

/// Larger than any sane release file; a bigger one is refused rather than read into memory.
pub const MAX_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseInfo {
    pairs: Vec<(String, String)>,
}

impl ReleaseInfo {
    /// The last assignment wins, as in a shell.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Like `get`, but an empty value counts as unset (systemd's `isempty()`).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn key_is_valid(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parse bytes as read from disk. Binary junk and oversized files get a reason, not a guess.
pub fn parse(bytes: &[u8]) -> Result<ReleaseInfo, String> {
    if bytes.len() > MAX_SIZE {
        return Err(format!("is larger than {} KiB", MAX_SIZE / 1024));
    }
    if bytes.contains(&0) {
        return Err("is binary (contains NUL bytes)".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "is not valid UTF-8".to_string())?;
    Ok(parse_str(text))
}

#[derive(Clone, Copy)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    Single,
    Double,
    DoubleEscape,
    Comment,
    CommentEscape,
}

pub fn parse_str(text: &str) -> ReleaseInfo {
    use State::*;
    let mut pairs = Vec::new();
    let mut state = PreKey;
    let mut key = String::new();
    let mut value = String::new();
    // Length of `value` up to the last character that must not be trimmed (quoted or escaped).
    let mut keep = 0;
    let mut finish = |key: &mut String, value: &mut String, keep: &mut usize| {
        value.truncate((*keep).max(value.trim_end().len()));
        let k = key.trim_end();
        if key_is_valid(k) {
            pairs.push((k.to_string(), std::mem::take(value)));
        }
        key.clear();
        value.clear();
        *keep = 0;
    };
    for c in text.chars() {
        state = match (state, c) {
            (PreKey, '#' | ';') => Comment,
            (PreKey, c) if c.is_whitespace() => PreKey,
            (PreKey, c) => {
                key.push(c);
                Key
            }
            (Key, '=') => PreValue,
            (Key, '\n') => {
                key.clear();
                PreKey
            }
            (Key, c) => {
                key.push(c);
                Key
            }
            (PreValue | Value, '\n') => {
                finish(&mut key, &mut value, &mut keep);
                PreKey
            }
            (PreValue, c) if c.is_whitespace() => PreValue,
            (PreValue | Value, '\'') => Single,
            (PreValue | Value, '"') => Double,
            (PreValue | Value, '\\') => ValueEscape,
            (PreValue | Value, c) => {
                value.push(c);
                Value
            }
            // Backslash-newline continues the line; any other escaped character is literal.
            (ValueEscape, '\n') => Value,
            (ValueEscape, c) => {
                value.push(c);
                keep = value.len();
                Value
            }
            (Single, '\'') => {
                keep = value.len();
                Value
            }
            (Single, c) => {
                value.push(c);
                Single
            }
            (Double, '"') => {
                keep = value.len();
                Value
            }
            (Double, '\\') => DoubleEscape,
            (Double, c) => {
                value.push(c);
                Double
            }
            (DoubleEscape, '\n') => Double,
            (DoubleEscape, c) => {
                if !matches!(c, '"' | '\\' | '`' | '$') {
                    value.push('\\');
                }
                value.push(c);
                Double
            }
            (Comment, '\\') => CommentEscape,
            (Comment, '\n') => PreKey,
            (Comment, _) | (CommentEscape, _) => Comment,
        };
    }
    if matches!(state, PreValue | Value | ValueEscape | Single | Double | DoubleEscape) {
        finish(&mut key, &mut value, &mut keep);
    }
    ReleaseInfo { pairs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_quoted_and_escaped() {
        let r = parse_str(
            "# comment\n\nID=debian\nNAME=\"Debian GNU/Linux\"\nPRETTY='single $quoted \\n'\n\
             ESC=a\\ b\\\\c\nDQ=\"say \\\"hi\\\" \\x\"\n  INDENT = spaced  \n; other comment\n",
        );
        assert_eq!(r.get("ID"), Some("debian"));
        assert_eq!(r.get("NAME"), Some("Debian GNU/Linux"));
        assert_eq!(r.get("PRETTY"), Some("single $quoted \\n"));
        assert_eq!(r.get("ESC"), Some("a b\\c"));
        assert_eq!(r.get("DQ"), Some("say \"hi\" \\x"));
        assert_eq!(r.get("INDENT"), Some("spaced"));
        assert_eq!(r.get("other"), None);
    }

    #[test]
    fn trailing_space_kept_only_when_quoted() {
        let r = parse_str("A=x   \nB=\"x  \"\nC=x\\ \n");
        assert_eq!(r.get("A"), Some("x"));
        assert_eq!(r.get("B"), Some("x  "));
        assert_eq!(r.get("C"), Some("x "));
    }

    #[test]
    fn continuation_and_last_wins() {
        let r = parse_str("A=one\\\ntwo\nB=\"multi\nline\"\nA=again");
        assert_eq!(r.get("A"), Some("again"));
        assert_eq!(r.get("B"), Some("multi\nline"));
    }

    #[test]
    fn invalid_keys_and_lines_are_ignored() {
        let r = parse_str("1BAD=x\nno equals sign\nGOOD=1\nAL-SO=bad\n=empty\n");
        assert_eq!(r.get("GOOD"), Some("1"));
        assert_eq!(r.get("1BAD"), None);
        assert_eq!(r.get("AL-SO"), None);
        assert_eq!(r.pairs.len(), 1);
    }

    #[test]
    fn empty_value_is_unset_for_value() {
        let r = parse_str("VERSION_ID=\nID=\"\"\n");
        assert_eq!(r.get("VERSION_ID"), Some(""));
        assert_eq!(r.value("VERSION_ID"), None);
        assert_eq!(r.value("ID"), None);
    }

    #[test]
    fn junk_is_refused_with_a_reason() {
        assert_eq!(parse(b"ID=x\0\x01\x02").unwrap_err(), "is binary (contains NUL bytes)");
        assert_eq!(parse(&[b'I', b'D', b'=', 0xff, 0xfe]).unwrap_err(), "is not valid UTF-8");
        let huge = vec![b'#'; MAX_SIZE + 1];
        assert!(parse(&huge).unwrap_err().contains("larger than 64 KiB"));
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn unterminated_quote_still_yields_value() {
        assert_eq!(parse_str("ID=\"debian").get("ID"), Some("debian"));
    }
}
