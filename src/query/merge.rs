//! Merging one series' chunks from several tiers into one ordered, non-overlapping list.
//!
//! The same samples can reach a query twice: a chunk retained in memory after its flush is
//! also in the store, and an upload repeated after a crash puts a chunk in two objects.
//! Chunks from different tiers can also overlap without being equal (a chunk cut early
//! before a crash, rebuilt whole by replay). The answer must hold every sample once:
//! - equal chunks (same time range and bytes) are kept once, as they are;
//! - a run of chunks that overlap in time is decoded, merged by timestamp (the first
//!   value seen for a timestamp wins: the head refuses a second value for one, so all
//!   tiers agree), and re-encoded into chunks of at most 120 samples;
//! - everything else passes through untouched, so the common case costs no decoding.
//!
//! Chunks of every encoding (XOR floats, integer and float native histograms) take part:
//! a run is decoded per encoding (`crate::hist::decode`) and re-encoded with a new chunk
//! wherever the kind of value changes (histograms as the codec cuts them). If a float and
//! a histogram (or an integer and a float histogram) sample share a timestamp, which the
//! head never allows within one series but tiers written by different ingesters could
//! hold, the value of the lowest encoding wins: float, then integer histogram, then float
//! histogram. Equal-encoding ties keep the first chunk's value in (min_t, max_t) order.

use crate::head::ChunkCopy;
use crate::hist::{self, Value};

/// Sorts, dedupes and merges `chunks` (see the module docs). Chunks that do not decode are
/// dropped and counted in the returned number; they were validated when they were read, so
/// this only happens on a bug.
pub fn merge_chunks(mut chunks: Vec<ChunkCopy>) -> (Vec<ChunkCopy>, usize) {
    chunks.sort_by_key(|c| (c.min_t, c.max_t, c.encoding));
    chunks.dedup_by(|b, a| {
        a.min_t == b.min_t && a.max_t == b.max_t && a.encoding == b.encoding && a.data == b.data
    });
    let mut out = Vec::with_capacity(chunks.len());
    let mut bad = 0;
    let mut i = 0;
    while i < chunks.len() {
        // The run of chunks overlapping chunks[i] (transitively).
        let mut end = chunks[i].max_t;
        let mut j = i + 1;
        while j < chunks.len() && chunks[j].min_t <= end {
            end = end.max(chunks[j].max_t);
            j += 1;
        }
        if j == i + 1 {
            out.push(std::mem::take(&mut chunks[i]));
        } else {
            bad += merge_run(&chunks[i..j], &mut out);
        }
        i = j;
    }
    (out, bad)
}

/// `chunks` as they are if they are sorted by start and disjoint (the usual case, no
/// decoding), else [`merge_chunks`] of them: one tier's chunks overlap when out-of-order
/// chunks are among them. Chunks that do not decode are logged and left out.
pub fn merge_if_overlapping(chunks: Vec<ChunkCopy>) -> Vec<ChunkCopy> {
    if chunks.windows(2).all(|w| w[0].max_t < w[1].min_t) {
        return chunks;
    }
    let (merged, bad) = merge_chunks(chunks);
    if bad > 0 {
        tracing::error!(bad, "chunks that do not decode were left out");
    }
    merged
}

fn merge_run(run: &[ChunkCopy], out: &mut Vec<ChunkCopy>) -> usize {
    let mut samples: Vec<(i64, Value)> = Vec::new();
    let mut bad = 0;
    for c in run {
        match hist::decode(c.encoding, &c.data) {
            Ok(s) => samples.extend(s),
            Err(_) => bad += 1,
        }
    }
    // Stable: for one timestamp the lowest encoding, then the first chunk, is kept.
    samples.sort_by_key(|s| (s.0, s.1.encoding()));
    samples.dedup_by_key(|s| s.0);
    let flushed = run.iter().all(|c| c.flushed);
    out.extend(hist::encode(&samples).into_iter().map(|e| ChunkCopy {
        min_t: e.min_t,
        max_t: e.max_t,
        data: e.data,
        flushed,
        encoding: e.encoding,
    }));
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{decode_bits, encode, SAMPLES_PER_CHUNK};
    use proptest::prelude::*;

    fn chunk(samples: &[(i64, f64)]) -> ChunkCopy {
        ChunkCopy {
            min_t: samples[0].0,
            max_t: samples[samples.len() - 1].0,
            data: encode(samples.iter().copied()),
            flushed: false,
            encoding: crate::store::object::ENCODING_XOR,
        }
    }

    fn decode(chunks: &[ChunkCopy]) -> Vec<(i64, u64)> {
        chunks
            .iter()
            .flat_map(|c| decode_bits(&c.data).unwrap())
            .collect()
    }

    #[test]
    fn equal_chunks_are_kept_once_untouched() {
        let a = chunk(&[(1, 1.0), (2, 2.0)]);
        let b = chunk(&[(5, 1.0), (9, 2.0)]);
        let (out, bad) = merge_chunks(vec![b.clone(), a.clone(), a.clone(), b.clone()]);
        assert_eq!(bad, 0);
        assert_eq!(out, vec![a, b]);
    }

    #[test]
    fn overlapping_chunks_merge_into_ordered_unique_samples() {
        // A chunk cut early (0..=50) and the whole chunk replay rebuilt (0..=119).
        let all: Vec<(i64, f64)> = (0..120).map(|i| (i * 10, i as f64)).collect();
        let (out, bad) = merge_chunks(vec![chunk(&all), chunk(&all[..51]), chunk(&all[100..])]);
        assert_eq!(bad, 0);
        let want: Vec<(i64, u64)> = all.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(decode(&out), want);
        assert_eq!(out.len(), 1);
    }

    fn hist_chunks(hs: &[(i64, crate::model::HistogramValue)]) -> Vec<ChunkCopy> {
        crate::hist::encode_histograms(hs)
            .into_iter()
            .map(|e| ChunkCopy {
                min_t: e.min_t,
                max_t: e.max_t,
                data: e.data,
                flushed: false,
                encoding: e.encoding,
            })
            .collect()
    }

    fn decode_hists(chunks: &[ChunkCopy]) -> Vec<(i64, crate::model::HistogramValue)> {
        chunks
            .iter()
            .flat_map(|c| crate::hist::decode_histograms(c.encoding, &c.data).unwrap())
            .collect()
    }

    /// Overlapping histogram chunks (a chunk cut early and the whole one, of both kinds)
    /// merge into each sample once, re-encoded as histogram chunks of the same kind.
    #[test]
    fn overlapping_histogram_chunks_merge_per_encoding() {
        use crate::hist::fixtures::{float_series, int_series, same_samples};
        for hs in [int_series(0, 1000, 150), float_series(0, 1000, 150)] {
            let whole = hist_chunks(&hs);
            let early = hist_chunks(&hs[..40]);
            let mut tiers = whole.clone();
            tiers.extend(early);
            tiers.reverse();
            let (out, bad) = merge_chunks(tiers);
            assert_eq!(bad, 0);
            assert!(out.iter().all(|c| c.encoding == whole[0].encoding));
            assert!(out.windows(2).all(|w| w[0].max_t < w[1].min_t));
            assert!(same_samples(&decode_hists(&out), &hs));
        }
    }

    /// A float and a histogram at one timestamp in overlapping chunks: the float wins
    /// (lowest encoding), whatever order the tiers come in; the rest is kept.
    #[test]
    fn a_float_and_a_histogram_at_one_timestamp_keep_the_float() {
        use crate::hist::fixtures::int_series;
        let hs = int_series(1000, 1000, 3);
        let floats = chunk(&[(1000, 1.5), (50_000, 2.5)]);
        let hist = hist_chunks(&hs);
        for order in [0, 1] {
            let mut tiers = hist.clone();
            if order == 0 {
                tiers.insert(0, floats.clone());
            } else {
                tiers.push(floats.clone());
            }
            let (out, bad) = merge_chunks(tiers);
            assert_eq!(bad, 0);
            let encs: Vec<u8> = out.iter().map(|c| c.encoding).collect();
            assert_eq!(encs.first(), Some(&crate::chunk::ENCODING_XOR));
            assert_eq!(encs.last(), Some(&crate::chunk::ENCODING_XOR));
            assert_eq!(decode(&out[..1]), vec![(1000, 1.5f64.to_bits())]);
            let got = decode_hists(&out[1..out.len() - 1]);
            assert!(crate::hist::fixtures::same_samples(&got, &hs[1..]));
        }
    }

    proptest! {
        /// Any tiering of a series (its samples cut into chunks anywhere, each chunk present
        /// in one or more tiers, tiers re-cut differently) merges back to the series.
        #[test]
        fn any_tiering_merges_back_to_the_series(
            n in 1usize..400,
            cuts_a in proptest::collection::vec(1usize..130, 1..8),
            cuts_b in proptest::collection::vec(1usize..130, 1..8),
            keep_b in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let samples: Vec<(i64, f64)> =
                (0..n as i64).map(|i| (i * 15_000 + (i % 3), (i as f64).sin())).collect();
            let cut = |cuts: &[usize]| {
                let mut out = Vec::new();
                let mut at = 0;
                let mut k = 0;
                while at < samples.len() {
                    let len = cuts[k % cuts.len()].min(SAMPLES_PER_CHUNK);
                    let end = (at + len).min(samples.len());
                    out.push(chunk(&samples[at..end]));
                    at = end;
                    k += 1;
                }
                out
            };
            let mut tiers = cut(&cuts_a);
            tiers.extend(
                cut(&cuts_b)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| keep_b[i % keep_b.len()])
                    .map(|(_, c)| c),
            );
            tiers.reverse();
            let (out, bad) = merge_chunks(tiers);
            prop_assert_eq!(bad, 0);
            let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
            prop_assert_eq!(decode(&out), want);
            prop_assert!(out.windows(2).all(|w| w[0].max_t < w[1].min_t));
        }
    }
}
