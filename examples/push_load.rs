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

#[path = "../benches/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use weft::proto::compress;

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/release/weft".into());
    let sync = args.next().unwrap_or_else(|| "always".into());
    let writers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    let per_writer: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(150);
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
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("http://{addr}/ready"))
        .send()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < deadline, "weft never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seed = common::seed();
    let acked = Arc::new(AtomicU64::new(0));
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
                        &common::write_request(&series, step as i64 * 15_000, step).encode_to_vec(),
                    )
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let acked = acked.clone();
            let addr = addr.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for body in bodies {
                    let r = client
                        .post(format!("http://{addr}/api/v1/push"))
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .body(body)
                        .send()
                        .expect("push");
                    assert_eq!(r.status().as_u16(), 204, "push failed");
                    acked.fetch_add(1000, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let n = acked.load(Ordering::Relaxed);
    println!(
        "sync={sync} writers={writers} secs={elapsed:.1} acked_samples={n} samples_per_sec={:.0}",
        n as f64 / elapsed
    );
}
