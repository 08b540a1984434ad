//! Property tests for `weft::proto`: the zero-copy decoders (remote write 1.0 and 2.0) agree
//! with prost on everything prost encodes, and nothing (decoders, snappy, frames) panics or
//! over-reads on hostile bytes.

use std::collections::HashMap;

use proptest::prelude::*;
use prost::Message;
use weft::model::{
    CounterResetHint, FloatHistogram, Histogram as IntHistogram, HistogramValue, Span,
    CUSTOM_BUCKETS_SCHEMA,
};
use weft::proto::prompb::{Exemplar, Label, MetricMetadata, Sample, WriteRequest};
use weft::proto::prompb_v2::{self, Histogram};
use weft::proto::{
    compress, decode_write_request, decode_write_request_v2, decompress, read_chunked_frame,
    write_chunked_frame, MetricType, ProtoError, SnappyError, WriteBatch,
};

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// `prompb.TimeSeries` with field 4, so that generated requests carry native histograms.
/// (Not in `prompb` itself, whose `TimeSeries` is shared with remote read.)
#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeriesWithHistograms {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequestWithHistograms {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeriesWithHistograms>,
    #[prost(message, repeated, tag = "3")]
    metadata: Vec<MetricMetadata>,
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<u64>().prop_map(f64::from_bits),
        1 => Just(f64::from_bits(STALE_NAN)),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(0.0),
        1 => any::<f64>(),
    ]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), Just(0i64), 0i64..2_000_000_000_000]
}

fn label() -> impl Strategy<Value = Label> {
    (any::<String>(), any::<String>()).prop_map(|(name, value)| Label { name, value })
}

fn sample() -> impl Strategy<Value = Sample> {
    (value(), timestamp()).prop_map(|(value, timestamp)| Sample { value, timestamp })
}

fn exemplar() -> impl Strategy<Value = Exemplar> {
    (prop::collection::vec(label(), 0..3), value(), timestamp()).prop_map(
        |(labels, value, timestamp)| Exemplar {
            labels,
            value,
            timestamp,
        },
    )
}

/// Histogram floats: no NaN (the comparison is `PartialEq`), everything else goes.
fn hfloat() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
        Just(0.0),
        Just(f64::INFINITY),
        0.0f64..1e6,
    ]
}

/// Spans and a matching number of buckets.
fn spans() -> impl Strategy<Value = (Vec<Span>, usize)> {
    prop::collection::vec((any::<i32>(), 0u32..4), 0..4).prop_map(|v| {
        let spans: Vec<Span> = v
            .into_iter()
            .map(|(offset, length)| Span { offset, length })
            .collect();
        let n = spans.iter().map(|s| s.length as usize).sum();
        (spans, n)
    })
}

/// A valid native histogram of any shape: integer or float, exponential schema or custom
/// buckets (-53, no negative buckets, increasing bounds), any reset hint.
fn histogram_model() -> impl Strategy<Value = HistogramValue> {
    let schema = prop_oneof![-4i32..=8, Just(CUSTOM_BUCKETS_SCHEMA)];
    let hint = (0i32..4).prop_map(|h| CounterResetHint::from_wire(h).unwrap());
    (
        schema,
        hint,
        spans(),
        spans(),
        any::<bool>(),
        prop::collection::vec(any::<i64>(), 16),
        prop::collection::vec(hfloat(), 16),
        (
            any::<u64>(),
            any::<u64>(),
            hfloat(),
            hfloat(),
            hfloat(),
            hfloat(),
        ),
        prop::collection::vec(-1e6f64..1e6, 0..5),
    )
        .prop_map(
            |(schema, hint, (pos_spans, npos), (neg_spans, nneg), float, ints, floats, s, cv)| {
                let (count, zero_count, sum, zero_threshold, fcount, fzero) = s;
                let custom = schema == CUSTOM_BUCKETS_SCHEMA;
                let (neg_spans, nneg) = if custom {
                    (vec![], 0)
                } else {
                    (neg_spans, nneg)
                };
                let mut custom_values = if custom { cv } else { vec![] };
                custom_values.sort_by(f64::total_cmp);
                custom_values.dedup();
                let cycle_i = |n: usize, skip: usize| -> Vec<i64> {
                    (0..n).map(|i| ints[(i + skip) % ints.len()]).collect()
                };
                let cycle_f = |n: usize, skip: usize| -> Vec<f64> {
                    (0..n).map(|i| floats[(i + skip) % floats.len()]).collect()
                };
                if float {
                    HistogramValue::Float(FloatHistogram {
                        counter_reset_hint: hint,
                        schema,
                        zero_threshold,
                        zero_count: fzero,
                        count: fcount,
                        sum,
                        positive_buckets: cycle_f(npos, 0),
                        negative_buckets: cycle_f(nneg, 7),
                        positive_spans: pos_spans,
                        negative_spans: neg_spans,
                        custom_values,
                    })
                } else {
                    HistogramValue::Int(IntHistogram {
                        counter_reset_hint: hint,
                        schema,
                        zero_threshold,
                        zero_count,
                        count,
                        sum,
                        positive_buckets: cycle_i(npos, 0),
                        negative_buckets: cycle_i(nneg, 5),
                        positive_spans: pos_spans,
                        negative_spans: neg_spans,
                        custom_values,
                    })
                }
            },
        )
}

fn histogram() -> impl Strategy<Value = Histogram> {
    (timestamp(), histogram_model()).prop_map(|(t, h)| Histogram::from_model(t, &h))
}

fn series() -> impl Strategy<Value = TimeSeriesWithHistograms> {
    (
        prop::collection::vec(label(), 0..6),
        prop::collection::vec(sample(), 0..4),
        prop::collection::vec(exemplar(), 0..2),
        prop::collection::vec(histogram(), 0..2),
    )
        .prop_map(
            |(labels, samples, exemplars, histograms)| TimeSeriesWithHistograms {
                labels,
                samples,
                exemplars,
                histograms,
            },
        )
}

fn metadata() -> impl Strategy<Value = MetricMetadata> {
    (
        prop_oneof![any::<i32>(), 0i32..8],
        any::<String>(),
        any::<String>(),
        any::<String>(),
    )
        .prop_map(|(r#type, metric_family_name, help, unit)| MetricMetadata {
            r#type,
            metric_family_name,
            help,
            unit,
        })
}

fn request() -> impl Strategy<Value = WriteRequestWithHistograms> {
    (
        prop::collection::vec(series(), 0..8),
        prop::collection::vec(metadata(), 0..3),
    )
        .prop_map(|(timeseries, metadata)| WriteRequestWithHistograms {
            timeseries,
            metadata,
        })
}

/// The plain `prompb` view of a generated request (histograms dropped).
fn without_histograms(req: &WriteRequestWithHistograms) -> WriteRequest {
    WriteRequest {
        timeseries: req
            .timeseries
            .iter()
            .map(|ts| weft::proto::prompb::TimeSeries {
                labels: ts.labels.clone(),
                samples: ts.samples.clone(),
                exemplars: ts.exemplars.clone(),
            })
            .collect(),
        metadata: req.metadata.clone(),
    }
}

type Pair = (Vec<u8>, Vec<u8>);

/// One exemplar: labels, timestamp, value bits.
type FlatExemplar = (Vec<Pair>, i64, u64);

/// One series as the decoder reports it.
#[derive(Debug, Clone, PartialEq)]
struct Flat {
    labels: Vec<Pair>,
    samples: Vec<(i64, u64)>,
    histograms: Vec<(i64, HistogramValue)>,
    exemplars: Vec<FlatExemplar>,
}

/// Metadata: type, family, help, unit.
type FlatMeta = (MetricType, Vec<u8>, Vec<u8>, Vec<u8>);

fn pairs(p: &[(&[u8], &[u8])]) -> Vec<Pair> {
    p.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

fn flatten(batch: &WriteBatch<'_>) -> Vec<Flat> {
    batch
        .series
        .iter()
        .map(|s| Flat {
            labels: pairs(&batch.labels[s.labels_start as usize..s.labels_end as usize]),
            samples: batch.samples[s.samples_start as usize..s.samples_end as usize]
                .iter()
                .map(|&(t, v)| (t, v.to_bits()))
                .collect(),
            histograms: batch.histograms[s.histograms_start as usize..s.histograms_end as usize]
                .to_vec(),
            exemplars: batch.exemplars[s.exemplars_start as usize..s.exemplars_end as usize]
                .iter()
                .map(|e| {
                    (
                        pairs(
                            &batch.exemplar_labels[e.labels_start as usize..e.labels_end as usize],
                        ),
                        e.timestamp,
                        e.value.to_bits(),
                    )
                })
                .collect(),
        })
        .collect()
}

fn flatten_meta(batch: &WriteBatch<'_>) -> Vec<FlatMeta> {
    batch
        .metadata
        .iter()
        .map(|m| (m.kind, m.family.to_vec(), m.help.to_vec(), m.unit.to_vec()))
        .collect()
}

/// A float as it arrives: proto3 encoders (prost, and Go's gogo-protobuf that Prometheus
/// uses) skip scalars equal to zero, and `-0.0 == 0.0`, so a `-0.0` arrives as `+0.0`: this
/// is the wire format, not a decoder choice.
fn wire_bits(v: f64) -> u64 {
    if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

fn label_pairs(labels: &[Label]) -> Vec<Pair> {
    labels
        .iter()
        .map(|l| (l.name.clone().into_bytes(), l.value.clone().into_bytes()))
        .collect()
}

fn meta_type(t: i32) -> MetricType {
    u64::try_from(t)
        .ok()
        .and_then(MetricType::from_wire)
        .unwrap_or_default()
}

/// What the 1.0 decoder must report for `req`.
fn expected(req: &WriteRequestWithHistograms) -> Vec<Flat> {
    req.timeseries
        .iter()
        .map(|ts| Flat {
            labels: label_pairs(&ts.labels),
            samples: ts
                .samples
                .iter()
                .map(|s| (s.timestamp, wire_bits(s.value)))
                .collect(),
            histograms: ts.histograms.iter().map(Histogram::to_model).collect(),
            exemplars: ts
                .exemplars
                .iter()
                .map(|e| (label_pairs(&e.labels), e.timestamp, wire_bits(e.value)))
                .collect(),
        })
        .collect()
}

fn expected_meta(req: &WriteRequestWithHistograms) -> Vec<FlatMeta> {
    req.metadata
        .iter()
        .map(|m| {
            (
                meta_type(m.r#type),
                m.metric_family_name.clone().into_bytes(),
                m.help.clone().into_bytes(),
                m.unit.clone().into_bytes(),
            )
        })
        .collect()
}

/// Invariants of any successfully decoded batch: ranges are in order, contiguous and in bounds.
fn check_batch_shape(batch: &WriteBatch<'_>) {
    let (mut labels, mut samples, mut histograms, mut exemplars) = (0u32, 0u32, 0u32, 0u32);
    for s in &batch.series {
        assert_eq!(
            (
                s.labels_start,
                s.samples_start,
                s.histograms_start,
                s.exemplars_start
            ),
            (labels, samples, histograms, exemplars)
        );
        assert!(s.labels_end >= s.labels_start && s.samples_end >= s.samples_start);
        assert!(s.histograms_end >= s.histograms_start && s.exemplars_end >= s.exemplars_start);
        (labels, samples, histograms, exemplars) = (
            s.labels_end,
            s.samples_end,
            s.histograms_end,
            s.exemplars_end,
        );
    }
    assert_eq!(
        (
            labels as usize,
            samples as usize,
            histograms as usize,
            exemplars as usize
        ),
        (
            batch.labels.len(),
            batch.samples.len(),
            batch.histograms.len(),
            batch.exemplars.len()
        )
    );
    let mut el = 0u32;
    for e in &batch.exemplars {
        assert_eq!(e.labels_start, el);
        assert!(e.labels_end >= e.labels_start);
        el = e.labels_end;
    }
    assert_eq!(el as usize, batch.exemplar_labels.len());
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, x) if len > 0 => bytes[i % len] ^= x,
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            Mutation::Insert(i, b) => {
                let at = i % (len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i % len;
                bytes.drain(at..(at + n).min(len));
            }
            _ => {}
        }
    }
    bytes
}

/// An exemplar: labels, value, timestamp.
type V2Exemplar = (Vec<(String, String)>, f64, i64);

/// A remote write 2.0 request as data: series of labels, samples, histograms, exemplars and
/// optional metadata (type, help, unit).
#[derive(Debug, Clone)]
struct V2Series {
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
    histograms: Vec<(i64, HistogramValue)>,
    exemplars: Vec<V2Exemplar>,
    metadata: Option<(i32, String, String)>,
    created_timestamp: i64,
}

fn v2_series() -> impl Strategy<Value = V2Series> {
    let pair = || (any::<String>(), any::<String>());
    // Small alphabets too, so that symbols repeat and are shared.
    let small = || ("[a-c_]{0,2}", "[x-z]{0,2}").prop_map(|(a, b)| (a, b));
    (
        prop::collection::vec(prop_oneof![pair(), small()], 0..6),
        prop::collection::vec((timestamp(), value()), 0..4),
        prop::collection::vec((timestamp(), histogram_model()), 0..2),
        prop::collection::vec(
            (prop::collection::vec(small(), 0..3), value(), timestamp()),
            0..2,
        ),
        prop::option::of((0i32..8, any::<String>(), "[a-z]{0,3}")),
        timestamp(),
    )
        .prop_map(
            |(labels, samples, histograms, exemplars, metadata, created_timestamp)| V2Series {
                labels,
                samples,
                histograms,
                exemplars,
                metadata,
                created_timestamp,
            },
        )
}

/// A symbol table under construction (`""` first, as the spec requires).
struct Symbols {
    table: Vec<String>,
    index: HashMap<String, u32>,
}

impl Symbols {
    fn new() -> Self {
        Symbols {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn sym(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        self.table.push(s.to_string());
        let i = self.table.len() as u32 - 1;
        self.index.insert(s.to_string(), i);
        i
    }

    fn refs(&mut self, labels: &[(String, String)]) -> Vec<u32> {
        labels
            .iter()
            .flat_map(|(n, v)| [self.sym(n), self.sym(v)])
            .collect()
    }
}

/// Encodes `series` with prost, interning every string in a symbol table.
fn encode_v2(series: &[V2Series]) -> Vec<u8> {
    let mut st = Symbols::new();
    let mut timeseries = Vec::new();
    for s in series {
        let labels_refs = st.refs(&s.labels);
        let exemplars = s
            .exemplars
            .iter()
            .map(|(labels, value, timestamp)| prompb_v2::Exemplar {
                labels_refs: st.refs(labels),
                value: *value,
                timestamp: *timestamp,
            })
            .collect();
        let metadata = s
            .metadata
            .as_ref()
            .map(|(t, help, unit)| prompb_v2::Metadata {
                r#type: *t,
                help_ref: st.sym(help),
                unit_ref: st.sym(unit),
            });
        timeseries.push(prompb_v2::TimeSeries {
            labels_refs,
            samples: s
                .samples
                .iter()
                .map(|&(timestamp, value)| prompb_v2::Sample { value, timestamp })
                .collect(),
            histograms: s
                .histograms
                .iter()
                .map(|(t, h)| Histogram::from_model(*t, h))
                .collect(),
            exemplars,
            metadata,
            created_timestamp: s.created_timestamp,
        });
    }
    prompb_v2::Request {
        symbols: st.table,
        timeseries,
    }
    .encode_to_vec()
}

fn expected_v2(series: &[V2Series]) -> (Vec<Flat>, Vec<FlatMeta>) {
    let sp = |l: &[(String, String)]| -> Vec<Pair> {
        l.iter()
            .map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes()))
            .collect()
    };
    let flat = series
        .iter()
        .map(|s| Flat {
            labels: sp(&s.labels),
            samples: s.samples.iter().map(|&(t, v)| (t, wire_bits(v))).collect(),
            histograms: s.histograms.clone(),
            exemplars: s
                .exemplars
                .iter()
                .map(|(l, v, t)| (sp(l), *t, wire_bits(*v)))
                .collect(),
        })
        .collect();
    let meta = series
        .iter()
        .filter_map(|s| {
            let (t, help, unit) = s.metadata.as_ref()?;
            if *t == 0 && help.is_empty() && unit.is_empty() {
                return None;
            }
            let family = s
                .labels
                .iter()
                .find(|(n, _)| n == "__name__")
                .map_or(vec![], |(_, v)| v.clone().into_bytes());
            Some((
                meta_type(*t),
                family,
                help.clone().into_bytes(),
                unit.clone().into_bytes(),
            ))
        })
        .collect();
    (flat, meta)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoder_agrees_with_prost_encoding(req in request()) {
        let body = req.encode_to_vec();
        let mut batch = WriteBatch::default();
        decode_write_request(&body, &mut batch).unwrap();
        check_batch_shape(&batch);
        prop_assert_eq!(flatten(&batch), expected(&req));
        prop_assert_eq!(flatten_meta(&batch), expected_meta(&req));

        // The plain prompb message (no field 4) decodes to the same, minus histograms.
        let plain = without_histograms(&req).encode_to_vec();
        decode_write_request(&plain, &mut batch).unwrap();
        let mut want = expected(&req);
        for s in &mut want { s.histograms.clear(); }
        prop_assert_eq!(flatten(&batch), want);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut batch = WriteBatch::default();
        if decode_write_request(&body, &mut batch).is_ok() {
            check_batch_shape(&batch);
        }
        if decode_write_request_v2(&body, &mut batch).is_ok() {
            check_batch_shape(&batch);
        }
    }

    #[test]
    fn decoder_on_mutated_requests_is_safe_and_agrees_with_prost(
        req in request(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(req.encode_to_vec(), &mutations);
        let mut batch = WriteBatch::default();
        match decode_write_request(&body, &mut batch) {
            Ok(()) => {
                check_batch_shape(&batch);
                // Where prost also accepts the bytes (it additionally checks UTF-8, and skips
                // groups that weft refuses), both must read the same series. Histograms are
                // compared by timestamp only: prost takes a mix of integer and float fields
                // that weft refuses, so where both accept, only the shape is comparable.
                if let Ok(theirs) = WriteRequestWithHistograms::decode(&body[..]) {
                    let ours: Vec<_> = flatten(&batch).into_iter().map(|f| (
                        f.labels, f.samples, f.exemplars,
                        f.histograms.into_iter().map(|h| h.0).collect::<Vec<_>>(),
                    )).collect();
                    // prost decodes a `-0.0` on the wire faithfully, so compare exact bits here.
                    let want: Vec<_> = theirs.timeseries.iter().map(|ts| (
                        label_pairs(&ts.labels),
                        ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect::<Vec<_>>(),
                        ts.exemplars.iter().map(|e| (label_pairs(&e.labels), e.timestamp, e.value.to_bits())).collect::<Vec<_>>(),
                        ts.histograms.iter().map(|h| h.timestamp).collect::<Vec<_>>(),
                    )).collect();
                    prop_assert_eq!(ours, want);
                    prop_assert_eq!(batch.metadata.len(), theirs.metadata.len());
                }
            }
            Err(ProtoError::Malformed { offset, .. }) => prop_assert!(offset <= body.len()),
            Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        }
    }

    #[test]
    fn v2_decoder_agrees_with_prost_encoding(series in prop::collection::vec(v2_series(), 0..6)) {
        let body = encode_v2(&series);
        let mut batch = WriteBatch::default();
        decode_write_request_v2(&body, &mut batch).unwrap();
        check_batch_shape(&batch);
        let (flat, meta) = expected_v2(&series);
        prop_assert_eq!(flatten(&batch), flat);
        prop_assert_eq!(flatten_meta(&batch), meta);
    }

    #[test]
    fn v1_and_v2_of_the_same_series_decode_to_the_same_batch(series in prop::collection::vec(v2_series(), 0..6)) {
        let to_labels = |l: &[(String, String)]| -> Vec<Label> {
            l.iter().map(|(name, value)| Label { name: name.clone(), value: value.clone() }).collect()
        };
        let v1 = WriteRequestWithHistograms {
            timeseries: series.iter().map(|s| TimeSeriesWithHistograms {
                labels: to_labels(&s.labels),
                samples: s.samples.iter().map(|&(timestamp, value)| Sample { value, timestamp }).collect(),
                exemplars: s.exemplars.iter().map(|(l, value, timestamp)| Exemplar {
                    labels: to_labels(l), value: *value, timestamp: *timestamp,
                }).collect(),
                histograms: s.histograms.iter().map(|(t, h)| Histogram::from_model(*t, h)).collect(),
            }).collect(),
            metadata: vec![],
        }.encode_to_vec();
        let v2 = encode_v2(&series);
        let (mut a, mut b) = (WriteBatch::default(), WriteBatch::default());
        decode_write_request(&v1, &mut a).unwrap();
        decode_write_request_v2(&v2, &mut b).unwrap();
        prop_assert_eq!(&a.series, &b.series);
        prop_assert_eq!(flatten(&a), flatten(&b));
    }

    #[test]
    fn v2_decoder_on_mutated_requests_never_panics(
        series in prop::collection::vec(v2_series(), 1..4),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(encode_v2(&series), &mutations);
        let mut batch = WriteBatch::default();
        match decode_write_request_v2(&body, &mut batch) {
            Ok(()) => {
                check_batch_shape(&batch);
                // Every label resolved to a symbol, so every slice is inside the body.
                let range = body.as_ptr_range();
                for (n, v) in batch.labels.iter().chain(batch.exemplar_labels.iter()) {
                    for s in [n, v] {
                        prop_assert!(s.is_empty() || (range.contains(&s.as_ptr()) && s.len() <= body.len()));
                    }
                }
            }
            Err(ProtoError::Malformed { offset, .. }) => prop_assert!(offset <= body.len()),
            Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        }
    }

    #[test]
    fn v2_truncated_requests_never_panic(series in prop::collection::vec(v2_series(), 1..4), cut in any::<usize>()) {
        let body = encode_v2(&series);
        let body = &body[..cut % (body.len() + 1)];
        let mut batch = WriteBatch::default();
        if decode_write_request_v2(body, &mut batch).is_ok() {
            check_batch_shape(&batch);
        }
    }


    #[test]
    fn snappy_never_panics_and_respects_the_limit(body in prop::collection::vec(any::<u8>(), 0..256), limit in 0usize..4096) {
        match decompress(&body, limit) {
            Ok(out) => prop_assert!(out.len() <= limit),
            Err(SnappyError::TooLarge { claimed, limit: l }) => prop_assert!(claimed > l as u64 && l == limit),
            Err(_) => {}
        }
    }

    #[test]
    fn snappy_round_trips(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let body = compress(&data);
        prop_assert_eq!(decompress(&body, data.len()).unwrap(), data);
    }

    #[test]
    fn snappy_of_mutated_bodies_never_panics(
        data in prop::collection::vec(any::<u8>(), 0..1024),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(compress(&data), &mutations);
        if let Ok(out) = decompress(&body, 2048) {
            prop_assert!(out.len() <= 2048);
        }
    }

    #[test]
    fn frames_round_trip(msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut stream = Vec::new();
        for m in &msgs {
            write_chunked_frame(&mut stream, m);
        }
        let mut rest = &stream[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            let (msg, r) = read_chunked_frame(rest, 300).unwrap();
            got.push(msg.to_vec());
            rest = r;
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn frame_corruption_is_detected(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 1..6),
        at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            write_chunked_frame(&mut stream, m);
        }
        let i = at % stream.len();
        stream[i] ^= flip;
        let mut rest = &stream[..];
        let mut result = Ok(());
        while !rest.is_empty() {
            match read_chunked_frame(rest, 1 << 16) {
                Ok((_, r)) => rest = r,
                Err(e) => { result = Err(e); break; }
            }
        }
        // Any changed byte in a length, a checksum or a message must surface as an error. (A
        // changed length could in principle land on a frame with a matching CRC: 2^-32.)
        prop_assert!(result.is_err(), "flip of byte {} went unnoticed", i);
    }

    #[test]
    fn frame_reader_never_panics(buf in prop::collection::vec(any::<u8>(), 0..64), limit in 0usize..64) {
        let mut rest = &buf[..];
        while !rest.is_empty() {
            match read_chunked_frame(rest, limit) {
                Ok((msg, r)) => { prop_assert!(msg.len() <= limit && r.len() < rest.len()); rest = r; }
                Err(_) => break,
            }
        }
    }
}
