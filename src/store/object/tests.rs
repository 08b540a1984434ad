use object_store::path::Path;
use proptest::prelude::*;

use super::*;
use crate::chunk::XorAppender;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_strs(pairs.iter().copied()).unwrap()
}

fn xor_chunk(start: i64, n: i64) -> Vec<u8> {
    let mut app = XorAppender::new();
    for i in 0..n {
        app.append(start + i * 15_000, i as f64 * 0.5);
    }
    app.bytes().to_vec()
}

/// Builds an object of `(labels, [(min_t, max_t, data)])` and checks it decodes back to
/// exactly that, through both the whole-object and the footer → index → chunk paths.
/// A series as test data: labels and `(min_t, max_t, bytes)` chunks.
type TestSeries = (Labels, Vec<(i64, i64, Vec<u8>)>);

fn check_round_trip(series: &[TestSeries]) -> Bytes {
    let mut b = ObjectBuilder::new();
    for (l, chunks) in series {
        let cs: Vec<ChunkData<'_>> = chunks
            .iter()
            .map(|(a, z, d)| ChunkData {
                min_t: *a,
                max_t: *z,
                data: d,
                encoding: crate::store::object::ENCODING_XOR,
            })
            .collect();
        b.add_series(l, &cs).unwrap();
    }
    let obj = b.finish().unwrap();
    let bytes = obj.bytes.clone();
    let whole = decode_object(&bytes).unwrap();

    let fr = footer_range(bytes.len() as u64).unwrap();
    let footer = decode_footer(&bytes[fr.start as usize..], bytes.len() as u64).unwrap();
    let ir = footer.index_range();
    let index = decode_index(&bytes[ir.start as usize..ir.end as usize], &footer).unwrap();
    assert_eq!(index, whole);
    assert_eq!(index.series.len(), series.len());
    assert_eq!((index.min_t, index.max_t), (obj.min_t, obj.max_t));
    for (got, (l, chunks)) in index.series.iter().zip(series) {
        assert_eq!(&got.labels, l);
        assert_eq!(got.chunks.len(), chunks.len());
        for (m, (a, z, d)) in got.chunks.iter().zip(chunks) {
            assert_eq!((m.min_t, m.max_t), (*a, *z));
            let r = m.range();
            let data = &bytes[r.start as usize..r.end as usize];
            verify_chunk(m, data).unwrap();
            assert_eq!(data, &d[..]);
        }
    }
    bytes
}

#[test]
fn round_trip_keeps_series_order_labels_times_and_chunk_bytes() {
    let a = labels(&[("__name__", "up"), ("job", "node")]);
    let b = labels(&[
        ("__name__", "http_requests_total"),
        ("code", "200"),
        ("path", "/ü"),
    ]);
    check_round_trip(&[
        (
            a,
            vec![
                (0, 1_785_000, xor_chunk(0, 120)),
                (1_800_000, 1_815_000, xor_chunk(1_800_000, 2)),
            ],
        ),
        (b, vec![(-5_000, -5_000, xor_chunk(-5_000, 1))]),
    ]);
}

#[test]
fn extreme_timestamps_round_trip() {
    let a = labels(&[("__name__", "x")]);
    check_round_trip(&[(a, vec![(i64::MIN, i64::MAX, vec![0xff])])]);
}

#[test]
fn layout_matches_the_byte_tables() {
    let a = labels(&[("__name__", "x")]);
    let bytes = check_round_trip(&[(a, vec![(1, 2, vec![0xaa, 0xbb])])]);
    assert_eq!(&bytes[0..8], b"WEFTOBJ1");
    assert_eq!(&bytes[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&bytes[16..18], &[0xaa, 0xbb]);
    // Index: 1 series, 1 label, "__name__" = "x", 1 chunk, then one 33-byte chunk entry.
    let index: &[u8] = &bytes[18..bytes.len() - 32];
    let mut want = vec![1, 1, 8];
    want.extend_from_slice(b"__name__");
    want.extend_from_slice(&[1, b'x', 1, ENCODING_XOR]);
    want.extend_from_slice(&1i64.to_le_bytes());
    want.extend_from_slice(&2i64.to_le_bytes());
    want.extend_from_slice(&16u64.to_le_bytes());
    want.extend_from_slice(&2u32.to_le_bytes());
    want.extend_from_slice(&crc32fast::hash(&[0xaa, 0xbb]).to_le_bytes());
    assert_eq!(index, &want[..]);
    let footer = &bytes[bytes.len() - 32..];
    assert_eq!(&footer[0..8], &18u64.to_le_bytes());
    assert_eq!(&footer[8..16], &(want.len() as u64).to_le_bytes());
    assert_eq!(&footer[16..20], &crc32fast::hash(&want).to_le_bytes());
    assert_eq!(&footer[20..24], &1u32.to_le_bytes());
    assert_eq!(&footer[24..32], b"WEFTOBJ1");
}

#[test]
fn builder_refuses_what_the_format_cannot_hold() {
    let a = labels(&[("__name__", "x")]);
    let cases: &[(&[ChunkData<'_>], &str)] = &[
        (&[], "no chunks"),
        (
            &[ChunkData {
                min_t: 0,
                max_t: 0,
                data: &[],
                encoding: crate::store::object::ENCODING_XOR,
            }],
            "empty chunk",
        ),
        (
            &[ChunkData {
                min_t: 2,
                max_t: 1,
                data: &[1],
                encoding: crate::store::object::ENCODING_XOR,
            }],
            "min_t after max_t",
        ),
    ];
    for (chunks, why) in cases {
        let mut b = ObjectBuilder::new();
        assert!(b.add_series(&a, chunks).is_err(), "{why}");
        assert!(b.finish().is_err(), "{why}: nothing was added");
    }
    let big = vec![0u8; MAX_CHUNK_BYTES as usize + 1];
    let mut b = ObjectBuilder::new();
    assert!(b
        .add_series(
            &a,
            &[ChunkData {
                min_t: 0,
                max_t: 0,
                data: &big,
                encoding: crate::store::object::ENCODING_XOR,
            }]
        )
        .is_err());
}

#[test]
fn a_refused_series_leaves_the_builder_unchanged() {
    let a = labels(&[("__name__", "x")]);
    let mut b = ObjectBuilder::new();
    b.add_series(
        &a,
        &[ChunkData {
            min_t: 0,
            max_t: 0,
            data: &[1],
            encoding: crate::store::object::ENCODING_XOR,
        }],
    )
    .unwrap();
    let ok = ChunkData {
        min_t: 5,
        max_t: 6,
        data: &[2],
        encoding: crate::store::object::ENCODING_XOR,
    };
    let bad = ChunkData {
        min_t: 9,
        max_t: 8,
        data: &[3],
        encoding: crate::store::object::ENCODING_XOR,
    };
    assert!(b.add_series(&a, &[ok, bad]).is_err());
    let ix = decode_object(&b.finish().unwrap().bytes).unwrap();
    assert_eq!((ix.series.len(), ix.chunk_count, ix.max_t), (1, 1, 0));
}

/// Every single-byte change to a valid object is caught: each byte is covered by a magic,
/// a version check, a CRC, or the footer's arithmetic.
#[test]
fn every_single_byte_corruption_is_detected() {
    let a = labels(&[("__name__", "up"), ("job", "node")]);
    let b = labels(&[("__name__", "up"), ("job", "db")]);
    let bytes = check_round_trip(&[
        (
            a,
            vec![(0, 100, xor_chunk(0, 5)), (200, 300, xor_chunk(200, 3))],
        ),
        (b, vec![(0, 100, xor_chunk(0, 7))]),
    ]);
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.to_vec();
            bad[i] ^= flip;
            assert!(
                decode_object(&bad).is_err(),
                "flip {flip:#x} at byte {i} of {}",
                bytes.len()
            );
        }
    }
    for cut in 0..bytes.len() {
        assert!(decode_object(&bytes[..cut]).is_err(), "truncated to {cut}");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode_object(&longer).is_err(), "trailing byte");
}

#[test]
fn footer_checks_refuse_inconsistent_offsets() {
    let footer = |off: u64, len: u64| {
        let mut f = Vec::new();
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&VERSION.to_le_bytes());
        f.extend_from_slice(&MAGIC);
        f
    };
    let cases: &[(u64, u64, u64, bool, &str)] = &[
        (16, 10, 58, true, "index right before the footer"),
        (16, 10, 59, false, "a gap before the footer"),
        (8, 18, 58, false, "index inside the header"),
        (16, 0, 48, false, "empty index"),
        (u64::MAX - 5, 10, 58, false, "offset overflows"),
        (16, u64::MAX, 58, false, "length overflows"),
        (
            16,
            MAX_INDEX_BYTES + 1,
            16 + MAX_INDEX_BYTES + 1 + 32,
            false,
            "index too large",
        ),
    ];
    for &(off, len, object_len, ok, why) in cases {
        assert_eq!(
            decode_footer(&footer(off, len), object_len).is_ok(),
            ok,
            "{why}"
        );
    }
    assert!(
        decode_footer(&footer(16, 10)[..31], 58).is_err(),
        "short footer"
    );
}

#[test]
fn index_refuses_unsorted_or_repeated_labels_even_with_a_valid_crc() {
    // Hand-made index: one series with labels b=1, a=1 (unsorted).
    let mut ix = vec![1u8, 2];
    for (n, v) in [("b", "1"), ("a", "1")] {
        put_string(&mut ix, n);
        put_string(&mut ix, v);
    }
    ix.extend_from_slice(&[1, ENCODING_XOR]);
    ix.extend_from_slice(&0i64.to_le_bytes());
    ix.extend_from_slice(&0i64.to_le_bytes());
    ix.extend_from_slice(&16u64.to_le_bytes());
    ix.extend_from_slice(&1u32.to_le_bytes());
    ix.extend_from_slice(&0u32.to_le_bytes());
    let footer = Footer {
        index_offset: 17,
        index_len: ix.len() as u64,
        index_crc32: crc32fast::hash(&ix),
    };
    let err = decode_index(&ix, &footer).unwrap_err();
    assert!(err.to_string().contains("not sorted"), "{err}");
}

#[test]
fn index_with_a_huge_declared_count_allocates_by_the_bytes_present() {
    // 2^63 series declared in a 10-byte index: must fail on truncation, not on allocation.
    let mut ix = Vec::new();
    put_uvarint(&mut ix, 1 << 63);
    let footer = Footer {
        index_offset: 16,
        index_len: ix.len() as u64,
        index_crc32: crc32fast::hash(&ix),
    };
    assert!(decode_index(&ix, &footer).is_err());
}

#[test]
fn varints_must_be_canonical() {
    let cases: &[(&[u8], Option<u64>)] = &[
        (&[0x00], Some(0)),
        (&[0x7f], Some(127)),
        (&[0x80, 0x01], Some(128)),
        (&[0x80, 0x00], None),
        (
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            Some(u64::MAX),
        ),
        (
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            None,
        ),
        (&[0x80], None),
    ];
    for &(bytes, want) in cases {
        let mut r = Reader { buf: bytes, pos: 0 };
        assert_eq!(r.uvarint().ok(), want, "{bytes:x?}");
    }
}

// ---- keys ----

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[test]
fn time_encoding_sorts_like_the_numbers() {
    let ts = [i64::MIN, -1_000_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
    let enc: Vec<String> = ts.iter().map(|&t| encode_time(t)).collect();
    let mut sorted = enc.clone();
    sorted.sort();
    assert_eq!(enc, sorted);
    assert_eq!(enc[0], "0000000000000000");
    assert_eq!(enc[2], "7fffffffffffffff");
    assert_eq!(enc[3], "8000000000000000");
    for (&t, e) in ts.iter().zip(&enc) {
        assert_eq!(decode_time(e), Some(t));
    }
    for bad in [
        "",
        "800000000000000",
        "80000000000000000",
        "8000000000000ABC",
        "+000000000000000",
    ] {
        assert_eq!(decode_time(bad), None, "{bad:?}");
    }
}

#[test]
fn keys_round_trip_through_paths() {
    let prefix = Path::from("weft/prod");
    let cases = [
        ObjectKey::new(tenant("anonymous"), 0, 7_200_000, "ing-0", 0).unwrap(),
        ObjectKey::new(tenant("a*b(c)'!"), -5, -1, "host.example.com", u64::MAX).unwrap(),
        ObjectKey::new(tenant("t"), i64::MIN, i64::MAX, "x", 42).unwrap(),
    ];
    for key in cases {
        let path = key.to_path(&prefix);
        assert_eq!(ObjectKey::parse(&prefix, &path).unwrap(), key, "{path}");
        // Through a listing the path comes back as a string.
        assert_eq!(
            ObjectKey::parse(&prefix, &Path::parse(path.as_ref()).unwrap()).unwrap(),
            key
        );
    }
    let key = ObjectKey::new(tenant("team-a"), 1, 2, "ing-1", 10).unwrap();
    assert_eq!(
        key.to_path(&prefix).as_ref(),
        "weft/prod/team-a/chunks/8000000000000001-8000000000000002-ing-1-000000000000000a"
    );
    assert_eq!(
        key.to_path(&Path::default()).as_ref(),
        "team-a/chunks/8000000000000001-8000000000000002-ing-1-000000000000000a"
    );
}

#[test]
fn keys_sort_by_time() {
    let prefix = Path::default();
    let mut keys: Vec<ObjectKey> = [(-10, 5), (-20, -15), (3, 4), (0, 100)]
        .iter()
        .map(|&(a, z)| ObjectKey::new(tenant("t"), a, z, "i", 0).unwrap())
        .collect();
    let mut by_path: Vec<String> = keys
        .iter()
        .map(|k| k.to_path(&prefix).to_string())
        .collect();
    by_path.sort();
    keys.sort_by_key(|k| (k.min_t, k.max_t));
    let want: Vec<String> = keys
        .iter()
        .map(|k| k.to_path(&prefix).to_string())
        .collect();
    assert_eq!(by_path, want);
}

#[test]
fn key_parse_refuses_foreign_keys() {
    let prefix = Path::from("p");
    let ok = "p/t/chunks/8000000000000001-8000000000000002-ing-000000000000000a";
    assert!(ObjectKey::parse(&prefix, &Path::from(ok)).is_ok());
    let cases = [
        (
            "q/t/chunks/8000000000000001-8000000000000002-ing-000000000000000a",
            "other prefix",
        ),
        (
            "p/t/other/8000000000000001-8000000000000002-ing-000000000000000a",
            "not chunks/",
        ),
        (
            "p/t/chunks/x/8000000000000001-8000000000000002-ing-000000000000000a",
            "too deep",
        ),
        (
            "p/chunks/8000000000000001-8000000000000002-ing-000000000000000a",
            "no tenant",
        ),
        (
            "p/t/chunks/8000000000000002-8000000000000001-ing-000000000000000a",
            "min after max",
        ),
        (
            "p/t/chunks/8000000000000001-8000000000000002--000000000000000a",
            "empty ingester",
        ),
        (
            "p/t/chunks/8000000000000001-8000000000000002-i/g-000000000000000a",
            "slash",
        ),
        (
            "p/t/chunks/8000000000000001-8000000000000002-ing-00000000000000a",
            "short seq",
        ),
        (
            "p/t/chunks/8000000000000001-8000000000000002-ing-000000000000000A",
            "upper-case hex",
        ),
        (
            "p/t/chunks/80000000000000018000000000000002-ing-000000000000000a",
            "missing dash",
        ),
        (
            "p/t/chunks/8000000000000001-8000000000000002-ing-000000000000000a.tmp",
            "suffix",
        ),
        (
            "p/t%2Fx/chunks/8000000000000001-8000000000000002-ing-000000000000000a",
            "escaped slash in tenant",
        ),
        (
            "p/../chunks/8000000000000001-8000000000000002-ing-000000000000000a",
            "dot-dot tenant",
        ),
    ];
    for (key, why) in cases {
        assert!(
            ObjectKey::parse(&prefix, &Path::from(key)).is_err(),
            "{why}: {key}"
        );
    }
    assert!(ObjectKey::new(tenant("t"), 0, 0, "a/b", 0).is_err());
    assert!(ObjectKey::new(tenant("t"), 0, 0, "..", 0).is_err());
    assert!(ObjectKey::new(tenant("t"), 0, 0, &"x".repeat(65), 0).is_err());
}

#[test]
fn a_tenants_prefix_is_a_whole_segment() {
    let prefix = Path::from("p");
    let a = tenant_chunks_prefix(&prefix, &tenant("a"));
    let key_ab = ObjectKey::new(tenant("ab"), 0, 0, "i", 0)
        .unwrap()
        .to_path(&prefix);
    assert!(key_ab.prefix_match(&a).is_none());
    assert_eq!(a.as_ref(), "p/a/chunks");
}

// ---- properties ----

fn arb_labels() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map("[a-z_][a-z0-9_]{0,8}", "[ -~é]{1,12}", 0..5).prop_map(|m| {
        let mut pairs: Vec<(String, String)> =
            m.into_iter().filter(|(n, _)| n != "__name__").collect();
        pairs.push(("__name__".into(), "metric".into()));
        Labels::from_strs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap()
    })
}

fn arb_chunk() -> impl Strategy<Value = (i64, i64, Vec<u8>)> {
    (
        any::<i64>(),
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 1..64),
    )
        .prop_map(|(a, b, d)| (a.min(b), a.max(b), d))
}

proptest! {
    #[test]
    fn prop_round_trip(series in proptest::collection::vec((arb_labels(), proptest::collection::vec(arb_chunk(), 1..5)), 1..8)) {
        check_round_trip(&series);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), object_len in any::<u64>()) {
        let _ = decode_object(&bytes);
        let _ = decode_footer(&bytes, object_len);
        let footer = Footer { index_offset: 1 << 20, index_len: bytes.len() as u64, index_crc32: crc32fast::hash(&bytes) };
        // With a matching CRC the structural checks see the raw bytes.
        let _ = decode_index(&bytes, &footer);
    }

    #[test]
    fn prop_corrupting_a_valid_object_is_an_error_or_the_same_object(
        series in proptest::collection::vec((arb_labels(), proptest::collection::vec(arb_chunk(), 1..3)), 1..4),
        pos in any::<prop::sample::Index>(),
        val in any::<u8>(),
    ) {
        let bytes = check_round_trip(&series);
        let mut bad = bytes.to_vec();
        let i = pos.index(bad.len());
        bad[i] = val;
        match decode_object(&bad) {
            Ok(ix) => prop_assert_eq!(&bad[..], &bytes[..], "a changed object decoded: {:?}", ix),
            Err(_) => prop_assert_ne!(&bad[..], &bytes[..]),
        }
    }

    #[test]
    fn prop_key_round_trip(min in any::<i64>(), max in any::<i64>(), seq in any::<u64>(), ing in "[A-Za-z0-9_.-]{1,64}") {
        prop_assume!(ing != "." && ing != "..");
        let (min, max) = (min.min(max), min.max(max));
        let key = ObjectKey::new(tenant("t-1"), min, max, &ing, seq).unwrap();
        let prefix = Path::from("x");
        prop_assert_eq!(ObjectKey::parse(&prefix, &key.to_path(&prefix)).unwrap(), key);
    }
}

/// Histogram chunks (encodings 2 and 3) travel with their encoding byte through an object;
/// an encoding weft does not know is refused by the builder and by the decoder.
#[test]
fn chunk_encodings_round_trip_and_unknown_ones_are_refused() {
    let l = Labels::from_strs([("__name__", "h")]).unwrap();
    let data = [vec![0u8, 1, 9, 9], vec![0u8, 1, 8], vec![0u8, 2, 7, 7, 7]];
    let encs = [ENCODING_XOR, ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM];
    let cs: Vec<ChunkData<'_>> = (0..3)
        .map(|i| ChunkData {
            min_t: i as i64 * 10,
            max_t: i as i64 * 10 + 5,
            data: &data[i],
            encoding: encs[i],
        })
        .collect();
    let mut b = ObjectBuilder::new();
    b.add_series(&l, &cs).unwrap();
    let obj = b.finish().unwrap();
    let ix = decode_object(&obj.bytes).unwrap();
    let got: Vec<u8> = ix.series[0].chunks.iter().map(|c| c.encoding).collect();
    assert_eq!(got, encs);
    let text = inspect(&obj.bytes).unwrap();
    assert!(
        text.contains(" histogram offset") && text.contains(" floathistogram offset"),
        "{text}"
    );

    let mut b = ObjectBuilder::new();
    let bad = [ChunkData {
        encoding: 4,
        ..cs[0]
    }];
    assert!(b.add_series(&l, &bad).is_err(), "encoding 4 is not stored");

    // Flip the first chunk's encoding byte in the index to 4 (and fix the index CRC):
    // the decoder refuses it.
    let bytes = obj.bytes.to_vec();
    let fr = footer_range(bytes.len() as u64).unwrap();
    let footer = decode_footer(&bytes[fr.start as usize..], bytes.len() as u64).unwrap();
    let ir = footer.index_range();
    let mut ix_bytes = bytes[ir.start as usize..ir.end as usize].to_vec();
    // series count, label count, "__name__", "h", chunk count, then the encoding byte.
    let at = 1 + 1 + 1 + 8 + 1 + 1 + 1;
    assert_eq!(ix_bytes[at], ENCODING_XOR);
    ix_bytes[at] = 4;
    let footer = Footer {
        index_crc32: crc32fast::hash(&ix_bytes),
        ..footer
    };
    let err = decode_index(&ix_bytes, &footer).unwrap_err();
    assert!(
        err.to_string().contains("unknown chunk encoding 4"),
        "{err}"
    );
}
