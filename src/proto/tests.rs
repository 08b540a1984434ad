//! Unit tests for the wire formats. Protobuf bodies are built by hand with [`Pb`] so that each
//! test shows the exact bytes it feeds the decoder.

use super::*;

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
