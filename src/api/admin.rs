//! Operator endpoints: `POST /ingester/flush` and `POST /ingester/shutdown`.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{rejected, ApiError, AppState};

#[derive(Debug, Deserialize)]
pub(super) struct FlushParams {
    /// Wait until everything is in the store (default true).
    wait: Option<bool>,
    /// How long to wait, e.g. `30s` (default 5m).
    timeout: Option<String>,
}

/// `POST /ingester/flush[?wait=true][&timeout=30s]`: cut every open chunk and upload
/// everything. With `wait`, answers 200 once it is all in the store, or 503 with the reason
/// when the store did not take it in time (the chunks stay pending and keep being retried).
pub(super) async fn flush(State(st): State<AppState>, Query(p): Query<FlushParams>) -> Response {
    let node = match st.node() {
        Ok(n) => n,
        Err(e) => return rejected(&st, e).into_response(),
    };
    let timeout = match p.timeout.as_deref().map(parse_timeout).transpose() {
        Ok(t) => t.unwrap_or(Duration::from_secs(300)),
        Err(e) => return rejected(&st, e).into_response(),
    };
    if p.wait == Some(false) {
        let f = node.flusher().clone();
        tokio::spawn(async move {
            if let Err(e) = f.flush_all(timeout).await {
                tracing::warn!(error = %e, "requested flush did not finish");
            }
        });
        return (StatusCode::ACCEPTED, "flush started\n").into_response();
    }
    match node.flusher().flush_all(timeout).await {
        Ok(summary) => (StatusCode::OK, Json(summary)).into_response(),
        Err(e) => rejected(&st, ApiError::from(e)).into_response(),
    }
}

/// `POST /ingester/shutdown`: flush what the store takes within `--shutdown.flush-timeout`,
/// then stop serving; the exit checkpoint keeps the rest, and the process exits.
pub(super) async fn shutdown(State(st): State<AppState>) -> Response {
    let node = match st.node() {
        Ok(n) => n,
        Err(e) => return rejected(&st, e).into_response(),
    };
    if let Some(cluster) = st.ring() {
        // Ring mode: LEAVING, flush everything, leave the ring, then stop.
        cluster
            .leave(node, node.config().shutdown_flush_timeout)
            .await;
        tracing::info!("shutdown requested over HTTP: left the ring");
        st.stop.send_replace(true);
        return (StatusCode::OK, "left the ring; shutting down\n").into_response();
    }
    let result = node
        .flusher()
        .flush_all(node.config().shutdown_flush_timeout)
        .await;
    let body = match &result {
        Ok(s) => format!(
            "flushed {} chunks in {} objects; shutting down\n",
            s.chunks, s.objects
        ),
        Err(e) => {
            tracing::warn!(error = %e, "shutdown flush incomplete; the checkpoint keeps the rest");
            format!("flush incomplete ({e}); the checkpoint keeps the rest; shutting down\n")
        }
    };
    tracing::info!("shutdown requested over HTTP");
    // send_replace: the value is set even if nobody is subscribed at this instant.
    st.stop.send_replace(true);
    (StatusCode::OK, body).into_response()
}

fn parse_timeout(s: &str) -> Result<Duration, ApiError> {
    let bad = || ApiError::bad_data(format!("invalid timeout {s:?}: use e.g. 500ms, 30s, 5m"));
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(Duration::from_millis(n.checked_mul(mul).ok_or_else(bad)?))
}
