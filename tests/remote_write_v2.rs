//! Remote write 2.0 receiver compliance, through the real binary: one test per case of the
//! receiver suite of prometheus/compliance (`remotewrite/receiver`: request_test.go,
//! metric_test.go, histograms_test.go, exemplar_test.go, metadata_test.go, rw1_compat_test.go)
//! and of the 2.0 spec (`X-Prometheus-Remote-Write-*-Written` on every answer).
//!
//! Tests that need native histograms stored (the hist part of issue 10) or exemplars and
//! metadata served (the exmeta part) assert the final behaviour; their names end in
//! `_read_back` / say histograms, and they pass once those parts are merged.

mod common;

use std::collections::HashMap;

use common::*;
use prost::Message;
use weft::model::{
    CounterResetHint, FloatHistogram, Histogram as IntHistogram, HistogramValue, Span,
};
use weft::proto::prompb::{MatcherType, Query, ReadRequest, ResponseType, WriteRequest};
use weft::proto::prompb_v2::{self, Histogram};

const TENANT: &str = "rw2";
const CT_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
/// Prometheus's StaleNaN and its "normal" NaN (`model/value`).
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;

/// The headers Prometheus 3 sends with a 2.0 request.
fn v2_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Type", CT_V2),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ("X-Scope-OrgID", TENANT),
    ]
}

/// An exemplar: labels, value, timestamp.
type Exemplar = (Vec<(String, String)>, f64, i64);

/// One series of a 2.0 request.
#[derive(Debug, Clone, Default)]
struct S {
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
    histograms: Vec<(i64, HistogramValue)>,
    exemplars: Vec<Exemplar>,
    metadata: Option<(i32, String, String)>,
    created_timestamp: i64,
}

fn s(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> S {
    S {
        labels: labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        samples: samples.to_vec(),
        ..S::default()
    }
}

/// Encodes a 2.0 request (not compressed), interning every string (`""` first).
fn v2_request(series: &[S]) -> Vec<u8> {
    let mut table = vec![String::new()];
    let mut index: HashMap<String, u32> = HashMap::from([(String::new(), 0)]);
    let mut sym = |s: &str| -> u32 {
        *index.entry(s.to_string()).or_insert_with(|| {
            table.push(s.to_string());
            table.len() as u32 - 1
        })
    };
    let mut timeseries = Vec::new();
    for s in series {
        let labels_refs = s
            .labels
            .iter()
            .flat_map(|(n, v)| [sym(n), sym(v)])
            .collect();
        let exemplars = s
            .exemplars
            .iter()
            .map(|(l, value, timestamp)| prompb_v2::Exemplar {
                labels_refs: l.iter().flat_map(|(n, v)| [sym(n), sym(v)]).collect(),
                value: *value,
                timestamp: *timestamp,
            })
            .collect();
        let metadata = s
            .metadata
            .as_ref()
            .map(|(t, help, unit)| prompb_v2::Metadata {
                r#type: *t,
                help_ref: sym(help),
                unit_ref: sym(unit),
            });
        timeseries.push(prompb_v2::TimeSeries {
            labels_refs,
            samples: s
                .samples
                .iter()
                .map(|&(timestamp, value)| prompb_v2::Sample { value, timestamp })
                .collect(),
            histograms: s
                .histograms
                .iter()
                .map(|(t, h)| Histogram::from_model(*t, h))
                .collect(),
            exemplars,
            metadata,
            created_timestamp: s.created_timestamp,
        });
    }
    prompb_v2::Request {
        symbols: table,
        timeseries,
    }
    .encode_to_vec()
}

fn push_v2(w: &Weft, series: &[S]) -> Resp {
    w.push_raw(&v2_headers(), snappy(&v2_request(series)))
}

/// The three Written headers; each must be present, whatever the status.
fn written(r: &Resp) -> (u64, u64, u64) {
    let h = |name: &str| -> u64 {
        r.header(name)
            .unwrap_or_else(|| panic!("status {}: no {name} header; body {}", r.status, r.text()))
            .parse()
            .unwrap_or_else(|e| panic!("{name} is not a number: {e}"))
    };
    (
        h("X-Prometheus-Remote-Write-Samples-Written"),
        h("X-Prometheus-Remote-Write-Histograms-Written"),
        h("X-Prometheus-Remote-Write-Exemplars-Written"),
    )
}

/// Checks status and the Written headers of one answer.
fn check(r: &Resp, status: u16, samples: u64, histograms: u64, exemplars: u64, what: &str) {
    assert_eq!(r.status, status, "{what}: body {}", r.text());
    assert_eq!(
        written(r),
        (samples, histograms, exemplars),
        "{what}: Written headers (samples, histograms, exemplars)"
    );
}

/// Samples of the series named `name`, as (labels, (t, value bits)).
fn read_name(w: &Weft, name: &str) -> SeriesSet {
    let q = query(
        0,
        i64::MAX,
        vec![matcher(MatcherType::Eq, "__name__", name)],
    );
    w.read_samples(Some(TENANT), &[q]).remove(0)
}

fn t0() -> i64 {
    now_ms() - 60_000
}

// ---- request_test.go ----

/// `TestBadContentTypes`: unsupported content types get exactly 415 (the compliance suite also
/// corrupts the body, so a receiver that decodes first would answer 400).
#[test]
fn bad_content_types_get_exactly_415() {
    let w = Weft::start(&[]);
    let mut body = snappy(&v2_request(&[s(&[("__name__", "up")], &[(t0(), 1.0)])]));
    body[0] = b'0';
    for ct in [
        "application/json",
        "image/png",
        "text/plain",
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/x-protobuf;proto=prometheus.ReadRequest",
        "application/x-protobuf;proto=",
    ] {
        let r = w.push_raw(
            &[("Content-Type", ct), ("Content-Encoding", "snappy")],
            body.clone(),
        );
        check(&r, 415, 0, 0, 0, ct);
    }
}

/// `TestBadContentEncodings`: anything but snappy gets exactly 415.
#[test]
fn bad_content_encodings_get_exactly_415() {
    let w = Weft::start(&[]);
    let mut body = snappy(&v2_request(&[s(&[("__name__", "up")], &[(t0(), 1.0)])]));
    body[0] = b'0';
    for ce in ["gzip", "deflate", "zstd", "identity", "snappy, gzip"] {
        for ct in [CT_V2, "application/x-protobuf"] {
            let r = w.push_raw(
                &[("Content-Type", ct), ("Content-Encoding", ce)],
                body.clone(),
            );
            check(&r, 415, 0, 0, 0, &format!("{ct} with {ce}"));
        }
    }
}

/// `TestCorruptRequestBody`: 4xx, and the message says where.
#[test]
fn corrupt_bodies_get_4xx_with_a_location() {
    let w = Weft::start(&[]);
    let good = v2_request(&[s(&[("__name__", "up")], &[(t0(), 1.0)])]);
    let mut first_byte = snappy(&good);
    first_byte[0] = b'0';
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    // Hand-made 2.0 bodies: symbols 4, series 5, labels_refs 1 (packed).
    let bad_ref = [
        &[0x22, 0x00, 0x22, 0x01, b'a'][..],
        &[0x2a, 0x04, 0x0a, 0x02, 0x01, 0x05],
    ]
    .concat();
    let odd_refs = [
        &[0x22, 0x00, 0x22, 0x01, b'a'][..],
        &[0x2a, 0x03, 0x0a, 0x01, 0x01],
    ]
    .concat();
    let bad_symbol0 = vec![0x22, 0x01, b'x'];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("first byte replaced", first_byte, "snappy"),
        ("not snappy at all", b"hello, world".to_vec(), "snappy"),
        ("truncated protobuf", snappy(&truncated), "byte"),
        (
            "symbol reference out of range",
            snappy(&bad_ref),
            "timeseries[0].labels_refs",
        ),
        (
            "odd number of label refs",
            snappy(&odd_refs),
            "odd number of label references",
        ),
        ("first symbol not empty", snappy(&bad_symbol0), "symbols[0]"),
    ];
    for (what, body, says) in cases {
        let r = w.push_raw(&v2_headers(), body);
        assert!(
            (400..500).contains(&r.status),
            "{what}: status {} {}",
            r.status,
            r.text()
        );
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(
            r.text().contains(says),
            "{what}: {:?} lacks {says:?}",
            r.text()
        );
        assert_eq!(written(&r), (0, 0, 0), "{what}");
    }
    w.assert_still_serves("corrupt 2.0 bodies");
}

// ---- metric_test.go ----

/// `TestSingleMetric`: 1.0, StaleNaN, NaN, +Inf, -Inf are stored bit for bit. (No -0.0:
/// proto3 encoders skip a zero double, and `-0.0 == 0.0`, so it arrives as +0.0.)
#[test]
fn special_float_values_are_stored_bit_exact() {
    let w = Weft::start(&[]);
    let t = t0();
    let values = [
        ("one", 1.0f64.to_bits()),
        ("stale_nan", STALE_NAN),
        ("nan", NORMAL_NAN),
        ("inf", f64::INFINITY.to_bits()),
        ("neg_inf", f64::NEG_INFINITY.to_bits()),
        ("max", f64::MAX.to_bits()),
        ("subnormal", 1),
    ];
    let series: Vec<S> = values
        .iter()
        .map(|(v, bits)| {
            s(
                &[("__name__", "rw2_special"), ("v", v), ("job", "test")],
                &[(t, f64::from_bits(*bits))],
            )
        })
        .collect();
    let r = push_v2(&w, &series);
    check(&r, 204, values.len() as u64, 0, 0, "special values");
    let got = read_name(&w, "rw2_special");
    assert_eq!(got.len(), values.len());
    for (v, bits) in values {
        let want = labels(&[("__name__", "rw2_special"), ("job", "test"), ("v", v)]);
        let (_, samples) = got
            .iter()
            .find(|(l, _)| *l == want)
            .unwrap_or_else(|| panic!("{v} not read back"));
        assert_eq!(samples, &vec![(t, bits)], "{v}: bits");
    }
}

/// `TestSingleMetric` "newlines", and label values of any UTF-8; an empty value means the
/// label is absent (as in Prometheus).
#[test]
fn odd_label_values_round_trip() {
    let w = Weft::start(&[]);
    let t = t0();
    let series = [
        s(
            &[
                ("__name__", "rw2_odd"),
                ("job", "test\njob\n"),
                ("instance", "localhost:9090"),
            ],
            &[(t, 1.0)],
        ),
        s(
            &[
                ("__name__", "rw2_odd"),
                ("job", "zürich 東京 🚀"),
                ("instance", ""),
            ],
            &[(t, 2.0)],
        ),
        s(
            &[("__name__", "rw2_odd"), ("job", "\"quoted\" \\ {x=\"y\"}")],
            &[(t, 3.0)],
        ),
    ];
    let r = push_v2(&w, &series);
    check(&r, 204, 3, 0, 0, "odd values");
    let got = read_name(&w, "rw2_odd");
    let want: SeriesSet = {
        let mut v = vec![
            (
                labels(&[
                    ("__name__", "rw2_odd"),
                    ("instance", "localhost:9090"),
                    ("job", "test\njob\n"),
                ]),
                vec![(t, 1.0f64.to_bits())],
            ),
            (
                labels(&[("__name__", "rw2_odd"), ("job", "zürich 東京 🚀")]),
                vec![(t, 2.0f64.to_bits())],
            ),
            (
                labels(&[("__name__", "rw2_odd"), ("job", "\"quoted\" \\ {x=\"y\"}")]),
                vec![(t, 3.0f64.to_bits())],
            ),
        ];
        v.sort();
        v
    };
    assert_eq!(got, want);
}

/// `TestSingleMetric` "dots" and "spaces": Prometheus 3 accepts UTF-8 metric and label names
/// (`--validation.name-validation-scheme=utf8`, the default). Pushed over 2.0 and 1.0, read
/// back exact by remote read and by `/api/v1/series` with Prometheus 3's quoted selectors.
#[test]
fn utf8_metric_and_label_names_are_accepted() {
    let w = Weft::start(&[]);
    let t = t0();
    let v2_series: [(&[(&str, &str)], f64); 4] = [
        (
            &[("__name__", "resource.cpu.usage"), ("job.name", "testjob")],
            1.0,
        ),
        (
            &[("__name__", "resource cpu usage"), ("job name", "testjob")],
            2.0,
        ),
        (
            &[("__name__", "résumé.東京"), ("🚀 \"q\"\\", "zürich")],
            3.0,
        ),
        (
            &[
                ("__name__", "http.server.duration"),
                ("service.name", "api"),
            ],
            4.0,
        ),
    ];
    let series: Vec<S> = v2_series.iter().map(|(l, v)| s(l, &[(t, *v)])).collect();
    let r = push_v2(&w, &series);
    check(&r, 204, 4, 0, 0, "UTF-8 names over 2.0");
    // The same kinds of names over 1.0, one into a series 2.0 created.
    let v1_series = [
        (
            labels(&[("__name__", "otel.metric-1"), ("k8s.pod", "p-1")]),
            5.0,
        ),
        (
            labels(&[
                ("__name__", "http.server.duration"),
                ("service.name", "api"),
            ]),
            6.0,
        ),
    ];
    let req = WriteRequest {
        timeseries: v1_series
            .iter()
            .map(|(l, v)| series_proto(l, &[(t + 1, f64::to_bits(*v))]))
            .collect(),
        metadata: vec![],
    };
    w.push_ok(TENANT, &req);

    // Remote read: exact labels and samples.
    for (l, v) in v2_series.iter().take(3) {
        let name = l[0].1;
        assert_eq!(
            read_name(&w, name),
            vec![(labels(l), vec![(t, v.to_bits())])],
            "{name}"
        );
    }
    assert_eq!(
        read_name(&w, "otel.metric-1"),
        vec![(v1_series[0].0.clone(), vec![(t + 1, 5.0f64.to_bits())])]
    );
    assert_eq!(
        read_name(&w, "http.server.duration"),
        vec![(
            v1_series[1].0.clone(),
            vec![(t, 4.0f64.to_bits()), (t + 1, 6.0f64.to_bits())]
        )]
    );
    // A remote-read matcher on a UTF-8 label name.
    let q = query(
        0,
        i64::MAX,
        vec![matcher(MatcherType::Re, "job name", "test.*")],
    );
    let got = w.read_samples(Some(TENANT), &[q]).remove(0);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, labels(v2_series[1].0));

    // `/api/v1/series` with every quoted form Prometheus 3 writes.
    let series_of = |sel: &str| -> Vec<Labels> {
        w.series(Some(TENANT), &[sel], &[])
            .into_iter()
            .map(|m| m.into_iter().collect())
            .collect()
    };
    let owned = |l: &[(&str, &str)]| -> Labels { labels(l) };
    let cases: Vec<(&str, Vec<Labels>)> = vec![
        (r#"{"resource.cpu.usage"}"#, vec![owned(v2_series[0].0)]),
        (
            r#"{"resource cpu usage", "job name"="testjob"}"#,
            vec![owned(v2_series[1].0)],
        ),
        (r#"{"resource cpu usage", "job name"="other"}"#, vec![]),
        (r#"{__name__="résumé.東京"}"#, vec![owned(v2_series[2].0)]),
        (r#"{"🚀 \"q\"\\"=~"z.*"}"#, vec![owned(v2_series[2].0)]),
        (r#"{'k8s.pod'="p-1"}"#, vec![v1_series[0].0.clone()]),
        (
            r#"{"http.server.duration", "service.name"="api"}"#,
            vec![v1_series[1].0.clone()],
        ),
        (
            r#"{__name__=~"resource\\.cpu\\.usage"}"#,
            vec![owned(v2_series[0].0)],
        ),
    ];
    for (sel, want) in cases {
        let mut got = series_of(sel);
        got.sort();
        assert_eq!(got, want, "{sel}");
    }
    // Label names and values: UTF-8 names as they are, or `U__` value-encoded as Prometheus 3
    // takes them in the path.
    let names = w.labels(Some(TENANT), &[], &[]);
    for n in [
        "job.name",
        "job name",
        "service.name",
        "k8s.pod",
        "🚀 \"q\"\\",
    ] {
        assert!(names.iter().any(|x| x == n), "{n:?} not in {names:?}");
    }
    assert_eq!(
        w.label_values(Some(TENANT), "service.name", &[]),
        vec!["api"]
    );
    assert_eq!(
        w.label_values(Some(TENANT), "U__service_2e_name", &[]),
        vec!["api"]
    );
    assert_eq!(
        w.label_values(Some(TENANT), "job name", &[]),
        vec!["testjob"]
    );
    assert_eq!(
        w.label_values(Some(TENANT), "__name__", &[r#"{"job.name"="testjob"}"#]),
        vec!["resource.cpu.usage"]
    );
    // Unquoted, a dotted name is not a selector (as in Prometheus 3): 400.
    let sel = "http.server.duration";
    let (status, v) = w.api_get(Some(TENANT), "/api/v1/series", &[("match[]", sel)]);
    assert_eq!(status, 400, "{sel}: {v}");
    // `metric{"label.x"="v"}`: a legacy metric name with a quoted UTF-8 label name.
    let l = labels(&[("__name__", "legacy_name"), ("label.x", "v")]);
    w.push_ok(
        TENANT,
        &WriteRequest {
            timeseries: vec![series_proto(&l, &[(t, 7.0f64.to_bits())])],
            metadata: vec![],
        },
    );
    assert_eq!(series_of(r#"legacy_name{"label.x"="v"}"#), vec![l]);
}

/// `--validation.name-validation-scheme=legacy` keeps Prometheus 2's rule: a UTF-8 name is
/// refused with 400 naming it, over 2.0 and 1.0, and the legacy names of the push are stored.
#[test]
fn legacy_name_validation_refuses_utf8_names_with_400() {
    let w = Weft::start(&["--validation.name-validation-scheme=legacy"]);
    let t = t0();
    let good = s(&[("__name__", "legacy_ok"), ("job", "x")], &[(t, 1.0)]);
    let r = push_v2(
        &w,
        &[
            s(&[("__name__", "resource.cpu.usage")], &[(t, 1.0)]),
            good.clone(),
        ],
    );
    check(&r, 400, 1, 0, 0, "legacy: dotted metric name over 2.0");
    assert!(
        r.text()
            .contains("invalid metric name \"resource.cpu.usage\""),
        "{}",
        r.text()
    );
    let r = push_v2(
        &w,
        &[s(
            &[("__name__", "legacy_ok"), ("job name", "x")],
            &[(t, 1.0)],
        )],
    );
    check(&r, 400, 0, 0, 0, "legacy: label name with a space over 2.0");
    assert!(
        r.text().contains("invalid label name \"job name\""),
        "{}",
        r.text()
    );
    let r = w.push(
        TENANT,
        &WriteRequest {
            timeseries: vec![series_proto(
                &labels(&[("__name__", "legacy_ok"), ("k8s.pod", "p")]),
                &[(t, 1.0f64.to_bits())],
            )],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("invalid label name \"k8s.pod\""),
        "{}",
        r.text()
    );
    assert_eq!(read_name(&w, "resource.cpu.usage"), vec![]);
    assert_eq!(
        read_name(&w, "legacy_ok"),
        vec![(
            labels(&[("__name__", "legacy_ok"), ("job", "x")]),
            vec![(t, 1.0f64.to_bits())]
        )]
    );
}

/// `TestSingleMetric` / `TestMultipleMetrics` "without name label" and "empty metric": the
/// series is refused (4xx) and every other series of the request is stored and counted.
#[test]
fn series_without_a_name_are_refused_and_the_rest_counted() {
    let w = Weft::start(&[]);
    let t = t0();
    let nameless = s(
        &[("job", "testjob"), ("instance", "localhost:9090")],
        &[(t, 1.0)],
    );
    let empty = s(&[], &[(t, 1.0)]);
    let good = |i: &str| {
        s(
            &[
                ("__name__", "rw2_named"),
                ("job", "testjob"),
                ("instance", i),
            ],
            &[(t, 1.0)],
        )
    };
    let r = push_v2(&w, std::slice::from_ref(&nameless));
    check(&r, 400, 0, 0, 0, "one nameless series");
    assert!(r.text().contains("__name__"), "{}", r.text());
    let r = push_v2(&w, std::slice::from_ref(&empty));
    check(&r, 400, 0, 0, 0, "empty series");
    let r = push_v2(&w, &[nameless.clone(), nameless.clone(), nameless.clone()]);
    check(&r, 400, 0, 0, 0, "only nameless series");
    let r = push_v2(&w, &[nameless, good(":9091"), good(":9092"), good(":9093")]);
    check(&r, 400, 3, 0, 0, "1 of 4 nameless");
    assert_eq!(read_name(&w, "rw2_named").len(), 3);
}

/// Labels out of order are sorted (Prometheus sorts before it sends, others may not);
/// a repeated name is refused, naming it.
#[test]
fn unsorted_labels_are_sorted_and_duplicate_names_refused() {
    let w = Weft::start(&[]);
    let t = t0();
    let r = push_v2(
        &w,
        &[s(
            &[("zone", "b"), ("__name__", "rw2_unsorted"), ("app", "a")],
            &[(t, 1.0)],
        )],
    );
    check(&r, 204, 1, 0, 0, "unsorted");
    assert_eq!(
        read_name(&w, "rw2_unsorted"),
        vec![(
            labels(&[("__name__", "rw2_unsorted"), ("app", "a"), ("zone", "b")]),
            vec![(t, 1.0f64.to_bits())]
        )]
    );
    let r = push_v2(
        &w,
        &[
            s(
                &[("__name__", "rw2_dup"), ("a", "1"), ("a", "2")],
                &[(t, 1.0)],
            ),
            s(&[("__name__", "rw2_dup_ok")], &[(t, 1.0)]),
        ],
    );
    check(&r, 400, 1, 0, 0, "duplicate name");
    assert!(r.text().contains("duplicate"), "{}", r.text());
}

/// Many series in one request (as a 2.0 shard sends them), all counted and all read back.
#[test]
fn many_series_in_one_request() {
    let w = Weft::start(&[]);
    let t = t0();
    let n = 10_000;
    let series: Vec<S> = (0..n)
        .map(|i| {
            s(
                &[
                    ("__name__", "rw2_many"),
                    ("instance", &format!("host-{i:05}")),
                    ("job", "node"),
                ],
                &[(t, i as f64), (t + 1, -(i as f64) - 1.0)],
            )
        })
        .collect();
    let r = push_v2(&w, &series);
    check(&r, 204, 2 * n as u64, 0, 0, "many series");
    let got = read_name(&w, "rw2_many");
    assert_eq!(got.len(), n);
    for (l, samples) in &got {
        let i: f64 = l[1].1["host-".len()..].parse().unwrap();
        assert_eq!(
            samples,
            &vec![(t, i.to_bits()), (t + 1, (-i - 1.0).to_bits())],
            "{l:?}"
        );
    }
}

/// `TestCounterWithCreatedTimestamp`: accepted (weft ignores it; no zero sample is added).
#[test]
fn created_timestamp_is_accepted() {
    let w = Weft::start(&[]);
    let t = t0();
    let mut c = s(
        &[("__name__", "rw2_ct_total"), ("job", "api")],
        &[(t, 100.0)],
    );
    c.created_timestamp = t - 3_600_000;
    let r = push_v2(&w, &[c]);
    check(&r, 204, 1, 0, 0, "created timestamp");
    assert_eq!(
        read_name(&w, "rw2_ct_total")[0].1,
        vec![(t, 100.0f64.to_bits())]
    );
}

// ---- Written headers ----

/// Every answer carries the three headers: success, partial failure (only the stored part
/// counted), and errors before the head (0).
#[test]
fn written_headers_are_exact_on_success_and_partial_failure() {
    let w = Weft::start(&["--limits.max-series-per-tenant", "3"]);
    let t = t0();
    // Success.
    let r = push_v2(
        &w,
        &[
            s(
                &[("__name__", "rw2_w"), ("i", "1")],
                &[(t, 1.0), (t + 1, 2.0)],
            ),
            s(&[("__name__", "rw2_w"), ("i", "2")], &[(t, 1.0)]),
        ],
    );
    check(&r, 204, 3, 0, 0, "success");
    // Partial: one series out of order (older than its newest), one far in the future, one
    // good sample appended to an existing series.
    let r = push_v2(
        &w,
        &[
            s(&[("__name__", "rw2_w"), ("i", "1")], &[(t - 10, 0.5)]),
            s(&[("__name__", "rw2_w"), ("i", "2")], &[(t + 5, 3.0)]),
            s(
                &[("__name__", "rw2_w"), ("i", "3")],
                &[(now_ms() * 1000, 3.0)],
            ),
        ],
    );
    check(&r, 400, 1, 0, 0, "partial failure");
    // Series limit (3; two exist, the future-only series was never created): i=4 is
    // created, i=5 gets 429; the samples of i=2 and i=4 are counted.
    let r = push_v2(
        &w,
        &[
            s(&[("__name__", "rw2_w"), ("i", "2")], &[(t + 6, 4.0)]),
            s(&[("__name__", "rw2_w"), ("i", "4")], &[(t, 1.0)]),
            s(&[("__name__", "rw2_w"), ("i", "5")], &[(t, 1.0)]),
        ],
    );
    check(&r, 429, 2, 0, 0, "series limit");
    // 1.0 gets them too, and so do answers refused before decoding.
    let r = w.push_raw(
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Scope-OrgID", TENANT),
        ],
        snappy(
            &WriteRequest {
                timeseries: vec![series_proto(
                    &labels(&[("__name__", "rw2_w"), ("i", "1")]),
                    &[(t + 1000, 1.0f64.to_bits())],
                )],
                metadata: vec![],
            }
            .encode_to_vec(),
        ),
    );
    check(&r, 204, 1, 0, 0, "1.0 success");
    let r = w.push_raw(&[("Content-Type", "text/plain")], vec![1, 2, 3]);
    check(&r, 415, 0, 0, 0, "415");
    let r = w.push_raw(&v2_headers(), b"garbage".to_vec());
    check(&r, 400, 0, 0, 0, "400");
}

/// 413 (body over `--limits.max-request-bytes`) carries zeros too.
#[test]
fn written_headers_on_413() {
    let w = Weft::start(&["--limits.max-request-bytes", "1024"]);
    let t = t0();
    let series: Vec<S> = (0..500)
        .map(|i| {
            s(
                &[("__name__", "rw2_big"), ("i", &i.to_string())],
                &[(t, 1.0)],
            )
        })
        .collect();
    let r = push_v2(&w, &series);
    check(&r, 413, 0, 0, 0, "413");
}

// ---- rw1_compat_test.go ----

/// 1.0 senders keep working: no Content-Type, a plain one, or `proto=prometheus.WriteRequest`;
/// no Content-Encoding means snappy. The Version header does not pick the message (a 1.0
/// body with `2.0.0` is still 1.0). 1.0 and 2.0 write to the same series.
#[test]
fn remote_write_1_0_compatibility() {
    let w = Weft::start(&[]);
    let t = t0();
    let l = labels(&[("__name__", "rw2_compat"), ("job", "old")]);
    let v1 = |i: i64| {
        snappy(
            &WriteRequest {
                timeseries: vec![series_proto(&l, &[(t + i, (i as f64).to_bits())])],
                metadata: vec![],
            }
            .encode_to_vec(),
        )
    };
    let tenant = ("X-Scope-OrgID", TENANT);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![tenant],
        vec![tenant, ("Content-Encoding", "snappy")],
        vec![tenant, ("Content-Type", "application/x-protobuf")],
        vec![
            tenant,
            (
                "Content-Type",
                "application/x-protobuf;proto=prometheus.WriteRequest",
            ),
            ("Content-Encoding", "SNAPPY"),
        ],
        vec![
            tenant,
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ],
    ];
    let n = cases.len() as i64;
    for (i, headers) in cases.into_iter().enumerate() {
        let r = w.push_raw(&headers, v1(i as i64));
        check(&r, 204, 1, 0, 0, &format!("{headers:?}"));
    }
    // The same series over 2.0.
    let r = push_v2(
        &w,
        &[s(
            &[("job", "old"), ("__name__", "rw2_compat")],
            &[(t + n, n as f64)],
        )],
    );
    check(&r, 204, 1, 0, 0, "2.0 into the same series");
    let want: Samples = (0..=n).map(|i| (t + i, (i as f64).to_bits())).collect();
    assert_eq!(read_name(&w, "rw2_compat"), vec![(l, want)]);
}

// ---- metadata_test.go ----

/// Every metric type's metadata is accepted with its samples (the samples are stored and
/// counted; metadata is not a sample).
#[test]
fn metadata_of_every_type_is_accepted() {
    let w = Weft::start(&[]);
    let t = t0();
    let series: Vec<S> = (0..8)
        .map(|ty| S {
            metadata: Some((ty, format!("help of type {ty}"), "seconds".to_string())),
            ..s(&[("__name__", &format!("rw2_meta_{ty}"))], &[(t, 1.0)])
        })
        .collect();
    let r = push_v2(&w, &series);
    check(&r, 204, 8, 0, 0, "metadata");
    // A request of metadata only (1.0 sends those) is accepted too.
    let r = w.push_raw(
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Scope-OrgID", TENANT),
        ],
        snappy(
            &WriteRequest {
                timeseries: vec![],
                metadata: vec![weft::proto::prompb::MetricMetadata {
                    r#type: 1,
                    metric_family_name: "rw2_meta_v1_total".into(),
                    help: "h".into(),
                    unit: String::new(),
                }],
            }
            .encode_to_vec(),
        ),
    );
    check(&r, 204, 0, 0, 0, "1.0 metadata only");
}

/// Metadata of every type reads back from `/api/v1/metadata` (pass after the exmeta merge).
#[test]
fn metadata_of_every_type_read_back() {
    let w = Weft::start(&[]);
    let t = t0();
    let types = [
        "unknown",
        "counter",
        "gauge",
        "histogram",
        "gaugehistogram",
        "summary",
        "info",
        "stateset",
    ];
    let series: Vec<S> = (0..8)
        .map(|ty| S {
            metadata: Some((ty, format!("help of type {ty}"), "seconds".to_string())),
            ..s(&[("__name__", &format!("rw2_meta_{ty}"))], &[(t, 1.0)])
        })
        .collect();
    check(&push_v2(&w, &series), 204, 8, 0, 0, "metadata");
    for (ty, name) in types.iter().enumerate().skip(1) {
        let metric = format!("rw2_meta_{ty}");
        let (status, v) = w.api_get(Some(TENANT), "/api/v1/metadata", &[("metric", &metric)]);
        assert_eq!(status, 200, "{v}");
        let entry = &v["data"][&metric][0];
        assert_eq!(entry["type"], *name, "{v}");
        assert_eq!(entry["help"], format!("help of type {ty}"), "{v}");
        assert_eq!(entry["unit"], "seconds", "{v}");
    }
}

// ---- exemplar_test.go ----

/// Exemplars are stored, counted and served by `/api/v1/query_exemplars` (pass after the
/// exmeta merge).
#[test]
fn exemplars_are_counted_and_read_back() {
    let w = Weft::start(&[]);
    let t = t0();
    let mut c = s(
        &[("__name__", "rw2_ex_total"), ("job", "api")],
        &[(t, 10.0)],
    );
    c.exemplars = vec![
        (vec![("trace_id".into(), "abc123".into())], 1.5, t),
        (
            vec![
                ("trace_id".into(), "def456".into()),
                ("span_id".into(), "s1".into()),
            ],
            2.5,
            t - 1,
        ),
    ];
    let r = push_v2(&w, &[c]);
    check(&r, 204, 1, 0, 2, "exemplars");
    let (status, v) = w.api_get(
        Some(TENANT),
        "/api/v1/query_exemplars",
        &[
            ("query", "rw2_ex_total"),
            ("start", &((t - 10_000) as f64 / 1000.0).to_string()),
            ("end", &((t + 10_000) as f64 / 1000.0).to_string()),
        ],
    );
    assert_eq!(status, 200, "{v}");
    let ex = v["data"][0]["exemplars"].as_array().expect("exemplars");
    assert_eq!(ex.len(), 2, "{v}");
    let traces: Vec<&str> = ex
        .iter()
        .map(|e| e["labels"]["trace_id"].as_str().unwrap())
        .collect();
    assert!(
        traces.contains(&"abc123") && traces.contains(&"def456"),
        "{v}"
    );
}

// ---- histograms_test.go ----

/// Remote read SAMPLES response with `TimeSeries.histograms` (field 4), which `prompb` in
/// weft does not have.
#[derive(Clone, PartialEq, prost::Message)]
struct HReadResponse {
    #[prost(message, repeated, tag = "1")]
    results: Vec<HQueryResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HQueryResult {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<HTimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HTimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<weft::proto::prompb::Label>,
    #[prost(message, repeated, tag = "4")]
    histograms: Vec<Histogram>,
}

fn read_histograms(w: &Weft, name: &str) -> Vec<(i64, HistogramValue)> {
    let q: Query = query(
        0,
        i64::MAX,
        vec![matcher(MatcherType::Eq, "__name__", name)],
    );
    let r = w.read_raw(
        Some(TENANT),
        &ReadRequest {
            queries: vec![q],
            accepted_response_types: vec![ResponseType::Samples as i32],
        },
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = HReadResponse::decode(&unsnappy(&r.body).unwrap()[..]).unwrap();
    let ts = &resp.results[0].timeseries;
    assert_eq!(ts.len(), 1, "{name}: one series");
    ts[0].histograms.iter().map(Histogram::to_model).collect()
}

fn spans(s: &[(i32, u32)]) -> Vec<Span> {
    s.iter()
        .map(|&(offset, length)| Span { offset, length })
        .collect()
}

/// One histogram of every shape: integer, float, with negative buckets, with a zero bucket,
/// a gauge histogram, and custom buckets (schema -53).
fn every_shape() -> Vec<(&'static str, HistogramValue)> {
    vec![
        (
            "int",
            HistogramValue::Int(IntHistogram {
                schema: 3,
                count: 6,
                sum: 12.5,
                positive_spans: spans(&[(0, 2), (1, 1)]),
                positive_buckets: vec![1, 1, 2],
                ..IntHistogram::default()
            }),
        ),
        (
            "float",
            HistogramValue::Float(FloatHistogram {
                schema: 0,
                count: 3.5,
                sum: -1.25,
                positive_spans: spans(&[(-2, 2)]),
                positive_buckets: vec![1.5, 2.0],
                ..FloatHistogram::default()
            }),
        ),
        (
            "negative",
            HistogramValue::Int(IntHistogram {
                schema: 1,
                count: 5,
                sum: -20.0,
                negative_spans: spans(&[(1, 3)]),
                negative_buckets: vec![2, -1, 2],
                ..IntHistogram::default()
            }),
        ),
        (
            "zero_bucket",
            HistogramValue::Int(IntHistogram {
                schema: 2,
                zero_threshold: 0.001,
                zero_count: 4,
                count: 5,
                sum: 0.5,
                positive_spans: spans(&[(0, 1)]),
                positive_buckets: vec![1],
                ..IntHistogram::default()
            }),
        ),
        (
            "gauge",
            HistogramValue::Float(FloatHistogram {
                counter_reset_hint: CounterResetHint::Gauge,
                schema: -4,
                count: 2.0,
                sum: 7.0,
                zero_count: 1.0,
                positive_spans: spans(&[(3, 1)]),
                positive_buckets: vec![1.0],
                ..FloatHistogram::default()
            }),
        ),
        (
            "custom_buckets",
            HistogramValue::Int(IntHistogram {
                schema: -53,
                count: 6,
                sum: 3.0,
                positive_spans: spans(&[(0, 3)]),
                positive_buckets: vec![1, 2, -1],
                custom_values: vec![0.1, 0.5, 1.0],
                ..IntHistogram::default()
            }),
        ),
    ]
}

/// Histograms of every shape over 2.0: 204, exact Histograms-Written, read back exact
/// (pass after the hist merge).
#[test]
fn histograms_of_every_shape_over_2_0() {
    let w = Weft::start(&[]);
    let t = t0();
    let shapes = every_shape();
    let series: Vec<S> = shapes
        .iter()
        .map(|(shape, h)| S {
            histograms: vec![(t, h.clone()), (t + 15_000, h.clone())],
            ..s(&[("__name__", &format!("rw2_h_{shape}"))], &[])
        })
        .collect();
    let r = push_v2(&w, &series);
    check(&r, 204, 0, 2 * shapes.len() as u64, 0, "histograms");
    for (shape, h) in &shapes {
        // Exact as Prometheus's readers define it: the same observations in the same
        // buckets; a reader gives the chunk's counter-reset hint (`NotCounterReset` after
        // the first sample), not the sender's.
        let got = read_histograms(&w, &format!("rw2_h_{shape}"));
        let want = [(t, h.clone()), (t + 15_000, h.clone())];
        assert_eq!(got.len(), want.len(), "{shape}: {got:?}");
        for ((gt, gh), (wt, wh)) in got.iter().zip(&want) {
            assert_eq!(gt, wt, "{shape}");
            assert!(
                weft::hist::equivalent(gh, wh),
                "{shape} at {gt}: read {gh:?}, pushed {wh:?}"
            );
        }
    }
}

/// The same over 1.0 (`TimeSeries.histograms`, field 4) (pass after the hist merge).
#[test]
fn histograms_of_every_shape_over_1_0() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Ts {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<weft::proto::prompb::Label>,
        #[prost(message, repeated, tag = "4")]
        histograms: Vec<Histogram>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Req {
        #[prost(message, repeated, tag = "1")]
        timeseries: Vec<Ts>,
    }
    let w = Weft::start(&[]);
    let t = t0();
    let shapes = every_shape();
    let req = Req {
        timeseries: shapes
            .iter()
            .map(|(shape, h)| Ts {
                labels: to_proto_labels(&labels(&[("__name__", &format!("rw2_h1_{shape}"))])),
                histograms: vec![Histogram::from_model(t, h)],
            })
            .collect(),
    };
    let r = w.push_raw(
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Scope-OrgID", TENANT),
        ],
        snappy(&req.encode_to_vec()),
    );
    check(&r, 204, 0, shapes.len() as u64, 0, "1.0 histograms");
    for (shape, h) in &shapes {
        assert_eq!(
            read_histograms(&w, &format!("rw2_h1_{shape}")),
            vec![(t, h.clone())],
            "{shape}"
        );
    }
}

/// A histogram that is not valid is refused before the head, whatever the head can store:
/// spans that do not match the buckets, an impossible schema, int and float fields mixed.
#[test]
fn invalid_histograms_are_refused_with_400() {
    let w = Weft::start(&[]);
    let t = t0();
    let mut bad_spans = Histogram::from_model(
        t,
        &HistogramValue::Int(IntHistogram {
            positive_spans: spans(&[(0, 2)]),
            positive_buckets: vec![1, 1],
            ..IntHistogram::default()
        }),
    );
    bad_spans.positive_deltas.pop();
    let mut bad_schema = Histogram::from_model(t, &every_shape()[0].1);
    bad_schema.schema = 9;
    let mut mixed = Histogram::from_model(t, &every_shape()[0].1);
    mixed.positive_counts = vec![1.0];
    for (what, h, says) in [
        ("spans", bad_spans, "positive_spans"),
        ("schema", bad_schema, "schema"),
        ("mixed", mixed, "mixes integer and float"),
    ] {
        let req = prompb_v2::Request {
            symbols: vec!["".into(), "__name__".into(), "rw2_bad_h".into()],
            timeseries: vec![prompb_v2::TimeSeries {
                labels_refs: vec![1, 2],
                histograms: vec![h],
                ..prompb_v2::TimeSeries::default()
            }],
        };
        let r = w.push_raw(&v2_headers(), snappy(&req.encode_to_vec()));
        check(&r, 400, 0, 0, 0, what);
        assert!(r.text().contains(says), "{what}: {}", r.text());
    }
}

/// More than `MAX_HISTOGRAMS_PER_REQUEST` histogram samples (each 2 bytes on the wire, ~180
/// in memory) are refused whole with 413, counted in
/// `weft_requests_rejected_total{reason="too_large"}`, and nothing of the request is stored.
#[test]
fn too_many_histograms_in_one_request_get_413() {
    let w = Weft::start(&[]);
    let n = weft::proto::MAX_HISTOGRAMS_PER_REQUEST + 1;
    let mut series = Vec::new();
    // Symbols "", "__name__", "rw2_hmany"; one good sample first, then the histograms.
    for sym in ["", "__name__", "rw2_hmany"] {
        series.push(0x22);
        put_uvarint(&mut series, sym.len() as u64);
        series.extend_from_slice(sym.as_bytes());
    }
    // labels_refs [1, 2], then a sample (0x09 value, 0x10 timestamp: 11 bytes).
    let mut ts = vec![0x0a, 0x02, 0x01, 0x02, 0x12, 0x0b, 0x09];
    ts.extend_from_slice(&1.0f64.to_le_bytes());
    ts.push(0x10);
    put_uvarint(&mut ts, 1);
    for _ in 0..n {
        ts.extend_from_slice(&[0x1a, 0x00]); // an empty histogram (field 3)
    }
    series.push(0x2a);
    put_uvarint(&mut series, ts.len() as u64);
    series.extend_from_slice(&ts);
    let metric = |w: &Weft| {
        w.metric("weft_requests_rejected_total", &[("reason", "too_large")])
            .unwrap_or(0.0)
    };
    let before = metric(&w);
    let r = w.push_raw(&v2_headers(), snappy(&series));
    check(&r, 413, 0, 0, 0, "too many histograms");
    assert!(
        r.text().contains("native histogram samples"),
        "{}",
        r.text()
    );
    assert_eq!(metric(&w) - before, 1.0);
    let q = query(
        0,
        i64::MAX,
        vec![matcher(MatcherType::Eq, "__name__", "rw2_hmany")],
    );
    assert!(w.read_samples(Some(TENANT), &[q])[0].is_empty());
}

/// A retried 2.0 push of histograms (int and float, several series, 5 histograms a series
/// a request) is a no-op: every request of both rounds 204 with the exact
/// Histograms-Written, and each histogram is read back once.
#[test]
fn retried_histogram_pushes_over_2_0_are_no_ops() {
    use weft::hist::fixtures::{float_series, gauge_series, int_series};
    let w = Weft::start(&[]);
    let start = now_ms() - 3_600_000;
    let data: Vec<(String, Vec<(i64, HistogramValue)>)> = vec![
        ("rw2_retry_int".into(), int_series(start, 15_000, 60)),
        ("rw2_retry_float".into(), float_series(start, 15_000, 45)),
        ("rw2_retry_gauge".into(), gauge_series(start, 15_000, 30)),
    ];
    let most = data.iter().map(|d| d.1.len()).max().unwrap();
    let requests: Vec<Vec<S>> = (0..most)
        .step_by(5)
        .map(|at| {
            data.iter()
                .filter(|(_, hs)| at < hs.len())
                .map(|(name, hs)| S {
                    histograms: hs[at..(at + 5).min(hs.len())].to_vec(),
                    ..s(&[("__name__", name), ("job", "retry")], &[])
                })
                .collect()
        })
        .collect();
    for round in ["first push", "retry"] {
        for (i, req) in requests.iter().enumerate() {
            let k: usize = req.iter().map(|s| s.histograms.len()).sum();
            let r = push_v2(&w, req);
            check(&r, 204, 0, k as u64, 0, &format!("{round}, request {i}"));
        }
        for (name, want) in &data {
            let got = read_histograms(&w, name);
            assert_eq!(
                got.len(),
                want.len(),
                "{round}: {name}: each histogram once"
            );
            for ((gt, gh), (wt, wh)) in got.iter().zip(want) {
                assert_eq!(gt, wt, "{round}: {name}");
                assert!(
                    weft::hist::equivalent(gh, wh),
                    "{round}: {name} at {gt}: read {gh:?}, pushed {wh:?}"
                );
            }
        }
    }
}
