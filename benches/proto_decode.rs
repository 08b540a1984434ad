//! Remote-write decode throughput: snappy decompress + zero-copy protobuf decode of a realistic
//! request (1000 series, ~10 node_exporter-like labels each, 1 sample each), as one
//! Prometheus remote-write shard sends it.
//!
//! The same request is also encoded as remote write 2.0 (`io.prometheus.write.v2.Request`,
//! one symbol table for the whole request) and decoded by the 2.0 decoder (`*_v2`).
//!
//! The request is generated from a seeded RNG (`WEFT_BENCH_SEED`, default below) and the seed
//! is printed, so a number can be reproduced exactly.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use weft::proto::prompb::{Label, Sample, TimeSeries, WriteRequest};
use weft::proto::{
    compress, decode_write_request, decode_write_request_v2, decompress, decompress_into,
    prompb_v2, WriteBatch,
};

const SERIES: usize = 1000;
const DEFAULT_SEED: u64 = 0x5eed_2042;
const MAX_DECOMPRESSED_BYTES: usize = 32 << 20;

/// Metric names with the labels node_exporter adds to them.
const METRICS: &[(&str, &[&str])] = &[
    ("node_cpu_seconds_total", &["cpu", "mode"]),
    ("node_network_receive_bytes_total", &["device"]),
    ("node_network_transmit_packets_total", &["device"]),
    (
        "node_filesystem_avail_bytes",
        &["device", "fstype", "mountpoint"],
    ),
    ("node_disk_read_bytes_total", &["device"]),
    ("node_disk_io_time_seconds_total", &["device"]),
    ("node_memory_MemAvailable_bytes", &[]),
    ("node_load1", &[]),
    ("node_scrape_collector_duration_seconds", &["collector"]),
    ("node_hwmon_temp_celsius", &["chip", "sensor"]),
];

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn label_value(rng: &mut StdRng, name: &str) -> String {
    match name {
        "cpu" => rng.random_range(0..64).to_string(),
        "mode" => pick(
            rng,
            &[
                "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
            ],
        )
        .into(),
        "device" => pick(
            rng,
            &[
                "eth0", "eth1", "lo", "nvme0n1", "nvme1n1", "sda", "sda1", "dm-0",
            ],
        )
        .into(),
        "fstype" => pick(rng, &["ext4", "xfs", "tmpfs", "overlay"]).into(),
        "mountpoint" => pick(rng, &["/", "/boot", "/var/lib/kubelet", "/run", "/data"]).into(),
        "collector" => pick(
            rng,
            &[
                "cpu",
                "diskstats",
                "filesystem",
                "meminfo",
                "netdev",
                "hwmon",
            ],
        )
        .into(),
        "chip" => format!("platform_coretemp_{}", rng.random_range(0..2)),
        "sensor" => format!("temp{}", rng.random_range(1..17)),
        _ => unreachable!("no generator for label {name}"),
    }
}

fn request(rng: &mut StdRng) -> WriteRequest {
    let now_ms = 1_700_000_000_000i64;
    let timeseries = (0..SERIES)
        .map(|_| {
            let (metric, own) = METRICS[rng.random_range(0..METRICS.len())];
            let node = rng.random_range(0..200);
            let mut labels: Vec<(String, String)> = vec![
                ("__name__".into(), metric.into()),
                ("cluster".into(), "prod-eu-west-1".into()),
                ("container".into(), "node-exporter".into()),
                ("endpoint".into(), "http-metrics".into()),
                (
                    "instance".into(),
                    format!(
                        "10.{}.{}.{}:9100",
                        node / 64,
                        node % 64,
                        rng.random_range(2..250)
                    ),
                ),
                ("job".into(), "node-exporter".into()),
                ("namespace".into(), "monitoring".into()),
                (
                    "node".into(),
                    format!(
                        "ip-10-0-{}-{}.eu-west-1.compute.internal",
                        node / 64,
                        node % 64
                    ),
                ),
                (
                    "pod".into(),
                    format!("node-exporter-{:05x}", rng.random_range(0..0xfffff)),
                ),
            ];
            labels.extend(own.iter().map(|&n| (n.to_string(), label_value(rng, n))));
            // Prometheus sends labels sorted by name.
            labels.sort();
            TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples: vec![Sample {
                    value: if rng.random_bool(0.5) {
                        rng.random_range(0.0..1e12f64).floor()
                    } else {
                        rng.random::<f64>() * 100.0
                    },
                    timestamp: now_ms + rng.random_range(0..15_000),
                }],
                exemplars: vec![],
            }
        })
        .collect();
    WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

/// The same request as remote write 2.0: labels interned in one symbol table.
fn request_v2(req: &WriteRequest) -> prompb_v2::Request {
    let mut symbols = vec![String::new()];
    let mut index = std::collections::HashMap::from([(String::new(), 0u32)]);
    let mut sym = |s: &str| -> u32 {
        *index.entry(s.to_string()).or_insert_with(|| {
            symbols.push(s.to_string());
            symbols.len() as u32 - 1
        })
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| prompb_v2::TimeSeries {
            labels_refs: ts
                .labels
                .iter()
                .flat_map(|l| [sym(&l.name), sym(&l.value)])
                .collect(),
            samples: ts
                .samples
                .iter()
                .map(|s| prompb_v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                })
                .collect(),
            ..prompb_v2::TimeSeries::default()
        })
        .collect();
    prompb_v2::Request {
        symbols,
        timeseries,
    }
}

fn bench(c: &mut Criterion) {
    let seed = std::env::var("WEFT_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let req = request(&mut StdRng::seed_from_u64(seed));
    let raw = req.encode_to_vec();
    let body = compress(&raw);
    let raw_v2 = request_v2(&req).encode_to_vec();
    let body_v2 = compress(&raw_v2);
    let labels: usize = {
        let mut batch = WriteBatch::default();
        decode_write_request(&raw, &mut batch).unwrap();
        // Both encodings decode to the same batch.
        let mut v2 = WriteBatch::default();
        decode_write_request_v2(&raw_v2, &mut v2).unwrap();
        assert_eq!((&batch.labels, &batch.series), (&v2.labels, &v2.series));
        assert_eq!(batch.samples.len(), v2.samples.len());
        batch.labels.len()
    };
    println!(
        "proto_decode: seed {seed}, {SERIES} series, {labels} labels, 1 sample each; \
         {} bytes protobuf, {} bytes snappy",
        raw.len(),
        body.len()
    );
    println!(
        "proto_decode: as remote write 2.0: {} bytes protobuf, {} bytes snappy",
        raw_v2.len(),
        body_v2.len()
    );

    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements(SERIES as u64));
    // Both the decompression buffer and the batch are reused across iterations, as the API
    // layer does per connection: the steady state allocates nothing.
    let mut batch: WriteBatch<'static> = WriteBatch::default();
    let mut buf = Vec::new();
    group.bench_function("decompress_and_decode", |b| {
        b.iter(|| {
            decompress_into(black_box(&body), MAX_DECOMPRESSED_BYTES, &mut buf).unwrap();
            let raw = &buf[..];
            let mut decoded = std::mem::take(&mut batch).recycle();
            decode_write_request(raw, &mut decoded).unwrap();
            let n = decoded.samples.len();
            batch = decoded.recycle();
            black_box(n)
        })
    });
    let mut batch = WriteBatch::default();
    group.bench_function("decode", |b| {
        b.iter(|| {
            decode_write_request(black_box(&raw), &mut batch).unwrap();
            black_box(batch.samples.len())
        })
    });
    let mut batch: WriteBatch<'static> = WriteBatch::default();
    let mut buf = Vec::new();
    group.bench_function("decompress_and_decode_v2", |b| {
        b.iter(|| {
            decompress_into(black_box(&body_v2), MAX_DECOMPRESSED_BYTES, &mut buf).unwrap();
            let raw = &buf[..];
            let mut decoded = std::mem::take(&mut batch).recycle();
            decode_write_request_v2(raw, &mut decoded).unwrap();
            let n = decoded.samples.len();
            batch = decoded.recycle();
            black_box(n)
        })
    });
    let mut batch = WriteBatch::default();
    group.bench_function("decode_v2", |b| {
        b.iter(|| {
            decode_write_request_v2(black_box(&raw_v2), &mut batch).unwrap();
            black_box(batch.samples.len())
        })
    });
    group.bench_function("decompress", |b| {
        b.iter(|| decompress(black_box(&body), MAX_DECOMPRESSED_BYTES).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
