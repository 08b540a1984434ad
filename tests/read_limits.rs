//! Every read request is bounded: queries per request, samples per SAMPLES answer, and read
//! requests in flight. Each test trips one bound and checks its status, its message, its
//! metric where it has one, and that the server still serves.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use weft::proto::prompb::{MatcherType, ReadRequest, ResponseType, WriteRequest};

const TENANT: &str = "limits";

fn seed_series(weft: &Weft, series: usize, samples: usize) -> i64 {
    let t0 = now_ms() - 3_600_000;
    let req = WriteRequest {
        timeseries: (0..series)
            .map(|i| {
                let labels: Labels = vec![
                    ("__name__".into(), "read_limit_test".into()),
                    ("i".into(), i.to_string()),
                ];
                let s: Vec<(i64, u64)> = (0..samples)
                    .map(|k| (t0 + k as i64 * 1000, (k as f64).to_bits()))
                    .collect();
                series_proto(&labels, &s)
            })
            .collect(),
        metadata: vec![],
    };
    weft.push_ok(TENANT, &req);
    t0
}

fn all_query() -> weft::proto::prompb::Query {
    query(
        i64::MIN,
        i64::MAX,
        vec![matcher(MatcherType::Eq, "__name__", "read_limit_test")],
    )
}

/// Regression (issue 9): a remote-read query with no matchers returned every series of
/// the tenant with a 200.
#[test]
fn a_query_whose_matchers_all_match_the_empty_string_is_a_400() {
    let weft = Weft::start(&[]);
    seed_series(&weft, 3, 1);
    let empty_matching: Vec<Vec<weft::proto::prompb::LabelMatcher>> = vec![
        vec![],
        vec![matcher(MatcherType::Re, "__name__", ".*")],
        vec![
            matcher(MatcherType::Neq, "__name__", "x"),
            matcher(MatcherType::Nre, "i", "7"),
        ],
    ];
    for matchers in empty_matching {
        let req = ReadRequest {
            queries: vec![all_query(), query(i64::MIN, i64::MAX, matchers.clone())],
            accepted_response_types: vec![ResponseType::Samples as i32],
        };
        let r = weft.read_raw(Some(TENANT), &req);
        assert_eq!(r.status, 400, "{matchers:?}: {}", r.text());
        assert!(
            r.text().contains("queries[1]") && r.text().contains("empty string"),
            "{}",
            r.text()
        );
    }
    // One matcher that needs a value is enough, whatever the others do.
    let ok = query(
        i64::MIN,
        i64::MAX,
        vec![
            matcher(MatcherType::Re, "__name__", ".+"),
            matcher(MatcherType::Re, "i", ".*"),
        ],
    );
    let got = weft.read_samples(Some(TENANT), &[ok]);
    assert_eq!(got[0].len(), 3);
    weft.assert_still_serves("after refused empty-matching queries");
}

#[test]
fn more_queries_than_allowed_in_one_read_is_a_400() {
    let weft = Weft::start(&[]);
    seed_series(&weft, 1, 1);
    let req = ReadRequest {
        queries: vec![all_query(); 65],
        accepted_response_types: vec![ResponseType::Samples as i32],
    };
    let r = weft.read_raw(Some(TENANT), &req);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("65 queries"), "{}", r.text());
    // 64 is fine.
    let req = ReadRequest {
        queries: vec![all_query(); 64],
        accepted_response_types: vec![ResponseType::Samples as i32],
    };
    assert_eq!(weft.read_raw(Some(TENANT), &req).status, 200);
    weft.assert_still_serves("too many queries");
}

#[test]
fn a_samples_answer_over_the_sample_limit_is_refused_and_chunks_are_not_limited() {
    let weft = Weft::start(&["--limits.max-read-samples", "100"]);
    seed_series(&weft, 3, 50);
    let r = weft.read_raw(
        Some(TENANT),
        &ReadRequest {
            queries: vec![all_query()],
            accepted_response_types: vec![ResponseType::Samples as i32],
        },
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("more than 100 samples"), "{}", r.text());
    let rejected = weft
        .metric("weft_requests_rejected_total", &[("reason", "bad_data")])
        .unwrap_or(0.0);
    assert!(
        rejected >= 1.0,
        "weft_requests_rejected_total{{reason=bad_data}} = {rejected}"
    );
    // Streamed chunks are bounded per frame instead, so the same data streams fine.
    let got = weft.read_chunks(Some(TENANT), &[all_query()]);
    assert_eq!(got[0].len(), 3);
    assert!(got[0].iter().all(|(_, s)| s.len() == 50));
}

#[test]
fn a_read_while_the_only_read_slot_is_held_gets_503_with_retry_after() {
    let weft = Weft::start(&["--limits.max-concurrent-reads", "1"]);
    seed_series(&weft, 1, 1);
    // A client that trickles its body holds the slot from the moment its handler starts.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", weft.port)).expect("connect");
    write!(
        slow,
        "POST /api/v1/read HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nX-Scope-OrgID: {TENANT}\r\nContent-Length: 100000\r\n\r\n"
    )
    .expect("send headers");
    slow.write_all(&[0u8; 16]).expect("send part of the body");
    slow.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(10);
    while weft.metric("weft_inflight_requests", &[("reason", "read")]) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the slow read never took the slot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = weft.read_raw(
        Some(TENANT),
        &ReadRequest {
            queries: vec![all_query()],
            accepted_response_types: vec![ResponseType::Samples as i32],
        },
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    drop(slow);
    // The slot comes back once the slow client is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = weft.read_raw(
            Some(TENANT),
            &ReadRequest {
                queries: vec![all_query()],
                accepted_response_types: vec![ResponseType::Samples as i32],
            },
        );
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the read slot never came back: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
