//! Memory per active series: RSS of a running `weft` after ingesting N series with one sample
//! each, minus its RSS before, divided by N.
//!
//! ```sh
//! cargo build --release && cargo run --release --example mem_per_series -- target/release/weft 100000
//! ```
//!
//! Series look like node_exporter's (about ten labels, several unique values per series).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use weft::proto::{compress, prompb};

fn rss_bytes(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status");
    kb * 1024
}

fn labels(i: usize) -> Vec<prompb::Label> {
    let host = i / 100;
    let mut l = vec![
        ("__name__", format!("node_metric_{}", i % 200)),
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

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/release/weft".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("weft-mem-{}", std::process::id()));
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("weft exited before listening").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let client = reqwest::blocking::Client::new();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(child.id());
    let start = Instant::now();
    for batch in (0..n).collect::<Vec<_>>().chunks(2000) {
        let req = prompb::WriteRequest {
            timeseries: batch
                .iter()
                .map(|&i| prompb::TimeSeries {
                    labels: labels(i),
                    samples: vec![prompb::Sample {
                        value: i as f64,
                        timestamp: 1_700_000_000_000,
                    }],
                    exemplars: vec![],
                })
                .collect(),
            metadata: vec![],
        };
        let resp = client
            .post(format!("http://{addr}/api/v1/push"))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .body(compress(&req.encode_to_vec()))
            .send()
            .expect("push");
        assert_eq!(
            resp.status().as_u16(),
            204,
            "push failed: {:?}",
            resp.text()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_bytes(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "series={n} rss_before={before} rss_after={after} bytes_per_series={per:.0} ingest_secs={:.2}",
        start.elapsed().as_secs_f64()
    );
}
