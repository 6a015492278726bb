//! The command line of initrd-sysext; the pipeline itself lives in the library.

use std::os::fd::AsFd;
use std::process::ExitCode;

use initrd_sysext::class::{Class, Hierarchy};
use initrd_sysext::error::{Context, Error, Result};
use initrd_sysext::json::Json;
use initrd_sysext::mutable::Mode;
use initrd_sysext::pipeline::{self, Options};
use initrd_sysext::refresh_check::{self, Verdict};
use initrd_sysext::sys::fs::{open_dir_in_root, open_in_root, read_only_fs, remove_tree};
use initrd_sysext::{report, state, sys, timeline};
use rustix::fs::OFlags;

const USAGE: &str = "\
usage: initrd-sysext COMMAND [OPTIONS]

Merge systemd system extensions onto a sysroot's /usr and /opt, and configuration extensions
onto its /etc, in the initrd.

commands:
  merge     find, check and merge the extension images (what the boot unit runs)
  plan      dry run: every image found with its decision, and the layer order
  status    what is merged now, from the systemd-sysext and systemd-confext state
  unmerge   undo a merge (ours or systemd's) and release its loop devices
  refresh-needed
            in the booted system, as systemd-sysext.service's (or with --class confext
            systemd-confext.service's) ExecCondition (merge sets it up where systemd needs
            it): exit 0 if systemd should refresh, 1 if the initrd's merge is still what it
            would make, or an image there is refused by the initrd's policy

options:
  --sysroot DIR   the root to merge into (default /sysroot; status and unmerge
                  outside the initrd default to /)
  --cmdline FILE  kernel command line to obey (default /proc/cmdline)
  --report FILE   where merge writes its JSON report (default /run/initrd-sysext/report.json)
  --run DIR       the /run the booted system will have, for what merge hands over to its
                  systemd-sysext (default /run)
  --certs DIRS    colon-separated directories of trusted *.crt files in the initrd (default
                  /etc/verity.d:/usr/lib/verity.d); SYSROOT/usr/lib/verity.d is always read
  --mutable MODE  merge and plan: the confext mutable mode (no, yes, auto, import, ephemeral,
                  ephemeral-import), over $SYSTEMD_CONFEXT_MUTABLE_MODE and confext.conf
  --class CLASS   refresh-needed: the service asking, sysext (default) or confext
  --json          plan and status: print JSON
  -h, --help      this text
  -V, --version   the version
";

enum Command {
    Merge,
    Plan,
    Status,
    Unmerge,
    RefreshNeeded,
}

fn parse_args(args: &[String]) -> std::result::Result<(Command, Options), String> {
    let mut opts = Options {
        sysroot: String::new(),
        cmdline: "/proc/cmdline".into(),
        cert_dirs: vec!["/etc/verity.d".into(), "/usr/lib/verity.d".into()],
        report: report::DEFAULT_REPORT.into(),
        run: "/run".into(),
        json: false,
        mutable: None,
        class: Class::Sysext,
    };
    let mut command = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--sysroot" => opts.sysroot = value("--sysroot")?,
            "--cmdline" => opts.cmdline = value("--cmdline")?,
            "--report" => opts.report = value("--report")?,
            "--run" => opts.run = value("--run")?,
            "--certs" => {
                opts.cert_dirs = value("--certs")?.split(':').filter(|d| !d.is_empty()).map(String::from).collect()
            }
            "--mutable" => {
                let m = value("--mutable")?;
                Mode::parse(&m).ok_or_else(|| format!("--mutable {m}: not a mutable mode"))?;
                opts.mutable = Some(m);
            }
            "--class" => {
                let c = value("--class")?;
                opts.class = Class::parse(&c).ok_or_else(|| format!("--class {c}: sysext or confext"))?;
            }
            "--json" => opts.json = true,
            "merge" | "plan" | "status" | "unmerge" | "refresh-needed" if command.is_none() => {
                command = Some(match a.as_str() {
                    "merge" => Command::Merge,
                    "plan" => Command::Plan,
                    "status" => Command::Status,
                    "unmerge" => Command::Unmerge,
                    _ => Command::RefreshNeeded,
                })
            }
            other => return Err(format!("unexpected argument: {other}")),
        }
    }
    let command = command.ok_or("no command given")?;
    if opts.sysroot.is_empty() {
        // In the booted system there is no /sysroot: status and unmerge look at the running root.
        let booted = !std::path::Path::new("/etc/initrd-release").exists();
        opts.sysroot = match command {
            Command::Status | Command::Unmerge if booted => "/".into(),
            Command::RefreshNeeded => "/".into(),
            _ => "/sysroot".into(),
        };
    }
    // Staging moves us between mount namespaces, which resets the working directory.
    let absolute =
        |p: &str| std::path::absolute(p).map(|p| p.to_string_lossy().into_owned()).map_err(|e| format!("{p}: {e}"));
    opts.sysroot = absolute(&opts.sysroot)?;
    opts.report = absolute(&opts.report)?;
    opts.run = absolute(&opts.run)?;
    opts.cmdline = absolute(&opts.cmdline)?;
    opts.cert_dirs = opts.cert_dirs.iter().map(|d| absolute(d)).collect::<std::result::Result<_, _>>()?;
    Ok((command, opts))
}

/// Both classes' plans. Confexts that a sysext would bring along in /usr/lib/confexts are not
/// seen here: nothing is merged.
fn plan(opts: &Options) -> Result<()> {
    let mut shared = pipeline::shared(opts)?;
    let mut plans = Vec::new();
    for class in Class::ALL {
        plans.push(pipeline::prepare(&mut shared, opts, class)?.into_plan());
    }
    if opts.json {
        let passes: Vec<_> = plans.iter().map(|p| (p, None)).collect();
        println!("{}", report::to_json(&opts.sysroot, &passes, None));
    } else {
        print!("{}", report::plan_text(&plans.iter().collect::<Vec<_>>()));
    }
    Ok(())
}

/// What is merged on a hierarchy, and whether it is read-only.
type Row = (Hierarchy, Option<(state::Merged, bool)>);

fn status(opts: &Options) -> Result<()> {
    let root = pipeline::open_root(&opts.sysroot)?;
    let mut rows: Vec<Row> = Vec::new();
    for h in Hierarchy::ALL {
        let merged = match open_dir_in_root(root.as_fd(), h.dir()) {
            Ok(dir) => state::read(dir.as_fd(), h)?.map(|m| (m, read_only_fs(dir.as_fd()).unwrap_or(true))),
            Err(_) => None,
        };
        rows.push((h, merged));
    }
    let last = std::fs::read_to_string(&opts.report).ok();
    if opts.json {
        let list = rows
            .iter()
            .map(|(h, m)| {
                Json::Obj(vec![
                    ("hierarchy", h.path().into()),
                    (
                        "extensions",
                        m.as_ref()
                            .map(|(m, _)| Json::Arr(m.extensions.iter().map(|e| e.as_str().into()).collect()))
                            .unwrap_or(Json::Null),
                    ),
                    ("since", m.as_ref().map(|(m, _)| Json::Num(m.since.max(0) as u64)).unwrap_or(Json::Null)),
                    ("mode", m.as_ref().and_then(|(m, _)| m.mode.clone()).into()),
                    ("read_only", m.as_ref().map(|(_, ro)| Json::Bool(*ro)).unwrap_or(Json::Null)),
                ])
            })
            .collect();
        println!(
            "{}",
            Json::Obj(vec![
                ("hierarchies", Json::Arr(list)),
                ("report", last.is_some().then(|| opts.report.clone()).into())
            ])
        );
        return Ok(());
    }
    for (h, m) in &rows {
        match m {
            Some((m, ro)) => {
                let mut line = format!("{}\t{}\tsince {}", h.path(), m.extensions.join(" "), report::utc(m.since));
                if h.class() == Class::Confext {
                    let mode = m.mode.as_deref().unwrap_or("unknown");
                    line += &format!("\tmutable {mode}, {}", if *ro { "read-only" } else { "writable" });
                }
                println!("{line}");
            }
            None => println!("{}\tnone", h.path()),
        }
    }
    if last.is_some() {
        println!("last merge report: {}", opts.report);
    }
    Ok(())
}

/// Whether a `work_dir` value is one systemd would remove: relative and normalized.
fn work_dir_is_sane(w: &str) -> bool {
    !w.is_empty() && !w.starts_with('/') && w.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
}

/// Remove a persistent upper's work directory, as systemd's unmerge does (`rm -rf`), inside the
/// root and never through a symlink.
fn remove_work_dir(root: &std::os::fd::OwnedFd, w: &str) -> Result<()> {
    if !work_dir_is_sane(w) {
        return Err(Error::msg(format!("not removing the work directory {w:?}: not a normalized relative path")));
    }
    let (parent, name) = w.rsplit_once('/').unwrap_or(("", w));
    let parent = open_in_root(root.as_fd(), parent, OFlags::PATH | OFlags::DIRECTORY)
        .with_context(|| format!("opening the parent of {w}"))?;
    remove_tree(parent.as_fd(), name.as_bytes(), 64).with_context(|| format!("removing {w}"))
}

fn unmerge(opts: &Options) -> Result<()> {
    let root = pipeline::open_root(&opts.sysroot)?;
    for h in Hierarchy::ALL {
        // Several merges may be stacked (systemd's refresh bug, Flatcar#1976): peel them all.
        loop {
            let Ok(dir) = open_dir_in_root(root.as_fd(), h.dir()) else {
                break;
            };
            let Some(merged) = state::read(dir.as_fd(), h)? else {
                break;
            };
            // The mount point, resolved inside the root: a symlinked hierarchy (/opt -> var/opt)
            // is merged where it leads, and the unmount never follows a link. Its submounts (a
            // writable /etc's read-only .systemd-confext) go with it.
            let path = sys::fs::real_path(dir.as_fd())?;
            drop(dir);
            sys::mount::detach(&path)?;
            if let Some(w) = &merged.work_dir {
                remove_work_dir(&root, w)?;
            }
            println!("unmerged {path}");
        }
    }
    Ok(())
}

/// ExecCondition's answer: 0 runs systemd-sysext, 1 skips it. Never 255, which would fail the unit.
fn refresh_needed(opts: &Options) -> ExitCode {
    match refresh_check::check(&opts.sysroot, &opts.run, opts.class) {
        Verdict::Refresh(why) => {
            log::info!(target: report::TARGET, "{} may refresh: {why}", opts.class.tool());
            ExitCode::SUCCESS
        }
        Verdict::Leave(why) => {
            log::info!(target: report::TARGET, "not refreshing: {why}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    timeline::start();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("initrd-sysext {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (command, opts) = match parse_args(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("initrd-sysext: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    report::init_logging();
    let result = match command {
        Command::Merge => {
            pipeline::merge(&opts).map(|all_merged| if all_merged { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Plan => plan(&opts).map(|()| ExitCode::SUCCESS),
        Command::Status => status(&opts).map(|()| ExitCode::SUCCESS),
        Command::Unmerge => unmerge(&opts).map(|()| ExitCode::SUCCESS),
        Command::RefreshNeeded => Ok(refresh_needed(&opts)),
    };
    result.unwrap_or_else(|e| {
        log::error!(target: report::TARGET, "{e}");
        ExitCode::FAILURE
    })
}
