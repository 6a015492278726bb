//! systemd-confext's mutable modes (systemd 256 and later, sysext.c): which mode applies, how it
//! was chosen, and what the /etc overlay is made of: its layers, its upper and work directory,
//! the directory systemd records in `origin`. Pure; `EtcFacts` is gathered by the pipeline.
//!
//! | mode | writes go to | the host's /etc | also a lower layer |
//! |---|---|---|---|
//! | `no` | nowhere: /etc is read-only | lowest layer | – |
//! | `yes` | M (created) | lowest layer, or the upper itself when M is /etc | – |
//! | `auto` | M if it exists, else nowhere | as for `yes` | – |
//! | `import` | nowhere: read-only | lowest layer | M below META, if it exists |
//! | `ephemeral` | a tmpfs, gone at unmerge | lowest layer | – |
//! | `ephemeral-import` | a tmpfs | lowest layer | M below META, if it exists |
//!
//! M is `/var/lib/extensions.mutable/etc` inside the root, resolved there (a symlink to /etc makes
//! the host's /etc the upper, Flatcar's layout); the work directory is `.systemd-etc-workdir` next
//! to the upper.

use std::fmt;

use crate::cmdline::parse_bool;

/// Where persistent writes to /etc go, inside the root (`MUTABLE_EXTENSIONS_BASE_DIR` + `etc`).
pub const MUTABLE_DIR: &str = "/var/lib/extensions.mutable/etc";
/// systemd-confext's workspace in the booted system; the ephemeral modes record their upper
/// below it in `origin`.
pub const EPHEMERAL_DIR: &str = "/run/systemd/sysext/etc";
/// The work directory's name, next to the upper (`work_dir_for_hierarchy`).
pub const WORK_DIR: &str = ".systemd-etc-workdir";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    No,
    Yes,
    Auto,
    Import,
    Ephemeral,
    EphemeralImport,
}

impl Mode {
    pub const ALL: [Mode; 6] = [Mode::No, Mode::Yes, Mode::Auto, Mode::Import, Mode::Ephemeral, Mode::EphemeralImport];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::No => "no",
            Mode::Yes => "yes",
            Mode::Auto => "auto",
            Mode::Import => "import",
            Mode::Ephemeral => "ephemeral",
            Mode::EphemeralImport => "ephemeral-import",
        }
    }

    /// systemd's rule: a boolean first (`true` is `yes`), then the names, exactly.
    pub fn parse(v: &str) -> Option<Mode> {
        match parse_bool(v) {
            Some(true) => Some(Mode::Yes),
            Some(false) => Some(Mode::No),
            None => Mode::ALL.into_iter().find(|m| m.as_str() == v),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who chose the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `initrd-sysext --mutable=` (a unit drop-in).
    Argv,
    /// `SYSTEMD_CONFEXT_MUTABLE_MODE` in our environment (PID 1's `systemd.setenv=`, a drop-in).
    Environment,
    /// `systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=` on the kernel command line, read by us
    /// where no PID 1 put it into our environment.
    KernelCmdline,
    /// `[ConfExt] Mutable=` in this file.
    Config(String),
    /// Nobody: systemd's default, `no`.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Argv => f.write_str("--mutable"),
            Source::Environment => f.write_str("$SYSTEMD_CONFEXT_MUTABLE_MODE"),
            Source::KernelCmdline => f.write_str("systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE"),
            Source::Config(file) => f.write_str(file),
            Source::Default => f.write_str("the default"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub mode: Mode,
    pub source: Source,
}

/// The candidates, each as given (unparsed).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub argv: Option<String>,
    pub env: Option<String>,
    pub cmdline: Option<String>,
    /// `Mutable=` from confext.conf and the file that set it (already validated).
    pub config: Option<(String, String)>,
}

/// systemd 262's precedence (`context_from_cmdline`): argv, then the environment, then the
/// configuration files, then `no`. A value that does not parse is warned about and skipped.
pub fn choose(inputs: &Inputs, warnings: &mut Vec<String>) -> Choice {
    let candidates = [
        (inputs.argv.as_deref(), Source::Argv),
        (inputs.env.as_deref(), Source::Environment),
        // Without PID 1 nobody turned systemd.setenv= into our environment.
        (if inputs.env.is_none() { inputs.cmdline.as_deref() } else { None }, Source::KernelCmdline),
    ];
    for (value, source) in candidates {
        let Some(value) = value else { continue };
        match Mode::parse(value) {
            Some(mode) => return Choice { mode, source },
            None => warnings.push(format!("ignoring mutable mode {value:?} from {source}: not one of no, yes, auto, import, ephemeral, ephemeral-import")),
        }
    }
    match inputs.config.as_ref().and_then(|(v, file)| Some((Mode::parse(v)?, file))) {
        Some((mode, file)) => Choice { mode, source: Source::Config(file.clone()) },
        None => Choice { mode: Mode::No, source: Source::Default },
    }
}

/// What is at a path that matters, in the base or an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A regular file with an ID in it (or anything else PID 1 can read).
    Present,
    /// Empty or `uninitialized`: PID 1 makes a transient ID on a read-only /etc.
    Unset,
    /// An overlayfs whiteout: it hides whatever lies below.
    Whiteout,
}

/// M as found in the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutableDir {
    /// Not there; `path` is where creating it puts it (its existing ancestors resolved).
    Missing { path: String, read_only_fs: bool },
    Dir {
        /// Resolved inside the root: `/var/lib/extensions.mutable/etc`, or `/etc`.
        path: String,
        mode: u32,
        read_only_fs: bool,
        /// Whether its parent (where the work directory goes) is on the same file system.
        parent_same_fs: bool,
        /// What it holds at `machine-id`, for an import.
        machine_id: Option<Entry>,
    },
    /// There, but no directory systemd could use: the reason.
    Unusable(String),
}

/// What the pipeline found out about the root's /etc and M.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFacts {
    /// The permission bits of the root's /etc.
    pub mode: u32,
    /// The root's /etc has entries (an empty one is no layer).
    pub host_has_entries: bool,
    pub machine_id: Option<Entry>,
    pub mutable_dir: MutableDir,
    /// A separate /var that the initrd has not mounted, as the note that says so.
    pub var_unmounted: Option<String>,
}

/// Where writes to the merged /etc go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upper {
    /// Nowhere: /etc is read-only.
    None,
    /// A directory of the root (resolved inside it), its work directory next to it; `create`
    /// when it does not exist yet.
    Persistent { dir: String, work: String, create: bool },
    /// A fresh tmpfs, gone when the overlay goes.
    Ephemeral,
}

/// The overlay /etc will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub choice: Choice,
    pub upper: Upper,
    /// M, imported read-only below META.
    pub import: Option<String>,
    /// The host's /etc is the lowest layer (not when it is the upper, or empty).
    pub host_lower: bool,
    /// `origin`'s `mutableDirs["/etc"]`, as systemd 262 computes it.
    pub recorded: Option<String>,
}

impl Layout {
    pub fn read_only(&self) -> bool {
        self.upper == Upper::None
    }

    /// META's `work_dir`: the work directory relative to the root, for a persistent upper only
    /// (systemd removes it at unmerge).
    pub fn work_dir_file(&self) -> Option<String> {
        match &self.upper {
            Upper::Persistent { work, .. } => Some(work.trim_start_matches('/').to_string()),
            _ => None,
        }
    }
}

/// The work directory for an upper at `dir` (inside the root): next to it.
pub fn work_dir(dir: &str) -> String {
    match dir.rsplit_once('/') {
        Some(("", _)) | None => format!("/{WORK_DIR}"),
        Some((parent, _)) => format!("{parent}/{WORK_DIR}"),
    }
}

/// M as a persistent upper: the checks systemd makes (`resolve_mutable_directory`,
/// `determine_upper_dir`, `work_dir_for_hierarchy`), each failure with its fix.
fn persistent(choice: &Choice, facts: &EtcFacts, create: bool) -> Result<Option<(Upper, bool, String)>, String> {
    match &facts.mutable_dir {
        MutableDir::Missing { .. } if !create => Ok(None),
        MutableDir::Missing { path, read_only_fs: true } => Err(format!(
            "mutable mode {} needs {path} created, and its file system is read-only (the sysroot is mounted ro: \
             add rw to the kernel command line)",
            choice.mode
        )),
        MutableDir::Missing { path, .. } => {
            Ok(Some((Upper::Persistent { dir: path.clone(), work: work_dir(path), create: true }, true, path.clone())))
        }
        MutableDir::Unusable(reason) => Err(format!("{MUTABLE_DIR} cannot be used: {reason}")),
        MutableDir::Dir { path, mode, read_only_fs, parent_same_fs, .. } => {
            if *mode != facts.mode {
                return Err(format!(
                    "{path} has mode {mode:04o}, /etc has {:04o}; systemd-confext refuses a mutable directory whose \
                     mode differs (chmod {:04o} it)",
                    facts.mode, facts.mode
                ));
            }
            if *read_only_fs {
                return Err(format!(
                    "{path} is on a read-only file system and cannot take writes (the sysroot is mounted ro: add rw \
                     to the kernel command line)"
                ));
            }
            if !parent_same_fs {
                return Err(format!(
                    "{path} is a mount point of its own: its work directory {} would be on another file system",
                    work_dir(path)
                ));
            }
            let host_lower = path != "/etc";
            Ok(Some((
                Upper::Persistent { dir: path.clone(), work: work_dir(path), create: false },
                host_lower,
                path.clone(),
            )))
        }
    }
}

/// M as an imported lower layer, if it exists; it must not be /etc itself (systemd: ELOOP).
fn imported(facts: &EtcFacts) -> Result<Option<String>, String> {
    match &facts.mutable_dir {
        MutableDir::Dir { path, .. } if path == "/etc" => {
            Err(format!("{MUTABLE_DIR} is /etc itself, which cannot be imported below /etc (systemd: ELOOP)"))
        }
        MutableDir::Dir { path, .. } => Ok(Some(path.clone())),
        MutableDir::Missing { .. } => Ok(None),
        MutableDir::Unusable(reason) => Err(format!("{MUTABLE_DIR} cannot be used: {reason}")),
    }
}

/// The overlay for `choice`, or why systemd-confext would fail to make it. The checks are the
/// ones systemd fails a merge on; they come before any mount.
pub fn layout(choice: &Choice, facts: &EtcFacts) -> Result<Layout, String> {
    let needs_m = !matches!(choice.mode, Mode::No | Mode::Ephemeral);
    if let Some(note) = facts.var_unmounted.as_ref().filter(|_| needs_m) {
        return Err(format!("mutable mode {} needs {MUTABLE_DIR}, but {note}", choice.mode));
    }
    let host = facts.host_has_entries;
    let mut l = Layout { choice: choice.clone(), upper: Upper::None, import: None, host_lower: host, recorded: None };
    match choice.mode {
        Mode::No => {}
        Mode::Yes | Mode::Auto => {
            if let Some((upper, host_lower, recorded)) = persistent(choice, facts, choice.mode == Mode::Yes)? {
                (l.upper, l.host_lower, l.recorded) = (upper, host && host_lower, Some(recorded));
            }
        }
        Mode::Import => {
            l.import = imported(facts)?;
            l.recorded = l.import.clone();
        }
        Mode::Ephemeral | Mode::EphemeralImport => {
            if choice.mode == Mode::EphemeralImport {
                l.import = imported(facts)?;
            }
            l.upper = Upper::Ephemeral;
            l.recorded = Some(EPHEMERAL_DIR.to_string());
        }
    }
    Ok(l)
}

/// What /etc/machine-id is in the merged view, reading down from the top: an imported M, the
/// confexts (`images`, top first, each `None` when it has no entry), the host's.
pub fn merged_machine_id(l: &Layout, facts: &EtcFacts, images: &[Option<Entry>]) -> Option<Entry> {
    let import = match (&l.import, &facts.mutable_dir) {
        (Some(_), MutableDir::Dir { machine_id, .. }) => *machine_id,
        _ => None,
    };
    let host = if l.host_lower || matches!(l.upper, Upper::Persistent { .. }) { facts.machine_id } else { None };
    let top = std::iter::once(import).chain(images.iter().copied()).chain(std::iter::once(host)).flatten().next();
    top.filter(|e| *e != Entry::Whiteout)
}

/// What a read-only /etc means on this root, for the line that says so.
pub fn read_only_consequence(machine_id: Option<Entry>) -> &'static str {
    match machine_id {
        None => {
            "PID 1 has no /etc/machine-id and cannot write one (\"System cannot boot: Missing /etc/machine-id and /etc \
             is mounted read-only\")"
        }
        Some(Entry::Unset) => {
            "the machine ID is transient (a new one every boot, from /run), and first-boot writes to /etc (users, \
             ssh host keys, tmpfiles rules) fail"
        }
        Some(_) => {
            "nothing can write to /etc until the next boot (users, ssh host keys, tmpfiles rules, podman networks)"
        }
    }
}

/// How to choose a mode, for the messages.
pub const HOW_TO_CHOOSE: &str = "set Mutable= in [ConfExt] of /etc/systemd/confext.conf (e.g. Mutable=ephemeral, or \
     Mutable=auto with /var/lib/extensions.mutable/etc), or systemd.setenv=SYSTEMD_CONFEXT_MUTABLE_MODE=MODE on the \
     kernel command line";

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(m: MutableDir) -> EtcFacts {
        EtcFacts {
            mode: 0o755,
            host_has_entries: true,
            machine_id: Some(Entry::Present),
            mutable_dir: m,
            var_unmounted: None,
        }
    }

    fn dir(path: &str) -> MutableDir {
        MutableDir::Dir { path: path.into(), mode: 0o755, read_only_fs: false, parent_same_fs: true, machine_id: None }
    }

    fn missing() -> MutableDir {
        MutableDir::Missing { path: MUTABLE_DIR.into(), read_only_fs: false }
    }

    fn chosen(mode: Mode) -> Choice {
        Choice { mode, source: Source::Config("/etc/systemd/confext.conf".into()) }
    }

    #[test]
    fn modes_parse_as_systemd_parses_them() {
        assert_eq!(Mode::parse("true"), Some(Mode::Yes));
        assert_eq!(Mode::parse("OFF"), Some(Mode::No));
        assert_eq!(Mode::parse("ephemeral-import"), Some(Mode::EphemeralImport));
        assert_eq!(Mode::parse("Auto"), None);
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
    }

    #[test]
    fn precedence_is_argv_environment_config_default() {
        let mut w = Vec::new();
        let cfg = Some(("auto".to_string(), "/etc/systemd/confext.conf".to_string()));
        let mut i = Inputs { argv: None, env: None, cmdline: None, config: cfg };
        assert_eq!(choose(&i, &mut w), chosen(Mode::Auto));
        i.cmdline = Some("ephemeral".into());
        assert_eq!(choose(&i, &mut w), Choice { mode: Mode::Ephemeral, source: Source::KernelCmdline });
        // PID 1 already put the kernel command line's value into the environment.
        i.env = Some("import".into());
        assert_eq!(choose(&i, &mut w), Choice { mode: Mode::Import, source: Source::Environment });
        i.argv = Some("1".into());
        assert_eq!(choose(&i, &mut w), Choice { mode: Mode::Yes, source: Source::Argv });
        assert!(w.is_empty());
        // A bad value is skipped with a warning, as systemd does with its environment.
        let i = Inputs { env: Some("sometimes".into()), ..Inputs::default() };
        assert_eq!(choose(&i, &mut w), Choice { mode: Mode::No, source: Source::Default });
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("\"sometimes\" from $SYSTEMD_CONFEXT_MUTABLE_MODE"), "{w:?}");
    }

    #[test]
    fn each_mode_builds_systemds_overlay() {
        let l = layout(&chosen(Mode::No), &facts(dir(MUTABLE_DIR))).unwrap();
        assert!(l.read_only() && l.host_lower && l.import.is_none() && l.recorded.is_none());

        let l = layout(&chosen(Mode::Yes), &facts(missing())).unwrap();
        let work = "/var/lib/extensions.mutable/.systemd-etc-workdir".to_string();
        assert_eq!(l.upper, Upper::Persistent { dir: MUTABLE_DIR.into(), work: work.clone(), create: true });
        assert!(l.host_lower);
        assert_eq!(l.recorded.as_deref(), Some(MUTABLE_DIR));
        assert_eq!(l.work_dir_file().as_deref(), Some("var/lib/extensions.mutable/.systemd-etc-workdir"));

        let l = layout(&chosen(Mode::Auto), &facts(missing())).unwrap();
        assert!(l.read_only() && l.recorded.is_none());
        let l = layout(&chosen(Mode::Auto), &facts(dir(MUTABLE_DIR))).unwrap();
        assert_eq!(l.upper, Upper::Persistent { dir: MUTABLE_DIR.into(), work, create: false });

        // Flatcar: M is a link to /etc, so the host's /etc is the upper and wins.
        let l = layout(&chosen(Mode::Auto), &facts(dir("/etc"))).unwrap();
        assert_eq!(
            l.upper,
            Upper::Persistent { dir: "/etc".into(), work: "/.systemd-etc-workdir".into(), create: false }
        );
        assert!(!l.host_lower);
        assert_eq!(l.recorded.as_deref(), Some("/etc"));
        assert_eq!(l.work_dir_file().as_deref(), Some(".systemd-etc-workdir"));

        let l = layout(&chosen(Mode::Import), &facts(dir(MUTABLE_DIR))).unwrap();
        assert!(l.read_only() && l.host_lower);
        assert_eq!((l.import.as_deref(), l.recorded.as_deref()), (Some(MUTABLE_DIR), Some(MUTABLE_DIR)));
        let l = layout(&chosen(Mode::Import), &facts(missing())).unwrap();
        assert_eq!((l.import, l.recorded), (None, None));

        let l = layout(&chosen(Mode::Ephemeral), &facts(dir(MUTABLE_DIR))).unwrap();
        assert_eq!((l.upper.clone(), l.import.clone()), (Upper::Ephemeral, None));
        assert_eq!(l.recorded.as_deref(), Some(EPHEMERAL_DIR));
        assert_eq!(l.work_dir_file(), None);
        let l = layout(&chosen(Mode::EphemeralImport), &facts(dir(MUTABLE_DIR))).unwrap();
        assert_eq!((l.upper, l.import.as_deref()), (Upper::Ephemeral, Some(MUTABLE_DIR)));
    }

    #[test]
    fn what_systemd_fails_on_is_refused_before_any_mount() {
        let e = |mode, m| layout(&chosen(mode), &facts(m)).unwrap_err();
        assert!(e(Mode::Import, dir("/etc")).contains("ELOOP"));
        assert!(e(Mode::EphemeralImport, dir("/etc")).contains("ELOOP"));
        let wrong = MutableDir::Dir {
            path: MUTABLE_DIR.into(),
            mode: 0o700,
            read_only_fs: false,
            parent_same_fs: true,
            machine_id: None,
        };
        assert!(e(Mode::Auto, wrong.clone()).contains("has mode 0700, /etc has 0755"));
        // import does not care about the mode (systemd checks it for yes and auto only).
        assert!(layout(&chosen(Mode::Import), &facts(wrong)).is_ok());
        let ro = MutableDir::Dir {
            path: MUTABLE_DIR.into(),
            mode: 0o755,
            read_only_fs: true,
            parent_same_fs: true,
            machine_id: None,
        };
        assert!(e(Mode::Yes, ro).contains("read-only file system"));
        let ro_parent = MutableDir::Missing { path: MUTABLE_DIR.into(), read_only_fs: true };
        assert!(e(Mode::Yes, ro_parent.clone()).contains("add rw to the kernel command line"));
        // auto does not create it: a read-only root simply means no upper.
        assert!(layout(&chosen(Mode::Auto), &facts(ro_parent)).unwrap().read_only());
        let mount = MutableDir::Dir {
            path: MUTABLE_DIR.into(),
            mode: 0o755,
            read_only_fs: false,
            parent_same_fs: false,
            machine_id: None,
        };
        assert!(e(Mode::Yes, mount).contains("mount point of its own"));
        assert!(e(Mode::Yes, MutableDir::Unusable("is a regular file".into())).contains("is a regular file"));
        // A separate /var that is not mounted: every mode that looks at M waits for the booted system.
        let mut f = facts(missing());
        f.var_unmounted = Some("/var is a separate file system that is not mounted in the initrd".into());
        for mode in [Mode::Yes, Mode::Auto, Mode::Import, Mode::EphemeralImport] {
            assert!(layout(&chosen(mode), &f).unwrap_err().contains("/var is a separate file system"), "{mode}");
        }
        for mode in [Mode::No, Mode::Ephemeral] {
            assert!(layout(&chosen(mode), &f).is_ok(), "{mode}");
        }
    }

    #[test]
    fn the_merged_machine_id_reads_down_from_the_top() {
        let f = facts(dir(MUTABLE_DIR));
        let ro = layout(&chosen(Mode::No), &f).unwrap();
        assert_eq!(merged_machine_id(&ro, &f, &[None, None]), Some(Entry::Present));
        assert_eq!(merged_machine_id(&ro, &f, &[Some(Entry::Unset), Some(Entry::Whiteout)]), Some(Entry::Unset));
        assert_eq!(merged_machine_id(&ro, &f, &[None, Some(Entry::Whiteout)]), None);
        let mut bare = facts(missing());
        bare.machine_id = None;
        let ro = layout(&chosen(Mode::No), &bare).unwrap();
        assert_eq!(merged_machine_id(&ro, &bare, &[None]), None);
        // An imported M comes before the confexts.
        let mut f = facts(MutableDir::Dir {
            path: MUTABLE_DIR.into(),
            mode: 0o755,
            read_only_fs: false,
            parent_same_fs: true,
            machine_id: Some(Entry::Present),
        });
        f.machine_id = None;
        let imp = layout(&chosen(Mode::Import), &f).unwrap();
        assert_eq!(merged_machine_id(&imp, &f, &[Some(Entry::Whiteout)]), Some(Entry::Present));
    }
}
