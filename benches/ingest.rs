//! `ingest`: decompress and decode a realistic 1000-series remote-write request and append it
//! to a warm head, the whole write path short of HTTP. Target: ≥ 3 M samples/s on one core.

mod common;

use std::sync::Arc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use weft::head::{Head, HeadConfig};
use weft::metrics::Metrics;
use weft::model::TenantId;
use weft::proto::{compress, decode_write_request, decompress, decompress_into, WriteBatch};

const SERIES: usize = 1000;
/// Requests made ahead of each timed run.
const AHEAD: u64 = 32;

fn ingest(c: &mut Criterion) {
    let mut rng = common::rng(common::seed());
    let series = common::node_exporter_series(SERIES, &mut rng);
    let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
    let tenant = head.tenant_or_create(&TenantId::parse("bench").unwrap());
    // Warm the head: every series exists, so the benchmark measures the steady state.
    let body = compress(&common::write_request(&series, 0, 0).encode_to_vec());
    let raw = decompress(&body, 64 << 20).unwrap();
    let mut batch = WriteBatch::default();
    decode_write_request(&raw, &mut batch).unwrap();
    assert_eq!(tenant.append(&batch, None).appended, SERIES as u64);

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(SERIES as u64));
    let mut step = 0u64;
    let mut raw = Vec::new();
    let mut reuse: WriteBatch<'static> = WriteBatch::default();
    g.bench_function("node_exporter_1000_series", |b| {
        b.iter_custom(|iters| {
            // Requests are made ahead, a few dozen at a time, outside the timed part: making
            // one (prost encode + snappy compress) costs as much as ingesting it and would
            // evict the head from the caches between every two measured pushes.
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(AHEAD);
                let bodies: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        step += 1;
                        compress(
                            &common::write_request(&series, step as i64 * 15_000, step)
                                .encode_to_vec(),
                        )
                    })
                    .collect();
                let start = Instant::now();
                for body in &bodies {
                    // As the server does: decode buffers are reused from request to request.
                    decompress_into(black_box(body), 64 << 20, &mut raw).unwrap();
                    let mut batch = std::mem::take(&mut reuse).recycle();
                    decode_write_request(&raw, &mut batch).unwrap();
                    let r = tenant.append(&batch, None);
                    assert_eq!(r.appended, SERIES as u64);
                    reuse = batch.recycle();
                }
                timed += start.elapsed();
                left -= n;
            }
            timed
        })
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
