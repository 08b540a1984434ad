//! One series: its labels, its closed chunks and its open head chunk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::ooo::{find_in_chunk, in_window, OooOpen, OOO_CAP};
use super::HeadError;
use crate::chunk::{XorAppender, XorIterator, SAMPLES_PER_CHUNK};
use crate::model::Labels;
use crate::spill::{Spill, SpillError, SpillRef};
use crate::store::object::ENCODING_XOR;

mod hist;
use crate::wal::RefSample;
#[cfg(test)]
pub(crate) use hist::MAX_OPEN_HISTOGRAM_CHUNK_BYTES;
use std::sync::Arc;

/// A series in the head. The labels never change; the chunks sit behind a mutex.
///
/// Memory: every active series holds one of these (in an `Arc`), so its size is watched
/// (docs/benchmarks.md, "Memory per active series"): 152 bytes, 176 with the `Arc` counts
/// and the allocator's header. The closed chunks sit in a box of their own, allocated only
/// while there are some; the logged flag shares the ref's word; the last append time is a
/// 4-byte [`Tick`].
#[derive(Debug)]
pub struct Series {
    labels: Labels,
    /// Global ref (unique across tenants, kept across restarts by the WAL and checkpoints)
    /// in the low 63 bits; the top bit says whether a WAL `Series` record for this series
    /// has been appended.
    ref_and_logged: AtomicU64,
    data: Mutex<SeriesData>,
}

/// The top bit of [`Series::ref_and_logged`].
const LOGGED: u64 = 1 << 63;

#[derive(Debug)]
struct SeriesData {
    closed: ClosedList,
    open: XorAppender,
    /// Timestamp of the open chunk's first sample (meaningless while it is empty).
    open_min_t: i64,
    /// Newest sample's timestamp and value bits, valid when `has_last`.
    last_t: i64,
    last_v: u64,
    has_last: bool,
    /// When a sample was last appended (or the series restored): for `--flush.max-chunk-idle`
    /// and `--head.series-idle-timeout`.
    last_append: Tick,
}

/// A coarse wall-clock instant: tenths of a second since the process's first `Tick`, in 4
/// bytes instead of `Instant`'s 16. Differences wrap after 13.6 years, far beyond any idle
/// timeout. Resolution 100 ms: an idle check may fire up to 100 ms late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick(u32);

impl Tick {
    const UNIT: Duration = Duration::from_millis(100);

    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// Now.
    pub(crate) fn now() -> Tick {
        // Once per series per push: plain u64 arithmetic, no u128 division. The cast wraps
        // after 13.6 years, as `elapsed`'s wrapping difference expects.
        let e = Self::epoch().elapsed();
        Tick((e.as_secs() * 10 + u64::from(e.subsec_millis() / 100)) as u32)
    }

    /// Time since this tick (rounded down to the resolution).
    pub(crate) fn elapsed(self) -> Duration {
        Self::UNIT * Tick::now().0.wrapping_sub(self.0)
    }
}

/// A series' closed chunks, its out-of-order buffer and its native histogram state: one
/// pointer while there are none (most series, most of the time, once chunks are flushed and
/// released), a box otherwise. Sharing the box keeps `Series` at its size: the out-of-order
/// and histogram states cost nothing in a float series that never had an out-of-order
/// sample (see `a_series_entry_stays_within_its_allocation_class`).
#[derive(Debug, Default)]
struct ClosedList(Option<Box<Cold>>);

#[derive(Debug, Default)]
struct Cold {
    /// Sorted by `min_t` (unique: timestamps are unique within a series).
    chunks: Vec<ClosedChunk>,
    /// Out-of-order samples not in a chunk yet.
    ooo: OooOpen,
    /// The histogram state (`series/hist.rs`): an open chunk's appender and the newest
    /// histogram, allocated only by series with histograms.
    hist: Option<Box<hist::HistState>>,
}

impl std::ops::Deref for ClosedList {
    type Target = [ClosedChunk];
    fn deref(&self) -> &[ClosedChunk] {
        self.0.as_deref().map_or(&[], |v| v.chunks.as_slice())
    }
}

impl std::ops::DerefMut for ClosedList {
    fn deref_mut(&mut self) -> &mut [ClosedChunk] {
        match self.0.as_deref_mut() {
            Some(v) => v.chunks.as_mut_slice(),
            None => &mut [],
        }
    }
}

impl ClosedList {
    fn vec(&mut self) -> &mut Vec<ClosedChunk> {
        &mut self.0.get_or_insert_with(Default::default).chunks
    }

    /// The histogram state, if the series has had a histogram.
    fn hist(&self) -> Option<&hist::HistState> {
        self.0.as_deref()?.hist.as_deref()
    }

    fn hist_mut(&mut self) -> Option<&mut hist::HistState> {
        self.0.as_deref_mut()?.hist.as_deref_mut()
    }

    fn hist_or_insert(&mut self) -> &mut hist::HistState {
        self.0
            .get_or_insert_with(Default::default)
            .hist
            .get_or_insert_with(Default::default)
    }

    /// Adds a chunk where its `min_t` sorts it (at the end, for in-order cuts).
    fn push(&mut self, c: ClosedChunk) {
        let v = self.vec();
        let i = v.partition_point(|x| x.min_t < c.min_t);
        v.insert(i, c);
    }

    fn insert(&mut self, i: usize, c: ClosedChunk) {
        self.vec().insert(i, c);
    }

    /// The out-of-order buffer, if there is one.
    fn ooo(&self) -> Option<&OooOpen> {
        self.0.as_deref().map(|c| &c.ooo).filter(|o| !o.is_empty())
    }

    fn ooo_mut(&mut self) -> &mut OooOpen {
        &mut self.0.get_or_insert_with(Default::default).ooo
    }

    /// Drops the box once it holds nothing. A histogram state, once there is one, stays
    /// (it holds the open histogram chunk and the newest histogram, whatever the closed
    /// chunks do; its bytes are counted in `Head::index_bytes` until the series leaves).
    fn tidy(&mut self) {
        if self
            .0
            .as_deref()
            .is_some_and(|c| c.chunks.is_empty() && c.ooo.is_empty() && c.hist.is_none())
        {
            self.0 = None;
        }
    }

    fn retain_mut(&mut self, f: impl FnMut(&mut ClosedChunk) -> bool) {
        if let Some(v) = &mut self.0 {
            v.chunks.retain_mut(f);
        }
        self.tidy();
    }

    fn retain(&mut self, f: impl FnMut(&ClosedChunk) -> bool) {
        if let Some(v) = &mut self.0 {
            v.chunks.retain(f);
        }
        self.tidy();
    }
}

/// A chunk that is never appended to again: full (120 samples), cut early for a flush, or
/// an encoded out-of-order buffer (`ooo`: it may overlap other chunks in time).
#[derive(Debug)]
struct ClosedChunk {
    min_t: i64,
    max_t: i64,
    body: Body,
    flush: FlushState,
    ooo: bool,
    /// Chunk encoding (`store::object::ENCODING_*`): XOR, histogram or float histogram.
    encoding: u8,
}

/// Where a closed chunk's bytes are.
#[derive(Debug)]
enum Body {
    /// In memory. Shared (`Arc`) so that a query can hold the bytes without copying them
    /// under the series lock; the head's accounting counts them until it drops its reference.
    Mem(Arc<[u8]>),
    /// In a local spill file.
    Spilled(SpilledChunk),
}

/// A chunk in a spill file. Dropping it releases its reference, so a spill file is deleted
/// once none of its chunks is held any more.
#[derive(Debug)]
struct SpilledChunk {
    r: SpillRef,
    spill: Arc<Spill>,
}

impl SpilledChunk {
    /// Takes over a reference already counted by the spill (a write, or a retain).
    fn new(r: SpillRef, spill: Arc<Spill>) -> Self {
        Self { r, spill }
    }
}

impl Drop for SpilledChunk {
    fn drop(&mut self) {
        self.spill.release(&self.r);
    }
}

impl Body {
    /// The chunk's size in bytes, wherever it is.
    fn len(&self) -> usize {
        match self {
            Body::Mem(b) => b.len(),
            Body::Spilled(s) => s.r.len as usize,
        }
    }

    /// Bytes it takes in memory.
    fn mem_len(&self) -> usize {
        match self {
            Body::Mem(b) => b.len(),
            Body::Spilled(_) => 0,
        }
    }

    /// A copy of the bytes (read back from the spill file if spilled).
    fn to_vec(&self) -> Result<Vec<u8>, SpillError> {
        match self {
            Body::Mem(b) => Ok(b.to_vec()),
            Body::Spilled(s) => s.spill.read(&s.r),
        }
    }
}

/// Where a closed chunk stands with the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushState {
    /// Not in the store yet.
    Pending,
    /// Part of an object being uploaded.
    InFlight,
    /// In the store since `at`, in the flusher's object `object` (0: unknown, e.g. restored).
    Flushed {
        /// When the store acknowledged it.
        at: Instant,
        /// The flusher's id of the object that holds it.
        object: u64,
    },
}

/// A closed chunk waiting for the store, as the flusher sees it before choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingChunk {
    /// First sample's timestamp (unique within the series: it names the chunk).
    pub min_t: i64,
    /// Last sample's timestamp.
    pub max_t: i64,
    /// Its size in bytes.
    pub len: usize,
    /// Its chunk encoding (`store::object::ENCODING_*`).
    pub encoding: u8,
}

/// What releasing flushed chunks freed.
#[derive(Debug, Default)]
pub struct Released {
    /// Chunks dropped from memory.
    pub chunks: u64,
    /// Bytes of chunk data freed.
    pub bytes: u64,
    /// Flusher object ids some of whose chunks are no longer held here.
    pub objects: Vec<u64>,
}

/// A copy of one chunk's bytes and time range, taken for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCopy {
    /// First sample's timestamp.
    pub min_t: i64,
    /// Last sample's timestamp.
    pub max_t: i64,
    /// The chunk (2-byte count and bit stream), in `encoding`.
    pub data: Vec<u8>,
    /// Whether the object store holds it too.
    pub flushed: bool,
    /// Chunk encoding (`store::object::ENCODING_*`): XOR, histogram or float histogram.
    pub encoding: u8,
}

impl Default for ChunkCopy {
    fn default() -> Self {
        Self {
            min_t: 0,
            max_t: 0,
            data: Vec::new(),
            flushed: false,
            encoding: ENCODING_XOR,
        }
    }
}

/// One chunk picked for a query by [`Series::chunk_handles`]: its bytes shared with the
/// head, copied (the open chunk), or a reference into a spill file to read later.
#[derive(Debug)]
pub struct ChunkHandle {
    /// First sample's timestamp.
    pub min_t: i64,
    /// Last sample's timestamp.
    pub max_t: i64,
    /// Whether the object store holds it too.
    pub flushed: bool,
    /// Chunk encoding (`store::object::ENCODING_*`).
    pub encoding: u8,
    body: HandleBody,
}

#[derive(Debug)]
enum HandleBody {
    /// A closed chunk in memory, shared with the head.
    Mem(Arc<[u8]>),
    /// A copy of the open chunk.
    Copy(Vec<u8>),
    /// A spilled chunk; dropping the handle releases its spill reference.
    Spilled(SpilledChunk),
}

impl ChunkHandle {
    /// Bytes this handle holds that the head does not hold as well (the open chunk's copy):
    /// what a query must count against its budget when it holds the handle.
    pub fn held_bytes(&self) -> usize {
        match &self.body {
            HandleBody::Copy(b) => b.len(),
            HandleBody::Mem(_) | HandleBody::Spilled(_) => 0,
        }
    }

    /// The chunk's size in bytes, wherever it is.
    pub fn len(&self) -> usize {
        match &self.body {
            HandleBody::Mem(b) => b.len(),
            HandleBody::Copy(b) => b.len(),
            HandleBody::Spilled(s) => s.r.len as usize,
        }
    }

    /// Whether the chunk has no bytes (never, for a valid chunk).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk's bytes as a [`ChunkCopy`]; a spilled chunk is read from its file here
    /// (a `pread`: call it off the async runtime and outside any lock).
    pub fn load(self) -> Result<ChunkCopy, SpillError> {
        let data = match self.body {
            HandleBody::Mem(b) => b.to_vec(),
            HandleBody::Copy(b) => b,
            HandleBody::Spilled(s) => s.spill.read(&s.r)?,
        };
        Ok(ChunkCopy {
            min_t: self.min_t,
            max_t: self.max_t,
            data,
            flushed: self.flushed,
            encoding: self.encoding,
        })
    }
}

/// What one series append did.
#[derive(Debug, Default)]
pub(crate) struct SeriesAppend {
    pub(crate) appended: u64,
    /// Of `appended`, those that went to the out-of-order buffer.
    pub(crate) ooo_appended: u64,
    /// Samples equal to one already held (no-ops).
    pub(crate) duplicates: u64,
    pub(crate) chunks_created: u64,
    /// The first refusal and how many samples were refused in all.
    pub(crate) first_error: Option<(HeadError, u64)>,
    /// Bytes of chunk data that moved into closed chunks (cuts).
    pub(crate) closed_bytes: u64,
    /// Change in the histogram state's bytes (open histogram chunk and its box), for
    /// `Head::index_bytes` (see `series/hist.rs`, `HistState::footprint`).
    pub(crate) hist_bytes: i64,
}

impl Series {
    pub(crate) fn new(labels: Labels, series_ref: u64) -> Self {
        debug_assert!(series_ref < LOGGED, "series ref uses the logged bit");
        Self {
            labels,
            ref_and_logged: AtomicU64::new(series_ref & !LOGGED),
            data: Mutex::new(SeriesData {
                closed: ClosedList::default(),
                open: XorAppender::new(),
                open_min_t: 0,
                last_t: 0,
                last_v: 0,
                has_last: false,
                last_append: Tick::now(),
            }),
        }
    }

    /// The series' labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The global series ref.
    pub fn series_ref(&self) -> u64 {
        self.ref_and_logged.load(Ordering::Relaxed) & !LOGGED
    }

    /// Whether the WAL already has this series' `Series` record.
    pub fn is_logged(&self) -> bool {
        self.ref_and_logged.load(Ordering::Acquire) & LOGGED != 0
    }

    /// Records that the WAL has this series' `Series` record.
    pub fn set_logged(&self) {
        self.ref_and_logged.fetch_or(LOGGED, Ordering::Release);
    }

    /// Appends samples with no out-of-order window (see [`Series::append_with`]).
    #[cfg(test)]
    pub(crate) fn append(
        &self,
        samples: &[(i64, f64)],
        log: Option<&mut Vec<RefSample>>,
    ) -> SeriesAppend {
        self.append_with(samples, log, 0)
    }

    /// Appends samples. Newer than the newest: appended in order. At or before the newest:
    /// looked up among the samples the series holds (see `head::ooo`): an equal sample is
    /// a no-op counted in `duplicates`, another value at that timestamp is refused, a new
    /// one inside `window_ms` goes to the out-of-order buffer, the rest is refused.
    ///
    /// With `log`, every appended sample *and every equal repeat* is added to it for the
    /// WAL. Repeats are logged because the original may have reached memory in a push whose
    /// WAL append failed (and was therefore never acknowledged): the client's retry must
    /// make it durable before it is acknowledged. Replay treats the repeat as a no-op.
    pub(crate) fn append_with(
        &self,
        samples: &[(i64, f64)],
        log: Option<&mut Vec<RefSample>>,
        window_ms: i64,
    ) -> SeriesAppend {
        self.append_at(samples, log, window_ms, Tick::now())
    }

    /// [`Series::append_with`] with the push's clock reading: one `Tick::now` a push, not
    /// one a series (the clock read was a tenth of the append phase, `docs/benchmarks.md`).
    pub(crate) fn append_at(
        &self,
        samples: &[(i64, f64)],
        mut log: Option<&mut Vec<RefSample>>,
        window_ms: i64,
        now: Tick,
    ) -> SeriesAppend {
        let mut out = SeriesAppend::default();
        let mut d = self.data.lock();
        let mut logged = |t: i64, v: u64| {
            if let Some(l) = log.as_deref_mut() {
                l.push(RefSample {
                    series_ref: self.series_ref(),
                    t,
                    v,
                });
            }
        };
        for &(t, v) in samples {
            let bits = v.to_bits();
            if d.closed.hist().is_some() {
                match d.float_after_histogram(t) {
                    Ok(closed) => {
                        out.closed_bytes += closed as u64;
                        out.hist_bytes += d.account_hist();
                    }
                    Err(e) => {
                        match &mut out.first_error {
                            Some((_, n)) => *n += 1,
                            None => out.first_error = Some((e, 1)),
                        }
                        continue;
                    }
                }
            }
            if let Some((last_t, last_bits)) = d.last() {
                if t <= last_t {
                    let stored = if t == last_t {
                        Some(last_bits)
                    } else {
                        d.find(t, &self.labels)
                    };
                    let e = match stored {
                        Some(s) if s == bits => {
                            out.duplicates += 1;
                            logged(t, bits);
                            continue;
                        }
                        Some(stored) => HeadError::DuplicateTimestamp {
                            t,
                            stored,
                            new: bits,
                        },
                        None if in_window(t, last_t, window_ms) => {
                            out.closed_bytes += d.append_ooo(t, bits, &mut out.chunks_created);
                            out.appended += 1;
                            out.ooo_appended += 1;
                            logged(t, bits);
                            continue;
                        }
                        None => match d.oldest() {
                            Some(oldest) if t < oldest => HeadError::OutOfBounds { t, oldest },
                            _ if window_ms > 0 => HeadError::TooOld {
                                t,
                                last: last_t,
                                window_ms,
                            },
                            _ => HeadError::OutOfOrder { t, last: last_t },
                        },
                    };
                    match &mut out.first_error {
                        Some((_, n)) => *n += 1,
                        None => out.first_error = Some((e, 1)),
                    }
                    continue;
                }
            }
            if d.open.num_samples() >= SAMPLES_PER_CHUNK {
                out.closed_bytes += d.cut() as u64;
            }
            if d.open.num_samples() == 0 {
                d.open_min_t = t;
                out.chunks_created += 1;
            }
            d.open.append(t, v);
            d.set_last(Some((t, bits)));
            out.appended += 1;
            logged(t, bits);
        }
        if out.appended > 0 {
            d.last_append = now;
        }
        out
    }

    /// Whether the series may leave the head: it holds no chunk at all (its open chunk was
    /// cut, and every closed chunk was flushed and then released, so the catalog already
    /// reads them from the local tier or the store) and nothing was appended for `idle`.
    ///
    /// Requiring the chunks to be *released*, not only flushed, keeps the release invariant
    /// in one place: only `Flusher::release` drops chunks, after telling the catalog.
    pub fn is_removable(&self, idle: Duration) -> bool {
        let d = self.data.lock();
        d.closed.is_empty()
            && d.closed.ooo().is_none()
            && d.open.num_samples() == 0
            && d.hist_open().is_none()
            && d.last_append.elapsed() >= idle
    }

    /// Chunks held (closed ones and a non-empty open one).
    pub(crate) fn num_chunks(&self) -> usize {
        let d = self.data.lock();
        d.closed.len()
            + usize::from(d.open.num_samples() > 0)
            + usize::from(d.closed.ooo().is_some())
            + usize::from(d.hist_open().is_some())
    }

    /// Whether the series has a sample in `[mint, maxt]`'s span (by chunk time ranges).
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        let d = self.data.lock();
        match d.time_range() {
            Some((lo, hi)) => lo <= maxt && hi >= mint,
            None => false,
        }
    }

    /// Handles on the chunks that overlap `[mint, maxt]`, oldest first, the open one included.
    ///
    /// Under the series lock this only clones `Arc`s, copies the open chunk (at most 120
    /// samples) and takes a spill reference for each spilled chunk; no I/O. A spilled chunk
    /// is read by [`ChunkHandle::load`] after the lock is released (its reference keeps the
    /// spill file alive meanwhile). Lock order: series, then the spill's file table.
    pub fn chunk_handles(&self, mint: i64, maxt: i64) -> Vec<ChunkHandle> {
        let d = self.data.lock();
        let mut out: Vec<ChunkHandle> = d
            .closed
            .iter()
            .filter(|c| c.min_t <= maxt && c.max_t >= mint)
            .filter_map(|c| {
                let body = match &c.body {
                    Body::Mem(b) => HandleBody::Mem(b.clone()),
                    Body::Spilled(s) => match s.spill.retain(&s.r) {
                        Ok(()) => HandleBody::Spilled(SpilledChunk::new(s.r, s.spill.clone())),
                        Err(e) => {
                            tracing::error!(series = %self.labels, min_t = c.min_t, error = %e, "spilled chunk unreadable; left out of the answer");
                            return None;
                        }
                    },
                };
                Some(ChunkHandle {
                    min_t: c.min_t,
                    max_t: c.max_t,
                    flushed: matches!(c.flush, FlushState::Flushed { .. }),
                    encoding: c.encoding,
                    body,
                })
            })
            .collect();
        if let Some((last_t, _)) = d.last() {
            if d.open.num_samples() > 0 && d.open_min_t <= maxt && last_t >= mint {
                out.push(ChunkHandle {
                    min_t: d.open_min_t,
                    max_t: last_t,
                    flushed: false,
                    encoding: ENCODING_XOR,
                    body: HandleBody::Copy(d.open.bytes().to_vec()),
                });
            }
        }
        if let (Some((lo, hi)), Some(h)) = (d.hist_open(), d.closed.hist()) {
            if lo <= maxt && hi >= mint {
                out.push(ChunkHandle {
                    min_t: lo,
                    max_t: hi,
                    flushed: false,
                    encoding: h.app.encoding(),
                    body: HandleBody::Copy(h.app.open_bytes().to_vec()),
                });
            }
        }
        if let Some((lo, hi)) = d.closed.ooo().and_then(|o| o.range()) {
            if lo <= maxt && hi >= mint {
                out.push(ChunkHandle {
                    min_t: lo,
                    max_t: hi,
                    flushed: false,
                    encoding: ENCODING_XOR,
                    body: HandleBody::Copy(d.closed.ooo().map(|o| o.encode()).unwrap_or_default()),
                });
            }
        }
        // Out-of-order chunks overlap the others: oldest first by start; readers merge.
        out.sort_by_key(|h| h.min_t);
        out
    }

    /// Copies of the chunks that overlap `[mint, maxt]`, oldest first, the open one included.
    /// Spilled chunks are read after the series lock is released (see
    /// [`Series::chunk_handles`]); one that cannot be read is logged and left out.
    pub fn chunks(&self, mint: i64, maxt: i64) -> Vec<ChunkCopy> {
        let handles = self.chunk_handles(mint, maxt);
        let copies: Vec<ChunkCopy> = handles
            .into_iter()
            .filter_map(|h| {
                let min_t = h.min_t;
                h.load()
                    .map_err(|e| {
                        tracing::error!(series = %self.labels, min_t, error = %e, "spilled chunk unreadable; left out of the answer");
                    })
                    .ok()
            })
            .collect();
        crate::query::merge::merge_if_overlapping(copies)
    }

    /// The samples in `[mint, maxt]`, appended to `out` as (t, value).
    pub fn samples(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        for c in self.chunks(mint, maxt) {
            if c.encoding != ENCODING_XOR {
                continue;
            }
            let ok = crate::chunk::push_range(&c.data, mint, maxt, out);
            debug_assert!(ok, "head chunk does not decode");
        }
    }
}

/// One chunk of a series as a checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// First sample's timestamp.
    pub min_t: i64,
    /// Last sample's timestamp.
    pub max_t: i64,
    /// The chunk's bytes.
    pub data: Vec<u8>,
    /// Whether the object store holds it.
    pub flushed: bool,
    /// Where it is if it was spilled (then `data` is empty).
    pub spilled: Option<SpillRef>,
    /// An out-of-order chunk: it may overlap others, and flush marks never cover it.
    pub ooo: bool,
    /// Chunk encoding (`store::object::ENCODING_*`).
    pub encoding: u8,
}

impl Series {
    /// Every chunk, oldest first, the open one last: for a checkpoint.
    /// Spilled chunks are given by reference (`spilled`, with `data` empty).
    ///
    /// Out-of-order chunks (and the out-of-order buffer, as a closed chunk) come first, so
    /// that the last chunk is the one with the newest sample, which restore reopens.
    pub fn snapshot(&self) -> Vec<SnapshotChunk> {
        let d = self.data.lock();
        let mut order: Vec<&ClosedChunk> = d.closed.iter().filter(|c| c.ooo).collect();
        order.extend(d.closed.iter().filter(|c| !c.ooo));
        let mut out: Vec<SnapshotChunk> = order
            .into_iter()
            .map(|c| {
                let (data, spilled) = match &c.body {
                    Body::Mem(b) => (b.to_vec(), None),
                    Body::Spilled(s) => (Vec::new(), Some(s.r)),
                };
                SnapshotChunk {
                    min_t: c.min_t,
                    max_t: c.max_t,
                    data,
                    flushed: matches!(c.flush, FlushState::Flushed { .. }),
                    spilled,
                    ooo: c.ooo,
                    encoding: c.encoding,
                }
            })
            .collect();
        if let Some(o) = d.closed.ooo() {
            let (min_t, max_t) = o.range().unwrap_or_default();
            let at = out.iter().take_while(|c| c.ooo).count();
            out.insert(
                at,
                SnapshotChunk {
                    min_t,
                    max_t,
                    data: o.encode(),
                    flushed: false,
                    spilled: None,
                    ooo: true,
                    encoding: ENCODING_XOR,
                },
            );
        }
        if let Some((last_t, _)) = d.last() {
            if d.open.num_samples() > 0 {
                out.push(SnapshotChunk {
                    min_t: d.open_min_t,
                    max_t: last_t,
                    data: d.open.bytes().to_vec(),
                    flushed: false,
                    spilled: None,
                    ooo: false,
                    encoding: ENCODING_XOR,
                });
            }
        }
        if let (Some((lo, hi)), Some(h)) = (d.hist_open(), d.closed.hist()) {
            out.push(SnapshotChunk {
                min_t: lo,
                max_t: hi,
                data: h.app.open_bytes().to_vec(),
                flushed: false,
                spilled: None,
                ooo: false,
                encoding: h.app.encoding(),
            });
        }
        out
    }

    /// Restores chunks from a checkpoint into an empty series: all but the last are closed;
    /// the last becomes the open chunk (appends resume exactly where they stopped) unless the
    /// store already has it, in which case it stays closed and appends start a fresh chunk.
    /// Returns the number of chunks restored and the bytes now held in closed chunks.
    ///
    /// A spilled chunk is taken over from `spill` (its reference counted again). If its
    /// spill file is gone, the chunk was flushed and released after the checkpoint was
    /// written (spill files are deleted only then), so it is skipped.
    pub(crate) fn restore(
        &self,
        chunks: Vec<SnapshotChunk>,
        spill: Option<&Arc<Spill>>,
    ) -> Result<(usize, u64), crate::chunk::ChunkError> {
        let mut d = self.data.lock();
        debug_assert!(
            d.last().is_none() && d.closed.is_empty(),
            "restore into a used series"
        );
        let n = chunks.len();
        let mut closed_bytes = 0u64;
        if chunks.last().is_some_and(|c| c.ooo) {
            // Only out-of-order chunks are left (the in-order ones were released): the
            // newest sample among them bounds what is "newer than the newest".
            let newest = chunks.iter().max_by_key(|c| c.max_t);
            let bytes = newest.and_then(|c| match (&c.spilled, spill) {
                (Some(r), Some(sp)) => sp.read(r).ok(),
                (Some(_), None) => None,
                (None, _) => Some(c.data.clone()),
            });
            if let Some(last) = bytes
                .and_then(|b| XorAppender::from_chunk(&b).ok())
                .and_then(|a| a.last())
            {
                d.set_last(Some(last));
            }
        }
        let mut it = chunks.into_iter().peekable();
        while let Some(c) = it.next() {
            if it.peek().is_none() && c.encoding != ENCODING_XOR {
                // The newest sample is a histogram: appends follow it, in the same open
                // chunk unless the store already has it or it was spilled.
                let bytes = match (&c.spilled, spill) {
                    (Some(r), Some(sp)) => sp.read(r).ok(),
                    (Some(_), None) => None,
                    (None, _) => Some(c.data.clone()),
                };
                if let Some(bytes) = bytes {
                    let reopen = !c.flushed && c.spilled.is_none();
                    if d.restore_hist(c.encoding, &bytes, reopen)? {
                        break;
                    }
                }
            }
            if it.peek().is_none() && c.encoding == ENCODING_XOR && !c.ooo {
                // The newest sample: appends must follow it. Decoding the chunk once rebuilds
                // the appender too.
                let bytes = match (&c.spilled, spill) {
                    (Some(r), Some(sp)) => sp.read(r).ok(),
                    (Some(_), None) => None,
                    (None, _) => Some(c.data.clone()),
                };
                if let Some(bytes) = bytes {
                    let open = XorAppender::from_chunk(&bytes)?;
                    d.set_last(open.last());
                    if !c.flushed && c.spilled.is_none() {
                        d.open = open;
                        d.open_min_t = c.min_t;
                        break;
                    }
                }
            }
            let body = match c.spilled {
                Some(r) => {
                    let retained = match spill {
                        Some(sp) => sp
                            .retain(&r)
                            .map(|()| sp.clone())
                            .map_err(|e| e.to_string()),
                        None => Err("no spill directory".to_owned()),
                    };
                    match retained {
                        Ok(sp) => Body::Spilled(SpilledChunk::new(r, sp)),
                        Err(e) => {
                            tracing::warn!(series = %self.labels, min_t = c.min_t, error = %e,
                                "spilled chunk of the checkpoint is gone (flushed and released since); skipped");
                            continue;
                        }
                    }
                }
                None => {
                    closed_bytes += c.data.len() as u64;
                    Body::Mem(Arc::from(c.data))
                }
            };
            d.closed.push(ClosedChunk {
                min_t: c.min_t,
                max_t: c.max_t,
                body,
                ooo: c.ooo,
                flush: if c.flushed {
                    FlushState::Flushed {
                        at: Instant::now(),
                        object: 0,
                    }
                } else {
                    FlushState::Pending
                },
                encoding: c.encoding,
            });
        }
        // Snapshots list out-of-order chunks first; the list is kept sorted by start.
        if let Some(v) = d.closed.0.as_deref_mut() {
            v.chunks.sort_by_key(|c| c.min_t);
        }
        Ok((n, closed_bytes))
    }
}

/// The flush life cycle: cut, choose, upload, release.
impl Series {
    /// Closes the open chunk if it has samples and `force` is set, or its first sample is
    /// older than `max_age_ms` at `now_ms` (sample time), or nothing was appended for
    /// `max_idle`. Returns the bytes that became a closed chunk (0 if none).
    pub fn cut_if_due(&self, now_ms: i64, max_age_ms: i64, max_idle: Duration, force: bool) -> u64 {
        let mut d = self.data.lock();
        let idle = d.last_append.elapsed() > max_idle;
        let mut bytes = 0;
        // The out-of-order buffer is cut by the same rules, by its oldest sample.
        if let Some((ooo_min, _)) = d.closed.ooo().and_then(|o| o.range()) {
            if force || idle || now_ms.saturating_sub(ooo_min) > max_age_ms {
                bytes += d.cut_ooo() as u64;
            }
        }
        // At most one of the float and histogram open chunks has samples (a change of
        // type cuts the other).
        let open_min_t = match (d.open.num_samples() > 0, d.hist_open()) {
            (true, _) => d.open_min_t,
            (false, Some((lo, _))) => lo,
            (false, None) => return bytes,
        };
        let due = force || now_ms.saturating_sub(open_min_t) > max_age_ms || idle;
        if due {
            bytes += if d.open.num_samples() > 0 {
                d.cut()
            } else {
                d.cut_hist()
            } as u64;
        }
        bytes
    }

    /// What a WAL flush mark may say after the chunks starting at `min_ts` (sorted) were
    /// uploaded: the newest sample of the in-order ones among them. `None` if they were all
    /// out-of-order chunks, which a mark never speaks for (see [`Series::apply_flush_mark`]).
    pub fn flush_mark(&self, min_ts: &[i64]) -> Option<i64> {
        let d = self.data.lock();
        d.closed
            .iter()
            .filter(|c| !c.ooo && min_ts.binary_search(&c.min_t).is_ok())
            .map(|c| c.max_t)
            .max()
    }

    /// Adds the closed chunks not yet in the store (and not being uploaded) to `out`.
    pub fn pending(&self, out: &mut Vec<PendingChunk>) {
        let d = self.data.lock();
        out.extend(
            d.closed
                .iter()
                .filter(|c| c.flush == FlushState::Pending)
                .map(|c| PendingChunk {
                    min_t: c.min_t,
                    max_t: c.max_t,
                    len: c.body.len(),
                    encoding: c.encoding,
                }),
        );
    }

    /// Marks the pending chunks that start at `min_ts` (sorted) as in flight, and returns
    /// copies of them, oldest first, for an upload.
    pub fn take_for_flush(&self, min_ts: &[i64]) -> Vec<ChunkCopy> {
        let mut d = self.data.lock();
        let mut out = Vec::with_capacity(min_ts.len());
        let labels = &self.labels;
        d.closed.retain_mut(|c| {
            if c.flush != FlushState::Pending || min_ts.binary_search(&c.min_t).is_err() {
                return true;
            }
            match c.body.to_vec() {
                Ok(data) => {
                    c.flush = FlushState::InFlight;
                    out.push(ChunkCopy {
                        min_t: c.min_t,
                        max_t: c.max_t,
                        data,
                        flushed: false,
                        encoding: c.encoding,
                    });
                    true
                }
                Err(e) => {
                    // Only a spilled chunk can fail, and only if its file was damaged: no
                    // retry can bring it back.
                    tracing::error!(series = %labels, min_t = c.min_t, error = %e, "spilled chunk unreadable; dropped");
                    false
                }
            }
        });
        out
    }

    /// Ends an upload of the in-flight chunks that start at `min_ts` (sorted): flushed (into
    /// the flusher's object `object`) if `ok`, else pending again.
    pub fn finish_flush(&self, min_ts: &[i64], ok: bool, object: u64) {
        let at = Instant::now();
        let mut d = self.data.lock();
        for c in d.closed.iter_mut() {
            if c.flush == FlushState::InFlight && min_ts.binary_search(&c.min_t).is_ok() {
                c.flush = if ok {
                    FlushState::Flushed { at, object }
                } else {
                    FlushState::Pending
                };
            }
        }
    }

    /// Replay of a WAL flush mark: every sample at or before `max_t` is in the store. Closed
    /// chunks that end by then are marked flushed. A chunk that straddles `max_t` (replay
    /// rebuilds chunks from samples, and the flushed one may have been cut early) is split
    /// there: the part up to `max_t` re-encodes to the very bytes that were uploaded (a fresh
    /// appender is deterministic) and counts as flushed; the rest stays pending or open.
    /// Returns the change in bytes held in closed chunks.
    pub(crate) fn apply_flush_mark(&self, max_t: i64) -> i64 {
        let at = Instant::now();
        let flushed = FlushState::Flushed { at, object: 0 };
        let mut d = self.data.lock();
        let mut delta = 0i64;
        let mut i = 0;
        while i < d.closed.len() {
            let c = &mut d.closed[i];
            // A mark speaks for in-order samples only (the flusher marks the newest in-order
            // chunk it uploaded): an out-of-order chunk may hold older samples that were
            // never uploaded. It stays pending, and at worst is uploaded again.
            if matches!(c.flush, FlushState::Flushed { .. }) || c.min_t > max_t || c.ooo {
                i += 1;
                continue;
            }
            if c.max_t <= max_t {
                c.flush = flushed;
                i += 1;
                continue;
            }
            // A spilled chunk is never split: a checkpoint may still refer to its spill
            // record, which splitting would release. (Spilled chunks come from checkpoints
            // with their original boundaries, so they do not straddle a mark anyway; if
            // one did, it would only be uploaded again, which readers dedupe.)
            // Only XOR chunks are split; a histogram chunk that straddles the mark stays
            // pending and is uploaded whole again (readers merge the overlap).
            if matches!(c.body, Body::Spilled(_)) || c.encoding != ENCODING_XOR {
                i += 1;
                continue;
            }
            let Some((head, tail)) = c.body.to_vec().ok().and_then(|b| split_chunk(&b, max_t))
            else {
                i += 1;
                continue;
            };
            delta += (head.data.len() + tail.data.len()) as i64 - c.body.mem_len() as i64;
            let state = c.flush;
            *c = ClosedChunk {
                min_t: tail.min_t,
                max_t: tail.max_t,
                body: Body::Mem(Arc::from(tail.data)),
                flush: state,
                ooo: false,
                encoding: ENCODING_XOR,
            };
            d.closed.insert(
                i,
                ClosedChunk {
                    min_t: head.min_t,
                    max_t: head.max_t,
                    body: Body::Mem(Arc::from(head.data)),
                    flush: flushed,
                    ooo: false,
                    encoding: ENCODING_XOR,
                },
            );
            i += 2;
        }
        if d.hist_open().is_some_and(|(lo, _)| lo <= max_t) {
            // The open histogram chunk is closed whole (histogram chunks are not split):
            // flushed if the mark covers all of it, else pending (uploaded again, merged).
            let at = d.closed.len();
            delta += d.cut_hist() as i64;
            if let Some(c) = d.closed.get_mut(at) {
                if c.max_t <= max_t {
                    c.flush = flushed;
                }
            }
        }
        if d.open.num_samples() > 0 && d.open_min_t <= max_t {
            let open = std::mem::take(&mut d.open);
            let bytes = open.into_bytes();
            let (head, rest) = match split_chunk(&bytes, max_t) {
                Some((h, t)) => (h.data, Some(t)),
                None => (bytes, None),
            };
            let last_t = d.last().map_or(d.open_min_t, |(t, _)| t);
            let head_max = rest.as_ref().map_or(last_t, |r| r.head_max_t);
            delta += head.len() as i64;
            let min_t = d.open_min_t;
            d.closed.push(ClosedChunk {
                min_t,
                max_t: head_max,
                body: Body::Mem(Arc::from(head)),
                flush: flushed,
                ooo: false,
                encoding: ENCODING_XOR,
            });
            if let Some(r) = rest {
                match XorAppender::from_chunk(&r.data) {
                    Ok(a) => {
                        d.open = a;
                        d.open_min_t = r.min_t;
                    }
                    Err(_) => debug_assert!(false, "a fresh chunk does not decode"),
                }
            }
        }
        delta
    }

    /// Drops flushed chunks from memory: those flushed at least `retain` ago, or all flushed
    /// ones with `all`. Adds what was freed to `out`.
    pub fn release_flushed(
        &self,
        retain: Duration,
        all: bool,
        allowed: &dyn Fn(u64) -> bool,
        out: &mut Released,
    ) {
        let mut d = self.data.lock();
        d.closed.retain(|c| match c.flush {
            FlushState::Flushed { at, object }
                if (all || at.elapsed() >= retain) && allowed(object) =>
            {
                out.chunks += 1;
                out.bytes += c.body.mem_len() as u64;
                if object != 0 && out.objects.last() != Some(&object) {
                    out.objects.push(object);
                }
                false
            }
            _ => true,
        });
    }

    /// The objects of the chunks [`Series::release_flushed`] would drop now, added to `out`.
    pub fn releasable_objects(&self, retain: Duration, all: bool, out: &mut Vec<u64>) {
        let d = self.data.lock();
        for c in d.closed.iter() {
            if let FlushState::Flushed { at, object } = c.flush {
                if object != 0 && (all || at.elapsed() >= retain) && out.last() != Some(&object) {
                    out.push(object);
                }
            }
        }
    }

    /// Closed chunks not in the store yet (pending or being uploaded).
    pub fn unflushed_chunks(&self) -> usize {
        let d = self.data.lock();
        d.closed
            .iter()
            .filter(|c| !matches!(c.flush, FlushState::Flushed { .. }))
            .count()
    }

    /// Bytes of closed chunks not in the store yet, and the oldest sample time not in the
    /// store (open chunk included), if any.
    pub fn unflushed(&self) -> (u64, Option<i64>) {
        let d = self.data.lock();
        let mut bytes = 0;
        let mut oldest = None;
        for c in d.closed.iter() {
            if !matches!(c.flush, FlushState::Flushed { .. }) {
                bytes += c.body.len() as u64;
                oldest = Some(oldest.map_or(c.min_t, |o: i64| o.min(c.min_t)));
            }
        }
        if d.open.num_samples() > 0 {
            oldest = Some(oldest.map_or(d.open_min_t, |o: i64| o.min(d.open_min_t)));
        }
        if let Some((lo, _)) = d.closed.ooo().and_then(|o| o.range()) {
            oldest = Some(oldest.map_or(lo, |o: i64| o.min(lo)));
        }
        if let Some((lo, _)) = d.hist_open() {
            oldest = Some(oldest.map_or(lo, |o: i64| o.min(lo)));
        }
        (bytes, oldest)
    }

    /// Adds this series' closed chunks that are in memory and not in the store yet to `out`
    /// as (min_t, bytes): candidates for spilling.
    pub fn spillable(&self, out: &mut Vec<(i64, usize)>) {
        let d = self.data.lock();
        out.extend(d.closed.iter().filter_map(|c| match (&c.body, c.flush) {
            (Body::Mem(b), FlushState::Pending | FlushState::InFlight) => Some((c.min_t, b.len())),
            _ => None,
        }));
    }

    /// Writes the closed chunk starting at `min_t` to the spill, if it is still in memory
    /// and not flushed, and returns its reference; the chunk stays in memory until
    /// [`Series::spill_commit`] (after a [`Spill::sync`], so a checkpoint never refers to
    /// spilled bytes that are not durable yet).
    pub fn spill_write(&self, min_t: i64, spill: &Spill) -> Result<Option<SpillRef>, SpillError> {
        let d = self.data.lock();
        let Some(c) = d.closed.iter().find(|c| c.min_t == min_t) else {
            return Ok(None);
        };
        match (&c.body, c.flush) {
            (Body::Mem(bytes), FlushState::Pending | FlushState::InFlight) => spill
                .write(self.series_ref(), c.min_t, c.max_t, bytes)
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Replaces the in-memory chunk starting at `min_t` by its spilled copy `r`. Returns the
    /// bytes freed (0, and the copy released, if the chunk changed meanwhile).
    pub fn spill_commit(&self, min_t: i64, r: SpillRef, spill: &Arc<Spill>) -> usize {
        let spilled = SpilledChunk::new(r, spill.clone());
        let mut d = self.data.lock();
        let Some(c) = d.closed.iter_mut().find(|c| c.min_t == min_t) else {
            return 0;
        };
        match (&c.body, c.flush) {
            (Body::Mem(bytes), FlushState::Pending | FlushState::InFlight) => {
                let freed = bytes.len();
                c.body = Body::Spilled(spilled);
                freed
            }
            _ => 0, // dropping `spilled` releases the copy
        }
    }
}

impl SeriesData {
    /// The newest sample (timestamp, value bits), once there is one.
    fn last(&self) -> Option<(i64, u64)> {
        self.has_last.then_some((self.last_t, self.last_v))
    }

    fn set_last(&mut self, last: Option<(i64, u64)>) {
        let (t, v) = last.unwrap_or_default();
        (self.last_t, self.last_v, self.has_last) = (t, v, last.is_some());
    }

    /// The span of the chunks held (not of samples released to the store), out-of-order
    /// ones included.
    fn time_range(&self) -> Option<(i64, i64)> {
        let open = (self.open.num_samples() > 0)
            .then(|| {
                (
                    self.open_min_t,
                    self.last().map_or(self.open_min_t, |(t, _)| t),
                )
            })
            .or_else(|| self.hist_open());
        let mut range: Option<(i64, i64)> = None;
        let mut widen = |(lo, hi): (i64, i64)| {
            range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        };
        if let Some(o) = open {
            widen(o);
        }
        if let Some(o) = self.closed.ooo().and_then(|o| o.range()) {
            widen(o);
        }
        // Sorted by min_t: the first has the oldest sample; any may have the newest (an
        // out-of-order chunk sorts after the in-order one it overlaps).
        if let Some(c) = self.closed.first() {
            widen((c.min_t, c.max_t));
        }
        if let Some(hi) = self.closed.iter().map(|c| c.max_t).max() {
            widen((hi, hi));
        }
        range
    }

    /// The oldest timestamp held, if any.
    fn oldest(&self) -> Option<i64> {
        self.time_range().map(|r| r.0)
    }

    /// The value bits stored at `t` (older than the newest sample), if the head holds a
    /// sample there: in the open chunk, the out-of-order buffer, or a closed chunk, in
    /// memory or spilled. A spilled chunk is read here, under the series lock: a `pread`
    /// of at most a few hundred bytes, only for a sample that is not newer than the newest
    /// (retries and out-of-order samples), and the flusher already reads spilled chunks
    /// under this lock. A chunk that cannot be read counts as not holding `t`.
    fn find(&self, t: i64, labels: &Labels) -> Option<u64> {
        // Out-of-order samples may fall between any others: every place is searched.
        if self.open.num_samples() > 0 && t >= self.open_min_t {
            if let Some(v) = find_in_chunk(self.open.bytes(), t) {
                return Some(v);
            }
        }
        if let Some(v) = self.closed.ooo().and_then(|o| o.get(t)) {
            return Some(v);
        }
        for c in self.closed.iter() {
            if c.min_t > t {
                break; // sorted by min_t
            }
            if c.max_t < t || c.encoding != ENCODING_XOR {
                continue; // a histogram chunk holds no float sample
            }
            let found = match &c.body {
                Body::Mem(b) => find_in_chunk(b, t),
                Body::Spilled(s) => match s.spill.read(&s.r) {
                    Ok(b) => find_in_chunk(&b, t),
                    Err(e) => {
                        tracing::error!(series = %labels, min_t = c.min_t, error = %e, "spilled chunk unreadable while looking up a repeated sample");
                        None
                    }
                },
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Adds a sample (not held yet) to the out-of-order buffer, creating it if need be (one
    /// more chunk) and encoding it into a closed chunk once full. Returns the bytes that
    /// moved into closed chunks.
    fn append_ooo(&mut self, t: i64, bits: u64, chunks_created: &mut u64) -> u64 {
        let o = self.closed.ooo_mut();
        if o.is_empty() {
            *chunks_created += 1;
        }
        o.insert(t, bits);
        if o.len() >= OOO_CAP {
            self.cut_ooo() as u64
        } else {
            0
        }
    }

    /// Encodes the out-of-order buffer into a closed chunk, if it has samples. Returns the
    /// chunk's size (0 if none).
    fn cut_ooo(&mut self) -> usize {
        let Some(o) = self.closed.ooo() else {
            return 0;
        };
        let (min_t, max_t) = o.range().unwrap_or_default();
        let data: Arc<[u8]> = Arc::from(o.encode());
        let len = data.len();
        self.closed.ooo_mut().clear();
        self.closed.push(ClosedChunk {
            min_t,
            max_t,
            body: Body::Mem(data),
            flush: FlushState::Pending,
            ooo: true,
            encoding: ENCODING_XOR,
        });
        len
    }

    /// Closes the open chunk and starts a fresh one. Returns the closed chunk's size.
    fn cut(&mut self) -> usize {
        let full = std::mem::take(&mut self.open);
        let max_t = self.last().map_or(self.open_min_t, |(t, _)| t);
        let data: Arc<[u8]> = Arc::from(full.into_bytes());
        let len = data.len();
        self.closed.push(ClosedChunk {
            min_t: self.open_min_t,
            max_t,
            body: Body::Mem(data),
            flush: FlushState::Pending,
            ooo: false,
            encoding: ENCODING_XOR,
        });
        len
    }
}

/// One side of a chunk split by [`split_chunk`].
#[derive(Debug)]
struct Part {
    min_t: i64,
    max_t: i64,
    data: Vec<u8>,
    /// For the tail: the head's last timestamp.
    head_max_t: i64,
}

/// Splits a chunk into the samples at or before `t` and those after, each re-encoded by a
/// fresh appender. `None` if either side would be empty or the chunk does not decode.
fn split_chunk(chunk: &[u8], t: i64) -> Option<(Part, Part)> {
    let mut it = XorIterator::new(chunk).ok()?;
    let mut head = Vec::new();
    let mut tail = Vec::new();
    for s in &mut it {
        let (ts, v) = s.ok()?;
        if ts <= t {
            head.push((ts, v));
        } else {
            tail.push((ts, v));
        }
    }
    let (h0, h1) = (head.first()?.0, head.last()?.0);
    let (t0, t1) = (tail.first()?.0, tail.last()?.0);
    Some((
        Part {
            min_t: h0,
            max_t: h1,
            data: crate::chunk::encode(head),
            head_max_t: h1,
        },
        Part {
            min_t: t0,
            max_t: t1,
            data: crate::chunk::encode(tail),
            head_max_t: h1,
        },
    ))
}

#[cfg(test)]
mod handle_tests {
    use super::*;
    use crate::spill::SpillConfig;

    /// A spilled chunk picked by a query is read after the series lock is released; if the
    /// series lets the chunk go meanwhile (flushed and released), the handle's own spill
    /// reference must keep the bytes readable, and dropping the handle must let them go.
    #[test]
    fn a_spilled_chunk_handle_reads_after_the_series_released_it() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Arc::new(
            Spill::open(SpillConfig {
                dir: dir.path().to_path_buf(),
                file_size: crate::spill::MIN_FILE_SIZE_BYTES,
            })
            .unwrap(),
        );
        let s = Series::new(Labels::from_strs([("__name__", "h")]).unwrap(), 1);
        let samples: Vec<(i64, f64)> = (0..130).map(|i| (i * 1000, i as f64 * 0.5)).collect();
        assert_eq!(s.append(&samples, None).appended, 130);
        let want = s.chunks(0, i64::MAX);
        assert_eq!(want.len(), 2, "one closed chunk and the open one");
        let r = s.spill_write(0, &spill).unwrap().expect("spillable");
        spill.sync().unwrap();
        assert!(s.spill_commit(0, r, &spill) > 0);

        let handles = s.chunk_handles(0, i64::MAX);
        assert_eq!(handles.len(), 2);
        assert_eq!(handles[0].held_bytes(), 0, "a spilled chunk is not held");
        assert!(handles[1].held_bytes() > 0, "the open chunk is copied");
        let live = spill.live_bytes();
        // The series flushes and releases the spilled chunk.
        s.take_for_flush(&[0]);
        s.finish_flush(&[0], true, 7);
        let mut released = Released::default();
        s.release_flushed(Duration::ZERO, true, &|_| true, &mut released);
        assert_eq!(released.chunks, 1);
        // Live bytes count references: the handle's is left.
        assert_eq!(
            spill.live_bytes(),
            live / 2,
            "the handle still refers to the chunk"
        );
        let got: Vec<ChunkCopy> = handles.into_iter().map(|h| h.load().unwrap()).collect();
        assert_eq!(got[0].data, want[0].data);
        assert_eq!(got[1], want[1]);
        assert_eq!(spill.live_bytes(), 0, "the handle let the chunk go");
    }
}
