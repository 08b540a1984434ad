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

/// The parameters common to the three endpoints.
struct Params {
    matchers: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
    /// The parameters as given (`match[]`, `start`, `end`), to ask the ring's peers.
    raw: Vec<(String, String)>,
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
    pairs.extend(st.form_pairs(headers, body).await?);
    let mut p = Params {
        matchers: Vec::new(),
        start: i64::MIN,
        end: i64::MAX,
        raw: Vec::new(),
    };
    for (k, v) in pairs {
        match k.as_str() {
            "match[]" => p.matchers.push(parse_selector(&v)?),
            "start" => p.start = parse_time(&v).ok_or_else(|| bad_time("start", &v))?,
            "end" => p.end = parse_time(&v).ok_or_else(|| bad_time("end", &v))?,
            _ => continue,
        }
        p.raw.push((k, v));
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
        let mut data: Vec<Map<String, Value>> = a
            .data
            .iter()
            .map(|l| {
                l.iter()
                    .map(|l| (l.name.to_string(), Value::String(l.value.to_string())))
                    .collect()
            })
            .collect();
        let mut warnings = a.warnings;
        if let Some(answers) = ask_peers(
            &st,
            &headers,
            &tenant,
            "/api/v1/series",
            &p.raw,
            &mut warnings,
        )
        .await
        {
            data = union_series(data, answers);
        }
        Ok(success(&st, Answer { data, warnings }))
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
        let mut a = st
            .node()?
            .querier()
            .label_names(&tenant, &p.matchers, p.start, p.end)
            .await;
        if let Some(answers) = ask_peers(
            &st,
            &headers,
            &tenant,
            "/api/v1/labels",
            &p.raw,
            &mut a.warnings,
        )
        .await
        {
            a.data = union_strings(std::mem::take(&mut a.data), answers);
        }
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
        let mut a = st
            .node()?
            .querier()
            .label_values(&tenant, &name, &p.matchers, p.start, p.end)
            .await;
        let path = super::label_values_path(&name);
        if let Some(answers) =
            ask_peers(&st, &headers, &tenant, &path, &p.raw, &mut a.warnings).await
        {
            a.data = union_strings(std::mem::take(&mut a.data), answers);
        }
        Ok(success(&st, a))
    };
    run.await.unwrap_or_else(ApiError::into_prom_json)
}

/// Ring mode: asks every peer the same question (`path` with `params`, the request's own);
/// returns their `data`, adding their warnings and, past what the replication factor
/// tolerates, a warning that peers did not answer. `None` outside ring mode and for a
/// peer's own request.
pub(super) async fn ask_peers(
    st: &AppState,
    headers: &HeaderMap,
    tenant: &TenantId,
    path: &str,
    params: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Option<Vec<Value>> {
    let c = st.ring_for(headers)?;
    let ring = c.ring();
    let peers = crate::ring::fanout::peers(&ring, c.self_id());
    let query = {
        // The serializer is not Send: finished before any await.
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            q.append_pair(k, v);
        }
        q.finish()
    };
    let path_and_query = format!("{path}?{query}");
    let timeout = st
        .node()
        .map(|n| {
            n.querier()
                .deadline()
                .saturating_duration_since(tokio::time::Instant::now())
        })
        .unwrap_or(c.peer_timeout())
        .min(c.peer_timeout());
    let (answers, mut failed) = crate::ring::fanout::json_get(
        c.forwarder().client(),
        &st.metrics,
        &peers,
        tenant.as_str(),
        &path_and_query,
        timeout,
        st.limits.max_read_bytes,
    )
    .await;
    let mut data = Vec::with_capacity(answers.len());
    for a in answers {
        for w in a.warnings {
            crate::query::add_warning(warnings, w);
        }
        data.push(a.data);
    }
    st.note_failed_peers(c, &mut failed, warnings);
    Some(data)
}

/// The label sets of `local` and of the peers' answers, each once, sorted as Prometheus
/// sorts label sets.
fn union_series(local: Vec<Map<String, Value>>, answers: Vec<Value>) -> Vec<Map<String, Value>> {
    let key = |m: &Map<String, Value>| -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = m
            .iter()
            .map(|(n, v)| (n.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        k.sort();
        k
    };
    let mut all: std::collections::BTreeMap<Vec<(String, String)>, Map<String, Value>> =
        local.into_iter().map(|m| (key(&m), m)).collect();
    for a in answers {
        let Value::Array(items) = a else { continue };
        for item in items {
            if let Value::Object(m) = item {
                all.entry(key(&m)).or_insert(m);
            }
        }
    }
    all.into_values().collect()
}

/// The strings of `local` and of the peers' answers, each once, sorted.
fn union_strings(local: Vec<String>, answers: Vec<Value>) -> Vec<String> {
    let mut all: std::collections::BTreeSet<String> = local.into_iter().collect();
    for a in answers {
        let Value::Array(items) = a else { continue };
        all.extend(items.into_iter().filter_map(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        }));
    }
    all.into_iter().collect()
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
