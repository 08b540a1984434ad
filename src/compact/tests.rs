use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::*;
use crate::chunk::{decode_bits, encode};
use crate::model::{MatchOp, Matcher};
use crate::store::catalog::CatalogConfig;
use crate::store::retry::{CircuitBreaker, CircuitConfig};
use crate::store::StoreOptions;

const H: i64 = 3_600_000;

fn seed() -> u64 {
    let seed = std::env::var("COMPACT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("compact test seed: COMPACT_TEST_SEED={seed}");
    seed
}

struct Rig {
    store: Store,
    catalog: Arc<Catalog>,
    compactor: Compactor,
}

fn rig(cfg: CompactorConfig) -> Rig {
    let store = Store::open("memory://weft", &StoreOptions::default()).unwrap();
    let breaker = Arc::new(CircuitBreaker::new(CircuitConfig {
        failure_threshold: 3,
        probe_interval: Duration::from_secs(5),
    }));
    let catalog = Arc::new(Catalog::new(
        store.clone(),
        breaker,
        CatalogConfig::default(),
    ));
    let metrics = Arc::new(Metrics::new());
    let memory = Arc::new(Memory::new(1 << 30, &metrics));
    let compactor =
        Compactor::new(cfg, store.clone(), memory, metrics).with_node(catalog.clone(), None);
    Rig {
        store,
        catalog,
        compactor,
    }
}

/// Uploads one object of `series` (labels, samples), as the flusher would: one chunk of at
/// most 120 samples each.
async fn put(
    store: &Store,
    tenant: &TenantId,
    ingester: &str,
    seq: u64,
    series: &[(Labels, Vec<(i64, f64)>)],
) {
    let mut b = ObjectBuilder::new();
    let mut owned = Vec::new();
    for (l, samples) in series {
        let chunks: Vec<(i64, i64, Vec<u8>)> = samples
            .chunks(120)
            .map(|p| (p[0].0, p[p.len() - 1].0, encode(p.iter().copied())))
            .collect();
        owned.push((l.clone(), chunks));
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    for (l, chunks) in &owned {
        let data: Vec<ChunkData<'_>> = chunks
            .iter()
            .map(|(a, z, d)| ChunkData {
                min_t: *a,
                max_t: *z,
                data: d,
                encoding: crate::store::object::ENCODING_XOR,
            })
            .collect();
        b.add_series(l, &data).unwrap();
    }
    let obj = b.finish().unwrap();
    let key = ObjectKey::new(tenant.clone(), obj.min_t, obj.max_t, ingester, seq).unwrap();
    store
        .put(&key.to_path(store.prefix()), obj.bytes)
        .await
        .unwrap();
}

/// Every sample the catalog answers for `tenant`, per series, merged as queries merge.
async fn answer(catalog: &Catalog, tenant: &TenantId) -> BTreeMap<Labels, Vec<(i64, u64)>> {
    let m = [Matcher::new(MatchOp::Re, "__name__", ".+").unwrap()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let sel = catalog
        .select(tenant, &m, i64::MIN, i64::MAX, deadline)
        .await;
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
    let mut out = BTreeMap::new();
    for s in sel.series {
        let bytes = catalog.read_chunks(&s.chunks, deadline).await;
        let copies = s
            .chunks
            .iter()
            .zip(bytes)
            .map(|(c, b)| ChunkCopy {
                min_t: c.meta.min_t,
                max_t: c.meta.max_t,
                data: b.unwrap().to_vec(),
                flushed: true,
                encoding: c.meta.encoding,
            })
            .collect();
        let (merged, bad) = crate::query::merge::merge_chunks(copies);
        assert_eq!(bad, 0);
        let samples: Vec<(i64, u64)> = merged
            .iter()
            .flat_map(|c| decode_bits(&c.data).unwrap())
            .collect();
        out.insert(s.labels, samples);
    }
    out
}

fn cfg() -> CompactorConfig {
    CompactorConfig {
        block_margin: Duration::from_secs(60),
        max_object_bytes: 1 << 20,
        ..CompactorConfig::default()
    }
}

#[tokio::test]
async fn compaction_merges_objects_and_every_sample_reads_back_once() {
    let mut rng = SmallRng::seed_from_u64(seed());
    let r = rig(cfg());
    let t = TenantId::parse("team-a").unwrap();
    // Three days of 15 s samples for 20 series, flushed every 20 minutes, ending 2 days ago;
    // some objects uploaded twice (a retried flush) under another seq.
    let start = (now_ms() - 5 * 24 * H).div_euclid(H) * H;
    let mut seq = 0;
    let mut model: BTreeMap<Labels, Vec<(i64, u64)>> = BTreeMap::new();
    for w in 0..(3 * 24 * 3) {
        let lo = start + w * H / 3;
        let mut series: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
        for i in 0..20 {
            if !rng.random_bool(0.8) {
                continue;
            }
            let l = Labels::from_strs([("__name__", "m"), ("i", &i.to_string())]).unwrap();
            let s: Vec<(i64, f64)> = (0..80)
                .map(|k| (lo + k * 15_000, rng.random::<f64>()))
                .collect();
            model
                .entry(l.clone())
                .or_default()
                .extend(s.iter().map(|&(t, v)| (t, v.to_bits())));
            series.push((l, s));
        }
        if series.is_empty() {
            continue;
        }
        seq += 1;
        put(&r.store, &t, "ing-1", seq, &series).await;
        if rng.random_bool(0.1) {
            seq += 1;
            put(&r.store, &t, "ing-1", seq, &series).await;
        }
    }
    r.catalog.load().await.unwrap();
    let before = r.catalog.object_count();
    assert_eq!(answer(&r.catalog, &t).await, model);

    // Run until nothing is left to do (level 1, then level 2).
    let mut runs = 0;
    loop {
        let s = r.compactor.run_once().await.unwrap();
        assert!(s.lease);
        // Every run leaves an answer with every sample exactly once.
        assert_eq!(answer(&r.catalog, &t).await, model, "after run {runs}");
        runs += 1;
        if s.jobs == 0 || runs > 5 {
            break;
        }
    }
    let after = r.catalog.object_count();
    let totals = store_totals(&r.store).await.unwrap();
    eprintln!(
        "objects {before} -> {after} in {runs} runs; store {:?}",
        totals.get(&t)
    );
    assert_eq!(totals[&t].0 as usize, after, "catalog and store agree");
    assert!(
        after <= 4,
        "three days (and the margin) make at most 4 objects, got {after}"
    );
    assert!(before > 100);
    // A fresh catalog over the store sees the same.
    let fresh = Catalog::new(
        r.store.clone(),
        Arc::new(CircuitBreaker::new(CircuitConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_secs(5),
        })),
        CatalogConfig::default(),
    );
    fresh.load().await.unwrap();
    assert_eq!(answer(&fresh, &t).await, model);
}

#[tokio::test]
async fn retention_deletes_old_objects_and_keeps_the_rest() {
    let r = rig(CompactorConfig {
        retention: Duration::from_secs(24 * 3600),
        block_ranges: vec![Duration::from_secs(3600)],
        ..cfg()
    });
    let t = TenantId::parse("t").unwrap();
    let now = now_ms();
    let l = Labels::from_strs([("__name__", "m")]).unwrap();
    put(
        &r.store,
        &t,
        "ing",
        1,
        &[(l.clone(), vec![(now - 3 * 24 * H, 1.0)])],
    )
    .await;
    put(
        &r.store,
        &t,
        "ing",
        2,
        &[(l.clone(), vec![(now - 2 * 24 * H, 2.0)])],
    )
    .await;
    put(
        &r.store,
        &t,
        "ing",
        3,
        &[(l.clone(), vec![(now - 2 * H, 3.0)])],
    )
    .await;
    r.catalog.load().await.unwrap();
    let s = r.compactor.run_once().await.unwrap();
    assert_eq!(s.expired, 2);
    let got = answer(&r.catalog, &t).await;
    assert_eq!(got[&l], vec![(now - 2 * H, 3f64.to_bits())]);
    assert_eq!(store_totals(&r.store).await.unwrap()[&t].0, 1);
}

#[tokio::test]
async fn a_marker_left_by_a_crash_is_finished_and_readers_skip_its_sources() {
    let r = rig(cfg());
    let t = TenantId::parse("t").unwrap();
    let base = (now_ms() - 10 * 24 * H).div_euclid(24 * H) * 24 * H;
    let l = Labels::from_strs([("__name__", "m")]).unwrap();
    put(&r.store, &t, "ing", 1, &[(l.clone(), vec![(base, 1.0)])]).await;
    put(
        &r.store,
        &t,
        "ing",
        2,
        &[(l.clone(), vec![(base + 1000, 2.0)])],
    )
    .await;
    // What a job killed after its marker leaves: the output, the marker, the sources.
    put(
        &r.store,
        &t,
        "compactor-l1",
        9,
        &[(l.clone(), vec![(base, 1.0), (base + 1000, 2.0)])],
    )
    .await;
    let (objs, _) = r.compactor.list().await.unwrap();
    let names: Vec<String> = objs[&t].iter().map(|(k, _)| k.file_name()).collect();
    let out = names
        .iter()
        .find(|n| n.contains("compactor"))
        .unwrap()
        .clone();
    let m = Marker {
        outputs: vec![out],
        sources: names
            .iter()
            .filter(|n| !n.contains("compactor"))
            .cloned()
            .collect(),
    };
    r.store
        .put(
            &markers_prefix(r.store.prefix(), &t).join("0000000000000001"),
            Bytes::from(m.encode()),
        )
        .await
        .unwrap();
    r.catalog.load().await.unwrap();
    assert_eq!(
        r.catalog.object_count(),
        1,
        "a listing skips the replaced sources"
    );
    let s = r.compactor.run_once().await.unwrap();
    assert_eq!(s.markers_finished, 1);
    assert_eq!(store_totals(&r.store).await.unwrap()[&t].0, 1);
    assert_eq!(answer(&r.catalog, &t).await[&l].len(), 2);
}

#[tokio::test]
async fn a_job_that_does_not_fit_in_memory_waits() {
    let store = Store::open("memory://weft", &StoreOptions::default()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let memory = Arc::new(Memory::new(64 << 10, &metrics));
    let _hog = memory.try_reserve(Consumer::Queries, 60 << 10).unwrap();
    let c = Compactor::new(
        CompactorConfig {
            max_object_bytes: 16 << 10,
            ..cfg()
        },
        store.clone(),
        memory.clone(),
        metrics.clone(),
    );
    let t = TenantId::parse("t").unwrap();
    let base = (now_ms() - 10 * 24 * H).div_euclid(24 * H) * 24 * H;
    let l = Labels::from_strs([("__name__", "m")]).unwrap();
    put(&store, &t, "ing", 1, &[(l.clone(), vec![(base, 1.0)])]).await;
    put(
        &store,
        &t,
        "ing",
        2,
        &[(l.clone(), vec![(base + 1000, 2.0)])],
    )
    .await;
    let s = c.run_once().await.unwrap();
    assert_eq!((s.jobs, s.failed_jobs), (0, 1));
    assert_eq!(memory.consumer_bytes(Consumer::Compaction), 0);
    drop(_hog);
    let s = c.run_once().await.unwrap();
    assert_eq!((s.jobs, s.failed_jobs), (1, 0));
    assert_eq!(store_totals(&store).await.unwrap()[&t].0, 1);
}

#[tokio::test]
async fn per_tenant_retention_overrides_the_global_one() {
    let r = rig(CompactorConfig {
        retention: Duration::from_secs(24 * 3600),
        ..cfg()
    });
    let f: RetentionFn = Arc::new(|t: &TenantId| match t.as_str() {
        "keep" => Some(Duration::ZERO),
        "short" => Some(Duration::from_secs(3600)),
        _ => None,
    });
    let compactor = r.compactor.with_retention(f);
    let now = now_ms();
    let l = Labels::from_strs([("__name__", "m")]).unwrap();
    for (i, t) in ["keep", "short", "default"].iter().enumerate() {
        let t = TenantId::parse(t).unwrap();
        // One sample 3 days old, one 3 hours old.
        put(
            &r.store,
            &t,
            "ing",
            2 * i as u64,
            &[(l.clone(), vec![(now - 72 * H, 1.0)])],
        )
        .await;
        put(
            &r.store,
            &t,
            "ing",
            2 * i as u64 + 1,
            &[(l.clone(), vec![(now - 3 * H, 2.0)])],
        )
        .await;
    }
    r.catalog.load().await.unwrap();
    let s = compactor.run_once().await.unwrap();
    assert_eq!(
        s.expired, 3,
        "short: both; default: the old one; keep: none"
    );
    let totals = store_totals(&r.store).await.unwrap();
    let count = |t: &str| totals.get(&TenantId::parse(t).unwrap()).map_or(0, |x| x.0);
    assert_eq!((count("keep"), count("short"), count("default")), (2, 0, 1));
}

#[tokio::test]
async fn outputs_are_cut_at_the_object_size_bound() {
    // 64 KiB is the smallest cut; 40 objects of 40 series × 120 random samples are ~1.5 MB.
    let mut rng = SmallRng::seed_from_u64(seed());
    let r = rig(CompactorConfig {
        max_object_bytes: 64 << 10,
        max_job_bytes: 64 << 20,
        block_ranges: vec![Duration::from_secs(24 * 3600)],
        ..cfg()
    });
    let t = TenantId::parse("t").unwrap();
    let base = (now_ms() - 10 * 24 * H).div_euclid(24 * H) * 24 * H;
    let mut model: BTreeMap<Labels, Vec<(i64, u64)>> = BTreeMap::new();
    for o in 0..40i64 {
        let mut series = Vec::new();
        for i in 0..40 {
            let l = Labels::from_strs([("__name__", "m"), ("i", &format!("{i:02}"))]).unwrap();
            let s: Vec<(i64, f64)> = (0..120)
                .map(|k| (base + o * 600_000 + k * 5_000, rng.random::<f64>()))
                .collect();
            model
                .entry(l.clone())
                .or_default()
                .extend(s.iter().map(|&(t, v)| (t, v.to_bits())));
            series.push((l, s));
        }
        put(&r.store, &t, "ing", o as u64, &series).await;
    }
    r.catalog.load().await.unwrap();
    let s = r.compactor.run_once().await.unwrap();
    assert_eq!(s.jobs, 1);
    let objs = r.catalog.objects(&t);
    assert!(objs.len() > 10, "{} outputs", objs.len());
    for (k, size, _) in &objs {
        assert!(
            *size <= (64 << 10) + (16 << 10),
            "{} is {size} bytes",
            k.file_name()
        );
    }
    assert_eq!(answer(&r.catalog, &t).await, model);
}

/// Objects holding native histogram chunks (both kinds, some uploaded twice, some cut
/// differently so that chunks overlap) compact into objects whose chunks keep their
/// encodings and read back every histogram once.
#[tokio::test]
async fn histogram_chunks_compact_with_their_encodings() {
    use crate::hist::fixtures::{float_series, int_series, same_samples};
    let r = rig(cfg());
    let t = TenantId::parse("team-h").unwrap();
    let start = (now_ms() - 5 * 24 * H).div_euclid(H) * H;
    let series = [
        (
            Labels::from_strs([("__name__", "hi")]).unwrap(),
            int_series(start, 15_000, 900),
        ),
        (
            Labels::from_strs([("__name__", "hf")]).unwrap(),
            float_series(start, 15_000, 900),
        ),
    ];
    let mut seq = 0;
    // One object a quarter of the samples; the second quarter also again, cut at other
    // points (an upload after a crash that rebuilt chunks).
    for part in [0..225usize, 225..450, 450..675, 675..905, 200..460] {
        let mut b = ObjectBuilder::new();
        let mut owned = Vec::new();
        for (l, hs) in &series {
            let end = part.end.min(hs.len());
            owned.push((
                l.clone(),
                crate::hist::encode_histograms(&hs[part.start..end]),
            ));
        }
        owned.sort_by(|a, b| a.0.cmp(&b.0));
        for (l, chunks) in &owned {
            let data: Vec<ChunkData<'_>> = chunks
                .iter()
                .map(|e| ChunkData {
                    min_t: e.min_t,
                    max_t: e.max_t,
                    data: &e.data,
                    encoding: e.encoding,
                })
                .collect();
            b.add_series(l, &data).unwrap();
        }
        let obj = b.finish().unwrap();
        seq += 1;
        let key = ObjectKey::new(t.clone(), obj.min_t, obj.max_t, "ing-h", seq).unwrap();
        r.store
            .put(&key.to_path(r.store.prefix()), obj.bytes)
            .await
            .unwrap();
    }
    r.catalog.load().await.unwrap();
    let check = |what: String| {
        let catalog = r.catalog.clone();
        let t = t.clone();
        let series = series.clone();
        async move {
            let m = [Matcher::new(MatchOp::Re, "__name__", "h.").unwrap()];
            let deadline = Instant::now() + Duration::from_secs(10);
            let sel = catalog.select(&t, &m, i64::MIN, i64::MAX, deadline).await;
            assert_eq!(sel.series.len(), 2, "{what}");
            for s in sel.series {
                let bytes = catalog.read_chunks(&s.chunks, deadline).await;
                let copies = s
                    .chunks
                    .iter()
                    .zip(bytes)
                    .map(|(c, b)| ChunkCopy {
                        min_t: c.meta.min_t,
                        max_t: c.meta.max_t,
                        data: b.unwrap().to_vec(),
                        flushed: true,
                        encoding: c.meta.encoding,
                    })
                    .collect();
                let (merged, bad) = crate::query::merge::merge_chunks(copies);
                assert_eq!(bad, 0, "{what}");
                assert!(merged
                    .iter()
                    .all(|c| c.encoding != crate::chunk::ENCODING_XOR));
                let got: Vec<_> = merged
                    .iter()
                    .flat_map(|c| crate::hist::decode_histograms(c.encoding, &c.data).unwrap())
                    .collect();
                let want = &series.iter().find(|x| x.0 == s.labels).unwrap().1;
                assert!(same_samples(&got, want), "{what}: {}", s.labels);
            }
        }
    };
    check("before compaction".into()).await;
    let mut runs = 0;
    loop {
        let s = r.compactor.run_once().await.unwrap();
        check(format!("after run {runs}")).await;
        runs += 1;
        if s.jobs == 0 || runs > 5 {
            break;
        }
    }
    assert!(runs > 1, "the compactor had work");
}
