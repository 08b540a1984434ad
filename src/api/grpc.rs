//! The Cortex ingester gRPC service, `cortex.Ingester` (`--grpc.listen`), so that tools of
//! the Cortex and Mimir ecosystem can talk to a weft node: `Push`, `QueryStream`,
//! `LabelNames`, `LabelValues` and `MetricsForLabelMatchers`. Other methods answer
//! `UNIMPLEMENTED`.
//!
//! Each call is answered by the HTTP API's own handler, called in-process through the same
//! router: a `Push` is the remote-write 1.0 push it is on the wire (Cortex's `WriteRequest`
//! keeps 1.0's field numbers; handed over uncompressed, marked by a request extension), a `QueryStream` a remote read in STREAMED_XOR_CHUNKS mode,
//! the label calls `/api/v1/labels`, `/api/v1/label/<name>/values` and `/api/v1/series`. So
//! every limit, the memory budget, the tenant's overrides, the WAL's durable acknowledgement
//! and, in ring mode, the distribution to the series' owners and the read fan-out apply to a
//! gRPC call exactly as to its HTTP twin.
//!
//! The tenant is the `x-scope-orgid` metadata, as Cortex's gRPC middleware sends it. A
//! refusal is a gRPC status mapped from the HTTP one (400 `INVALID_ARGUMENT`, 429 and 413
//! `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, ...) with the HTTP message, and the metadata
//! `x-http-status` (and `retry-after` where the HTTP answer had one). An answer that may miss
//! data carries the metadata `x-weft-partial`, as the HTTP answers carry the header.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::http::{self, header, HeaderValue, Method, StatusCode};
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tower_service::Service;

use super::read::PARTIAL_HEADER;
use crate::metrics::{GrpcLabels, Metrics};
use crate::proto::cortex::{
    encoding_from_remote_read, Chunk, LabelMatchers, LabelNamesRequest, LabelNamesResponse,
    LabelPair, LabelValuesRequest, LabelValuesResponse, Metric, MetricsForLabelMatchersRequest,
    MetricsForLabelMatchersResponse, QueryRequest, QueryStreamResponse, TimeSeriesChunk,
    WriteResponse,
};
use crate::proto::prompb::{ChunkedReadResponse, MatcherType, Query, ReadRequest, ResponseType};
use crate::proto::{compress, read_chunked_frame};

/// The service's name in gRPC paths (`/cortex.Ingester/Push`).
pub const SERVICE: &str = "cortex.Ingester";

/// Most series batches of a `QueryStream` queued for the client: bounds a stream's memory.
const STREAM_QUEUE: usize = 4;

/// The gRPC listener's bounds.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Largest request message (a `Push`'s uncompressed `WriteRequest`), in bytes.
    pub max_recv_message_bytes: usize,
    /// Largest response message (one `QueryStreamResponse` batch, a label list), in bytes.
    pub max_send_message_bytes: usize,
    /// Calls served at once on one connection (HTTP/2 streams).
    pub max_concurrent_streams: u32,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Longest a call may take, unless the client's `grpc-timeout` is shorter.
    pub timeout: Duration,
    /// This node's id, for `TimeSeriesChunk.from_ingester_id`.
    pub ingester_id: String,
}

/// `cortex.Ingester`, answered through the HTTP router.
#[derive(Clone)]
pub struct IngesterService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IngesterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngesterService")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

struct Inner {
    router: Router,
    metrics: Arc<Metrics>,
    cfg: GrpcConfig,
}

impl IngesterService {
    /// A service answering through `router` (the one [`super::router`] built).
    pub fn new(router: Router, metrics: Arc<Metrics>, cfg: GrpcConfig) -> Self {
        IngesterService {
            inner: Arc::new(Inner {
                router,
                metrics,
                cfg,
            }),
        }
    }
}

impl NamedService for IngesterService {
    const NAME: &'static str = SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl Service<http::Request<tonic::body::Body>> for IngesterService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let inner = self.inner.clone();
        let counter = inner.clone();
        Box::pin(async move {
            let method = req
                .uri()
                .path()
                .strip_prefix("/cortex.Ingester/")
                .unwrap_or("")
                .to_owned();
            let (recv, send) = (
                inner.cfg.max_recv_message_bytes,
                inner.cfg.max_send_message_bytes,
            );
            inner.metrics.grpc.inflight.inc();
            let resp =
                match method.as_str() {
                    "Push" => bounded(RawCodec, recv, send).unary(Call(inner), req).await,
                    "QueryStream" => {
                        bounded(
                            ProstCodec::<QueryStreamResponse, QueryRequest>::default(),
                            recv,
                            send,
                        )
                        .server_streaming(Call(inner), req)
                        .await
                    }
                    "LabelNames" => {
                        bounded(
                            ProstCodec::<LabelNamesResponse, LabelNamesRequest>::default(),
                            recv,
                            send,
                        )
                        .unary(Call(inner), req)
                        .await
                    }
                    "LabelValues" => {
                        bounded(
                            ProstCodec::<LabelValuesResponse, LabelValuesRequest>::default(),
                            recv,
                            send,
                        )
                        .unary(Call(inner), req)
                        .await
                    }
                    "MetricsForLabelMatchers" => {
                        bounded(
                            ProstCodec::<
                                MetricsForLabelMatchersResponse,
                                MetricsForLabelMatchersRequest,
                            >::default(),
                            recv,
                            send,
                        )
                        .unary(Call(inner), req)
                        .await
                    }
                    _ => Status::unimplemented(format!(
                        "weft serves Push, QueryStream, LabelNames, LabelValues and \
                         MetricsForLabelMatchers of {SERVICE}, not {:?}",
                        req.uri().path()
                    ))
                    .into_http(),
                };
            counter.metrics.grpc.inflight.dec();
            counter.count(&method, &resp);
            Ok(resp)
        })
    }
}

/// A gRPC handler for `codec` with the message size bounds.
fn bounded<C: Codec>(codec: C, recv: usize, send: usize) -> Grpc<C> {
    Grpc::new(codec)
        .max_decoding_message_size(recv)
        .max_encoding_message_size(send)
}

/// One call: the service's state, as the [`UnaryService`] or [`ServerStreamingService`]
/// of each method (picked by the request type).
struct Call(Arc<Inner>);

impl Inner {
    /// Counts an answered call by its status: an error (from weft, or from tonic before
    /// weft saw the message, such as one over the size limit) is answered "trailers-only",
    /// with `grpc-status` among the headers; a success has its status in the trailers. A
    /// stream that fails after its first message counts as OK.
    fn count<B>(&self, method: &str, resp: &http::Response<B>) {
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(Code::Ok, Code::from_i32);
        let method = match method {
            "Push" => "Push",
            "QueryStream" => "QueryStream",
            "LabelNames" => "LabelNames",
            "LabelValues" => "LabelValues",
            "MetricsForLabelMatchers" => "MetricsForLabelMatchers",
            _ => "other",
        };
        self.metrics
            .grpc
            .requests
            .get_or_create(&GrpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// Sends one request through the HTTP router.
    async fn http(&self, req: http::Request<AxumBody>) -> http::Response<AxumBody> {
        let mut router = self.router.clone();
        match router.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// A GET of the Prometheus API: `data` of the JSON answer, and its partial marker.
    async fn api_get(
        &self,
        tenant: Option<&str>,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<(serde_json::Value, Option<String>), Status> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let uri = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let req = request(Method::GET, &uri, tenant, &[], AxumBody::empty())?;
        let resp = self.http(req).await;
        let (parts, body) = resp.into_parts();
        let bytes = collect(body, self.cfg.max_send_message_bytes).await?;
        if !parts.status.is_success() {
            return Err(refusal(&parts, &bytes));
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("weft answered unreadable JSON: {e}")))?;
        let partial = partial_of(&parts.headers).or_else(|| {
            v.get("warnings")
                .and_then(|w| w.as_array())
                .and_then(|w| w.first())
                .and_then(|w| w.as_str())
                .map(str::to_owned)
        });
        Ok((v["data"].take(), partial))
    }
}

impl UnaryService<Bytes> for Call {
    type Response = WriteResponse;
    type Future = BoxFuture<Result<Response<WriteResponse>, Status>>;

    /// `Push`: the `WriteRequest` bytes are a remote-write 1.0 push (handed over uncompressed).
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let tenant = tenant_of(req.metadata())?;
            // The WriteRequest as it came, marked uncompressed: no snappy round trip.
            let body = req.into_inner();
            let headers = [(
                header::CONTENT_TYPE,
                "application/x-protobuf;proto=prometheus.WriteRequest",
            )];
            let len = body.len();
            let mut http_req = request(
                Method::POST,
                "/api/v1/push",
                tenant.as_deref(),
                &headers,
                AxumBody::from(body),
            )?;
            http_req
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            http_req.extensions_mut().insert(super::write::Uncompressed);
            let resp = inner.http(http_req).await;
            let (parts, body) = resp.into_parts();
            if parts.status.is_success() {
                return Ok(Response::new(WriteResponse {}));
            }
            let bytes = collect(body, 64 << 10).await.unwrap_or_default();
            Err(refusal(&parts, &bytes))
        })
    }
}

impl ServerStreamingService<QueryRequest> for Call {
    type Response = QueryStreamResponse;
    type ResponseStream =
        tokio_stream::wrappers::ReceiverStream<Result<QueryStreamResponse, Status>>;
    type Future = BoxFuture<Result<Response<Self::ResponseStream>, Status>>;

    /// `QueryStream`: a remote read in STREAMED_XOR_CHUNKS mode; each frame of its answer is
    /// one `QueryStreamResponse`, its chunks as they were (Cortex's encoding numbers).
    fn call(&mut self, req: Request<QueryRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let tenant = tenant_of(req.metadata())?;
            let q = req.into_inner();
            let read = ReadRequest {
                queries: vec![Query {
                    start_timestamp_ms: q.start_timestamp_ms,
                    end_timestamp_ms: q.end_timestamp_ms,
                    matchers: q.matchers,
                    hints: None,
                }],
                accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
            };
            let body = compress(&read.encode_to_vec());
            let headers = [
                (header::CONTENT_TYPE, "application/x-protobuf"),
                (header::CONTENT_ENCODING, "snappy"),
            ];
            let http_req = request(
                Method::POST,
                "/api/v1/read",
                tenant.as_deref(),
                &headers,
                AxumBody::from(body),
            )?;
            let resp = inner.http(http_req).await;
            let (parts, body) = resp.into_parts();
            if !parts.status.is_success() {
                let bytes = collect(body, 64 << 10).await.unwrap_or_default();
                return Err(refusal(&parts, &bytes));
            }
            let partial = partial_of(&parts.headers);
            let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
            let from = inner.cfg.ingester_id.clone();
            let user = tenant.unwrap_or_else(|| crate::model::TenantId::DEFAULT.to_owned());
            let max_frame = inner.cfg.max_send_message_bytes;
            tokio::spawn(relay_frames(body, tx, from, user, max_frame));
            let mut resp = Response::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            mark_partial(resp.metadata_mut(), partial);
            Ok(resp)
        })
    }
}

/// Turns the remote-read answer's frames into `QueryStreamResponse`s as they arrive; the
/// queue's bound holds the reader back while the client is slow.
async fn relay_frames(
    mut body: AxumBody,
    tx: tokio::sync::mpsc::Sender<Result<QueryStreamResponse, Status>>,
    from: String,
    user: String,
    max_frame: usize,
) {
    let mut buf = BytesMut::new();
    loop {
        // Send every whole frame in the buffer.
        while let Some(n) = whole_frame_len(&buf) {
            let frame = buf.split_to(n);
            let out = read_chunked_frame(&frame, max_frame)
                .map_err(|e| Status::internal(format!("weft's own read answer: {e}")))
                .and_then(|(msg, _)| {
                    ChunkedReadResponse::decode(msg)
                        .map_err(|e| Status::internal(format!("weft's own read answer: {e}")))
                })
                .map(|r| to_query_stream(r, &from, &user));
            let failed = out.is_err();
            if tx.send(out).await.is_err() || failed {
                return;
            }
        }
        if buf.len() > max_frame.saturating_add(16) {
            let _ = tx
                .send(Err(Status::resource_exhausted(format!(
                    "a series batch of the answer is larger than {max_frame} bytes"
                ))))
                .await;
            return;
        }
        match body.frame().await {
            None if buf.is_empty() => return,
            None => {
                let _ = tx
                    .send(Err(Status::internal(
                        "weft's read answer ended inside a frame",
                    )))
                    .await;
                return;
            }
            Some(Err(e)) => {
                let _ = tx
                    .send(Err(Status::internal(format!("reading weft's answer: {e}"))))
                    .await;
                return;
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The length of the stream frame at the front of `buf` (uvarint length, 4-byte CRC, the
/// message), if all of it is there.
fn whole_frame_len(buf: &[u8]) -> Option<usize> {
    let mut len: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = (i as u64 + 1).checked_add(4)?.checked_add(len)?;
            return (total <= buf.len() as u64).then_some(total as usize);
        }
    }
    None
}

/// One remote-read frame as a `QueryStreamResponse`.
fn to_query_stream(r: ChunkedReadResponse, from: &str, user: &str) -> QueryStreamResponse {
    QueryStreamResponse {
        chunkseries: r
            .chunked_series
            .into_iter()
            .map(|s| TimeSeriesChunk {
                from_ingester_id: from.to_owned(),
                user_id: user.to_owned(),
                labels: s
                    .labels
                    .into_iter()
                    .map(|l| LabelPair {
                        name: l.name.into_bytes(),
                        value: l.value.into_bytes(),
                    })
                    .collect(),
                chunks: s
                    .chunks
                    .into_iter()
                    .filter_map(|c| {
                        Some(Chunk {
                            start_timestamp_ms: c.min_time_ms,
                            end_timestamp_ms: c.max_time_ms,
                            encoding: encoding_from_remote_read(c.r#type)?,
                            data: c.data,
                        })
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl UnaryService<LabelNamesRequest> for Call {
    type Response = LabelNamesResponse;
    type Future = BoxFuture<Result<Response<LabelNamesResponse>, Status>>;

    fn call(&mut self, req: Request<LabelNamesRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let tenant = tenant_of(req.metadata())?;
            let r = req.into_inner();
            let mut params = time_params(r.start_timestamp_ms, r.end_timestamp_ms);
            if let Some(m) = r.matchers.filter(|m| !m.matchers.is_empty()) {
                params.push(("match[]", selector(&m)?));
            }
            let (data, partial) = inner
                .api_get(tenant.as_deref(), "/api/v1/labels", &params)
                .await?;
            let mut resp = Response::new(LabelNamesResponse {
                label_names: strings(data)?,
            });
            mark_partial(resp.metadata_mut(), partial);
            Ok(resp)
        })
    }
}

impl UnaryService<LabelValuesRequest> for Call {
    type Response = LabelValuesResponse;
    type Future = BoxFuture<Result<Response<LabelValuesResponse>, Status>>;

    fn call(&mut self, req: Request<LabelValuesRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let tenant = tenant_of(req.metadata())?;
            let r = req.into_inner();
            if r.label_name.is_empty() {
                return Err(Status::invalid_argument("label_name is empty"));
            }
            let mut params = time_params(r.start_timestamp_ms, r.end_timestamp_ms);
            if let Some(m) = r.matchers.filter(|m| !m.matchers.is_empty()) {
                params.push(("match[]", selector(&m)?));
            }
            let path = super::label_values_path(&r.label_name);
            let (data, partial) = inner.api_get(tenant.as_deref(), &path, &params).await?;
            let mut resp = Response::new(LabelValuesResponse {
                label_values: strings(data)?,
            });
            mark_partial(resp.metadata_mut(), partial);
            Ok(resp)
        })
    }
}

impl UnaryService<MetricsForLabelMatchersRequest> for Call {
    type Response = MetricsForLabelMatchersResponse;
    type Future = BoxFuture<Result<Response<MetricsForLabelMatchersResponse>, Status>>;

    fn call(&mut self, req: Request<MetricsForLabelMatchersRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let tenant = tenant_of(req.metadata())?;
            let r = req.into_inner();
            if r.matchers_set.is_empty() {
                return Err(Status::invalid_argument("matchers_set is empty"));
            }
            let mut params = time_params(r.start_timestamp_ms, r.end_timestamp_ms);
            for m in &r.matchers_set {
                params.push(("match[]", selector(m)?));
            }
            let (data, partial) = inner
                .api_get(tenant.as_deref(), "/api/v1/series", &params)
                .await?;
            let serde_json::Value::Array(series) = data else {
                return Err(Status::internal("weft's series answer has no list"));
            };
            let metric = series
                .into_iter()
                .map(|s| {
                    let serde_json::Value::Object(map) = s else {
                        return Err(Status::internal("weft's series answer has a non-object"));
                    };
                    let mut labels: Vec<LabelPair> = map
                        .into_iter()
                        .map(|(name, value)| LabelPair {
                            name: name.into_bytes(),
                            value: value.as_str().unwrap_or_default().as_bytes().to_vec(),
                        })
                        .collect();
                    labels.sort();
                    Ok(Metric { labels })
                })
                .collect::<Result<_, _>>()?;
            let mut resp = Response::new(MetricsForLabelMatchersResponse { metric });
            mark_partial(resp.metadata_mut(), partial);
            Ok(resp)
        })
    }
}

/// An in-process HTTP request; fails if the tenant cannot be a header value.
fn request(
    method: Method,
    uri: &str,
    tenant: Option<&str>,
    headers: &[(header::HeaderName, &'static str)],
    body: AxumBody,
) -> Result<http::Request<AxumBody>, Status> {
    let mut b = http::Request::builder().method(method).uri(uri);
    if let Some(t) = tenant {
        let v = HeaderValue::from_str(t)
            .map_err(|_| Status::invalid_argument("invalid x-scope-orgid: not a header value"))?;
        b = b.header("x-scope-orgid", v);
    }
    for (name, value) in headers {
        b = b.header(name, *value);
    }
    b.body(body)
        .map_err(|e| Status::invalid_argument(format!("cannot make the request: {e}")))
}

/// The tenant from the `x-scope-orgid` metadata (`None`: weft's default tenant).
fn tenant_of(md: &MetadataMap) -> Result<Option<String>, Status> {
    match md.get("x-scope-orgid") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_owned()))
            .map_err(|_| Status::invalid_argument("invalid x-scope-orgid: not visible ASCII")),
    }
}

/// Reads a whole body, up to `limit` bytes.
async fn collect(body: AxumBody, limit: usize) -> Result<Bytes, Status> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(Status::resource_exhausted(format!(
            "answer larger than {limit} bytes: {e}"
        ))),
    }
}

/// The gRPC status for an HTTP refusal: its message (the Prometheus API's `error`, or the
/// text) with `x-http-status` and any `retry-after` as metadata.
fn refusal(parts: &http::response::Parts, body: &[u8]) -> Status {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    let mut md = MetadataMap::new();
    md.insert("x-http-status", MetadataValue::from(parts.status.as_u16()));
    if let Some(ra) = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| MetadataValue::try_from(v).ok())
    {
        md.insert("retry-after", ra);
    }
    Status::with_metadata(code_for(parts.status), message, md)
}

/// The gRPC code for an HTTP status.
pub fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        200..=299 => Code::Ok,
        400 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        409 => Code::AlreadyExists,
        413 | 429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        _ => Code::Internal,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn partial_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(PARTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn mark_partial(md: &mut MetadataMap, partial: Option<String>) {
    if let Some(v) = partial.and_then(|p| MetadataValue::try_from(p.as_str()).ok()) {
        md.insert(PARTIAL_HEADER, v);
    }
}

/// `start` and `end` in Prometheus's seconds form; none when both are 0 (a client that set
/// no range: all time).
fn time_params(start_ms: i64, end_ms: i64) -> Vec<(&'static str, String)> {
    if start_ms == 0 && end_ms == 0 {
        return Vec::new();
    }
    vec![("start", seconds(start_ms)), ("end", seconds(end_ms))]
}

/// Milliseconds as decimal seconds, exactly (`-1500` is `-1.500`).
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// A series selector for matchers, every name and value quoted (`{"job"="a\"b"}`), which
/// `crate::model::parse_selector` reads back exactly.
pub fn selector(m: &LabelMatchers) -> Result<String, Status> {
    let mut out = String::from("{");
    for (i, lm) in m.matchers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let op = match MatcherType::try_from(lm.r#type) {
            Ok(MatcherType::Eq) => "=",
            Ok(MatcherType::Neq) => "!=",
            Ok(MatcherType::Re) => "=~",
            Ok(MatcherType::Nre) => "!~",
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown matcher type {}",
                    lm.r#type
                )))
            }
        };
        if lm.name.is_empty() {
            return Err(Status::invalid_argument(
                "a matcher has an empty label name",
            ));
        }
        quote(&mut out, &lm.name);
        out.push_str(op);
        quote(&mut out, &lm.value);
    }
    out.push('}');
    Ok(out)
}

/// Appends `s` as a double-quoted string with Go's escapes.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn strings(data: serde_json::Value) -> Result<Vec<String>, Status> {
    match data {
        serde_json::Value::Array(a) => Ok(a
            .into_iter()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect()),
        serde_json::Value::Null => Ok(Vec::new()),
        _ => Err(Status::internal("weft's answer has no list")),
    }
}

/// A codec for `Push`: the request is kept as its bytes (decoded later by the remote-write
/// decoder), the empty `WriteResponse` is encoded as nothing.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

struct RawDecoder;
struct EmptyEncoder;

impl Codec for RawCodec {
    type Encode = WriteResponse;
    type Decode = Bytes;
    type Encoder = EmptyEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> EmptyEncoder {
        EmptyEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Encoder for EmptyEncoder {
    type Item = WriteResponse;
    type Error = Status;
    fn encode(&mut self, _item: WriteResponse, _dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

/// A prost codec (`Encode` the response, `Decode` the request type).
struct ProstCodec<E, D>(std::marker::PhantomData<fn(E) -> D>);

impl<E, D> Default for ProstCodec<E, D> {
    fn default() -> Self {
        ProstCodec(std::marker::PhantomData)
    }
}

struct ProstEncoder<E>(std::marker::PhantomData<fn(E)>);
struct ProstDecoder<D>(std::marker::PhantomData<fn() -> D>);

impl<E, D> Codec for ProstCodec<E, D>
where
    E: Message + Send + 'static,
    D: Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = ProstEncoder<E>;
    type Decoder = ProstDecoder<D>;
    fn encoder(&mut self) -> ProstEncoder<E> {
        ProstEncoder(std::marker::PhantomData)
    }
    fn decoder(&mut self) -> ProstDecoder<D> {
        ProstDecoder(std::marker::PhantomData)
    }
}

impl<E: Message> Encoder for ProstEncoder<E> {
    type Item = E;
    type Error = Status;
    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

impl<D: Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("invalid request message: {e}")))
    }
}

/// Serves `svc` on `listener` until `stop` turns true. At most `cfg.max_connections`
/// connections are open at once; one more is closed as soon as it is accepted (and counted
/// in `weft_grpc_connections_refused_total`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: IngesterService,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cfg = svc.inner.cfg.clone();
    let metrics = svc.inner.metrics.clone();
    let open = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Counted>>(16);
    let mut accept_stop = stop.clone();
    let accept = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = accept_stop.wait_for(|s| *s) => return,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("gRPC accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if open.load(Ordering::Relaxed) >= cfg.max_connections {
                metrics.grpc.connections_refused.inc();
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let counted = Counted::new(stream, open.clone(), metrics.clone());
            if tx.send(Ok(counted)).await.is_err() {
                return;
            }
        }
    });
    let r = tonic::transport::Server::builder()
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .timeout(cfg.timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await;
    accept.abort();
    r.map_err(|e| anyhow::anyhow!("gRPC server: {e}"))
}

/// An accepted connection, counted in the open connections while it lives.
struct Counted {
    stream: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Counted {
    fn new(stream: tokio::net::TcpStream, open: Arc<AtomicUsize>, metrics: Arc<Metrics>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        metrics.grpc.connections.inc();
        Counted {
            stream,
            open,
            metrics,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.grpc.connections.dec();
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_selector;
    use crate::proto::prompb::LabelMatcher;

    #[test]
    fn selectors_read_back_exactly() {
        let values = [
            "plain",
            "with \"quotes\"",
            "back\\slash",
            "line\nbreak\ttab\r",
            "ctl\u{1}\u{7f}",
            "ünïcødé ✓",
            "a.b/c{d}=e,f",
            // Regexes (the last two use =~ and !~).
            r#"a\.b"c|d+"#,
            r#"(x|\")\\.*"#,
        ];
        for (i, v) in values.iter().enumerate() {
            let m = LabelMatchers {
                matchers: vec![
                    LabelMatcher {
                        r#type: MatcherType::Eq as i32,
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    LabelMatcher {
                        r#type: if i + 2 >= values.len() {
                            (2 + i % 2) as i32
                        } else {
                            (i % 2) as i32
                        },
                        name: if i % 2 == 0 { "job" } else { "service.name" }.into(),
                        value: (*v).into(),
                    },
                ],
            };
            let sel = selector(&m).unwrap();
            let back = parse_selector(&sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(back.len(), 2, "{sel}");
            assert_eq!(back[1].name, m.matchers[1].name, "{sel}");
            assert_eq!(back[1].value, *v, "{sel}");
        }
        let bad = LabelMatchers {
            matchers: vec![LabelMatcher {
                r#type: 9,
                name: "a".into(),
                value: "b".into(),
            }],
        };
        assert_eq!(selector(&bad).unwrap_err().code(), Code::InvalidArgument);
    }

    proptest::proptest! {
        /// Any names and values (any characters, control characters and quotes included)
        /// with `=` and `!=` read back exactly from the selector built for them.
        #[test]
        fn any_equality_matchers_read_back_exactly(
            pairs in proptest::collection::vec(("\\PC{1,12}|[\"\\\\\n\t\u{0}-\u{1f}]{1,4}", "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}\u{7f}]{0,4}", 0i32..2), 1..5)
        ) {
            let m = LabelMatchers {
                matchers: pairs
                    .iter()
                    .map(|(n, v, t)| LabelMatcher { r#type: *t, name: n.clone(), value: v.clone() })
                    .collect(),
            };
            let sel = selector(&m).unwrap();
            match parse_selector(&sel) {
                Ok(back) => {
                    proptest::prop_assert_eq!(back.len(), m.matchers.len());
                    for (b, w) in back.iter().zip(&m.matchers) {
                        proptest::prop_assert_eq!(&b.name, &w.name);
                        proptest::prop_assert_eq!(&b.value, &w.value);
                    }
                }
                Err(crate::model::SelectorError::AllEmpty) => {}
                Err(e) => proptest::prop_assert!(false, "{sel}: {e}"),
            }
        }
    }

    #[test]
    fn times_are_exact_seconds() {
        for ms in [
            0i64,
            1,
            999,
            1000,
            1500,
            -1,
            -1500,
            1_700_000_000_123,
            -62_135_596_800_000,
        ] {
            let s = seconds(ms);
            assert_eq!(super::super::prom::parse_time(&s), Some(ms), "{ms} as {s}");
        }
        assert!(time_params(0, 0).is_empty());
        assert_eq!(time_params(0, 1000).len(), 2);
    }

    #[test]
    fn frame_lengths_need_the_whole_frame() {
        let mut frame = Vec::new();
        crate::proto::write_chunked_frame(&mut frame, &[7u8; 300]);
        assert_eq!(whole_frame_len(&frame), Some(frame.len()));
        for cut in 0..frame.len() {
            assert_eq!(whole_frame_len(&frame[..cut]), None, "cut at {cut}");
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame[..5]);
        assert_eq!(whole_frame_len(&two), Some(frame.len()));
        // A length past u64 is never whole.
        assert_eq!(whole_frame_len(&[0xff; 10]), None);
    }

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        let cases = [
            (204, Code::Ok),
            (400, Code::InvalidArgument),
            (413, Code::ResourceExhausted),
            (415, Code::InvalidArgument),
            (429, Code::ResourceExhausted),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
            (500, Code::Internal),
        ];
        for (s, c) in cases {
            assert_eq!(code_for(StatusCode::from_u16(s).unwrap()), c, "{s}");
        }
    }
}
