//! The kernel command line parser: never panics, and a name list it accepts holds only names
//! an image could have, by the one image name rule.
#![no_main]

use initrd_sysext::class::Class;
use initrd_sysext::cmdline::{self, Selection};
use initrd_sysext::discover::image_name_is_valid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let c = cmdline::parse(text);
    for class in Class::ALL {
        if let Selection::Only(names) = c.selection(class) {
            for n in names {
                assert!(image_name_is_valid(n) && !n.contains(',') && !n.contains('"'), "{n:?}");
            }
        }
    }
});
