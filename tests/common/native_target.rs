//! A scrape target that serves native histograms in Prometheus's protobuf exposition format
//! (`io.prometheus.client.MetricFamily`, varint-length-delimited), for tests that let a real
//! Prometheus (2.42, `--enable-feature=native-histograms`) scrape histograms.
//!
//! Self-contained (std + prost), so any test binary can include it with
//! `#[path = "common/native_target.rs"] mod native_target;`.
//!
//! [`NativeTarget::start`] serves whatever a closure returns for the n-th scrape (n counts
//! from 0); [`demo_families`] is a ready-made set of histograms whose shapes change over
//! scrapes: new buckets appearing, a counter reset, a bucket disappearing, negative buckets,
//! a zero bucket, several schemas, a schema change and a gauge histogram.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;

/// The `Content-Type` of the delimited protobuf exposition format.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// `io.prometheus.client.MetricType`.
pub mod metric_type {
    /// COUNTER.
    pub const COUNTER: i32 = 0;
    /// GAUGE.
    pub const GAUGE: i32 = 1;
    /// HISTOGRAM.
    pub const HISTOGRAM: i32 = 4;
    /// GAUGE_HISTOGRAM.
    pub const GAUGE_HISTOGRAM: i32 = 5;
}

/// `io.prometheus.client.LabelPair`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `io.prometheus.client.Gauge`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
}

/// `io.prometheus.client.BucketSpan`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    /// Gap to the previous span (first span: starting index).
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Consecutive buckets.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `io.prometheus.client.Histogram` (native part, as of Prometheus 2.42).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Observations.
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    /// Sum of observations.
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Float count (overrides `sample_count` if > 0).
    #[prost(double, tag = "4")]
    pub sample_count_float: f64,
    /// Schema.
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    /// Zero bucket width.
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    /// Zero bucket count.
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    /// Negative spans.
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    /// Negative bucket deltas.
    #[prost(sint64, repeated, tag = "10")]
    pub negative_delta: Vec<i64>,
    /// Positive spans.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Positive bucket deltas.
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

/// `io.prometheus.client.Metric` (the fields used here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Labels besides the name.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// A gauge value.
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    /// A histogram.
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// `io.prometheus.client.MetricFamily`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    /// Metric name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Help text.
    #[prost(string, tag = "2")]
    pub help: String,
    /// `metric_type::*`.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    /// The metrics.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// The body of a scrape: each family varint-length-delimited.
pub fn encode_delimited(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        f.encode_length_delimited(&mut out)
            .expect("Vec grows as needed");
    }
    out
}

/// Absolute bucket counts to the delta encoding of the exposition format.
pub fn deltas(abs: &[i64]) -> Vec<i64> {
    let mut prev = 0;
    abs.iter()
        .map(|&c| {
            let d = c - prev;
            prev = c;
            d
        })
        .collect()
}

/// A family with one native histogram.
pub fn histogram_family(name: &str, gauge: bool, h: Histogram) -> MetricFamily {
    MetricFamily {
        name: name.to_string(),
        help: format!("{name} for tests"),
        r#type: if gauge {
            metric_type::GAUGE_HISTOGRAM
        } else {
            metric_type::HISTOGRAM
        },
        metric: vec![Metric {
            histogram: Some(h),
            ..Default::default()
        }],
    }
}

/// Spans from `(offset, length)` pairs.
pub fn spans(v: &[(i32, u32)]) -> Vec<BucketSpan> {
    v.iter()
        .map(|&(offset, length)| BucketSpan { offset, length })
        .collect()
}

/// A running HTTP target; stops when dropped.
#[derive(Debug)]
pub struct NativeTarget {
    addr: SocketAddr,
    scrapes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    frozen: Arc<AtomicU64>,
}

const NOT_FROZEN: u64 = u64::MAX;

type Families = dyn Fn(u64) -> Vec<MetricFamily> + Send + Sync;

impl NativeTarget {
    /// Listens on 127.0.0.1 (a free port) and answers every GET with `families(n)` for the
    /// n-th request.
    pub fn start(families: impl Fn(u64) -> Vec<MetricFamily> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind native target");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let scrapes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicU64::new(NOT_FROZEN));
        let families: Arc<Families> = Arc::new(families);
        {
            let (scrapes, stop, silent, frozen) = (
                scrapes.clone(),
                stop.clone(),
                silent.clone(),
                frozen.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let n = scrapes.fetch_add(1, Ordering::SeqCst);
                            let body = if silent.load(Ordering::SeqCst) {
                                Vec::new()
                            } else {
                                let f = frozen.load(Ordering::SeqCst);
                                encode_delimited(&families(if f == NOT_FROZEN { n } else { f }))
                            };
                            let _ = serve_one(&mut conn, &body);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Self {
            addr,
            scrapes,
            stop,
            silent,
            frozen,
        }
    }

    /// From now on serve scrape `n`'s metrics over and over (`None`: go on counting).
    pub fn freeze_at(&self, n: Option<u64>) {
        self.frozen.store(n.unwrap_or(NOT_FROZEN), Ordering::SeqCst);
    }

    /// From now on answer with no metrics at all (`true`), so that Prometheus marks every
    /// series stale. A stale marker is a float sample, so it also closes each series' open
    /// histogram chunk (Prometheus cuts a chunk when the encoding changes).
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// `host:port` for a scrape config.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

impl Drop for NativeTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(conn: &mut std::net::TcpStream, body: &[u8]) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 64 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {PROTOBUF_CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

/// A small deterministic pseudo-random step (1..=max) for scrape `n` and stream `k`.
fn step(n: u64, k: u64, max: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    1 + x % max
}

/// Cumulative sum of `step` over scrapes `from..=n` (so counts only grow).
fn grow(from: u64, n: u64, k: u64, max: u64) -> i64 {
    (from..=n).map(|i| step(i, k, max)).sum::<u64>() as i64
}

/// Histograms of several shapes for scrape `n`, changing over scrapes:
///
/// - `golden_basic` (schema 0, zero threshold 2^-128): two buckets, a third appears at
///   scrape 20 and a fourth, before the others, at 50 (recoding the chunk).
/// - `golden_negative` (schema 3, zero threshold 0.001, zero bucket, negative buckets): a new
///   negative bucket at scrape 30; large counts.
/// - `golden_reset` (schema -2): counter reset at scrape 60; a bucket disappears at 90.
/// - `golden_schema_change`: schema 2 until scrape 44, then schema 1.
/// - `golden_gauge`: a gauge histogram whose counts go up and down and whose buckets come and
///   go.
pub fn demo_families(n: u64) -> Vec<MetricFamily> {
    let mut out = Vec::new();

    // golden_basic
    let b = [grow(0, n, 1, 3), grow(0, n, 2, 5)];
    let mut abs = vec![b[0], b[1]];
    let mut sp = vec![(0, 2u32)];
    if n >= 20 {
        abs.push(grow(20, n, 3, 2));
        sp = vec![(0, 2), (2, 1)];
    }
    if n >= 50 {
        abs.insert(0, grow(50, n, 4, 4));
        sp = vec![(-2, 1), (1, 2), (2, 1)];
    }
    let zero = grow(0, n, 5, 2);
    let count = abs.iter().sum::<i64>() + zero;
    out.push(histogram_family(
        "golden_basic",
        false,
        Histogram {
            sample_count: count as u64,
            sample_sum: count as f64 * 0.75 + n as f64 / 8.0,
            schema: 0,
            zero_threshold: 2f64.powi(-128),
            zero_count: zero as u64,
            positive_span: spans(&sp),
            positive_delta: deltas(&abs),
            ..Default::default()
        },
    ));

    // golden_negative
    let pos = [grow(0, n, 11, 1000) + 100_000, grow(0, n, 12, 50_000)];
    let mut neg = vec![grow(0, n, 13, 7), grow(0, n, 14, 300)];
    let mut nsp = vec![(-3, 2u32)];
    if n >= 30 {
        neg.push(grow(30, n, 15, 9));
        nsp = vec![(-3, 2), (5, 1)];
    }
    let zero = grow(0, n, 16, 40);
    let count = pos.iter().sum::<i64>() + neg.iter().sum::<i64>() + zero;
    out.push(histogram_family(
        "golden_negative",
        false,
        Histogram {
            sample_count: count as u64,
            sample_sum: -(n as f64) * 13.37 + 0.1,
            schema: 3,
            zero_threshold: 0.001,
            zero_count: zero as u64,
            positive_span: spans(&[(7, 2)]),
            positive_delta: deltas(&pos),
            negative_span: spans(&nsp),
            negative_delta: deltas(&neg),
            ..Default::default()
        },
    ));

    // golden_reset
    let from = if n >= 60 { 60 } else { 0 };
    let mut abs = vec![
        grow(from, n, 21, 4),
        grow(from, n, 22, 2),
        grow(from, n, 23, 3),
    ];
    let mut sp = vec![(1, 3u32)];
    if n >= 90 {
        abs.remove(1);
        sp = vec![(1, 1), (1, 1)];
    }
    let count = abs.iter().sum::<i64>();
    out.push(histogram_family(
        "golden_reset",
        false,
        Histogram {
            sample_count: count as u64,
            sample_sum: count as f64 * 2.5,
            schema: -2,
            zero_threshold: 2f64.powi(-128),
            positive_span: spans(&sp),
            positive_delta: deltas(&abs),
            ..Default::default()
        },
    ));

    // golden_schema_change
    let abs = [grow(0, n, 31, 3), grow(0, n, 32, 3)];
    let count = abs.iter().sum::<i64>();
    out.push(histogram_family(
        "golden_schema_change",
        false,
        Histogram {
            sample_count: count as u64,
            sample_sum: count as f64,
            schema: if n < 45 { 2 } else { 1 },
            zero_threshold: 2f64.powi(-128),
            positive_span: spans(&[(4, 2)]),
            positive_delta: deltas(&abs),
            ..Default::default()
        },
    ));

    // golden_gauge
    let wave = |k: u64| (step(n, k, 20) as i64) + 3;
    let (abs, sp): (Vec<i64>, Vec<(i32, u32)>) = match n % 4 {
        0 => (vec![wave(41), wave(42)], vec![(0, 2)]),
        1 => (vec![wave(41), wave(42), wave(43)], vec![(0, 3)]),
        2 => (vec![wave(42), wave(44)], vec![(1, 1), (3, 1)]),
        _ => (vec![wave(41)], vec![(0, 1)]),
    };
    let count = abs.iter().sum::<i64>();
    out.push(histogram_family(
        "golden_gauge",
        true,
        Histogram {
            sample_count: count as u64,
            sample_sum: count as f64 * 1.25,
            schema: 1,
            zero_threshold: 2f64.powi(-128),
            positive_span: spans(&sp),
            positive_delta: deltas(&abs),
            ..Default::default()
        },
    ));
    out
}
