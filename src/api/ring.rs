//! `GET /ring`: the ring as this node sees it (ring mode only), HTML or JSON.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// HTML by default; JSON with `?format=json` or `Accept: application/json`.
pub(super) async fn ring_page(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(cluster) = st.ring() else {
        return (
            StatusCode::NOT_FOUND,
            "not in ring mode: start weft with --ring.etcd-endpoints\n",
        )
            .into_response();
    };
    let status = cluster.status();
    let wants_json = q.as_deref().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "format" && v == "json")
    }) || headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        axum::Json(crate::ring::page::render_json(&status)).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::ring::page::render_html(&status),
        )
            .into_response()
    }
}
