//! Loop devices attached from several threads at once, as the pipeline opens images (needs root
//! and /dev/loop-control). A test binary of its own: no other test attaches loop devices while it
//! runs, so a second try can only come from our own threads racing for one free device.

use std::io::Write;
use std::os::fd::AsFd;

use initrd_sysext::sys::loopdev::{attach, Range};

#[test]
fn threads_attaching_at_once_never_race_for_the_same_device() {
    let mut file = tempfile();
    file.write_all(&[0u8; 4096]).unwrap();
    let tries: Vec<usize> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..25)
                        .map(|_| attach(file.as_fd(), Range::WHOLE, "/dev/loop-control").expect("attach").tries)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(tries.len(), 200);
    assert!(tries.iter().all(|&t| t == 1), "tries per attach: {tries:?}");
}

/// A scratch file, removed at once: the loop devices hold it open.
fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("initrd-sysext-loopdev-{}", std::process::id()));
    let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}
