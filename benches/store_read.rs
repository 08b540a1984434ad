//! Store read path: one query's latency served from the store (`file://`) versus from the
//! catalog's cache.
//!
//! Data: 20 objects (one per 2 h flush window) of the same 500 series, one 120-sample chunk
//! each per object; the chunks are real Prometheus chunks from
//! `shared/testdata/prometheus-xor-chunks.jsonl` (`WEFT_TESTDATA` overrides its path), or
//! chunks encoded here if the file is missing. The query matches 100 series over the whole
//! range: 20 index reads, then 2 000 chunk reads (16 at a time), per iteration.
//!
//! - `cold`: a catalog with a zero-byte cache, so every index and chunk is read from the
//!   store (footer + index range GETs per object, one range GET per chunk).
//! - `cold_coalesced`: the same, reading chunks the way the server does (`read_chunks`: one
//!   range GET per object covering its wanted chunks when they lie close together).
//! - `warm`: the same query against a catalog whose cache already holds everything.
//!
//! Criterion's time per iteration is the time of one query; throughput is chunks.

#[path = "../tests/common/testdata.rs"]
mod testdata;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use weft::model::{Labels, MatchOp, Matcher, TenantId};
use weft::store::catalog::{Catalog, CatalogConfig};
use weft::store::object::{ChunkData, ObjectBuilder, ObjectKey};
use weft::store::retry::{CircuitBreaker, CircuitConfig};
use weft::store::{Store, StoreOptions};

const OBJECTS: i64 = 20;
const SERIES: usize = 500;
/// Series the query's matcher selects: one `group` value of five.
const GROUPS: usize = 5;
const WINDOW_MS: i64 = 2 * 3600 * 1000;
const READ_CONCURRENCY: usize = 16;

/// Chunk bytes to cycle through: real ones if the test data is there.
fn chunks() -> Vec<Vec<u8>> {
    match testdata::load() {
        Some(c) => c.into_iter().map(|c| c.chunk).collect(),
        None => (0..64)
            .map(|s| {
                weft::chunk::encode(
                    (0..120).map(|i| (i * 15_000, (s * 1_000 + i * (i % 7)) as f64 * 0.25)),
                )
            })
            .collect(),
    }
}

fn series_labels() -> Vec<Labels> {
    (0..SERIES)
        .map(|i| {
            let group = format!("g{}", i % GROUPS);
            let inst = format!("10.0.{}.{}:9100", i / 250, i % 250);
            Labels::from_strs([
                ("__name__", "node_cpu_seconds_total"),
                ("group", group.as_str()),
                ("instance", inst.as_str()),
                ("job", "node"),
            ])
            .unwrap()
        })
        .collect()
}

async fn write_objects(store: &Store, tenant: &TenantId) {
    let chunks = chunks();
    let labels = series_labels();
    for k in 0..OBJECTS {
        let mut b = ObjectBuilder::new();
        for (i, l) in labels.iter().enumerate() {
            let min_t = k * WINDOW_MS + i as i64;
            let data = &chunks[(k as usize * SERIES + i) % chunks.len()];
            b.add_series(
                l,
                &[ChunkData {
                    min_t,
                    max_t: min_t + WINDOW_MS / 2,
                    data,
                    encoding: weft::store::object::ENCODING_XOR,
                }],
            )
            .unwrap();
        }
        let obj = b.finish().unwrap();
        let key = ObjectKey::new(tenant.clone(), obj.min_t, obj.max_t, "bench", k as u64).unwrap();
        store
            .put(&key.to_path(store.prefix()), obj.bytes)
            .await
            .unwrap();
    }
}

/// One query: select, then read every chunk; returns the bytes read.
async fn query(catalog: &Catalog, tenant: &TenantId, matchers: &[Matcher]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let sel = catalog
        .select(tenant, matchers, i64::MIN, i64::MAX, deadline)
        .await;
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
    assert_eq!(sel.series.len(), SERIES / GROUPS);
    futures::stream::iter(sel.series.iter().flat_map(|s| s.chunks.iter()))
        .map(|c| catalog.read_chunk(c, deadline))
        .buffer_unordered(READ_CONCURRENCY)
        .map(|b| b.unwrap().len())
        .fold(0, |acc, n| async move { acc + n })
        .await
}

/// The same query as the server runs it: select, then `read_chunks`, which reads each
/// object's wanted chunks with one coalesced range GET.
async fn query_coalesced(catalog: &Catalog, tenant: &TenantId, matchers: &[Matcher]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let sel = catalog
        .select(tenant, matchers, i64::MIN, i64::MAX, deadline)
        .await;
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
    let chunks: Vec<_> = sel
        .series
        .iter()
        .flat_map(|s| s.chunks.iter().cloned())
        .collect();
    catalog
        .read_chunks(&chunks, deadline)
        .await
        .into_iter()
        .map(|b| b.unwrap().len())
        .sum()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("file://{}", dir.path().display()),
        &StoreOptions::default(),
    )
    .unwrap();
    let tenant = TenantId::parse("bench").unwrap();
    rt.block_on(write_objects(&store, &tenant));

    let catalog = |cache_bytes| {
        let breaker = Arc::new(CircuitBreaker::new(CircuitConfig::default()));
        let cfg = CatalogConfig {
            cache_bytes,
            ..CatalogConfig::default()
        };
        let catalog = Catalog::new(store.clone(), breaker, cfg);
        assert_eq!(rt.block_on(catalog.load()).unwrap(), OBJECTS as usize);
        catalog
    };
    let cold = catalog(0);
    let warm = catalog(256 << 20);
    let matchers = [Matcher::new(MatchOp::Eq, "group", "g0").unwrap()];
    let bytes = rt.block_on(query(&warm, &tenant, &matchers));
    let chunks_per_query = (SERIES / GROUPS) as u64 * OBJECTS as u64;

    let mut g = c.benchmark_group("store_read");
    g.throughput(Throughput::Elements(chunks_per_query));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("query_100_series_20_objects_cold", |b| {
        b.iter(|| rt.block_on(query(&cold, &tenant, &matchers)))
    });
    g.bench_function("query_100_series_20_objects_cold_coalesced", |b| {
        b.iter(|| rt.block_on(query_coalesced(&cold, &tenant, &matchers)))
    });
    g.bench_function("query_100_series_20_objects_warm", |b| {
        b.iter(|| rt.block_on(query(&warm, &tenant, &matchers)))
    });
    g.finish();
    let s = warm.cache_stats();
    eprintln!(
        "per query: {chunks_per_query} chunks, {bytes} chunk bytes; warm cache: {} bytes, {} entries, {} misses",
        s.bytes,
        s.entries,
        s.index_misses + s.chunk_misses
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
