//! Chunk encoding 3: float native histograms, byte-identical with Prometheus 2.42's
//! `tsdb/chunkenc/float_histogram.go` (and v3's for schema -53).
//!
//! Same header and layout as encoding 2. Sample 0: t as varbit int, then count, zero count,
//! sum and every bucket (absolute counts) as 64 raw bits. Later samples: t as varbit int
//! delta-of-delta, then count, zero count, sum and every bucket XOR-encoded against the
//! previous sample's value of the same field, each field with its own window.

use super::histogram::{
    check_layout_copies, floats_match, hint_for, is_stale, same_stream, Appendability, Appended,
    CounterResetHeader, GaugeAppendability, HISTOGRAM_HEADER_BYTES,
};
use super::histogram_meta::{
    count_spans, counter_reset_in_any_bucket, expand_spans_both_ways, expand_spans_forward, insert,
    read_layout, write_layout, Insert, Layout,
};
use super::varbit::{
    put_varbit_int, read_varbit_int, xor_read, xor_write, GoBitReader, GoBitWriter, StreamError,
    NO_WINDOW,
};
use super::ChunkError;
use crate::model::{CounterResetHint, FloatHistogram, Span, CUSTOM_BUCKETS_SCHEMA};

/// A value with its XOR window.
#[derive(Debug, Clone, Copy)]
struct XorValue {
    value: f64,
    leading: u8,
    trailing: u8,
}

impl XorValue {
    fn new(value: f64) -> Self {
        Self {
            value,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }
}

/// Appends float histograms to an open encoding-3 chunk, as Prometheus's
/// `FloatHistogramAppender` with the head's decisions of `memSeries.appendFloatHistogram`.
#[derive(Debug, Clone)]
pub struct FloatHistogramAppender {
    b: GoBitWriter,
    layout: Layout,
    t: i64,
    t_delta: i64,
    cnt: XorValue,
    z_cnt: XorValue,
    sum: XorValue,
    p_buckets: Vec<XorValue>,
    n_buckets: Vec<XorValue>,
    last: Option<FloatHistogram>,
}

impl Default for FloatHistogramAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl FloatHistogramAppender {
    /// An empty chunk with an `Unknown` counter-reset header.
    pub fn new() -> Self {
        Self {
            b: GoBitWriter::with_header(HISTOGRAM_HEADER_BYTES),
            layout: Layout::default(),
            t: 0,
            t_delta: 0,
            cnt: XorValue::new(0.0),
            z_cnt: XorValue::new(0.0),
            sum: XorValue::new(0.0),
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            last: None,
        }
    }

    /// Re-opens a chunk to go on appending (see `HistogramAppender::from_chunk`).
    pub fn from_chunk(chunk: &[u8]) -> Result<Self, ChunkError> {
        let mut it = FloatHistogramIterator::new(chunk)?;
        let mut app = Self::new();
        app.set_counter_reset_header(it.counter_reset_header());
        for s in it.by_ref() {
            let (t, h) = s?;
            app.append_raw(t, &h);
        }
        if !same_stream(app.bytes(), chunk) {
            return Err(ChunkError::Corrupt {
                sample: it.num_total,
                what: "float histogram chunk is not in the form an appender writes",
            });
        }
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

    /// Heap bytes held, approximately.
    pub fn heap_bytes(&self) -> usize {
        let h = self.last.as_ref().map_or(0, |h| {
            (h.positive_buckets.capacity()
                + h.negative_buckets.capacity()
                + h.positive_spans.capacity()
                + h.negative_spans.capacity()
                + h.custom_values.capacity())
                * 8
        });
        self.b.stream.capacity()
            + (self.p_buckets.capacity() + self.n_buckets.capacity())
                * std::mem::size_of::<XorValue>()
            + (self.layout.positive_spans.capacity()
                + self.layout.negative_spans.capacity()
                + self.layout.custom_values.capacity())
                * 8
            + h
    }

    /// The newest sample, as appended.
    pub fn last(&self) -> Option<(i64, &FloatHistogram)> {
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

    /// As `HistogramAppender::append`, for float histograms.
    pub fn append(&mut self, t: i64, h: &FloatHistogram) -> Appended {
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
                if !g.backward_positive.is_empty() {
                    h.positive_buckets = insert(
                        &h.positive_buckets,
                        count_spans(&h.positive_spans),
                        &g.backward_positive,
                        false,
                    );
                }
                if !g.backward_negative.is_empty() {
                    h.negative_buckets = insert(
                        &h.negative_buckets,
                        count_spans(&h.negative_spans),
                        &g.backward_negative,
                        false,
                    );
                }
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
        h: &FloatHistogram,
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

    /// The header of a chunk cut before `h` for size or time (see
    /// `HistogramAppender::cut_header`).
    pub fn cut_header(&self, h: &FloatHistogram) -> CounterResetHeader {
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

    pub(crate) fn appendable(&self, h: &FloatHistogram) -> Appendability {
        let mut r = Appendability::default();
        if self.num_samples() > 0 && self.counter_reset_header() == CounterResetHeader::Gauge {
            return r;
        }
        if is_stale(h.sum) {
            r.ok = true;
            return r;
        }
        if is_stale(self.sum.value) {
            return r;
        }
        if h.count < self.cnt.value {
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
        if h.zero_count < self.z_cnt.value {
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
        let old_p: Vec<f64> = self.p_buckets.iter().map(|x| x.value).collect();
        let old_n: Vec<f64> = self.n_buckets.iter().map(|x| x.value).collect();
        if counter_reset_in_any_bucket(
            &old_p,
            &h.positive_buckets,
            &self.layout.positive_spans,
            &h.positive_spans,
        ) || counter_reset_in_any_bucket(
            &old_n,
            &h.negative_buckets,
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

    pub(crate) fn appendable_gauge(&self, h: &FloatHistogram) -> GaugeAppendability {
        let mut r = GaugeAppendability::default();
        if self.num_samples() > 0 && self.counter_reset_header() != CounterResetHeader::Gauge {
            return r;
        }
        if is_stale(h.sum) {
            r.ok = true;
            return r;
        }
        if is_stale(self.sum.value) {
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

    pub(crate) fn recode(
        &self,
        pos: &[Insert],
        neg: &[Insert],
        p_spans: &[Span],
        n_spans: &[Span],
    ) -> Self {
        let mut app = Self::new();
        let (np, nn) = (count_spans(p_spans), count_spans(n_spans));
        let it = FloatHistogramIterator::new(self.bytes()).expect("own chunk has a header");
        for s in it {
            let (t, mut h) = s.expect("own chunk decodes");
            h.positive_spans = p_spans.to_vec();
            h.negative_spans = n_spans.to_vec();
            if !pos.is_empty() {
                h.positive_buckets = insert(&h.positive_buckets, np, pos, false);
            }
            if !neg.is_empty() {
                h.negative_buckets = insert(&h.negative_buckets, nn, neg, false);
            }
            app.append_raw(t, &h);
        }
        app.set_counter_reset_header(self.counter_reset_header());
        app
    }

    /// Prometheus's `AppendFloatHistogram` on the chunk, without checks.
    pub(crate) fn append_raw(&mut self, t: i64, h: &FloatHistogram) {
        let num = u16::from_be_bytes([self.b.stream[0], self.b.stream[1]]);
        let stale_h;
        let h = if is_stale(h.sum) {
            stale_h = FloatHistogram {
                sum: h.sum,
                ..Default::default()
            };
            &stale_h
        } else {
            h
        };
        let mut t_delta = 0i64;
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
            let get = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
            self.p_buckets = (0..np)
                .map(|i| XorValue::new(get(&h.positive_buckets, i)))
                .collect();
            self.n_buckets = (0..nn)
                .map(|i| XorValue::new(get(&h.negative_buckets, i)))
                .collect();
            put_varbit_int(&mut self.b, t);
            self.b.write_bits(h.count.to_bits(), 64);
            self.b.write_bits(h.zero_count.to_bits(), 64);
            self.b.write_bits(h.sum.to_bits(), 64);
            self.cnt.value = h.count;
            self.z_cnt.value = h.zero_count;
            self.sum.value = h.sum;
            for &v in h.positive_buckets.iter().chain(&h.negative_buckets) {
                self.b.write_bits(v.to_bits(), 64);
            }
        } else {
            t_delta = t.wrapping_sub(self.t);
            put_varbit_int(&mut self.b, t_delta.wrapping_sub(self.t_delta));
            for (x, v) in [
                (&mut self.cnt, h.count),
                (&mut self.z_cnt, h.zero_count),
                (&mut self.sum, h.sum),
            ] {
                xor_write(&mut self.b, v, x.value, &mut x.leading, &mut x.trailing);
                x.value = v;
            }
            for (x, &v) in self.p_buckets.iter_mut().zip(&h.positive_buckets) {
                xor_write(&mut self.b, v, x.value, &mut x.leading, &mut x.trailing);
                x.value = v;
            }
            for (x, &v) in self.n_buckets.iter_mut().zip(&h.negative_buckets) {
                xor_write(&mut self.b, v, x.value, &mut x.leading, &mut x.trailing);
                x.value = v;
            }
        }
        self.b.stream[..2].copy_from_slice(&num.wrapping_add(1).to_be_bytes());
        self.t = t;
        self.t_delta = t_delta;
        self.last = Some(h.clone());
    }
}

/// Iterates the samples of an encoding-3 chunk. Never panics; allocation is bounded by the
/// input's length. After an error it yields `None`.
#[derive(Debug, Clone)]
pub struct FloatHistogramIterator<'a> {
    r: GoBitReader<'a>,
    num_total: u16,
    num_read: u16,
    header: CounterResetHeader,
    failed: bool,
    layout: Layout,
    t: i64,
    t_delta: i64,
    cnt: XorValue,
    z_cnt: XorValue,
    sum: XorValue,
    p_buckets: Vec<XorValue>,
    n_buckets: Vec<XorValue>,
}

impl<'a> FloatHistogramIterator<'a> {
    /// Starts iterating `chunk`.
    pub fn new(chunk: &'a [u8]) -> Result<Self, ChunkError> {
        if chunk.len() < HISTOGRAM_HEADER_BYTES {
            return Err(ChunkError::TooShort { len: chunk.len() });
        }
        let zero = XorValue {
            value: 0.0,
            leading: 0,
            trailing: 0,
        };
        Ok(Self {
            r: GoBitReader::new(chunk, HISTOGRAM_HEADER_BYTES * 8),
            num_total: u16::from_be_bytes([chunk[0], chunk[1]]),
            num_read: 0,
            header: CounterResetHeader::from_byte(chunk[2]),
            failed: false,
            layout: Layout::default(),
            t: 0,
            t_delta: 0,
            cnt: zero,
            z_cnt: zero,
            sum: zero,
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
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
        // The first sample spends 64 bits on every bucket.
        if np.saturating_add(nn) > self.r.remaining_bits() / 64 {
            return Err(StreamError::Corrupt("more buckets than bits left"));
        }
        self.t = read_varbit_int(&mut self.r)?;
        self.cnt.value = f64::from_bits(self.r.read_bits(64)?);
        self.z_cnt.value = f64::from_bits(self.r.read_bits(64)?);
        self.sum.value = f64::from_bits(self.r.read_bits(64)?);
        let zero = XorValue {
            value: 0.0,
            leading: 0,
            trailing: 0,
        };
        self.p_buckets = vec![zero; np];
        self.n_buckets = vec![zero; nn];
        for b in self.p_buckets.iter_mut().chain(self.n_buckets.iter_mut()) {
            b.value = f64::from_bits(self.r.read_bits(64)?);
        }
        Ok(())
    }

    fn read_later(&mut self) -> Result<(), StreamError> {
        let t_dod = read_varbit_int(&mut self.r)?;
        self.t_delta = self.t_delta.wrapping_add(t_dod);
        self.t = self.t.wrapping_add(self.t_delta);
        for x in [&mut self.cnt, &mut self.z_cnt, &mut self.sum] {
            xor_read(&mut self.r, &mut x.value, &mut x.leading, &mut x.trailing)?;
        }
        if is_stale(self.sum.value) {
            return Ok(());
        }
        for x in self.p_buckets.iter_mut().chain(self.n_buckets.iter_mut()) {
            xor_read(&mut self.r, &mut x.value, &mut x.leading, &mut x.trailing)?;
        }
        Ok(())
    }

    fn current(&self) -> FloatHistogram {
        if is_stale(self.sum.value) {
            return FloatHistogram {
                sum: self.sum.value,
                ..Default::default()
            };
        }
        FloatHistogram {
            counter_reset_hint: hint_for(self.header, self.num_read),
            schema: self.layout.schema,
            zero_threshold: self.layout.zero_threshold,
            zero_count: self.z_cnt.value,
            count: self.cnt.value,
            sum: self.sum.value,
            positive_spans: self.layout.positive_spans.clone(),
            negative_spans: self.layout.negative_spans.clone(),
            positive_buckets: self.p_buckets.iter().map(|x| x.value).collect(),
            negative_buckets: self.n_buckets.iter().map(|x| x.value).collect(),
            custom_values: self.layout.custom_values.clone(),
        }
    }
}

impl Iterator for FloatHistogramIterator<'_> {
    type Item = Result<(i64, FloatHistogram), ChunkError>;

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
