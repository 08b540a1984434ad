//! HTTP: remote write, remote read, the Prometheus series API, readiness and metrics.
//!
//! **Invariant:** handlers never choose a status code themselves; every failure is an
//! [`ApiError`] whose class decides (see `error.rs`).

mod admin;
mod error;
mod prom;
pub mod read;
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
    /// Bytes of push bodies in flight (by Content-Length); more get 503 + Retry-After.
    pub max_inflight_push_bytes: u64,
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

/// What an admitted push holds until it is answered: its in-flight slot of body bytes and
/// its memory reservation.
#[derive(Debug)]
struct Admission {
    _permit: OwnedSemaphorePermit,
    memory: Option<Reservation>,
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
        }
    }

    /// Makes the node visible to handlers: writes are taken and `/ready` answers 200 from
    /// now on. A node can be set once; a second one is handed back.
    pub fn set_node(&self, node: Arc<Node>) -> Result<(), Arc<Node>> {
        self.node.set(node)
    }

    /// The ready node, or 503 while it boots.
    fn node(&self) -> Result<&Arc<Node>, ApiError> {
        self.node
            .get()
            .ok_or_else(|| ApiError::new(ErrorClass::Unavailable, "not ready: replaying the WAL"))
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

    /// Refuses a push while a budget is exhausted; otherwise reserves the push's body bytes
    /// (its Content-Length, or the largest body allowed) against
    /// `--limits.max-inflight-push-bytes` and the memory limit until the returned admission
    /// is dropped. Runs before the body is read.
    fn admit_push(&self, node: &Node, headers: &HeaderMap) -> Result<Admission, ApiError> {
        node.pressure().check_push(node.head())?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let len = declared
            .unwrap_or(self.limits.max_request_bytes as u64)
            .min(self.limits.max_request_bytes as u64);
        // A body larger than the whole bound still goes through, alone.
        let total = (self.limits.max_inflight_push_bytes / 1024).max(1);
        let kib = len.div_ceil(1024).clamp(1, total).min(u32::MAX as u64) as u32;
        let permit = self
            .push_kib
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                ApiError::new(
                    ErrorClass::Overloaded,
                    format!(
                        "more than {} bytes of pushes in flight; retry later",
                        self.limits.max_inflight_push_bytes
                    ),
                )
            })?;
        let m = node.memory();
        // A body of unknown length (no Content-Length; Prometheus always sends one) is
        // reserved at a quarter of the limit at most, so that it is not refused for ever
        // under a small limit; the write path grows the reservation to the body it read.
        let bytes = match declared {
            Some(_) => len,
            None => len.min(m.limit_bytes() / 4),
        };
        let memory = Some(m.try_reserve(Consumer::PushBodies, bytes)?);
        Ok(Admission {
            _permit: permit,
            memory,
        })
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
        .route("/ingester/flush", post(admin::flush))
        .route("/ingester/shutdown", post(admin::shutdown))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn ready(State(st): State<AppState>) -> Response {
    match st.writable() {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => e.into_response(),
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

/// Most bytes of an over-limit body weft reads and throws away before answering 413.
///
/// Answering before the body is read makes the kernel reset the connection while the client
/// is still sending, and the client then sees a send error instead of the 413. Draining a
/// bounded amount, within [`DRAIN_DEADLINE`], lets ordinary oversized requests get their
/// answer; anything larger is cut off.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// How long draining an over-limit body may take.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a body of at most `limit` bytes; a larger one is a 413 (after a bounded drain).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
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
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    if declared.is_none_or(|n| n <= limit as u64) {
        buf.reserve(declared.unwrap_or(0) as usize);
        loop {
            match body.frame().await {
                None => return Ok(buf.freeze()),
                Some(Err(e)) => {
                    return Err(ApiError::bad_data(format!("reading request body: {e}")))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if buf.len() + data.len() > limit {
                            break;
                        }
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
    // Over the limit: drain a bounded amount so the client can read the answer.
    drop(buf);
    if declared.is_none_or(|n| n <= DRAIN_MAX_BYTES) {
        let drain = async {
            let mut seen = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_DEADLINE, drain).await;
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

/// The `proto` parameter of a remote-write 1.0 `Content-Type`.
const WRITE_V1_PROTO: &str = "prometheus.WriteRequest";

/// Refuses a push whose `Content-Type` names a message other than remote write 1.0's.
///
/// Why: the 1.0 decoder skips unknown fields, so a 2.0 body (`proto=io.prometheus.write.v2.Request`)
/// decodes as an empty request and would be answered 204 and lost. The remote-write 2.0
/// spec asks a receiver to answer 415 to a `proto` it does not support, so the sender can
/// fall back to 1.0. No `proto` at all means 1.0. The parameter name is matched without
/// regard to case, and spaces and quotes around the value are tolerated (RFC 9110 §8.3.1).
fn check_write_proto(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("");
    for param in ct.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("proto") {
            continue;
        }
        let value = value.trim().trim_matches('"').trim();
        if !value.eq_ignore_ascii_case(WRITE_V1_PROTO) {
            return Err(ApiError::new(
                ErrorClass::UnsupportedMedia,
                format!(
                    "unsupported remote-write message proto={value:?}: weft takes remote write \
                     1.0 only (Content-Type: application/x-protobuf;proto={WRITE_V1_PROTO}); \
                     remote write 2.0 is not supported yet, send 1.0"
                ),
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

    async fn status(r: Response) -> (u16, String) {
        use http_body_util::BodyExt;
        let code = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
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
        let (code, _) =
            status(write::push(State(st.clone()), HeaderMap::new(), Body::from(vec![])).await)
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
            status(write::push(State(st.clone()), HeaderMap::new(), Body::from(empty)).await).await;
        assert_eq!(code, 204, "{body}");
        assert!(st.set_node(node).is_err(), "a node was set twice");
    }
}
