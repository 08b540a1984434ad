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
use crate::ring::forward::{encode_part, Counts, Outcome, Plan, CONTENT_TYPE_V1, CONTENT_TYPE_V2};

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

/// Marks an in-process push whose body is the `WriteRequest` itself, not snappy-compressed:
/// the `cortex.Ingester` gRPC `Push` (`super::grpc`). A request extension, so no client can
/// set it; its body is bounded by the decompressed-body limit instead of the request limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Uncompressed;

pub(super) async fn push(
    State(st): State<AppState>,
    uncompressed: Option<axum::Extension<Uncompressed>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let raw = uncompressed.is_some();
    // What the head (or, in ring mode, a quorum of replicas) stored, for the Written
    // headers; stays zero if the push was refused before the head.
    let mut stored = AppendReport::default();
    // In ring mode, a replica's refusal of some series (the rest is stored).
    let mut refusal = None;
    let mut resp = match push_inner(&st, &headers, body, raw, &mut stored, &mut refusal).await {
        Ok(()) => match refusal.or_else(|| append_refusals(&stored)) {
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
///
/// In ring mode (and unless the push comes from a peer) the series are split by owner: this
/// node appends its own share here, the others' shares are forwarded, and the push succeeds
/// once each series is durable on a quorum of its replicas (`crate::ring::forward`).
async fn push_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    raw: bool,
    stored: &mut AppendReport,
    refusal: &mut Option<ApiError>,
) -> Result<(), ApiError> {
    let tenant = tenant(headers)?;
    let proto = negotiate(headers)?;
    let node = st.writable()?.clone();
    let cluster = st.ring_for(headers).cloned();
    if cluster.is_none() {
        if let Some(c) = st.ring() {
            if c.is_leaving() {
                // A peer's share arriving after this node turned LEAVING: everything taken
                // so far is being flushed; the sender counts this replica as failed.
                return Err(ApiError::new(
                    ErrorClass::Unavailable,
                    "this node is leaving the ring and takes no new samples",
                ));
            }
        }
    }
    let ingester = node.ingester();
    let mut admission = st.admit_push(&node, headers)?;
    // The tenant's own body limits, from the overrides file, else the flags.
    let o = node.head().overrides().tenant(&tenant);
    let max_request_bytes = o.max_request_bytes.unwrap_or(st.limits.max_request_bytes);
    let max_decompressed_bytes = o
        .max_decompressed_bytes
        .unwrap_or(st.limits.max_decompressed_bytes);
    // An uncompressed body (gRPC) is bounded as the decompressed body would be.
    let body_limit = if raw {
        max_decompressed_bytes
    } else {
        max_request_bytes
    };
    let body = st
        .read_push_body(headers, body, body_limit, &mut admission)
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
        let len = if raw {
            Ok(body.len())
        } else {
            snap::raw::decompress_len(&body)
        };
        if let Ok(n) = len {
            let n = n.min(max_decompressed_bytes) as u64;
            reserved.try_grow(2 * n)?;
        }
    }
    // Decode buffers are reused across requests: a warm push allocates almost nothing.
    let mut pooled = st.decode_buffers.take();
    let bufs = &mut pooled.bufs;
    if raw {
        bufs.raw.clear();
        bufs.raw.extend_from_slice(&body);
    } else {
        decompress_into(&body, max_decompressed_bytes, &mut bufs.raw)?;
    }
    // Ring mode keeps the body: a peer that owns every series of the push gets it as it came
    // (no re-encoding). It is small next to the decoded batch. An uncompressed body (gRPC)
    // is compressed below, once, only if some peer takes it whole.
    let mut original = cluster.as_ref().filter(|_| !raw).map(|_| body.clone());
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
    // Ring mode: plan the owners, encode the peers' shares, keep this node's own share in
    // the batch (an empty share still carries the metadata).
    let mut distributed = None;
    if let Some(c) = &cluster {
        let ring = c.ring();
        let plan = match Plan::new(&ring, c.replication_factor(), tenant.as_str(), &batch) {
            Ok(p) => p,
            Err(e) => {
                bufs.batch = batch.recycle();
                st.decode_buffers.put(pooled, node.memory());
                st.metrics.ring.quorum_failures.inc();
                return Err(ApiError::new(ErrorClass::Unavailable, e.to_string()));
            }
        };
        let me = ring.index_of(c.self_id());
        let mine = me.and_then(|i| plan.part_of(i));
        let sends: Vec<_> = plan
            .parts
            .iter()
            .enumerate()
            .filter(|(k, _)| Some(*k) != mine)
            .map(|(k, part)| {
                let whole = part.series.len() == batch.series.len();
                if whole && raw && original.is_none() {
                    original = Some(bytes::Bytes::from(crate::proto::compress(&bufs.raw)));
                }
                let (body, content_type) = match (&original, whole, proto) {
                    (Some(b), true, WriteProto::V1) => (b.clone(), CONTENT_TYPE_V1),
                    (Some(b), true, WriteProto::V2) => (b.clone(), CONTENT_TYPE_V2),
                    _ => (
                        bytes::Bytes::from(encode_part(&batch, &part.series)),
                        CONTENT_TYPE_V1,
                    ),
                };
                (k, part.instance, body, content_type, part.counts)
            })
            .collect();
        let all = std::mem::take(&mut batch.series);
        batch.series = match mine {
            Some(k) => plan.parts[k]
                .series
                .iter()
                .map(|&i| all[i as usize])
                .collect(),
            None => Vec::new(),
        };
        distributed = Some((c.clone(), ring, plan, mine, sends));
    }
    let leaving = cluster.as_ref().is_some_and(|c| c.is_leaving());
    let appended = if batch.series.is_empty() && batch.metadata.is_empty() {
        // Nothing to store (a request of metadata alone goes on to the metadata store).
        Ok((AppendReport::default(), None))
    } else if leaving && !batch.series.is_empty() {
        Err(ApiError::new(
            ErrorClass::Unavailable,
            "this node is leaving the ring and takes no new samples",
        ))
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
                r.map_err(ApiError::from)
            }
            Err(e) => Err(e.into()),
        }
    };
    bufs.batch = batch.recycle();
    bufs.log.clear();
    st.decode_buffers.put(pooled, node.memory());
    // The body and the decoded batch are gone (or back in the pool, which reserves its
    // own): waiting for durability holds no more memory.
    admission.memory = None;
    let Some((c, ring, plan, mine, sends)) = distributed else {
        let (report, pos) = appended?;
        *stored = report;
        if let Some(pos) = pos {
            // The acknowledgement waits for the sync that covers this push (group commit).
            ingester.wait_durable(pos).await?;
        }
        return Ok(());
    };
    // This node's share becomes durable while the peers' shares travel.
    let local = async {
        let (report, pos) = appended?;
        if let Some(pos) = pos {
            ingester.wait_durable(pos).await?;
        }
        Ok::<_, ApiError>(report)
    };
    let (forwarder, instances, tenant) = (c.forwarder(), ring.instances(), tenant.as_str());
    let remote = futures::future::join_all(sends.into_iter().map(
        |(k, peer, body, content_type, counts)| async move {
            let peer = &instances[peer];
            let o = forwarder
                .send(peer, tenant, body, content_type, counts)
                .await;
            (k, o)
        },
    ));
    let (local, remote) = tokio::join!(local, remote);
    let mut outcomes: Vec<Outcome> = (0..plan.parts.len())
        .map(|_| Outcome::Failed {
            status: None,
            reason: String::new(),
        })
        .collect();
    if let Some(k) = mine {
        outcomes[k] = match local {
            Ok(report) => {
                let refused = append_refusals(&report)
                    .map(|e| (e.class.status().as_u16(), e.message.clone()));
                Outcome::Durable {
                    written: Counts {
                        samples: report.appended,
                        histograms: report.histograms_appended,
                        exemplars: report.exemplars_appended,
                    },
                    refusal: refused,
                }
            }
            Err(e) => Outcome::Failed {
                status: Some(e.class.status().as_u16()),
                reason: format!("{} (this node): {}", c.self_id(), e.message),
            },
        };
    }
    for (k, o) in remote {
        outcomes[k] = o;
    }
    let verdict = plan.judge(&outcomes);
    stored.appended = verdict.written.samples;
    stored.histograms_appended = verdict.written.histograms;
    stored.exemplars_appended = verdict.written.exemplars;
    if verdict.short_of_quorum > 0 {
        st.metrics.ring.quorum_failures.inc();
        let reasons: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Failed { reason, .. } if !reason.is_empty() => Some(reason.as_str()),
                _ => None,
            })
            .take(3)
            .collect();
        // A tenant limit refused by the replicas themselves stays a 429.
        let limited = outcomes.iter().any(|o| {
            matches!(
                o,
                Outcome::Failed {
                    status: Some(429),
                    ..
                }
            )
        });
        let class = if limited {
            ErrorClass::TenantLimit
        } else {
            ErrorClass::Unavailable
        };
        return Err(ApiError::new(
            class,
            format!(
                "{} series reached no quorum of {} replicas; retry later: {}",
                verdict.short_of_quorum,
                plan.quorum,
                reasons.join("; ")
            ),
        ));
    }
    if let Some((status, msg)) = verdict.refusal {
        let class = if status == 429 {
            ErrorClass::TenantLimit
        } else {
            ErrorClass::BadData
        };
        *refusal = Some(ApiError::new(class, msg));
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
