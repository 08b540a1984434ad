//! The Prometheus HTTP API's metadata endpoints: series, label names, label values.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{tenant, ApiError, AppState, Slot};
use crate::model::{parse_selector, Matcher, TenantId};
use crate::query::Answer;

/// Form bodies of these endpoints are small; anything larger is refused.
const MAX_FORM_BYTES: usize = 1 << 20;

/// The parameters common to the three endpoints.
struct Params {
    matchers: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
}

async fn params(
    st: &AppState,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Params, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(q) = query {
        pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    let is_form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let body = st
            .read_body(
                headers,
                body,
                MAX_FORM_BYTES.min(st.limits.max_request_bytes),
            )
            .await?;
        pairs.extend(form_urlencoded::parse(&body).into_owned());
    }
    let mut p = Params {
        matchers: Vec::new(),
        start: i64::MIN,
        end: i64::MAX,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "match[]" => p.matchers.push(parse_selector(&v)?),
            "start" => p.start = parse_time(&v).ok_or_else(|| bad_time("start", &v))?,
            "end" => p.end = parse_time(&v).ok_or_else(|| bad_time("end", &v))?,
            _ => {}
        }
    }
    if p.end < p.start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    Ok(p)
}

fn bad_time(which: &str, v: &str) -> ApiError {
    ApiError::bad_data(format!(
        "invalid parameter {which:?}: cannot parse {v:?} to a valid timestamp"
    ))
}

/// Prometheus's time parameter: Unix seconds with an optional fraction, or RFC 3339.
/// Returns milliseconds.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return None;
        }
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        let total = secs * 1000.0 + ms;
        // Prometheus clamps to its own min/max time; so does this.
        return Some(total.clamp(i64::MIN as f64, i64::MAX as f64) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[derive(Serialize)]
struct Success<T: Serialize> {
    status: &'static str,
    data: T,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

fn success<T: Serialize>(st: &AppState, a: Answer<T>) -> Response {
    st.note_partial("series API", &a.warnings);
    axum::Json(Success {
        status: "success",
        data: a.data,
        warnings: a.warnings,
    })
    .into_response()
}

/// What each of these endpoints does first: the tenant, the parameters, then a read slot
/// (held until the answer is built).
async fn prepare(
    st: &AppState,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(TenantId, Params, Slot), ApiError> {
    let tenant = tenant(headers)?;
    let p = params(st, query, headers, body).await?;
    let slot = st.slot("read")?;
    Ok((tenant, p, slot))
}

pub(super) async fn series(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (tenant, p, _slot) = prepare(&st, q, &headers, body).await?;
        if p.matchers.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let a = st
            .node()?
            .querier()
            .series(&tenant, &p.matchers, p.start, p.end)
            .await;
        let data: Vec<Map<String, Value>> = a
            .data
            .iter()
            .map(|l| {
                l.iter()
                    .map(|l| (l.name.to_string(), Value::String(l.value.to_string())))
                    .collect()
            })
            .collect();
        Ok(success(
            &st,
            Answer {
                data,
                warnings: a.warnings,
            },
        ))
    };
    run.await.unwrap_or_else(ApiError::into_prom_json)
}

pub(super) async fn labels(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (tenant, p, _slot) = prepare(&st, q, &headers, body).await?;
        let a = st
            .node()?
            .querier()
            .label_names(&tenant, &p.matchers, p.start, p.end)
            .await;
        Ok(success(&st, a))
    };
    run.await.unwrap_or_else(ApiError::into_prom_json)
}

pub(super) async fn label_values(
    State(st): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        // As Prometheus 3: a `U__` value-encoded name is decoded, and any non-empty name is
        // valid (a name the head refused has no values, whatever the scheme).
        let name = crate::model::unescape_name(&name).into_owned();
        if name.is_empty() {
            return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
        }
        let (tenant, p, _slot) = prepare(&st, q, &headers, body).await?;
        let a = st
            .node()?
            .querier()
            .label_values(&tenant, &name, &p.matchers, p.start, p.end)
            .await;
        Ok(success(&st, a))
    };
    run.await.unwrap_or_else(ApiError::into_prom_json)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn parse_time_accepts_prometheus_forms() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1700000000", Some(1_700_000_000_000)),
            ("1700000000.123", Some(1_700_000_000_123)),
            ("-1.5", Some(-1_500)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000_000)),
            ("2023-11-14T23:13:20.5+01:00", Some(1_700_000_000_500)),
            ("yesterday", None),
            ("NaN", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_time(input), *want, "input {input:?}");
        }
    }
}
