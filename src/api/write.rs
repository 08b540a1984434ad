//! Remote write 1.0: `POST /api/v1/push` (and `/api/v1/write`). A 2.0 body (by its
//! `Content-Type` `proto` parameter) is refused with 415 until 2.0 is built.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::append_refusals;
use super::{check_media, check_write_proto, rejected, tenant, ApiError, AppState};
use crate::head::AppendReport;
use crate::proto::{decode_write_request, decompress_into};

pub(super) async fn push(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match push_inner(&st, &headers, body).await {
        Ok(report) => match append_refusals(&report) {
            None => StatusCode::NO_CONTENT.into_response(),
            // Some series were refused; the rest of the request is stored. Prometheus drops
            // a batch answered with a 4xx, which is right: resending cannot fix these.
            Some(e) => e.into_response(),
        },
        Err(e) => rejected(&st, e).into_response(),
    }
}

async fn push_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<AppendReport, ApiError> {
    let tenant = tenant(headers)?;
    check_media(headers, "application/x-protobuf")?;
    check_write_proto(headers)?;
    let node = st.writable()?.clone();
    let ingester = node.ingester();
    let mut admission = st.admit_push(&node, headers)?;
    let body = st.read_push_body(headers, body, &mut admission).await?;
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
            let n = n.min(st.limits.max_decompressed_bytes) as u64;
            reserved.try_grow(2 * n)?;
        }
    }
    // Decode buffers are reused across requests: a warm push allocates almost nothing.
    let mut pooled = st.decode_buffers.take();
    let bufs = &mut pooled.bufs;
    decompress_into(&body, st.limits.max_decompressed_bytes, &mut bufs.raw)?;
    drop(body);
    let mut batch = std::mem::take(&mut bufs.batch).recycle();
    decode_write_request(&bufs.raw, &mut batch)?;
    let appended = if batch.series.is_empty() {
        // Metadata-only requests are accepted and ignored.
        Ok((AppendReport::default(), None))
    } else {
        let head = node.head().tenant_or_create(&tenant);
        ingester.append(&head, &batch, &mut bufs.log)
    };
    bufs.batch = batch.recycle();
    bufs.log.clear();
    st.decode_buffers.put(pooled, node.memory());
    // The body and the decoded batch are gone (or back in the pool, which reserves its
    // own): waiting for durability holds no more memory.
    admission.memory = None;
    let (report, pos) = appended?;
    if let Some(pos) = pos {
        // The acknowledgement waits for the sync that covers this push (group commit).
        ingester.wait_durable(pos).await?;
    }
    Ok(report)
}
