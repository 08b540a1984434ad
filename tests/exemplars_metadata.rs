//! Exemplars and metric metadata against the binary: 1.0 pushes carrying both, read back
//! exactly from `/api/v1/query_exemplars` and `/api/v1/metadata` (Prometheus's JSON shapes),
//! per tenant, across a graceful restart (checkpoint at exit) and a `kill -9`, and the
//! per-tenant capacity bound with its metrics.
//!
//! Needs the 1.0 decoder to fill `WriteBatch.exemplars` and `.metadata` (branch h-rw2).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use weft::proto::prompb::{Exemplar, Label, MetricMetadata, Sample, TimeSeries, WriteRequest};

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// A series with one sample per exemplar, at the exemplar's time.
// `..Default::default()`: TimeSeries gains `histograms` with the 1.0 histogram decoding.
#[allow(clippy::needless_update)]
fn series(name: &str, job: &str, exemplars: &[(&str, f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels(&[("__name__", name), ("job", job)]),
        samples: exemplars
            .iter()
            .map(|&(_, v, t)| Sample {
                value: v,
                timestamp: t,
            })
            .collect(),
        exemplars: exemplars
            .iter()
            .map(|&(trace, value, timestamp)| Exemplar {
                labels: labels(&[("trace_id", trace)]),
                value,
                timestamp,
            })
            .collect(),
        ..Default::default()
    }
}

fn meta(kind: i32, family: &str, help: &str, unit: &str) -> MetricMetadata {
    MetricMetadata {
        r#type: kind,
        metric_family_name: family.to_string(),
        help: help.to_string(),
        unit: unit.to_string(),
    }
}

/// Prometheus's `jsonutil.MarshalTimestamp` of `t` ms, as a JSON number.
fn ts(t: i64) -> Value {
    if t % 1000 == 0 {
        return json!(t / 1000);
    }
    serde_json::from_str(&format!("{}.{:03}", t / 1000, t % 1000)).unwrap()
}

fn exemplars(weft: &Weft, tenant: &str, query: &str) -> (u16, Value) {
    weft.api_get(Some(tenant), "/api/v1/query_exemplars", &[("query", query)])
}

fn metadata(weft: &Weft, tenant: &str, params: &[(&str, &str)]) -> (u16, Value) {
    weft.api_get(Some(tenant), "/api/v1/metadata", params)
}

#[test]
fn exemplars_and_metadata_read_back_exactly_per_tenant_across_restarts_and_kill_9() {
    let data = TempDir::new("weft-exmeta");
    let mut weft = Weft::start_on(data.path(), &[], None);
    // Millisecond fractions that need leading zeros, and a trailing zero.
    let t0 = (now_ms() / 1000 - 60) * 1000;
    let (t1, t2, t3) = (t0 + 5, t0 + 1050, t0 + 2123);
    let req = WriteRequest {
        timeseries: vec![
            series(
                "rpc_duration_seconds_bucket",
                "api",
                &[("aaa", 0.31, t1), ("bbb", 0.42, t2)],
            ),
            series("rpc_duration_seconds_bucket", "db", &[("ccc", 7.0, t3)]),
        ],
        metadata: vec![
            meta(3, "rpc_duration_seconds", "RPC latency.", "seconds"),
            meta(1, "rpc_requests_total", "RPCs served.", ""),
        ],
    };
    let r = weft.push("team-a", &req);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Exemplars-Written")
            .as_deref(),
        Some("3")
    );
    weft.push_ok(
        "team-b",
        &WriteRequest {
            timeseries: vec![series(
                "rpc_duration_seconds_bucket",
                "api",
                &[("zzz", 1.0, t1)],
            )],
            metadata: vec![meta(2, "queue_length", "Items queued.", "")],
        },
    );
    // Metadata alone, as Prometheus sends it (a request without series): the last one wins.
    weft.push_ok(
        "team-a",
        &WriteRequest {
            timeseries: vec![],
            metadata: vec![meta(1, "rpc_requests_total", "RPCs served, all codes.", "")],
        },
    );

    let want_a = json!({"status": "success", "data": [
        {"seriesLabels": {"__name__": "rpc_duration_seconds_bucket", "job": "api"},
         "exemplars": [
            {"labels": {"trace_id": "aaa"}, "value": "0.31", "timestamp": ts(t1)},
            {"labels": {"trace_id": "bbb"}, "value": "0.42", "timestamp": ts(t2)}]},
        {"seriesLabels": {"__name__": "rpc_duration_seconds_bucket", "job": "db"},
         "exemplars": [
            {"labels": {"trace_id": "ccc"}, "value": "7", "timestamp": ts(t3)}]},
    ]});
    let want_meta_a = json!({"status": "success", "data": {
        "rpc_duration_seconds": [{"type": "histogram", "help": "RPC latency.", "unit": "seconds"}],
        "rpc_requests_total": [{"type": "counter", "help": "RPCs served, all codes.", "unit": ""}],
    }});
    let check = |weft: &Weft, when: &str| {
        assert_eq!(
            exemplars(weft, "team-a", "rpc_duration_seconds_bucket"),
            (200, want_a.clone()),
            "{when}"
        );
        // Selectors inside PromQL, and a time range that keeps only the middle exemplar.
        let (status, v) = weft.api_get(
            Some("team-a"),
            "/api/v1/query_exemplars",
            &[
                ("query", r#"histogram_quantile(0.9, sum by (le) (rate(rpc_duration_seconds_bucket{job="api"}[5m])))"#),
                ("start", &format!("{}.{:03}", (t1 + 1) / 1000, (t1 + 1) % 1000)),
                ("end", &format!("{}", (t3 - 1) as f64 / 1000.0)),
            ],
        );
        assert_eq!(status, 200, "{when}: {v}");
        assert_eq!(
            v["data"],
            json!([{"seriesLabels": {"__name__": "rpc_duration_seconds_bucket", "job": "api"},
                   "exemplars": [{"labels": {"trace_id": "bbb"}, "value": "0.42", "timestamp": ts(t2)}]}]),
            "{when}"
        );
        // Tenants are isolated.
        let (_, b) = exemplars(weft, "team-b", "rpc_duration_seconds_bucket");
        assert_eq!(b["data"].as_array().unwrap().len(), 1, "{when}: {b}");
        assert_eq!(b["data"][0]["exemplars"][0]["labels"]["trace_id"], "zzz");
        assert_eq!(
            metadata(weft, "team-a", &[]),
            (200, want_meta_a.clone()),
            "{when}"
        );
        let (_, mb) = metadata(weft, "team-b", &[]);
        assert_eq!(
            mb["data"],
            json!({"queue_length": [{"type": "gauge", "help": "Items queued.", "unit": ""}]}),
            "{when}"
        );
        let (_, one) = metadata(weft, "team-a", &[("metric", "rpc_requests_total")]);
        assert_eq!(one["data"].as_object().unwrap().len(), 1, "{when}: {one}");
        let (_, lim) = metadata(weft, "team-a", &[("limit", "1"), ("limit_per_metric", "1")]);
        assert_eq!(lim["data"].as_object().unwrap().len(), 1, "{when}: {lim}");
    };
    check(&weft, "before any restart");

    // The POST form of query_exemplars answers the same.
    let r = weft
        .client()
        .post(weft.url("/api/v1/query_exemplars"))
        .header("X-Scope-OrgID", "team-a")
        .form(&[("query", "rpc_duration_seconds_bucket")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.bytes().unwrap()).unwrap(),
        want_a
    );

    // Errors: Prometheus's error JSON, 400.
    for (params, needle) in [
        (vec![("query", "sum(")], "full PromQL is not supported"),
        (vec![("query", "up"), ("start", "yesterday")], "start"),
        (
            vec![("query", "up"), ("start", "10"), ("end", "5")],
            "end timestamp must not be before start",
        ),
    ] {
        let (status, v) = weft.api_get(Some("team-a"), "/api/v1/query_exemplars", &params);
        assert_eq!(status, 400, "{params:?}: {v}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "bad_data");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{params:?}: {v}"
        );
    }
    let (status, v) = metadata(&weft, "team-a", &[("limit", "x")]);
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("limit must be a number"))
    );

    // Graceful restart: the exit checkpoint deletes segments, the stores are logged after it.
    weft.signal(libc::SIGTERM);
    weft.wait_exit(Duration::from_secs(30));
    let mut weft = Weft::start_on(data.path(), &[], None);
    check(&weft, "after a graceful restart");

    // kill -9 after one more push: everything acknowledged comes back.
    let t4 = t3 + 1000;
    weft.push_ok(
        "team-a",
        &WriteRequest {
            timeseries: vec![series(
                "rpc_duration_seconds_bucket",
                "db",
                &[("ddd", 8.5, t4)],
            )],
            metadata: vec![],
        },
    );
    weft.signal(libc::SIGKILL);
    weft.wait_exit(Duration::from_secs(10));
    let weft = Weft::start_on(data.path(), &[], None);
    let (_, v) = exemplars(&weft, "team-a", r#"{job="db"}"#);
    assert_eq!(
        v["data"][0]["exemplars"],
        json!([{"labels": {"trace_id": "ccc"}, "value": "7", "timestamp": ts(t3)},
               {"labels": {"trace_id": "ddd"}, "value": "8.5", "timestamp": ts(t4)}])
    );
    assert_eq!(metadata(&weft, "team-a", &[]), (200, want_meta_a));
}

#[test]
fn the_capacity_bound_evicts_the_oldest_and_the_metrics_show_it() {
    let weft = Weft::start(&["--limits.max-exemplars-per-tenant=3"]);
    let t0 = now_ms() - 60_000;
    for i in 0..5 {
        let t = t0 + i * 1000;
        let trace = format!("trace-{i}");
        weft.push_ok(
            "t",
            &WriteRequest {
                timeseries: vec![series("req_total", "api", &[(&trace, i as f64, t)])],
                metadata: vec![],
            },
        );
    }
    let (_, v) = exemplars(&weft, "t", "req_total");
    let traces: Vec<&str> = v["data"][0]["exemplars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["labels"]["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces, ["trace-2", "trace-3", "trace-4"]);
    assert_eq!(weft.metric("weft_exemplars_stored", &[]), Some(3.0));
    assert_eq!(weft.metric("weft_exemplars_appended_total", &[]), Some(5.0));
    assert_eq!(weft.metric("weft_exemplars_evicted_total", &[]), Some(2.0));
    // The last push again is a no-op that counts as written.
    let again = WriteRequest {
        timeseries: vec![series("req_total", "api", &[("trace-4", 4.0, t0 + 4000)])],
        metadata: vec![],
    };
    let r = weft.push("t", &again);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Exemplars-Written")
            .as_deref(),
        Some("1")
    );
    assert_eq!(weft.metric("weft_exemplars_appended_total", &[]), Some(5.0));
    // An exemplar older than the series' newest: the push succeeds, the exemplar is counted.
    let r = weft.push(
        "t",
        &WriteRequest {
            timeseries: vec![TimeSeries {
                exemplars: series("req_total", "api", &[("old", 1.0, t0)]).exemplars,
                ..series("req_total", "api", &[("new", 9.0, t0 + 9000)])
            }],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Exemplars-Written")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        weft.metric(
            "weft_exemplars_rejected_total",
            &[("reason", "out_of_order")]
        ),
        Some(1.0)
    );
}
