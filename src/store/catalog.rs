//! [`Catalog`]: which objects the store holds for each tenant, and the read path over them.
//!
//! The catalog is an in-memory list of object keys per tenant (with each object's size and
//! whether this process still holds all of its chunks locally). It is rebuilt at start by
//! listing the store ([`Catalog::load`], retried forever by [`Catalog::run_loader`]) and kept
//! up to date by the flusher ([`Catalog::add`], [`Catalog::set_remote`]).
//!
//! A query asks it for a tenant's series in a time range ([`Catalog::select`]): it picks the
//! objects whose key range overlaps the query, fetches their indexes (footer by a suffix
//! GET, then the index by a range GET, at most [`INDEX_FETCH_CONCURRENCY`] objects at once),
//! and returns the matching series with the places of their chunks; the caller then reads
//! the chunks it needs ([`Catalog::read_chunk`]). Indexes and chunks go through the
//! [`ObjectCache`], so a repeated query does not touch the store.
//!
//! Degraded reads (see `shared/DESIGN.md`): a select never fails. An object that cannot be
//! read becomes a warning naming it and the reason, and the answer is partial. The catalog
//! holds the store's *read* breaker (`store::health`; uploads have their own), and before
//! each store call it asks it:
//! - closed: the call goes, ending by the query's deadline and the store timeout, with the
//!   store's first-byte deadline on each request. It also stops the moment another read
//!   finds reads down, so a query in flight does not keep waiting on a sick store;
//! - open (reads down): no call at all, an immediate [`StoreError::ReadsDown`], so a query
//!   answers from local tiers and caches at once. [`super::health::run_read_probe`] finds
//!   the recovery;
//! - half-open (a probe in flight): the call goes, cut to
//!   [`CatalogConfig::degraded_timeout`].
//!
//! Each read reports what it saw: no first byte in time marks reads down at once; other
//! retryable errors count toward the breaker's threshold; any answer closes it.
//!
//! **Invariant:** a tenant's select only ever looks at objects under that tenant's prefix
//! (the catalog is keyed by tenant, and keys are parsed from `<prefix>/<tenant>/chunks/`).
//!
//! The catalog holds one entry per object in the store (about 100 bytes each). It stays
//! bounded because the store does: retention and compaction (`crate::compact`) remove
//! entries ([`Catalog::remove`]) as they delete objects; a listing drops what the store no
//! longer holds and the sources of listed compaction markers; a select that finds an object
//! gone drops it and asks for a new listing ([`Catalog::take_relist_request`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use object_store::path::Path;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::cache::{CacheStats, ObjectCache};
use super::marker::{parse_control_key, ControlKey, Marker, MAX_MARKER_BYTES};
use super::object::{decode_footer, decode_index, ChunkMeta, ObjectIndex, ObjectKey, FOOTER_LEN};
use super::retry::{retry, Backoff, BackoffConfig, CircuitBreaker, CircuitState};
use super::{Store, StoreError};
use crate::local::{Held, LocalTier};
use crate::model::{Labels, Matcher, TenantId};

/// Object indexes one select fetches at once.
pub const INDEX_FETCH_CONCURRENCY: usize = 8;

/// Longest span one coalesced chunk read may fetch from an object.
pub const COALESCE_MAX_BYTES: u64 = 16 << 20;

/// A span this small is always fetched in one request, however few chunks in it are wanted.
pub const COALESCE_SMALL_BYTES: u64 = 1 << 20;

/// Chunk reads of one object in flight at once when they are not coalesced.
pub const CHUNK_READ_CONCURRENCY: usize = 8;

/// A copy of a store error for every chunk one failed read was for.
fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Timeout { op, path, after } => StoreError::Timeout {
            op,
            path: path.clone(),
            after: *after,
        },
        StoreError::NotFound { path } => StoreError::NotFound { path: path.clone() },
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        // Backend errors carry a non-Clone source: keep the message, stay retryable.
        other => StoreError::Repeated(other.to_string()),
    }
}

/// Per-object warnings one select reports; past this, one line says how many more.
/// An outage would otherwise put one line per object of the range into every answer.
pub const MAX_OBJECT_WARNINGS: usize = 10;

/// The warning of a select before the first listing of the store succeeded.
pub const NOT_LOADED_WARNING: &str = "store catalog not loaded yet; older data may be missing";

/// Compaction markers one listing reads (there are only as many as jobs interrupted).
const MAX_MARKERS_READ: usize = 1000;

/// Heap bytes of one catalog entry besides its strings: the key's fixed fields, the info
/// and the B-tree's share of a node.
const CATALOG_ENTRY_BYTES: usize = 96;

/// Keys in a listing that are not weft objects get one warning line each up to this many;
/// then one summary, so a bucket shared with other data does not flood the log.
const MAX_JUNK_KEY_WARNINGS: usize = 10;

/// Catalog settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogConfig {
    /// Bound of the index and chunk cache ([`ObjectCache`]); 0 caches nothing.
    pub cache_bytes: u64,
    /// Longest a store read may take while the read breaker is half-open (while it is open,
    /// reads are not made at all).
    pub degraded_timeout: Duration,
}

impl Default for CatalogConfig {
    /// 256 MiB of cache and a 500 ms degraded timeout.
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            degraded_timeout: Duration::from_millis(500),
        }
    }
}

/// A series found in the store: its labels and where its chunks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSeries {
    /// Its labels.
    pub labels: Labels,
    /// Its chunks overlapping the query range from every object read, sorted by
    /// `(min_t, max_t)`, exact duplicates (same `min_t`, `max_t`, length and CRC32, e.g. the
    /// same chunk uploaded twice) dropped.
    pub chunks: Vec<RemoteChunk>,
}

/// One chunk in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChunk {
    /// The object holding it.
    pub path: Path,
    /// Where in the object, its time range and CRC.
    pub meta: ChunkMeta,
}

/// What [`Catalog::select`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSelection {
    /// Matching series, sorted by labels, one entry per distinct label set.
    pub series: Vec<StoreSeries>,
    /// Why the answer may be incomplete, one line per reason, sorted; empty if complete.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct ObjectInfo {
    size: u64,
    /// Every chunk of the object is still in the head's memory (or spill): queries take
    /// them from there and skip the object.
    in_memory: bool,
}

#[derive(Debug, Default)]
struct State {
    loaded: bool,
    /// Per tenant, its objects in key order (time order).
    tenants: HashMap<TenantId, BTreeMap<ObjectKey, ObjectInfo>>,
}

/// The store's objects per tenant, and the read path over them. Share as `Arc<Catalog>`.
pub struct Catalog {
    store: Store,
    breaker: Arc<CircuitBreaker>,
    cfg: CatalogConfig,
    cache: ObjectCache,
    state: Mutex<State>,
    /// Copies of objects and indexes on local disk, and the saved listing.
    local: Option<Arc<LocalTier>>,
    /// Set when a select found a listed object gone; see `take_relist_request`.
    relist: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("store", &self.store)
            .field("cfg", &self.cfg)
            .field("loaded", &self.is_loaded())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// An empty, not yet loaded catalog over `store`. `breaker` is the store's read breaker
    /// ([`StoreHealth::read`](super::health::StoreHealth::read)): index and chunk reads and
    /// the listing report to it and obey it.
    pub fn new(store: Store, breaker: Arc<CircuitBreaker>, cfg: CatalogConfig) -> Self {
        Self {
            cache: ObjectCache::new(cfg.cache_bytes),
            store,
            breaker,
            cfg,
            state: Mutex::new(State::default()),
            local: None,
            relist: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reads through the local tier first, and starts from what it knows: the objects it
    /// holds (whole or their index) and the last saved listing of the store. With a saved
    /// listing the catalog counts as loaded at once, so a restart during an outage answers
    /// from what the store held when it was last listed plus what this node uploaded since
    /// (every upload is in the local tier, whole or as its index).
    pub fn with_local_tier(mut self, local: Arc<LocalTier>) -> Self {
        {
            let st = self.state.get_mut();
            if let Some(listing) = local.load_listing() {
                for (key, size) in listing {
                    st.tenants.entry(key.tenant.clone()).or_default().insert(
                        key,
                        ObjectInfo {
                            size,
                            in_memory: false,
                        },
                    );
                }
                st.loaded = true;
            }
            for (key, size, _) in local.objects() {
                // The listing's size wins; an index copy's is 0 (unknown) after a restart.
                let info = st
                    .tenants
                    .entry(key.tenant.clone())
                    .or_default()
                    .entry(key)
                    .or_insert(ObjectInfo {
                        size,
                        in_memory: false,
                    });
                if size > 0 {
                    info.size = size;
                }
            }
        }
        self.local = Some(local);
        self
    }

    /// The local tier, if there is one.
    pub fn local_tier(&self) -> Option<&Arc<LocalTier>> {
        self.local.as_ref()
    }

    /// Lists every object under the store prefix and records each `<tenant>/chunks/<name>`
    /// key with its size; returns how many it found. Keys that do not parse are logged at
    /// warn and skipped. Objects found this way are not local, but an object already
    /// recorded by [`add`](Self::add) keeps its flag: the flusher knows better than a listing.
    ///
    /// Each page is one store call under the store's timeout. This does not report to the
    /// circuit breaker; [`run_loader`](Self::run_loader) does.
    pub async fn load(&self) -> Result<usize, StoreError> {
        let prefix = self.store.prefix().clone();
        // What was known before the listing started: of these, what the listing no longer
        // shows was deleted (by retention or a compactor) and is dropped. Entries added
        // while it runs (uploads) are kept whatever the listing says.
        let known_before: Vec<ObjectKey> = {
            let st = self.state.lock();
            st.tenants
                .values()
                .flatten()
                .filter(|(_, i)| !i.in_memory)
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut found = Vec::new();
        let mut markers = Vec::new();
        let mut junk = 0usize;
        let mut after: Option<Path> = None;
        loop {
            let page = self.store.list(&prefix, after.as_ref()).await?;
            let more = page.more;
            after = page.objects.last().map(|m| m.location.clone());
            for meta in page.objects {
                match ObjectKey::parse(&prefix, &meta.location) {
                    Ok(key) => found.push((key, meta.size)),
                    Err(_) if parse_control_key(&prefix, &meta.location).is_some() => {
                        if let Some(ControlKey::Marker(t)) =
                            parse_control_key(&prefix, &meta.location)
                        {
                            markers.push((t, meta.location.clone()));
                        }
                    }
                    Err(e) => {
                        junk += 1;
                        if junk <= MAX_JUNK_KEY_WARNINGS {
                            tracing::warn!(error = %e, "skipping a key in the store that is not a weft object");
                        }
                    }
                }
            }
            // `more` with an empty page cannot happen (a page holds up to the limit, at
            // least 1), but never loop on it.
            if !more || after.is_none() {
                break;
            }
        }
        if junk > MAX_JUNK_KEY_WARNINGS {
            tracing::warn!(
                skipped = junk,
                "skipped {junk} keys in the store that are not weft objects"
            );
        }
        let replaced = self.replaced_by_markers(&found, markers).await;
        found.retain(|(k, _)| !replaced.contains(k));
        let n = found.len();
        let all: Vec<(ObjectKey, u64)> = {
            let listed: std::collections::HashSet<&ObjectKey> =
                found.iter().map(|(k, _)| k).collect();
            let gone: Vec<ObjectKey> = known_before
                .into_iter()
                .filter(|k| !listed.contains(k))
                .collect();
            let mut st = self.state.lock();
            for k in gone.iter().chain(replaced.iter()) {
                if let Some(objs) = st.tenants.get_mut(&k.tenant) {
                    if objs.get(k).is_some_and(|i| !i.in_memory) {
                        objs.remove(k);
                    }
                }
            }
            for (key, size) in found {
                st.tenants
                    .entry(key.tenant.clone())
                    .or_default()
                    .entry(key)
                    .or_insert(ObjectInfo {
                        size,
                        in_memory: false,
                    });
            }
            st.loaded = true;
            st.tenants
                .values()
                .flatten()
                .map(|(k, i)| (k.clone(), i.size))
                .collect()
        };
        if let Some(local) = self.local.clone() {
            // Kept so that a restart while the store is down still knows what it holds.
            let saved = tokio::task::spawn_blocking(move || local.save_listing(&all)).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(error = %e, "could not save the store listing locally");
            }
        }
        Ok(n)
    }

    /// The sources that listed compaction markers say are replaced: those of markers whose
    /// outputs are all in `found`. A marker that cannot be read replaces nothing (readers
    /// dedupe the overlap, so that only costs reads).
    async fn replaced_by_markers(
        &self,
        found: &[(ObjectKey, u64)],
        markers: Vec<(TenantId, Path)>,
    ) -> std::collections::HashSet<ObjectKey> {
        let mut replaced = std::collections::HashSet::new();
        if markers.is_empty() {
            return replaced;
        }
        let names: std::collections::HashSet<(&TenantId, String)> = found
            .iter()
            .map(|(k, _)| (&k.tenant, k.file_name()))
            .collect();
        for (tenant, path) in markers.into_iter().take(MAX_MARKERS_READ) {
            let Ok(bytes) = self.store.get(&path).await else {
                continue;
            };
            if bytes.len() as u64 > MAX_MARKER_BYTES {
                continue;
            }
            let Some(m) = Marker::decode(&bytes) else {
                continue;
            };
            if !m
                .outputs
                .iter()
                .all(|o| names.contains(&(&tenant, o.clone())))
            {
                continue;
            }
            let chunks = super::object::tenant_chunks_prefix(self.store.prefix(), &tenant);
            for src in &m.sources {
                if let Ok(k) =
                    ObjectKey::parse(self.store.prefix(), &chunks.clone().join(src.as_str()))
                {
                    replaced.insert(k);
                }
            }
        }
        replaced
    }

    /// Forgets objects the store no longer holds (retention or compaction deleted them),
    /// or that compaction replaced. Objects whose chunks the head still holds stay.
    pub fn remove(&self, keys: &[ObjectKey]) {
        let mut st = self.state.lock();
        for k in keys {
            if let Some(objs) = st.tenants.get_mut(&k.tenant) {
                if objs.get(k).is_some_and(|i| !i.in_memory) {
                    objs.remove(k);
                }
                if objs.is_empty() {
                    st.tenants.remove(&k.tenant);
                }
            }
        }
    }

    /// Saves what the catalog knows as the local listing (after a compactor changed it), so
    /// that a restart does not start from keys that are gone.
    pub async fn save_listing(&self) {
        let Some(local) = self.local.clone() else {
            return;
        };
        let all: Vec<(ObjectKey, u64)> = {
            let st = self.state.lock();
            if !st.loaded {
                return;
            }
            st.tenants
                .values()
                .flatten()
                .map(|(k, i)| (k.clone(), i.size))
                .collect()
        };
        let saved = tokio::task::spawn_blocking(move || local.save_listing(&all)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "could not save the store listing locally");
        }
    }

    /// Whether a select found an object gone from the store since it was listed (another
    /// process compacted or expired it): the caller should list the store again. Clears
    /// the request.
    pub fn take_relist_request(&self) -> bool {
        self.relist
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Approximate heap bytes of the catalog's entries (for the time-to-ready figures).
    pub fn approx_bytes(&self) -> usize {
        let st = self.state.lock();
        st.tenants
            .iter()
            .map(|(t, objs)| {
                64 + t.as_str().len()
                    + objs
                        .keys()
                        .map(|k| CATALOG_ENTRY_BYTES + k.ingester.len() + k.tenant.as_str().len())
                        .sum::<usize>()
            })
            .sum()
    }

    /// Calls [`load`](Self::load) until it succeeds, with backoff and through the read
    /// breaker (a listing is a read; while reads are down it waits for its turn to probe,
    /// and its listing is then the probe). Each failure is logged once at warn. Cancel by
    /// dropping the future (or aborting its task).
    pub async fn run_loader(self: Arc<Self>) {
        // Short ceiling: until the catalog loads, every query is marked partial, so it
        // should load soon after the store comes back.
        let mut backoff = Backoff::from_entropy(BackoffConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        });
        let mut attempt = 0u64;
        let this = &*self;
        loop {
            let result = retry(&this.breaker, &mut backoff, || {
                attempt += 1;
                let attempt = attempt;
                async move {
                    let r = this.load().await;
                    if let Err(e) = &r {
                        tracing::warn!(attempt, error = %e, "loading the store catalog failed; retrying");
                    }
                    r
                }
            })
            .await;
            match result {
                Ok(n) => {
                    tracing::info!(objects = n, attempts = attempt, "store catalog loaded");
                    return;
                }
                // `retry` gives up on errors it deems permanent (logged above). A listing
                // has no permanent failure worth stopping for: try again after a delay.
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }

    /// Whether a listing of the store has succeeded.
    pub fn is_loaded(&self) -> bool {
        self.state.lock().loaded
    }

    /// Records an object this process just wrote. `in_memory`: every chunk in it is still
    /// held by the head (memory or spill), so queries need not read the object at all.
    ///
    /// An object already known to have left memory ([`set_remote`](Self::set_remote) came
    /// first) stays remote: marking it in memory again would hide its chunks from queries.
    pub fn add(&self, key: ObjectKey, size: u64, in_memory: bool) {
        let mut st = self.state.lock();
        let info = st
            .tenants
            .entry(key.tenant.clone())
            .or_default()
            .entry(key)
            .or_insert(ObjectInfo { size, in_memory });
        info.size = size;
        info.in_memory &= in_memory;
    }

    /// Some chunk of this object has left local storage: queries read it from the store
    /// from now on. An object the catalog does not know yet is recorded (size unknown, 0),
    /// so its data stays reachable.
    pub fn set_remote(&self, key: &ObjectKey) {
        let mut st = self.state.lock();
        st.tenants
            .entry(key.tenant.clone())
            .or_default()
            .entry(key.clone())
            .or_insert(ObjectInfo {
                size: 0,
                in_memory: true,
            })
            .in_memory = false;
    }

    /// The local horizon over all tenants: the newest sample time (ms) of any object whose
    /// chunks only the store holds (not in the head, not whole in the local tier). Every
    /// sample after it that this node knows of is local, so a query over a range after it
    /// is complete whatever the store does. `None` when no object is store-only.
    pub fn store_only_until(&self) -> Option<i64> {
        let st = self.state.lock();
        st.tenants
            .values()
            .flatten()
            .filter(|(k, i)| {
                !i.in_memory
                    && self
                        .local
                        .as_ref()
                        .is_none_or(|l| l.held(k) != Some(Held::Object))
            })
            .map(|(k, _)| k.max_t)
            .max()
    }

    /// Objects in the catalog, over all tenants.
    pub fn object_count(&self) -> usize {
        self.state.lock().tenants.values().map(|m| m.len()).sum()
    }

    /// A tenant's objects in key order: key, size, whether the head still holds them.
    pub fn objects(&self, tenant: &TenantId) -> Vec<(ObjectKey, u64, bool)> {
        let st = self.state.lock();
        st.tenants
            .get(tenant)
            .map(|objs| {
                objs.iter()
                    .map(|(k, i)| (k.clone(), i.size, i.in_memory))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cache's counters, for metrics.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The cache itself, so that the memory accounting can size it.
    pub fn cache(&self) -> &ObjectCache {
        &self.cache
    }

    /// Series of `tenant` that match every matcher (an absent label matches as "") and have
    /// a chunk overlapping `[mint, maxt]`, from every catalog object overlapping the range
    /// that is not local. Never fails: what could not be read is a warning, and the answer
    /// is then partial. Returns by `deadline`.
    pub async fn select(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        deadline: Instant,
    ) -> StoreSelection {
        let mut warnings = Vec::new();
        let candidates: Vec<ObjectKey> = {
            let st = self.state.lock();
            if !st.loaded {
                warnings.push(NOT_LOADED_WARNING.to_owned());
            }
            st.tenants
                .get(tenant)
                .into_iter()
                .flatten()
                .filter(|(k, i)| !i.in_memory && k.min_t <= maxt && k.max_t >= mint)
                .map(|(k, _)| k.clone())
                .collect()
        };

        let mut fetches = stream::iter(candidates)
            .map(|key| async move {
                let path = key.to_path(self.store.prefix());
                let index = self.index(&key, &path, deadline).await;
                (path, index)
            })
            .buffer_unordered(INDEX_FETCH_CONCURRENCY);
        let mut found: BTreeMap<Labels, Vec<RemoteChunk>> = BTreeMap::new();
        let mut unread = Vec::new();
        let mut gone = Vec::new();
        while let Some((path, index)) = fetches.next().await {
            match index {
                Ok(ix) => collect(&ix, &path, matchers, mint, maxt, &mut found),
                Err(e) => {
                    if matches!(e, StoreError::NotFound { .. }) {
                        // Deleted since it was listed: compacted or expired by another
                        // process. Its data (if any is left) is in an object the next
                        // listing finds.
                        if let Ok(k) = ObjectKey::parse(self.store.prefix(), &path) {
                            gone.push(k);
                        }
                    }
                    unread.push(unreadable_warning(&path, &e));
                }
            }
        }
        drop(fetches);
        if !gone.is_empty() {
            self.remove(&gone);
            self.relist
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Sorted, so the answer does not depend on which fetch finished first.
        unread.sort();
        let more = unread.len().saturating_sub(MAX_OBJECT_WARNINGS);
        unread.truncate(MAX_OBJECT_WARNINGS);
        warnings.extend(unread);
        if more > 0 {
            warnings.push(format!(
                "store unavailable: {more} more objects not read; the answer may be incomplete"
            ));
        }

        let series = found
            .into_iter()
            .map(|(labels, mut chunks)| {
                chunks.sort_by_key(|c| (c.meta.min_t, c.meta.max_t, c.meta.len, c.meta.crc32));
                chunks.dedup_by(|a, b| same_chunk(&a.meta, &b.meta));
                StoreSeries { labels, chunks }
            })
            .collect();
        StoreSelection { series, warnings }
    }

    /// One chunk's bytes: from the cache, or by a range GET whose CRC is checked, then
    /// cached. Same deadline and breaker rules as [`select`](Self::select).
    pub async fn read_chunk(
        &self,
        c: &RemoteChunk,
        deadline: Instant,
    ) -> Result<Bytes, StoreError> {
        if let Some(b) = self.cache.get_chunk(&c.path, c.meta.offset, c.meta.len) {
            return Ok(b);
        }
        let mut local = [None];
        self.read_local_chunks(std::slice::from_ref(c), &mut local)
            .await;
        if let [Some(r)] = local {
            return r;
        }
        let bytes = self
            .read("read_chunk", &c.path, deadline, |s| async move {
                s.read_chunk(&c.path, &c.meta).await
            })
            .await?;
        self.cache.put_chunk(&c.path, c.meta.offset, &bytes);
        Ok(bytes)
    }

    /// Many chunks' bytes, in the order given: cached ones from the cache; the rest read
    /// per object, several objects at once, with one range GET covering all of an
    /// object's wanted chunks when they lie close together (at most
    /// [`COALESCE_MAX_BYTES`], and at most four times the bytes wanted or at most
    /// [`COALESCE_SMALL_BYTES`]), else one GET each, several at once.
    /// Every chunk's CRC is checked; each read follows [`Self::read_chunk`]'s rules.
    pub async fn read_chunks(
        &self,
        chunks: &[RemoteChunk],
        deadline: Instant,
    ) -> Vec<Result<Bytes, StoreError>> {
        let mut out: Vec<Option<Result<Bytes, StoreError>>> = chunks
            .iter()
            .map(|c| {
                self.cache
                    .get_chunk(&c.path, c.meta.offset, c.meta.len)
                    .map(Ok)
            })
            .collect();
        self.read_local_chunks(chunks, &mut out).await;
        let mut by_object: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
        for (i, c) in chunks.iter().enumerate() {
            if out[i].is_none() {
                by_object.entry(&c.path).or_default().push(i);
            }
        }
        type Read<'a> = std::pin::Pin<
            Box<dyn Future<Output = Vec<(usize, Result<Bytes, StoreError>)>> + Send + 'a>,
        >;
        let mut futs: Vec<Read<'_>> = Vec::new();
        for (path, mut idx) in by_object {
            idx.sort_by_key(|&i| chunks[i].meta.offset);
            futs.push(Box::pin(async move {
                let wanted: u64 = idx.iter().map(|&i| chunks[i].meta.len as u64).sum();
                let start = chunks[idx[0]].meta.offset;
                let end = idx
                    .iter()
                    .map(|&i| chunks[i].meta.range().end)
                    .max()
                    .unwrap_or(start);
                let span = end - start;
                let mut results = Vec::with_capacity(idx.len());
                // One request for the lot when the extra bytes are few or cheap next to
                // the per-request latency of an object store.
                let close = span <= wanted * 4 || span <= COALESCE_SMALL_BYTES;
                if idx.len() > 1 && span <= COALESCE_MAX_BYTES && close {
                    let got = self
                        .read("read_chunks", path, deadline, |s| async move {
                            s.get_range(path, start..end).await
                        })
                        .await;
                    for &i in &idx {
                        let m = &chunks[i].meta;
                        let r = got.as_ref().map_err(clone_err).and_then(|b| {
                            let lo = (m.offset - start) as usize;
                            let bytes = b.slice(lo..lo + m.len as usize);
                            super::object::verify_chunk(m, &bytes)?;
                            self.cache.put_chunk(path, m.offset, &bytes);
                            Ok(bytes)
                        });
                        results.push((i, r));
                    }
                } else {
                    for batch in idx.chunks(CHUNK_READ_CONCURRENCY) {
                        let mut reads = Vec::with_capacity(batch.len());
                        for &i in batch {
                            reads.push(self.read_chunk(&chunks[i], deadline));
                        }
                        let got = futures::future::join_all(reads).await;
                        results.extend(batch.iter().copied().zip(got));
                    }
                }
                results
            }));
        }
        let reads = futures::stream::iter(futs).buffer_unordered(INDEX_FETCH_CONCURRENCY);
        let all: Vec<Vec<(usize, Result<Bytes, StoreError>)>> = reads.collect().await;
        for (i, r) in all.into_iter().flatten() {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.expect("every chunk was read or found"))
            .collect()
    }

    /// Fills in `out` the chunks whose objects the local tier holds whole, read on a
    /// blocking thread (one read of the span per object) and CRC-checked. Chunks it cannot
    /// read are left for the store.
    async fn read_local_chunks(
        &self,
        chunks: &[RemoteChunk],
        out: &mut [Option<Result<Bytes, StoreError>>],
    ) {
        let Some(local) = &self.local else { return };
        let mut by_object: BTreeMap<ObjectKey, Vec<(usize, ChunkMeta)>> = BTreeMap::new();
        for (i, c) in chunks.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let Ok(key) = ObjectKey::parse(self.store.prefix(), &c.path) else {
                continue;
            };
            if local.held(&key) == Some(Held::Object) {
                by_object.entry(key).or_default().push((i, c.meta));
            }
        }
        if by_object.is_empty() {
            return;
        }
        let local = local.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            for (key, wanted) in by_object {
                let start = wanted.iter().map(|(_, m)| m.offset).min().unwrap_or(0);
                let end = wanted.iter().map(|(_, m)| m.range().end).max().unwrap_or(0);
                let span = match local.read_range(&key, start..end) {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        tracing::debug!(error = %e, "local copy not readable; asking the store");
                        continue;
                    }
                };
                for (i, m) in wanted {
                    let lo = (m.offset - start) as usize;
                    let bytes = span.slice(lo..lo + m.len as usize);
                    match super::object::verify_chunk(&m, &bytes) {
                        Ok(()) => got.push((i, bytes)),
                        Err(e) => {
                            tracing::error!(object = %key.file_name(), error = %e, "a chunk of a local copy fails its check; asking the store");
                        }
                    }
                }
            }
            got
        })
        .await;
        match read {
            Ok(got) => {
                for (i, b) in got {
                    out[i] = Some(Ok(b));
                }
            }
            Err(e) => tracing::error!(error = %e, "local chunk read panicked"),
        }
    }

    /// An object's index: from the cache, or fetched, checked against its key, and cached.
    async fn index(
        &self,
        key: &ObjectKey,
        path: &Path,
        deadline: Instant,
    ) -> Result<Arc<ObjectIndex>, StoreError> {
        if let Some(ix) = self.cache.get_index(path) {
            return Ok(ix);
        }
        if let Some(local) = &self.local {
            let (local, k) = (local.clone(), key.clone());
            match tokio::task::spawn_blocking(move || local.read_index(&k)).await {
                Ok(Ok(Some(ix))) => {
                    let ix = Arc::new(ix);
                    self.cache.put_index(path, Arc::clone(&ix));
                    return Ok(ix);
                }
                Ok(Ok(None)) => {}
                // The copy was bad or went away (it is forgotten): the store has the object.
                Ok(Err(e)) => tracing::debug!(error = %e, "local index copy not usable"),
                Err(e) => tracing::error!(error = %e, "local index read panicked"),
            }
        }
        let (ix, raw) = self
            .read("read_index", path, deadline, |s| async move {
                // Footer by a suffix GET, then the index by a range GET; both kept raw so
                // that the local tier can keep a copy of them.
                let (footer, len) = s.get_suffix(path, FOOTER_LEN).await?;
                let parsed = decode_footer(&footer, len)?;
                let index = s.get_range(path, parsed.index_range()).await?;
                let ix = decode_index(&index, &parsed)?;
                Ok((ix, (len, footer, index)))
            })
            .await?;
        if let Some(local) = self.local.clone() {
            // An index the store gave stays readable while the store is down: which series
            // and chunks it holds is what a query needs to know to answer or to say what is
            // missing.
            let k = key.clone();
            let (len, footer, index) = raw;
            tokio::task::spawn_blocking(move || {
                if let Err(e) = local.put_index(&k, len, &footer, &index) {
                    tracing::warn!(error = %e, "could not keep a local copy of an index");
                }
            });
        }
        // Assert the data right after reading it: the key's range is what select trusted
        // to pick this object, so chunks outside it would be missed by other queries.
        if ix.min_t < key.min_t || ix.max_t > key.max_t {
            return Err(StoreError::Corrupt(format!(
                "{path}: index spans {}..={}, outside the key's {}..={}",
                ix.min_t, ix.max_t, key.min_t, key.max_t
            )));
        }
        let ix = Arc::new(ix);
        self.cache.put_index(path, Arc::clone(&ix));
        Ok(ix)
    }

    /// Runs one store read (`f`, given the store with the right deadline) if reads are not
    /// down, so that it ends by `deadline`, within the store timeout, within the degraded
    /// timeout while half-open, and as soon as reads go down; then tells the breaker how it
    /// went. While reads are down it returns [`StoreError::ReadsDown`] at once.
    async fn read<T, F, Fut>(
        &self,
        op: &'static str,
        path: &Path,
        deadline: Instant,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            // The query's time is up: not a sign of anything about the store.
            return Err(StoreError::Timeout {
                op,
                path: path.to_string(),
                after: Duration::ZERO,
            });
        }
        // Asked before each call, not once per query: a query's later reads (the next wave
        // of indexes, its chunks) must not wait on a store that its first reads found down.
        let state = self.breaker.state();
        let cap = match state {
            CircuitState::Closed => self.store.timeout(),
            CircuitState::HalfOpen => self.store.timeout().min(self.cfg.degraded_timeout),
            CircuitState::Open => return Err(StoreError::ReadsDown),
        };
        let timeout = remaining.min(cap);
        // The store applies the timeout to each call; the outer one bounds the whole read
        // (an index read is two calls).
        let call = async {
            match tokio::time::timeout(timeout, f(self.store.with_timeout(timeout))).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout {
                    op,
                    path: path.to_string(),
                    after: timeout,
                }),
            }
        };
        let result = if state == CircuitState::Closed {
            tokio::select! {
                // A call that ends at the same moment keeps its own answer.
                biased;
                r = call => r,
                // Another read found reads down: stop waiting. Not evidence of anything new,
                // so the breaker is not told.
                () = self.breaker.until_down() => return Err(StoreError::ReadsDown),
            }
        } else {
            call.await
        };
        match &result {
            // No first byte in time: strong evidence on its own, reads are down now. (The
            // store applies that deadline only when it is shorter than the call's, so it
            // is never the query's own deadline speaking.)
            Err(StoreError::FirstByteTimeout { .. }) => self.breaker.trip(),
            Err(e) if e.is_retryable() => {
                // A timeout the query's own deadline cut shorter than even the degraded
                // timeout says more about the query than the store: do not count it.
                let cut_short = matches!(e, StoreError::Timeout { .. })
                    && timeout < cap.min(self.cfg.degraded_timeout);
                if !cut_short {
                    self.breaker.record_failure();
                }
            }
            // Success, or an answer that is not an outage (NotFound, corruption): the
            // store responds. The same rule as `CallGuard::finish`.
            _ => self.breaker.record_success(),
        }
        result
    }
}

fn same_chunk(a: &ChunkMeta, b: &ChunkMeta) -> bool {
    (a.min_t, a.max_t, a.len, a.crc32) == (b.min_t, b.max_t, b.len, b.crc32)
}

fn matches_all(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

/// Adds the series of `ix` that match, with their chunks overlapping `[mint, maxt]`.
fn collect(
    ix: &ObjectIndex,
    path: &Path,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    out: &mut BTreeMap<Labels, Vec<RemoteChunk>>,
) {
    for s in &ix.series {
        if !matches_all(&s.labels, matchers) {
            continue;
        }
        let mut chunks = s
            .chunks
            .iter()
            .filter(|c| c.min_t <= maxt && c.max_t >= mint)
            .map(|c| RemoteChunk {
                path: path.clone(),
                meta: *c,
            })
            .peekable();
        if chunks.peek().is_none() {
            continue;
        }
        out.entry(s.labels.clone()).or_default().extend(chunks);
    }
}

fn unreadable_warning(path: &Path, e: &StoreError) -> String {
    let what = if e.is_retryable() {
        "store unavailable"
    } else {
        "store object unreadable"
    };
    format!("{what}: object {path} not read: {e}; the answer may be incomplete")
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::model::MatchOp;
    use crate::store::faulty::{Fault, FaultyStore, Op};
    use crate::store::object::{ChunkData, ObjectBuilder};
    use crate::store::retry::CircuitConfig;
    use crate::store::StoreOptions;

    const STORE_TIMEOUT: Duration = Duration::from_secs(10);
    const DEGRADED: Duration = Duration::from_millis(500);

    fn seed() -> u64 {
        let seed = std::env::var("CATALOG_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("catalog test seed: CATALOG_TEST_SEED={seed}");
        seed
    }

    /// One chunk as written: time range and bytes.
    type Chunk = (i64, i64, Vec<u8>);
    /// What a tenant holds: series and their chunks, the reference model.
    type Model = BTreeMap<Labels, Vec<Chunk>>;

    struct Fixture {
        faulty: Arc<FaultyStore>,
        store: Store,
        breaker: Arc<CircuitBreaker>,
        catalog: Arc<Catalog>,
    }

    /// The first-byte deadline of the fixtures (the flag's default).
    const FIRST_BYTE: Duration = Duration::from_secs(1);

    fn fixture(cache_bytes: u64) -> Fixture {
        fixture_with(cache_bytes, FIRST_BYTE)
    }

    /// A fixture whose store has the first-byte deadline `first_byte` (`STORE_TIMEOUT`
    /// turns it off, to test the other deadlines alone).
    fn fixture_with(cache_bytes: u64, first_byte: Duration) -> Fixture {
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let opts = StoreOptions {
            timeout: STORE_TIMEOUT,
            read_first_byte_timeout: first_byte,
            max_list_entries: 3, // several pages
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), Path::from("weft"), &opts);
        let breaker = Arc::new(CircuitBreaker::new(CircuitConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_secs(5),
        }));
        let cfg = CatalogConfig {
            cache_bytes,
            degraded_timeout: DEGRADED,
        };
        let catalog = Arc::new(Catalog::new(store.clone(), breaker.clone(), cfg));
        Fixture {
            faulty,
            store,
            breaker,
            catalog,
        }
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_strs(pairs.iter().copied()).unwrap()
    }

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher::new(op, name, value).unwrap()
    }

    /// Writes one object of `series` for `tenant` and returns its key and size.
    async fn put_object(
        store: &Store,
        tenant: &TenantId,
        seq: u64,
        series: &[(Labels, Vec<Chunk>)],
    ) -> (ObjectKey, u64) {
        let mut b = ObjectBuilder::new();
        for (l, chunks) in series {
            let data: Vec<ChunkData<'_>> = chunks
                .iter()
                .map(|(min_t, max_t, d)| ChunkData {
                    min_t: *min_t,
                    max_t: *max_t,
                    data: d,
                    encoding: crate::store::object::ENCODING_XOR,
                })
                .collect();
            b.add_series(l, &data).unwrap();
        }
        let obj = b.finish().unwrap();
        let key = ObjectKey::new(tenant.clone(), obj.min_t, obj.max_t, "ing-1", seq).unwrap();
        store
            .put(&key.to_path(store.prefix()), obj.bytes.clone())
            .await
            .unwrap();
        (key, obj.bytes.len() as u64)
    }

    /// Random series for object number `k`: chunks inside `[k*10_000, k*10_000 + 9_999]`,
    /// non-overlapping within a series, random bytes.
    fn random_object(rng: &mut SmallRng, k: i64) -> Vec<(Labels, Vec<Chunk>)> {
        let mut out = Vec::new();
        for name in ["up", "cpu", "mem"] {
            for job in ["a", "b"] {
                for inst in ["i0", "i1"] {
                    if rng.random_bool(0.3) {
                        continue;
                    }
                    let mut l = vec![("__name__", name), ("job", job)];
                    // Some series lack `instance`, to exercise absent-label matching.
                    if inst == "i1" || name != "mem" {
                        l.push(("instance", inst));
                    }
                    let n = rng.random_range(1..=3);
                    let chunks = (0..n)
                        .map(|j| {
                            let min_t = k * 10_000 + j * 3_000 + rng.random_range(0..1_000);
                            let max_t = min_t + rng.random_range(0..2_000);
                            let len = rng.random_range(1..64);
                            (min_t, max_t, (0..len).map(|_| rng.random()).collect())
                        })
                        .collect();
                    out.push((labels(&l), chunks));
                }
            }
        }
        if out.is_empty() {
            out.push((
                labels(&[("__name__", "up")]),
                vec![(k * 10_000, k * 10_000, vec![1])],
            ));
        }
        out
    }

    fn add_to_model(model: &mut Model, series: &[(Labels, Vec<Chunk>)]) {
        for (l, chunks) in series {
            model
                .entry(l.clone())
                .or_default()
                .extend(chunks.iter().cloned());
        }
    }

    /// What select must return for `model`, as (labels, [(min_t, max_t, bytes)]).
    fn expected(
        model: &Model,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(Labels, Vec<Chunk>)> {
        model
            .iter()
            .filter(|(l, _)| matches_all(l, matchers))
            .map(|(l, chunks)| {
                let mut c: Vec<Chunk> = chunks
                    .iter()
                    .filter(|c| c.0 <= maxt && c.1 >= mint)
                    .cloned()
                    .collect();
                c.sort_by_key(|c| (c.0, c.1));
                (l.clone(), c)
            })
            .filter(|(_, c)| !c.is_empty())
            .collect()
    }

    /// Select's answer with every chunk read back, in the same shape as `expected`.
    async fn read_all(
        catalog: &Catalog,
        tenant: &TenantId,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> (Vec<(Labels, Vec<Chunk>)>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let sel = catalog.select(tenant, matchers, mint, maxt, deadline).await;
        let mut out = Vec::new();
        for s in sel.series {
            let mut chunks = Vec::new();
            for c in &s.chunks {
                let b = catalog.read_chunk(c, deadline).await.unwrap();
                assert_eq!(b.len(), c.meta.len as usize);
                chunks.push((c.meta.min_t, c.meta.max_t, b.to_vec()));
            }
            out.push((s.labels, chunks));
        }
        (out, sel.warnings)
    }

    #[tokio::test]
    async fn select_returns_exactly_what_was_written_across_objects_and_tenants() {
        let seed = seed();
        let mut rng = SmallRng::seed_from_u64(seed);
        let f = fixture(64 << 20);
        let (a, b) = (tenant("team-a"), tenant("team-b"));
        let mut model = Model::new();
        let mut first = Vec::new();
        for k in 0..4 {
            let series = random_object(&mut rng, k);
            put_object(&f.store, &a, k as u64, &series).await;
            add_to_model(&mut model, &series);
            if k == 1 {
                first = series;
            }
        }
        // The same object uploaded again under another key: its chunks must not double.
        put_object(&f.store, &a, 99, &first).await;
        let secret = labels(&[("__name__", "secret"), ("job", "a")]);
        put_object(
            &f.store,
            &b,
            0,
            &[(secret.clone(), vec![(5, 6, vec![42; 9])])],
        )
        .await;
        // Keys that are not weft objects.
        for junk in [
            "weft/team-a/chunks/garbage",
            "weft/team-a/notchunks/x",
            "weft/a..b/chunks/x",
            "weft/stray",
        ] {
            f.store
                .put(&Path::from(junk), Bytes::from_static(b"junk"))
                .await
                .unwrap();
        }

        let sel = f
            .catalog
            .select(&a, &[], i64::MIN, i64::MAX, Instant::now() + STORE_TIMEOUT)
            .await;
        assert!(sel.series.is_empty());
        assert_eq!(sel.warnings, [NOT_LOADED_WARNING]);

        assert_eq!(f.catalog.load().await.unwrap(), 6);
        assert!(f.catalog.is_loaded());
        let objs = f.catalog.objects(&a);
        assert_eq!(objs.len(), 5);
        assert!(objs
            .iter()
            .all(|(k, size, local)| k.tenant == a && *size > 0 && !local));
        assert_eq!(f.catalog.objects(&b).len(), 1);

        let all = [m(MatchOp::Re, "__name__", ".+")];
        let cases: Vec<(Vec<Matcher>, i64, i64)> = vec![
            (all.to_vec(), i64::MIN, i64::MAX),
            (vec![m(MatchOp::Eq, "job", "a")], i64::MIN, i64::MAX),
            (
                vec![
                    m(MatchOp::Eq, "__name__", "cpu"),
                    m(MatchOp::Neq, "instance", "i0"),
                ],
                0,
                40_000,
            ),
            // Absent labels match "": `mem` series without `instance`.
            (vec![m(MatchOp::Eq, "instance", "")], i64::MIN, i64::MAX),
            (vec![m(MatchOp::Re, "instance", "i.*|")], 12_000, 25_000),
            (all.to_vec(), 15_500, 15_500),
            (all.to_vec(), 40_000, 50_000),
            (
                vec![m(MatchOp::Eq, "__name__", "secret")],
                i64::MIN,
                i64::MAX,
            ),
        ];
        for (matchers, mint, maxt) in cases {
            let (got, warnings) = read_all(&f.catalog, &a, &matchers, mint, maxt).await;
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(
                got,
                expected(&model, &matchers, mint, maxt),
                "seed {seed}: {matchers:?} {mint}..={maxt}"
            );
        }
        // Tenant B sees its own series and nothing of A's.
        let (got, _) = read_all(&f.catalog, &b, &all, i64::MIN, i64::MAX).await;
        assert_eq!(got, [(secret, vec![(5, 6, vec![42; 9])])]);
        let (got, warnings) =
            read_all(&f.catalog, &tenant("team-c"), &all, i64::MIN, i64::MAX).await;
        assert!(got.is_empty() && warnings.is_empty());
    }

    #[tokio::test]
    async fn an_object_deleted_by_another_process_is_dropped_and_a_new_listing_asked_for() {
        let f = fixture(0);
        let t = tenant("t");
        let l = labels(&[("__name__", "up")]);
        let (a, _) = put_object(&f.store, &t, 1, &[(l.clone(), vec![(10, 20, vec![1])])]).await;
        let (b, _) = put_object(&f.store, &t, 2, &[(l.clone(), vec![(30, 40, vec![2])])]).await;
        f.catalog.load().await.unwrap();
        assert!(!f.catalog.take_relist_request());
        // A compactor elsewhere deleted `a` (its data now lives in some other object).
        f.store.delete(&a.to_path(f.store.prefix())).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let all = [m(MatchOp::Eq, "__name__", "up")];
        let sel = f.catalog.select(&t, &all, 0, 100, deadline).await;
        assert_eq!(sel.warnings.len(), 1, "{:?}", sel.warnings);
        assert!(f.catalog.take_relist_request());
        assert_eq!(
            f.catalog.objects(&t).len(),
            1,
            "the gone object left the catalog"
        );
        let sel = f.catalog.select(&t, &all, 0, 100, deadline).await;
        assert!(sel.warnings.is_empty());
        // A listing drops what the store no longer holds too.
        f.store.delete(&b.to_path(f.store.prefix())).await.unwrap();
        f.catalog.load().await.unwrap();
        assert_eq!(f.catalog.object_count(), 0);
    }

    #[tokio::test]
    async fn a_release_before_the_upload_is_recorded_keeps_the_object_readable() {
        // The flusher's release can run between its upload and its `add`: the object must
        // stay readable from the store, not be taken as held by the head for ever.
        let f = fixture(1 << 20);
        let t = tenant("t");
        let l = labels(&[("__name__", "up")]);
        let (key, size) = put_object(
            &f.store,
            &t,
            1,
            &[(l.clone(), vec![(10, 20, vec![1, 2, 3])])],
        )
        .await;
        f.catalog.set_remote(&key);
        f.catalog.add(key.clone(), size, true);
        assert_eq!(f.catalog.objects(&t), vec![(key, size, false)]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let sel = f
            .catalog
            .select(&t, &[m(MatchOp::Eq, "__name__", "up")], 0, 100, deadline)
            .await;
        assert_eq!(sel.series.len(), 1);
    }

    #[tokio::test]
    async fn local_objects_are_skipped_until_set_remote() {
        let f = fixture(64 << 20);
        let a = tenant("a");
        let old = labels(&[("__name__", "old")]);
        let new = labels(&[("__name__", "new")]);
        let early = labels(&[("__name__", "early")]);
        put_object(&f.store, &a, 1, &[(old.clone(), vec![(0, 10, vec![1; 4])])]).await;
        // Flushed before the listing finished: the listing must not make it remote.
        let (early_key, size) = put_object(
            &f.store,
            &a,
            2,
            &[(early.clone(), vec![(20, 30, vec![3; 4])])],
        )
        .await;
        f.catalog.add(early_key.clone(), size, true);
        f.catalog.load().await.unwrap();
        let (new_key, size) = put_object(
            &f.store,
            &a,
            3,
            &[(new.clone(), vec![(40, 50, vec![2; 4])])],
        )
        .await;
        f.catalog.add(new_key.clone(), size, true);

        let names =
            |sel: StoreSelection| sel.series.into_iter().map(|s| s.labels).collect::<Vec<_>>();
        let deadline = Instant::now() + STORE_TIMEOUT;
        let sel = f.catalog.select(&a, &[], 0, 100, deadline).await;
        assert_eq!(names(sel), std::slice::from_ref(&old));
        assert_eq!(
            f.faulty.calls(Op::GetRange),
            2,
            "footer and index of the remote object only"
        );

        f.catalog.set_remote(&new_key);
        f.catalog.set_remote(&early_key);
        let sel = f.catalog.select(&a, &[], 0, 100, deadline).await;
        assert_eq!(names(sel), [early, new, old]);
        let flags: Vec<bool> = f.catalog.objects(&a).into_iter().map(|o| o.2).collect();
        assert_eq!(flags, [false, false, false]);
    }

    /// The flusher's release can tell the catalog that an object left memory before the
    /// catalog heard of the upload: a later `add` must not make the object local again, or
    /// queries would skip chunks that only the object still holds (seen in the outage drill
    /// under memory pressure).
    #[tokio::test]
    async fn an_add_after_set_remote_keeps_the_object_remote() {
        let f = fixture(64 << 20);
        let a = tenant("a");
        let s = labels(&[("__name__", "raced")]);
        let (key, size) =
            put_object(&f.store, &a, 1, &[(s.clone(), vec![(0, 10, vec![1; 4])])]).await;
        f.catalog.load().await.unwrap();
        f.catalog.set_remote(&key);
        f.catalog.add(key.clone(), size, true);
        let objects = f.catalog.objects(&a);
        assert_eq!(objects.len(), 1);
        assert_eq!(
            (objects[0].1, objects[0].2),
            (size, false),
            "size known, remote"
        );
        let sel = f
            .catalog
            .select(&a, &[], 0, 100, Instant::now() + STORE_TIMEOUT)
            .await;
        let names: Vec<_> = sel.series.into_iter().map(|s| s.labels).collect();
        assert_eq!(names, [s]);
    }

    /// The local tier answers for what it holds while the store hangs: whole copies give
    /// exact chunks, index copies give the series (and say exactly what only the store
    /// has), and a catalog rebuilt over the same directory counts as loaded at once.
    #[tokio::test]
    async fn local_copies_answer_while_the_store_hangs_and_after_a_restart() {
        let seed = seed();
        let mut rng = SmallRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let open_local = || {
            Arc::new(
                LocalTier::open(crate::local::LocalConfig {
                    dir: dir.path().join("local"),
                    retention: Duration::from_secs(3600 * 24 * 365 * 100),
                })
                .unwrap(),
            )
        };
        let local = open_local();
        let f = fixture(0);
        let catalog = Arc::new(
            Catalog::new(
                f.store.clone(),
                f.breaker.clone(),
                CatalogConfig {
                    cache_bytes: 0,
                    degraded_timeout: DEGRADED,
                },
            )
            .with_local_tier(local.clone()),
        );
        let a = tenant("a");
        let mut model = Model::new();
        let mut keys = Vec::new();
        for k in 0..6 {
            let series = random_object(&mut rng, k);
            add_to_model(&mut model, &series);
            let (key, _) = put_object(&f.store, &a, k as u64, &series).await;
            // What the flusher does: the copy, then the catalog (chunks in memory), and
            // later the release.
            let bytes = f.store.get(&key.to_path(f.store.prefix())).await.unwrap();
            local.put_object(&key, &bytes).unwrap();
            catalog.add(key.clone(), bytes.len() as u64, true);
            catalog.set_remote(&key);
            keys.push(key);
        }
        catalog.load().await.unwrap();
        f.faulty.set(
            &[Op::GetRange, Op::Get, Op::Head, Op::List],
            Some(Fault::Hang),
        );
        let calls = f.faulty.calls(Op::GetRange) + f.faulty.calls(Op::Get);
        let all = [m(MatchOp::Re, "__name__", ".+")];
        let deadline = Instant::now() + Duration::from_secs(2);
        let (got, warnings) = read_all(&catalog, &a, &all, i64::MIN, i64::MAX).await;
        assert!(warnings.is_empty(), "seed {seed}: {warnings:?}");
        assert_eq!(
            got,
            expected(&model, &all, i64::MIN, i64::MAX),
            "seed {seed}"
        );
        assert_eq!(
            f.faulty.calls(Op::GetRange) + f.faulty.calls(Op::Get),
            calls,
            "the store was asked"
        );
        assert!(Instant::now() < deadline);

        // The two oldest copies give their room back: their series are still known, and a
        // query that needs their chunks says so; one that does not is complete.
        local.evict_oldest(1);
        local.evict_oldest(1);
        assert_eq!(local.held(&keys[0]), Some(Held::Index));
        assert_eq!(local.held(&keys[1]), Some(Held::Index));
        let sel = catalog
            .select(&a, &all, i64::MIN, i64::MAX, Instant::now() + DEGRADED)
            .await;
        assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
        let names: Vec<&Labels> = sel.series.iter().map(|s| &s.labels).collect();
        let want: Vec<&Labels> = model.keys().collect();
        assert_eq!(names, want, "seed {seed}: the series API stays complete");
        let recent = 20_000;
        let (got, warnings) = read_all(&catalog, &a, &all, recent, i64::MAX).await;
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(got, expected(&model, &all, recent, i64::MAX), "seed {seed}");

        // A new catalog over the same directory (a restart while the store hangs).
        let local = open_local();
        let again = Arc::new(
            Catalog::new(
                f.store.clone(),
                f.breaker.clone(),
                CatalogConfig {
                    cache_bytes: 0,
                    degraded_timeout: DEGRADED,
                },
            )
            .with_local_tier(local),
        );
        assert!(again.is_loaded());
        assert_eq!(again.objects(&a).len(), 6);
        let (got, warnings) = read_all(&again, &a, &all, recent, i64::MAX).await;
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(got, expected(&model, &all, recent, i64::MAX), "seed {seed}");
    }

    #[tokio::test]
    async fn an_index_outside_its_keys_range_is_reported_not_used() {
        let f = fixture(64 << 20);
        let a = tenant("a");
        let (key, _) = put_object(
            &f.store,
            &a,
            1,
            &[(labels(&[("__name__", "x")]), vec![(0, 100, vec![1])])],
        )
        .await;
        // The same bytes under a key claiming a narrower range.
        let bytes = f.store.get(&key.to_path(f.store.prefix())).await.unwrap();
        let lying = ObjectKey::new(a.clone(), 0, 50, "ing-1", 2).unwrap();
        f.store
            .put(&lying.to_path(f.store.prefix()), bytes)
            .await
            .unwrap();
        f.catalog.load().await.unwrap();
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, Instant::now() + STORE_TIMEOUT)
            .await;
        // The honest object answers; the other is a warning.
        assert_eq!(sel.series.len(), 1);
        assert_eq!(sel.series[0].chunks.len(), 1);
        assert_eq!(sel.series[0].chunks[0].path, key.to_path(f.store.prefix()));
        assert_eq!(sel.warnings.len(), 1);
        let w = &sel.warnings[0];
        assert!(
            w.contains(lying.to_path(f.store.prefix()).as_ref()) && w.contains("outside the key"),
            "{w}"
        );
        // Corruption is an answer, not an outage.
        assert_eq!(f.breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_costs_a_select_no_more_than_its_deadline() {
        // The first-byte deadline off: this is about the query's and the store's deadlines.
        let f = fixture_with(0, STORE_TIMEOUT);
        let a = tenant("a");
        for k in 0..20 {
            let l = labels(&[("__name__", "x"), ("k", &k.to_string())]);
            put_object(&f.store, &a, k, &[(l, vec![(0, 10, vec![k as u8; 8])])]).await;
        }
        assert_eq!(f.catalog.load().await.unwrap(), 20);
        // The chunk to read later, found while the store works.
        let deadline = Instant::now() + STORE_TIMEOUT;
        let chunk = f.catalog.select(&a, &[], 0, 10, deadline).await.series[0].chunks[0].clone();

        f.faulty.set(&[Op::GetRange], Some(Fault::Hang));
        // A query deadline shorter than the degraded timeout: its timeouts are the query's,
        // not evidence against the store.
        let start = Instant::now();
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, start + Duration::from_millis(100))
            .await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(sel.warnings.len(), MAX_OBJECT_WARNINGS + 1);
        assert_eq!(f.breaker.consecutive_failures(), 0);

        let start = Instant::now();
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, start + Duration::from_secs(2))
            .await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "the deadline, not the store timeout"
        );
        assert!(sel.series.is_empty());
        // 20 objects not read: the first few by name, then a count.
        assert_eq!(
            sel.warnings.len(),
            MAX_OBJECT_WARNINGS + 1,
            "{:?}",
            sel.warnings
        );
        let w = &sel.warnings[0];
        assert!(
            w.starts_with("store unavailable: object weft/a/chunks/"),
            "{w}"
        );
        assert!(
            w.contains("within 2s") && w.ends_with("the answer may be incomplete"),
            "{w}"
        );
        assert!(sel.warnings[MAX_OBJECT_WARNINGS].contains("10 more objects"));
        // Those timeouts were failures of the store (2 s is past the degraded timeout).
        assert_eq!(f.breaker.state(), CircuitState::Open);

        // Reads are down: a chunk read does not call the store at all.
        let calls = f.faulty.calls(Op::GetRange);
        let start = Instant::now();
        let err = f
            .catalog
            .read_chunk(&chunk, start + Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ReadsDown), "{err}");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(f.faulty.calls(Op::GetRange), calls);
        // A deadline already past costs nothing and tells the breaker nothing.
        let failures = f.breaker.consecutive_failures();
        let err = f
            .catalog
            .read_chunk(&chunk, Instant::now())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Timeout {
                    after: Duration::ZERO,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(f.breaker.consecutive_failures(), failures);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_with_no_first_byte_marks_reads_down_and_later_queries_skip_the_store() {
        let f = fixture(0);
        let a = tenant("a");
        let l = labels(&[("__name__", "x")]);
        put_object(&f.store, &a, 1, &[(l.clone(), vec![(0, 10, vec![7; 8])])]).await;
        f.catalog.load().await.unwrap();
        // The chunk to read later, found while the store works (cache off: re-read).
        let deadline = Instant::now() + STORE_TIMEOUT;
        let chunk = f.catalog.select(&a, &[], 0, 10, deadline).await.series[0].chunks[0].clone();
        let reads_before = f.faulty.calls(Op::GetRange);

        f.faulty.set(&Op::READS, Some(Fault::Hang));
        // One hanging read costs the first-byte deadline, not the store timeout, and that
        // one read is enough: reads are down at once.
        let start = Instant::now();
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, start + Duration::from_secs(60))
            .await;
        assert_eq!(start.elapsed(), FIRST_BYTE);
        assert_eq!(sel.warnings.len(), 1);
        assert!(
            sel.warnings[0].contains("no first byte within 1s"),
            "{:?}",
            sel.warnings
        );
        assert_eq!(f.breaker.state(), CircuitState::Open);
        assert_eq!(f.faulty.calls(Op::GetRange), reads_before + 1);

        // Down: the next queries do not call the store at all and answer at once.
        for _ in 0..3 {
            let start = Instant::now();
            let sel = f
                .catalog
                .select(&a, &[], 0, 10, start + Duration::from_secs(60))
                .await;
            assert!(start.elapsed() <= Duration::from_millis(5));
            assert!(
                sel.warnings[0].contains("store reads are down"),
                "{:?}",
                sel.warnings
            );
            let err = f
                .catalog
                .read_chunk(&chunk, start + Duration::from_secs(60))
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::ReadsDown), "{err}");
        }
        assert_eq!(
            f.faulty.calls(Op::GetRange),
            reads_before + 1,
            "no store call while down"
        );
        assert_eq!(
            f.breaker.state(),
            CircuitState::Open,
            "refusals are not failures"
        );

        // Half-open (a probe in flight): reads go, cut to the degraded timeout.
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = f.breaker.try_call().unwrap();
        assert_eq!(f.breaker.state(), CircuitState::HalfOpen);
        let start = Instant::now();
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, start + Duration::from_secs(60))
            .await;
        assert_eq!(start.elapsed(), DEGRADED);
        assert!(
            sel.warnings[0].contains("within 500ms"),
            "{:?}",
            sel.warnings
        );
        assert_eq!(
            f.breaker.state(),
            CircuitState::Open,
            "a failed read reopens"
        );
        drop(probe);

        // The store answers again; the read probe finds it, and reads go through.
        f.faulty.set(&Op::READS, None);
        let prober = tokio::spawn(crate::store::health::run_read_probe(
            f.store.clone(),
            f.breaker.clone(),
        ));
        // The next probe time is one interval after the failed read.
        tokio::time::sleep(Duration::from_secs(5) + Duration::from_millis(1)).await;
        assert_eq!(f.breaker.state(), CircuitState::Closed);
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, Instant::now() + Duration::from_secs(60))
            .await;
        assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
        assert_eq!(sel.series.len(), 1);
        prober.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_in_flight_stops_waiting_when_another_finds_reads_down() {
        let f = fixture(0);
        let a = tenant("a");
        for k in 0..2 {
            let l = labels(&[("__name__", "x"), ("k", &k.to_string())]);
            put_object(&f.store, &a, k, &[(l, vec![(0, 10, vec![1; 8])])]).await;
        }
        f.catalog.load().await.unwrap();
        // Object 0's footer never comes; object 1's does, in time, and then its index
        // read is slow (it would end at 1.8 s).
        let slow = Fault::Delay(Duration::from_millis(900));
        f.faulty
            .script(Op::GetRange, [Fault::Hang, slow.clone(), slow]);
        let start = Instant::now();
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, start + Duration::from_secs(60))
            .await;
        // Object 0's first-byte timeout at 1 s marks reads down; object 1's read stops
        // waiting then, without counting as a failure of its own.
        assert_eq!(start.elapsed(), FIRST_BYTE);
        assert_eq!(f.faulty.calls(Op::GetRange), 3);
        assert_eq!(sel.warnings.len(), 2, "{:?}", sel.warnings);
        assert!(
            sel.warnings[0].contains("no first byte"),
            "{:?}",
            sel.warnings
        );
        assert!(
            sel.warnings[1].contains("store reads are down"),
            "{:?}",
            sel.warnings
        );
        assert_eq!(f.breaker.consecutive_failures(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_listing_keeps_the_catalog_unloaded_until_the_loader_succeeds() {
        let f = fixture(0);
        let a = tenant("a");
        put_object(
            &f.store,
            &a,
            1,
            &[(labels(&[("__name__", "x")]), vec![(0, 10, vec![7; 8])])],
        )
        .await;
        f.faulty.set(&[Op::List], Some(Fault::Fail));
        assert!(f.catalog.load().await.is_err());
        assert!(!f.catalog.is_loaded());
        assert!(f.catalog.objects(&a).is_empty());

        let loader = tokio::spawn(f.catalog.clone().run_loader());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!f.catalog.is_loaded());
        assert!(f.faulty.calls(Op::List) > 3, "the loader keeps trying");
        assert_eq!(
            f.breaker.state(),
            CircuitState::Open,
            "and its failures reach the breaker"
        );
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, Instant::now() + STORE_TIMEOUT)
            .await;
        assert_eq!(sel.warnings, [NOT_LOADED_WARNING]);

        f.faulty.set(&[Op::List], None);
        // A probe every 5 s, plus at most one backoff delay (30 s max).
        tokio::time::timeout(Duration::from_secs(40), loader)
            .await
            .expect("loader done")
            .unwrap();
        assert!(f.catalog.is_loaded());
        assert_eq!(f.catalog.objects(&a).len(), 1);
        assert_eq!(f.breaker.state(), CircuitState::Closed);
        let sel = f
            .catalog
            .select(&a, &[], 0, 10, Instant::now() + STORE_TIMEOUT)
            .await;
        assert!(sel.warnings.is_empty());
        assert_eq!(sel.series.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_read_once_is_served_from_the_cache_while_the_store_hangs() {
        let f = fixture(64 << 20);
        let a = tenant("a");
        let mut model = Model::new();
        for k in 0..3 {
            let series = vec![
                (
                    labels(&[("__name__", "x"), ("k", &k.to_string())]),
                    vec![(k * 100, k * 100 + 50, vec![k as u8; 30])],
                ),
                (
                    labels(&[("__name__", "y")]),
                    vec![(k * 100, k * 100 + 10, vec![9; 5 + k as usize])],
                ),
            ];
            put_object(&f.store, &a, k as u64, &series).await;
            add_to_model(&mut model, &series);
        }
        f.catalog.load().await.unwrap();
        let (first, _) = read_all(&f.catalog, &a, &[], 0, 1_000).await;
        assert_eq!(first, expected(&model, &[], 0, 1_000));
        let cold = f.catalog.cache_stats();
        assert_eq!(
            (
                cold.index_misses,
                cold.chunk_misses,
                cold.index_hits,
                cold.chunk_hits
            ),
            (3, 6, 0, 0)
        );

        f.faulty.set(&Op::READS, Some(Fault::Hang));
        let start = Instant::now();
        let (again, warnings) = read_all(&f.catalog, &a, &[], 0, 1_000).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "no store call");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again, first);
        let warm = f.catalog.cache_stats();
        assert_eq!((warm.index_hits, warm.chunk_hits), (3, 6));
        assert_eq!(
            f.faulty.calls(Op::GetRange),
            3 * 2 + 6,
            "only the first pass read the store"
        );
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bound_under_a_query_load() {
        let seed = seed();
        let mut rng = SmallRng::seed_from_u64(seed);
        let bound = 8 << 10;
        let f = fixture(bound);
        let a = tenant("a");
        let mut model = Model::new();
        for k in 0..12 {
            let series = random_object(&mut rng, k);
            put_object(&f.store, &a, k as u64, &series).await;
            add_to_model(&mut model, &series);
        }
        f.catalog.load().await.unwrap();
        for _ in 0..30 {
            let mint = rng.random_range(0..120_000);
            let maxt = mint + rng.random_range(0..40_000);
            let job = if rng.random_bool(0.5) { "a" } else { "b" };
            let matchers = [m(MatchOp::Eq, "job", job)];
            let (got, warnings) = read_all(&f.catalog, &a, &matchers, mint, maxt).await;
            assert!(warnings.is_empty());
            assert_eq!(got, expected(&model, &matchers, mint, maxt), "seed {seed}");
            let s = f.catalog.cache_stats();
            assert!(s.bytes <= bound, "seed {seed}: {s:?}");
        }
        let s = f.catalog.cache_stats();
        assert!(
            s.evictions > 0 && s.index_hits + s.chunk_hits > 0,
            "seed {seed}: {s:?}"
        );
        // The data set is larger than the bound: the workload really is under pressure.
        let store_bytes: u64 = f.catalog.objects(&a).iter().map(|o| o.1).sum();
        assert!(store_bytes > bound, "{store_bytes}");
    }
}
