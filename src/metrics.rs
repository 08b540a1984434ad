//! weft's own metrics (`weft_*`), exposed at `/metrics` in the Prometheus text format.
//!
//! One [`Metrics`] value is created at start and shared; every module that counts something
//! takes it by reference, so the set of metrics is visible in one place.

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

/// Labels: `endpoint`, `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route, e.g. `/api/v1/push`.
    pub endpoint: String,
    /// The HTTP status code.
    pub code: u16,
}

/// Every metric weft exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Samples appended to the head.
    pub samples_ingested: Family<TenantLabels, Counter>,
    /// Samples refused, by reason.
    pub samples_rejected: Family<RejectLabels, Counter>,
    /// Whole requests refused before any sample was looked at, by reason.
    pub requests_rejected: Family<ReasonLabels, Counter>,
    /// Series in the head.
    pub head_series: Family<TenantLabels, Gauge>,
    /// Chunks in the head, the open ones included.
    pub head_chunks: Family<TenantLabels, Gauge>,
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
    /// Serialises [`Metrics::observe_wal`], whose read-then-add is not atomic.
    observe_lock: parking_lot::Mutex<()>,
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
        Self {
            registry,
            samples_ingested,
            samples_rejected,
            requests_rejected,
            head_series,
            head_chunks,
            inflight_requests,
            request_duration,
            wal_appends,
            wal_bytes,
            wal_syncs,
            wal_segments,
            wal_poisoned,
            observe_lock: parking_lot::Mutex::new(()),
        }
    }

    /// Brings the WAL counters up to `stats` (the WAL keeps its own atomic counters; this
    /// copies their growth since the last call).
    pub fn observe_wal(&self, stats: &crate::wal::WalStats, poisoned: bool) {
        let _one_at_a_time = self.observe_lock.lock();
        let bump = |c: &Counter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        bump(&self.wal_appends, stats.appends);
        bump(&self.wal_bytes, stats.appended_bytes);
        bump(&self.wal_syncs, stats.syncs);
        bump(&self.wal_segments, stats.segments_created);
        self.wal_poisoned.set(i64::from(poisoned));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }
}
