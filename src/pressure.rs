//! Backpressure: one memory limit for the whole process, the disk budget, and the balancer
//! that keeps weft inside both.
//!
//! **Memory** ([`Memory`]): `--limits.memory-bytes` bounds everything weft holds, by named
//! [`Consumer`]. Some consumers are measured by the balancer every tick (closed chunks and
//! the series index of the head); the others reserve before they allocate
//! ([`Memory::try_reserve`]) and give back when their [`Reservation`] drops (push bodies,
//! objects being flushed, queries). The object cache gets what the rest leaves: its bound
//! is lowered at once when the rest grows, so a cache insert never takes the total past
//! the limit. On top of the limit the process needs a fixed overhead (binary, runtime,
//! thread stacks, allocator slack) of at most [`FIXED_OVERHEAD_BYTES`].
//!
//! When memory runs short, weft gives back in this order (DESIGN.md): the cache, flushed
//! chunks (the store has them), unflushed closed chunks to spill files, and only then does
//! it refuse work: pushes get 503 + Retry-After (never 429: Prometheus drops data on 429
//! unless told otherwise, and retries a 503 until it goes through), a read that cannot
//! reserve gets a 503 that names the memory limit. `/ready` stays true meanwhile.
//!
//! **Disk**: past `--limits.disk-bytes` of WAL and spill on disk, pushes are refused the
//! same way.
//!
//! The balancer ([`Balancer::tick`]) runs every [`Pressure::PERIOD`]; a push's admission
//! only reads atomics.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::flush::Flusher;
use crate::head::Head;
use crate::ingest::Ingester;
use crate::local::LocalTier;
use crate::metrics::{ConsumerLabels, Metrics};
use crate::spill::Spill;
use crate::store::cache::ObjectCache;
use crate::store::catalog::Catalog;

/// What the process needs beyond the accounted memory: the binary's code and data, the
/// tokio runtime and its worker and blocking thread stacks, and allocator slack. The
/// operator's container limit must leave this much above `--limits.memory-bytes`.
pub const FIXED_OVERHEAD_BYTES: u64 = 64 << 20;

/// The memory limit when neither the flag nor a cgroup gives one.
pub const DEFAULT_LIMIT_BYTES: u64 = 1 << 30;

/// The smallest limit taken from a cgroup (a tiny container still gets a working weft;
/// if the container is smaller than this plus the overhead, the kernel decides).
pub const MIN_CGROUP_LIMIT_BYTES: u64 = 64 << 20;

/// Who holds memory. Each has a gauge `weft_memory_bytes{consumer="..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Consumer {
    /// Closed chunk bytes in the head (measured: [`Head::closed_bytes`]).
    HeadChunks,
    /// Series entries, label strings, postings and open chunks (measured, an estimate per
    /// series: [`Head::index_bytes`]).
    HeadSeries,
    /// The object index and chunk cache (measured: its charged bytes). Gives back first.
    Cache,
    /// Buffers of reads (reserved by the query path).
    Queries,
    /// Push bodies, compressed and decoded, from admission to the end of decoding
    /// (reserved by the write path), and decode buffers kept for reuse.
    PushBodies,
    /// Chunk copies and encoded objects of uploads in flight (reserved by the flusher).
    FlushObjects,
    /// Sources and outputs of a compaction job (reserved by the compactor).
    Compaction,
}

impl Consumer {
    /// Every consumer, in the order of the gauges.
    pub const ALL: [Consumer; 7] = [
        Consumer::HeadChunks,
        Consumer::HeadSeries,
        Consumer::Cache,
        Consumer::Queries,
        Consumer::PushBodies,
        Consumer::FlushObjects,
        Consumer::Compaction,
    ];

    /// The `consumer` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Consumer::HeadChunks => "head_chunks",
            Consumer::HeadSeries => "head_series",
            Consumer::Cache => "cache",
            Consumer::Queries => "queries",
            Consumer::PushBodies => "push_bodies",
            Consumer::FlushObjects => "flush_objects",
            Consumer::Compaction => "compaction",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reservation that would have taken accounted memory past the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "memory limit reached: {consumer} needs {requested_bytes} more bytes, and {used_bytes} \
     of the {limit_bytes}-byte limit (--limits.memory-bytes) are in use without the cache; \
     retry later"
)]
pub struct MemoryRefusal {
    /// Who asked.
    pub consumer: Consumer,
    /// How much it asked for.
    pub requested_bytes: u64,
    /// Accounted bytes in use, the cache not counted (it would have given its share back).
    pub used_bytes: u64,
    /// The limit.
    pub limit_bytes: u64,
}

/// Why a push is refused for now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The disk budget is used up.
    #[error(
        "local disk budget used up ({used} of {budget} bytes of WAL and spill): the object \
         store is not taking uploads fast enough; retry later"
    )]
    Disk {
        /// Bytes in use.
        used: u64,
        /// The budget.
        budget: u64,
    },
    /// Accounted memory is at the limit even with the cache given back.
    #[error(transparent)]
    Memory(#[from] MemoryRefusal),
}

/// A cache whose bound the memory accounting sets: it holds what the rest leaves.
pub trait ReclaimableCache: Send + Sync + fmt::Debug {
    /// Bytes held now.
    fn held_bytes(&self) -> u64;
    /// Sets the bound, evicting down to it before returning.
    fn set_max_bytes(&self, max_bytes: u64);
}

impl ReclaimableCache for ObjectCache {
    fn held_bytes(&self) -> u64 {
        self.stats().bytes
    }
    fn set_max_bytes(&self, max_bytes: u64) {
        ObjectCache::set_max_bytes(self, max_bytes);
    }
}

impl ReclaimableCache for Catalog {
    fn held_bytes(&self) -> u64 {
        self.cache().stats().bytes
    }
    fn set_max_bytes(&self, max_bytes: u64) {
        self.cache().set_max_bytes(max_bytes);
    }
}

const CONSUMERS: usize = Consumer::ALL.len();

/// The memory accounting: the limit, what each consumer holds, and reservations against it.
/// Shared as `Arc<Memory>`; every method is a few atomic operations, and those that grow
/// the total or move the cache's bound take one short lock (plus the cache's own).
///
/// **Invariant:** the non-cache consumers plus the cache's bound stay within the limit
/// whenever a reservation or a measurement changes them (the cache's bound is lowered
/// first). Only the head's own growth between two measurements (each push's admission and
/// each balancer tick) can take the total past the limit; pushes are then refused until
/// the balancer has brought it back.
pub struct Memory {
    limit_bytes: u64,
    /// Sum of `reserved` and `measured` over every consumer: what must fit in the limit
    /// before the cache gets anything.
    rest: AtomicU64,
    reserved: [AtomicU64; CONSUMERS],
    measured: [AtomicU64; CONSUMERS],
    cache: Option<Arc<dyn ReclaimableCache>>,
    /// `--cache.bytes`: the cache never gets more than this, whatever is free.
    cache_cap_bytes: u64,
    /// The bound last given to the cache.
    cache_max: AtomicU64,
    /// Held by every increase of `rest` and every change of the cache's bound, so that the
    /// cache's bound is lowered before the rest grows into its room, and a raise computed
    /// from an older total cannot land after a growth.
    grow_lock: parking_lot::Mutex<()>,
    /// Gives memory back on demand (flushed chunks held only for speed): asked once when a
    /// reservation would be refused, before refusing it.
    reclaimer: parking_lot::Mutex<Option<Reclaimer>>,
    gauges: [Gauge; CONSUMERS],
    refusals: [Counter; CONSUMERS],
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Memory");
        d.field("limit_bytes", &self.limit_bytes);
        for c in Consumer::ALL {
            d.field(c.as_str(), &self.consumer_bytes(c));
        }
        d.finish_non_exhaustive()
    }
}

impl Memory {
    /// Accounting within `limit_bytes`, without a cache. Sets `weft_memory_limit_bytes` and
    /// creates every consumer's gauge (at 0), so the metrics show all of them from the start.
    pub fn new(limit_bytes: u64, metrics: &Metrics) -> Self {
        metrics
            .memory_limit_bytes
            .set(i64::try_from(limit_bytes).unwrap_or(i64::MAX));
        let labels = |c: Consumer| ConsumerLabels {
            consumer: c.as_str(),
        };
        Self {
            limit_bytes,
            rest: AtomicU64::new(0),
            reserved: Default::default(),
            measured: Default::default(),
            cache: None,
            cache_cap_bytes: 0,
            cache_max: AtomicU64::new(0),
            grow_lock: parking_lot::Mutex::new(()),
            reclaimer: parking_lot::Mutex::new(None),
            gauges: Consumer::ALL.map(|c| metrics.memory_bytes.get_or_create(&labels(c)).clone()),
            refusals: Consumer::ALL
                .map(|c| metrics.memory_refusals.get_or_create(&labels(c)).clone()),
        }
    }

    /// Gives the accounting a cache that holds at most `cap_bytes` (`--cache.bytes`) and
    /// otherwise what the rest leaves. Sets its bound at once.
    pub fn with_cache(mut self, cache: Arc<dyn ReclaimableCache>, cap_bytes: u64) -> Self {
        self.cache = Some(cache);
        self.cache_cap_bytes = cap_bytes;
        self.fit_cache(0);
        self
    }

    /// The limit.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Every consumer's bytes, the cache's included. A consistent sum: no growth of the
    /// rest and no raise of the cache's bound can happen between its two reads.
    pub fn used_bytes(&self) -> u64 {
        let _grow = self.grow_lock.lock();
        self.rest_bytes().saturating_add(self.cache_bytes())
    }

    /// Every consumer's bytes but the cache's: what has to fit in the limit, since the cache
    /// gives back whatever is asked of it.
    pub fn rest_bytes(&self) -> u64 {
        self.rest.load(Ordering::Acquire)
    }

    /// What a reservation could take now (the cache would make room for it).
    pub fn available_bytes(&self) -> u64 {
        self.limit_bytes.saturating_sub(self.rest_bytes())
    }

    /// One consumer's bytes.
    pub fn consumer_bytes(&self, c: Consumer) -> u64 {
        if c == Consumer::Cache {
            return self.cache_bytes();
        }
        let i = c.index();
        self.reserved[i]
            .load(Ordering::Relaxed)
            .saturating_add(self.measured[i].load(Ordering::Relaxed))
    }

    /// The cache's bound now.
    pub fn cache_max_bytes(&self) -> u64 {
        self.cache_max.load(Ordering::Relaxed)
    }

    fn cache_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.held_bytes())
    }

    /// Whether the non-cache consumers are past the limit; if so, the refusal to give.
    pub fn check(&self, consumer: Consumer) -> Result<(), MemoryRefusal> {
        let rest = self.rest_bytes();
        if rest > self.limit_bytes {
            self.refusals[consumer.index()].inc();
            return Err(self.refusal(consumer, 0, rest));
        }
        Ok(())
    }

    /// Reserves `bytes` for `consumer`, or refuses if that would take the non-cache
    /// consumers past the limit (counted in `weft_memory_refusals_total`). The cache's bound
    /// drops at once to make room. The bytes are given back when the reservation drops.
    ///
    /// Call it before allocating, with an estimate that is not lower than what will be
    /// allocated; grow the reservation with [`Reservation::try_grow`] as the need becomes
    /// known.
    pub fn try_reserve(
        self: &Arc<Self>,
        consumer: Consumer,
        bytes: u64,
    ) -> Result<Reservation, MemoryRefusal> {
        self.reserve(consumer, bytes)?;
        Ok(Reservation {
            memory: self.clone(),
            consumer,
            bytes,
        })
    }

    /// Sets what is asked to give memory back before a reservation is refused: given the
    /// bytes wanted, it frees what it can (flushed chunks that the local tier and the store
    /// also hold, then unflushed ones to the spill), re-measures what it freed, and returns
    /// the bytes freed.
    pub fn set_reclaimer(&self, reclaim: impl Fn(u64) -> u64 + Send + Sync + 'static) {
        *self.reclaimer.lock() = Some(Arc::new(reclaim));
    }

    fn reserve(&self, consumer: Consumer, bytes: u64) -> Result<(), MemoryRefusal> {
        if bytes == 0 {
            // Nothing to hold: not refused even past the limit (use `check` to ask that).
            return Ok(());
        }
        if let Err(cur) = self.try_add(consumer, bytes) {
            // Memory that is only a convenience goes before a read or an upload is refused.
            // The reclaimer runs without the grow lock: it re-measures what it frees. Push
            // bodies do not wait for it: the balancer makes room within a tick, and the
            // sender retries a 503.
            let reclaim = match consumer {
                Consumer::Queries | Consumer::FlushObjects => self.reclaimer.lock().clone(),
                _ => None,
            };
            let freed = reclaim.map_or(0, |r| r(bytes));
            if freed == 0 || self.try_add(consumer, bytes).is_err() {
                self.refusals[consumer.index()].inc();
                return Err(self.refusal(consumer, bytes, cur.max(self.rest_bytes())));
            }
        }
        Ok(())
    }

    /// Adds `bytes` for `consumer` if they fit; else returns the bytes in use.
    fn try_add(&self, consumer: Consumer, bytes: u64) -> Result<(), u64> {
        let _grow = self.grow_lock.lock();
        let cur = self.rest.load(Ordering::Acquire);
        let Some(new) = cur.checked_add(bytes).filter(|&n| n <= self.limit_bytes) else {
            return Err(cur);
        };
        // The cache makes room before the bytes count, so rest + cache never passes the
        // limit, not even for an instant.
        self.lower_cache_to(self.limit_bytes - new);
        self.rest.fetch_add(bytes, Ordering::AcqRel);
        self.reserved[consumer.index()].fetch_add(bytes, Ordering::Relaxed);
        drop(_grow);
        self.update_gauge(consumer);
        Ok(())
    }

    fn unreserve(&self, consumer: Consumer, bytes: u64) {
        // A decrease needs no lock: it can only leave the cache more room than it has.
        self.reserved[consumer.index()].fetch_sub(bytes, Ordering::Relaxed);
        self.rest.fetch_sub(bytes, Ordering::AcqRel);
        self.update_gauge(consumer);
    }

    /// Records a measured consumer's bytes (the head's, each balancer tick). Measured and
    /// reserved bytes of one consumer add up, so either kind can be used for any consumer;
    /// `Cache` is always measured from the cache itself and ignores this. A measurement is
    /// never refused (the memory is already held); the cache makes room for it at once.
    pub fn set_measured(&self, consumer: Consumer, bytes: u64) {
        if consumer == Consumer::Cache {
            return;
        }
        let grow = self.grow_lock.lock();
        let old = self.measured[consumer.index()].load(Ordering::Relaxed);
        if bytes > old {
            let new = self
                .rest
                .load(Ordering::Acquire)
                .saturating_add(bytes - old);
            self.lower_cache_to(self.limit_bytes.saturating_sub(new));
            self.measured[consumer.index()].store(bytes, Ordering::Relaxed);
            self.rest.fetch_add(bytes - old, Ordering::AcqRel);
        } else {
            self.measured[consumer.index()].store(bytes, Ordering::Relaxed);
            self.rest.fetch_sub(old - bytes, Ordering::AcqRel);
        }
        drop(grow);
        self.update_gauge(consumer);
    }

    /// Records what the head holds now: closed chunks and the series index (two atomic
    /// loads). The balancer does it every tick and push admission before each push, so
    /// that a burst of pushes cannot run far past the limit between two ticks.
    pub fn measure_head(&self, head: &Head) {
        self.set_measured(Consumer::HeadChunks, head.closed_bytes());
        self.set_measured(
            Consumer::HeadSeries,
            head.index_bytes() + head.exmeta().bytes(),
        );
    }

    /// Gives the cache what the rest leaves, less `headroom_bytes`, and at most its cap.
    /// Lowering the bound evicts at once. Returns the new bound.
    pub fn fit_cache(&self, headroom_bytes: u64) -> u64 {
        if self.cache.is_none() {
            return 0;
        }
        let _grow = self.grow_lock.lock();
        let max = self
            .available_bytes()
            .saturating_sub(headroom_bytes)
            .min(self.cache_cap_bytes);
        self.set_cache_max(max);
        max
    }

    /// Lowers the cache's bound to `room` if it is above. Called with `grow_lock` held.
    fn lower_cache_to(&self, room: u64) {
        if self.cache.is_some() && self.cache_max.load(Ordering::Relaxed) > room {
            self.set_cache_max(room);
        }
    }

    /// Called with `grow_lock` held.
    fn set_cache_max(&self, max: u64) {
        if let Some(cache) = &self.cache {
            self.cache_max.store(max, Ordering::Relaxed);
            cache.set_max_bytes(max);
            self.update_gauge(Consumer::Cache);
        }
    }

    fn update_gauge(&self, c: Consumer) {
        self.gauges[c.index()].set(i64::try_from(self.consumer_bytes(c)).unwrap_or(i64::MAX));
    }

    /// Brings every consumer's gauge up to date (the cache's changes without telling us).
    pub fn update_gauges(&self) {
        for c in Consumer::ALL {
            self.update_gauge(c);
        }
    }

    fn refusal(&self, consumer: Consumer, requested_bytes: u64, used_bytes: u64) -> MemoryRefusal {
        MemoryRefusal {
            consumer,
            requested_bytes,
            used_bytes,
            limit_bytes: self.limit_bytes,
        }
    }
}

/// Bytes reserved against the memory limit; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    memory: Arc<Memory>,
    consumer: Consumer,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Who holds them.
    pub fn consumer(&self) -> Consumer {
        self.consumer
    }

    /// Reserves `bytes` more, or refuses (and keeps what is held) as
    /// [`Memory::try_reserve`] does.
    pub fn try_grow(&mut self, bytes: u64) -> Result<(), MemoryRefusal> {
        self.memory.reserve(self.consumer, bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Gives back what is held beyond `bytes` (nothing if it holds less).
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.memory.unreserve(self.consumer, self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.memory.unreserve(self.consumer, self.bytes);
        }
    }
}

/// Where the memory limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// `--limits.memory-bytes`.
    Flag,
    /// A share of the cgroup v2 limit (`memory.max`).
    CgroupV2 {
        /// The cgroup's limit.
        cgroup_bytes: u64,
    },
    /// A share of the cgroup v1 limit (`memory.limit_in_bytes`).
    CgroupV1 {
        /// The cgroup's limit.
        cgroup_bytes: u64,
    },
    /// No cgroup limit: [`DEFAULT_LIMIT_BYTES`].
    Fixed,
}

/// cgroup v1 reports "no limit" as a huge number (`PAGE_COUNTER_MAX` pages, about 2^63
/// bytes); anything at or past 2^60 bytes (1 EiB) is taken to mean none.
const CGROUP_V1_UNLIMITED_BYTES: u64 = 1 << 60;

/// The default memory limit from the contents of the cgroup v2 `memory.max` and the cgroup
/// v1 `memory.limit_in_bytes` files (`None`: no such file). v2 wins when both exist.
///
/// The limit is 3/4 of the cgroup's, less [`FIXED_OVERHEAD_BYTES`], and at least
/// [`MIN_CGROUP_LIMIT_BYTES`]: a quarter stays for the page cache of the WAL and spill files
/// the kernel charges to the cgroup, and for what the accounting cannot see. With no
/// cgroup limit ("max", absent, unreadable or huge), [`DEFAULT_LIMIT_BYTES`].
pub fn default_memory_limit(
    cgroup_v2: Option<&str>,
    cgroup_v1: Option<&str>,
) -> (u64, LimitSource) {
    let share = |cg: u64| {
        (cg / 4 * 3)
            .saturating_sub(FIXED_OVERHEAD_BYTES)
            .max(MIN_CGROUP_LIMIT_BYTES)
    };
    if let Some(v2) = cgroup_v2 {
        let v2 = v2.trim();
        if v2 != "max" {
            if let Ok(cg) = v2.parse::<u64>() {
                return (share(cg), LimitSource::CgroupV2 { cgroup_bytes: cg });
            }
        }
        // "max" (or garbage) in v2: the v1 file does not exist under a v2 hierarchy.
        return (DEFAULT_LIMIT_BYTES, LimitSource::Fixed);
    }
    if let Some(cg) = cgroup_v1.and_then(|v| v.trim().parse::<u64>().ok()) {
        if cg < CGROUP_V1_UNLIMITED_BYTES {
            return (share(cg), LimitSource::CgroupV1 { cgroup_bytes: cg });
        }
    }
    (DEFAULT_LIMIT_BYTES, LimitSource::Fixed)
}

/// [`default_memory_limit`] from `/sys/fs/cgroup/memory.max` (v2) and
/// `/sys/fs/cgroup/memory/memory.limit_in_bytes` (v1).
pub fn read_default_memory_limit() -> (u64, LimitSource) {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    default_memory_limit(v2.as_deref(), v1.as_deref())
}

/// The largest flush object, from `--flush.max-object-bytes`: objects are built in memory
/// (chunk copies plus the encoded object, reserved as `flush_objects`), so the uploads in
/// flight are kept within half the memory limit: a quarter over the concurrency, each
/// object's copies and encoding about twice its size. Never below 1 MiB.
pub fn flush_object_bytes(flag_bytes: u64, memory_limit_bytes: u64, concurrency: usize) -> u64 {
    flag_bytes.min((memory_limit_bytes / 4 / concurrency.max(1) as u64).max(1 << 20))
}

/// The spill file size, from `--spill.file-size`: files are preallocated, so keep one well
/// inside the disk budget (a sixteenth), and never below the spill's minimum.
pub fn spill_file_bytes(flag_bytes: u64, disk_budget_bytes: u64) -> u64 {
    flag_bytes
        .min(disk_budget_bytes / 16)
        .max(crate::spill::MIN_FILE_SIZE_BYTES)
}

/// The WAL growth that triggers a checkpoint, from `--wal.checkpoint-bytes`. The WAL shrinks
/// only at checkpoints (a checkpoint holds chunks, about a tenth of the WAL's bytes for the
/// same samples): checkpoint at least every quarter of the disk budget, so the WAL alone
/// never fills it.
pub fn checkpoint_bytes(flag_bytes: u64, disk_budget_bytes: u64) -> u64 {
    flag_bytes.min(disk_budget_bytes / 4)
}

/// Shared budget state: the memory accounting and the disk budget.
#[derive(Debug)]
pub struct Pressure {
    memory: Arc<Memory>,
    disk_budget_bytes: u64,
    wal_dir: PathBuf,
    disk_used: AtomicU64,
}

impl Pressure {
    /// How often the balancer runs.
    pub const PERIOD: Duration = Duration::from_millis(200);

    /// The memory accounting and a disk budget over a WAL directory.
    pub fn new(memory: Arc<Memory>, disk_budget_bytes: u64, wal_dir: &Path) -> Self {
        Self {
            memory,
            disk_budget_bytes,
            wal_dir: wal_dir.to_path_buf(),
            disk_used: AtomicU64::new(0),
        }
    }

    /// The memory accounting.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    /// The disk budget.
    pub fn disk_budget_bytes(&self) -> u64 {
        self.disk_budget_bytes
    }

    /// Whether a push may be taken now: the disk budget is not used up, and memory without
    /// the cache (the head measured now) is within the limit.
    pub fn check_push(&self, head: &Head) -> Result<(), Refusal> {
        let used = self.disk_used.load(Ordering::Relaxed);
        if used >= self.disk_budget_bytes {
            return Err(Refusal::Disk {
                used,
                budget: self.disk_budget_bytes,
            });
        }
        self.memory.measure_head(head);
        self.memory.check(Consumer::PushBodies)?;
        Ok(())
    }

    /// Bytes of WAL (segments and checkpoints) on disk.
    pub fn wal_bytes(&self) -> u64 {
        dir_bytes(&self.wal_dir)
    }

    /// Records disk use (WAL plus `spill_bytes`); returns it.
    pub fn observe_disk(&self, spill_bytes: u64, metrics: &Metrics) -> u64 {
        let used = self.wal_bytes() + spill_bytes;
        self.disk_used.store(used, Ordering::Relaxed);
        metrics.disk_bytes.set(used as i64);
        // Both sides of the disk alert's ratio are exported.
        metrics
            .disk_limit_bytes
            .set(self.disk_budget_bytes.min(i64::MAX as u64) as i64);
        used
    }
}

/// What a reservation that does not fit asks for room before it is refused (see
/// [`Memory::set_reclaimer`]): first the flushed chunks in memory, which are only there for
/// speed (the local tier and the store hold them); then, if that is not enough, the oldest
/// unflushed closed chunks move to the spill, as the balancer would move them at its next
/// tick. Reads and pushes get memory from the disk rather than being refused while there
/// is something to spill. Runs on the caller's thread (a spill writes and syncs a file).
pub fn reclaimer(
    memory: std::sync::Weak<Memory>,
    head: Arc<Head>,
    flusher: Arc<Flusher>,
) -> impl Fn(u64) -> u64 + Send + Sync + 'static {
    move |wanted| {
        let Some(memory) = memory.upgrade() else {
            return 0;
        };
        let mut freed = flusher.release(true);
        memory.measure_head(&head);
        if freed < wanted {
            // A tenth of the limit more than asked, so that the next reservations fit too.
            let want = wanted - freed + memory.limit_bytes() / 10;
            match head.spill_oldest(want) {
                Ok((_, bytes)) => freed += bytes,
                Err(e) => tracing::warn!(error = %e, "spilling for a reservation failed"),
            }
            memory.measure_head(&head);
        }
        freed
    }
}

/// Gives memory back on demand; see [`Memory::set_reclaimer`].
type Reclaimer = Arc<dyn Fn(u64) -> u64 + Send + Sync>;

/// What one [`Balancer::tick`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Bytes of closed chunks the head may hold this tick: the limit less the other
    /// consumers (the cache not counted) and the headroom.
    pub chunk_budget_bytes: u64,
    /// Bytes of flushed chunks dropped from memory.
    pub released_bytes: u64,
    /// Chunks moved to spill files.
    pub spilled_chunks: u64,
    /// Their bytes.
    pub spilled_bytes: u64,
    /// The cache's bound after the tick.
    pub cache_max_bytes: u64,
    /// Bytes of WAL and spill on disk after the tick.
    pub disk_bytes: u64,
    /// Whether a checkpoint was written to make disk room.
    pub checkpointed: bool,
}

/// Keeps memory within the limit and disk within the budget, every [`Pressure::PERIOD`].
///
/// Build it with a struct literal; every field is needed by one step of [`Balancer::tick`].
#[derive(Debug)]
pub struct Balancer {
    /// The budgets and the memory accounting.
    pub pressure: Arc<Pressure>,
    /// Whose chunks are released and spilled.
    pub head: Arc<Head>,
    /// Releases flushed chunks (it knows which objects they belong to).
    pub flusher: Arc<Flusher>,
    /// Where spilled chunks go; measured for the disk budget.
    pub spill: Arc<Spill>,
    /// Checkpoints, so the WAL can drop segments when the disk budget is used up.
    pub ingester: Arc<Ingester>,
    /// The gauges it sets.
    pub metrics: Arc<Metrics>,
    /// Copies of uploaded objects: counted in the disk budget, and the first thing to give
    /// room back (they are copies; the store has every byte).
    pub local: Option<Arc<LocalTier>>,
}

impl Balancer {
    /// Memory kept free of chunks and cache, as a share of the limit (one tenth): room for
    /// reservations (pushes, uploads, reads) between two ticks, and the old "spill down to
    /// 90 %" margin, so one tick's spill is not undone by the next push.
    pub fn headroom_bytes(&self) -> u64 {
        self.pressure.memory.limit_bytes() / 10
    }

    /// One round, in the order memory is given back (module docs): measure; shrink the
    /// cache; release flushed chunks; spill unflushed ones; give the cache what is left;
    /// then the disk. Refusing pushes needs no step: admission reads the accounting.
    pub fn tick(&self) -> TickReport {
        let mut report = TickReport::default();
        self.measure_memory();
        let headroom = self.headroom_bytes();
        // 1. The cache gives back first: it only gets what chunks and reservations leave.
        self.pressure.memory.fit_cache(headroom);
        // 2. Chunks the store already has, retained or not.
        report.chunk_budget_bytes = self.chunk_budget_bytes(headroom);
        if self.head.closed_bytes() > report.chunk_budget_bytes {
            report.released_bytes = self.flusher.release(true);
            self.measure_memory();
        }
        // 3. The oldest unflushed closed chunks, down to 90 % of the chunk budget.
        let used = self.head.closed_bytes();
        if used > report.chunk_budget_bytes {
            let target = used - report.chunk_budget_bytes + report.chunk_budget_bytes / 10;
            match self.head.spill_oldest(target) {
                Ok((chunks, bytes)) => {
                    self.metrics.spilled_chunks.inc_by(chunks);
                    report.spilled_chunks = chunks;
                    report.spilled_bytes = bytes;
                    tracing::debug!(chunks, bytes, "spilled chunks over the memory budget");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "spilling failed; memory stays over budget")
                }
            }
            self.measure_memory();
        }
        // 4. The cache gets what is left (it may grow again).
        report.cache_max_bytes = self.pressure.memory.fit_cache(headroom);
        self.pressure.memory.update_gauges();
        // 5. Freed heap goes back to the kernel (glibc keeps it otherwise), so RSS follows
        // the accounted memory down, not only up.
        trim_heap();
        // 6. The disk budget.
        let (disk, checkpointed) = self.balance_disk();
        report.disk_bytes = disk;
        report.checkpointed = checkpointed;
        report
    }

    /// Closed chunk bytes the head may hold: the limit less every other non-cache consumer
    /// and the headroom.
    fn chunk_budget_bytes(&self, headroom: u64) -> u64 {
        let memory = &self.pressure.memory;
        let others = memory
            .rest_bytes()
            .saturating_sub(memory.consumer_bytes(Consumer::HeadChunks));
        memory
            .limit_bytes()
            .saturating_sub(others)
            .saturating_sub(headroom)
    }

    /// Records what the head holds.
    fn measure_memory(&self) {
        self.pressure.memory.measure_head(&self.head);
        self.metrics
            .memory_chunk_bytes
            .set(self.head.closed_bytes() as i64);
    }

    /// Measures the disk; when the budget is used up, frees what can be freed. Returns the
    /// disk use and whether a checkpoint was written.
    fn balance_disk(&self) -> (u64, bool) {
        self.metrics.spill_bytes.set(self.spill.live_bytes() as i64);
        let mut disk = self
            .pressure
            .observe_disk(self.local_disk_bytes(), &self.metrics);
        // The local tier holds only copies of what the store has: it gives its room back
        // first, oldest first, well before pushes would be refused.
        if let Some(local) = &self.local {
            let high = self.pressure.disk_budget_bytes() / 8 * 7;
            if disk > high {
                let freed = local.evict_oldest(disk - high);
                if freed > 0 {
                    tracing::debug!(freed, "local copies evicted for the disk budget");
                    disk = self
                        .pressure
                        .observe_disk(self.local_disk_bytes(), &self.metrics);
                }
            }
            self.metrics.observe_local(
                local.disk_bytes(),
                local.whole_objects().0,
                local.evicted(),
            );
        }
        if disk < self.pressure.disk_budget_bytes() {
            return (disk, false);
        }
        // Disk is what refuses pushes now. Spilled chunks the store has can go at once
        // (their retain period is for memory, and they are not in memory), and a
        // checkpoint lets the WAL drop segments: nothing else shrinks the disk.
        self.flusher.release(true);
        let checkpointed = match self.ingester.checkpoint_if_older(Duration::from_secs(10)) {
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "checkpoint for the disk budget failed");
                false
            }
            None => false,
        };
        let disk = self
            .pressure
            .observe_disk(self.local_disk_bytes(), &self.metrics);
        (disk, checkpointed)
    }

    /// Bytes on local disk besides the WAL: spill files and the local tier.
    fn local_disk_bytes(&self) -> u64 {
        self.spill.disk_bytes() + self.local.as_ref().map_or(0, |l| l.disk_bytes())
    }

    /// Runs [`Balancer::tick`] every [`Pressure::PERIOD`] forever, in a blocking thread
    /// (spilling writes files).
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Pressure::PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.tick()).await;
        }
    }
}

/// Returns free heap pages to the kernel, at most once a second.
fn trim_heap() {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_MS.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) < 1000
        || LAST_MS
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it takes
    // the arenas' locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocated bytes of the regular files in `dir` (not recursive; the WAL is flat).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| {
            // Allocated, not apparent, size: WAL segments are preallocated.
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            }
            #[cfg(not(unix))]
            {
                m.len()
            }
        })
        .sum()
}

#[cfg(test)]
mod tests;
