//! Restart time of the real binary from a checkpoint (issue 3's target: 1M series × 120
//! samples, ready in ≤ 15 s).
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example restart_time -- target/release/weft 1000000 120
//! ```
//!
//! Arguments, all optional: the weft binary (default `target/release/weft`), the number of
//! series (default 1,000,000), samples per series (default 120), and samples per series per
//! push (default: all of them in one push). Not run in CI: it needs a few GB of RAM and minutes.
//!
//! All samples of a series in one push is the fastest way to load: with one sample per series
//! per push (Prometheus's pattern, `… 1000000 120 1`) every push repeats every series' labels,
//! and loading was about 15 times slower here (0.54 vs 8 M samples/s). The head, and so the
//! checkpoint that the restart reads, is the same either way: one 120-sample chunk per series.
//!
//! Steps:
//! 1. Start weft on a fresh data directory with `--wal.sync never`. This measures restart, not
//!    ingest: with `always` every push waits for an msync, which only makes loading slower
//!    and changes nothing in the checkpoint that the restart reads.
//! 2. Push series × samples from several client threads. Series look like node_exporter's
//!    (about ten labels); timestamps are 15 s apart; values are counters and gauges.
//! 3. SIGTERM: weft stops serving, writes its shutdown checkpoint, and exits. Time it.
//! 4. Start again on the same directory and time spawn → `/ready` 200. Print weft's
//!    "WAL replay done; ready" line, RSS after ready, and the WAL directory's files.
//! 5. Check the data: `weft_head_series`/`weft_head_chunks` as before the restart, a few
//!    single series, and one whole metric name (1/200 of all series), bit-exact.
//!
//! The page cache is not dropped before the restart (that needs root and would disturb other
//! users of the machine), so the restart reads a checkpoint that is likely still cached.

#[path = "../benches/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use weft::proto::{compress, prompb};

const T0_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 15_000;
/// Series per push request, as a Prometheus remote-write shard sends them.
const SERIES_PER_PUSH: usize = 1000;
const CLIENT_THREADS: usize = 4;
/// Distinct metric names; the slice check reads one of them whole.
const METRIC_NAMES: usize = 200;
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(600);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(600);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sample `k` of series `i`: a counter (3 series in 4) or a gauge with two decimals.
fn sample(i: usize, k: usize) -> (i64, f64) {
    let t = T0_MS + k as i64 * STEP_MS;
    let v = if i % 4 == 0 {
        (mix(((i as u64) << 20) ^ k as u64) % 10_000) as f64 / 100.0
    } else {
        (k * (i % 97 + 1)) as f64
    };
    (t, v)
}

/// node_exporter-like labels, as in `mem_per_series.rs`.
fn labels(i: usize) -> Vec<prompb::Label> {
    common::node_labels(i, METRIC_NAMES)
}

/// A running weft whose stderr is collected; killed on drop if still running.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(bin: &Path, dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let keep = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_string());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(LISTEN_TIMEOUT) {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "weft did not print its address within {LISTEN_TIMEOUT:?} ({e}):\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// Polls `/ready` until 200.
    fn wait_ready(&mut self, client: &reqwest::blocking::Client) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(r) = client.get(format!("{}/ready", self.base)).send() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("weft exited ({status}) before ready:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn terminate(&mut self) -> Duration {
        let start = Instant::now();
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) touches no memory of ours; the pid is our unreaped child's, so it
        // cannot belong to another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM: {}", std::io::Error::last_os_error());
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for weft") {
                assert!(
                    status.success(),
                    "weft ended with {status}:\n{}",
                    self.log_text()
                );
                return start.elapsed();
            }
            assert!(
                start.elapsed() < SHUTDOWN_TIMEOUT,
                "weft did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn log_line(&self, needle: &str) -> String {
        // The drain thread may lag the exit by a moment.
        for _ in 0..100 {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        format!("(no log line containing {needle:?})")
    }

    fn metric(&self, client: &reqwest::blocking::Client, name: &str) -> f64 {
        let text = client
            .get(format!("{}/metrics", self.base))
            .send()
            .and_then(|r| r.text())
            .expect("/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("field in /proc status")
        * 1024
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

/// Pushes every series' samples `ks` from `CLIENT_THREADS` threads, each taking the next
/// batch of `SERIES_PER_PUSH` series.
fn load(base: &str, series: usize, ks: std::ops::Range<usize>) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CLIENT_THREADS {
            s.spawn(|| {
                let client = client();
                loop {
                    let first = next.fetch_add(SERIES_PER_PUSH, Ordering::Relaxed);
                    if first >= series {
                        break;
                    }
                    let timeseries = (first..(first + SERIES_PER_PUSH).min(series))
                        .map(|i| prompb::TimeSeries {
                            labels: labels(i),
                            samples: ks
                                .clone()
                                .map(|k| {
                                    let (timestamp, value) = sample(i, k);
                                    prompb::Sample { value, timestamp }
                                })
                                .collect(),
                            exemplars: vec![],
                            histograms: Vec::new(),
                        })
                        .collect();
                    let req = prompb::WriteRequest {
                        timeseries,
                        metadata: vec![],
                    };
                    let r = client
                        .post(format!("{base}/api/v1/push"))
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(compress(&req.encode_to_vec()))
                        .send()
                        .expect("push");
                    let status = r.status().as_u16();
                    assert_eq!(status, 204, "push failed: {:?}", r.text());
                }
            });
        }
    });
}

/// Remote read (SAMPLES) of one matcher over the whole range: (series_id, samples as bits).
fn read(base: &str, name: &str, value: &str) -> Vec<(usize, Vec<(i64, u64)>)> {
    let req = prompb::ReadRequest {
        queries: vec![prompb::Query {
            start_timestamp_ms: T0_MS,
            end_timestamp_ms: i64::MAX,
            matchers: vec![prompb::LabelMatcher {
                r#type: prompb::MatcherType::Eq as i32,
                name: name.to_string(),
                value: value.to_string(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![prompb::ResponseType::Samples as i32],
    };
    let r = client()
        .post(format!("{base}/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(compress(&req.encode_to_vec()))
        .send()
        .expect("remote read");
    assert_eq!(r.status().as_u16(), 200, "remote read failed");
    let body = r.bytes().expect("read body");
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .expect("snappy");
    let resp = prompb::ReadResponse::decode(raw.as_slice()).expect("ReadResponse");
    resp.results[0]
        .timeseries
        .iter()
        .map(|ts| {
            let id = ts
                .labels
                .iter()
                .find(|l| l.name == "series_id")
                .and_then(|l| l.value.parse().ok())
                .expect("series_id label");
            let samples = ts
                .samples
                .iter()
                .map(|s| (s.timestamp, s.value.to_bits()))
                .collect();
            (id, samples)
        })
        .collect()
}

/// Compares what was read with what was pushed; returns the samples compared.
fn check(got: &[(usize, Vec<(i64, u64)>)], want_ids: &[usize], samples: usize) -> usize {
    let ids: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    let mut want_sorted = want_ids.to_vec();
    want_sorted.sort_unstable();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort_unstable();
    assert_eq!(ids_sorted, want_sorted, "series read back differ");
    let mut n = 0;
    for (i, s) in got {
        let want: Vec<(i64, u64)> = (0..samples)
            .map(|k| {
                let (t, v) = sample(*i, k);
                (t, v.to_bits())
            })
            .collect();
        assert_eq!(s, &want, "series_id={i} differs");
        n += s.len();
    }
    n
}

fn dir_listing(dir: &Path) -> (String, u64) {
    let out = Command::new("ls")
        .arg("-l")
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("ls failed: {e}"));
    let checkpoint_bytes = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint."))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    (out, checkpoint_bytes)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/release/weft".to_string()),
    );
    let series: usize = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("series"));
    let samples: usize = args.next().map_or(120, |s| s.parse().expect("samples"));
    let per_push: usize = args
        .next()
        .map_or(samples, |s| s.parse().expect("samples per push"))
        .clamp(1, samples.max(1));
    let dir = std::env::temp_dir().join(format!("weft-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let wal_dir = dir.join("wal");
    println!(
        "restart_time: {} series x {samples} samples ({per_push} per series per push, \
         {SERIES_PER_PUSH} series per push, {CLIENT_THREADS} client threads); binary {}; data {}",
        series,
        bin.display(),
        dir.display()
    );
    let http = client();

    // 1–2: load.
    let mut first = Server::start(&bin, &dir, &["--wal.sync", "never"]);
    first.wait_ready(&http);
    let t_load = Instant::now();
    let mut k = 0;
    while k < samples {
        let end = (k + per_push).min(samples);
        load(&first.base, series, k..end);
        k = end;
    }
    let load_s = t_load.elapsed().as_secs_f64();
    let total = series as f64 * samples as f64;
    let series_before = first.metric(&http, "weft_head_series");
    let chunks_before = first.metric(&http, "weft_head_chunks");
    let rss_loaded = status_bytes(first.child.id(), "VmRSS");
    println!(
        "loaded {total:.0} samples in {load_s:.1} s ({:.2} M samples/s); head_series={series_before} \
         head_chunks={chunks_before}; RSS {:.0} MiB",
        total / load_s / 1e6,
        rss_loaded as f64 / (1 << 20) as f64
    );

    // 3: graceful stop, which writes the shutdown checkpoint.
    let stop = first.terminate();
    println!(
        "SIGTERM -> exit in {:.1} s; {}",
        stop.as_secs_f64(),
        first.log_line("shutdown checkpoint written")
    );
    drop(first);
    let (listing, checkpoint_bytes) = dir_listing(&wal_dir);
    println!(
        "wal dir after shutdown (largest checkpoint {:.1} MiB):\n{listing}",
        checkpoint_bytes as f64 / (1 << 20) as f64
    );

    // 4: the measured restart. The same flags as in production, sync included.
    let t_spawn = Instant::now();
    let mut second = Server::start(&bin, &dir, &[]);
    second.wait_ready(&http);
    let ready = t_spawn.elapsed();
    let pid = second.child.id();
    println!(
        "RESTART: spawn -> /ready 200 in {:.2} s (target <= 15 s); RSS after ready {:.0} MiB (anon {:.0} MiB)",
        ready.as_secs_f64(),
        status_bytes(pid, "VmRSS") as f64 / (1 << 20) as f64,
        status_bytes(pid, "RssAnon") as f64 / (1 << 20) as f64
    );
    println!("{}", second.log_line("WAL replay done; ready"));

    // 5: the data.
    let series_after = second.metric(&http, "weft_head_series");
    let chunks_after = second.metric(&http, "weft_head_chunks");
    assert_eq!(
        series_after, series as f64,
        "weft_head_series after restart"
    );
    assert_eq!(series_after, series_before, "weft_head_series changed");
    assert_eq!(chunks_after, chunks_before, "weft_head_chunks changed");
    let t_check = Instant::now();
    let mut compared = 0;
    let picks: Vec<usize> = (0..8).map(|j| j * (series - 1) / 7).collect();
    for &i in &picks {
        compared += check(
            &read(&second.base, "series_id", &i.to_string()),
            &[i],
            samples,
        );
    }
    let name = format!("node_metric_{}", series / 2 % METRIC_NAMES);
    let ids: Vec<usize> = (0..series)
        .filter(|i| i % METRIC_NAMES == series / 2 % METRIC_NAMES)
        .collect();
    compared += check(&read(&second.base, "__name__", &name), &ids, samples);
    println!(
        "data check OK: head_series={series_after} head_chunks={chunks_after} as before; series {picks:?} \
         and all {} series of {name}: {compared} samples bit-exact ({:.1} s)",
        ids.len(),
        t_check.elapsed().as_secs_f64()
    );
    second.terminate();
    drop(second);
    if std::env::var_os("WEFT_RESTART_KEEP").is_some() {
        println!("kept data dir {} (WEFT_RESTART_KEEP)", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
