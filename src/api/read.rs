//! Remote read: `POST /api/v1/read`, in SAMPLES and STREAMED_XOR_CHUNKS modes.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::{check_media, rejected, tenant, ApiError, AppState, ErrorClass};
use crate::metrics::ReasonLabels;
use crate::model::{Labels, MatchOp, Matcher};
use crate::proto::prompb::{
    self, ChunkEncoding, ChunkedReadResponse, ChunkedSeries, MatcherType, ReadRequest, ResponseType,
};
use crate::proto::{compress, decompress, write_chunked_frame, STREAMED_CHUNKS_CONTENT_TYPE};
pub use crate::query::ReadQuery;
use crate::query::{Cancel, Prepared, QueryError, ReadBudget};

/// Frames in flight between the producer and the socket: bounds a response's memory.
const FRAME_QUEUE: usize = 4;

pub(super) async fn read(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    // When the client goes away, the server drops this future: the guard then sets the
    // flag that the blocking work checks, and counts the read as cancelled. Once the answer
    // is made (or refused), it is disarmed.
    let cancel = Cancel::default();
    let cancelled = st.metrics.read_cancelled.clone();
    let guard = cancel.on_drop().with_hook(move || {
        cancelled.inc();
        tracing::info!("remote read stopped: the client went away before its answer");
    });
    let r = read_inner(&st, &headers, body, &cancel).await;
    guard.disarm();
    match r {
        Ok(r) => r,
        // Nobody is listening; not a refusal to count.
        Err(Refusal::Cancelled(e)) => e.into_response(),
        Err(Refusal::Api(e)) => rejected(&st, e).into_response(),
    }
}

/// Why a read got no answer.
enum Refusal {
    /// Refused: counted in `weft_requests_rejected_total`.
    Api(ApiError),
    /// The client went away (the answer is for logs and tests only).
    Cancelled(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

/// Maps a [`QueryError`] to its answer (the class is chosen in `api::error`), counting
/// refusals by bound; cancellations are counted by the cancel guard's hook.
fn query_refusal(st: &AppState, e: QueryError) -> Refusal {
    let bound = match &e {
        QueryError::TooManyBytes { .. } => "bytes",
        QueryError::TooManySeries { .. } => "series",
        QueryError::TooManySamples { .. } => "samples",
        QueryError::Memory(_) => "memory",
        QueryError::Cancelled => return Refusal::Cancelled(e.into()),
        _ => return Refusal::Api(e.into()),
    };
    st.metrics
        .read_refused
        .get_or_create(&ReasonLabels { reason: bound })
        .inc();
    Refusal::Api(e.into())
}

async fn read_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    cancel: &Cancel,
) -> Result<Response, Refusal> {
    let tenant = tenant(headers)?;
    check_media(headers, "application/x-protobuf")?;
    let slot = st.slot("read")?;
    let body = st
        .read_body(headers, body, st.limits.max_request_bytes)
        .await?;
    let raw = decompress(&body, st.limits.max_decompressed_bytes).map_err(ApiError::from)?;
    let req = ReadRequest::decode(raw.as_slice())
        .map_err(|e| ApiError::bad_data(format!("invalid ReadRequest protobuf: {e}")))?;
    if req.queries.len() > st.limits.max_read_queries {
        return Err(ApiError::bad_data(format!(
            "{} queries in one read request, more than the limit of {}",
            req.queries.len(),
            st.limits.max_read_queries
        ))
        .into());
    }
    let queries = req
        .queries
        .iter()
        .enumerate()
        .map(|(i, q)| parse_query(i, q))
        .collect::<Result<Vec<_>, _>>()?;

    let node = st.node()?;
    // The tenant's read limits: the overrides file's, else the flags.
    let o = node.head().overrides().tenant(&tenant);
    let max_read_bytes = o.max_read_bytes.unwrap_or(st.limits.max_read_bytes);
    let budget = ReadBudget {
        max_bytes: max_read_bytes,
        max_series: o.max_read_series.unwrap_or(st.limits.max_read_series),
    };
    // Ring mode: the peers are asked while this node prepares its own answer.
    let cluster = st.ring_for(headers).cloned();
    let local = node.querier().prepare(&tenant, queries, budget, cancel);
    let (prepared, peers) = match &cluster {
        None => (local.await, None),
        Some(c) => {
            let ring = c.ring();
            let peers = crate::ring::fanout::peers(&ring, c.self_id());
            let asked = crate::ring::fanout::remote_read(
                c.forwarder().client(),
                &st.metrics,
                &peers,
                crate::ring::fanout::ReadAsk {
                    tenant: tenant.as_str(),
                    req: &req,
                    deadline: node
                        .querier()
                        .deadline()
                        .min(tokio::time::Instant::now() + c.peer_timeout()),
                    max_bytes: max_read_bytes,
                    max_frame: st.limits.max_frame_bytes,
                },
            );
            let (p, r) = tokio::join!(local, asked);
            (p, Some((r, c)))
        }
    };
    let mut prepared = prepared.map_err(|e| query_refusal(st, e))?;
    if let Some((reads, c)) = peers {
        merge_peer_reads(st, &mut prepared, reads, c, max_read_bytes)
            .map_err(|e| query_refusal(st, e))?;
    }
    let partial = partial_header(st, &prepared.warnings);
    match negotiate(&req.accepted_response_types) {
        ResponseType::Samples => {
            let max_samples = o.max_read_samples.unwrap_or(st.limits.max_read_samples);
            let max_bytes = max_read_bytes;
            let c = cancel.clone();
            // Decoding and encoding take CPU for as long as the answer is big: never on an
            // async worker, or every other request (other tenants' pushes, /ready) waits.
            // The slot goes with the work, so it is free only once the work has stopped.
            let encoded = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                encode_samples(prepared, max_samples, max_bytes, &c)
            })
            .await
            .map_err(|e| ApiError::new(ErrorClass::Internal, format!("encoding: {e}")))?;
            let body = encoded.map_err(|e| query_refusal(st, e))?;
            let mut r = (
                [
                    (header::CONTENT_TYPE, "application/x-protobuf"),
                    (header::CONTENT_ENCODING, "snappy"),
                ],
                body,
            )
                .into_response();
            if let Some(v) = partial {
                r.headers_mut().insert(PARTIAL_HEADER, v);
            }
            Ok(r)
        }
        ResponseType::StreamedXorChunks => {
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(FRAME_QUEUE);
            let max_frame = st.limits.max_frame_bytes;
            let cancelled = st.metrics.read_cancelled.clone();
            // The producer outlives this handler (the body streams after it returns), so
            // it stops when the body is dropped, that is when the channel closes, not on
            // the handler's cancel flag.
            tokio::task::spawn_blocking(move || {
                // The slot is held until the last frame is queued.
                let _slot = slot;
                let done = encode_chunk_frames(prepared, max_frame, |frame| {
                    tx.blocking_send(Ok(frame)).is_ok()
                });
                if !done {
                    cancelled.inc();
                    tracing::info!("streamed remote read stopped: the client went away");
                }
            });
            let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
            let mut r =
                ([(header::CONTENT_TYPE, STREAMED_CHUNKS_CONTENT_TYPE)], body).into_response();
            if let Some(v) = partial {
                r.headers_mut().insert(PARTIAL_HEADER, v);
            }
            Ok(r)
        }
    }
}

/// Adds the peers' series to `prepared` (their chunks merged with this node's by
/// `Selected::into_chunks`, each sample once), charging their bytes to the read's budget,
/// and the warnings of peers that did not answer (and of instances lost without leaving)
/// when more failed than the replication factor tolerates.
fn merge_peer_reads(
    st: &AppState,
    prepared: &mut Prepared,
    mut reads: crate::ring::fanout::PeerReads,
    c: &crate::ring::Cluster,
    max_read_bytes: u64,
) -> Result<(), QueryError> {
    prepared.charged_bytes = prepared.charged_bytes.saturating_add(reads.bytes);
    if prepared.charged_bytes > max_read_bytes {
        return Err(QueryError::TooManyBytes {
            limit_bytes: max_read_bytes,
        });
    }
    if let Some(r) = prepared.reservation.as_mut() {
        r.try_grow(reads.bytes)?;
    }
    for w in reads.warnings {
        crate::query::add_warning(&mut prepared.warnings, w);
    }
    st.note_failed_peers(c, &mut reads.failed, &mut prepared.warnings);
    let mut added: Vec<std::collections::HashMap<Labels, crate::query::Selected>> = prepared
        .queries
        .iter()
        .map(|_| std::collections::HashMap::new())
        .collect();
    for ps in reads.series {
        let Some((_, series)) = prepared.queries.get_mut(ps.query) else {
            continue;
        };
        match series.binary_search_by(|s| s.labels.cmp(&ps.labels)) {
            Ok(i) => series[i].fetched.extend(ps.chunks),
            Err(_) => added[ps.query]
                .entry(ps.labels.clone())
                .or_insert_with(|| crate::query::Selected {
                    labels: ps.labels,
                    head: Vec::new(),
                    remote: Vec::new(),
                    fetched: Vec::new(),
                })
                .fetched
                .extend(ps.chunks),
        }
    }
    for ((_, series), new) in prepared.queries.iter_mut().zip(added) {
        if !new.is_empty() {
            series.extend(new.into_values());
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
    }
    Ok(())
}

/// The header that marks a remote-read answer partial; its value is the first reason.
pub const PARTIAL_HEADER: &str = "x-weft-partial";

/// Counts and logs a partial answer, and makes its header value (the first warning, as
/// visible ASCII, shortened).
fn partial_header(st: &AppState, warnings: &[String]) -> Option<HeaderValue> {
    let first = st.note_partial("remote read", warnings)?;
    let clean: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(512)
        .collect();
    HeaderValue::from_str(&clean).ok()
}

/// The first accepted type weft supports; SAMPLES when none is given (Prometheus's rule).
fn negotiate(accepted: &[i32]) -> ResponseType {
    accepted
        .iter()
        .find_map(|&t| ResponseType::try_from(t).ok())
        .unwrap_or(ResponseType::Samples)
}

/// Validates one query of a `ReadRequest`.
pub fn parse_query(i: usize, q: &prompb::Query) -> Result<ReadQuery, ApiError> {
    let matchers = q
        .matchers
        .iter()
        .map(|m| {
            let op = match MatcherType::try_from(m.r#type) {
                Ok(MatcherType::Eq) => MatchOp::Eq,
                Ok(MatcherType::Neq) => MatchOp::Neq,
                Ok(MatcherType::Re) => MatchOp::Re,
                Ok(MatcherType::Nre) => MatchOp::Nre,
                Err(_) => {
                    return Err(ApiError::bad_data(format!(
                        "queries[{i}]: unknown matcher type {} for label {:?}",
                        m.r#type, m.name
                    )))
                }
            };
            Matcher::new(op, m.name.clone(), m.value.clone())
                .map_err(|e| ApiError::bad_data(format!("queries[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // As in PromQL: a selector that every series matches (no matcher, or only matchers that
    // an absent label satisfies) would read the whole tenant.
    if matchers.iter().all(Matcher::matches_empty) {
        return Err(ApiError::bad_data(format!(
            "queries[{i}]: a query needs at least one matcher that does not match the empty \
             string (as in PromQL), e.g. __name__=~\".+\""
        )));
    }
    Ok(ReadQuery {
        start: q.start_timestamp_ms,
        end: q.end_timestamp_ms,
        matchers,
    })
}

fn to_prompb_labels(labels: &Labels) -> Vec<prompb::Label> {
    labels
        .iter()
        .map(|l| prompb::Label {
            name: l.name.to_string(),
            value: l.value.to_string(),
        })
        .collect()
}

/// The SAMPLES answer: a snappy-compressed `ReadResponse` with one result per query.
///
/// Blocking (it decodes every chunk and may read spill files): run it off the async
/// runtime. It consumes `prepared` series by series, so the plan's memory goes as the
/// answer's grows. The plan's charge plus the encoded answer (and the current series'
/// decoded samples, 16 bytes each) stay within `max_bytes`, checked after every series, and
/// the samples within `max_samples`; the snappy copy made at the end is not counted (at
/// most about `max_bytes` more). Stops with [`QueryError::Cancelled`] at the next series
/// once `cancel` is set.
pub fn encode_samples(
    prepared: Prepared,
    max_samples: usize,
    max_bytes: u64,
    cancel: &Cancel,
) -> Result<Vec<u8>, QueryError> {
    use prost::encoding::{encode_key, encode_varint, message, WireType};
    // snappy's block format takes at most u32::MAX bytes of input.
    let limit_bytes = max_bytes.min(u64::from(u32::MAX) / 2);
    let charged = prepared.charged_bytes;
    // What the answer holds beyond the plan is reserved in the memory limit as it grows.
    let mut reservation = prepared.reservation;
    let mut reserve = |held: u64| -> Result<(), QueryError> {
        if let Some(r) = reservation.as_mut() {
            if held > r.bytes() {
                r.try_grow(held - r.bytes())?;
            }
        }
        Ok(())
    };
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut buf: Vec<(i64, f64)> = Vec::new();
    let mut hbuf: Vec<(i64, crate::model::HistogramValue)> = Vec::new();
    for (q, series) in prepared.queries {
        // One `QueryResult`'s body; copied into `out` behind its length when complete.
        let mut result = Vec::new();
        for s in series {
            if cancel.is_cancelled() {
                return Err(QueryError::Cancelled);
            }
            buf.clear();
            hbuf.clear();
            let labels = s.into_samples_and_histograms(q.start, q.end, &mut buf, &mut hbuf);
            if buf.is_empty() && hbuf.is_empty() {
                continue;
            }
            total += buf.len() + hbuf.len();
            if total > max_samples {
                return Err(QueryError::TooManySamples { limit: max_samples });
            }
            let ts = prompb::TimeSeries {
                labels: to_prompb_labels(&labels),
                samples: buf
                    .iter()
                    .map(|&(t, v)| prompb::Sample {
                        value: v,
                        timestamp: t,
                    })
                    .collect(),
                exemplars: Vec::new(),
                histograms: hbuf
                    .iter()
                    .map(|(t, h)| crate::hist::to_prompb(*t, h))
                    .collect(),
            };
            message::encode(1, &ts, &mut result);
            let held = charged
                + (out.len() + result.len()) as u64
                + (buf.capacity() * std::mem::size_of::<(i64, f64)>()) as u64
                + (hbuf.capacity() * std::mem::size_of::<(i64, crate::model::HistogramValue)>())
                    as u64;
            if held > limit_bytes {
                return Err(QueryError::TooManyBytes { limit_bytes });
            }
            reserve(held)?;
        }
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(result.len() as u64, &mut out);
        out.extend_from_slice(&result);
    }
    // The snappy copy: at most 32 + n + n/6 bytes for n in.
    reserve(charged + (out.len() + 32 + out.len() / 6 + out.len()) as u64)?;
    Ok(compress(&out))
}

/// The STREAMED_XOR_CHUNKS answer, one frame at a time into `sink`, which returns false
/// to stop (the client went away). Returns false if it stopped early.
///
/// A frame holds series of one query and at most about `max_frame` bytes; a series whose
/// chunks do not fit continues in the next frame with its labels repeated. Series come
/// sorted by labels, and chunks may overhang the query's range.
///
/// Blocking (spilled chunks are read here, one series at a time): run it off the async
/// runtime. It consumes `prepared` series by series, so no more than one series' chunks and
/// one frame are copied out at a time.
pub fn encode_chunk_frames(
    prepared: Prepared,
    max_frame: usize,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) -> bool {
    let mut send = |msg: &mut ChunkedReadResponse| -> bool {
        let mut frame = Vec::with_capacity(msg.encoded_len() + 16);
        write_chunked_frame(&mut frame, &msg.encode_to_vec());
        msg.chunked_series.clear();
        sink(frame)
    };
    for (qi, (q, series)) in prepared.queries.into_iter().enumerate() {
        let mut msg = ChunkedReadResponse {
            chunked_series: Vec::new(),
            query_index: qi as i64,
        };
        let mut frame_bytes = 0usize;
        for s in series {
            let (labels, chunks) = s.into_chunks(q.start, q.end);
            let labels = to_prompb_labels(&labels);
            let labels_bytes: usize = labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + 4)
                .sum();
            if chunks.is_empty() {
                continue;
            }
            let mut current = ChunkedSeries {
                labels: labels.clone(),
                chunks: Vec::new(),
            };
            frame_bytes += labels_bytes;
            for c in chunks {
                let chunk_bytes = c.data.len() + 24;
                if frame_bytes + chunk_bytes > max_frame
                    && (!current.chunks.is_empty() || !msg.chunked_series.is_empty())
                {
                    if !current.chunks.is_empty() {
                        msg.chunked_series.push(std::mem::replace(
                            &mut current,
                            ChunkedSeries {
                                labels: labels.clone(),
                                chunks: Vec::new(),
                            },
                        ));
                    }
                    if !send(&mut msg) {
                        return false;
                    }
                    frame_bytes = labels_bytes;
                }
                frame_bytes += chunk_bytes;
                current.chunks.push(prompb::Chunk {
                    min_time_ms: c.min_t,
                    max_time_ms: c.max_t,
                    r#type: match c.encoding {
                        crate::store::object::ENCODING_HISTOGRAM => ChunkEncoding::Histogram,
                        crate::store::object::ENCODING_FLOAT_HISTOGRAM => {
                            ChunkEncoding::FloatHistogram
                        }
                        _ => ChunkEncoding::Xor,
                    } as i32,
                    data: c.data,
                });
            }
            msg.chunked_series.push(current);
        }
        if !msg.chunked_series.is_empty() && !send(&mut msg) {
            return false;
        }
    }
    true
}
