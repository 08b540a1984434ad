//! End-to-end query latency of weft's three tiers, against Prometheus 2.42 and
//! VictoriaMetrics 1.79 in the same run (issue 8).
//!
//! The same data (100 node_exporter-like series × 2 h at a 15 s interval = 48,000 samples,
//! seeded, the newest sample now) goes by remote write 1.0 into five servers on 127.0.0.1:
//!
//! - `weft memory`: weft with `--flush.period 1h`, so the head holds every chunk;
//! - `weft local disk`: flushed with `POST /ingester/flush?wait=true`, then released from
//!   memory (`--flush.retain-period 1s`); the local tier (`<data-dir>/local`) has the object;
//! - `weft store`: the same with `--local.retention 0s` (the local copy is demoted to its
//!   index) and `--cache.bytes 0`, so every query reads the chunks from the `file://` store;
//! - Prometheus, queried by remote read (SAMPLES) from its head;
//! - VictoriaMetrics, which has no remote read: `/api/v1/export` (raw samples as JSON lines)
//!   and `/api/v1/query_range?step=15s&nocache=1` are the nearest equivalents.
//!
//! Every answer (warm-ups and timed ones) is checked sample by sample against what was
//! written. Then N rounds; in each, every target is queried once (interleaved, so drift of
//! the shared machine hits all alike). A query is timed from sending the request until the
//! whole body has arrived; decoding and checking it is not timed. The same blocking HTTP
//! client serves all targets.
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/query_tiers target/release/weft 30
//! ```
//!
//! `WEFT_BENCH_SEED` sets the seed; `PROMETHEUS_BIN` and `VICTORIA_METRICS_BIN` the other
//! binaries (default `/usr/bin/prometheus`, `/usr/bin/victoria-metrics`).

#[path = "../benches/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use rand::Rng;
use reqwest::blocking::Client;
use weft::proto::prompb;
use weft::proto::{compress, decompress};

const SERIES: usize = 100;
const SAMPLES: usize = 480;
const STEP_MS: i64 = 15_000;
/// Samples of one series per remote-write request: 5 × 100 series = 500 samples, the
/// `max_samples_per_send` of Prometheus 2.42's remote write.
const SAMPLES_PER_PUSH: usize = 5;
const WARMUPS: usize = 3;

/// Series key (labels `name=value` sorted by name, comma-joined) → samples `(t_ms, value bits)`.
type Answer = BTreeMap<String, Vec<(i64, u64)>>;

/// A server we started: killed (and its temp dir removed, by the `TempDir` dropped after
/// this) when it goes out of scope, on a panic too.
struct Server {
    name: &'static str,
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The last lines of the log file of a non-weft server, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A port that was free a moment ago on 127.0.0.1 (Prometheus and VictoriaMetrics do not
/// report the port they bound, so `:0` is no use for them).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a probe socket")
        .port()
}

fn spawn_weft(bin: &str, name: &'static str, extra: &[&str]) -> Server {
    let dir = tempfile::Builder::new()
        .prefix("weft-qt-")
        .tempdir()
        .expect("temp dir");
    let store = format!("file://{}", dir.path().join("store").display());
    let mut args: Vec<&OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
        "--store".as_ref(),
        store.as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let (child, addr) = common::spawn_weft(bin, &args);
    Server {
        name,
        child,
        addr,
        dir,
    }
}

fn spawn_other(name: &'static str, bin: &str, args: impl Fn(&Path, &str) -> Vec<String>) -> Server {
    let dir = tempfile::Builder::new()
        .prefix("weft-qt-")
        .tempdir()
        .expect("temp dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("log")).expect("log file");
    let child = Command::new(bin)
        .args(args(dir.path(), &addr))
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    Server {
        name,
        child,
        addr,
        dir,
    }
}

fn wait_ready(client: &Client, s: &mut Server, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(s.url(path)).send() {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = s.child.try_wait() {
            panic!("{} exited ({status}):\n{}", s.name, s.log_tail());
        }
        assert!(
            Instant::now() < deadline,
            "{} never became ready:\n{}",
            s.name,
            s.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sum of the samples of every metric named `name` (all label sets) on weft's `/metrics`.
fn weft_metric(client: &Client, s: &Server, name: &str) -> f64 {
    let text = client
        .get(s.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn key_of<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut l: Vec<_> = labels.into_iter().collect();
    l.sort();
    l.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The data: node_exporter-like label sets; counters (`*_total`) rise by seeded steps,
/// gauges walk. Values are multiples of 0.25, so every system stores them exactly
/// (VictoriaMetrics keeps a decimal mantissa and exponent, not the float's bits).
fn make_data(seed: u64, end_ms: i64) -> (Vec<Vec<prompb::Label>>, Vec<Vec<prompb::Sample>>) {
    let mut rng = common::rng(seed);
    let labels = common::node_exporter_series(SERIES, &mut rng);
    let start_ms = end_ms - (SAMPLES as i64 - 1) * STEP_MS;
    let samples = labels
        .iter()
        .map(|l| {
            let counter = l
                .iter()
                .any(|l| l.name == "__name__" && l.value.ends_with("_total"));
            let mut v = rng.random_range(0..4_000_000) as f64 * 0.25;
            (0..SAMPLES)
                .map(|k| {
                    if counter {
                        v += rng.random_range(0..4000) as f64 * 0.25;
                    } else {
                        v = (v + rng.random_range(-2000..=2000) as f64 * 0.25).max(0.0);
                    }
                    prompb::Sample {
                        value: v,
                        timestamp: start_ms + k as i64 * STEP_MS,
                    }
                })
                .collect()
        })
        .collect();
    (labels, samples)
}

/// The remote-write 1.0 bodies (snappy protobuf) that carry the data, oldest first.
fn write_bodies(labels: &[Vec<prompb::Label>], samples: &[Vec<prompb::Sample>]) -> Vec<Vec<u8>> {
    (0..SAMPLES)
        .step_by(SAMPLES_PER_PUSH)
        .map(|k| {
            let req = prompb::WriteRequest {
                timeseries: labels
                    .iter()
                    .zip(samples)
                    .map(|(l, s)| prompb::TimeSeries {
                        labels: l.clone(),
                        samples: s[k..(k + SAMPLES_PER_PUSH).min(SAMPLES)].to_vec(),
                        exemplars: Vec::new(),
                        histograms: Vec::new(),
                    })
                    .collect(),
                metadata: Vec::new(),
            };
            compress(&req.encode_to_vec())
        })
        .collect()
}

fn push_all(client: &Client, s: &Server, path: &str, bodies: &[Vec<u8>]) {
    for body in bodies {
        let r = client
            .post(s.url(path))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.clone())
            .send()
            .unwrap_or_else(|e| panic!("push to {}: {e}", s.name));
        let status = r.status();
        assert!(
            status.is_success(),
            "push to {}: {status}: {}",
            s.name,
            r.text().unwrap_or_default()
        );
    }
}

/// How a target is asked, and how its answer is read back into samples.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    RemoteRead,
    VmExport,
    VmQueryRange,
}

struct Target<'a> {
    label: &'static str,
    what: &'static str,
    server: &'a Server,
    kind: Kind,
    times: Vec<Duration>,
    bytes: usize,
}

/// One query; returns the time to the whole body, and the body.
fn query_once(
    client: &Client,
    t: &Target<'_>,
    start_ms: i64,
    end_ms: i64,
    read_body: &[u8],
) -> (Duration, Vec<u8>, bool) {
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let req = match t.kind {
        Kind::RemoteRead => client
            .post(t.server.url("/api/v1/read"))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Read-Version", "0.1.0")
            .body(read_body.to_vec()),
        Kind::VmExport | Kind::VmQueryRange => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if t.kind == Kind::VmExport {
                q.append_pair("match[]", "{job=\"node\"}");
            } else {
                q.append_pair("query", "{job=\"node\"}");
                q.append_pair("step", "15s");
                // VictoriaMetrics caches query_range results; every timed query should
                // do the work.
                q.append_pair("nocache", "1");
            }
            q.append_pair("start", &secs(start_ms));
            q.append_pair("end", &secs(end_ms));
            let path = if t.kind == Kind::VmExport {
                "/api/v1/export"
            } else {
                "/api/v1/query_range"
            };
            client.get(format!("{}?{}", t.server.url(path), q.finish()))
        }
    };
    let began = Instant::now();
    let r = req
        .send()
        .unwrap_or_else(|e| panic!("query {}: {e}", t.label));
    let status = r.status();
    let partial = r.headers().contains_key("x-weft-partial");
    let body = r.bytes().expect("reading the answer").to_vec();
    let took = began.elapsed();
    assert!(
        status.is_success(),
        "query {}: {status}: {}",
        t.label,
        String::from_utf8_lossy(&body[..body.len().min(500)])
    );
    (took, body, partial)
}

fn decode(kind: Kind, body: &[u8]) -> Answer {
    let mut out = Answer::new();
    match kind {
        Kind::RemoteRead => {
            let raw = decompress(body, 1 << 30).expect("snappy answer");
            let resp = prompb::ReadResponse::decode(raw.as_slice()).expect("ReadResponse");
            for r in resp.results {
                for ts in r.timeseries {
                    let key = key_of(ts.labels.iter().map(|l| (&*l.name, &*l.value)));
                    out.entry(key)
                        .or_default()
                        .extend(ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())));
                }
            }
        }
        Kind::VmExport => {
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).expect("export line");
                let metric = v["metric"].as_object().expect("metric");
                let key = key_of(
                    metric
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str().unwrap_or(""))),
                );
                let ts = v["timestamps"].as_array().expect("timestamps");
                let vals = v["values"].as_array().expect("values");
                out.entry(key)
                    .or_default()
                    .extend(ts.iter().zip(vals).map(|(t, v)| {
                        let v = v
                            .as_f64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                            .expect("value");
                        (t.as_i64().expect("timestamp"), v.to_bits())
                    }));
            }
        }
        Kind::VmQueryRange => {
            let v: serde_json::Value = serde_json::from_slice(body).expect("query_range JSON");
            for r in v["data"]["result"].as_array().expect("result") {
                let metric = r["metric"].as_object().expect("metric");
                let key = key_of(
                    metric
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str().unwrap_or(""))),
                );
                out.entry(key).or_default().extend(
                    r["values"].as_array().expect("values").iter().map(|p| {
                        let t = (p[0].as_f64().expect("t") * 1000.0).round() as i64;
                        let v: f64 = p[1].as_str().expect("v").parse().expect("value");
                        (t, v.to_bits())
                    }),
                );
            }
        }
    }
    for s in out.values_mut() {
        s.sort_unstable();
    }
    out
}

/// Checks an answer against what was written: every series, every sample, bit for bit.
/// Returns (samples, sum of values); panics on any difference.
fn check(label: &str, got: &Answer, want: &Answer) -> (usize, f64) {
    let n: usize = got.values().map(Vec::len).sum();
    let sum: f64 = got
        .values()
        .flatten()
        .map(|&(_, v)| f64::from_bits(v))
        .sum();
    let want_sum: f64 = want
        .values()
        .flatten()
        .map(|&(_, v)| f64::from_bits(v))
        .sum();
    assert_eq!(got.len(), SERIES, "{label}: series");
    assert_eq!(n, SERIES * SAMPLES, "{label}: samples");
    assert_eq!(sum.to_bits(), want_sum.to_bits(), "{label}: sum of values");
    let differing = got.iter().filter(|(k, s)| want.get(*k) != Some(s)).count();
    assert_eq!(differing, 0, "{label}: series whose samples differ");
    (n, sum)
}

/// Nearest-rank percentile.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn package_version(pkg: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let bin = argv
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/weft".into());
    let rounds: usize = argv.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let prom_bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
    let vm_bin = std::env::var("VICTORIA_METRICS_BIN")
        .unwrap_or_else(|_| "/usr/bin/victoria-metrics".into());
    let seed = common::seed();
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // On the 15 s grid, so VictoriaMetrics' query_range steps land on the samples.
    let end_ms = now_ms / STEP_MS * STEP_MS;
    let start_ms = end_ms - (SAMPLES as i64 - 1) * STEP_MS;
    let (labels, samples) = make_data(seed, end_ms);
    let bodies = write_bodies(&labels, &samples);
    let want: Answer = labels
        .iter()
        .zip(&samples)
        .map(|(l, s)| {
            (
                key_of(l.iter().map(|l| (&*l.name, &*l.value))),
                s.iter().map(|s| (s.timestamp, s.value.to_bits())).collect(),
            )
        })
        .collect();

    // Start everything first, so the servers' start-up work is over before any timing.
    let mut memory = spawn_weft(&bin, "weft memory", &["--flush.period", "1h"]);
    let mut local = spawn_weft(
        &bin,
        "weft local disk",
        &["--flush.period", "1s", "--flush.retain-period", "1s"],
    );
    let mut store = spawn_weft(
        &bin,
        "weft store",
        &[
            "--flush.period",
            "1s",
            "--flush.retain-period",
            "1s",
            "--local.retention",
            "0s",
            "--cache.bytes",
            "0",
        ],
    );
    let mut prom = spawn_other("Prometheus", &prom_bin, |dir, addr| {
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("prometheus.yml");
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address={addr}"),
            "--web.enable-remote-write-receiver".into(),
        ]
    });
    let mut vm = spawn_other("VictoriaMetrics", &vm_bin, |dir, addr| {
        vec![
            "-httpListenAddr".into(),
            addr.into(),
            "-storageDataPath".into(),
            dir.join("data").display().to_string(),
            "-retentionPeriod".into(),
            "100y".into(),
            // Otherwise query_range adjusts (or drops) points of the last 30 s.
            "-search.latencyOffset".into(),
            "0s".into(),
        ]
    });
    for s in [&mut memory, &mut local, &mut store] {
        wait_ready(&client, s, "/ready");
    }
    wait_ready(&client, &mut prom, "/-/ready");
    wait_ready(&client, &mut vm, "/health");

    for s in [&memory, &local, &store] {
        push_all(&client, s, "/api/v1/push", &bodies);
    }
    push_all(&client, &prom, "/api/v1/write", &bodies);
    push_all(&client, &vm, "/api/v1/write", &bodies);

    // weft B and C: upload everything, then wait until the chunks have left memory (and,
    // for C, the local copy has been demoted to its index).
    for s in [&local, &store] {
        let r = client
            .post(s.url("/ingester/flush?wait=true"))
            .send()
            .expect("flush");
        assert!(r.status().is_success(), "flush {}: {}", s.name, r.status());
    }
    wait_for(
        "weft local disk: chunks released",
        Duration::from_secs(60),
        || {
            weft_metric(&client, &local, "weft_released_chunks_total") > 0.0
                && weft_metric(&client, &local, "weft_head_chunks") == 0.0
                && weft_metric(&client, &local, "weft_local_objects") >= 1.0
        },
    );
    wait_for(
        "weft store: chunks released, copy demoted",
        Duration::from_secs(60),
        || {
            weft_metric(&client, &store, "weft_released_chunks_total") > 0.0
                && weft_metric(&client, &store, "weft_head_chunks") == 0.0
                && weft_metric(&client, &store, "weft_local_evictions_total") >= 1.0
                && weft_metric(&client, &store, "weft_local_objects") == 0.0
        },
    );

    let read_body = compress(
        &prompb::ReadRequest {
            queries: vec![prompb::Query {
                start_timestamp_ms: start_ms,
                end_timestamp_ms: end_ms,
                matchers: vec![prompb::LabelMatcher {
                    r#type: prompb::MatcherType::Eq as i32,
                    name: "job".into(),
                    value: "node".into(),
                }],
                hints: None,
            }],
            accepted_response_types: vec![prompb::ResponseType::Samples as i32],
        }
        .encode_to_vec(),
    );
    let target = |label, what, server, kind| Target {
        label,
        what,
        server,
        kind,
        times: Vec::with_capacity(rounds),
        bytes: 0,
    };
    let mut targets = vec![
        target(
            "weft memory",
            "remote read, SAMPLES",
            &memory,
            Kind::RemoteRead,
        ),
        target(
            "weft local disk",
            "remote read, SAMPLES",
            &local,
            Kind::RemoteRead,
        ),
        target(
            "weft store (file://)",
            "remote read, SAMPLES",
            &store,
            Kind::RemoteRead,
        ),
        target(
            "Prometheus 2.42 (head)",
            "remote read, SAMPLES",
            &prom,
            Kind::RemoteRead,
        ),
        target(
            "VictoriaMetrics 1.79",
            "/api/v1/export (JSON lines)",
            &vm,
            Kind::VmExport,
        ),
        target(
            "VictoriaMetrics 1.79",
            "/api/v1/query_range, step 15s",
            &vm,
            Kind::VmQueryRange,
        ),
    ];

    // VictoriaMetrics makes pushed samples searchable within about a second.
    wait_for(
        "VictoriaMetrics: all samples searchable",
        Duration::from_secs(30),
        || {
            let (_, body, _) = query_once(&client, &targets[4], start_ms, end_ms, &read_body);
            decode(Kind::VmExport, &body)
                .values()
                .map(Vec::len)
                .sum::<usize>()
                == SERIES * SAMPLES
        },
    );

    let mut sum = 0.0;
    for round in 0..WARMUPS + rounds {
        for t in &mut targets {
            let (took, body, partial) = query_once(&client, t, start_ms, end_ms, &read_body);
            assert!(!partial, "{}: a partial answer", t.label);
            let (_, s) = check(t.label, &decode(t.kind, &body), &want);
            sum = s;
            t.bytes = body.len();
            if round >= WARMUPS {
                t.times.push(took);
            }
        }
    }

    // Each weft answered from the tier it was meant to.
    assert_eq!(
        weft_metric(&client, &memory, "weft_released_chunks_total"),
        0.0
    );
    assert_eq!(weft_metric(&client, &memory, "weft_catalog_objects"), 0.0);
    assert!(weft_metric(&client, &local, "weft_local_objects") >= 1.0);
    assert_eq!(weft_metric(&client, &local, "weft_head_chunks"), 0.0);
    assert_eq!(weft_metric(&client, &store, "weft_local_objects"), 0.0);
    assert_eq!(weft_metric(&client, &store, "weft_head_chunks"), 0.0);
    let cache_hits = weft_metric(&client, &store, "weft_cache_hits_total");

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("command: {}", argv.join(" "));
    println!("seed: {seed} (WEFT_BENCH_SEED)");
    println!("machine: {nproc} CPUs, {cpu}");
    println!(
        "prometheus {} ({prom_bin}), victoria-metrics {} ({vm_bin})",
        package_version("prometheus"),
        package_version("victoria-metrics")
    );
    println!(
        "data: {SERIES} series x {SAMPLES} samples at {}s ({} samples, sum {sum}), \
         {start_ms}..={end_ms} ms; every answer checked sample by sample",
        STEP_MS / 1000,
        SERIES * SAMPLES
    );
    println!(
        "{rounds} timed rounds after {WARMUPS} warm-ups, targets interleaved; \
         time = request sent -> whole body received; weft store cache hits: {cache_hits}"
    );
    println!();
    let base = {
        let mut t = targets[0].times.clone();
        t.sort();
        percentile(&t, 0.5)
    };
    println!("| target | query | p50 ms | p90 ms | p50 / weft memory p50 | p90 / weft memory p50 | answer bytes |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for t in &targets {
        let mut times = t.times.clone();
        times.sort();
        let (p50, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            t.label,
            t.what,
            ms(p50),
            ms(p90),
            ms(p50) / ms(base),
            ms(p90) / ms(base),
            t.bytes
        );
    }
    drop(targets);
}
