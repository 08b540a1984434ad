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
//!   the last, or a frame whose CRC is right but whose content cannot be decoded. Replay stops
//!   with [`WalError::Corrupt`] naming the segment and offset, and changes nothing on disk.
//!   The operator decides (see `docs/wal.md`, "Operator's choices").

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::checkpoint::{
    checkpoint_name, parse_checkpoint_name, read_checkpoint, verify_checkpoint, CheckpointSeries,
    CheckpointStats,
};
use super::record::{decode_payload, read_frame, Record, RecordError, MAX_PAYLOAD_BYTES};
use super::segment::{parse_segment_name, segment_name, WalDir};
use super::{SyncTarget, WalError};

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

/// What replay found.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    /// The checkpoint replay started from.
    pub checkpoint: Option<CheckpointStats>,
    /// Checkpoints that failed validation (left in place), with the reason.
    pub corrupt_checkpoints: Vec<(u64, String)>,
    /// Segments read.
    pub segments: u64,
    /// Records read from segments.
    pub records: u64,
    /// Samples in those records.
    pub samples: u64,
    /// Bytes of valid records read.
    pub bytes: u64,
    /// The torn tail that was cut, if any.
    pub torn: Option<TornTail>,
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

/// Walks the frames of one segment, calling `f(record, offset)` for each valid one.
pub(crate) fn scan_segment(
    buf: &[u8],
    mut f: impl FnMut(Record<'_>, u64) -> Result<(), WalError>,
) -> Result<ScanEnd, WalError> {
    let mut off = 0usize;
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

/// Replays the WAL in `dir`, calling `apply` for every checkpoint series and record in order.
///
/// Repairs a torn tail (keeping the evidence), removes incomplete `checkpoint.*.tmp` files,
/// and otherwise changes nothing. See the module docs for the policy.
pub fn replay(
    dir: &dyn WalDir,
    mut apply: impl FnMut(ReplayItem<'_>) -> Result<(), ApplyError>,
) -> Result<ReplayStats, WalError> {
    let started = Instant::now();
    let l = list(dir)?;
    let mut stats = ReplayStats::default();
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
            }
        }
    }
    let start = stats.checkpoint.map_or(0, |c| c.index);
    if let Some(c) = stats.checkpoint {
        let name = checkpoint_name(c.index);
        read_checkpoint(dir, &name, |s| {
            apply(ReplayItem::Series(s)).map_err(WalError::Apply)
        })?;
        info!(checkpoint = %name, series = c.series, chunks = c.chunks, "loaded checkpoint");
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
        let (mut records, mut samples, mut bytes) = (0u64, 0u64, 0u64);
        let end = scan_segment(&buf, |rec, _| {
            records += 1;
            samples += rec.num_samples() as u64;
            apply(ReplayItem::Record(rec)).map_err(WalError::Apply)
        })?;
        let is_last = i + 1 == segs.len();
        match end {
            ScanEnd::Clean { valid_bytes } => bytes += valid_bytes,
            ScanEnd::Undecodable { offset, reason } => {
                return Err(WalError::Corrupt {
                    segment: name,
                    offset,
                    reason: format!("record with a valid CRC cannot be decoded: {reason}"),
                    later_segments: (segs.len() - i - 1) as u64,
                })
            }
            ScanEnd::BadFrame { offset, reason } => {
                let later = find_valid_frame(&buf, offset as usize + 1);
                if !is_last || later.is_some() {
                    let reason = match later {
                        Some(o) => format!("{reason}; a valid record follows at offset {o}"),
                        None => reason,
                    };
                    return Err(WalError::Corrupt {
                        segment: name,
                        offset,
                        reason,
                        later_segments: (segs.len() - i - 1) as u64,
                    });
                }
                bytes += offset;
                stats.torn = Some(cut_torn_tail(dir, &l, &name, &buf, offset, reason)?);
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

fn cut_torn_tail(
    dir: &dyn WalDir,
    l: &Listing,
    name: &str,
    buf: &[u8],
    offset: u64,
    reason: String,
) -> Result<TornTail, WalError> {
    let off = offset as usize;
    let end = off
        + buf[off..]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p + 1);
    let mut evidence = format!("{name}.broken");
    let mut n = 1;
    while l.names.contains(&evidence) {
        evidence = format!("{name}.broken.{n}");
        n += 1;
    }
    let io = |op: &'static str, n: &str| {
        let n = n.to_owned();
        move |source| WalError::Io {
            op,
            name: n,
            source,
        }
    };
    // Evidence first, durably, and only then change the segment.
    let mut w = dir.create(&evidence).map_err(io("create", &evidence))?;
    w.write_all(&buf[off..end])
        .map_err(io("write", &evidence))?;
    let sync = |what, n: &str| {
        let n = n.to_owned();
        move |source| WalError::Sync {
            what,
            name: n,
            source,
        }
    };
    w.sync().map_err(sync(SyncTarget::File, &evidence))?;
    dir.sync_dir().map_err(sync(SyncTarget::Dir, &evidence))?;
    dir.zero_range(name, offset, (end - off) as u64)
        .map_err(io("zero", name))?;
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
    for &c in &l.checkpoints {
        let name = checkpoint_name(c);
        match verify_checkpoint(dir, &name) {
            Ok(st) => {
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
        let end = scan_segment(&buf, |rec, _| {
            records += 1;
            match rec {
                Record::Series { .. } => series += 1,
                Record::Samples(s) => samples += s.len() as u64,
                Record::FlushMark { .. } => marks += 1,
            }
            Ok(())
        })?;
        let status = match &end {
            ScanEnd::Clean { .. } => "ok".to_owned(),
            ScanEnd::BadFrame { offset, reason } => {
                let later = find_valid_frame(&buf, *offset as usize + 1);
                let last = i + 1 == l.segments.len();
                match (last, later) {
                    (true, None) => format!("TORN TAIL at offset {offset}: {reason}"),
                    (_, Some(o)) => {
                        format!("CORRUPT at offset {offset}: {reason}; valid record at offset {o}")
                    }
                    (false, None) => {
                        format!("CORRUPT at offset {offset}: {reason}; later segments follow")
                    }
                }
            }
            ScanEnd::Undecodable { offset, reason } => {
                format!("CORRUPT at offset {offset}: undecodable record: {reason}")
            }
        };
        let valid = match end {
            ScanEnd::Clean { valid_bytes } => valid_bytes,
            ScanEnd::BadFrame { offset, .. } | ScanEnd::Undecodable { offset, .. } => offset,
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
