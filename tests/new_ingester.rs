//! A new ingester serves what another one flushed: weft A takes a seeded data set (two
//! tenants, NaN payloads and stale markers included), flushes it to S3 (a real moto server)
//! and shuts down; weft B starts on the same store with an empty data directory and another
//! ingester id, and must answer remote read (SAMPLES and STREAMED_XOR_CHUNKS) and the series
//! API bit-exact, not partial, each tenant seeing only its own series.
//!
//! On the way, the objects in the bucket are decoded directly (weft's object format, without
//! weft's read path) and checked against the data set too, so that a failure says whether
//! the flush or the read lost something.
//!
//! Needs `moto_server` (`pip install 'moto[server]'`): skipped without it, except under
//! `CI=true`, where that is a failure. `WEFT_TEST_SEED` repeats a run.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::s3::{s3_env, Bucket, Moto};
use common::workload::{encode_push_of, mix, Workload};
use common::*;
use weft::proto::prompb::{MatcherType, Query};

const BUCKET: &str = "weft";
const PREFIX: &str = "prefix";
/// Both tenants have series with the same labels and different values, and B has one more,
/// so that a leak across tenants shows as wrong values or an extra series.
const TENANTS: [&str; 2] = ["team-a", "team-b"];
const SERIES_PER_TENANT: usize = 250;
const SAMPLES_PER_SERIES: usize = 600;
/// Samples per series in one push (Prometheus batches look like this after a backlog).
const SAMPLES_PER_PUSH: usize = 60;
const STEP_MS: i64 = 15_000;
/// The series and values (shared code in `tests/common/workload.rs`). One writer a tenant;
/// both tenants have the same series, with different values.
const WORKLOAD: Workload = Workload {
    metric: "ni_samples",
    job: "new-ingester",
    series_per_writer: SERIES_PER_TENANT,
    arbitrary_percent: 12,
};

/// The data set: per tenant, every series with its samples (sorted by labels).
type DataSet = Vec<BTreeMap<Labels, Samples>>;

fn data_set(seed: u64, t0: i64) -> DataSet {
    TENANTS
        .iter()
        .enumerate()
        .map(|(ti, _)| {
            let mut set = BTreeMap::new();
            let extra = usize::from(ti == 1);
            for s in 0..SERIES_PER_TENANT + extra {
                let labels = if s < SERIES_PER_TENANT {
                    WORKLOAD.series_labels(0, s)
                } else {
                    labels(&[("__name__", "ni_only_in_b"), ("job", "new-ingester")])
                };
                // Mostly one scrape interval apart, some irregular gaps (seeded).
                let mut t = t0 + (mix(seed ^ s as u64) % 1000) as i64;
                let samples: Samples = (0..SAMPLES_PER_SERIES)
                    .map(|i| {
                        let h = mix(seed ^ ((s as u64) << 20) ^ i as u64);
                        t += if h % 10 < 7 {
                            STEP_MS
                        } else {
                            1 + (h >> 8) as i64 % (4 * STEP_MS)
                        };
                        (t, WORKLOAD.value_bits(seed, 0, ti, s, t))
                    })
                    .collect();
                set.insert(labels, samples);
            }
            set
        })
        .collect()
}

/// The pushes of one tenant: every series, `SAMPLES_PER_PUSH` samples each, in time order.
fn pushes(set: &BTreeMap<Labels, Samples>) -> Vec<Vec<u8>> {
    (0..SAMPLES_PER_SERIES / SAMPLES_PER_PUSH)
        .map(|b| {
            encode_push_of(set.iter().map(|(labels, samples)| {
                let part = samples[b * SAMPLES_PER_PUSH..(b + 1) * SAMPLES_PER_PUSH].to_vec();
                (labels, part)
            }))
        })
        .collect()
}

fn args(ingester: &str) -> Vec<String> {
    [
        ("--store", format!("s3://{BUCKET}/{PREFIX}")),
        ("--ingester.id", ingester.to_string()),
        ("--flush.period", "1s".to_string()),
        ("--store.timeout", "5s".to_string()),
        ("--query.timeout", "30s".to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

fn start(ingester: &str, env: &[(String, String)]) -> Weft {
    let owned = args(ingester);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    Weft::start_with_env(None, &args, env, None)
}

/// The selector of every series of a tenant.
fn everything() -> Query {
    query(
        i64::MIN,
        i64::MAX,
        vec![matcher(MatcherType::Re, "__name__", ".+")],
    )
}

/// Compares an answer with the data set of one tenant, series by series. In SAMPLES mode
/// (`chunks` false) a -0.0 may read back as +0.0: the proto3 encoder leaves out a value equal
/// to 0.0, as Prometheus's does. Chunks carry the bits, so there everything is exact.
fn assert_same(what: &str, want: &BTreeMap<Labels, Samples>, got: &SeriesSet, chunks: bool) {
    let neg_zero = (-0.0f64).to_bits();
    let got_labels: Vec<&Labels> = got.iter().map(|(l, _)| l).collect();
    let want_labels: Vec<&Labels> = want.keys().collect();
    assert_eq!(got_labels, want_labels, "{what}: the series differ");
    for ((labels, samples), want) in got.iter().zip(want.values()) {
        let same = samples.len() == want.len()
            && samples.iter().zip(want).all(|(&(gt, gv), &(wt, wv))| {
                gt == wt && (gv == wv || (!chunks && wv == neg_zero && gv == 0))
            });
        if !same {
            let first = samples
                .iter()
                .zip(want)
                .position(|(g, w)| g != w)
                .unwrap_or(samples.len().min(want.len()));
            panic!(
                "{what}: {} reads back {} samples, sent {}; first difference at index {first}: \
                 got {:?}, sent {:?}",
                fmt_labels(labels),
                samples.len(),
                want.len(),
                samples.get(first),
                want.get(first)
            );
        }
    }
}

/// Reads every object of `tenant` straight from the bucket, decodes it with weft's object
/// format, and returns the samples per series (chunks of several objects merged; an exact
/// repeat of a sample, from a retried upload, is dropped; a conflicting one fails).
fn samples_in_bucket(bucket: &Bucket, tenant: &str) -> (usize, BTreeMap<Labels, Samples>) {
    let objects = bucket.list(&format!("{PREFIX}/{tenant}/chunks"));
    let mut out: BTreeMap<Labels, Samples> = BTreeMap::new();
    for o in &objects {
        let bytes = bucket.get(&o.key);
        let index = weft::store::object::decode_object(&bytes)
            .unwrap_or_else(|e| panic!("object {} does not decode: {e}", o.key));
        for s in &index.series {
            let labels: Labels = s
                .labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect();
            let entry = out.entry(labels).or_default();
            for c in &s.chunks {
                let data = &bytes[c.offset as usize..c.offset as usize + c.len as usize];
                let samples = weft::chunk::decode_bits(data)
                    .unwrap_or_else(|e| panic!("a chunk in {} does not decode: {e}", o.key));
                entry.extend(samples);
            }
        }
    }
    for (labels, samples) in out.iter_mut() {
        samples.sort_unstable();
        samples.dedup();
        if let Some(w) = samples.windows(2).find(|w| w[0].0 == w[1].0) {
            panic!(
                "{tenant} {}: the bucket holds two values at t={}: {:#018x} and {:#018x}",
                fmt_labels(labels),
                w[0].0,
                w[0].1,
                w[1].1
            );
        }
    }
    (objects.len(), out)
}

#[test]
fn a_new_ingester_with_an_empty_disk_reads_everything_another_flushed() {
    self_check();
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let bucket = Bucket::new(&moto, BUCKET);
    let env = s3_env(&moto.endpoint());
    // 600 samples ~20 s apart take about 3.3 hours: all in the past, as a backlog would be.
    let t0 = now_ms() - 4 * 3_600_000;
    let data = data_set(seed, t0);

    // Ingester A takes everything.
    let a = start("ingester-a", &env);
    for (ti, tenant) in TENANTS.iter().enumerate() {
        for (i, body) in pushes(&data[ti]).into_iter().enumerate() {
            let mut headers = WRITE_HEADERS.to_vec();
            headers.push(("X-Scope-OrgID", tenant));
            let r = a.push_raw(&headers, body);
            assert_eq!(r.status, 204, "push {i} to {tenant}: {}", r.text());
        }
    }
    // A itself answers right, so a difference later is the store's path.
    for (ti, tenant) in TENANTS.iter().enumerate() {
        let got = a.read_chunks(Some(tenant), &[everything()]).remove(0);
        assert_same(&format!("ingester A, {tenant}"), &data[ti], &got, true);
    }

    // Everything into the store, open chunks included.
    let r = a.flush_wait("60s");
    assert_eq!(
        r.status,
        200,
        "POST /ingester/flush?wait=true: {}",
        r.text()
    );
    eprintln!("flush answered: {}", r.text());
    for (ti, tenant) in TENANTS.iter().enumerate() {
        let (objects, in_bucket) = samples_in_bucket(&bucket, tenant);
        assert!(objects > 0, "no objects for {tenant} in the bucket");
        let got: SeriesSet = in_bucket.into_iter().collect();
        assert_same(
            &format!("the bucket's objects of {tenant}"),
            &data[ti],
            &got,
            true,
        );
        eprintln!("{tenant}: {objects} objects hold exactly the data set");
    }
    let stray: Vec<String> = bucket
        .list(PREFIX)
        .into_iter()
        .map(|o| o.key)
        .filter(|k| {
            !TENANTS
                .iter()
                .any(|t| k.starts_with(&format!("{PREFIX}/{t}/")))
        })
        .collect();
    eprintln!("other objects under {PREFIX}/: {stray:?}");

    // A leaves the way a scale-down does.
    let r = a
        .try_post("/ingester/shutdown")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (200..300).contains(&r.status),
        "POST /ingester/shutdown: {} {}",
        r.status,
        r.text()
    );
    let mut a = a;
    let status = a.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "ingester A after /ingester/shutdown: {status}"
    );
    drop(a);

    // Ingester B: another id, an empty data directory, the same store.
    let b = start("ingester-b", &env);
    for (ti, tenant) in TENANTS.iter().enumerate() {
        let (sets, resp) = b.read_chunks_resp(Some(tenant), &[everything()]);
        assert_eq!(
            resp.header(PARTIAL_HEADER),
            None,
            "ingester B, {tenant}: chunks answer is partial"
        );
        assert_same(
            &format!("ingester B chunks, {tenant}"),
            &data[ti],
            &sets[0],
            true,
        );

        let (sets, resp) = b.read_samples_resp(Some(tenant), &[everything()]);
        assert_eq!(
            resp.header(PARTIAL_HEADER),
            None,
            "ingester B, {tenant}: samples answer is partial"
        );
        assert_same(
            &format!("ingester B samples, {tenant}"),
            &data[ti],
            &sets[0],
            false,
        );

        // A range inside the data: only what lies in it.
        let (lo, hi) = (t0 + 3_600_000, t0 + 5_400_000);
        let q = query(
            lo,
            hi,
            vec![matcher(MatcherType::Eq, "job", "new-ingester")],
        );
        let got = b.read_chunks(Some(tenant), &[q]).remove(0);
        let want: BTreeMap<Labels, Samples> = data[ti]
            .iter()
            .map(|(l, s)| {
                let s: Samples = s
                    .iter()
                    .copied()
                    .filter(|&(t, _)| t >= lo && t <= hi)
                    .collect();
                (l.clone(), s)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        assert_same(
            &format!("ingester B range read, {tenant}"),
            &want,
            &got,
            true,
        );

        let (status, v) = b.api_get(
            Some(tenant),
            "/api/v1/series",
            &[("match[]", "{job=\"new-ingester\"}")],
        );
        assert_eq!(status, 200, "series API of {tenant}: {v}");
        assert_eq!(
            api_warnings(&v),
            Vec::<String>::new(),
            "series API of {tenant}"
        );
        let mut got: Vec<Labels> =
            serde_json::from_value::<Vec<BTreeMap<String, String>>>(v["data"].clone())
                .expect("series API data")
                .into_iter()
                .map(|m| m.into_iter().collect())
                .collect();
        got.sort();
        let want: Vec<Labels> = data[ti].keys().cloned().collect();
        assert_eq!(got, want, "series API of {tenant}");
    }

    // Isolation through the store: each tenant saw exactly its own series and values above
    // (the shared label sets carry different values); a tenant that never wrote sees nothing.
    let nobody = b.read_chunks(Some("team-c"), &[everything()]).remove(0);
    assert!(
        nobody.is_empty(),
        "a tenant that never wrote reads {nobody:?}"
    );
    let only_b = query(
        i64::MIN,
        i64::MAX,
        vec![matcher(MatcherType::Eq, "__name__", "ni_only_in_b")],
    );
    assert!(
        b.read_samples(Some(TENANTS[0]), std::slice::from_ref(&only_b))[0].is_empty(),
        "{} reads {}'s series",
        TENANTS[0],
        TENANTS[1]
    );
    assert_eq!(b.read_samples(Some(TENANTS[1]), &[only_b])[0].len(), 1);
    b.assert_still_serves("new ingester");
}
