//! Remote write refuses bad input with the right status and a message that says what was
//! wrong, rejects only the bad series when the problem is per series, and keeps serving.
//!
//! Each case is data; `check` is the only place that sends a case and judges the answer.

mod common;

use common::*;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft::proto::prompb::{
    Exemplar, Label, MatcherType, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

const TENANT: &str = "bad-input";
const MAX_REQUEST_BYTES: usize = 256 * 1024;
const MAX_DECOMPRESSED_BYTES: usize = 8 * 1024 * 1024;
const MAX_LABEL_VALUE_LENGTH: usize = 1024;
const MAX_LABEL_NAMES: usize = 20;

/// The limits are set explicitly so that the cases do not depend on the defaults.
const LIMIT_ARGS: [&str; 8] = [
    "--limits.max-request-bytes",
    "262144",
    "--limits.max-decompressed-bytes",
    "8388608",
    "--limits.max-label-value-length",
    "1024",
    "--limits.max-label-names-per-series",
    "20",
];

/// One push and what must come of it.
#[derive(Debug)]
struct Case {
    name: String,
    /// `None` sends no `X-Scope-OrgID`.
    tenant: Option<String>,
    /// All request headers except the tenant.
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// The response body contains one of these (compared case-insensitively). Modest on
    /// purpose: the wording is the server's, the topic is the contract.
    says_one_of: &'static [&'static str],
    /// The response body contains this exactly: the bad series' metric name.
    names: Option<String>,
    /// Series that must be stored afterwards (the good series of a partly bad request).
    stored: Vec<(Labels, Samples)>,
    /// Samples refused per series (for the rejected-samples counter).
    rejected_samples: usize,
    /// Series that must not be stored afterwards (a body refused whole must leave nothing).
    absent: Vec<Labels>,
}

fn headers(content_type: Option<&str>, encoding: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("Content-Encoding", encoding.to_string()),
        ("X-Prometheus-Remote-Write-Version", "0.1.0".to_string()),
    ];
    if let Some(ct) = content_type {
        h.push(("Content-Type", ct.to_string()));
    }
    h
}

fn encode(req: &WriteRequest) -> Vec<u8> {
    snappy(&req.encode_to_vec())
}

fn write_request(series: &[(Labels, Samples)]) -> WriteRequest {
    WriteRequest {
        timeseries: series.iter().map(|(l, s)| series_proto(l, s)).collect(),
        metadata: vec![],
    }
}

/// A whole request that must be refused before anything in it is looked at.
fn whole(
    name: &str,
    hdrs: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    says: &'static [&'static str],
) -> Case {
    Case {
        name: name.to_string(),
        tenant: Some(TENANT.to_string()),
        headers: hdrs,
        body,
        status,
        says_one_of: says,
        names: None,
        stored: vec![],
        rejected_samples: 0,
        absent: vec![],
    }
}

/// A remote-write 2.0 `Request` encoded by hand (weft has no 2.0 types yet): one series
/// `__name__=<name>` with one sample. Field numbers from the 2.0 spec's `io.prometheus.write.v2`:
/// `Request{symbols=4, timeseries=5}`, `TimeSeries{labels_refs=1 (packed), samples=2}`,
/// `Sample{value=1 (double), timestamp=2}`.
fn write_v2_body(name: &str, t: i64, v: f64) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
        put_uvarint(out, tag);
        put_uvarint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut sample = vec![0x09];
    sample.extend_from_slice(&v.to_le_bytes());
    sample.push(0x10);
    put_uvarint(&mut sample, t as u64);
    let mut series = Vec::new();
    field(&mut series, (1 << 3) | 2, &[1, 2]); // labels_refs: symbols[1]=symbols[2]
    field(&mut series, (2 << 3) | 2, &sample);
    let mut req = Vec::new();
    for sym in ["", "__name__", name] {
        field(&mut req, (4 << 3) | 2, sym.as_bytes());
    }
    field(&mut req, (5 << 3) | 2, &series);
    snappy(&req)
}

/// A push whose `Content-Type` names a message weft does not take: 415, and nothing of
/// `absent` may be stored.
fn wrong_proto(name: &str, content_type: &str, body: Vec<u8>, absent: Labels) -> Case {
    Case {
        absent: vec![absent],
        ..whole(
            name,
            headers(Some(content_type), "snappy"),
            body,
            415,
            &["proto", "2.0"],
        )
    }
}

/// A request holding one bad series (raw labels, possibly unsorted or invalid) and one good
/// companion series: only the bad one is refused, the companion is stored.
fn bad_series(
    name: &str,
    bad_labels: Vec<(&str, String)>,
    status: u16,
    says: &'static [&'static str],
    t: i64,
) -> Case {
    let companion = companion(name);
    let sample = vec![(t, 1.0f64.to_bits())];
    let bad = TimeSeries {
        labels: bad_labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.clone(),
            })
            .collect(),
        samples: vec![Sample {
            value: 1.0,
            timestamp: t,
        }],
        exemplars: vec![],
        histograms: Vec::new(),
    };
    let metric = bad_labels
        .iter()
        .find(|(n, v)| *n == "__name__" && !v.is_empty())
        .map(|(_, v)| v.clone());
    let mut req = write_request(&[(companion.clone(), sample.clone())]);
    req.timeseries.insert(0, bad);
    Case {
        name: name.to_string(),
        tenant: Some(TENANT.to_string()),
        headers: headers(Some("application/x-protobuf"), "snappy"),
        body: encode(&req),
        status,
        says_one_of: says,
        names: metric,
        stored: vec![(companion, sample)],
        rejected_samples: 1,
        absent: vec![],
    }
}

/// A valid request that must be stored.
fn accepted(
    name: &str,
    tenant: Option<&str>,
    hdrs: Vec<(&'static str, String)>,
    req: WriteRequest,
    stored: Vec<(Labels, Samples)>,
) -> Case {
    Case {
        name: name.to_string(),
        tenant: tenant.map(str::to_string),
        headers: hdrs,
        body: encode(&req),
        status: 204,
        says_one_of: &[],
        names: None,
        stored,
        rejected_samples: 0,
        absent: vec![],
    }
}

fn companion(case: &str) -> Labels {
    labels(&[("__name__", "weft_test_companion"), ("case", case)])
}

fn cases(rng: &mut StdRng) -> Vec<Case> {
    let t = now_ms() - 60_000;
    let proto = ["application/x-protobuf"];
    let ok_headers = || headers(Some(proto[0]), "snappy");
    let one_good = |case: &str| vec![(companion(case), vec![(t, 2.0f64.to_bits())])];
    let valid_body = |case: &str| encode(&write_request(&one_good(case)));

    // Bodies that must be what their case says they are: checked here, so that a case can't
    // pass because the test built the wrong thing.
    let garbage = b"not snappy at all \xff\xfe\xfd\xfc".to_vec();
    assert!(unsnappy(&garbage).is_err());
    let valid = encode(&write_request(&[(
        labels(&[("__name__", "weft_test_truncated")]),
        (0..50).map(|i| (t + i, (i as f64).to_bits())).collect(),
    )]));
    let truncated = valid[..valid.len() / 2].to_vec();
    assert!(unsnappy(&truncated).is_err());
    let bad_proto = vec![0x0f, 0xff, 0xff, 0x01, 0x02, 0x03];
    assert!(WriteRequest::decode(bad_proto.as_slice()).is_err());
    let bad_proto = snappy(&bad_proto);
    // Random sample values do not compress: the snappy body is over the limit, the
    // decompressed one is not, so only the compressed-size check can refuse it.
    let big = encode(&write_request(&[(
        labels(&[("__name__", "weft_test_oversized")]),
        (0..40_000).map(|i| (t + i, rng.random::<u64>())).collect(),
    )]));
    assert!(
        big.len() > MAX_REQUEST_BYTES,
        "oversized body is only {} bytes",
        big.len()
    );
    assert!(unsnappy(&big).expect("valid snappy").len() < MAX_DECOMPRESSED_BYTES);
    let mut claims_4gib = Vec::new();
    put_uvarint(&mut claims_4gib, 4 << 30);
    claims_4gib.extend((0..64).map(|_| rng.random::<u8>()));
    assert!(claims_4gib.len() < MAX_REQUEST_BYTES);

    let long_value = "v".repeat(MAX_LABEL_VALUE_LENGTH + 1);
    let too_many: Vec<(&str, String)> =
        std::iter::once(("__name__", "bad_too_many_labels".to_string()))
            .chain(
                LABEL_NAMES[..MAX_LABEL_NAMES]
                    .iter()
                    .map(|n| (*n, "x".to_string())),
            )
            .collect();
    assert_eq!(too_many.len(), MAX_LABEL_NAMES + 1);
    let at_limit: Labels = {
        let mut l: Labels =
            std::iter::once(("__name__".to_string(), "weft_test_at_limits".to_string()))
                .chain(
                    LABEL_NAMES[..MAX_LABEL_NAMES - 2]
                        .iter()
                        .map(|n| (n.to_string(), "y".to_string())),
                )
                .chain(std::iter::once((
                    "value".to_string(),
                    "v".repeat(MAX_LABEL_VALUE_LENGTH),
                )))
                .collect();
        l.sort();
        l
    };
    assert_eq!(at_limit.len(), MAX_LABEL_NAMES);

    let tenant_errors: &[&str] = &["tenant", "org"];
    let too_large: &[&str] = &["too large", "limit", "exceed", "size"];
    let media: &[&str] = &["content-type", "media type", "unsupported", "415"];
    let encoding: &[&str] = &["encoding", "unsupported", "415"];
    let label_name: &[&str] = &["label name"];

    let mut cases = vec![
        whole("garbage body", ok_headers(), garbage, 400, &["snappy"]),
        whole(
            "truncated snappy",
            ok_headers(),
            truncated,
            400,
            &["snappy"],
        ),
        whole(
            "snappy holding garbage protobuf",
            ok_headers(),
            bad_proto,
            400,
            &["protobuf", "decode"],
        ),
        whole(
            "compressed body over the limit",
            ok_headers(),
            big,
            413,
            too_large,
        ),
        whole(
            "snappy header claims 4 GiB",
            ok_headers(),
            claims_4gib,
            413,
            &["snappy", "too large", "limit", "exceed", "decompress"],
        ),
        whole(
            "Content-Type text/plain",
            headers(Some("text/plain"), "snappy"),
            valid_body("ct text"),
            415,
            media,
        ),
        whole(
            "Content-Type application/json",
            headers(Some("application/json"), "snappy"),
            valid_body("ct json"),
            415,
            media,
        ),
        // Before 2.0 was built: a 2.0 body decoded as an empty 1.0 request and was answered
        // 204, lost; then it was refused with 415. Now it is decoded as 2.0 and stored.
        Case {
            body: write_v2_body("weft_test_v2", t, 1.0),
            stored: vec![(
                labels(&[("__name__", "weft_test_v2")]),
                vec![(t, 1.0f64.to_bits())],
            )],
            ..accepted(
                "remote write 2.0 body",
                Some(TENANT),
                headers(
                    Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
                    "snappy",
                ),
                WriteRequest::default(),
                vec![],
            )
        },
        Case {
            body: write_v2_body("weft_test_v2_quoted", t, 1.0),
            stored: vec![(
                labels(&[("__name__", "weft_test_v2_quoted")]),
                vec![(t, 1.0f64.to_bits())],
            )],
            ..accepted(
                "remote write 2.0, spaced, quoted, upper-case parameter",
                Some(TENANT),
                headers(
                    Some("application/x-protobuf ; PROTO = \"io.prometheus.write.v2.Request\""),
                    "snappy",
                ),
                WriteRequest::default(),
                vec![],
            )
        },
        // A valid 1.0 body under an unknown proto is refused too: the sender meant something
        // else, and storing it as 1.0 would be a guess.
        wrong_proto(
            "proto=bogus",
            "application/x-protobuf;proto=bogus",
            valid_body("proto bogus"),
            companion("proto bogus"),
        ),
        accepted(
            "proto=prometheus.WriteRequest",
            Some(TENANT),
            headers(
                Some("application/x-protobuf;proto=prometheus.WriteRequest"),
                "snappy",
            ),
            write_request(&one_good("proto v1")),
            one_good("proto v1"),
        ),
        accepted(
            "proto=\"prometheus.WriteRequest\" quoted",
            Some(TENANT),
            headers(
                Some("application/x-protobuf; proto=\"prometheus.WriteRequest\""),
                "snappy",
            ),
            write_request(&one_good("proto v1 quoted")),
            one_good("proto v1 quoted"),
        ),
        whole(
            "Content-Encoding gzip",
            headers(Some(proto[0]), "gzip"),
            valid_body("gzip"),
            415,
            encoding,
        ),
        bad_series(
            "duplicate label names",
            vec![
                ("__name__", "bad_dup_name".into()),
                ("a", "1".into()),
                ("a", "2".into()),
            ],
            400,
            &["duplicate"],
            t,
        ),
        bad_series(
            "empty label name",
            vec![("__name__", "bad_empty_name".into()), ("", "v".into())],
            400,
            label_name,
            t,
        ),
        // Under the default `--validation.name-validation-scheme=utf8` (Prometheus 3's) any
        // non-empty UTF-8 name is valid: these two were 400 before it and are stored now.
        // `legacy` still refuses them (tests/remote_write_v2.rs).
        {
            let series = vec![(
                labels(&[("__name__", "utf8_digit_name"), ("1abc", "v")]),
                vec![(t, 1.0f64.to_bits())],
            )];
            accepted(
                "label name starting with a digit (utf8 scheme)",
                Some(TENANT),
                ok_headers(),
                write_request(&series),
                series,
            )
        },
        {
            let series = vec![(
                labels(&[("__name__", "utf8-dash.name"), ("a-b", "v")]),
                vec![(t, 1.0f64.to_bits())],
            )];
            accepted(
                "label and metric names with a dash (utf8 scheme)",
                Some(TENANT),
                ok_headers(),
                write_request(&series),
                series,
            )
        },
        bad_series("series without labels", vec![], 400, &["label"], t),
        bad_series(
            "series whose label values are all empty",
            vec![("__name__", String::new()), ("a", String::new())],
            400,
            &["label", "name"],
            t,
        ),
        bad_series(
            "label value over the limit",
            vec![("__name__", "bad_long_value".into()), ("v", long_value)],
            400,
            &[
                "label value",
                "value of label",
                "too long",
                "longer",
                "length",
                "limit",
            ],
            t,
        ),
        bad_series(
            "more label names than the limit",
            too_many,
            400,
            &["label"],
            t,
        ),
        {
            // prost cannot build a String of invalid UTF-8, so this request is encoded by hand.
            let good = companion("invalid utf-8");
            let good_raw: Vec<(&[u8], &[u8])> = good
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .collect();
            let sample = vec![(t, 1.0f64.to_bits())];
            let body = encode_write_request_by_hand(&[
                (
                    vec![(b"__name__", b"bad_utf8_value"), (b"v", b"\xff\xfe")],
                    sample.clone(),
                ),
                (good_raw, sample.clone()),
            ]);
            Case {
                name: "label value that is not UTF-8".into(),
                tenant: Some(TENANT.to_string()),
                headers: ok_headers(),
                body: snappy(&body),
                status: 400,
                says_one_of: &["utf"],
                names: Some("bad_utf8_value".into()),
                stored: vec![(good, sample)],
                rejected_samples: 1,
                absent: vec![],
            }
        },
        accepted(
            "labels exactly at the limits",
            Some(TENANT),
            ok_headers(),
            write_request(&[(at_limit.clone(), vec![(t, 5.0f64.to_bits())])]),
            vec![(at_limit, vec![(t, 5.0f64.to_bits())])],
        ),
        accepted(
            "no Content-Type",
            Some(TENANT),
            headers(None, "snappy"),
            write_request(&one_good("no ct")),
            one_good("no ct"),
        ),
        accepted(
            "Content-Type with a parameter",
            Some(TENANT),
            headers(
                Some("application/x-protobuf; proto=prometheus.WriteRequest"),
                "snappy",
            ),
            write_request(&one_good("ct param")),
            one_good("ct param"),
        ),
        accepted(
            "metadata only",
            Some(TENANT),
            ok_headers(),
            WriteRequest {
                timeseries: vec![],
                metadata: vec![MetricMetadata {
                    r#type: 1,
                    metric_family_name: "weft_test_meta".into(),
                    help: "Help text.".into(),
                    unit: "seconds".into(),
                }],
            },
            vec![],
        ),
        accepted(
            "a series with exemplars",
            Some(TENANT),
            ok_headers(),
            {
                let mut req = write_request(&one_good("exemplars"));
                req.timeseries[0].exemplars.push(Exemplar {
                    labels: vec![Label {
                        name: "trace_id".into(),
                        value: "abc123".into(),
                    }],
                    value: 2.0,
                    timestamp: t,
                });
                req
            },
            one_good("exemplars"),
        ),
        accepted(
            "a 150-byte tenant id",
            Some(&"t".repeat(150)),
            ok_headers(),
            write_request(&one_good("150")),
            one_good("150"),
        ),
    ];
    for tenant in ["../../etc", "a/b", "a|b", &"x".repeat(151)] {
        let mut c = whole(
            &format!("tenant id {tenant:?}"),
            ok_headers(),
            valid_body("tenant"),
            400,
            tenant_errors,
        );
        c.tenant = Some(tenant.to_string());
        cases.push(c);
    }
    cases
}

const LABEL_NAMES: [&str; 24] = [
    "l00", "l01", "l02", "l03", "l04", "l05", "l06", "l07", "l08", "l09", "l10", "l11", "l12",
    "l13", "l14", "l15", "l16", "l17", "l18", "l19", "l20", "l21", "l22", "l23",
];

/// Sends one case and checks everything it promises, then that the server still serves.
fn check(weft: &Weft, case: &Case) {
    let mut hdrs: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some(t) = &case.tenant {
        hdrs.push(("X-Scope-OrgID", t));
    }
    let r = weft.push_raw(&hdrs, case.body.clone());
    let text = r.text();
    assert_eq!(
        r.status, case.status,
        "case {:?}: status (body: {text:?})",
        case.name
    );
    let lower = text.to_lowercase();
    assert!(
        case.says_one_of.is_empty()
            || case
                .says_one_of
                .iter()
                .any(|s| lower.contains(&s.to_lowercase())),
        "case {:?}: body {text:?} mentions none of {:?}",
        case.name,
        case.says_one_of
    );
    if let Some(name) = &case.names {
        assert!(
            text.contains(name.as_str()),
            "case {:?}: body {text:?} does not name series {name}",
            case.name
        );
    }
    for (labels, samples) in &case.stored {
        let matchers = labels
            .iter()
            .map(|(n, v)| matcher(MatcherType::Eq, n, v))
            .collect();
        let got = weft.read_samples(case.tenant.as_deref(), &[query(0, i64::MAX, matchers)]);
        assert_eq!(
            got[0],
            vec![(labels.clone(), samples.clone())],
            "case {:?}: the good series {} was not stored exactly",
            case.name,
            fmt_labels(labels)
        );
    }
    for labels in &case.absent {
        let sel = selector(
            &labels
                .iter()
                .map(|(n, v)| matcher(MatcherType::Eq, n, v))
                .collect::<Vec<_>>(),
        );
        let found = weft.series(case.tenant.as_deref(), &[&sel], &[]);
        assert!(
            found.is_empty(),
            "case {:?}: {} was stored although the push was refused: {found:?}",
            case.name,
            fmt_labels(labels)
        );
    }
    weft.assert_still_serves(&case.name);
}

#[test]
fn harness_parsers_work() {
    self_check();
}

#[test]
fn bad_requests_get_the_right_status_and_message_and_the_server_keeps_serving() {
    let mut rng = StdRng::seed_from_u64(seed());
    let weft = Weft::start(&LIMIT_ARGS);
    let cases = cases(&mut rng);
    let rejected_before = weft
        .metric("weft_samples_rejected_total", &[])
        .unwrap_or(0.0);
    for case in &cases {
        eprintln!("case: {}", case.name);
        check(&weft, case);
    }
    let rejected = weft
        .metric("weft_samples_rejected_total", &[])
        .unwrap_or(0.0)
        - rejected_before;
    let want: usize = cases.iter().map(|c| c.rejected_samples).sum();
    assert!(
        rejected >= want as f64,
        "weft_samples_rejected_total grew by {rejected}, but {want} samples of bad series were refused"
    );
}

/// A sequence of pushes to one tenant, each with its expected status, and what must be stored
/// at the end.
struct Sequence {
    name: &'static str,
    steps: Vec<Step>,
    want: Vec<(Labels, Samples)>,
}

/// (series in the request, expected status, body mentions one of, body names this series)
type Step = (
    Vec<(Labels, Samples)>,
    u16,
    &'static [&'static str],
    Option<&'static str>,
);

fn sequences() -> Vec<Sequence> {
    let t = now_ms() - 60_000;
    let f = |v: f64| v.to_bits();
    let ooo = labels(&[("__name__", "weft_test_ooo"), ("k", "bad")]);
    let ooo_ok = labels(&[("__name__", "weft_test_ooo"), ("k", "good")]);
    let same = labels(&[("__name__", "weft_test_dup_same")]);
    let nan = labels(&[("__name__", "weft_test_dup_nan")]);
    let diff = labels(&[("__name__", "weft_test_dup_diff")]);
    let nan_diff = labels(&[("__name__", "weft_test_dup_nan_payload")]);
    const PROM_NAN: u64 = 0x7ff8_0000_0000_0001;
    const RUST_NAN: u64 = 0x7ff8_0000_0000_0000;
    let order: &[&str] = &["out of order", "out-of-order", "too old", "order"];
    vec![
        Sequence {
            name: "out-of-order sample rejects only its series and names it",
            steps: vec![
                (
                    vec![(ooo.clone(), vec![(t + 2000, f(1.0))])],
                    204,
                    &[],
                    None,
                ),
                (
                    vec![
                        (ooo_ok.clone(), vec![(t + 1000, f(5.0)), (t + 1500, f(6.0))]),
                        (ooo.clone(), vec![(t + 1000, f(2.0))]),
                    ],
                    400,
                    order,
                    Some("weft_test_ooo"),
                ),
            ],
            want: vec![
                (ooo.clone(), vec![(t + 2000, f(1.0))]),
                (ooo_ok, vec![(t + 1000, f(5.0)), (t + 1500, f(6.0))]),
            ],
        },
        Sequence {
            name: "same timestamp and same value is a no-op",
            steps: vec![
                (vec![(same.clone(), vec![(t, f(1.5))])], 204, &[], None),
                (vec![(same.clone(), vec![(t, f(1.5))])], 204, &[], None),
            ],
            want: vec![(same, vec![(t, f(1.5))])],
        },
        Sequence {
            name: "same timestamp and the same NaN bits is a no-op",
            steps: vec![
                (vec![(nan.clone(), vec![(t, PROM_NAN)])], 204, &[], None),
                (vec![(nan.clone(), vec![(t, PROM_NAN)])], 204, &[], None),
            ],
            want: vec![(nan, vec![(t, PROM_NAN)])],
        },
        Sequence {
            name: "same timestamp with another value is refused",
            steps: vec![
                (vec![(diff.clone(), vec![(t, f(1.5))])], 204, &[], None),
                (
                    vec![(diff.clone(), vec![(t, f(2.5))])],
                    400,
                    &["duplicate"],
                    Some("weft_test_dup_diff"),
                ),
            ],
            want: vec![(diff, vec![(t, f(1.5))])],
        },
        Sequence {
            // Prometheus compares value bits, so another NaN payload is another value.
            name: "same timestamp with another NaN payload is refused",
            steps: vec![
                (
                    vec![(nan_diff.clone(), vec![(t, PROM_NAN)])],
                    204,
                    &[],
                    None,
                ),
                (
                    vec![(nan_diff.clone(), vec![(t, RUST_NAN)])],
                    400,
                    &["duplicate"],
                    Some("weft_test_dup_nan_payload"),
                ),
            ],
            want: vec![(nan_diff, vec![(t, PROM_NAN)])],
        },
    ]
}

#[test]
fn per_series_ordering_rules_reject_only_the_offending_series() {
    let weft = Weft::start(&[]);
    for seq in sequences() {
        eprintln!("sequence: {}", seq.name);
        let before = weft
            .metric("weft_samples_rejected_total", &[])
            .unwrap_or(0.0);
        let mut refused = 0;
        for (i, (series, status, says, names)) in seq.steps.iter().enumerate() {
            let r = weft.push(TENANT, &write_request(series));
            let text = r.text();
            assert_eq!(
                r.status, *status,
                "{}: step {i}: status (body {text:?})",
                seq.name
            );
            let lower = text.to_lowercase();
            assert!(
                says.is_empty() || says.iter().any(|s| lower.contains(s)),
                "{}: step {i}: body {text:?} mentions none of {says:?}",
                seq.name
            );
            if let Some(n) = names {
                assert!(
                    text.contains(n),
                    "{}: step {i}: body {text:?} does not name {n}",
                    seq.name
                );
                refused += 1;
            }
        }
        for (labels, samples) in &seq.want {
            let matchers = labels
                .iter()
                .map(|(n, v)| matcher(MatcherType::Eq, n, v))
                .collect();
            let got = weft.read_samples(Some(TENANT), &[query(0, i64::MAX, matchers)]);
            assert_eq!(
                got[0],
                vec![(labels.clone(), samples.clone())],
                "{}: stored data",
                seq.name
            );
        }
        let grew = weft
            .metric("weft_samples_rejected_total", &[])
            .unwrap_or(0.0)
            - before;
        assert!(
            grew >= refused as f64,
            "{}: weft_samples_rejected_total grew by {grew}",
            seq.name
        );
        weft.assert_still_serves(seq.name);
    }
}

#[test]
fn series_limit_refuses_new_series_with_429_but_existing_series_keep_ingesting() {
    let weft = Weft::start(&["--limits.max-series-per-tenant", "10"]);
    let t = now_ms() - 60_000;
    let s = |i: usize| labels(&[("__name__", "weft_test_limited"), ("i", &i.to_string())]);
    let one = |i: usize, k: i64| (s(i), vec![(t + k, (k as f64).to_bits())]);
    let read_all = |tenant: &str| {
        weft.read_samples(
            Some(tenant),
            &[query(
                0,
                i64::MAX,
                vec![matcher(MatcherType::Eq, "__name__", "weft_test_limited")],
            )],
        )
        .remove(0)
    };

    let first_ten: Vec<_> = (0..10).map(|i| one(i, 0)).collect();
    weft.push_ok("limited", &write_request(&first_ten));
    let rejected_before = weft
        .metric("weft_samples_rejected_total", &[])
        .unwrap_or(0.0);

    // The 11th series is refused.
    let r = weft.push("limited", &write_request(&[one(10, 1)]));
    assert_eq!(r.status, 429, "11th series: {}", r.text());
    let lower = r.text().to_lowercase();
    assert!(
        lower.contains("limit") || lower.contains("series"),
        "429 body: {lower:?}"
    );

    // Existing series still take samples, also in a request that carries a new series too.
    weft.push_ok("limited", &write_request(&[one(3, 2)]));
    let r = weft.push(
        "limited",
        &write_request(&[one(4, 3), one(11, 3), one(5, 3)]),
    );
    assert_eq!(r.status, 429, "mixed request: {}", r.text());

    let got = read_all("limited");
    let mut want: Vec<(Labels, Samples)> = (0..10).map(|i| one(i, 0)).collect();
    want[3].1.push((t + 2, 2f64.to_bits()));
    want[4].1.push((t + 3, 3f64.to_bits()));
    want[5].1.push((t + 3, 3f64.to_bits()));
    want.sort();
    assert_eq!(got, want, "tenant 'limited' after the limit was hit");

    // The limit is per tenant.
    weft.push_ok("other", &write_request(&[one(10, 1)]));
    assert_eq!(read_all("other"), vec![one(10, 1)]);

    let rejected = weft
        .metric("weft_samples_rejected_total", &[])
        .unwrap_or(0.0)
        - rejected_before;
    assert!(
        rejected >= 2.0,
        "weft_samples_rejected_total grew by {rejected}, want >= 2"
    );
    weft.assert_still_serves("series limit");
}

/// A push takes its write slot once its body has arrived: a client that trickles its body
/// holds no slot (before, it held the only one and every other push got 503), so the next
/// push is taken. That a push finding every slot taken gets 503 + Retry-After is checked in
/// `api`'s unit tests, where a slot can be held for as long as the test needs.
#[test]
fn a_trickling_body_holds_no_write_slot() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    let weft = Weft::start(&["--limits.max-inflight-requests", "1"]);
    let t = now_ms() - 60_000;
    let req = write_request(&[(companion("inflight"), vec![(t, 1.0f64.to_bits())])]);

    let mut slow = std::net::TcpStream::connect(("127.0.0.1", weft.port)).expect("connect");
    slow.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        slow,
        "POST /api/v1/push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nX-Scope-OrgID: {TENANT}\r\nContent-Length: 100000\r\n\r\n"
    )
    .expect("send headers");
    slow.write_all(&[0u8; 16]).expect("send part of the body");
    slow.flush().expect("flush");

    // Wait until the slow request is being served (its push bytes show) before pushing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while weft.metric("weft_inflight_push_bytes", &[]) != Some(1024.0) {
        assert!(
            Instant::now() < deadline,
            "the slow request never started its body"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The gauge appears with the first slot taken.
    assert_eq!(
        weft.metric("weft_inflight_requests", &[("reason", "write")])
            .unwrap_or(0.0),
        0.0,
        "a body on its way in holds a write slot"
    );
    let taken = weft.push(TENANT, &req);
    assert_eq!(
        taken.status,
        204,
        "a push while another trickles its body: {}",
        taken.text()
    );

    drop(slow);
    weft.assert_still_serves("in flight");
}

#[test]
fn push_bytes_in_flight_over_the_bound_get_503_and_the_gauge_shows_them() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    let weft = Weft::start(&["--limits.max-inflight-push-bytes", "65536"]);
    let t = now_ms() - 60_000;
    let req = write_request(&[(companion("push-bytes"), vec![(t, 1.0f64.to_bits())])]);

    // A slow push that has sent 60 KiB of its 100 kB holds 60 of the 64 KiB: push bytes are
    // counted as they arrive, not as announced.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", weft.port)).expect("connect");
    write!(
        slow,
        "POST /api/v1/push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nX-Scope-OrgID: {TENANT}\r\nContent-Length: 100000\r\n\r\n"
    )
    .expect("send headers");
    slow.write_all(&[0u8; 61440])
        .expect("send part of the body");
    slow.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(10);
    while weft.metric("weft_inflight_push_bytes", &[]) != Some(61440.0) {
        assert!(
            Instant::now() < deadline,
            "the slow push never reserved its bytes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A small push fits in the rest; one of 8 KiB does not.
    let small = weft.push(TENANT, &req);
    assert_eq!(small.status, 204, "{}", small.text());
    let big = weft.push_raw(
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Scope-OrgID", TENANT),
        ],
        vec![0u8; 8192],
    );
    assert_eq!(big.status, 503, "{}", big.text());
    assert!(
        big.text().contains("bytes of pushes in flight"),
        "{}",
        big.text()
    );
    assert!(big.header("retry-after").is_some());
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(10);
    while weft.metric("weft_inflight_push_bytes", &[]) != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "bytes not released after the client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    weft.assert_still_serves("push bytes");
}
