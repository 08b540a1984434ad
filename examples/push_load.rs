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
    let bodies = common::push_bodies(writers, per_writer, seed, t0);
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
        common::wait_ok(&format!("http://{addr}/ready"));
        let rate = common::push_all(&[format!("http://{addr}/api/v1/push")], bodies.clone());
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
        let port = common::free_port();
        let mut child = std::process::Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting victoria-metrics");
        common::wait_ok(&format!("http://127.0.0.1:{port}/health"));
        let rate = common::push_all(
            &[format!("http://127.0.0.1:{port}/api/v1/write")],
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
        let port = common::free_port();
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
        common::wait_ok(&format!("http://127.0.0.1:{port}/-/ready"));
        let rate = common::push_all(&[format!("http://127.0.0.1:{port}/api/v1/write")], bodies);
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
