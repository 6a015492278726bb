//! initrd-sysext: merge systemd system extensions and configuration extensions onto the real
//! root in the initrd, before switch-root, so that PID 1 starts on a /usr and an /etc that
//! already hold them.
//!
//! Boot flow: initrd-sysext.service runs after initrd-fs.target (the sysroot and its /usr are
//! mounted, Ignition has written /sysroot/etc) and before initrd.target. It reads the kernel
//! command line, finds images in the sysroot's extension directories, checks each, and mounts
//! one overlay per hierarchy: read-only on /sysroot/usr and /sysroot/opt for sysexts, then on
//! /sysroot/etc for confexts (read-only, or writable in systemd-confext's mutable modes), in the
//! on-disk format of systemd-sysext and systemd-confext. Any image it cannot use is skipped with
//! a logged reason; boot always goes on.
//!
//! The pipeline runs once per class (`class`), sysexts first, one module per step, in boot order
//! (composed in `pipeline`):
//! 1. `cmdline`: what the kernel command line allows;
//! 2. `discover`: images in the sysroot's search paths (`fstab`: whether one of them sits on a
//!    file system the initrd has not mounted);
//! 3. `verify`: what each file is and what protects it (dm-verity, signatures, certificates);
//! 4. `inspect`: what each image holds, and `validate`: whether it fits this root;
//! 5. `plan`: the decision, as plain data (`mutable`: the overlay a confext mutable mode makes,
//!    chosen as systemd chooses it, `config`: its configuration files; `etc`: what the root's
//!    /etc is);
//! 6. `apply`: loop and dm-verity devices, mounts, rollback;
//! 7. `report`: log lines and report.json (`timeline`: when each step ended);
//! 8. `handover`: what the booted system's systemd-sysext needs to know.
//!
//! In the booted system, `refresh_check` tells whether systemd-sysext needs to refresh.
//!
//! `sys` is the only code that makes syscalls, and imports nothing from the steps.

// The steps (see above for their order).
pub mod apply;
pub mod cmdline;
pub mod discover;
pub mod etc;
pub mod fstab;
pub mod handover;
pub mod inspect;
pub mod mutable;
pub mod plan;
pub mod refresh_check;
pub mod report;
pub mod validate;
pub mod verify;

// Formats and rules the steps share: the image classes, os-release(5) syntax, systemd's
// configuration files, systemd's version order.
pub mod class;
pub mod config;
pub mod release;
pub mod version;

// Glue and plumbing.
pub mod error;
pub mod json;
pub mod parallel;
pub mod pipeline;
pub mod state;
pub mod sys;
pub mod timeline;
