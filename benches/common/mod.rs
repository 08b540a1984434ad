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
                histograms: Vec::new(),
            })
            .collect(),
        metadata: Vec::new(),
    }
}

/// A seeded RNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Labels of series `i` of a node_exporter-like fleet: about ten labels, several of them
/// unique per series (`instance`, `series_id`), `metric_names` metric names in all.
pub fn node_labels(i: usize, metric_names: usize) -> Vec<prompb::Label> {
    let host = i / 100;
    let mut l = vec![
        ("__name__", format!("node_metric_{}", i % metric_names)),
        ("cluster", format!("eu-west-{}", host % 3)),
        ("cpu", (i % 16).to_string()),
        ("datacenter", "dc1".to_string()),
        ("env", "production".to_string()),
        (
            "instance",
            format!(
                "10.{}.{}.{}:9100",
                host / 65536,
                (host / 256) % 256,
                host % 256
            ),
        ),
        ("job", "node".to_string()),
        (
            "mode",
            ["idle", "user", "system", "iowait"][i % 4].to_string(),
        ),
        ("region", "eu-west".to_string()),
        ("series_id", i.to_string()),
    ];
    l.sort();
    l.into_iter()
        .map(|(n, v)| prompb::Label {
            name: n.into(),
            value: v,
        })
        .collect()
}

/// Starts the `weft` binary at `bin` with `args`, and returns it with the address from its
/// `listening on http://ADDR` line. Its stderr is drained in a thread from then on.
pub fn spawn_weft(bin: &str, args: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(bin)
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting weft");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("weft exited before listening")
            .expect("reading weft's stderr");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Push bodies for load examples: `writers` sets of `per_writer` snappy-compressed
/// remote-write 1.0 requests, each of 1000 node_exporter-like series of their own (label
/// `writer`), one sample a series at 15 s steps from `t0`.
pub fn push_bodies(writers: usize, per_writer: u64, seed: u64, t0: i64) -> Vec<Vec<Vec<u8>>> {
    use prost::Message;
    (0..writers)
        .map(|w| {
            let mut rng = rng(seed + w as u64);
            let mut series = node_exporter_series(1000, &mut rng);
            for s in &mut series {
                s.push(prompb::Label {
                    name: "writer".into(),
                    value: w.to_string(),
                });
                s.sort_by(|a, b| a.name.cmp(&b.name));
            }
            (1..=per_writer)
                .map(|step| {
                    weft::proto::compress(
                        &write_request(&series, t0 + step as i64 * 15_000, step).encode_to_vec(),
                    )
                })
                .collect()
        })
        .collect()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to 60 s for `url` to answer 200.
pub fn wait_ok(url: &str) {
    let client = reqwest::blocking::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while client.get(url).send().map_or(true, |r| r.status() != 200) {
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never answered 200"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Pushes every writer's bodies from its own thread, all at once (writer `w` to
/// `urls[w % urls.len()]`); returns acknowledged samples a second (1000 a request).
pub fn push_all(urls: &[String], bodies: Vec<Vec<Vec<u8>>>) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let acked = std::sync::Arc::new(AtomicU64::new(0));
    let start = std::time::Instant::now();
    let handles: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(w, bodies)| {
            let acked = acked.clone();
            let url = urls[w % urls.len()].clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for body in bodies {
                    let r = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body)
                        .send()
                        .expect("push");
                    assert!(
                        r.status().is_success(),
                        "push to {url} failed: {}",
                        r.status()
                    );
                    acked.fetch_add(1000, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    acked.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
