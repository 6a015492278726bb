//! initrd-sysext: merge systemd system extensions onto the real root in the initrd, before
//! switch-root, so that PID 1 starts on a /usr that already holds them.
//!
//! Boot flow: initrd-sysext.service runs after initrd-fs.target (the sysroot and its /usr are
//! mounted, Ignition has written /sysroot/etc) and before initrd.target. It reads the kernel
//! command line, finds images in the sysroot's extension directories, checks each, and mounts
//! one read-only overlay per hierarchy on /sysroot/usr and /sysroot/opt, in the on-disk format of
//! systemd-sysext. Any image it cannot use is skipped with a logged reason; boot always goes on.
//!
//! The pipeline, one module per step, in boot order (composed in `pipeline`):
//! 1. `cmdline`: what the kernel command line allows;
//! 2. `discover`: images in the sysroot's search paths (`fstab`: whether one of them sits on a
//!    file system the initrd has not mounted);
//! 3. `verify`: what each file is and what protects it (dm-verity, signatures, certificates);
//! 4. `inspect`: what each image holds, and `validate`: whether it fits this root;
//! 5. `plan`: the decision, as plain data;
//! 6. `apply`: loop and dm-verity devices, mounts, rollback;
//! 7. `report`: log lines and report.json;
//! 8. `handover`: what the booted system's systemd-sysext needs to know.
//!
//! In the booted system, `refresh_check` tells whether systemd-sysext needs to refresh.
//!
//! `sys` is the only code that makes syscalls, and imports nothing from the steps.

// The steps (see above for their order).
pub mod apply;
pub mod cmdline;
pub mod discover;
pub mod fstab;
pub mod handover;
pub mod inspect;
pub mod plan;
pub mod refresh_check;
pub mod report;
pub mod validate;
pub mod verify;

// Formats and rules the steps share: os-release(5) syntax, systemd's version order.
pub mod release;
pub mod version;

// Glue and plumbing.
pub mod error;
pub mod json;
pub mod pipeline;
pub mod state;
pub mod sys;
