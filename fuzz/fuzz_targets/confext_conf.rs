//! confext.conf is whatever the root's /etc holds: parsing never panics, and a `Mutable=` it
//! takes is one that parses as a mode.
#![no_main]

use initrd_sysext::config::{self, Settings};
use initrd_sysext::mutable::Mode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut s = Settings::default();
    if config::parse(&mut s, "/etc/systemd/confext.conf", data, &|v| Mode::parse(v).is_some()).is_ok() {
        if let Some((value, file)) = &s.mutable {
            assert!(Mode::parse(value).is_some() && file == "/etc/systemd/confext.conf", "{value:?}");
        }
    }
});
