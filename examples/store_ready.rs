//! Time to `/ready` and catalog memory with 10,000 objects in the store, before and after
//! compaction (issue 9: "the catalog, and the time to `/ready`, stay bounded as the store
//! grows").
//!
//! ```sh
//! cargo build
//! cargo run --example store_ready -- target/debug/weft 10000
//! ```
//!
//! Arguments, all optional: the weft binary (default `target/debug/weft`) and the number of
//! objects (default 10,000).
//!
//! Steps:
//! 1. Write the objects straight into a `file://` store with weft's object format: 4
//!    tenants, each object 8 series × one 120-sample chunk, one object per tenant every
//!    ~17 minutes of sample time, over the 30 days before now (what a month of flushes
//!    leaves). Also start weft on an empty store, for the baseline RSS.
//! 2. Start `weft serve` on a fresh data directory (compactor off): time spawn → `/ready`
//!    200, RSS, `weft_catalog_objects`, `weft_catalog_bytes`; time a series-API call over
//!    the whole month (every index is read).
//! 3. Restart it on the same data directory (saved listing, local index copies): time again.
//! 4. `weft compact --once` (block margin 1m): objects and bytes after.
//! 5. A fresh `weft serve` again: time to ready, RSS, the month-long series call.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft::model::{Labels, TenantId};
use weft::store::object::{ChunkData, ObjectBuilder, ObjectKey};
use weft::store::{Store, StoreOptions};

const TENANTS: usize = 4;
const SERIES: usize = 8;
const DAY_MS: i64 = 86_400_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/debug/weft".into());
    let n: usize = args
        .next()
        .map_or(10_000, |s| s.parse().expect("object count"));
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("store");
    let url = format!("file://{}", store_dir.display());
    let now = weft::compact::now_ms();

    let t = Instant::now();
    let bytes = write_objects(&url, n, now);
    println!(
        "wrote {n} objects ({bytes} bytes) in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let empty = format!("file://{}", dir.path().join("empty").display());
    let base = start(&bin, &dir.path().join("d0"), &empty);
    println!(
        "empty store:         ready in {:>7.3}s, RSS {:>6.1} MiB",
        base.ready_s,
        base.rss_mib()
    );
    base.stop();

    let a = start(&bin, &dir.path().join("d1"), &url);
    let series_s = a.series_month(now);
    println!(
        "{n} objects, fresh:  ready in {:>7.3}s, RSS {:>6.1} MiB, catalog {} objects / {} bytes, month series call {:.3}s",
        a.ready_s,
        a.rss_mib(),
        a.metric("weft_catalog_objects"),
        a.metric("weft_catalog_bytes"),
        series_s
    );
    a.stop();
    let a = start(&bin, &dir.path().join("d1"), &url);
    println!(
        "{n} objects, restart: ready in {:>7.3}s, RSS {:>6.1} MiB",
        a.ready_s,
        a.rss_mib()
    );
    a.stop();

    let t = Instant::now();
    let status = Command::new(&bin)
        .args([
            "compact",
            "--store",
            &url,
            "--once",
            "--compactor.block-margin=1m",
        ])
        .env("NO_COLOR", "1")
        .stderr(Stdio::null())
        .status()
        .expect("weft compact");
    assert!(status.success());
    let (objects, bytes_after) = totals(&store_dir);
    println!(
        "weft compact --once: {:.1}s; {n} objects / {bytes} bytes -> {objects} objects / {bytes_after} bytes",
        t.elapsed().as_secs_f64()
    );

    let b = start(&bin, &dir.path().join("d2"), &url);
    let series_s = b.series_month(now);
    println!(
        "after compaction:    ready in {:>7.3}s, RSS {:>6.1} MiB, catalog {} objects / {} bytes, month series call {:.3}s",
        b.ready_s,
        b.rss_mib(),
        b.metric("weft_catalog_objects"),
        b.metric("weft_catalog_bytes"),
        series_s
    );
    b.stop();
}

/// Writes `n` objects over the 30 days before `now`; returns their bytes.
fn write_objects(url: &str, n: usize, now: i64) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(url, &StoreOptions::default()).unwrap();
    let per_tenant = n.div_ceil(TENANTS);
    let span = 30 * DAY_MS / per_tenant as i64;
    let start = now - 30 * DAY_MS - DAY_MS;
    let mut total = 0u64;
    rt.block_on(async {
        for i in 0..n {
            let tenant = TenantId::parse(&format!("tenant-{}", i % TENANTS)).unwrap();
            let lo = start + (i / TENANTS) as i64 * span;
            let mut b = ObjectBuilder::new();
            for s in 0..SERIES {
                let l =
                    Labels::from_strs([("__name__", "ready_test"), ("series", &format!("{s:02}"))])
                        .unwrap();
                let step = span / 120;
                let samples: Vec<(i64, f64)> = (0..120)
                    .map(|k| (lo + k * step, (i * 7 + s + k as usize) as f64))
                    .collect();
                let data = weft::chunk::encode(samples.iter().copied());
                b.add_series(
                    &l,
                    &[ChunkData {
                        min_t: samples[0].0,
                        max_t: samples[119].0,
                        data: &data,
                        encoding: weft::store::object::ENCODING_XOR,
                    }],
                )
                .unwrap();
            }
            let obj = b.finish().unwrap();
            let key = ObjectKey::new(tenant, obj.min_t, obj.max_t, "ing-1", i as u64).unwrap();
            total += obj.bytes.len() as u64;
            store
                .put(&key.to_path(store.prefix()), obj.bytes)
                .await
                .unwrap();
        }
    });
    total
}

fn totals(dir: &Path) -> (u64, u64) {
    let (mut n, mut b) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.parent().is_some_and(|q| q.ends_with("chunks")) {
                n += 1;
                b += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (n, b)
}

struct Running {
    child: Child,
    base: String,
    ready_s: f64,
    client: reqwest::blocking::Client,
}

fn start(bin: &str, data: &Path, url: &str) -> Running {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--compactor.enabled=false",
        ])
        .arg("--data-dir")
        .arg(data)
        .args(["--store", url])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("weft exited").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let base = format!("http://{addr}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    loop {
        if client
            .get(format!("{base}/ready"))
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    Running {
        child,
        base,
        ready_s: t.elapsed().as_secs_f64(),
        client,
    }
}

impl Running {
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    fn metric(&self, name: &str) -> String {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    }

    /// One series-API call per tenant over the whole month: reads every object's index.
    fn series_month(&self, now: i64) -> f64 {
        let t = Instant::now();
        for i in 0..TENANTS {
            let r = self
                .client
                .get(format!(
                    "{}/api/v1/series?match[]=ready_test&start={}&end={}",
                    self.base,
                    (now - 40 * DAY_MS) / 1000,
                    now / 1000
                ))
                .header("X-Scope-OrgID", format!("tenant-{i}"))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let body = r.text().unwrap();
            assert!(!body.contains("warnings"), "partial: {body}");
            assert_eq!(body.matches("ready_test").count(), SERIES, "{body}");
        }
        t.elapsed().as_secs_f64()
    }

    fn stop(mut self) {
        // SAFETY: kill(2) of our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
