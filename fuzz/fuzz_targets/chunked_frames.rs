//! Streamed remote-read frames: read frame after frame until an error or the end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match weft::proto::read_chunked_frame(rest, 1 << 12) {
            Ok((msg, r)) => {
                assert!(msg.len() <= 1 << 12 && r.len() < rest.len());
                rest = r;
            }
            Err(_) => break,
        }
    }
});
