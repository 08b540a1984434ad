//! The WAL corruption table of issue 9, against the real `weft` binary: damage planted in the
//! files of a stopped weft, then a start. With the default `--wal.on-corruption=repair` weft
//! must start (`/ready` 200), read back exactly every sample that was not damaged, keep the
//! evidence (`*.broken`), count the damage in `/metrics`, take new pushes, and start again.
//! With `--wal.on-corruption=stop` it must exit non-zero with a message naming the damage,
//! changing nothing.
//!
//! | case | damage | lost |
//! |---|---|---|
//! | flipped byte | one byte of a `Samples` record in the middle of a segment | that record |
//! | zeroed page | 4 KiB of zeros in the middle of a segment | the records it touches |
//! | damaged series record | one byte of a `Series` record | every sample of that series |
//! | corrupt checkpoint | both checkpoints, the older one's header, one entry of the newer | that entry's series |
//!
//! What is expected is computed from the files themselves: every frame whose bytes are
//! unchanged, in WAL order, minus the samples of series whose `Series` record is not among
//! them. `WEFT_TEST_LOG=1` echoes the servers' logs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use weft::proto::prompb::{MatcherType, WriteRequest};
use weft::wal::checkpoint::{decode_series, CHECKPOINT_HEADER_BYTES, MAX_ENTRY_BYTES};
use weft::wal::record::{decode, read_frame, Record, FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES};

const TENANT: &str = "wal-corruption";
const METRIC: &str = "wal_corruption_samples";
const SERIES: usize = 40;
const PUSHES: usize = 12;
const SAMPLES_PER_PUSH: usize = 10;
const STEP_MS: i64 = 100;
/// 1 MiB segments (everything lands in the first one) and no flush during the test (the
/// flusher's first cycle runs at start: no chunk may be old or idle enough for it), so what
/// is read back comes from the WAL and checkpoints alone.
const ARGS: &[&str] = &[
    "--wal.segment-size",
    "1048576",
    "--flush.period",
    "1h",
    "--flush.max-chunk-age",
    "10h",
    "--flush.max-chunk-idle",
    "10h",
];
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Series label value → samples `(t, bits)`.
type Data = BTreeMap<String, Samples>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    FlippedByte,
    ZeroedPage,
    DamagedSeriesRecord,
    CorruptCheckpoint,
}

fn series_labels(i: usize) -> Labels {
    labels(&[("__name__", METRIC), ("series", &format!("s{i:03}"))])
}

fn series_value(labels: &Labels) -> String {
    labels
        .iter()
        .find(|(n, _)| n == "series")
        .map(|(_, v)| v.clone())
        .expect("series label")
}

/// Pushes `pushes` of every series; returns what was pushed.
fn push(w: &Weft, t0: i64, pushes: std::ops::Range<usize>, data: &mut Data) {
    for p in pushes {
        let mut req = WriteRequest {
            timeseries: Vec::new(),
            metadata: Vec::new(),
        };
        for i in 0..SERIES {
            let samples: Samples = (0..SAMPLES_PER_PUSH)
                .map(|k| {
                    let n = p * SAMPLES_PER_PUSH + k;
                    (
                        t0 + n as i64 * STEP_MS,
                        ((i * 100_000 + n) as f64).to_bits(),
                    )
                })
                .collect();
            let l = series_labels(i);
            data.entry(series_value(&l))
                .or_default()
                .extend(samples.iter().copied());
            req.timeseries.push(series_proto(&l, &samples));
        }
        w.push_ok(TENANT, &req);
    }
}

fn read_back(w: &Weft, t0: i64) -> Data {
    let q = query(
        t0 - 1,
        t0 + 10 * (PUSHES * SAMPLES_PER_PUSH) as i64 * STEP_MS,
        vec![matcher(MatcherType::Eq, "__name__", METRIC)],
    );
    let mut out = Data::new();
    for set in w.read_samples(Some(TENANT), &[q]) {
        for (l, s) in set {
            if !s.is_empty() {
                out.entry(series_value(&l)).or_default().extend(s);
            }
        }
    }
    out
}

fn wal_dir(data: &Path) -> PathBuf {
    data.join("wal")
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn segments(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

fn checkpoints(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|n| n.starts_with("checkpoint.") && !n.contains(".broken") && !n.ends_with(".tmp"))
        .collect()
}

/// Offsets and lengths of the valid frames at the start of a segment image.
fn frames(img: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Ok(Some(f)) = read_frame(&img[off..], MAX_PAYLOAD_BYTES) {
        out.push((off, f.len));
        off += f.len;
    }
    out
}

/// What replay must give back: every frame of `before` whose bytes are unchanged in the files
/// now, in WAL order, minus samples of refs whose `Series` record is not among them.
fn expected_from_segments(wal: &Path, before: &[(String, Vec<u8>)], t0: i64) -> Data {
    let mut refs: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = Data::new();
    for (name, img) in before {
        let now = std::fs::read(wal.join(name)).unwrap();
        for (off, len) in frames(img) {
            if now[off..off + len] != img[off..off + len] {
                continue;
            }
            match decode(&img[off..]).unwrap().unwrap().0 {
                Record::Series {
                    series_ref, labels, ..
                } => {
                    let v = labels
                        .iter()
                        .find(|(n, _)| n == "series")
                        .map(|(_, v)| v.to_string())
                        .unwrap();
                    refs.insert(series_ref, v);
                }
                Record::Samples(s) => {
                    for x in s.iter() {
                        if let Some(v) = refs.get(&x.series_ref) {
                            out.entry(v.clone()).or_default().push((x.t, x.v));
                        }
                    }
                }
                Record::FlushMark { .. } => {}
                Record::Histograms(_) | Record::FloatHistograms(_) => {}
                Record::Exemplars { .. } | Record::Metadata { .. } => {}
            }
        }
    }
    for s in out.values_mut() {
        s.retain(|&(t, _)| t >= t0);
    }
    out
}

/// Plants the damage of `case` in the WAL of a stopped weft; returns the evidence file that
/// must appear and what must read back.
fn damage(case: Case, wal: &Path, pushed: &Data, t0: i64) -> (String, Data) {
    if case == Case::CorruptCheckpoint {
        let cps = checkpoints(wal);
        assert_eq!(cps.len(), 2, "two shutdown checkpoints: {:?}", files(wal));
        assert!(
            !segments(wal).contains(&"00000000".to_owned()),
            "{:?}",
            files(wal)
        );
        // The older one: a bad header. The newer one: one flipped byte inside an entry.
        let mut c1 = std::fs::read(wal.join(&cps[0])).unwrap();
        c1[3] ^= 0xff;
        std::fs::write(wal.join(&cps[0]), c1).unwrap();
        let mut c2 = std::fs::read(wal.join(&cps[1])).unwrap();
        let mut off = CHECKPOINT_HEADER_BYTES;
        for _ in 0..SERIES / 2 {
            off += read_frame(&c2[off..], MAX_ENTRY_BYTES)
                .unwrap()
                .unwrap()
                .len;
        }
        let f = read_frame(&c2[off..], MAX_ENTRY_BYTES).unwrap().unwrap();
        let lost = series_value(&decode_series(f.payload).unwrap().labels);
        let mid = off + FRAME_HEADER_BYTES + f.len / 2;
        c2[mid] ^= 0x10;
        std::fs::write(wal.join(&cps[1]), c2).unwrap();
        let mut want = pushed.clone();
        want.remove(&lost);
        return (format!("{}.broken", cps[1]), want);
    }
    let segs = segments(wal);
    let before: Vec<(String, Vec<u8>)> = segs
        .iter()
        .map(|n| (n.clone(), std::fs::read(wal.join(n)).unwrap()))
        .collect();
    let (name, img) = &before[0];
    let fr = frames(img);
    let end = fr.last().map(|&(o, l)| o + l).unwrap();
    let mut bad = img.clone();
    match case {
        Case::FlippedByte => {
            // A Samples record in the middle: its last byte is a value byte.
            let samples: Vec<(usize, usize)> = fr
                .iter()
                .copied()
                .filter(|&(o, _)| {
                    matches!(decode(&img[o..]).unwrap().unwrap().0, Record::Samples(_))
                })
                .collect();
            let (o, l) = samples[samples.len() / 2];
            bad[o + l - 1] ^= 0x01;
        }
        Case::ZeroedPage => {
            let page = (end / 2) & !4095;
            assert!(page > 0 && page + 4096 < end, "segment too small: {end}");
            bad[page..page + 4096].fill(0);
        }
        Case::DamagedSeriesRecord => {
            let (o, l) = fr
                .iter()
                .copied()
                .filter(|&(o, _)| {
                    matches!(decode(&img[o..]).unwrap().unwrap().0, Record::Series { .. })
                })
                .nth(SERIES / 2)
                .unwrap();
            // The last byte of its label value.
            bad[o + l - 1] ^= 0x01;
        }
        Case::CorruptCheckpoint => unreachable!(),
    }
    std::fs::write(wal.join(name), &bad).unwrap();
    let want = expected_from_segments(wal, &before, t0);
    assert_ne!(&want, pushed, "the damage must cost something");
    (format!("{name}.broken"), want)
}

/// Runs `weft serve` with `--wal.on-corruption=stop` (or, with `via_env`, with
/// `WEFT_WAL_ON_CORRUPTION=stop`) on `data` and returns its exit status and log.
fn run_stop(data: &Path, log: &Path, via_env: bool) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(ARGS);
    if via_env {
        cmd.env("WEFT_WAL_ON_CORRUPTION", "stop");
    } else {
        cmd.arg("--wal.on-corruption=stop");
    }
    let mut child = cmd
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start weft");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "weft with --wal.on-corruption=stop did not exit:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

fn stop(mut w: Weft, signal: i32) {
    w.signal(signal);
    let status = w.wait_exit(EXIT_TIMEOUT);
    if signal == libc::SIGTERM {
        assert!(
            status.success(),
            "graceful stop failed: {status}\n{}",
            w.log_tail()
        );
    }
}

fn run(case: Case) {
    let tmp = TempDir::new("weft-wal-corruption");
    let data = tmp.path().join("data");
    let wal = wal_dir(&data);
    let t0 = now_ms() - 60_000;
    let mut pushed = Data::new();

    // Write, and stop so that the data is where the case needs it: in the segments after a
    // kill -9, in two shutdown checkpoints (and no segment 0) after two SIGTERMs.
    if case == Case::CorruptCheckpoint {
        let w = Weft::start_on(&data, ARGS, None);
        push(&w, t0, 0..PUSHES / 2, &mut pushed);
        stop(w, libc::SIGTERM);
        let w = Weft::start_on(&data, ARGS, None);
        push(&w, t0, PUSHES / 2..PUSHES, &mut pushed);
        assert_eq!(read_back(&w, t0), pushed);
        stop(w, libc::SIGTERM);
    } else {
        let w = Weft::start_on(&data, ARGS, None);
        push(&w, t0, 0..PUSHES, &mut pushed);
        assert_eq!(read_back(&w, t0), pushed);
        stop(w, libc::SIGKILL);
    }
    let (evidence, want) = damage(case, &wal, &pushed, t0);
    let lost_samples: usize =
        pushed.values().map(Vec::len).sum::<usize>() - want.values().map(Vec::len).sum::<usize>();
    eprintln!("{case:?}: {lost_samples} samples damaged");

    // --wal.on-corruption=stop: exits non-zero, says why, changes nothing.
    let files_before = files(&wal);
    // The checkpoint case sets it through the environment, the others with the flag.
    let via_env = case == Case::CorruptCheckpoint;
    let (status, log) = run_stop(&data, &tmp.path().join("stop.log"), via_env);
    assert!(
        !status.success(),
        "{case:?}: stop mode exited with {status}\n{log}"
    );
    let what = if case == Case::CorruptCheckpoint {
        "corrupt at offset"
    } else {
        "WAL corrupt in segment"
    };
    assert!(
        log.contains(what),
        "{case:?}: stop log lacks {what:?}:\n{log}"
    );
    assert!(log.contains("--wal.on-corruption=stop"), "{case:?}:\n{log}");
    assert_eq!(
        files(&wal),
        files_before,
        "{case:?}: stop mode changed the WAL dir"
    );

    // `weft inspect wal` shows the damage (the runbook's first step).
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["inspect", "wal"])
        .arg(&wal)
        .output()
        .expect("weft inspect wal");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{case:?}: weft inspect wal:\n{report}");
    let shows = if case == Case::CorruptCheckpoint {
        "repair salvages checkpoint."
    } else {
        "CORRUPT at offset"
    };
    assert!(
        report.contains(shows),
        "{case:?}: inspect lacks {shows:?}:\n{report}"
    );

    // Default (repair): starts, serves everything that was not damaged, keeps the evidence,
    // counts the damage.
    let w = Weft::start_on(&data, ARGS, None);
    let ready = w.client().get(w.url("/ready")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(read_back(&w, t0), want, "{case:?}: read back after repair");
    assert!(
        wal.join(&evidence).is_file(),
        "{case:?}: no evidence {evidence}: {:?}",
        files(&wal)
    );
    let corruptions = w.metric("weft_wal_corruptions_total", &[]).unwrap_or(0.0);
    let bytes = w.metric("weft_wal_corrupt_bytes_total", &[]).unwrap_or(0.0);
    assert!(
        corruptions >= 1.0 && bytes > 0.0,
        "{case:?}: {corruptions} {bytes}"
    );
    if case == Case::DamagedSeriesRecord {
        // Every sample of that series follows its damaged record, in later records.
        let lost = w.metric("weft_wal_lost_samples_total", &[]).unwrap_or(0.0);
        assert_eq!(lost as usize, PUSHES * SAMPLES_PER_PUSH);
    }

    // It takes new pushes, and starts again (after a crash) with everything.
    let mut after = want.clone();
    let t1 = t0 + (PUSHES * SAMPLES_PER_PUSH) as i64 * STEP_MS;
    let mut more = Data::new();
    push(&w, t1, 0..1, &mut more);
    for (k, s) in more {
        after.entry(k).or_default().extend(s);
    }
    assert_eq!(read_back(&w, t0), after, "{case:?}: new pushes");
    stop(w, libc::SIGKILL);
    let w = Weft::start_on(&data, ARGS, None);
    assert_eq!(read_back(&w, t0), after, "{case:?}: second start");
    let n_evidence = files(&wal).iter().filter(|n| n.contains(".broken")).count();
    assert_eq!(n_evidence, 1, "{case:?}: one copy only: {:?}", files(&wal));
    stop(w, libc::SIGTERM);
}

#[test]
fn flipped_byte_mid_segment() {
    run(Case::FlippedByte);
}

#[test]
fn zeroed_page_mid_segment() {
    run(Case::ZeroedPage);
}

#[test]
fn damaged_series_record() {
    run(Case::DamagedSeriesRecord);
}

#[test]
fn corrupt_checkpoint_without_valid_predecessor() {
    run(Case::CorruptCheckpoint);
}
