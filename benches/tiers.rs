//! `tiers`: one query of 100 series × 2 h (15 s scrape interval, 480 samples, 4 chunks a
//! series) served from each tier, down to decoded samples:
//!
//! - `memory`: the head holds the chunks;
//! - `local_disk`: the chunks have left memory; the local tier holds the object whole
//!   (`<data-dir>/local`, read with `pread`, page cache warm as it is on a live node);
//! - `store`: only the store has them (`file://`, the cache off), so every query reads the
//!   footer, the index and the chunks through object_store.
//!
//! The same querier code serves all three (`Querier::prepare`, then `Selected::into_samples`,
//! as remote read in SAMPLES mode does short of the protobuf); only where the chunks are
//! differs. Throughput is samples.

mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use weft::head::{Head, HeadConfig};
use weft::local::{LocalConfig, LocalTier};
use weft::metrics::Metrics;
use weft::model::{MatchOp, Matcher, TenantId};
use weft::proto::{decode_write_request, WriteBatch};
use weft::query::{Cancel, Querier, ReadBudget, ReadQuery};
use weft::store::catalog::{Catalog, CatalogConfig};
use weft::store::object::{ChunkData, ObjectBuilder, ObjectKey};
use weft::store::retry::{CircuitBreaker, CircuitConfig};
use weft::store::{Store, StoreOptions};

const SERIES: usize = 100;
const SAMPLES: usize = 480;
const STEP_MS: i64 = 15_000;

/// One query through `querier`, as a remote read runs it: the plan (select, read what the
/// head lacks), then every sample decoded.
async fn query(querier: &Querier, tenant: &TenantId, matchers: &[Matcher]) -> usize {
    let q = ReadQuery {
        start: 0,
        end: SAMPLES as i64 * STEP_MS,
        matchers: matchers.to_vec(),
    };
    let prepared = querier
        .prepare(tenant, vec![q], ReadBudget::UNLIMITED, &Cancel::default())
        .await
        .unwrap();
    assert!(prepared.warnings.is_empty(), "{:?}", prepared.warnings);
    let mut out = Vec::with_capacity(SAMPLES);
    let mut n = 0;
    for (q, series) in prepared.queries {
        assert_eq!(series.len(), SERIES);
        for s in series {
            out.clear();
            s.into_samples(q.start, q.end, &mut out);
            n += out.len();
        }
    }
    n
}

fn tiers(c: &mut Criterion) {
    let mut rng = common::rng(common::seed());
    let series = common::node_exporter_series(SERIES, &mut rng);
    let metrics = Arc::new(Metrics::new());
    let head = Arc::new(Head::new(HeadConfig::default(), metrics.clone()));
    let tenant_id = TenantId::parse("bench").unwrap();
    let tenant = head.tenant_or_create(&tenant_id);
    for i in 0..SAMPLES {
        let raw = common::write_request(&series, i as i64 * STEP_MS, i as u64).encode_to_vec();
        let mut batch = WriteBatch::default();
        decode_write_request(&raw, &mut batch).unwrap();
        assert_eq!(tenant.append(&batch, None).appended, SERIES as u64);
    }
    let matchers = [Matcher::new(MatchOp::Eq, "job", "node").unwrap()];

    // The object a flush would write: every series' chunks, the open one included.
    let mut b = ObjectBuilder::new();
    for s in tenant.select(&matchers, i64::MIN, i64::MAX) {
        let chunks = s.chunks(i64::MIN, i64::MAX);
        let data: Vec<ChunkData<'_>> = chunks
            .iter()
            .map(|c| ChunkData {
                min_t: c.min_t,
                max_t: c.max_t,
                data: &c.data,
                encoding: weft::store::object::ENCODING_XOR,
            })
            .collect();
        b.add_series(s.labels(), &data).unwrap();
    }
    let object = b.finish().unwrap();
    let key = ObjectKey::new(tenant_id.clone(), object.min_t, object.max_t, "bench", 1).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("file://{}", dir.path().join("store").display()),
        &StoreOptions::default(),
    )
    .unwrap();
    rt.block_on(store.put(&key.to_path(store.prefix()), object.bytes.clone()))
        .unwrap();
    let empty_head = || Arc::new(Head::new(HeadConfig::default(), metrics.clone()));
    let no_cache = CatalogConfig {
        cache_bytes: 0,
        ..CatalogConfig::default()
    };
    let breaker = || Arc::new(CircuitBreaker::new(CircuitConfig::default()));

    let from_store = {
        let catalog = Arc::new(Catalog::new(store.clone(), breaker(), no_cache));
        assert_eq!(rt.block_on(catalog.load()).unwrap(), 1);
        Querier::with_store(empty_head(), catalog, Duration::from_secs(30))
    };
    let from_local = {
        let local = Arc::new(
            LocalTier::open(LocalConfig {
                dir: dir.path().join("local"),
                retention: Duration::from_secs(86_400 * 365 * 100),
            })
            .unwrap(),
        );
        local.put_object(&key, &object.bytes).unwrap();
        // The last listing saved before the store went away (a listing of the empty store
        // would say the object was deleted). The store has nothing: whatever answers must
        // be the local tier.
        local
            .save_listing(&[(key.clone(), object.bytes.len() as u64)])
            .unwrap();
        let empty = Store::open("memory://", &StoreOptions::default()).unwrap();
        let catalog =
            Arc::new(Catalog::new(empty, breaker(), no_cache).with_local_tier(local.clone()));
        assert!(catalog.is_loaded(), "the saved listing counts as loaded");
        Querier::with_store(empty_head(), catalog, Duration::from_secs(30))
    };
    let from_memory = Querier::new(head.clone());

    for (name, q) in [
        ("memory", &from_memory),
        ("local_disk", &from_local),
        ("store", &from_store),
    ] {
        let n = rt.block_on(query(q, &tenant_id, &matchers));
        assert_eq!(n, SERIES * SAMPLES, "{name}");
    }

    let mut g = c.benchmark_group("tiers");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements((SERIES * SAMPLES) as u64));
    for (name, q) in [
        ("query_100_series_2h_memory", &from_memory),
        ("query_100_series_2h_local_disk", &from_local),
        ("query_100_series_2h_store_file", &from_store),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(query(q, &tenant_id, &matchers)))
        });
    }
    g.finish();
}

criterion_group!(benches, tiers);
criterion_main!(benches);
