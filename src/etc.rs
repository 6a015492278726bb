//! What the confext pass needs to know before it plans: the mutable mode, from systemd's sources
//! of it (our argv, our environment, the kernel command line's `systemd.setenv=`, confext.conf),
//! and what the root's /etc and its mutable directory are. Read here, decided in `mutable`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fstat, readlinkat, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::cmdline::{Cmdline, MUTABLE_ENV, OPTIONS_ENV};
use crate::config::{self, Listed, Settings};
use crate::discover;
use crate::handover::Systemd;
use crate::inspect::entry_at;
use crate::mutable::{self, EtcFacts, Mode as MutableMode, MutableDir, Source, MUTABLE_DIR};
use crate::plan::EtcInputs;
use crate::sys::fs::{
    describe_type, list_dir_raw, open_dir_in_root, open_in_root, read_limited, read_only_fs, real_path,
};

/// The largest configuration file we read.
const MAX_CONFIG: usize = 1 << 20;

/// The four configuration directories: the root's, except /run, which is the initrd's `run`
/// (it becomes the booted system's /run, where the booted systemd-confext reads it).
fn config_dirs(root: BorrowedFd, run: &str) -> Vec<(String, Option<OwnedFd>)> {
    config::DIRS
        .iter()
        .map(|d| {
            let fd = if *d == "/run" {
                rustix::fs::open(run, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()
            } else {
                open_in_root(root, d, OFlags::PATH | OFlags::DIRECTORY).ok()
            };
            (d.to_string(), fd)
        })
        .collect()
}

/// A regular file's bytes, `None` when there is none (or it is a mask).
fn read_file(dir: BorrowedFd, path: &str) -> Result<Option<Vec<u8>>, String> {
    let fd = match open_in_root(dir, path, OFlags::PATH) {
        Ok(fd) => fd,
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => return Ok(None),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    let st = fstat(&fd).map_err(|e| format!("{path}: {e}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(None);
    }
    let fd = open_in_root(dir, path, OFlags::RDONLY | OFlags::NONBLOCK).map_err(|e| format!("{path}: {e}"))?;
    let bytes = read_limited(&fd, MAX_CONFIG).map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() > MAX_CONFIG {
        return Err(format!("{path}: larger than {} KiB", MAX_CONFIG / 1024));
    }
    Ok(Some(bytes))
}

/// confext.conf and its drop-ins, in systemd's order. `Err` when systemd would ignore the whole
/// configuration (a file it cannot parse).
fn read_config(root: BorrowedFd, run: &str) -> Result<Settings, String> {
    let dirs = config_dirs(root, run);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (dir, fd) in &dirs {
        let Some(fd) = fd else { continue };
        if let Some(bytes) = read_file(fd.as_fd(), config::MAIN)? {
            files.push((format!("{dir}/{}", config::MAIN), bytes));
            break;
        }
    }
    let mut listed = Vec::new();
    for (i, (_, fd)) in dirs.iter().enumerate() {
        let Some(d) = fd.as_ref().and_then(|fd| open_dir_in_root(fd.as_fd(), config::DROPINS).ok()) else { continue };
        for name in
            list_dir_raw(d.as_fd()).map_err(|e| format!("listing {}: {e}", config::DROPINS))?.into_iter().flatten()
        {
            let masked = readlinkat(&d, name.as_str(), Vec::new()).is_ok_and(|t| t.as_bytes() == b"/dev/null");
            listed.push(Listed { dir: i, name, masked });
        }
    }
    for l in config::dropin_order(&listed) {
        let (dir, fd) = &dirs[l.dir];
        let path = format!("{}/{}", config::DROPINS, l.name);
        if let Some(bytes) = read_file(fd.as_ref().expect("listed, so opened").as_fd(), &path)? {
            files.push((format!("{dir}/{path}"), bytes));
        }
    }
    let mut settings = Settings::default();
    for (path, bytes) in files {
        config::parse(&mut settings, &path, &bytes, &|v| MutableMode::parse(v).is_some())?;
    }
    Ok(settings)
}

/// A path inside the root, from the kernel's path of an fd opened there.
fn inside(root_real: &str, path: &str) -> String {
    match path.strip_prefix(root_real.trim_end_matches('/')) {
        Some("") => "/".to_string(),
        Some(rest) if root_real != "/" && rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

/// M as it is now; where it is missing, where creating it would put it.
fn mutable_dir(root: BorrowedFd) -> MutableDir {
    let root_real = real_path(root).unwrap_or_default();
    let opened = open_in_root(root, MUTABLE_DIR, OFlags::RDONLY | OFlags::DIRECTORY);
    match opened {
        Ok(fd) => {
            let st = match fstat(&fd) {
                Ok(st) => st,
                Err(e) => return MutableDir::Unusable(format!("stat: {e}")),
            };
            let parent_same_fs = open_in_root(fd.as_fd(), "..", OFlags::PATH)
                .ok()
                .and_then(|p| fstat(&p).ok())
                .is_some_and(|up| up.st_dev == st.st_dev);
            MutableDir::Dir {
                path: inside(&root_real, &real_path(fd.as_fd()).unwrap_or_default()),
                mode: st.st_mode & 0o777,
                read_only_fs: read_only_fs(fd.as_fd()).unwrap_or(true),
                parent_same_fs,
                machine_id: entry_at(fd.as_fd(), "machine-id").ok().flatten(),
            }
        }
        Err(e) if Errno::from_io_error(&e) == Some(Errno::NOTDIR) => {
            let what = open_in_root(root, MUTABLE_DIR, OFlags::PATH)
                .ok()
                .and_then(|fd| fstat(&fd).ok())
                .map_or("not a directory", |st| describe_type(st.st_mode));
            MutableDir::Unusable(format!("it is a {what}, not a directory"))
        }
        Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => {
            // The deepest ancestor that exists decides where mkdir -p puts it.
            let parts: Vec<&str> = MUTABLE_DIR.split('/').filter(|p| !p.is_empty()).collect();
            for k in (0..parts.len()).rev() {
                let Ok(fd) = open_in_root(root, &parts[..k].join("/"), OFlags::RDONLY | OFlags::DIRECTORY) else {
                    continue;
                };
                let base = inside(&root_real, &real_path(fd.as_fd()).unwrap_or_default());
                let path = format!("{}/{}", base.trim_end_matches('/'), parts[k..].join("/"));
                return MutableDir::Missing { path, read_only_fs: read_only_fs(fd.as_fd()).unwrap_or(true) };
            }
            MutableDir::Unusable("no part of it exists, not even the root".into())
        }
        Err(e) => MutableDir::Unusable(e.to_string()),
    }
}

/// What the root's /etc is.
fn facts(root: BorrowedFd, notes: &mut Vec<String>) -> EtcFacts {
    let etc = open_in_root(root, "etc", OFlags::RDONLY | OFlags::DIRECTORY).ok();
    let mode = etc.as_ref().and_then(|fd| fstat(fd).ok()).map_or(0o755, |st| st.st_mode & 0o777);
    let host_has_entries = etc.as_ref().and_then(|fd| list_dir_raw(fd.as_fd()).ok()).is_some_and(|l| !l.is_empty());
    let machine_id = etc.as_ref().and_then(|fd| entry_at(fd.as_fd(), "machine-id").ok().flatten());
    let var_unmounted = discover::unmounted(root, &[MUTABLE_DIR], notes).first().map(|u| {
        format!(
            "{} is a separate file system ({} in /etc/fstab) that is not mounted in the initrd: {}",
            u.target, u.source, u.fix
        )
    });
    EtcFacts { mode, host_has_entries, machine_id, mutable_dir: mutable_dir(root), var_unmounted }
}

/// The mode and the facts, and what the admin should hear about them. `argv` is `--mutable=`.
pub fn gather(
    root: BorrowedFd,
    run: &str,
    argv: Option<&str>,
    cmdline: &Cmdline,
    systemd: &Systemd,
    notes: &mut Vec<String>,
) -> EtcInputs {
    let settings = read_config(root, run).unwrap_or_else(|e| {
        notes.push(format!("ignoring the confext configuration, as systemd does: {e}"));
        Settings::default()
    });
    notes.extend(settings.warnings.iter().map(|w| format!("confext configuration: {w}")));
    let inputs = mutable::Inputs {
        argv: argv.map(str::to_owned),
        env: std::env::var(MUTABLE_ENV).ok(),
        cmdline: cmdline.mutable_setenv.clone(),
        config: settings.mutable,
    };
    let choice = mutable::choose(&inputs, notes);
    if std::env::var_os(OPTIONS_ENV).is_some() || cmdline.options_setenv {
        notes.push(format!(
            "{OPTIONS_ENV} is set: initrd-sysext does not honour it and mounts /etc with systemd's default options, \
             so systemd 262's refresh will merge /etc again at boot"
        ));
    }
    if let Source::Config(file) = &choice.source {
        if !systemd.confext_config {
            notes.push(format!(
                "Mutable={} from {file}: the root's systemd-confext does not read confext.conf (it is older than 259); \
                 honoured here as the admin's choice, and handed to its systemd-confext.service as --mutable={}",
                choice.mode, choice.mode
            ));
        }
    }
    if !systemd.confext {
        notes.push(
            "the root's systemd has no systemd-confext (it is older than 254): a confext merge stays until shutdown; \
             initrd-sysext status and unmerge manage it"
                .into(),
        );
    }
    EtcInputs { choice, facts: facts(root, notes) }
}
