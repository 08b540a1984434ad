//! Retention and compaction of the store: the store stops growing without bound.
//!
//! A [`Compactor`] run, under the prefix's lease ([`lease`]):
//! 1. lists the store once (objects, compaction markers);
//! 2. finishes what an interrupted run left: for each marker whose outputs are all listed,
//!    deletes the sources it names, then the marker;
//! 3. retention: deletes every object whose newest sample is older than now − retention
//!    (per tenant; `--store.retention`, 0 keeps everything) from the store, the catalog and
//!    the local tier (whole and index copies);
//! 4. compaction: plans jobs ([`plan`]) and runs each: read the sources whole, merge each
//!    series' chunks (exact duplicates dropped, overlapping chunks merged sample by sample as
//!    queries do), write the outputs (cut at the object size bound), write a marker, make
//!    the outputs visible to the catalog, then delete the sources and the marker.
//!
//! Crash safety: every step leaves a store that answers every sample exactly once through
//! the readers' merge. Killed after the outputs are written: outputs and sources are both
//! listed; readers dedupe (equal chunks kept once, overlaps merged by timestamp), and the
//! next run compacts them together again. Killed after the marker: the next run deletes
//! the sources. Killed mid-delete: the same. A source is deleted only after every output of
//! its job was acknowledged by the store and the marker was written.
//!
//! Memory: a job reads at most [`plan::PlanConfig::max_job_bytes`] of sources, reserved
//! (with one output object) as `compaction` in [`Memory`] before anything is read; a job
//! that cannot reserve waits for the next run.
//!
//! **Invariant:** the compactor never touches an object whose chunks the head still holds
//! (the catalog's in-memory flag): the flusher will tell the catalog about it later.

pub mod cli;
pub mod lease;
pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use object_store::path::Path;

use crate::head::ChunkCopy;
use crate::local::{Held, LocalTier};
use crate::metrics::Metrics;
use crate::model::{Labels, TenantId};
use crate::pressure::{Consumer, Memory};
use crate::store::catalog::Catalog;
use crate::store::marker::{
    markers_prefix, parse_control_key, ControlKey, Marker, MAX_MARKER_BYTES,
};
use crate::store::object::{
    decode_object, tenant_chunks_prefix, ChunkData, ObjectBuilder, ObjectKey,
};
use crate::store::{Store, StoreError};

pub use lease::{now_ms, Lease};
pub use plan::{Job, PlanConfig, COMPACTOR_ID_PREFIX};

/// Per-tenant retention: `Some` overrides `--store.retention` for that tenant (zero keeps
/// everything). The overrides file supplies it.
pub type RetentionFn = Arc<dyn Fn(&TenantId) -> Option<Duration> + Send + Sync>;

/// The test-only environment variable that makes a compactor kill itself (SIGKILL) at a
/// step: `after-write` (outputs written, no marker), `after-visible` (marker written,
/// catalog told, nothing deleted) or `mid-delete` (one source deleted).
pub const CRASH_ENV: &str = "WEFT_COMPACT_CRASH_AT";

/// Source objects one job fetches at once.
const FETCH_CONCURRENCY: usize = 4;

/// Compactor settings.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// Time between runs (`--compactor.interval`).
    pub interval: Duration,
    /// `--compactor.block-ranges`.
    pub block_ranges: Vec<Duration>,
    /// `--compactor.block-margin`.
    pub block_margin: Duration,
    /// `--store.retention`; zero keeps everything.
    pub retention: Duration,
    /// Outputs are cut at this size (the flusher's `--flush.max-object-bytes`).
    pub max_object_bytes: u64,
    /// Most source bytes a job reads; clamped to half of the memory limit.
    pub max_job_bytes: u64,
    /// `--compactor.lease-ttl`.
    pub lease_ttl: Duration,
    /// This compactor's id in the lease.
    pub holder: String,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(600),
            block_ranges: vec![
                Duration::from_secs(2 * 3600),
                Duration::from_secs(24 * 3600),
            ],
            block_margin: Duration::from_secs(2 * 3600),
            retention: Duration::ZERO,
            max_object_bytes: 64 << 20,
            max_job_bytes: 256 << 20,
            lease_ttl: Duration::from_secs(60),
            holder: default_holder(),
        }
    }
}

/// `<hostname>-<pid>-<random>`: unique per process.
pub fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    use rand::{Rng, SeedableRng};
    let r: u32 = rand::rngs::SmallRng::from_os_rng().random();
    format!("{host}-{}-{r:08x}", std::process::id())
}

/// Parses `2h,24h`: increasing durations, at least one.
pub fn parse_block_ranges(
    s: &str,
    parse: impl Fn(&str) -> Result<Duration, String>,
) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = parse(part)?;
        if d.is_zero() {
            return Err(format!("block range {part:?} is zero"));
        }
        if out.last().is_some_and(|&l| d <= l) {
            return Err("block ranges must increase".into());
        }
        out.push(d);
    }
    if out.is_empty() {
        return Err("at least one block range".into());
    }
    Ok(out)
}

/// Why a run or a job stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// A store call failed; the run is retried next interval.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job's memory did not fit.
    #[error("compaction job of {bytes} bytes does not fit in memory: {reason}")]
    Memory {
        /// What it wanted.
        bytes: u64,
        /// The refusal.
        reason: String,
    },
    /// The lease was lost mid-run; another compactor goes on.
    #[error("the compactor lease was lost")]
    LeaseLost,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Whether this process held the lease (nothing else is done without it).
    pub lease: bool,
    /// Objects and bytes listed at the start of the run.
    pub objects_before: u64,
    /// Bytes listed at the start.
    pub bytes_before: u64,
    /// Objects after the run.
    pub objects_after: u64,
    /// Bytes after the run.
    pub bytes_after: u64,
    /// Jobs finished.
    pub jobs: u64,
    /// Jobs that failed.
    pub failed_jobs: u64,
    /// Exact duplicate chunks dropped.
    pub duplicate_chunks: u64,
    /// Objects deleted for retention.
    pub expired: u64,
    /// Markers of earlier runs finished.
    pub markers_finished: u64,
}

/// The compactor of one store prefix. Share as `Arc<Compactor>`.
pub struct Compactor {
    cfg: CompactorConfig,
    store: Store,
    catalog: Option<Arc<Catalog>>,
    local: Option<Arc<LocalTier>>,
    memory: Arc<Memory>,
    metrics: Arc<Metrics>,
    retention: Option<RetentionFn>,
    lease: Lease,
    seq: AtomicU64,
    crash_at: Option<String>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("cfg", &self.cfg)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// An object listed by a run.
type Listed = (ObjectKey, u64);

impl Compactor {
    /// A compactor of `store`'s prefix. The job size is clamped to half of `memory`'s limit.
    pub fn new(
        mut cfg: CompactorConfig,
        store: Store,
        memory: Arc<Memory>,
        metrics: Arc<Metrics>,
    ) -> Self {
        cfg.max_job_bytes = cfg
            .max_job_bytes
            .min(memory.limit_bytes() / 2)
            .max(cfg.max_object_bytes.min(memory.limit_bytes() / 2));
        let lease = Lease::new(store.clone(), cfg.holder.clone(), cfg.lease_ttl);
        Self {
            cfg,
            store,
            catalog: None,
            local: None,
            memory,
            metrics,
            retention: None,
            lease,
            seq: AtomicU64::new(0),
            crash_at: std::env::var(CRASH_ENV).ok(),
        }
    }

    /// Inside `weft serve`: keeps the node's catalog and local tier in step, and leaves
    /// alone the objects whose chunks the head holds.
    pub fn with_node(mut self, catalog: Arc<Catalog>, local: Option<Arc<LocalTier>>) -> Self {
        self.catalog = Some(catalog);
        self.local = local;
        self
    }

    /// Per-tenant retention overrides.
    pub fn with_retention(mut self, f: RetentionFn) -> Self {
        self.retention = Some(f);
        self
    }

    /// The settings it runs with.
    pub fn config(&self) -> &CompactorConfig {
        &self.cfg
    }

    /// Runs every interval until the task is dropped; also lists the store again when the
    /// catalog asks (an object it listed is gone).
    pub async fn run(self: Arc<Self>) {
        let mut next = tokio::time::Instant::now() + self.cfg.interval.min(Duration::from_secs(60));
        loop {
            self.catalog_tick().await;
            tokio::time::sleep(Duration::from_secs(1).min(self.cfg.interval)).await;
            if self.lease.is_held() {
                // Stay the holder between runs.
                if let Ok(held) = self.lease.ensure().await {
                    self.metrics.compactor.lease_held.set(i64::from(held));
                }
            }
            if tokio::time::Instant::now() < next {
                continue;
            }
            next = tokio::time::Instant::now() + self.cfg.interval;
            match self.run_once().await {
                Ok(s) if s.lease => tracing::info!(
                    objects_before = s.objects_before,
                    objects_after = s.objects_after,
                    bytes_before = s.bytes_before,
                    bytes_after = s.bytes_after,
                    jobs = s.jobs,
                    expired = s.expired,
                    "compactor run done"
                ),
                Ok(_) => tracing::debug!("another compactor holds the lease"),
                Err(e) => {
                    tracing::warn!(error = %e, "compactor run failed; retrying next interval")
                }
            }
        }
    }

    /// Only lists the store again when the catalog asks (the compactor is off here; another
    /// process compacts the bucket).
    pub async fn run_relist_only(self: Arc<Self>) {
        loop {
            self.catalog_tick().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Lists the store again if the catalog asks, and updates `weft_catalog_bytes`.
    async fn catalog_tick(&self) {
        let Some(c) = &self.catalog else { return };
        if c.take_relist_request() {
            if let Err(e) = c.load().await {
                tracing::warn!(error = %e, "listing the store again failed");
            }
        }
        self.metrics
            .compactor
            .catalog_bytes
            .set(c.approx_bytes() as i64);
    }

    /// Waits `d`, renewing the lease (if held) every third of its TTL meanwhile, so that a
    /// running compactor stays the holder between runs.
    pub async fn hold_lease_for(&self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        let step = (self.cfg.lease_ttl / 3).max(Duration::from_millis(100));
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(step.min(end - tokio::time::Instant::now())).await;
            if self.lease.is_held() {
                match self.lease.ensure().await {
                    Ok(held) => {
                        self.metrics.compactor.lease_held.set(i64::from(held));
                    }
                    Err(e) => tracing::warn!(error = %e, "renewing the compactor lease failed"),
                }
            }
        }
    }

    /// Gives the lease up (at shutdown, or at the end of `weft compact --once`).
    pub async fn release(&self) {
        self.lease.release().await;
        self.metrics.compactor.lease_held.set(0);
    }

    /// One run (see the module docs).
    ///
    /// A compactor that does not hold the lease first looks whether there is anything to do,
    /// and takes the lease only then: an idle store gets no lease writes (a single node with
    /// recent data only lists once an interval).
    pub async fn run_once(&self) -> Result<RunSummary, CompactError> {
        let mut sum = RunSummary::default();
        let count = |t: &BTreeMap<TenantId, Vec<Listed>>| {
            t.values()
                .flatten()
                .fold((0u64, 0u64), |(n, b), (_, s)| (n + 1, b + s))
        };
        if !self.lease.is_held() {
            let (tenants, markers) = self.list().await?;
            if markers.is_empty() && !self.has_work(&tenants, now_ms()) {
                (sum.objects_before, sum.bytes_before) = count(&tenants);
                (sum.objects_after, sum.bytes_after) = (sum.objects_before, sum.bytes_before);
                return Ok(sum);
            }
        }
        let held = self.lease.acquire().await?;
        self.metrics.compactor.lease_held.set(i64::from(held));
        if !held {
            return Ok(sum);
        }
        sum.lease = true;
        let now = now_ms();
        // Listed under the lease: what another holder did before is visible.
        let (mut tenants, markers) = self.list().await?;
        (sum.objects_before, sum.bytes_before) = count(&tenants);

        // 2. What an interrupted run left.
        for (tenant, path) in markers {
            self.ensure_lease().await?;
            match self.finish_marker(&tenant, &path, &tenants).await {
                Ok(deleted) => {
                    if let Some(objs) = tenants.get_mut(&tenant) {
                        objs.retain(|(k, _)| !deleted.contains(k));
                    }
                    sum.markers_finished += 1;
                }
                Err(e) => {
                    tracing::warn!(marker = %path, error = %e, "could not finish a compaction marker")
                }
            }
        }

        // 3. Retention.
        for (tenant, objs) in tenants.iter_mut() {
            let retention = self.retention_of(tenant);
            let hands_off = self.hands_off(tenant);
            let mut gone = plan::expired(objs, retention, now);
            gone.retain(|(k, _)| !hands_off(k));
            if let Some(local) = &self.local {
                // Copies of objects the store no longer lists (deleted by another process).
                let cutoff = now.saturating_sub(retention.as_millis() as i64);
                if !retention.is_zero() {
                    for (k, _, _) in local.objects() {
                        if &k.tenant == tenant && k.max_t < cutoff {
                            local.remove(&k);
                        }
                    }
                }
            }
            if gone.is_empty() {
                continue;
            }
            self.ensure_lease().await?;
            let keys: Vec<ObjectKey> = gone.iter().map(|(k, _)| k.clone()).collect();
            self.delete_objects(&keys, None).await?;
            let bytes: u64 = gone.iter().map(|(_, s)| s).sum();
            self.metrics
                .compactor
                .retention_deleted_objects
                .inc_by(gone.len() as u64);
            self.metrics.compactor.retention_deleted_bytes.inc_by(bytes);
            sum.expired += gone.len() as u64;
            tracing::info!(tenant = %tenant, objects = gone.len(), bytes, retention = ?retention, "deleted objects past the retention");
            let gone: HashSet<ObjectKey> = keys.into_iter().collect();
            objs.retain(|(k, _)| !gone.contains(k));
        }

        // 4. Compaction.
        let plan_cfg = self.plan_config();
        for (tenant, objs) in tenants.iter_mut() {
            let hands_off = self.hands_off(tenant);
            let mut failed: HashSet<ObjectKey> = HashSet::new();
            // One round per level: the outputs of one level can be merged by the next in
            // the same run. Sources of a failed job wait for the next run.
            for _ in 0..self.cfg.block_ranges.len() {
                let jobs = plan::plan(objs, &plan_cfg, now, &|k| {
                    hands_off(k) || failed.contains(k)
                });
                if jobs.is_empty() {
                    break;
                }
                for job in jobs {
                    self.ensure_lease().await?;
                    match self.compact(tenant, &job).await {
                        Ok((outputs, dups)) => {
                            sum.jobs += 1;
                            sum.duplicate_chunks += dups;
                            let srcs: HashSet<&ObjectKey> =
                                job.sources.iter().map(|(k, _)| k).collect();
                            objs.retain(|(k, _)| !srcs.contains(k));
                            objs.extend(outputs);
                        }
                        Err(CompactError::LeaseLost) => return Err(CompactError::LeaseLost),
                        Err(e) => {
                            sum.failed_jobs += 1;
                            self.metrics.compactor.failures.inc();
                            failed.extend(job.sources.iter().map(|(k, _)| k.clone()));
                            tracing::warn!(tenant = %tenant, level = job.level, sources = job.sources.len(), error = %e, "compaction job failed; retrying next run");
                        }
                    }
                }
                objs.sort();
            }
        }
        (sum.objects_after, sum.bytes_after) = count(&tenants);
        self.metrics
            .compactor
            .store_objects
            .set(sum.objects_after as i64);
        self.metrics
            .compactor
            .store_bytes
            .set(sum.bytes_after as i64);
        if let Some(c) = &self.catalog {
            self.metrics.catalog_objects.set(c.object_count() as i64);
            if sum.jobs > 0 || sum.expired > 0 || sum.markers_finished > 0 {
                c.save_listing().await;
            }
        }
        Ok(sum)
    }

    /// Whether a run would delete or compact anything.
    fn has_work(&self, tenants: &BTreeMap<TenantId, Vec<Listed>>, now: i64) -> bool {
        let plan_cfg = self.plan_config();
        tenants.iter().any(|(tenant, objs)| {
            let hands_off = self.hands_off(tenant);
            let retention = self.retention_of(tenant);
            plan::expired(objs, retention, now)
                .iter()
                .any(|(k, _)| !hands_off(k))
                || !plan::plan(objs, &plan_cfg, now, &hands_off).is_empty()
        })
    }

    fn retention_of(&self, tenant: &TenantId) -> Duration {
        self.retention
            .as_ref()
            .and_then(|f| f(tenant))
            .unwrap_or(self.cfg.retention)
    }

    fn plan_config(&self) -> PlanConfig {
        PlanConfig {
            block_ranges: self.cfg.block_ranges.clone(),
            block_margin: self.cfg.block_margin,
            max_object_bytes: self.cfg.max_object_bytes,
            max_job_bytes: self.cfg.max_job_bytes,
        }
    }

    /// Which listed objects of `tenant` are not ours to touch: inside `weft serve`, those
    /// whose chunks the head still holds, and those the catalog does not know yet. The
    /// second covers an upload the flusher has made but not yet recorded (it records it as
    /// held by the head right after); compacting it then would let the catalog record an
    /// object that is gone. The next run, after the flusher recorded it, takes it.
    fn hands_off(&self, tenant: &TenantId) -> impl Fn(&ObjectKey) -> bool {
        let known: Option<HashMap<ObjectKey, bool>> = self.catalog.as_ref().map(|c| {
            c.objects(tenant)
                .into_iter()
                .map(|(k, _, in_memory)| (k, in_memory))
                .collect()
        });
        move |k| {
            known
                .as_ref()
                .is_some_and(|m| m.get(k).is_none_or(|&in_memory| in_memory))
        }
    }

    async fn ensure_lease(&self) -> Result<(), CompactError> {
        if self.lease.ensure().await? {
            Ok(())
        } else {
            self.metrics.compactor.lease_held.set(0);
            Err(CompactError::LeaseLost)
        }
    }

    /// Every object and marker under the prefix, objects grouped by tenant in key order.
    async fn list(
        &self,
    ) -> Result<(BTreeMap<TenantId, Vec<Listed>>, Vec<(TenantId, Path)>), StoreError> {
        let prefix = self.store.prefix().clone();
        let mut tenants: BTreeMap<TenantId, Vec<Listed>> = BTreeMap::new();
        let mut markers = Vec::new();
        let mut after: Option<Path> = None;
        loop {
            let page = self.store.list(&prefix, after.as_ref()).await?;
            after = page.objects.last().map(|m| m.location.clone());
            for m in page.objects {
                if let Ok(k) = ObjectKey::parse(&prefix, &m.location) {
                    tenants
                        .entry(k.tenant.clone())
                        .or_default()
                        .push((k, m.size));
                } else if let Some(ControlKey::Marker(t)) = parse_control_key(&prefix, &m.location)
                {
                    markers.push((t, m.location));
                }
            }
            if !page.more || after.is_none() {
                break;
            }
        }
        for objs in tenants.values_mut() {
            objs.sort();
        }
        Ok((tenants, markers))
    }

    /// Deletes the sources a marker names (if all its outputs are listed), then the marker.
    async fn finish_marker(
        &self,
        tenant: &TenantId,
        path: &Path,
        tenants: &BTreeMap<TenantId, Vec<Listed>>,
    ) -> Result<HashSet<ObjectKey>, CompactError> {
        let bytes = self.store.get(path).await?;
        let mut deleted = HashSet::new();
        if let Some(m) = (bytes.len() as u64 <= MAX_MARKER_BYTES)
            .then(|| Marker::decode(&bytes))
            .flatten()
        {
            let names: HashSet<String> = tenants
                .get(tenant)
                .into_iter()
                .flatten()
                .map(|(k, _)| k.file_name())
                .collect();
            if m.outputs.iter().all(|o| names.contains(o)) {
                let chunks = tenant_chunks_prefix(self.store.prefix(), tenant);
                let keys: Vec<ObjectKey> = m
                    .sources
                    .iter()
                    .filter_map(|s| {
                        ObjectKey::parse(self.store.prefix(), &chunks.clone().join(s.as_str())).ok()
                    })
                    .collect();
                self.delete_objects(&keys, None).await?;
                tracing::info!(tenant = %tenant, sources = keys.len(), "finished an interrupted compaction");
                deleted.extend(keys);
            }
        }
        self.store.delete(path).await?;
        Ok(deleted)
    }

    /// Forgets objects in the catalog, then deletes their local copies and the objects.
    async fn delete_objects(
        &self,
        keys: &[ObjectKey],
        crash_after_first: Option<&str>,
    ) -> Result<(), CompactError> {
        if let Some(c) = &self.catalog {
            c.remove(keys);
        }
        if let Some(local) = self.local.clone() {
            let ks = keys.to_vec();
            let _ = tokio::task::spawn_blocking(move || {
                for k in &ks {
                    local.remove(k);
                }
            })
            .await;
        }
        for (i, k) in keys.iter().enumerate() {
            self.store.delete(&k.to_path(self.store.prefix())).await?;
            if i == 0 {
                if let Some(step) = crash_after_first {
                    self.crash_point(step);
                }
            }
        }
        Ok(())
    }

    fn crash_point(&self, step: &str) {
        if self.crash_at.as_deref() == Some(step) {
            tracing::error!(step, "{CRASH_ENV}: killing myself");
            // SAFETY: kill(2) on our own pid with a valid signal number.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }

    /// Runs one job; returns the outputs and the duplicate chunks dropped.
    async fn compact(
        &self,
        tenant: &TenantId,
        job: &Job,
    ) -> Result<(Vec<Listed>, u64), CompactError> {
        let started = std::time::Instant::now();
        let want = job.bytes() + self.cfg.max_object_bytes;
        let _reserved = self
            .memory
            .try_reserve(Consumer::Compaction, want)
            .map_err(|e| CompactError::Memory {
                bytes: want,
                reason: e.to_string(),
            })?;
        let prefix = self.store.prefix().clone();
        let paths: Vec<Path> = job
            .sources
            .iter()
            .map(|(k, _)| k.to_path(&prefix))
            .collect();
        let fetched: Vec<Result<Bytes, StoreError>> = stream::iter(paths)
            .map(|path| {
                let store = self.store.clone();
                async move { store.get(&path).await }
            })
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await;
        // Per series, its chunks from every source: slices of the fetched bytes, no copies.
        let mut series: BTreeMap<Labels, Vec<(i64, i64, Bytes, u8)>> = BTreeMap::new();
        for (bytes, (key, _)) in fetched.into_iter().zip(&job.sources) {
            let bytes = bytes?;
            let ix = decode_object(&bytes)?;
            if ix.min_t < key.min_t || ix.max_t > key.max_t {
                return Err(StoreError::Corrupt(format!(
                    "{}: index outside its key's range",
                    key.file_name()
                ))
                .into());
            }
            for s in ix.series {
                let e = series.entry(s.labels).or_default();
                for c in s.chunks {
                    e.push((
                        c.min_t,
                        c.max_t,
                        bytes.slice(c.offset as usize..c.offset as usize + c.len as usize),
                        c.encoding,
                    ));
                }
            }
        }

        let level_id = format!("{COMPACTOR_ID_PREFIX}{}", job.level);
        let run_ms = now_ms().max(0) as u64;
        let mut outputs: Vec<(ObjectKey, Bytes)> = Vec::new();
        let mut dups = 0u64;
        let mut builder = ObjectBuilder::new();
        let cut = self.cfg.max_object_bytes.max(1 << 16);
        for (labels, mut chunks) in series {
            chunks.sort_by(|a, b| {
                (a.0, a.1, a.3)
                    .cmp(&(b.0, b.1, b.3))
                    .then_with(|| a.2.cmp(&b.2))
            });
            let before = chunks.len();
            chunks.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3);
            dups += (before - chunks.len()) as u64;
            let chunks = merge_overlaps(chunks);
            // Pieces of at most a quarter of the cut each, so one series never makes an
            // object much larger than the bound.
            let mut piece: Vec<(i64, i64, Bytes, u8)> = Vec::new();
            let mut piece_bytes = 0u64;
            let mut pieces = Vec::new();
            for c in chunks {
                if piece_bytes > 0 && piece_bytes + c.2.len() as u64 > cut / 4 {
                    pieces.push(std::mem::take(&mut piece));
                    piece_bytes = 0;
                }
                piece_bytes += c.2.len() as u64;
                piece.push(c);
            }
            pieces.push(piece);
            let split = pieces.len() > 1;
            for p in pieces {
                let len: u64 = p.iter().map(|c| c.2.len() as u64 + 64).sum::<u64>() + 256;
                if builder.series() > 0 && (split || builder.approx_len() + len > cut) {
                    let b = std::mem::take(&mut builder);
                    outputs.push(self.write_output(tenant, &level_id, run_ms, b).await?);
                }
                let data: Vec<ChunkData<'_>> = p
                    .iter()
                    .map(|(min_t, max_t, d, encoding)| ChunkData {
                        min_t: *min_t,
                        max_t: *max_t,
                        data: d,
                        encoding: *encoding,
                    })
                    .collect();
                builder.add_series(&labels, &data)?;
            }
        }
        if builder.series() > 0 {
            outputs.push(
                self.write_output(tenant, &level_id, run_ms, builder)
                    .await?,
            );
        }
        self.crash_point("after-write");

        // Visible: the marker says the outputs replace the sources; the catalog learns both.
        let marker = Marker {
            outputs: outputs.iter().map(|(k, _)| k.file_name()).collect(),
            sources: job.sources.iter().map(|(k, _)| k.file_name()).collect(),
        };
        let marker_path =
            markers_prefix(&prefix, tenant).join(format!("{:016x}", self.next_seq(run_ms)));
        self.store
            .put(&marker_path, Bytes::from(marker.encode()))
            .await?;
        let any_local = self.local.as_ref().is_some_and(|l| {
            job.sources
                .iter()
                .any(|(k, _)| l.held(k) == Some(Held::Object))
        });
        if let (Some(local), true) = (self.local.clone(), any_local) {
            let outs = outputs.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for (k, b) in &outs {
                    if let Err(e) = local.put_object(k, b) {
                        tracing::warn!(error = %e, "could not keep a local copy of a compacted object");
                    }
                }
            })
            .await;
        }
        if let Some(c) = &self.catalog {
            for (k, b) in &outputs {
                c.add(k.clone(), b.len() as u64, false);
            }
        }
        self.crash_point("after-visible");

        self.ensure_lease().await?;
        let keys: Vec<ObjectKey> = job.sources.iter().map(|(k, _)| k.clone()).collect();
        self.delete_objects(&keys, Some("mid-delete")).await?;
        self.store.delete(&marker_path).await?;

        let out_bytes: u64 = outputs.iter().map(|(_, b)| b.len() as u64).sum();
        let m = &self.metrics.compactor;
        m.compactions.inc();
        m.objects_before.inc_by(job.sources.len() as u64);
        m.objects_after.inc_by(outputs.len() as u64);
        m.bytes_before.inc_by(job.bytes());
        m.bytes_after.inc_by(out_bytes);
        m.duplicate_chunks.inc_by(dups);
        tracing::info!(
            tenant = %tenant, level = job.level, sources = job.sources.len(), outputs = outputs.len(),
            bytes_before = job.bytes(), bytes_after = out_bytes, duplicate_chunks = dups,
            secs = started.elapsed().as_secs_f64(), "compacted"
        );
        Ok((
            outputs
                .into_iter()
                .map(|(k, b)| (k, b.len() as u64))
                .collect(),
            dups,
        ))
    }

    fn next_seq(&self, run_ms: u64) -> u64 {
        (run_ms << 16) | (self.seq.fetch_add(1, Ordering::Relaxed) & 0xffff)
    }

    async fn write_output(
        &self,
        tenant: &TenantId,
        level_id: &str,
        run_ms: u64,
        builder: ObjectBuilder,
    ) -> Result<(ObjectKey, Bytes), CompactError> {
        let obj = builder.finish()?;
        let key = ObjectKey::new(
            tenant.clone(),
            obj.min_t,
            obj.max_t,
            level_id,
            self.next_seq(run_ms),
        )?;
        self.store
            .put(&key.to_path(self.store.prefix()), obj.bytes.clone())
            .await?;
        Ok((key, obj.bytes))
    }
}

/// Chunks sorted by time and without exact duplicates → the same, with every run of
/// overlapping chunks merged sample by sample (`query::merge`, the readers' rule).
fn merge_overlaps(chunks: Vec<(i64, i64, Bytes, u8)>) -> Vec<(i64, i64, Bytes, u8)> {
    let overlapping = chunks.windows(2).any(|w| w[1].0 <= w[0].1);
    if !overlapping {
        return chunks;
    }
    let copies = chunks
        .into_iter()
        .map(|(min_t, max_t, d, encoding)| ChunkCopy {
            min_t,
            max_t,
            data: d.to_vec(),
            flushed: true,
            encoding,
        })
        .collect();
    let (merged, bad) = crate::query::merge::merge_chunks(copies);
    if bad > 0 {
        tracing::error!(
            bad,
            "chunks that do not decode were dropped while compacting"
        );
    }
    merged
        .into_iter()
        .map(|c| (c.min_t, c.max_t, Bytes::from(c.data), c.encoding))
        .collect()
}

/// Summary of a store prefix: objects and bytes per tenant (for `weft compact` and tests).
pub async fn store_totals(store: &Store) -> Result<HashMap<TenantId, (u64, u64)>, StoreError> {
    let prefix = store.prefix().clone();
    let mut out: HashMap<TenantId, (u64, u64)> = HashMap::new();
    let mut after: Option<Path> = None;
    loop {
        let page = store.list(&prefix, after.as_ref()).await?;
        after = page.objects.last().map(|m| m.location.clone());
        for m in page.objects {
            if let Ok(k) = ObjectKey::parse(&prefix, &m.location) {
                let e = out.entry(k.tenant).or_default();
                e.0 += 1;
                e.1 += m.size;
            }
        }
        if !page.more || after.is_none() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
