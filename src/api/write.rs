//! Remote write 1.0 and 2.0: `POST /api/v1/push` (and `/api/v1/write`).
//!
//! The `Content-Type` picks the message, as the remote-write 2.0 spec and Prometheus 3's
//! receiver (`storage/remote/write_handler.go`) do:
//!
//! | Content-Type                                                  | message             |
//! |---------------------------------------------------------------|---------------------|
//! | missing                                                       | 1.0 (old senders)   |
//! | `application/x-protobuf`                                      | 1.0                 |
//! | `application/x-protobuf;proto=prometheus.WriteRequest`        | 1.0                 |
//! | `application/x-protobuf;proto=io.prometheus.write.v2.Request` | 2.0                 |
//! | any other media type or `proto`                               | 415                 |
//!
//! `Content-Encoding` must be `snappy` (any case); a missing one means snappy, as in
//! Prometheus's receiver ("don't break yolo 1.0 clients"); anything else is 415. The
//! `X-Prometheus-Remote-Write-Version` header is informational only: the `Content-Type`
//! decides (Prometheus 3 sends `2.0.0` with a 2.0 body and `0.1.0` with a 1.0 body).
//!
//! Every answer, 1.0 or 2.0, success or error, carries
//! `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written` with what the head
//! stored from this request (0 when it was refused before the head).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::append_refusals;
use super::{rejected, tenant, ApiError, AppState, ErrorClass};
use crate::head::AppendReport;
use crate::proto::{decode_write_request, decode_write_request_v2, decompress_into};

/// The `proto` parameter of a remote-write 1.0 `Content-Type`.
const PROTO_V1: &str = "prometheus.WriteRequest";
/// The `proto` parameter of a remote-write 2.0 `Content-Type`.
const PROTO_V2: &str = "io.prometheus.write.v2.Request";

/// Response header: float samples stored from the request.
const SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
/// Response header: native histogram samples stored from the request.
const HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
/// Response header: exemplars stored from the request.
const EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

/// Which remote-write message a push carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteProto {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// Picks the message from `Content-Type` and checks `Content-Encoding` (see the module docs).
///
/// The media type, the parameter name and its value are matched without regard to case (as
/// weft's 1.0 check always did; Prometheus compares the value exactly), and spaces and quotes
/// around the value are tolerated (RFC 9110 §8.3.1). Other parameters are ignored.
pub(crate) fn negotiate(headers: &HeaderMap) -> Result<WriteProto, ApiError> {
    let unsupported = |msg: String| ApiError::new(ErrorClass::UnsupportedMedia, msg);
    let mut proto = WriteProto::V1;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mut parts = ct.split(';');
        let essence = parts.next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(unsupported(format!(
                "unsupported Content-Type {ct:?}: want application/x-protobuf \
                 (proto={PROTO_V1} or proto={PROTO_V2})"
            )));
        }
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            let value = value.trim().trim_matches('"').trim();
            proto = if value.eq_ignore_ascii_case(PROTO_V1) {
                WriteProto::V1
            } else if value.eq_ignore_ascii_case(PROTO_V2) {
                WriteProto::V2
            } else {
                return Err(unsupported(format!(
                    "unsupported remote-write message proto={value:?}: weft takes \
                     proto={PROTO_V1} (remote write 1.0) and proto={PROTO_V2} (2.0)"
                )));
            };
        }
    }
    if let Some(ce) = headers.get(header::CONTENT_ENCODING) {
        let ce = ce.to_str().unwrap_or("");
        if !ce.trim().eq_ignore_ascii_case("snappy") {
            return Err(unsupported(format!(
                "unsupported Content-Encoding {ce:?}: want snappy"
            )));
        }
    }
    Ok(proto)
}

/// Sets the three `X-Prometheus-Remote-Write-*-Written` headers.
fn set_written(resp: &mut Response, report: &AppendReport) {
    let h = resp.headers_mut();
    for (name, n) in [
        (SAMPLES_WRITTEN, report.appended),
        (HISTOGRAMS_WRITTEN, report.histograms_appended),
        (EXEMPLARS_WRITTEN, report.exemplars_appended),
    ] {
        h.insert(name, HeaderValue::from(n));
    }
}

pub(super) async fn push(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    // What the head stored, for the Written headers; stays zero if the push was refused
    // before the head.
    let mut stored = AppendReport::default();
    let mut resp = match push_inner(&st, &headers, body, &mut stored).await {
        Ok(()) => match append_refusals(&stored) {
            None => StatusCode::NO_CONTENT.into_response(),
            // Some series were refused; the rest of the request is stored. Prometheus drops
            // a batch answered with a 4xx, which is right: resending cannot fix these.
            Some(e) => e.into_response(),
        },
        Err(e) => rejected(&st, e).into_response(),
    };
    set_written(&mut resp, &stored);
    resp
}

/// Decodes and appends one push. `stored` gets the head's report as soon as there is one:
/// if the WAL sync then fails (503), the headers still say what the head holds, and a
/// retry finds those samples already stored.
async fn push_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    stored: &mut AppendReport,
) -> Result<(), ApiError> {
    let tenant = tenant(headers)?;
    let proto = negotiate(headers)?;
    let node = st.writable()?.clone();
    let ingester = node.ingester();
    let mut admission = st.admit_push(&node, headers)?;
    // The tenant's own body limits, from the overrides file, else the flags.
    let o = node.head().overrides().tenant(&tenant);
    let max_request_bytes = o.max_request_bytes.unwrap_or(st.limits.max_request_bytes);
    let max_decompressed_bytes = o
        .max_decompressed_bytes
        .unwrap_or(st.limits.max_decompressed_bytes);
    let body = st
        .read_push_body(headers, body, max_request_bytes, &mut admission)
        .await?;
    // The write slot bounds pushes being decoded and appended, not bodies on their way in
    // (those hold only the bytes that have arrived, and have a deadline): a slow client
    // cannot take the slots.
    let _slot = st.slot("write")?;
    if let Some(reserved) = &mut admission.memory {
        reserved.try_grow((body.len() as u64).saturating_sub(reserved.bytes()))?;
        // The decompressed body and the batch decoded from it (label and sample slices over
        // it) each take about the decompressed length: reserve both before decompressing.
        // An over-limit or bad header is reported by decompress_into below.
        if let Ok(n) = snap::raw::decompress_len(&body) {
            let n = n.min(max_decompressed_bytes) as u64;
            reserved.try_grow(2 * n)?;
        }
    }
    // Decode buffers are reused across requests: a warm push allocates almost nothing.
    let mut pooled = st.decode_buffers.take();
    let bufs = &mut pooled.bufs;
    decompress_into(&body, max_decompressed_bytes, &mut bufs.raw)?;
    drop(body);
    let mut batch = std::mem::take(&mut bufs.batch).recycle();
    let decoded = match proto {
        WriteProto::V1 => decode_write_request(&bufs.raw, &mut batch),
        WriteProto::V2 => decode_write_request_v2(&bufs.raw, &mut batch),
    };
    if let Err(e) = decoded {
        bufs.batch = batch.recycle();
        st.decode_buffers.put(pooled, node.memory());
        return Err(e.into());
    }
    let appended = if batch.series.is_empty() && batch.metadata.is_empty() {
        // Nothing to store (a request of metadata alone goes on to the metadata store).
        Ok((AppendReport::default(), None))
    } else {
        // A new tenant is created only under --limits.max-tenants, and only kept if this
        // push stored something in it (see head::tenants).
        match node.head().tenant_for_push(&tenant) {
            Ok(th) => {
                let grace = node.head().creation_grace_period(&tenant);
                let r = ingester.append_checked(&th, &mut batch, &mut bufs.log, grace);
                if th.num_series() == 0 {
                    node.head().remove_if_unused(th);
                }
                r
            }
            Err(e) => {
                bufs.batch = batch.recycle();
                st.decode_buffers.put(pooled, node.memory());
                return Err(e.into());
            }
        }
    };
    bufs.batch = batch.recycle();
    bufs.log.clear();
    st.decode_buffers.put(pooled, node.memory());
    // The body and the decoded batch are gone (or back in the pool, which reserves its
    // own): waiting for durability holds no more memory.
    admission.memory = None;
    let (report, pos) = appended?;
    *stored = report;
    if let Some(pos) = pos {
        // The acknowledgement waits for the sync that covers this push (group commit).
        ingester.wait_durable(pos).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ct: Option<&str>, ce: Option<&str>) -> Result<WriteProto, u16> {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        }
        if let Some(ce) = ce {
            h.insert(header::CONTENT_ENCODING, ce.parse().unwrap());
        }
        negotiate(&h).map_err(|e| e.class.status().as_u16())
    }

    #[test]
    fn content_type_and_encoding_negotiation() {
        use WriteProto::*;
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<WriteProto, u16>);
        let cases: &[Case<'_>] = &[
            (None, None, Ok(V1)),
            (None, Some("snappy"), Ok(V1)),
            (Some("application/x-protobuf"), Some("snappy"), Ok(V1)),
            (Some("Application/X-Protobuf"), Some("SNAPPY"), Ok(V1)),
            (
                Some("application/x-protobuf;proto=prometheus.WriteRequest"),
                None,
                Ok(V1),
            ),
            (
                Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
                Some("snappy"),
                Ok(V2),
            ),
            (
                Some("application/x-protobuf ; PROTO = \"io.prometheus.write.v2.Request\""),
                Some("snappy"),
                Ok(V2),
            ),
            (
                Some("application/x-protobuf;charset=utf-8;proto=io.prometheus.write.v2.Request"),
                None,
                Ok(V2),
            ),
            (
                Some("application/x-protobuf;proto=io.prometheus.write.v3.Request"),
                None,
                Err(415),
            ),
            (Some("application/x-protobuf;proto=bogus"), None, Err(415)),
            (Some("application/x-protobuf;proto="), None, Err(415)),
            (Some("application/json"), None, Err(415)),
            (
                Some("text/plain;proto=io.prometheus.write.v2.Request"),
                None,
                Err(415),
            ),
            (Some(""), None, Err(415)),
            (Some("application/x-protobuf"), Some("gzip"), Err(415)),
            (Some("application/x-protobuf"), Some("zstd"), Err(415)),
            (Some("application/x-protobuf"), Some(""), Err(415)),
            (
                Some("application/x-protobuf"),
                Some("snappy, gzip"),
                Err(415),
            ),
        ];
        for (ct, ce, want) in cases {
            assert_eq!(
                check(*ct, *ce),
                *want,
                "Content-Type {ct:?}, Content-Encoding {ce:?}"
            );
        }
    }
}
