//! The GPT and verity superblock parsers read untrusted images: they must never panic, and what
//! they accept must lie inside the image.
#![no_main]

use initrd_sysext::class::Class;
use initrd_sysext::verify::{gpt, verity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let mut read = |offset: u64, len: usize| {
        let start = usize::try_from(offset).map_err(|_| "offset".to_string())?;
        data.get(start..start.checked_add(len).ok_or("len")?).map(<[u8]>::to_vec).ok_or_else(|| "short".to_string())
    };
    for class in Class::ALL {
        if let Ok(layout) = gpt::parse(size, class.roles(), &mut read) {
            assert!(class.roles().contains(&layout.role));
            for p in std::iter::once(&layout.data).chain(&layout.verity).chain(&layout.signature) {
                assert!(p.offset + p.size <= size);
            }
        }
    }
    if let Ok(sb) = verity::parse_superblock(data) {
        assert!(sb.data_block_size.is_power_of_two() && sb.salt.len() <= 256);
        std::hint::black_box((sb.hash_bytes(), sb.table("a", "b", &[0; 32]), sb.top_block()));
    }
});
