//! Remote read: `POST /api/v1/read`, in SAMPLES and STREAMED_XOR_CHUNKS modes.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::{check_media, read_body, rejected, tenant, ApiError, AppState};
use crate::model::{Labels, MatchOp, Matcher, TenantId};
use crate::proto::prompb::{
    self, ChunkEncoding, ChunkedReadResponse, ChunkedSeries, MatcherType, ReadRequest, ResponseType,
};
use crate::proto::{compress, decompress, write_chunked_frame, STREAMED_CHUNKS_CONTENT_TYPE};
use crate::query::{add_warning, Querier, Selected};

/// Frames in flight between the producer and the socket: bounds a response's memory.
const FRAME_QUEUE: usize = 4;

pub(super) async fn read(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_inner(&st, &headers, body).await {
        Ok(r) => r,
        Err(e) => rejected(&st, e).into_response(),
    }
}

/// One query of a read request, validated.
#[derive(Debug, Clone)]
pub struct ReadQuery {
    /// Start of the range, ms, inclusive.
    pub start: i64,
    /// End of the range, ms, inclusive.
    pub end: i64,
    /// The matchers.
    pub matchers: Vec<Matcher>,
}

async fn read_inner(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let tenant = tenant(headers)?;
    check_media(headers, "application/x-protobuf")?;
    let slot = st.slot("read")?;
    let body = read_body(headers, body, st.limits.max_request_bytes).await?;
    let raw = decompress(&body, st.limits.max_decompressed_bytes)?;
    let req = ReadRequest::decode(raw.as_slice())
        .map_err(|e| ApiError::bad_data(format!("invalid ReadRequest protobuf: {e}")))?;
    if req.queries.len() > st.limits.max_read_queries {
        return Err(ApiError::bad_data(format!(
            "{} queries in one read request, more than the limit of {}",
            req.queries.len(),
            st.limits.max_read_queries
        )));
    }
    let queries = req
        .queries
        .iter()
        .enumerate()
        .map(|(i, q)| parse_query(i, q))
        .collect::<Result<Vec<_>, _>>()?;

    let prepared = prepare(
        &st.querier,
        &tenant,
        queries,
        st.limits.max_read_store_bytes,
    )
    .await?;
    let partial = partial_header(st, &prepared.warnings);
    match negotiate(&req.accepted_response_types) {
        ResponseType::Samples => {
            let body = encode_samples(&st.querier, &prepared, st.limits.max_read_samples)?;
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
            let querier = st.querier.clone();
            let max_frame = st.limits.max_frame_bytes;
            tokio::task::spawn_blocking(move || {
                // The slot is held until the last frame is queued.
                let _slot = slot;
                encode_chunk_frames(&querier, &prepared, max_frame, |frame| {
                    tx.blocking_send(Ok(frame)).is_ok()
                });
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

/// A read request's queries with their series selected and their store chunks read.
#[derive(Debug)]
pub struct Prepared {
    /// Each query with its series.
    pub queries: Vec<(ReadQuery, Vec<Selected>)>,
    /// Why the answer may be partial.
    pub warnings: Vec<String>,
}

/// Selects every query's series in every tier and reads what is needed from the store (all
/// before the answer starts, so that a partial answer is known when the headers go out).
/// Chunk data (local copies and store reads) over `max_store_bytes` is refused with a 400
/// asking for a narrower query.
pub async fn prepare(
    querier: &Querier,
    tenant: &TenantId,
    queries: Vec<ReadQuery>,
    max_store_bytes: u64,
) -> Result<Prepared, ApiError> {
    let deadline = querier.deadline();
    let mut warnings = Vec::new();
    let mut out = Vec::with_capacity(queries.len());
    let mut store_bytes = 0u64;
    for q in queries {
        let a = querier
            .select(tenant, &q.matchers, q.start, q.end, deadline)
            .await;
        for w in a.warnings {
            add_warning(&mut warnings, w);
        }
        let mut series = a.data;
        let (needed, bytes) = querier.remote_needed(&series, q.start, q.end);
        let local: u64 = series
            .iter()
            .flat_map(|s| &s.head)
            .map(|c| c.data.len() as u64)
            .sum();
        store_bytes += bytes + local;
        if store_bytes > max_store_bytes {
            return Err(ApiError::bad_data(format!(
                "remote read would gather more than {max_store_bytes} bytes of chunks; \
                 narrow the query"
            )));
        }
        querier
            .fetch_remote(&mut series, needed, deadline, &mut warnings)
            .await;
        out.push((q, series));
    }
    Ok(Prepared {
        queries: out,
        warnings,
    })
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
pub fn encode_samples(
    querier: &Querier,
    prepared: &Prepared,
    max_samples: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut resp = prompb::ReadResponse::default();
    let mut total = 0usize;
    let mut buf = Vec::new();
    for (q, series) in &prepared.queries {
        let mut result = prompb::QueryResult::default();
        for s in series {
            buf.clear();
            querier.samples(s, q.start, q.end, &mut buf);
            if buf.is_empty() {
                continue;
            }
            total += buf.len();
            if total > max_samples {
                return Err(ApiError::bad_data(format!(
                    "remote read would return more than {} samples; narrow the query",
                    max_samples
                )));
            }
            result.timeseries.push(prompb::TimeSeries {
                labels: to_prompb_labels(&s.labels),
                samples: buf
                    .iter()
                    .map(|&(t, v)| prompb::Sample {
                        value: v,
                        timestamp: t,
                    })
                    .collect(),
                exemplars: Vec::new(),
            });
        }
        resp.results.push(result);
    }
    Ok(compress(&resp.encode_to_vec()))
}

/// The STREAMED_XOR_CHUNKS answer, one frame at a time into `sink`, which returns false
/// to stop (the client went away).
///
/// A frame holds series of one query and at most about `max_frame` bytes; a series whose
/// chunks do not fit continues in the next frame with its labels repeated. Series come
/// sorted by labels, and chunks may overhang the query's range.
pub fn encode_chunk_frames(
    querier: &Querier,
    prepared: &Prepared,
    max_frame: usize,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) {
    let mut send = |msg: &mut ChunkedReadResponse| -> bool {
        let mut frame = Vec::with_capacity(msg.encoded_len() + 16);
        write_chunked_frame(&mut frame, &msg.encode_to_vec());
        msg.chunked_series.clear();
        sink(frame)
    };
    for (qi, (q, series)) in prepared.queries.iter().enumerate() {
        let mut msg = ChunkedReadResponse {
            chunked_series: Vec::new(),
            query_index: qi as i64,
        };
        let mut frame_bytes = 0usize;
        for s in series {
            let labels = to_prompb_labels(&s.labels);
            let labels_bytes: usize = labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + 4)
                .sum();
            let chunks = querier.chunks(s, q.start, q.end);
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
                        return;
                    }
                    frame_bytes = labels_bytes;
                }
                frame_bytes += chunk_bytes;
                current.chunks.push(prompb::Chunk {
                    min_time_ms: c.min_t,
                    max_time_ms: c.max_t,
                    r#type: ChunkEncoding::Xor as i32,
                    data: c.data,
                });
            }
            msg.chunked_series.push(current);
        }
        if !msg.chunked_series.is_empty() && !send(&mut msg) {
            return;
        }
    }
}
