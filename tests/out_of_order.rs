//! `--ingest.out-of-order-window` through the weft binary: samples inside the window are
//! accepted, outside refused (400, `too_old`); out-of-order and in-order samples, pushed
//! interleaved and partly twice, read back sorted and once, in SAMPLES and
//! STREAMED_XOR_CHUNKS, from memory, after a kill -9, after a clean restart, from the store
//! after a flush (released from memory), and through a fresh ingester on that store.

mod common;

use std::time::Duration;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft::proto::prompb::{MatcherType, WriteRequest};

const SERIES: usize = 20;

fn series_labels(i: usize) -> Labels {
    labels(&[("__name__", "ooo_test"), ("i", &format!("{i:02}"))])
}

fn push_of(samples: &dyn Fn(usize) -> Samples) -> WriteRequest {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| series_proto(&series_labels(i), &samples(i)))
            .collect(),
        metadata: vec![],
    }
}

fn value(i: usize, t: i64) -> u64 {
    ((t / 1000) as f64 * 0.5 + i as f64).to_bits()
}

fn all() -> Vec<weft::proto::prompb::Query> {
    vec![query(
        i64::MIN / 2,
        i64::MAX / 2,
        vec![matcher(MatcherType::Eq, "__name__", "ooo_test")],
    )]
}

fn check(weft: &Weft, want: &SeriesSet, tag: &str) {
    let s = weft.read_samples(Some("team"), &all());
    assert_eq!(s[0].len(), want.len(), "{tag}: series (samples)");
    assert_eq!(&s[0], want, "{tag}: samples");
    let c = weft.read_chunks(Some("team"), &all());
    assert_eq!(&c[0], want, "{tag}: chunks");
}

#[test]
fn out_of_order_samples_inside_the_window_read_back_exactly_in_every_tier() {
    let mut rng = StdRng::seed_from_u64(seed());
    let data = TempDir::new("weft-ooo");
    let args = [
        "--ingest.out-of-order-window",
        "30m",
        "--flush.period",
        "200ms",
        "--flush.retain-period",
        "0s",
        "--ingester.id",
        "ooo-1",
    ];
    let weft = Weft::start_on(data.path(), &args, None);
    let t0 = now_ms() - 2 * 3_600_000;
    let mut want: Vec<std::collections::BTreeMap<i64, u64>> = vec![Default::default(); SERIES];
    // 60 rounds: 5 in-order samples a series 10 s apart, then a few out-of-order ones
    // (odd 5 s offsets up to 20 minutes back), in shuffled order, some sent twice.
    let mut newest = t0;
    for round in 0..60i64 {
        let base = t0 + round * 50_000;
        let inorder = |i: usize| -> Samples {
            (0..5)
                .map(|k| {
                    let t = base + k * 10_000;
                    (t, value(i, t))
                })
                .collect()
        };
        let req = push_of(&inorder);
        weft.push_ok("team", &req);
        newest = base + 40_000;
        for (i, w) in want.iter_mut().enumerate() {
            w.extend(inorder(i));
        }
        let back: Vec<i64> = (0..rng.random_range(1..6usize))
            .map(|_| newest - 5000 - 10_000 * rng.random_range(0..120i64))
            .filter(|&t| t >= t0)
            .collect();
        let ooo = |i: usize| -> Samples {
            let mut s: Samples = back.iter().map(|&t| (t, value(i, t))).collect();
            s.sort();
            s.dedup();
            s
        };
        let req = push_of(&ooo);
        let r = weft.push("team", &req);
        assert_eq!(r.status, 204, "round {round}: {}", r.text());
        if rng.random_bool(0.5) {
            weft.push_ok("team", &req); // a retry: no-ops
        }
        for (i, w) in want.iter_mut().enumerate() {
            w.extend(ooo(i));
        }
    }
    let want: SeriesSet = (0..SERIES)
        .map(|i| {
            (
                series_labels(i),
                want[i].iter().map(|(&t, &v)| (t, v)).collect(),
            )
        })
        .collect();
    assert!(
        weft.metric("weft_ooo_samples_appended_total", &[("tenant", "team")])
            .unwrap_or(0.0)
            > 0.0
    );
    check(&weft, &want, "from memory");

    // Outside the window: 400, too old; the series names itself.
    // (At 2.5 s past a 10 s step: not a stored sample, which would be a no-op.)
    let old = newest - 31 * 60_000 - 2500;
    let r = weft.push("team", &push_of(&|i| vec![(old, value(i, old))]));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("too old"), "{}", r.text());
    assert!(r.text().contains("ooo_test"), "{}", r.text());
    assert_eq!(
        weft.metric(
            "weft_samples_rejected_total",
            &[("tenant", "team"), ("reason", "too_old")]
        ),
        Some(SERIES as f64)
    );

    // kill -9: the WAL (and any checkpoint and flush marks) bring every sample back.
    weft.signal(libc::SIGKILL);
    drop(weft);
    let mut weft = Weft::start_on(data.path(), &args, None);
    check(&weft, &want, "after kill -9");

    // A clean restart.
    weft.signal(libc::SIGTERM);
    weft.wait_exit(Duration::from_secs(60));
    drop(weft);
    let weft = Weft::start_on(data.path(), &args, None);
    check(&weft, &want, "after a clean restart");

    // Flush everything (out-of-order chunks too) and let memory release it: the store
    // answers, merged with whatever is still in memory.
    let r = weft.flush_wait("60s");
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while weft.metric("weft_memory_chunk_bytes", &[]) != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "flushed chunks never released"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    check(&weft, &want, "from the store");

    // A fresh ingester on the same store.
    let store = format!("file://{}/store", data.path().display());
    let fresh = Weft::start(&["--store", &store, "--ingester.id", "ooo-2"]);
    check(&fresh, &want, "fresh ingester");
}

#[test]
fn without_the_flag_older_samples_are_refused_as_before() {
    let weft = Weft::start(&[]);
    let t0 = now_ms() - 3_600_000;
    weft.push_ok(
        "team",
        &push_of(&|i| vec![(t0, value(i, t0)), (t0 + 20_000, value(i, t0 + 20_000))]),
    );
    let t = t0 + 10_000;
    let r = weft.push("team", &push_of(&|i| vec![(t, value(i, t))]));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("out of order"), "{}", r.text());
    // The overrides file opens a window for one tenant.
    let dir = TempDir::new("weft-ooo-overrides");
    let path = dir.path().join("overrides.yaml");
    std::fs::write(
        &path,
        "overrides:\n  open:\n    out_of_order_time_window: 1m\n",
    )
    .unwrap();
    let weft = Weft::start(&["--limits.overrides-file", path.to_str().unwrap()]);
    for tenant in ["open", "closed"] {
        weft.push_ok(
            tenant,
            &push_of(&|i| vec![(t0, value(i, t0)), (t0 + 20_000, value(i, t0 + 20_000))]),
        );
        let r = weft.push(tenant, &push_of(&|i| vec![(t, value(i, t))]));
        let want = if tenant == "open" { 204 } else { 400 };
        assert_eq!(r.status, want, "{tenant}: {}", r.text());
    }
}
