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
    decode_write_request(&bufs.raw, &mut batch)?;
    let appended = if batch.series.is_empty() && batch.metadata.is_empty() {
        // Nothing to store.
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
    if let Some(pos) = pos {
        // The acknowledgement waits for the sync that covers this push (group commit).
        ingester.wait_durable(pos).await?;
    }
    Ok(report)
}
