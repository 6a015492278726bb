//! Step 1: the kernel command line decides whether we run and which extensions we take.
//!
//! `rd.sysext=` and `rd.confext=` are ours; `rd.systemd.sysext=`, `systemd.sysext=` and their
//! `confext` twins are upstream's switches and can only turn merging off, so that one switch
//! disables both implementations. `systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=` is PID 1's way
//! to give systemd-confext its mutable mode; it is read here too, for initrds without PID 1.

use crate::class::Class;
use crate::discover::image_name_is_valid;

/// systemd-confext's environment variables that `systemd.setenv=` may carry.
pub const MUTABLE_ENV: &str = "SYSTEMD_CONFEXT_MUTABLE_MODE";
pub const OPTIONS_ENV: &str = "SYSTEMD_CONFEXT_OVERLAYFS_MOUNT_OPTIONS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Merge nothing; `by` names the switch, for the log.
    Disabled {
        by: String,
    },
    All,
    /// `rd.sysext=a,b`: only these names.
    Only(Vec<String>),
}

/// What an image must prove before it is mounted at all: `rd.sysext.policy=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// dm-verity with a root hash signed by a trusted certificate.
    Signed,
    /// dm-verity; a signature is not required.
    Verity,
    /// Anything that passes the other checks.
    Any,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Signed => "signed",
            Policy::Verity => "verity",
            Policy::Any => "any",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    sysext: Selection,
    confext: Selection,
    /// `None`: the default, `signed` when a trusted certificate is installed, else `any`.
    pub policy: Option<Policy>,
    /// `systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=VALUE`: the value, as given.
    pub mutable_setenv: Option<String>,
    /// `systemd.setenv=SYSTEMD_CONFEXT_OVERLAYFS_MOUNT_OPTIONS=…` was given (we do not honour it).
    pub options_setenv: bool,
    /// Values we did not understand; each falls back to the default and is logged.
    pub warnings: Vec<String>,
}

impl Cmdline {
    /// Which images of the class the command line lets us merge.
    pub fn selection(&self, class: Class) -> &Selection {
        match class {
            Class::Sysext => &self.sysext,
            Class::Confext => &self.confext,
        }
    }
}

/// systemd's boolean words, case-insensitive.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Split like the kernel does: whitespace separates, double quotes group (and are dropped).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `rd.sysext=` / `rd.confext=`: on, off, or a list of names. A bare switch means "on", as
/// for systemd's boolean options.
fn selection(word: &str, value: Option<&str>, switch: &str, warnings: &mut Vec<String>) -> Selection {
    match value.map(|v| (v, parse_bool(v))) {
        None | Some((_, Some(true))) => Selection::All,
        Some((_, Some(false))) => Selection::Disabled { by: word.to_string() },
        Some((v, None)) => {
            let names: Vec<String> = v.split(',').map(str::to_owned).collect();
            if names.iter().all(|n| image_name_is_valid(n)) {
                Selection::Only(names)
            } else {
                warnings.push(format!(
                    "ignoring {word}: expected 0, 1 or a comma-separated list of image names (as {switch}=a,b)"
                ));
                Selection::All
            }
        }
    }
}

pub fn parse(text: &str) -> Cmdline {
    let mut selections = [Selection::All, Selection::All];
    let mut disabled_by: [Option<String>; 2] = [None, None];
    let mut warnings = Vec::new();
    let mut policy = None;
    let mut mutable_setenv = None;
    let mut options_setenv = false;
    for word in words(text) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        for (i, class) in Class::ALL.into_iter().enumerate() {
            if key == class.switch() {
                selections[i] = selection(&word, value, class.switch(), &mut warnings);
            } else if class.upstream_switches().contains(&key) {
                match value.map(parse_bool) {
                    None | Some(Some(true)) => {}
                    Some(Some(false)) => disabled_by[i] = Some(word.clone()),
                    Some(None) => warnings.push(format!("ignoring {word}: expected a boolean")),
                }
            }
        }
        match key {
            "rd.sysext.policy" => match value {
                Some("signed") => policy = Some(Policy::Signed),
                Some("verity") => policy = Some(Policy::Verity),
                Some("any") => policy = Some(Policy::Any),
                // A typo must not weaken anything: fall back to the default, which is strict.
                _ => warnings.push(format!("ignoring {word}: expected signed, verity or any; using the default")),
            },
            // PID 1 sets what systemd.setenv= says in the environment of every service.
            "systemd.setenv" => match value.and_then(|v| v.split_once('=')) {
                Some((MUTABLE_ENV, v)) => mutable_setenv = Some(v.to_string()),
                Some((OPTIONS_ENV, _)) => options_setenv = true,
                _ => {}
            },
            _ => {}
        }
    }
    // Upstream's switches win over ours, wherever they stand.
    let [sysext, confext] = [0, 1].map(|i| match disabled_by[i].take() {
        Some(by) => Selection::Disabled { by },
        None => selections[i].clone(),
    });
    Cmdline { sysext, confext, policy, mutable_setenv, options_setenv, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert_eq!(parse("quiet").policy, None);
        assert_eq!(parse("rd.sysext.policy=verity").policy, Some(Policy::Verity));
        assert_eq!(parse("rd.sysext.policy=any rd.sysext.policy=signed").policy, Some(Policy::Signed));
        let typo = parse("rd.sysext.policy=sigend");
        assert_eq!(typo.policy, None);
        assert_eq!(
            typo.warnings,
            ["ignoring rd.sysext.policy=sigend: expected signed, verity or any; using the default"]
        );
    }

    fn sel(s: &str) -> Selection {
        parse(s).selection(Class::Sysext).clone()
    }

    fn csel(s: &str) -> Selection {
        parse(s).selection(Class::Confext).clone()
    }

    #[test]
    fn default_is_all() {
        assert_eq!(sel("root=/dev/vda1 ro quiet"), Selection::All);
        assert_eq!(sel(""), Selection::All);
    }

    #[test]
    fn booleans() {
        for v in ["0", "no", "off", "false", "OFF"] {
            assert!(matches!(sel(&format!("rd.sysext={v}")), Selection::Disabled { .. }), "{v}");
        }
        for v in ["1", "yes", "on", "true"] {
            assert_eq!(sel(&format!("rd.sysext={v}")), Selection::All, "{v}");
        }
        assert_eq!(sel("rd.sysext"), Selection::All);
    }

    #[test]
    fn names() {
        assert_eq!(sel("rd.sysext=podman"), Selection::Only(vec!["podman".into()]));
        assert_eq!(
            sel("quiet rd.sysext=podman,kubelet-1.30 ro"),
            Selection::Only(vec!["podman".into(), "kubelet-1.30".into()])
        );
    }

    #[test]
    fn last_one_wins() {
        assert_eq!(sel("rd.sysext=0 rd.sysext=1"), Selection::All);
        assert!(matches!(sel("rd.sysext=podman rd.sysext=off"), Selection::Disabled { .. }));
    }

    #[test]
    fn upstream_switches_disable_and_win() {
        for s in ["rd.systemd.sysext=0", "systemd.sysext=no", "rd.sysext=podman systemd.sysext=0"] {
            match sel(s) {
                Selection::Disabled { by } => assert!(by.contains("sysext="), "{s}: {by}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        assert_eq!(sel("systemd.sysext=1"), Selection::All);
    }

    #[test]
    fn names_follow_systemds_image_name_rule() {
        // What systemd calls a valid image name is a valid name here, and nothing else.
        let long = "x".repeat(255);
        for n in ["podman", ".hidden", "a b", "x\u{85}y", "é", "...", long.as_str()] {
            let c = parse(&format!("rd.sysext=\"{n}\""));
            assert_eq!(c.selection(Class::Sysext), &Selection::Only(vec![n.to_string()]), "{n:?}");
            assert!(c.warnings.is_empty(), "{n:?}");
        }
        let too_long = "x".repeat(256);
        for n in [".#tmp", "a\u{7f}", "a\u{1}b", too_long.as_str(), ".", ".."] {
            let c = parse(&format!("rd.sysext=\"{n}\""));
            assert_eq!(c.selection(Class::Sysext), &Selection::All, "{n:?}");
            assert_eq!(c.warnings.len(), 1, "{n:?}");
        }
    }

    #[test]
    fn bad_values_warn_and_default() {
        for s in ["rd.sysext=", "rd.sysext=a,,b", "rd.sysext=../etc", "rd.sysext=.#hidden"] {
            let c = parse(s);
            assert_eq!(c.selection(Class::Sysext), &Selection::All, "{s}");
            assert_eq!(c.warnings.len(), 1, "{s}");
            assert!(c.warnings[0].contains(s), "{s}: {:?}", c.warnings);
        }
        let c = parse("systemd.sysext=maybe");
        assert_eq!(c.selection(Class::Sysext), &Selection::All);
        assert!(c.warnings[0].contains("systemd.sysext=maybe"));
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(sel("foo=\"a b\" rd.sysext=\"podman\""), Selection::Only(vec!["podman".into()]));
        // A quoted space inside a value keeps it one word: "a b.raw" is a valid image.
        assert_eq!(sel("rd.sysext=\"a b\",c"), Selection::Only(vec!["a b".into(), "c".into()]));
    }

    #[test]
    fn confexts_have_their_own_switches() {
        assert_eq!(csel("rd.sysext=0"), Selection::All);
        assert!(matches!(sel("rd.sysext=0"), Selection::Disabled { .. }));
        assert_eq!(csel("rd.confext=podman-etc,site"), Selection::Only(vec!["podman-etc".into(), "site".into()]));
        assert_eq!(sel("rd.confext=podman-etc"), Selection::All);
        for s in ["rd.confext=0", "rd.systemd.confext=0", "systemd.confext=off", "rd.confext=a systemd.confext=0"] {
            match csel(s) {
                Selection::Disabled { by } => assert!(by.contains("confext="), "{s}: {by}"),
                other => panic!("{s}: {other:?}"),
            }
            assert_eq!(sel(s), Selection::All, "{s}");
        }
        let c = parse("rd.confext=../x");
        assert_eq!(
            c.warnings,
            ["ignoring rd.confext=../x: expected 0, 1 or a comma-separated list of image names (as rd.confext=a,b)"]
        );
    }

    #[test]
    fn the_mutable_mode_pid_1_hands_systemd_confext() {
        let c = parse("quiet systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=ephemeral systemd.setenv=FOO=1");
        assert_eq!(c.mutable_setenv.as_deref(), Some("ephemeral"));
        assert!(!c.options_setenv);
        let c = parse("systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=yes systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=no");
        assert_eq!(c.mutable_setenv.as_deref(), Some("no"));
        assert!(parse("systemd.setenv=SYSTEMD_CONFEXT_OVERLAYFS_MOUNT_OPTIONS=x").options_setenv);
        assert_eq!(parse("systemd.setenv=SYSTEMD_SYSEXT_MUTABLE_MODE=yes").mutable_setenv, None);
    }
}
