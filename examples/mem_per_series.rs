//! Memory per active series: RSS of a running `weft` after ingesting N series with one sample
//! each, minus its RSS before, divided by N.
//!
//! ```sh
//! cargo build --release && cargo run --release --example mem_per_series -- target/release/weft 100000
//! ```
//!
//! Series look like node_exporter's (about ten labels, several unique values per series).

use std::time::{Duration, Instant};

#[path = "../benches/common/mod.rs"]
mod common;

use prost::Message;
use weft::proto::{compress, prompb};

/// `field` of /proc/PID/status in bytes: `VmRSS` (all resident pages) or `RssAnon` (heap
/// and stacks only; excludes the WAL's file-backed mapped pages, which the kernel can drop).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field in /proc status");
    kb * 1024
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/release/weft".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("weft-mem-{}", std::process::id()));
    let (mut child, addr) = common::spawn_weft(
        &bin,
        &[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
        ],
    );
    let client = reqwest::blocking::Client::new();
    std::thread::sleep(Duration::from_millis(500));
    let before = status_bytes(child.id(), "VmRSS");
    let before_anon = status_bytes(child.id(), "RssAnon");
    let start = Instant::now();
    for batch in (0..n).collect::<Vec<_>>().chunks(2000) {
        let req = prompb::WriteRequest {
            timeseries: batch
                .iter()
                .map(|&i| prompb::TimeSeries {
                    labels: common::node_labels(i, 200),
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
    let after = status_bytes(child.id(), "VmRSS");
    let after_anon = status_bytes(child.id(), "RssAnon");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    let per_anon = (after_anon.saturating_sub(before_anon)) as f64 / n as f64;
    println!(
        "series={n} rss_before={before} rss_after={after} bytes_per_series={per:.0} \
         anon_before={before_anon} anon_after={after_anon} anon_bytes_per_series={per_anon:.0} ingest_secs={:.2}",
        start.elapsed().as_secs_f64()
    );
}
