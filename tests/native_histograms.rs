//! Native histograms (integer and float, every shape) through every tier of the binary:
//! pushed over remote write 1.0 (`TimeSeries.histograms`) and 2.0, read back by remote read in both
//! modes (SAMPLES `histograms`, STREAMED_XOR_CHUNKS chunks of encodings 2 and 3) from
//! memory, after `kill -9` (WAL), after a graceful restart (checkpoint), from the local
//! tier once flushed chunks left memory, and from the
//! store alone (a fresh ingester after `POST /ingester/flush?wait=true`); listed by
//! `/api/v1/series`.
//!
//! "Exact" is what Prometheus's own reads guarantee (`weft::hist::equivalent`): the same
//! observations in the same buckets at the same times; bucket layouts may gain empty
//! buckets (appenders widen a chunk's layout) and counter-reset hints are the chunk's.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use weft::hist::fixtures::{
    custom_series, first_difference, float_series, gauge_series, int_series,
};
use weft::model::HistogramValue;
use weft::proto::prompb::{
    ChunkEncoding, ChunkedReadResponse, MatcherType, Query, ReadRequest, ReadResponse,
    ResponseType, TimeSeries, WriteRequest,
};

const TENANT: &str = "hist";

type HSeries = (String, Vec<(i64, HistogramValue)>);

/// Every shape, at 15 s steps ending about now.
fn data_set() -> Vec<HSeries> {
    let step = 15_000;
    let start = now_ms() - 2 * 3_600_000;
    vec![
        ("h_int".into(), int_series(start, step, 300)),
        ("h_gauge".into(), gauge_series(start, step, 200)),
        ("h_float".into(), float_series(start, step, 250)),
        ("h_custom".into(), custom_series(start, step, 130)),
    ]
}

/// The data set as 1.0 requests of at most `per` samples a series.
fn requests(data: &[HSeries], per: usize) -> Vec<WriteRequest> {
    let most = data.iter().map(|s| s.1.len()).max().unwrap_or(0);
    (0..most.div_ceil(per))
        .map(|k| WriteRequest {
            timeseries: data
                .iter()
                .filter(|(_, hs)| k * per < hs.len())
                .map(|(name, hs)| TimeSeries {
                    labels: to_proto_labels(&labels(&[("__name__", name), ("job", "hist")])),
                    samples: Vec::new(),
                    exemplars: Vec::new(),
                    histograms: hs[k * per..((k + 1) * per).min(hs.len())]
                        .iter()
                        .map(|(t, h)| weft::hist::to_prompb(*t, h))
                        .collect(),
                })
                .collect(),
            metadata: Vec::new(),
        })
        .collect()
}

/// Which remote-write protocol a test pushes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    V1,
    V2,
}

/// A 1.0 request as the same 2.0 request (symbols table, label refs, 2.0 histograms).
fn to_v2(req: &WriteRequest) -> Vec<u8> {
    use weft::proto::prompb_v2;
    let mut symbols = vec![String::new()];
    let mut sym = |s: &str| -> u32 {
        match symbols.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                symbols.push(s.to_owned());
                (symbols.len() - 1) as u32
            }
        }
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| prompb_v2::TimeSeries {
            labels_refs: ts
                .labels
                .iter()
                .flat_map(|l| [sym(&l.name), sym(&l.value)])
                .collect(),
            histograms: ts
                .histograms
                .iter()
                .map(|h| {
                    let (t, v) = weft::hist::from_prompb(h).expect("a valid 1.0 histogram");
                    prompb_v2::Histogram::from_model(t, &v)
                })
                .collect(),
            ..prompb_v2::TimeSeries::default()
        })
        .collect();
    prompb_v2::Request {
        symbols,
        timeseries,
    }
    .encode_to_vec()
}

fn push_all_with(w: &Weft, data: &[HSeries], proto: Proto) {
    for (i, req) in requests(data, 50).iter().enumerate() {
        let n: usize = req.timeseries.iter().map(|t| t.histograms.len()).sum();
        let r = match proto {
            Proto::V1 => w.push(TENANT, req),
            Proto::V2 => w.push_raw(
                &[
                    (
                        "Content-Type",
                        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                    ),
                    ("Content-Encoding", "snappy"),
                    ("X-Prometheus-Remote-Write-Version", "2.0.0"),
                    ("X-Scope-OrgID", TENANT),
                ],
                snappy(&to_v2(req)),
            ),
        };
        assert_eq!(r.status, 204, "push {i}: {}", r.text());
        assert_eq!(
            r.header("x-prometheus-remote-write-histograms-written"),
            Some(n.to_string()),
            "push {i}: histograms written"
        );
    }
}

fn everything() -> Query {
    query(0, i64::MAX, vec![matcher(MatcherType::Eq, "job", "hist")])
}

fn name_of(ls: &[weft::proto::prompb::Label]) -> String {
    ls.iter()
        .find(|l| l.name == "__name__")
        .map(|l| l.value.clone())
        .unwrap_or_default()
}

/// SAMPLES mode: every series' histograms (and no float samples).
fn read_samples(w: &Weft) -> Vec<HSeries> {
    let r = w.read_raw(
        Some(TENANT),
        &ReadRequest {
            queries: vec![everything()],
            accepted_response_types: vec![ResponseType::Samples as i32],
        },
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = ReadResponse::decode(&unsnappy(&r.body).unwrap()[..]).unwrap();
    resp.results[0]
        .timeseries
        .iter()
        .map(|ts| {
            assert!(ts.samples.is_empty(), "float samples in a histogram series");
            let hs = ts
                .histograms
                .iter()
                .map(|h| weft::hist::from_prompb(h).expect("a valid histogram"))
                .collect();
            (name_of(&ts.labels), hs)
        })
        .collect()
}

/// STREAMED_XOR_CHUNKS mode: every series' chunks, decoded; checks each chunk's type.
fn read_chunks(w: &Weft) -> Vec<HSeries> {
    let r = w.read_raw(
        Some(TENANT),
        &ReadRequest {
            queries: vec![everything()],
            accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
        },
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut out: Vec<HSeries> = Vec::new();
    for frame in read_frames(&r.body) {
        let msg = ChunkedReadResponse::decode(frame).unwrap();
        for cs in msg.chunked_series {
            let name = name_of(&cs.labels);
            let mut hs = Vec::new();
            for c in &cs.chunks {
                let enc = u8::try_from(c.r#type).unwrap();
                assert!(
                    c.r#type == ChunkEncoding::Histogram as i32
                        || c.r#type == ChunkEncoding::FloatHistogram as i32,
                    "{name}: chunk of type {}",
                    c.r#type
                );
                let got = weft::chunk::decode_histogram_chunk(enc, &c.data)
                    .unwrap_or_else(|e| panic!("{name}: chunk does not decode: {e}"));
                assert_eq!(
                    (c.min_time_ms, c.max_time_ms),
                    (got[0].0, got[got.len() - 1].0),
                    "{name}: chunk times"
                );
                hs.extend(got);
            }
            match out.last_mut() {
                Some((n, prev)) if *n == name => prev.extend(hs),
                _ => out.push((name, hs)),
            }
        }
    }
    out
}

fn assert_same(what: &str, want: &[HSeries], got: &[HSeries]) {
    let mut want = want.to_vec();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = got.iter().map(|s| s.0.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, want_names, "{what}: series");
    for ((name, w), (_, g)) in want.iter().zip(got) {
        if let Some(i) = first_difference(g, w) {
            panic!(
                "{what}: {name}: {} samples back, {} sent; first difference at {i}:\n got  {:?}\n want {:?}",
                g.len(),
                w.len(),
                g.get(i),
                w.get(i)
            );
        }
    }
}

fn check_everything(what: &str, w: &Weft, data: &[HSeries]) {
    assert_same(&format!("{what}, SAMPLES"), data, &read_samples(w));
    assert_same(
        &format!("{what}, STREAMED_XOR_CHUNKS"),
        data,
        &read_chunks(w),
    );
}

fn store_args(store: &std::path::Path, id: &str) -> Vec<String> {
    vec![
        "--store".into(),
        format!("file://{}", store.display()),
        "--ingester.id".into(),
        id.into(),
        // Flushed chunks leave memory a second after their flush: reads then come from
        // the local tier (or the store).
        "--flush.retain-period".into(),
        "1s".into(),
        "--flush.period".into(),
        "500ms".into(),
    ]
}

#[test]
fn histograms_read_back_exact_from_memory_wal_checkpoint_and_store() {
    every_tier(Proto::V1);
}

/// The same over remote write 2.0.
#[test]
fn histograms_over_2_0_read_back_exact_from_memory_wal_checkpoint_and_store() {
    every_tier(Proto::V2);
}

fn every_tier(proto: Proto) {
    let data = data_set();
    let store = TempDir::new("weft-hist-store");
    let dir_a = TempDir::new("weft-hist-a");
    let args_a = store_args(store.path(), "hist-a");
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();

    let w = Weft::start_on(dir_a.path(), &args_a, None);
    push_all_with(&w, &data, proto);
    check_everything("from memory", &w, &data);
    let series = w.series(Some(TENANT), &["{job=\"hist\"}"], &[]);
    let mut names: Vec<&str> = series.iter().map(|s| s["__name__"].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["h_custom", "h_float", "h_gauge", "h_int"],
        "/api/v1/series"
    );
    // The newest sample of every series again (a retried push): written, nothing doubled.
    let newest: Vec<HSeries> = data
        .iter()
        .map(|(n, hs)| (n.clone(), hs[hs.len() - 1..].to_vec()))
        .collect();
    push_all_with(&w, &newest, proto);
    check_everything("after a retried push", &w, &data);

    // kill -9: the WAL alone brings everything back.
    w.signal(libc::SIGKILL);
    let mut w = w;
    w.wait_exit(Duration::from_secs(10));
    drop(w);
    let w = Weft::start_on(dir_a.path(), &args_a, None);
    check_everything("after kill -9", &w, &data);

    // Everything into the store; then a fresh ingester reads it from there alone.
    let r = w.flush_wait("60s");
    assert_eq!(r.status, 200, "flush: {}", r.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while w.metric("weft_released_chunks_total", &[]).unwrap_or(0.0) == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no chunk released after the flush"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    check_everything("after the flush, chunks released (local tier)", &w, &data);
    let dir_b = TempDir::new("weft-hist-b");
    let args_b = store_args(store.path(), "hist-b");
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let b = Weft::start_on(dir_b.path(), &args_b, None);
    check_everything("from the store (fresh ingester)", &b, &data);
    let series = b.series(Some(TENANT), &["{job=\"hist\"}"], &[]);
    assert_eq!(series.len(), 4, "/api/v1/series from the store: {series:?}");
    drop(b);

    // A graceful restart (a checkpoint at shutdown, or the WAL) of A after the flush.
    w.signal(libc::SIGTERM);
    let mut w = w;
    assert!(w.wait_exit(Duration::from_secs(30)).success());
    drop(w);
    let w = Weft::start_on(dir_a.path(), &args_a, None);
    check_everything("after a graceful restart", &w, &data);
}

/// A retried push (the same 1.0 requests again, 5 histograms a series a request, so most
/// of each retried request is older than the newest sample) is a no-op: every request
/// 204 with the exact Histograms-Written, each histogram read back once, and the repeats
/// counted in `weft_samples_repeated_total`.
#[test]
fn retried_histogram_pushes_are_no_ops() {
    let data = data_set();
    // A memory limit, so that `weft_memory_bytes` is measured.
    let w = Weft::start(&["--limits.memory-bytes", "1073741824"]);
    let reqs = requests(&data, 5);
    let head_series = |w: &Weft| {
        w.metric("weft_memory_bytes", &[("consumer", "head_series")])
            .unwrap_or(0.0)
    };
    // Every series is in the first request: later ones only grow the open histogram
    // chunks, which count in the series bytes.
    assert_eq!(w.push(TENANT, &reqs[0]).status, 204);
    let first = wait_for_metric(&w, &head_series, |v| v > 0.0);
    let n: usize = data.iter().map(|s| s.1.len()).sum();
    let repeated = |w: &Weft| {
        w.metric("weft_samples_repeated_total", &[("tenant", TENANT)])
            .unwrap_or(0.0)
    };
    for round in ["first push", "retry"] {
        for (i, req) in reqs.iter().enumerate() {
            let k: usize = req.timeseries.iter().map(|t| t.histograms.len()).sum();
            let r = w.push(TENANT, req);
            assert_eq!(r.status, 204, "{round}, request {i}: {}", r.text());
            assert_eq!(
                r.header("x-prometheus-remote-write-histograms-written"),
                Some(k.to_string()),
                "{round}, request {i}: histograms written"
            );
        }
        check_everything(&format!("after the {round}"), &w, &data);
    }
    // The first request was pushed once more before the rounds: 4 series x 5 more repeats.
    assert_eq!(repeated(&w), n as f64 + 20.0, "weft_samples_repeated_total");
    let grown = wait_for_metric(&w, &head_series, |v| v > first);
    eprintln!("weft_memory_bytes{{consumer=\"head_series\"}}: {first} after one request, {grown} after all");
    // A different histogram at a held (older) timestamp is refused with 400.
    let (name, hs) = &data[0];
    let mut other = hs[10].clone();
    if let HistogramValue::Int(h) = &mut other.1 {
        h.sum += 1.0;
    }
    let req = requests(&[(name.clone(), vec![other])], 5).remove(0);
    let r = w.push(TENANT, &req);
    assert_eq!(r.status, 400, "{}", r.text());
    check_everything("after a conflicting histogram", &w, &data);
}

/// Polls `get` until `ok` holds (10 s at most); returns the value.
fn wait_for_metric(w: &Weft, get: &dyn Fn(&Weft) -> f64, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = get(w);
        if ok(v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "metric stuck at {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
