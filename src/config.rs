//! systemd's configuration files for systemd-confext, read as systemd 259 and later read them
//! (conf-parser.c): `systemd/confext.conf` from the first of /etc, /run, /usr/local/lib and
//! /usr/lib that has one, then the drop-ins `systemd/confext.conf.d/*.conf` of all four, a name
//! in an earlier directory hiding it in later ones, in the order of their names; the last
//! assignment wins. Only `[ConfExt] Mutable=` matters to us. Pure: the caller reads the files.

/// The directories systemd searches, in its order of precedence.
pub const DIRS: [&str; 4] = ["/etc", "/run", "/usr/local/lib", "/usr/lib"];
pub const MAIN: &str = "systemd/confext.conf";
pub const DROPINS: &str = "systemd/confext.conf.d";
const SECTION: &str = "ConfExt";

/// One drop-in as listed: in which of `DIRS` (its index), its name, and whether it is masked
/// (a symlink to /dev/null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub dir: usize,
    pub name: String,
    pub masked: bool,
}

/// The drop-ins systemd reads, in its order: `*.conf` only, the first directory's file of a
/// name wins (a mask hides the name everywhere), sorted by name.
pub fn dropin_order(listed: &[Listed]) -> Vec<Listed> {
    let mut chosen: Vec<Listed> = Vec::new();
    let mut by_dir = listed.to_vec();
    by_dir.sort_by_key(|l| l.dir);
    for l in by_dir.into_iter().filter(|l| l.name.ends_with(".conf")) {
        if !chosen.iter().any(|c| c.name == l.name) {
            chosen.push(l);
        }
    }
    chosen.retain(|l| !l.masked);
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    chosen
}

/// What the files say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `Mutable=`'s last valid value, and the file that gave it.
    pub mutable: Option<(String, String)>,
    /// `ImagePolicy=`'s last value, as written.
    pub image_policy: Option<String>,
    /// What systemd would warn about; each line ignored.
    pub warnings: Vec<String>,
}

/// Feed one file (`path` as the booted system names it) into `settings`. `valid` says whether
/// a `Mutable=` value parses. An error is fatal to the whole configuration, as in systemd, which
/// then ignores every file.
pub fn parse(settings: &mut Settings, path: &str, bytes: &[u8], valid: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{path}: not valid UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut section: Option<String> = None;
    let mut continued = String::new();
    for (n, raw) in text.lines().enumerate() {
        let n = n + 1;
        // Comment lines are skipped even inside a continuation.
        if raw.trim_start().starts_with(['#', ';']) {
            continue;
        }
        continued.push_str(raw);
        // An odd number of trailing backslashes continues the line, the last one becoming a blank.
        let trailing = continued.chars().rev().take_while(|c| *c == '\\').count();
        if trailing % 2 == 1 {
            continued.pop();
            continued.push(' ');
            continue;
        }
        let line = std::mem::take(&mut continued);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = header.strip_suffix(']').ok_or_else(|| format!("{path}:{n}: invalid section header {line}"))?;
            if name.chars().any(|c| c.is_control() || c == '"' || c == '\'' || c == '\\') {
                return Err(format!("{path}:{n}: invalid section header {line}"));
            }
            if name != SECTION && !name.starts_with("X-") {
                settings.warnings.push(format!("{path}:{n}: unknown section [{name}], ignored"));
            }
            section = Some(name.to_string());
            continue;
        }
        if section.as_deref() != Some(SECTION) {
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            settings.warnings.push(format!("{path}:{n}: not a Key=value line, ignored"));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "Mutable" if valid(value) => settings.mutable = Some((value.to_string(), path.to_string())),
            "Mutable" => settings.warnings.push(format!("{path}:{n}: Mutable={value} is not a mutable mode, ignored")),
            "ImagePolicy" => settings.image_policy = Some(value.to_string()),
            other => settings.warnings.push(format!("{path}:{n}: unknown key {other}= in [ConfExt], ignored")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> bool {
        true
    }

    fn modes(v: &str) -> bool {
        ["no", "yes", "auto", "import", "ephemeral", "ephemeral-import"].contains(&v)
    }

    #[test]
    fn the_last_valid_assignment_in_the_confext_section_wins() {
        let mut s = Settings::default();
        let text = "# comment\n[SysExt]\nMutable=yes\n[ConfExt]\n  Mutable = auto \nMutable=sometimes\nImagePolicy=root=signed\n";
        parse(&mut s, "/etc/systemd/confext.conf", text.as_bytes(), &modes).unwrap();
        assert_eq!(s.mutable, Some(("auto".into(), "/etc/systemd/confext.conf".into())));
        assert_eq!(s.image_policy.as_deref(), Some("root=signed"));
        assert_eq!(
            s.warnings,
            [
                "/etc/systemd/confext.conf:2: unknown section [SysExt], ignored",
                "/etc/systemd/confext.conf:6: Mutable=sometimes is not a mutable mode, ignored"
            ]
        );
        parse(&mut s, "/run/systemd/confext.conf.d/x.conf", b"[ConfExt]\nMutable=ephemeral\n", &modes).unwrap();
        assert_eq!(s.mutable, Some(("ephemeral".into(), "/run/systemd/confext.conf.d/x.conf".into())));
    }

    #[test]
    fn continuations_comments_and_assignments_outside_a_section() {
        let mut s = Settings::default();
        parse(&mut s, "f", b"Mutable=yes\n[ConfExt]\nMutable=\\\n; a comment in between\nimport\n", &any).unwrap();
        assert_eq!(s.mutable, Some(("import".into(), "f".into())));
        let mut s = Settings::default();
        parse(&mut s, "f", b"\xef\xbb\xbf[ConfExt]\nNoEquals\n=x\nOther=1\n", &any).unwrap();
        assert_eq!(s.mutable, None);
        assert_eq!(s.warnings.len(), 3, "{:?}", s.warnings);
    }

    #[test]
    fn a_broken_file_is_fatal_to_the_whole_configuration() {
        for bad in [&b"[ConfExt\nMutable=yes\n"[..], b"[Conf\"Ext]\n", b"[ConfExt]\nMutable=\xff\n"] {
            assert!(parse(&mut Settings::default(), "f", bad, &any).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dropins_are_unioned_by_name_with_the_first_directory_winning() {
        let l = |dir, name: &str, masked| Listed { dir, name: name.into(), masked };
        let listed = [
            l(3, "10-vendor.conf", false),
            l(3, "50-site.conf", false),
            l(0, "50-site.conf", false),
            l(1, "20-run.conf", false),
            l(2, "10-vendor.conf", true),
            l(0, "README", false),
        ];
        assert_eq!(dropin_order(&listed), [l(1, "20-run.conf", false), l(0, "50-site.conf", false)]);
    }
}
