//! HTTP: remote write, remote read, the Prometheus series API, readiness and metrics.
//!
//! **Invariant:** handlers never choose a status code themselves; every failure is an
//! [`ApiError`] whose class decides (see `error.rs`).

mod admin;
mod error;
mod exmeta;
pub mod grpc;
mod prom;
pub mod read;
mod ring;
pub mod server;
mod write;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use error::{ApiError, ErrorClass};

use crate::metrics::{CacheCounters, Metrics, ReasonLabels, RequestLabels, WalCounters};
use crate::model::TenantId;
use crate::node::Node;
use crate::pressure::{Consumer, Memory, Reservation};

/// Form bodies of the Prometheus API endpoints are small; anything larger is refused.
const MAX_FORM_BYTES: usize = 1 << 20;

/// Request limits of the API.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest request body accepted, compressed.
    pub max_request_bytes: usize,
    /// Largest body after snappy decompression (checked from the header, before decoding).
    pub max_decompressed_bytes: usize,
    /// Remote-write requests served at once; more get 503 + Retry-After.
    pub max_inflight_writes: usize,
    /// Remote-read and series-API requests served at once; more get 503 + Retry-After.
    pub max_concurrent_reads: usize,
    /// Bytes of push bodies in flight, counted as they arrive; more get 503 + Retry-After.
    pub max_inflight_push_bytes: u64,
    /// Time any request body may take, plus its size at `body_min_rate_bytes`: a slower body
    /// gets 408 and its connection is closed.
    pub body_read_timeout: std::time::Duration,
    /// Bytes per second a body must keep up beyond `body_read_timeout` (0: none, the timeout
    /// alone bounds the body).
    pub body_min_rate_bytes: u64,
    /// Most bytes one remote read may hold in memory: its plan (selected series, copies of
    /// open chunks, store chunks read) and, for SAMPLES, the encoded answer. Over it the read
    /// gets a 400 asking for a narrower query.
    pub max_read_bytes: u64,
    /// Most series one remote read may select, summed over its queries.
    pub max_read_series: usize,
    /// Most samples one SAMPLES remote-read response may carry.
    pub max_read_samples: usize,
    /// Most queries in one remote-read request.
    pub max_read_queries: usize,
    /// Largest stream frame of a STREAMED_XOR_CHUNKS response.
    pub max_frame_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_inflight_writes: 256,
            max_concurrent_reads: 16,
            max_inflight_push_bytes: 256 << 20,
            body_read_timeout: std::time::Duration::from_secs(30),
            body_min_rate_bytes: 256 << 10,
            max_read_bytes: 128 << 20,
            max_read_series: 1_000_000,
            max_read_samples: 50_000_000,
            max_read_queries: 64,
            max_frame_bytes: 1 << 20,
        }
    }
}

/// Decompression and decode buffers of one push, kept for the next.
#[derive(Debug, Default)]
struct DecodeBuffers {
    raw: Vec<u8>,
    batch: crate::proto::WriteBatch<'static>,
    log: crate::head::WalLog,
}

/// Pooled [`DecodeBuffers`] with the memory they hold reserved as `push_bodies` (so that
/// kept buffers count against the memory limit while idle and while in use).
#[derive(Debug, Default)]
struct PooledBuffers {
    bufs: DecodeBuffers,
    reserved: Option<Reservation>,
}

/// A bounded pool of [`DecodeBuffers`]. Buffers that grew past `MAX_KEPT_BYTES` are dropped
/// rather than kept, so one huge request does not pin its memory forever, and so are
/// buffers whose memory cannot be reserved.
#[derive(Debug, Default)]
struct BufferPool {
    free: parking_lot::Mutex<Vec<PooledBuffers>>,
}

impl BufferPool {
    const MAX_KEPT: usize = 16;
    const MAX_KEPT_BYTES: usize = 8 << 20;

    fn take(&self) -> PooledBuffers {
        self.free.lock().pop().unwrap_or_default()
    }

    fn put(&self, mut p: PooledBuffers, memory: &Arc<Memory>) {
        let b = &p.bufs;
        let bytes = b.raw.capacity()
            + b.batch.labels.capacity() * std::mem::size_of::<(&[u8], &[u8])>()
            + b.batch.samples.capacity() * 16
            + b.log.samples.capacity() * std::mem::size_of::<crate::wal::RefSample>();
        if bytes > Self::MAX_KEPT_BYTES {
            return;
        }
        let want = bytes as u64;
        let kept = match &mut p.reserved {
            Some(r) if r.bytes() >= want => {
                r.shrink_to(want);
                true
            }
            Some(r) => r.try_grow(want - r.bytes()).is_ok(),
            None => match memory.try_reserve(Consumer::PushBodies, want) {
                Ok(r) => {
                    p.reserved = Some(r);
                    true
                }
                Err(_) => false,
            },
        };
        if !kept {
            return;
        }
        let mut free = self.free.lock();
        if free.len() < Self::MAX_KEPT {
            free.push(p);
        }
    }
}

/// What an admitted push holds until it is answered: its share of the in-flight push-bytes
/// budget and its memory reservation, both grown as the body's bytes arrive (not reserved at
/// the declared length or the limit up front: a slow client would then hold budget for bytes
/// it has not sent).
#[derive(Debug)]
struct Admission {
    push: PushBytes,
    memory: Option<Reservation>,
}

/// A push's KiB permits of `--limits.max-inflight-push-bytes`.
#[derive(Debug)]
struct PushBytes {
    budget: Arc<Semaphore>,
    total_kib: u64,
    max_bytes: u64,
    held: Option<OwnedSemaphorePermit>,
}

impl PushBytes {
    /// Holds permits for `bytes` of body, or refuses with 503 + Retry-After. A body larger
    /// than the whole budget holds all of it (it goes through alone).
    fn grow_to(&mut self, bytes: u64) -> Result<(), ApiError> {
        let want = bytes.div_ceil(1024).clamp(1, self.total_kib);
        let held = self.held.as_ref().map_or(0, |p| p.num_permits() as u64);
        if want <= held {
            return Ok(());
        }
        let more = u32::try_from(want - held).unwrap_or(u32::MAX);
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| {
                ApiError::new(
                    ErrorClass::Overloaded,
                    format!(
                        "more than {} bytes of pushes in flight; retry later",
                        self.max_bytes
                    ),
                )
            })?;
        match &mut self.held {
            Some(p) => p.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }
}

/// What the bytes of a body are charged to while it is read.
trait BodyBudget: Send {
    /// The body read so far is `len` bytes, in a buffer about to grow to `capacity`.
    fn charge(&mut self, len: u64, capacity: u64) -> Result<(), ApiError>;
    /// The body will not be kept: give back what it holds.
    fn release(&mut self);
}

/// Bodies that are not pushes are small (bounded by their own limit) and charged nowhere.
impl BodyBudget for () {
    fn charge(&mut self, _len: u64, _capacity: u64) -> Result<(), ApiError> {
        Ok(())
    }

    fn release(&mut self) {}
}

impl BodyBudget for Admission {
    fn charge(&mut self, len: u64, capacity: u64) -> Result<(), ApiError> {
        self.push.grow_to(len)?;
        if let Some(m) = &mut self.memory {
            if capacity > m.bytes() {
                m.try_grow(capacity - m.bytes())?;
            }
        }
        Ok(())
    }

    fn release(&mut self) {
        self.push.held = None;
        if let Some(m) = &mut self.memory {
            m.shrink_to(0);
        }
    }
}

/// What every handler shares.
///
/// Two phases, and nothing in between: while the node boots (WAL replay), only what the
/// HTTP layer owns itself exists (metrics, limits, slots), so `/metrics` answers and
/// `/ready` and every handler that needs the node answer 503; then [`AppState::set_node`]
/// makes the whole ready [`Node`] visible at once. Handlers reach the node only through
/// [`AppState::node`].
#[derive(Debug, Clone)]
pub struct AppState {
    metrics: Arc<Metrics>,
    limits: ApiLimits,
    write_slots: Arc<Semaphore>,
    read_slots: Arc<Semaphore>,
    decode_buffers: Arc<BufferPool>,
    /// Push body bytes in flight, in KiB permits.
    push_kib: Arc<Semaphore>,
    /// What `/ingester/shutdown` sets to stop the server (graceful shutdown, then the exit
    /// checkpoint).
    stop: tokio::sync::watch::Sender<bool>,
    /// Set once, with the whole node, when it is ready.
    node: Arc<OnceLock<Arc<Node>>>,
    /// Ring mode: this node's part in the ring, set before the node.
    ring: Arc<OnceLock<Arc<crate::ring::Cluster>>>,
}

impl AppState {
    /// State of a booting node: `/ready` is false and handlers that need the node answer
    /// 503 until [`AppState::set_node`]. `stop` is set to `true` by `/ingester/shutdown`.
    pub fn new(
        metrics: Arc<Metrics>,
        limits: ApiLimits,
        stop: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        let push_kib = Arc::new(Semaphore::new(
            (limits.max_inflight_push_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS as u64)
                as usize,
        ));
        Self {
            metrics,
            write_slots: Arc::new(Semaphore::new(limits.max_inflight_writes)),
            read_slots: Arc::new(Semaphore::new(limits.max_concurrent_reads)),
            limits,
            decode_buffers: Arc::new(BufferPool::default()),
            push_kib,
            stop,
            node: Arc::new(OnceLock::new()),
            ring: Arc::new(OnceLock::new()),
        }
    }

    /// Ring mode: set once, before [`AppState::set_node`]. From then on pushes are
    /// distributed to their owners, reads fan out, `/ring` answers and `/ready` waits for
    /// the node to be ACTIVE.
    pub fn set_ring(
        &self,
        ring: Arc<crate::ring::Cluster>,
    ) -> Result<(), Arc<crate::ring::Cluster>> {
        self.ring.set(ring)
    }

    /// This node's part in the ring, in ring mode.
    fn ring(&self) -> Option<&Arc<crate::ring::Cluster>> {
        self.ring.get()
    }

    /// The ring, unless this request comes from a peer (which is applied or answered
    /// here, never distributed again).
    fn ring_for(&self, headers: &HeaderMap) -> Option<&Arc<crate::ring::Cluster>> {
        if headers.contains_key(crate::ring::PEER_HEADER) {
            None
        } else {
            self.ring()
        }
    }

    /// Ring reads: adds the instances that vanished without leaving to the peers that did
    /// not answer (`failed`), logs each, and warns in `warnings` (counting the read as
    /// partial) once more failed than `c`'s replication factor tolerates.
    fn note_failed_peers(
        &self,
        c: &crate::ring::Cluster,
        failed: &mut Vec<(String, String)>,
        warnings: &mut Vec<String>,
    ) {
        for (id, why) in failed.iter() {
            tracing::warn!(peer = %id, reason = %why, "ring read: a peer did not answer");
        }
        for id in c.lost() {
            failed.push((id, "left the ring without leaving (lease expired)".into()));
        }
        if let Some(w) = crate::ring::fanout::partial_warning(failed, c.replication_factor()) {
            self.metrics.ring.read_partial.inc();
            crate::query::add_warning(warnings, w);
        }
    }

    /// The pairs of a form body (`application/x-www-form-urlencoded`, at most
    /// [`MAX_FORM_BYTES`]); none for any other body, which is not read.
    async fn form_pairs(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Ok(Vec::new());
        }
        let body = self
            .read_body(
                headers,
                body,
                MAX_FORM_BYTES.min(self.limits.max_request_bytes),
            )
            .await?;
        Ok(form_urlencoded::parse(&body).into_owned().collect())
    }

    /// Stops serving (what `/ingester/shutdown` and, in ring mode, SIGTERM end with).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Makes the node visible to handlers: writes are taken and `/ready` answers 200 from
    /// now on. A node can be set once; a second one is handed back.
    pub fn set_node(&self, node: Arc<Node>) -> Result<(), Arc<Node>> {
        self.node.set(node)
    }

    /// The ready node, or 503 while it boots.
    fn node(&self) -> Result<&Arc<Node>, ApiError> {
        self.node.get().ok_or_else(|| {
            ApiError::new(
                ErrorClass::Unavailable,
                "not ready: replaying the WAL (or, in ring mode, joining the ring)",
            )
        })
    }

    /// The node, if it is writable: 503 while it boots and once the WAL is poisoned.
    fn writable(&self) -> Result<&Arc<Node>, ApiError> {
        let node = self.node()?;
        if node.ingester().wal().is_poisoned() {
            return Err(ApiError::new(
                ErrorClass::Unavailable,
                "the WAL failed to sync and refuses writes until weft restarts; see the log",
            ));
        }
        Ok(node)
    }

    /// Counts and logs an answer of `endpoint` made partial by `warnings`; returns the first
    /// warning, or `None` if the answer is complete.
    fn note_partial<'w>(&self, endpoint: &str, warnings: &'w [String]) -> Option<&'w String> {
        let first = warnings.first()?;
        self.metrics
            .query_partial
            .get_or_create(&ReasonLabels { reason: "store" })
            .inc();
        tracing::warn!(warnings = warnings.len(), first = %first, "{endpoint} answered partially");
        Some(first)
    }

    /// Refuses a push while a budget is exhausted (before its body is read); otherwise admits
    /// it with the first KiB of the push-bytes budget and the memory of its first read. The
    /// rest is charged as the body arrives ([`AppState::read_push_body`]) and held until the
    /// returned admission is dropped.
    fn admit_push(&self, node: &Node, headers: &HeaderMap) -> Result<Admission, ApiError> {
        node.pressure().check_push(node.head())?;
        let mut push = PushBytes {
            budget: self.push_kib.clone(),
            total_kib: (self.limits.max_inflight_push_bytes / 1024).max(1),
            max_bytes: self.limits.max_inflight_push_bytes,
            held: None,
        };
        push.grow_to(1)?;
        let first = declared_length(headers)
            .unwrap_or(FIRST_READ_BYTES)
            .min(FIRST_READ_BYTES);
        let memory = Some(node.memory().try_reserve(Consumer::PushBodies, first)?);
        Ok(Admission { push, memory })
    }

    /// Reads a body of at most `limit` bytes within the body deadlines (see [`read_body`]).
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<bytes::Bytes, ApiError> {
        read_body(&self.limits, headers, body, limit, &mut ()).await
    }

    /// Reads a push body, charging its bytes to `admission` as they arrive.
    async fn read_push_body(
        &self,
        headers: &HeaderMap,
        body: Body,
        max_request_bytes: usize,
        admission: &mut Admission,
    ) -> Result<bytes::Bytes, ApiError> {
        read_body(&self.limits, headers, body, max_request_bytes, admission).await
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Takes one slot of `class` ("write" or "read") or refuses with 503 + Retry-After.
    fn slot(&self, class: &'static str) -> Result<Slot, ApiError> {
        let sem = if class == "write" {
            &self.write_slots
        } else {
            &self.read_slots
        };
        let permit = sem.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorClass::Overloaded,
                format!("too many concurrent {class} requests; retry later"),
            )
        })?;
        let gauge = self
            .metrics
            .inflight_requests
            .get_or_create(&ReasonLabels { reason: class })
            .clone();
        gauge.inc();
        Ok(Slot {
            _permit: permit,
            gauge,
        })
    }
}

/// A held in-flight slot; releases and decrements the gauge on drop.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/push", post(write::push))
        .route("/api/v1/write", post(write::push))
        .route("/api/v1/read", post(read::read))
        .route("/api/v1/series", get(prom::series).post(prom::series))
        .route("/api/v1/labels", get(prom::labels).post(prom::labels))
        .route("/api/v1/label/{name}/values", get(prom::label_values))
        .route(
            "/api/v1/query_exemplars",
            get(exmeta::query_exemplars).post(exmeta::query_exemplars),
        )
        .route("/api/v1/metadata", get(exmeta::metadata))
        .route("/ingester/flush", post(admin::flush))
        .route("/ingester/shutdown", post(admin::shutdown))
        .route("/ready", get(ready))
        .route("/ring", get(ring::ring_page))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn ready(State(st): State<AppState>) -> Response {
    if let Err(e) = st.writable() {
        return e.into_response();
    }
    match st.ring() {
        Some(r) if r.is_leaving() => {
            ApiError::new(ErrorClass::Unavailable, "leaving the ring").into_response()
        }
        Some(r) if !r.is_active() => {
            ApiError::new(ErrorClass::Unavailable, "not ACTIVE in the ring yet").into_response()
        }
        _ => (StatusCode::OK, "ready\n").into_response(),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    // While the node boots, only what exists without it is shown.
    if let Some(node) = st.node.get() {
        let ing = node.ingester();
        let w = ing.wal().stats();
        st.metrics.observe_wal(WalCounters {
            appends: w.appends,
            appended_bytes: w.appended_bytes,
            syncs: w.syncs,
            segments_created: w.segments_created,
            poisoned: ing.wal().is_poisoned(),
        });
        let c = node.catalog();
        let cs = c.cache_stats();
        st.metrics.observe_cache(CacheCounters {
            bytes: cs.bytes,
            index_hits: cs.index_hits,
            index_misses: cs.index_misses,
            chunk_hits: cs.chunk_hits,
            chunk_misses: cs.chunk_misses,
            catalog_objects: c.object_count() as u64,
        });
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        st.metrics.local_horizon_seconds.set(
            c.store_only_until()
                .map_or(-1, |t| (now_ms.saturating_sub(t) / 1000).max(0)),
        );
        // The cache changes without telling the accounting; show its bytes as of now.
        node.memory().update_gauges();
    }
    let total_kib = (st.limits.max_inflight_push_bytes / 1024).max(1) as i64;
    st.metrics
        .inflight_push_bytes
        .set((total_kib - st.push_kib.available_permits() as i64) * 1024);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

/// Records every request's duration by route and status code.
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .request_duration
        .get_or_create(&RequestLabels {
            endpoint,
            code: resp.status().as_u16(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// The path of `/api/v1/label/<name>/values` for `name`, percent-encoded as a path segment
/// (every byte but unreserved characters), so that the router's `Path` gives `name` back.
fn label_values_path(name: &str) -> String {
    let mut out = String::from("/api/v1/label/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("/values");
    out
}

/// The tenant of a request: `X-Scope-OrgID`, or `anonymous`.
fn tenant(headers: &HeaderMap) -> Result<TenantId, ApiError> {
    match headers.get("x-scope-orgid") {
        None => Ok(TenantId::parse(TenantId::DEFAULT)?),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad_data("invalid X-Scope-OrgID: not visible ASCII"))?;
            Ok(TenantId::parse(s)?)
        }
    }
}

/// The first buffer of a body, and the memory a push reserves when admitted: a body is not
/// given room for its declared length before its bytes arrive.
const FIRST_READ_BYTES: u64 = 64 << 10;

/// How long weft keeps reading (and throwing away) the rest of an over-limit body before it
/// answers 413, in all; as nginx's `lingering_time`.
///
/// Answering while the client is still sending makes the kernel reset the connection (unread
/// bytes at close), and most HTTP clients write the whole body before they read: they would
/// see a broken pipe, not the 413. So the rest is read first, bounded by time, not bytes.
const LINGER_TOTAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest wait for the next bytes of an over-limit body's rest; as nginx's
/// `lingering_timeout`.
const LINGER_GAP: std::time::Duration = std::time::Duration::from_secs(5);

/// The Content-Length, if present and a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// How long a body of `bytes` may take to arrive: `body_read_timeout` plus `bytes` at
/// `body_min_rate_bytes` a second.
fn body_allowance(limits: &ApiLimits, bytes: u64) -> std::time::Duration {
    let at_rate = match limits.body_min_rate_bytes {
        0 => std::time::Duration::ZERO,
        rate => std::time::Duration::try_from_secs_f64(bytes as f64 / rate as f64)
            .unwrap_or(std::time::Duration::MAX),
    };
    limits.body_read_timeout.saturating_add(at_rate)
}

/// Reads a body of at most `limit` bytes, charging it to `budget` as it arrives.
///
/// - The body must arrive within [`body_allowance`] of its size (the declared length, or what
///   has arrived when there is none): a slower one is a 408, and its connection is closed.
/// - A larger one is a 413, answered after the rest is read and thrown away for at most
///   [`LINGER_TOTAL`] (see there), its budget given back first. A client that sent
///   `Expect: 100-continue` with a Content-Length over the limit gets the 413 at once and
///   never sends the body.
async fn read_body(
    limits: &ApiLimits,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &mut dyn BodyBudget,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = |n: Option<u64>| {
        ApiError::new(
            ErrorClass::TooLarge,
            match n {
                Some(n) => format!("request body is {n} bytes, more than the limit of {limit}"),
                None => format!("request body is more than the limit of {limit} bytes"),
            },
        )
    };
    let declared = declared_length(headers);
    let started = tokio::time::Instant::now();
    let mut body = body;
    if declared.is_none_or(|n| n <= limit as u64) {
        let expected = declared.unwrap_or(0);
        // A Vec, for `reserve_exact`: the memory charged is the memory allocated.
        let mut buf: Vec<u8> = Vec::new();
        // No more room than the declared length (or the limit) is ever made.
        let ceiling = declared.map_or(limit, |n| n as usize);
        loop {
            let allowance = body_allowance(limits, expected.max(buf.len() as u64));
            // A timeout too long to represent is no timeout (a year is as good).
            let deadline = started
                .checked_add(allowance)
                .unwrap_or_else(|| started + std::time::Duration::from_secs(365 * 86_400));
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorClass::Timeout,
                        format!(
                            "request body too slow: {} of {} bytes in {:.1}s; a body must arrive \
                             within {:?} (--server.http-body-read-timeout) plus its size at {} \
                             bytes/s (--server.http-body-min-rate)",
                            buf.len(),
                            declared.map_or("?".to_owned(), |n| n.to_string()),
                            started.elapsed().as_secs_f64(),
                            limits.body_read_timeout,
                            limits.body_min_rate_bytes,
                        ),
                    ))
                }
                Ok(None) => return Ok(bytes::Bytes::from(buf)),
                Ok(Some(Err(e))) => {
                    return Err(ApiError::bad_data(format!("reading request body: {e}")))
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = buf.len() + data.len();
            if len > limit {
                break;
            }
            if len > buf.capacity() {
                // Grow by doubling (within the limit), charged before it is allocated.
                let first = (expected.min(FIRST_READ_BYTES) as usize).max(len);
                let capacity = (buf.capacity() * 2).max(first).clamp(len, ceiling.max(len));
                budget.charge(len as u64, capacity as u64)?;
                buf.reserve_exact(capacity - buf.len());
            } else {
                budget.charge(len as u64, buf.capacity() as u64)?;
            }
            buf.extend_from_slice(&data);
        }
    }
    budget.release();
    let continue_expected = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    // hyper sends "100 Continue" only when the body is first read: not reading it at all
    // tells such a client not to send it.
    if !(continue_expected && declared.is_some_and(|n| n > limit as u64)) {
        let until = tokio::time::Instant::now() + LINGER_TOTAL;
        loop {
            let next = (tokio::time::Instant::now() + LINGER_GAP).min(until);
            match tokio::time::timeout_at(next, body.frame()).await {
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
    }
    Err(too_large(declared))
}

/// Checks `Content-Type` (must be `want`, parameters allowed; absent is accepted, as
/// Mimir does) and `Content-Encoding` (absent or snappy).
fn check_media(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case(want) {
            return Err(ApiError::new(
                ErrorClass::UnsupportedMedia,
                format!("unsupported Content-Type {ct:?}: want {want}"),
            ));
        }
    }
    if let Some(ce) = headers.get(header::CONTENT_ENCODING) {
        let ce = ce.to_str().unwrap_or("");
        if !ce.trim().eq_ignore_ascii_case("snappy") {
            return Err(ApiError::new(
                ErrorClass::UnsupportedMedia,
                format!("unsupported Content-Encoding {ce:?}: want snappy"),
            ));
        }
    }
    Ok(())
}

/// Counts a request refused as a whole and passes the error on.
fn rejected(st: &AppState, e: ApiError) -> ApiError {
    st.metrics
        .requests_rejected
        .get_or_create(&ReasonLabels {
            reason: e.class.reason(),
        })
        .inc();
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeConfig;
    use std::time::Duration;

    async fn status(r: Response) -> (u16, String) {
        use http_body_util::BodyExt;
        let code = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// A body of `chunks` pieces of `size` bytes, one every `every`, then the end (or never
    /// an end, if `endless`).
    fn paced_body(chunks: usize, size: usize, every: Duration, endless: bool) -> Body {
        let stream = futures::stream::unfold(0usize, move |i| async move {
            if i == chunks {
                if !endless {
                    return None;
                }
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(every).await;
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; size])),
                i + 1,
            ))
        });
        Body::from_stream(stream)
    }

    fn with_length(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.into());
        h
    }

    fn paced_limits() -> ApiLimits {
        ApiLimits {
            body_read_timeout: Duration::from_secs(2),
            body_min_rate_bytes: 1000,
            ..ApiLimits::default()
        }
    }

    /// Records what a body was charged, and refuses past `refuse_over` bytes.
    #[derive(Default)]
    struct Charges {
        lens: Vec<u64>,
        refuse_over: Option<u64>,
        released: bool,
    }

    impl BodyBudget for Charges {
        fn charge(&mut self, len: u64, capacity: u64) -> Result<(), ApiError> {
            assert!(
                capacity >= len,
                "charged {capacity} of capacity for {len} bytes"
            );
            if self.refuse_over.is_some_and(|max| len > max) {
                return Err(ApiError::new(ErrorClass::Overloaded, "budget"));
            }
            self.lens.push(len);
            Ok(())
        }

        fn release(&mut self) {
            self.released = true;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_its_allowance_is_a_408_at_its_deadline() {
        // 500 bytes declared: 2 s plus 500 bytes at 1000 B/s = 2.5 s; it needs 10 s.
        let started = tokio::time::Instant::now();
        let body = paced_body(10, 100, Duration::from_secs(1), false);
        let mut charges = Charges::default();
        let err = read_body(
            &paced_limits(),
            &with_length(500),
            body,
            1 << 20,
            &mut charges,
        )
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::Timeout, "{}", err.message);
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
        // Only the bytes that arrived were charged, as they arrived.
        assert_eq!(charges.lens, vec![100, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_minimum_rate_is_read_whole_and_charged_as_it_arrives() {
        // 10 x 1000 bytes, one a second: 10 s, within 2 s + 10000 B at 1000 B/s = 12 s.
        let body = paced_body(10, 1000, Duration::from_secs(1), false);
        let mut charges = Charges::default();
        let got = read_body(
            &paced_limits(),
            &with_length(10_000),
            body,
            1 << 20,
            &mut charges,
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 10_000);
        assert_eq!(
            charges.lens,
            (1..=10).map(|i| i * 1000).collect::<Vec<u64>>()
        );
        assert!(!charges.released);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_the_budget_cannot_take_is_refused_when_its_bytes_arrive() {
        let body = paced_body(10, 1000, Duration::from_millis(10), false);
        let mut charges = Charges {
            refuse_over: Some(3500),
            ..Charges::default()
        };
        let err = read_body(
            &paced_limits(),
            &HeaderMap::new(),
            body,
            1 << 20,
            &mut charges,
        )
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::Overloaded);
        assert_eq!(charges.lens, vec![1000, 2000, 3000]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_over_limit_body_is_read_to_its_end_before_the_413_but_only_for_so_long() {
        // 200 x 1000 bytes against a 10 kB limit: the rest is read (1 s), then 413.
        let started = tokio::time::Instant::now();
        let body = paced_body(200, 1000, Duration::from_millis(5), false);
        let mut charges = Charges::default();
        let err = read_body(
            &ApiLimits::default(),
            &HeaderMap::new(),
            body,
            10_000,
            &mut charges,
        )
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::TooLarge);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            charges.released,
            "the budget was kept while the rest was thrown away"
        );

        // A rest that never ends is read for LINGER_TOTAL from the chunk that crossed the
        // limit (the 11th, at 1.1 s), then answered.
        let started = tokio::time::Instant::now();
        let body = paced_body(usize::MAX, 1000, Duration::from_millis(100), false);
        let err = read_body(
            &ApiLimits::default(),
            &HeaderMap::new(),
            body,
            10_000,
            &mut (),
        )
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::TooLarge);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(1100) + LINGER_TOTAL
        );

        // A rest that stops coming is waited for LINGER_GAP.
        let started = tokio::time::Instant::now();
        let body = paced_body(20, 1000, Duration::from_millis(1), true);
        let err = read_body(
            &ApiLimits::default(),
            &HeaderMap::new(),
            body,
            10_000,
            &mut (),
        )
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::TooLarge);
        assert_eq!(started.elapsed(), Duration::from_millis(20) + LINGER_GAP);
    }

    #[tokio::test]
    async fn a_push_finding_every_write_slot_taken_gets_503_with_retry_after() {
        let metrics = Arc::new(Metrics::new());
        let (stop, _stop_rx) = tokio::sync::watch::channel(false);
        let limits = ApiLimits {
            max_inflight_writes: 1,
            ..ApiLimits::default()
        };
        let st = AppState::new(metrics.clone(), limits, stop);
        let dir = tempfile::tempdir().unwrap();
        let node = Node::boot(NodeConfig::for_test(dir.path()), metrics)
            .await
            .unwrap();
        st.set_node(Arc::new(node)).unwrap();
        let empty = crate::proto::compress(&[]);

        let held = st.slot("write").unwrap();
        let r = write::push(
            State(st.clone()),
            None,
            HeaderMap::new(),
            Body::from(empty.clone()),
        )
        .await;
        let retry_after = r.headers().get(header::RETRY_AFTER).cloned();
        let (code, body) = status(r).await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("too many concurrent write requests"),
            "{body}"
        );
        assert!(retry_after.is_some(), "503 without Retry-After");

        drop(held);
        let (code, body) =
            status(write::push(State(st.clone()), None, HeaderMap::new(), Body::from(empty)).await)
                .await;
        assert_eq!(code, 204, "{body}");
    }

    #[tokio::test]
    async fn a_booting_state_answers_metrics_but_is_not_ready_until_the_whole_node_is_set() {
        let metrics = Arc::new(Metrics::new());
        let (stop, _stop_rx) = tokio::sync::watch::channel(false);
        let st = AppState::new(metrics.clone(), ApiLimits::default(), stop);

        let (code, body) = status(ready(State(st.clone())).await).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("not ready"), "{body}");
        let (code, body) = status(self::metrics(State(st.clone())).await).await;
        assert_eq!(code, 200);
        assert!(body.contains("weft_"), "{body}");
        let (code, _) = status(
            write::push(
                State(st.clone()),
                None,
                HeaderMap::new(),
                Body::from(vec![]),
            )
            .await,
        )
        .await;
        assert_eq!(code, 503);

        let dir = tempfile::tempdir().unwrap();
        let node = Arc::new(
            Node::boot(NodeConfig::for_test(dir.path()), metrics.clone())
                .await
                .unwrap(),
        );
        st.set_node(node.clone()).unwrap();
        let (code, body) = status(ready(State(st.clone())).await).await;
        assert_eq!(code, 200, "{body}");
        // An empty request (snappy of no bytes) is a metadata-only push: taken once the node
        // is there.
        let empty = crate::proto::compress(&[]);
        let (code, body) =
            status(write::push(State(st.clone()), None, HeaderMap::new(), Body::from(empty)).await)
                .await;
        assert_eq!(code, 204, "{body}");
        assert!(st.set_node(node).is_err(), "a node was set twice");
    }
}
