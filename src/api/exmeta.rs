//! `GET|POST /api/v1/query_exemplars` and `GET /api/v1/metadata`, in the shapes of
//! Prometheus's `web/api/v1/api.go` (`queryExemplars`, `metricMetadata`).
//!
//! The exemplar query is a series selector, or simple PromQL around selectors (`rate(x[5m])`,
//! `sum by (job) (a{b="c"}) / b`): the selectors are picked out of it, as Prometheus's
//! `parser.ExtractSelectors` does. A full PromQL parse is out of scope; what the extractor
//! cannot read is a 400 that says so.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::prom::parse_time;
use super::{tenant, ApiError, AppState};
use crate::exmeta::SeriesExemplars;
use crate::model::{parse_selector, Matcher};

/// Most selectors one exemplar query may hold.
const MAX_SELECTORS: usize = 100;

/// Form body (for a form POST) and query string pairs, in that order: as Go's
/// `Request.FormValue`, which Prometheus uses, the first value of a key wins and the body's
/// come first.
async fn pairs(
    st: &AppState,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = st.form_pairs(headers, body).await?;
    if let Some(q) = query {
        pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    Ok(pairs)
}

/// The first value of `key`, as `FormValue`.
fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `/api/v1/query_exemplars?query=<selector>&start=&end=`.
pub(super) async fn query_exemplars(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let pairs = pairs(&st, q, &headers, body).await?;
        let time = |key: &str, default: i64| match first(&pairs, key) {
            None | Some("") => Ok(default),
            Some(v) => parse_time(v).ok_or_else(|| bad_param(key, v)),
        };
        let (start, end) = (time("start", i64::MIN)?, time("end", i64::MAX)?);
        let query = first(&pairs, "query");
        if end < start {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start timestamp",
            ));
        }
        let sets = extract_selectors(query.unwrap_or(""))?;
        if sets.is_empty() {
            // As Prometheus: an expression without selectors answers null.
            return Ok(json_response(r#"{"status":"success","data":null}"#.into()));
        }
        let _slot = st.slot("read")?;
        let node = st.node()?;
        let found = node
            .head()
            .exmeta()
            .query_exemplars(&tenant, &sets, start, end);
        let local = exemplars_json(&found);
        // Ring mode: each node holds the exemplars of the series it owns.
        let mut warnings = Vec::new();
        let asked: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "query" | "start" | "end"))
            .cloned()
            .collect();
        match super::prom::ask_peers(
            &st,
            &headers,
            &tenant,
            "/api/v1/query_exemplars",
            &asked,
            &mut warnings,
        )
        .await
        {
            None => Ok(json_response(local)),
            Some(answers) => Ok(json_response(merge_exemplars(&local, answers, warnings))),
        }
    };
    run.await.unwrap_or_else(ApiError::into_prom_json)
}

/// `/api/v1/metadata?metric=&limit=&limit_per_metric=`.
pub(super) async fn metadata(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let pairs = pairs(&st, q, &headers, body).await?;
        let number = |key: &str| -> Result<Option<i64>, ApiError> {
            match first(&pairs, key) {
                None | Some("") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| ApiError::bad_data(format!("{key} must be a number"))),
            }
        };
        // As Prometheus: a negative limit is no limit.
        let limit = number("limit")?.and_then(|n| usize::try_from(n).ok());
        // weft keeps one entry per family, so any per-metric limit above 0 is met.
        number("limit_per_metric")?;
        let metric = first(&pairs, "metric").filter(|m| !m.is_empty());
        let node = st.node()?;
        let found = node.head().exmeta().metadata(&tenant, metric, limit);
        let mut data = serde_json::Map::new();
        for (family, m) in found {
            data.insert(
                family,
                serde_json::json!([{
                    "type": m.kind.as_str(),
                    "help": &*m.help,
                    "unit": &*m.unit,
                }]),
            );
        }
        let mut warnings = Vec::new();
        let asked: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "metric" | "limit" | "limit_per_metric"))
            .cloned()
            .collect();
        if let Some(answers) = super::prom::ask_peers(
            &st,
            &headers,
            &tenant,
            "/api/v1/metadata",
            &asked,
            &mut warnings,
        )
        .await
        {
            // Ring mode: each node holds the metadata of the families its series carry.
            for a in answers {
                let serde_json::Value::Object(m) = a else {
                    continue;
                };
                for (family, entries) in m {
                    data.entry(family).or_insert(entries);
                }
            }
            if let Some(limit) = limit {
                let keep: Vec<String> = data.keys().take(limit).cloned().collect();
                data.retain(|k, _| keep.contains(k));
            }
        }
        let mut body = serde_json::json!({"status": "success", "data": data});
        if !warnings.is_empty() {
            body["warnings"] = serde_json::json!(warnings);
        }
        Ok(json_response(body.to_string()))
    };
    run.await.unwrap_or_else(ApiError::into_prom_json)
}

/// The exemplars of this node's answer `local` (JSON) and of the peers' `data`, per series
/// once, each exemplar once, in time order.
fn merge_exemplars(local: &str, answers: Vec<serde_json::Value>, warnings: Vec<String>) -> String {
    use serde_json::Value;
    use std::collections::BTreeMap;
    let mut series: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    let local: Value = serde_json::from_str(local).unwrap_or(Value::Null);
    let all = std::iter::once(local.get("data").cloned().unwrap_or(Value::Null)).chain(answers);
    for data in all {
        let Value::Array(items) = data else { continue };
        for item in items {
            let labels = item.get("seriesLabels").cloned().unwrap_or(Value::Null);
            let key = labels.to_string();
            let entry = series.entry(key).or_insert_with(|| (labels, Vec::new()));
            if let Some(Value::Array(ex)) = item.get("exemplars") {
                for e in ex {
                    if !entry.1.contains(e) {
                        entry.1.push(e.clone());
                    }
                }
            }
        }
    }
    let data: Vec<Value> = series
        .into_values()
        .map(|(labels, mut ex)| {
            ex.sort_by(|a, b| {
                let t = |v: &Value| v.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0);
                t(a).total_cmp(&t(b))
            });
            serde_json::json!({"seriesLabels": labels, "exemplars": ex})
        })
        .collect();
    let mut body = serde_json::json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = serde_json::json!(warnings);
    }
    body.to_string()
}

fn bad_param(which: &str, v: &str) -> ApiError {
    ApiError::bad_data(format!(
        "invalid parameter {which:?}: cannot parse {v:?} to a valid timestamp"
    ))
}

/// Prometheus's JSON: `seriesLabels`, then `exemplars` with `labels`, `value` as a string
/// and `timestamp` as seconds with up to three decimals (`jsonutil.MarshalTimestamp`).
pub(crate) fn exemplars_json(found: &[SeriesExemplars]) -> String {
    let mut s = String::from(r#"{"status":"success","data":["#);
    for (i, se) in found.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(r#"{"seriesLabels":"#);
        labels_json(&mut s, &se.series);
        s.push_str(r#","exemplars":["#);
        for (j, e) in se.exemplars.iter().enumerate() {
            if j > 0 {
                s.push(',');
            }
            s.push_str(r#"{"labels":"#);
            labels_json(&mut s, &e.labels);
            s.push_str(r#","value":""#);
            s.push_str(&format_value(e.value));
            s.push_str(r#"","timestamp":"#);
            format_timestamp(&mut s, e.t);
            s.push('}');
        }
        s.push_str("]}");
    }
    s.push_str("]}");
    s
}

fn labels_json(s: &mut String, labels: &[(Box<str>, Box<str>)]) {
    s.push('{');
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Serialising a str cannot fail.
        s.push_str(&serde_json::to_string(&**n).expect("string"));
        s.push(':');
        s.push_str(&serde_json::to_string(&**v).expect("string"));
    }
    s.push('}');
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, with Prometheus's `NaN`, `+Inf`, `-Inf`.
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust's Display is the shortest round-trip form without an exponent, as 'f', -1.
        format!("{v}")
    }
}

/// Prometheus's `jsonutil.MarshalTimestamp`: seconds, then `.` and the milliseconds with
/// leading zeros, trailing zeros kept, no fraction when it is zero.
pub(crate) fn format_timestamp(s: &mut String, t: i64) {
    let (neg, t) = (t < 0, t.unsigned_abs());
    if neg {
        s.push('-');
    }
    let _ = write!(s, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(s, ".{frac:03}");
    }
}

/// The series selectors of an exemplar query: the query itself if it is one, else the
/// selectors found in simple PromQL (function calls, aggregations with `by`/`without`,
/// binary operators, ranges, offsets).
pub(crate) fn extract_selectors(q: &str) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let q = q.trim();
    if q.is_empty() {
        return Err(ApiError::bad_data("query: no expression given"));
    }
    if let Ok(m) = parse_selector(q) {
        return Ok(vec![m]);
    }
    let unsupported = |why: &str| {
        ApiError::bad_data(format!(
            "query: {why}; weft reads a series selector, or the selectors inside simple \
             PromQL (full PromQL is not supported here)"
        ))
    };
    let b = q.as_bytes();
    let mut out: Vec<Vec<Matcher>> = Vec::new();
    let mut i = 0;
    let mut depth = 0usize;
    let is_ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i).ok_or_else(|| unsupported("unterminated string"))?;
        } else if c == b'[' {
            i += b[i..]
                .iter()
                .position(|&x| x == b']')
                .ok_or_else(|| unsupported("unclosed '['"))?
                + 1;
        } else if c == b'#' {
            // A comment runs to the end of the line.
            i += b[i..]
                .iter()
                .position(|&x| x == b'\n')
                .unwrap_or(b.len() - i);
        } else if c == b'{' {
            let end = selector_end(b, i).ok_or_else(|| unsupported("unclosed '{'"))?;
            out.push(parse_selector(&q[i..end]).map_err(|e| unsupported(&e.to_string()))?);
            i = end;
        } else if c.is_ascii_digit() || c == b'.' {
            // Numbers and durations (`5m`, `1e3`, `0x1f`).
            while i < b.len() && (is_ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word = &q[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            let lower = word.to_ascii_lowercase();
            match lower.as_str() {
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                    // A label list follows (optional after group_*): skip it.
                    if next == Some(b'(') {
                        i = j
                            + b[j..]
                                .iter()
                                .position(|&x| x == b')')
                                .ok_or_else(|| unsupported("unclosed '('"))?
                            + 1;
                    }
                }
                "and" | "or" | "unless" | "bool" | "offset" | "inf" | "nan" => {}
                _ if next == Some(b'(') => {} // a function or aggregation
                // An aggregation with its grouping first: `sum by (job) (x)`.
                _ if matches!(next_word(&q[j..]).as_str(), "by" | "without") => {}
                _ if next == Some(b'{') => {
                    let end = selector_end(b, j).ok_or_else(|| unsupported("unclosed '{'"))?;
                    let sel = format!("{word}{}", &q[j..end]);
                    out.push(parse_selector(&sel).map_err(|e| unsupported(&e.to_string()))?);
                    i = end;
                }
                _ => out.push(parse_selector(word).map_err(|e| unsupported(&e.to_string()))?),
            }
        } else {
            match c {
                b'(' => depth += 1,
                b')' if depth == 0 => return Err(unsupported("unbalanced ')'")),
                b')' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        if out.len() > MAX_SELECTORS {
            return Err(unsupported(&format!("more than {MAX_SELECTORS} selectors")));
        }
    }
    if depth != 0 {
        return Err(unsupported("unclosed '('"));
    }
    Ok(out)
}

/// The identifier `s` starts with, lower-cased.
fn next_word(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The index after the closing quote of the string starting at `i` (escapes honoured
/// except in backquoted strings).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' && q != b'`' {
            j += 2;
            continue;
        }
        if b[j] == q {
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// The index after the `}` closing the `{` at `i`, strings skipped.
fn selector_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => j = skip_string(b, j)?,
            b'}' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(q: &str) -> Vec<String> {
        extract_selectors(q)
            .unwrap()
            .iter()
            .map(|ms| {
                ms.iter()
                    .map(|m| format!("{}{:?}{}", m.name, m.op, m.value))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn selectors_come_out_of_simple_promql() {
        assert_eq!(names("up"), ["__name__Equp"]);
        assert_eq!(names(r#"up{job="a"}"#), [r#"__name__Equp,jobEqa"#]);
        assert_eq!(
            names(r#"rate(http_requests_total{code=~"5.."}[5m] offset 1h)"#),
            ["__name__Eqhttp_requests_total,codeRe5.."]
        );
        assert_eq!(
            names(r#"sum by (job, le) (rate(a_bucket[1m])) / on(job) group_left b"#),
            ["__name__Eqa_bucket", "__name__Eqb"]
        );
        assert_eq!(
            names(r#"label_replace(x, "dst", "$1", "src", "(.*)") > bool 0.5"#),
            ["__name__Eqx"]
        );
        assert_eq!(names(r#"{__name__="x", a="}"}"#), [r#"__name__Eqx,aEq}"#]);
        assert_eq!(
            names("x or bytes_total"),
            ["__name__Eqx", "__name__Eqbytes_total"]
        );
        assert!(names("1 + 2").is_empty());
    }

    #[test]
    fn unreadable_queries_are_400_naming_the_limit() {
        for q in ["", "rate(x{a=\"b\"", "x{a=~\"(\"}", "{}", "sum(", "x)"] {
            let e = extract_selectors(q).unwrap_err();
            assert_eq!(e.class, super::super::error::ErrorClass::BadData, "{q}");
        }
        let e = extract_selectors("rate(x{a=\"b\"").unwrap_err();
        assert!(
            e.message.contains("full PromQL is not supported"),
            "{}",
            e.message
        );
    }

    proptest::proptest! {
        /// Untrusted query text: any string is selectors or a 400, never a panic or a hang.
        #[test]
        fn extraction_never_panics(q in "[a-z_(){}\\[\\]=~!\",' 0-9.:#`\\\\-]{0,40}") {
            let _ = extract_selectors(&q);
        }

        #[test]
        fn extraction_never_panics_on_any_unicode(q in ".{0,40}") {
            let _ = extract_selectors(&q);
        }
    }

    #[test]
    fn values_and_timestamps_are_formatted_as_prometheus_does() {
        let cases: [(f64, &str); 7] = [
            (1.5, "1.5"),
            (1.0, "1"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(format_value(v), want);
        }
        for (t, want) in [
            (1_600_000_000_123i64, "1600000000.123"),
            (1_600_000_000_000, "1600000000"),
            (1_600_000_000_005, "1600000000.005"),
            (1_600_000_000_050, "1600000000.050"),
            (-1_500, "-1.500"),
        ] {
            let mut s = String::new();
            format_timestamp(&mut s, t);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn ring_exemplar_answers_merge_per_series_each_exemplar_once_in_time_order() {
        let local = r#"{"status":"success","data":[{"seriesLabels":{"__name__":"a"},"exemplars":[{"labels":{"t":"1"},"value":"1","timestamp":2.5}]}]}"#;
        let peer1: serde_json::Value = serde_json::from_str(
            r#"[{"seriesLabels":{"__name__":"a"},"exemplars":[{"labels":{"t":"0"},"value":"0","timestamp":1},{"labels":{"t":"1"},"value":"1","timestamp":2.5}]},{"seriesLabels":{"__name__":"b"},"exemplars":[]}]"#,
        )
        .unwrap();
        let got: serde_json::Value =
            serde_json::from_str(&merge_exemplars(local, vec![peer1], vec!["w".into()])).unwrap();
        let data = got["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        let a = data[0]["exemplars"].as_array().unwrap();
        assert_eq!(a.len(), 2, "the exemplar both held is kept once: {got}");
        assert_eq!(a[0]["timestamp"], 1);
        assert_eq!(got["warnings"][0], "w");
    }
}
