//! End-to-end push throughput of a running `weft`: W writer threads each push N requests of
//! 1000 node_exporter-like series (their own series) over HTTP, made before the clock starts,
//! and the acknowledged samples per second are printed. Compare `--wal.sync always` with
//! `never`:
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/push_load target/release/weft always 8 150
//! target/release/examples/push_load target/release/weft never 8 150
//! ```
//!
//! `compare` pushes the same requests, in the same run, to weft (`--wal.sync=always`),
//! VictoriaMetrics (`/api/v1/write`) and Prometheus (`--web.enable-remote-write-receiver`),
//! one after the other, each fresh on a temporary directory, and prints the ratios:
//!
//! ```sh
//! target/release/examples/push_load compare target/release/weft 8 150
//! ```
//!
//! Timestamps end about now, so that Prometheus's head takes them.

#[path = "../benches/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use weft::proto::compress;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let compare = args.peek().map(String::as_str) == Some("compare");
    if compare {
        args.next();
    }
    let bin = args.next().unwrap_or_else(|| "target/release/weft".into());
    let sync = if compare {
        "always".to_string()
    } else {
        args.next().unwrap_or_else(|| "always".into())
    };
    let writers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    let per_writer: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(150);
    let seed = common::seed();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - (per_writer as i64 + 1) * 15_000;
    let bodies: Vec<Vec<Vec<u8>>> = (0..writers)
        .map(|w| {
            let mut rng = common::rng(seed + w as u64);
            let mut series = common::node_exporter_series(1000, &mut rng);
            for s in &mut series {
                s.push(weft::proto::prompb::Label {
                    name: "writer".into(),
                    value: w.to_string(),
                });
                s.sort_by(|a, b| a.name.cmp(&b.name));
            }
            (1..=per_writer)
                .map(|step| {
                    compress(
                        &common::write_request(&series, t0 + step as i64 * 15_000, step)
                            .encode_to_vec(),
                    )
                })
                .collect()
        })
        .collect();
    let weft_rate = {
        let dir = std::env::temp_dir().join(format!("weft-load-{}", std::process::id()));
        let (mut child, addr) = common::spawn_weft(
            &bin,
            &[
                "serve".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--wal.sync".as_ref(),
                sync.as_ref(),
                "--data-dir".as_ref(),
                dir.as_os_str(),
            ],
        );
        wait_ok(&format!("http://{addr}/ready"));
        let rate = push_all(&format!("http://{addr}/api/v1/push"), bodies.clone());
        // Group commit: how many pushes shared each msync.
        let metrics = reqwest::blocking::get(format!("http://{addr}/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        let counter = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let (appends, syncs) = (
            counter("weft_wal_appends_total"),
            counter("weft_wal_syncs_total"),
        );
        println!(
            "weft wal appends={appends} syncs={syncs} pushes_per_sync={:.2}",
            appends / syncs.max(1.0)
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "weft sync={sync} writers={writers} acked_samples={} samples_per_sec={rate:.0}",
            writers as u64 * per_writer * 1000
        );
        rate
    };
    if !compare {
        return;
    }
    let vm_rate = {
        let dir = std::env::temp_dir().join(format!("vm-load-{}", std::process::id()));
        let port = free_port();
        let mut child = std::process::Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting victoria-metrics");
        wait_ok(&format!("http://127.0.0.1:{port}/health"));
        let rate = push_all(
            &format!("http://127.0.0.1:{port}/api/v1/write"),
            bodies.clone(),
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        println!("victoria-metrics samples_per_sec={rate:.0}");
        rate
    };
    let prom_rate = {
        let dir = std::env::temp_dir().join(format!("prom-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
        let port = free_port();
        let mut child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting prometheus");
        wait_ok(&format!("http://127.0.0.1:{port}/-/ready"));
        let rate = push_all(&format!("http://127.0.0.1:{port}/api/v1/write"), bodies);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        println!("prometheus samples_per_sec={rate:.0}");
        rate
    };
    println!(
        "weft/victoria-metrics = {:.2}x, weft/prometheus = {:.2}x",
        weft_rate / vm_rate,
        weft_rate / prom_rate
    );
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to 60 s for `url` to answer 200.
fn wait_ok(url: &str) {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(url).send().map_or(true, |r| r.status() != 200) {
        assert!(Instant::now() < deadline, "{url} never answered 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pushes every writer's bodies from its own thread, all at once; returns acknowledged
/// samples a second (1000 a request).
fn push_all(url: &str, bodies: Vec<Vec<Vec<u8>>>) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let acked = acked.clone();
            let url = url.to_string();
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
