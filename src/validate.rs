//! Step 4: does an extension fit this root? Pure rules over plain data, mirroring systemd's
//! extension-release matching, plus one check of our own for sysexts: an image must not replace
//! a base symlink or hide a base directory, because that breaks boot (sysext-bakery#131). For
//! confexts systemd's rules stand alone (configuration replaces configuration); the same clashes
//! are only named.

use crate::class::Class;
use crate::cmdline::parse_bool;
use crate::release::{self, ReleaseInfo};

/// What we know of the root we merge into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: String,
    pub id_like: Vec<String>,
    pub version_id: Option<String>,
    /// The class's API level (`SYSEXT_LEVEL`, `CONFEXT_LEVEL`).
    pub level: Option<String>,
    /// systemd's architecture name (`x86-64`, `arm64`, …).
    pub architecture: String,
}

impl Host {
    pub fn from_release(os: &ReleaseInfo, architecture: &str, class: Class) -> Result<Host, String> {
        let id = os.value("ID").ok_or("os-release has no ID")?;
        Ok(Host {
            id: id.to_string(),
            id_like: os.get("ID_LIKE").unwrap_or("").split_whitespace().map(str::to_owned).collect(),
            version_id: os.value("VERSION_ID").map(str::to_owned),
            level: os.value(class.level_key()).map(str::to_owned),
            architecture: architecture.to_string(),
        })
    }
}

/// systemd's name for the architecture this binary runs on.
pub fn native_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64-le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "loongarch64" => "loongarch64",
        other => other,
    }
}

/// One `extension-release.*` file found in an image's release directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    /// The part after `extension-release.`.
    pub suffix: String,
    /// Value of the `user.extension-release.strict` xattr, if set.
    pub strict_xattr: Option<String>,
    pub content: Vec<u8>,
}

/// Pick the release file systemd would pick for an image called `name`: the exact name, or else
/// exactly one file that is either named after the image's base name or whose strict xattr says
/// false (a renamed image, Flatcar#1338). The base name is the name cut at the first `_` or `+`,
/// where a version suffix starts (`podman_5.4` -> `podman`): systemd 257's
/// `path_extract_image_name` does this, 252 does not (it needs the xattr), so we follow the newer rule.
pub fn pick_release<'a>(name: &str, class: Class, files: &'a [ReleaseFile]) -> Result<&'a ReleaseFile, String> {
    let dir = class.release_dir();
    if let Some(f) = files.iter().find(|f| f.suffix == name) {
        return Ok(f);
    }
    let base = &name[..name.find(['_', '+']).unwrap_or(name.len())];
    let relaxed: Vec<_> = files
        .iter()
        .filter(|f| f.suffix == base || f.strict_xattr.as_deref().and_then(parse_bool) == Some(false))
        .collect();
    match relaxed.as_slice() {
        [one] => Ok(one),
        [] if files.is_empty() => Err(format!("no {dir}/extension-release.{name}")),
        [] => Err(format!(
            "no {dir}/extension-release.{name}; found {}, which does not set \
             user.extension-release.strict=false (image renamed?)",
            files.iter().map(|f| format!("extension-release.{}", f.suffix)).collect::<Vec<_>>().join(", ")
        )),
        many => Err(format!(
            "ambiguous: {} release files could belong to this image ({})",
            many.len(),
            many.iter().map(|f| format!("extension-release.{}", f.suffix)).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Parse the chosen release file, naming it in any error.
pub fn read_release(file: &ReleaseFile) -> Result<ReleaseInfo, String> {
    let info = release::parse(&file.content).map_err(|e| format!("extension-release.{} {e}", file.suffix))?;
    if info.is_empty() {
        return Err(format!("extension-release.{} has no KEY=value lines", file.suffix));
    }
    Ok(info)
}

/// systemd's matching rules, in systemd's order, with a reason a human can act on; the class
/// names the scope and level keys. `scope` is `system`: we merge into the real root, even though
/// we run in the initrd (systemd 262 decides by the root's /etc/initrd-release too).
pub fn release_matches(ext: &ReleaseInfo, host: &Host, scope: &str, class: Class) -> Result<(), String> {
    let scope_key = class.scope_key();
    let scopes: Vec<&str> = match ext.get(scope_key) {
        Some(s) => s.split_whitespace().collect(),
        None => vec!["system", "portable"],
    };
    if !scopes.contains(&scope) {
        return Err(format!("{scope_key} \"{}\" does not include \"{scope}\"", scopes.join(" ")));
    }
    if let Some(arch) = ext.value("ARCHITECTURE") {
        if arch != "_any" && arch != host.architecture {
            return Err(format!("ARCHITECTURE {arch} does not match host {}", host.architecture));
        }
    }
    let id = ext.value("ID").ok_or("extension-release has no ID")?;
    if id == "_any" {
        return Ok(());
    }
    if id != host.id && !host.id_like.iter().any(|l| l == id) {
        let like =
            if host.id_like.is_empty() { String::new() } else { format!(" (ID_LIKE {})", host.id_like.join(" ")) };
        return Err(format!("ID {id} does not match host {}{like}", host.id));
    }
    let level_key = class.level_key();
    let level = ext.value(level_key);
    match (&host.level, level, &host.version_id) {
        (Some(h), Some(e), _) if h != e => Err(format!("{level_key} {e} does not match host {h}")),
        (Some(_), Some(_), _) => Ok(()),
        (_, _, Some(hv)) => match ext.value("VERSION_ID") {
            None => Err(format!("extension-release has no VERSION_ID, host has {hv}")),
            Some(v) if v != hv => Err(format!("VERSION_ID {v} does not match host {hv}")),
            Some(_) => Ok(()),
        },
        // A rolling host (no VERSION_ID), or a host with a level the image does not declare.
        _ => Ok(()),
    }
}

/// What sits at a path, in the base or in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Directory,
    Symlink,
    /// overlayfs's whiteout (a character device 0:0): it removes what lies below.
    Whiteout,
    Other,
}

/// A path where merging the image would change what the base has in a way that breaks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Absolute, as the booted system sees it: `/usr/sbin`.
    pub path: String,
    pub base: Node,
    pub image: Node,
}

/// Whether an image entry of kind `image` over a base entry of kind `base` is refused.
pub fn conflicts(base: Node, image: Node) -> bool {
    match base {
        // A directory or a file over a symlink replaces what the base points to.
        Node::Symlink => image != Node::Symlink,
        // Anything but a directory over a directory hides the whole base directory.
        Node::Directory => image != Node::Directory,
        Node::Whiteout | Node::Other => false,
    }
}

pub fn describe(c: &Conflict) -> String {
    let what = |n: Node| match n {
        Node::Directory => "a directory",
        Node::Symlink => "a symlink",
        Node::Whiteout => "a whiteout",
        Node::Other => "a file",
    };
    let effect =
        if c.base == Node::Symlink { "would replace the base's symlink" } else { "would hide the base's directory" };
    format!("{} is {} in the image and {effect} (sysext-bakery#131)", c.path, what(c.image))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::release::parse_str;

    /// Debian 13 on x86-64, the host most tests check against.
    pub(crate) fn host() -> Host {
        Host {
            id: "debian".into(),
            id_like: vec![],
            version_id: Some("13".into()),
            level: None,
            architecture: "x86-64".into(),
        }
    }

    fn check(ext: &str, host: &Host) -> Result<(), String> {
        release_matches(&parse_str(ext), host, "system", Class::Sysext)
    }

    #[test]
    fn matching_image() {
        assert_eq!(check("ID=debian\nVERSION_ID=13\nARCHITECTURE=x86-64\n", &host()), Ok(()));
        assert_eq!(check("ID=_any\n", &host()), Ok(()));
        assert_eq!(check("ID=debian\nVERSION_ID=13\nARCHITECTURE=_any\n", &host()), Ok(()));
    }

    #[test]
    fn mismatches_name_the_field_and_both_values() {
        assert_eq!(check("ID=fedora\nVERSION_ID=13", &host()).unwrap_err(), "ID fedora does not match host debian");
        assert_eq!(check("ID=debian\nVERSION_ID=12", &host()).unwrap_err(), "VERSION_ID 12 does not match host 13");
        assert_eq!(check("ID=debian", &host()).unwrap_err(), "extension-release has no VERSION_ID, host has 13");
        assert_eq!(
            check("ID=debian\nVERSION_ID=13\nARCHITECTURE=arm64", &host()).unwrap_err(),
            "ARCHITECTURE arm64 does not match host x86-64"
        );
        assert_eq!(check("VERSION_ID=13", &host()).unwrap_err(), "extension-release has no ID");
    }

    #[test]
    fn scope() {
        assert_eq!(
            check("ID=debian\nVERSION_ID=13\nSYSEXT_SCOPE=initrd portable", &host()).unwrap_err(),
            "SYSEXT_SCOPE \"initrd portable\" does not include \"system\""
        );
        assert_eq!(check("ID=debian\nVERSION_ID=13\nSYSEXT_SCOPE=\"initrd system\"", &host()), Ok(()));
        // An empty scope list matches nothing.
        assert!(check("ID=debian\nVERSION_ID=13\nSYSEXT_SCOPE=", &host()).is_err());
    }

    #[test]
    fn id_like() {
        let mut h = host();
        h.id = "flatcar".into();
        h.id_like = vec!["coreos".into(), "debian".into()];
        assert_eq!(check("ID=debian\nVERSION_ID=13", &h), Ok(()));
        assert_eq!(
            check("ID=ubuntu\nVERSION_ID=13", &h).unwrap_err(),
            "ID ubuntu does not match host flatcar (ID_LIKE coreos debian)"
        );
    }

    #[test]
    fn levels_and_rolling_hosts() {
        let mut h = host();
        h.level = Some("1.0".into());
        assert_eq!(check("ID=debian\nSYSEXT_LEVEL=1.0", &h), Ok(()));
        assert_eq!(check("ID=debian\nSYSEXT_LEVEL=2.0", &h).unwrap_err(), "SYSEXT_LEVEL 2.0 does not match host 1.0");
        // Level on the host but not in the image: VERSION_ID decides.
        assert_eq!(check("ID=debian\nVERSION_ID=12", &h).unwrap_err(), "VERSION_ID 12 does not match host 13");
        h.version_id = None;
        assert_eq!(check("ID=debian", &h), Ok(()));
        let rolling = Host { version_id: None, level: None, ..host() };
        assert_eq!(check("ID=debian\nVERSION_ID=anything", &rolling), Ok(()));
    }

    #[test]
    fn host_from_release() {
        let h =
            Host::from_release(&parse_str("ID=debian\nVERSION_ID=\"13\"\nID_LIKE=\"a b\""), "x86-64", Class::Sysext)
                .unwrap();
        assert_eq!(h.id_like, ["a", "b"]);
        assert_eq!(h.version_id.as_deref(), Some("13"));
        assert_eq!(
            Host::from_release(&parse_str("NAME=x"), "x86-64", Class::Sysext).unwrap_err(),
            "os-release has no ID"
        );
    }

    fn pick_release_s<'a>(name: &str, files: &'a [ReleaseFile]) -> Result<&'a ReleaseFile, String> {
        pick_release(name, Class::Sysext, files)
    }

    fn file(suffix: &str, strict: Option<&str>) -> ReleaseFile {
        ReleaseFile { suffix: suffix.into(), strict_xattr: strict.map(str::to_owned), content: b"ID=_any\n".to_vec() }
    }

    #[test]
    fn release_file_choice() {
        let exact = [file("other", Some("0")), file("podman", None)];
        assert_eq!(pick_release_s("podman", &exact).unwrap().suffix, "podman");
        let renamed = [file("podman", None)];
        let e = pick_release_s("podman-5.4", &renamed).unwrap_err();
        assert!(e.contains("found extension-release.podman") && e.contains("strict=false"), "{e}");
        let relaxed = [file("podman", Some("false"))];
        assert_eq!(pick_release_s("podman-5.4", &relaxed).unwrap().suffix, "podman");
        let strict = [file("podman", Some("1"))];
        assert!(pick_release_s("podman-5.4", &strict).is_err());
        // A version suffix after `_` or `+` is cut before comparing, without any xattr.
        let versioned = [file("podman", None), file("other", None)];
        assert_eq!(pick_release_s("podman_5.4", &versioned).unwrap().suffix, "podman");
        assert_eq!(pick_release_s("podman+2", &versioned).unwrap().suffix, "podman");
        assert!(pick_release_s("podman-5.4", &versioned).is_err());
        let base_and_relaxed = [file("podman", None), file("any", Some("false"))];
        assert!(pick_release_s("podman_5.4", &base_and_relaxed).unwrap_err().starts_with("ambiguous: 2"));
        let two = [file("a", Some("0")), file("b", Some("no"))];
        assert!(pick_release_s("c", &two).unwrap_err().starts_with("ambiguous: 2 release files"));
        assert_eq!(pick_release_s("x", &[]).unwrap_err(), "no usr/lib/extension-release.d/extension-release.x");
    }

    #[test]
    fn release_file_content_errors_name_the_file() {
        let mut f = file("podman", None);
        f.content = b"\x7fELF\0\0".to_vec();
        assert_eq!(read_release(&f).unwrap_err(), "extension-release.podman is binary (contains NUL bytes)");
        f.content = b"# only a comment\n".to_vec();
        assert_eq!(read_release(&f).unwrap_err(), "extension-release.podman has no KEY=value lines");
    }

    #[test]
    fn conflict_rules() {
        use Node::*;
        assert!(conflicts(Symlink, Directory));
        assert!(conflicts(Symlink, Other));
        assert!(conflicts(Symlink, Whiteout));
        assert!(conflicts(Directory, Whiteout));
        assert!(!conflicts(Symlink, Symlink));
        assert!(conflicts(Directory, Symlink));
        assert!(conflicts(Directory, Other));
        assert!(!conflicts(Directory, Directory));
        assert!(!conflicts(Other, Other));
        let c = Conflict { path: "/usr/sbin".into(), base: Symlink, image: Directory };
        assert_eq!(
            describe(&c),
            "/usr/sbin is a directory in the image and would replace the base's symlink (sysext-bakery#131)"
        );
    }

    #[test]
    fn confexts_match_by_their_own_keys() {
        let host = Host::from_release(
            &parse_str("ID=debian\nVERSION_ID=13\nCONFEXT_LEVEL=2\nSYSEXT_LEVEL=9"),
            "x86-64",
            Class::Confext,
        )
        .unwrap();
        assert_eq!(host.level.as_deref(), Some("2"));
        let check = |ext: &str| release_matches(&parse_str(ext), &host, "system", Class::Confext);
        assert_eq!(check("ID=debian\nCONFEXT_LEVEL=2\nSYSEXT_SCOPE=initrd"), Ok(()));
        assert_eq!(check("ID=debian\nCONFEXT_LEVEL=3").unwrap_err(), "CONFEXT_LEVEL 3 does not match host 2");
        assert_eq!(check("ID=debian\nSYSEXT_LEVEL=9").unwrap_err(), "extension-release has no VERSION_ID, host has 13");
        assert_eq!(
            check("ID=_any\nCONFEXT_SCOPE=initrd").unwrap_err(),
            "CONFEXT_SCOPE \"initrd\" does not include \"system\""
        );
        assert_eq!(
            pick_release("site", Class::Confext, &[]).unwrap_err(),
            "no etc/extension-release.d/extension-release.site"
        );
    }
}
