//! Where an ingest of a 1000-series node_exporter-like request spends its time, phase by
//! phase (decompress, decode, append), over many requests. A profiling aid; the figures
//! that count come from `cargo bench --bench ingest`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use weft::head::{Head, HeadConfig};
use weft::metrics::Metrics;
use weft::model::TenantId;
use weft::proto::{compress, decode_write_request, decompress_into, WriteBatch};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut rng = common::rng(common::seed());
    let series = common::node_exporter_series(1000, &mut rng);
    let bodies: Vec<Vec<u8>> = (0..rounds)
        .map(|i| {
            compress(&common::write_request(&series, i as i64 * 15_000, i as u64).encode_to_vec())
        })
        .collect();
    let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
    let tenant = head.tenant_or_create(&TenantId::parse("bench").unwrap());
    let (mut t_dec, mut t_proto, mut t_app) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut raw = Vec::new();
    let mut reuse: WriteBatch<'static> = WriteBatch::default();
    for body in &bodies {
        let a = Instant::now();
        decompress_into(body, 64 << 20, &mut raw).unwrap();
        let b = Instant::now();
        let mut batch = std::mem::take(&mut reuse).recycle();
        decode_write_request(&raw, &mut batch).unwrap();
        let c = Instant::now();
        let r = tenant.append(&batch, None);
        let d = Instant::now();
        assert_eq!(r.appended, 1000);
        reuse = batch.recycle();
        t_dec += b - a;
        t_proto += c - b;
        t_app += d - c;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e9 / (rounds as f64 * 1000.0);
    println!(
        "per sample: decompress {:.0} ns, decode {:.0} ns, append {:.0} ns, total {:.0} ns ({:.2} M samples/s)",
        per(t_dec),
        per(t_proto),
        per(t_app),
        per(t_dec + t_proto + t_app),
        1e3 / per(t_dec + t_proto + t_app)
    );
}
