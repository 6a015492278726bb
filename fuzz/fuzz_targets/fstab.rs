//! The sysroot's /etc/fstab is whatever is on the disk: parsing never panics, every entry has a
//! simplified absolute target, and the entry found for a path is one of its parents.
#![no_main]

use initrd_sysext::fstab;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries = fstab::parse(&text);
    for e in &entries {
        assert!(e.target.starts_with('/') && !e.target.contains("//") && !e.target.contains("/./"), "{e:?}");
        assert!(e.target == "/" || !e.target.ends_with('/'), "{e:?}");
    }
    for path in ["/etc/extensions", "/run/extensions", "/var/lib/extensions"] {
        if let Some(e) = fstab::holding(&entries, path) {
            assert!(e.target != "/" && (path == e.target || path.starts_with(&format!("{}/", e.target))), "{e:?}");
        }
    }
});
