//! Never wait on a sick store, through the binary: weft on a real S3 (moto) behind a fault
//! proxy flushes some data and drops it from memory, so only the store has it; then the
//! proxy hangs (connections accepted, nothing answered, the 28 Feb 2017 failure mode).
//!
//! - The first query over that data costs about `--store.read-first-byte-timeout` (1s), not
//!   `--store.timeout` (10s), and is marked partial; `weft_store_up{op="read"}` is 0 at
//!   once while `{op="write"}` stays 1.
//! - The next query does not wait on the store at all.
//! - When the proxy forwards again the read probe finds it within about one
//!   `--store.circuit-probe-interval`, and answers are complete again.
//!
//! Needs `moto_server` (`pip install 'moto[server]'`): skipped without it, except under
//! `CI=true`, where that is a failure.

mod common;

use std::time::{Duration, Instant};

use common::s3::{s3_env, FaultProxy, Moto, ProxyMode};
use common::*;
use weft::proto::prompb::{MatcherType, WriteRequest};

const BUCKET: &str = "weft";
const SERIES: usize = 10;
const SAMPLES: i64 = 300;

fn request(t0: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| {
                let labels: Labels = vec![
                    ("__name__".into(), "health_test".into()),
                    ("i".into(), format!("{i:03}")),
                ];
                let samples: Vec<(i64, u64)> = (0..SAMPLES)
                    .map(|k| {
                        let t = t0 + k * 1000;
                        (t, ((t / 1000) as f64 + i as f64).to_bits())
                    })
                    .collect();
                series_proto(&labels, &samples)
            })
            .collect(),
        metadata: vec![],
    }
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn a_hanging_store_costs_one_first_byte_deadline_then_nothing_until_it_recovers() {
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let proxy = FaultProxy::start(moto.port());
    let env = s3_env(&proxy.endpoint());
    let args = [
        "--store",
        "s3://weft/health",
        "--flush.period",
        "200ms",
        "--flush.retain-period",
        "0s",
        // Every query over flushed data goes to the store: no cache, and no local copy
        // (the local tier keeps only each object's index).
        "--cache.bytes",
        "0",
        "--local.retention",
        "0s",
        "--store.timeout",
        "10s",
        "--store.read-first-byte-timeout",
        "1s",
        "--store.circuit-probe-interval",
        "2s",
    ];
    let weft = Weft::start_with_env(None, &args, &env, None);
    let up = |op: &str| weft.metric("weft_store_up", &[("op", op)]);
    assert_eq!((up("read"), up("write")), (Some(1.0), Some(1.0)));

    let t0 = now_ms() - 3_600_000;
    weft.push_ok("team-a", &request(t0));
    let r = weft.flush_wait("30s");
    assert_eq!(r.status, 200, "flush: {}", r.text());
    wait_for("flushed chunks released", Duration::from_secs(20), || {
        weft.metric("weft_memory_chunk_bytes", &[]) == Some(0.0)
    });
    wait_for(
        "local copies demoted to their index",
        Duration::from_secs(20),
        || {
            weft.metric("weft_local_objects", &[]) == Some(0.0)
                && weft.metric("weft_local_evictions_total", &[]) > Some(0.0)
        },
    );
    let q = [query(
        i64::MIN / 2,
        i64::MAX / 2,
        vec![matcher(MatcherType::Eq, "__name__", "health_test")],
    )];
    let (healthy, r) = weft.read_samples_resp(Some("team-a"), &q);
    assert!(r.header("x-weft-partial").is_none(), "healthy: partial");
    assert_eq!(healthy[0].len(), SERIES);

    proxy.set_mode(ProxyMode::Hang);
    let start = Instant::now();
    let (_, r) = weft.read_samples_resp(Some("team-a"), &q);
    let first = start.elapsed();
    eprintln!("first query on a hanging store: {first:?}");
    assert_eq!(r.status, 200, "{}", r.text());
    let partial = r.header("x-weft-partial");
    assert!(partial.is_some(), "an answer without the store is partial");
    assert!(
        first < Duration::from_secs(3),
        "the first query waited {first:?}, past the first-byte deadline (1s) plus slack"
    );
    assert_eq!(up("read"), Some(0.0), "reads down at once");
    assert_eq!(up("write"), Some(1.0), "writes are tracked apart");

    for i in 0..3 {
        let start = Instant::now();
        let (_, r) = weft.read_samples_resp(Some("team-a"), &q);
        let took = start.elapsed();
        eprintln!("query {i} while reads are down: {took:?}");
        assert!(r.header("x-weft-partial").is_some(), "still partial");
        assert!(
            took < Duration::from_millis(500),
            "query {i} waited {took:?} on a store known to be down"
        );
    }

    proxy.set_mode(ProxyMode::Forward);
    // A probe every 2 s after the last failed one (each failing after 1 s).
    let back = wait_for("reads up again", Duration::from_secs(10), || {
        up("read") == Some(1.0)
    });
    eprintln!("reads up {back:?} after the store recovered");
    let (again, r) = weft.read_samples_resp(Some("team-a"), &q);
    assert!(r.header("x-weft-partial").is_none(), "recovered: partial");
    assert_eq!(again, healthy);
}
