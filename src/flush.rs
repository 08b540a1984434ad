//! The flusher: moves closed chunks from the head into the object store.
//!
//! Every `--flush.period` a cycle runs:
//! 1. open chunks past `--flush.max-chunk-age` (by sample time) or idle past
//!    `--flush.max-chunk-idle` (by wall time) are cut, so they become closed chunks;
//! 2. for each tenant (at most `--flush.concurrency` at once, and never two uploads of one
//!    tenant at the same time), the pending closed chunks are sorted oldest first and packed
//!    into objects of at most `--flush.max-object-bytes`; each object is uploaded with
//!    backoff and jitter that never gives up, behind the store's write circuit breaker
//!    (`store::health`: reads have their own); an upload outstanding past `--store.timeout`
//!    is cut by that deadline and counts as a failure at that moment;
//! 3. once the store acknowledges an object its chunks are marked flushed, a WAL flush mark
//!    per series records it (so a restart does not upload them again), and the catalog
//!    learns the object;
//! 4. flushed chunks older than `--flush.retain-period` leave memory.
//!
//! Objects are built in memory: the chunks are copied out of the head and encoded. Before
//! copying, the flusher reserves twice the planned bytes as `flush_objects` against the
//! memory limit, and plans objects no larger than half of what the limit leaves; if even
//! that cannot be reserved, the tenant is skipped until the next cycle (the balancer frees
//! memory meanwhile) rather than waiting.
//!
//! A tenant whose upload is stuck (the store is down) keeps its chunks; the next cycles skip
//! it until the upload goes through. Nothing is ever dropped: a chunk leaves memory only
//! once it is in the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::head::{Head, PendingChunk, Series, TenantHead};
use crate::ingest::Ingester;
use crate::local::LocalTier;
use crate::metrics::Metrics;
use crate::model::TenantId;
use crate::pressure::{Consumer, Memory};
use crate::store::object::{ChunkData, ObjectBuilder, ObjectKey};
use crate::store::retry::{Backoff, BackoffConfig, CircuitBreaker};
use crate::store::{Store, StoreError};

/// What the flusher does and how fast.
#[derive(Debug, Clone)]
pub struct FlushConfig {
    /// How often a flush cycle runs.
    pub period: Duration,
    /// Open chunks whose first sample is older than this (sample time) are cut and flushed.
    pub max_chunk_age: Duration,
    /// Open chunks with no append for this long (wall time) are cut and flushed.
    pub max_chunk_idle: Duration,
    /// Flushed chunks stay in memory this long, so recent queries never touch the store.
    pub retain_period: Duration,
    /// Tenants uploading at once.
    pub concurrency: usize,
    /// Largest object: a tenant's backlog goes out as several objects of at most this size.
    pub max_object_bytes: u64,
    /// This ingester's id in object keys.
    pub ingester_id: String,
    /// Retry backoff of uploads.
    pub backoff: BackoffConfig,
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(60),
            max_chunk_age: Duration::from_secs(3600),
            max_chunk_idle: Duration::from_secs(300),
            retain_period: Duration::from_secs(300),
            concurrency: 4,
            max_object_bytes: 64 << 20,
            ingester_id: "weft".to_owned(),
            backoff: BackoffConfig::default(),
        }
    }
}

/// Told about objects as they come and go; the catalog implements it.
pub trait ObjectListener: Send + Sync + std::fmt::Debug {
    /// An object is in the store, and every chunk in it is still held locally.
    fn uploaded(&self, key: &ObjectKey, size: u64);
    /// Some chunk of this object left local memory: reads must go to the store for it.
    fn released(&self, key: &ObjectKey);
}

/// What one flush of everything did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FlushSummary {
    /// Open chunks cut so they could be flushed.
    pub chunks_cut: u64,
    /// Objects uploaded.
    pub objects: u64,
    /// Chunks uploaded.
    pub chunks: u64,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// Why a flush did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The deadline passed first; what was not uploaded stays pending.
    #[error(
        "the store did not take everything within {after:?}: {remaining} chunks remain ({reason})"
    )]
    Deadline {
        /// The deadline.
        after: Duration,
        /// Chunks still pending.
        remaining: u64,
        /// The last store error seen, if any.
        reason: String,
    },
    /// The store refused an object for a reason retrying cannot fix.
    #[error("upload refused: {0}")]
    Refused(#[from] StoreError),
}

/// The flusher. Shared as `Arc<Flusher>`.
#[derive(Debug)]
pub struct Flusher {
    cfg: FlushConfig,
    head: Arc<Head>,
    ingester: Arc<Ingester>,
    store: Store,
    breaker: Arc<CircuitBreaker>,
    listener: Arc<dyn ObjectListener>,
    metrics: Arc<Metrics>,
    /// Objects being built and uploaded are reserved here (`flush_objects`).
    memory: Arc<Memory>,
    /// One upload at a time per tenant.
    tenant_locks: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    /// Tenants uploading at once.
    slots: Semaphore,
    /// Next object sequence number (starts at the wall clock in ns, so keys stay unique
    /// across restarts).
    seq: AtomicU64,
    /// Objects this process uploaded whose chunks are all still held locally, by the id the
    /// head knows them by.
    local_objects: Mutex<HashMap<u64, ObjectKey>>,
    next_object_id: AtomicU64,
    /// The last store error, for reports.
    last_error: Mutex<Option<String>>,
    /// Where uploaded objects are also kept, so flushed data that leaves memory is still
    /// answered without the store.
    local: Option<Arc<LocalTier>>,
}

impl Flusher {
    /// A flusher over `head`, logging flush marks through `ingester`, reserving the objects
    /// it builds in `memory`. `breaker` is the store's write breaker
    /// ([`crate::store::health::StoreHealth::write`]).
    #[allow(clippy::too_many_arguments)] // one boot-time call; a builder would only hide them
    pub fn new(
        cfg: FlushConfig,
        head: Arc<Head>,
        ingester: Arc<Ingester>,
        store: Store,
        breaker: Arc<CircuitBreaker>,
        listener: Arc<dyn ObjectListener>,
        metrics: Arc<Metrics>,
        memory: Arc<Memory>,
    ) -> Self {
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            slots: Semaphore::new(cfg.concurrency.max(1)),
            cfg,
            head,
            ingester,
            store,
            breaker,
            listener,
            metrics,
            memory,
            tenant_locks: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(seq),
            local_objects: Mutex::new(HashMap::new()),
            next_object_id: AtomicU64::new(1),
            last_error: Mutex::new(None),
            local: None,
        }
    }

    /// Keeps a copy of every uploaded object in `local` (before its chunks count as
    /// flushed, so they can leave memory only once the copy is on disk), and expires old
    /// copies each cycle.
    pub fn with_local_tier(mut self, local: Arc<LocalTier>) -> Self {
        self.local = Some(local);
        self
    }

    /// Runs a cycle every period, forever.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.clone().cycle();
        }
    }

    /// One cycle: cut due open chunks, start uploads for idle tenants (in the background),
    /// release what has been retained long enough, and update the backlog gauges.
    pub fn cycle(self: Arc<Self>) {
        let now_ms = now_ms();
        let max_age = self.cfg.max_chunk_age.as_millis() as i64;
        for th in self.head.tenant_heads() {
            th.cut_due(now_ms, max_age, self.cfg.max_chunk_idle, false);
            let lock = self.tenant_lock(th.id());
            let Ok(guard) = lock.try_lock_owned() else {
                continue; // an upload of this tenant is still going
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let Ok(_slot) = me.slots.acquire().await else {
                    return;
                };
                if let Err(e) = me.flush_tenant(&th, None).await {
                    tracing::error!(tenant = %th.id(), error = %e, "flush of tenant failed");
                }
            });
        }
        self.release(false);
        // Series lifecycle: series idle past --head.series-idle-timeout whose chunks have all
        // been released (just above, or earlier) leave the head.
        let (_, tenants_removed) = self.head.remove_idle_series();
        if tenants_removed > 0 {
            self.forget_tenant_locks();
        }
        self.update_backlog(now_ms);
        if let Some(local) = self.local.clone() {
            tokio::task::spawn_blocking(move || {
                let freed = local.expire(now_ms);
                if freed > 0 {
                    tracing::debug!(
                        freed,
                        "local copies past --local.retention demoted to their indexes"
                    );
                }
            });
        }
    }

    /// Cuts every open chunk and uploads everything pending, waiting at most `timeout`.
    /// Used by `POST /ingester/flush` and at shutdown.
    pub async fn flush_all(&self, timeout: Duration) -> Result<FlushSummary, FlushError> {
        let deadline = Instant::now() + timeout;
        let mut summary = FlushSummary::default();
        for th in self.head.tenant_heads() {
            summary.chunks_cut += th.cut_due(now_ms(), 0, Duration::ZERO, true);
        }
        let heads = self.head.tenant_heads();
        let results = futures::future::join_all(heads.iter().map(|th| async {
            let lock = self.tenant_lock(th.id());
            let _guard = tokio::time::timeout_at(deadline, lock.lock_owned())
                .await
                .ok()?;
            Some(self.flush_tenant(th, Some(deadline)).await)
        }))
        .await;
        let mut refused = None;
        for r in results.into_iter().flatten() {
            match r {
                Ok(s) => {
                    summary.objects += s.objects;
                    summary.chunks += s.chunks;
                    summary.bytes += s.bytes;
                }
                Err(FlushError::Refused(e)) => refused = Some(e),
                Err(FlushError::Deadline { .. }) => {}
            }
        }
        self.update_backlog(now_ms());
        if let Some(e) = refused {
            return Err(FlushError::Refused(e));
        }
        let remaining = self.pending_chunks();
        if remaining > 0 {
            return Err(FlushError::Deadline {
                after: timeout,
                remaining,
                reason: self
                    .last_error
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "uploads still in progress".to_owned()),
            });
        }
        Ok(summary)
    }

    fn tenant_lock(&self, id: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.tenant_locks
            .lock()
            .entry(id.clone())
            .or_default()
            .clone()
    }

    /// Drops the upload locks of tenants that have left the head and that no flush holds,
    /// so the map is bounded by the tenants in the head (and the tenant cap).
    fn forget_tenant_locks(&self) {
        let live: std::collections::HashSet<TenantId> = self
            .head
            .tenant_heads()
            .iter()
            .map(|t| t.id().clone())
            .collect();
        self.tenant_locks
            .lock()
            .retain(|id, l| live.contains(id) || Arc::strong_count(l) > 1);
    }

    /// The number of per-tenant upload locks (tests).
    #[cfg(test)]
    fn tenant_locks_len(&self) -> usize {
        self.tenant_locks.lock().len()
    }

    /// Uploads the tenant's pending chunks, oldest first, one object after another, until
    /// none is left or `deadline` passes.
    async fn flush_tenant(
        &self,
        th: &TenantHead,
        deadline: Option<Instant>,
    ) -> Result<FlushSummary, FlushError> {
        let mut summary = FlushSummary::default();
        loop {
            // The chunk copies and the encoded object take about twice the chunk bytes.
            let room = self.memory.available_bytes() / 2;
            let Some(plan) = self.plan(th, room) else {
                return Ok(summary);
            };
            let _reserved = match self
                .memory
                .try_reserve(Consumer::FlushObjects, plan.reserve_bytes)
            {
                Ok(r) => r,
                Err(e) => {
                    // Waiting here would hold the tenant's lock while nothing frees memory
                    // any faster; the next cycle tries again.
                    tracing::info!(tenant = %th.id(), error = %e, "flush skipped until the next cycle");
                    *self.last_error.lock() = Some(e.to_string());
                    return Ok(summary);
                }
            };
            let Some(batch) = self.take(plan) else {
                return Ok(summary);
            };
            let started = Instant::now();
            let object = match self.build(th.id(), &batch) {
                Ok(o) => o,
                Err(e) => {
                    batch.finish(false, 0);
                    return Err(e.into());
                }
            };
            let (key, bytes, chunks) = object;
            let path = key.to_path(self.store.prefix());
            let upload = self.upload(&path, bytes.clone());
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d, upload).await {
                    Ok(r) => r,
                    Err(_) => {
                        batch.finish(false, 0);
                        return Err(FlushError::Deadline {
                            after: d.saturating_duration_since(started),
                            remaining: 0,
                            reason: "deadline".to_owned(),
                        });
                    }
                },
                None => upload.await,
            };
            if let Err(e) = result {
                batch.finish(false, 0);
                tracing::error!(tenant = %th.id(), object = %path, error = %e, "store refused an object; its chunks stay pending");
                return Err(e.into());
            }
            if let Some(local) = self.local.clone() {
                // Before the chunks count as flushed: from then on they may leave memory,
                // and the copy is what answers for them while the store is away. A copy
                // that cannot be written only means reads of it go to the store.
                let (k, b) = (key.clone(), bytes.clone());
                match tokio::task::spawn_blocking(move || local.put_object(&k, &b)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(object = %path, error = %e, "could not keep a local copy of an object")
                    }
                    Err(e) => tracing::error!(error = %e, "writing a local copy panicked"),
                }
            }
            // The catalog learns of the object before its chunks count as flushed: from
            // then on `release` may drop them and tell the catalog to read the object from
            // the store, which must find it there (an `uploaded` after that `released`
            // would hide the object's chunks from queries).
            self.listener.uploaded(&key, bytes.len() as u64);
            let id = self.next_object_id.fetch_add(1, Ordering::Relaxed);
            self.local_objects.lock().insert(id, key.clone());
            batch.finish(true, id);
            // A mark speaks for the in-order chunks only (see `Series::flush_mark`).
            let marks: Vec<(u64, i64)> = batch
                .series
                .iter()
                .filter_map(|(s, cs)| {
                    let mut min_ts: Vec<i64> = cs.iter().map(|c| c.min_t).collect();
                    min_ts.sort_unstable();
                    Some((s.series_ref(), s.flush_mark(&min_ts)?))
                })
                .collect();
            if let Err(e) = self.ingester.log_flushed(&marks) {
                // Only costs a repeated upload after a restart.
                tracing::warn!(error = %e, "could not log flush marks");
            }
            let secs = started.elapsed().as_secs_f64();
            self.metrics.store_uploads.inc();
            self.metrics.store_upload_bytes.inc_by(bytes.len() as u64);
            self.metrics.flush_chunks.inc_by(chunks);
            self.metrics.flush_duration.observe(secs);
            tracing::debug!(tenant = %th.id(), object = %path, bytes = bytes.len(), chunks, secs, "object uploaded");
            summary.objects += 1;
            summary.chunks += chunks;
            summary.bytes += bytes.len() as u64;
        }
    }

    /// The oldest pending chunks of the tenant, up to one object's worth and at most
    /// `room_bytes` of chunks, and what building them into an object will reserve.
    fn plan(&self, th: &TenantHead, room_bytes: u64) -> Option<Plan> {
        let series = th.all_series();
        let mut all: Vec<(PendingChunk, u32)> = Vec::new();
        let mut buf = Vec::new();
        for (i, s) in series.iter().enumerate() {
            buf.clear();
            s.pending(&mut buf);
            all.extend(buf.iter().map(|c| (*c, i as u32)));
        }
        if all.is_empty() {
            return None;
        }
        all.sort_unstable_by_key(|(c, i)| (c.min_t, *i));
        // Room for the index: about 64 bytes a chunk plus the labels; keep a quarter spare.
        let budget = (self.cfg.max_object_bytes.saturating_mul(3) / 4).min(room_bytes);
        let mut used = 0u64;
        let mut chosen: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
        for (c, i) in all {
            let cost = c.len as u64 + 64;
            // At least one chunk, so that a tight budget still makes progress (the
            // reservation then decides).
            if used > 0 && used + cost > budget {
                break;
            }
            used += cost;
            chosen.entry(i).or_default().push(c.min_t);
        }
        let label_bytes: u64 = chosen
            .keys()
            .map(|&i| {
                series[i as usize]
                    .labels()
                    .iter()
                    .map(|l| (l.name.len() + l.value.len()) as u64)
                    .sum::<u64>()
            })
            .sum();
        Some(Plan {
            series,
            chosen,
            // The copies, then the encoded object (chunks, index and labels) beside them.
            reserve_bytes: 2 * used + label_bytes,
        })
    }

    /// Copies the planned chunks out of the head, marked in flight.
    fn take(&self, plan: Plan) -> Option<Batch> {
        let mut batch = Batch::default();
        for (i, mut min_ts) in plan.chosen {
            min_ts.sort_unstable();
            let s = &plan.series[i as usize];
            let chunks = s.take_for_flush(&min_ts);
            if !chunks.is_empty() {
                batch.series.push((s.clone(), chunks));
            }
        }
        (!batch.series.is_empty()).then_some(batch)
    }

    fn build(
        &self,
        tenant: &TenantId,
        batch: &Batch,
    ) -> Result<(ObjectKey, Bytes, u64), StoreError> {
        let mut b = ObjectBuilder::new();
        let mut chunks = 0u64;
        for (s, cs) in &batch.series {
            let data: Vec<ChunkData<'_>> = cs
                .iter()
                .map(|c| ChunkData {
                    min_t: c.min_t,
                    max_t: c.max_t,
                    data: &c.data,
                    encoding: c.encoding,
                })
                .collect();
            chunks += data.len() as u64;
            b.add_series(s.labels(), &data)?;
        }
        let o = b.finish()?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let key = ObjectKey::new(tenant.clone(), o.min_t, o.max_t, &self.cfg.ingester_id, seq)?;
        Ok((key, o.bytes, chunks))
    }

    /// Puts the object, retrying retryable errors forever with backoff, behind the breaker.
    async fn upload(
        &self,
        path: &object_store::path::Path,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        let mut backoff = Backoff::from_entropy(self.cfg.backoff);
        let mut attempts = 0u64;
        crate::store::retry::retry(&self.breaker, &mut backoff, || {
            attempts += 1;
            if attempts > 1 {
                self.metrics.store_retries.inc();
            }
            let bytes = bytes.clone();
            async move {
                let r = self.store.put(path, bytes).await;
                self.metrics.set_store_up(crate::store::health::WRITE, self.breaker.up() == 1);
                if let Err(e) = &r {
                    *self.last_error.lock() = Some(e.to_string());
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(object = %path, attempt = attempts, error = %e, "upload failed; retrying with backoff");
                    }
                }
                r
            }
        })
        .await?;
        self.metrics
            .set_store_up(crate::store::health::WRITE, self.breaker.up() == 1);
        Ok(())
    }

    /// Drops from memory what has been flushed and retained long enough (everything flushed
    /// with `all`); tells the listener which objects are no longer wholly local.
    pub fn release(&self, all: bool) -> u64 {
        let mut freed = 0;
        for th in self.head.tenant_heads() {
            // Readers learn first that these objects are to be read from the store; only
            // then do their chunks leave memory. A query that selects from the head before
            // the store therefore finds each chunk in at least one of them.
            let ids = th.releasable_objects(self.cfg.retain_period, all);
            let keys: Vec<ObjectKey> = {
                let mut local = self.local_objects.lock();
                ids.iter().filter_map(|id| local.remove(id)).collect()
            };
            for k in &keys {
                self.listener.released(k);
            }
            let r = th.release_flushed(self.cfg.retain_period, all, &|id| {
                id == 0 || ids.binary_search(&id).is_ok()
            });
            freed += r.bytes;
            self.metrics.released_chunks.inc_by(r.chunks);
        }
        freed
    }

    /// Closed chunks not in the store yet, pending or being uploaded.
    fn pending_chunks(&self) -> u64 {
        self.head
            .tenant_heads()
            .iter()
            .flat_map(|th| th.all_series())
            .map(|s| s.unflushed_chunks() as u64)
            .sum()
    }

    /// Sets the backlog gauges: bytes not yet in the store, and the oldest such sample's age.
    fn update_backlog(&self, now_ms: i64) {
        let (bytes, oldest) = self.head.unflushed();
        self.metrics.flush_backlog_bytes.set(bytes as i64);
        let age = oldest.map_or(0, |t| (now_ms.saturating_sub(t) / 1000).max(0));
        self.metrics.flush_oldest_unflushed_seconds.set(age);
        self.metrics
            .set_store_up(crate::store::health::WRITE, self.breaker.up() == 1);
        self.metrics
            .memory_chunk_bytes
            .set(self.head.closed_bytes() as i64);
    }
}

/// Chunks chosen for one object, not yet copied.
struct Plan {
    series: Vec<Arc<Series>>,
    /// Index into `series` → the chosen chunks' first timestamps.
    chosen: BTreeMap<u32, Vec<i64>>,
    /// What building and uploading the object will hold in memory.
    reserve_bytes: u64,
}

/// Chunks chosen for one object, already marked in flight.
#[derive(Debug, Default)]
struct Batch {
    series: Vec<(Arc<Series>, Vec<crate::head::ChunkCopy>)>,
}

impl Batch {
    fn finish(&self, ok: bool, object: u64) {
        for (s, cs) in &self.series {
            let min_ts: Vec<i64> = cs.iter().map(|c| c.min_t).collect();
            s.finish_flush(&min_ts, ok, object);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ObjectListener for crate::store::catalog::Catalog {
    fn uploaded(&self, key: &ObjectKey, size: u64) {
        self.add(key.clone(), size, true);
    }

    fn released(&self, key: &ObjectKey) {
        self.set_remote(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::HeadConfig;
    use crate::proto::{WriteBatch, WriteSeries};
    use crate::store::faulty::{Fault, FaultyStore, Op};
    use crate::store::object::decode_object;
    use crate::store::retry::{CircuitConfig, CircuitState};
    use crate::store::StoreOptions;
    use crate::wal::{SyncMode, WalConfig};
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt};

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<ObjectKey>>);

    impl ObjectListener for Seen {
        fn uploaded(&self, key: &ObjectKey, _: u64) {
            self.0.lock().push(key.clone());
        }
        fn released(&self, _: &ObjectKey) {}
    }

    /// A head of `series` series × 241 samples (two closed chunks and a one-sample open one
    /// each) over an ingester with a WAL in a temp dir (not synced: the tests do not crash).
    fn rig(series: usize) -> (tempfile::TempDir, Arc<Metrics>, Arc<Head>, Ingester) {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let head = Arc::new(Head::new(HeadConfig::default(), metrics.clone()));
        fill(&head, series, 241);
        let (ing, _) = Ingester::open(
            head.clone(),
            dir.path(),
            WalConfig {
                sync: SyncMode::Never,
                ..WalConfig::default()
            },
        )
        .unwrap();
        (dir, metrics, head, ing)
    }

    fn fill(head: &Head, series: usize, samples: i64) {
        let t = head.tenant_or_create(&TenantId::parse("t1").unwrap());
        let names: Vec<String> = (0..series).map(|i| format!("{i:03}")).collect();
        let mut b = WriteBatch::default();
        for n in &names {
            let ls = b.labels.len() as u32;
            b.labels.push((b"__name__".as_slice(), b"m".as_slice()));
            b.labels.push((b"i".as_slice(), n.as_bytes()));
            let ss = b.samples.len() as u32;
            b.samples
                .extend((0..samples).map(|k| (k * 1000, (k * 7) as f64)));
            b.series.push(WriteSeries {
                labels_start: ls,
                labels_end: b.labels.len() as u32,
                samples_start: ss,
                samples_end: b.samples.len() as u32,
                ..WriteSeries::default()
            });
        }
        t.append(&b, None);
    }

    /// An upload outstanding past `--store.timeout` is a failure the moment the deadline
    /// passes: the write breaker hears it then (not when the hung call would have ended)
    /// and `weft_store_up{op="write"}` drops at that instant; reads are not touched.
    #[tokio::test(start_paused = true)]
    async fn an_upload_past_its_deadline_is_a_failure_at_the_deadline() {
        let (_dir, metrics, head, ing) = rig(2);
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let timeout = Duration::from_secs(2);
        let opts = StoreOptions {
            timeout,
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), object_store::path::Path::default(), &opts);
        let health = {
            let metrics = metrics.clone();
            crate::store::health::StoreHealth::with_observer(
                CircuitConfig {
                    failure_threshold: 1,
                    probe_interval: Duration::from_secs(5),
                },
                move |op, up| metrics.set_store_up(op, up),
            )
        };
        let flusher = Arc::new(Flusher::new(
            FlushConfig {
                period: Duration::from_secs(60),
                ..FlushConfig::default()
            },
            head.clone(),
            Arc::new(ing),
            store,
            health.write.clone(),
            Arc::new(Seen::default()),
            metrics.clone(),
            Arc::new(Memory::new(1 << 30, &metrics)),
        ));
        let up = |op: &'static str| {
            metrics
                .store_up
                .get_or_create(&crate::metrics::OpLabels { op })
                .get()
        };

        faulty.set(&[Op::Put], Some(Fault::Hang));
        let started = Instant::now();
        let task = tokio::spawn(flusher.clone().run());
        // The first cycle starts at once and its upload hangs.
        tokio::time::sleep(timeout - Duration::from_millis(1)).await;
        assert_eq!(faulty.calls(Op::Put), 1);
        assert_eq!(
            health.write.consecutive_failures(),
            0,
            "not yet past the deadline"
        );
        assert_eq!(up("write"), 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The upload's timer fires at this same instant; let its task run (yielding does
        // not move the paused clock).
        for _ in 0..10 {
            if health.write.consecutive_failures() > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(started.elapsed(), timeout);
        assert_eq!(
            health.write.consecutive_failures(),
            1,
            "a failure at the deadline"
        );
        assert_eq!(health.write.state(), CircuitState::Open);
        assert_eq!((up("write"), up("read")), (0, 1));
        assert!(health.read_up());
        task.abort();
    }

    /// Without memory for an object, a flush is skipped rather than waited for: the chunks
    /// stay pending, the refusal is counted, and the flush goes through once there is room.
    #[tokio::test]
    async fn a_flush_that_cannot_reserve_memory_is_skipped_and_goes_through_later() {
        let (_dir, metrics, head, ing) = rig(5);
        let mem = Arc::new(InMemory::new());
        let store = Store::new(
            mem.clone(),
            object_store::path::Path::default(),
            &StoreOptions::default(),
        );
        let memory = Arc::new(Memory::new(64 << 10, &metrics));
        let flusher = Flusher::new(
            FlushConfig::default(),
            head.clone(),
            Arc::new(ing),
            store,
            Arc::new(CircuitBreaker::new(CircuitConfig::default())),
            Arc::new(Seen::default()),
            metrics.clone(),
            memory.clone(),
        );
        // Something else holds all but a few bytes.
        let held = memory
            .try_reserve(Consumer::Queries, (64 << 10) - 16)
            .unwrap();
        let r = flusher.flush_all(Duration::from_secs(5)).await;
        match r {
            Err(FlushError::Deadline { reason, .. }) => {
                assert!(reason.contains("memory limit"), "{reason}")
            }
            other => panic!("want a deadline error naming memory, got {other:?}"),
        }
        assert_eq!(metrics.store_uploads.get(), 0, "nothing was uploaded");
        assert!(head.unflushed().0 > 0);
        let refused = metrics
            .memory_refusals
            .get_or_create(&crate::metrics::ConsumerLabels {
                consumer: "flush_objects",
            })
            .get();
        assert!(refused >= 1);
        assert_eq!(memory.consumer_bytes(Consumer::FlushObjects), 0);
        // Room again: everything goes out, and the reservations are given back.
        drop(held);
        let s = flusher.flush_all(Duration::from_secs(5)).await.unwrap();
        assert_eq!(s.chunks, 15);
        assert_eq!(head.unflushed().0, 0);
        assert_eq!(memory.used_bytes(), 0);
    }

    /// The store hangs, then fails, then recovers: the flusher keeps the chunks pending
    /// (nothing dropped), opens the circuit, and uploads everything once the store is back.
    #[tokio::test(start_paused = true)]
    async fn an_outage_keeps_chunks_pending_and_the_backlog_drains_after_it() {
        let (_dir, metrics, head, ing) = rig(5); // 10 closed chunks, 5 open ones of 1 sample
        let mem = Arc::new(InMemory::new());
        let faulty = Arc::new(FaultyStore::new(mem.clone()));
        let opts = StoreOptions {
            timeout: Duration::from_secs(2),
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), object_store::path::Path::default(), &opts);
        let breaker = Arc::new(CircuitBreaker::new(CircuitConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_secs(5),
        }));
        let seen = Arc::new(Seen::default());
        let flusher = Arc::new(Flusher::new(
            FlushConfig {
                period: Duration::from_secs(1),
                max_chunk_idle: Duration::from_secs(1 << 30),
                max_chunk_age: Duration::from_secs(1 << 40),
                backoff: BackoffConfig {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(2),
                },
                ..FlushConfig::default()
            },
            head.clone(),
            Arc::new(ing),
            store,
            breaker.clone(),
            seen.clone(),
            metrics.clone(),
            Arc::new(Memory::new(u64::MAX, &metrics)),
        ));
        let (closed, _) = head.unflushed();
        assert!(closed > 0);

        faulty.set(&[Op::Put], Some(Fault::Hang));
        tokio::spawn(flusher.clone().run());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            head.unflushed().0,
            closed,
            "chunks stay pending while the store hangs"
        );
        assert_eq!(breaker.up(), 0, "the circuit opened");
        faulty.set(&[Op::Put], Some(Fault::Fail));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(head.unflushed().0, closed);
        assert!(seen.0.lock().is_empty());
        // flush_all cuts the open chunks too; with the store down it reports the deadline.
        let r = flusher.flush_all(Duration::from_secs(3)).await;
        assert!(
            matches!(r, Err(FlushError::Deadline { remaining: 15, .. })),
            "{r:?}"
        );

        faulty.set(&[Op::Put], None);
        let mut waited = 0;
        while head.unflushed().0 > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += 1;
            assert!(waited < 120, "the backlog did not drain");
        }
        assert_eq!(breaker.up(), 1);
        assert!(metrics.store_retries.get() > 0);
        // Everything is in the store exactly once.
        let objects: Vec<_> = mem.list(None).try_collect().await.unwrap();
        assert_eq!(objects.len(), seen.0.lock().len());
        let mut chunks = 0;
        for o in objects {
            let bytes = mem.get(&o.location).await.unwrap().bytes().await.unwrap();
            let index = decode_object(&bytes).unwrap();
            chunks += index.chunk_count;
        }
        assert_eq!(chunks, 15);
    }

    /// The per-tenant upload locks follow the tenants: once a tenant has left the head (its
    /// series idle, flushed and released), the flusher forgets its lock.
    #[tokio::test]
    async fn a_tenant_that_left_the_head_leaves_no_upload_lock() {
        let (_dir, metrics, head, ing) = rig(3);
        let store = Store::new(
            Arc::new(InMemory::new()),
            object_store::path::Path::default(),
            &StoreOptions::default(),
        );
        let flusher = Arc::new(Flusher::new(
            FlushConfig::default(),
            head.clone(),
            Arc::new(ing),
            store,
            Arc::new(CircuitBreaker::new(CircuitConfig::default())),
            Arc::new(Seen::default()),
            metrics.clone(),
            Arc::new(Memory::new(u64::MAX, &metrics)),
        ));
        flusher.flush_all(Duration::from_secs(10)).await.unwrap();
        assert_eq!(flusher.tenant_locks_len(), 1);
        flusher.forget_tenant_locks();
        assert_eq!(
            flusher.tenant_locks_len(),
            1,
            "the tenant is still in the head"
        );
        flusher.release(true);
        assert_eq!(head.remove_idle_series_after(Duration::ZERO), (3, 1));
        flusher.forget_tenant_locks();
        assert_eq!(flusher.tenant_locks_len(), 0);
    }
}
