//! The head: every tenant's in-memory series, their XOR chunks and a postings index.
//!
//! **Invariant:** `head` knows nothing about HTTP or the object store.
//!
//! Locking: a tenant's index (series map, postings) sits behind one `RwLock`; each
//! series' chunks sit behind their own `Mutex`. A push resolves and appends under the read
//! lock, so pushes to known series run in parallel; only a push that creates series takes
//! the write lock, once, for all its new series.

mod ooo;
mod series;
mod tenants;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustc_hash::FxHashMap;
use thiserror::Error;

use crate::limits::Overrides;
use crate::metrics::{Metrics, RejectLabels, TenantLabels};
use crate::model::{LabelError, LabelLimits, Labels, Matcher, SharedStr, TenantId};
use crate::proto::WriteBatch;

pub use ooo::OOO_CAP;
use series::Tick;
pub use series::{
    ChunkCopy, ChunkHandle, FlushState, PendingChunk, Released, Series, SnapshotChunk,
};
pub use tenants::TooManyTenants;

use crate::spill::{Spill, SpillError};
use crate::wal::RefSample;

/// Limits and settings of the head.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// Limits on each series' labels.
    pub label_limits: LabelLimits,
    /// Most series one tenant may have in the head.
    pub max_series_per_tenant: usize,
    /// Most tenants in the head (`--limits.max-tenants`); see `head::tenants`.
    pub max_tenants: usize,
    /// How far past now a sample's timestamp may be (`--limits.creation-grace-period`).
    pub creation_grace_period: Duration,
    /// Per-tenant overrides of the limits above (`--limits.overrides-file`), read at each
    /// series creation, so a reloaded file applies to running tenants.
    pub overrides: Arc<Overrides>,
    /// `--head.series-idle-timeout`: a series with no new sample for this long (wall time)
    /// leaves the head once all its chunks are flushed and released.
    pub series_idle_timeout: Duration,
    /// `--ingest.out-of-order-window`: how far before a series' newest sample a new sample
    /// is still accepted (0: none). The overrides file's `out_of_order_time_window` wins.
    pub out_of_order_window: Duration,
    /// Limits of the exemplar and metadata stores (`crate::exmeta`).
    pub exmeta: crate::exmeta::ExMetaConfig,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            label_limits: LabelLimits::default(),
            max_series_per_tenant: 5_000_000,
            max_tenants: crate::limits::DEFAULT_MAX_TENANTS,
            creation_grace_period: crate::limits::DEFAULT_CREATION_GRACE_PERIOD,
            overrides: Arc::new(Overrides::none()),
            series_idle_timeout: Duration::from_secs(3600),
            out_of_order_window: Duration::ZERO,
            exmeta: crate::exmeta::ExMetaConfig::default(),
        }
    }
}

/// Why one series' samples (or some of them) were refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// The label set is invalid or over a limit.
    #[error(transparent)]
    Labels(#[from] LabelError),
    /// The tenant already has as many series as allowed.
    #[error("per-tenant series limit of {limit} reached")]
    SeriesLimit {
        /// The limit.
        limit: usize,
    },
    /// A sample older than the series' newest sample.
    #[error(
        "out of order sample: timestamp {t} is older than the series' newest sample at {last}"
    )]
    OutOfOrder {
        /// The refused sample's timestamp.
        t: i64,
        /// The series' newest timestamp.
        last: i64,
    },
    /// A different value at a timestamp the series already has a sample at (an equal one
    /// is a no-op: a retry).
    #[error(
        "duplicate sample for timestamp {t} with a different value: stored {}, new {}",
        f64::from_bits(*.stored),
        f64::from_bits(*.new)
    )]
    DuplicateTimestamp {
        /// The timestamp.
        t: i64,
        /// The stored value's bits.
        stored: u64,
        /// The refused value's bits.
        new: u64,
    },
    /// A sample at the timestamp of a native histogram the series already has, and not equal
    /// to it (or of the other value type).
    #[error(
        "duplicate sample for timestamp {t}: a different native histogram or value is stored there"
    )]
    DuplicateHistogram {
        /// The timestamp.
        t: i64,
    },
    /// A sample older than everything the head holds for the series: whether the store
    /// has it cannot be told, so it is refused (Mimir's `sample-out-of-bounds`).
    #[error(
        "out of order sample out of bounds: timestamp {t} is older than the oldest sample the head holds for the series ({oldest}), so a repeat cannot be told from a conflict"
    )]
    OutOfBounds {
        /// The refused sample's timestamp.
        t: i64,
        /// The oldest timestamp held.
        oldest: i64,
    },
    /// Outside the out-of-order window (Prometheus's "too old").
    #[error(
        "sample timestamp {t} is too old: more than the out-of-order window of {window_ms} ms before the series' newest sample at {last}"
    )]
    TooOld {
        /// The refused sample's timestamp.
        t: i64,
        /// The series' newest timestamp.
        last: i64,
        /// The window, in ms.
        window_ms: i64,
    },
    /// A sample further in the future than the creation grace period allows (a client
    /// sending nanoseconds, or a bad clock); taking it would refuse every later sample of
    /// the series as out of order.
    #[error(
        "sample timestamp {t} is too far in the future: more than {grace_ms} ms after now ({now})"
    )]
    TooFarInFuture {
        /// The refused sample's timestamp.
        t: i64,
        /// The wall clock when it was refused, in ms.
        now: i64,
        /// `--limits.creation-grace-period`, in ms.
        grace_ms: i64,
    },
    /// The series carried native histograms, which weft does not store yet.
    #[error("native histograms are not supported yet ({count} dropped)")]
    NativeHistograms {
        /// How many were dropped.
        count: u32,
    },
    /// A native histogram that is not consistent (see `hist::validate`).
    #[error("invalid native histogram at {t}: {reason}")]
    InvalidHistogram {
        /// Its timestamp.
        t: i64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl HeadError {
    /// The `reason` label of `weft_samples_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Labels(LabelError::TooManyLabels { .. }) => "max_label_names_per_series",
            HeadError::Labels(LabelError::NameTooLong { .. }) => "label_name_too_long",
            HeadError::Labels(LabelError::ValueTooLong { .. }) => "label_value_too_long",
            HeadError::Labels(_) => "invalid_labels",
            HeadError::SeriesLimit { .. } => "per_tenant_series_limit",
            HeadError::OutOfOrder { .. } => "out_of_order",
            HeadError::DuplicateTimestamp { .. } | HeadError::DuplicateHistogram { .. } => {
                "duplicate_timestamp"
            }
            HeadError::OutOfBounds { .. } => "sample_out_of_bounds",
            HeadError::TooOld { .. } => "too_old",
            HeadError::NativeHistograms { .. } => "native_histograms",
            HeadError::InvalidHistogram { .. } => "invalid_histogram",
            HeadError::TooFarInFuture { .. } => "too_far_in_future",
        }
    }

    /// Whether this is a tenant limit (429) rather than bad data (400).
    pub fn is_tenant_limit(&self) -> bool {
        matches!(self, HeadError::SeriesLimit { .. })
    }
}

/// One refused series in a push, for the error body.
#[derive(Debug, Clone)]
pub struct SeriesError {
    /// The series, in Prometheus's text form (truncated if huge).
    pub series: String,
    /// What was wrong.
    pub error: HeadError,
    /// Samples of this series that were refused.
    pub samples: u64,
}

/// What a push did.
#[derive(Debug, Default)]
pub struct AppendReport {
    /// Samples written: appended, or equal to a sample already held (a retry's no-op,
    /// also counted in `duplicates_ignored`). The `Samples-Written` header.
    pub appended: u64,
    /// Native histogram samples appended (or found already stored, as for `appended`).
    pub histograms_appended: u64,
    /// Exemplars stored (or found already stored).
    pub exemplars_appended: u64,
    /// Samples equal (timestamp and value bits) to one already held: no-ops.
    pub duplicates_ignored: u64,
    /// Of `appended`, those that went to out-of-order chunks.
    pub ooo_appended: u64,
    /// Samples refused.
    pub rejected: u64,
    /// Series created.
    pub series_created: u64,
    /// The first few refused series (at most [`AppendReport::MAX_ERRORS`]).
    pub errors: Vec<SeriesError>,
    /// Refused series in all, including those not listed.
    pub error_count: u64,
    /// Whether any refusal was bad data (400) rather than a tenant limit (429).
    pub any_bad_data: bool,
}

impl AppendReport {
    /// Refused series listed in the report; the rest are only counted.
    pub const MAX_ERRORS: usize = 10;

    /// Records a refused series (also for refusals decided before the head, in `ingest`).
    pub(crate) fn push_error(
        &mut self,
        series: impl FnOnce() -> String,
        error: HeadError,
        samples: u64,
    ) {
        self.error_count += 1;
        self.rejected += samples;
        if !error.is_tenant_limit() {
            self.any_bad_data = true;
        }
        if self.errors.len() < Self::MAX_ERRORS {
            self.errors.push(SeriesError {
                series: series(),
                error,
                samples,
            });
        }
    }
}

/// What a push must add to the WAL before it is acknowledged.
#[derive(Debug, Default)]
pub struct WalLog {
    /// Series whose `Series` record the WAL does not have yet.
    pub series: Vec<Arc<Series>>,
    /// Samples appended (and exact repeats; see [`Series`]'s append).
    pub samples: Vec<RefSample>,
    /// Integer native histograms appended (and exact repeats): WAL record 4.
    pub histograms: Vec<crate::wal::RefHistogram>,
    /// Float native histograms appended (and exact repeats): WAL record 5.
    pub float_histograms: Vec<crate::wal::RefHistogram>,
}

impl WalLog {
    /// Empties it, keeping the allocations.
    pub fn clear(&mut self) {
        self.series.clear();
        self.samples.clear();
        self.histograms.clear();
        self.float_histograms.clear();
    }

    /// Whether there is nothing to log.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
            && self.samples.is_empty()
            && self.histograms.is_empty()
            && self.float_histograms.is_empty()
    }
}

/// All tenants' heads.
#[derive(Debug)]
pub struct Head {
    cfg: HeadConfig,
    metrics: Arc<Metrics>,
    tenants: RwLock<HashMap<TenantId, Arc<TenantHead>>>,
    /// The next global series ref.
    next_ref: Arc<AtomicU64>,
    /// Bytes of closed chunks held in memory, over all tenants.
    closed_bytes: Arc<AtomicU64>,
    /// Estimated bytes of the series themselves (see [`Head::index_bytes`]).
    index_bytes: Arc<AtomicU64>,
    /// Where closed chunks go when memory is over budget.
    spill: Arc<OnceLock<Arc<Spill>>>,
    /// One [`Head::spill_oldest`] at a time: the balancer and a reservation that needs room
    /// may both ask, and must not pick the same chunks.
    spilling: parking_lot::Mutex<()>,
    /// Exemplars and metric metadata; a tenant's leave the head with the tenant.
    exmeta: Arc<crate::exmeta::ExMeta>,
}

impl Head {
    /// An empty head.
    pub fn new(cfg: HeadConfig, metrics: Arc<Metrics>) -> Self {
        let exmeta = Arc::new(crate::exmeta::ExMeta::new(
            cfg.exmeta,
            cfg.overrides.clone(),
            metrics.clone(),
        ));
        Self {
            exmeta,
            cfg,
            metrics,
            tenants: RwLock::new(HashMap::new()),
            next_ref: Arc::new(AtomicU64::new(1)),
            closed_bytes: Arc::new(AtomicU64::new(0)),
            index_bytes: Arc::new(AtomicU64::new(0)),
            spill: Arc::new(OnceLock::new()),
            spilling: parking_lot::Mutex::new(()),
        }
    }

    /// Gives the head its spill files; before replay, so that restored spilled chunks
    /// resolve.
    pub fn set_spill(&self, spill: Arc<Spill>) {
        let _ = self.spill.set(spill);
    }

    /// The exemplar and metadata stores.
    pub fn exmeta(&self) -> &Arc<crate::exmeta::ExMeta> {
        &self.exmeta
    }

    /// The spill, if set.
    pub fn spill(&self) -> Option<&Arc<Spill>> {
        self.spill.get()
    }

    /// Moves the oldest closed chunks that are in memory and not in the store to the spill
    /// until `bytes` are freed (or nothing is left to move). Writes them, syncs the spill
    /// once, then swaps them in, so a checkpoint never refers to bytes that are not durable.
    /// Returns (chunks, bytes) moved.
    pub fn spill_oldest(&self, bytes: u64) -> Result<(u64, u64), SpillError> {
        let Some(spill) = self.spill.get() else {
            return Ok((0, 0));
        };
        let _one_at_a_time = self.spilling.lock();
        let mut candidates: Vec<(i64, usize, Arc<Series>)> = Vec::new();
        let mut buf = Vec::new();
        for t in self.tenant_heads() {
            for s in t.all_series() {
                buf.clear();
                s.spillable(&mut buf);
                candidates.extend(buf.iter().map(|&(min_t, len)| (min_t, len, s.clone())));
            }
        }
        candidates.sort_unstable_by_key(|c| c.0);
        let mut written = Vec::new();
        let mut planned = 0u64;
        let mut error = None;
        for (min_t, len, s) in candidates {
            if planned >= bytes {
                break;
            }
            match s.spill_write(min_t, spill) {
                Ok(Some(r)) => {
                    planned += len as u64;
                    written.push((s, min_t, r));
                }
                Ok(None) => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = spill.sync() {
            // Not durable: keep the chunks in memory; dropping the refs releases them.
            for (_, _, r) in written {
                spill.release(&r);
            }
            return Err(e);
        }
        let (mut chunks, mut freed) = (0u64, 0u64);
        for (s, min_t, r) in written {
            let f = s.spill_commit(min_t, r, spill) as u64;
            if f > 0 {
                chunks += 1;
                freed += f;
            }
        }
        self.closed_bytes.fetch_sub(freed, Ordering::Relaxed);
        match error {
            Some(e) if chunks == 0 => Err(e),
            _ => Ok((chunks, freed)),
        }
    }

    /// Bytes of closed chunks held in memory, over all tenants (what `--limits.memory-bytes`
    /// caps; open chunks, one per active series, are part of the per-series overhead).
    pub fn closed_bytes(&self) -> u64 {
        self.closed_bytes.load(Ordering::Relaxed)
    }

    /// Estimated bytes of everything the head holds per series, over all tenants: the
    /// series entry, its labels, its postings and its open chunk. Each series counts
    /// [`SERIES_OVERHEAD_BYTES`] plus the bytes of its label names and values.
    ///
    /// An estimate rather than a measurement, so that reading it costs one atomic load:
    /// interned label strings shared by many series are counted once per series (so shared
    /// names cost a little more than they should), and an open chunk counts the same
    /// whether it holds one sample or 119. An open histogram chunk (up to 64 KiB) counts
    /// by its size, with its appender's state (`series/hist.rs`, `HistState::footprint`).
    pub fn index_bytes(&self) -> u64 {
        self.index_bytes.load(Ordering::Relaxed)
    }

    /// The tenant's head, if it has any data.
    pub fn tenant(&self, id: &TenantId) -> Option<Arc<TenantHead>> {
        self.tenants.read().get(id).cloned()
    }

    /// The tenant's head, created empty if new.
    pub fn tenant_or_create(&self, id: &TenantId) -> Arc<TenantHead> {
        if let Some(t) = self.tenant(id) {
            return t;
        }
        let mut tenants = self.tenants.write();
        if let Some(t) = tenants.get(id) {
            return t.clone();
        }
        self.insert_tenant(&mut tenants, id)
    }

    /// Bytes of closed chunks not in the store yet, and the oldest sample time not in the
    /// store, over all tenants.
    pub fn unflushed(&self) -> (u64, Option<i64>) {
        let mut bytes = 0;
        let mut oldest: Option<i64> = None;
        for t in self.tenant_heads() {
            for s in t.all_series() {
                let (b, o) = s.unflushed();
                bytes += b;
                if let Some(o) = o {
                    oldest = Some(oldest.map_or(o, |x| x.min(o)));
                }
            }
        }
        (bytes, oldest)
    }

    /// Every tenant's head, sorted by tenant.
    pub fn tenant_heads(&self) -> Vec<Arc<TenantHead>> {
        let mut heads: Vec<Arc<TenantHead>> = self.tenants.read().values().cloned().collect();
        heads.sort_by(|a, b| a.id.cmp(&b.id));
        heads
    }

    /// `--head.series-idle-timeout`.
    pub fn series_idle_timeout(&self) -> Duration {
        self.cfg.series_idle_timeout
    }

    /// The series-lifecycle sweep (once per flush cycle): removes every series idle for
    /// `--head.series-idle-timeout` whose chunks have all been flushed and released (see
    /// [`TenantHead::remove_idle`]), then every tenant left without series that nothing else
    /// holds, with its per-tenant metric series. Returns (series, tenants) removed.
    pub fn remove_idle_series(&self) -> (u64, u64) {
        self.remove_idle_series_after(self.cfg.series_idle_timeout)
    }

    /// [`Head::remove_idle_series`] with an explicit idle time (tests).
    pub fn remove_idle_series_after(&self, idle: Duration) -> (u64, u64) {
        let mut series = 0;
        for t in self.tenant_heads() {
            series += t.remove_idle(idle);
        }
        self.metrics.head_series_removed.inc_by(series);
        // A tenant is removed only while the map holds its one handle: no push or query is
        // using it, and none can fetch it while the write lock is held. A push that fetched
        // it earlier holds a handle, so its tenant stays.
        let mut removed = Vec::new();
        let left = {
            let mut map = self.tenants.write();
            map.retain(|id, t| {
                let gone = Arc::strong_count(t) == 1 && t.num_series() == 0;
                if gone {
                    // Under the map's lock: a push that would store exemplars or metadata
                    // for this tenant must first get it back from the map.
                    self.exmeta.remove_tenant(id);
                    removed.push(id.clone());
                }
                !gone
            });
            map.len()
        };
        for id in &removed {
            self.tenant_removed(id, left);
        }
        let tenants = removed.len() as u64;
        self.metrics.head_tenants_removed.inc_by(tenants);
        if series > 0 || tenants > 0 {
            tracing::info!(series, tenants, "idle series left the head");
        }
        (series, tenants)
    }

    /// Re-creates a series from the WAL or a checkpoint under its original global ref.
    /// Labels are validated, but no limit applies: data that was accepted once is never
    /// dropped at replay because a limit was lowered since. If the tenant already has the
    /// series, that one is returned.
    pub fn restore_series(
        &self,
        tenant: &TenantId,
        series_ref: u64,
        labels: &[(&str, &str)],
    ) -> Result<Arc<Series>, LabelError> {
        self.next_ref.fetch_max(series_ref + 1, Ordering::AcqRel);
        self.tenant_or_create(tenant)
            .restore_series(series_ref, labels)
    }
}

/// Per-tenant metric handles, resolved once so the hot path does no label lookups.
#[derive(Debug)]
struct TenantMetrics {
    ingested: Counter,
    ooo_appended: Counter,
    repeated: Counter,
    histograms_ingested: Counter,
    series: Gauge,
    chunks: Gauge,
    metrics: Arc<Metrics>,
    tenant: String,
}

impl TenantMetrics {
    fn rejected(&self, reason: &'static str, n: u64) {
        self.metrics
            .samples_rejected
            .get_or_create(&RejectLabels {
                tenant: self.tenant.clone(),
                reason,
            })
            .inc_by(n);
    }
}

/// One tenant's series.
#[derive(Debug)]
pub struct TenantHead {
    id: TenantId,
    label_limits: LabelLimits,
    max_series: usize,
    ooo_window: Duration,
    overrides: Arc<Overrides>,
    index: RwLock<Index>,
    metrics: TenantMetrics,
    next_ref: Arc<AtomicU64>,
    closed_bytes: Arc<AtomicU64>,
    index_bytes: Arc<AtomicU64>,
    spill: Arc<OnceLock<Arc<Spill>>>,
}

/// What one series costs in the head beyond its label bytes: the `Series` with its lock
/// and open chunk buffer, the label pairs (two thin `SharedStr`s each), the hash table and
/// postings entries.
///
/// Measured with `examples/mem_per_series` (docs/benchmarks.md): 567–572 bytes of `RssAnon`
/// per node_exporter-like series with 4 samples, whose ten labels hold 134 bytes of names
/// and values on average; 572 − 134 = 438, rounded up to 440.
pub const SERIES_OVERHEAD_BYTES: u64 = 440;

/// What [`Head::index_bytes`] counts for a series with these labels.
fn series_bytes(labels: &Labels) -> u64 {
    let label_bytes: usize = labels.iter().map(|l| l.name.len() + l.value.len()).sum();
    SERIES_OVERHEAD_BYTES + label_bytes as u64
}

/// The tenant's series map and postings. Series refs are indexes into `series`, assigned in
/// creation order, so every postings list is sorted by construction.
#[derive(Debug, Default)]
struct Index {
    series: Vec<Arc<Series>>,
    /// Series refs, found by their label set's hash ([`Labels::hash_key`]): 4 bytes a
    /// slot. Series whose hashes collide share the table as any other entries do (a lookup
    /// confirms by comparing labels). When the table grows, hashes are recomputed from the
    /// labels rather than stored: 8 bytes a series saved for a rare, amortised cost.
    by_hash: hashbrown::HashTable<u32>,
    /// name → value → sorted series refs.
    postings: FxHashMap<SharedStr, FxHashMap<SharedStr, PostingList>>,
}

/// One postings list: sorted series refs. Most values of a label that tells series apart
/// (a pod, an instance, a series id) belong to one series: that one is kept inline, without
/// an allocation of its own (32 bytes a series saved on node_exporter-like labels).
///
/// 16 bytes (a shared list is boxed), so a value's slot in its map is 24 bytes.
// The box is the point: a `Vec` inline would make every slot 8 bytes bigger.
#[allow(clippy::box_collection)]
#[derive(Debug)]
enum PostingList {
    One(u32),
    Many(Box<Vec<u32>>),
}

impl PostingList {
    fn push(&mut self, r: u32) {
        match self {
            PostingList::One(a) => *self = PostingList::Many(Box::new(vec![*a, r])),
            PostingList::Many(v) => v.push(r),
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            PostingList::One(a) => std::slice::from_ref(a),
            PostingList::Many(v) => v,
        }
    }

    /// Maps every ref through `f`, dropping those it refuses; gives back spare capacity.
    /// Returns whether anything is left.
    fn retain_map(&mut self, mut f: impl FnMut(&mut u32) -> bool) -> bool {
        match self {
            PostingList::One(a) => f(a),
            PostingList::Many(v) => {
                v.retain_mut(|r| f(r));
                match v.len() {
                    0 => false,
                    1 => {
                        *self = PostingList::One(v[0]);
                        true
                    }
                    n => {
                        if n < v.capacity() / 2 {
                            v.shrink_to_fit();
                        }
                        true
                    }
                }
            }
        }
    }
}

impl Index {
    fn lookup(&self, hash: u64, pairs: &[(&[u8], &[u8])]) -> Option<u32> {
        self.by_hash
            .find(hash, |&r| self.series[r as usize].labels().eq_raw(pairs))
            .copied()
    }

    /// The shared copies of a label's name and value: the postings keys when the index
    /// has them already (so the head needs no interner of its own), else new ones.
    fn share(&self, name: &str, value: &str) -> (SharedStr, SharedStr) {
        match self.postings.get_key_value(name) {
            Some((n, values)) => (
                n.clone(),
                values
                    .get_key_value(value)
                    .map_or_else(|| SharedStr::new(value), |(v, _)| v.clone()),
            ),
            None => (SharedStr::new(name), SharedStr::new(value)),
        }
    }

    fn insert(&mut self, hash: u64, labels: Labels, series_ref: u64) -> u32 {
        let r = u32::try_from(self.series.len()).expect("series limit keeps refs within u32");
        for l in labels.iter() {
            let values = self.postings.entry(l.name.clone()).or_default();
            match values.get_mut(&*l.value) {
                Some(list) => list.push(r),
                None => {
                    values.insert(l.value.clone(), PostingList::One(r));
                }
            }
        }
        self.series.push(Arc::new(Series::new(labels, series_ref)));
        let series = &self.series;
        self.by_hash
            .insert_unique(hash, r, |&x| series[x as usize].labels().hash_key());
        r
    }

    /// Removes every series `remove` picks and renumbers the rest, keeping their order (so
    /// postings stay sorted). Postings lists, value and name maps that become empty are
    /// dropped, spare capacity is given back, and interned strings nothing refers to any
    /// more leave the interner. Returns the removed series.
    ///
    /// O(series + postings entries): the caller batches removals (one sweep, one rebuild).
    fn remove_where(&mut self, mut remove: impl FnMut(&Series) -> bool) -> Vec<Arc<Series>> {
        const GONE: u32 = u32::MAX;
        let mut remap: Vec<u32> = Vec::with_capacity(self.series.len());
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.series.len());
        for s in self.series.drain(..) {
            if remove(&s) {
                remap.push(GONE);
                removed.push(s);
            } else {
                remap.push(kept.len() as u32);
                kept.push(s);
            }
        }
        if removed.is_empty() {
            self.series = kept;
            return removed;
        }
        kept.shrink_to(kept.len() + kept.len() / 8);
        self.series = kept;
        let map = |r: &mut u32| -> bool {
            *r = remap[*r as usize];
            *r != GONE
        };
        self.postings.retain(|_, values| {
            values.retain(|_, list| list.retain_map(|r| map(r)));
            shrink_map(values);
            !values.is_empty()
        });
        shrink_map(&mut self.postings);
        // Renumbering keeps each entry's labels, hence its hash and its bucket.
        self.by_hash.retain(|r| map(r));
        if self.by_hash.len() < self.by_hash.capacity() / 4 {
            let series = &self.series;
            self.by_hash
                .shrink_to_fit(|&x| series[x as usize].labels().hash_key());
        }
        removed
    }

    /// Refs of the series that match every matcher, sorted.
    fn select(&self, matchers: &[Matcher]) -> Vec<u32> {
        // Candidates come from the postings of matchers that cannot match an absent label;
        // every candidate is then checked against all matchers, which also covers those that
        // match the empty string (e.g. `foo!="bar"` matches series without `foo`).
        let mut candidates: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let set = self.postings_for(m);
            candidates = Some(match candidates {
                None => set,
                Some(c) => intersect(&c, &set),
            });
            if candidates.as_ref().is_some_and(|c| c.is_empty()) {
                return Vec::new();
            }
        }
        let check = |r: &u32| {
            let labels = self.series[*r as usize].labels();
            matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
        };
        match candidates {
            Some(c) => c.into_iter().filter(check).collect(),
            None => (0..self.series.len() as u32).filter(check).collect(),
        }
    }

    /// Union of the postings of `m.name`'s values that `m` matches.
    fn postings_for(&self, m: &Matcher) -> Vec<u32> {
        let Some(values) = self.postings.get(m.name.as_str()) else {
            return Vec::new();
        };
        if m.op == crate::model::MatchOp::Eq {
            return values
                .get(m.value.as_str())
                .map(|l| l.as_slice().to_vec())
                .unwrap_or_default();
        }
        let mut lists: Vec<&[u32]> = values
            .iter()
            .filter(|(v, _)| m.matches(v))
            .map(|(_, l)| l.as_slice())
            .collect();
        match lists.len() {
            0 => Vec::new(),
            1 => lists[0].to_vec(),
            _ => {
                lists.sort_by_key(|l| std::cmp::Reverse(l.len()));
                let mut all: Vec<u32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
                all.sort_unstable();
                all.dedup();
                all
            }
        }
    }
}

/// Gives back a map's spare capacity once it is mostly empty (after removals), so that a
/// tenant that shrinks returns its memory.
fn shrink_map<K: Eq + std::hash::Hash, V>(m: &mut FxHashMap<K, V>) {
    if m.len() < m.capacity() / 4 {
        m.shrink_to_fit();
    }
}

/// Intersection of two sorted lists.
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// What every series of one push shares: the tenant's out-of-order window (ms) and one
/// clock reading.
#[derive(Debug, Clone, Copy)]
struct PushClock {
    window: i64,
    now: Tick,
}

/// Reused per push: the current series' labels, sorted and without empty values.
type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// The labels sorted by name without empty values: `raw` itself when it already is (what
/// Prometheus sends, so the common case copies nothing), else a normalised copy in `out`.
fn normalise<'r, 'a>(
    raw: &'r [(&'a [u8], &'a [u8])],
    out: &'r mut Pairs<'a>,
) -> &'r [(&'a [u8], &'a [u8])] {
    let clean = raw.iter().all(|(_, v)| !v.is_empty()) && raw.windows(2).all(|w| w[0].0 <= w[1].0);
    if clean {
        return raw;
    }
    out.clear();
    out.extend(raw.iter().filter(|(_, v)| !v.is_empty()).copied());
    out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out
}

/// The series' labels as text for an error message, from raw pairs. Huge values are cut.
pub(crate) fn describe_raw(pairs: &[(&[u8], &[u8])]) -> String {
    const MAX: usize = 256;
    let mut s = String::from("{");
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&String::from_utf8_lossy(&n[..n.len().min(64)]));
        s.push_str("=\"");
        let cut = &v[..v.len().min(64)];
        s.push_str(&String::from_utf8_lossy(cut).escape_default().to_string());
        if v.len() > cut.len() {
            s.push('…');
        }
        s.push('"');
        if s.len() > MAX {
            s.push_str(", …");
            break;
        }
    }
    s.push('}');
    s
}

impl TenantHead {
    fn new(
        id: TenantId,
        cfg: &HeadConfig,
        metrics: &Arc<Metrics>,
        next_ref: Arc<AtomicU64>,
        closed_bytes: Arc<AtomicU64>,
        index_bytes: Arc<AtomicU64>,
        spill: Arc<OnceLock<Arc<Spill>>>,
    ) -> Self {
        let l = TenantLabels {
            tenant: id.to_string(),
        };
        let tm = TenantMetrics {
            ingested: metrics.samples_ingested.get_or_create(&l).clone(),
            ooo_appended: metrics.ooo_samples_appended.get_or_create(&l).clone(),
            repeated: metrics.samples_repeated.get_or_create(&l).clone(),
            histograms_ingested: metrics.histograms_ingested.get_or_create(&l).clone(),
            series: metrics.head_series.get_or_create(&l).clone(),
            chunks: metrics.head_chunks.get_or_create(&l).clone(),
            metrics: metrics.clone(),
            tenant: id.to_string(),
        };
        Self {
            id,
            label_limits: cfg.label_limits,
            max_series: cfg.max_series_per_tenant,
            ooo_window: cfg.out_of_order_window,
            overrides: cfg.overrides.clone(),
            index: RwLock::new(Index::default()),
            metrics: tm,
            next_ref,
            closed_bytes,
            index_bytes,
            spill,
        }
    }

    fn restore_series(
        &self,
        series_ref: u64,
        labels: &[(&str, &str)],
    ) -> Result<Arc<Series>, LabelError> {
        let mut pairs: Vec<(&[u8], &[u8])> = labels
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        crate::model::sort_and_drop_empty(&mut pairs);
        let hash = crate::model::hash_raw(&pairs);
        let mut index = self.index.write();
        if let Some(r) = index.lookup(hash, &pairs) {
            let existing = &index.series[r as usize];
            if existing.series_ref() == series_ref {
                return Ok(existing.clone());
            }
            // The same labels under a new ref: the running head gives a label set a new ref
            // only after its previous entry left (idle, every chunk flushed and released), so
            // the earlier incarnation is replaced, as it was then. Its replayed samples are in
            // the store (it could not leave otherwise); any flush mark of it that a crash lost
            // would only have caused a repeated upload. The slot is reused: same labels, so
            // postings and hashes stay valid.
            let old = existing.clone();
            let fresh = Arc::new(Series::new(old.labels().clone(), series_ref));
            fresh.set_logged();
            self.metrics.chunks.dec_by(old.num_chunks() as i64);
            self.add_hist_bytes(-(old.hist_counted() as i64));
            index.series[r as usize] = fresh.clone();
            tracing::debug!(series = %old.labels(), old_ref = old.series_ref(), new_ref = series_ref,
                "replay: series came back after it had left the head; earlier entry replaced");
            return Ok(fresh);
        }
        let unlimited = LabelLimits {
            max_label_names_per_series: usize::MAX,
            max_label_name_length: usize::MAX,
            max_label_value_length: usize::MAX,
            // Replay takes back what was accepted, whatever the scheme is now.
            name_validation: crate::model::NameValidationScheme::Utf8,
        };
        let labels =
            Labels::from_raw_pairs_shared(&mut pairs, &unlimited, |n, v| index.share(n, v))?;
        self.index_bytes
            .fetch_add(series_bytes(&labels), Ordering::Relaxed);
        let r = index.insert(hash, labels, series_ref);
        self.metrics.series.inc();
        let s = index.series[r as usize].clone();
        s.set_logged();
        Ok(s)
    }

    /// Removes the series that had no new sample for `idle` and hold no chunk any more
    /// (see [`Series::is_removable`]). A first pass under the read lock finds candidates, so
    /// a sweep that removes nothing never blocks pushes; the removal itself re-checks every
    /// series under the write lock (appends to known series run under the read lock, so
    /// none can slip in between the check and the removal). Returns the series removed.
    pub fn remove_idle(&self, idle: Duration) -> u64 {
        let any = self
            .index
            .read()
            .series
            .iter()
            .any(|s| s.is_removable(idle));
        if !any {
            return 0;
        }
        let mut index = self.index.write();
        let removed = index.remove_where(|s| s.is_removable(idle));
        let n = removed.len() as u64;
        let bytes: u64 = removed
            .iter()
            .map(|s| series_bytes(s.labels()) + s.hist_counted())
            .sum();
        // Dropping the last handles frees the labels and their strings (the postings keys
        // of values no series has any more went with the rebuild). A query may hold a
        // removed series a little longer; its strings go when it lets go.
        drop(removed);
        drop(index);
        self.index_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.metrics.series.dec_by(n as i64);
        n
    }

    /// Every series of the tenant, in creation order.
    pub fn all_series(&self) -> Vec<Arc<Series>> {
        self.index.read().series.clone()
    }

    /// Restores a series' chunks from a checkpoint (see [`Series`]'s restore).
    pub fn restore_chunks(
        &self,
        series: &Series,
        chunks: Vec<SnapshotChunk>,
    ) -> Result<(), crate::chunk::ChunkError> {
        let (n, bytes) = series.restore(chunks, self.spill.get())?;
        self.metrics.chunks.inc_by(n as i64);
        self.closed_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.add_hist_bytes(series.account_hist());
        Ok(())
    }

    /// Replays a WAL flush mark on one of this tenant's series (see
    /// [`Series::apply_flush_mark`]).
    pub fn apply_flush_mark(&self, series: &Series, max_t: i64) {
        let delta = series.apply_flush_mark(max_t);
        if delta >= 0 {
            self.closed_bytes.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.closed_bytes
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
        self.add_hist_bytes(series.account_hist());
    }

    /// Adds a change of a series' histogram state (its open histogram chunk and box, see
    /// `series/hist.rs`) to the series bytes (`Head::index_bytes`), where the float open
    /// chunk is counted.
    fn add_hist_bytes(&self, delta: i64) {
        if delta > 0 {
            self.index_bytes.fetch_add(delta as u64, Ordering::Relaxed);
        } else if delta < 0 {
            self.index_bytes
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Cuts every open chunk that is due (see [`Series::cut_if_due`]); all of them with
    /// `force`. Returns the number cut.
    pub fn cut_due(&self, now_ms: i64, max_age_ms: i64, max_idle: Duration, force: bool) -> u64 {
        let mut cut = 0;
        for s in self.all_series() {
            let bytes = s.cut_if_due(now_ms, max_age_ms, max_idle, force);
            if bytes > 0 {
                cut += 1;
                self.closed_bytes.fetch_add(bytes, Ordering::Relaxed);
                self.add_hist_bytes(s.account_hist());
            }
        }
        cut
    }

    /// The flusher's object ids of the chunks [`TenantHead::release_flushed`] would drop now.
    pub fn releasable_objects(&self, retain: Duration, all: bool) -> Vec<u64> {
        let mut out = Vec::new();
        for s in self.all_series() {
            s.releasable_objects(retain, all, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Drops flushed chunks from memory (see [`Series::release_flushed`]).
    ///
    /// Only chunks whose object `allowed` accepts are dropped: the caller first tells the
    /// readers that those objects must be read from the store (see
    /// [`TenantHead::releasable_objects`]), so no query finds a chunk in neither place.
    pub fn release_flushed(
        &self,
        retain: Duration,
        all: bool,
        allowed: &dyn Fn(u64) -> bool,
    ) -> Released {
        let mut out = Released::default();
        for s in self.all_series() {
            s.release_flushed(retain, all, allowed, &mut out);
        }
        self.closed_bytes.fetch_sub(out.bytes, Ordering::Relaxed);
        self.metrics.chunks.dec_by(out.chunks as i64);
        out.objects.sort_unstable();
        out.objects.dedup();
        out
    }

    /// Appends replayed samples to a series. Repeats (of what a checkpoint already holds,
    /// or logged retries) are no-ops. Every window is open: a sample that was accepted once
    /// is never refused at replay (the window may have shrunk since), and one older than
    /// the newest lands in out-of-order chunks as it did when it was pushed (WAL order is
    /// push order). Returns the samples appended.
    pub fn append_replayed(&self, series: &Series, samples: &[(i64, f64)]) -> u64 {
        let out = series.append_with(samples, None, i64::MAX);
        self.closed_bytes
            .fetch_add(out.closed_bytes, Ordering::Relaxed);
        self.add_hist_bytes(out.hist_bytes);
        if out.chunks_created > 0 {
            self.metrics.chunks.inc_by(out.chunks_created as i64);
        }
        self.metrics.ingested.inc_by(out.appended);
        self.metrics.ooo_appended.inc_by(out.ooo_appended);
        out.appended
    }

    /// The out-of-order window of this tenant now, in ms: the overrides file's
    /// `out_of_order_time_window`, else `--ingest.out-of-order-window`.
    pub fn ooo_window_ms(&self) -> i64 {
        let w = self
            .overrides
            .tenant(&self.id)
            .out_of_order_time_window
            .unwrap_or(self.ooo_window);
        i64::try_from(w.as_millis()).unwrap_or(i64::MAX)
    }

    /// The tenant.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// Series in this tenant's head.
    pub fn num_series(&self) -> usize {
        self.index.read().series.len()
    }

    /// Whether the tenant has the series with these raw labels (wire order, as in a
    /// `WriteBatch`): exemplars are only kept for series the head took.
    pub fn has_series_raw(&self, raw: &[(&[u8], &[u8])]) -> bool {
        let mut buf: Pairs<'_> = Vec::new();
        let pairs = normalise(raw, &mut buf);
        let hash = crate::model::hash_raw(pairs);
        self.index.read().lookup(hash, pairs).is_some()
    }

    /// Appends a decoded write request. Series that fail (bad labels, limits, ordering) are
    /// refused individually; the rest of the request is kept.
    pub fn append(&self, batch: &WriteBatch<'_>, mut log: Option<&mut WalLog>) -> AppendReport {
        let mut report = AppendReport::default();
        let push = PushClock {
            window: self.ooo_window_ms(),
            now: Tick::now(),
        };
        let mut pairs: Pairs<'_> = Vec::with_capacity(16);
        // Series not yet in the head: (index into batch.series, hash).
        let mut missing: Vec<(usize, u64)> = Vec::new();
        {
            let index = self.index.read();
            for (i, s) in batch.series.iter().enumerate() {
                let raw = &batch.labels[s.labels_start as usize..s.labels_end as usize];
                // Known series first, on the pairs as sent: `hash_raw` and `eq_raw` skip
                // empty values, and `eq_raw` matches only pairs in the stored (sorted)
                // order, so a hit is exact without checking the order first (what
                // Prometheus sends is sorted: the check cost a sixth of the append phase).
                // A miss is normalised and looked up again.
                let mut hash = crate::model::hash_raw(raw);
                let mut found = index.lookup(hash, raw);
                if found.is_none() {
                    let normal = normalise(raw, &mut pairs);
                    if !std::ptr::eq(normal, raw) {
                        hash = crate::model::hash_raw(normal);
                        found = index.lookup(hash, normal);
                    }
                }
                match found {
                    Some(r) => self.append_samples(
                        &index.series[r as usize],
                        batch,
                        i,
                        &mut report,
                        log.as_deref_mut(),
                        push,
                    ),
                    None => missing.push((i, hash)),
                }
            }
        }
        if !missing.is_empty() {
            self.create_and_append(batch, &missing, &mut pairs, &mut report, log, push);
        }
        self.metrics
            .ingested
            .inc_by(report.appended - report.duplicates_ignored);
        if report.ooo_appended > 0 {
            self.metrics.ooo_appended.inc_by(report.ooo_appended);
        }
        if report.duplicates_ignored > 0 {
            self.metrics.repeated.inc_by(report.duplicates_ignored);
        }
        report
    }

    fn create_and_append<'a>(
        &self,
        batch: &WriteBatch<'a>,
        missing: &[(usize, u64)],
        pairs: &mut Pairs<'a>,
        report: &mut AppendReport,
        mut log: Option<&mut WalLog>,
        push: PushClock,
    ) {
        // The flags' limits, or the overrides file's for this tenant as it is now.
        let o = self.overrides.tenant(&self.id);
        let max_series = o.max_series_per_tenant.unwrap_or(self.max_series);
        let label_limits = LabelLimits {
            max_label_names_per_series: o
                .max_label_names_per_series
                .unwrap_or(self.label_limits.max_label_names_per_series),
            max_label_name_length: o
                .max_label_name_length
                .unwrap_or(self.label_limits.max_label_name_length),
            max_label_value_length: o
                .max_label_value_length
                .unwrap_or(self.label_limits.max_label_value_length),
            name_validation: o
                .name_validation_scheme
                .unwrap_or(self.label_limits.name_validation),
        };
        let mut index = self.index.write();
        for &(i, hash) in missing {
            let s = &batch.series[i];
            // New series are rare: always copy, since validation needs the pairs mutable.
            pairs.clear();
            pairs.extend_from_slice(normalise(
                &batch.labels[s.labels_start as usize..s.labels_end as usize],
                &mut Vec::new(),
            ));
            let n_samples = u64::from(s.samples_end - s.samples_start);
            // Another push may have created it since the read pass.
            let r = match index.lookup(hash, pairs) {
                Some(r) => r,
                None => {
                    if index.series.len() >= max_series {
                        let e = HeadError::SeriesLimit { limit: max_series };
                        self.metrics.rejected(e.reason(), n_samples);
                        report.push_error(|| describe_raw(pairs), e, n_samples);
                        continue;
                    }
                    let idx = &mut *index;
                    let labels =
                        match Labels::from_raw_pairs_shared(pairs, &label_limits, |n, v| {
                            idx.share(n, v)
                        }) {
                            Ok(l) => l,
                            Err(e) => {
                                let e = HeadError::Labels(e);
                                self.metrics.rejected(e.reason(), n_samples);
                                report.push_error(|| describe_raw(pairs), e, n_samples);
                                continue;
                            }
                        };
                    report.series_created += 1;
                    self.metrics.series.inc();
                    let series_ref = self.next_ref.fetch_add(1, Ordering::AcqRel);
                    self.index_bytes
                        .fetch_add(series_bytes(&labels), Ordering::Relaxed);
                    idx.insert(hash, labels, series_ref)
                }
            };
            let series = index.series[r as usize].clone();
            self.append_samples(&series, batch, i, report, log.as_deref_mut(), push);
        }
    }

    fn append_samples(
        &self,
        series: &Arc<Series>,
        batch: &WriteBatch<'_>,
        i: usize,
        report: &mut AppendReport,
        mut log: Option<&mut WalLog>,
        push: PushClock,
    ) {
        let s = &batch.series[i];
        let samples = &batch.samples[s.samples_start as usize..s.samples_end as usize];
        if samples.is_empty() {
            if s.num_histograms() > 0 {
                self.append_histograms(series, batch, i, report, log);
            }
            return;
        }
        if let Some(l) = log.as_deref_mut() {
            if !series.is_logged() {
                l.series.push(series.clone());
            }
        }
        let out = series.append_at(
            samples,
            log.as_deref_mut().map(|l| &mut l.samples),
            push.window,
            push.now,
        );
        if out.closed_bytes > 0 {
            self.closed_bytes
                .fetch_add(out.closed_bytes, Ordering::Relaxed);
        }
        self.add_hist_bytes(out.hist_bytes);
        report.appended += out.appended + out.duplicates;
        report.ooo_appended += out.ooo_appended;
        report.duplicates_ignored += out.duplicates;
        if out.chunks_created > 0 {
            self.metrics.chunks.inc_by(out.chunks_created as i64);
        }
        if let Some((e, n)) = out.first_error {
            self.metrics.rejected(e.reason(), n);
            report.push_error(|| series.labels().to_string(), e, n);
        }
        // After the floats: a series' floats and histograms in one request go in that order.
        if s.num_histograms() > 0 {
            self.append_histograms(series, batch, i, report, log);
        }
    }

    /// Appends the native histograms of `batch.series[i]` (see
    /// [`Series::append_histograms`]); the WAL log gets them as records 4 and 5.
    fn append_histograms(
        &self,
        series: &Arc<Series>,
        batch: &WriteBatch<'_>,
        i: usize,
        report: &mut AppendReport,
        mut log: Option<&mut WalLog>,
    ) {
        let s = &batch.series[i];
        let hs = &batch.histograms[s.histograms_start as usize..s.histograms_end as usize];
        if let Some(l) = log.as_deref_mut() {
            if !series.is_logged()
                && l.series.last().map(|x| x.series_ref()) != Some(series.series_ref())
            {
                l.series.push(series.clone());
            }
        }
        let mut logged = Vec::new();
        let out = series.append_histograms(hs, log.is_some().then_some(&mut logged));
        if let Some(l) = log {
            for h in logged {
                match h.h {
                    crate::model::HistogramValue::Int(_) => l.histograms.push(h),
                    crate::model::HistogramValue::Float(_) => l.float_histograms.push(h),
                }
            }
        }
        if out.closed_bytes > 0 {
            self.closed_bytes
                .fetch_add(out.closed_bytes, Ordering::Relaxed);
        }
        self.add_hist_bytes(out.hist_bytes);
        report.histograms_appended += out.appended + out.duplicates;
        // Not in `duplicates_ignored`: that one is of float samples (it is taken off
        // `appended` for `weft_samples_ingested_total`).
        self.metrics.histograms_ingested.inc_by(out.appended);
        if out.duplicates > 0 {
            self.metrics.repeated.inc_by(out.duplicates);
        }
        if out.chunks_created > 0 {
            self.metrics.chunks.inc_by(out.chunks_created as i64);
        }
        if let Some((e, n)) = out.first_error {
            self.metrics.rejected(e.reason(), n);
            report.push_error(|| series.labels().to_string(), e, n);
        }
    }

    /// Appends replayed histogram samples to a series; refusals (repeats of what a
    /// checkpoint already holds) are expected and only counted. Returns those appended.
    pub fn append_replayed_histograms(
        &self,
        series: &Series,
        samples: &[(i64, crate::model::HistogramValue)],
    ) -> u64 {
        let out = series.append_histograms(samples, None);
        self.closed_bytes
            .fetch_add(out.closed_bytes, Ordering::Relaxed);
        self.add_hist_bytes(out.hist_bytes);
        if out.chunks_created > 0 {
            self.metrics.chunks.inc_by(out.chunks_created as i64);
        }
        self.metrics.histograms_ingested.inc_by(out.appended);
        out.appended
    }

    /// The series matching every matcher and having data in `[mint, maxt]`, sorted by labels.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Arc<Series>> {
        let mut out: Vec<Arc<Series>> = {
            let index = self.index.read();
            index
                .select(matchers)
                .into_iter()
                .map(|r| index.series[r as usize].clone())
                .collect()
        };
        out.retain(|s| s.overlaps(mint, maxt));
        out.sort_by(|a, b| a.labels().cmp(b.labels()));
        out
    }
}

#[cfg(test)]
mod append_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod hist_tests;
