//! The write-ahead log: mmapped segments, CRC-framed records, group commit, checkpoints and
//! crash-safe replay. The design, the media assumptions and the byte formats are in
//! `docs/wal.md`.
//!
//! **Invariant:** `wal` knows nothing about HTTP, the object store or how the head stores
//! series. It moves [`Record`]s and [`CheckpointSeries`] to disk and back.
//!
//! **Invariant:** a position returned by [`Wal::append`] is reported durable by
//! [`Wal::wait_durable`] only after one successful `msync` covered it and every byte before it.
//!
//! The writer in one picture:
//!
//! ```text
//! push ─► encode (no lock) ─► copy into mapping (append mutex) ─► WalPos ─► wait_durable ─► ack
//!                                        │ notify                          ▲
//!                                        ▼                                 │ watch channel
//!                    sync thread: snapshot written end ─► one msync ───────┘
//! ```
//!
//! A round trip through the in-memory fake directory:
//!
//! ```
//! use std::borrow::Cow;
//! use std::sync::Arc;
//! use weft::wal::{MemDir, RefSample, Record, ReplayItem, SyncMode, Wal, WalConfig};
//!
//! let dir = MemDir::new();
//! let cfg = WalConfig { segment_size_bytes: 1 << 16, sync: SyncMode::Always, ..Default::default() };
//! let (wal, _) = Wal::open(Arc::new(dir.clone()), cfg.clone(), |_| Ok(())).unwrap();
//! // A series record defines ref 1; replay drops samples of refs nothing defines.
//! let series = Record::Series {
//!     series_ref: 1,
//!     tenant: Cow::Borrowed("t"),
//!     labels: vec![(Cow::Borrowed("__name__"), Cow::Borrowed("up"))],
//! };
//! let s = [RefSample { series_ref: 1, t: 1000, v: 1.5f64.to_bits() }];
//! let pos = wal.append(&[series, Record::Samples(Cow::Borrowed(&s))]).unwrap();
//! tokio::runtime::Builder::new_current_thread().build().unwrap()
//!     .block_on(wal.wait_durable(pos)).unwrap();
//! drop(wal);
//!
//! // Power loss: only synced bytes survive, and they hold the acknowledged sample.
//! let mut samples = 0;
//! let (_wal, stats) = Wal::open(Arc::new(dir.crash(0)), cfg, |item| {
//!     if let ReplayItem::Record(r) = item { samples += r.num_samples(); }
//!     Ok(())
//! }).unwrap();
//! assert_eq!((samples, stats.samples), (1, 1));
//! ```

pub mod checkpoint;
mod exmeta_record;
mod hist_record;
pub mod record;
pub mod replay;
pub mod schedule;
pub mod segment;

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{error, info, warn};

pub use checkpoint::{write_checkpoint, CheckpointChunk, CheckpointSeries, CheckpointStats};
pub use record::{Record, RecordError, RefHistogram, RefSample};
pub use replay::{
    replay, replay_with, ApplyError, Corruption, CorruptionKind, LostRef, ReplayItem, ReplayStats,
    TornTail,
};
pub use schedule::{run_checkpoint_schedule, CheckpointPolicy};
pub use segment::{FsDir, MemDir, SegmentFile, SyncFailed, WalDir};

use segment::segment_name;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Shortest bound on how long a sync round waits for more appends to join it (see
/// `sync_loop`). Rationale: a fraction of one msync (~0.5 ms on the SSDs we measured), so it
/// can only add a little latency, and only when fewer writers than expected have come back.
pub const GROUP_COMMIT_GATHER: std::time::Duration = std::time::Duration::from_micros(200);
/// Longest bound on the gather: the bound is the last msync's duration, within
/// [`GROUP_COMMIT_GATHER`, `GROUP_COMMIT_GATHER_MAX`]. Rationale: on a disk whose msync
/// takes ~3 ms (this project's VM), the writers a round acknowledged need 1–2 ms to come
/// back with their next push; a 200 µs gather split them into two groups that alternated,
/// each waiting two msyncs a push.
pub const GROUP_COMMIT_GATHER_MAX: std::time::Duration = std::time::Duration::from_millis(2);
/// Smallest segment size accepted. Rationale: smaller segments only multiply files and fsyncs.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 4096;

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `--wal.sync=always` (default): [`Wal::wait_durable`] returns after an `msync` covered
    /// the position. Concurrent writers share syncs (group commit).
    #[default]
    Always,
    /// `--wal.sync=never`: never `msync`; `wait_durable` returns at once. Records survive a
    /// crash of the process (they are in the page cache) but not power loss or a kernel
    /// crash. A documented opt-out for benchmarks.
    Never,
}

/// What replay does with damage that is not a torn tail (`--wal.on-corruption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorruption {
    /// `repair` (default): keep the evidence (`*.broken`, bounded), skip to the next valid
    /// record (or checkpoint entry), log and count what was lost, and start. See
    /// `docs/wal.md`, "Corruption in the middle".
    #[default]
    Repair,
    /// `stop`: refuse to start with [`WalError::Corrupt`] or [`WalError::CorruptCheckpoint`],
    /// changing nothing on disk, and let an operator decide.
    Stop,
}

/// WAL settings. Every field is set explicitly at the call site.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Size of each segment file (`--wal.segment-size`), 64 MiB by default.
    pub segment_size_bytes: u64,
    /// `--wal.sync`.
    pub sync: SyncMode,
    /// `--wal.on-corruption`.
    pub on_corruption: OnCorruption,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            sync: SyncMode::Always,
            on_corruption: OnCorruption::Repair,
        }
    }
}

/// Everything that can go wrong in the WAL.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WalError {
    /// An earlier msync/fsync (or store into a segment) failed. The WAL refuses all further
    /// work until the process restarts and replays: a failed sync is never retried, because
    /// the kernel may have dropped the dirty pages and a retry could falsely succeed.
    /// Map to 503; `/ready` reports it through [`Wal::is_poisoned`].
    #[error("WAL is poisoned by an earlier I/O failure; restart to recover")]
    Poisoned,
    /// No space to allocate a new segment. Nothing was lost; the next append retries the
    /// allocation, so the WAL recovers by itself when space returns. Map to 503 + Retry-After.
    #[error("disk full: cannot allocate WAL segment {segment}")]
    DiskFull {
        /// The segment that could not be allocated.
        segment: String,
    },
    /// A sync failed: an `msync` of a segment, an `fsync` of a file (checkpoint, evidence of
    /// a torn tail, a new segment) or an `fsync` of the directory (after a create, a rename
    /// or a removal). It always poisons the WAL: after a failed sync the kernel may have
    /// dropped the dirty pages or directory entries and marked them clean, so a retry could
    /// succeed without making anything durable (the 2018 "fsyncgate" lesson). Later calls
    /// get [`WalError::Poisoned`].
    #[error("WAL {what} failed ({name}): {source}; the WAL is poisoned until restart")]
    Sync {
        /// What was being synced.
        what: SyncTarget,
        /// The file synced, or for [`SyncTarget::Dir`] the entry whose creation, rename or
        /// removal was being made durable.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error other than a failed sync (a failed sync is [`WalError::Sync`]).
    #[error("WAL I/O error: {op} {name}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// One record is larger than a segment (or the format limit).
    #[error("record of {bytes} bytes exceeds the limit of {limit}")]
    RecordTooLarge {
        /// Size of the encoded record.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Corruption that is not a torn tail, with `--wal.on-corruption=stop`. Replay stopped;
    /// nothing was changed on disk.
    #[error(
        "WAL corrupt in segment {segment} at offset {offset}: {reason} \
         ({later_segments} later segments kept); stopping because --wal.on-corruption=stop \
         (repair, the default, would keep the evidence, skip the damage and start); \
         see docs/operations.md, \"Corruption recovery\""
    )]
    Corrupt {
        /// Segment file name.
        segment: String,
        /// Offset of the first bad byte.
        offset: u64,
        /// What is wrong.
        reason: String,
        /// How many segments follow (all left untouched).
        later_segments: u64,
    },
    /// A segment that must exist between the checkpoint and the newest segment is missing.
    #[error("WAL segment {segment} is missing (next present: {found})")]
    MissingSegment {
        /// The missing segment.
        segment: String,
        /// The segment found in its place.
        found: String,
    },
    /// A checkpoint failed validation. Returned by replay only with
    /// `--wal.on-corruption=stop`, when no valid checkpoint and no complete set of segments
    /// can stand in for it.
    #[error("checkpoint {name} corrupt at offset {offset}: {reason}")]
    CorruptCheckpoint {
        /// Checkpoint file name.
        name: String,
        /// Offset of the bad entry.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The replay callback failed.
    #[error("applying a replayed record failed: {0}")]
    Apply(#[source] ApplyError),
    /// The WAL was shut down.
    #[error("WAL is closed")]
    Closed,
    /// A bad setting.
    #[error("bad WAL configuration: {0}")]
    Config(&'static str),
}

impl WalError {
    /// Whether this error leaves the WAL poisoned: a failed sync, or the poison itself.
    pub fn is_poisoning(&self) -> bool {
        matches!(self, WalError::Sync { .. } | WalError::Poisoned)
    }
}

/// What a failed sync was syncing (see [`WalError::Sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncTarget {
    /// `msync` of a range of a mapped segment (the group commit).
    Segment,
    /// `fsync` of a whole file (a checkpoint's `.tmp`, a torn tail's evidence, a new segment).
    File,
    /// `fsync` of the WAL directory, which makes creations, renames and removals durable.
    Dir,
}

impl std::fmt::Display for SyncTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncTarget::Segment => "msync of segment",
            SyncTarget::File => "fsync of file",
            SyncTarget::Dir => "fsync of the directory",
        })
    }
}

/// A position in the WAL: just past the last byte of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WalPos {
    /// Segment sequence number.
    pub segment: u64,
    /// Byte offset inside the segment.
    pub offset: u64,
}

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Successful `append` calls.
    pub appends: u64,
    /// Bytes of records appended.
    pub appended_bytes: u64,
    /// Completed sync batches (each may cover many appends).
    pub syncs: u64,
    /// Segments created.
    pub segments_created: u64,
}

#[derive(Debug)]
struct Current {
    seq: u64,
    file: Arc<dyn SegmentFile>,
    /// End of the last record written.
    offset: u64,
    /// End of the range already handed to the sync thread.
    sync_requested: u64,
}

#[derive(Debug)]
struct PendingSync {
    seq: u64,
    file: Arc<dyn SegmentFile>,
    from: u64,
    to: u64,
}

#[derive(Debug)]
struct State {
    current: Option<Current>,
    next_seq: u64,
    /// Rotated segments whose tail still needs a sync, oldest first.
    to_sync: VecDeque<PendingSync>,
    /// End of the last append.
    written: WalPos,
    /// Successful appends so far (the sync thread sizes its batches with it).
    appends: u64,
    shutdown: bool,
}

#[derive(Debug)]
struct Shared {
    dir: Arc<dyn WalDir>,
    cfg: WalConfig,
    state: Mutex<State>,
    work: Condvar,
    poisoned: AtomicBool,
    durable: watch::Sender<WalPos>,
    appends: AtomicU64,
    appended_bytes: AtomicU64,
    /// Of those, bytes of checkpoints' copies ([`Wal::append_copy`]): not growth.
    copy_bytes: AtomicU64,
    syncs: AtomicU64,
    segments_created: AtomicU64,
    /// Checkpoints replay found corrupt: never chosen as the fallback to keep.
    bad_checkpoints: Mutex<BTreeSet<u64>>,
}

/// The write-ahead log writer. Share it behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    sync_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Replays the WAL in `dir` through `apply` (see [`replay`]) and opens it for appends.
    /// New records go to a fresh segment after every existing one.
    pub fn open(
        dir: Arc<dyn WalDir>,
        cfg: WalConfig,
        apply: impl FnMut(ReplayItem<'_>) -> Result<(), ApplyError>,
    ) -> Result<(Wal, ReplayStats), WalError> {
        if cfg.segment_size_bytes < MIN_SEGMENT_SIZE_BYTES {
            return Err(WalError::Config("segment size below 4096 bytes"));
        }
        if usize::try_from(cfg.segment_size_bytes).is_err() {
            return Err(WalError::Config("segment size does not fit in memory"));
        }
        let stats = replay::replay_with(dir.as_ref(), cfg.on_corruption, apply)?;
        let bad = stats.corrupt_checkpoints.iter().map(|(i, _)| *i).collect();
        let start = WalPos {
            segment: stats.next_seq,
            offset: 0,
        };
        let shared = Arc::new(Shared {
            dir,
            cfg,
            state: Mutex::new(State {
                current: None,
                next_seq: stats.next_seq,
                to_sync: VecDeque::new(),
                written: start,
                appends: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            poisoned: AtomicBool::new(false),
            durable: watch::Sender::new(start),
            appends: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            copy_bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            segments_created: AtomicU64::new(0),
            bad_checkpoints: Mutex::new(bad),
        });
        let sync_thread = match shared.cfg.sync {
            SyncMode::Always => {
                let s = shared.clone();
                let h = std::thread::Builder::new()
                    .name("weft-wal-sync".into())
                    .spawn(move || sync_loop(&s))
                    .map_err(|source| WalError::Io {
                        op: "spawn sync thread",
                        name: String::new(),
                        source,
                    })?;
                Some(h)
            }
            SyncMode::Never => None,
        };
        Ok((
            Wal {
                shared,
                sync_thread: Mutex::new(sync_thread),
            },
            stats,
        ))
    }

    /// [`Wal::open`] on a real directory (created if missing).
    pub fn open_path(
        path: &Path,
        cfg: WalConfig,
        apply: impl FnMut(ReplayItem<'_>) -> Result<(), ApplyError>,
    ) -> Result<(Wal, ReplayStats), WalError> {
        let dir = FsDir::open(path).map_err(|source| WalError::Io {
            op: "create dir",
            name: path.display().to_string(),
            source,
        })?;
        Self::open(Arc::new(dir), cfg, apply)
    }

    /// Appends `records` and returns the position just past them. The records are visible
    /// to replay after a process crash at once, and durable once [`Wal::wait_durable`] of the
    /// returned position returns `Ok`.
    ///
    /// Records are encoded before the lock is taken; the lock covers only the copy into the
    /// mapping (and, once per segment, allocating the next segment). Each record lies whole
    /// in one segment. On error some leading records of the batch may have been written; they
    /// were never acknowledged, and replaying them is harmless (see [`ReplayItem::Record`]).
    pub fn append(&self, records: &[Record<'_>]) -> Result<WalPos, WalError> {
        let s = &*self.shared;
        if s.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        let mut buf = Vec::with_capacity(256);
        let mut ends = Vec::with_capacity(records.len());
        let limit = s.cfg.segment_size_bytes as usize;
        for r in records {
            let start = buf.len();
            record::encode(r, &mut buf).map_err(|e| WalError::RecordTooLarge {
                bytes: match e {
                    RecordError::BadLength { len, .. } => len as usize,
                    _ => 0,
                },
                limit: record::MAX_PAYLOAD_BYTES,
            })?;
            if buf.len() - start > limit {
                return Err(WalError::RecordTooLarge {
                    bytes: buf.len() - start,
                    limit,
                });
            }
            ends.push(buf.len());
        }
        if ends.is_empty() {
            return Ok(s.state.lock().written);
        }

        let mut st = s.state.lock();
        if st.shutdown {
            return Err(WalError::Closed);
        }
        let mut done = 0usize;
        let mut i = 0usize;
        while i < ends.len() {
            if st.current.is_none() {
                self.fail_closed(self.start_segment(&mut st))?;
            }
            let cur = st.current.as_mut().expect("segment just started");
            let room = cur.file.len() - cur.offset;
            // The longest run of whole records that fits in this segment.
            let mut j = i;
            while j < ends.len() && (ends[j] - done) as u64 <= room {
                j += 1;
            }
            if j == i {
                self.rotate(&mut st);
                continue;
            }
            let chunk = &buf[done..ends[j - 1]];
            if let Err(source) = cur.file.write_at(cur.offset, chunk) {
                self.poison(&format!("store into segment failed: {source}"));
                return Err(WalError::Io {
                    op: "write",
                    name: segment_name(cur.seq),
                    source,
                });
            }
            cur.offset += chunk.len() as u64;
            st.written = WalPos {
                segment: cur.seq,
                offset: cur.offset,
            };
            done = ends[j - 1];
            i = j;
        }
        let pos = st.written;
        st.appends += 1;
        drop(st);
        if s.cfg.sync == SyncMode::Always {
            s.work.notify_one();
        }
        s.appends.fetch_add(1, Ordering::Relaxed);
        s.appended_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(pos)
    }

    /// [`Wal::append`] for a checkpoint's copy of state that its file does not hold (the
    /// exemplar and metadata stores, logged right after the cut): these bytes do not count
    /// in [`Wal::growth_bytes`], so a large copy cannot make the next checkpoint due at once.
    pub fn append_copy(&self, records: &[Record<'_>]) -> Result<WalPos, WalError> {
        let pos = self.append(records)?;
        let mut buf = Vec::new();
        let bytes: usize = records
            .iter()
            .map(|r| {
                buf.clear();
                record::encode(r, &mut buf).unwrap_or(0)
            })
            .sum();
        self.shared
            .copy_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(pos)
    }

    /// Bytes appended so far that count as WAL growth for the checkpoint schedule: all but
    /// checkpoints' copies.
    pub fn growth_bytes(&self) -> u64 {
        let s = &*self.shared;
        s.appended_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(s.copy_bytes.load(Ordering::Relaxed))
    }

    /// Returns once `pos` (from [`Wal::append`]) is durable: one `msync` that completed after
    /// the append covered it. With [`SyncMode::Never`] it returns at once.
    pub async fn wait_durable(&self, pos: WalPos) -> Result<(), WalError> {
        let s = &*self.shared;
        if s.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        if s.cfg.sync == SyncMode::Never {
            return Ok(());
        }
        let mut rx = s.durable.subscribe();
        loop {
            if s.poisoned.load(Ordering::Acquire) {
                return Err(WalError::Poisoned);
            }
            if *rx.borrow_and_update() >= pos {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(WalError::Closed);
            }
        }
    }

    /// The newest durable position.
    pub fn durable_pos(&self) -> WalPos {
        *self.shared.durable.borrow()
    }

    /// Whether an I/O failure has poisoned the WAL (for `/ready`).
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Writer counters.
    pub fn stats(&self) -> WalStats {
        let s = &*self.shared;
        WalStats {
            appends: s.appends.load(Ordering::Relaxed),
            appended_bytes: s.appended_bytes.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            segments_created: s.segments_created.load(Ordering::Relaxed),
        }
    }

    /// Cuts the WAL at a segment boundary for a checkpoint and returns `N`: every record
    /// appended before this call is in a segment numbered below `N`, every later one in `N`
    /// or above. Appends continue meanwhile.
    ///
    /// The caller must then snapshot a head state that includes every record appended before
    /// the cut (it may include later ones) and pass it to [`Wal::checkpoint`] with this `N`.
    pub fn cut(&self) -> Result<u64, WalError> {
        if self.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        let mut st = self.shared.state.lock();
        if st.current.as_ref().is_some_and(|c| c.offset > 0) {
            self.rotate(&mut st);
        }
        Ok(st.current.as_ref().map_or(st.next_seq, |c| c.seq))
    }

    /// Writes `checkpoint.<n>` from `series` (a snapshot taken after [`Wal::cut`] returned
    /// `n`), then deletes what is no longer needed: checkpoints older than the previous one,
    /// and the segments the *previous* checkpoint covers. Keeping the previous checkpoint's
    /// later segments is what makes falling back to it lossless if the new one is corrupt.
    pub fn checkpoint(
        &self,
        n: u64,
        series: impl Iterator<Item = CheckpointSeries>,
    ) -> Result<CheckpointStats, WalError> {
        if self.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        // Every failed sync in here (the checkpoint's fsync, the directory fsync after its
        // rename or after the cleanup) poisons: the next call fails closed instead of
        // retrying a sync whose earlier failure may have dropped the dirty state.
        self.fail_closed(self.checkpoint_inner(n, series))
    }

    fn checkpoint_inner(
        &self,
        n: u64,
        series: impl Iterator<Item = CheckpointSeries>,
    ) -> Result<CheckpointStats, WalError> {
        let dir = self.shared.dir.as_ref();
        let stats = write_checkpoint(dir, n, series)?;
        let l = replay::list(dir)?;
        let bad = self.shared.bad_checkpoints.lock().clone();
        let prev = l
            .checkpoints
            .iter()
            .copied()
            .filter(|&c| c < n && !bad.contains(&c))
            .max();
        if let Some(prev) = prev {
            let mut removed = Vec::new();
            for &c in l.checkpoints.iter().filter(|&&c| c < prev) {
                removed.push(checkpoint::checkpoint_name(c));
            }
            for &s in l.segments.iter().filter(|&&s| s < prev) {
                removed.push(segment_name(s));
            }
            for name in &removed {
                dir.remove(name).map_err(|source| WalError::Io {
                    op: "remove",
                    name: name.clone(),
                    source,
                })?;
            }
            dir.sync_dir().map_err(|source| WalError::Sync {
                what: SyncTarget::Dir,
                name: format!("removal of {} files", removed.len()),
                source,
            })?;
            if !removed.is_empty() {
                info!(
                    checkpoint = n,
                    removed = removed.len(),
                    "WAL cleanup after checkpoint"
                );
            }
        }
        info!(
            checkpoint = n,
            series = stats.series,
            chunks = stats.chunks,
            bytes = stats.bytes,
            "wrote checkpoint"
        );
        Ok(stats)
    }

    /// Syncs everything appended so far (in [`SyncMode::Always`]), stops the sync thread and
    /// closes the WAL. Later calls fail with [`WalError::Closed`].
    pub fn close(&self) -> Result<(), WalError> {
        {
            let mut st = self.shared.state.lock();
            st.shutdown = true;
        }
        self.shared.work.notify_all();
        if let Some(h) = self.sync_thread.lock().take() {
            let _ = h.join();
        }
        if self.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    fn start_segment(&self, st: &mut State) -> Result<(), WalError> {
        let s = &*self.shared;
        let seq = st.next_seq;
        let name = segment_name(seq);
        match s.dir.create_segment(&name, s.cfg.segment_size_bytes) {
            Ok(file) => {
                st.current = Some(Current {
                    seq,
                    file,
                    offset: 0,
                    sync_requested: 0,
                });
                st.next_seq += 1;
                s.segments_created.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                warn!(segment = %name, "disk full: cannot allocate WAL segment; will retry on the next append");
                Err(WalError::DiskFull { segment: name })
            }
            Err(e) => match segment::SyncFailed::take(e) {
                Ok(f) => Err(WalError::Sync {
                    what: f.what,
                    name,
                    source: f.source,
                }),
                Err(source) => Err(WalError::Io {
                    op: "create segment",
                    name,
                    source,
                }),
            },
        }
    }

    /// Closes the current segment; its unsynced tail goes to the sync thread.
    fn rotate(&self, st: &mut State) {
        if let Some(cur) = st.current.take() {
            if self.shared.cfg.sync == SyncMode::Always && cur.offset > cur.sync_requested {
                st.to_sync.push_back(PendingSync {
                    seq: cur.seq,
                    file: cur.file,
                    from: cur.sync_requested,
                    to: cur.offset,
                });
            }
        }
    }

    fn poison(&self, why: &str) {
        poison(&self.shared, why);
    }

    /// Poisons the WAL if `r` is a failed sync, and passes `r` on. The one place that turns a
    /// [`WalError::Sync`] from a call into the poison.
    fn fail_closed<T>(&self, r: Result<T, WalError>) -> Result<T, WalError> {
        if let Err(e @ WalError::Sync { .. }) = &r {
            self.poison(&e.to_string());
        }
        r
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn poison(s: &Shared, why: &str) {
    if !s.poisoned.swap(true, Ordering::AcqRel) {
        error!(
            reason = why,
            "WAL poisoned: refusing further appends until restart"
        );
    }
    // Wake every waiter so it sees the poison.
    s.durable.send_modify(|_| {});
}

/// The group-commit loop: sync whatever has been written since the last round, in one
/// `msync` per segment touched, then publish the new durable position.
fn sync_loop(s: &Shared) {
    // Appends covered by the previous round, and the append count when it was taken.
    let (mut prev_batch, mut appends_at_last) = (0u64, 0u64);
    // How long the last msync took; bounds the gather.
    let mut last_sync = GROUP_COMMIT_GATHER;
    loop {
        let (batch, target) = {
            let mut st = s.state.lock();
            // The round waits for the writers the last round acknowledged *and* for those
            // that appended while it ran (they are waiting already). Waiting only for as
            // many as the last round covered let two groups settle into alternating rounds
            // for good, each push then waiting for two msyncs.
            let want = prev_batch + (st.appends - appends_at_last);
            let gather = last_sync.clamp(GROUP_COMMIT_GATHER, GROUP_COMMIT_GATHER_MAX);
            let mut gather_until = None;
            loop {
                let cur_pending = st
                    .current
                    .as_ref()
                    .is_some_and(|c| c.offset > c.sync_requested);
                if cur_pending || !st.to_sync.is_empty() {
                    // Gather: the writers acknowledged by the last round usually come back
                    // with their next push soon. Waiting (bounded by about one msync) until
                    // they and those already waiting are pending lets them share this msync
                    // instead of splitting into two alternating groups.
                    if st.shutdown || st.appends - appends_at_last >= want {
                        break;
                    }
                    let until =
                        *gather_until.get_or_insert_with(|| std::time::Instant::now() + gather);
                    if s.work.wait_until(&mut st, until).timed_out() {
                        break;
                    }
                    continue;
                }
                if st.shutdown {
                    return;
                }
                s.work.wait(&mut st);
            }
            prev_batch = st.appends - appends_at_last;
            appends_at_last = st.appends;
            let mut batch: Vec<PendingSync> = st.to_sync.drain(..).collect();
            if let Some(c) = st.current.as_mut() {
                if c.offset > c.sync_requested {
                    batch.push(PendingSync {
                        seq: c.seq,
                        file: c.file.clone(),
                        from: c.sync_requested,
                        to: c.offset,
                    });
                    c.sync_requested = c.offset;
                }
            }
            (batch, st.written)
        };
        let started = std::time::Instant::now();
        for p in &batch {
            if let Err(source) = p.file.sync_range(p.from, p.to - p.from) {
                let e = WalError::Sync {
                    what: SyncTarget::Segment,
                    name: format!("{} [{}, {})", segment_name(p.seq), p.from, p.to),
                    source,
                };
                poison(s, &e.to_string());
                return;
            }
        }
        last_sync = started.elapsed();
        s.syncs.fetch_add(1, Ordering::Relaxed);
        s.durable.send_if_modified(|d| {
            if target > *d {
                *d = target;
                true
            } else {
                false
            }
        });
    }
}

/// A report of the WAL directory at `dir` for `weft inspect wal DIR`. Changes nothing.
pub fn inspect(dir: &Path) -> Result<String, WalError> {
    if !dir.is_dir() {
        return Err(WalError::Io {
            op: "open dir",
            name: dir.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let d = FsDir::open(dir).map_err(|source| WalError::Io {
        op: "open dir",
        name: dir.display().to_string(),
        source,
    })?;
    replay::inspect_dir(&d)
}

#[cfg(test)]
mod tests;
