//! Native histogram chunks (encodings 2 and 3) against Prometheus 2.42's own bytes.
//!
//! `tests/data/histograms/*.json` hold chunks that a real Prometheus 2.42 wrote while
//! scraping `common/native_target.rs` (`demo_families`) and evaluating recording rules that
//! produce float histograms, read back with remote read (STREAMED_XOR_CHUNKS), together with
//! the samples Prometheus's query API decodes from them (2.42's SAMPLES remote-read response
//! carries no histograms, so `/api/v1/query` of a range selector is the decoded view).
//! Regenerate with `WEFT_REGEN_HISTOGRAM_GOLDEN=1 cargo test --test histogram_chunks
//! regenerate -- --nocapture` (takes `WEFT_GOLDEN_SECONDS`, default 200 s).
//!
//! How the golden chunks were made, and why so: the integer histograms are scraped
//! (protobuf exposition); 2.42 does store float histograms, but only from rule evaluation, so
//! two recording rules (`sum(...)`, `rate(...)`) produce encoding-3 chunks (2.42 stores them
//! with the gauge header). 2.42's remote read re-encodes a series' *open* head chunk and
//! loses its counter-reset header doing so (it even fails on gauge histograms whose counts
//! go down), so the run ends by making the target go silent (stale markers, which 2.42
//! appends to histogram series as stale histograms) and then serve one frozen scrape (a fresh
//! sample after a stale one cuts a chunk); the open chunk after that is left out. Chunks of
//! schema -53 cannot come from 2.42 and are covered by the round-trip properties only.
//!
//! Checked here: every golden chunk decodes to what Prometheus's API answered; weft's head
//! appender, fed the decoded samples from scratch, cuts the same chunks with the same
//! bytes; encode/decode round trips for generated histograms of many shapes (schema -53
//! too); arbitrary bytes never panic the decoder.

mod common;
#[path = "common/native_target.rs"]
mod native_target;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message;
use serde_json::{json, Value};
use weft::chunk::{
    decode_histogram_chunk, encode_histograms, FloatHistogramAppender, HistogramAppender,
    HistogramHeadAppender, ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM,
};
use weft::model::{
    CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span, CUSTOM_BUCKETS_SCHEMA,
};
use weft::proto::prompb::{
    ChunkedReadResponse, LabelMatcher, MatcherType, Query, ReadRequest, ResponseType,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/histograms")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Regeneration: a real Prometheus 2.42 scrapes the native target.

#[test]
fn regenerate_golden_chunks_from_prometheus() {
    if std::env::var("WEFT_REGEN_HISTOGRAM_GOLDEN").as_deref() != Ok("1") {
        eprintln!("set WEFT_REGEN_HISTOGRAM_GOLDEN=1 to regenerate tests/data/histograms");
        return;
    }
    assert!(
        Path::new(PROMETHEUS).exists(),
        "needs Debian's prometheus 2.42"
    );
    let seconds: u64 = std::env::var("WEFT_GOLDEN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let target = native_target::NativeTarget::start(native_target::demo_families);
    let dir = common::TempDir::new("weft-hist-golden");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:
  - name: golden
    interval: 1s
    rules:
      - record: golden:basic_sum
        expr: sum(golden_basic)
      - record: golden:negative_rate
        expr: rate(golden_negative[5s])
",
    )
    .unwrap();
    let config = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ['{}']
scrape_configs:
  - job_name: golden
    static_configs:
      - targets: ['{}']
",
        dir.path().join("rules.yml").display(),
        target.addr()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let mut cmd = Command::new(PROMETHEUS);
    cmd.arg(format!(
        "--config.file={}",
        dir.path().join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.path().join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .arg("--enable-feature=native-histograms");
    let _prom = common::ProcessGuard::spawn("prometheus", cmd, None, |_| {});
    let base = format!("http://127.0.0.1:{port}");
    let client = common::http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("{base}/-/ready"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "prometheus did not get ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "prometheus on {base} scrapes {}; waiting {seconds} s",
        target.addr()
    );
    std::thread::sleep(Duration::from_secs(seconds));
    eprintln!("target answered {} scrapes", target.scrapes());
    // Close every histogram chunk with stale markers: 2.42's remote read re-encodes a
    // series' open head chunk (and loses its counter-reset header doing so, see
    // `populateWithDelChunkSeriesIterator` in tsdb/querier.go; it even fails on gauge
    // histograms whose counts go down), but sends closed chunks as stored.
    //
    // A stale marker does not do that in 2.42 (the head appends it to a histogram series as
    // a stale histogram, which fits the open chunk), but a fresh sample after it does not
    // fit, so: go silent (stale markers), then serve the last scrape's metrics frozen (a new
    // chunk starts; constant counts keep the re-encoding of that open chunk from failing),
    // and keep only the chunks before each series' last one.
    let last = target.scrapes().saturating_sub(1);
    target.set_silent(true);
    std::thread::sleep(Duration::from_secs(15));
    target.freeze_at(Some(last));
    target.set_silent(false);
    std::thread::sleep(Duration::from_secs(5));

    // Remote read of everything named golden*, as stored chunks.
    let now = common::now_ms();
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: now,
            matchers: vec![LabelMatcher {
                r#type: MatcherType::Re as i32,
                name: "__name__".into(),
                value: "golden.*".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
    };
    let resp = client
        .post(format!("{base}/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(common::snappy(&req.encode_to_vec()))
        .send()
        .expect("remote read");
    assert!(resp.status().is_success(), "remote read: {}", resp.status());
    let body = resp.bytes().unwrap();
    let mut written = 0;
    for frame in frames(&body) {
        let msg = ChunkedReadResponse::decode(frame).expect("ChunkedReadResponse");
        for s in msg.chunked_series {
            let labels: serde_json::Map<String, Value> = s
                .labels
                .iter()
                .map(|l| (l.name.clone(), json!(l.value)))
                .collect();
            let name = labels["__name__"].as_str().unwrap().replace(':', "_");
            eprintln!(
                "{name}: chunk types {:?} max_t {:?}",
                s.chunks.iter().map(|c| c.r#type).collect::<Vec<_>>(),
                s.chunks.iter().map(|c| c.max_time_ms).collect::<Vec<_>>()
            );
            // The last chunk is the open one, re-encoded by Prometheus: not golden.
            let hist: Vec<_> = s.chunks[..s.chunks.len() - 1]
                .iter()
                .filter(|c| c.r#type == 2 || c.r#type == 3)
                .collect();
            assert!(!hist.is_empty(), "{name}: no closed histogram chunks");
            let max_t = hist.iter().map(|c| c.max_time_ms).max().unwrap();
            let chunks: Vec<Value> = hist
                .iter()
                .map(|c| {
                    json!({"encoding": c.r#type, "min_t": c.min_time_ms, "max_t": c.max_time_ms,
                           "hex": hex(&c.data)})
                })
                .collect();
            // The same samples as Prometheus's query engine decodes them.
            let selector = format!("{}[1h]", labels["__name__"].as_str().unwrap());
            let api: Value = client
                .get(format!("{base}/api/v1/query"))
                .query(&[
                    ("query", selector.as_str()),
                    ("time", &format!("{}.{:03}", max_t / 1000, max_t % 1000)),
                ])
                .send()
                .expect("query")
                .text()
                .map(|t| serde_json::from_str(&t).expect("query json"))
                .expect("query body");
            assert_eq!(api["status"], "success", "{api}");
            let result = &api["data"]["result"];
            assert_eq!(result.as_array().map(Vec::len), Some(1), "{api}");
            let golden = json!({
                "source": "Debian prometheus 2.42.0 --enable-feature=native-histograms, scraping tests/common/native_target.rs demo_families at 1s",
                "labels": labels,
                "chunks": chunks,
                "api_histograms": result[0]["histograms"],
            });
            let path = golden_dir().join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string(&golden).unwrap()).unwrap();
            eprintln!("wrote {} ({} chunks)", path.display(), hist.len());
            written += 1;
        }
    }
    assert!(written >= 5, "only {written} series came back");
}

/// The frames of a streamed remote-read body; panics with the body's tail as text if it
/// breaks off (Prometheus writes an error message into the stream then).
fn frames(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (len, n) = common::uvarint(rest).expect("frame length");
        let len = len as usize;
        assert!(
            rest.len() >= n + 4 + len,
            "stream broke off after {} frames: {:?}",
            out.len(),
            String::from_utf8_lossy(rest)
        );
        out.push(&rest[n + 4..n + 4 + len]);
        rest = &rest[n + 4 + len..];
    }
    out
}

// ---------------------------------------------------------------------------------------
// Golden checks.

/// A histogram as Prometheus's JSON API shows it: count, sum and the non-empty buckets as
/// (lower, upper, count), ordered by lower bound.
type ApiView = (f64, f64, Vec<(f64, f64, f64)>);

/// The bound of bucket `idx` of an exponential schema: 2^(idx * 2^-schema).
fn bound(idx: i64, schema: i32) -> f64 {
    2f64.powf(idx as f64 * 2f64.powi(-schema))
}

fn api_view(v: &HistogramValue) -> ApiView {
    let f = match v {
        HistogramValue::Int(h) => h.to_float(),
        HistogramValue::Float(f) => f.clone(),
    };
    let mut buckets = Vec::new();
    let walk = |spans: &[Span], counts: &[f64], negative: bool, out: &mut Vec<(f64, f64, f64)>| {
        let mut idx = 0i64;
        let mut k = 0;
        for (i, s) in spans.iter().enumerate() {
            idx += i64::from(s.offset) + if i == 0 { 0 } else { 1 };
            for j in 0..s.length {
                if j > 0 {
                    idx += 1;
                }
                let c = counts[k];
                k += 1;
                if c == 0.0 {
                    continue;
                }
                let (lo, hi) = (bound(idx - 1, f.schema), bound(idx, f.schema));
                out.push(if negative { (-hi, -lo, c) } else { (lo, hi, c) });
            }
            if s.length == 0 {
                idx -= 1;
            }
        }
    };
    walk(&f.negative_spans, &f.negative_buckets, true, &mut buckets);
    if f.zero_count != 0.0 {
        buckets.push((-f.zero_threshold, f.zero_threshold, f.zero_count));
    }
    walk(&f.positive_spans, &f.positive_buckets, false, &mut buckets);
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (f.count, f.sum, buckets)
}

fn parse_api(v: &Value) -> (i64, ApiView) {
    let num = |v: &Value| -> f64 { v.as_str().unwrap().parse().unwrap() };
    let t = (v[0].as_f64().unwrap() * 1000.0).round() as i64;
    let h = &v[1];
    let mut buckets: Vec<(f64, f64, f64)> = h["buckets"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| (num(&b[1]), num(&b[2]), num(&b[3])))
                .collect()
        })
        .unwrap_or_default();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (t, (num(&h["count"]), num(&h["sum"]), buckets))
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn golden_files() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(golden_dir())
        .expect("tests/data/histograms")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// (encoding, bytes, min_t, max_t) of a golden file's histogram chunks.
fn golden_chunks(g: &Value) -> Vec<(u8, Vec<u8>, i64, i64)> {
    g["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["encoding"].as_u64().unwrap() as u8,
                unhex(c["hex"].as_str().unwrap()),
                c["min_t"].as_i64().unwrap(),
                c["max_t"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn golden_chunks_cover_both_encodings_and_every_header() {
    let files = golden_files();
    assert!(files.len() >= 7, "golden files missing: {}", files.len());
    let mut encodings = std::collections::BTreeSet::new();
    let mut headers = std::collections::BTreeSet::new();
    for (_, g) in &files {
        for (enc, bytes, _, _) in golden_chunks(g) {
            encodings.insert(enc);
            headers.insert(bytes[2] >> 6);
        }
    }
    assert_eq!(
        encodings.into_iter().collect::<Vec<_>>(),
        vec![ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM]
    );
    assert_eq!(headers.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

#[test]
fn golden_chunks_decode_to_what_prometheus_answers() {
    for (name, g) in golden_files() {
        let mut decoded = Vec::new();
        for (enc, bytes, min_t, max_t) in golden_chunks(&g) {
            let samples = decode_histogram_chunk(enc, &bytes)
                .unwrap_or_else(|e| panic!("{name}: chunk does not decode: {e}"));
            assert_eq!(samples.first().map(|s| s.0), Some(min_t), "{name}");
            assert_eq!(samples.last().map(|s| s.0), Some(max_t), "{name}");
            decoded.extend(samples);
        }
        let api: Vec<(i64, ApiView)> = g["api_histograms"]
            .as_array()
            .unwrap()
            .iter()
            .map(parse_api)
            .collect();
        // The API shows samples of the last hour up to the newest chunk's end.
        let first_api = api.first().expect("api samples").0;
        // The API leaves out stale markers (which the chunks hold as stale histograms).
        let is_stale = |v: &HistogramValue| match v {
            HistogramValue::Int(h) => h.sum.to_bits() == weft::chunk::STALE_NAN_BITS,
            HistogramValue::Float(h) => h.sum.to_bits() == weft::chunk::STALE_NAN_BITS,
        };
        let stale = decoded.iter().filter(|s| is_stale(&s.1)).count();
        assert!(
            stale >= 1,
            "{name}: the golden data should hold a stale marker"
        );
        let decoded: Vec<_> = decoded
            .into_iter()
            .filter(|s| s.0 >= first_api && !is_stale(&s.1))
            .collect();
        assert_eq!(decoded.len(), api.len(), "{name}: sample count");
        for ((t, v), (at, av)) in decoded.iter().zip(&api) {
            assert_eq!(t, at, "{name}");
            let mine = api_view(v);
            assert_eq!(mine.0, av.0, "{name} at {t}: count");
            assert_eq!(mine.1.to_bits(), av.1.to_bits(), "{name} at {t}: sum");
            assert_eq!(
                mine.2.len(),
                av.2.len(),
                "{name} at {t}: buckets {mine:?} vs {av:?}"
            );
            for (m, a) in mine.2.iter().zip(&av.2) {
                assert!(
                    close(m.0, a.0) && close(m.1, a.1) && m.2 == a.2,
                    "{name} at {t}: bucket {m:?} vs {a:?}"
                );
            }
        }
    }
}

/// Prometheus stores what the scrape or rule said; the hints in decoded samples come from
/// the chunk headers, so they are reset to what the source gave (gauge or nothing).
fn as_scraped(v: &HistogramValue) -> HistogramValue {
    let mut v = v.clone();
    match &mut v {
        HistogramValue::Int(h) if h.counter_reset_hint != CounterResetHint::Gauge => {
            h.counter_reset_hint = CounterResetHint::Unknown
        }
        HistogramValue::Float(h) if h.counter_reset_hint != CounterResetHint::Gauge => {
            h.counter_reset_hint = CounterResetHint::Unknown
        }
        _ => {}
    }
    v
}

#[test]
fn weft_cuts_and_encodes_the_golden_samples_exactly_like_prometheus() {
    for (name, g) in golden_files() {
        let want = golden_chunks(&g);
        let samples: Vec<(i64, HistogramValue)> = want
            .iter()
            .flat_map(|(enc, b, _, _)| decode_histogram_chunk(*enc, b).unwrap())
            .map(|(t, v)| (t, as_scraped(&v)))
            .collect();
        let got = encode_histograms(&samples);
        let summary = |c: &[(u8, Vec<u8>, i64, i64)]| -> Vec<(u8, u8, usize, i64, i64)> {
            c.iter()
                .map(|(e, b, lo, hi)| {
                    (
                        *e,
                        b[2] >> 6,
                        u16::from_be_bytes([b[0], b[1]]) as usize,
                        *lo,
                        *hi,
                    )
                })
                .collect()
        };
        assert_eq!(
            summary(&got),
            summary(&want),
            "{name}: (encoding, header, samples, min_t, max_t) of the cut chunks"
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(hex(&g.1), hex(&w.1), "{name}: bytes of chunk {i}");
        }
        // Re-opening every golden chunk appends on as the original appender would.
        for (enc, b, _, _) in &want {
            match *enc {
                ENCODING_HISTOGRAM => {
                    assert_eq!(HistogramAppender::from_chunk(b).unwrap().bytes(), &b[..]);
                }
                _ => {
                    assert_eq!(
                        FloatHistogramAppender::from_chunk(b).unwrap().bytes(),
                        &b[..]
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Properties.

fn arb_spans(max_buckets: u32) -> impl Strategy<Value = Vec<Span>> {
    prop::collection::vec((-5i32..6, 1u32..4), 0..4).prop_map(move |v| {
        let mut total = 0;
        let mut out = Vec::new();
        for (i, (offset, length)) in v.into_iter().enumerate() {
            if total + length > max_buckets {
                break;
            }
            total += length;
            out.push(Span {
                offset: if i == 0 { offset } else { offset.abs() },
                length,
            });
        }
        out
    })
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        -1e6f64..1e6,
        any::<u64>().prop_map(f64::from_bits),
        (0u32..100).prop_map(f64::from),
    ]
}

/// A layout: schema (exponential or -53), zero threshold, spans, custom bounds.
fn arb_layout() -> impl Strategy<Value = (i32, f64, Vec<Span>, Vec<Span>, Vec<f64>)> {
    (
        prop_oneof![(-4i32..=8).boxed(), Just(CUSTOM_BUCKETS_SCHEMA).boxed()],
        prop_oneof![Just(0.0), Just(2f64.powi(-128)), Just(0.001), arb_f64()],
        arb_spans(12),
        arb_spans(12),
        prop::collection::vec(
            prop_oneof![(0u32..40000).prop_map(|x| x as f64 / 1000.0), arb_f64()],
            0..6,
        ),
    )
        .prop_map(|(schema, zt, p, n, cv)| {
            if schema == CUSTOM_BUCKETS_SCHEMA {
                (schema, 0.0, p, Vec::new(), cv)
            } else {
                (schema, zt, p, n, Vec::new())
            }
        })
}

fn arb_int_series() -> impl Strategy<Value = Vec<(i64, HistogramValue)>> {
    (
        arb_layout(),
        any::<bool>(),
        prop::collection::vec((1i64..100_000, any::<u64>()), 1..40),
    )
        .prop_map(|((schema, zt, p, n, cv), gauge, steps)| {
            let np: usize = p.iter().map(|s| s.length as usize).sum();
            let nn: usize = n.iter().map(|s| s.length as usize).sum();
            let mut t = -1_000_000i64;
            steps
                .into_iter()
                .map(|(dt, seed)| {
                    t += dt;
                    let mut x = seed;
                    let mut next = |m: i64| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((x >> 33) as i64) % m
                    };
                    let big = if seed % 7 == 0 { 1 << 40 } else { 50 };
                    let pb: Vec<i64> = (0..np).map(|_| next(big) - big / 2).collect();
                    let nb: Vec<i64> = (0..nn).map(|_| next(big) - big / 2).collect();
                    let h = Histogram {
                        counter_reset_hint: if gauge {
                            CounterResetHint::Gauge
                        } else {
                            CounterResetHint::Unknown
                        },
                        schema,
                        zero_threshold: zt,
                        zero_count: next(1000) as u64,
                        count: next(1 << 50) as u64,
                        sum: f64::from_bits(seed),
                        positive_spans: p.clone(),
                        negative_spans: n.clone(),
                        positive_buckets: pb,
                        negative_buckets: nb,
                        custom_values: cv.clone(),
                    };
                    (t, HistogramValue::Int(h))
                })
                .collect()
        })
}

fn to_float_series(s: &[(i64, HistogramValue)]) -> Vec<(i64, HistogramValue)> {
    s.iter()
        .map(|(t, v)| match v {
            HistogramValue::Int(h) => (*t, HistogramValue::Float(h.to_float())),
            f => (*t, f.clone()),
        })
        .collect()
}

/// Bit-level comparison of decoded and appended samples (NaN sums compare by bits; the
/// hint is the chunk header's business; empty custom values outside schema -53 are not
/// stored).
fn same(a: &HistogramValue, b: &HistogramValue) -> bool {
    #[allow(clippy::type_complexity)]
    fn norm_f(
        f: &FloatHistogram,
    ) -> (
        i32,
        u64,
        u64,
        u64,
        u64,
        Vec<Span>,
        Vec<Span>,
        Vec<u64>,
        Vec<u64>,
        Vec<u64>,
    ) {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (
            f.schema,
            f.zero_threshold.to_bits(),
            f.zero_count.to_bits(),
            f.count.to_bits(),
            f.sum.to_bits(),
            f.positive_spans.clone(),
            f.negative_spans.clone(),
            bits(&f.positive_buckets),
            bits(&f.negative_buckets),
            if f.schema == CUSTOM_BUCKETS_SCHEMA {
                bits(&f.custom_values)
            } else {
                Vec::new()
            },
        )
    }
    match (a, b) {
        (HistogramValue::Int(x), HistogramValue::Int(y)) => {
            let strip = |h: &Histogram| {
                let mut h = h.clone();
                h.counter_reset_hint = CounterResetHint::Unknown;
                h.sum = f64::from_bits(0);
                if h.schema != CUSTOM_BUCKETS_SCHEMA {
                    h.custom_values.clear();
                }
                h
            };
            strip(x) == strip(y) && x.sum.to_bits() == y.sum.to_bits()
        }
        (HistogramValue::Float(x), HistogramValue::Float(y)) => norm_f(x) == norm_f(y),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Samples of one layout (random counts, so counters may be cut at resets; gauges stay
    /// in one chunk) come back from the cut chunks bit for bit and in order.
    #[test]
    fn same_layout_round_trips(series in arb_int_series(), float in any::<bool>()) {
        let series = if float { to_float_series(&series) } else { series };
        let chunks = encode_histograms(&series);
        let mut back = Vec::new();
        for (enc, bytes, min_t, max_t) in &chunks {
            let s = decode_histogram_chunk(*enc, bytes).unwrap();
            prop_assert_eq!(s.first().map(|x| x.0), Some(*min_t));
            prop_assert_eq!(s.last().map(|x| x.0), Some(*max_t));
            back.extend(s);
        }
        prop_assert_eq!(back.len(), series.len());
        for ((t0, v0), (t1, v1)) in series.iter().zip(&back) {
            prop_assert_eq!(t0, t1);
            prop_assert!(same(v0, v1), "{:?}\n!=\n{:?}", v0, v1);
        }
        // Re-opening the last chunk reproduces its bytes.
        if let Some((enc, bytes, _, _)) = chunks.last() {
            if *enc == ENCODING_HISTOGRAM {
                let app = HistogramAppender::from_chunk(bytes).unwrap();
                prop_assert_eq!(app.bytes(), &bytes[..]);
            } else {
                let app = FloatHistogramAppender::from_chunk(bytes).unwrap();
                prop_assert_eq!(app.bytes(), &bytes[..]);
            }
        }
    }

    /// Growing counters whose layout widens (new buckets) stay in one chunk and decode to the
    /// input with empty buckets added.
    #[test]
    fn widening_layouts_recode_and_round_trip(
        steps in prop::collection::vec((0u32..3, 0i64..20), 2..30), float in any::<bool>()
    ) {
        let mut head = HistogramHeadAppender::new();
        let mut abs: Vec<i64> = vec![1];
        let mut first_idx = 0i32;
        let mut want = Vec::new();
        let mut closed = Vec::new();
        for (i, (grow, inc)) in steps.iter().enumerate() {
            // Widen on the left (`grow == 1`) or right (`grow == 2`).
            match grow {
                1 => { abs.insert(0, 0); first_idx -= 1; }
                2 => abs.push(0),
                _ => {}
            }
            for c in abs.iter_mut() { *c += inc; }
            let count: i64 = abs.iter().sum();
            let deltas: Vec<i64> = abs.iter().scan(0, |p, &c| { let d = c - *p; *p = c; Some(d) }).collect();
            let h = Histogram {
                schema: 0, count: count as u64, sum: count as f64,
                positive_spans: vec![Span { offset: first_idx, length: abs.len() as u32 }],
                positive_buckets: deltas, ..Default::default()
            };
            let v = if float { HistogramValue::Float(h.to_float()) } else { HistogramValue::Int(h) };
            let t = 1000 * i as i64;
            closed.extend(head.append(t, &v));
            want.push((t, v));
        }
        prop_assert!(closed.is_empty(), "a widening counter must not cut: {:?}", closed);
        let bytes = head.open_bytes().to_vec();
        let back = decode_histogram_chunk(head.encoding(), &bytes).unwrap();
        let last = back.last().unwrap();
        prop_assert!(same(&last.1, &want.last().unwrap().1));
        // Earlier samples: same counts, with the new buckets empty.
        for ((t0, v0), (t1, v1)) in want.iter().zip(&back) {
            prop_assert_eq!(t0, t1);
            let (a, b) = (api_view(v0), api_view(v1));
            prop_assert_eq!(a, b);
        }
    }

    /// Arbitrary bytes never panic the decoders, and what they produce is bounded by the
    /// input.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), enc in 2u8..4) {
        if let Ok(samples) = decode_histogram_chunk(enc, &bytes) {
            let buckets: usize = samples.iter().map(|(_, v)| match v {
                HistogramValue::Int(h) => h.positive_buckets.len() + h.negative_buckets.len(),
                HistogramValue::Float(h) => h.positive_buckets.len() + h.negative_buckets.len(),
            }).sum();
            prop_assert!(buckets <= bytes.len() * 8 + 8);
            let _ = HistogramAppender::from_chunk(&bytes);
            let _ = FloatHistogramAppender::from_chunk(&bytes);
        }
    }

    /// Valid chunks with flipped bits or cut short never panic either.
    #[test]
    fn damaged_chunks_never_panic(series in arb_int_series(), flip in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        for (enc, mut bytes, _, _) in encode_histograms(&series).into_iter().chain(encode_histograms(&to_float_series(&series))) {
            let _ = decode_histogram_chunk(enc, &bytes[..cut.index(bytes.len() + 1)]);
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << (i % 8);
            let _ = decode_histogram_chunk(enc, &bytes);
        }
    }
}

#[test]
fn a_huge_span_count_is_rejected_without_allocating() {
    // Header for 1 sample, zero threshold 0, schema 0, then a span count of 2^56 - 1.
    let mut bytes = vec![0, 1, 0, 0, 0b0_1111111, 0b0111_1111];
    bytes.extend([0xff; 8]);
    assert!(decode_histogram_chunk(ENCODING_HISTOGRAM, &bytes).is_err());
    assert!(decode_histogram_chunk(ENCODING_FLOAT_HISTOGRAM, &bytes).is_err());
    assert!(decode_histogram_chunk(1, &bytes).is_err());
}
