//! The append phase alone, as the server runs it (head append plus the WAL log it builds),
//! with nothing else in the process to profile: 1000 node_exporter-like series, one sample
//! each a request, requests decoded once and replayed with advancing timestamps.
//!
//! `cargo run --release --example append_phase [passes]`; for a profile,
//! `perf record -g target/release/examples/append_phase 400`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use weft::head::{Head, HeadConfig, WalLog};
use weft::metrics::Metrics;
use weft::model::TenantId;
use weft::proto::{decode_write_request, WriteBatch};

const SERIES: usize = 1000;
const REQUESTS: usize = 120;

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut rng = common::rng(common::seed());
    let series = common::node_exporter_series(SERIES, &mut rng);
    let raws: Vec<Vec<u8>> = (0..REQUESTS)
        .map(|i| common::write_request(&series, i as i64 * 15_000, i as u64).encode_to_vec())
        .collect();
    let mut batches: Vec<WriteBatch<'_>> = raws
        .iter()
        .map(|raw| {
            let mut b = WriteBatch::default();
            decode_write_request(raw, &mut b).unwrap();
            b
        })
        .collect();
    let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
    let tenant = head.tenant_or_create(&TenantId::parse("bench").unwrap());
    let mut log = WalLog::default();
    let mut took = Duration::ZERO;
    let mut samples = 0u64;
    for pass in 0..passes {
        for b in &mut batches {
            if pass > 0 {
                for s in &mut b.samples {
                    s.0 += REQUESTS as i64 * 15_000;
                }
            }
            log.clear();
            let a = Instant::now();
            let r = tenant.append(b, Some(&mut log));
            took += a.elapsed();
            assert_eq!(r.appended, SERIES as u64);
            samples += r.appended;
        }
        // What the flusher would do meanwhile: keep memory flat.
        if pass % 10 == 9 {
            tenant.cut_due(i64::MAX, 0, Duration::MAX, true);
            for s in tenant.all_series() {
                let mut p = Vec::new();
                s.pending(&mut p);
                let min_ts: Vec<i64> = p.iter().map(|c| c.min_t).collect();
                s.take_for_flush(&min_ts);
                s.finish_flush(&min_ts, true, 0);
            }
            tenant.release_flushed(Duration::ZERO, true, &|_| true);
        }
    }
    let ns = took.as_secs_f64() * 1e9 / samples as f64;
    println!(
        "append (head + WAL log): {ns:.0} ns/sample, {:.2} M samples/s, {samples} samples",
        1e3 / ns
    );
}
