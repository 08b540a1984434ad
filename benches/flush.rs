//! The flusher end to end: a head of 10 000 node_exporter-like series with two closed
//! chunks each (2.4 M samples), flushed by `Flusher::flush_all` into a `file://` store
//! (choosing, copying, encoding the objects, writing them, WAL flush marks). Reported as
//! samples per second; the target is ≥ 1 M samples/s.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use weft::flush::{FlushConfig, Flusher, ObjectListener};
use weft::head::{Head, HeadConfig};
use weft::ingest::Ingester;
use weft::metrics::Metrics;
use weft::model::TenantId;
use weft::pressure::Memory;
use weft::proto::{decode_write_request, WriteBatch};
use weft::store::object::ObjectKey;
use weft::store::retry::{CircuitBreaker, CircuitConfig};
use weft::store::{Store, StoreOptions};
use weft::wal::{SyncMode, WalConfig};

const SERIES: usize = 10_000;
const SAMPLES: usize = 240;
const STEP_MS: i64 = 15_000;

#[derive(Debug)]
struct Nobody;

impl ObjectListener for Nobody {
    fn uploaded(&self, _: &ObjectKey, _: u64) {}
    fn released(&self, _: &ObjectKey) {}
}

fn flush(c: &mut Criterion) {
    let seed = common::seed();
    let series = common::node_exporter_series(SERIES, &mut common::rng(seed));
    let requests: Vec<Vec<u8>> = (0..SAMPLES)
        .map(|i| common::write_request(&series, i as i64 * STEP_MS, i as u64).encode_to_vec())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("flush");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements((SERIES * SAMPLES) as u64));
    g.bench_function("file_store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let metrics = Arc::new(Metrics::new());
                let head = Arc::new(Head::new(HeadConfig::default(), metrics.clone()));
                let (ingester, _) = Ingester::open(
                    head.clone(),
                    &dir.path().join("wal"),
                    WalConfig {
                        sync: SyncMode::Never,
                        ..WalConfig::default()
                    },
                )
                .unwrap();
                let tenant = head.tenant_or_create(&TenantId::parse("bench").unwrap());
                let mut batch = WriteBatch::default();
                for raw in &requests {
                    batch = batch.recycle();
                    decode_write_request(raw, &mut batch).unwrap();
                    tenant.append(&batch, None);
                }
                let store = Store::open(
                    &format!("file://{}", dir.path().join("store").display()),
                    &StoreOptions::default(),
                )
                .unwrap();
                let flusher = Flusher::new(
                    FlushConfig::default(),
                    head.clone(),
                    Arc::new(ingester),
                    store,
                    Arc::new(CircuitBreaker::new(CircuitConfig::default())),
                    Arc::new(Nobody),
                    metrics.clone(),
                    Arc::new(Memory::new(u64::MAX, &metrics)),
                );
                let start = Instant::now();
                let s = rt
                    .block_on(flusher.flush_all(Duration::from_secs(600)))
                    .unwrap();
                total += start.elapsed();
                assert_eq!(s.chunks, (SERIES * SAMPLES / 120) as u64);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, flush);
criterion_main!(benches);
