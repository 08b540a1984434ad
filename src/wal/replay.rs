//! Replay at start, and `weft inspect wal`.
//!
//! Replay picks the newest valid checkpoint (falling back to older ones if it is corrupt),
//! hands its series to the caller, then reads every later segment in order with plain reads
//! and hands each record to the caller. Nothing is materialised beyond one segment's bytes and
//! one checkpoint entry, so the memory ceiling is the segment size plus what the caller keeps.
//!
//! **Policy for bad bytes** (argued in `docs/wal.md`):
//!
//! - *Torn tail*: the first bad frame is in the **last** segment and no valid frame follows it
//!   in that segment. Only unacknowledged records can be there (an acknowledged record was
//!   msynced, and everything before it too). Replay copies the bad bytes to
//!   `<segment>.broken`, zeroes them in the segment (plain writes; nothing is mapped during
//!   replay), logs segment, offset and byte count, and continues.
//! - *Corruption in the middle*: a bad frame followed by a valid frame, or in any segment but
//!   the last, or a frame whose CRC is right but whose content cannot be decoded. What replay
//!   does is [`OnCorruption`]:
//!   - `Repair` (default): copy the damaged segment to `<segment>.broken` (bounded by
//!     [`MAX_EVIDENCE_FILES`] and [`MAX_EVIDENCE_BYTES`]), resynchronise on the CRC framing
//!     (the next complete, CRC-valid frame), replay every valid record after the damage,
//!     and report each damaged region ([`Corruption`]: byte range, records and pages
//!     skipped, what the damaged bytes still say, the neighbouring timestamps). The segment
//!     itself is left as it is, so a later start finds and reports the same damage again
//!     (and keeps no second copy) until a checkpoint's cleanup deletes the segment.
//!   - `Stop`: stop with [`WalError::Corrupt`] naming the segment and offset, changing
//!     nothing on disk. The operator decides (see `docs/operations.md`).
//! - *No valid checkpoint* while the segments it covers are gone: with `Repair`, the newest
//!   checkpoint is salvaged entry by entry (same resynchronisation, evidence
//!   `checkpoint.N.broken`); with `Stop`, [`WalError::CorruptCheckpoint`].
//!
//! **Invariant:** the callback never sees a sample or flush mark of a series ref that no
//! checkpoint series or `Series` record defined before it. Such samples (their series record
//! was damaged) cannot be attributed; they are dropped and counted by ref
//! ([`ReplayStats::lost_refs`]), never attached to another series.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tracing::{error, info, warn};

use super::checkpoint::{
    checkpoint_name, parse_checkpoint_name, read_checkpoint, salvage_checkpoint, verify_checkpoint,
    CheckpointSeries, CheckpointStats,
};
use super::record::{
    decode_payload, read_frame, Record, RecordError, RefSample, FRAME_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
};
use super::segment::{parse_segment_name, segment_name, WalDir};
use super::{OnCorruption, SyncTarget, WalError};

/// The error type a replay callback may return; it is passed through as [`WalError::Apply`].
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// One item handed to the replay callback, in WAL order.
#[derive(Debug)]
pub enum ReplayItem<'a> {
    /// A series from the checkpoint, with its chunks. All of them come before any record.
    Series(CheckpointSeries),
    /// A record from a segment after the checkpoint. Records may repeat what the checkpoint
    /// already holds (a checkpoint may include data appended after its cut): the applier must
    /// treat a `Series` with a known ref, and samples at or before a series' newest
    /// timestamp, as no-ops.
    Record(Record<'a>),
}

/// A torn tail that replay cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Segment file name.
    pub segment: String,
    /// Offset of the first dropped byte.
    pub offset: u64,
    /// Number of bytes dropped (up to the last non-zero byte).
    pub dropped_bytes: u64,
    /// Where the dropped bytes were copied.
    pub evidence: String,
    /// Why the frame at `offset` was rejected.
    pub reason: String,
}

/// At most this many `*.broken` evidence files are kept in the WAL directory; past it (or past
/// [`MAX_EVIDENCE_BYTES`]) replay keeps no new evidence and says so. Rationale: evidence must
/// never fill the disk that the WAL needs, and weft never deletes evidence an operator may be
/// looking at; the first damage is usually the most telling.
pub const MAX_EVIDENCE_FILES: usize = 8;
/// At most this many bytes of `*.broken` evidence files (four whole default segments).
pub const MAX_EVIDENCE_BYTES: u64 = 256 << 20;
/// Damaged regions listed one by one in [`ReplayStats::corruptions`]; all are counted.
/// Rationale: random garbage can split into many regions; the log must stay readable.
pub const MAX_CORRUPTIONS_LISTED: usize = 1000;
/// Series refs whose lost samples are tallied one by one in [`ReplayStats::lost_refs`]; the
/// samples of further refs count only in [`ReplayStats::lost_samples`].
pub const MAX_LOST_REFS_LISTED: usize = 10_000;
/// Series refs named per damaged region ([`Corruption::damaged_refs`]).
pub const MAX_REFS_PER_CORRUPTION: usize = 64;
/// Frames the unverified look into a damaged region walks at most.
const MAX_SALVAGE_FRAMES: u64 = 100_000;
/// The page size the "pages skipped" figure counts in.
pub const PAGE_BYTES: u64 = 4096;

/// Which part of the WAL a [`Corruption`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// Bytes of a segment that are not valid frames, with a valid frame or a later segment
    /// after them.
    Segment,
    /// A segment frame whose CRC is right but whose content cannot be decoded.
    Undecodable,
    /// Entries of a corrupt checkpoint that had to be salvaged.
    Checkpoint,
}

impl std::fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CorruptionKind::Segment => "segment",
            CorruptionKind::Undecodable => "undecodable record",
            CorruptionKind::Checkpoint => "checkpoint",
        })
    }
}

/// One damaged region that replay skipped (`--wal.on-corruption=repair`).
///
/// Fields named *damaged_* come from decoding the damaged bytes without their CRC: they are
/// what the bytes still say, unverified, and only a hint of what was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Where.
    pub kind: CorruptionKind,
    /// File name (a segment or a checkpoint).
    pub file: String,
    /// Offset of the first skipped byte.
    pub offset: u64,
    /// Offset where replay resumed (the next valid frame), or the end of the damaged data.
    pub end: u64,
    /// Why the bytes at `offset` were rejected.
    pub reason: String,
    /// Records (or checkpoint entries) skipped, at least: the frames whose length words
    /// still chain through the region, and never fewer than one.
    pub records_skipped: u64,
    /// 4 KiB pages the region touches.
    pub pages: u64,
    /// The copy of the damaged file, if one was kept.
    pub evidence: Option<String>,
    /// Series refs the damaged bytes name (unverified), at most [`MAX_REFS_PER_CORRUPTION`].
    pub damaged_refs: Vec<u64>,
    /// Refs of `Series` records (or checkpoint series entries) in the damaged bytes
    /// (unverified): their samples that follow cannot be attributed.
    pub damaged_series: Vec<u64>,
    /// Samples the damaged bytes still decode to (unverified).
    pub damaged_samples: u64,
    /// Time range of those samples (unverified).
    pub damaged_t: Option<(i64, i64)>,
    /// Newest timestamp of the last valid `Samples` record before the region.
    pub t_before: Option<i64>,
    /// Oldest timestamp of the first valid `Samples` record after the region.
    pub t_after: Option<i64>,
}

/// Samples of one series ref that replay dropped because no series record defined the ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostRef {
    /// How many.
    pub samples: u64,
    /// Oldest timestamp among them.
    pub min_t: i64,
    /// Newest timestamp among them.
    pub max_t: i64,
}

/// What replay found.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    /// The checkpoint replay started from.
    pub checkpoint: Option<CheckpointStats>,
    /// Checkpoints that failed validation (left in place), with the reason.
    pub corrupt_checkpoints: Vec<(u64, String)>,
    /// A corrupt checkpoint replay salvaged because nothing else held its data: what was read
    /// from it (its damaged entries are in `corruptions`).
    pub salvaged_checkpoint: Option<CheckpointStats>,
    /// Segments read.
    pub segments: u64,
    /// Records read from segments.
    pub records: u64,
    /// Samples in those records (those then dropped as lost included).
    pub samples: u64,
    /// Bytes of valid records read.
    pub bytes: u64,
    /// The torn tail that was cut, if any.
    pub torn: Option<TornTail>,
    /// Damaged regions skipped (the first [`MAX_CORRUPTIONS_LISTED`]).
    pub corruptions: Vec<Corruption>,
    /// Number of damaged regions skipped (all of them).
    pub corrupt_regions: u64,
    /// Bytes in those regions.
    pub corrupt_bytes: u64,
    /// Samples dropped because no series record defined their ref.
    pub lost_samples: u64,
    /// Those samples by ref (the first [`MAX_LOST_REFS_LISTED`] refs).
    pub lost_refs: BTreeMap<u64, LostRef>,
    /// Evidence copies not kept because of the bound ([`MAX_EVIDENCE_FILES`],
    /// [`MAX_EVIDENCE_BYTES`]) or a failed write.
    pub evidence_not_kept: u64,
    /// The sequence number the next segment must use.
    pub next_seq: u64,
    /// Wall time of the replay.
    pub elapsed: Duration,
}

/// How a segment's bytes ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Valid records, then only zeros (or the end of the file).
    Clean { valid_bytes: u64 },
    /// A frame that fails its length or CRC check, or non-zero bytes after the end marker:
    /// possibly a torn write.
    BadFrame { offset: u64, reason: String },
    /// A frame with a valid CRC whose content cannot be decoded: never a torn write.
    Undecodable { offset: u64, reason: RecordError },
}

/// Walks the frames of one segment from offset `from` (a frame start), calling
/// `f(record, offset)` for each valid one.
pub(crate) fn scan_segment(
    buf: &[u8],
    from: usize,
    mut f: impl FnMut(Record<'_>, u64) -> Result<(), WalError>,
) -> Result<ScanEnd, WalError> {
    let mut off = from;
    loop {
        if off >= buf.len() {
            return Ok(ScanEnd::Clean {
                valid_bytes: off as u64,
            });
        }
        match read_frame(&buf[off..], MAX_PAYLOAD_BYTES) {
            Ok(None) => {
                if buf[off..].iter().all(|&b| b == 0) {
                    return Ok(ScanEnd::Clean {
                        valid_bytes: off as u64,
                    });
                }
                return Ok(ScanEnd::BadFrame {
                    offset: off as u64,
                    reason: "non-zero bytes after an end-of-data marker".to_owned(),
                });
            }
            Ok(Some(frame)) => match decode_payload(frame.ty, frame.payload) {
                Ok(rec) => {
                    f(rec, off as u64)?;
                    off += frame.len;
                }
                Err(reason) => {
                    return Ok(ScanEnd::Undecodable {
                        offset: off as u64,
                        reason,
                    })
                }
            },
            Err(e) => {
                return Ok(ScanEnd::BadFrame {
                    offset: off as u64,
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// The offset of the first complete, CRC-valid frame at or after `from`, if any.
pub(crate) fn find_valid_frame(buf: &[u8], from: usize) -> Option<u64> {
    (from..buf.len().saturating_sub(super::record::FRAME_HEADER_BYTES))
        .find(|&o| {
            // Cheap filters first: a zero length word or unknown type cannot start a frame.
            buf[o..o + 4] != [0, 0, 0, 0]
                && (1..=3).contains(&buf[o + 4])
                && matches!(read_frame(&buf[o..], MAX_PAYLOAD_BYTES), Ok(Some(_)))
        })
        .map(|o| o as u64)
}

#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) segments: Vec<u64>,
    pub(crate) checkpoints: Vec<u64>,
    pub(crate) tmp: Vec<String>,
    pub(crate) names: BTreeSet<String>,
}

pub(crate) fn list(dir: &dyn WalDir) -> Result<Listing, WalError> {
    let names = dir.list().map_err(|source| WalError::Io {
        op: "list",
        name: dir.location(),
        source,
    })?;
    let mut l = Listing::default();
    for n in names {
        if let Some(s) = parse_segment_name(&n) {
            l.segments.push(s);
        } else if let Some(c) = parse_checkpoint_name(&n) {
            l.checkpoints.push(c);
        } else if n.starts_with("checkpoint.") && n.ends_with(".tmp") {
            l.tmp.push(n.clone());
        }
        l.names.insert(n);
    }
    l.segments.sort_unstable();
    l.checkpoints.sort_unstable();
    Ok(l)
}

/// Replays the WAL in `dir`, calling `apply` for every checkpoint series and record in order,
/// with `--wal.on-corruption=stop`: any damage but a torn tail stops it and changes nothing.
/// [`Wal::open`](super::Wal::open) uses [`replay_with`] and the configured policy.
pub fn replay(
    dir: &dyn WalDir,
    apply: impl FnMut(ReplayItem<'_>) -> Result<(), ApplyError>,
) -> Result<ReplayStats, WalError> {
    replay_with(dir, OnCorruption::Stop, apply)
}

/// Replays the WAL in `dir`, calling `apply` for every checkpoint series and record in order.
///
/// Repairs a torn tail (keeping the evidence) and removes incomplete `checkpoint.*.tmp` files.
/// Other damage is handled as `on_corruption` says (module docs); with `Repair` it only ever
/// adds evidence files, and never changes a segment or checkpoint.
pub fn replay_with(
    dir: &dyn WalDir,
    on_corruption: OnCorruption,
    mut apply: impl FnMut(ReplayItem<'_>) -> Result<(), ApplyError>,
) -> Result<ReplayStats, WalError> {
    let apply: &mut dyn FnMut(ReplayItem<'_>) -> Result<(), ApplyError> = &mut apply;
    let started = Instant::now();
    let l = list(dir)?;
    let mut stats = ReplayStats::default();
    let mut tr = Tracker::default();
    let mut ev = Evidence::new(dir, &l);
    for t in &l.tmp {
        // A .tmp checkpoint is one whose writer crashed before the rename: incomplete by
        // construction, and the data it held is still in the segments.
        info!(file = %t, "removing incomplete checkpoint");
        dir.remove(t).map_err(|source| WalError::Io {
            op: "remove",
            name: t.clone(),
            source,
        })?;
    }

    let mut newest_error = None;
    for &idx in l.checkpoints.iter().rev() {
        let name = checkpoint_name(idx);
        match verify_checkpoint(dir, &name) {
            Ok(st) => {
                stats.checkpoint = Some(st);
                break;
            }
            Err(e) => {
                warn!(checkpoint = %name, error = %e,
                    "checkpoint is corrupt; left in place, falling back to the previous one");
                stats.corrupt_checkpoints.push((idx, e.to_string()));
                newest_error.get_or_insert(e);
            }
        }
    }
    let mut start = stats.checkpoint.map_or(0, |c| c.index);
    if let Some(c) = stats.checkpoint {
        let name = checkpoint_name(c.index);
        read_checkpoint(dir, &name, |s| {
            tr.known.insert(s.series_ref);
            apply(ReplayItem::Series(s)).map_err(WalError::Apply)
        })?;
        info!(checkpoint = %name, series = c.series, chunks = c.chunks, "loaded checkpoint");
    } else if let (Some(&newest), Some(err)) = (l.checkpoints.last(), newest_error) {
        // No valid checkpoint. Lossless only if the segments from 0 are all still there (no
        // checkpoint ever had a predecessor to clean up after); otherwise the newest
        // checkpoint holds data nothing else has.
        if l.segments.first() != Some(&0) {
            match on_corruption {
                OnCorruption::Stop => {
                    return Err(match err {
                        WalError::CorruptCheckpoint {
                            name,
                            offset,
                            reason,
                        } => WalError::CorruptCheckpoint {
                            name,
                            offset,
                            reason: format!(
                                "{reason}; no valid earlier checkpoint exists and the segments \
                                 it covers are gone; stopping because --wal.on-corruption=stop \
                                 (repair, the default, would keep the evidence, read every \
                                 intact entry and start); see docs/operations.md, \
                                 \"Corruption recovery\""
                            ),
                        },
                        other => other,
                    });
                }
                OnCorruption::Repair => {
                    let st = salvage(dir, newest, &mut ev, &mut tr, &mut stats, apply)?;
                    stats.salvaged_checkpoint = Some(st);
                    start = newest;
                }
            }
        }
    }

    let segs: Vec<u64> = l.segments.iter().copied().filter(|&s| s >= start).collect();
    for (i, &seq) in segs.iter().enumerate() {
        let expected = if i == 0 { start } else { segs[i - 1] + 1 };
        if seq != expected {
            return Err(WalError::MissingSegment {
                segment: segment_name(expected),
                found: segment_name(seq),
            });
        }
    }

    let mut buf = Vec::new();
    for (i, &seq) in segs.iter().enumerate() {
        let name = segment_name(seq);
        let seg_started = Instant::now();
        dir.read_into(&name, &mut buf)
            .map_err(|source| WalError::Io {
                op: "read",
                name: name.clone(),
                source,
            })?;
        let is_last = i + 1 == segs.len();
        let later_segments = (segs.len() - i - 1) as u64;
        let (mut records, mut samples, mut bytes) = (0u64, 0u64, 0u64);
        // The copy of this segment, once its first damaged region asked for one.
        let mut evidence: Option<Option<String>> = None;
        let mut pos = 0usize;
        loop {
            let end = scan_segment(&buf, pos, |rec, _| {
                records += 1;
                samples += rec.num_samples() as u64;
                tr.deliver(rec, &mut stats.corruptions, apply)
            })?;
            let (offset, resume, kind, reason) = match end {
                ScanEnd::Clean { valid_bytes } => {
                    bytes += valid_bytes - pos as u64;
                    break;
                }
                ScanEnd::Undecodable { offset, reason } => {
                    let reason = format!("record with a valid CRC cannot be decoded: {reason}");
                    if on_corruption == OnCorruption::Stop {
                        return Err(WalError::Corrupt {
                            segment: name,
                            offset,
                            reason,
                            later_segments,
                        });
                    }
                    let len = read_frame(&buf[offset as usize..], MAX_PAYLOAD_BYTES)
                        .ok()
                        .flatten()
                        .map_or(1, |f| f.len);
                    let next = offset as usize + len;
                    (offset, Some(next), CorruptionKind::Undecodable, reason)
                }
                ScanEnd::BadFrame { offset, reason } => {
                    let later = find_valid_frame(&buf, offset as usize + 1);
                    if is_last && later.is_none() {
                        bytes += offset - pos as u64;
                        stats.torn =
                            Some(cut_torn_tail(dir, &mut ev, &name, &buf, offset, reason)?);
                        break;
                    }
                    if on_corruption == OnCorruption::Stop {
                        let reason = match later {
                            Some(o) => format!("{reason}; a valid record follows at offset {o}"),
                            None => reason,
                        };
                        return Err(WalError::Corrupt {
                            segment: name,
                            offset,
                            reason,
                            later_segments,
                        });
                    }
                    let reason = match later {
                        Some(o) => format!("{reason}; resynchronised at offset {o}"),
                        None => format!(
                            "{reason}; no valid record follows in this segment, {later_segments} \
                             later segments follow"
                        ),
                    };
                    (
                        offset,
                        later.map(|o| o as usize),
                        CorruptionKind::Segment,
                        reason,
                    )
                }
            };
            bytes += offset - pos as u64;
            let region_end = resume.unwrap_or_else(|| nonzero_end(&buf, offset as usize));
            let evidence = evidence
                .get_or_insert_with(|| ev.keep_whole(dir, &name, &buf))
                .clone();
            let c = describe(
                &buf,
                kind,
                &name,
                offset as usize,
                region_end,
                reason,
                evidence,
                tr.last_t,
                false,
            );
            tr.record(c, &mut stats);
            match resume {
                Some(next) => pos = next,
                None => break,
            }
        }
        stats.segments += 1;
        stats.records += records;
        stats.samples += samples;
        stats.bytes += bytes;
        let secs = seg_started.elapsed().as_secs_f64().max(1e-9);
        info!(
            segment = %name,
            progress = format!("{}/{}", i + 1, segs.len()),
            records,
            samples,
            samples_per_sec = (samples as f64 / secs) as u64,
            "replayed WAL segment"
        );
    }

    for c in &stats.corruptions {
        log_corruption(c);
    }
    let (lost, lost_refs, flushed) = tr.settle();
    stats.lost_samples = lost;
    stats.evidence_not_kept = ev.not_kept;
    stats.lost_refs = lost_refs;
    if flushed > 0 {
        info!(
            samples = flushed,
            "WAL replay skipped samples of series that had left the head; their chunks are in \
             the store"
        );
    }
    if stats.lost_samples > 0 {
        let listed: Vec<String> = stats
            .lost_refs
            .iter()
            .take(20)
            .map(|(r, l)| {
                format!(
                    "ref {r}: {} samples in [{}, {}]",
                    l.samples, l.min_t, l.max_t
                )
            })
            .collect();
        error!(
            samples = stats.lost_samples,
            refs = stats.lost_refs.len(),
            first_refs = %listed.join("; "),
            "WAL replay dropped samples of series refs that no series record defines (the \
             record was damaged): they cannot be attributed to a series and are lost"
        );
    }
    if stats.corrupt_regions > 0 {
        error!(
            regions = stats.corrupt_regions,
            bytes = stats.corrupt_bytes,
            lost_samples = stats.lost_samples,
            "WAL replay skipped damaged data (--wal.on-corruption=repair); every intact record \
             was replayed; see docs/operations.md, \"Corruption recovery\""
        );
    }

    stats.next_seq = l
        .segments
        .last()
        .map_or(0, |s| s + 1)
        .max(l.checkpoints.last().copied().unwrap_or(0))
        .max(start);
    stats.elapsed = started.elapsed();
    let secs = stats.elapsed.as_secs_f64().max(1e-9);
    info!(
        segments = stats.segments,
        records = stats.records,
        samples = stats.samples,
        samples_per_sec = (stats.samples as f64 / secs) as u64,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        "WAL replay done"
    );
    Ok(stats)
}

/// Salvages `checkpoint.<index>` (the newest, corrupt, with nothing else holding its data):
/// keeps a copy, hands every intact series entry to `apply`, records every damaged stretch.
fn salvage(
    dir: &dyn WalDir,
    index: u64,
    ev: &mut Evidence,
    tr: &mut Tracker,
    stats: &mut ReplayStats,
    apply: &mut dyn FnMut(ReplayItem<'_>) -> Result<(), ApplyError>,
) -> Result<CheckpointStats, WalError> {
    let name = checkpoint_name(index);
    let mut buf = Vec::new();
    dir.read_into(&name, &mut buf)
        .map_err(|source| WalError::Io {
            op: "read",
            name: name.clone(),
            source,
        })?;
    let evidence = ev.keep_whole(dir, &name, &buf);
    let rep = salvage_checkpoint(&buf, |s| {
        tr.known.insert(s.series_ref);
        apply(ReplayItem::Series(s)).map_err(WalError::Apply)
    })?;
    for d in &rep.damaged {
        let mut c = describe(
            &buf,
            CorruptionKind::Checkpoint,
            &name,
            d.offset as usize,
            d.end as usize,
            d.reason.clone(),
            evidence.clone(),
            None,
            true,
        );
        c.damaged_series.extend(d.probable_ref);
        tr.record(c, stats);
    }
    let missing = rep
        .footer
        .map(|(s, c)| {
            format!(
                "{} of {s} series and {} of {c} chunks",
                s.saturating_sub(rep.series),
                c.saturating_sub(rep.chunks)
            )
        })
        .unwrap_or_else(|| "unknown (the footer is damaged)".to_owned());
    error!(
        checkpoint = %name,
        restored_series = rep.series,
        restored_chunks = rep.chunks,
        damaged_stretches = rep.damaged.len(),
        missing = %missing,
        evidence = evidence.as_deref().unwrap_or("(not kept)"),
        "checkpoint is corrupt and no valid earlier checkpoint exists: restored its intact \
         entries; the series in its damaged entries are missing, and their samples in later \
         segments are counted as lost"
    );
    Ok(CheckpointStats {
        index,
        series: rep.series,
        chunks: rep.chunks,
        bytes: buf.len() as u64,
    })
}

/// Replay state shared by the checkpoint and the segments: the refs defined so far, the lost
/// samples, and the timestamps around damaged regions.
#[derive(Default)]
struct Tracker {
    /// Series refs defined by a checkpoint series or a `Series` record. Memory: about 16
    /// bytes a series while replay runs (the head keeps far more per series).
    known: FxHashSet<u64>,
    /// Samples of undefined refs, by ref. Memory: about 32 bytes a ref (bounded by the
    /// series the replayed WAL names).
    undefined: FxHashMap<u64, LostRef>,
    /// The newest flush mark of each undefined ref: samples at or before it are in the
    /// store (a series that left the head after its chunks were flushed; the checkpoint no
    /// longer defines it), not lost.
    flushed_undefined: FxHashMap<u64, i64>,
    /// Newest timestamp of the last valid `Samples` record.
    last_t: Option<i64>,
    /// Corruptions (indexes into `ReplayStats::corruptions`) still waiting for `t_after`.
    pending_after: Vec<usize>,
}

impl Tracker {
    /// Hands a valid record to `apply`, minus samples and flush marks of undefined refs.
    fn deliver(
        &mut self,
        rec: Record<'_>,
        corruptions: &mut [Corruption],
        apply: &mut dyn FnMut(ReplayItem<'_>) -> Result<(), ApplyError>,
    ) -> Result<(), WalError> {
        let rec = match rec {
            Record::Series { series_ref, .. } => {
                self.known.insert(series_ref);
                rec
            }
            Record::Samples(s) => {
                let (min_t, max_t) = s
                    .iter()
                    .fold((i64::MAX, i64::MIN), |(a, b), x| (a.min(x.t), b.max(x.t)));
                if !s.is_empty() {
                    for i in self.pending_after.drain(..) {
                        if let Some(c) = corruptions.get_mut(i) {
                            c.t_after = Some(min_t);
                        }
                    }
                    self.last_t = Some(max_t);
                }
                // Samples come in runs of one ref: look each run up once.
                let mut prev = None;
                let all_known = s.iter().all(|x| {
                    let ok = prev == Some(x.series_ref) || self.known.contains(&x.series_ref);
                    prev = Some(x.series_ref);
                    ok
                });
                if all_known {
                    Record::Samples(s)
                } else {
                    let kept: Vec<RefSample> = s
                        .iter()
                        .filter(|x| {
                            let ok = self.known.contains(&x.series_ref);
                            if !ok {
                                self.lose(x);
                            }
                            ok
                        })
                        .copied()
                        .collect();
                    if kept.is_empty() {
                        return Ok(());
                    }
                    Record::Samples(Cow::Owned(kept))
                }
            }
            Record::FlushMark { series_ref, max_t } => {
                if !self.known.contains(&series_ref) {
                    let m = self.flushed_undefined.entry(series_ref).or_insert(max_t);
                    *m = (*m).max(max_t);
                    return Ok(());
                }
                rec
            }
            // Histogram samples of undefined refs are lost as float samples are.
            Record::Histograms(ref h) | Record::FloatHistograms(ref h)
                if h.iter().any(|x| !self.known.contains(&x.series_ref)) =>
            {
                let float = matches!(rec, Record::FloatHistograms(_));
                let mut kept = Vec::with_capacity(h.len());
                for x in h.iter() {
                    if self.known.contains(&x.series_ref) {
                        kept.push(x.clone());
                    } else {
                        self.lose(&RefSample {
                            series_ref: x.series_ref,
                            t: x.t,
                            v: 0,
                        });
                    }
                }
                if kept.is_empty() {
                    return Ok(());
                }
                if float {
                    Record::FloatHistograms(Cow::Owned(kept))
                } else {
                    Record::Histograms(Cow::Owned(kept))
                }
            }
            Record::Histograms(_) | Record::FloatHistograms(_) => rec,
            // Keyed by labels, not refs: nothing to check here.
            Record::Exemplars { .. } | Record::Metadata { .. } => rec,
        };
        apply(ReplayItem::Record(rec)).map_err(WalError::Apply)
    }

    fn lose(&mut self, x: &RefSample) {
        let l = self.undefined.entry(x.series_ref).or_insert(LostRef {
            samples: 0,
            min_t: x.t,
            max_t: x.t,
        });
        l.samples += 1;
        l.min_t = l.min_t.min(x.t);
        l.max_t = l.max_t.max(x.t);
    }

    /// Splits the samples of undefined refs into lost ones (total, and the first
    /// [`MAX_LOST_REFS_LISTED`] refs) and those a later flush mark covers (already in the
    /// store: the series left the head), returned third.
    ///
    /// A mark speaks for in-order samples only (`Series::flush_mark`), so out-of-order
    /// samples of an undefined ref under a mark may be counted as flushed when they were
    /// not; for a series that left the head they were (it leaves only once every chunk is
    /// released), so this only matters when a `Series` record was lost to corruption.
    fn settle(&mut self) -> (u64, BTreeMap<u64, LostRef>, u64) {
        let mut lost = 0;
        let mut refs = BTreeMap::new();
        let mut flushed = 0;
        for (r, l) in self.undefined.drain() {
            if self
                .flushed_undefined
                .get(&r)
                .is_some_and(|&m| m >= l.max_t)
            {
                flushed += l.samples;
                continue;
            }
            lost += l.samples;
            refs.insert(r, l);
        }
        while refs.len() > MAX_LOST_REFS_LISTED {
            refs.pop_last();
        }
        (lost, refs, flushed)
    }

    /// Counts and lists one damaged region. Listed regions are logged at the end of replay,
    /// when the timestamp after them is known; the ones past the list are logged now.
    fn record(&mut self, c: Corruption, stats: &mut ReplayStats) {
        stats.corrupt_regions += 1;
        stats.corrupt_bytes += c.end - c.offset;
        if stats.corruptions.len() < MAX_CORRUPTIONS_LISTED {
            self.pending_after.push(stats.corruptions.len());
            stats.corruptions.push(c);
        } else {
            log_corruption(&c);
        }
    }
}

/// One `error` line for a damaged region.
fn log_corruption(c: &Corruption) {
    error!(
        kind = %c.kind,
        file = %c.file,
        offset = c.offset,
        end = c.end,
        bytes = c.end - c.offset,
        records_skipped_at_least = c.records_skipped,
        pages = c.pages,
        damaged_series_records = ?c.damaged_series,
        damaged_refs = ?c.damaged_refs,
        damaged_samples = c.damaged_samples,
        damaged_time_range = ?c.damaged_t,
        newest_t_before = ?c.t_before,
        oldest_t_after = ?c.t_after,
        evidence = c.evidence.as_deref().unwrap_or("(not kept)"),
        reason = %c.reason,
        "WAL corruption: skipped a damaged region and continued at the next valid record \
         (damaged_* fields are what the damaged bytes still say, unverified)"
    );
}

/// The end of the last non-zero byte at or after `from` (or `from` if there is none).
fn nonzero_end(buf: &[u8], from: usize) -> usize {
    from + buf[from..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p + 1)
}

/// Describes the damaged region `[offset, end)` of `file`, looking into its bytes without
/// their CRCs: the frames whose length words still chain through it, and what those decode
/// to. `checkpoint` says the frames are checkpoint entries (their refs come from the caller).
#[allow(clippy::too_many_arguments)]
fn describe(
    buf: &[u8],
    kind: CorruptionKind,
    file: &str,
    offset: usize,
    end: usize,
    reason: String,
    evidence: Option<String>,
    t_before: Option<i64>,
    checkpoint: bool,
) -> Corruption {
    let end = end.clamp(offset, buf.len().max(offset));
    let mut c = Corruption {
        kind,
        file: file.to_owned(),
        offset: offset as u64,
        end: end as u64,
        reason,
        records_skipped: 0,
        pages: if end > offset {
            ((end as u64 - 1) / PAGE_BYTES) - (offset as u64 / PAGE_BYTES) + 1
        } else {
            0
        },
        evidence,
        damaged_refs: Vec::new(),
        damaged_series: Vec::new(),
        damaged_samples: 0,
        damaged_t: None,
        t_before,
        t_after: None,
    };
    let mut refs = BTreeSet::new();
    let mut off = offset;
    while off + FRAME_HEADER_BYTES <= end && c.records_skipped < MAX_SALVAGE_FRAMES {
        let len = u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        let ty = buf[off + 4];
        let next = off + FRAME_HEADER_BYTES + len;
        if len == 0 || next > end {
            break;
        }
        c.records_skipped += 1;
        if !checkpoint {
            match decode_payload(ty, &buf[off + FRAME_HEADER_BYTES..next]) {
                Ok(Record::Series { series_ref, .. }) => {
                    c.damaged_series.push(series_ref);
                    refs.insert(series_ref);
                }
                Ok(Record::Samples(s)) => {
                    c.damaged_samples += s.len() as u64;
                    for x in s.iter() {
                        if refs.len() < MAX_REFS_PER_CORRUPTION {
                            refs.insert(x.series_ref);
                        }
                        let (a, b) = c.damaged_t.unwrap_or((x.t, x.t));
                        c.damaged_t = Some((a.min(x.t), b.max(x.t)));
                    }
                }
                Ok(Record::FlushMark { series_ref, .. }) => {
                    refs.insert(series_ref);
                }
                Ok(Record::Histograms(h) | Record::FloatHistograms(h)) => {
                    c.damaged_samples += h.len() as u64;
                    for x in h.iter() {
                        if refs.len() < MAX_REFS_PER_CORRUPTION {
                            refs.insert(x.series_ref);
                        }
                    }
                }
                Ok(Record::Exemplars { .. } | Record::Metadata { .. }) | Err(_) => {}
            }
        }
        off = next;
    }
    // Where the chain of length words breaks, non-zero bytes before the end are the rest of
    // at least one more record (one that started in the damaged bytes).
    if off < end && buf[off..end].iter().any(|&b| b != 0) {
        c.records_skipped += 1;
    }
    c.records_skipped = c.records_skipped.max(1);
    c.damaged_series.truncate(MAX_REFS_PER_CORRUPTION);
    c.damaged_refs = refs.into_iter().take(MAX_REFS_PER_CORRUPTION).collect();
    c
}

/// The `*.broken` files of the WAL directory, and the bound on them.
///
/// Two kinds: whole copies of damaged files (`<name>.broken`), which weft never deletes, and
/// the cut bytes of torn tails (`<segment>.torn.broken`), which hold only unacknowledged
/// records: the oldest of those make room for new evidence when the bound is reached, so
/// that crash after crash cannot crowd out the evidence of a real corruption.
struct Evidence {
    names: BTreeSet<String>,
    files: usize,
    bytes: u64,
    /// Copies not kept (over the bound, or the write failed).
    not_kept: u64,
    /// Torn-tail evidence files and their sizes, oldest (lowest name) first.
    torn: Vec<(String, u64)>,
}

fn is_evidence(name: &str) -> bool {
    name.contains(".broken")
}

/// Suffix of whole copies of damaged files.
const WHOLE: &str = "broken";
/// Suffix of torn-tail evidence.
const TORN: &str = "torn.broken";

impl Evidence {
    fn new(dir: &dyn WalDir, l: &Listing) -> Self {
        let mut ev = Evidence {
            names: l.names.clone(),
            files: 0,
            bytes: 0,
            not_kept: 0,
            torn: Vec::new(),
        };
        for n in l.names.iter().filter(|n| is_evidence(n)) {
            let size = dir.size(n).unwrap_or(0);
            ev.files += 1;
            ev.bytes += size;
            if n.contains(".torn.broken") {
                ev.torn.push((n.clone(), size));
            }
        }
        ev
    }

    /// `<base>.<suffix>`, or `<base>.<suffix>.N` for the first free N.
    fn free_name(&self, base: &str, suffix: &str) -> String {
        let mut name = format!("{base}.{suffix}");
        let mut n = 1;
        while self.names.contains(&name) {
            name = format!("{base}.{suffix}.{n}");
            n += 1;
        }
        name
    }

    fn fits(&self, len: u64) -> bool {
        self.files < MAX_EVIDENCE_FILES && self.bytes + len <= MAX_EVIDENCE_BYTES
    }

    /// Whether `len` more bytes in one more file fit in the bound, after removing the oldest
    /// torn-tail evidence if needed; logs if they do not.
    fn admit(&mut self, dir: &dyn WalDir, base: &str, len: u64) -> bool {
        let mut removed = 0;
        while !self.fits(len) && !self.torn.is_empty() {
            let (old, size) = self.torn.remove(0);
            if let Err(e) = dir.remove(&old) {
                warn!(file = %old, error = %e, "could not remove old torn-tail evidence");
                break;
            }
            self.names.remove(&old);
            self.files -= 1;
            self.bytes -= size.min(self.bytes);
            removed += 1;
            info!(file = %old, "removed the oldest torn-tail evidence to make room for new evidence");
        }
        if removed > 0 {
            if let Err(e) = dir.sync_dir() {
                warn!(error = %e, "fsync of the WAL directory after removing old evidence failed");
            }
        }
        let ok = self.fits(len);
        if !ok {
            self.not_kept += 1;
            warn!(
                file = %base,
                bytes = len,
                evidence_files = self.files,
                evidence_bytes = self.bytes,
                max_files = MAX_EVIDENCE_FILES,
                max_bytes = MAX_EVIDENCE_BYTES,
                "not keeping evidence: the WAL directory already holds the most *.broken \
                 evidence weft keeps; look at them and remove them to keep new evidence"
            );
        }
        ok
    }

    /// Writes `data` to a new evidence file for `base`, durably (file and directory fsync).
    fn write(
        &mut self,
        dir: &dyn WalDir,
        base: &str,
        suffix: &str,
        data: &[u8],
    ) -> Result<String, WalError> {
        let name = self.free_name(base, suffix);
        let mut w = dir.create(&name).map_err(|source| WalError::Io {
            op: "create",
            name: name.clone(),
            source,
        })?;
        w.write_all(data).map_err(|source| WalError::Io {
            op: "write",
            name: name.clone(),
            source,
        })?;
        w.sync().map_err(|source| WalError::Sync {
            what: SyncTarget::File,
            name: name.clone(),
            source,
        })?;
        dir.sync_dir().map_err(|source| WalError::Sync {
            what: SyncTarget::Dir,
            name: name.clone(),
            source,
        })?;
        self.names.insert(name.clone());
        self.files += 1;
        self.bytes += data.len() as u64;
        if suffix == TORN {
            self.torn.push((name.clone(), data.len() as u64));
        }
        Ok(name)
    }

    /// A whole copy of the damaged file `base` (whose bytes are `data`): an existing identical
    /// copy if there is one (a restart finding the same damage again), else a new one within
    /// the bound. The damaged file itself is never changed, so a failure here only costs the
    /// copy: it is logged, and replay goes on.
    fn keep_whole(&mut self, dir: &dyn WalDir, base: &str, data: &[u8]) -> Option<String> {
        let prefix = format!("{base}.{WHOLE}");
        let mut existing = Vec::new();
        for n in self.names.iter().filter(|n| n.starts_with(&prefix)) {
            if dir.size(n).ok() == Some(data.len() as u64)
                && dir.read_into(n, &mut existing).is_ok()
                && existing == data
            {
                return Some(n.clone());
            }
        }
        if !self.admit(dir, base, data.len() as u64) {
            return None;
        }
        match self.write(dir, base, WHOLE, data) {
            Ok(n) => Some(n),
            Err(e) => {
                self.not_kept += 1;
                error!(file = %base, error = %e,
                    "could not keep a copy of the damaged file; it is left unchanged in place");
                None
            }
        }
    }
}

fn cut_torn_tail(
    dir: &dyn WalDir,
    ev: &mut Evidence,
    name: &str,
    buf: &[u8],
    offset: u64,
    reason: String,
) -> Result<TornTail, WalError> {
    let off = offset as usize;
    let end = nonzero_end(buf, off);
    // Evidence first, durably, and only then change the segment. Past the evidence bound the
    // bytes are cut without a copy: a torn tail holds only unacknowledged records.
    let evidence = if ev.admit(dir, name, (end - off) as u64) {
        ev.write(dir, name, TORN, &buf[off..end])?
    } else {
        "(not kept: evidence limit reached)".to_owned()
    };
    dir.zero_range(name, offset, (end - off) as u64)
        .map_err(|source| WalError::Io {
            op: "zero",
            name: name.to_owned(),
            source,
        })?;
    let torn = TornTail {
        segment: name.to_owned(),
        offset,
        dropped_bytes: (end - off) as u64,
        evidence,
        reason,
    };
    warn!(
        segment = %torn.segment,
        offset = torn.offset,
        dropped_bytes = torn.dropped_bytes,
        evidence = %torn.evidence,
        reason = %torn.reason,
        "cut a torn tail off the last WAL segment (only unacknowledged records can be there)"
    );
    Ok(torn)
}

use std::io::Write as _;

/// A human-readable report of the WAL in `dir` for `weft inspect wal DIR`. Changes nothing.
pub fn inspect_dir(dir: &dyn WalDir) -> Result<String, WalError> {
    use std::fmt::Write;
    let l = list(dir)?;
    let mut out = String::new();
    let _ = writeln!(out, "WAL directory {}", dir.location());
    let _ = writeln!(out, "\ncheckpoints:");
    if l.checkpoints.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let mut any_valid = false;
    for &c in &l.checkpoints {
        let name = checkpoint_name(c);
        match verify_checkpoint(dir, &name) {
            Ok(st) => {
                any_valid = true;
                let _ = writeln!(
                    out,
                    "  {name}  covers segments < {c}  series {}  chunks {}  bytes {}  valid",
                    st.series, st.chunks, st.bytes
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  {name}  INVALID: {e}");
            }
        }
    }
    if let (false, Some(&newest)) = (any_valid, l.checkpoints.last()) {
        if l.segments.first() == Some(&0) {
            let _ = writeln!(
                out,
                "  no valid checkpoint, but every segment from 00000000 is here: replay is lossless"
            );
        } else {
            let _ = writeln!(
                out,
                "  no valid checkpoint and the segments it covers are gone: repair salvages {}, \
                 stop refuses to start",
                checkpoint_name(newest)
            );
        }
    }
    for t in &l.tmp {
        let _ = writeln!(out, "  {t}  incomplete (removed at next start)");
    }
    let _ = writeln!(out, "\nsegments:");
    if l.segments.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let (mut t_records, mut t_samples, mut t_series, mut t_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    for (i, &seq) in l.segments.iter().enumerate() {
        let name = segment_name(seq);
        if let Err(e) = dir.read_into(&name, &mut buf) {
            let _ = writeln!(out, "  {name}  unreadable: {e}");
            continue;
        }
        let (mut records, mut samples, mut series, mut marks) = (0u64, 0u64, 0u64, 0u64);
        let last = i + 1 == l.segments.len();
        // Walk the whole segment the way `--wal.on-corruption=repair` would: every damaged
        // region, each followed by the records after it.
        let (mut pos, mut valid, mut damaged) = (0usize, 0u64, Vec::new());
        loop {
            let end = scan_segment(&buf, pos, |rec, _| {
                records += 1;
                match rec {
                    Record::Series { .. } => series += 1,
                    Record::Samples(s) => samples += s.len() as u64,
                    Record::FlushMark { .. } => marks += 1,
                    Record::Histograms(h) | Record::FloatHistograms(h) => samples += h.len() as u64,
                    Record::Exemplars { .. } | Record::Metadata { .. } => {}
                }
                Ok(())
            })?;
            match end {
                ScanEnd::Clean { valid_bytes } => {
                    valid += valid_bytes - pos as u64;
                    break;
                }
                ScanEnd::BadFrame { offset, reason } => {
                    valid += offset - pos as u64;
                    let later = find_valid_frame(&buf, offset as usize + 1);
                    match (last, later) {
                        (true, None) => {
                            damaged.push(format!("TORN TAIL at offset {offset}: {reason}"));
                            break;
                        }
                        (_, Some(o)) => {
                            damaged.push(format!(
                                "CORRUPT at offset {offset}..{o} ({} bytes, {} pages): {reason}; valid record at offset {o}",
                                o - offset,
                                (o.max(offset + 1) - 1) / PAGE_BYTES - offset / PAGE_BYTES + 1
                            ));
                            pos = o as usize;
                        }
                        (false, None) => {
                            damaged.push(format!(
                                "CORRUPT at offset {offset}: {reason}; no valid record after it in this segment, later segments follow"
                            ));
                            break;
                        }
                    }
                }
                ScanEnd::Undecodable { offset, reason } => {
                    valid += offset - pos as u64;
                    damaged.push(format!(
                        "CORRUPT at offset {offset}: undecodable record: {reason}"
                    ));
                    let len = read_frame(&buf[offset as usize..], MAX_PAYLOAD_BYTES)
                        .ok()
                        .flatten()
                        .map_or(1, |f| f.len);
                    pos = offset as usize + len;
                }
            }
        }
        let status = if damaged.is_empty() {
            "ok".to_owned()
        } else {
            damaged.join("; ")
        };
        let _ = writeln!(
            out,
            "  {name}  size {}  valid bytes {valid}  records {records} (series {series}, samples {samples}, flush marks {marks})  {status}",
            buf.len()
        );
        t_records += records;
        t_samples += samples;
        t_series += series;
        t_bytes += valid;
    }
    let broken: Vec<&String> = l.names.iter().filter(|n| n.contains(".broken")).collect();
    if !broken.is_empty() {
        let _ = writeln!(out, "\nevidence files:");
        for b in broken {
            let _ = writeln!(out, "  {b}");
        }
    }
    let _ = writeln!(
        out,
        "\ntotals: {} checkpoints, {} segments, {t_bytes} valid bytes, {t_records} records, {t_series} series records, {t_samples} samples",
        l.checkpoints.len(),
        l.segments.len()
    );
    Ok(out)
}
