//! End to end with the real Prometheus 2.42 and native histograms: Prometheus
//! (`--enable-feature=native-histograms`) scrapes a target serving native histograms in
//! the protobuf exposition format (`common/native_target.rs`: new buckets, a counter reset,
//! negative and zero buckets, several schemas, a schema change, a gauge histogram) every
//! second and remote-writes them to weft with `send_native_histograms: true`. Over a range
//! both have complete, weft's remote read (STREAMED_XOR_CHUNKS) must give the same
//! histograms as Prometheus's own remote read of its TSDB (Prometheus 2.42 answers
//! SAMPLES without histograms, so both are read as chunks and decoded).
//!
//! "The same" is `weft::hist::equivalent`: same observations in the same buckets at the
//! same times; layouts may differ by empty buckets and hints are the chunks' (each side
//! cuts its own chunks).

mod common;
#[path = "common/native_target.rs"]
mod native_target;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use prost::Message;
use weft::model::HistogramValue;
use weft::proto::prompb::{
    ChunkEncoding, ChunkedReadResponse, MatcherType, ReadRequest, ResponseType,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

struct Prom {
    base: String,
    log: PathBuf,
    process: ProcessGuard,
}

impl Prom {
    fn start(dir: &Path, config: &str, port: u16) -> Prom {
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus config");
        let log = dir.join("prometheus.log");
        let mut cmd = Command::new(PROMETHEUS);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=native-histograms")
            .arg("--log.level=info");
        let mut p = Prom {
            base: format!("http://127.0.0.1:{port}"),
            log: log.clone(),
            process: ProcessGuard::spawn("prometheus", cmd, Some(log), |_| {}),
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
                "prometheus not ready; log {}",
                p.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.process.exited() {
            panic!("prometheus exited ({status}); log {}", self.log.display());
        }
    }
}

type ByLabels = BTreeMap<String, Vec<(i64, HistogramValue)>>;

/// The frames of a chunked answer, or why they end early (Prometheus writes an error text
/// after the last whole frame when it fails while streaming).
fn frames(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < body.len() {
        let (len, n) = uvarint(&body[off..]).ok_or("bad frame length")?;
        let start = off + n + 4;
        let end = start + len as usize;
        if end > body.len() {
            return Err(String::from_utf8_lossy(&body[off..]).into_owned());
        }
        out.push(&body[start..end]);
        off = end;
    }
    Ok(out)
}

/// A chunked remote read of the series of job `native` named `name` (all of them if
/// `None`), decoded, samples in `[start, end]`; float chunks are left out. `Err` if the
/// server failed while streaming.
fn read_histograms(
    client: &reqwest::blocking::Client,
    url: &str,
    tenant: Option<&str>,
    name: Option<&str>,
    start: i64,
    end: i64,
) -> Result<ByLabels, String> {
    let mut matchers = vec![matcher(MatcherType::Eq, "job", "native")];
    if let Some(n) = name {
        matchers.push(matcher(MatcherType::Eq, "__name__", n));
    }
    let req = ReadRequest {
        // The whole range is asked for and cut here: Prometheus 2.42 re-encodes chunks
        // that a query's range cuts, and fails on histogram chunks with a reset.
        queries: vec![query(0, i64::MAX, matchers)],
        accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
    };
    let mut rb = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0");
    if let Some(t) = tenant {
        rb = rb.header("X-Scope-OrgID", t);
    }
    let r = rb
        .body(snappy(&req.encode_to_vec()))
        .send()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let body = r.bytes().unwrap().to_vec();
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    if std::env::var_os("HIST_E2E_DUMP").is_some() {
        std::fs::write(
            format!("/tmp/hist-e2e-{}.bin", tenant.unwrap_or("prom")),
            &body,
        )
        .unwrap();
    }
    let mut out = ByLabels::new();
    for frame in frames(&body)? {
        let msg = ChunkedReadResponse::decode(frame).unwrap();
        for cs in msg.chunked_series {
            let key = fmt_labels(&to_labels(&cs.labels));
            for c in &cs.chunks {
                if c.r#type == ChunkEncoding::Xor as i32 {
                    continue;
                }
                let enc = u8::try_from(c.r#type).unwrap();
                let hs = weft::chunk::decode_histogram_chunk(enc, &c.data)
                    .unwrap_or_else(|e| panic!("{url}: {key}: chunk does not decode: {e}"));
                out.entry(key.clone())
                    .or_default()
                    .extend(hs.into_iter().filter(|(t, _)| (start..=end).contains(t)));
            }
        }
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

#[test]
fn weft_reads_back_what_prometheus_scraped_and_sent_as_native_histograms() {
    if !require(
        "prometheus",
        Path::new(PROMETHEUS).exists(),
        "apt-get install prometheus (2.42)",
    ) {
        return;
    }
    let weft = Weft::start(&[]);
    let target = native_target::NativeTarget::start(native_target::demo_families);
    let dir = TempDir::new("weft-e2e-hist");
    let port = free_port();
    let config = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: native
    static_configs:
      - targets: ['{}']
remote_write:
  - url: http://127.0.0.1:{}/api/v1/push
    send_native_histograms: true
    queue_config:
      batch_send_deadline: 1s
",
        target.addr(),
        weft.port
    );
    let mut prom = Prom::start(dir.path(), &config, port);
    let client = http_client();
    // Enough scrapes for every shape change of the demo target.
    let deadline = Instant::now() + Duration::from_secs(120);
    while target.scrapes() < 25 {
        prom.assert_alive();
        assert!(
            Instant::now() < deadline,
            "only {} scrapes in 120 s",
            target.scrapes()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Compare up to a point both have complete: Prometheus sends within a second or so.
    let end = now_ms() - 2_000;
    std::thread::sleep(Duration::from_secs(6));
    prom.assert_alive();
    let ours = read_histograms(&client, &weft.url("/api/v1/read"), None, None, 0, end)
        .expect("weft streams every chunk");
    // Prometheus 2.42 cannot always stream its own histogram chunks ("iterate chunk while
    // re-encoding: detected unexpected counter reset in histogram"): read it one series at
    // a time and compare those it can serve.
    let prom_url = format!("{}/api/v1/read", prom.base);
    let mut theirs = ByLabels::new();
    let mut unreadable = Vec::new();
    let names: std::collections::BTreeSet<String> = ours
        .keys()
        .filter_map(|k| {
            let rest = k.split("__name__=\"").nth(1)?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect();
    for n in &names {
        match read_histograms(&client, &prom_url, None, Some(n), 0, end) {
            Ok(m) => theirs.extend(m),
            Err(e) => unreadable.push(format!("{n}: {}", e.trim())),
        }
    }
    eprintln!("series prometheus itself cannot stream back: {unreadable:?}");
    assert!(
        theirs.len() >= 3,
        "too few histogram series to compare: {:?} (weft has {:?})",
        theirs.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>()
    );
    let mut total = 0;
    for (key, want) in &theirs {
        let got = ours
            .get(key)
            .unwrap_or_else(|| panic!("{key}: in prometheus, not in weft"));
        if let Some(i) = weft::hist::fixtures::first_difference(got, want) {
            panic!(
                "{key}: weft has {} samples, prometheus {}; first difference at {i}:\n weft {:?}\n prom {:?}",
                got.len(),
                want.len(),
                got.get(i),
                want.get(i)
            );
        }
        total += want.len();
    }
    eprintln!(
        "{} histogram series, {total} samples: weft's equal Prometheus's own",
        theirs.len()
    );
}
