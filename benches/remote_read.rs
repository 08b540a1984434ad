//! `remote_read`: serve 1000 series × 2 h (15 s scrape interval, 480 samples, 4 chunks each)
//! from the head, in SAMPLES mode and in STREAMED_XOR_CHUNKS mode, short of HTTP.

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use weft::api::read::{encode_chunk_frames, encode_samples, ReadQuery};
use weft::head::{Head, HeadConfig};
use weft::metrics::Metrics;
use weft::model::{MatchOp, Matcher, TenantId};
use weft::proto::{decode_write_request, WriteBatch};
use weft::query::{Cancel, Querier, ReadBudget};

const SERIES: usize = 1000;
const SAMPLES: usize = 480;
const STEP_MS: i64 = 15_000;

fn remote_read(c: &mut Criterion) {
    let mut rng = common::rng(common::seed());
    let series = common::node_exporter_series(SERIES, &mut rng);
    let head = Arc::new(Head::new(HeadConfig::default(), Arc::new(Metrics::new())));
    let tenant_id = TenantId::parse("bench").unwrap();
    let tenant = head.tenant_or_create(&tenant_id);
    for i in 0..SAMPLES {
        let raw = common::write_request(&series, i as i64 * STEP_MS, i as u64).encode_to_vec();
        let mut batch = WriteBatch::default();
        decode_write_request(&raw, &mut batch).unwrap();
        assert_eq!(tenant.append(&batch, None).appended, SERIES as u64);
    }
    let querier = Querier::new(head.clone());
    let queries = vec![ReadQuery {
        start: 0,
        end: SAMPLES as i64 * STEP_MS,
        matchers: vec![Matcher::new(MatchOp::Eq, "job", "node").unwrap()],
    }];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Selecting the series is part of every read.
    let prepare = || {
        rt.block_on(querier.prepare(
            &tenant_id,
            queries.clone(),
            ReadBudget::UNLIMITED,
            &Cancel::default(),
        ))
        .unwrap()
    };

    let mut g = c.benchmark_group("remote_read");
    g.sample_size(20);
    g.throughput(Throughput::Elements((SERIES * SAMPLES) as u64));
    g.bench_function("samples", |b| {
        b.iter(|| {
            let body = encode_samples(prepare(), usize::MAX, u64::MAX, &Cancel::default()).unwrap();
            assert!(!body.is_empty());
        })
    });
    g.bench_function("streamed_xor_chunks", |b| {
        b.iter(|| {
            let mut bytes = 0;
            encode_chunk_frames(prepare(), 1 << 20, |f| {
                bytes += f.len();
                true
            });
            assert!(bytes > 0);
        })
    });
    g.finish();
}

criterion_group!(benches, remote_read);
criterion_main!(benches);
