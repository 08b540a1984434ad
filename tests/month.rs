//! A compressed month on a real S3 server (moto): 30 days of sample time pushed in order into
//! one `weft serve` with its compactor on and a 7-day `--store.retention`, with series churn
//! (each series lives 8 days; new ones start every half day) and a flush every 40 minutes
//! of sample time (about 1,100 uploads over two tenants).
//!
//! Printed at the start (after the first simulated day) and at the end: objects and bytes in
//! the bucket, the node's `weft_catalog_bytes`, and the time to `/ready` of a fresh node on
//! the bucket; and what the store would hold without retention and compaction (every
//! upload). Asserted: the object count ends far below the uploads; no object holds only
//! samples older than the retention; every sample inside the retention reads back exactly
//! (from the node and from a fresh node), and nothing reads back from before the cutoff
//! less a day (a day-block object may straddle the cutoff).
//!
//! Needs `moto_server`; skipped without it, except under `CI=true`. `WEFT_TEST_SEED`
//! repeats a run.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::s3::{s3_env, Bucket, Moto};
use common::workload::{encode_push_of, mix};
use common::*;
use weft::proto::prompb::{MatcherType, Query};

const BUCKET: &str = "weft";
const PREFIX: &str = "month";
const TENANTS: [&str; 2] = ["team-a", "team-b"];
const DAY: i64 = 86_400_000;
const STEP_MS: i64 = 300_000;
/// Sample time between flushes.
const FLUSH_EVERY_MS: i64 = 40 * 60_000;
const SERIES: u64 = 60;
const RETENTION_DAYS: i64 = 7;

type Model = BTreeMap<String, BTreeMap<Labels, Samples>>;

fn range(lo: i64, hi: i64) -> Query {
    query(lo, hi, vec![matcher(MatcherType::Re, "__name__", ".+")])
}

/// Series `s` of a tenant lives from day `s / 2` for 8 days.
fn alive(s: u64, day: i64) -> bool {
    let from = (s / 2) as i64;
    day >= from && day < from + 8
}

fn series_labels(s: u64) -> Labels {
    labels(&[
        ("__name__", "month_test"),
        ("pod", &format!("pod-{s:03}")),
        ("job", "month"),
    ])
}

fn bucket_totals(bucket: &Bucket) -> (usize, u64, i64) {
    let objs: Vec<_> = bucket
        .list(PREFIX)
        .into_iter()
        .filter(|o| o.key.contains("/chunks/"))
        .collect();
    // The oldest newest-sample of any object, from its key (`<min_t>-<max_t>-...`).
    let oldest_max_t = objs
        .iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?;
            weft::store::object::decode_time(name.get(17..33)?)
        })
        .min()
        .unwrap_or(i64::MAX);
    (objs.len(), objs.iter().map(|o| o.size).sum(), oldest_max_t)
}

/// Starts a fresh node (empty data directory, compactor off) on the bucket: time to ready.
fn fresh_reader(env: &[(String, String)]) -> (Weft, Duration) {
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let t = Instant::now();
    let w = Weft::start_with_env(
        None,
        &[
            "--store",
            &url,
            "--compactor.enabled=false",
            "--ingester.id",
            "reader",
        ],
        env,
        None,
    );
    (w, t.elapsed())
}

fn read(w: &Weft, tenant: &str, lo: i64, hi: i64, tag: &str) -> BTreeMap<Labels, Samples> {
    let (mut sets, resp) = w.read_samples_resp(Some(tenant), &[range(lo, hi)]);
    assert_eq!(resp.status, 200, "{tag}: {}", resp.text());
    assert!(
        resp.header(PARTIAL_HEADER).is_none(),
        "{tag}: partial: {:?}",
        resp.header(PARTIAL_HEADER)
    );
    sets.remove(0).into_iter().collect()
}

#[test]
fn a_compressed_month_keeps_the_store_and_the_catalog_bounded() {
    self_check();
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let bucket = Bucket::new(&moto, BUCKET);
    let env = s3_env(&moto.endpoint());
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let retention = format!("{}d", RETENTION_DAYS);
    let node = Weft::start_with_env(
        None,
        &[
            "--store",
            &url,
            "--ingester.id",
            "month",
            "--flush.period",
            "1s",
            "--flush.retain-period",
            "0s",
            "--store.retention",
            &retention,
            "--compactor.interval",
            "2s",
            "--compactor.block-margin",
            "1h",
        ],
        &env,
        None,
    );

    let now = now_ms();
    let t0 = (now - 30 * DAY).div_euclid(DAY) * DAY;
    let mut model = Model::new();
    let mut start_figures = None;
    let mut t = t0;
    let started = Instant::now();
    while t < now - STEP_MS {
        let hi = (t + FLUSH_EVERY_MS).min(now - STEP_MS);
        let day = (t - t0) / DAY;
        for (ti, tenant) in TENANTS.iter().enumerate() {
            let m = model.entry(tenant.to_string()).or_default();
            let mut push = Vec::new();
            for s in (0..SERIES).filter(|&s| alive(s, day)) {
                let l = series_labels(s);
                let samples: Samples = (t..hi)
                    .step_by(STEP_MS as usize)
                    .map(|ts| {
                        let v = (mix(seed ^ (ti as u64) << 32 ^ s) % 1000) as f64
                            + ((ts - t0) / STEP_MS) as f64;
                        (ts, v.to_bits())
                    })
                    .collect();
                m.entry(l.clone())
                    .or_default()
                    .extend(samples.iter().copied());
                push.push((l, samples));
            }
            let body = encode_push_of(push.iter().map(|(l, s)| (l, s.clone())));
            let mut headers = WRITE_HEADERS.to_vec();
            headers.push(("X-Scope-OrgID", tenant));
            let r = node.push_raw(&headers, body);
            assert_eq!(r.status, 204, "push at {t}: {}", r.text());
        }
        let r = node.flush_wait("60s");
        assert_eq!(r.status, 200, "flush: {}", r.text());
        t = hi;
        if start_figures.is_none() && t - t0 >= DAY {
            // The catalog gauge is set once a second.
            std::thread::sleep(Duration::from_millis(1500));
            let (n, b, _) = bucket_totals(&bucket);
            let cat = node.metric("weft_catalog_bytes", &[]).unwrap_or(-1.0);
            let (reader, ready) = fresh_reader(&env);
            drop(reader);
            start_figures = Some((n, b, cat, ready));
        }
    }
    eprintln!("month pushed and flushed in {:?}", started.elapsed());

    // Let the compactor finish: the bucket stops changing and holds no marker.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (usize::MAX, 0);
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let (n, b, _) = bucket_totals(&bucket);
        let markers = bucket
            .list(PREFIX)
            .iter()
            .filter(|o| o.key.contains("/compacted/"))
            .count();
        if (n, b) == last && markers == 0 {
            break;
        }
        last = (n, b);
        assert!(
            Instant::now() < deadline,
            "the compactor did not settle: {n} objects"
        );
    }
    let uploads = node.metric("weft_store_uploads_total", &[]).unwrap_or(0.0) as u64;
    let upload_bytes = node
        .metric("weft_store_upload_bytes_total", &[])
        .unwrap_or(0.0) as u64;
    let (n_end, b_end, oldest_max_t) = bucket_totals(&bucket);
    let cat_end = node.metric("weft_catalog_bytes", &[]).unwrap_or(-1.0);
    let jobs = node
        .metric("weft_compactor_compactions_total", &[])
        .unwrap_or(0.0);
    let expired = node
        .metric("weft_retention_deleted_objects_total", &[])
        .unwrap_or(0.0);
    let (reader, ready_end) = fresh_reader(&env);
    let (n0, b0, cat0, ready0) = start_figures.expect("a day passed");
    eprintln!("month figures (seed {seed}):");
    eprintln!(
        "  without retention and compaction: {uploads} objects, {upload_bytes} bytes uploaded"
    );
    eprintln!("  start (day 1): {n0} objects, {b0} bytes in the store; catalog {cat0} bytes; fresh node ready in {ready0:?}");
    eprintln!("  end (day 30):  {n_end} objects, {b_end} bytes in the store; catalog {cat_end} bytes; fresh node ready in {ready_end:?}");
    eprintln!("  compaction jobs {jobs}, objects deleted for retention {expired}");

    // Bounded.
    assert!(uploads > 500, "{uploads} uploads");
    assert!(
        n_end * 10 <= uploads as usize,
        "{n_end} objects left of {uploads} uploaded"
    );
    assert!(b_end < upload_bytes / 2, "{b_end} of {upload_bytes} bytes");
    let cutoff = now - RETENTION_DAYS * DAY;
    assert!(
        oldest_max_t >= cutoff,
        "an object older than the retention is left: {oldest_max_t} < {cutoff} (now {now}): {:?}",
        bucket
            .list(PREFIX)
            .into_iter()
            .filter(|o| o.key.contains("/chunks/"))
            .map(|o| o.key)
            .collect::<Vec<_>>()
    );
    assert!(jobs > 0.0 && expired > 0.0);
    assert!(
        (0.0..64.0 * 1024.0).contains(&cat_end),
        "catalog {cat_end} bytes"
    );

    // Everything inside the retention reads back exactly, from the node and from a fresh
    // node; nothing from before the cutoff less a day. The compactor's cutoff moved on while
    // the test ran (its runs happen later than `now`): samples from after the cutoff as of
    // this moment are the ones every run had to keep.
    let keep_from = now_ms() - RETENTION_DAYS * DAY;
    for tenant in TENANTS {
        let want: BTreeMap<Labels, Samples> = model[tenant]
            .iter()
            .map(|(l, s)| {
                (
                    l.clone(),
                    s.iter()
                        .copied()
                        .filter(|&(ts, _)| ts >= keep_from)
                        .collect::<Samples>(),
                )
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        for (who, w) in [("node", &node), ("fresh node", &reader)] {
            let got = read(w, tenant, keep_from, now, who);
            assert_eq!(
                got.len(),
                want.len(),
                "{who} {tenant}: series inside the retention"
            );
            for (l, s) in &want {
                let g = got.get(l).cloned().unwrap_or_default();
                if &g != s {
                    let first = g.iter().zip(s).position(|(a, b)| a != b);
                    panic!(
                        "{who} {tenant} {}: got {} samples, want {}; first difference at {first:?}: got {:?} want {:?}; got range {:?}..{:?}, want {:?}..{:?} (kept from {keep_from}, now {now})",
                        fmt_labels(l), g.len(), s.len(),
                        first.map(|i| g[i]), first.map(|i| s[i]),
                        g.first(), g.last(), s.first(), s.last()
                    );
                }
            }
            let old = read(w, tenant, i64::MIN, cutoff - DAY - 3_600_000, who);
            let old_samples: usize = old.values().map(|s| s.len()).sum();
            assert_eq!(
                old_samples, 0,
                "{who} {tenant}: samples from before the retention"
            );
        }
    }
}
