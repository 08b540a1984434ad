//! The chunk codec against real Prometheus 2.42 chunks: decoding gives exactly their samples,
//! encoding the samples gives exactly their bytes, and resuming a chunk part-way with
//! `XorAppender::from_chunk` gives the same bytes as appending in one go.

#[path = "common/testdata.rs"]
mod testdata;

use testdata::TestChunk;
use weft::chunk::{decode_bits, encode, XorAppender, XorIterator};

fn chunks() -> Vec<TestChunk> {
    testdata::load().unwrap_or_default()
}

fn values(samples: &[(i64, u64)]) -> impl Iterator<Item = (i64, f64)> + '_ {
    samples.iter().map(|&(t, b)| (t, f64::from_bits(b)))
}

#[test]
fn testdata_has_the_documented_size() {
    let Some(chunks) = testdata::load() else {
        return;
    };
    assert_eq!(chunks.len(), 829);
    assert_eq!(
        chunks.iter().map(|c| c.samples.len()).sum::<usize>(),
        90_853
    );
}

#[test]
fn decoding_prometheus_chunks_gives_their_samples_bit_for_bit() {
    for (i, c) in chunks().iter().enumerate() {
        let got = decode_bits(&c.chunk).unwrap_or_else(|e| panic!("chunk {i} {}: {e}", c.labels));
        assert_eq!(got, c.samples, "chunk {i} {}", c.labels);
        assert_eq!(
            usize::from(XorIterator::new(&c.chunk).unwrap().num_samples()),
            c.samples.len()
        );
    }
}

#[test]
fn encoding_samples_with_a_fresh_appender_gives_prometheus_bytes() {
    for (i, c) in chunks().iter().enumerate() {
        let got = encode(values(&c.samples));
        assert_eq!(got, c.chunk, "chunk {i} {}", c.labels);
    }
}

#[test]
fn appender_bytes_is_a_decodable_prefix_after_every_append() {
    for (i, c) in chunks().iter().enumerate() {
        let mut app = XorAppender::new();
        for (n, (t, v)) in values(&c.samples).enumerate() {
            app.append(t, v);
            assert_eq!(app.num_samples(), n + 1);
            let got = decode_bits(app.bytes()).unwrap();
            assert_eq!(got, c.samples[..=n], "chunk {i} after {} samples", n + 1);
        }
        assert!(app.heap_bytes() >= app.bytes().len());
    }
}

#[test]
fn resuming_at_every_split_point_gives_the_same_bytes() {
    for (i, c) in chunks().iter().enumerate() {
        let mut app = XorAppender::new();
        // Prefix chunks as the appender had them after each sample.
        let mut prefixes = vec![app.bytes().to_vec()];
        for (t, v) in values(&c.samples) {
            app.append(t, v);
            prefixes.push(app.bytes().to_vec());
        }
        for (split, prefix) in prefixes.iter().enumerate() {
            let mut resumed = XorAppender::from_chunk(prefix)
                .unwrap_or_else(|e| panic!("chunk {i} split {split}: {e}"));
            assert_eq!(resumed.num_samples(), split);
            for (t, v) in values(&c.samples[split..]) {
                resumed.append(t, v);
            }
            assert_eq!(resumed.bytes(), &c.chunk[..], "chunk {i} split {split}");
        }
    }
}

#[test]
fn resuming_the_finished_prometheus_chunk_matches_the_continued_appender() {
    // Continue every chunk with a few extra samples, both from the original appender and
    // from one resumed from Prometheus's bytes.
    for (i, c) in chunks().iter().enumerate() {
        let mut original = XorAppender::new();
        for (t, v) in values(&c.samples) {
            original.append(t, v);
        }
        let mut resumed = XorAppender::from_chunk(&c.chunk).unwrap();
        let last_t = c.samples.last().map_or(0, |s| s.0);
        for k in 1..=5i64 {
            let (t, v) = (last_t.wrapping_add(k * 997), (k as f64) * 0.1);
            original.append(t, v);
            resumed.append(t, v);
        }
        assert_eq!(resumed.bytes(), original.bytes(), "chunk {i}");
    }
}

#[test]
fn truncating_a_prometheus_chunk_is_an_error_not_a_panic() {
    for c in chunks().iter().take(50) {
        for cut in 0..c.chunk.len() {
            let short = &c.chunk[..cut];
            let res = decode_bits(short);
            if cut < 2 {
                assert!(res.is_err());
            }
            // A cut inside the last byte's padding can still decode; otherwise it must fail.
            if let Ok(s) = res {
                assert_eq!(s, c.samples);
            }
        }
    }
}
