//! The release-file parser takes bytes from untrusted images: it must never panic, and what it
//! accepts must be sane.
#![no_main]

use initrd_sysext::release;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match release::parse(data) {
        Ok(info) => {
            // Anything it accepted was text, within the size limit.
            assert!(data.len() <= release::MAX_SIZE && std::str::from_utf8(data).is_ok());
            for key in ["ID", "VERSION_ID", "SYSEXT_LEVEL", "SYSEXT_SCOPE", "ARCHITECTURE"] {
                if let Some(v) = info.value(key) {
                    assert!(!v.is_empty());
                }
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
