//! End to end with the real Prometheus: Prometheus A scrapes itself every second and
//! remote-writes to weft; Prometheus B has no data of its own and reads weft through remote
//! read. The same PromQL, instant and range, must give identical answers on A and B.
//!
//! Prometheus 2.42's remote-read client asks only for SAMPLES; the chunked mode is covered by
//! `remote_write_read.rs`.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const DEFAULT_SECONDS: u64 = 130;
const CI_MINIMUM_SECONDS: u64 = 120;
/// Evaluation happens this far behind "now", so that A has scraped and sent everything.
const EVAL_LAG_SECONDS: i64 = 15;

/// PromQL whose answers must match. Aggregations only ever add up series that are alone in
/// their group or count things: Prometheus's TSDB hands series to PromQL in series-ref order
/// but a remote read in label order, and a float sum in another order may differ in its last
/// bit. That is why the histogram quantile is taken over one handler only.
const QUERIES: [&str; 13] = [
    "up",
    "prometheus_build_info",
    "rate(prometheus_http_requests_total[30s])",
    "sum by (job) (rate(prometheus_tsdb_head_samples_appended_total[1m]))",
    "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket{handler=\"/metrics\"}[1m])))",
    "count(prometheus_tsdb_head_series)",
    "count by (__name__) ({__name__=~\"prometheus_tsdb_.*\"})",
    "max_over_time(prometheus_tsdb_head_series[1m])",
    "prometheus_tsdb_head_series",
    "scrape_samples_scraped",
    "increase(prometheus_target_interval_length_seconds_count[1m])",
    "prometheus_target_interval_length_seconds{quantile=\"0.99\"}",
    "count({__name__=~\".+\"})",
];

#[test]
fn harness_parsers_work() {
    self_check();
}

#[test]
fn prometheus_reading_through_weft_answers_like_the_prometheus_that_wrote() {
    if !require(
        "prometheus",
        Path::new(PROMETHEUS).exists(),
        "install the Debian package `prometheus`; scripts/test.sh does",
    ) {
        return;
    }
    let seconds = run_seconds();
    let weft = Weft::start(&[]);
    let dir = TempDir::new("weft-e2e");
    let client = http_client();

    let port_a = free_port();
    let config_a = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{port_a}']
remote_write:
  - url: http://127.0.0.1:{}/api/v1/push
    queue_config:
      batch_send_deadline: 1s
",
        weft.port
    );
    let mut a = Prom::start("prometheus-a", dir.path(), &config_a, port_a);
    eprintln!(
        "prometheus A on :{port_a} writes to weft on :{}; waiting {seconds} s",
        weft.port
    );

    let started = Instant::now();
    let mut next_report = 30;
    // Bounded by `seconds`; checks every second that both servers are still alive.
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        a.assert_alive();
        let elapsed = started.elapsed().as_secs();
        if elapsed >= next_report {
            next_report += 30;
            let ready = client
                .get(weft.url("/ready"))
                .send()
                .map(|r| r.status().as_u16());
            assert!(
                matches!(ready, Ok(200)),
                "weft is no longer ready: {ready:?}"
            );
            eprintln!(
                "{elapsed} s: weft ingested {:?} samples",
                weft.metric("weft_samples_ingested_total", &[])
            );
        }
    }

    let config_b = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
remote_read:
  - url: http://127.0.0.1:{}/api/v1/read
    read_recent: true
",
        weft.port
    );
    let port_b = free_port();
    let mut b = Prom::start("prometheus-b", dir.path(), &config_b, port_b);

    let eval = now_ms() / 1000 - EVAL_LAG_SECONDS;
    wait_until_sent(&client, &a, eval);
    let a_metrics = a.metrics(&client);
    let failed = metric_value(
        &a_metrics,
        "prometheus_remote_storage_samples_failed_total",
        &[],
    )
    .unwrap_or(0.0);
    let sent =
        metric_value(&a_metrics, "prometheus_remote_storage_samples_total", &[]).unwrap_or(0.0);
    eprintln!(
        "A sent {sent} samples; failed {failed}; retried {:?}; dropped {:?}",
        metric_value(
            &a_metrics,
            "prometheus_remote_storage_samples_retried_total",
            &[]
        ),
        metric_value(
            &a_metrics,
            "prometheus_remote_storage_samples_dropped_total",
            &[]
        ),
    );
    assert!(sent > 0.0, "prometheus A sent no samples to weft");
    assert_eq!(failed, 0.0, "weft refused samples that prometheus A sent");
    let ingested = weft
        .metric("weft_samples_ingested_total", &[])
        .unwrap_or(0.0);
    assert!(ingested > 0.0, "weft_samples_ingested_total is {ingested}");

    let eval_s = eval.to_string();
    let (start_s, end_s) = ((eval - 90).to_string(), eval_s.clone());
    let mut compared = 0;
    for q in QUERIES {
        let instant = [("query", q), ("time", eval_s.as_str())];
        let ra = a.query(&client, "/api/v1/query", &instant);
        let rb = b.query(&client, "/api/v1/query", &instant);
        assert_same(&format!("instant {q} at {eval}"), &ra, &rb);

        let range = [
            ("query", q),
            ("start", start_s.as_str()),
            ("end", end_s.as_str()),
            ("step", "5"),
        ];
        let ra = a.query(&client, "/api/v1/query_range", &range);
        let rb = b.query(&client, "/api/v1/query_range", &range);
        assert_same(&format!("range {q} over [{start_s}, {end_s}]"), &ra, &rb);
        compared += 2;
    }
    eprintln!("{compared} queries gave identical answers on A and B");
    b.assert_alive();
    a.assert_alive();
}

/// How long A writes to weft: `WEFT_E2E_SECONDS`, default 130, at least 120 in CI.
fn run_seconds() -> u64 {
    let s = match std::env::var("WEFT_E2E_SECONDS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("WEFT_E2E_SECONDS={v:?}: {e}")),
        Err(_) => DEFAULT_SECONDS,
    };
    if in_ci() && s < CI_MINIMUM_SECONDS {
        eprintln!("WEFT_E2E_SECONDS={s} is below the CI minimum; using {CI_MINIMUM_SECONDS}");
        return CI_MINIMUM_SECONDS;
    }
    s
}

/// A port that was free a moment ago. Another process could take it before Prometheus binds
/// it; Prometheus would then fail to start and the test says so.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

struct Prom {
    name: String,
    base: String,
    log: PathBuf,
    process: ProcessGuard,
}

impl Prom {
    fn start(name: &str, dir: &Path, config: &str, port: u16) -> Prom {
        let config_path = dir.join(format!("{name}.yml"));
        std::fs::write(&config_path, config).expect("write prometheus config");
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(PROMETHEUS);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("{name}-data")).display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=info");
        let mut p = Prom {
            name: name.to_string(),
            base: format!("http://127.0.0.1:{port}"),
            log: log.clone(),
            process: ProcessGuard::spawn(name, cmd, Some(log), |_| {}),
        };
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/-/ready", p.base)).send() {
                if r.status().as_u16() == 200 {
                    return p;
                }
            }
            p.assert_alive();
            assert!(
                Instant::now() < deadline,
                "{name} not ready within 60 s; log: {}",
                p.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.process.exited() {
            panic!(
                "{} exited ({status}); its log is {}",
                self.name,
                self.log.display()
            );
        }
    }

    fn metrics(&self, client: &reqwest::blocking::Client) -> String {
        let r = client
            .get(format!("{}/metrics", self.base))
            .send()
            .expect("prometheus /metrics");
        r.text().expect("metrics text")
    }

    /// A query's `data`, after checking that it succeeded.
    fn query(
        &self,
        client: &reqwest::blocking::Client,
        path: &str,
        params: &[(&str, &str)],
    ) -> Value {
        let r = client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .unwrap_or_else(|e| panic!("{}: {path} {params:?}: {e}", self.name));
        let status = r.status().as_u16();
        let body = r
            .bytes()
            .unwrap_or_else(|e| panic!("{}: {path}: {e}", self.name));
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{}: {path}: not JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(status, 200, "{}: {path} {params:?}: {v}", self.name);
        assert_eq!(
            v["status"], "success",
            "{}: {path} {params:?}: {v}",
            self.name
        );
        if let Some(w) = v.get("warnings") {
            eprintln!("{}: {path} {params:?} warned: {w}", self.name);
        }
        v["data"].clone()
    }
}

/// Waits (at most 60 s) until A has sent samples newer than `eval` + 5 s, then lets the other
/// shards finish their batches.
fn wait_until_sent(client: &reqwest::blocking::Client, a: &Prom, eval: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = a.metrics(client);
        match metric_value(
            &m,
            "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
            &[],
        ) {
            Some(t) if t >= (eval + 5) as f64 => break,
            Some(_) => {}
            None => {
                eprintln!("A has no highest-sent metric; waiting 10 s instead");
                std::thread::sleep(Duration::from_secs(10));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus A did not catch up to {eval} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A batch is sent at the latest after batch_send_deadline (1 s).
    std::thread::sleep(Duration::from_secs(3));
}

fn metric_key(series: &Value) -> Vec<(String, String)> {
    let m: BTreeMap<String, String> =
        serde_json::from_value(series["metric"].clone()).unwrap_or_default();
    m.into_iter().collect()
}

fn sorted(data: &Value) -> (Value, Vec<Value>) {
    let mut result = data["result"].as_array().cloned().unwrap_or_default();
    result.sort_by_key(metric_key);
    (data["resultType"].clone(), result)
}

/// A and B must agree exactly (values are strings; no tolerance), and not vacuously.
fn assert_same(what: &str, a: &Value, b: &Value) {
    let (ta, ra) = sorted(a);
    let (tb, rb) = sorted(b);
    assert_eq!(ta, tb, "{what}: result types differ");
    assert!(
        !ra.is_empty(),
        "{what}: prometheus A has no result, so the comparison would prove nothing"
    );
    if ra == rb {
        return;
    }
    let keys_a: Vec<_> = ra.iter().map(metric_key).collect();
    let keys_b: Vec<_> = rb.iter().map(metric_key).collect();
    if keys_a != keys_b {
        let only_a: Vec<_> = keys_a
            .iter()
            .filter(|k| !keys_b.contains(k))
            .take(3)
            .collect();
        let only_b: Vec<_> = keys_b
            .iter()
            .filter(|k| !keys_a.contains(k))
            .take(3)
            .collect();
        panic!(
            "{what}: A has {} series, B (through weft) {}; only in A e.g. {only_a:?}; only in B e.g. {only_b:?}",
            ra.len(),
            rb.len()
        );
    }
    let (x, y) = ra
        .iter()
        .zip(&rb)
        .find(|(x, y)| x != y)
        .expect("some series differs");
    let clip = |v: &Value| {
        let s = v.to_string();
        if s.chars().count() > 1500 {
            format!("{}…", s.chars().take(1500).collect::<String>())
        } else {
            s
        }
    };
    panic!("{what}: series differ\n  A: {}\n  B: {}", clip(x), clip(y));
}
