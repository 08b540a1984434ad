//! Snappy block decompression with a limit: never panics, never exceeds the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = weft::proto::decompress(data, 1 << 16) {
        assert!(out.len() <= 1 << 16);
    }
});
