//! The new mount API (fsopen/fsconfig/fsmount/move_mount). Every file system we create starts as
//! a detached mount: it is in no mount table, nobody else can see it, and it vanishes when we
//! close its fd. Only the final overlays are attached. When the kernel refuses a mount, it explains
//! why on the fs-context fd; we put that text into the error instead of a bare EINVAL.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags, SeekFrom, CWD};
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, mount, mount_bind, mount_remount,
    move_mount, open_tree, unmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::error::{Context, Error, Result};

/// An fs context being configured.
pub struct FsContext {
    fd: OwnedFd,
    fstype: &'static str,
    /// Where the kernel explains a refusal that it does not log on the context: overlayfs before
    /// 6.5 (the legacy context), some checks of later ones, and erofs's and squashfs's feature
    /// checks use printk.
    log: KernelLog,
}

impl FsContext {
    pub fn new(fstype: &'static str) -> Result<Self> {
        let log = KernelLog::open(fstype);
        let fd = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
            .with_context(|| format!("fsopen({fstype}) (is the {fstype} module loaded?)"))?;
        Ok(FsContext { fd, fstype, log })
    }

    /// What the kernel logged on this context, e.g. "overlayfs: failed to resolve '…'".
    fn kernel_messages(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = rustix::io::read(&self.fd, &mut buf) {
            if n == 0 {
                break;
            }
            let msg = String::from_utf8_lossy(&buf[..n]);
            // Each message starts with a severity letter and a space.
            out.push(msg.get(2..).unwrap_or(&msg).trim().to_string());
        }
        let mut msgs = out.join("; ");
        if msgs.is_empty() {
            msgs = self.log.messages();
        }
        msgs
    }

    fn fail(&self, what: String, e: rustix::io::Errno) -> Error {
        with_kernel_messages(what, e, &self.kernel_messages())
    }

    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.fail(format!("{}: setting {key}={value}", self.fstype), e))
    }

    /// Create the superblock and a detached mount of it.
    pub fn mount(self, attrs: MountAttrFlags) -> Result<OwnedFd> {
        fsconfig_create(&self.fd).map_err(|e| self.fail(format!("creating {} superblock", self.fstype), e))?;
        fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.fail(format!("fsmount of {}", self.fstype), e))
    }
}

fn with_kernel_messages(what: String, e: rustix::io::Errno, msgs: &str) -> Error {
    let what = if msgs.is_empty() { what } else { format!("{what} [kernel: {msgs}]") };
    Err::<(), _>(e).context(what).unwrap_err()
}

/// The kernel log from now on, for a file system's printk messages (`overlayfs: …`, `erofs: …`,
/// `squashfs: …`). Optional: without /dev/kmsg an error just has no kernel text.
struct KernelLog(Option<OwnedFd>, &'static str);

impl KernelLog {
    fn open(fstype: &'static str) -> KernelLog {
        let fd = rustix::fs::open("/dev/kmsg", OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty())
            .ok()
            .filter(|fd| rustix::fs::seek(fd, SeekFrom::End(0)).is_ok());
        KernelLog(fd, fstype)
    }

    /// The file system's lines logged since `open`. Another mount at the same moment could add its own.
    fn messages(&self) -> String {
        let Some(fd) = &self.0 else { return String::new() };
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) | Err(Errno::AGAIN) => break,
                // Records were overwritten while we read: the next read goes on.
                Err(Errno::PIPE) => continue,
                Err(_) => break,
                Ok(n) => {
                    out.extend(kmsg_text(&buf[..n]).filter(|m| m.starts_with(self.1)).map(str::to_owned));
                }
            }
        }
        out.join("; ")
    }
}

/// The text of one /dev/kmsg record: `PRI,SEQ,TS,FLAGS;text` followed by continuation lines.
fn kmsg_text(record: &[u8]) -> impl Iterator<Item = &str> {
    let line = std::str::from_utf8(record).unwrap_or("").lines().next().unwrap_or("");
    line.split_once(';').map(|(_, text)| text.trim()).into_iter()
}

/// Attach a detached mount on top of the directory `target` (an fd, so nothing can swap the path).
pub fn attach(mount: BorrowedFd, target: BorrowedFd, what: &str) -> Result<()> {
    move_mount(mount, "", target, "", MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH)
        .with_context(|| format!("attaching {what}"))
}

/// Attach a detached mount at an absolute path.
pub fn attach_at(mount: BorrowedFd, path: &str) -> Result<()> {
    move_mount(mount, "", CWD, path, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .with_context(|| format!("attaching at {path}"))
}

/// A detached copy of the mount tree at `path`, submounts included.
pub fn clone_tree(path: &str) -> Result<OwnedFd> {
    open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE,
    )
    .with_context(|| format!("cloning the mount tree at {path}"))
}

/// A detached bind mount of the directory `dir`.
pub fn clone_tree_fd(dir: BorrowedFd) -> Result<OwnedFd> {
    open_tree(
        dir,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .context("open_tree")
}

/// A detached bind mount of the directory `dir` alone (no submounts): one overlay layer.
pub fn clone_dir(dir: BorrowedFd) -> Result<OwnedFd> {
    open_tree(dir, "", OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH)
        .context("binding a layer into the staging area")
}

/// Lazy unmount, never following a symlink: systemd-sysext's way to unmerge.
pub fn detach(path: &str) -> Result<()> {
    unmount(path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).with_context(|| format!("unmounting {path}"))
}

/// A fresh tmpfs whose root has `mode`, limited to `size` (`None`: the kernel's default, half
/// of RAM): the META layer that carries `.systemd-sysext/`, the staging area, an ephemeral upper.
pub fn tmpfs(mode: u32, size: Option<&str>) -> Result<OwnedFd> {
    let ctx = FsContext::new("tmpfs")?;
    ctx.set("mode", &format!("{:04o}", mode & 0o7777))?;
    if let Some(size) = size {
        ctx.set("size", size)?;
    }
    ctx.mount(MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC)
}

/// Make the directory `path` (absolute, in this namespace) a read-only bind mount of itself with
/// these per-mount flags, with classic mount(2) calls (`mount_setattr` is Linux 5.12+): what
/// systemd does to `.systemd-confext` of a writable merge, so nobody can change its state files.
pub fn bind_read_only(path: &str, flags: Flags) -> Result<()> {
    mount_bind(path, path).with_context(|| format!("binding {path} onto itself"))?;
    let ro = MountFlags::BIND | Flags { read_only: true, ..flags }.mount_flags();
    mount_remount(path, ro, "").with_context(|| format!("making {path} read-only"))
}

/// Mount a block device read-only and detached.
pub fn block_fs(fstype: &'static str, device: &str) -> Result<OwnedFd> {
    let ctx = FsContext::new(fstype)?;
    ctx.set("source", device)?;
    fsconfig_set_flag(&ctx.fd, "ro").map_err(|e| ctx.fail(format!("{fstype}: setting ro"), e))?;
    ctx.mount(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV)
}

/// Mount a whole image file read-only and detached without a loop device, where the file system
/// reads a file itself: erofs from Linux 6.12 (fs/erofs/super.c, erofs_fc_get_tree: a source that
/// is not a block device is opened as a file). Where it cannot (an older kernel, a kernel without
/// CONFIG_EROFS_FS_BACKED_BY_FILE, a file on tmpfs), the kernel says ENOTBLK: `None`, use a loop
/// device. No loop device means no queue to set up and no I/O through a second block layer, and
/// nothing to free after an unmerge.
pub fn file_fs(fstype: &'static str, file: BorrowedFd) -> Result<Option<OwnedFd>> {
    if fstype != "erofs" {
        return Ok(None);
    }
    let ctx = FsContext::new(fstype)?;
    ctx.set("source", &format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    fsconfig_set_flag(&ctx.fd, "ro").map_err(|e| ctx.fail(format!("{fstype}: setting ro"), e))?;
    match fsconfig_create(&ctx.fd) {
        Err(Errno::NOTBLK) => return Ok(None),
        Err(e) => return Err(ctx.fail(format!("creating {fstype} superblock from the file"), e)),
        Ok(()) => {}
    }
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV;
    fsmount(&ctx.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map(Some)
        .map_err(|e| ctx.fail(format!("fsmount of {fstype}"), e))
}

/// Mount points below `dir` (absolute), from /proc/self/mountinfo, outermost first.
pub fn submounts(dir: &str) -> Result<Vec<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_submounts(&info, dir))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_submounts(info: &str, dir: &str) -> Vec<String> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut points: Vec<String> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape).filter(|p| p.starts_with(&prefix)).collect();
    points.sort();
    points.dedup();
    // Keep only the outermost: a recursive clone brings the nested ones along.
    let mut top: Vec<String> = Vec::new();
    for p in points {
        if !top.iter().any(|t| p.starts_with(&format!("{t}/"))) {
            top.push(p);
        }
    }
    top
}

// How overlayfs takes its layers differs by kernel; we pick by what the kernel does, never by its
// version. The facts (Linux 5.10, 6.1, 6.12, 7.1 sources):
// - Before 6.5 overlayfs has no fs_context of its own (fs/overlayfs/super.c: only `.mount`), so
//   fsopen() gives the legacy context (fs/fs_context.c, legacy_parse_param): every fsconfig key
//   is accepted and only appended to one option string, which overlayfs parses at
//   FSCONFIG_CMD_CREATE (ovl_fill_super). An unknown key such as `lowerdir+` fails only there.
// - From 6.5 overlayfs parses each key itself (fs/overlayfs/params.c, ovl_parse_param) and refuses
//   unknown ones at once; `lowerdir+` (one layer per call) exists from 6.8.
// - fsconfig(FSCONFIG_SET_STRING) copies at most 256 bytes of a value, NUL included, on every
//   version (fs/fsopen.c, sys_fsconfig: strndup_user(_value, 256)): a longer `lowerdir=` is EINVAL.
// - mount(2) copies one page of options and cuts it at PAGE_SIZE - 1 (fs/namespace.c,
//   copy_mount_options and path_mount); overlayfs then splits it at unescaped ',' (ovl_next_opt)
//   and `lowerdir` at unescaped ':', and unescapes each layer (ovl_unescape).
// - Layer paths are looked up with kern_path() in the caller's context, so a relative path is
//   relative to the caller's working directory (ovl_mount_dir_noesc; params.c says so since 6.5).
// - At most OVL_MAX_STACK = 500 lower layers (super.c before 6.5, params.h since).

/// overlayfs's own limit on lower layers, the same in every kernel from 5.10 on.
pub const MAX_LOWER_LAYERS: usize = 500;
/// The longest value fsconfig(FSCONFIG_SET_STRING) takes.
pub const FSCONFIG_VALUE_MAX: usize = 255;

/// What this kernel's overlayfs does with fsconfig keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayApi {
    /// It parses keys itself and knows `lowerdir+` (Linux 6.8 and later).
    Append,
    /// It parses keys itself, without `lowerdir+` (6.5 to 6.7).
    Parsed,
    /// The legacy context collects keys into an option string (before 6.5).
    Legacy,
}

/// How one overlay is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// One `fsconfig lowerdir+` per layer.
    Append,
    /// One `fsconfig lowerdir=` with the whole list, when it fits in a value.
    List,
    /// The classic mount(2) option string, with short paths, made detached with open_tree.
    Options,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Append => "lowerdir+",
            Mechanism::List => "fsconfig lowerdir=",
            Mechanism::Options => "mount(2) options",
        }
    }
}

/// Find out what overlayfs does with fsconfig keys, on a throw-away context. `dir` is a directory
/// overlayfs could use as a layer (the staging tmpfs).
pub fn probe_overlay_api(dir: &str) -> Result<OverlayApi> {
    let fd =
        fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).context("fsopen(overlay) (is the overlay module loaded?)")?;
    // No overlayfs knows this key; only the legacy context takes it.
    if fsconfig_set_string(&fd, "initrd-sysext-probe", "1").is_ok() {
        return Ok(OverlayApi::Legacy);
    }
    Ok(match fsconfig_set_string(&fd, "lowerdir+", dir) {
        Ok(()) => OverlayApi::Append,
        Err(_) => OverlayApi::Parsed,
    })
}

impl OverlayApi {
    /// The mechanism for layers at these paths (top first).
    pub fn mechanism(self, paths: &[String]) -> Mechanism {
        match self {
            OverlayApi::Append => Mechanism::Append,
            _ if lowerdir_value(paths).len() <= FSCONFIG_VALUE_MAX => Mechanism::List,
            _ => Mechanism::Options,
        }
    }
}

/// A layer path escaped for a `lowerdir=` list: overlayfs splits options at ',' and layers at
/// ':', and removes one backslash before any character.
pub fn escape_layer(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The value of `lowerdir=`: the layers, top first, escaped and separated by ':'.
pub fn lowerdir_value(paths: &[String]) -> String {
    paths.iter().map(|p| escape_layer(p)).collect::<Vec<_>>().join(":")
}

/// The mount(2) option string for an overlay: its layers (top first), upper, options.
pub fn overlay_options(spec: &OverlaySpec) -> String {
    let mut s = format!("lowerdir={}", lowerdir_value(&spec.lowers));
    if let Some(u) = &spec.upper {
        s += &format!(",upperdir={},workdir={}", escape_layer(&u.upper), escape_layer(&u.work));
    }
    for (key, value) in &spec.options {
        s += &format!(",{key}={value}");
    }
    s
}

/// Whether an option string reaches the kernel whole: mount(2) copies one page and cuts the
/// string before its last byte.
pub fn options_fit(options: &str, page_size: usize) -> bool {
    options.len() < page_size
}

/// Per-mount flags of an overlay, as systemd gives them (`default_mount_flags` of the class; a
/// writable merge drops `read_only` and adds `noatime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub read_only: bool,
    pub nosuid: bool,
    pub noexec: bool,
    pub noatime: bool,
}

impl Flags {
    /// Each flag in both APIs' terms; nodev is always on (systemd's overlays are nodev).
    fn table(self) -> [(bool, MountAttrFlags, MountFlags); 5] {
        [
            (true, MountAttrFlags::MOUNT_ATTR_NODEV, MountFlags::NODEV),
            (self.read_only, MountAttrFlags::MOUNT_ATTR_RDONLY, MountFlags::RDONLY),
            (self.nosuid, MountAttrFlags::MOUNT_ATTR_NOSUID, MountFlags::NOSUID),
            (self.noexec, MountAttrFlags::MOUNT_ATTR_NOEXEC, MountFlags::NOEXEC),
            (self.noatime, MountAttrFlags::MOUNT_ATTR_NOATIME, MountFlags::NOATIME),
        ]
    }

    fn attrs(self) -> MountAttrFlags {
        self.table().into_iter().filter(|t| t.0).fold(MountAttrFlags::empty(), |a, t| a | t.1)
    }

    fn mount_flags(self) -> MountFlags {
        self.table().into_iter().filter(|t| t.0).fold(MountFlags::empty(), |f, t| f | t.2)
    }
}

/// Where a writable overlay writes: `upper` and `work`, paths the kernel resolves in this
/// process (for mount(2) relative to its working directory), on one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upper {
    pub upper: String,
    pub work: String,
}

/// One overlay: its mount source (`sysext`, `confext`), the lower layers top first, an optional
/// upper, options beyond the layers (`redirect_dir=on`, …) and the per-mount flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    pub source: &'static str,
    pub lowers: Vec<String>,
    pub upper: Option<Upper>,
    pub options: Vec<(&'static str, &'static str)>,
    pub flags: Flags,
}

/// Mount an overlay with fsconfig, as a detached mount. The layers are paths the kernel resolves
/// in this process (`/proc/self/fd/N`), top first; `append` gives one `lowerdir+` each.
pub fn overlay_fsconfig(spec: &OverlaySpec, append: bool) -> Result<OwnedFd> {
    let ctx = FsContext::new("overlay")?;
    ctx.set("source", spec.source)?;
    if append {
        for p in &spec.lowers {
            ctx.set("lowerdir+", p)?;
        }
    } else {
        ctx.set("lowerdir", &lowerdir_value(&spec.lowers))?;
    }
    if let Some(u) = &spec.upper {
        ctx.set("upperdir", &u.upper)?;
        ctx.set("workdir", &u.work)?;
    }
    for (key, value) in &spec.options {
        ctx.set(key, value)?;
    }
    ctx.mount(spec.flags.attrs())
}

/// Mount an overlay with the classic mount(2) option string at `target` (a directory of a private
/// namespace, relative to the working directory like the layer paths), and return a detached
/// copy of it; the attached one is taken off again. The copy is the same superblock, so it has
/// the overlay's own st_dev, and the same per-mount flags.
pub fn overlay_mount(spec: &OverlaySpec, target: &str) -> Result<OwnedFd> {
    let options = overlay_options(spec);
    if !options_fit(&options, rustix::param::page_size()) {
        return Err(Error::msg(format!("{} layers do not fit in one page of mount options", spec.lowers.len())));
    }
    let log = KernelLog::open("overlay");
    let data = std::ffi::CString::new(options).map_err(|_| Error::msg("a layer path holds a NUL byte"))?;
    mount(spec.source, target, "overlay", spec.flags.mount_flags(), data.as_c_str())
        .map_err(|e| with_kernel_messages("mounting the overlay with mount(2)".into(), e, &log.messages()))?;
    let copy = open_tree(CWD, target, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
        .context("making a detached copy of the overlay");
    unmount(target, UnmountFlags::DETACH).context("taking the staged overlay off")?;
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:40 / /sysroot/usr rw - ext4 /dev/sda2 ro
31 22 0:41 / /sysroot/opt rw - tmpfs tmpfs rw
32 31 0:42 / /sysroot/opt/data rw - tmpfs tmpfs rw
33 32 0:43 / /sysroot/opt/data/inner rw - tmpfs tmpfs rw
34 31 0:44 / /sysroot/opt/with\\040space rw - tmpfs tmpfs rw
35 22 0:45 / /sysroot/optional rw - tmpfs tmpfs rw
";

    fn spec(lowers: Vec<String>) -> OverlaySpec {
        OverlaySpec { source: "sysext", lowers, upper: None, options: vec![], flags: Flags::default() }
    }

    #[test]
    fn layer_paths_are_escaped_for_the_option_parser() {
        assert_eq!(escape_layer("/proc/self/fd/12"), "/proc/self/fd/12");
        assert_eq!(escape_layer("/a:b,c\\d"), "/a\\:b\\,c\\\\d");
        let paths = vec!["/x:y".to_string(), "7".to_string(), "/with,comma".to_string()];
        assert_eq!(lowerdir_value(&paths), "/x\\:y:7:/with\\,comma");
        assert_eq!(overlay_options(&spec(paths)), "lowerdir=/x\\:y:7:/with\\,comma");
    }

    #[test]
    fn a_writable_overlay_has_upper_work_and_systemds_options() {
        let mut s = spec(vec!["0".into(), "1".into()]);
        s.upper = Some(Upper { upper: "u/etc".into(), work: "u/.systemd-etc-workdir".into() });
        s.options = vec![("redirect_dir", "on"), ("metacopy", "off"), ("index", "off")];
        assert_eq!(
            overlay_options(&s),
            "lowerdir=0:1,upperdir=u/etc,workdir=u/.systemd-etc-workdir,redirect_dir=on,metacopy=off,index=off"
        );
        let f = Flags { read_only: false, nosuid: true, noexec: true, noatime: true };
        assert_eq!(f.mount_flags(), MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NOATIME);
        let ro = Flags { read_only: true, nosuid: true, noexec: true, noatime: false };
        assert_eq!(
            ro.attrs(),
            MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NOEXEC
        );
    }

    fn fd_paths(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("/proc/self/fd/{}", 10 + i)).collect()
    }

    #[test]
    fn the_mechanism_follows_what_the_kernel_takes() {
        // 15 fd paths are 254 bytes, 16 are 271: more than one fsconfig value holds.
        assert_eq!(lowerdir_value(&fd_paths(15)).len(), 254);
        assert_eq!(OverlayApi::Parsed.mechanism(&fd_paths(15)), Mechanism::List);
        assert_eq!(OverlayApi::Parsed.mechanism(&fd_paths(16)), Mechanism::Options);
        assert_eq!(OverlayApi::Legacy.mechanism(&fd_paths(3)), Mechanism::List);
        assert_eq!(OverlayApi::Legacy.mechanism(&fd_paths(128)), Mechanism::Options);
        assert_eq!(OverlayApi::Append.mechanism(&fd_paths(MAX_LOWER_LAYERS)), Mechanism::Append);
    }

    #[test]
    fn short_names_fit_overlayfs_whole_stack_in_one_page() {
        let names: Vec<String> = (0..MAX_LOWER_LAYERS).map(|i| i.to_string()).collect();
        let options = overlay_options(&spec(names));
        assert_eq!(options.len(), 9 + 10 * 2 + 90 * 3 + 400 * 4 - 1);
        assert!(options_fit(&options, 4096));
        // What the fd paths would need: no page holds 500 of them, nor 240.
        assert!(!options_fit(&overlay_options(&spec(fd_paths(240))), 4096));
        assert!(options_fit(&overlay_options(&spec(fd_paths(225))), 4096));
        // mount(2) cuts the page's last byte: 4095 bytes are the most.
        assert!(options_fit(&"x".repeat(4095), 4096) && !options_fit(&"x".repeat(4096), 4096));
    }

    #[test]
    fn kernel_log_records() {
        let text: Vec<&str> =
            kmsg_text(b"3,1234,5678,-;overlayfs: overlapping lowerdir path\n SUBSYSTEM=x\n").collect();
        assert_eq!(text, ["overlayfs: overlapping lowerdir path"]);
        assert_eq!(kmsg_text(b"garbage").count(), 0);
    }

    #[test]
    fn outermost_submounts_only() {
        assert_eq!(parse_submounts(INFO, "/sysroot/opt"), ["/sysroot/opt/data", "/sysroot/opt/with space"]);
        assert!(parse_submounts(INFO, "/sysroot/usr").is_empty());
    }
}
