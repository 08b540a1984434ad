//! Remote write as the API sees it (snappy with a limit, then the zero-copy decoder), and the
//! decoder alone on raw bytes so the fuzzer reaches protobuf edge cases without snappy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::proto::{decode_write_request, decompress, WriteBatch};

fuzz_target!(|data: &[u8]| {
    let mut batch = WriteBatch::default();
    if let Ok(body) = decompress(data, 1 << 20) {
        assert!(body.len() <= 1 << 20);
        let _ = decode_write_request(&body, &mut batch);
    }
    let mut batch = WriteBatch::default();
    if decode_write_request(data, &mut batch).is_ok() {
        let (mut labels, mut samples) = (0u32, 0u32);
        for s in &batch.series {
            assert_eq!((s.labels_start, s.samples_start), (labels, samples));
            (labels, samples) = (s.labels_end, s.samples_end);
        }
        assert_eq!(
            (labels as usize, samples as usize),
            (batch.labels.len(), batch.samples.len())
        );
    }
});
