//! The sysroot's /etc/fstab, read for one question: is a search path of ours on a file system of
//! its own? Pure, so it is unit-tested and fuzzed; whether that file system is mounted is asked
//! of the kernel by the caller.
//!
//! The format (fstab(5)): one entry a line, fields separated by blanks, `#` starts a comment,
//! and a blank, tab, newline or backslash inside a field is written as an octal escape (`\040`).

/// One line of fstab, as far as we use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What is mounted: `UUID=…`, `LABEL=…`, `/dev/vdb1`.
    pub source: String,
    /// Where, simplified: `/var`.
    pub target: String,
    /// The mount options, in order.
    pub options: Vec<String>,
}

impl Entry {
    pub fn has_option(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }
}

/// A field with its octal escapes (`\040` and the like) turned back into bytes. A backslash
/// that starts no escape stays as it is, as libmount does.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.map(|d| d.iter().fold(0u32, |v, c| v * 8 + (c - b'0') as u32)) {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/var//lib/./` as `/var/lib`; a path that is not absolute is returned as it is (fstab has
/// `none` and `swap` there).
fn simplify(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    format!("/{}", parts.join("/"))
}

/// Every entry of `text` that mounts a file system somewhere (swap and the like are left out).
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            if line.starts_with('#') {
                return None;
            }
            let mut fields = line.split_ascii_whitespace().map(unescape);
            let (source, target) = (fields.next()?, simplify(&fields.next()?));
            let fstype = fields.next().unwrap_or_default();
            let options = fields.next().unwrap_or_default().split(',').map(str::to_string).collect();
            (target.starts_with('/') && fstype != "swap").then_some(Entry { source, target, options })
        })
        .collect()
}

/// The entry whose file system holds `path`: the one with the longest target that is `path` or
/// one of its parents, the root left out (it is always mounted). The last such line wins, as a
/// later mount on the same place covers an earlier one.
pub fn holding<'a>(entries: &'a [Entry], path: &str) -> Option<&'a Entry> {
    let path = simplify(path);
    entries
        .iter()
        .filter(|e| e.target != "/" && (path == e.target || path.starts_with(&format!("{}/", e.target))))
        .fold(None, |best: Option<&Entry>, e| match best {
            Some(b) if b.target.len() > e.target.len() => Some(b),
            _ => Some(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_comments_and_escapes() {
        let text = "# /etc/fstab\n\n  UUID=1 / ext4 defaults 0 1\nLABEL=my\\040var /var// xfs rw,x-initrd.mount 0 2\n\
                    /dev/vdb2 none swap sw 0 0\n/swapfile swap swap defaults\ntmpfs /tmp tmpfs\n  # indented comment\n\
                    incomplete\nserver:/x relative nfs defaults\n";
        let e = parse(text);
        assert_eq!(e.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["/", "/var", "/tmp"]);
        assert_eq!(e[1].source, "LABEL=my var");
        assert!(e[1].has_option("x-initrd.mount") && !e[1].has_option("x-initrd"));
        assert_eq!(e[2].options, [""]);
        assert_eq!(unescape("a\\011b\\\\c\\9"), "a\tb\\\\c\\9");
        assert_eq!(unescape("\\777\\0"), "\\777\\0");
    }

    #[test]
    fn the_entry_holding_a_path() {
        let e = parse("/dev/a / ext4 x\n/dev/b /var ext4 x\n/dev/c /var/lib ext4 x\n/dev/d /variable ext4 x\n");
        assert_eq!(holding(&e, "/var/lib/extensions").map(|e| e.source.as_str()), Some("/dev/c"));
        assert_eq!(holding(&e, "/var/cache").map(|e| e.source.as_str()), Some("/dev/b"));
        assert_eq!(holding(&e, "/var/").map(|e| e.source.as_str()), Some("/dev/b"));
        assert_eq!(holding(&e, "/etc/extensions"), None);
        // A later line for the same place wins.
        let e = parse("/dev/b /var ext4 x\n/dev/e /var xfs x\n");
        assert_eq!(holding(&e, "/var/lib/extensions").map(|e| e.source.as_str()), Some("/dev/e"));
    }
}
