//! Property tests for `weft::proto`: the zero-copy decoder agrees with prost on everything prost
//! encodes, and nothing (decoder, snappy, frames) panics or over-reads on hostile bytes.

use proptest::prelude::*;
use prost::Message;
use weft::proto::prompb::{Exemplar, Label, MetricMetadata, Sample, WriteRequest};
use weft::proto::{
    compress, decode_write_request, decompress, read_chunked_frame, write_chunked_frame,
    ProtoError, SnappyError, WriteBatch,
};

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// `prompb.Histogram` reduced to a few fields: weft only counts histograms, so any valid
/// message at field 4 will do. (Not in `prompb` itself, which weft does not need to decode.)
#[derive(Clone, PartialEq, prost::Message)]
struct Histogram {
    #[prost(uint64, tag = "1")]
    count_int: u64,
    #[prost(double, tag = "3")]
    sum: f64,
    #[prost(sint32, tag = "4")]
    schema: i32,
    #[prost(int64, tag = "15")]
    timestamp: i64,
}

/// `prompb.TimeSeries` with field 4, so that generated requests carry native histograms.
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

fn histogram() -> impl Strategy<Value = Histogram> {
    (any::<u64>(), value(), any::<i32>(), timestamp()).prop_map(
        |(count_int, sum, schema, timestamp)| Histogram {
            count_int,
            sum,
            schema,
            timestamp,
        },
    )
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
        any::<i32>(),
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
                histograms: Vec::new(),
            })
            .collect(),
        metadata: req.metadata.clone(),
    }
}

/// One series as the decoder reports it: labels, (timestamp, value bits), exemplars, histograms.
type Flat = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(i64, u64)>, u32, u32);

fn flatten(batch: &WriteBatch<'_>) -> Vec<Flat> {
    batch
        .series
        .iter()
        .map(|s| {
            let labels = batch.labels[s.labels_start as usize..s.labels_end as usize]
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect();
            let samples = batch.samples[s.samples_start as usize..s.samples_end as usize]
                .iter()
                .map(|&(t, v)| (t, v.to_bits()))
                .collect();
            (labels, samples, s.num_exemplars(), s.num_histograms())
        })
        .collect()
}

/// What the decoder must report for `req`. Proto3 encoders (prost, and Go's gogo-protobuf that
/// Prometheus uses) skip scalars equal to zero, and `-0.0 == 0.0`, so a `-0.0` sample value
/// arrives as `+0.0`: this is the wire format, not a decoder choice.
fn expected(req: &WriteRequestWithHistograms) -> Vec<Flat> {
    req.timeseries
        .iter()
        .map(|ts| {
            let labels = ts
                .labels
                .iter()
                .map(|l| (l.name.clone().into_bytes(), l.value.clone().into_bytes()))
                .collect();
            let samples = ts
                .samples
                .iter()
                .map(|s| {
                    (
                        s.timestamp,
                        if s.value == 0.0 { 0 } else { s.value.to_bits() },
                    )
                })
                .collect();
            (
                labels,
                samples,
                ts.exemplars.len() as u32,
                ts.histograms.len() as u32,
            )
        })
        .collect()
}

/// Invariants of any successfully decoded batch: ranges are in order, contiguous and in bounds.
fn check_batch_shape(batch: &WriteBatch<'_>) {
    let (mut labels, mut samples) = (0u32, 0u32);
    for s in &batch.series {
        assert_eq!((s.labels_start, s.samples_start), (labels, samples));
        assert!(s.labels_end >= s.labels_start && s.samples_end >= s.samples_start);
        (labels, samples) = (s.labels_end, s.samples_end);
    }
    assert_eq!(
        (labels as usize, samples as usize),
        (batch.labels.len(), batch.samples.len())
    );
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoder_agrees_with_prost_encoding(req in request()) {
        let body = req.encode_to_vec();
        let mut batch = WriteBatch::default();
        decode_write_request(&body, &mut batch).unwrap();
        check_batch_shape(&batch);
        prop_assert_eq!(flatten(&batch), expected(&req));
        prop_assert_eq!(batch.metadata.len(), req.metadata.len());

        // The plain prompb message (no field 4) decodes to the same, minus histograms.
        let plain = without_histograms(&req).encode_to_vec();
        decode_write_request(&plain, &mut batch).unwrap();
        let mut want = expected(&req);
        for s in &mut want { s.3 = 0; }
        prop_assert_eq!(flatten(&batch), want);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut batch = WriteBatch::default();
        if decode_write_request(&body, &mut batch).is_ok() {
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
                // groups that weft refuses), both must read the same series.
                if let Ok(theirs) = WriteRequest::decode(&body[..]) {
                    let theirs = WriteRequestWithHistograms {
                        timeseries: theirs.timeseries.into_iter().map(|ts| TimeSeriesWithHistograms {
                            labels: ts.labels, samples: ts.samples, exemplars: ts.exemplars, histograms: vec![],
                        }).collect(),
                        metadata: theirs.metadata,
                    };
                    let mut ours = flatten(&batch);
                    for s in &mut ours { s.3 = 0; }
                    // prost decodes a `-0.0` on the wire faithfully, so compare exact bits here.
                    let want: Vec<Flat> = theirs.timeseries.iter().map(|ts| (
                        ts.labels.iter().map(|l| (l.name.clone().into_bytes(), l.value.clone().into_bytes())).collect(),
                        ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect(),
                        ts.exemplars.len() as u32,
                        0,
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
