//! The store-outage drill of issues 4 and 8: the real `weft` binary under steady remote-write
//! load, with its S3 store (moto behind a [`FaultProxy`]) healthy, then hung (moto
//! SIGSTOPped), then refusing connections (the proxy's port closed), with a SIGKILL and
//! restart of weft in the middle of the outage, then taking reads but refusing writes (GETs
//! came back before PUTs on 28 Feb 2017), then healthy again.
//!
//! What it checks, phase by phase:
//! - healthy: flushes reach the bucket, and flushed chunks leave memory (retain 2 s, no
//!   cache): from then on only the local tier and the store have them;
//! - outage: pushes are acknowledged or get 503 with Retry-After (never 429, never another
//!   5xx); `weft_store_up{op="write"}` drops to 0, and `{op="read"}` while reads fail; RSS
//!   stays within `--limits.memory-bytes` + 64 MiB; **every query answers within 2 s (a
//!   dashboard's deadline), complete and exact**: everything the queries ask for is local
//!   (memory, spill or the local tier), so no answer may be partial, the series API
//!   included, in any phase, right after the restart too;
//! - recovery: the backlog drains, `weft_store_up` is 1 again, pushes are acknowledged again;
//! - the end: every acknowledged sample reads back bit-exact, nothing that was never sent,
//!   not partial; and the same again from a fresh weft with an empty data directory on the
//!   same store, which proves the data reached it.
//!
//! Knobs: `WEFT_TEST_SEED` repeats a run's data; `WEFT_DRILL_DISK_BYTES` overrides the disk
//! budget; `WEFT_DRILL_PUSH_INTERVAL_MS` each writer's pace (the load);
//! `WEFT_DRILL_RESTART=term` restarts with SIGTERM instead of SIGKILL;
//! `WEFT_TEST_LOG=1` echoes weft's log. Each start's log is kept in `<temp>/logs/`, and the
//! whole directory is kept when the test fails.
//!
//! The drill needs the object-store flush path (`--store s3://…`, `--flush.*`, `--limits.*`,
//! `/ingester/flush`); `load_model_and_samplers_against_a_plain_weft` (ignored) runs the same
//! load generator, model, query loop and RSS sampler against a weft without a store.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use common::s3::{fault_proxy_self_check, s3_env, Bucket, FaultProxy, Moto, ProxyMode};
use common::workload::{mix, Workload};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft::proto::prompb::MatcherType;

// ---- the set-up ----

const BUCKET: &str = "weft";
const STORE_PREFIX: &str = "drill";
const TENANTS: [&str; 2] = ["outage-a", "outage-b"];
/// Concurrent writer threads; each owns its series in both tenants.
const WRITERS: usize = 4;
/// Series per writer per tenant: 2 000 series in all.
const SERIES_PER_WRITER: usize = 250;
/// Samples per series in one push are drawn from this range (a push carries every series of
/// one writer in one tenant, so 250 to 1 000 samples, like a Prometheus shard's batch).
const SAMPLES_PER_PUSH: std::ops::RangeInclusive<usize> = 1..=4;
/// A writer sends at most one push this often. The load is steady rather than as fast as
/// possible, so that weft has CPU left to drain its backlog after the outage (2 shared cores
/// run weft, moto and this test).
const PUSH_INTERVAL: Duration = Duration::from_millis(40);

/// [`PUSH_INTERVAL`], or `WEFT_DRILL_PUSH_INTERVAL_MS`.
fn push_interval() -> Duration {
    match std::env::var("WEFT_DRILL_PUSH_INTERVAL_MS") {
        Ok(s) => {
            Duration::from_millis(s.trim().parse().unwrap_or_else(|e| {
                panic!("WEFT_DRILL_PUSH_INTERVAL_MS={s:?} is not a number: {e}")
            }))
        }
        Err(_) => PUSH_INTERVAL,
    }
}

/// `--limits.memory-bytes`: the one memory limit of the whole process.
const MEMORY_BUDGET_BYTES: u64 = 8 << 20;
/// WAL plus spill on disk; past it pushes get 503. It must be reached during the 50 s
/// outage and not before. Measured at this load (plain weft, `load_model_…`): ~55 000
/// samples/s and 10.4 WAL bytes a sample, ~0.55 MiB/s; chunks of this data take about as
/// much. Healthy, the WAL holds at most two 8 MiB segments between checkpoints (every 10 s);
/// measured healthy peak 19.2 MiB. During the outage the unflushed chunks (memory, spill,
/// checkpoints) grow on top of that; 40 MiB was reached 15–35 s into the outage in the runs
/// recorded in docs/benchmarks.md, which leaves margin for a slower machine.
///
/// Issue 8: the local tier's copies count in the budget too, and give their room back
/// before pushes are refused; that would make old data store-only during the outage. The
/// drill checks complete local answers, so its budget is large enough that nothing is
/// evicted (backpressure at the disk budget has its own tests: tests/disk_full.rs,
/// `pressure`); `WEFT_DRILL_DISK_BYTES=41943040` brings back the issue-4 run.
const DISK_BUDGET_BYTES: u64 = 256 << 20;
const SEGMENT_SIZE_BYTES: u64 = 8 << 20;
/// How long flushed chunks stay in memory. Short, so that the healthy phase's data is only
/// in the store when the outage begins (the queries then have to be partial).
const RETAIN: &str = "2s";
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// What the contract allows on top of the query timeout.
const QUERY_SLACK: Duration = Duration::from_secs(1);
/// Series per read in the final read-back.
const VERIFY_SERIES_PER_READ: usize = 25;
/// A dashboard's deadline: every query of the drill must be answered within it, in every
/// phase of the outage, its first seconds included.
const QUERY_DEADLINE: Duration = Duration::from_secs(2);

const HEALTHY_PHASE: Duration = Duration::from_secs(15);
const HANG_PHASE: Duration = Duration::from_secs(20);
const REFUSE_PHASE: Duration = Duration::from_secs(20);
const GET_ONLY_PHASE: Duration = Duration::from_secs(15);
/// When, into the refuse phase, weft is restarted.
const RESTART_AFTER: Duration = Duration::from_secs(8);
/// The longest the backlog may take to drain after the store returns.
const DRAIN_DEADLINE: Duration = Duration::from_secs(90);

/// RSS beyond (baseline + memory budget) that the drill tolerates. Measured against the
/// plain weft at this load (`load_model_…`, ~1 M samples in memory): file-backed pages grow
/// by ~6 MiB over the baseline (the mapped WAL segments; at most 2 × 8 MiB), and anonymous
/// memory beyond the chunk bytes (series index of 2 000 series, request and answer buffers,
/// allocator slack) is ~8 MiB. During the drain after the outage, flush objects being built
/// and uploaded come on top (TODO(lead): their size bound); 64 MiB covers 16 MiB of WAL
/// mappings, twice the measured anonymous overhead, and 32 MiB of objects in flight. It
/// still catches a weft that ignores the budget: the drill writes ~50 MiB of chunks.
const RSS_OVERHEAD_BYTES: u64 = 64 << 20;

fn disk_budget_bytes() -> u64 {
    match std::env::var("WEFT_DRILL_DISK_BYTES") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("WEFT_DRILL_DISK_BYTES={s:?} is not a number: {e}")),
        Err(_) => DISK_BUDGET_BYTES,
    }
}

/// The flags of the drill's weft (the store's address comes from the environment).
fn weft_args(ingester_id: &str, disk_budget: u64) -> Vec<String> {
    [
        ("--store", format!("s3://{BUCKET}/{STORE_PREFIX}")),
        ("--ingester.id", ingester_id.to_string()),
        ("--flush.period", "1s".into()),
        ("--flush.max-chunk-age", "1m".into()),
        ("--flush.max-chunk-idle", "5s".into()),
        ("--flush.retain-period", RETAIN.into()),
        ("--store.timeout", "2s".into()),
        ("--store.degraded-timeout", "200ms".into()),
        ("--store.circuit-failures", "3".into()),
        ("--store.circuit-probe-interval", "1s".into()),
        ("--limits.memory-bytes", MEMORY_BUDGET_BYTES.to_string()),
        ("--limits.disk-bytes", disk_budget.to_string()),
        // No chunk cache: a query of flushed data has to reach the store, so an outage shows
        // in the answers (partial) rather than being hidden by what a cache happens to hold.
        ("--cache.bytes", "0".into()),
        ("--query.timeout", format!("{}s", QUERY_TIMEOUT.as_secs())),
        ("--wal.segment-size", SEGMENT_SIZE_BYTES.to_string()),
        // Checkpoints often enough that flushed data leaves the WAL during the healthy phase:
        // the disk budget is then spent by the outage, not by the drill's start.
        ("--wal.checkpoint-interval", "10s".into()),
        ("--wal.checkpoint-bytes", (32u64 << 20).to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

// ---- the data ----

/// The drill's series and values (see `common::workload`): mostly arbitrary bit patterns,
/// so that chunks take about as many bytes per sample as the WAL does (~10, against ~1.5 for
/// real data) and the budgets are reached within the outage at a load a debug build on two
/// cores sustains.
const WORKLOAD: Workload = Workload {
    metric: "outage_samples",
    job: "outage-drill",
    series_per_writer: SERIES_PER_WRITER,
    arbitrary_percent: 60,
};

fn value_bits(seed: u64, writer: usize, tenant: usize, series: usize, t: i64) -> u64 {
    WORKLOAD.value_bits(seed, writer, tenant, series, t)
}

fn series_labels(writer: usize, series: usize) -> Labels {
    WORKLOAD.series_labels(writer, series)
}

/// The series number out of `series="NNN"`.
fn series_number(labels: &Labels) -> Option<usize> {
    labels
        .iter()
        .find(|(n, _)| n == "series")
        .and_then(|(_, v)| v.parse().ok())
}

fn encode_push(seed: u64, writer: usize, tenant: usize, ts: &[i64]) -> Vec<u8> {
    WORKLOAD.encode_push(seed, writer, tenant, ts)
}

/// The timestamps of a push of `k` samples after `last`: spread over (last, now], like the
/// scrapes a Prometheus sends in one batch; one millisecond apart if the clock has not moved
/// that far (they must increase).
fn push_timestamps(last: i64, now: i64, k: usize) -> Vec<i64> {
    let k64 = k as i64;
    if now - last >= k64 {
        (1..=k64).map(|i| last + (now - last) * i / k64).collect()
    } else {
        (1..=k64).map(|i| last + i).collect()
    }
}

// ---- the model ----

/// One push: all `SERIES_PER_WRITER` series of (`writer`, `tenant`) at `ts`, values from
/// [`value_bits`].
#[derive(Debug, Clone)]
struct Push {
    tenant: usize,
    ts: Vec<i64>,
    /// Got a 2xx (possibly after retries of the same body).
    acked: bool,
}

/// One writer's pushes in the order it sent them. A push is logged before its first attempt
/// (so that a query answer that already holds it can be checked) and finished once it is
/// acknowledged or given up; only the last one can be unfinished.
#[derive(Debug, Default)]
struct WriterLog {
    pushes: Vec<Push>,
    finished: usize,
}

/// The test's model of what was written: every push of every writer.
#[derive(Debug)]
struct Model {
    seed: u64,
    writers: Vec<Mutex<WriterLog>>,
}

impl Model {
    fn new(seed: u64) -> Model {
        Model {
            seed,
            writers: (0..WRITERS)
                .map(|_| Mutex::new(WriterLog::default()))
                .collect(),
        }
    }

    fn log(&self, writer: usize) -> std::sync::MutexGuard<'_, WriterLog> {
        self.writers[writer]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, writer: usize, tenant: usize, ts: Vec<i64>) {
        let mut log = self.log(writer);
        assert_eq!(log.finished, log.pushes.len(), "a push is still open");
        log.pushes.push(Push {
            tenant,
            ts,
            acked: false,
        });
    }

    fn finish(&self, writer: usize, acked: bool) {
        let mut log = self.log(writer);
        let last = log.pushes.len();
        log.pushes[last - 1].acked = acked;
        log.finished = last;
    }

    /// How many of `writer`'s pushes are finished: a snapshot to limit a completeness check
    /// to what was acknowledged before a query was sent.
    fn finished(&self, writer: usize) -> usize {
        self.log(writer).finished
    }

    fn pushes(&self, writer: usize) -> Vec<Push> {
        self.log(writer).pushes.clone()
    }

    /// (acked samples, unacked samples) over all writers.
    fn totals(&self) -> (u64, u64) {
        let (mut acked, mut unacked) = (0, 0);
        for w in 0..WRITERS {
            for p in &self.log(w).pushes {
                let n = (p.ts.len() * SERIES_PER_WRITER) as u64;
                if p.acked {
                    acked += n;
                } else {
                    unacked += n;
                }
            }
        }
        (acked, unacked)
    }
}

/// Totals and problems of comparisons against the model.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    acked_found: u64,
    unacked_sent: u64,
    unacked_found: u64,
    read: u64,
    lost: u64,
    problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 40 {
            self.problems.push(p);
        }
    }

    fn assert_clean(&self, what: &str) {
        assert!(
            self.lost == 0 && self.problems.is_empty(),
            "{what}: {} acknowledged samples missing, {} problems:\n  {}",
            self.lost,
            self.problems.len(),
            self.problems.join("\n  ")
        );
    }
}

/// How [`check_series`] judges an answer.
#[derive(Debug, Clone, Copy)]
struct Check {
    /// STREAMED_XOR_CHUNKS (bits exact) or SAMPLES (-0.0 may read back as +0.0, because a
    /// proto3 encoder leaves out a value equal to 0.0, as Prometheus's does).
    chunks: bool,
    /// Every acknowledged sample in the range must be there.
    complete: bool,
    /// Every sample read must be in one of the pushes given. Off when the pushes given are
    /// only a prefix of what was sent (the completeness check of a live query).
    exhaustive: bool,
}

/// Walks one series' pushes (those of its tenant, in time order) and what was read back side
/// by side, within `range`.
#[allow(clippy::too_many_arguments)]
fn check_series(
    seed: u64,
    tenant: usize,
    writer: usize,
    series: usize,
    pushes: &[Push],
    got: &[(i64, u64)],
    range: (i64, i64),
    how: Check,
    tally: &mut Tally,
) {
    let neg_zero = (-0.0f64).to_bits();
    let name = || {
        format!(
            "{} {}",
            TENANTS[tenant],
            fmt_labels(&series_labels(writer, series))
        )
    };
    let mut cursor = got.iter().peekable();
    for p in pushes.iter().filter(|p| p.tenant == tenant) {
        for &t in p.ts.iter().filter(|&&t| t >= range.0 && t <= range.1) {
            let want = value_bits(seed, writer, tenant, series, t);
            if p.acked {
                tally.acked += 1;
            } else {
                tally.unacked_sent += 1;
            }
            while let Some(&&(gt, gv)) = cursor.peek() {
                if gt >= t {
                    break;
                }
                if how.exhaustive {
                    tally.problem(format!("{}: t={gt} bits={gv:#018x} was never sent", name()));
                }
                cursor.next();
            }
            match cursor.peek() {
                Some(&&(gt, gv)) if gt == t => {
                    cursor.next();
                    let proto3_zero = !how.chunks && want == neg_zero && gv == 0;
                    if gv != want && !proto3_zero {
                        tally.problem(format!(
                            "{}: t={t} reads back bits={gv:#018x}, sent {want:#018x}",
                            name()
                        ));
                    } else if p.acked {
                        tally.acked_found += 1;
                    } else {
                        tally.unacked_found += 1;
                    }
                }
                _ if p.acked && how.complete => {
                    tally.lost += 1;
                    tally.problem(format!(
                        "{}: acked sample t={t} bits={want:#018x} is missing",
                        name()
                    ));
                }
                _ => {}
            }
        }
    }
    if how.exhaustive {
        for &(gt, gv) in cursor {
            tally.problem(format!(
                "{}: t={gt} bits={gv:#018x} is after everything sent",
                name()
            ));
        }
    }
}

/// Checks one remote-read answer for `writer`'s series `series` in `tenant`: no other
/// series, and each one compared with `pushes` (a missing series reads as no samples).
#[allow(clippy::too_many_arguments)]
fn check_answer(
    seed: u64,
    tenant: usize,
    writer: usize,
    series: std::ops::Range<usize>,
    pushes: &[Push],
    set: &SeriesSet,
    range: (i64, i64),
    how: Check,
    tally: &mut Tally,
) {
    let mut by_series: BTreeMap<usize, &Samples> = BTreeMap::new();
    for (labels, samples) in set {
        tally.read += samples.len() as u64;
        match series_number(labels) {
            Some(s) if series.contains(&s) && series_labels(writer, s) == *labels => {
                by_series.insert(s, samples);
            }
            _ => tally.problem(format!(
                "{}: series {} was not asked for (w{writer}, series {series:?})",
                TENANTS[tenant],
                fmt_labels(labels)
            )),
        }
    }
    let none = Samples::new();
    for s in series {
        let got = by_series.get(&s).copied().unwrap_or(&none);
        check_series(seed, tenant, writer, s, pushes, got, range, how, tally);
    }
}

/// The matchers of `writer`'s series `series` (a regex of zero-padded numbers unless all).
fn writer_matchers(
    writer: usize,
    series: &std::ops::Range<usize>,
) -> Vec<weft::proto::prompb::LabelMatcher> {
    let mut m = vec![
        matcher(MatcherType::Eq, "__name__", "outage_samples"),
        matcher(MatcherType::Eq, "writer", &format!("w{writer}")),
    ];
    if *series != (0..SERIES_PER_WRITER) {
        let alts: Vec<String> = series.clone().map(|s| format!("{s:03}")).collect();
        m.push(matcher(MatcherType::Re, "series", &alts.join("|")));
    }
    m
}

// ---- the shared state of a run ----

/// Where weft is now: writers, the query loop and the samplers follow it across restarts.
#[derive(Debug, Default)]
struct Target {
    base: RwLock<String>,
    pid: AtomicU32,
    /// Set while the drill restarts weft on purpose: connection errors are then expected.
    restarting: AtomicBool,
}

impl Target {
    fn set(&self, weft: &Weft) {
        *self.base.write().unwrap_or_else(|e| e.into_inner()) = weft.base.clone();
        self.pid.store(weft.pid(), Ordering::SeqCst);
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.base.read().unwrap_or_else(|e| e.into_inner())
        )
    }
}

/// The phases of the drill, as recorded with each sample of the samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Healthy = 0,
    Hang = 1,
    Refuse = 2,
    GetOnly = 3,
    Recover = 4,
    Done = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Healthy,
            1 => Phase::Hang,
            2 => Phase::Refuse,
            3 => Phase::GetOnly,
            4 => Phase::Recover,
            _ => Phase::Done,
        }
    }

    /// The store is down (hung, refusing, or refusing writes).
    fn outage(self) -> bool {
        matches!(self, Phase::Hang | Phase::Refuse | Phase::GetOnly)
    }
}

/// Everything the background threads of a run share with the scenario.
#[derive(Debug)]
struct Run {
    target: Target,
    model: Model,
    writes: WriteStats,
    started: Instant,
    /// Timestamps of the run are after this.
    start_ms: i64,
    phase: std::sync::atomic::AtomicU8,
    stop_writers: AtomicBool,
    stop_others: AtomicBool,
    /// Set by the scenario to pause the query loop; the loop answers with `queries_idle`.
    queries_paused: AtomicBool,
    queries_idle: AtomicBool,
    rss_samples: Mutex<Vec<RssSample>>,
    metric_samples: Mutex<Vec<MetricsSample>>,
}

impl Run {
    fn new(seed: u64, weft: &Weft) -> Run {
        let target = Target::default();
        target.set(weft);
        Run {
            target,
            model: Model::new(seed),
            writes: WriteStats::default(),
            started: Instant::now(),
            start_ms: now_ms() - 1000,
            phase: std::sync::atomic::AtomicU8::new(Phase::Healthy as u8),
            stop_writers: AtomicBool::new(false),
            stop_others: AtomicBool::new(false),
            queries_paused: AtomicBool::new(false),
            queries_idle: AtomicBool::new(false),
            rss_samples: Mutex::new(Vec::new()),
            metric_samples: Mutex::new(Vec::new()),
        }
    }

    /// The scrapes of the metrics sampler so far.
    fn metrics_so_far(&self) -> Vec<MetricsSample> {
        self.metric_samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    fn set_phase(&self, p: Phase) {
        eprintln!(
            "[{:6.1} s] phase {p:?}",
            self.started.elapsed().as_secs_f64()
        );
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Kills (or terminates) `weft`, starts it again on the same data directory, and points
    /// every thread at it; returns the new server and how long it took to be ready.
    fn restart(
        &self,
        weft: Weft,
        signal: i32,
        args: &[&str],
        env: &[(String, String)],
        log: PathBuf,
    ) -> (Weft, Duration) {
        let mut weft = weft;
        self.target.restarting.store(true, Ordering::SeqCst);
        self.queries_paused.store(true, Ordering::SeqCst);
        // A query in flight may take up to the query timeout; let it finish.
        let deadline = Instant::now() + QUERY_TIMEOUT + QUERY_SLACK + Duration::from_secs(5);
        while !self.queries_idle.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let data = weft.data_dir().to_path_buf();
        weft.signal(signal);
        let status = weft.wait_exit(Duration::from_secs(90));
        eprintln!(
            "[{:6.1} s] weft (pid {}) ended with {status}; starting it again",
            self.elapsed_s(),
            weft.pid()
        );
        drop(weft);
        let t = Instant::now();
        let weft = Weft::start_with_env(Some(&data), args, env, Some(log));
        let ready = t.elapsed();
        self.target.set(&weft);
        self.target.restarting.store(false, Ordering::SeqCst);
        self.queries_paused.store(false, Ordering::SeqCst);
        eprintln!(
            "[{:6.1} s] weft (pid {}) ready again after {ready:?}",
            self.elapsed_s(),
            weft.pid()
        );
        (weft, ready)
    }
}

// ---- writers ----

/// What the writers saw, summed.
#[derive(Debug, Default)]
struct WriteStats {
    pushes_acked: AtomicU64,
    attempts: AtomicU64,
    /// 503s while weft was up (not the "not ready" of a restart).
    status_503: AtomicU64,
    status_503_restarting: AtomicU64,
    status_503_without_retry_after: AtomicU64,
    status_429: AtomicU64,
    status_other: AtomicU64,
    /// A 400 to the retry of a push whose earlier attempt got no answer (that attempt may
    /// have been stored). Since retries are safe (a sample equal to a held one is a no-op)
    /// this is a failure like any other 4xx: it is also counted in `status_other`, which
    /// must stay 0.
    status_400_on_retry: AtomicU64,
    connection_errors: AtomicU64,
    /// Acks since the scenario last reset it (to see writes flow again).
    acks_since_mark: AtomicU64,
    /// When the first 503 came, in ms since the run started (0: none yet).
    first_503_ms: AtomicU64,
    last_503_ms: AtomicU64,
    /// A few answers other than 2xx, for the report.
    examples: Mutex<Vec<String>>,
}

impl WriteStats {
    fn example(&self, s: String) {
        let mut ex = self.examples.lock().unwrap_or_else(|e| e.into_inner());
        if ex.len() < 8
            && !ex
                .iter()
                .any(|e| e[..e.len().min(40)] == s[..s.len().min(40)])
        {
            ex.push(s);
        }
    }
}

/// Pushes every `PUSH_INTERVAL`, alternating tenants, until `stop_writers`. A push is retried
/// with the same body after a 503 (after its Retry-After, capped to keep the drill moving), a
/// 5xx or a connection error, as Prometheus does, until it gets a 2xx or the writers stop; it
/// counts as acknowledged only with a 2xx. A 4xx (429 included) drops it, as Prometheus does.
fn run_writer(run: &Run, writer: usize) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("reqwest client");
    let stats = &run.writes;
    let mut rng = StdRng::seed_from_u64(mix(run.model.seed ^ mix(writer as u64 + 1)));
    let mut last = [run.start_ms; TENANTS.len()];
    let interval = push_interval();
    let mut next_at = Instant::now();
    for n in 0usize.. {
        if run.stop_writers.load(Ordering::SeqCst) {
            break;
        }
        let now = Instant::now();
        if next_at > now {
            std::thread::sleep(next_at - now);
        }
        next_at = Instant::now() + interval;
        let tenant = n % TENANTS.len();
        let k = rng.random_range(SAMPLES_PER_PUSH);
        let ts = push_timestamps(last[tenant], now_ms(), k);
        last[tenant] = ts[ts.len() - 1];
        let body = encode_push(run.model.seed, writer, tenant, &ts);
        run.model.begin(writer, tenant, ts);
        let mut backoff = Duration::from_millis(50);
        let mut unanswered = false;
        let acked = loop {
            stats.attempts.fetch_add(1, Ordering::Relaxed);
            let mut rb = client.post(run.target.url("/api/v1/push"));
            for (k, v) in WRITE_HEADERS {
                rb = rb.header(k, v);
            }
            let restarting = run.target.restarting.load(Ordering::SeqCst);
            let sent = rb
                .header("X-Scope-OrgID", TENANTS[tenant])
                .body(body.clone())
                .send();
            let wait = match sent {
                Ok(r) if r.status().is_success() => break true,
                Ok(r) if r.status().as_u16() == 503 => {
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if retry_after.is_none() {
                        stats
                            .status_503_without_retry_after
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if restarting || run.target.restarting.load(Ordering::SeqCst) {
                        stats.status_503_restarting.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.status_503.fetch_add(1, Ordering::Relaxed);
                        let ms = run.started.elapsed().as_millis() as u64;
                        let _ = stats.first_503_ms.compare_exchange(
                            0,
                            ms,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        stats.last_503_ms.fetch_max(ms, Ordering::Relaxed);
                        let text = r.text().unwrap_or_default();
                        stats.example(format!(
                            "503 (Retry-After {retry_after:?}) in {:?}: {}",
                            run.phase(),
                            text.trim()
                        ));
                    }
                    retry_after
                        .map(Duration::from_secs)
                        .unwrap_or(backoff)
                        .min(Duration::from_millis(500))
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status == 400 && unanswered {
                        stats.status_400_on_retry.fetch_add(1, Ordering::Relaxed);
                    }
                    if status == 429 {
                        stats.status_429.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.status_other.fetch_add(1, Ordering::Relaxed);
                    }
                    let text = r.text().unwrap_or_default();
                    stats.example(format!("{status} in {:?}: {}", run.phase(), text.trim()));
                    if status >= 500 {
                        backoff
                    } else {
                        break false;
                    }
                }
                Err(e) => {
                    unanswered = true;
                    stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                    if !restarting && !run.target.restarting.load(Ordering::SeqCst) {
                        stats.example(format!("connection error in {:?}: {e:#}", run.phase()));
                    }
                    backoff
                }
            };
            if run.stop_writers.load(Ordering::SeqCst) {
                break false;
            }
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        };
        if acked {
            stats.pushes_acked.fetch_add(1, Ordering::Relaxed);
            stats.acks_since_mark.fetch_add(1, Ordering::Relaxed);
        }
        run.model.finish(writer, acked);
    }
}

// ---- queries ----

const READ_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];

/// The kinds of query the loop cycles through.
#[derive(Debug, Clone, Copy)]
enum QueryKind {
    Samples,
    Chunks,
    SeriesApi,
}

/// What one query got back.
enum Answer {
    /// Remote read: the series, and whether in chunks.
    Read(SeriesSet, bool),
    /// The series API: label sets.
    Names(Vec<BTreeMap<String, String>>),
}

/// One query's outcome: status, partial reason (header or warnings), answer (for a 200).
type Outcome = (u16, Option<String>, Option<Answer>);

fn query_once(
    client: &reqwest::blocking::Client,
    target: &Target,
    kind: QueryKind,
    tenant: usize,
    writer: usize,
    series: &std::ops::Range<usize>,
    range: (i64, i64),
) -> Result<Outcome, String> {
    match kind {
        QueryKind::Samples | QueryKind::Chunks => {
            let chunks = matches!(kind, QueryKind::Chunks);
            let q = query(range.0, range.1, writer_matchers(writer, series));
            let mut types = vec![weft::proto::prompb::ResponseType::Samples as i32];
            if chunks {
                types.insert(
                    0,
                    weft::proto::prompb::ResponseType::StreamedXorChunks as i32,
                );
            }
            let req = weft::proto::prompb::ReadRequest {
                queries: vec![q.clone()],
                accepted_response_types: types,
            };
            let mut rb = client.post(target.url("/api/v1/read"));
            for (k, v) in READ_HEADERS {
                rb = rb.header(k, v);
            }
            let r = rb
                .header("X-Scope-OrgID", TENANTS[tenant])
                .body(snappy(&prost::Message::encode_to_vec(&req)))
                .send()
                .map_err(|e| format!("{e:#}"))?;
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.bytes().map_err(|e| format!("body: {e:#}"))?.to_vec();
            let resp = Resp {
                status,
                headers,
                body,
            };
            if status != 200 {
                return Ok((status, None, None));
            }
            let partial = resp.header(PARTIAL_HEADER);
            let mut sets = if chunks {
                decode_chunks(&resp, &[q]).0
            } else {
                decode_samples(&resp, &[q])
            };
            Ok((status, partial, Some(Answer::Read(sets.remove(0), chunks))))
        }
        QueryKind::SeriesApi => {
            let m = format!("{{__name__=\"outage_samples\",writer=\"w{writer}\"}}");
            let start = format!("{:.3}", range.0 as f64 / 1000.0);
            let end = format!("{:.3}", range.1 as f64 / 1000.0);
            let r = client
                .get(target.url("/api/v1/series"))
                .query(&[
                    ("match[]", m.as_str()),
                    ("start", start.as_str()),
                    ("end", end.as_str()),
                ])
                .header("X-Scope-OrgID", TENANTS[tenant])
                .send()
                .map_err(|e| format!("{e:#}"))?;
            let status = r.status().as_u16();
            let text = r.text().map_err(|e| format!("body: {e:#}"))?;
            if status != 200 {
                return Ok((status, None, None));
            }
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
            let warnings = api_warnings(&v);
            let names = serde_json::from_value(v["data"].clone())
                .map_err(|e| format!("data is not a list of label maps ({e}): {text}"))?;
            let partial = (!warnings.is_empty()).then(|| warnings.join("; "));
            Ok((status, partial, Some(Answer::Names(names))))
        }
    }
}

/// What the query loop saw.
#[derive(Debug, Default)]
struct QueryStats {
    answered: u64,
    partial: u64,
    /// Answers to queries sent while the store was down.
    during_outage: u64,
    partial_during_outage: u64,
    slowest: Duration,
    slowest_during_outage: Duration,
    partial_reasons: BTreeMap<String, u64>,
    samples_checked: u64,
    problems: Vec<String>,
    /// Per phase: each answer's latency, and how many were complete (not partial).
    by_phase: BTreeMap<Phase, PhaseQueries>,
}

/// The queries of one phase.
#[derive(Debug, Default)]
struct PhaseQueries {
    latencies: Vec<Duration>,
    complete: u64,
}

impl PhaseQueries {
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    }
}

impl QueryStats {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 40 {
            self.problems.push(p);
        }
    }
}

/// Queries all the time until `stop_others`: remote read (both modes) of 8 series of one
/// writer over everything since the run began (flushed and local data alike), and the
/// series API. Every answer must come within the query timeout + slack, with a 200; every
/// sample in it must be one that was sent; an answer that is not partial must hold every
/// sample acknowledged before the query was sent.
fn run_queries(run: &Run) -> QueryStats {
    let client = reqwest::blocking::Client::builder()
        // Longer than allowed, so that a slow answer is measured rather than cut off.
        .timeout(QUERY_DEADLINE + Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("reqwest client");
    let seed = run.model.seed;
    let mut rng = StdRng::seed_from_u64(mix(seed ^ 0x51e5));
    let mut stats = QueryStats::default();
    let kinds = [QueryKind::Samples, QueryKind::Chunks, QueryKind::SeriesApi];
    let mut n = 0usize;
    while !run.stop_others.load(Ordering::SeqCst) {
        if run.queries_paused.load(Ordering::SeqCst) {
            run.queries_idle.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        run.queries_idle.store(false, Ordering::SeqCst);
        let kind = kinds[n % kinds.len()];
        n += 1;
        let tenant = rng.random_range(0..TENANTS.len());
        let writer = rng.random_range(0..WRITERS);
        let first = rng.random_range(0..=SERIES_PER_WRITER - 8);
        let series = first..first + 8;
        let acked_before = run.model.finished(writer);
        let range = (run.start_ms, now_ms() + 60_000);
        let phase = run.phase();
        let started = Instant::now();
        let outcome = query_once(&client, &run.target, kind, tenant, writer, &series, range);
        let took = started.elapsed();
        if run.queries_paused.load(Ordering::SeqCst) {
            // The scenario pulled the plug during this query: it proves nothing either way.
            continue;
        }
        let what = format!(
            "{kind:?} query of {} w{writer} in {phase:?} (after {took:?})",
            TENANTS[tenant]
        );
        stats.slowest = stats.slowest.max(took);
        if phase.outage() {
            stats.slowest_during_outage = stats.slowest_during_outage.max(took);
        }
        if took > QUERY_DEADLINE {
            stats.problem(format!(
                "{what}: slower than a dashboard's {QUERY_DEADLINE:?}"
            ));
        }
        let (status, partial, answer) = match outcome {
            Ok(o) => o,
            Err(e) => {
                stats.problem(format!("{what}: no answer: {e}"));
                continue;
            }
        };
        if status != 200 {
            stats.problem(format!("{what}: status {status}"));
            continue;
        }
        stats.answered += 1;
        if phase.outage() {
            stats.during_outage += 1;
        }
        let per = stats.by_phase.entry(phase).or_default();
        per.latencies.push(took);
        if partial.is_none() {
            per.complete += 1;
        }
        if let Some(reason) = &partial {
            // Everything a query of the drill asks for is local: memory, spill or the
            // local tier (--local.retention 24h, a disk budget that evicts nothing).
            stats.problem(format!(
                "{what}: partial, though all of it is local: {reason}"
            ));
            stats.partial += 1;
            if phase.outage() {
                stats.partial_during_outage += 1;
            }
            // Reasons may carry details (keys, times); count by their first words.
            let short: String = reason.chars().take(60).collect();
            *stats.partial_reasons.entry(short).or_default() += 1;
        }
        let mut tally = Tally::default();
        match answer {
            Some(Answer::Read(set, chunks)) => {
                let pushes = run.model.pushes(writer);
                // Everything read must have been sent, with those bits.
                let correct = Check {
                    chunks,
                    complete: false,
                    exhaustive: true,
                };
                check_answer(
                    seed,
                    tenant,
                    writer,
                    series.clone(),
                    &pushes,
                    &set,
                    range,
                    correct,
                    &mut tally,
                );
                // Unless partial, everything acked before the query was sent must be there.
                if partial.is_none() {
                    let complete = Check {
                        chunks,
                        complete: true,
                        exhaustive: false,
                    };
                    let mut t = Tally::default();
                    check_answer(
                        seed,
                        tenant,
                        writer,
                        series.clone(),
                        &pushes[..acked_before],
                        &set,
                        range,
                        complete,
                        &mut t,
                    );
                    for p in t.problems {
                        tally.problem(p);
                    }
                }
            }
            Some(Answer::Names(names)) => {
                let want = format!("w{writer}");
                for labels in &names {
                    if labels.get("writer") != Some(&want)
                        || labels.get("__name__").map(String::as_str) != Some("outage_samples")
                    {
                        tally.problem(format!("series API answered {labels:?}"));
                    }
                }
                if partial.is_none() && acked_before > 1 && names.len() != SERIES_PER_WRITER {
                    tally.problem(format!(
                        "series API answered {} series, not partial, want {SERIES_PER_WRITER}",
                        names.len()
                    ));
                }
            }
            None => {}
        }
        stats.samples_checked += tally.read;
        for p in tally.problems {
            stats.problem(format!("{what} (partial: {partial:?}): {p}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stats
}

// ---- samplers ----

/// The peak RSS of a process so far (`VmHWM`), in bytes.
fn read_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line[6..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Memory of a process from `/proc/PID/status`, in bytes: (VmRSS, RssAnon, RssFile).
fn read_rss(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("RssAnon:")?, field("RssFile:")?))
}

#[derive(Debug, Clone, Copy)]
struct RssSample {
    at_s: f64,
    phase: Phase,
    pid: u32,
    rss: u64,
    anon: u64,
    file: u64,
}

/// Peak VmRSS per phase, and where the overall peak was: one line for a summary.
fn rss_report(samples: &[RssSample]) -> String {
    let mut by_phase: BTreeMap<Phase, u64> = BTreeMap::new();
    for s in samples {
        let e = by_phase.entry(s.phase).or_default();
        *e = (*e).max(s.rss);
    }
    let phases: Vec<String> = by_phase
        .iter()
        .map(|(p, b)| format!("{p:?} {:.1}", mib(*b)))
        .collect();
    let top = samples.iter().max_by_key(|s| s.rss);
    format!(
        "peak by phase (MiB): {}; overall peak at {:.1} s in pid {}",
        phases.join(", "),
        top.map_or(0.0, |s| s.at_s),
        top.map_or(0, |s| s.pid)
    )
}

/// Samples weft's memory every 200 ms until `stop_others` (skipping moments without a
/// process, such as a restart).
fn run_rss_sampler(run: &Run) {
    while !run.stop_others.load(Ordering::SeqCst) {
        let pid = run.target.pid.load(Ordering::SeqCst);
        if let Some((rss, anon, file)) = read_rss(pid) {
            let mut out = run.rss_samples.lock().unwrap_or_else(|e| e.into_inner());
            out.push(RssSample {
                at_s: run.elapsed_s(),
                phase: run.phase(),
                pid,
                rss,
                anon,
                file,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The metrics the drill follows.
/// What the drill calls a metric, and the name and labels it is exposed with.
type Watched = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const WATCHED_LABELLED: [Watched; 2] = [
    ("store_up_read", "weft_store_up", &[("op", "read")]),
    ("store_up_write", "weft_store_up", &[("op", "write")]),
];

const WATCHED: [&str; 12] = [
    "weft_released_chunks_total",
    "weft_local_objects",
    "weft_flush_backlog_bytes",
    "weft_flush_oldest_unflushed_seconds",
    "weft_store_uploads_total",
    "weft_store_retries_total",
    "weft_memory_chunk_bytes",
    "weft_spill_bytes",
    "weft_disk_bytes",
    "weft_query_partial_total",
    "weft_wal_bytes_total",
    "weft_samples_ingested_total",
];

#[derive(Debug, Clone)]
struct MetricsSample {
    at_s: f64,
    phase: Phase,
    values: HashMap<&'static str, f64>,
}

impl MetricsSample {
    fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

fn scrape(
    client: &reqwest::blocking::Client,
    target: &Target,
) -> Option<HashMap<&'static str, f64>> {
    let text = client
        .get(target.url("/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    Some(
        WATCHED
            .iter()
            .filter_map(|&m| Some((m, metric_value(&text, m, &[])?)))
            .chain(
                WATCHED_LABELLED
                    .iter()
                    .filter_map(|&(k, m, l)| Some((k, metric_value(&text, m, l)?))),
            )
            .collect(),
    )
}

/// Scrapes `/metrics` every 500 ms until `stop_others`.
fn run_metrics_sampler(run: &Run) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client");
    while !run.stop_others.load(Ordering::SeqCst) {
        // Not during a restart: the old process's last scrape and the new one's first would
        // otherwise interleave with the restart bookkeeping.
        if !run.target.restarting.load(Ordering::SeqCst) {
            if let Some(values) = scrape(&client, &run.target) {
                let sample = MetricsSample {
                    at_s: run.elapsed_s(),
                    phase: run.phase(),
                    values,
                };
                run.metric_samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(sample);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The latest scraped value of `name`, scraping now.
fn metric_now(target: &Target, name: &str) -> Option<f64> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client");
    scrape(&client, target)?.get(name).copied()
}

/// What the background threads of a run collected.
#[derive(Debug)]
struct Collected {
    queries: QueryStats,
    rss: Vec<RssSample>,
    metrics: Vec<MetricsSample>,
}

/// Runs the writers, the query loop and both samplers while `scenario` drives the phases.
/// When it returns, the writers stop (each ends its push in flight), then everything else.
/// Returns what the threads collected and what `scenario` returned.
fn with_load<T>(run: &Run, scenario: impl FnOnce(&Run) -> T) -> (Collected, T) {
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| scope.spawn(move || run_writer(run, w)))
            .collect();
        let queries = scope.spawn(|| run_queries(run));
        let rss = scope.spawn(|| run_rss_sampler(run));
        let metrics = scope.spawn(|| run_metrics_sampler(run));
        // A failing scenario must still stop the threads: the scope waits for them all
        // before it passes the panic on, and the writers would go on for ever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(run)));
        run.stop_writers.store(true, Ordering::SeqCst);
        let writers: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        run.stop_others.store(true, Ordering::SeqCst);
        let (queries, rss, metrics) = (queries.join(), rss.join(), metrics.join());
        let result = result.unwrap_or_else(|p| std::panic::resume_unwind(p));
        for w in writers {
            w.unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
        rss.unwrap_or_else(|p| std::panic::resume_unwind(p));
        metrics.unwrap_or_else(|p| std::panic::resume_unwind(p));
        let collected = Collected {
            queries: queries.unwrap_or_else(|p| std::panic::resume_unwind(p)),
            rss: run
                .rss_samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            metrics: run.metrics_so_far(),
        };
        (collected, result)
    })
}

/// Reads every series of every writer in both tenants over the whole run and compares it
/// with the model: STREAMED_XOR_CHUNKS for all, SAMPLES for writer 0, and the series API.
/// Every acked sample must be there bit-exact, nothing that was never sent, and no answer
/// may be partial.
/// For the first few missing samples: is the sample in some store object? (Tells a flush
/// that lost data from a read that missed it.)
fn explain_missing(bucket: &Bucket, tally: &Tally) {
    let mut wanted: Vec<(String, String, i64)> = Vec::new();
    for p in tally.problems.iter().take(8) {
        let (Some(sp), Some(tpos)) = (p.find(' '), p.find(": acked sample t=")) else {
            continue;
        };
        let tenant = p[..sp].to_string();
        let labels = p[sp + 1..tpos].to_string();
        let t: i64 = p[tpos + 17..]
            .split(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        wanted.push((tenant, labels, t));
    }
    let mut found = vec![Vec::new(); wanted.len()];
    for o in bucket.list(STORE_PREFIX) {
        let bytes = bucket.get(&o.key);
        let Ok(index) = weft::store::object::decode_object(&bytes) else {
            eprintln!("undecodable object {}", o.key);
            continue;
        };
        for s in &index.series {
            // The problems name series as the drill does, not in Prometheus's text form.
            let l = fmt_labels(
                &s.labels
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect(),
            );
            for (i, (tenant, labels, t)) in wanted.iter().enumerate() {
                if !o.key.contains(&format!("/{tenant}/")) || &l != labels {
                    continue;
                }
                for c in &s.chunks {
                    if c.min_t <= *t && *t <= c.max_t {
                        let data = &bytes[c.range().start as usize..c.range().end as usize];
                        let has = weft::chunk::XorIterator::new(data)
                            .map(|it| it.flatten().any(|(ts, _)| ts == *t))
                            .unwrap_or(false);
                        found[i].push(format!("{} [{}..{}] has={has}", o.key, c.min_t, c.max_t));
                    }
                }
            }
        }
    }
    for (w, f) in wanted.iter().zip(found) {
        eprintln!(
            "missing {} {} t={}: store chunks covering it: {:?}",
            w.0, w.1, w.2, f
        );
    }
}

fn verify_all(weft: &Weft, run: &Run, what: &str) -> Tally {
    let seed = run.model.seed;
    let range = (run.start_ms, i64::MAX);
    let mut tally = Tally::default();
    for (ti, tenant) in TENANTS.iter().enumerate() {
        for w in 0..WRITERS {
            let pushes = run.model.pushes(w);
            // A PromQL engine asks for a few series at a time: one read of all of a writer's
            // series over the whole run would not fit in the drill's 8 MiB memory limit
            // (and is refused with 503, as it should be).
            for first in (0..SERIES_PER_WRITER).step_by(VERIFY_SERIES_PER_READ) {
                let batch = first..(first + VERIFY_SERIES_PER_READ).min(SERIES_PER_WRITER);
                let q = query(range.0, range.1, writer_matchers(w, &batch));
                let (mut sets, resp) =
                    weft.read_chunks_resp(Some(tenant), std::slice::from_ref(&q));
                assert_eq!(
                    resp.header(PARTIAL_HEADER),
                    None,
                    "{what}: chunks read of {tenant} w{w} is partial"
                );
                let how = Check {
                    chunks: true,
                    complete: true,
                    exhaustive: true,
                };
                let set = sets.remove(0);
                check_answer(
                    seed,
                    ti,
                    w,
                    batch.clone(),
                    &pushes,
                    &set,
                    range,
                    how,
                    &mut tally,
                );
                if w == 0 {
                    let (mut sets, resp) = weft.read_samples_resp(Some(tenant), &[q]);
                    assert_eq!(
                        resp.header(PARTIAL_HEADER),
                        None,
                        "{what}: samples read of {tenant} w{w} is partial"
                    );
                    let how = Check {
                        chunks: false,
                        ..how
                    };
                    // Counted apart, so that the totals stay those of the chunk reads.
                    let mut t = Tally::default();
                    check_answer(
                        seed,
                        ti,
                        w,
                        batch.clone(),
                        &pushes,
                        &sets.remove(0),
                        range,
                        how,
                        &mut t,
                    );
                    tally.lost += t.lost;
                    for p in t.problems {
                        tally.problem(format!("SAMPLES: {p}"));
                    }
                }
            }
        }
        let (status, v) = weft.api_get(
            Some(tenant),
            "/api/v1/series",
            &[("match[]", "{__name__=\"outage_samples\"}")],
        );
        assert_eq!(status, 200, "{what}: series API of {tenant}: {v}");
        assert_eq!(
            api_warnings(&v),
            Vec::<String>::new(),
            "{what}: series API of {tenant} is partial"
        );
        let n = v["data"].as_array().map_or(0, Vec::len);
        assert_eq!(
            n,
            WRITERS * SERIES_PER_WRITER,
            "{what}: series API of {tenant}"
        );
    }
    tally
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The peak of a metric over the samples in `phases`.
fn peak(samples: &[MetricsSample], name: &str, phases: &[Phase]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| phases.contains(&s.phase))
        .filter_map(|s| s.get(name))
        .reduce(f64::max)
}

// ---- the tests ----

#[test]
fn fault_proxy_forwards_refuses_hangs_and_forwards_again() {
    fault_proxy_self_check();
}

/// The harness against the real moto: a client through the proxy succeeds, fails fast while
/// refusing, times out while moto is SIGSTOPped, and succeeds again; the direct view of the
/// bucket sees exactly the objects that were acknowledged.
#[test]
fn moto_behind_the_fault_proxy_fails_and_recovers_on_cue() {
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let proxy = FaultProxy::start(moto.port());
    let direct = Bucket::new(&moto, BUCKET);
    let timeout = Duration::from_secs(1);
    let via_proxy = Bucket::at(&proxy.endpoint(), BUCKET, timeout);
    let body = bytes::Bytes::from_static(b"0123456789");

    via_proxy
        .put("h/a", body.clone())
        .expect("put through a forwarding proxy");

    proxy.set_mode(ProxyMode::Refuse);
    let t = Instant::now();
    let refused = via_proxy.put("h/refused", body.clone());
    assert!(
        refused.is_err(),
        "put through a refusing proxy: {refused:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    proxy.set_mode(ProxyMode::Forward);
    via_proxy
        .put("h/b", body.clone())
        .expect("put after the return to Forward");

    moto.pause();
    let t = Instant::now();
    let hung = via_proxy.put("h/hung", body.clone());
    let waited = t.elapsed();
    assert!(hung.is_err(), "put to a stopped moto: {hung:?}");
    assert!(
        waited >= timeout,
        "a stopped moto failed fast ({waited:?}): {hung:?}"
    );
    proxy.set_mode(ProxyMode::Hang);
    let hung = via_proxy.put("h/hung-proxy", body.clone());
    assert!(hung.is_err(), "put through a hung proxy: {hung:?}");
    proxy.set_mode(ProxyMode::Forward);
    moto.resume();
    via_proxy
        .put("h/c", body.clone())
        .expect("put after SIGCONT");

    // The put to the stopped moto reached its socket buffer and lands once it runs again;
    // the one the hung proxy swallowed never does. That is why a flush whose upload timed
    // out may still have written its object.
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys: Vec<String> = direct.list("h").into_iter().map(|o| o.key).collect();
        if keys.len() >= 4 || Instant::now() > deadline {
            break keys;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(keys, ["h/a", "h/b", "h/c", "h/hung"]);
    assert_eq!(direct.totals("h"), (4, 40));
    assert_eq!(direct.get("h/b"), body);
}

/// The drill's load generator, model, query loop, samplers and restart against a weft
/// without a store (what the binary could do before issue 4): 16 s of load with a SIGKILL in
/// the middle, then a full read-back. Ignored: it checks the harness, not weft, and prints
/// the numbers the drill's budgets are based on (throughput, WAL bytes a sample, RSS).
#[test]
#[ignore]
fn load_model_and_samplers_against_a_plain_weft() {
    self_check();
    let seed = seed();
    let root = TempDir::new("weft-drill-plain");
    let data = root.path().join("data");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let segment = SEGMENT_SIZE_BYTES.to_string();
    let args = ["--wal.segment-size", segment.as_str()];
    let weft = Weft::start_with_env(Some(&data), &args, &[], Some(logs.join("start-0.log")));
    std::thread::sleep(Duration::from_millis(500));
    let baseline = read_rss(weft.pid()).expect("weft's RSS");
    let run = Run::new(seed, &weft);
    let mut restart_at = 0.0;
    let (collected, (weft, ready)) = with_load(&run, |run| {
        std::thread::sleep(Duration::from_secs(8));
        restart_at = run.elapsed_s();
        let r = run.restart(weft, libc::SIGKILL, &args, &[], logs.join("start-1.log"));
        std::thread::sleep(Duration::from_secs(8));
        r
    });
    let load_s = run.elapsed_s();
    let tally = verify_all(&weft, &run, "plain weft");
    let (acked, unacked) = run.model.totals();
    let before_restart = collected
        .metrics
        .iter()
        .rfind(|m| m.at_s < restart_at)
        .expect("a scrape before the restart");
    let wal_per_sample = before_restart.get("weft_wal_bytes_total").unwrap_or(0.0)
        / before_restart
            .get("weft_samples_ingested_total")
            .unwrap_or(1.0);
    let peak_rss = collected.rss.iter().map(|s| s.rss).max().unwrap_or(0);
    let peak_anon = collected.rss.iter().map(|s| s.anon).max().unwrap_or(0);
    let peak_file = collected.rss.iter().map(|s| s.file).max().unwrap_or(0);
    let q = &collected.queries;
    eprintln!(
        "PLAIN WEFT: seed={seed} samples acked={acked} unacked={unacked} ({:.0}/s) \
         read back={} (acked found {}) restart ready in {ready:?}\n  \
         WAL bytes per sample={wal_per_sample:.2}\n  \
         rss baseline={:.1} MiB (anon {:.1}, file {:.1}) peak={:.1} MiB (anon {:.1}, file {:.1}) \
         over {} samples; {}\n  \
         queries answered={} partial={} slowest={:?} samples checked={}\n  \
         writes: {:?}",
        acked as f64 / load_s,
        tally.read,
        tally.acked_found,
        mib(baseline.0),
        mib(baseline.1),
        mib(baseline.2),
        mib(peak_rss),
        mib(peak_anon),
        mib(peak_file),
        collected.rss.len(),
        rss_report(&collected.rss),
        q.answered,
        q.partial,
        q.slowest,
        q.samples_checked,
        run.writes,
    );
    tally.assert_clean("plain weft read-back");
    assert_eq!(tally.acked, acked, "every acked sample was compared");
    assert!(
        q.problems.is_empty(),
        "query loop problems:\n  {}",
        q.problems.join("\n  ")
    );
    assert!(q.answered > 20, "the query loop barely ran: {q:?}");
    assert_eq!(run.writes.status_429.load(Ordering::Relaxed), 0);
    assert_eq!(run.writes.status_other.load(Ordering::Relaxed), 0);
}

/// See the module docs.
#[test]
fn store_outage_keeps_every_acked_sample_and_every_query_answered() {
    self_check();
    let seed = seed();
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let proxy = FaultProxy::start(moto.port());
    let bucket = Bucket::new(&moto, BUCKET);
    let root = TempDir::new("weft-outage-drill");
    let data = root.path().join("data");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let disk_budget = disk_budget_bytes();
    let restart_signal = match std::env::var("WEFT_DRILL_RESTART").as_deref() {
        Ok("term") => libc::SIGTERM,
        _ => libc::SIGKILL,
    };
    let env = s3_env(&proxy.endpoint());
    let owned = weft_args("drill-1", disk_budget);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    eprintln!(
        "outage drill: {WRITERS} writers x {} tenants x {SERIES_PER_WRITER} series, a push \
         every {:?} per writer; memory budget {} MiB, disk budget {} MiB; \
         proxy :{} -> moto :{}; data in {}",
        TENANTS.len(),
        push_interval(),
        mib(MEMORY_BUDGET_BYTES),
        mib(disk_budget),
        proxy.port(),
        moto.port(),
        data.display()
    );
    let weft = Weft::start_with_env(Some(&data), &args, &env, Some(logs.join("start-0.log")));
    std::thread::sleep(Duration::from_millis(500));
    let baseline_rss = read_rss(weft.pid()).expect("weft's RSS").0;
    let run = Run::new(seed, &weft);

    /// What the scenario measured, for the summary.
    #[derive(Debug, Default)]
    struct Scenario {
        healthy_uploads: f64,
        healthy_objects: usize,
        released_before_outage: f64,
        local_objects_before_outage: f64,
        outage_start_s: f64,
        restart_ready: Duration,
        after_restart_push: u16,
        recover_start_s: f64,
        drain: Option<Duration>,
        drain_threshold_bytes: f64,
        writes_again: Option<Duration>,
    }

    let (collected, (weft, sc)) = with_load(&run, |run| {
        let mut sc = Scenario::default();
        let t = &run.target;

        // Phase 0: healthy. Flushes must reach the bucket.
        std::thread::sleep(HEALTHY_PHASE);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            sc.healthy_uploads = metric_now(t, "weft_store_uploads_total").unwrap_or(0.0);
            sc.healthy_objects = bucket.list(STORE_PREFIX).len();
            if (sc.healthy_uploads > 0.0 && sc.healthy_objects > 0) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(
            sc.healthy_uploads > 0.0 && sc.healthy_objects > 0,
            "healthy phase: no flush reached the store (uploads metric {}, {} objects)",
            sc.healthy_uploads,
            sc.healthy_objects
        );
        let healthy_backlog = peak(
            &run.metrics_so_far(),
            "weft_flush_backlog_bytes",
            &[Phase::Healthy],
        )
        .unwrap_or(0.0);
        // Flushed data has left memory: from now on only the local tier and the store have
        // it, and the queries over the whole run must still be complete.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            sc.released_before_outage = metric_now(t, "weft_released_chunks_total").unwrap_or(0.0);
            sc.local_objects_before_outage = metric_now(t, "weft_local_objects").unwrap_or(0.0);
            if (sc.released_before_outage > 0.0 && sc.local_objects_before_outage > 0.0)
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(
            sc.released_before_outage > 0.0 && sc.local_objects_before_outage > 0.0,
            "healthy phase: no flushed chunk left memory ({} released) or no local copy ({})",
            sc.released_before_outage,
            sc.local_objects_before_outage
        );

        // Phase 1: moto hangs for real; weft's connections through the proxy hang with it.
        sc.outage_start_s = run.elapsed_s();
        run.set_phase(Phase::Hang);
        moto.pause();
        std::thread::sleep(HANG_PHASE);

        // Phase 2: moto runs again but the proxy refuses every connection. Refuse first, so
        // that what moto answers to requests queued during the hang never reaches weft.
        run.set_phase(Phase::Refuse);
        proxy.set_mode(ProxyMode::Refuse);
        moto.resume();
        std::thread::sleep(RESTART_AFTER);
        let (weft, ready) =
            run.restart(weft, restart_signal, &args, &env, logs.join("start-1.log"));
        sc.restart_ready = ready;
        // Back and serving: a read answers (partial or not), a write is acked or refused
        // with 503 + Retry-After because the disk budget is still spent.
        let health = labels(&[("__name__", "outage_health")]);
        let req = weft::proto::prompb::WriteRequest {
            timeseries: vec![series_proto(&health, &[(now_ms(), 1f64.to_bits())])],
            metadata: vec![],
        };
        let r = weft.push("outage-health", &req);
        sc.after_restart_push = r.status;
        assert!(
            r.status == 204 || (r.status == 503 && r.header("retry-after").is_some()),
            "a push right after the restart: {} {}",
            r.status,
            r.text()
        );
        let (status, v) = weft.api_get(
            Some(TENANTS[0]),
            "/api/v1/series",
            &[("match[]", "{writer=\"w0\"}")],
        );
        assert_eq!(status, 200, "series API right after the restart: {v}");
        let in_refuse = RESTART_AFTER + ready;
        if in_refuse < REFUSE_PHASE {
            std::thread::sleep(REFUSE_PHASE - in_refuse);
        }

        // Phase 3: reads work, writes do not (the proxy answers every PUT 503 SlowDown).
        run.set_phase(Phase::GetOnly);
        proxy.set_mode(ProxyMode::ReadOnly);
        std::thread::sleep(GET_ONLY_PHASE);

        // Phase 4: the store is back. The backlog drains; writes are acked again.
        sc.recover_start_s = run.elapsed_s();
        run.set_phase(Phase::Recover);
        proxy.set_mode(ProxyMode::Forward);
        run.writes.acks_since_mark.store(0, Ordering::SeqCst);
        let recovered = Instant::now();
        // "Drained": back to what a healthy weft carries between two flush cycles under the
        // same load (closed chunks waiting for the next cycle), not to zero, since the writers
        // go on; the flush below then takes it to zero.
        sc.drain_threshold_bytes = (2.0 * healthy_backlog).max(f64::from(1u32 << 20));
        let deadline = recovered + DRAIN_DEADLINE;
        let writes_flow =
            || run.writes.acks_since_mark.load(Ordering::SeqCst) >= 2 * WRITERS as u64;
        while Instant::now() < deadline && (sc.drain.is_none() || sc.writes_again.is_none()) {
            if sc.writes_again.is_none() && writes_flow() {
                sc.writes_again = Some(recovered.elapsed());
            }
            if sc.drain.is_none() {
                let up = metric_now(t, "store_up_write");
                let backlog = metric_now(t, "weft_flush_backlog_bytes");
                if up == Some(1.0) && backlog.is_some_and(|b| b <= sc.drain_threshold_bytes) {
                    sc.drain = Some(recovered.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        (weft, sc)
    });
    run.set_phase(Phase::Done);

    // Everything in: the writers have stopped, so one flush takes the backlog to zero.
    let t_flush = Instant::now();
    let flush = weft.flush_wait("60s");
    let final_flush = t_flush.elapsed();
    assert_eq!(
        flush.status,
        200,
        "POST /ingester/flush?wait=true after the recovery: {}",
        flush.text()
    );
    let backlog_after_flush = weft.metric("weft_flush_backlog_bytes", &[]);
    let store_up_at_end = (
        weft.metric("weft_store_up", &[("op", "read")]),
        weft.metric("weft_store_up", &[("op", "write")]),
    );
    let uploads = weft.metric("weft_store_uploads_total", &[]).unwrap_or(0.0);
    let retries = weft.metric("weft_store_retries_total", &[]).unwrap_or(0.0);

    // The read-back: every acked sample, bit-exact, nothing never sent, not partial.
    let t_read = Instant::now();
    let tally = verify_all(&weft, &run, "after the recovery");
    let read_time = t_read.elapsed();
    if tally.lost > 0 {
        explain_missing(&bucket, &tally);
    }
    tally.assert_clean("read-back after the recovery");
    // The peak of the process that served the recovery and the final reads (the sampler
    // stopped with the load).
    let final_hwm = read_hwm(weft.pid()).unwrap_or(0);

    // Scale-down: the contract's shutdown, then a fresh weft on the same store only.
    let r = weft
        .try_post("/ingester/shutdown")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (200..300).contains(&r.status),
        "POST /ingester/shutdown: {} {}",
        r.status,
        r.text()
    );
    let mut weft = weft;
    let status = weft.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "weft after /ingester/shutdown: {status}");
    drop(weft);
    let (objects, object_bytes) = bucket.totals(STORE_PREFIX);
    let fresh_owned = weft_args("drill-fresh", disk_budget);
    let fresh_args: Vec<&str> = fresh_owned.iter().map(String::as_str).collect();
    let fresh = Weft::start_with_env(
        None,
        &fresh_args,
        &s3_env(&moto.endpoint()),
        Some(logs.join("fresh.log")),
    );
    let fresh_tally = verify_all(&fresh, &run, "fresh weft on the same store");
    fresh_tally.assert_clean("read-back by a fresh weft (empty data dir) from the store");
    drop(fresh);

    // ---- the summary ----
    let (acked, unacked) = run.model.totals();
    let w = &run.writes;
    let q = &collected.queries;
    let m = &collected.metrics;
    let outage = [Phase::Hang, Phase::Refuse, Phase::GetOnly];
    let peak_rss = collected
        .rss
        .iter()
        .map(|s| s.rss)
        .max()
        .unwrap_or(0)
        .max(final_hwm);
    let peak_anon = collected.rss.iter().map(|s| s.anon).max().unwrap_or(0);
    let peak_file = collected.rss.iter().map(|s| s.file).max().unwrap_or(0);
    // Issue 8: one limit for the whole process, plus the documented fixed overhead.
    let rss_bound = MEMORY_BUDGET_BYTES + RSS_OVERHEAD_BYTES;
    let peak_disk = peak(m, "weft_disk_bytes", &outage).unwrap_or(0.0);
    let healthy_disk = peak(m, "weft_disk_bytes", &[Phase::Healthy]).unwrap_or(0.0);
    let peak_memory = peak(m, "weft_memory_chunk_bytes", &outage).unwrap_or(0.0);
    let peak_spill = peak(m, "weft_spill_bytes", &outage).unwrap_or(0.0);
    let peak_backlog = peak(m, "weft_flush_backlog_bytes", &outage).unwrap_or(0.0);
    let oldest = peak(m, "weft_flush_oldest_unflushed_seconds", &outage).unwrap_or(0.0);
    let up_min = |key: &str, phases: &[Phase]| {
        m.iter()
            .filter(|s| phases.contains(&s.phase))
            .filter_map(|s| s.get(key))
            .reduce(f64::min)
    };
    let store_up_min = (
        up_min("store_up_read", &[Phase::Hang, Phase::Refuse]),
        up_min("store_up_write", &outage),
    );
    let read_up_get_only = m
        .iter()
        .rev()
        .filter(|s| s.phase == Phase::GetOnly)
        .find_map(|s| s.get("store_up_read"));
    let phase_table: Vec<String> = q
        .by_phase
        .iter()
        .map(|(p, pq)| {
            let n = pq.latencies.len();
            let peak = collected
                .rss
                .iter()
                .filter(|s| s.phase == *p)
                .map(|s| s.rss)
                .max()
                .unwrap_or(0);
            format!(
                "{:<8} queries {n:>4}, complete {:>5.1} %, p50 {:>7.1} ms, max {:>7.1} ms, \
                 peak RSS {:.1} MiB of {:.1} MiB",
                format!("{p:?}"),
                100.0 * pq.complete as f64 / n.max(1) as f64,
                pq.percentile(0.5).as_secs_f64() * 1e3,
                pq.percentile(1.0).as_secs_f64() * 1e3,
                mib(peak),
                mib(rss_bound)
            )
        })
        .collect();
    let n503 = w.status_503.load(Ordering::Relaxed);
    let first_503_s = w.first_503_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let last_503_s = w.last_503_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let examples = w.examples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!(
        "\n==== OUTAGE DRILL SUMMARY (seed {seed}) ====\n\
         load:      {WRITERS} writers x {} tenants x {SERIES_PER_WRITER} series, {:.1} s; \
         samples acked {acked}, unacked {unacked}; pushes acked {}, attempts {}\n\
         read back: {} samples ({} acked found, {} unacked found) in {read_time:?}; \
         fresh weft: {} ({} acked found)\n\
         writes:    503 {n503} (first at {first_503_s:.1} s, last at {last_503_s:.1} s; \
         outage began at {:.1} s, recovery at {:.1} s), 503 while restarting {}, \
         without Retry-After {}, 429 {}, other {}, 400 on retry {}, connection errors {}\n\
         queries:   {} answered ({} partial), during the outage {} ({} partial), \
         slowest {:?} (during the outage {:?}), samples checked {}; reasons {:?}\n\
         rss:       baseline {:.1} MiB, peak {:.1} MiB (anon {:.1}, file {:.1}), \
         bound {:.1} MiB = {:.0} MiB limit + {:.0} MiB fixed overhead; {}\n\
         disk:      budget {:.1} MiB, healthy peak {:.1} MiB, outage peak {:.1} MiB; \
         memory chunks peak {:.1} MiB, spill peak {:.1} MiB\n\
         store:     up min during outage {store_up_min:?}, at the end {store_up_at_end:?}; \
         backlog peak {:.1} MiB, oldest unflushed peak {oldest:.0} s; uploads {uploads}, \
         retries {retries}; {objects} objects, {:.1} MiB in the bucket\n\
         restart:   ready after {:?} (push right after: {})\n\
         per phase: (limit + 64 MiB = {:.1} MiB; final reads' peak {:.1} MiB)\n  {}\n\
         recovery:  drained to {:.1} MiB after {:?}; writes acked again after {:?}; \
         final flush {final_flush:?}, backlog after it {backlog_after_flush:?}\n\
         examples:  {examples:#?}\n\
         ====",
        TENANTS.len(),
        run.elapsed_s(),
        w.pushes_acked.load(Ordering::Relaxed),
        w.attempts.load(Ordering::Relaxed),
        tally.read,
        tally.acked_found,
        tally.unacked_found,
        fresh_tally.read,
        fresh_tally.acked_found,
        sc.outage_start_s,
        sc.recover_start_s,
        w.status_503_restarting.load(Ordering::Relaxed),
        w.status_503_without_retry_after.load(Ordering::Relaxed),
        w.status_429.load(Ordering::Relaxed),
        w.status_other.load(Ordering::Relaxed),
        w.status_400_on_retry.load(Ordering::Relaxed),
        w.connection_errors.load(Ordering::Relaxed),
        q.answered,
        q.partial,
        q.during_outage,
        q.partial_during_outage,
        q.slowest,
        q.slowest_during_outage,
        q.samples_checked,
        q.partial_reasons,
        mib(baseline_rss),
        mib(peak_rss),
        mib(peak_anon),
        mib(peak_file),
        mib(rss_bound),
        mib(MEMORY_BUDGET_BYTES),
        mib(RSS_OVERHEAD_BYTES),
        rss_report(&collected.rss),
        mib(disk_budget),
        healthy_disk / f64::from(1u32 << 20),
        peak_disk / f64::from(1u32 << 20),
        peak_memory / f64::from(1u32 << 20),
        peak_spill / f64::from(1u32 << 20),
        peak_backlog / f64::from(1u32 << 20),
        mib(object_bytes),
        sc.restart_ready,
        sc.after_restart_push,
        mib(rss_bound),
        mib(final_hwm),
        phase_table.join("\n  "),
        sc.drain_threshold_bytes / f64::from(1u32 << 20),
        sc.drain,
        sc.writes_again,
    );

    // ---- the assertions on it ----
    assert_eq!(tally.acked, acked, "every acked sample was compared");
    assert_eq!(tally.acked_found, acked, "every acked sample read back");
    assert_eq!(
        fresh_tally.acked_found, acked,
        "every acked sample in the store"
    );
    assert!(
        q.problems.is_empty(),
        "queries went wrong:\n  {}",
        q.problems.join("\n  ")
    );
    assert!(
        q.during_outage >= 10,
        "the query loop barely ran during the outage: {q:?}"
    );
    assert_eq!(
        q.partial, 0,
        "answers were partial though everything asked for is local"
    );
    for p in [Phase::Hang, Phase::Refuse, Phase::GetOnly] {
        assert!(
            q.by_phase.get(&p).is_some_and(|pq| pq.latencies.len() >= 5),
            "the query loop barely ran in phase {p:?}: {:?}",
            q.by_phase.get(&p).map(|pq| pq.latencies.len())
        );
    }
    assert_eq!(
        w.status_429.load(Ordering::Relaxed),
        0,
        "429 makes Prometheus drop data"
    );
    assert_eq!(
        w.status_other.load(Ordering::Relaxed),
        0,
        "statuses other than 2xx/503: {examples:#?}"
    );
    assert_eq!(
        w.status_503_without_retry_after.load(Ordering::Relaxed),
        0,
        "every 503 carries Retry-After"
    );
    assert!(
        first_503_s == 0.0 || first_503_s >= sc.outage_start_s,
        "pushes got 503 at {first_503_s:.1} s, before the outage began at {:.1} s (healthy \
         disk peak {:.1} MiB)",
        sc.outage_start_s,
        healthy_disk / f64::from(1u32 << 20)
    );
    assert_eq!(
        store_up_min,
        (Some(0.0), Some(0.0)),
        "weft_store_up{{op=read|write}} never went to 0 during the outage"
    );
    assert_eq!(
        read_up_get_only,
        Some(1.0),
        "reads work in the GET-only phase, and weft_store_up{{op=\"read\"}} must say so"
    );
    assert_eq!(
        store_up_at_end,
        (Some(1.0), Some(1.0)),
        "weft_store_up after the recovery"
    );
    assert!(
        sc.drain.is_some(),
        "the backlog did not drain within {DRAIN_DEADLINE:?} of the recovery"
    );
    assert!(
        sc.writes_again.is_some(),
        "pushes were not acknowledged again within {DRAIN_DEADLINE:?} of the recovery"
    );
    assert_eq!(
        backlog_after_flush,
        Some(0.0),
        "backlog after the final flush"
    );
    assert!(
        peak_rss <= rss_bound,
        "peak RSS {:.1} MiB is over --limits.memory-bytes + 64 MiB = {:.1} MiB",
        mib(peak_rss),
        mib(rss_bound)
    );
    assert!(
        peak_disk <= (disk_budget + SEGMENT_SIZE_BYTES + (8 << 20)) as f64,
        "weft_disk_bytes peaked at {:.1} MiB, more than one segment + 8 MiB over the budget",
        peak_disk / f64::from(1u32 << 20)
    );
    assert!(objects > 0);
}
