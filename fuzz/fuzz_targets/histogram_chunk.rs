//! Decoding arbitrary bytes as a histogram chunk (encodings 2 and 3) must never panic or
//! over-allocate; a chunk that decodes and re-opens must re-open to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::chunk::{
    decode_histogram_chunk, FloatHistogramAppender, HistogramAppender, ENCODING_HISTOGRAM,
};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let enc = 2 + (sel & 1);
    let Ok(samples) = decode_histogram_chunk(enc, bytes) else {
        return;
    };
    let buckets: usize = samples
        .iter()
        .map(|(_, v)| match v {
            weft::model::HistogramValue::Int(h) => h.positive_buckets.len() + h.negative_buckets.len(),
            weft::model::HistogramValue::Float(h) => h.positive_buckets.len() + h.negative_buckets.len(),
        })
        .sum();
    assert!(buckets <= bytes.len() * 8 + 8, "decoded more buckets than bits");
    // Re-opened: the same bytes, or for a chunk in Prometheus 3's form, the same plus 2.42's
    // empty last byte.
    let same = |ours: &[u8]| ours == bytes || ours == [bytes, &[0]].concat();
    if enc == ENCODING_HISTOGRAM {
        if let Ok(app) = HistogramAppender::from_chunk(bytes) {
            assert!(same(app.bytes()));
        }
    } else if let Ok(app) = FloatHistogramAppender::from_chunk(bytes) {
        assert!(same(app.bytes()));
    }
});
