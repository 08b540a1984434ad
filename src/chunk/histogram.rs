//! Chunk encoding 2: integer native histograms, byte-identical with Prometheus 2.42's
//! `tsdb/chunkenc/histogram.go` (and with v3 for schema -53, which 2.42 lacks).
//!
//! Layout: 2-byte big-endian sample count, 1 header byte whose top two bits are the
//! [`CounterResetHeader`], then the bit stream: the chunk layout (see `histogram_meta`),
//! then per sample
//!
//! | field | sample 0 | sample 1 | later |
//! |-------|----------|----------|-------|
//! | t | varbit int | varbit int of delta-of-delta (delta of the "zero" previous delta) | dod |
//! | count, zero count | varbit uint | varbit int dod | dod |
//! | sum | 64 raw bits | XOR (as the XOR chunk's values) | XOR |
//! | each positive, then negative bucket (delta-encoded across buckets) | varbit int | dod | dod |
//!
//! A stale marker (sum = Prometheus's stale NaN) is written as an empty histogram whose count
//! deltas are forced to 0.

use super::histogram_meta::{
    absolute, count_spans, counter_reset_in_any_bucket, expand_spans_both_ways,
    expand_spans_forward, insert, read_layout, write_layout, Insert, Layout,
};
use super::varbit::{
    put_varbit_int, put_varbit_uint, read_varbit_int, read_varbit_uint, xor_read, xor_write,
    GoBitReader, GoBitWriter, StreamError, NO_WINDOW,
};
use super::ChunkError;
use crate::model::{CounterResetHint, Histogram, Span, CUSTOM_BUCKETS_SCHEMA};

/// Bytes before the bit stream of a histogram chunk: sample count and header byte.
pub(crate) const HISTOGRAM_HEADER_BYTES: usize = 3;

/// Bits of Prometheus's stale-marker NaN (`value.StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub(crate) fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The top two bits of a histogram chunk's third byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CounterResetHeader {
    /// Nothing known; a reader must compare with the previous chunk.
    #[default]
    Unknown = 0b0000_0000,
    /// The chunk was cut because of a counter reset.
    CounterReset = 0b1000_0000,
    /// The chunk was cut for another reason; no counter reset.
    NotCounterReset = 0b0100_0000,
    /// A gauge histogram chunk.
    Gauge = 0b1100_0000,
}

impl CounterResetHeader {
    /// From a chunk's header byte (only the top two bits count).
    pub fn from_byte(b: u8) -> Self {
        match b & 0b1100_0000 {
            0b1000_0000 => Self::CounterReset,
            0b0100_0000 => Self::NotCounterReset,
            0b1100_0000 => Self::Gauge,
            _ => Self::Unknown,
        }
    }
}

/// The hint a decoded sample carries (Prometheus 2.42's `counterResetHint`): gauge chunks
/// say gauge, samples after the first say no reset, the first says what the header says
/// (and "unknown" for a `NotCounterReset` header, as 2.42 does).
pub(crate) fn hint_for(header: CounterResetHeader, num_read: u16) -> CounterResetHint {
    match header {
        CounterResetHeader::Gauge => CounterResetHint::Gauge,
        _ if num_read > 1 => CounterResetHint::No,
        CounterResetHeader::CounterReset => CounterResetHint::Yes,
        _ => CounterResetHint::Unknown,
    }
}

/// What Prometheus's `Appendable` says about appending a counter histogram to a chunk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Appendability {
    pub(crate) positive_inserts: Vec<Insert>,
    pub(crate) negative_inserts: Vec<Insert>,
    pub(crate) ok: bool,
    pub(crate) counter_reset: bool,
}

/// What Prometheus's `AppendableGauge` says.
#[derive(Debug, Clone, Default)]
pub(crate) struct GaugeAppendability {
    pub(crate) positive_inserts: Vec<Insert>,
    pub(crate) negative_inserts: Vec<Insert>,
    pub(crate) backward_positive: Vec<Insert>,
    pub(crate) backward_negative: Vec<Insert>,
    pub(crate) positive_spans: Vec<Span>,
    pub(crate) negative_spans: Vec<Span>,
    pub(crate) ok: bool,
}

/// Result of appending to a chunk appender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The sample was appended to the chunk as it was.
    Appended,
    /// New buckets appeared: the chunk was rewritten with the wider layout (same samples,
    /// same header), then the sample was appended.
    Recoded,
    /// The sample does not fit (counter reset, schema or zero-threshold change, buckets
    /// gone, gauge/counter change, stale then not stale). Nothing was appended: close this
    /// chunk and start a new one with this header (`set_counter_reset_header`).
    NewChunk(CounterResetHeader),
}

/// Appends integer histograms to an open encoding-2 chunk, as Prometheus's
/// `HistogramAppender` together with the head's decision logic of `memSeries.appendHistogram`.
#[derive(Debug, Clone)]
pub struct HistogramAppender {
    b: GoBitWriter,
    layout: Layout,
    t: i64,
    cnt: u64,
    z_cnt: u64,
    t_delta: i64,
    cnt_delta: i64,
    z_cnt_delta: i64,
    p_buckets: Vec<i64>,
    n_buckets: Vec<i64>,
    p_buckets_delta: Vec<i64>,
    n_buckets_delta: Vec<i64>,
    sum: f64,
    leading: u8,
    trailing: u8,
    last: Option<Histogram>,
}

impl Default for HistogramAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl HistogramAppender {
    /// An empty chunk with an `Unknown` counter-reset header.
    pub fn new() -> Self {
        Self {
            b: GoBitWriter::with_header(HISTOGRAM_HEADER_BYTES),
            layout: Layout::default(),
            t: 0,
            cnt: 0,
            z_cnt: 0,
            t_delta: 0,
            cnt_delta: 0,
            z_cnt_delta: 0,
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            p_buckets_delta: Vec::new(),
            n_buckets_delta: Vec::new(),
            sum: 0.0,
            leading: NO_WINDOW,
            trailing: 0,
            last: None,
        }
    }

    /// Re-opens a chunk to go on appending. The chunk is decoded and its samples appended
    /// again from scratch, which reproduces the writer's exact state; a chunk that is not
    /// what an appender writes for its own samples is rejected. A chunk in Prometheus 3's
    /// form (without 2.42's empty last byte) is accepted and continues in 2.42's form.
    pub fn from_chunk(chunk: &[u8]) -> Result<Self, ChunkError> {
        let mut it = HistogramIterator::new(chunk)?;
        let mut app = Self::new();
        app.set_counter_reset_header(it.counter_reset_header());
        for s in it.by_ref() {
            let (t, h) = s?;
            app.append_raw(t, &h);
        }
        let n = usize::from(it.num_total);
        if !same_stream(app.bytes(), chunk) {
            return Err(ChunkError::Corrupt {
                sample: it.num_total,
                what: "histogram chunk is not in the form an appender writes",
            });
        }
        debug_assert_eq!(app.num_samples(), n);
        Ok(app)
    }

    /// Samples in the chunk.
    pub fn num_samples(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b.stream[0], self.b.stream[1]]))
    }

    /// The chunk's bytes: always a complete, decodable chunk.
    pub fn bytes(&self) -> &[u8] {
        self.b.bytes()
    }

    /// Gives up the chunk's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut v = self.b.stream;
        v.shrink_to_fit();
        v
    }

    /// Heap bytes held (buffers and copies of the layout and last sample), approximately.
    pub fn heap_bytes(&self) -> usize {
        let h = self.last.as_ref().map_or(0, |h| {
            (h.positive_buckets.capacity() + h.negative_buckets.capacity()) * 8
                + (h.positive_spans.capacity() + h.negative_spans.capacity()) * 8
                + h.custom_values.capacity() * 8
        });
        self.b.stream.capacity()
            + (self.p_buckets.capacity()
                + self.n_buckets.capacity()
                + self.p_buckets_delta.capacity()
                + self.n_buckets_delta.capacity())
                * 8
            + (self.layout.positive_spans.capacity() + self.layout.negative_spans.capacity()) * 8
            + self.layout.custom_values.capacity() * 8
            + h
    }

    /// The newest sample, as appended (after any layout adjustment).
    pub fn last(&self) -> Option<(i64, &Histogram)> {
        self.last.as_ref().map(|h| (self.t, h))
    }

    /// The chunk's counter-reset header.
    pub fn counter_reset_header(&self) -> CounterResetHeader {
        CounterResetHeader::from_byte(self.b.stream[2])
    }

    /// Sets the chunk's counter-reset header (for a chunk just started).
    pub fn set_counter_reset_header(&mut self, h: CounterResetHeader) {
        self.b.stream[2] = (self.b.stream[2] & 0b0011_1111) | h as u8;
    }

    /// Appends `h` at `t` if it fits this chunk, recoding the chunk if new buckets appeared
    /// (the decision of Prometheus 2.42's head, `memSeries.appendHistogram`). `h` may be
    /// adjusted (a gauge histogram gets the chunk's extra buckets as empty ones).
    /// Timestamps must increase; the caller checks that.
    pub fn append(&mut self, t: i64, h: &Histogram) -> Appended {
        if self.num_samples() == 0 {
            let header = match h.counter_reset_hint {
                CounterResetHint::Gauge => CounterResetHeader::Gauge,
                CounterResetHint::Yes => CounterResetHeader::CounterReset,
                _ => self.counter_reset_header(),
            };
            self.set_counter_reset_header(header);
            self.append_raw(t, h);
            return Appended::Appended;
        }
        if h.counter_reset_hint == CounterResetHint::Gauge {
            let g = self.appendable_gauge(h);
            if !g.ok {
                return Appended::NewChunk(CounterResetHeader::Gauge);
            }
            let mut h = h.clone();
            if !g.backward_positive.is_empty() || !g.backward_negative.is_empty() {
                h.positive_spans = g.positive_spans;
                h.negative_spans = g.negative_spans;
                recode_histogram(&mut h, &g.backward_positive, &g.backward_negative);
            }
            return self.append_with_inserts(t, &h, &g.positive_inserts, &g.negative_inserts);
        }
        if h.counter_reset_hint == CounterResetHint::Yes {
            return Appended::NewChunk(CounterResetHeader::CounterReset);
        }
        let a = self.appendable(h);
        if a.counter_reset {
            return Appended::NewChunk(CounterResetHeader::CounterReset);
        }
        if !a.ok {
            return Appended::NewChunk(CounterResetHeader::Unknown);
        }
        self.append_with_inserts(t, h, &a.positive_inserts, &a.negative_inserts)
    }

    fn append_with_inserts(
        &mut self,
        t: i64,
        h: &Histogram,
        pos: &[Insert],
        neg: &[Insert],
    ) -> Appended {
        if pos.is_empty() && neg.is_empty() {
            self.append_raw(t, h);
            return Appended::Appended;
        }
        *self = self.recode(pos, neg, &h.positive_spans, &h.negative_spans);
        self.append_raw(t, h);
        Appended::Recoded
    }

    /// The header Prometheus 2.42 gives a chunk cut before `h` for size or time (the head's
    /// `appendPreprocessor`): gauge, counter reset, or not-a-reset if `h` would have fit.
    pub fn cut_header(&self, h: &Histogram) -> CounterResetHeader {
        match h.counter_reset_hint {
            CounterResetHint::Gauge => CounterResetHeader::Gauge,
            CounterResetHint::Yes => CounterResetHeader::CounterReset,
            _ => {
                let a = self.appendable(h);
                if a.counter_reset {
                    CounterResetHeader::CounterReset
                } else if a.ok {
                    CounterResetHeader::NotCounterReset
                } else {
                    CounterResetHeader::Unknown
                }
            }
        }
    }

    /// Prometheus 2.42's `Appendable` (plus v3's custom-bounds check for schema -53).
    pub(crate) fn appendable(&self, h: &Histogram) -> Appendability {
        let mut r = Appendability::default();
        if self.num_samples() > 0 && self.counter_reset_header() == CounterResetHeader::Gauge {
            return r;
        }
        if is_stale(h.sum) {
            r.ok = true;
            return r;
        }
        if is_stale(self.sum) {
            return r;
        }
        if h.count < self.cnt {
            r.counter_reset = true;
            return r;
        }
        if h.schema != self.layout.schema || h.zero_threshold != self.layout.zero_threshold {
            return r;
        }
        if h.schema == CUSTOM_BUCKETS_SCHEMA
            && !floats_match(&h.custom_values, &self.layout.custom_values)
        {
            r.counter_reset = true;
            return r;
        }
        if h.zero_count < self.z_cnt {
            r.counter_reset = true;
            return r;
        }
        let (Some(pi), Some(ni)) = (
            expand_spans_forward(&self.layout.positive_spans, &h.positive_spans),
            expand_spans_forward(&self.layout.negative_spans, &h.negative_spans),
        ) else {
            r.counter_reset = true;
            return r;
        };
        if counter_reset_in_any_bucket(
            &absolute(&self.p_buckets),
            &absolute(&h.positive_buckets),
            &self.layout.positive_spans,
            &h.positive_spans,
        ) || counter_reset_in_any_bucket(
            &absolute(&self.n_buckets),
            &absolute(&h.negative_buckets),
            &self.layout.negative_spans,
            &h.negative_spans,
        ) {
            r.counter_reset = true;
            return r;
        }
        r.positive_inserts = pi;
        r.negative_inserts = ni;
        r.ok = true;
        r
    }

    /// Prometheus's `AppendableGauge`.
    pub(crate) fn appendable_gauge(&self, h: &Histogram) -> GaugeAppendability {
        let mut r = GaugeAppendability::default();
        if self.num_samples() > 0 && self.counter_reset_header() != CounterResetHeader::Gauge {
            return r;
        }
        if is_stale(h.sum) {
            r.ok = true;
            return r;
        }
        if is_stale(self.sum) {
            return r;
        }
        if h.schema != self.layout.schema || h.zero_threshold != self.layout.zero_threshold {
            return r;
        }
        if h.schema == CUSTOM_BUCKETS_SCHEMA
            && !floats_match(&h.custom_values, &self.layout.custom_values)
        {
            return r;
        }
        (r.positive_inserts, r.backward_positive, r.positive_spans) =
            expand_spans_both_ways(&self.layout.positive_spans, &h.positive_spans);
        (r.negative_inserts, r.backward_negative, r.negative_spans) =
            expand_spans_both_ways(&self.layout.negative_spans, &h.negative_spans);
        r.ok = true;
        r
    }

    /// Prometheus's `Recode`: the same samples in a new chunk with the wider layout.
    pub(crate) fn recode(
        &self,
        pos: &[Insert],
        neg: &[Insert],
        p_spans: &[Span],
        n_spans: &[Span],
    ) -> Self {
        let mut app = Self::new();
        let (np, nn) = (count_spans(p_spans), count_spans(n_spans));
        let it = HistogramIterator::new(self.bytes()).expect("own chunk has a header");
        for s in it {
            let (t, mut h) = s.expect("own chunk decodes");
            h.positive_spans = p_spans.to_vec();
            h.negative_spans = n_spans.to_vec();
            if !pos.is_empty() {
                h.positive_buckets = insert(&h.positive_buckets, np, pos, true);
            }
            if !neg.is_empty() {
                h.negative_buckets = insert(&h.negative_buckets, nn, neg, true);
            }
            app.append_raw(t, &h);
        }
        app.set_counter_reset_header(self.counter_reset_header());
        app
    }

    /// Prometheus's `AppendHistogram` on the chunk: writes `h` without any check. The
    /// buckets must match the chunk's layout after the first sample.
    pub(crate) fn append_raw(&mut self, t: i64, h: &Histogram) {
        let num = u16::from_be_bytes([self.b.stream[0], self.b.stream[1]]);
        let stale_h;
        let h = if is_stale(h.sum) {
            stale_h = Histogram {
                sum: h.sum,
                ..Default::default()
            };
            &stale_h
        } else {
            h
        };
        let (mut t_delta, mut cnt_delta, mut z_cnt_delta) = (0i64, 0i64, 0i64);
        if num == 0 {
            write_layout(
                &mut self.b,
                h.schema,
                h.zero_threshold,
                &h.positive_spans,
                &h.negative_spans,
                &h.custom_values,
            );
            self.layout = Layout {
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                positive_spans: h.positive_spans.clone(),
                negative_spans: h.negative_spans.clone(),
                custom_values: if h.schema == CUSTOM_BUCKETS_SCHEMA {
                    h.custom_values.clone()
                } else {
                    Vec::new()
                },
            };
            let (np, nn) = (
                count_spans(&h.positive_spans),
                count_spans(&h.negative_spans),
            );
            self.p_buckets = vec![0; np];
            self.p_buckets_delta = vec![0; np];
            self.n_buckets = vec![0; nn];
            self.n_buckets_delta = vec![0; nn];
            put_varbit_int(&mut self.b, t);
            put_varbit_uint(&mut self.b, h.count);
            put_varbit_uint(&mut self.b, h.zero_count);
            self.b.write_bits(h.sum.to_bits(), 64);
            for &v in &h.positive_buckets {
                put_varbit_int(&mut self.b, v);
            }
            for &v in &h.negative_buckets {
                put_varbit_int(&mut self.b, v);
            }
        } else {
            t_delta = t.wrapping_sub(self.t);
            cnt_delta = (h.count as i64).wrapping_sub(self.cnt as i64);
            z_cnt_delta = (h.zero_count as i64).wrapping_sub(self.z_cnt as i64);
            let t_dod = t_delta.wrapping_sub(self.t_delta);
            let (mut cnt_dod, mut z_cnt_dod) = (
                cnt_delta.wrapping_sub(self.cnt_delta),
                z_cnt_delta.wrapping_sub(self.z_cnt_delta),
            );
            if is_stale(h.sum) {
                cnt_dod = 0;
                z_cnt_dod = 0;
            }
            put_varbit_int(&mut self.b, t_dod);
            put_varbit_int(&mut self.b, cnt_dod);
            put_varbit_int(&mut self.b, z_cnt_dod);
            xor_write(
                &mut self.b,
                h.sum,
                self.sum,
                &mut self.leading,
                &mut self.trailing,
            );
            for (i, &v) in h
                .positive_buckets
                .iter()
                .enumerate()
                .take(self.p_buckets.len())
            {
                let delta = v.wrapping_sub(self.p_buckets[i]);
                put_varbit_int(&mut self.b, delta.wrapping_sub(self.p_buckets_delta[i]));
                self.p_buckets_delta[i] = delta;
            }
            for (i, &v) in h
                .negative_buckets
                .iter()
                .enumerate()
                .take(self.n_buckets.len())
            {
                let delta = v.wrapping_sub(self.n_buckets[i]);
                put_varbit_int(&mut self.b, delta.wrapping_sub(self.n_buckets_delta[i]));
                self.n_buckets_delta[i] = delta;
            }
        }
        self.b.stream[..2].copy_from_slice(&num.wrapping_add(1).to_be_bytes());
        self.t = t;
        self.cnt = h.count;
        self.z_cnt = h.zero_count;
        self.t_delta = t_delta;
        self.cnt_delta = cnt_delta;
        self.z_cnt_delta = z_cnt_delta;
        copy_prefix(&mut self.p_buckets, &h.positive_buckets);
        copy_prefix(&mut self.n_buckets, &h.negative_buckets);
        self.sum = h.sum;
        self.last = Some(h.clone());
    }
}

/// Whether `chunk` is the stream `ours` (2.42's form), or that stream as Prometheus 3
/// writes it: without 2.42's empty last byte (see `varbit.rs`).
pub(crate) fn same_stream(ours: &[u8], chunk: &[u8]) -> bool {
    ours == chunk
        || (ours.len() == chunk.len() + 1 && ours.last() == Some(&0) && ours.starts_with(chunk))
}

/// Go's `copy(dst, src)`.
pub(crate) fn copy_prefix<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// Prometheus's `FloatBucketsMatch`: same length, bit-equal or both equal as floats.
pub(crate) fn floats_match(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || x.to_bits() == y.to_bits())
}

/// Prometheus's `RecodeHistogram`: adds the chunk's extra (empty) buckets to a gauge sample.
fn recode_histogram(h: &mut Histogram, pos: &[Insert], neg: &[Insert]) {
    if !pos.is_empty() {
        h.positive_buckets = insert(
            &h.positive_buckets,
            count_spans(&h.positive_spans),
            pos,
            true,
        );
    }
    if !neg.is_empty() {
        h.negative_buckets = insert(
            &h.negative_buckets,
            count_spans(&h.negative_spans),
            neg,
            true,
        );
    }
}

/// Every decoded sample carries a copy of the layout (spans, custom bounds), which costs
/// the stream no bits per sample; a hostile chunk could claim thousands of empty spans and
/// 65535 samples. Legitimate layouts are small next to the bits the samples take, so copies
/// are limited to 8 layout entries per bit left plus 2^20.
pub(crate) fn check_layout_copies(
    layout: &Layout,
    num_samples: u16,
    remaining_bits: usize,
) -> Result<(), StreamError> {
    let entries =
        layout.positive_spans.len() + layout.negative_spans.len() + layout.custom_values.len();
    if entries.saturating_mul(usize::from(num_samples))
        > remaining_bits.saturating_mul(8).saturating_add(1 << 20)
    {
        return Err(StreamError::Corrupt(
            "layout too large for the samples claimed",
        ));
    }
    Ok(())
}

/// Iterates the samples of an encoding-2 chunk. Never panics; allocation is bounded by the
/// input's length (every bucket of every sample takes at least one bit). After an error it
/// yields `None`.
#[derive(Debug, Clone)]
pub struct HistogramIterator<'a> {
    r: GoBitReader<'a>,
    num_total: u16,
    num_read: u16,
    header: CounterResetHeader,
    failed: bool,
    layout: Layout,
    t: i64,
    cnt: u64,
    z_cnt: u64,
    t_delta: i64,
    cnt_delta: i64,
    z_cnt_delta: i64,
    p_buckets: Vec<i64>,
    n_buckets: Vec<i64>,
    p_buckets_delta: Vec<i64>,
    n_buckets_delta: Vec<i64>,
    sum: f64,
    leading: u8,
    trailing: u8,
}

impl<'a> HistogramIterator<'a> {
    /// Starts iterating `chunk` (2-byte count, header byte, bit stream).
    pub fn new(chunk: &'a [u8]) -> Result<Self, ChunkError> {
        if chunk.len() < HISTOGRAM_HEADER_BYTES {
            return Err(ChunkError::TooShort { len: chunk.len() });
        }
        Ok(Self {
            r: GoBitReader::new(chunk, HISTOGRAM_HEADER_BYTES * 8),
            num_total: u16::from_be_bytes([chunk[0], chunk[1]]),
            num_read: 0,
            header: CounterResetHeader::from_byte(chunk[2]),
            failed: false,
            layout: Layout::default(),
            t: 0,
            cnt: 0,
            z_cnt: 0,
            t_delta: 0,
            cnt_delta: 0,
            z_cnt_delta: 0,
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            p_buckets_delta: Vec::new(),
            n_buckets_delta: Vec::new(),
            sum: 0.0,
            leading: 0,
            trailing: 0,
        })
    }

    /// Samples the header claims.
    pub fn num_samples(&self) -> u16 {
        self.num_total
    }

    /// The chunk's counter-reset header.
    pub fn counter_reset_header(&self) -> CounterResetHeader {
        self.header
    }

    fn read_first(&mut self) -> Result<(), StreamError> {
        self.layout = read_layout(&mut self.r)?;
        check_layout_copies(&self.layout, self.num_total, self.r.remaining_bits())?;
        let np = count_spans(&self.layout.positive_spans);
        let nn = count_spans(&self.layout.negative_spans);
        // Every bucket takes at least one bit in every sample.
        if np.saturating_add(nn) > self.r.remaining_bits() {
            return Err(StreamError::Corrupt("more buckets than bits left"));
        }
        self.p_buckets = vec![0; np];
        self.p_buckets_delta = vec![0; np];
        self.n_buckets = vec![0; nn];
        self.n_buckets_delta = vec![0; nn];
        self.t = read_varbit_int(&mut self.r)?;
        self.cnt = read_varbit_uint(&mut self.r)?;
        self.z_cnt = read_varbit_uint(&mut self.r)?;
        self.sum = f64::from_bits(self.r.read_bits(64)?);
        for b in self.p_buckets.iter_mut().chain(self.n_buckets.iter_mut()) {
            *b = read_varbit_int(&mut self.r)?;
        }
        Ok(())
    }

    fn read_later(&mut self) -> Result<(), StreamError> {
        let t_dod = read_varbit_int(&mut self.r)?;
        self.t_delta = self.t_delta.wrapping_add(t_dod);
        self.t = self.t.wrapping_add(self.t_delta);
        let cnt_dod = read_varbit_int(&mut self.r)?;
        self.cnt_delta = self.cnt_delta.wrapping_add(cnt_dod);
        self.cnt = (self.cnt as i64).wrapping_add(self.cnt_delta) as u64;
        let z_dod = read_varbit_int(&mut self.r)?;
        self.z_cnt_delta = self.z_cnt_delta.wrapping_add(z_dod);
        self.z_cnt = (self.z_cnt as i64).wrapping_add(self.z_cnt_delta) as u64;
        xor_read(
            &mut self.r,
            &mut self.sum,
            &mut self.leading,
            &mut self.trailing,
        )?;
        if is_stale(self.sum) {
            return Ok(());
        }
        for (b, d) in self
            .p_buckets
            .iter_mut()
            .zip(self.p_buckets_delta.iter_mut())
            .chain(
                self.n_buckets
                    .iter_mut()
                    .zip(self.n_buckets_delta.iter_mut()),
            )
        {
            *d = d.wrapping_add(read_varbit_int(&mut self.r)?);
            *b = b.wrapping_add(*d);
        }
        Ok(())
    }

    fn current(&self) -> Histogram {
        if is_stale(self.sum) {
            return Histogram {
                sum: self.sum,
                ..Default::default()
            };
        }
        Histogram {
            counter_reset_hint: hint_for(self.header, self.num_read),
            schema: self.layout.schema,
            zero_threshold: self.layout.zero_threshold,
            zero_count: self.z_cnt,
            count: self.cnt,
            sum: self.sum,
            positive_spans: self.layout.positive_spans.clone(),
            negative_spans: self.layout.negative_spans.clone(),
            positive_buckets: self.p_buckets.clone(),
            negative_buckets: self.n_buckets.clone(),
            custom_values: self.layout.custom_values.clone(),
        }
    }
}

impl Iterator for HistogramIterator<'_> {
    type Item = Result<(i64, Histogram), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.num_read == self.num_total {
            return None;
        }
        let res = if self.num_read == 0 {
            self.read_first()
        } else {
            self.read_later()
        };
        if let Err(e) = res {
            self.failed = true;
            return Some(Err(e.into_chunk_error(self.num_total, self.num_read)));
        }
        self.num_read += 1;
        Some(Ok((self.t, self.current())))
    }
}
