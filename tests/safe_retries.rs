//! Retries are always safe: the weft binary over HTTP.
//! - The same remote-write 1.0 requests sent twice (5 samples a series a request, as a
//!   Prometheus catching up sends them) all get 2xx, and the data reads back exactly once.
//! - Another value at a stored timestamp is a 400 naming the series and both values.
//! - A push the head took but the WAL refused (disk full, 503) is made durable by its retry:
//!   after a kill -9 the samples are there. Needs root for the tmpfs, like `disk_full.rs`.

mod common;

use std::process::Command;

use common::*;
use weft::proto::prompb::{MatcherType, WriteRequest};

const SERIES: usize = 50;

fn series_labels(name: &str, i: usize) -> Labels {
    labels(&[("__name__", name), ("i", &format!("{i:03}"))])
}

/// Request `r` of a catch-up: 5 samples of every series, 15 s apart.
fn request(name: &str, t0: i64, r: i64) -> WriteRequest {
    request_step(name, t0, r, 15_000)
}

fn request_step(name: &str, t0: i64, r: i64, step: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| {
                let samples: Samples = (0..5)
                    .map(|k| {
                        let t = t0 + (r * 5 + k) * step;
                        (t, ((r * 5 + k) as f64 * 0.25 + i as f64).to_bits())
                    })
                    .collect();
                series_proto(&series_labels(name, i), &samples)
            })
            .collect(),
        metadata: vec![],
    }
}

/// What `requests` pushed, as the read helpers return it (series sorted by labels).
fn expected(reqs: &[WriteRequest]) -> SeriesSet {
    let mut by: std::collections::BTreeMap<Labels, Samples> = Default::default();
    for req in reqs {
        for ts in &req.timeseries {
            let l: Labels = ts
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            by.entry(l)
                .or_default()
                .extend(ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())));
        }
    }
    by.into_iter()
        .map(|(l, mut s)| {
            s.sort();
            (l, s)
        })
        .collect()
}

fn all_of(name: &str) -> Vec<weft::proto::prompb::Query> {
    vec![query(
        i64::MIN / 2,
        i64::MAX / 2,
        vec![matcher(MatcherType::Eq, "__name__", name)],
    )]
}

#[test]
fn the_same_requests_sent_twice_all_get_2xx_and_read_back_once() {
    let weft = Weft::start(&[]);
    let t0 = now_ms() - 3_600_000;
    let reqs: Vec<WriteRequest> = (0..30).map(|r| request("retry_test", t0, r)).collect();
    for pass in 0..2 {
        for (k, req) in reqs.iter().enumerate() {
            let r = weft.push("team", req);
            assert_eq!(r.status, 204, "pass {pass}, request {k}: {}", r.text());
            // The Written header is on every answer and counts the no-ops too.
            assert_eq!(
                r.header("x-prometheus-remote-write-samples-written"),
                Some((SERIES * 5).to_string()),
                "pass {pass}, request {k}"
            );
        }
    }
    let want = expected(&reqs);
    assert_eq!(want.len(), SERIES);
    assert_eq!(
        weft.read_samples(Some("team"), &all_of("retry_test"))[0],
        want
    );
    assert_eq!(
        weft.read_chunks(Some("team"), &all_of("retry_test"))[0],
        want
    );
    let n = (30 * SERIES * 5) as f64;
    assert_eq!(
        weft.metric("weft_samples_repeated_total", &[("tenant", "team")]),
        Some(n)
    );
    assert_eq!(
        weft.metric("weft_samples_ingested_total", &[("tenant", "team")]),
        Some(n),
        "no-ops are not ingested twice"
    );
}

#[test]
fn another_value_at_a_stored_timestamp_is_400_naming_the_series_and_both_values() {
    let weft = Weft::start(&[]);
    let t0 = now_ms() - 3_600_000;
    let reqs: Vec<WriteRequest> = (0..3).map(|r| request("conflict_test", t0, r)).collect();
    for req in &reqs {
        weft.push_ok("team", req);
    }
    // Series 7's second sample, with another value; series 8 gets a new sample alongside.
    let l7 = series_labels("conflict_test", 7);
    let l8 = series_labels("conflict_test", 8);
    let t = t0 + 15_000;
    let bad = WriteRequest {
        timeseries: vec![
            series_proto(&l7, &[(t, 1234.5f64.to_bits())]),
            series_proto(&l8, &[(t0 + 100 * 15_000, 1.0f64.to_bits())]),
        ],
        metadata: vec![],
    };
    let r = weft.push("team", &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.text();
    assert!(body.contains("i=\"007\""), "names the series: {body}");
    assert!(body.contains("1234.5"), "the new value: {body}");
    assert!(body.contains("stored 7.25"), "the stored value: {body}");
    assert_eq!(
        weft.metric(
            "weft_samples_rejected_total",
            &[("tenant", "team"), ("reason", "duplicate_timestamp")]
        ),
        Some(1.0)
    );
    // The stored value stays; the rest of the request was kept.
    let mut want = expected(&reqs);
    want[8].1.push((t0 + 100 * 15_000, 1.0f64.to_bits()));
    assert_eq!(
        weft.read_samples(Some("team"), &all_of("conflict_test"))[0],
        want
    );
}

/// The WAL fills its disk: the push that hits it was taken by the head (which decides what
/// is accepted) but not logged, and got a 503. Space returns; Prometheus retries the same
/// push: every sample is now equal to a held one, each is logged again, and the retry is
/// acknowledged once durable. After a kill -9 the retried samples read back, once.
#[test]
fn a_retry_after_a_failed_wal_append_is_durable_across_kill_9() {
    let Some(fs) = Tmpfs::mount("weft-retry", 2 << 20) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs (need root); CI must run this test"
        );
        eprintln!("skipping: cannot mount a tmpfs (need root)");
        return;
    };
    let data = TempDir::new("weft-retry-kill9");
    let wal_dir = fs.path().join("wal");
    let args = [
        "--wal.dir",
        wal_dir.to_str().unwrap(),
        "--wal.segment-size",
        "262144",
    ];
    let weft = Weft::start_on(data.path(), &args, None);
    // 1 s apart: the 2 MiB fill within about 1000 pushes, all in the past.
    let t0 = now_ms() - 6 * 3_600_000;
    let mut acked: Vec<WriteRequest> = Vec::new();
    let mut refused = None;
    for r in 0..4000 {
        let req = request_step("wal_retry_test", t0, r, 1000);
        let resp = weft.push("team", &req);
        match resp.status {
            204 => acked.push(req),
            503 => {
                refused = Some(req);
                break;
            }
            s => panic!("push {r}: unexpected status {s}: {}", resp.text()),
        }
    }
    let refused = refused.expect("the 2 MiB WAL file system never filled up");
    let again = weft.push("team", &refused);
    assert_eq!(again.status, 503, "still full: {}", again.text());
    let grow = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(fs.path())
        .status()
        .expect("remount");
    assert!(grow.success(), "remount with more space failed");
    let retry = weft.push("team", &refused);
    assert_eq!(retry.status, 204, "the retry: {}", retry.text());
    // The head had taken the refused push: the second 503 and the retry were all no-ops
    // (logged again each time).
    assert_eq!(
        weft.metric("weft_samples_repeated_total", &[("tenant", "team")]),
        Some((2 * SERIES * 5) as f64)
    );
    acked.push(refused);

    weft.signal(libc::SIGKILL);
    drop(weft);
    let weft = Weft::start_on(data.path(), &args, None);
    let want = expected(&acked);
    assert_eq!(
        weft.read_samples(Some("team"), &all_of("wal_retry_test"))[0],
        want,
        "every acknowledged sample, the retried ones included, once"
    );
}
