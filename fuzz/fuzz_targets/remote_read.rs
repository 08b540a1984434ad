//! Remote-read request decoding (prost, after the caller's snappy step).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weft::proto::decode_read_request(data);
});
