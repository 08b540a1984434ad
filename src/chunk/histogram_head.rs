//! The head's view of histogram chunks: one open chunk per series of either encoding,
//! cut exactly where Prometheus 2.42's head cuts (`tsdb/head_append.go`,
//! `appendPreprocessor` + `appendHistogram`/`appendFloatHistogram`).
//!
//! Cuts happen when the sample does not fit (see [`Appended::NewChunk`]), when the kind
//! changes (integer ↔ float histogram), and by Prometheus's size/time rule
//! ([`HistogramHeadAppender::histogram_chunk_full`]): a chunk ends at the end of its
//! `chunk_range`-aligned window (2h by default), at the time predicted once it holds 30
//! samples (so that chunks of the window hold about 120 samples each), and at 240 samples.
//! A chunk cut by that rule gets the header `NotCounterReset` if the sample would have
//! fitted, `CounterReset` if it is a reset, `Gauge` for gauges, else `Unknown`.

use super::float_histogram::{FloatHistogramAppender, FloatHistogramIterator};
use super::histogram::{Appended, CounterResetHeader, HistogramAppender, HistogramIterator};
use super::{ChunkError, ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM};
use crate::model::HistogramValue;

/// Prometheus's `samplesPerChunk`; histogram chunks are cut at twice this at the latest.
const SAMPLES_PER_HISTOGRAM_CHUNK: usize = 120;

/// Default head chunk range: Prometheus's 2h minimum block duration, in milliseconds.
pub const DEFAULT_CHUNK_RANGE_MS: i64 = 2 * 3600 * 1000;

/// A closed chunk: `(encoding, bytes, min_t, max_t)`.
pub type ClosedChunk = (u8, Vec<u8>, i64, i64);

#[derive(Debug, Clone)]
enum Open {
    None,
    Int(HistogramAppender),
    Float(FloatHistogramAppender),
}

/// One series' open histogram chunk, of either encoding, with Prometheus 2.42's cut rules.
///
/// `append` takes samples in increasing timestamp order (callers drop samples at or before
/// [`max_t`](Self::max_t), as Prometheus's head does; this type ignores them too) and returns
/// the chunk it closed, if any. `open_bytes`/`encoding` show the open chunk (for WAL
/// checkpoints and queries), `force_cut` closes it (for flushes).
#[derive(Debug, Clone)]
pub struct HistogramHeadAppender {
    open: Open,
    min_t: i64,
    max_t: i64,
    next_at: i64,
    chunk_range: i64,
}

impl Default for HistogramHeadAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl HistogramHeadAppender {
    /// No open chunk, 2h chunk range.
    pub fn new() -> Self {
        Self::with_chunk_range(DEFAULT_CHUNK_RANGE_MS)
    }

    /// No open chunk, with Prometheus's chunk range (`min-block-duration`) in ms (>= 1).
    pub fn with_chunk_range(chunk_range_ms: i64) -> Self {
        Self {
            open: Open::None,
            min_t: i64::MAX,
            max_t: i64::MIN,
            next_at: i64::MAX,
            chunk_range: chunk_range_ms.max(1),
        }
    }

    /// Re-opens an open chunk (for example from a checkpoint after a restart), with the
    /// state Prometheus's head would have after appending its samples: the same cut
    /// decisions follow.
    pub fn from_open_chunk(
        encoding: u8,
        bytes: &[u8],
        chunk_range_ms: i64,
    ) -> Result<Self, ChunkError> {
        let mut head = Self::with_chunk_range(chunk_range_ms);
        head.open = match encoding {
            ENCODING_HISTOGRAM => Open::Int(HistogramAppender::from_chunk(bytes)?),
            ENCODING_FLOAT_HISTOGRAM => Open::Float(FloatHistogramAppender::from_chunk(bytes)?),
            _ => {
                return Err(ChunkError::Corrupt {
                    sample: 0,
                    what: "not a histogram chunk encoding",
                })
            }
        };
        let mut ts = Vec::with_capacity(head.num_samples());
        for s in HistogramChunkIter::new(encoding, bytes)? {
            ts.push(s?.0);
        }
        let (Some(&first), Some(&last)) = (ts.first(), ts.last()) else {
            return Ok(Self::with_chunk_range(chunk_range_ms));
        };
        head.min_t = first;
        head.max_t = last;
        head.next_at = range_for_timestamp(first, head.chunk_range);
        // The end predicted when the chunk held 30 samples (max_t was the 30th's time).
        if let Some(&t30) = ts.get(SAMPLES_PER_HISTOGRAM_CHUNK / 4 - 1) {
            if ts.len() > SAMPLES_PER_HISTOGRAM_CHUNK / 4 {
                head.next_at = compute_chunk_end_time(first, t30, head.next_at);
            }
        }
        Ok(head)
    }

    /// The newest sample of the open chunk, as appended.
    pub fn last(&self) -> Option<(i64, HistogramValue)> {
        match &self.open {
            Open::None => None,
            Open::Int(a) => a.last().map(|(t, h)| (t, HistogramValue::Int(h.clone()))),
            Open::Float(a) => a.last().map(|(t, h)| (t, HistogramValue::Float(h.clone()))),
        }
    }

    /// Encoding of the open chunk: 2 or 3, or 0 if none is open.
    pub fn encoding(&self) -> u8 {
        match self.open {
            Open::None => 0,
            Open::Int(_) => ENCODING_HISTOGRAM,
            Open::Float(_) => ENCODING_FLOAT_HISTOGRAM,
        }
    }

    /// Bytes of the open chunk (empty if none).
    pub fn open_bytes(&self) -> &[u8] {
        match &self.open {
            Open::None => &[],
            Open::Int(a) => a.bytes(),
            Open::Float(a) => a.bytes(),
        }
    }

    /// Samples in the open chunk.
    pub fn num_samples(&self) -> usize {
        match &self.open {
            Open::None => 0,
            Open::Int(a) => a.num_samples(),
            Open::Float(a) => a.num_samples(),
        }
    }

    /// Timestamp of the newest sample appended (`i64::MIN` before any).
    pub fn max_t(&self) -> i64 {
        self.max_t
    }

    /// First timestamp of the open chunk.
    pub fn min_t(&self) -> i64 {
        self.min_t
    }

    /// Heap bytes of the open chunk.
    pub fn heap_bytes(&self) -> usize {
        match &self.open {
            Open::None => 0,
            Open::Int(a) => a.heap_bytes(),
            Open::Float(a) => a.heap_bytes(),
        }
    }

    /// Prometheus 2.42's size/time rule: whether a sample at `t` must start a new chunk,
    /// given the open chunk's samples. Also updates the predicted end time once the chunk
    /// holds 30 samples (as `appendPreprocessor` does), so call it once per sample.
    pub fn histogram_chunk_full(&mut self, t: i64) -> bool {
        let n = self.num_samples();
        if matches!(self.open, Open::None) {
            return true;
        }
        if n == SAMPLES_PER_HISTOGRAM_CHUNK / 4 {
            self.next_at = compute_chunk_end_time(self.min_t, self.max_t, self.next_at);
        }
        t >= self.next_at || n >= SAMPLES_PER_HISTOGRAM_CHUNK * 2
    }

    /// Closes and returns the open chunk, if it has samples.
    pub fn force_cut(&mut self) -> Option<ClosedChunk> {
        let enc = self.encoding();
        let (min_t, max_t) = (self.min_t, self.max_t);
        let bytes = match std::mem::replace(&mut self.open, Open::None) {
            Open::None => return None,
            Open::Int(a) if a.num_samples() > 0 => a.into_bytes(),
            Open::Float(a) if a.num_samples() > 0 => a.into_bytes(),
            _ => return None,
        };
        Some((enc, bytes, min_t, max_t))
    }

    fn start(&mut self, t: i64, float: bool, header: CounterResetHeader) -> Option<ClosedChunk> {
        let closed = self.force_cut();
        self.open = if float {
            let mut a = FloatHistogramAppender::new();
            a.set_counter_reset_header(header);
            Open::Float(a)
        } else {
            let mut a = HistogramAppender::new();
            a.set_counter_reset_header(header);
            Open::Int(a)
        };
        self.min_t = t;
        self.next_at = range_for_timestamp(t, self.chunk_range);
        closed
    }

    /// Appends one sample; returns the chunk this closed, if any. Samples at or before
    /// `max_t` are ignored (out of order for the head).
    pub fn append(&mut self, t: i64, v: &HistogramValue) -> Option<ClosedChunk> {
        if self.num_samples() > 0 && t <= self.max_t {
            return None;
        }
        let float = matches!(v, HistogramValue::Float(_));
        let same_kind = matches!(
            (&self.open, float),
            (Open::Int(_), false) | (Open::Float(_), true)
        );
        let mut closed = None;
        if !same_kind || self.histogram_chunk_full(t) {
            // The header for the new chunk: decided against the old chunk if of the same
            // kind, as the head does with its previous appender.
            let header = match (&self.open, v) {
                (Open::Int(a), HistogramValue::Int(h)) => a.cut_header(h),
                (Open::Float(a), HistogramValue::Float(h)) => a.cut_header(h),
                (_, HistogramValue::Int(h)) => first_header(h.counter_reset_hint),
                (_, HistogramValue::Float(h)) => first_header(h.counter_reset_hint),
            };
            closed = self.start(t, float, header);
        }
        let res = match (&mut self.open, v) {
            (Open::Int(a), HistogramValue::Int(h)) => a.append(t, h),
            (Open::Float(a), HistogramValue::Float(h)) => a.append(t, h),
            _ => unreachable!("start() opened the right kind"),
        };
        if let Appended::NewChunk(header) = res {
            debug_assert!(closed.is_none());
            closed = self.start(t, float, header);
            let res = match (&mut self.open, v) {
                (Open::Int(a), HistogramValue::Int(h)) => a.append(t, h),
                (Open::Float(a), HistogramValue::Float(h)) => a.append(t, h),
                _ => unreachable!("start() opened the right kind"),
            };
            debug_assert_eq!(res, Appended::Appended);
        }
        self.max_t = t;
        closed
    }
}

fn first_header(hint: crate::model::CounterResetHint) -> CounterResetHeader {
    use crate::model::CounterResetHint;
    match hint {
        CounterResetHint::Gauge => CounterResetHeader::Gauge,
        CounterResetHint::Yes => CounterResetHeader::CounterReset,
        _ => CounterResetHeader::Unknown,
    }
}

/// Prometheus's `rangeForTimestamp`: the end of the `width`-aligned window holding `t`.
fn range_for_timestamp(t: i64, width: i64) -> i64 {
    (t / width).saturating_mul(width).saturating_add(width)
}

/// Prometheus's `computeChunkEndTime`.
fn compute_chunk_end_time(start: i64, cur: i64, max: i64) -> i64 {
    let div = cur.wrapping_sub(start).wrapping_add(1).wrapping_mul(4);
    if div == 0 {
        return max;
    }
    let n = max.wrapping_sub(start) / div;
    if n <= 1 {
        return max;
    }
    start.wrapping_add(max.wrapping_sub(start) / n)
}

/// The chunks Prometheus 2.42's head would cut for these samples (increasing timestamps),
/// with the default 2h chunk range: `(encoding, bytes, min_t, max_t)` each.
pub fn encode_histograms(samples: &[(i64, HistogramValue)]) -> Vec<ClosedChunk> {
    let mut app = HistogramHeadAppender::new();
    let mut out: Vec<ClosedChunk> = samples
        .iter()
        .filter_map(|(t, v)| app.append(*t, v))
        .collect();
    out.extend(app.force_cut());
    out
}

/// Decodes a whole chunk of encoding 2 or 3.
pub fn decode_histogram_chunk(
    encoding: u8,
    bytes: &[u8],
) -> Result<Vec<(i64, HistogramValue)>, ChunkError> {
    HistogramChunkIter::new(encoding, bytes)?.collect()
}

/// Iterates a chunk of encoding 2 or 3 as `HistogramValue`s.
#[derive(Debug, Clone)]
pub enum HistogramChunkIter<'a> {
    /// Encoding 2.
    Int(HistogramIterator<'a>),
    /// Encoding 3.
    Float(FloatHistogramIterator<'a>),
}

impl<'a> HistogramChunkIter<'a> {
    /// Starts iterating; errors for other encodings and chunks without a header.
    pub fn new(encoding: u8, bytes: &'a [u8]) -> Result<Self, ChunkError> {
        match encoding {
            ENCODING_HISTOGRAM => Ok(Self::Int(HistogramIterator::new(bytes)?)),
            ENCODING_FLOAT_HISTOGRAM => Ok(Self::Float(FloatHistogramIterator::new(bytes)?)),
            _ => Err(ChunkError::Corrupt {
                sample: 0,
                what: "not a histogram chunk encoding",
            }),
        }
    }
}

impl Iterator for HistogramChunkIter<'_> {
    type Item = Result<(i64, HistogramValue), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Int(it) => it
                .next()
                .map(|r| r.map(|(t, h)| (t, HistogramValue::Int(h)))),
            Self::Float(it) => it
                .next()
                .map(|r| r.map(|(t, h)| (t, HistogramValue::Float(h)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{HistogramIterator, STALE_NAN_BITS};
    use crate::model::{CounterResetHint, Histogram, Span};

    fn h(count: u64, spans: &[(i32, u32)], buckets: &[i64]) -> HistogramValue {
        HistogramValue::Int(Histogram {
            schema: 1,
            zero_threshold: 2f64.powi(-128),
            count,
            sum: count as f64 * 1.5,
            positive_spans: spans
                .iter()
                .map(|&(offset, length)| Span { offset, length })
                .collect(),
            positive_buckets: buckets.to_vec(),
            ..Default::default()
        })
    }

    fn with_hint(v: HistogramValue, hint: CounterResetHint) -> HistogramValue {
        match v {
            HistogramValue::Int(mut h) => {
                h.counter_reset_hint = hint;
                HistogramValue::Int(h)
            }
            f => f,
        }
    }

    #[test]
    fn same_layout_new_buckets_and_a_reset_cut_like_the_head() {
        let samples = vec![
            (1000, h(2, &[(0, 2)], &[1, 0])),
            (2000, h(4, &[(0, 2)], &[2, 0])),
            // A new bucket at index 3: recode, same chunk.
            (3000, h(7, &[(0, 2), (1, 1)], &[3, 0, -2])),
            (4000, h(9, &[(0, 2), (1, 1)], &[4, 0, -3])),
            // Counter reset: new chunk.
            (5000, h(1, &[(0, 1)], &[1])),
        ];
        let chunks = encode_histograms(&samples);
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].2, chunks[0].3), (1000, 4000));
        assert_eq!(chunks[1].1[2], CounterResetHeader::CounterReset as u8);
        let first = decode_histogram_chunk(chunks[0].0, &chunks[0].1).unwrap();
        assert_eq!(first.len(), 4);
        // Recoded: the first samples got the new (empty) bucket.
        let HistogramValue::Int(h0) = &first[0].1 else {
            panic!()
        };
        assert_eq!(h0.positive_buckets, vec![1, 0, -1]);
        assert_eq!(
            first[3].1,
            with_hint(samples[3].1.clone(), CounterResetHint::No)
        );
        let second = decode_histogram_chunk(chunks[1].0, &chunks[1].1).unwrap();
        assert_eq!(
            second,
            vec![(5000, with_hint(samples[4].1.clone(), CounterResetHint::Yes))]
        );
        // Re-opening gives an appender that goes on exactly like the original.
        let mut a = HistogramAppender::from_chunk(&chunks[0].1).unwrap();
        assert_eq!(a.bytes(), &chunks[0].1[..]);
        assert_eq!(a.num_samples(), 4);
        let HistogramValue::Int(next) = h(10, &[(0, 2), (1, 1)], &[5, 0, -4]) else {
            panic!()
        };
        assert_eq!(a.append(6000, &next), Appended::Appended);
    }

    fn custom(count: u64, bounds: &[f64], buckets: &[i64]) -> Histogram {
        Histogram {
            schema: crate::model::CUSTOM_BUCKETS_SCHEMA,
            count,
            sum: 1.0,
            positive_spans: vec![Span {
                offset: 0,
                length: buckets.len() as u32,
            }],
            positive_buckets: buckets.to_vec(),
            custom_values: bounds.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn custom_bucket_histograms_keep_their_bounds_and_cut_when_bounds_change() {
        let mut a = HistogramAppender::new();
        let bounds = [0.005, 0.1, 1.0, 2.5, 1e9];
        assert_eq!(
            a.append(1, &custom(3, &bounds, &[1, 1, -1])),
            Appended::Appended
        );
        assert_eq!(
            a.append(2, &custom(5, &bounds, &[2, 0, -1])),
            Appended::Appended
        );
        let back = HistogramIterator::new(a.bytes())
            .unwrap()
            .map(|s| s.unwrap().1)
            .collect::<Vec<_>>();
        assert_eq!(back[1].custom_values, bounds);
        assert_eq!(back[1].positive_buckets, vec![2, 0, -1]);
        // Other bounds: a counter reset (Prometheus v3's rule for schema -53).
        assert_eq!(
            a.append(3, &custom(6, &[0.1, 1.0], &[3, 0, -1])),
            Appended::NewChunk(CounterResetHeader::CounterReset)
        );
        // The bounds that take one varbit (thousandths up to 33554.430) and the ones that
        // take 65 bits both come back exactly.
        assert_eq!(
            HistogramAppender::from_chunk(a.bytes()).unwrap().bytes(),
            a.bytes()
        );
    }

    #[test]
    fn stale_markers_fit_but_nothing_fits_after_them() {
        let mut a = HistogramAppender::new();
        let HistogramValue::Int(h1) = h(2, &[(0, 1)], &[2]) else {
            panic!()
        };
        let stale = Histogram {
            sum: f64::from_bits(STALE_NAN_BITS),
            ..Default::default()
        };
        assert_eq!(a.append(1, &h1), Appended::Appended);
        assert_eq!(a.append(2, &stale), Appended::Appended);
        assert_eq!(a.append(3, &stale), Appended::Appended);
        assert_eq!(
            a.append(4, &h1),
            Appended::NewChunk(CounterResetHeader::Unknown)
        );
        let back = decode_histogram_chunk(ENCODING_HISTOGRAM, a.bytes()).unwrap();
        assert_eq!(back.len(), 3);
        let HistogramValue::Int(s) = &back[2].1 else {
            panic!()
        };
        assert_eq!(s.sum.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn gauge_histograms_take_missing_buckets_as_empty_ones() {
        let gauge = |count, spans: &[(i32, u32)], buckets: &[i64]| {
            with_hint(h(count, spans, buckets), CounterResetHint::Gauge)
        };
        let mut head = HistogramHeadAppender::new();
        assert!(head.append(1, &gauge(5, &[(0, 2)], &[3, -1])).is_none());
        // Bucket 0 gone, bucket 2 new, counts down: still the same gauge chunk.
        assert!(head.append(2, &gauge(1, &[(1, 2)], &[1, -1])).is_none());
        let back = decode_histogram_chunk(head.encoding(), head.open_bytes()).unwrap();
        assert_eq!(head.open_bytes()[2], CounterResetHeader::Gauge as u8);
        let HistogramValue::Int(last) = &back[1].1 else {
            panic!()
        };
        assert_eq!(
            last.positive_spans,
            vec![Span {
                offset: 0,
                length: 3
            }]
        );
        assert_eq!(last.positive_buckets, vec![0, 1, -1]);
        let HistogramValue::Int(first) = &back[0].1 else {
            panic!()
        };
        assert_eq!(first.positive_buckets, vec![3, -1, -2]);
    }

    #[test]
    fn chunks_are_cut_by_prometheus_time_and_size_rule() {
        // 1 s samples from the start of a 2h window: the end is predicted at 30 samples.
        let mut head = HistogramHeadAppender::new();
        let mut closed = Vec::new();
        for i in 0..400i64 {
            let v = h(i as u64, &[(0, 1)], &[i]);
            closed.extend(head.append(7_200_000 + i * 1000, &v));
        }
        let sizes: Vec<usize> = closed
            .iter()
            .map(|c| u16::from_be_bytes([c.1[0], c.1[1]]) as usize)
            .collect();
        // At 30 samples (29 s in): n = 7_200_000 / (29_001 * 4) = 62 chunks in the window,
        // so the chunk ends at 7_200_000 / 62 = 116_129 ms: 117 samples (0 s ..= 116 s).
        assert_eq!(sizes, vec![117, 117, 117]);
        assert!(closed
            .iter()
            .all(|c| c.1[2] == CounterResetHeader::NotCounterReset as u8 || c.2 == 7_200_000));
        // 1 s steps while the end is predicted (at 116_129 ms), then 1 ms steps: the
        // 240-sample cap cuts first.
        let mut head = HistogramHeadAppender::new();
        let mut n = Vec::new();
        for i in 0..300i64 {
            let t = if i <= 30 { i * 1000 } else { 30_000 + i };
            if let Some(c) = head.append(t, &h(i as u64, &[(0, 1)], &[i])) {
                n.push(u16::from_be_bytes([c.1[0], c.1[1]]));
            }
        }
        assert_eq!(n, vec![240]);
    }

    #[test]
    fn many_empty_spans_times_many_samples_are_rejected() {
        use crate::chunk::varbit::{put_varbit_uint, GoBitWriter};
        let mut w = GoBitWriter::with_header(3);
        w.stream[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        w.write_byte(0); // zero threshold 0
        w.write_bit(false); // schema 0
        put_varbit_uint(&mut w, 1000);
        for _ in 0..1000 {
            w.write_bits(0, 2); // length 0, offset 0
        }
        w.write_bit(false); // no negative spans
        w.write_bits(0, 3); // t, count, zero count
        w.write_bits(0, 64); // sum
        for _ in 1..u16::MAX {
            w.write_bits(0, 4);
        }
        // 65535 samples in 33 KB, each with a copy of 1000 spans: refused.
        for enc in [ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM] {
            assert!(matches!(
                decode_histogram_chunk(enc, w.bytes()),
                Err(ChunkError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn a_reopened_open_chunk_cuts_where_the_original_would_have() {
        let samples: Vec<_> = (0..300i64)
            .map(|i| (7_200_000 + i * 1000, h(i as u64, &[(0, 1)], &[i])))
            .collect();
        let want = encode_histograms(&samples);
        for split in [1usize, 29, 30, 31, 100, 150] {
            let mut head = HistogramHeadAppender::new();
            let mut got = Vec::new();
            for (t, v) in &samples[..split] {
                got.extend(head.append(*t, v));
            }
            let mut head = HistogramHeadAppender::from_open_chunk(
                head.encoding(),
                head.open_bytes(),
                DEFAULT_CHUNK_RANGE_MS,
            )
            .unwrap();
            for (t, v) in &samples[split..] {
                got.extend(head.append(*t, v));
            }
            got.extend(head.force_cut());
            assert_eq!(got, want, "re-opened after {split} samples");
        }
    }
}
