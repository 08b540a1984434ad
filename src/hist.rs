//! Native histogram chunks as the tiers see them: decode a stored chunk of any encoding
//! into samples, and encode histogram samples back into chunks. A thin layer over the
//! codec (`crate::chunk`), so that the head, the query merge, remote read and `weft
//! inspect` share one place that knows which encoding holds which kind of value.
//!
//! **Invariant:** like `chunk`, this module knows nothing about series, tenants or I/O.

use crate::chunk::{ChunkError, XorIterator, SAMPLES_PER_CHUNK};
use crate::chunk::{ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, ENCODING_XOR};
use crate::model::HistogramValue;

/// One decoded sample of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A float sample (XOR chunk).
    Float(f64),
    /// A native histogram sample (histogram or float histogram chunk).
    Histogram(HistogramValue),
}

impl Value {
    /// The chunk encoding that stores this kind of value.
    pub fn encoding(&self) -> u8 {
        match self {
            Value::Float(_) => ENCODING_XOR,
            Value::Histogram(HistogramValue::Int(_)) => ENCODING_HISTOGRAM,
            Value::Histogram(HistogramValue::Float(_)) => ENCODING_FLOAT_HISTOGRAM,
        }
    }
}

/// One chunk produced by [`encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// First sample's timestamp.
    pub min_t: i64,
    /// Last sample's timestamp.
    pub max_t: i64,
    /// Chunk encoding.
    pub encoding: u8,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

/// Decodes a whole chunk of `encoding` into `(t, value)` pairs.
pub fn decode(encoding: u8, data: &[u8]) -> Result<Vec<(i64, Value)>, ChunkError> {
    match encoding {
        ENCODING_XOR => XorIterator::new(data)?
            .map(|s| s.map(|(t, v)| (t, Value::Float(v))))
            .collect(),
        ENCODING_HISTOGRAM | ENCODING_FLOAT_HISTOGRAM => Ok(decode_histograms(encoding, data)?
            .into_iter()
            .map(|(t, h)| (t, Value::Histogram(h)))
            .collect()),
        _ => Err(ChunkError::Corrupt {
            sample: 0,
            what: "unknown chunk encoding",
        }),
    }
}

/// Decodes a histogram chunk (encoding 2 or 3).
pub fn decode_histograms(
    encoding: u8,
    data: &[u8],
) -> Result<Vec<(i64, HistogramValue)>, ChunkError> {
    crate::chunk::decode_histogram_chunk(encoding, data)
}

/// Encodes samples (ordered by time, unique timestamps) into chunks: a new chunk whenever
/// the kind of value changes, a float chunk every [`SAMPLES_PER_CHUNK`] samples, and
/// histogram chunks wherever the codec cuts them (schema or bucket layout changes, counter
/// resets, size).
pub fn encode(samples: &[(i64, Value)]) -> Vec<Encoded> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let enc = samples[i].1.encoding();
        let mut j = i + 1;
        while j < samples.len() && samples[j].1.encoding() == enc {
            j += 1;
        }
        let run = &samples[i..j];
        if enc == ENCODING_XOR {
            for part in run.chunks(SAMPLES_PER_CHUNK) {
                out.push(Encoded {
                    min_t: part[0].0,
                    max_t: part[part.len() - 1].0,
                    encoding: ENCODING_XOR,
                    data: crate::chunk::encode(part.iter().map(|(t, v)| match v {
                        Value::Float(f) => (*t, *f),
                        Value::Histogram(_) => unreachable!("run of one encoding"),
                    })),
                });
            }
        } else {
            let hs: Vec<(i64, HistogramValue)> = run
                .iter()
                .filter_map(|(t, v)| match v {
                    Value::Histogram(h) => Some((*t, h.clone())),
                    Value::Float(_) => None,
                })
                .collect();
            out.extend(encode_histograms(&hs));
        }
        i = j;
    }
    out
}

/// Encodes histogram samples of one kind into chunks, cut as the codec cuts them.
pub fn encode_histograms(samples: &[(i64, HistogramValue)]) -> Vec<Encoded> {
    crate::chunk::encode_histograms(samples)
        .into_iter()
        .map(|(encoding, data, min_t, max_t)| Encoded {
            min_t,
            max_t,
            encoding,
            data,
        })
        .collect()
}

/// Most buckets (positive and negative together) a histogram may have. Rationale:
/// Prometheus's `native_histogram_bucket_limit` is off by default, but schema 8 spans the
/// whole f64 range in about 2^19 buckets; 2^14 is far above real histograms (160 by
/// default in client libraries) and bounds what one sample costs in a chunk (about 200
/// KiB at worst), a WAL record and a query.
pub const MAX_BUCKETS: u64 = 1 << 14;

/// Checks a histogram is consistent before it is stored: a known schema, spans that cover
/// exactly the buckets given, no span after the first with a negative offset, custom bucket
/// bounds only (and then no negative buckets) with schema -53, at most [`MAX_BUCKETS`].
pub fn validate(h: &HistogramValue) -> Result<(), &'static str> {
    use crate::model::{
        spans_len, CUSTOM_BUCKETS_SCHEMA, MAX_EXPONENTIAL_SCHEMA, MIN_EXPONENTIAL_SCHEMA,
    };
    let (schema, pos, neg, npos, nneg, custom) = match h {
        HistogramValue::Int(h) => (
            h.schema,
            &h.positive_spans,
            &h.negative_spans,
            h.positive_buckets.len(),
            h.negative_buckets.len(),
            &h.custom_values,
        ),
        HistogramValue::Float(h) => (
            h.schema,
            &h.positive_spans,
            &h.negative_spans,
            h.positive_buckets.len(),
            h.negative_buckets.len(),
            &h.custom_values,
        ),
    };
    let custom_schema = schema == CUSTOM_BUCKETS_SCHEMA;
    if !custom_schema && !(MIN_EXPONENTIAL_SCHEMA..=MAX_EXPONENTIAL_SCHEMA).contains(&schema) {
        return Err("histogram schema out of range");
    }
    if spans_len(pos) != npos as u64 || spans_len(neg) != nneg as u64 {
        return Err("histogram spans do not match its buckets");
    }
    if (npos + nneg) as u64 > MAX_BUCKETS {
        return Err("histogram has too many buckets");
    }
    if pos.iter().skip(1).any(|s| s.offset < 0) || neg.iter().skip(1).any(|s| s.offset < 0) {
        return Err("histogram span has a negative offset");
    }
    if custom_schema {
        if nneg > 0 || !neg.is_empty() {
            return Err("custom-bucket histogram has negative buckets");
        }
    } else if !custom.is_empty() {
        return Err("exponential histogram has custom bucket bounds");
    }
    Ok(())
}

/// Whether two histograms are the same sample bit for bit (floats by their bits, so a NaN
/// sum equals itself): what the head's "exact repeat is a no-op" rule compares.
pub fn same(a: &HistogramValue, b: &HistogramValue) -> bool {
    fn fbits(v: &[f64]) -> impl Iterator<Item = u64> + '_ {
        v.iter().map(|f| f.to_bits())
    }
    match (a, b) {
        (HistogramValue::Int(a), HistogramValue::Int(b)) => {
            a.counter_reset_hint == b.counter_reset_hint
                && a.schema == b.schema
                && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
                && a.zero_count == b.zero_count
                && a.count == b.count
                && a.sum.to_bits() == b.sum.to_bits()
                && a.positive_spans == b.positive_spans
                && a.negative_spans == b.negative_spans
                && a.positive_buckets == b.positive_buckets
                && a.negative_buckets == b.negative_buckets
                && fbits(&a.custom_values).eq(fbits(&b.custom_values))
        }
        (HistogramValue::Float(a), HistogramValue::Float(b)) => {
            a.counter_reset_hint == b.counter_reset_hint
                && a.schema == b.schema
                && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
                && a.zero_count.to_bits() == b.zero_count.to_bits()
                && a.count.to_bits() == b.count.to_bits()
                && a.sum.to_bits() == b.sum.to_bits()
                && a.positive_spans == b.positive_spans
                && a.negative_spans == b.negative_spans
                && fbits(&a.positive_buckets).eq(fbits(&b.positive_buckets))
                && fbits(&a.negative_buckets).eq(fbits(&b.negative_buckets))
                && fbits(&a.custom_values).eq(fbits(&b.custom_values))
        }
        _ => false,
    }
}

/// A histogram sample as remote read returns it (`prometheus.Histogram`): integer counts
/// as `*_int` and deltas, float counts as `*_float` and absolute counts, as stored.
pub fn to_prompb(t: i64, h: &HistogramValue) -> crate::proto::prompb::Histogram {
    use crate::proto::prompb::{histogram, BucketSpan, Histogram as P};
    let spans = |s: &[crate::model::Span]| {
        s.iter()
            .map(|s| BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect::<Vec<_>>()
    };
    match h {
        HistogramValue::Int(h) => P {
            count: Some(histogram::Count::CountInt(h.count)),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: Some(histogram::ZeroCount::ZeroCountInt(h.zero_count)),
            negative_spans: spans(&h.negative_spans),
            negative_deltas: h.negative_buckets.clone(),
            negative_counts: Vec::new(),
            positive_spans: spans(&h.positive_spans),
            positive_deltas: h.positive_buckets.clone(),
            positive_counts: Vec::new(),
            reset_hint: h.counter_reset_hint as i32,
            timestamp: t,
            custom_values: h.custom_values.clone(),
        },
        HistogramValue::Float(h) => P {
            count: Some(histogram::Count::CountFloat(h.count)),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: Some(histogram::ZeroCount::ZeroCountFloat(h.zero_count)),
            negative_spans: spans(&h.negative_spans),
            negative_deltas: Vec::new(),
            negative_counts: h.negative_buckets.clone(),
            positive_spans: spans(&h.positive_spans),
            positive_deltas: Vec::new(),
            positive_counts: h.positive_buckets.clone(),
            reset_hint: h.counter_reset_hint as i32,
            timestamp: t,
            custom_values: h.custom_values.clone(),
        },
    }
}

/// The inverse of [`to_prompb`], for tests and tools: `None` if the message mixes integer
/// and float fields or has an unknown reset hint.
pub fn from_prompb(p: &crate::proto::prompb::Histogram) -> Option<(i64, HistogramValue)> {
    use crate::model::{CounterResetHint, FloatHistogram, Histogram, Span};
    use crate::proto::prompb::histogram::{Count, ZeroCount};
    let spans = |s: &[crate::proto::prompb::BucketSpan]| {
        s.iter()
            .map(|s| Span {
                offset: s.offset,
                length: s.length,
            })
            .collect::<Vec<_>>()
    };
    let hint = CounterResetHint::from_wire(p.reset_hint)?;
    let v = match (p.count, p.zero_count) {
        (Some(Count::CountInt(count)), Some(ZeroCount::ZeroCountInt(_)) | None) => {
            HistogramValue::Int(Histogram {
                counter_reset_hint: hint,
                schema: p.schema,
                zero_threshold: p.zero_threshold,
                zero_count: match p.zero_count {
                    Some(ZeroCount::ZeroCountInt(z)) => z,
                    _ => 0,
                },
                count,
                sum: p.sum,
                positive_spans: spans(&p.positive_spans),
                negative_spans: spans(&p.negative_spans),
                positive_buckets: p.positive_deltas.clone(),
                negative_buckets: p.negative_deltas.clone(),
                custom_values: p.custom_values.clone(),
            })
        }
        (Some(Count::CountFloat(count)), Some(ZeroCount::ZeroCountFloat(_)) | None) => {
            HistogramValue::Float(FloatHistogram {
                counter_reset_hint: hint,
                schema: p.schema,
                zero_threshold: p.zero_threshold,
                zero_count: match p.zero_count {
                    Some(ZeroCount::ZeroCountFloat(z)) => z,
                    _ => 0.0,
                },
                count,
                sum: p.sum,
                positive_spans: spans(&p.positive_spans),
                negative_spans: spans(&p.negative_spans),
                positive_buckets: p.positive_counts.clone(),
                negative_buckets: p.negative_counts.clone(),
                custom_values: p.custom_values.clone(),
            })
        }
        _ => return None,
    };
    Some((p.timestamp, v))
}

/// The non-empty buckets of one side as (index, absolute count bits).
fn populated(spans: &[crate::model::Span], counts: impl Iterator<Item = f64>) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    let mut counts = counts;
    let mut idx: i64 = 0;
    for s in spans {
        idx += i64::from(s.offset);
        for _ in 0..s.length {
            let Some(c) = counts.next() else {
                return out;
            };
            if c != 0.0 {
                out.push((idx, c.to_bits()));
            }
            idx += 1;
        }
    }
    out
}

/// Whether two histograms hold the same observations as Prometheus reads them back from
/// its chunks: same kind, schema, zero bucket, count, sum (bits), custom bounds, and the
/// same counts in the same non-empty buckets. Bucket layouts may differ by empty buckets
/// (an appender widens earlier samples' layouts when a bucket appears, as Prometheus's
/// does), and counter-reset hints are what the chunk says, not what was sent (only
/// "gauge" is kept by every reader), so layouts and hints other than gauge are not
/// compared.
pub fn equivalent(a: &HistogramValue, b: &HistogramValue) -> bool {
    use crate::model::CounterResetHint::Gauge;
    fn abs(deltas: &[i64]) -> Vec<f64> {
        let mut acc = 0i64;
        deltas
            .iter()
            .map(|d| {
                acc = acc.wrapping_add(*d);
                acc as f64
            })
            .collect()
    }
    match (a, b) {
        (HistogramValue::Int(a), HistogramValue::Int(b)) => {
            (a.counter_reset_hint == Gauge) == (b.counter_reset_hint == Gauge)
                && a.schema == b.schema
                && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
                && a.zero_count == b.zero_count
                && a.count == b.count
                && a.sum.to_bits() == b.sum.to_bits()
                && a.custom_values
                    .iter()
                    .map(|f| f.to_bits())
                    .eq(b.custom_values.iter().map(|f| f.to_bits()))
                && populated(&a.positive_spans, abs(&a.positive_buckets).into_iter())
                    == populated(&b.positive_spans, abs(&b.positive_buckets).into_iter())
                && populated(&a.negative_spans, abs(&a.negative_buckets).into_iter())
                    == populated(&b.negative_spans, abs(&b.negative_buckets).into_iter())
        }
        (HistogramValue::Float(a), HistogramValue::Float(b)) => {
            (a.counter_reset_hint == Gauge) == (b.counter_reset_hint == Gauge)
                && a.schema == b.schema
                && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
                && a.zero_count.to_bits() == b.zero_count.to_bits()
                && a.count.to_bits() == b.count.to_bits()
                && a.sum.to_bits() == b.sum.to_bits()
                && a.custom_values
                    .iter()
                    .map(|f| f.to_bits())
                    .eq(b.custom_values.iter().map(|f| f.to_bits()))
                && populated(&a.positive_spans, a.positive_buckets.iter().copied())
                    == populated(&b.positive_spans, b.positive_buckets.iter().copied())
                && populated(&a.negative_spans, a.negative_buckets.iter().copied())
                    == populated(&b.negative_spans, b.negative_buckets.iter().copied())
        }
        _ => false,
    }
}

/// Bytes of histogram samples one WAL record carries at most (estimated, see
/// [`approx_record_bytes`]). Rationale: far below the frame limit (16 MiB) even for the
/// largest histogram [`validate`] accepts (2^14 buckets, about 160 KiB), so one push never
/// makes a record the WAL refuses.
pub const HISTOGRAMS_PER_RECORD_BYTES: usize = 4 << 20;

/// An upper bound on the bytes one histogram sample takes in a WAL record.
pub fn approx_record_bytes(h: &crate::wal::RefHistogram) -> usize {
    let (spans, buckets, custom) = match &h.h {
        HistogramValue::Int(x) => (
            x.positive_spans.len() + x.negative_spans.len(),
            x.positive_buckets.len() + x.negative_buckets.len(),
            x.custom_values.len(),
        ),
        HistogramValue::Float(x) => (
            x.positive_spans.len() + x.negative_spans.len(),
            x.positive_buckets.len() + x.negative_buckets.len(),
            x.custom_values.len(),
        ),
    };
    80 + spans * 15 + buckets * 10 + custom * 8
}

/// `hs` cut into parts of at most [`HISTOGRAMS_PER_RECORD_BYTES`] each (a part always
/// holds at least one sample), one WAL record each.
pub fn record_parts(hs: &[crate::wal::RefHistogram]) -> Vec<&[crate::wal::RefHistogram]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, h) in hs.iter().enumerate() {
        let b = approx_record_bytes(h);
        if i > start && bytes + b > HISTOGRAMS_PER_RECORD_BYTES {
            out.push(&hs[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < hs.len() {
        out.push(&hs[start..]);
    }
    out
}

/// Histogram series of every shape, for tests (unit and integration): integer and float,
/// new buckets, negative buckets, a zero bucket, a counter reset, a schema change, a gauge,
/// custom buckets (schema -53), enough samples to cut several chunks, all at increasing
/// timestamps `start + i * step`.
#[doc(hidden)]
pub mod fixtures {
    use crate::model::{
        CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span, CUSTOM_BUCKETS_SCHEMA,
    };

    fn span(offset: i32, length: u32) -> Span {
        Span { offset, length }
    }

    /// Integer histograms: several shapes in a row, then `n` growing samples.
    pub fn int_series(start: i64, step: i64, n: usize) -> Vec<(i64, HistogramValue)> {
        let base = Histogram {
            schema: 0,
            zero_threshold: 0.001,
            zero_count: 1,
            count: 5,
            sum: 10.0,
            positive_spans: vec![span(0, 2)],
            positive_buckets: vec![2, 0],
            ..Default::default()
        };
        let mut out = vec![base.clone()];
        // New bucket.
        out.push(Histogram {
            count: 8,
            sum: 18.5,
            positive_spans: vec![span(0, 3)],
            positive_buckets: vec![2, 0, 1],
            ..base.clone()
        });
        // Negative buckets, a gap in the positive ones.
        out.push(Histogram {
            count: 13,
            sum: 12.25,
            zero_count: 2,
            positive_spans: vec![span(0, 3), span(2, 1)],
            positive_buckets: vec![2, 0, 1, -2],
            negative_spans: vec![span(-2, 2)],
            negative_buckets: vec![1, 1],
            ..base.clone()
        });
        // Counter reset.
        out.push(Histogram {
            count: 2,
            sum: 1.0,
            zero_count: 0,
            positive_spans: vec![span(0, 1)],
            positive_buckets: vec![2],
            ..base.clone()
        });
        // Schema change, with the hint set.
        out.push(Histogram {
            counter_reset_hint: CounterResetHint::Unknown,
            schema: 1,
            count: 3,
            sum: 2.0,
            zero_count: 0,
            positive_spans: vec![span(1, 2)],
            positive_buckets: vec![1, 1],
            ..base.clone()
        });
        let mut h = out.last().cloned().expect("just pushed");
        for i in 0..n as u64 {
            h.count += 3 + i % 2;
            h.sum += 1.5;
            h.zero_count += i % 2;
            h.positive_buckets = vec![1 + (h.count as i64 - 3) / 2, 1];
            // Keep count = zero + buckets.
            let b0 = h.positive_buckets[0];
            let b1 = b0 + h.positive_buckets[1];
            h.count = h.zero_count + (b0 + b1) as u64;
            out.push(h.clone());
        }
        number(start, step, out.into_iter().map(HistogramValue::Int))
    }

    /// A gauge histogram going up and down.
    pub fn gauge_series(start: i64, step: i64, n: usize) -> Vec<(i64, HistogramValue)> {
        number(
            start,
            step,
            (0..n).map(|i| {
                let a = (i % 7) as f64 + 0.5;
                let b = (i % 3) as f64;
                HistogramValue::Float(FloatHistogram {
                    counter_reset_hint: CounterResetHint::Gauge,
                    schema: 3,
                    zero_threshold: 0.0,
                    zero_count: 0.25,
                    count: 0.25 + a + b,
                    sum: -3.5 + i as f64,
                    positive_spans: vec![span(-4, 1), span(3, 1)],
                    positive_buckets: vec![a, b],
                    ..Default::default()
                })
            }),
        )
    }

    /// Float histograms with negative buckets and a counter reset in the middle.
    pub fn float_series(start: i64, step: i64, n: usize) -> Vec<(i64, HistogramValue)> {
        number(
            start,
            step,
            (0..n).map(|i| {
                let k = if i < n / 2 { i } else { i - n / 2 } as f64;
                HistogramValue::Float(FloatHistogram {
                    schema: -1,
                    zero_threshold: 1e-9,
                    zero_count: k,
                    count: 4.0 * k + 1.0,
                    sum: k * 2.75 - 1.0,
                    positive_spans: vec![span(0, 2)],
                    positive_buckets: vec![k, k + 1.0],
                    negative_spans: vec![span(1, 1)],
                    negative_buckets: vec![k * 1.0],
                    ..Default::default()
                })
            }),
        )
    }

    /// Custom buckets (schema -53), integer counts.
    pub fn custom_series(start: i64, step: i64, n: usize) -> Vec<(i64, HistogramValue)> {
        number(
            start,
            step,
            (0..n as u64).map(|i| {
                HistogramValue::Int(Histogram {
                    schema: CUSTOM_BUCKETS_SCHEMA,
                    count: 3 * i + 4,
                    sum: i as f64 * 0.7,
                    positive_spans: vec![span(0, 2), span(1, 1)],
                    positive_buckets: vec![i as i64 + 1, 0, 1],
                    custom_values: vec![0.1, 1.0, 10.0],
                    ..Default::default()
                })
            }),
        )
    }

    fn number(
        start: i64,
        step: i64,
        hs: impl Iterator<Item = HistogramValue>,
    ) -> Vec<(i64, HistogramValue)> {
        hs.enumerate()
            .map(|(i, h)| (start + i as i64 * step, h))
            .collect()
    }

    /// Whether two sample lists hold the same observations at the same times (see
    /// [`super::equivalent`]: what Prometheus's own reads guarantee).
    pub fn same_samples(a: &[(i64, HistogramValue)], b: &[(i64, HistogramValue)]) -> bool {
        first_difference(a, b).is_none()
    }

    /// The index of the first sample that differs (or where one list ends early).
    pub fn first_difference(
        a: &[(i64, HistogramValue)],
        b: &[(i64, HistogramValue)],
    ) -> Option<usize> {
        let i = a
            .iter()
            .zip(b)
            .position(|((ta, ha), (tb, hb))| ta != tb || !super::equivalent(ha, hb));
        i.or((a.len() != b.len()).then(|| a.len().min(b.len())))
    }
}
