//! Remote write 2.0 as the API sees it (snappy with a limit, then the zero-copy 2.0
//! decoder), and the decoder alone on raw bytes so the fuzzer reaches protobuf edge cases
//! (symbol references, packed refs, histograms) without snappy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::proto::{decode_write_request_v2, decompress, WriteBatch, MAX_HISTOGRAMS_PER_REQUEST};

fuzz_target!(|data: &[u8]| {
    let mut batch = WriteBatch::default();
    if let Ok(body) = decompress(data, 1 << 20) {
        assert!(body.len() <= 1 << 20);
        let _ = decode_write_request_v2(&body, &mut batch);
    }
    let mut batch = WriteBatch::default();
    if decode_write_request_v2(data, &mut batch).is_ok() {
        let (mut labels, mut samples, mut hists, mut exemplars) = (0u32, 0u32, 0u32, 0u32);
        for s in &batch.series {
            assert_eq!(
                (s.labels_start, s.samples_start, s.histograms_start, s.exemplars_start),
                (labels, samples, hists, exemplars)
            );
            (labels, samples, hists, exemplars) =
                (s.labels_end, s.samples_end, s.histograms_end, s.exemplars_end);
        }
        assert_eq!(
            (labels as usize, samples as usize, hists as usize, exemplars as usize),
            (
                batch.labels.len(),
                batch.samples.len(),
                batch.histograms.len(),
                batch.exemplars.len()
            )
        );
        assert!(batch.histograms.len() <= MAX_HISTOGRAMS_PER_REQUEST);
        // Every resolved label borrows from the body.
        let range = data.as_ptr_range();
        for (n, v) in batch.labels.iter().chain(&batch.exemplar_labels) {
            for s in [n, v] {
                assert!(s.is_empty() || range.contains(&s.as_ptr()));
            }
        }
    }
});
