//! Decoding arbitrary bytes as a checkpoint must never panic or over-allocate; a checkpoint
//! that validates must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::wal::checkpoint::{checkpoint_name, decode_checkpoint, decode_series, write_checkpoint};
use weft::wal::{MemDir, WalDir};

fuzz_target!(|data: &[u8]| {
    let _ = decode_series(data);
    let mut series = Vec::new();
    let Ok(stats) = decode_checkpoint("checkpoint", data, |s| {
        series.push(s);
        Ok(())
    }) else {
        return;
    };
    let dir = MemDir::new();
    write_checkpoint(&dir, stats.index, series.into_iter()).expect("re-encode");
    let mut back = Vec::new();
    dir.read_into(&checkpoint_name(stats.index), &mut back).unwrap();
    assert_eq!(back, data);
});
