//! The local tier's own files, read back after a crash or a bad disk: an index copy and a
//! listing made of arbitrary bytes must never panic; a listing that parses must format back
//! to a listing that parses to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::local::{decode_index_copy, format_listing, parse_listing};

fuzz_target!(|data: &[u8]| {
    let _ = decode_index_copy(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(entries) = parse_listing(text) {
            let again = format_listing(&entries);
            assert_eq!(parse_listing(&again), Some(entries));
        }
    }
});
