//! Churn soak: series come and go (as pods do under Kubernetes) and the head stays bounded.
//!
//! The real binary with a 2 s `--head.series-idle-timeout` and sub-second flush settings.
//! Every round brings 2,000 new series (4 samples each) while the previous rounds' series go
//! quiet; 50 stable series get a sample every round. Checked:
//! - `weft_head_series` plateaus: it stays under 5 rounds' worth of series however many
//!   rounds run, and drops to the stable series once the churn stops;
//! - `RssAnon` plateaus: from the second third of the rounds to the end it grows less than
//!   the bound below (without removal it would grow by about 2.5 MiB a round);
//! - every sample of every series that left the head reads back exactly (SAMPLES and
//!   STREAMED_XOR_CHUNKS) from the local tier, and the store holds each of them exactly once;
//! - series of the first round that come back at the end (one re-sending its last old
//!   sample) read back across the gap: old and new samples, no duplicate, no gap;
//! - after a kill -9 (with a checkpoint taken mid-churn, so the WAL holds records of series
//!   that left), replay loses no acknowledged sample of the stable series, brings back no
//!   removed series as unflushed data (nothing is uploaded twice), and every series still
//!   reads back exactly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft::proto::prompb::{MatcherType, WriteRequest};
use weft::store::object::decode_object;

const TENANT: &str = "churn";
const ROUNDS: usize = 15;
const PER_ROUND: usize = 2_000;
const SAMPLES: i64 = 4;
const STABLE: usize = 50;
/// Series of round 0 that come back in the last round.
const RETURNING: usize = 100;
/// Growth of `RssAnon` allowed from a third of the rounds to the end. Without removal the
/// debug binary grows by about 2.5 MiB a round, 25 MiB over those ten rounds.
const RSS_GROWTH_BOUND_BYTES: u64 = 8 << 20;

const ARGS: [&str; 12] = [
    "--head.series-idle-timeout",
    "2s",
    "--flush.period",
    "300ms",
    "--flush.max-chunk-idle",
    "500ms",
    "--flush.retain-period",
    "500ms",
    "--wal.checkpoint-interval",
    "4s",
    "--ingester.id",
    "churn-1",
];

fn churn_labels(round: usize, i: usize) -> Labels {
    labels(&[
        ("__name__", "churn_metric"),
        ("job", "app"),
        ("namespace", &format!("ns{}", i % 10)),
        ("pod", &format!("r{round:02}-{i:04}")),
    ])
}

fn stable_labels(i: usize) -> Labels {
    labels(&[("__name__", "churn_stable"), ("i", &format!("{i:02}"))])
}

fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("RssAnon in /proc status");
    kb * 1024
}

fn head_series_bytes(weft: &Weft) -> f64 {
    weft.metric("weft_memory_bytes", &[("consumer", "head_series")])
        .unwrap_or(0.0)
}

fn head_series(weft: &Weft) -> f64 {
    weft.metric("weft_head_series", &[("tenant", TENANT)])
        .unwrap_or(0.0)
}

/// Every sample the store holds for the tenant, per series, with repeats (sorted).
fn store_contents(store: &Path) -> BTreeMap<String, Vec<(i64, u64)>> {
    let dir = store.join(TENANT).join("chunks");
    let mut out: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let index = decode_object(&bytes).expect("a valid object");
        for s in index.series {
            let samples = out.entry(s.labels.to_string()).or_default();
            for c in s.chunks {
                let data = &bytes[c.range().start as usize..c.range().end as usize];
                for x in weft::chunk::XorIterator::new(data).unwrap() {
                    let (t, v) = x.unwrap();
                    samples.push((t, v.to_bits()));
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// Reads every series of the tenant in both modes and checks them against `want`.
fn assert_reads_back(weft: &Weft, want: &BTreeMap<Labels, Samples>, tag: &str) {
    let q = query(
        0,
        now_ms() + 3_600_000,
        vec![matcher(MatcherType::Re, "__name__", "churn_.+")],
    );
    for (mode, got) in [
        (
            "samples",
            weft.read_samples(Some(TENANT), std::slice::from_ref(&q)),
        ),
        (
            "chunks",
            weft.read_chunks(Some(TENANT), std::slice::from_ref(&q)),
        ),
    ] {
        let got: BTreeMap<Labels, Samples> = got.into_iter().next().unwrap().into_iter().collect();
        assert_eq!(got.len(), want.len(), "{tag} ({mode}): series count");
        for (l, w) in want {
            let g = got
                .get(l)
                .unwrap_or_else(|| panic!("{tag} ({mode}): {} missing", fmt_labels(l)));
            assert_eq!(g, w, "{tag} ({mode}): samples of {}", fmt_labels(l));
        }
    }
}

/// Waits until `weft_head_series` is `n`, pushing a sample to the stable series meanwhile
/// so that they stay live. Panics after `timeout`.
fn drain_to(
    weft: &Weft,
    n: f64,
    timeout: Duration,
    stable: &mut Stable,
    want: &mut BTreeMap<Labels, Samples>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        stable.push(weft, want);
        let now = head_series(weft);
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "weft_head_series is {now}, not {n}, after {timeout:?}\n{}",
            weft.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The stable series: one sample each per call, values from the seeded generator.
struct Stable {
    rng: StdRng,
    last_t: i64,
}

impl Stable {
    fn push(&mut self, weft: &Weft, want: &mut BTreeMap<Labels, Samples>) {
        let t = now_ms().max(self.last_t + 1);
        self.last_t = t;
        let req = WriteRequest {
            timeseries: (0..STABLE)
                .map(|i| {
                    let s = (t, self.rng.random::<f64>().to_bits());
                    want.entry(stable_labels(i)).or_default().push(s);
                    series_proto(&stable_labels(i), &[s])
                })
                .collect(),
            metadata: vec![],
        };
        weft.push_ok(TENANT, &req);
    }
}

#[test]
fn churn_keeps_the_head_bounded_and_every_sample_readable_across_removal_and_kill9() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stable = Stable {
        rng: StdRng::seed_from_u64(seed ^ 0x57ab1e),
        last_t: 0,
    };
    let data = TempDir::new("weft-churn");
    let mut weft = Weft::start_on(data.path(), &ARGS, None);
    let mut want: BTreeMap<Labels, Samples> = BTreeMap::new();

    let mut series_per_round = Vec::new();
    let mut rss_per_round = Vec::new();
    for round in 0..ROUNDS {
        let t0 = now_ms() - SAMPLES * 1000;
        let req = WriteRequest {
            timeseries: (0..PER_ROUND)
                .map(|i| {
                    let l = churn_labels(round, i);
                    let samples: Samples = (0..SAMPLES)
                        .map(|k| (t0 + k * 1000, rng.random::<f64>().to_bits()))
                        .collect();
                    let p = series_proto(&l, &samples);
                    want.insert(l, samples);
                    p
                })
                .collect(),
            metadata: vec![],
        };
        weft.push_ok(TENANT, &req);
        stable.push(&weft, &mut want);
        std::thread::sleep(Duration::from_millis(900));
        let n = head_series(&weft);
        let rss = rss_anon(weft.pid());
        eprintln!(
            "round {round:2}: weft_head_series {n:6}  weft_memory_bytes{{consumer=\"head_series\"}} {:.2} MiB  RssAnon {:.1} MiB",
            head_series_bytes(&weft) / (1 << 20) as f64,
            rss as f64 / (1 << 20) as f64
        );
        series_per_round.push(n);
        rss_per_round.push(rss);
    }
    let created = (ROUNDS * PER_ROUND + STABLE) as f64;
    let bound = (5 * PER_ROUND + STABLE) as f64;
    let max = series_per_round.iter().copied().fold(0.0, f64::max);
    assert!(
        max <= bound,
        "weft_head_series reached {max} (bound {bound}; {created} series created): {series_per_round:?}"
    );
    let third = ROUNDS / 3;
    let growth = rss_per_round[ROUNDS - 1].saturating_sub(rss_per_round[third]);
    assert!(
        growth <= RSS_GROWTH_BOUND_BYTES,
        "RssAnon grew {growth} bytes from round {third} to the end: {rss_per_round:?}"
    );

    // Series of round 0 come back: new samples after a gap; the first re-sends its last old
    // sample exactly, which must not be read twice.
    let t_back = now_ms();
    let req = WriteRequest {
        timeseries: (0..RETURNING)
            .map(|i| {
                let l = churn_labels(0, i);
                let old = want.get_mut(&l).unwrap();
                let mut samples: Samples = (0..SAMPLES)
                    .map(|k| (t_back + k * 1000, rng.random::<f64>().to_bits()))
                    .collect();
                if i == 0 {
                    samples.insert(0, *old.last().unwrap());
                }
                let p = series_proto(&l, &samples);
                for s in samples {
                    if old.last() != Some(&s) {
                        old.push(s);
                    }
                }
                p
            })
            .collect(),
        metadata: vec![],
    };
    weft.push_ok(TENANT, &req);
    // The returning series go quiet too; in the end only the stable ones are left.
    drain_to(
        &weft,
        STABLE as f64,
        Duration::from_secs(30),
        &mut stable,
        &mut want,
    );
    let removed = weft
        .metric("weft_head_series_removed_total", &[])
        .unwrap_or(0.0);
    assert!(
        removed >= (ROUNDS * PER_ROUND + RETURNING) as f64,
        "weft_head_series_removed_total {removed}"
    );
    // The head's own accounting follows: only the stable series are left in it (each is
    // counted as a fixed overhead plus its label bytes, well under 1 KiB here). The gauge
    // is set by the balancer every 200 ms.
    std::thread::sleep(Duration::from_millis(500));
    let bytes_end = head_series_bytes(&weft);
    assert!(
        bytes_end > 0.0 && bytes_end <= (STABLE * 1024) as f64,
        "weft_memory_bytes{{consumer=\"head_series\"}} is {bytes_end} with {STABLE} series left"
    );
    let rss_end = rss_anon(weft.pid());
    eprintln!(
        "drained: weft_head_series {STABLE}, removed {removed}, head_series bytes {bytes_end}, RssAnon {:.1} MiB (peak round {:.1} MiB)",
        rss_end as f64 / (1 << 20) as f64,
        rss_per_round.iter().max().copied().unwrap_or(0) as f64 / (1 << 20) as f64
    );
    assert_reads_back(&weft, &want, "after removal");

    // The store holds every sample of every series that left exactly once.
    let store = data.path().join("store");
    let check_store = |tag: &str, want: &BTreeMap<Labels, Samples>| {
        let contents = store_contents(&store);
        for (l, w) in want.iter().filter(|(l, _)| l[0].1 == "churn_metric") {
            let mut got = contents
                .get(&fmt_labels_braces(l))
                .unwrap_or_else(|| panic!("{tag}: {} not in the store", fmt_labels(l)))
                .clone();
            if *l == churn_labels(0, 0) {
                // Its re-sent sample is in both lives' objects, by design.
                got.dedup();
            }
            assert_eq!(&got, w, "{tag}: store copy of {}", fmt_labels(l));
        }
    };
    check_store("before kill -9", &want);

    // kill -9 right after acknowledged pushes of the stable series.
    stable.push(&weft, &mut want);
    weft.signal(libc::SIGKILL);
    weft.wait_exit(Duration::from_secs(10));
    let weft = Weft::start_on(data.path(), &ARGS, None);
    assert_reads_back(&weft, &want, "after kill -9");
    // Replayed series that had left come back flushed (or not at all) and leave again; none
    // is uploaded a second time.
    let mut want2 = want.clone();
    drain_to(
        &weft,
        STABLE as f64,
        Duration::from_secs(30),
        &mut stable,
        &mut want2,
    );
    check_store("after kill -9 and replay", &want2);
    assert_reads_back(&weft, &want2, "after kill -9, drained");
}

/// Labels as `weft::model::Labels` prints them (the store index's text form).
fn fmt_labels_braces(l: &Labels) -> String {
    let pairs: Vec<(&str, &str)> = l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    weft::model::Labels::from_strs(pairs).unwrap().to_string()
}
