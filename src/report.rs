//! Step 7: say what happened. One log line per decision (to kmsg in the initrd, so the journal
//! of the booted system has them under `initrd-sysext`), and the plan plus outcome as JSON in
//! /run/initrd-sysext/report.json, which survives switch-root.

use std::time::Duration;

use log::{info, warn};

use crate::class::Class;
use crate::json::Json;
use crate::mutable::{Layout, Source, Upper};
use crate::plan::{Action, Decision, Hierarchy, HierarchyPlan, HierarchyState, Outcome, Plan};

pub const TARGET: &str = "initrd-sysext";
pub const DEFAULT_REPORT: &str = "/run/initrd-sysext/report.json";

/// Lines on stderr, prefixed with our name, or with their syslog level where stderr is the
/// journal stream of a unit (which names us itself).
struct Stderr {
    journal: bool,
}

/// The syslog level of a record, as the journal reads it: err, warning, notice.
fn syslog_level(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        _ => 5,
    }
}

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    // The line is formatted first: stderr is unbuffered, and formatting into it writes each
    // piece with a syscall of its own (a journal stream then sees fragments).
    fn log(&self, r: &log::Record) {
        let line = if self.journal {
            format!("<{}>{}\n", syslog_level(r.level()), r.args())
        } else {
            format!("{TARGET}: {}\n", r.args())
        };
        eprint!("{line}");
    }
    fn flush(&self) {}
}

/// Lines in the kernel log, as `<PRI>initrd-sysext[PID]: text`, which the journal files under
/// our name. The kernel rate-limits writes per open file of /dev/kmsg (10 records per 5 s unless
/// `printk.devkmsg=on`; the state is made in `devkmsg_open`, as 5.10's and 7.1's printk.c show)
/// and drops the excess with no error, so each record gets an open of its own: a boot with many
/// images logs every decision. A write longer than the kernel's record limit is refused whole
/// (976 bytes on 5.10 with caller IDs, 1024 on 7.1), so long lines go as several records.
struct Kmsg;

/// The longest write every supported kernel accepts, prefix and newline included.
const KMSG_RECORD_MAX: usize = 976;

impl Kmsg {
    /// Appending: the kernel ignores the offset, a file standing in for /dev/kmsg (tests) keeps
    /// every record.
    fn open() -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().append(true).open("/dev/kmsg")
    }
}

impl log::Log for Kmsg {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        use std::io::Write;
        let text = r.args().to_string();
        for record in kmsg_records(syslog_level(r.level()), std::process::id(), &text) {
            // Nowhere left to report a lost line to but stderr.
            if let Err(e) = Kmsg::open().and_then(|mut f| f.write_all(record.as_bytes())) {
                eprintln!("{TARGET}: {text} (not in the kernel log: {e})");
                return;
            }
        }
    }
    fn flush(&self) {}
}

/// One line as /dev/kmsg records of at most `KMSG_RECORD_MAX` bytes, split at characters.
fn kmsg_records(level: u8, pid: u32, text: &str) -> Vec<String> {
    let prefix = format!("<{level}>{TARGET}[{pid}]: ");
    let room = KMSG_RECORD_MAX - prefix.len() - 1;
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let mut end = rest.len().min(room);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(format!("{prefix}{}\n", &rest[..end]));
        rest = &rest[end..];
        if rest.is_empty() {
            return out;
        }
    }
}

/// Whether stderr is the journal stream systemd connected this unit to: $JOURNAL_STREAM names
/// its device and inode (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (dev, ino) = v.split_once(':')?;
        Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Where decisions go: a unit's journal stream as it is; else in the initrd (systemd's test:
/// /etc/initrd-release exists), where nothing may read our stderr, the kernel log; else stderr.
/// The journal before kmsg: a kmsg record is printed on the console as it is written, which on
/// a 115200-baud serial console costs about 10 ms a line, and journald takes our lines into the
/// same journal without that. `INITRD_SYSEXT_LOG=kmsg|stderr` overrides.
pub fn init_logging() {
    let journal = stderr_is_journal();
    let kmsg = match std::env::var("INITRD_SYSEXT_LOG").as_deref() {
        Ok("kmsg") => true,
        Ok("stderr") => false,
        _ => !journal && std::path::Path::new("/etc/initrd-release").exists(),
    };
    let logger: Box<dyn log::Log> =
        if kmsg && Kmsg::open().is_ok() { Box::new(Kmsg) } else { Box::new(Stderr { journal }) };
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 10 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`, without a time zone database.
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn origin(d: &Decision) -> String {
    match &d.target {
        Some(t) => format!("{} -> {t}", d.path),
        None => d.path.clone(),
    }
}

/// How an image of the class is named in its line: sysexts as always, confexts as such.
fn what(class: Class, name: &str) -> String {
    match class {
        Class::Sysext => name.to_string(),
        Class::Confext => format!("confext {name}"),
    }
}

/// The line for one image, as the journal shows it.
pub fn decision_line(class: Class, d: &Decision, took: Option<Duration>) -> String {
    let name = what(class, &d.name);
    match &d.action {
        Action::Merge => {
            let kind = d.kind.map(|k| k.to_string()).unwrap_or_default();
            let mut what = if d.size > 0 { format!("{kind}, {}", size(d.size)) } else { kind };
            if let Some(t) = &d.trust {
                what = format!("{what}, {t}");
            }
            let t = took.map(|t| format!(" in {}", ms(t))).unwrap_or_default();
            format!("merged {name} from {} ({what}){t}", origin(d))
        }
        Action::Skip { reason } => format!("skipped {name} ({}): {reason}", origin(d)),
    }
}

/// Who chose a mutable mode, in a few words.
fn chosen_by(source: &Source) -> String {
    match source {
        Source::Default => ", the default".into(),
        other => format!(" from {other}"),
    }
}

/// What a confext merge of /etc is like: read-only or where writes go, and why.
pub fn etc_line(l: &Layout) -> String {
    let mode = format!("mutable mode {}{}", l.choice.mode, chosen_by(&l.choice.source));
    let host = if l.host_lower { "over the host" } else { "with the host's /etc as the upper" };
    let writes = match &l.upper {
        Upper::None => match &l.import {
            Some(m) => format!("read-only, {m} imported below the confexts"),
            None => "read-only".into(),
        },
        Upper::Persistent { dir, .. } if dir == "/etc" => "writable: writes go to /etc itself".into(),
        Upper::Persistent { dir, .. } => format!("writable: writes go to {dir}"),
        Upper::Ephemeral => match &l.import {
            Some(m) => format!("writable: writes go to a tmpfs, lost at unmerge; {m} imported below the confexts"),
            None => "writable: writes go to a tmpfs, lost at unmerge".into(),
        },
    };
    let flags = if l.read_only() { "ro,nosuid,nodev,noexec" } else { "rw,nosuid,nodev,noexec,noatime" };
    format!("{host}, {writes} ({mode}), {flags}")
}

pub fn hierarchy_line(h: Hierarchy, o: &Outcome, hp: Option<&HierarchyPlan>) -> String {
    match o {
        Outcome::Merged { layers, took, via } => {
            let how = match hp.and_then(|hp| hp.layout.as_ref()) {
                Some(l) => etc_line(l),
                None => "over the host".into(),
            };
            format!(
                "{}: overlay of {} (top first) {how}, mounted in {} with {via}",
                h.path(),
                layers.join(", "),
                ms(*took)
            )
        }
        Outcome::AlreadyMerged { extensions } => {
            format!("{}: already merged ({}), left alone", h.path(), extensions.join(", "))
        }
        Outcome::Nothing => match hp.and_then(|hp| hp.skipped.as_deref()) {
            Some(reason) => format!("{}: not merged: {reason}", h.path()),
            None => format!("{}: nothing to merge", h.path()),
        },
        Outcome::Failed { reason } => {
            format!("{}: merge failed, left untouched: {reason}", h.path())
        }
    }
}

/// Log every decision of a merge and the outcome per hierarchy.
pub fn log_merge(plan: &Plan, outcomes: &[(Hierarchy, Outcome)], took: &dyn Fn(&str) -> Option<Duration>) {
    for n in &plan.notes {
        warn!(target: TARGET, "{n}");
    }
    for d in &plan.images {
        match d.action {
            Action::Merge => {
                info!(target: TARGET, "{}", decision_line(plan.class, d, took(&d.name)));
                if let Some(w) = &d.warning {
                    warn!(target: TARGET, "{}: {w}", what(plan.class, &d.name));
                }
            }
            Action::Skip { .. } => warn!(target: TARGET, "{}", decision_line(plan.class, d, None)),
        }
    }
    for (h, o) in outcomes {
        let hp = plan.hierarchy(*h);
        // Confexts are a class most roots do not use: say nothing when there were none.
        if plan.class == Class::Confext && plan.images.is_empty() && *o == Outcome::Nothing {
            continue;
        }
        match (o, hp.and_then(|hp| hp.skipped.as_ref())) {
            (Outcome::Failed { .. }, _) | (_, Some(_)) => warn!(target: TARGET, "{}", hierarchy_line(*h, o, hp)),
            _ => info!(target: TARGET, "{}", hierarchy_line(*h, o, hp)),
        }
    }
}

fn state_json(s: &HierarchyState) -> Json {
    match s {
        HierarchyState::Ready => "ready".into(),
        HierarchyState::Missing => "missing".into(),
        HierarchyState::Merged { .. } => "merged".into(),
        HierarchyState::Unusable { reason } => format!("unusable: {reason}").into(),
    }
}

fn decision_json(class: Class, d: &Decision) -> Json {
    let (action, reason) = match &d.action {
        Action::Merge => ("merge", None),
        Action::Skip { reason } => ("skip", Some(reason.clone())),
    };
    Json::Obj(vec![
        ("class", class.name().into()),
        ("name", d.name.as_str().into()),
        ("path", d.path.as_str().into()),
        ("target", d.target.clone().into()),
        ("kind", d.kind.map(|k| k.to_string()).into()),
        ("size", Json::Num(d.size)),
        ("action", action.into()),
        ("reason", reason.into()),
        ("trust", d.trust.clone().into()),
        ("warning", d.warning.clone().into()),
    ])
}

fn outcome_json(o: &Outcome) -> Json {
    match o {
        Outcome::Merged { layers, took, via } => Json::Obj(vec![
            ("result", "merged".into()),
            ("layers", Json::Arr(layers.iter().map(|l| l.as_str().into()).collect())),
            ("ms", Json::Num(took.as_millis() as u64)),
            ("via", (*via).into()),
        ]),
        Outcome::AlreadyMerged { extensions } => Json::Obj(vec![
            ("result", "already-merged".into()),
            ("extensions", Json::Arr(extensions.iter().map(|l| l.as_str().into()).collect())),
        ]),
        Outcome::Nothing => Json::Obj(vec![("result", "nothing".into())]),
        Outcome::Failed { reason } => Json::Obj(vec![("result", "failed".into()), ("reason", reason.as_str().into())]),
    }
}

/// A writable /etc's mode and directories.
fn layout_json(l: &Layout) -> Vec<(&'static str, Json)> {
    let (upper, work) = match &l.upper {
        Upper::None => (Json::Null, Json::Null),
        Upper::Persistent { dir, work, .. } => (dir.as_str().into(), work.as_str().into()),
        Upper::Ephemeral => ("tmpfs".into(), "tmpfs".into()),
    };
    let source = match &l.choice.source {
        Source::Default => "default".to_string(),
        other => other.to_string(),
    };
    vec![
        ("mode", l.choice.mode.as_str().into()),
        ("mode_source", source.into()),
        ("read_only", Json::Bool(l.read_only())),
        ("upper", upper),
        ("work", work),
        ("import", l.import.clone().into()),
    ]
}

/// One class's plan and, after a merge, what became of its hierarchies.
pub type Pass<'a> = (&'a Plan, Option<&'a [(Hierarchy, Outcome)]>);

/// The plans of both classes (and, after a merge, the outcomes) as one JSON document.
pub fn to_json(sysroot: &str, passes: &[Pass], total: Option<Duration>) -> Json {
    let mut images = Vec::new();
    let mut hierarchies = Vec::new();
    let mut notes = Vec::new();
    for (plan, outcomes) in passes {
        images.extend(plan.images.iter().map(|d| decision_json(plan.class, d)));
        notes.extend(plan.notes.iter().map(|n| Json::from(n.as_str())));
        for hp in &plan.hierarchies {
            let mut fields = vec![
                ("path", hp.hierarchy.path().into()),
                ("class", plan.class.name().into()),
                ("state", state_json(&hp.state)),
                ("layers", Json::Arr(hp.layers.iter().map(|l| l.as_str().into()).collect())),
            ];
            if let Some(l) = &hp.layout {
                fields.extend(layout_json(l));
            }
            if let Some(reason) = &hp.skipped {
                fields.push(("skipped", reason.as_str().into()));
            }
            if let Some((_, o)) = outcomes.and_then(|os| os.iter().find(|(h, _)| *h == hp.hierarchy)) {
                fields.push(("outcome", outcome_json(o)));
            }
            hierarchies.push(Json::Obj(fields));
        }
    }
    let mut fields = vec![
        ("version", env!("CARGO_PKG_VERSION").into()),
        ("sysroot", sysroot.into()),
        ("images", Json::Arr(images)),
        ("hierarchies", Json::Arr(hierarchies)),
        ("notes", Json::Arr(notes)),
        ("ms", total.map(|t| Json::Num(t.as_millis() as u64)).unwrap_or(Json::Null)),
    ];
    // A merge's report also says where its time went.
    if total.is_some() {
        fields.push(("timeline", crate::timeline::to_json()));
    }
    Json::Obj(fields)
}

/// Write the report atomically (temporary name, then rename), creating its directory.
pub fn write_report(path: &str, doc: &Json) -> std::io::Result<()> {
    let p = std::path::Path::new(path);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("{doc}\n"))?;
    std::fs::rename(tmp, p)
}

/// `plan`'s human output: one line per image, then the layer order per hierarchy, of every
/// class's plan.
pub fn plan_text(plans: &[&Plan]) -> String {
    let mut out = String::new();
    for n in plans.iter().flat_map(|p| &p.notes) {
        out += &format!("note: {n}\n");
    }
    for d in plans.iter().flat_map(|p| &p.images) {
        let kind = d.kind.map(|k| k.to_string()).unwrap_or_else(|| "-".into());
        let action = match &d.action {
            Action::Merge => "merge".to_string(),
            Action::Skip { reason } => format!("skip: {reason}"),
        };
        out += &format!("{}\t{}\t{kind}\t{action}\n", d.name, origin(d));
    }
    if plans.iter().all(|p| p.images.is_empty()) {
        out += "no extension images found\n";
    }
    for hp in plans.iter().flat_map(|p| &p.hierarchies) {
        let line = match (&hp.state, hp.layers.is_empty(), &hp.skipped) {
            (HierarchyState::Merged { extensions }, _, _) => {
                format!("already merged ({}), left alone", extensions.join(", "))
            }
            (HierarchyState::Unusable { reason }, _, _) => format!("cannot be merged onto: {reason}"),
            (_, _, Some(reason)) => format!("not merged: {reason}"),
            (_, true, _) => "nothing to merge".into(),
            (_, false, _) => match &hp.layout {
                Some(l) => format!("{} (top first), {}", hp.layers.join(", "), etc_line(l)),
                None => format!("{} (top first), then the host", hp.layers.join(", ")),
            },
        };
        out += &format!("{}: {line}\n", hp.hierarchy.path());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Kind;

    fn decision(action: Action) -> Decision {
        Decision {
            name: "podman".into(),
            path: "/etc/extensions/podman.raw".into(),
            target: Some("/opt/extensions/podman/podman-5.4.raw".into()),
            kind: Some(Kind::Erofs),
            size: 41 << 20,
            content: vec![Hierarchy::Usr],
            action,
            trust: None,
            warning: None,
            root_hash: None,
            origin: None,
            failed: false,
        }
    }

    #[test]
    fn a_merged_line_says_what_protects_the_image() {
        let mut d = decision(Action::Merge);
        d.trust = Some("dm-verity, signed by CN=podman".into());
        assert!(decision_line(Class::Sysext, &d, None).ends_with("(erofs, 41 MiB, dm-verity, signed by CN=podman)"));
        assert!(decision_line(Class::Confext, &d, None).starts_with("merged confext podman from "));
    }

    #[test]
    fn lines_name_image_path_and_reason() {
        assert_eq!(
            decision_line(Class::Sysext, &decision(Action::Merge), Some(Duration::from_millis(3))),
            "merged podman from /etc/extensions/podman.raw -> /opt/extensions/podman/podman-5.4.raw (erofs, 41 MiB) in 3 ms"
        );
        assert_eq!(
            decision_line(Class::Sysext, &decision(Action::Skip { reason: "VERSION_ID 12 does not match host 13".into() }), None),
            "skipped podman (/etc/extensions/podman.raw -> /opt/extensions/podman/podman-5.4.raw): VERSION_ID 12 does not match host 13"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_643_141), "2026-11-25 21:45:41 UTC");
    }

    #[test]
    fn sizes() {
        assert_eq!(size(41 << 20), "41 MiB");
        assert_eq!(size(3 << 19), "1.5 MiB");
        assert_eq!(size(4096), "4 KiB");
        assert_eq!(size(12), "12 B");
    }

    #[test]
    fn a_long_line_goes_to_the_kernel_log_in_records_it_accepts() {
        assert_eq!(kmsg_records(5, 42, "merged a"), ["<5>initrd-sysext[42]: merged a\n"]);
        // Multi-byte characters across the limit: split at a character, nothing lost.
        let text = "é".repeat(1000);
        let records = kmsg_records(4, 4_194_304, &text);
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|r| r.len() <= KMSG_RECORD_MAX && r.ends_with('\n')));
        let back: String = records.iter().map(|r| r.trim_end_matches('\n').split_once("]: ").unwrap().1).collect();
        assert_eq!(back, text);
    }

    #[test]
    fn the_etc_line_says_where_writes_go_and_who_chose() {
        use crate::mutable::{Choice, Mode};
        let mut l = Layout {
            choice: Choice { mode: Mode::No, source: Source::Default },
            upper: Upper::None,
            import: None,
            host_lower: true,
            recorded: None,
        };
        assert_eq!(etc_line(&l), "over the host, read-only (mutable mode no, the default), ro,nosuid,nodev,noexec");
        l.choice = Choice { mode: Mode::Auto, source: Source::Config("/etc/systemd/confext.conf".into()) };
        l.upper = Upper::Persistent { dir: "/etc".into(), work: "/.systemd-etc-workdir".into(), create: false };
        l.host_lower = false;
        assert_eq!(
            etc_line(&l),
            "with the host's /etc as the upper, writable: writes go to /etc itself (mutable mode auto from \
             /etc/systemd/confext.conf), rw,nosuid,nodev,noexec,noatime"
        );
        l.upper = Upper::Ephemeral;
        l.choice.source = Source::KernelCmdline;
        assert!(etc_line(&l).contains("writes go to a tmpfs, lost at unmerge (mutable mode auto from systemd.setenv="));
    }
}
