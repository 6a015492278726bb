//! Just enough JSON to write our report and systemd-sysext's origin file; a serde stack would
//! double the binary for this.

use std::fmt;

pub enum Json {
    Null,
    Bool(bool),
    Num(u64),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
    /// An object whose keys are data (extension names), in the order given.
    Map(Vec<(String, Json)>),
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(o: Option<T>) -> Json {
        o.map_or(Json::Null, Into::into)
    }
}

/// Escaped as systemd's sd-json writes strings, so our files compare equal to its own byte for byte.
fn escape(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\u{8}' => f.write_str("\\b")?,
            '\u{c}' => f.write_str("\\f")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_str("\"")
}

impl Json {
    fn fields(&self) -> Option<Vec<(&str, &Json)>> {
        match self {
            Json::Obj(fields) => Some(fields.iter().map(|(k, v)| (*k, v)).collect()),
            Json::Map(fields) => Some(fields.iter().map(|(k, v)| (k.as_str(), v)).collect()),
            _ => None,
        }
    }

    /// systemd's `SD_JSON_FORMAT_PRETTY|SD_JSON_FORMAT_NEWLINE`: one member per line, tab
    /// indentation, `"key" : value`, a final newline.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.pretty_at(&mut out, 0).expect("writing to a String cannot fail");
        out.push('\n');
        out
    }

    fn pretty_at(&self, out: &mut String, depth: usize) -> fmt::Result {
        use fmt::Write;
        let indent = |out: &mut String, n: usize| out.extend((0..n).map(|_| '\t'));
        if let Some(fields) = self.fields() {
            if fields.is_empty() {
                return out.write_str("{}");
            }
            out.write_str("{\n")?;
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.write_str(",\n")?;
                }
                indent(out, depth + 1);
                escape(out, k)?;
                out.write_str(" : ")?;
                v.pretty_at(out, depth + 1)?;
            }
            out.write_char('\n')?;
            indent(out, depth);
            return out.write_char('}');
        }
        match self {
            Json::Arr(items) if !items.is_empty() => {
                out.write_str("[\n")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_str(",\n")?;
                    }
                    indent(out, depth + 1);
                    v.pretty_at(out, depth + 1)?;
                }
                out.write_char('\n')?;
                indent(out, depth);
                out.write_char(']')
            }
            other => write!(out, "{other}"),
        }
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Str(s) => escape(f, s),
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Json::Obj(_) | Json::Map(_) => {
                f.write_str("{")?;
                for (i, (k, v)) in self.fields().unwrap_or_default().iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    escape(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nests() {
        let j = Json::Obj(vec![
            ("name", "a\"b\\c\nd\u{1}".into()),
            ("n", Json::Num(3)),
            ("list", Json::Arr(vec![Json::Num(1), Json::Null, None::<String>.into()])),
        ]);
        assert_eq!(j.to_string(), r#"{"name":"a\"b\\c\nd\u0001","n":3,"list":[1,null,null]}"#);
    }

    #[test]
    fn pretty_is_systemds_layout() {
        let j = Json::Obj(vec![
            ("a", Json::Obj(vec![("mode", "no".into())])),
            ("m", Json::Map(vec![("x\ty".into(), Json::Int(-1)), ("e".into(), Json::Map(vec![]))])),
        ]);
        assert_eq!(
            j.pretty(),
            "{\n\t\"a\" : {\n\t\t\"mode\" : \"no\"\n\t},\n\t\"m\" : {\n\t\t\"x\\ty\" : -1,\n\t\t\"e\" : {}\n\t}\n}\n"
        );
    }
}
