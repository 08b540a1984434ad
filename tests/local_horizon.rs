//! The local horizon: what weft answers during a store outage, by how old the data is.
//!
//! weft (real binary) on a real S3 server (moto) behind a fault proxy, `--local.retention 1h`.
//! An "old" data set (3 h to 2 h ago) and a "recent" one (the last 30 min) are each pushed
//! and flushed; flushed chunks leave memory after 1 s, and the old objects, past the local
//! retention, keep only their index locally. Then the store hangs:
//! - a query of the recent range is complete and exact, within 2 s (local tier);
//! - a query of the old range is partial (`X-Weft-Partial`) and still answers within 2 s,
//!   the first one during the hang included: it never waits on the sick store;
//! - the series API over the old range is complete (the kept index says which series exist).
//!
//! Then the store comes back, and the old range reads back exact and not partial.
//!
//! Needs `moto_server`: skipped without it, except under `CI=true`.

mod common;

use std::time::{Duration, Instant};

use common::s3::{s3_env, FaultProxy, Moto, ProxyMode};
use common::*;
use weft::proto::prompb::{MatcherType, Query, WriteRequest};

const BUCKET: &str = "horizon";
const SERIES: usize = 40;
const STEP_MS: i64 = 15_000;
/// A dashboard's deadline.
const DEADLINE: Duration = Duration::from_secs(2);

/// A value for (series, t), as bits; distinct per sample.
fn value_bits(seed: u64, series: usize, t: i64) -> u64 {
    let x = seed ^ ((series as u64) << 40) ^ (t as u64);
    (((x % 1_000_003) as f64) * 0.25 + series as f64).to_bits()
}

fn series_labels(i: usize) -> Labels {
    labels(&[
        ("__name__", "horizon_metric"),
        ("series", &format!("{i:03}")),
    ])
}

/// Pushes every series over `[from, to)` and returns what a read of it must give.
fn push_range(weft: &Weft, seed: u64, from: i64, to: i64) -> SeriesSet {
    let mut want = SeriesSet::new();
    let ts: Vec<i64> = (from..to).step_by(STEP_MS as usize).collect();
    for chunk in ts.chunks(120) {
        let req = WriteRequest {
            timeseries: (0..SERIES)
                .map(|i| {
                    let samples: Vec<(i64, u64)> =
                        chunk.iter().map(|&t| (t, value_bits(seed, i, t))).collect();
                    series_proto(&series_labels(i), &samples)
                })
                .collect(),
            metadata: vec![],
        };
        weft.push_ok("team-h", &req);
    }
    for i in 0..SERIES {
        want.push((
            series_labels(i),
            ts.iter().map(|&t| (t, value_bits(seed, i, t))).collect(),
        ));
    }
    want
}

fn all_series(from: i64, to: i64) -> Query {
    query(
        from,
        to,
        vec![matcher(MatcherType::Eq, "__name__", "horizon_metric")],
    )
}

/// A timed SAMPLES read: (answer, partial header, time taken).
fn timed_read(weft: &Weft, q: &Query) -> (SeriesSet, Option<String>, Duration) {
    let t = Instant::now();
    let (mut sets, resp) = weft.read_samples_resp(Some("team-h"), std::slice::from_ref(q));
    (sets.remove(0), resp.header(PARTIAL_HEADER), t.elapsed())
}

#[test]
fn a_query_older_than_the_local_horizon_is_partial_and_fast_during_an_outage_and_exact_after() {
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let proxy = FaultProxy::start(moto.port());
    let args = [
        "--store",
        "s3://horizon/p",
        "--ingester.id",
        "horizon-1",
        "--flush.period",
        "500ms",
        "--flush.retain-period",
        "1s",
        "--local.retention",
        "1h",
        "--cache.bytes",
        "0",
        "--store.timeout",
        "3s",
        "--store.circuit-probe-interval",
        "500ms",
    ];
    let weft = Weft::start_with_env(None, &args, &s3_env(&proxy.endpoint()), None);
    let now = now_ms();
    let (old_from, old_to) = (now - 3 * 3_600_000, now - 2 * 3_600_000);
    let (new_from, new_to) = (now - 1_800_000, now);
    let old = push_range(&weft, seed, old_from, old_to);
    let r = weft.flush_wait("30s");
    assert_eq!(r.status, 200, "flush of the old data: {}", r.text());
    let recent = push_range(&weft, seed, new_from, new_to);
    let r = weft.flush_wait("30s");
    assert_eq!(r.status, 200, "flush of the recent data: {}", r.text());

    // Flushed chunks leave memory after the retain period; the old objects leave the local
    // tier (past --local.retention) but keep their index.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let released = weft
            .metric("weft_released_chunks_total", &[])
            .unwrap_or(0.0);
        let evicted = weft
            .metric("weft_local_evictions_total", &[])
            .unwrap_or(0.0);
        let whole = weft.metric("weft_local_objects", &[]).unwrap_or(0.0);
        if released > 0.0 && evicted > 0.0 && whole > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "released {released}, evicted {evicted}, whole local objects {whole}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The horizon: everything newer than the old data set's last sample is local.
    let horizon = weft
        .metric("weft_local_horizon_seconds", &[])
        .unwrap_or(-1.0);
    let want = ((now - (old_to - STEP_MS)) / 1000) as f64;
    assert!(
        (want - 5.0..=want + 120.0).contains(&horizon),
        "weft_local_horizon_seconds {horizon}, want about {want}"
    );
    // Healthy: both ranges exact and complete.
    let (got, partial, _) = timed_read(&weft, &all_series(old_from, old_to));
    assert_eq!(partial, None);
    assert_eq!(got, old, "old range while healthy (seed {seed})");

    proxy.set_mode(ProxyMode::Hang);
    eprintln!("store hangs");
    let mut old_times = Vec::new();
    for round in 0..4 {
        let (got, partial, took) = timed_read(&weft, &all_series(old_from, old_to));
        assert!(
            took <= DEADLINE,
            "old-range query {round} during the hang took {took:?}"
        );
        assert!(
            partial.is_some(),
            "old-range query {round}: the store alone has these chunks, the answer must say \
             it is partial (got {} series)",
            got.len()
        );
        // What comes back is still right, as far as it goes.
        for (l, samples) in &got {
            let want = old
                .iter()
                .find(|(w, _)| w == l)
                .expect("a series that was written");
            assert!(samples.iter().all(|s| want.1.contains(s)), "{l:?}");
        }
        old_times.push(took);
        let (got, partial, took) = timed_read(&weft, &all_series(new_from, new_to));
        assert!(took <= DEADLINE, "recent-range query took {took:?}");
        assert_eq!(partial, None, "recent data is local: complete");
        assert_eq!(got, recent, "recent range during the hang (seed {seed})");
    }
    // The series API over the old range needs only the kept index.
    let start = format!("{}", old_from / 1000);
    let end = format!("{}", old_to / 1000);
    let t = Instant::now();
    let (status, v) = weft.api_get(
        Some("team-h"),
        "/api/v1/series",
        &[
            ("match[]", "horizon_metric"),
            ("start", &start),
            ("end", &end),
        ],
    );
    let took = t.elapsed();
    assert_eq!(status, 200, "{v}");
    assert!(took <= DEADLINE, "series API took {took:?}");
    assert!(v.get("warnings").is_none(), "series API warned: {v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(SERIES), "{v}");
    eprintln!("old-range queries during the hang took {old_times:?}");

    proxy.set_mode(ProxyMode::Forward);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, partial, _) = timed_read(&weft, &all_series(old_from, old_to));
        if partial.is_none() {
            assert_eq!(
                got, old,
                "old range after the store came back (seed {seed})"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old range is still partial 20 s after the store came back: {partial:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fresh ingester on an existing store: its local horizon starts at its first sample.
/// weft A writes and flushes a data set and leaves; weft B (empty data directory, same
/// bucket, another ingester id) takes newer data. While the store hangs, B answers its own
/// range completely and within 2 s, and A's range partially and within 2 s (it only lists
/// A's objects, it never held them); once the store is back, A's range reads back exact.
#[test]
fn a_fresh_ingester_is_complete_from_its_first_sample_and_partial_before_it_during_an_outage() {
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let proxy = FaultProxy::start(moto.port());
    let args = |id: &'static str| {
        vec![
            "--store",
            "s3://horizon/fresh",
            "--ingester.id",
            id,
            "--flush.period",
            "500ms",
            "--flush.retain-period",
            "1s",
            "--cache.bytes",
            "0",
            "--store.circuit-probe-interval",
            "500ms",
        ]
    };
    let now = now_ms();
    let (a_from, a_to) = (now - 2 * 3_600_000, now - 3_600_000);
    let (b_from, b_to) = (now - 1_800_000, now);
    let a_data = {
        let a = Weft::start_with_env(None, &args("ingester-a"), &s3_env(&proxy.endpoint()), None);
        let data = push_range(&a, seed, a_from, a_to);
        let r = a.flush_wait("30s");
        assert_eq!(r.status, 200, "flush of A: {}", r.text());
        data
    };
    let b = Weft::start_with_env(None, &args("ingester-b"), &s3_env(&proxy.endpoint()), None);
    let b_data = push_range(&b, seed ^ 1, b_from, b_to);
    let (got, partial, _) = timed_read(&b, &all_series(a_from, a_to));
    assert_eq!(
        (partial, &got),
        (None, &a_data),
        "A's range from B while healthy"
    );

    proxy.set_mode(ProxyMode::Hang);
    // B never held A's data: after the healthy read above its cache is empty (0 bytes)
    // and its local tier has only A's index (read then), so A's chunks need the store.
    for round in 0..3 {
        let (got, partial, took) = timed_read(&b, &all_series(b_from, b_to));
        assert!(took <= DEADLINE, "B's own range, round {round}: {took:?}");
        assert_eq!(partial, None, "B's own range is local: complete");
        assert_eq!(got, b_data, "B's own range during the hang (seed {seed})");
        let (_, partial, took) = timed_read(&b, &all_series(a_from, a_to));
        assert!(took <= DEADLINE, "A's range, round {round}: {took:?}");
        assert!(
            partial.is_some(),
            "A's chunks are only in the store: partial"
        );
    }
    proxy.set_mode(ProxyMode::Forward);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, partial, _) = timed_read(&b, &all_series(a_from, a_to));
        if partial.is_none() {
            assert_eq!(
                got, a_data,
                "A's range after the store came back (seed {seed})"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still partial: {partial:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
