//! Realistic workloads shared by the benchmarks: node_exporter-like series.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft::proto::prompb;

/// The seed every benchmark uses unless `WEFT_BENCH_SEED` says otherwise; printed once.
pub fn seed() -> u64 {
    let seed = std::env::var("WEFT_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    eprintln!("benchmark seed: {seed} (set WEFT_BENCH_SEED to change)");
    seed
}

/// Label sets like node_exporter's: about ten labels, sorted, as Prometheus sends them.
pub fn node_exporter_series(n: usize, rng: &mut StdRng) -> Vec<Vec<prompb::Label>> {
    const METRICS: &[&str] = &[
        "node_cpu_seconds_total",
        "node_network_receive_bytes_total",
        "node_filesystem_avail_bytes",
        "node_disk_io_time_seconds_total",
        "node_memory_MemAvailable_bytes",
    ];
    const MODES: &[&str] = &[
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    (0..n)
        .map(|i| {
            let host = i / 50;
            let mut l = vec![
                ("__name__", METRICS[i % METRICS.len()].to_string()),
                ("cluster", format!("eu-west-{}", host % 3)),
                ("cpu", (i % 16).to_string()),
                ("datacenter", "dc1".to_string()),
                (
                    "env",
                    if host % 4 == 0 {
                        "staging"
                    } else {
                        "production"
                    }
                    .to_string(),
                ),
                (
                    "instance",
                    format!("10.1.{}.{}:9100", host / 250, host % 250),
                ),
                ("job", "node".to_string()),
                ("mode", MODES[rng.random_range(0..MODES.len())].to_string()),
                ("region", "eu-west".to_string()),
                ("series_id", i.to_string()),
            ];
            l.sort();
            l.into_iter()
                .map(|(n, v)| prompb::Label {
                    name: n.to_string(),
                    value: v,
                })
                .collect()
        })
        .collect()
}

/// One remote-write request: one sample per series at `t_ms`, values like counters.
pub fn write_request(series: &[Vec<prompb::Label>], t_ms: i64, step: u64) -> prompb::WriteRequest {
    prompb::WriteRequest {
        timeseries: series
            .iter()
            .enumerate()
            .map(|(i, labels)| prompb::TimeSeries {
                labels: labels.clone(),
                samples: vec![prompb::Sample {
                    value: (i as u64 * 1000 + step * (i as u64 % 7 + 1)) as f64 * 0.25,
                    timestamp: t_ms,
                }],
                exemplars: Vec::new(),
            })
            .collect(),
        metadata: Vec::new(),
    }
}

/// A seeded RNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
