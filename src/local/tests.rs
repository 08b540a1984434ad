use super::*;
use crate::model::{Labels, TenantId};
use crate::store::object::{decode_object, ChunkData, ObjectBuilder};

fn tenant() -> TenantId {
    TenantId::parse("team-a").unwrap()
}

/// An object of `series` series with one chunk each over `[min_t, max_t]`, and its key.
fn object(min_t: i64, max_t: i64, seq: u64, series: usize) -> (ObjectKey, Vec<u8>) {
    let mut b = ObjectBuilder::new();
    let chunk = crate::chunk::encode([(min_t, 1.0), (max_t, 2.0)]);
    for i in 0..series {
        let labels = Labels::from_strs([("__name__", "m"), ("i", &format!("{i:04}"))]).unwrap();
        b.add_series(
            &labels,
            &[ChunkData {
                min_t,
                max_t,
                data: &chunk,
                encoding: crate::store::object::ENCODING_XOR,
            }],
        )
        .unwrap();
    }
    let o = b.finish().unwrap();
    let key = ObjectKey::new(tenant(), o.min_t, o.max_t, "ing-1", seq).unwrap();
    (key, o.bytes.to_vec())
}

fn tier(dir: &Path, retention: Duration) -> LocalTier {
    LocalTier::open(LocalConfig {
        dir: dir.join("local"),
        retention,
    })
    .unwrap()
}

/// The index and every chunk of the object, read back through the tier.
fn read_all(t: &LocalTier, key: &ObjectKey) -> Vec<Vec<u8>> {
    let ix = t.read_index(key).unwrap().expect("held");
    ix.series
        .iter()
        .flat_map(|s| &s.chunks)
        .map(|m| t.read_range(key, m.range()).unwrap())
        .collect()
}

#[test]
fn a_whole_copy_reads_back_exactly_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (key, bytes) = object(1_000, 9_000, 1, 3);
    let expected: Vec<Vec<u8>> = decode_object(&bytes)
        .unwrap()
        .series
        .iter()
        .flat_map(|s| s.chunks.clone())
        .map(|m| bytes[m.offset as usize..m.range().end as usize].to_vec())
        .collect();
    {
        let t = tier(dir.path(), Duration::from_secs(3600));
        t.put_object(&key, &bytes).unwrap();
        assert_eq!(t.held(&key), Some(Held::Object));
        assert_eq!(read_all(&t, &key), expected);
        assert_eq!(t.disk_bytes(), bytes.len() as u64);
    }
    let t = tier(dir.path(), Duration::from_secs(3600));
    assert_eq!(t.held(&key), Some(Held::Object));
    assert_eq!(
        t.objects(),
        vec![(key.clone(), bytes.len() as u64, Held::Object)]
    );
    assert_eq!(read_all(&t, &key), expected);
}

#[test]
fn eviction_demotes_the_oldest_whole_copies_to_their_index_first() {
    let dir = tempfile::tempdir().unwrap();
    let t = tier(dir.path(), Duration::from_secs(3600));
    let objs: Vec<_> = (0..4)
        .map(|i| object(i * 10_000, i * 10_000 + 5_000, i as u64, 50))
        .collect();
    for (k, b) in &objs {
        t.put_object(k, b).unwrap();
    }
    let before = t.disk_bytes();
    // Ask for a little: exactly one object (the oldest) goes.
    let freed = t.evict_oldest(1);
    assert!(freed > 0);
    assert_eq!(t.disk_bytes(), before - freed);
    assert_eq!(t.held(&objs[0].0), Some(Held::Index));
    for (k, _) in &objs[1..] {
        assert_eq!(t.held(k), Some(Held::Object));
    }
    // The demoted object still says what the store holds, but its chunks are not here.
    let ix = t.read_index(&objs[0].0).unwrap().unwrap();
    assert_eq!(ix, decode_object(&objs[0].1).unwrap());
    let m = ix.series[0].chunks[0];
    assert!(matches!(
        t.read_range(&objs[0].0, m.range()),
        Err(LocalError::Missing(_))
    ));
    // Asking for everything demotes every whole copy, then removes index copies.
    t.evict_oldest(u64::MAX);
    assert_eq!(t.whole_objects(), (0, 0));
    assert_eq!(t.disk_bytes(), 0);
    assert!(t.objects().is_empty());
    assert_eq!(t.evicted(), 8);
}

#[test]
fn retention_counts_from_the_newest_sample_of_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let t = tier(dir.path(), Duration::from_secs(10));
    let (old, ob) = object(0, 5_000, 1, 2);
    let (new, nb) = object(6_000, 20_000, 2, 2);
    t.put_object(&old, &ob).unwrap();
    t.put_object(&new, &nb).unwrap();
    // now - 10 s = 15 000: the object ending at 5 000 is past retention, 20 000 is not.
    assert!(t.expire(25_000) > 0);
    assert_eq!(t.held(&old), Some(Held::Index));
    assert_eq!(t.held(&new), Some(Held::Object));
    // Reopened, the index copy is still known.
    drop(t);
    let t = tier(dir.path(), Duration::from_secs(10));
    assert_eq!(t.held(&old), Some(Held::Index));
    assert_eq!(t.read_index(&old).unwrap().unwrap().min_t, 0);
}

#[test]
fn a_corrupt_copy_is_removed_and_reported_never_read_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let t = tier(dir.path(), Duration::from_secs(3600));
    let (key, mut bytes) = object(1_000, 2_000, 1, 2);
    let n = bytes.len();
    bytes[n - 40] ^= 0xff; // inside the index: its CRC catches it
    t.put_object(&key, &bytes).unwrap();
    assert!(matches!(
        t.read_index(&key),
        Err(LocalError::Corrupt { .. })
    ));
    assert_eq!(t.held(&key), None);
    assert_eq!(t.disk_bytes(), 0);
    assert!(t.read_index(&key).unwrap().is_none());
}

#[test]
fn an_index_copy_from_the_store_reads_back_and_yields_to_a_whole_copy() {
    let dir = tempfile::tempdir().unwrap();
    let t = tier(dir.path(), Duration::from_secs(3600));
    let (key, bytes) = object(1_000, 2_000, 1, 3);
    let len = bytes.len() as u64;
    let footer = &bytes[(len - FOOTER_LEN) as usize..];
    let f = decode_footer(footer, len).unwrap();
    let index = &bytes[f.index_range().start as usize..f.index_range().end as usize];
    t.put_index(&key, len, footer, index).unwrap();
    assert_eq!(t.held(&key), Some(Held::Index));
    assert_eq!(
        t.read_index(&key).unwrap().unwrap(),
        decode_object(&bytes).unwrap()
    );
    t.put_object(&key, &bytes).unwrap();
    assert_eq!(t.held(&key), Some(Held::Object));
    assert_eq!(t.disk_bytes(), len);
    drop(t);
    let t = tier(dir.path(), Duration::from_secs(3600));
    assert_eq!(t.objects(), vec![(key, len, Held::Object)]);
}

#[test]
fn a_listing_reads_back_only_when_whole() {
    let dir = tempfile::tempdir().unwrap();
    let t = tier(dir.path(), Duration::from_secs(3600));
    assert!(t.load_listing().is_none());
    let listing: Vec<(ObjectKey, u64)> = (0..5)
        .map(|i| {
            (
                object(i * 100, i * 100 + 50, i as u64, 1).0,
                1000 + i as u64,
            )
        })
        .collect();
    t.save_listing(&listing).unwrap();
    assert_eq!(t.load_listing().unwrap(), listing);
    let text = fs::read_to_string(dir.path().join("local/listing")).unwrap();
    // A listing cut anywhere before its end line is not trusted.
    for cut in [0, 10, text.len() / 2, text.len() - 4] {
        assert!(parse_listing(&text[..cut]).is_none(), "cut at {cut}");
    }
}

#[test]
fn leftover_tmp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let t = tier(dir.path(), Duration::from_secs(3600));
    let (key, bytes) = object(1_000, 2_000, 1, 1);
    t.put_object(&key, &bytes).unwrap();
    let tmp = dir
        .path()
        .join("local/objects/team-a")
        .join(format!("{}.tmp", key.file_name()));
    fs::write(&tmp, b"half").unwrap();
    drop(t);
    let t = tier(dir.path(), Duration::from_secs(3600));
    assert!(!tmp.exists());
    assert_eq!(t.objects().len(), 1);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes as an index copy: an error or an index, never a panic; and any single
        /// byte changed in a real index copy is caught (footer, length or CRC).
        #[test]
        fn index_copies_decode_or_fail_cleanly(
            junk in proptest::collection::vec(any::<u8>(), 0..512),
            series in 1usize..20,
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let _ = decode_index_copy(&junk);
            let (_, bytes) = object(1_000, 2_000, 1, series);
            let len = bytes.len() as u64;
            let footer = &bytes[(len - FOOTER_LEN) as usize..];
            let f = decode_footer(footer, len).unwrap();
            let index = &bytes[f.index_range().start as usize..f.index_range().end as usize];
            let mut copy = index_header(len).to_vec();
            copy.extend_from_slice(footer);
            copy.extend_from_slice(index);
            prop_assert_eq!(decode_index_copy(&copy).unwrap(), decode_object(&bytes).unwrap());
            let i = flip.index(copy.len());
            copy[i] ^= 1 << bit;
            prop_assert!(decode_index_copy(&copy).is_err(), "flipped bit {} of byte {}", bit, i);
        }

        /// A listing of any keys formats and parses back to itself.
        #[test]
        fn listings_round_trip(
            entries in proptest::collection::vec(
                (any::<i64>(), 0i64..1_000_000, any::<u64>(), any::<u64>(), "[a-z0-9_-]{1,12}"),
                0..40,
            ),
        ) {
            let objects: Vec<(ObjectKey, u64)> = entries
                .into_iter()
                .map(|(min_t, span, seq, size, ingester)| {
                    let max_t = min_t.saturating_add(span);
                    (ObjectKey::new(tenant(), min_t, max_t, &ingester, seq).unwrap(), size)
                })
                .collect();
            prop_assert_eq!(parse_listing(&format_listing(&objects)), Some(objects));
        }
    }
}
