//! Memory per active series: RSS of a running server after ingesting N series with four
//! samples each (four pushes of every series, 15 s apart in sample time, as a scrape would
//! send them), minus its RSS before, divided by N.
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/mem_per_series target/release/weft 100000
//! # the same load against weft, VictoriaMetrics and Prometheus, one after the other:
//! target/release/examples/mem_per_series target/release/weft 100000 --compare
//! ```
//!
//! Series look like node_exporter's (about ten labels, several unique values per series).
//! `--compare` also runs `/usr/bin/victoria-metrics` (override with `WEFT_VM_BIN`) and
//! `/usr/bin/prometheus` with `--web.enable-remote-write-receiver` (`WEFT_PROM_BIN`), each
//! in an empty data directory, each fed the very same requests at `/api/v1/write`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../benches/common/mod.rs"]
mod common;

use prost::Message;
use weft::proto::{compress, prompb};

/// Samples per series, as the issue measures.
const SAMPLES_PER_SERIES: usize = 4;

/// `field` of /proc/PID/status in bytes: `VmRSS` (all resident pages) or `RssAnon` (heap
/// and stacks only; excludes file-backed mapped pages, such as weft's WAL segments or
/// Prometheus's mmapped head chunks, which the kernel can drop).
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

/// A free local port (bound, read, released: good enough for a benchmark).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a local port")
        .port()
}

/// Polls `url` until it answers 200 (the server is up), for at most 60 s.
fn wait_ready(client: &reqwest::blocking::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client
            .get(url)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} not ready within 60 s");
}

/// One measured server: the process and where to push.
struct Server {
    name: &'static str,
    child: Child,
    push_url: String,
}

fn start_weft(bin: &str, dir: &std::path::Path, client: &reqwest::blocking::Client) -> Server {
    let (child, addr) = common::spawn_weft(
        bin,
        &[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
        ],
    );
    wait_ready(client, &format!("http://{addr}/ready"));
    Server {
        name: "weft",
        child,
        push_url: format!("http://{addr}/api/v1/push"),
    }
}

fn start_vm(dir: &std::path::Path, client: &reqwest::blocking::Client) -> Server {
    let bin = std::env::var("WEFT_VM_BIN").unwrap_or_else(|_| "/usr/bin/victoria-metrics".into());
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting victoria-metrics");
    wait_ready(client, &format!("http://127.0.0.1:{port}/health"));
    Server {
        name: "victoria-metrics",
        child,
        push_url: format!("http://127.0.0.1:{port}/api/v1/write"),
    }
}

fn start_prometheus(dir: &std::path::Path, client: &reqwest::blocking::Client) -> Server {
    let bin = std::env::var("WEFT_PROM_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
    let port = free_port();
    std::fs::create_dir_all(dir).expect("prometheus dir");
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").expect("prometheus config");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--log.level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    wait_ready(client, &format!("http://127.0.0.1:{port}/-/ready"));
    Server {
        name: "prometheus",
        child,
        push_url: format!("http://127.0.0.1:{port}/api/v1/write"),
    }
}

/// Pushes every series `SAMPLES_PER_SERIES` times and returns the per-series figures.
fn measure(mut server: Server, n: usize, client: &reqwest::blocking::Client) -> String {
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = status_bytes(pid, "VmRSS");
    let before_anon = status_bytes(pid, "RssAnon");
    let start = Instant::now();
    let ids: Vec<usize> = (0..n).collect();
    for k in 0..SAMPLES_PER_SERIES {
        let t = 1_700_000_000_000 + 15_000 * k as i64;
        for batch in ids.chunks(2000) {
            let req = prompb::WriteRequest {
                timeseries: batch
                    .iter()
                    .map(|&i| prompb::TimeSeries {
                        labels: common::node_labels(i, 200),
                        samples: vec![prompb::Sample {
                            value: (i * 10 + k) as f64,
                            timestamp: t,
                        }],
                        exemplars: vec![],
                        histograms: Vec::new(),
                    })
                    .collect(),
                metadata: vec![],
            };
            let resp = client
                .post(&server.push_url)
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(compress(&req.encode_to_vec()))
                .send()
                .expect("push");
            assert!(
                resp.status().is_success(),
                "{} push failed: {} {:?}",
                server.name,
                resp.status(),
                resp.text()
            );
        }
    }
    let ingest_secs = start.elapsed().as_secs_f64();
    // Go servers buffer incoming rows for up to a second; give every server the same time.
    std::thread::sleep(Duration::from_secs(2));
    let after = status_bytes(pid, "VmRSS");
    let after_anon = status_bytes(pid, "RssAnon");
    let _ = server.child.kill();
    let _ = server.child.wait();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    let per_anon = (after_anon.saturating_sub(before_anon)) as f64 / n as f64;
    format!(
        "server={} series={n} samples_per_series={SAMPLES_PER_SERIES} rss_before={before} \
         rss_after={after} bytes_per_series={per:.0} anon_before={before_anon} \
         anon_after={after_anon} anon_bytes_per_series={per_anon:.0} ingest_secs={ingest_secs:.2}",
        server.name
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let compare = args.iter().any(|a| a == "--compare");
    let mut pos = args.iter().filter(|a| !a.starts_with("--"));
    let bin = pos
        .next()
        .cloned()
        .unwrap_or_else(|| "target/release/weft".into());
    let n: usize = pos.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let client = reqwest::blocking::Client::new();
    let root = std::env::temp_dir().join(format!("weft-mem-{}", std::process::id()));

    let line = measure(start_weft(&bin, &root.join("weft"), &client), n, &client);
    println!("{line}");
    if compare {
        let line = measure(start_vm(&root.join("vm"), &client), n, &client);
        println!("{line}");
        let line = measure(start_prometheus(&root.join("prom"), &client), n, &client);
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
