//! The kill -9 drill of issue 3: the real `weft` binary, concurrent writers, and `SIGKILL` at
//! seeded random moments while pushes are in flight, for at least 20 cycles on one data
//! directory. The contract checked: every sample whose push got 204 reads back bit-exact after
//! any number of crashes, and nothing reads back that was never sent.
//!
//! Knobs: `WEFT_TEST_SEED` repeats a run; `WEFT_DRILL_CYCLES` sets the number of cycles
//! (default 20, and never fewer than 20 when `CI=true`); `WEFT_TEST_LOG=1` echoes the server's
//! log. Each start's log is kept in `<temp>/logs/` next to the data directory, and the whole
//! directory is kept when the test fails.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::workload::{mix, Workload};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft::proto::prompb::MatcherType;

/// Concurrent writer threads. Each owns its series: no two writers touch the same one.
const WRITERS: usize = 4;
/// Every writer writes `SERIES_PER_WRITER` series in each of these tenants.
const TENANTS: [&str; 2] = ["drill-a", "drill-b"];
const SERIES_PER_WRITER: usize = 50;
/// The drill's series and values (shared code in `tests/common/workload.rs`).
const WORKLOAD: Workload = Workload {
    metric: "drill_samples",
    job: "kill9-drill",
    series_per_writer: SERIES_PER_WRITER,
    arbitrary_percent: 20,
};
/// Samples per series in one push are drawn from this range.
const MAX_SAMPLES_PER_SERIES_PER_PUSH: usize = 8;
/// The first timestamp. Fixed, so that a seed reproduces the same data.
const T0_MS: i64 = 1_700_000_000_000;
/// The usual scrape interval; some deltas are irregular on purpose (see `next_timestamp`).
const STEP_MS: i64 = 15_000;

/// Small segments and an early size trigger, so that rotation and checkpoints happen during
/// the drill rather than only at 64 MiB and 1 GiB.
const SEGMENT_SIZE_BYTES: u64 = 1 << 20;
const CHECKPOINT_BYTES: u64 = 512 << 10;
const CHECKPOINT_INTERVAL: &str = "2s";

/// Default and CI-minimum number of cycles.
const MIN_CYCLES: usize = 20;
/// The range of the seeded delay between "ready" and the kill.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 50..=1500;
/// About one cycle in this many ends with a graceful SIGTERM (shutdown checkpoint) instead.
const GRACEFUL_ONE_IN: u32 = 5;
/// weft's checkpoint schedule wakes every 10 s (`CheckpointPolicy::poll` in `main.rs`), so a
/// scheduled checkpoint needs a process that lives longer than that. One seeded cycle is this
/// long. From `LONG_CYCLE_WATCH_FROM` on it watches the WAL directory and kills weft as soon as
/// a `checkpoint.N.tmp` appears, that is, in the middle of writing the checkpoint; if it never
/// sees one, the kill comes at the seeded delay.
const LONG_CYCLE_DELAY_MS: std::ops::RangeInclusive<u64> = 10_300..=12_000;
const LONG_CYCLE_WATCH_FROM: Duration = Duration::from_secs(9);
/// How long a SIGTERM'd server may take to write its checkpoint and exit.
const GRACEFUL_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Writers use their own client: short connect timeout, and a request timeout that still
/// leaves a debug build time to msync.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// One push as the writer sent it: all `SERIES_PER_WRITER` series of (`writer`, `tenant`) at
/// the same timestamps `ts`, values from [`Workload::value_bits`].
#[derive(Debug, Clone)]
struct Push {
    cycle: usize,
    writer: usize,
    tenant: usize,
    ts: Vec<i64>,
    acked: bool,
}

/// How a cycle ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Term,
}

/// The next timestamp after `prev`: mostly one regular step, sometimes an irregular gap.
fn next_timestamp(rng: &mut StdRng, prev: i64) -> i64 {
    if rng.random_ratio(7, 10) {
        prev + STEP_MS
    } else {
        prev + rng.random_range(1..=4 * STEP_MS)
    }
}

/// What a writer thread did in one cycle.
#[derive(Debug, Default)]
struct WriterReport {
    pushes: Vec<Push>,
    /// Answers other than 204 (the push counts as unacknowledged), for the report.
    refusals: Vec<String>,
}

/// Pushes to its own series, alternating tenants, until `stop` is set or a push fails to get
/// an answer (the server is gone). Timestamps start at `start_ms` for both tenants.
fn run_writer(
    weft: &Weft,
    seed: u64,
    cycle: usize,
    writer: usize,
    start_ms: i64,
    stop: &AtomicBool,
) -> WriterReport {
    let client = reqwest::blocking::Client::builder()
        .timeout(PUSH_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client");
    let mut rng = StdRng::seed_from_u64(mix(seed ^ mix(((cycle as u64) << 8) | writer as u64)));
    let mut next = [start_ms; TENANTS.len()];
    let mut report = WriterReport::default();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let tenant = n % TENANTS.len();
        let count = rng.random_range(1..=MAX_SAMPLES_PER_SERIES_PER_PUSH);
        let mut ts = Vec::with_capacity(count);
        let mut t = next[tenant];
        for _ in 0..count {
            ts.push(t);
            t = next_timestamp(&mut rng, t);
        }
        // Later pushes continue after this one whether or not it is acknowledged: nothing is
        // retried, exactly as the contract allows.
        next[tenant] = t;
        let body = WORKLOAD.encode_push(seed, writer, tenant, &ts);
        let outcome = weft.try_push_body(&client, TENANTS[tenant], body);
        let acked = matches!(outcome, Ok((204, _)));
        report.pushes.push(Push {
            cycle,
            writer,
            tenant,
            ts,
            acked,
        });
        match outcome {
            Ok((204, _)) => {}
            Ok((status, text)) => report.refusals.push(format!(
                "cycle {cycle} writer {writer}: status {status}: {}",
                text.trim()
            )),
            // The server was killed (or is shutting down): stop for this cycle.
            Err(_) => break,
        }
    }
    report
}

/// Totals of one verification.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    acked_found: u64,
    unacked_attempted: u64,
    unacked_found: u64,
    lost: Vec<String>,
    lost_count: u64,
    problems: Vec<String>,
}

/// Reads every drill series from `from_ms` on and checks it against the pushes whose first
/// timestamp is at or after `from_ms`: every acknowledged sample must be there bit-exact, and
/// every sample there must have been sent (acknowledged or not) with that exact value.
fn verify(weft: &Weft, seed: u64, pushes: &[Push], from_ms: i64, chunks: bool) -> Tally {
    let mut tally = Tally::default();
    for (ti, tenant) in TENANTS.iter().enumerate() {
        let q = query(
            from_ms,
            i64::MAX,
            vec![matcher(MatcherType::Eq, "__name__", "drill_samples")],
        );
        let set = if chunks {
            weft.read_chunks(Some(tenant), &[q])
        } else {
            weft.read_samples(Some(tenant), &[q])
        }
        .remove(0);
        let mut by_labels: std::collections::HashMap<Labels, Samples> = set.into_iter().collect();
        for w in 0..WRITERS {
            let mine: Vec<&Push> = pushes
                .iter()
                .filter(|p| p.writer == w && p.tenant == ti && p.ts[0] >= from_ms)
                .collect();
            for s in 0..SERIES_PER_WRITER {
                let labels = WORKLOAD.series_labels(w, s);
                let got = by_labels.remove(&labels).unwrap_or_default();
                check_series(seed, tenant, &labels, &mine, s, &got, chunks, &mut tally);
            }
        }
        for (labels, samples) in by_labels {
            tally.problems.push(format!(
                "tenant {tenant}: series {} with {} samples was never written",
                fmt_labels(&labels),
                samples.len()
            ));
        }
    }
    tally
}

/// Walks one series' pushes (in time order) and what was read back side by side. In SAMPLES
/// mode (`chunks` false) a -0.0 may come back as +0.0: the server's proto3 encoder leaves out a
/// value equal to 0.0, as Prometheus's does (see `negative_zero_sent_explicitly_survives_in_chunks`
/// in `remote_write_read.rs`). Chunks carry the bits, so there everything must be exact.
#[allow(clippy::too_many_arguments)]
fn check_series(
    seed: u64,
    tenant: &str,
    labels: &Labels,
    pushes: &[&Push],
    series: usize,
    got: &Samples,
    chunks: bool,
    tally: &mut Tally,
) {
    let neg_zero = (-0.0f64).to_bits();
    let mut cursor = got.iter().peekable();
    for p in pushes {
        for &t in &p.ts {
            let want = WORKLOAD.value_bits(seed, p.writer, p.tenant, series, t);
            if p.acked {
                tally.acked += 1;
            } else {
                tally.unacked_attempted += 1;
            }
            // Anything read back before `t` was never sent.
            while let Some(&&(gt, gv)) = cursor.peek() {
                if gt >= t {
                    break;
                }
                tally.problems.push(format!(
                    "tenant {tenant} {}: invented sample t={gt} bits={gv:#018x}",
                    fmt_labels(labels)
                ));
                cursor.next();
            }
            match cursor.peek() {
                Some(&&(gt, gv)) if gt == t => {
                    cursor.next();
                    let proto3_zero = !chunks && want == neg_zero && gv == 0;
                    if gv != want && !proto3_zero {
                        tally.problems.push(format!(
                            "tenant {tenant} {}: t={t} reads back bits={gv:#018x}, sent {want:#018x} (cycle {}, {})",
                            fmt_labels(labels),
                            p.cycle,
                            if p.acked { "acked" } else { "unacked" }
                        ));
                    } else if p.acked {
                        tally.acked_found += 1;
                    } else {
                        tally.unacked_found += 1;
                    }
                }
                _ if p.acked => {
                    tally.lost_count += 1;
                    if tally.lost.len() < 20 {
                        tally.lost.push(format!(
                            "tenant {tenant} {}: acked sample t={t} bits={want:#018x} of cycle {} is missing",
                            fmt_labels(labels),
                            p.cycle
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    for &(gt, gv) in cursor {
        tally.problems.push(format!(
            "tenant {tenant} {}: invented sample t={gt} bits={gv:#018x} after the last push",
            fmt_labels(labels)
        ));
    }
}

/// Fails the test with everything that went wrong in `tally`.
fn assert_clean(tally: &Tally, what: &str) {
    if tally.lost_count == 0 && tally.problems.is_empty() {
        return;
    }
    let mut msg = format!(
        "{what}: {} acknowledged samples lost, {} other problems\n",
        tally.lost_count,
        tally.problems.len()
    );
    for l in tally.lost.iter().chain(tally.problems.iter().take(20)) {
        msg.push_str("  ");
        msg.push_str(l);
        msg.push('\n');
    }
    panic!("{msg}");
}

/// The WAL directory's files, summarized: segments, checkpoints, and anything else by name.
fn wal_listing(dir: &std::path::Path) -> String {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => return format!("(cannot list {}: {e})", dir.display()),
    };
    names.sort();
    let segments = names
        .iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .count();
    let checkpoints: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("checkpoint.") && !n.ends_with(".tmp"))
        .collect();
    let other: Vec<&String> = names
        .iter()
        .filter(|n| !n.bytes().all(|b| b.is_ascii_digit()) && !checkpoints.contains(n))
        .collect();
    format!("{segments} segments, checkpoints {checkpoints:?}, other {other:?}")
}

/// Sleeps until `LONG_CYCLE_WATCH_FROM`, then returns as soon as a `checkpoint.*.tmp` shows
/// up in `wal_dir` (its name) or `deadline` has passed since the call (None).
fn kill_during_checkpoint(wal_dir: &std::path::Path, deadline: Duration) -> Option<String> {
    let start = Instant::now();
    std::thread::sleep(LONG_CYCLE_WATCH_FROM.min(deadline));
    while start.elapsed() < deadline {
        if let Ok(rd) = std::fs::read_dir(wal_dir) {
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("checkpoint.") && name.ends_with(".tmp") {
                    return Some(name);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn count_lines(log: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

fn find_line(log: &std::path::Path, needle: &str) -> Option<String> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .find(|l| l.contains(needle))
        .map(|l| l.to_string())
}

/// Reads `key=value` out of a tracing log line.
fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or("?")
        .to_string()
}

fn cycles_from_env() -> usize {
    let n = match std::env::var("WEFT_DRILL_CYCLES") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("WEFT_DRILL_CYCLES={s:?} is not a number: {e}")),
        Err(_) => MIN_CYCLES,
    };
    if in_ci() && n < MIN_CYCLES {
        eprintln!("WEFT_DRILL_CYCLES={n} raised to {MIN_CYCLES} because CI=true");
        return MIN_CYCLES;
    }
    n.max(1)
}

#[test]
fn every_acked_sample_survives_kill_9_cycles_bit_exact() {
    self_check();
    let seed = seed();
    let cycles = cycles_from_env();
    let mut rng = StdRng::seed_from_u64(seed);
    let root = TempDir::new("weft-kill9-drill");
    let data = root.path().join("data");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&data).expect("create data dir");
    std::fs::create_dir_all(&logs).expect("create log dir");
    let wal_dir = data.join("wal");
    let segment_size = SEGMENT_SIZE_BYTES.to_string();
    let checkpoint_bytes = CHECKPOINT_BYTES.to_string();
    let args = [
        "--wal.sync",
        "always",
        "--wal.segment-size",
        segment_size.as_str(),
        "--wal.checkpoint-interval",
        CHECKPOINT_INTERVAL,
        "--wal.checkpoint-bytes",
        checkpoint_bytes.as_str(),
    ];
    // The long cycle is never the first (there is nothing to checkpoint yet) and ends in a
    // kill, so that the kill can hit a running checkpoint.
    let long_cycle = if cycles > 2 {
        Some(rng.random_range(1..cycles - 1))
    } else {
        None
    };
    eprintln!(
        "kill -9 drill: {cycles} cycles, {WRITERS} writers x {} tenants x {SERIES_PER_WRITER} series, \
         segment {SEGMENT_SIZE_BYTES} B, checkpoint every {CHECKPOINT_INTERVAL} or {CHECKPOINT_BYTES} B, \
         long cycle {long_cycle:?}; data in {}",
        TENANTS.len(),
        data.display()
    );

    let started = Instant::now();
    let mut pushes: Vec<Push> = Vec::new();
    let mut next_start_ms = T0_MS;
    let mut cycle_starts = Vec::with_capacity(cycles);
    let (mut kills, mut terms, mut refusal_count) = (0, 0, 0);
    let mut scheduled_checkpoints = 0;
    let mut killed_mid_checkpoint = 0;
    let mut replay_ms_max = 0u64;
    for cycle in 0..cycles {
        let log = logs.join(format!("cycle-{cycle:02}.log"));
        let t_spawn = Instant::now();
        let mut weft = Weft::start_on(&data, &args, Some(log.clone()));
        let ready_ms = t_spawn.elapsed().as_millis() as u64;
        replay_ms_max = replay_ms_max.max(ready_ms);
        let replay = find_line(&log, "WAL replay done; ready").unwrap_or_default();

        // What the previous cycle acknowledged must be back before anything new is written.
        if cycle > 0 {
            let from = cycle_starts[cycle - 1];
            let tally = verify(&weft, seed, &pushes, from, false);
            assert_clean(
                &tally,
                &format!("after restart {cycle}, cycle {}'s data", cycle - 1),
            );
        }

        let stop_kind = if Some(cycle) != long_cycle && rng.random_ratio(1, GRACEFUL_ONE_IN) {
            Stop::Term
        } else {
            Stop::Kill
        };
        let delay_ms = if Some(cycle) == long_cycle {
            rng.random_range(LONG_CYCLE_DELAY_MS)
        } else {
            rng.random_range(KILL_DELAY_MS)
        };
        cycle_starts.push(next_start_ms);
        let start_ms = next_start_ms;
        let stop = AtomicBool::new(false);
        let mut caught_tmp = None;
        let reports: Vec<WriterReport> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (weft, stop) = (&weft, &stop);
                    scope.spawn(move || run_writer(weft, seed, cycle, w, start_ms, stop))
                })
                .collect();
            if Some(cycle) == long_cycle {
                caught_tmp = kill_during_checkpoint(&wal_dir, Duration::from_millis(delay_ms));
            } else {
                std::thread::sleep(Duration::from_millis(delay_ms));
            }
            weft.signal(match stop_kind {
                Stop::Kill => libc::SIGKILL,
                Stop::Term => libc::SIGTERM,
            });
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().expect("writer thread panicked"))
                .collect()
        });
        let status = weft.wait_exit(GRACEFUL_EXIT_TIMEOUT);
        match stop_kind {
            Stop::Kill => {
                kills += 1;
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "cycle {cycle}: weft should have died of SIGKILL, but ended with {status}"
                );
            }
            Stop::Term => {
                terms += 1;
                assert!(
                    status.success(),
                    "cycle {cycle}: graceful stop ended with {status}\n{}",
                    weft.log_tail()
                );
            }
        }
        drop(weft);
        // The drain thread writes the log file until EOF, which comes right after the exit.
        std::thread::sleep(Duration::from_millis(50));
        if stop_kind == Stop::Term {
            assert_eq!(
                count_lines(&log, "shutdown checkpoint written"),
                1,
                "cycle {cycle}: graceful stop wrote no shutdown checkpoint; see {}",
                log.display()
            );
        }
        let scheduled = count_lines(&log, "scheduled checkpoint done");
        scheduled_checkpoints += scheduled;

        let mut acked = 0u64;
        let mut unacked = 0u64;
        let mut refusals = Vec::new();
        for r in reports {
            for p in &r.pushes {
                let n = (p.ts.len() * SERIES_PER_WRITER) as u64;
                if p.acked {
                    acked += n;
                } else {
                    unacked += n;
                }
            }
            next_start_ms = next_start_ms.max(
                r.pushes
                    .iter()
                    .map(|p| p.ts[p.ts.len() - 1])
                    .max()
                    .unwrap_or(0)
                    + STEP_MS,
            );
            pushes.extend(r.pushes);
            refusals.extend(r.refusals);
        }
        refusal_count += refusals.len();
        eprintln!(
            "cycle {cycle:2}: ready in {ready_ms:5} ms (replayed samples={} segments={} checkpoint_series={}); \
             {:?} after {delay_ms:5} ms; samples acked {acked:6}, unacked {unacked:5}; \
             {scheduled} scheduled checkpoints; refusals {}; wal: {}",
            field(&replay, "samples"),
            field(&replay, "segments"),
            field(&replay, "checkpoint_series"),
            stop_kind,
            refusals.len(),
            wal_listing(&wal_dir)
        );
        if let Some(tmp) = &caught_tmp {
            eprintln!("  killed while {tmp} was being written");
            killed_mid_checkpoint += 1;
        }
        for r in refusals.iter().take(3) {
            eprintln!("  refusal: {r}");
        }
    }

    // The last start: everything ever acknowledged, read back in STREAMED_XOR_CHUNKS mode.
    let log = logs.join("final.log");
    let t_spawn = Instant::now();
    let weft = Weft::start_on(&data, &args, Some(log.clone()));
    let ready_ms = t_spawn.elapsed().as_millis();
    let t_read = Instant::now();
    let last = cycle_starts[cycles - 1];
    let tally_last = verify(&weft, seed, &pushes, last, false);
    assert_clean(
        &tally_last,
        &format!("final start, cycle {}'s data", cycles - 1),
    );
    let tally = verify(&weft, seed, &pushes, T0_MS, true);
    let read_ms = t_read.elapsed().as_millis();
    eprintln!(
        "final start: ready in {ready_ms} ms ({}); read back in {read_ms} ms",
        find_line(&log, "WAL replay done; ready").unwrap_or_default()
    );
    eprintln!(
        "DRILL TOTALS: seed={seed} cycles={cycles} (kill -9: {kills}, SIGTERM: {terms}) \
         pushes={} acked_samples={} acked_found={} unacked_attempted={} unacked_recovered={} \
         lost={} refusals={refusal_count} scheduled_checkpoints={scheduled_checkpoints} \
         killed_mid_checkpoint={killed_mid_checkpoint} \
         slowest_restart_ms={replay_ms_max} elapsed_s={:.1}",
        pushes.len(),
        tally.acked,
        tally.acked_found,
        tally.unacked_attempted,
        tally.unacked_found,
        tally.lost_count,
        started.elapsed().as_secs_f64()
    );
    assert_clean(&tally, "final read-back of all cycles");
    assert_eq!(tally.acked, tally.acked_found);
    assert!(
        tally.acked > 0,
        "no push was ever acknowledged: the drill tested nothing"
    );
    assert_eq!(
        refusal_count, 0,
        "pushes were refused with a status other than 204 (see the refusal lines above)"
    );
}
