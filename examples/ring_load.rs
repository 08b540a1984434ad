//! End-to-end push throughput of a ring against a single node, in the same run: W writer
//! threads push N requests of 1000 series each, first to one plain `weft`, then to a ring
//! of three `weft` nodes on a real etcd (replication factor 3, each writer on its own node,
//! so every push is split and two thirds of it forwarded), all on this machine. Prints the
//! acknowledged samples a second of each, their ratio, and the forwarding figures of the
//! ring (`weft_ring_forward_*`).
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/ring_load target/release/weft 6 100
//! ```
//!
//! On one machine the ring's three nodes share its cores, and each sample is appended,
//! logged and synced three times: the ratio is the cost of replication on one box, not
//! what three machines give.

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/release/weft".into());
    let writers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(6);
    let per_writer: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let seed = common::seed();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - (per_writer as i64 + 1) * 15_000;
    let bodies = common::push_bodies(writers, per_writer, seed, t0);
    let root = std::env::temp_dir().join(format!("weft-ring-load-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();

    let single = {
        let (mut child, addr) = spawn(&bin, &root.join("single"), &[]);
        common::wait_ok(&format!("http://{addr}/ready"));
        let rate = common::push_all(&[format!("http://{addr}/api/v1/push")], bodies.clone());
        let _ = child.kill();
        let _ = child.wait();
        println!("single node: samples_per_sec={rate:.0}");
        rate
    };

    let (mut etcd, endpoint) = start_etcd(&root.join("etcd"));
    let mut nodes = Vec::new();
    for i in 0..3 {
        let id = format!("r{i}");
        let (child, addr) = spawn(
            &bin,
            &root.join(&id),
            &[
                "--ring.etcd-endpoints",
                &endpoint,
                "--ring.instance-id",
                &id,
                "--ring.replication-factor",
                "3",
            ],
        );
        nodes.push((child, addr));
    }
    for (_, addr) in &nodes {
        common::wait_ok(&format!("http://{addr}/ready"));
    }
    // Every node must see the three before the clock starts.
    let client = reqwest::blocking::Client::new();
    for (_, addr) in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v: serde_json::Value = client
                .get(format!("http://{addr}/ring?format=json"))
                .send()
                .and_then(|r| r.text())
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let active = v["instances"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|i| i["state"] == "ACTIVE").count());
            if active == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "the ring never had three ACTIVE");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let urls: Vec<String> = nodes
        .iter()
        .map(|(_, a)| format!("http://{a}/api/v1/push"))
        .collect();
    let ring = common::push_all(&urls, bodies);
    println!("ring of 3, rf 3: samples_per_sec={ring:.0}");
    let mut forwarded = 0.0;
    let mut duration_sum = 0.0;
    for (_, addr) in &nodes {
        let m = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        for l in m.lines() {
            let value = || {
                l.split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if l.starts_with("weft_ring_forward_requests_total{") && l.contains("result=\"ok\"") {
                forwarded += value();
            } else if l.starts_with("weft_ring_forward_duration_seconds_sum") {
                duration_sum += value();
            } else if l.starts_with("weft_ring_forward_requests_total{") {
                println!("  not ok: {l}");
            }
        }
    }
    println!(
        "  forwarded pushes: {forwarded:.0}, mean forward time {:.1} ms",
        1000.0 * duration_sum / forwarded.max(1.0)
    );
    println!("ring/single = {:.2}x", ring / single);
    for (mut c, _) in nodes {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = etcd.kill();
    let _ = etcd.wait();
    let _ = std::fs::remove_dir_all(&root);
}

fn spawn(bin: &str, dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--wal.sync".as_ref(),
        "always".as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    common::spawn_weft(bin, &args)
}

/// Debian's etcd on loopback; returns it and its client URL.
fn start_etcd(dir: &std::path::Path) -> (std::process::Child, String) {
    let (client, peer) = (common::free_port(), common::free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new("etcd")
        .args(["--name", "load", "--data-dir"])
        .arg(dir)
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("load={peer_url}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting etcd (Debian's etcd-server)");
    common::wait_ok(&format!("{url}/health"));
    (child, url)
}
