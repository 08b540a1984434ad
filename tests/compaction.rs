//! Compaction on a real S3 server (moto), driven from outside through the binaries:
//! - `weft compact --once` merges a tenant's objects (exact duplicates included, as a
//!   repeated upload leaves them) and a fresh `weft serve` on the same bucket answers every
//!   sample exactly once, before and after, not partial;
//! - `weft compact` killed by SIGKILL at each step (`WEFT_COMPACT_CRASH_AT`: after the
//!   outputs are written, after the marker, in the middle of the deletes), then run again:
//!   the answers never lose or repeat a sample, and the rerun leaves no marker and the
//!   store compacted;
//! - two `weft compact` processes race for the lease: only one works, and the other takes
//!   over once the first is killed and its lease expires.
//!
//! The objects are written straight into the bucket with weft's object format (what a flush
//! writes), so that each test controls exactly what the store holds; `tests/month.rs` goes
//! through flushes. Needs `moto_server`; skipped without it, except under `CI=true`.
//! `WEFT_TEST_SEED` repeats a run.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::s3::{s3_env, Bucket, Moto};
use common::workload::mix;
use common::*;
use object_store::path::Path as ObjectPath;
use weft::model::TenantId;
use weft::proto::prompb::{MatcherType, Query};
use weft::store::object::{ChunkData, ObjectBuilder, ObjectKey};

const BUCKET: &str = "weft";
const H: i64 = 3_600_000;
const TENANTS: [&str; 2] = ["team-a", "team-b"];

/// Per tenant, every series with its samples: the reference model.
type Model = BTreeMap<String, BTreeMap<Labels, Samples>>;

fn everything() -> Query {
    query(
        i64::MIN,
        i64::MAX,
        vec![matcher(MatcherType::Re, "__name__", ".+")],
    )
}

/// Writes `windows` objects per tenant into `prefix`, 20 minutes of 15 s samples each for
/// up to 12 series, ending a day ago; about one in eight (and the last) is uploaded twice
/// (same chunks, another seq), as a flush repeated after a crash does. Returns the model.
fn write_objects(bucket: &Bucket, prefix: &str, seed: u64, windows: i64) -> Model {
    write_objects_at(bucket, prefix, seed, windows, 1)
}

/// [`write_objects`], ending `days_back` days ago.
fn write_objects_at(
    bucket: &Bucket,
    prefix: &str,
    seed: u64,
    windows: i64,
    days_back: i64,
) -> Model {
    let mut model = Model::new();
    let start = (now_ms() - days_back * 24 * H - windows * H / 3).div_euclid(H) * H;
    let mut seq = 0u64;
    for (ti, tenant) in TENANTS.iter().enumerate() {
        let t = TenantId::parse(tenant).unwrap();
        let m = model.entry(tenant.to_string()).or_default();
        for w in 0..windows {
            let lo = start + w * H / 3;
            let mut series = Vec::new();
            for s in 0..12u64 {
                let r = mix(seed ^ (ti as u64) << 40 ^ (w as u64) << 20 ^ s);
                if r % 5 == 0 {
                    continue; // churn: not every series in every window
                }
                let l = labels(&[("__name__", "compaction_test"), ("series", &s.to_string())]);
                let samples: Vec<(i64, u64)> = (0..80)
                    .map(|k| (lo + k * 15_000, mix(r ^ k as u64) >> 12))
                    .collect();
                m.entry(l.clone())
                    .or_default()
                    .extend(samples.iter().copied());
                series.push((l, samples));
            }
            if series.is_empty() {
                continue;
            }
            series.sort_by(|a, b| a.0.cmp(&b.0));
            // The last window is always uploaded twice, so every seed has a repeat.
            let repeats = if w == windows - 1 || mix(seed ^ w as u64 ^ 77) % 8 == 0 {
                2
            } else {
                1
            };
            for _ in 0..repeats {
                seq += 1;
                put_object(bucket, prefix, &t, seq, &series);
            }
        }
    }
    model
}

fn put_object(bucket: &Bucket, prefix: &str, t: &TenantId, seq: u64, series: &[(Labels, Samples)]) {
    let mut b = ObjectBuilder::new();
    type Chunk = (i64, i64, Vec<u8>);
    let encoded: Vec<(Labels, Vec<Chunk>)> = series
        .iter()
        .map(|(l, s)| {
            let chunks = s
                .chunks(120)
                .map(|p| {
                    let data = weft::chunk::encode(p.iter().map(|&(t, v)| (t, f64::from_bits(v))));
                    (p[0].0, p[p.len() - 1].0, data)
                })
                .collect();
            (l.clone(), chunks)
        })
        .collect();
    for (l, chunks) in &encoded {
        let data: Vec<ChunkData<'_>> = chunks
            .iter()
            .map(|(a, z, d)| ChunkData {
                min_t: *a,
                max_t: *z,
                data: d,
                encoding: weft::store::object::ENCODING_XOR,
            })
            .collect();
        let wl = weft::model::Labels::from_strs(l.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .unwrap();
        b.add_series(&wl, &data).unwrap();
    }
    let obj = b.finish().unwrap();
    let key = ObjectKey::new(t.clone(), obj.min_t, obj.max_t, "ing-1", seq).unwrap();
    let path = key.to_path(&ObjectPath::from(prefix));
    bucket.put(path.as_ref(), obj.bytes).unwrap();
}

/// What a fresh `weft serve` (empty data directory, compactor off) on the bucket answers,
/// per tenant, in SAMPLES mode; asserts the answer is not partial.
fn read_all(env: &[(String, String)], url: &str, tag: &str) -> Model {
    let w = Weft::start_with_env(
        None,
        &[
            "--store",
            url,
            "--compactor.enabled=false",
            "--ingester.id",
            "reader",
        ],
        env,
        None,
    );
    let mut out = Model::new();
    for tenant in TENANTS {
        let (mut sets, resp) = w.read_samples_resp(Some(tenant), &[everything()]);
        assert_eq!(resp.status, 200, "{tag}: {}", resp.text());
        assert!(
            resp.header(PARTIAL_HEADER).is_none(),
            "{tag}: partial answer for {tenant}: {:?}",
            resp.header(PARTIAL_HEADER)
        );
        out.insert(tenant.to_string(), sets.remove(0).into_iter().collect());
    }
    out
}

fn assert_same(tag: &str, want: &Model, got: &Model) {
    for (tenant, series) in want {
        let g = &got[tenant];
        assert_eq!(g.len(), series.len(), "{tag}: series of {tenant}");
        for (l, s) in series {
            let gs = g
                .get(l)
                .unwrap_or_else(|| panic!("{tag}: {tenant} lost {}", fmt_labels(l)));
            assert_eq!(
                gs.len(),
                s.len(),
                "{tag}: {tenant} {}: sample count (lost or repeated)",
                fmt_labels(l)
            );
            assert_eq!(gs, s, "{tag}: {tenant} {}", fmt_labels(l));
        }
    }
}

/// A `weft compact` process; its stderr lines are kept.
struct Compact {
    guard: ProcessGuard,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Compact {
    fn spawn(
        env: &[(String, String)],
        url: &str,
        args: &[&str],
        crash_at: Option<&str>,
    ) -> Compact {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.arg("compact")
            .arg("--store")
            .arg(url)
            .arg("--compactor.block-margin=1m")
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove(weft::compact::CRASH_ENV)
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(step) = crash_at {
            cmd.env(weft::compact::CRASH_ENV, step);
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let guard = ProcessGuard::spawn("weft-compact", cmd, None, move |line| {
            l.lock().unwrap().push(line.to_owned());
        });
        Compact { guard, lines }
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.guard.exited() {
                std::thread::sleep(Duration::from_millis(100)); // the drain thread's last lines
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "weft compact did not exit\n{}",
                self.guard.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `key=value` fields of every "compactor run done" line.
    fn runs(&self) -> Vec<BTreeMap<String, String>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("compactor run done"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }
}

fn field(run: &BTreeMap<String, String>, k: &str) -> u64 {
    run.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {k} in {run:?}"))
}

fn count_chunks_objects(bucket: &Bucket, prefix: &str) -> (usize, u64) {
    let objs: Vec<_> = bucket
        .list(prefix)
        .into_iter()
        .filter(|o| o.key.contains("/chunks/"))
        .collect();
    (objs.len(), objs.iter().map(|o| o.size).sum())
}

fn markers(bucket: &Bucket, prefix: &str) -> usize {
    bucket
        .list(prefix)
        .iter()
        .filter(|o| o.key.contains("/compacted/"))
        .count()
}

#[test]
fn compaction_merges_objects_and_answers_are_identical_before_and_after() {
    self_check();
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let bucket = Bucket::new(&moto, BUCKET);
    let env = s3_env(&moto.endpoint());
    let prefix = "merge";
    let url = format!("s3://{BUCKET}/{prefix}");
    let model = write_objects(&bucket, prefix, seed, 24);
    let (n0, b0) = count_chunks_objects(&bucket, prefix);

    assert_same("before", &model, &read_all(&env, &url, "before"));
    let mut c = Compact::spawn(&env, &url, &["--once"], None);
    assert!(
        c.wait(Duration::from_secs(60)).success(),
        "{}",
        c.guard.log_tail()
    );
    let runs = c.runs();
    assert_eq!(runs.len(), 1, "{}", c.guard.log_tail());
    assert_eq!(runs[0]["lease"], "true");
    assert!(
        field(&runs[0], "duplicate_chunks") > 0,
        "the repeated uploads were seen: {runs:?}"
    );
    let (n1, b1) = count_chunks_objects(&bucket, prefix);
    eprintln!("compaction: {n0} objects / {b0} bytes -> {n1} objects / {b1} bytes");
    assert!(n1 * 4 <= n0, "{n0} -> {n1}");
    assert!(b1 < b0, "duplicates dropped: {b0} -> {b1}");
    assert_eq!(markers(&bucket, prefix), 0);
    assert_same("after", &model, &read_all(&env, &url, "after"));

    // A second run finds nothing more to do at level 1 (the day-level blocks are not over).
    let mut c = Compact::spawn(&env, &url, &["--once"], None);
    assert!(c.wait(Duration::from_secs(60)).success());
    let (n2, _) = count_chunks_objects(&bucket, prefix);
    assert!(n2 <= n1);
    assert_same(
        "after a second run",
        &model,
        &read_all(&env, &url, "second"),
    );
}

#[test]
fn a_compactor_killed_at_any_step_loses_and_repeats_nothing() {
    self_check();
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let bucket = Bucket::new(&moto, BUCKET);
    let env = s3_env(&moto.endpoint());
    for step in ["after-write", "after-visible", "mid-delete"] {
        let prefix = format!("crash-{step}");
        let url = format!("s3://{BUCKET}/{prefix}");
        let model = write_objects(&bucket, &prefix, seed ^ step.len() as u64, 12);
        let (n0, _) = count_chunks_objects(&bucket, &prefix);

        let ttl = ["--once", "--compactor.lease-ttl=2s"];
        let mut c = Compact::spawn(&env, &url, &ttl, Some(step));
        let status = c.wait(Duration::from_secs(60));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "{step}: killed by SIGKILL\n{}",
            c.guard.log_tail()
        );
        let (nk, _) = count_chunks_objects(&bucket, &prefix);
        let mk = markers(&bucket, &prefix);
        eprintln!("{step}: killed with {n0} -> {nk} objects, {mk} markers");
        match step {
            "after-write" => assert!(nk > n0 && mk == 0, "outputs written, no marker"),
            "after-visible" => assert!(nk > n0 && mk == 1, "outputs and marker"),
            _ => assert!(mk == 1 && nk < n0 + 2, "some sources deleted"),
        }
        assert_same(
            &format!("{step}: killed"),
            &model,
            &read_all(&env, &url, step),
        );

        // The killed process's lease may still be valid (2 s here): then the rerun finds it
        // held, and one more run after it expired does the work.
        let mut c = Compact::spawn(&env, &url, &ttl, None);
        let s = c.wait(Duration::from_secs(60));
        assert!(s.success(), "{}", c.guard.log_tail());
        let mut runs = c.runs();
        if runs[0]["lease"] == "false" {
            // The killed holder's lease: wait for it to expire, then run again.
            std::thread::sleep(Duration::from_secs(3));
            let mut c2 = Compact::spawn(&env, &url, &ttl, None);
            assert!(c2.wait(Duration::from_secs(60)).success());
            runs = c2.runs();
        }
        assert_eq!(runs[0]["lease"], "true", "{step}: {runs:?}");
        let (n1, _) = count_chunks_objects(&bucket, &prefix);
        assert_eq!(markers(&bucket, &prefix), 0, "{step}: markers left");
        assert!(n1 * 2 <= n0, "{step}: {n0} -> {n1}");
        assert_same(
            &format!("{step}: rerun"),
            &model,
            &read_all(&env, &url, step),
        );
    }
}

#[test]
fn two_compactors_race_for_the_lease_and_the_survivor_takes_over() {
    self_check();
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let bucket = Bucket::new(&moto, BUCKET);
    let env = s3_env(&moto.endpoint());
    let prefix = "race";
    let url = format!("s3://{BUCKET}/{prefix}");
    let model = write_objects(&bucket, prefix, seed, 12);
    let args = ["--compactor.interval=1s", "--compactor.lease-ttl=3s"];
    let mut a = Compact::spawn(&env, &url, &args, None);
    let mut b = Compact::spawn(&env, &url, &args, None);
    // Both run about once a second for 5 s: exactly one of them holds the lease throughout.
    std::thread::sleep(Duration::from_secs(5));
    let held = |c: &Compact| c.runs().iter().filter(|r| r["lease"] == "true").count();
    let jobs = |c: &Compact| c.runs().iter().map(|r| field(r, "jobs")).sum::<u64>();
    let (ha, hb) = (held(&a), held(&b));
    eprintln!(
        "runs with the lease: a {ha}, b {hb}; jobs a {}, b {}",
        jobs(&a),
        jobs(&b)
    );
    assert!(a.runs().len() >= 2 && b.runs().len() >= 2, "both ran");
    assert!(
        (ha == 0) != (hb == 0),
        "exactly one holds the lease: a {ha}, b {hb}"
    );
    let (winner, loser) = if ha > 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(jobs(winner) > 0);
    assert_eq!(jobs(loser), 0, "the other did no work");

    // The holder dies; new objects arrive (a compactor takes the lease only when there is
    // work); its lease expires (3 s) and the other takes over.
    // SAFETY: kill(2) of a child process we started, by its pid.
    unsafe {
        libc::kill(winner.guard.pid() as i32, libc::SIGKILL);
    }
    let died = Instant::now();
    let more = write_objects_at(&bucket, prefix, seed ^ 1, 6, 3);
    let mut model = model;
    for (tenant, series) in more {
        let m = model.entry(tenant).or_default();
        for (l, s) in series {
            let e = m.entry(l).or_default();
            e.extend(s);
            e.sort();
            e.dedup();
        }
    }
    let before = held(loser);
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(loser) == before {
        assert!(
            Instant::now() < deadline,
            "no takeover\n{}",
            loser.guard.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = died.elapsed();
    eprintln!("takeover {after:?} after the holder was killed");
    assert!(
        after >= Duration::from_secs(1),
        "not before the lease could expire: {after:?}"
    );
    assert_same("after the race", &model, &read_all(&env, &url, "race"));
    let _ = loser;
}

/// `weft compact --limits.overrides-file`: a tenant's own `retention` wins over
/// `--store.retention` (0 here, keep for ever): the tenant with a 2h retention loses every
/// object (all end a day ago), the other keeps all its data.
#[test]
fn per_tenant_retention_from_the_overrides_file() {
    self_check();
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let bucket = Bucket::new(&moto, BUCKET);
    let env = s3_env(&moto.endpoint());
    let prefix = "per-tenant-retention";
    let url = format!("s3://{BUCKET}/{prefix}");
    let mut model = write_objects(&bucket, prefix, seed, 6);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overrides.yaml");
    std::fs::write(
        &file,
        format!("overrides:\n  {}:\n    retention: 2h\n", TENANTS[0]),
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let mut c = Compact::spawn(
        &env,
        &url,
        &[
            "--once",
            "--store.retention",
            "0",
            "--limits.overrides-file",
            &file_arg,
        ],
        None,
    );
    assert!(
        c.wait(Duration::from_secs(60)).success(),
        "{}",
        c.guard.log_tail()
    );
    let per_tenant = |t: &str| {
        bucket
            .list(prefix)
            .iter()
            .filter(|o| o.key.contains(&format!("/{t}/chunks/")))
            .count()
    };
    assert_eq!(per_tenant(TENANTS[0]), 0, "{}", c.guard.log_tail());
    assert!(per_tenant(TENANTS[1]) > 0);
    model.remove(TENANTS[0]);
    let got = read_all(&env, &url, "after retention");
    assert!(got[TENANTS[0]].is_empty(), "{:?}", got[TENANTS[0]].keys());
    assert_same("after per-tenant retention", &model, &got);
}
