//! Unit tests for the wire formats. Protobuf bodies are built by hand with [`Pb`] so that each
//! test shows the exact bytes it feeds the decoder.

use super::*;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A tiny protobuf writer for hand-made bodies, including malformed ones.
#[derive(Default, Clone)]
struct Pb(Vec<u8>);

impl Pb {
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn varint(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn key(self, field: u64, wire_type: u64) -> Self {
        self.varint(field << 3 | wire_type)
    }
    fn len(self, field: u64, bytes: &[u8]) -> Self {
        self.key(field, 2).varint(bytes.len() as u64).raw(bytes)
    }
    fn msg(self, field: u64, msg: Pb) -> Self {
        self.len(field, &msg.0)
    }
    fn fixed64(self, field: u64, v: u64) -> Self {
        self.key(field, 1).raw(&v.to_le_bytes())
    }
    fn int(self, field: u64, v: u64) -> Self {
        self.key(field, 0).varint(v)
    }
}

fn label(name: &str, value: &str) -> Pb {
    Pb::default()
        .len(1, name.as_bytes())
        .len(2, value.as_bytes())
}

fn sample(ts: i64, v: f64) -> Pb {
    Pb::default().fixed64(1, v.to_bits()).int(2, ts as u64)
}

/// What a decode produced, in a shape that compares and prints well.
#[derive(Debug, PartialEq)]
struct Decoded {
    series: Vec<Series>,
    metadata: u32,
}

fn decode(body: &[u8]) -> Result<Decoded, ProtoError> {
    let mut batch = WriteBatch::default();
    decode_write_request(body, &mut batch)?;
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let series = batch
        .series
        .iter()
        .map(|ws| {
            let labels = batch.labels[ws.labels_start as usize..ws.labels_end as usize]
                .iter()
                .map(|(n, v)| (s(n), s(v)))
                .collect();
            let samples = batch.samples[ws.samples_start as usize..ws.samples_end as usize]
                .iter()
                .map(|&(t, v)| (t, v.to_bits()))
                .collect();
            (labels, samples, ws.num_exemplars(), ws.num_histograms())
        })
        .collect();
    Ok(Decoded {
        series,
        metadata: batch.metadata.len() as u32,
    })
}

/// The one place that checks a malformed body: the expected offset, path and cause.
fn check_malformed(body: &[u8], offset: usize, path: &str, what: &str) {
    match decode(body) {
        Err(ProtoError::Malformed {
            offset: o,
            path: p,
            what: w,
        }) => {
            assert_eq!((o, p.as_str(), w), (offset, path, what), "body {body:02x?}")
        }
        other => panic!("expected Malformed at {offset} {path}, got {other:?}"),
    }
}

type Series = (Vec<(String, String)>, Vec<(i64, u64)>, u32, u32);

fn series(
    labels: &[(&str, &str)],
    samples: &[(i64, f64)],
    exemplars: u32,
    histograms: u32,
) -> Series {
    (
        labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect(),
        exemplars,
        histograms,
    )
}

#[test]
fn decodes_labels_samples_and_counts() {
    let body = Pb::default()
        .msg(
            1,
            Pb::default()
                .msg(1, label("__name__", "up"))
                .msg(1, label("job", "node"))
                .msg(2, sample(1_000, 1.0))
                .msg(2, sample(-5, f64::from_bits(0x7ff0_0000_0000_0002)))
                .msg(3, Pb::default().fixed64(2, 7))
                .msg(4, Pb::default().int(1, 3)),
        )
        .msg(1, Pb::default().msg(1, label("a", "")))
        .msg(3, Pb::default().int(1, 1).len(2, b"up"))
        .msg(3, Pb::default());
    let got = decode(&body.0).unwrap();
    assert_eq!(
        got,
        Decoded {
            series: vec![
                series(
                    &[("__name__", "up"), ("job", "node")],
                    &[(1_000, 1.0), (-5, f64::from_bits(0x7ff0_0000_0000_0002))],
                    1,
                    1
                ),
                series(&[("a", "")], &[], 0, 0),
            ],
            metadata: 2,
        }
    );
}

#[test]
fn empty_body_is_an_empty_request() {
    assert_eq!(
        decode(&[]).unwrap(),
        Decoded {
            series: vec![],
            metadata: 0
        }
    );
}

#[test]
fn missing_sample_fields_default_to_zero_and_last_scalar_wins() {
    let body = Pb::default().msg(
        1,
        Pb::default()
            .msg(2, Pb::default())
            .msg(
                2,
                Pb::default()
                    .int(2, 5)
                    .int(2, 9)
                    .fixed64(1, 1)
                    .fixed64(1, 2),
            )
            .msg(1, Pb::default().len(1, b"x").len(1, b"y")),
    );
    let got = decode(&body.0).unwrap();
    assert_eq!(
        got.series,
        vec![series(
            &[("y", "")],
            &[(0, 0.0), (9, f64::from_bits(2))],
            0,
            0
        )]
    );
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let unknown = |pb: Pb| {
        pb.int(9, u64::MAX) // 10-byte varint
            .fixed64(10, 1)
            .len(11, b"skipped")
            .key(12, 5)
            .raw(&[1, 2, 3, 4])
            .int(536_870_911, 0) // the largest field number
    };
    let body = unknown(Pb::default()).msg(
        1,
        unknown(Pb::default())
            .msg(1, unknown(label("n", "v")))
            .msg(2, unknown(sample(3, 4.0))),
    );
    // Field 2 of WriteRequest is reserved (Cortex's `source`); it is skipped like any other.
    let body = body.int(2, 1);
    let got = decode(&body.0).unwrap();
    assert_eq!(got.series, vec![series(&[("n", "v")], &[(3, 4.0)], 0, 0)]);
}

#[test]
fn label_bytes_are_not_utf8_validated() {
    let body = Pb::default().msg(
        1,
        Pb::default().msg(1, Pb::default().len(1, &[0xff]).len(2, &[0xc3])),
    );
    let mut batch = WriteBatch::default();
    decode_write_request(&body.0, &mut batch).unwrap();
    assert_eq!(batch.labels, vec![(&[0xff][..], &[0xc3][..])]);
}

#[test]
fn wire_type_mismatch_is_reported_with_its_path() {
    // timeseries[0].labels[1].value sent as a varint.
    let ts = Pb::default()
        .msg(1, label("a", "b"))
        .msg(1, Pb::default().len(1, b"c").int(2, 1));
    let body = Pb::default().msg(1, ts.clone());
    // Offsets: 0 key, 1 len of ts; ts: 2 key, 3 len, label "a"/"b" 4..10, 10 key, 11 len,
    // 12 name key, 13 name len, 14 'c', 15 value key.
    check_malformed(
        &body.0,
        15,
        "timeseries[0].labels[1].value",
        "wire type mismatch: expected length-delimited",
    );

    let body = Pb::default()
        .msg(1, Pb::default())
        .msg(1, Pb::default().msg(2, Pb::default().len(1, b"12345678")));
    check_malformed(
        &body.0,
        6,
        "timeseries[1].samples[0].value",
        "wire type mismatch: expected fixed64",
    );

    let body = Pb::default().msg(1, Pb::default().msg(2, Pb::default().fixed64(2, 0)));
    check_malformed(
        &body.0,
        4,
        "timeseries[0].samples[0].timestamp",
        "wire type mismatch: expected varint",
    );

    let body = Pb::default().int(1, 0);
    check_malformed(
        &body.0,
        0,
        "timeseries[0]",
        "wire type mismatch: expected length-delimited",
    );

    let body = Pb::default().msg(3, Pb::default()).fixed64(3, 0);
    check_malformed(
        &body.0,
        2,
        "metadata[1]",
        "wire type mismatch: expected length-delimited",
    );

    let body = Pb::default().msg(1, Pb::default().int(4, 0));
    check_malformed(
        &body.0,
        2,
        "timeseries[0].histograms[0]",
        "wire type mismatch: expected length-delimited",
    );
}

#[test]
fn lengths_past_the_end_are_refused_without_reading_them() {
    // A series claiming 2^62 bytes: refused at its length prefix.
    let body = Pb::default().key(1, 2).varint(1 << 62).raw(b"abc");
    check_malformed(
        &body.0,
        1,
        "timeseries[0]",
        "length exceeds the remaining bytes",
    );

    // A label value that runs past its label's own end (but not past the body).
    let label = Pb::default().len(1, b"n").key(2, 2).varint(5).raw(b"v");
    let body = Pb::default()
        .msg(1, Pb::default().msg(1, label))
        .raw(b"padding");
    check_malformed(
        &body.0,
        8,
        "timeseries[0].labels[0].value",
        "length exceeds the remaining bytes",
    );

    let body = Pb::default().msg(
        1,
        Pb::default().msg(2, Pb::default().key(1, 1).raw(&[0; 7])),
    );
    check_malformed(
        &body.0,
        5,
        "timeseries[0].samples[0].value",
        "truncated fixed64",
    );

    let body = Pb::default().msg(1, Pb::default().key(7, 5).raw(&[0; 3]));
    check_malformed(&body.0, 3, "timeseries[0].#7", "truncated fixed32");
}

#[test]
fn bad_varints_keys_and_groups_are_errors() {
    check_malformed(&[0x80], 0, "WriteRequest", "truncated varint");
    check_malformed(
        &[
            0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ],
        1,
        "#9",
        "varint overflows 64 bits",
    );
    check_malformed(&[0x00], 0, "WriteRequest", "invalid field number");
    check_malformed(
        &Pb::default().key(1 << 29, 0).0,
        0,
        "WriteRequest",
        "invalid field number",
    );
    check_malformed(
        &Pb::default().key(9, 3).0,
        1,
        "#9",
        "groups (wire types 3 and 4) are not supported",
    );
    let body = Pb::default().msg(1, Pb::default().msg(1, Pb::default().key(5, 4)));
    check_malformed(
        &body.0,
        5,
        "timeseries[0].labels[0].#5",
        "groups (wire types 3 and 4) are not supported",
    );
    check_malformed(&Pb::default().key(9, 6).0, 1, "#9", "invalid wire type");
    let body = Pb::default().msg(1, Pb::default().raw(&[0x12, 0x80]));
    check_malformed(&body.0, 3, "timeseries[0].samples[0]", "truncated varint");
}

#[test]
fn fast_paths_do_not_misread_multibyte_lengths_and_timestamps() {
    // A value length byte 0x85 followed by exactly 0x85 bytes: the length is really the
    // two-byte varint 0x85 0x01 (133), one byte more than the label holds.
    let mut label = vec![0x0a, 0x01, b'a', 0x12, 0x85, 0x01];
    label.extend_from_slice(&[b'v'; 0x84]);
    let body = Pb::default().msg(1, Pb::default().len(1, &label));
    check_malformed(
        &body.0,
        10,
        "timeseries[0].labels[0].value",
        "length exceeds the remaining bytes",
    );

    // Timestamps of every varint length, including the negative ones (10 bytes).
    for ts in [0, 1, 127, 128, 1 << 35, i64::MAX, -1, i64::MIN] {
        let body = Pb::default().msg(1, Pb::default().msg(2, sample(ts, 2.5)));
        assert_eq!(
            decode(&body.0).unwrap().series[0].1,
            vec![(ts, 2.5f64.to_bits())],
            "ts {ts}"
        );
    }
    // A timestamp varint followed by a stray byte: not the fast path; the byte is a bad key.
    let body = Pb::default().msg(
        1,
        Pb::default().msg(2, Pb::default().fixed64(1, 0).raw(&[0x10, 0x01, 0x01])),
    );
    check_malformed(
        &body.0,
        15,
        "timeseries[0].samples[0]",
        "invalid field number",
    );
}

#[test]
fn decode_clears_the_batch_and_reuses_it() {
    let mut batch = WriteBatch::default();
    let one = Pb::default().msg(
        1,
        Pb::default().msg(1, label("a", "b")).msg(2, sample(1, 1.0)),
    );
    decode_write_request(&one.0, &mut batch).unwrap();
    let two = Pb::default().msg(1, Pb::default().msg(1, label("c", "d")));
    decode_write_request(&two.0, &mut batch).unwrap();
    assert_eq!(batch.series.len(), 1);
    assert_eq!(batch.labels, vec![(&b"c"[..], &b"d"[..])]);
    assert!(batch.samples.is_empty());
}

#[test]
fn snappy_header_claiming_4_gib_is_refused_before_allocating() {
    // uvarint 2^32 - 1 (the largest snappy allows) and 2^32 (beyond it), then no data at all.
    let max = Pb::default().varint(u64::from(u32::MAX)).0;
    assert_eq!(
        decompress(&max, 1 << 20),
        Err(SnappyError::TooLarge {
            claimed: u64::from(u32::MAX),
            limit: 1 << 20
        })
    );
    let four_gib = Pb::default().varint(1 << 32).0;
    assert_eq!(
        decompress(&four_gib, 1 << 20),
        Err(SnappyError::TooLarge {
            claimed: 1 << 32,
            limit: 1 << 20
        })
    );
}

#[test]
fn snappy_limit_is_inclusive() {
    let data = vec![7u8; 1000];
    let body = compress(&data);
    assert_eq!(decompress(&body, 1000).unwrap(), data);
    assert!(matches!(
        decompress(&body, 999),
        Err(SnappyError::TooLarge {
            claimed: 1000,
            limit: 999
        })
    ));
}

#[test]
fn truncated_or_corrupt_snappy_is_invalid() {
    let body = compress(b"hello hello hello hello hello hello");
    for cut in 1..body.len() {
        assert!(
            matches!(
                decompress(&body[..cut], 1 << 20),
                Err(SnappyError::Invalid(_))
            ),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        decompress(&[], 1 << 20),
        Err(SnappyError::Invalid(_))
    ));
    // An overlong header varint.
    assert!(matches!(
        decompress(&[0xff; 6], 1 << 20),
        Err(SnappyError::Invalid(_))
    ));
}

#[test]
fn valid_snappy_around_garbage_protobuf_is_malformed_with_location() {
    let garbage = Pb::default().msg(
        1,
        Pb::default()
            .msg(1, Pb::default().len(1, b"job"))
            .raw(&[0x12, 0x09, 0x09]),
    );
    let body = compress(&garbage.0);
    let raw = decompress(&body, 1 << 20).unwrap();
    let err = decode(&raw).unwrap_err();
    assert_eq!(
        err,
        ProtoError::Malformed {
            offset: 10,
            path: "timeseries[0].samples[0]".into(),
            what: "length exceeds the remaining bytes"
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid protobuf at byte 10 (timeseries[0].samples[0]): length exceeds the remaining bytes"
    );
}

#[test]
fn chunked_frame_matches_prometheus_layout() {
    let mut out = Vec::new();
    write_chunked_frame(&mut out, b"123456789");
    // CRC-32C of "123456789" is the standard check value 0xE3069283, big-endian.
    assert_eq!(
        out,
        [&[9u8, 0xe3, 0x06, 0x92, 0x83][..], b"123456789"].concat()
    );
    let (msg, rest) = read_chunked_frame(&out, 9).unwrap();
    assert_eq!((msg, rest), (&b"123456789"[..], &[][..]));
}

#[test]
fn chunked_frame_errors() {
    let mut out = Vec::new();
    write_chunked_frame(&mut out, &[1u8; 200]);
    assert_eq!(out[..2], [0xc8, 0x01]);
    assert_eq!(
        read_chunked_frame(&out, 199),
        Err(ProtoError::FrameTooLarge {
            len: 200,
            limit: 199
        })
    );
    assert!(matches!(
        read_chunked_frame(&out[..out.len() - 1], 200),
        Err(ProtoError::Malformed { offset: 6, .. })
    ));
    assert!(matches!(
        read_chunked_frame(&out[..4], 200),
        Err(ProtoError::Malformed { offset: 2, .. })
    ));
    assert!(matches!(
        read_chunked_frame(&[], 200),
        Err(ProtoError::Malformed { offset: 0, .. })
    ));
    let mut bad = out.clone();
    bad[10] ^= 1;
    assert!(matches!(
        read_chunked_frame(&bad, 200),
        Err(ProtoError::FrameCrc { .. })
    ));
    // A length that only a 64-bit uvarint holds is refused by the limit, not allocated.
    let huge = Pb::default().varint(u64::MAX).0;
    assert_eq!(
        read_chunked_frame(&huge, 1 << 20),
        Err(ProtoError::FrameTooLarge {
            len: u64::MAX,
            limit: 1 << 20
        })
    );
}

#[test]
fn read_request_round_trips_and_garbage_is_a_prost_error() {
    use prost::Message as _;
    let req = prompb::ReadRequest {
        queries: vec![prompb::Query {
            start_timestamp_ms: 1,
            end_timestamp_ms: 2,
            matchers: vec![prompb::LabelMatcher {
                r#type: prompb::MatcherType::Re as i32,
                name: "job".into(),
                value: "n.*".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![prompb::ResponseType::StreamedXorChunks as i32],
    };
    assert_eq!(decode_read_request(&req.encode_to_vec()).unwrap(), req);
    assert!(matches!(
        decode_read_request(&[0x0a, 0x05]),
        Err(ProtoError::Prost(_))
    ));
}

#[test]
fn read_response_helpers_produce_snappy_and_frames() {
    use prost::Message as _;
    let resp = prompb::ReadResponse {
        results: vec![prompb::QueryResult { timeseries: vec![] }],
    };
    let body = encode_read_response(&resp);
    let raw = decompress(&body, 1 << 20).unwrap();
    assert_eq!(prompb::ReadResponse::decode(&raw[..]).unwrap(), resp);

    let chunked = prompb::ChunkedReadResponse {
        chunked_series: vec![],
        query_index: 3,
    };
    let mut out = Vec::new();
    write_chunked_read_response(&mut out, &chunked);
    let (msg, rest) = read_chunked_frame(&out, 1 << 20).unwrap();
    assert!(rest.is_empty());
    assert_eq!(prompb::ChunkedReadResponse::decode(msg).unwrap(), chunked);
}

// ---- Native histograms, exemplars and metadata (1.0) ----

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn span(offset: i32, length: u32) -> Pb {
    Pb::default()
        .int(1, zigzag(i64::from(offset)))
        .int(2, u64::from(length))
}

/// One series holding the histogram `h`.
fn hist_body(h: Pb) -> Vec<u8> {
    Pb::default()
        .msg(1, Pb::default().msg(1, label("__name__", "h")).msg(4, h))
        .0
}

fn decode_one_histogram(h: Pb) -> Result<(i64, HistogramValue), ProtoError> {
    let body = hist_body(h);
    let mut batch = WriteBatch::default();
    decode_write_request(&body, &mut batch)?;
    assert_eq!(batch.series[0].num_histograms(), 1);
    Ok(batch.histograms[0].clone())
}

use crate::model::{CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span};

#[test]
fn integer_histogram_decodes_every_field() {
    // Packed deltas (field 12), unpacked deltas (field 9, twice), spans, gauge hint.
    let packed = Pb::default()
        .varint(zigzag(3))
        .varint(zigzag(-1))
        .varint(zigzag(2));
    let h = Pb::default()
        .int(1, 10) // count_int
        .fixed64(3, 12.5f64.to_bits()) // sum
        .int(4, zigzag(-2)) // schema
        .fixed64(5, 1e-128f64.to_bits()) // zero_threshold
        .int(6, 1) // zero_count_int
        .msg(8, span(-3, 2))
        .int(9, zigzag(4))
        .int(9, zigzag(-4))
        .msg(11, span(0, 1))
        .msg(11, span(2, 2))
        .len(12, &packed.0)
        .int(14, 3) // gauge
        .int(15, 1_700_000_000_000);
    let got = decode_one_histogram(h).unwrap();
    assert_eq!(
        got,
        (
            1_700_000_000_000,
            HistogramValue::Int(Histogram {
                counter_reset_hint: CounterResetHint::Gauge,
                schema: -2,
                zero_threshold: 1e-128,
                zero_count: 1,
                count: 10,
                sum: 12.5,
                positive_spans: vec![
                    Span {
                        offset: 0,
                        length: 1
                    },
                    Span {
                        offset: 2,
                        length: 2
                    }
                ],
                negative_spans: vec![Span {
                    offset: -3,
                    length: 2
                }],
                positive_buckets: vec![3, -1, 2],
                negative_buckets: vec![4, -4],
                custom_values: vec![],
            })
        )
    );
}

#[test]
fn float_histogram_and_custom_buckets_decode() {
    let counts = Pb::default()
        .raw(&1.5f64.to_le_bytes())
        .raw(&f64::INFINITY.to_le_bytes());
    let bounds = Pb::default()
        .raw(&0.5f64.to_le_bytes())
        .raw(&1.0f64.to_le_bytes());
    let h = Pb::default()
        .fixed64(2, 3.0f64.to_bits()) // count_float
        .int(4, zigzag(-53))
        .msg(11, span(0, 2))
        .len(13, &counts.0)
        .len(16, &bounds.0)
        .int(15, 7);
    let (t, v) = decode_one_histogram(h).unwrap();
    assert_eq!(t, 7);
    assert_eq!(
        v,
        HistogramValue::Float(FloatHistogram {
            schema: -53,
            count: 3.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 2
            }],
            positive_buckets: vec![1.5, f64::INFINITY],
            custom_values: vec![0.5, 1.0],
            ..FloatHistogram::default()
        })
    );
    // No count at all: an empty integer histogram, as Prometheus's IsFloatHistogram says.
    assert_eq!(
        decode_one_histogram(Pb::default()).unwrap(),
        (0, HistogramValue::Int(Histogram::default()))
    );
}

#[test]
fn invalid_histograms_are_refused_with_their_path() {
    let path = "timeseries[0].histograms[0]";
    let cases: Vec<(Pb, &str, &str)> = vec![
        (
            Pb::default().int(1, 1).fixed64(7, 0),
            "zero_count_float",
            "histogram mixes integer and float count fields",
        ),
        (
            Pb::default().fixed64(2, 0).int(12, 0),
            "positive_deltas",
            "histogram mixes integer and float count fields",
        ),
        (
            Pb::default().int(4, zigzag(9)),
            "schema",
            "histogram schema must be -4..=8 or -53",
        ),
        (
            Pb::default().int(4, zigzag(-5)),
            "schema",
            "histogram schema must be -4..=8 or -53",
        ),
        (
            Pb::default().int(4, 1 << 33),
            "schema",
            "sint32 value out of range",
        ),
        (
            Pb::default().msg(11, span(0, 2)).int(12, 0),
            "positive_spans",
            "positive_spans cover a different number of buckets than given",
        ),
        (
            Pb::default().msg(8, span(0, u32::MAX)),
            "negative_spans",
            "negative_spans cover a different number of buckets than given",
        ),
        (
            Pb::default().fixed64(16, 1.0f64.to_bits()),
            "custom_values",
            "custom_values are only allowed with schema -53",
        ),
        (
            Pb::default()
                .int(4, zigzag(-53))
                .fixed64(16, 2.0f64.to_bits())
                .fixed64(16, 1.0f64.to_bits()),
            "custom_values",
            "custom_values must be strictly increasing",
        ),
        (
            Pb::default()
                .int(4, zigzag(-53))
                .msg(8, span(0, 1))
                .int(9, 1),
            "negative_spans",
            "a histogram with custom buckets (schema -53) has no negative buckets",
        ),
        (
            Pb::default().int(14, 4),
            "reset_hint",
            "unknown histogram reset_hint",
        ),
        (
            Pb::default().int(12, 0).int(11, 0),
            "positive_spans[0]",
            "wire type mismatch: expected length-delimited",
        ),
        (
            Pb::default().int(13, 0),
            "positive_counts",
            "wire type mismatch for a repeated field",
        ),
    ];
    for (h, field, what) in cases {
        match decode_one_histogram(h.clone()) {
            Err(ProtoError::Malformed {
                path: p, what: w, ..
            }) => {
                assert_eq!((p.as_str(), w), (format!("{path}.{field}").as_str(), what))
            }
            other => panic!(
                "{field}: expected Malformed, got {other:?} for {:02x?}",
                h.0
            ),
        }
    }
    // A span's own fields have a path one deeper.
    let h = Pb::default().msg(11, Pb::default().int(2, 1 << 40));
    check_malformed(
        &hist_body(h),
        22,
        "timeseries[0].histograms[0].positive_spans[0].length",
        "uint32 value out of range",
    );
}

#[test]
fn too_many_histograms_are_refused_as_a_whole() {
    let mut series = Pb::default().msg(1, label("__name__", "h"));
    for _ in 0..=MAX_HISTOGRAMS_PER_REQUEST {
        series = series.msg(4, Pb::default());
    }
    let body = Pb::default().msg(1, series);
    let mut batch = WriteBatch::default();
    assert_eq!(
        decode_write_request(&body.0, &mut batch).unwrap_err(),
        ProtoError::TooMany {
            what: "native histogram samples",
            limit: MAX_HISTOGRAMS_PER_REQUEST
        }
    );
    // One fewer is fine.
    let mut series = Pb::default().msg(1, label("__name__", "h"));
    for _ in 0..MAX_HISTOGRAMS_PER_REQUEST {
        series = series.msg(4, Pb::default());
    }
    let body = Pb::default().msg(1, series);
    decode_write_request(&body.0, &mut batch).unwrap();
    assert_eq!(batch.histograms.len(), MAX_HISTOGRAMS_PER_REQUEST);
}

#[test]
fn exemplars_and_metadata_are_decoded() {
    let body = Pb::default()
        .msg(
            1,
            Pb::default()
                .msg(1, label("__name__", "c"))
                .msg(2, sample(5, 1.0))
                .msg(
                    3,
                    Pb::default()
                        .msg(1, label("trace_id", "abc"))
                        .msg(1, label("span_id", ""))
                        .fixed64(2, 0.25f64.to_bits())
                        .int(3, 4),
                )
                .msg(3, Pb::default()),
        )
        .msg(
            3,
            Pb::default()
                .int(1, 4)
                .len(2, b"fam")
                .len(4, b"help me")
                .len(5, b"seconds"),
        )
        .msg(3, Pb::default().int(1, 99));
    let mut batch = WriteBatch::default();
    decode_write_request(&body.0, &mut batch).unwrap();
    let s = batch.series[0];
    assert_eq!((s.exemplars_start, s.exemplars_end), (0, 2));
    assert_eq!(
        batch.exemplars,
        vec![
            WriteExemplar {
                labels_start: 0,
                labels_end: 2,
                value: 0.25,
                timestamp: 4
            },
            WriteExemplar {
                labels_start: 2,
                labels_end: 2,
                value: 0.0,
                timestamp: 0
            }
        ]
    );
    assert_eq!(
        batch.exemplar_labels,
        vec![(&b"trace_id"[..], &b"abc"[..]), (b"span_id", b"")]
    );
    assert_eq!(
        batch.metadata,
        vec![
            WriteMetadata {
                kind: MetricType::GaugeHistogram,
                family: b"fam",
                help: b"help me",
                unit: b"seconds"
            },
            // An unknown type number is kept as unknown.
            WriteMetadata::default(),
        ]
    );
    // An exemplar label's error path is one deeper than a series label's.
    let body = Pb::default().msg(
        1,
        Pb::default().msg(3, Pb::default().msg(1, Pb::default().int(1, 0))),
    );
    check_malformed(
        &body.0,
        6,
        "timeseries[0].exemplars[0].labels[0].name",
        "wire type mismatch: expected length-delimited",
    );
}

// ---- Remote write 2.0 ----

fn decode_v2(body: &[u8]) -> Result<WriteBatch<'_>, ProtoError> {
    let mut batch = WriteBatch::default();
    decode_write_request_v2(body, &mut batch)?;
    Ok(batch)
}

fn check_v2_malformed(body: &[u8], offset: usize, path: &str, what: &str) {
    match decode_v2(body) {
        Err(ProtoError::Malformed {
            offset: o,
            path: p,
            what: w,
        }) => {
            assert_eq!((o, p.as_str(), w), (offset, path, what), "body {body:02x?}")
        }
        other => panic!("expected Malformed at {offset} {path}, got {other:?}"),
    }
}

fn symbols(names: &[&str]) -> Pb {
    names
        .iter()
        .fold(Pb::default(), |pb, s| pb.len(4, s.as_bytes()))
}

fn packed(refs: &[u64]) -> Vec<u8> {
    refs.iter().fold(Pb::default(), |pb, &r| pb.varint(r)).0
}

#[test]
fn v2_resolves_symbols_samples_exemplars_and_metadata() {
    let series = Pb::default()
        .len(1, &packed(&[1, 2, 3, 4]))
        .msg(2, sample(1_000, f64::from_bits(STALE_NAN)))
        .msg(
            4,
            Pb::default()
                .int(1, 5)
                .int(1, 6)
                .fixed64(2, 2.0f64.to_bits())
                .int(3, 999),
        )
        .msg(5, Pb::default().int(1, 1).int(3, 7).int(4, 0))
        .int(6, 123);
    // Symbols after the series: field order does not matter.
    let body = Pb::default()
        .msg(5, series)
        .raw(&symbols(&["", "__name__", "up", "job", "", "trace_id", "t1", "help!"]).0)
        // A series with no metadata (or all defaults) adds none.
        .msg(
            5,
            Pb::default().len(1, &packed(&[1, 2])).msg(5, Pb::default()),
        );
    let b = decode_v2(&body.0).unwrap();
    assert_eq!(b.series.len(), 2);
    assert_eq!(
        b.labels,
        vec![
            (&b"__name__"[..], &b"up"[..]),
            (b"job", b""),
            (b"__name__", b"up")
        ]
    );
    assert_eq!(b.samples[0].0, 1_000);
    assert_eq!(b.samples[0].1.to_bits(), STALE_NAN);
    assert_eq!(b.exemplar_labels, vec![(&b"trace_id"[..], &b"t1"[..])]);
    assert_eq!(b.exemplars[0].value, 2.0);
    assert_eq!(b.exemplars[0].timestamp, 999);
    assert_eq!(
        b.metadata,
        vec![WriteMetadata {
            kind: MetricType::Counter,
            family: b"up",
            help: b"help!",
            unit: b""
        }]
    );
    assert_eq!((b.series[1].labels_start, b.series[1].labels_end), (2, 3));
}

#[test]
fn v2_bad_symbols_and_refs_are_refused_with_offset_and_path() {
    // Symbol 0 must be the empty string.
    let body = symbols(&["x"]);
    check_v2_malformed(
        &body.0,
        2,
        "symbols[0]",
        "the first symbol must be the empty string",
    );
    // A reference past the table: offset of the ref inside the packed list.
    let body = symbols(&["", "a"]).msg(5, Pb::default().len(1, &packed(&[1, 2])));
    check_v2_malformed(
        &body.0,
        10,
        "timeseries[0].labels_refs",
        "symbol reference out of range",
    );
    // Odd number of refs (unpacked this time).
    let body = symbols(&["", "a"]).msg(5, Pb::default().int(1, 1).int(1, 1).int(1, 1));
    check_v2_malformed(
        &body.0,
        7,
        "timeseries[0].labels_refs",
        "odd number of label references",
    );
    // No symbols at all, but a ref.
    let body = Pb::default().msg(5, Pb::default().len(1, &packed(&[0, 0])));
    check_v2_malformed(
        &body.0,
        4,
        "timeseries[0].labels_refs",
        "symbol reference out of range",
    );
    // A ref over u32::MAX is not truncated onto another symbol.
    let body = symbols(&[""]).msg(5, Pb::default().len(1, &packed(&[0, 1 << 32])));
    check_v2_malformed(
        &body.0,
        7,
        "timeseries[0].labels_refs",
        "uint32 value out of range",
    );
    // Exemplar refs and metadata refs.
    let body = symbols(&["", "a"]).msg(5, Pb::default().msg(4, Pb::default().int(1, 1)));
    check_v2_malformed(
        &body.0,
        9,
        "timeseries[0].exemplars[0].labels_refs",
        "odd number of label references",
    );
    let body = symbols(&["", "a"]).msg(5, Pb::default().msg(5, Pb::default().int(4, 2)));
    check_v2_malformed(
        &body.0,
        10,
        "timeseries[0].metadata.unit_ref",
        "symbol reference out of range",
    );
    // Wrong wire types at the top level and in a series.
    check_v2_malformed(
        &Pb::default().int(5, 1).0,
        0,
        "timeseries[0]",
        "wire type mismatch: expected length-delimited",
    );
    check_v2_malformed(
        &Pb::default().int(4, 1).0,
        0,
        "symbols[0]",
        "wire type mismatch: expected length-delimited",
    );
    check_v2_malformed(
        &symbols(&[""]).msg(5, Pb::default().fixed64(1, 0)).0,
        4,
        "timeseries[0].labels_refs",
        "wire type mismatch: expected length-delimited",
    );
    // An invalid histogram: same rules as 1.0.
    check_v2_malformed(
        &Pb::default()
            .msg(5, Pb::default().msg(3, Pb::default().int(4, zigzag(100))))
            .0,
        4,
        "timeseries[0].histograms[0].schema",
        "histogram schema must be -4..=8 or -53",
    );
    // Empty body: an empty request.
    assert!(decode_v2(&[]).unwrap().series.is_empty());
}
