//! weft's own metrics (`weft_*`), exposed at `/metrics` in the Prometheus text format.
//!
//! One [`Metrics`] value is created at start and shared; every module that counts something
//! takes it by reference, so the set of metrics is visible in one place.
//!
//! **Invariant:** `metrics` depends on nothing else in the crate. Modules that keep their own
//! counters (the WAL, the cache) are observed through plain-number structs defined here
//! ([`WalCounters`], [`CacheCounters`]), filled in by the caller.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels: `tenant`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// The tenant id.
    pub tenant: String,
}

/// Labels: `tenant`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// The tenant id.
    pub tenant: String,
    /// Why the samples were rejected (a fixed, small set of words).
    pub reason: &'static str,
}

/// Labels: `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why (a fixed, small set of words).
    pub reason: &'static str,
}

/// Labels: `op` (`read` or `write`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// Which kind of store call.
    pub op: &'static str,
}

/// Labels: `consumer` (one of [`crate::pressure::Consumer`]'s names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// What holds the memory: `head_chunks`, `head_series`, `cache`, `queries`,
    /// `push_bodies`, `flush_objects`.
    pub consumer: &'static str,
}

/// Labels: `endpoint`, `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route, e.g. `/api/v1/push`.
    pub endpoint: String,
    /// The HTTP status code.
    pub code: u16,
}

/// The WAL writer's cumulative counters, as plain numbers, for [`Metrics::observe_wal`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalCounters {
    /// Successful appends so far.
    pub appends: u64,
    /// Bytes of records appended so far.
    pub appended_bytes: u64,
    /// Completed sync rounds so far.
    pub syncs: u64,
    /// Segments created so far.
    pub segments_created: u64,
    /// Whether a failed sync has poisoned the WAL.
    pub poisoned: bool,
}

/// The object cache's state and cumulative counters, as plain numbers, for
/// [`Metrics::observe_cache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Bytes held now.
    pub bytes: u64,
    /// Index lookups that hit, so far.
    pub index_hits: u64,
    /// Index lookups that missed, so far.
    pub index_misses: u64,
    /// Chunk lookups that hit, so far.
    pub chunk_hits: u64,
    /// Chunk lookups that missed, so far.
    pub chunk_misses: u64,
    /// Objects in the catalog now.
    pub catalog_objects: u64,
}

/// Every metric weft exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Samples appended to the head.
    pub samples_ingested: Family<TenantLabels, Counter>,
    /// Samples refused, by reason.
    pub samples_rejected: Family<RejectLabels, Counter>,
    /// Of the samples ingested, those appended out of order (inside the window).
    pub ooo_samples_appended: Family<TenantLabels, Counter>,
    /// Samples equal to one already held: no-ops counted as written (retries).
    pub samples_repeated: Family<TenantLabels, Counter>,
    /// Native histogram samples appended to the head (refusals count in `samples_rejected`).
    pub histograms_ingested: Family<TenantLabels, Counter>,
    /// Whole requests refused before any sample was looked at, by reason.
    pub requests_rejected: Family<ReasonLabels, Counter>,
    /// Series in the head.
    pub head_series: Family<TenantLabels, Gauge>,
    /// Chunks in the head, the open ones included.
    pub head_chunks: Family<TenantLabels, Gauge>,
    /// Series that left the head after `--head.series-idle-timeout` (all chunks flushed).
    pub head_series_removed: Counter,
    /// Tenants that left the head once their last series had left.
    pub head_tenants_removed: Counter,
    /// Requests being served right now, by endpoint class (`write`, `read`).
    pub inflight_requests: Family<ReasonLabels, Gauge>,
    /// Request durations by endpoint and status code.
    pub request_duration: Family<RequestLabels, Histogram>,
    /// WAL appends (one per push that logged anything).
    pub wal_appends: Counter,
    /// Bytes of records appended to the WAL.
    pub wal_bytes: Counter,
    /// WAL sync rounds (each covers every append pending at the time: group commit).
    pub wal_syncs: Counter,
    /// WAL segments created.
    pub wal_segments: Counter,
    /// 1 once a failed sync has poisoned the WAL (writes refused until restart).
    pub wal_poisoned: Gauge,
    /// Damaged WAL regions (segments, checkpoint entries) replay skipped at this start.
    pub wal_corruptions: Counter,
    /// Bytes in those regions.
    pub wal_corrupt_bytes: Counter,
    /// Samples replay dropped at this start because their series record was damaged.
    pub wal_lost_samples: Counter,
    /// Evidence copies (`*.broken`) replay did not keep at this start (bound reached).
    pub wal_evidence_not_kept: Counter,
    /// Per kind of call (`op="read"`, `op="write"`): 1 while its circuit is closed (the
    /// store answers those calls), 0 while it counts as down. Set with
    /// [`set_store_up`](Self::set_store_up).
    pub store_up: Family<OpLabels, Gauge>,
    /// Objects uploaded to the store.
    pub store_uploads: Counter,
    /// Bytes of objects uploaded.
    pub store_upload_bytes: Counter,
    /// Uploads that failed and were retried.
    pub store_retries: Counter,
    /// Chunks uploaded to the store.
    pub flush_chunks: Counter,
    /// Time from the start of an object's upload to the store's acknowledgement, retries included.
    pub flush_duration: Histogram,
    /// Bytes of closed chunks not yet in the store (in memory or spilled).
    pub flush_backlog_bytes: Gauge,
    /// Age in seconds (wall clock minus sample time) of the oldest sample not yet in the store.
    pub flush_oldest_unflushed_seconds: Gauge,
    /// Bytes of closed chunk data held in memory (what `--limits.memory-bytes` caps).
    pub memory_chunk_bytes: Gauge,
    /// Bytes of memory by consumer, as `pressure::Memory` accounts them.
    pub memory_bytes: Family<ConsumerLabels, Gauge>,
    /// The memory limit (`--limits.memory-bytes`, or the default chosen from the cgroup).
    pub memory_limit_bytes: Gauge,
    /// Reservations refused because they would have passed the memory limit, by consumer.
    pub memory_refusals: Family<ConsumerLabels, Counter>,
    /// Bytes of live chunk data in local spill files.
    pub spill_bytes: Gauge,
    /// Bytes weft uses on local disk (WAL and spill), what `--limits.disk-bytes` caps.
    pub disk_bytes: Gauge,
    /// The disk budget, `--limits.disk-bytes` (for alerts on `disk_bytes / disk_limit_bytes`).
    pub disk_limit_bytes: Gauge,
    /// Chunks moved from memory to spill files.
    pub spilled_chunks: Counter,
    /// Flushed chunks dropped from memory.
    pub released_chunks: Counter,
    /// Query answers marked partial, by reason.
    pub query_partial: Family<ReasonLabels, Counter>,
    /// Remote reads refused for their size, by bound (`reason` = `bytes` or `series`).
    pub read_refused: Family<ReasonLabels, Counter>,
    /// Remote reads whose work stopped because the client went away.
    pub read_cancelled: Counter,
    /// Bytes in the object index and chunk cache.
    pub cache_bytes: Gauge,
    /// Cache lookups that hit, by what was looked up (`reason` = `index` or `chunk`).
    pub cache_hits: Family<ReasonLabels, Counter>,
    /// Cache lookups that missed, by what was looked up (`reason` = `index` or `chunk`).
    pub cache_misses: Family<ReasonLabels, Counter>,
    /// Objects in the catalog.
    pub catalog_objects: Gauge,
    /// Push body bytes in flight (reserved by Content-Length, in KiB steps).
    pub inflight_push_bytes: Gauge,
    /// The ring's health (ring mode only; registered always, zero without a ring).
    pub ring: RingMetrics,
    /// The `cortex.Ingester` gRPC service (`--grpc.listen`; zero without it).
    pub grpc: GrpcMetrics,
    /// Bytes of the local tier (object and index copies) on disk.
    pub local_bytes: Gauge,
    /// Objects held whole in the local tier.
    pub local_objects: Gauge,
    /// Local copies demoted to their index (retention or disk budget) or index copies removed.
    pub local_evictions: Counter,
    /// Wall clock minus the newest sample of any store-only object: queries over the last
    /// this many seconds never need the store; -1 while no object is store-only.
    pub local_horizon_seconds: Gauge,
    /// Tenants and per-tenant limits (`crate::limits`).
    pub limits: LimitsMetrics,
    /// The HTTP server's connections (`weft_http_*`).
    pub server: ServerMetrics,
    /// Retention and compaction (`crate::compact`).
    pub compactor: CompactorMetrics,
    /// The exemplar and metadata stores (`crate::exmeta`).
    pub exmeta: ExMetaMetrics,
    /// Serialises [`Metrics::observe_wal`], whose read-then-add is not atomic.
    observe_lock: parking_lot::Mutex<()>,
}

/// Labels: `method` (a `cortex.Ingester` method), `code` (the gRPC status code's name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// `Push`, `QueryStream`, `LabelNames`, `LabelValues`, `MetricsForLabelMatchers`, or
    /// `other` (a method weft does not serve).
    pub method: &'static str,
    /// `OK`, `InvalidArgument`, `ResourceExhausted`, `Unavailable`, ...
    pub code: &'static str,
}

/// The `cortex.Ingester` gRPC service's metrics (`weft_grpc_*`).
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    /// Calls answered, by method and status code.
    pub requests: Family<GrpcLabels, Counter>,
    /// Calls being served.
    pub inflight: Gauge,
    /// Connections open.
    pub connections: Gauge,
    /// Connections refused at `--grpc.max-connections`.
    pub connections_refused: Counter,
}

impl GrpcMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = GrpcMetrics {
            requests: Family::default(),
            inflight: Gauge::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
        };
        registry.register(
            "grpc_requests",
            "cortex.Ingester gRPC calls answered, by method and status code",
            m.requests.clone(),
        );
        registry.register(
            "grpc_inflight_requests",
            "cortex.Ingester gRPC calls being served",
            m.inflight.clone(),
        );
        registry.register(
            "grpc_connections",
            "Open gRPC connections",
            m.connections.clone(),
        );
        registry.register(
            "grpc_connections_refused",
            "gRPC connections closed at once because --grpc.max-connections were open",
            m.connections_refused.clone(),
        );
        m
    }
}

/// Labels: `state` (`JOINING`, `ACTIVE`, `LEAVING`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The instance state as the ring shows it.
    pub state: &'static str,
}

/// Labels: `peer` (an instance id), `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerResultLabels {
    /// The peer's instance id.
    pub peer: String,
    /// `ok`, `client_error` (4xx), `server_error` (5xx), `timeout`, `unreachable`,
    /// `rejected` (over the forwarding bounds).
    pub result: &'static str,
}

/// Labels: `peer`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's instance id.
    pub peer: String,
}

/// The ring's metrics (`weft_ring_*`): membership in etcd, forwarding to owners, read fan-out.
#[derive(Debug, Clone)]
pub struct RingMetrics {
    /// Instances in the ring this node sees, by state.
    pub members: Family<StateLabels, Gauge>,
    /// 1 while this node's last etcd call (keepalive, watch, get) succeeded.
    pub etcd_up: Gauge,
    /// Failed etcd calls, by `reason` (`connect`, `keepalive`, `watch`, `get`, `put`, `lease`).
    pub etcd_errors: Family<ReasonLabels, Counter>,
    /// Times the lease was lost (expired) and this node registered again under a new one.
    pub lease_regrants: Counter,
    /// Ring changes seen through the watch (or a fresh get after a reconnect).
    pub ring_updates: Counter,
    /// Seconds since the ring was last confirmed by etcd (a watch event or a get).
    pub ring_age_seconds: Gauge,
    /// This node's share of the token space, in parts per million.
    pub owned_token_ppm: Gauge,
    /// Forwarded pushes by peer and result.
    pub forward_requests: Family<PeerResultLabels, Counter>,
    /// Forwarded pushes in flight, by peer.
    pub forward_inflight: Family<PeerLabels, Gauge>,
    /// Body bytes of forwarded pushes in flight, by peer.
    pub forward_inflight_bytes: Family<PeerLabels, Gauge>,
    /// Duration of forwarded pushes.
    pub forward_duration: Histogram,
    /// Samples (and histograms) sent to peers.
    pub forward_samples: Counter,
    /// Pushes answered 503 because some series reached no durable quorum.
    pub quorum_failures: Counter,
    /// Reads sent to peers, by peer and result.
    pub read_fanout: Family<PeerResultLabels, Counter>,
    /// Ring reads answered partial because more replicas were down than the quorum allows.
    pub read_partial: Counter,
}

impl RingMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = RingMetrics {
            members: Family::default(),
            etcd_up: Gauge::default(),
            etcd_errors: Family::default(),
            lease_regrants: Counter::default(),
            ring_updates: Counter::default(),
            ring_age_seconds: Gauge::default(),
            owned_token_ppm: Gauge::default(),
            forward_requests: Family::default(),
            forward_inflight: Family::default(),
            forward_inflight_bytes: Family::default(),
            forward_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            forward_samples: Counter::default(),
            quorum_failures: Counter::default(),
            read_fanout: Family::default(),
            read_partial: Counter::default(),
        };
        let r = registry;
        r.register(
            "ring_members",
            "Instances in the ring as this node sees it, by state",
            m.members.clone(),
        );
        r.register(
            "ring_etcd_up",
            "1 while this node's last etcd call succeeded",
            m.etcd_up.clone(),
        );
        r.register(
            "ring_etcd_errors",
            "Failed etcd calls, by reason",
            m.etcd_errors.clone(),
        );
        r.register(
            "ring_lease_regrants",
            "Times the etcd lease was lost and this node registered again",
            m.lease_regrants.clone(),
        );
        r.register(
            "ring_updates",
            "Ring changes seen through the etcd watch",
            m.ring_updates.clone(),
        );
        r.register(
            "ring_age_seconds",
            "Seconds since etcd last confirmed the ring this node uses",
            m.ring_age_seconds.clone(),
        );
        r.register(
            "ring_owned_token_ppm",
            "This node's share of the token space, parts per million",
            m.owned_token_ppm.clone(),
        );
        r.register(
            "ring_forward_requests",
            "Pushes forwarded to owners, by peer and result",
            m.forward_requests.clone(),
        );
        r.register(
            "ring_forward_inflight",
            "Forwarded pushes in flight, by peer",
            m.forward_inflight.clone(),
        );
        r.register(
            "ring_forward_inflight_bytes",
            "Body bytes of forwarded pushes in flight, by peer",
            m.forward_inflight_bytes.clone(),
        );
        r.register(
            "ring_forward_duration_seconds",
            "Duration of forwarded pushes",
            m.forward_duration.clone(),
        );
        r.register(
            "ring_forward_samples",
            "Samples and histograms forwarded to owners",
            m.forward_samples.clone(),
        );
        r.register(
            "ring_quorum_failures",
            "Pushes answered 503 because a series reached no durable quorum",
            m.quorum_failures.clone(),
        );
        r.register(
            "ring_read_fanout",
            "Reads sent to peers, by peer and result",
            m.read_fanout.clone(),
        );
        r.register(
            "ring_read_partial",
            "Ring reads answered partial (more replicas down than the quorum allows)",
            m.read_partial.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `weft_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let samples_ingested = Family::<TenantLabels, Counter>::default();
        registry.register(
            "samples_ingested",
            "Samples appended to the head",
            samples_ingested.clone(),
        );
        let ooo_samples_appended = Family::<TenantLabels, Counter>::default();
        registry.register(
            "ooo_samples_appended",
            "Samples appended out of order, inside --ingest.out-of-order-window",
            ooo_samples_appended.clone(),
        );
        let samples_repeated = Family::<TenantLabels, Counter>::default();
        registry.register(
            "samples_repeated",
            "Samples equal to one already held (retries): no-ops counted as written",
            samples_repeated.clone(),
        );
        let histograms_ingested = Family::<TenantLabels, Counter>::default();
        registry.register(
            "histograms_ingested",
            "Native histogram samples appended to the head",
            histograms_ingested.clone(),
        );
        let samples_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "samples_rejected",
            "Samples refused, by reason",
            samples_rejected.clone(),
        );
        let requests_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "requests_rejected",
            "Requests refused as a whole, by reason",
            requests_rejected.clone(),
        );
        let head_series = Family::<TenantLabels, Gauge>::default();
        registry.register("head_series", "Series in the head", head_series.clone());
        let head_chunks = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "head_chunks",
            "Chunks in the head, open chunks included",
            head_chunks.clone(),
        );
        let head_series_removed = Counter::default();
        registry.register(
            "head_series_removed",
            "Series removed from the head after --head.series-idle-timeout with every chunk flushed",
            head_series_removed.clone(),
        );
        let head_tenants_removed = Counter::default();
        registry.register(
            "head_tenants_removed",
            "Tenants removed from the head (with their per-tenant series) once their last series left",
            head_tenants_removed.clone(),
        );
        let inflight_requests = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "inflight_requests",
            "Requests being served, by class (write, read)",
            inflight_requests.clone(),
        );
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "HTTP request durations by endpoint and status code",
            request_duration.clone(),
        );
        let wal_appends = Counter::default();
        registry.register(
            "wal_appends",
            "WAL appends (one per logged push)",
            wal_appends.clone(),
        );
        let wal_bytes = Counter::default();
        registry.register(
            "wal_bytes",
            "Bytes of records appended to the WAL",
            wal_bytes.clone(),
        );
        let wal_syncs = Counter::default();
        registry.register(
            "wal_syncs",
            "WAL sync rounds; appends / syncs is the group-commit sharing",
            wal_syncs.clone(),
        );
        let wal_segments = Counter::default();
        registry.register(
            "wal_segments_created",
            "WAL segments created",
            wal_segments.clone(),
        );
        let wal_poisoned = Gauge::default();
        registry.register(
            "wal_poisoned",
            "1 once a failed sync has poisoned the WAL; writes are refused until restart",
            wal_poisoned.clone(),
        );
        let wal_corruptions = Counter::default();
        registry.register(
            "wal_corruptions",
            "Damaged WAL regions (segment bytes, checkpoint entries) replay skipped at this start",
            wal_corruptions.clone(),
        );
        let wal_corrupt_bytes = Counter::default();
        registry.register(
            "wal_corrupt_bytes",
            "Bytes in the damaged WAL regions replay skipped at this start",
            wal_corrupt_bytes.clone(),
        );
        let wal_lost_samples = Counter::default();
        registry.register(
            "wal_lost_samples",
            "Samples WAL replay dropped at this start because their series record was damaged",
            wal_lost_samples.clone(),
        );
        let wal_evidence_not_kept = Counter::default();
        registry.register(
            "wal_evidence_not_kept",
            "Evidence copies (*.broken) WAL replay did not keep at this start: the bound was reached",
            wal_evidence_not_kept.clone(),
        );
        let store_up = Family::<OpLabels, Gauge>::default();
        // Both series exist from the start: an alert on `== 0` needs a sample to compare.
        for op in ["read", "write"] {
            store_up.get_or_create(&OpLabels { op }).set(1);
        }
        registry.register(
            "store_up",
            "Per op (read, write): 1 while the object store answers those calls, 0 while they count as down",
            store_up.clone(),
        );
        let store_uploads = Counter::default();
        registry.register(
            "store_uploads",
            "Objects uploaded to the store",
            store_uploads.clone(),
        );
        let store_upload_bytes = Counter::default();
        registry.register(
            "store_upload_bytes",
            "Bytes of objects uploaded to the store",
            store_upload_bytes.clone(),
        );
        let store_retries = Counter::default();
        registry.register(
            "store_retries",
            "Uploads that failed and were retried",
            store_retries.clone(),
        );
        let flush_chunks = Counter::default();
        registry.register(
            "flush_chunks",
            "Chunks uploaded to the store",
            flush_chunks.clone(),
        );
        let flush_duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "flush_duration_seconds",
            "Upload time of one object, retries included",
            flush_duration.clone(),
        );
        let flush_backlog_bytes = Gauge::default();
        registry.register(
            "flush_backlog_bytes",
            "Bytes of closed chunks not yet in the store",
            flush_backlog_bytes.clone(),
        );
        let flush_oldest_unflushed_seconds = Gauge::default();
        registry.register(
            "flush_oldest_unflushed_seconds",
            "Age of the oldest sample not yet in the store (0 when none)",
            flush_oldest_unflushed_seconds.clone(),
        );
        let memory_chunk_bytes = Gauge::default();
        registry.register(
            "memory_chunk_bytes",
            "Bytes of closed chunks held in memory (capped by --limits.memory-bytes)",
            memory_chunk_bytes.clone(),
        );
        let memory_bytes = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "memory_bytes",
            "Bytes of memory held, by consumer (all of them count against --limits.memory-bytes)",
            memory_bytes.clone(),
        );
        let memory_limit_bytes = Gauge::default();
        registry.register(
            "memory_limit_bytes",
            "The memory limit; the process stays within it plus a fixed overhead of 64 MiB",
            memory_limit_bytes.clone(),
        );
        let memory_refusals = Family::<ConsumerLabels, Counter>::default();
        registry.register(
            "memory_refusals",
            "Memory reservations refused at the limit, by consumer",
            memory_refusals.clone(),
        );
        let spill_bytes = Gauge::default();
        registry.register(
            "spill_bytes",
            "Bytes of live chunk data in local spill files",
            spill_bytes.clone(),
        );
        let disk_bytes = Gauge::default();
        registry.register(
            "disk_bytes",
            "Bytes on local disk: WAL and spill files (capped by --limits.disk-bytes)",
            disk_bytes.clone(),
        );
        let disk_limit_bytes = Gauge::default();
        registry.register(
            "disk_limit_bytes",
            "The local disk budget, --limits.disk-bytes (weft_disk_bytes is capped by it)",
            disk_limit_bytes.clone(),
        );
        let spilled_chunks = Counter::default();
        registry.register(
            "spilled_chunks",
            "Chunks moved from memory to local spill files",
            spilled_chunks.clone(),
        );
        let released_chunks = Counter::default();
        registry.register(
            "released_chunks",
            "Flushed chunks dropped from memory",
            released_chunks.clone(),
        );
        let query_partial = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "query_partial",
            "Query answers marked partial, by reason",
            query_partial.clone(),
        );
        let read_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "read_refused",
            "Remote reads refused for their size (--limits.max-read-bytes, --limits.max-read-series), by bound",
            read_refused.clone(),
        );
        let read_cancelled = Counter::default();
        registry.register(
            "read_cancelled",
            "Remote reads whose work stopped because the client went away",
            read_cancelled.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_bytes",
            "Bytes in the object index and chunk cache",
            cache_bytes.clone(),
        );
        let cache_hits = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "cache_hits",
            "Cache lookups that hit, by kind (index, chunk)",
            cache_hits.clone(),
        );
        let cache_misses = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "cache_misses",
            "Cache lookups that missed, by kind (index, chunk)",
            cache_misses.clone(),
        );
        let catalog_objects = Gauge::default();
        registry.register(
            "catalog_objects",
            "Objects in the store catalog",
            catalog_objects.clone(),
        );
        let inflight_push_bytes = Gauge::default();
        registry.register(
            "inflight_push_bytes",
            "Push body bytes in flight (capped by --limits.max-inflight-push-bytes)",
            inflight_push_bytes.clone(),
        );
        let ring = RingMetrics::register(&mut registry);
        let grpc = GrpcMetrics::register(&mut registry);
        let local_bytes = Gauge::default();
        registry.register(
            "local_bytes",
            "Bytes of local copies of store objects and indexes on disk",
            local_bytes.clone(),
        );
        let local_objects = Gauge::default();
        registry.register(
            "local_objects",
            "Store objects held whole on local disk (queries over them never need the store)",
            local_objects.clone(),
        );
        let local_evictions = Counter::default();
        registry.register(
            "local_evictions",
            "Local object copies demoted to their index (retention or disk budget)",
            local_evictions.clone(),
        );
        let local_horizon_seconds = Gauge::default();
        registry.register(
            "local_horizon_seconds",
            "Seconds back from now over which every known sample is local (memory, spill or \
             the local tier); -1 while nothing is store-only",
            local_horizon_seconds.clone(),
        );
        let limits = LimitsMetrics::register(&mut registry);
        let server = ServerMetrics::default();
        server.register(&mut registry);
        let compactor = CompactorMetrics::register(&mut registry);
        let exmeta = ExMetaMetrics::register(&mut registry);
        Self {
            registry,
            limits,
            server,
            compactor,
            exmeta,
            local_horizon_seconds,
            local_bytes,
            local_objects,
            local_evictions,
            samples_ingested,
            ooo_samples_appended,
            samples_repeated,
            histograms_ingested,
            samples_rejected,
            requests_rejected,
            head_series,
            head_chunks,
            head_series_removed,
            head_tenants_removed,
            inflight_requests,
            request_duration,
            wal_appends,
            wal_bytes,
            wal_syncs,
            wal_segments,
            wal_poisoned,
            wal_corruptions,
            wal_corrupt_bytes,
            wal_lost_samples,
            wal_evidence_not_kept,
            store_up,
            store_uploads,
            store_upload_bytes,
            store_retries,
            flush_chunks,
            flush_duration,
            flush_backlog_bytes,
            flush_oldest_unflushed_seconds,
            memory_chunk_bytes,
            memory_bytes,
            memory_limit_bytes,
            memory_refusals,
            spill_bytes,
            disk_bytes,
            disk_limit_bytes,
            spilled_chunks,
            released_chunks,
            query_partial,
            read_refused,
            read_cancelled,
            cache_bytes,
            cache_hits,
            cache_misses,
            catalog_objects,
            inflight_push_bytes,
            ring,
            grpc,
            observe_lock: parking_lot::Mutex::new(()),
        }
    }

    /// Brings the WAL counters up to `stats` (the WAL keeps its own atomic counters; this
    /// copies their growth since the last call).
    pub fn observe_wal(&self, stats: WalCounters) {
        let _one_at_a_time = self.observe_lock.lock();
        let bump = |c: &Counter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        bump(&self.wal_appends, stats.appends);
        bump(&self.wal_bytes, stats.appended_bytes);
        bump(&self.wal_syncs, stats.syncs);
        bump(&self.wal_segments, stats.segments_created);
        self.wal_poisoned.set(i64::from(stats.poisoned));
    }

    /// Counts what WAL replay skipped: damaged regions, their bytes, samples that could not
    /// be attributed to a series, and evidence copies not kept. Called once, after replay.
    pub fn observe_wal_replay(
        &self,
        corruptions: u64,
        corrupt_bytes: u64,
        lost_samples: u64,
        evidence_not_kept: u64,
    ) {
        self.wal_corruptions.inc_by(corruptions);
        self.wal_corrupt_bytes.inc_by(corrupt_bytes);
        self.wal_lost_samples.inc_by(lost_samples);
        self.wal_evidence_not_kept.inc_by(evidence_not_kept);
    }

    /// Brings the cache metrics up to `stats`, the catalog's object count included.
    pub fn observe_cache(&self, stats: CacheCounters) {
        let _one_at_a_time = self.observe_lock.lock();
        let bump = |c: &Counter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        let kind = |reason| ReasonLabels { reason };
        bump(
            &self.cache_hits.get_or_create(&kind("index")),
            stats.index_hits,
        );
        bump(
            &self.cache_hits.get_or_create(&kind("chunk")),
            stats.chunk_hits,
        );
        bump(
            &self.cache_misses.get_or_create(&kind("index")),
            stats.index_misses,
        );
        bump(
            &self.cache_misses.get_or_create(&kind("chunk")),
            stats.chunk_misses,
        );
        self.cache_bytes.set(stats.bytes as i64);
        self.catalog_objects.set(stats.catalog_objects as i64);
    }

    /// Sets the local tier's gauges and brings its eviction counter up to `evicted`.
    pub fn observe_local(&self, bytes: u64, whole_objects: usize, evicted: u64) {
        let _one_at_a_time = self.observe_lock.lock();
        self.local_bytes.set(bytes as i64);
        self.local_objects.set(whole_objects as i64);
        self.local_evictions
            .inc_by(evicted.saturating_sub(self.local_evictions.get()));
    }

    /// Sets `weft_store_up{op}`; `op` is `"read"` or `"write"`.
    pub fn set_store_up(&self, op: &'static str, up: bool) {
        self.store_up
            .get_or_create(&OpLabels { op })
            .set(i64::from(up));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }

    /// Removes every tenant-labelled series of `tenant` (ingested, rejected, head series and
    /// chunks), so `/metrics` only lists tenants that exist. Whoever removes a tenant from
    /// the head calls this.
    pub fn forget_tenant(&self, tenant: &str) {
        let l = TenantLabels {
            tenant: tenant.to_string(),
        };
        self.samples_ingested.remove(&l);
        self.ooo_samples_appended.remove(&l);
        self.samples_repeated.remove(&l);
        self.histograms_ingested.remove(&l);
        self.head_series.remove(&l);
        self.head_chunks.remove(&l);
        for &reason in SAMPLE_REJECT_REASONS {
            self.samples_rejected.remove(&RejectLabels {
                tenant: tenant.to_string(),
                reason,
            });
        }
    }

    /// Moves `tenant`'s sample rejections to the tenant-less series (`tenant=""`) and then
    /// forgets the tenant: for a tenant that is removed at once because its first push
    /// stored nothing, so bad pushes stay visible without a series per made-up tenant id.
    pub fn fold_tenant_rejections(&self, tenant: &str) {
        for &reason in SAMPLE_REJECT_REASONS {
            let l = RejectLabels {
                tenant: tenant.to_string(),
                reason,
            };
            let n = self.samples_rejected.get(&l).map_or(0, |c| c.get());
            if n > 0 {
                self.samples_rejected
                    .get_or_create(&RejectLabels {
                        tenant: String::new(),
                        reason,
                    })
                    .inc_by(n);
            }
        }
        self.forget_tenant(tenant);
    }
}

/// Every `reason` of `weft_samples_rejected_total`: [`Metrics::forget_tenant`] removes
/// these for a tenant (prometheus-client cannot list a family's label sets). A test in
/// `head` checks that every refusal's reason is listed.
pub const SAMPLE_REJECT_REASONS: &[&str] = &[
    "max_label_names_per_series",
    "label_name_too_long",
    "label_value_too_long",
    "invalid_labels",
    "per_tenant_series_limit",
    "out_of_order",
    "duplicate_timestamp",
    "sample_out_of_bounds",
    "too_old",
    "native_histograms",
    "too_far_in_future",
    "invalid_histogram",
];

/// Tenants and per-tenant limits.
#[derive(Debug, Default)]
pub struct LimitsMetrics {
    /// Tenants in the head.
    pub tenants: Gauge,
    /// Pushes refused because they would have created a tenant past `--limits.max-tenants`.
    pub tenants_refused: Counter,
    /// Reloads of `--limits.overrides-file` that failed (the last good overrides stay).
    pub overrides_reload_failures: Counter,
    /// When the overrides file was last read successfully (Unix seconds).
    pub overrides_last_reload_success: Gauge,
}

impl LimitsMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("tenants", "Tenants in the head", m.tenants.clone());
        registry.register(
            "tenants_refused",
            "Pushes refused because they would have created a tenant past --limits.max-tenants",
            m.tenants_refused.clone(),
        );
        registry.register(
            "overrides_reload_failures",
            "Reloads of --limits.overrides-file that failed; the last good overrides stay in force",
            m.overrides_reload_failures.clone(),
        );
        registry.register(
            "overrides_last_reload_success_timestamp_seconds",
            "When --limits.overrides-file was last read successfully, in Unix seconds",
            m.overrides_last_reload_success.clone(),
        );
        m
    }
}

/// The HTTP server's connection metrics (`weft_http_*`), kept by `api::server`.
#[derive(Debug, Clone, Default)]
pub struct ServerMetrics {
    /// Open client connections.
    pub connections: Gauge,
    /// The connection cap in force (`--server.max-connections`, lowered to fit the fd limit).
    pub connections_max: Gauge,
    /// Connections closed at once because the cap was reached and none could be evicted.
    pub connections_refused: Counter,
    /// Connections weft closed, by reason: `header_timeout`, `idle_timeout`, `evicted`,
    /// `shutdown`.
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// Requests answered 503 at once because the cap less the operators' reserve were in
    /// progress.
    pub requests_refused: Counter,
}

impl ServerMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_connections",
            "Open HTTP client connections",
            self.connections.clone(),
        );
        registry.register(
            "http_connections_max",
            "The HTTP connection cap in force (--server.max-connections, fitted to the fd limit)",
            self.connections_max.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed on accept: at the cap, with none idle to evict",
            self.connections_refused.clone(),
        );
        registry.register(
            "http_connections_closed",
            "HTTP connections weft closed, by reason (header_timeout, idle_timeout, evicted, \
             shutdown)",
            self.connections_closed.clone(),
        );
        registry.register(
            "http_requests_refused",
            "Requests answered 503 at once: --server.max-connections less the connections kept \
             for /ready and /metrics were serving requests",
            self.requests_refused.clone(),
        );
    }
}

/// The compactor's metrics (`weft_compactor_*`, `weft_retention_*`).
#[derive(Debug, Clone, Default)]
pub struct CompactorMetrics {
    /// Compaction jobs finished (sources deleted).
    pub compactions: Counter,
    /// Compaction jobs that failed (store errors, memory refused); retried next run.
    pub failures: Counter,
    /// Objects read by compaction jobs (their sources).
    pub objects_before: Counter,
    /// Objects written by compaction jobs.
    pub objects_after: Counter,
    /// Bytes of the sources compacted.
    pub bytes_before: Counter,
    /// Bytes of the objects compaction wrote.
    pub bytes_after: Counter,
    /// Chunks dropped because another source held the same chunk (an upload repeated).
    pub duplicate_chunks: Counter,
    /// Objects deleted because their newest sample is older than the retention.
    pub retention_deleted_objects: Counter,
    /// Bytes of those objects.
    pub retention_deleted_bytes: Counter,
    /// 1 while this process holds the compactor lease of the store prefix.
    pub lease_held: Gauge,
    /// Objects in the store at the end of the last compactor run.
    pub store_objects: Gauge,
    /// Bytes of those objects.
    pub store_bytes: Gauge,
    /// Approximate heap bytes of the store catalog's entries.
    pub catalog_bytes: Gauge,
}

impl CompactorMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let counters: [(&str, &str, &Counter); 9] = [
            (
                "compactor_compactions",
                "Compaction jobs finished",
                &m.compactions,
            ),
            (
                "compactor_failures",
                "Compaction jobs that failed (retried on the next run)",
                &m.failures,
            ),
            (
                "compactor_objects_before",
                "Objects read by compaction jobs",
                &m.objects_before,
            ),
            (
                "compactor_objects_after",
                "Objects written by compaction jobs",
                &m.objects_after,
            ),
            (
                "compactor_bytes_before",
                "Bytes of the objects compaction jobs read",
                &m.bytes_before,
            ),
            (
                "compactor_bytes_after",
                "Bytes of the objects compaction jobs wrote",
                &m.bytes_after,
            ),
            (
                "compactor_duplicate_chunks",
                "Chunks dropped because another source held the same chunk",
                &m.duplicate_chunks,
            ),
            (
                "retention_deleted_objects",
                "Objects deleted for --store.retention",
                &m.retention_deleted_objects,
            ),
            (
                "retention_deleted_bytes",
                "Bytes of objects deleted for --store.retention",
                &m.retention_deleted_bytes,
            ),
        ];
        for (name, help, c) in counters {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "compactor_lease_held",
            "1 while this process holds the compactor lease of the store prefix",
            m.lease_held.clone(),
        );
        registry.register(
            "compactor_store_objects",
            "Objects in the store at the end of the last compactor run",
            m.store_objects.clone(),
        );
        registry.register(
            "compactor_store_bytes",
            "Bytes of the objects in the store at the end of the last compactor run",
            m.store_bytes.clone(),
        );
        registry.register(
            "catalog_bytes",
            "Approximate heap bytes of the store catalog's entries",
            m.catalog_bytes.clone(),
        );
        m
    }
}

/// The exemplar and metadata stores' metrics (`weft_exemplars_*`, `weft_metadata_*`). No
/// tenant label: their cardinality stays fixed however many tenants push.
#[derive(Debug, Clone, Default)]
pub struct ExMetaMetrics {
    /// Exemplars held, all tenants.
    pub exemplars_stored: Gauge,
    /// Series with at least one exemplar held, all tenants.
    pub exemplar_series: Gauge,
    /// Exemplars pushes stored (duplicates of a stored one not counted).
    pub exemplars_appended: Counter,
    /// Exemplars evicted to make room (the tenant's capacity reached, or lowered).
    pub exemplars_evicted: Counter,
    /// Exemplars refused, by reason (`out_of_order`, `label_length`, ...).
    pub exemplars_rejected: Family<ReasonLabels, Counter>,
    /// Metric families with metadata held, all tenants.
    pub metadata_stored: Gauge,
    /// Metadata entries refused, by reason (`per_tenant_limit`, `invalid`, ...).
    pub metadata_rejected: Family<ReasonLabels, Counter>,
    /// Estimated bytes held by both stores (also counted in the `head_series` memory
    /// consumer).
    pub bytes: Gauge,
}

impl ExMetaMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "exemplars_stored",
            "Exemplars held in memory, all tenants",
            m.exemplars_stored.clone(),
        );
        registry.register(
            "exemplar_series",
            "Series with at least one exemplar held, all tenants",
            m.exemplar_series.clone(),
        );
        registry.register(
            "exemplars_appended",
            "Exemplars stored by pushes (repeats of a stored exemplar not counted)",
            m.exemplars_appended.clone(),
        );
        registry.register(
            "exemplars_evicted",
            "Exemplars evicted, oldest first, to stay within --limits.max-exemplars-per-tenant",
            m.exemplars_evicted.clone(),
        );
        registry.register(
            "exemplars_rejected",
            "Exemplars refused (the push itself succeeds), by reason",
            m.exemplars_rejected.clone(),
        );
        registry.register(
            "metadata_stored",
            "Metric families with metadata held, all tenants",
            m.metadata_stored.clone(),
        );
        registry.register(
            "metadata_rejected",
            "Metric metadata entries refused (the push itself succeeds), by reason",
            m.metadata_rejected.clone(),
        );
        registry.register(
            "exmeta_bytes",
            "Estimated bytes held by the exemplar and metadata stores",
            m.bytes.clone(),
        );
        m
    }
}
