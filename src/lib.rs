//! initrd-sysext: merge systemd system extensions onto the real root in the initrd, before
//! switch-root, so that PID 1 starts on a /usr that already holds them.
//!
//! Boot flow: initrd-sysext.service runs after initrd-fs.target (the sysroot and its /usr are
//! mounted, Ignition has written /sysroot/etc) and before initrd.target. It reads the kernel
//! command line, finds images in the sysroot's extension directories, checks each, and mounts
//! one read-only overlay per hierarchy on /sysroot/usr and /sysroot/opt, in the on-disk format of
//! systemd-sysext. Any image it cannot use is skipped with a logged reason; boot always goes on.

// The pipeline, in boot order.
pub mod apply; // 6. loop devices, mounts, rollback
pub mod cmdline; // 1. what the kernel command line allows
pub mod discover; // 2. images in the sysroot's search paths
pub mod handover; // 8. what the booted system's systemd-sysext needs to know
pub mod inspect; // 4. what each image holds …
pub mod plan; // 5. the decision, as plain data
pub mod refresh_check; // in the booted system: does systemd-sysext need to refresh?
pub mod release;
pub mod report;
pub mod validate; // … and whether it fits this root
pub mod verify; // 3. what each file is (later: signatures)
pub mod version; // 7. kmsg lines and report.json

// Glue and plumbing.
pub mod error;
pub mod fstab;
pub mod json;
pub mod pipeline;
pub mod state;
pub mod sys;
