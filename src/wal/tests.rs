//! Writer, replay and recovery tests, against the in-memory crash fake and real files.
//!
//! The corruption table at the top: one test per contract, each checking that the evidence
//! (`*.broken`, later segments, the bad checkpoint) is left in place. Then poisoning, disk
//! full, group commit, and a model-based proptest of crash recovery.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::checkpoint::checkpoint_name;
use super::record::{self, FRAME_HEADER_BYTES};
use super::*;

const SEG: u64 = 4096;

fn cfg() -> WalConfig {
    WalConfig {
        segment_size_bytes: SEG,
        sync: SyncMode::Always,
        on_corruption: OnCorruption::Stop,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The head, as far as these tests care: series refs and their samples (t, value bits).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Head {
    series: BTreeMap<u64, Vec<(i64, u64)>>,
}

impl Head {
    fn apply(&mut self, item: ReplayItem<'_>) -> Result<(), ApplyError> {
        match item {
            ReplayItem::Series(s) => {
                let v = self.series.entry(s.series_ref).or_default();
                for c in s.chunks {
                    v.extend(decode_test_chunk(&c.data));
                }
            }
            ReplayItem::Record(Record::Series { series_ref, .. }) => {
                self.series.entry(series_ref).or_default();
            }
            ReplayItem::Record(Record::Samples(samples)) => {
                for s in samples.iter() {
                    let Some(v) = self.series.get_mut(&s.series_ref) else {
                        return Err(format!("sample for unknown series {}", s.series_ref).into());
                    };
                    // Samples the checkpoint already holds come again; they are no-ops.
                    if v.last().is_none_or(|&(t, _)| s.t > t) {
                        v.push((s.t, s.v));
                    }
                }
            }
            ReplayItem::Record(
                Record::FlushMark { .. }
                | Record::Histograms(_)
                | Record::FloatHistograms(_)
                | Record::Exemplars { .. }
                | Record::Metadata { .. },
            ) => {}
        }
        Ok(())
    }

    fn checkpoint(&self) -> impl Iterator<Item = CheckpointSeries> + '_ {
        self.series.iter().map(|(&r, samples)| CheckpointSeries {
            series_ref: r,
            tenant: "t".into(),
            labels: vec![("__name__".into(), format!("s{r}"))],
            chunks: if samples.is_empty() {
                vec![]
            } else {
                vec![CheckpointChunk {
                    min_t: samples[0].0,
                    max_t: samples[samples.len() - 1].0,
                    data: encode_test_chunk(samples),
                    flushed: false,
                    spilled: false,
                    ooo: false,
                    encoding: crate::store::object::ENCODING_XOR,
                }]
            },
        })
    }
}

/// Chunk bytes are opaque to the WAL; the tests use a trivial stand-in for XOR chunks.
fn encode_test_chunk(samples: &[(i64, u64)]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|&(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
        .collect()
}

fn decode_test_chunk(data: &[u8]) -> impl Iterator<Item = (i64, u64)> + '_ {
    data.chunks_exact(16).map(|c| {
        (
            i64::from_le_bytes(c[..8].try_into().unwrap()),
            u64::from_le_bytes(c[8..].try_into().unwrap()),
        )
    })
}

fn open(dir: &MemDir) -> Result<(Wal, Head, ReplayStats), WalError> {
    let mut head = Head::default();
    let (wal, stats) = Wal::open(Arc::new(dir.clone()), cfg(), |i| head.apply(i))?;
    Ok((wal, head, stats))
}

fn series_rec(r: u64) -> Record<'static> {
    Record::Series {
        series_ref: r,
        tenant: Cow::Borrowed("t"),
        labels: vec![(Cow::Borrowed("__name__"), Cow::Owned(format!("s{r}")))],
    }
}

/// Appends `batches` acknowledged batches of `per` samples to series 1 and 2.
fn write_acked(wal: &Wal, batches: i64, per: i64, first_t: i64) -> Vec<WalPos> {
    let mut out = Vec::new();
    if first_t == 0 {
        let p = wal.append(&[series_rec(1), series_rec(2)]).unwrap();
        block_on(wal.wait_durable(p)).unwrap();
    }
    for b in 0..batches {
        let s: Vec<RefSample> = (0..per)
            .map(|i| RefSample {
                series_ref: 1 + (i % 2) as u64,
                t: first_t + b * per + i,
                v: (b * 1000 + i) as u64,
            })
            .collect();
        let p = wal.append(&[Record::Samples(Cow::Owned(s))]).unwrap();
        block_on(wal.wait_durable(p)).unwrap();
        out.push(p);
    }
    out
}

fn total_samples(h: &Head) -> usize {
    h.series.values().map(Vec::len).sum()
}

fn names(dir: &MemDir) -> Vec<String> {
    dir.list().unwrap()
}

/// Offsets of the frames in a segment image.
fn frame_offsets(buf: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Ok(Some(f)) = record::read_frame(&buf[off..], record::MAX_PAYLOAD_BYTES) {
        out.push(off);
        off += f.len;
    }
    out
}

/// A directory with three full-ish segments of acknowledged data (crash-consistent copy).
fn three_segments() -> (MemDir, Head) {
    let dir = MemDir::new();
    let (wal, _, _) = open(&dir).unwrap();
    // ~12 bytes a sample: 40 batches of 20 samples is ~10 KiB, three 4 KiB segments.
    write_acked(&wal, 40, 20, 0);
    let crashed = dir.crash(0);
    drop(wal);
    let (w, head, _) = open(&crashed.crash(0)).unwrap();
    drop(w);
    assert!(names(&crashed).len() >= 3, "{:?}", names(&crashed));
    (crashed, head)
}

fn last_segment(dir: &MemDir) -> String {
    names(dir)
        .into_iter()
        .filter(|n| segment::parse_segment_name(n).is_some())
        .max()
        .unwrap()
}

// ---- the corruption table --------------------------------------------------------------------

#[test]
fn replay_after_torn_last_record_keeps_acknowledged_samples() {
    let (dir, full) = three_segments();
    let last = last_segment(&dir);
    let mut img = dir.written(&last).unwrap();
    let offs = frame_offsets(&img);
    let torn_at = *offs.last().unwrap();
    // Cut the last record in the middle: everything from its middle on is zero, as after a
    // power loss that wrote only its first bytes.
    let mid = torn_at + FRAME_HEADER_BYTES + 5;
    img[mid..].fill(0);
    dir.put(&last, img.clone());

    let (wal, head, stats) = open(&dir).unwrap();
    let torn = stats.torn.clone().expect("torn tail reported");
    assert_eq!(
        (torn.segment.as_str(), torn.offset),
        (last.as_str(), torn_at as u64)
    );
    assert_eq!(torn.dropped_bytes as usize, mid - torn_at);
    // Every record but the torn one is back: 20 samples fewer.
    assert_eq!(total_samples(&head), total_samples(&full) - 20);
    // The evidence holds the dropped bytes; the segment's tail is zero now.
    assert_eq!(
        dir.written(&torn.evidence).unwrap(),
        img[torn_at..mid].to_vec()
    );
    assert!(dir.written(&last).unwrap()[torn_at..]
        .iter()
        .all(|&b| b == 0));
    // New appends go to a new segment; a second replay is clean and sees the same data.
    write_acked(&wal, 1, 4, 1_000_000);
    drop(wal);
    let (_w, head2, stats2) = open(&dir).unwrap();
    assert!(stats2.torn.is_none());
    assert_eq!(total_samples(&head2), total_samples(&head) + 4);
    assert!(names(&dir).contains(&format!("{last}.torn.broken")));
}

#[test]
fn replay_with_bad_crc_in_middle_stops_and_keeps_later_segments() {
    let (dir, _) = three_segments();
    let before = names(&dir);
    let mut img = dir.written("00000001").unwrap();
    let off = frame_offsets(&img)[2];
    img[off + FRAME_HEADER_BYTES + 3] ^= 0xff;
    dir.put("00000001", img.clone());

    let err = open(&dir).unwrap_err();
    match err {
        WalError::Corrupt {
            segment,
            offset,
            later_segments,
            ..
        } => {
            assert_eq!((segment.as_str(), offset), ("00000001", off as u64));
            assert!(later_segments >= 1);
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(names(&dir), before, "nothing created or deleted");
    assert_eq!(dir.written("00000001").unwrap(), img, "evidence untouched");
}

#[test]
fn replay_with_bad_crc_followed_by_valid_records_in_last_segment_stops() {
    let (dir, _) = three_segments();
    let last = last_segment(&dir);
    let mut img = dir.written(&last).unwrap();
    let offs = frame_offsets(&img);
    assert!(offs.len() >= 2);
    img[offs[0] + FRAME_HEADER_BYTES] ^= 1;
    dir.put(&last, img.clone());
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, WalError::Corrupt { segment, offset: 0, .. } if *segment == last),
        "{err}"
    );
    assert!(err.to_string().contains("a valid record follows"), "{err}");
    assert_eq!(dir.written(&last).unwrap(), img);
    assert!(!names(&dir).iter().any(|n| n.ends_with(".broken")));
}

#[test]
fn replay_with_bad_length_in_middle_segment_stops() {
    let (dir, _) = three_segments();
    let mut img = dir.written("00000000").unwrap();
    let off = frame_offsets(&img)[3];
    img[off..off + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    dir.put("00000000", img);
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, WalError::Corrupt { segment, offset, .. } if segment == "00000000" && *offset == off as u64),
        "{err}"
    );
    assert!(err.to_string().contains("bad frame length"), "{err}");
}

#[test]
fn replay_with_bad_length_of_last_record_cuts_it_as_torn_tail() {
    let (dir, full) = three_segments();
    let last = last_segment(&dir);
    let mut img = dir.written(&last).unwrap();
    let off = *frame_offsets(&img).last().unwrap();
    img[off..off + 4].copy_from_slice(&(SEG as u32).to_le_bytes());
    dir.put(&last, img);
    let (_w, head, stats) = open(&dir).unwrap();
    assert_eq!(stats.torn.unwrap().offset, off as u64);
    assert_eq!(total_samples(&head), total_samples(&full) - 20);
    assert!(names(&dir).contains(&format!("{last}.torn.broken")));
}

#[test]
fn replay_with_zeroed_page_in_middle_stops() {
    let dir = MemDir::new();
    let big = WalConfig {
        segment_size_bytes: 16384,
        sync: SyncMode::Always,
        on_corruption: OnCorruption::Stop,
    };
    let (wal, _) = Wal::open(Arc::new(dir.clone()), big.clone(), |_| Ok(())).unwrap();
    write_acked(&wal, 40, 20, 0);
    drop(wal);
    let mut img = dir.written("00000000").unwrap();
    img[4096..8192].fill(0);
    dir.put("00000000", img.clone());
    let err = Wal::open(Arc::new(dir.clone()), big, |_| Ok(())).unwrap_err();
    match &err {
        WalError::Corrupt {
            segment, offset, ..
        } => {
            assert_eq!(segment, "00000000");
            assert!((4096 - 300..=4096).contains(offset), "{err}");
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(dir.written("00000000").unwrap(), img);
    assert!(!names(&dir).iter().any(|n| n.ends_with(".broken")));
}

#[test]
fn replay_of_truncated_last_segment_keeps_complete_records() {
    let (dir, full) = three_segments();
    let last = last_segment(&dir);
    let img = dir.written(&last).unwrap();
    let off = *frame_offsets(&img).last().unwrap();
    // The file itself is shorter, ending inside the last record.
    dir.put(&last, img[..off + 11].to_vec());
    let (_w, head, stats) = open(&dir).unwrap();
    let torn = stats.torn.unwrap();
    assert_eq!((torn.offset, torn.dropped_bytes), (off as u64, 11));
    assert_eq!(total_samples(&head), total_samples(&full) - 20);
    assert_eq!(
        dir.written(&torn.evidence).unwrap(),
        img[off..off + 11].to_vec()
    );
}

#[test]
fn replay_of_truncated_middle_segment_stops_and_keeps_later_segments() {
    let (dir, _) = three_segments();
    let before = names(&dir);
    let img = dir.written("00000000").unwrap();
    let off = frame_offsets(&img)[5];
    dir.put("00000000", img[..off + 20].to_vec());
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, WalError::Corrupt { segment, later_segments, .. } if segment == "00000000" && *later_segments >= 2),
        "{err}"
    );
    assert_eq!(names(&dir), before);
}

#[test]
fn replay_with_missing_segment_stops() {
    let (dir, _) = three_segments();
    dir.remove("00000001").unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(err, WalError::MissingSegment { .. }), "{err}");
}

#[test]
fn replay_of_record_with_valid_crc_but_bad_content_stops_even_at_the_tail() {
    let (dir, _) = three_segments();
    let last = last_segment(&dir);
    let mut img = dir.written(&last).unwrap();
    let end = frame_offsets(&img)
        .last()
        .map(|&o| o + record::read_frame(&img[o..], 1 << 20).unwrap().unwrap().len)
        .unwrap();
    // A frame of an unknown type, correctly CRC'd: a newer writer, not a torn write.
    let payload = [1u8, 2, 3];
    let mut f = 3u32.to_le_bytes().to_vec();
    f.push(77);
    f.extend_from_slice(&record::frame_crc(77, &payload).to_le_bytes());
    f.extend_from_slice(&payload);
    img[end..end + f.len()].copy_from_slice(&f);
    dir.put(&last, img);
    let err = open(&dir).unwrap_err();
    assert!(err.to_string().contains("unknown record type 77"), "{err}");
}

#[test]
fn corrupt_newest_checkpoint_falls_back_to_previous() {
    let dir = MemDir::new();
    let (wal, mut head, _) = open(&dir).unwrap();
    let apply_all = |head: &mut Head, dir: &MemDir| {
        // The test's head mirrors the WAL: rebuild it by replaying a copy.
        let mut h = Head::default();
        let _ = replay(&dir.crash(usize::MAX), |i| h.apply(i)).unwrap();
        *head = h;
    };
    write_acked(&wal, 10, 20, 0);
    apply_all(&mut head, &dir);
    let n1 = wal.cut().unwrap();
    wal.checkpoint(n1, head.checkpoint()).unwrap();
    write_acked(&wal, 10, 20, 10_000);
    apply_all(&mut head, &dir);
    let n2 = wal.cut().unwrap();
    wal.checkpoint(n2, head.checkpoint()).unwrap();
    write_acked(&wal, 10, 20, 20_000);
    drop(wal);
    let expected = total_samples(&head) + 200;

    let c2 = checkpoint_name(n2);
    let mut bad = dir.written(&c2).unwrap();
    let len = bad.len();
    bad[len / 2] ^= 0x10;
    dir.put(&c2, bad.clone());

    let (wal, head2, stats) = open(&dir).unwrap();
    assert_eq!(stats.checkpoint.unwrap().index, n1);
    assert_eq!(stats.corrupt_checkpoints.len(), 1);
    assert_eq!(total_samples(&head2), expected, "fallback is lossless");
    assert_eq!(
        dir.written(&c2).unwrap(),
        bad,
        "bad checkpoint left in place"
    );

    // The next checkpoint keeps the good one (n1) as its fallback, not the corrupt one.
    let n3 = wal.cut().unwrap();
    wal.checkpoint(n3, head2.checkpoint()).unwrap();
    assert!(names(&dir).contains(&checkpoint_name(n1)));
    drop(wal);
    let (_w, head3, stats) = open(&dir).unwrap();
    assert_eq!(stats.checkpoint.unwrap().index, n3);
    assert_eq!(head3, head2);
}

#[test]
fn checkpoint_deletes_only_what_the_previous_checkpoint_covers() {
    let dir = MemDir::new();
    let (wal, _, _) = open(&dir).unwrap();
    let mut head = Head::default();
    let mut cps = Vec::new();
    for round in 0..4 {
        write_acked(&wal, 12, 20, round * 100_000);
        head = Head::default();
        replay(&dir.crash(usize::MAX), |i| head.apply(i)).unwrap();
        let n = wal.cut().unwrap();
        wal.checkpoint(n, head.checkpoint()).unwrap();
        cps.push(n);
    }
    let l = replay::list(&dir).unwrap();
    assert_eq!(l.checkpoints, cps[2..].to_vec());
    assert_eq!(*l.segments.first().unwrap(), cps[2]);
    drop(wal);
    let (_w, h2, _) = open(&dir).unwrap();
    assert_eq!(h2, head);
}

#[test]
fn incomplete_checkpoint_tmp_is_removed_at_open() {
    let (dir, full) = three_segments();
    dir.put("checkpoint.00000009.tmp", vec![1, 2, 3]);
    let (_w, head, _) = open(&dir).unwrap();
    assert_eq!(head, full);
    assert!(!names(&dir).iter().any(|n| n.ends_with(".tmp")));
}

// ---- poisoning, disk full, group commit ------------------------------------------------------

#[test]
fn failed_msync_poisons_the_wal_and_is_never_retried() {
    let dir = MemDir::new();
    let (wal, _, _) = open(&dir).unwrap();
    write_acked(&wal, 1, 2, 0);
    dir.set_fail_syncs(true);
    let syncs = dir.syncs();
    let p = wal.append(&[series_rec(9)]).unwrap();
    assert!(matches!(
        block_on(wal.wait_durable(p)),
        Err(WalError::Poisoned)
    ));
    assert!(wal.is_poisoned());
    dir.set_fail_syncs(false);
    assert!(matches!(
        wal.append(&[series_rec(10)]),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(
        block_on(wal.wait_durable(p)),
        Err(WalError::Poisoned)
    ));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(dir.syncs(), syncs, "a failed sync is not retried");
    assert!(matches!(wal.close(), Err(WalError::Poisoned)));
}

/// Before, the WAL poisoned itself only when an error's `op` string was `"fsync"`, so a
/// failed directory fsync after a checkpoint's rename was retried by the next checkpoint.
#[test]
fn failed_directory_fsync_after_checkpoint_rename_poisons_and_is_never_retried() {
    let dir = MemDir::new();
    let (wal, _, _) = open(&dir).unwrap();
    write_acked(&wal, 4, 10, 0);
    let mut head = Head::default();
    replay(&dir.crash(usize::MAX), |i| head.apply(i)).unwrap();
    let n = wal.cut().unwrap();
    dir.set_fail_dir_syncs(true);
    let calls = dir.dir_sync_calls();
    let err = wal.checkpoint(n, head.checkpoint()).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Sync {
                what: SyncTarget::Dir,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_poisoning());
    // The rename happened (a directory sync can only fail after it); its durability is
    // what is unknown.
    assert!(
        names(&dir).contains(&checkpoint_name(n)),
        "{:?}",
        names(&dir)
    );
    assert!(wal.is_poisoned());
    assert_eq!(dir.dir_sync_calls(), calls + 1);

    // The disk "recovers": nothing is retried, everything fails closed.
    dir.set_fail_dir_syncs(false);
    assert!(matches!(
        wal.append(&[series_rec(7)]),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.cut(), Err(WalError::Poisoned)));
    assert!(matches!(
        wal.checkpoint(n, head.checkpoint()),
        Err(WalError::Poisoned)
    ));
    assert_eq!(
        dir.dir_sync_calls(),
        calls + 1,
        "a failed directory fsync is never retried"
    );
    assert!(matches!(wal.close(), Err(WalError::Poisoned)));

    // A restart replays and recovers what was acknowledged.
    drop(wal);
    let (_w, h2, _) = open(&dir.crash(0)).unwrap();
    assert_eq!(h2, head);
}

#[test]
fn failed_directory_fsync_of_a_new_segment_poisons_instead_of_retrying() {
    let dir = MemDir::new();
    let (wal, _, _) = open(&dir).unwrap();
    write_acked(&wal, 1, 2, 0);
    wal.cut().unwrap();
    dir.set_fail_dir_syncs(true);
    let err = wal.append(&[series_rec(3)]).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Sync {
                what: SyncTarget::Dir,
                ..
            }
        ),
        "{err}"
    );
    assert!(wal.is_poisoned());
    let calls = dir.dir_sync_calls();
    dir.set_fail_dir_syncs(false);
    assert!(matches!(
        wal.append(&[series_rec(3)]),
        Err(WalError::Poisoned)
    ));
    assert_eq!(dir.dir_sync_calls(), calls, "no new segment was tried");
}

#[test]
fn failed_checkpoint_file_fsync_poisons() {
    let dir = MemDir::new();
    let (wal, _, _) = open(&dir).unwrap();
    write_acked(&wal, 2, 10, 0);
    let mut head = Head::default();
    replay(&dir.crash(usize::MAX), |i| head.apply(i)).unwrap();
    let n = wal.cut().unwrap();
    dir.set_fail_syncs(true);
    let err = wal.checkpoint(n, head.checkpoint()).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Sync {
                what: SyncTarget::File,
                ..
            }
        ),
        "{err}"
    );
    assert!(wal.is_poisoned());
    assert!(!names(&dir).contains(&checkpoint_name(n)));
}

#[test]
fn disk_full_on_segment_allocation_is_reported_and_recovers_when_space_returns() {
    let dir = MemDir::new();
    dir.set_space_limit_bytes(Some(2 * SEG));
    let (wal, _, _) = open(&dir).unwrap();
    let mut acked = 0;
    let err = loop {
        let s: Vec<RefSample> = (0..20)
            .map(|i| RefSample {
                series_ref: 1,
                t: acked * 20 + i,
                v: 0,
            })
            .collect();
        let recs = if acked == 0 {
            vec![series_rec(1), Record::Samples(Cow::Owned(s))]
        } else {
            vec![Record::Samples(Cow::Owned(s))]
        };
        match wal.append(&recs) {
            Ok(p) => {
                block_on(wal.wait_durable(p)).unwrap();
                acked += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(err, WalError::DiskFull { .. }), "{err}");
    assert!(!wal.is_poisoned());
    // Still full: still a DiskFull, no crash, no poison.
    assert!(matches!(
        wal.append(&[series_rec(5)]),
        Err(WalError::DiskFull { .. })
    ));
    dir.set_space_limit_bytes(None);
    let p = wal.append(&[series_rec(5)]).unwrap();
    block_on(wal.wait_durable(p)).unwrap();
    drop(wal);
    let (_w, head, _) = open(&dir.crash(0)).unwrap();
    assert_eq!(total_samples(&head) as i64, acked * 20);
    assert!(head.series.contains_key(&5));
}

/// Runs against a small real file system when `WEFT_TEST_SMALL_FS` names a directory on one
/// (e.g. `mount -t tmpfs -o size=1m tmpfs /mnt/small`); skipped otherwise.
#[test]
fn disk_full_on_a_real_small_filesystem_is_disk_full_not_sigbus() {
    let Ok(root) = std::env::var("WEFT_TEST_SMALL_FS") else {
        eprintln!("WEFT_TEST_SMALL_FS not set; skipping");
        return;
    };
    let path = std::path::Path::new(&root).join(format!("wal-{}", std::process::id()));
    let c = WalConfig {
        segment_size_bytes: 256 << 10,
        sync: SyncMode::Always,
        on_corruption: OnCorruption::Stop,
    };
    let (wal, _) = Wal::open_path(&path, c, |_| Ok(())).unwrap();
    // Ballast to free later, so the test can show recovery when space returns.
    let ballast = path.join("ballast");
    std::fs::write(&ballast, vec![1u8; 300 << 10]).unwrap();
    let mut acked = 0u64;
    let err = loop {
        let s: Vec<RefSample> = (0..500)
            .map(|i| RefSample {
                series_ref: 1,
                t: (acked * 500 + i) as i64,
                v: i,
            })
            .collect();
        match wal.append(&[Record::Samples(Cow::Owned(s))]) {
            Ok(p) => {
                block_on(wal.wait_durable(p)).unwrap();
                acked += 1;
            }
            Err(e) => break e,
        }
    };
    eprintln!("disk full after {acked} batches: {err}");
    assert!(matches!(err, WalError::DiskFull { .. }), "{err}");
    assert!(!wal.is_poisoned());
    std::fs::remove_file(&ballast).unwrap();
    let p = wal.append(&[series_rec(1)]).expect("space returned");
    block_on(wal.wait_durable(p)).unwrap();
    drop(wal);
    let mut samples = 0u64;
    Wal::open_path(
        &path,
        WalConfig {
            segment_size_bytes: 4096,
            ..Default::default()
        },
        |i| {
            if let ReplayItem::Record(r) = i {
                samples += r.num_samples() as u64;
            }
            Ok(())
        },
    )
    .map(drop)
    .unwrap_or_else(|e| eprintln!("reopen on a full disk: {e}"));
    assert_eq!(samples, acked * 500);
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn concurrent_writers_share_syncs() {
    let dir = MemDir::new();
    dir.set_sync_delay(Some(std::time::Duration::from_millis(2)));
    let (wal, _, _) = open(&dir).unwrap();
    let wal = Arc::new(wal);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|w| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        let s = [RefSample {
                            series_ref: w,
                            t: i,
                            v: 0,
                        }];
                        let p = wal.append(&[Record::Samples(Cow::Borrowed(&s))]).unwrap();
                        wal.wait_durable(p).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let st = wal.stats();
    eprintln!("{st:?}");
    assert_eq!(st.appends, 200);
    assert!(st.syncs * 2 <= st.appends, "group commit: {st:?}");
}

/// Writers that take a while to come back after their ack (decoding their next push), as
/// through the server, still share one msync: a round waits for the writers the last one
/// acknowledged and for those already waiting. With a 200 µs gather and "as many as the
/// last round" as the target they split into groups that alternated (about 2–3 a sync).
#[test]
fn slow_returning_writers_merge_into_one_sync() {
    let dir = MemDir::new();
    dir.set_sync_delay(Some(std::time::Duration::from_millis(3)));
    let (wal, _, _) = open(&dir).unwrap();
    let wal = Arc::new(wal);
    const WRITERS: u64 = 8;
    const PUSHES: i64 = 30;
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                for i in 0..PUSHES {
                    // Staggered "decode" times: 0.4 to 1.1 ms.
                    std::thread::sleep(std::time::Duration::from_micros(400 + 100 * w));
                    let s = [RefSample {
                        series_ref: w,
                        t: i,
                        v: 0,
                    }];
                    let p = wal.append(&[Record::Samples(Cow::Borrowed(&s))]).unwrap();
                    rt.block_on(wal.wait_durable(p)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = wal.stats();
    eprintln!("{st:?}");
    assert_eq!(st.appends, WRITERS * PUSHES as u64);
    // Ideal is 8 a sync; the first rounds and a loaded machine take some off.
    assert!(st.syncs * 5 <= st.appends, "group commit: {st:?}");
}

/// `Rss:` of the mappings of `path` in `/proc/self/smaps`, in KiB; `None` if nothing maps it
/// (or there is no `/proc`). Per mapping, so other tests running in parallel do not disturb it.
fn mapped_rss_kib(path: &std::path::Path) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let path = path.to_str()?;
    let (mut inside, mut found, mut rss) = (false, false, 0);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if !first.ends_with(':') {
            // A mapping's header line: `start-end perms offset dev inode [path]`.
            inside = line.ends_with(path) || line.ends_with(&format!("{path} (deleted)"));
            found |= inside;
        } else if inside && first == "Rss:" {
            rss += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
        }
    }
    found.then_some(rss)
}

#[test]
fn synced_segment_pages_do_not_stay_resident() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    // One segment larger than everything written, so it stays mapped throughout: without
    // dropping synced pages, every page written would stay in the process's RSS.
    let c = WalConfig {
        segment_size_bytes: 64 << 20,
        sync: SyncMode::Always,
        on_corruption: OnCorruption::Stop,
    };
    let (wal, _) = Wal::open_path(&dir, c.clone(), |_| Ok(())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let p = wal.append(&[series_rec(1)]).unwrap();
    rt.block_on(wal.wait_durable(p)).unwrap();
    let seg = dir.join(segment::segment_name(0));
    if !std::path::Path::new("/proc/self/smaps").exists() {
        println!("skipping: /proc/self/smaps is not available");
        return;
    }
    assert!(
        mapped_rss_kib(&seg).is_some(),
        "no mapping of {seg:?} in smaps"
    );
    const WRITE_BYTES: u64 = 32 << 20;
    const PER_APPEND: i64 = 4000;
    let (mut t, mut max_rss_kib) = (0i64, 0u64);
    while wal.stats().appended_bytes < WRITE_BYTES {
        let s: Vec<RefSample> = (t..t + PER_APPEND)
            .map(|t| RefSample {
                series_ref: 1,
                t,
                v: (t as f64).to_bits(),
            })
            .collect();
        t += PER_APPEND;
        let p = wal.append(&[Record::Samples(Cow::Owned(s))]).unwrap();
        rt.block_on(wal.wait_durable(p)).unwrap();
        max_rss_kib = max_rss_kib.max(mapped_rss_kib(&seg).unwrap());
    }
    let st = wal.stats();
    println!(
        "wrote {} MiB in {} appends and {} syncs; the segment's mapping had at most {max_rss_kib} \
         KiB resident",
        st.appended_bytes >> 20,
        st.appends,
        st.syncs
    );
    assert_eq!(st.segments_created, 1, "the test needs one mapped segment");
    // What stays: synced pages not yet dropped (below DROP_EVERY_BYTES), the page being
    // appended to, what one append writes (~40 KiB) before its sync, and the not yet written
    // pages of the page-cache folio the last write fault mapped (Linux maps a large folio
    // whole: measured up to ~1 MiB on ext4, at most 2 MiB). Without the drop it is the whole
    // 32 MiB written.
    assert!(
        max_rss_kib < (segment::DROP_EVERY_BYTES >> 10) + (3 << 10),
        "the segment's mapping kept {max_rss_kib} KiB resident after {} MiB synced",
        st.appended_bytes >> 20
    );
    wal.close().unwrap();
    drop(wal);
    // The dropped pages were only unmapped: replay reads every sample back.
    let mut samples = 0i64;
    Wal::open_path(&dir, c, |item| {
        if let ReplayItem::Record(Record::Samples(s)) = item {
            for x in s.iter() {
                assert_eq!(x.t, samples, "samples replay in order with no gap");
                assert_eq!(x.v, (x.t as f64).to_bits());
                samples += 1;
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(samples, t);
}

#[test]
fn sync_never_acks_at_once_and_survives_a_process_crash() {
    let dir = MemDir::new();
    let c = WalConfig {
        segment_size_bytes: SEG,
        sync: SyncMode::Never,
        on_corruption: OnCorruption::Stop,
    };
    let (wal, _) = Wal::open(Arc::new(dir.clone()), c, |_| Ok(())).unwrap();
    let p = wal.append(&[series_rec(1)]).unwrap();
    block_on(wal.wait_durable(p)).unwrap();
    assert_eq!(dir.syncs(), 0);
    drop(wal);
    // A process crash keeps the page cache: everything written is there.
    let (_w, head, _) = open(&dir.crash(usize::MAX)).unwrap();
    assert!(head.series.contains_key(&1));
}

#[test]
fn record_larger_than_a_segment_is_refused() {
    let dir = MemDir::new();
    let (wal, _, _) = open(&dir).unwrap();
    let s: Vec<RefSample> = (0..1000)
        .map(|t| RefSample {
            series_ref: 1,
            t,
            v: 0,
        })
        .collect();
    let err = wal.append(&[Record::Samples(Cow::Owned(s))]).unwrap_err();
    assert!(matches!(err, WalError::RecordTooLarge { .. }), "{err}");
}

#[test]
fn real_files_round_trip_and_torn_tail_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let c = WalConfig {
        segment_size_bytes: 1 << 16,
        sync: SyncMode::Always,
        on_corruption: OnCorruption::Stop,
    };
    let (wal, _) = Wal::open_path(tmp.path(), c.clone(), |_| Ok(())).unwrap();
    let mut head = Head::default();
    let p = wal.append(&[series_rec(1)]).unwrap();
    block_on(wal.wait_durable(p)).unwrap();
    for b in 0..50 {
        let s: Vec<RefSample> = (0..30)
            .map(|i| RefSample {
                series_ref: 1,
                t: b * 30 + i,
                v: 7,
            })
            .collect();
        let p = wal.append(&[Record::Samples(Cow::Owned(s))]).unwrap();
        block_on(wal.wait_durable(p)).unwrap();
    }
    drop(wal);
    // Tear the last record of the file in place.
    let seg = tmp.path().join("00000000");
    let mut img = std::fs::read(&seg).unwrap();
    let off = *frame_offsets(&img).last().unwrap();
    img[off + 20..off + 40].fill(0xAB);
    std::fs::write(&seg, &img).unwrap();
    let report = inspect(tmp.path()).unwrap();
    assert!(report.contains("TORN TAIL"), "{report}");

    let (_w, stats) = Wal::open_path(tmp.path(), c, |i| head.apply(i)).unwrap();
    assert_eq!(stats.torn.as_ref().unwrap().offset, off as u64);
    assert_eq!(total_samples(&head), 49 * 30);
    assert!(tmp.path().join("00000000.torn.broken").exists());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 1 << 16, "size kept");
    let report = inspect(tmp.path()).unwrap();
    assert!(
        report.contains("00000000.torn.broken") && !report.contains("TORN"),
        "{report}"
    );
}

// ---- model-based crash recovery --------------------------------------------------------------

mod model {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    #[derive(Debug, Clone)]
    enum Op {
        /// Append samples: (series ref, value) pairs; timestamps are assigned increasing.
        Append(Vec<(u64, u64)>),
        /// Wait until everything appended so far is durable (acknowledge it).
        Ack,
        /// Cut and write a checkpoint of the current head.
        Checkpoint,
        /// Power loss: keep the durable image plus this fraction (‰) of the unsynced bytes.
        Crash(u16),
        /// Clean shutdown and restart.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        let value = prop_oneof![any::<u64>(), Just(0x7ff0_0000_0000_0002u64)];
        prop_oneof![
            6 => prop::collection::vec((0u64..6, value), 1..25).prop_map(Op::Append),
            3 => Just(Op::Ack),
            1 => Just(Op::Checkpoint),
            2 => (0u16..=1000).prop_map(Op::Crash),
            1 => Just(Op::Reopen),
        ]
    }

    fn seed() -> u64 {
        let seed = std::env::var("WAL_MODEL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("wal model test seed: WAL_MODEL_SEED={seed}");
        seed
    }

    /// The appended samples, in append order: (ref, t, v).
    #[derive(Debug, Default)]
    struct Model {
        appended: Vec<(u64, i64, u64)>,
        acked: usize,
        next_t: HashMap<u64, i64>,
    }

    fn check(model: &Model, head: &Head) -> Result<usize, TestCaseError> {
        let index: HashMap<(u64, i64), (usize, u64)> = model
            .appended
            .iter()
            .enumerate()
            .map(|(i, &(r, t, v))| ((r, t), (i, v)))
            .collect();
        let mut got = Vec::new();
        for (&r, samples) in &head.series {
            for &(t, v) in samples {
                let Some(&(i, want)) = index.get(&(r, t)) else {
                    return Err(TestCaseError::fail(format!(
                        "recovered unknown sample {r}@{t}"
                    )));
                };
                prop_assert_eq!(v, want, "value of {}@{}", r, t);
                got.push(i);
            }
        }
        got.sort_unstable();
        let m = got.len();
        prop_assert!(
            got.iter().enumerate().all(|(k, &i)| k == i),
            "gap in recovered samples"
        );
        prop_assert!(
            m >= model.acked,
            "lost acknowledged samples: {} < {}",
            m,
            model.acked
        );
        Ok(m)
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut dir = MemDir::new();
        let (mut wal, mut head, _) = open(&dir).unwrap();
        let mut model = Model::default();
        let mut last_pos = WalPos::default();
        for op in ops {
            match op {
                Op::Append(batch) => {
                    let mut recs = Vec::new();
                    let mut samples = Vec::new();
                    for (r, v) in batch {
                        let t = model.next_t.entry(r).or_insert_with(|| {
                            recs.push(series_rec(r));
                            0
                        });
                        *t += 1 + (v % 3) as i64;
                        samples.push(RefSample {
                            series_ref: r,
                            t: *t,
                            v,
                        });
                    }
                    recs.push(Record::Samples(Cow::Owned(samples.clone())));
                    last_pos = wal.append(&recs).unwrap();
                    // The head applies what it appended (as the ingester will).
                    for r in &recs {
                        head.apply(ReplayItem::Record(r.clone())).unwrap();
                    }
                    model
                        .appended
                        .extend(samples.iter().map(|s| (s.series_ref, s.t, s.v)));
                }
                Op::Ack => {
                    block_on(wal.wait_durable(last_pos)).unwrap();
                    model.acked = model.appended.len();
                }
                Op::Checkpoint => {
                    let n = wal.cut().unwrap();
                    wal.checkpoint(n, head.checkpoint()).unwrap();
                }
                Op::Crash(permille) => {
                    let keep = dir.unsynced_bytes() * permille as usize / 1000;
                    let crashed = dir.crash(keep);
                    drop(wal);
                    dir = crashed;
                    let (w, h, _) = open(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let m = check(&model, &h)?;
                    model.appended.truncate(m);
                    model.acked = m;
                    model.next_t.clear();
                    for &(r, t, _) in &model.appended {
                        model.next_t.insert(r, t);
                    }
                    for &r in h.series.keys() {
                        model.next_t.entry(r).or_insert(0);
                    }
                    (wal, head) = (w, h);
                    last_pos = WalPos::default();
                }
                Op::Reopen => {
                    drop(wal);
                    let (w, h, _) = open(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let m = check(&model, &h)?;
                    prop_assert_eq!(m, model.appended.len(), "clean restart keeps everything");
                    model.acked = m;
                    (wal, head) = (w, h);
                    last_pos = WalPos::default();
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(Config {
            cases: 96,
            rng_seed: RngSeed::Fixed(seed()),
            ..Config::default()
        })]

        #[test]
        fn recovery_returns_acknowledged_prefix_without_gaps(ops in prop::collection::vec(op(), 1..60)) {
            run(ops)?;
        }
    }
}

// ---- --wal.on-corruption=repair ------------------------------------------------------------
//
// The same damage as the table above, with the default policy: replay keeps a copy, skips to
// the next valid record, reports the region and goes on. The test head (`Head::apply`) fails
// on a sample of an undefined ref, so every test here also checks that replay never hands one
// over.

mod repair {
    use super::*;
    use crate::wal::replay::{MAX_EVIDENCE_FILES, PAGE_BYTES};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn repair_cfg(segment_size_bytes: u64) -> WalConfig {
        WalConfig {
            segment_size_bytes,
            sync: SyncMode::Always,
            on_corruption: OnCorruption::Repair,
        }
    }

    fn open_repair(dir: &MemDir) -> (Wal, Head, ReplayStats) {
        open_repair_sized(dir, SEG)
    }

    fn open_repair_sized(dir: &MemDir, seg: u64) -> (Wal, Head, ReplayStats) {
        let mut head = Head::default();
        let (wal, stats) = Wal::open(Arc::new(dir.clone()), repair_cfg(seg), |i| head.apply(i))
            .unwrap_or_else(|e| panic!("repair must start: {e}"));
        (wal, head, stats)
    }

    fn evidence(dir: &MemDir) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|n| n.contains(".broken"))
            .collect()
    }

    /// Decodes the frame at `off` of `img` (which must be valid).
    fn frame_at(img: &[u8], off: usize) -> (Record<'static>, usize) {
        let (r, len) = record::decode(&img[off..]).unwrap().unwrap();
        (r.into_owned(), len)
    }

    #[test]
    fn flipped_byte_mid_segment_is_skipped_and_everything_else_replays() {
        let (dir, full) = three_segments();
        let img = dir.written("00000001").unwrap();
        let offs = frame_offsets(&img);
        let (rec, len) = frame_at(&img, offs[2]);
        assert_eq!(rec.num_samples(), 20);
        let mut bad = img.clone();
        // The last byte of the record: a byte of its last sample's value.
        bad[offs[2] + len - 1] ^= 0xff;
        dir.put("00000001", bad.clone());

        let (wal, head, stats) = open_repair(&dir);
        assert_eq!(total_samples(&head), total_samples(&full) - 20);
        assert_eq!(stats.corrupt_regions, 1);
        let c = &stats.corruptions[0];
        assert_eq!(c.kind, CorruptionKind::Segment);
        assert_eq!((c.file.as_str(), c.offset), ("00000001", offs[2] as u64));
        assert_eq!(
            c.end,
            (offs[2] + len) as u64,
            "resynchronised at the next frame"
        );
        assert_eq!(stats.corrupt_bytes, len as u64);
        assert_eq!((c.records_skipped, c.pages), (1, 1));
        // A flipped value byte still decodes: the report names the refs and time range.
        assert_eq!(c.damaged_samples, 20);
        assert_eq!(c.damaged_refs, vec![1, 2]);
        let (t0, t1) = c.damaged_t.unwrap();
        assert!(c.t_before.unwrap() < t0 && t1 < c.t_after.unwrap(), "{c:?}");
        // Evidence: a whole copy of the damaged segment; the segment itself unchanged.
        assert_eq!(c.evidence.as_deref(), Some("00000001.broken"));
        assert_eq!(dir.written("00000001.broken").unwrap(), bad);
        assert_eq!(dir.written("00000001").unwrap(), bad);

        // The WAL takes appends afterwards, and a second start reports the same damage
        // without a second copy, and replays the new data too.
        write_acked(&wal, 2, 10, 1_000_000);
        drop(wal);
        let (_w, head2, stats2) = open_repair(&dir);
        assert_eq!(total_samples(&head2), total_samples(&head) + 20);
        assert_eq!(stats2.corrupt_regions, 1);
        assert_eq!(stats2.corruptions[0].offset, c.offset);
        assert_eq!(evidence(&dir), vec!["00000001.broken".to_owned()]);
    }

    #[test]
    fn stop_refuses_with_the_flag_in_the_message() {
        let (dir, _) = three_segments();
        let mut img = dir.written("00000001").unwrap();
        let off = frame_offsets(&img)[2];
        img[off + FRAME_HEADER_BYTES + 3] ^= 0xff;
        dir.put("00000001", img);
        let before = names(&dir);
        let err = open(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("WAL corrupt in segment 00000001"), "{msg}");
        assert!(msg.contains("--wal.on-corruption=stop"), "{msg}");
        assert_eq!(names(&dir), before, "stop changes nothing");
    }

    #[test]
    fn zeroed_page_mid_segment_loses_only_the_frames_it_touches() {
        let dir = MemDir::new();
        let (wal, _, _) = open_repair_sized(&dir, 16384);
        write_acked(&wal, 40, 20, 0);
        drop(wal);
        let img = dir.written("00000000").unwrap();
        let offs = frame_offsets(&img);
        let mut lost = 0;
        for &o in &offs {
            let (rec, len) = frame_at(&img, o);
            if o < 8192 && o + len > 4096 {
                lost += rec.num_samples();
            }
        }
        assert!(lost > 0);
        let (_, full, _) = open_repair_sized(&dir.crash(0), 16384);
        let mut bad = img.clone();
        bad[4096..8192].fill(0);
        dir.put("00000000", bad);

        let (_w, head, stats) = open_repair_sized(&dir, 16384);
        assert_eq!(total_samples(&head), total_samples(&full) - lost);
        assert_eq!(stats.corrupt_regions, 1);
        let c = &stats.corruptions[0];
        let first_bad = *offs.iter().filter(|&&o| o < 4096).max().unwrap();
        let resume = *offs.iter().find(|&&o| o >= 8192).unwrap();
        assert_eq!((c.offset, c.end), (first_bad as u64, resume as u64));
        assert_eq!(c.pages, (resume as u64 - 1) / PAGE_BYTES + 1);
        // The frame that runs into the page, and at least one that ends after it.
        assert!(c.records_skipped >= 2, "{c:?}");
        assert!(c.t_before.is_some() && c.t_after.is_some());
    }

    /// A directory whose segment 0 defines series 1 and 2, then series 3 in its own record,
    /// then samples of all three.
    fn with_series_3() -> (MemDir, usize, usize) {
        let dir = MemDir::new();
        let (wal, _, _) = open_repair(&dir);
        write_acked(&wal, 2, 10, 0);
        let p = wal.append(&[series_rec(3)]).unwrap();
        block_on(wal.wait_durable(p)).unwrap();
        for b in 0..5i64 {
            let s: Vec<RefSample> = (1..=3u64)
                .map(|r| RefSample {
                    series_ref: r,
                    t: 100 + b,
                    v: r,
                })
                .collect();
            let p = wal.append(&[Record::Samples(Cow::Owned(s))]).unwrap();
            block_on(wal.wait_durable(p)).unwrap();
        }
        drop(wal);
        let img = dir.written("00000000").unwrap();
        let offs = frame_offsets(&img);
        let series3 = offs
            .iter()
            .position(|&o| matches!(frame_at(&img, o).0, Record::Series { series_ref: 3, .. }))
            .unwrap();
        (dir, offs[series3], offs[series3 + 1])
    }

    #[test]
    fn damaged_series_record_loses_its_samples_by_ref_and_keeps_the_others() {
        let (dir, off, end) = with_series_3();
        let mut img = dir.written("00000000").unwrap();
        // A flip in the label value: the CRC fails, the bytes still decode.
        img[end - 1] ^= 0x20;
        dir.put("00000000", img);

        let (_w, head, stats) = open_repair(&dir);
        assert!(!head.series.contains_key(&3), "never attached to a series");
        assert_eq!(head.series[&1].len(), 10 + 5);
        assert_eq!(head.series[&2].len(), 10 + 5);
        let c = &stats.corruptions[0];
        assert_eq!((c.offset, c.end), (off as u64, end as u64));
        assert_eq!(c.damaged_series, vec![3]);
        assert_eq!(stats.lost_samples, 5);
        assert_eq!(
            stats.lost_refs.get(&3),
            Some(&LostRef {
                samples: 5,
                min_t: 100,
                max_t: 104
            })
        );
    }

    /// Samples of a ref nothing defines are not lost when a later flush mark covers them:
    /// that is a series which left the head (`--head.series-idle-timeout`) after its chunks
    /// were flushed, so the checkpoint no longer defines it while later segments still hold
    /// its samples. A ref with samples after its mark stays lost.
    #[test]
    fn undefined_ref_samples_under_a_later_flush_mark_are_flushed_not_lost() {
        let (dir, _, end) = with_series_3();
        let wal_tail = |dir: &MemDir, max_t: i64| {
            let (wal, _, _) = open_repair(dir);
            let p = wal
                .append(&[Record::FlushMark {
                    series_ref: 3,
                    max_t,
                }])
                .unwrap();
            block_on(wal.wait_durable(p)).unwrap();
        };
        wal_tail(&dir, 103);
        let mut img = dir.written("00000000").unwrap();
        img[end - 1] ^= 0x20;
        dir.put("00000000", img);
        let (_w, head, stats) = open_repair(&dir);
        assert!(!head.series.contains_key(&3));
        // Not wholly covered (t=104 is after the mark): the ref counts as lost, whole.
        assert_eq!(stats.lost_samples, 5);
        assert_eq!(
            stats.lost_refs.get(&3),
            Some(&LostRef {
                samples: 5,
                min_t: 100,
                max_t: 104
            })
        );

        let (dir, _, end) = with_series_3();
        wal_tail(&dir, 104);
        let mut img = dir.written("00000000").unwrap();
        img[end - 1] ^= 0x20;
        dir.put("00000000", img);
        let (_w, _head, stats) = open_repair(&dir);
        assert_eq!(stats.lost_samples, 0);
        assert!(stats.lost_refs.is_empty());
    }

    #[test]
    fn undecodable_record_mid_segment_is_skipped() {
        let (dir, full) = three_segments();
        let mut img = dir.written("00000000").unwrap();
        let offs = frame_offsets(&img);
        let (rec, len) = frame_at(&img, offs[3]);
        // Same length, unknown type, correct CRC: a newer writer, not a torn write.
        let payload = img[offs[3] + FRAME_HEADER_BYTES..offs[3] + len].to_vec();
        img[offs[3] + 4] = 77;
        img[offs[3] + 5..offs[3] + 9]
            .copy_from_slice(&record::frame_crc(77, &payload).to_le_bytes());
        dir.put("00000000", img);
        let (_w, head, stats) = open_repair(&dir);
        assert_eq!(
            total_samples(&head),
            total_samples(&full) - rec.num_samples()
        );
        assert_eq!(stats.corruptions[0].kind, CorruptionKind::Undecodable);
        assert_eq!(stats.corruptions[0].end, (offs[3] + len) as u64);
    }

    #[test]
    fn damage_with_nothing_valid_after_it_in_an_earlier_segment_skips_to_the_next_segment() {
        let (dir, full) = three_segments();
        let img = dir.written("00000000").unwrap();
        let offs = frame_offsets(&img);
        let cut = offs[5];
        let lost: usize = offs[5..]
            .iter()
            .map(|&o| frame_at(&img, o).0.num_samples())
            .sum();
        let mut bad = img.clone();
        bad[cut..].fill(0);
        bad[cut] = 0xee;
        dir.put("00000000", bad);
        let (_w, head, stats) = open_repair(&dir);
        assert_eq!(total_samples(&head), total_samples(&full) - lost);
        assert_eq!(stats.corruptions[0].offset, cut as u64);
        assert!(stats.torn.is_none());
        assert!(stats.segments >= 3);
    }

    #[test]
    fn evidence_is_bounded_and_its_absence_does_not_stop_the_repair() {
        let (dir, full) = three_segments();
        for i in 0..MAX_EVIDENCE_FILES {
            dir.put(&format!("old{i}.broken"), vec![1; 10]);
        }
        let mut img = dir.written("00000001").unwrap();
        let off = frame_offsets(&img)[2];
        img[off + FRAME_HEADER_BYTES + 3] ^= 0xff;
        dir.put("00000001", img);
        let (_w, head, stats) = open_repair(&dir);
        assert_eq!(total_samples(&head), total_samples(&full) - 20);
        assert_eq!(stats.corruptions[0].evidence, None);
        assert_eq!(stats.evidence_not_kept, 1, "counted for the metric");
        assert_eq!(
            evidence(&dir).len(),
            MAX_EVIDENCE_FILES,
            "no new evidence past the bound"
        );
    }

    #[test]
    fn old_torn_tail_evidence_makes_room_for_a_corruption_copy() {
        let (dir, _) = three_segments();
        for i in 0..MAX_EVIDENCE_FILES {
            dir.put(&format!("{:08}.torn.broken", 90 + i), vec![1; 10]);
        }
        let mut img = dir.written("00000001").unwrap();
        let off = frame_offsets(&img)[2];
        img[off + FRAME_HEADER_BYTES + 3] ^= 0xff;
        dir.put("00000001", img);
        let (_w, _, stats) = open_repair(&dir);
        assert_eq!(
            stats.corruptions[0].evidence.as_deref(),
            Some("00000001.broken")
        );
        let ev = evidence(&dir);
        assert_eq!(ev.len(), MAX_EVIDENCE_FILES, "{ev:?}");
        assert!(
            !ev.contains(&"00000090.torn.broken".to_owned()),
            "the oldest went: {ev:?}"
        );
        assert!(ev.contains(&"00000091.torn.broken".to_owned()), "{ev:?}");
    }

    /// Two checkpoints, both corrupt, and the segments below the older one deleted: nothing but
    /// the newest checkpoint holds its data.
    fn corrupt_checkpoints() -> (MemDir, u64, Head, usize) {
        let dir = MemDir::new();
        let (wal, _, _) = open(&dir).unwrap();
        let mut head = Head::default();
        let rebuild = |head: &mut Head| {
            let mut h = Head::default();
            replay(&dir.crash(usize::MAX), |i| h.apply(i)).unwrap();
            *head = h;
        };
        let p = wal.append(&[series_rec(3), series_rec(4)]).unwrap();
        block_on(wal.wait_durable(p)).unwrap();
        write_acked(&wal, 10, 20, 0);
        rebuild(&mut head);
        let n1 = wal.cut().unwrap();
        wal.checkpoint(n1, head.checkpoint()).unwrap();
        write_acked(&wal, 10, 20, 10_000);
        rebuild(&mut head);
        let n2 = wal.cut().unwrap();
        wal.checkpoint(n2, head.checkpoint()).unwrap();
        // After the checkpoint: samples of 1 and 2 (the shared helper), then of 3.
        write_acked(&wal, 2, 10, 20_000);
        let s = [RefSample {
            series_ref: 3,
            t: 30_000,
            v: 3,
        }];
        let p = wal.append(&[Record::Samples(Cow::Borrowed(&s))]).unwrap();
        block_on(wal.wait_durable(p)).unwrap();
        drop(wal);
        assert!(!names(&dir).contains(&segment_name(0)), "{:?}", names(&dir));
        let expected = total_samples(&head) + 21;

        let c1 = checkpoint_name(n1);
        let mut b1 = dir.written(&c1).unwrap();
        b1[0] ^= 1;
        dir.put(&c1, b1);
        // Damage the entry of series 3 (the third one) inside its payload.
        let c2 = checkpoint_name(n2);
        let mut b2 = dir.written(&c2).unwrap();
        let mut off = checkpoint::CHECKPOINT_HEADER_BYTES;
        for _ in 0..2 {
            off += record::read_frame(&b2[off..], checkpoint::MAX_ENTRY_BYTES)
                .unwrap()
                .unwrap()
                .len;
        }
        b2[off + FRAME_HEADER_BYTES + 12] ^= 0x40;
        dir.put(&c2, b2);
        (dir, n2, head, expected)
    }

    #[test]
    fn corrupt_checkpoint_without_valid_predecessor_is_salvaged_entry_by_entry() {
        let (dir, n2, full, expected) = corrupt_checkpoints();
        let (wal, head, stats) = open_repair(&dir);
        let salvaged = stats.salvaged_checkpoint.unwrap();
        assert_eq!((salvaged.index, salvaged.series), (n2, 3));
        assert!(stats.checkpoint.is_none());
        assert!(!head.series.contains_key(&3));
        let lost_in_checkpoint = full.series[&3].len();
        assert_eq!(total_samples(&head), expected - lost_in_checkpoint - 1);
        assert_eq!(stats.corrupt_regions, 1);
        let c = &stats.corruptions[0];
        assert_eq!(c.kind, CorruptionKind::Checkpoint);
        assert_eq!(c.damaged_series, vec![3]);
        let ev = format!("{}.broken", checkpoint_name(n2));
        assert_eq!(c.evidence.as_deref(), Some(ev.as_str()));
        assert_eq!(
            stats.lost_refs[&3].samples, 1,
            "the sample of 3 after the checkpoint"
        );
        // The next checkpoint is a good base again.
        let n3 = wal.cut().unwrap();
        wal.checkpoint(n3, head.checkpoint()).unwrap();
        drop(wal);
        let (_w, head2, stats2) = open_repair(&dir);
        assert_eq!(stats2.checkpoint.unwrap().index, n3);
        assert_eq!(head2, head);
        assert_eq!(stats2.corrupt_regions, 0);
    }

    #[test]
    fn corrupt_checkpoint_without_valid_predecessor_stops_with_stop() {
        let (dir, n2, _, _) = corrupt_checkpoints();
        let before = names(&dir);
        let err = open(&dir).unwrap_err();
        assert!(
            matches!(&err, WalError::CorruptCheckpoint { name, .. } if *name == checkpoint_name(n2)),
            "{err}"
        );
        assert!(
            err.to_string().contains("--wal.on-corruption=stop"),
            "{err}"
        );
        assert_eq!(names(&dir), before);
    }

    #[test]
    fn corrupt_first_checkpoint_with_every_segment_kept_replays_losslessly() {
        let dir = MemDir::new();
        let (wal, _, _) = open(&dir).unwrap();
        write_acked(&wal, 10, 20, 0);
        let mut h = Head::default();
        replay(&dir.crash(usize::MAX), |i| h.apply(i)).unwrap();
        let n = wal.cut().unwrap();
        wal.checkpoint(n, h.checkpoint()).unwrap();
        drop(wal);
        let c = checkpoint_name(n);
        let mut b = dir.written(&c).unwrap();
        let len = b.len();
        b[len / 2] ^= 4;
        dir.put(&c, b);
        let (_w, head, stats) = open_repair(&dir);
        assert_eq!(head, h);
        assert!(stats.salvaged_checkpoint.is_none());
        assert_eq!(stats.corrupt_regions, 0);
    }

    // ---- property: random damage anywhere --------------------------------------------------

    #[derive(Debug, Clone)]
    enum Damage {
        /// XOR these bytes (non-zero masks) in at an offset.
        Flip(Vec<u8>),
        /// Zero this many bytes.
        Zero(usize),
        /// Overwrite with these bytes.
        Garbage(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            prop::collection::vec(1u8..=255, 1..8).prop_map(Damage::Flip),
            (1usize..5000).prop_map(Damage::Zero),
            prop::collection::vec(any::<u8>(), 1..300).prop_map(Damage::Garbage),
        ]
    }

    fn seed() -> u64 {
        let seed = std::env::var("WAL_REPAIR_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("wal repair property seed: WAL_REPAIR_SEED={seed}");
        seed
    }

    /// Writes a WAL of a few segments: series records spread through it (so damage can hit
    /// one), samples of the series defined so far.
    fn build(series: u64, batches: u64) -> MemDir {
        let dir = MemDir::new();
        let (wal, _, _) = open_repair(&dir);
        let mut t = 0i64;
        let mut last = WalPos::default();
        for b in 0..batches {
            let mut recs = Vec::new();
            if b < series {
                recs.push(series_rec(b + 1));
            }
            let s: Vec<RefSample> = (1..=series.min(b + 1))
                .map(|r| {
                    t += 1;
                    RefSample {
                        series_ref: r,
                        t,
                        v: r * 1000 + b,
                    }
                })
                .collect();
            recs.push(Record::Samples(Cow::Owned(s)));
            last = wal.append(&recs).unwrap();
        }
        block_on(wal.wait_durable(last)).unwrap();
        drop(wal);
        dir
    }

    /// What replay must return: the intact frames (bytes unchanged) in WAL order, with samples
    /// of refs no intact series record defined before them dropped.
    fn expected(before: &[(String, Vec<u8>)], after: &MemDir) -> Head {
        let mut head = Head::default();
        for (name, img) in before {
            let now = after.written(name).unwrap();
            for o in frame_offsets(img) {
                let (rec, len) = frame_at(img, o);
                if now[o..o + len] != img[o..o + len] {
                    continue;
                }
                match rec {
                    Record::Series { series_ref, .. } => {
                        head.series.entry(series_ref).or_default();
                    }
                    Record::Samples(s) => {
                        for x in s.iter() {
                            if let Some(v) = head.series.get_mut(&x.series_ref) {
                                v.push((x.t, x.v));
                            }
                        }
                    }
                    Record::FlushMark { .. }
                    | Record::Histograms(_)
                    | Record::FloatHistograms(_)
                    | Record::Exemplars { .. }
                    | Record::Metadata { .. } => {}
                }
            }
        }
        head
    }

    proptest! {
        #![proptest_config(Config {
            cases: 256,
            rng_seed: RngSeed::Fixed(seed()),
            ..Config::default()
        })]

        /// Arbitrary bytes as the only segment, or as an earlier one followed by another:
        /// repair never panics nor fails (`Head::apply` fails on a sample of an undefined ref).
        /// The same as the `wal_repair` fuzz target.
        #[test]
        fn arbitrary_segment_bytes_never_fail_repair(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            two in any::<bool>(),
        ) {
            let dir = MemDir::new();
            dir.put("00000000", bytes.clone());
            if two {
                dir.put("00000001", bytes);
            }
            let mut head = Head::default();
            let res = replay_with(&dir, OnCorruption::Repair, |i| head.apply(i));
            prop_assert!(res.is_ok(), "{:?}", res.err());
        }

        /// Random damage anywhere in any segment: replay never panics nor fails, and returns
        /// every record before the damage plus every intact record after it.
        #[test]
        fn random_damage_never_panics_and_keeps_every_intact_record(
            series in 1u64..6,
            batches in 20u64..120,
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            d in damage(),
        ) {
            let dir = build(series, batches);
            let segs: Vec<String> = names(&dir)
                .into_iter()
                .filter(|n| segment::parse_segment_name(n).is_some())
                .collect();
            let before: Vec<(String, Vec<u8>)> =
                segs.iter().map(|n| (n.clone(), dir.written(n).unwrap())).collect();
            let name = which.get(&segs).clone();
            let mut img = dir.written(&name).unwrap();
            let off = at.index(img.len());
            match &d {
                Damage::Flip(m) => {
                    for (i, b) in m.iter().enumerate() {
                        if let Some(x) = img.get_mut(off + i) {
                            *x ^= b;
                        }
                    }
                }
                Damage::Zero(n) => {
                    let end = (off + n).min(img.len());
                    img[off..end].fill(0);
                }
                Damage::Garbage(g) => {
                    let end = (off + g.len()).min(img.len());
                    img[off..end].copy_from_slice(&g[..end - off]);
                }
            }
            dir.put(&name, img);
            let mut head = Head::default();
            let res = Wal::open(Arc::new(dir.clone()), repair_cfg(SEG), |i| head.apply(i));
            prop_assert!(res.is_ok(), "replay failed: {:?}", res.err());
            prop_assert_eq!(head, expected(&before, &dir));
        }
    }
}
