//! The Cortex ingester gRPC service (`--grpc.listen`, `cortex.Ingester`), driven from outside
//! the binary by a gRPC client over HTTP/2, as a Cortex or Mimir querier or distributor would:
//!
//! - `Push` stores a `WriteRequest` (Cortex's, which is remote write 1.0's on the wire), bit
//!   for bit, per tenant (`x-scope-orgid`), and the HTTP remote read returns it exactly;
//! - `QueryStream` returns what HTTP pushes stored, as Cortex chunks (encoding 4 for XOR) that
//!   decode to exactly the samples pushed, with the node's id and the tenant;
//! - `LabelNames`, `LabelValues` and `MetricsForLabelMatchers` agree with the HTTP API;
//! - bad input is a gRPC error with a clear message, never a crash: garbage bytes, an
//!   oversized message, an unknown method, an invalid tenant; and a connection past
//!   `--grpc.max-connections` is closed;
//! - `weft_grpc_requests_total` counts each call by method and code.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Status};
use tonic_prost::ProstCodec;
use weft::proto::cortex::{
    EncodedWriteRequest, LabelMatchers, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, MetricsForLabelMatchersRequest, MetricsForLabelMatchersResponse,
    QueryRequest, QueryStreamResponse, WriteResponse, ENCODING_XOR,
};
use weft::proto::prompb::{MatcherType, Query};

use common::s3::free_port;
use common::workload::{encode_push_of, mix, Workload};
use common::{matcher, unsnappy, Labels, Samples, Weft};

const LOAD: Workload = Workload {
    metric: "grpc_test_total",
    job: "grpc",
    series_per_writer: 12,
    arbitrary_percent: 30,
};

struct Client {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl Client {
    async fn connect(port: u16) -> Result<Client, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .connect()
            .await?;
        Ok(Client {
            grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20),
        })
    }

    fn request<T>(msg: T, tenant: Option<&str>) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = tenant {
            r.metadata_mut()
                .insert("x-scope-orgid", t.parse().expect("tenant metadata"));
        }
        r
    }

    async fn unary<Q, A>(
        &mut self,
        method: &'static str,
        msg: Q,
        tenant: Option<&str>,
    ) -> Result<A, Status>
    where
        Q: Message + Send + Sync + 'static,
        A: Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let r = self
            .grpc
            .unary(
                Self::request(msg, tenant),
                PathAndQuery::from_static(method),
                ProstCodec::<Q, A>::default(),
            )
            .await?;
        Ok(r.into_inner())
    }

    /// `Push` of raw `WriteRequest` bytes (sent as they are: a message whose encoding is the
    /// bytes).
    async fn push(&mut self, raw: Vec<u8>, tenant: Option<&str>) -> Result<(), Status> {
        let _: WriteResponse = self
            .unary("/cortex.Ingester/Push", EncodedWriteRequest(raw), tenant)
            .await?;
        Ok(())
    }

    /// `QueryStream`: every response message, in order, and the `x-weft-partial` marker.
    async fn query_stream(
        &mut self,
        q: QueryRequest,
        tenant: Option<&str>,
    ) -> Result<(Vec<QueryStreamResponse>, Option<String>), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let r = self
            .grpc
            .server_streaming(
                Self::request(q, tenant),
                PathAndQuery::from_static("/cortex.Ingester/QueryStream"),
                ProstCodec::<QueryRequest, QueryStreamResponse>::default(),
            )
            .await?;
        let partial = r
            .metadata()
            .get("x-weft-partial")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let mut stream = r.into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.message().await? {
            out.push(m);
        }
        Ok((out, partial))
    }
}

/// The workload's series of `writer` at `ts`, as (labels, samples).
fn series_of(seed: u64, writer: usize, tenant: usize, ts: &[i64]) -> Vec<(Labels, Samples)> {
    (0..LOAD.series_per_writer)
        .map(|s| {
            let samples = ts
                .iter()
                .map(|&t| (t, LOAD.value_bits(seed, writer, tenant, s, t)))
                .collect();
            (LOAD.series_labels(writer, s), samples)
        })
        .collect()
}

/// The raw (uncompressed) `WriteRequest` of `series`.
fn raw_write_request(series: &[(Labels, Samples)]) -> Vec<u8> {
    let snappy = encode_push_of(series.iter().map(|(l, s)| (l, s.clone())));
    unsnappy(&snappy).expect("our own snappy")
}

/// Decodes a `QueryStream` answer into series → samples, checking its chunks' encoding, the
/// ingester id and the tenant on every series.
fn decode_stream(
    msgs: &[QueryStreamResponse],
    want_user: &str,
    want_from: &str,
) -> BTreeMap<Labels, Samples> {
    let mut out: BTreeMap<Labels, Samples> = BTreeMap::new();
    for m in msgs {
        for s in &m.chunkseries {
            assert_eq!(s.user_id, want_user, "user_id of a series");
            assert_eq!(
                s.from_ingester_id, want_from,
                "from_ingester_id of a series"
            );
            let mut labels: Labels = s
                .labels
                .iter()
                .map(|l| {
                    (
                        String::from_utf8(l.name.clone()).expect("utf-8 name"),
                        String::from_utf8(l.value.clone()).expect("utf-8 value"),
                    )
                })
                .collect();
            let sorted = {
                let mut c = labels.clone();
                c.sort();
                c
            };
            assert_eq!(labels, sorted, "labels of a series must be sorted by name");
            labels.sort();
            let samples = out.entry(labels).or_default();
            for c in &s.chunks {
                assert_eq!(c.encoding, ENCODING_XOR, "Cortex's PrometheusXorChunk is 4");
                let decoded = weft::chunk::decode_bits(&c.data).expect("chunk decodes");
                assert!(!decoded.is_empty(), "an empty chunk");
                assert_eq!(decoded.first().map(|s| s.0), Some(c.start_timestamp_ms));
                assert_eq!(decoded.last().map(|s| s.0), Some(c.end_timestamp_ms));
                samples.extend(decoded);
            }
        }
    }
    out
}

fn in_range(series: &[(Labels, Samples)], start: i64, end: i64) -> BTreeMap<Labels, Samples> {
    series
        .iter()
        .map(|(l, s)| {
            let kept = s
                .iter()
                .copied()
                .filter(|(t, _)| (start..=end).contains(t))
                .collect();
            (l.clone(), kept)
        })
        .collect()
}

fn grpc_count(metrics: &str, method: &str, code: &str) -> u64 {
    let want = format!("weft_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

#[test]
fn cortex_ingester_grpc_speaks_for_the_node() {
    let seed = common::seed();
    let port = free_port();
    let port_s = format!("127.0.0.1:{port}");
    let weft = Weft::start(&[
        "--grpc.listen",
        &port_s,
        "--grpc.max-connections",
        "3",
        "--ingester.id",
        "grpc-node-1",
        // Small, so that an oversized Push is cheap to make.
        "--limits.max-decompressed-bytes",
        "2000000",
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = rt.block_on(Client::connect(port)).expect("gRPC connect");

    // Writer 0 pushes over gRPC to tenant "alpha", writer 1 over HTTP to tenant "alpha", and
    // writer 0's series go to tenant "beta" over gRPC with other values.
    let now = common::now_ms() - 10 * 60_000;
    let ts: Vec<i64> = (0..240)
        .map(|i| now + i * 1000 + (mix(seed ^ i as u64) % 7) as i64)
        .collect();
    let by_grpc = series_of(seed, 0, 0, &ts);
    let by_http = series_of(seed, 1, 0, &ts);
    let beta = series_of(seed, 0, 1, &ts);
    for part in ts.chunks(60) {
        let slice = |all: &[(Labels, Samples)]| -> Vec<(Labels, Samples)> {
            all.iter()
                .map(|(l, s)| {
                    let kept = s
                        .iter()
                        .copied()
                        .filter(|(t, _)| part.contains(t))
                        .collect();
                    (l.clone(), kept)
                })
                .collect()
        };
        rt.block_on(client.push(raw_write_request(&slice(&by_grpc)), Some("alpha")))
            .expect("gRPC Push (alpha)");
        rt.block_on(client.push(raw_write_request(&slice(&beta)), Some("beta")))
            .expect("gRPC Push (beta)");
        let body = encode_push_of(slice(&by_http).iter().map(|(l, s)| (l, s.clone())));
        let r = weft.push_raw(
            &[
                ("X-Scope-OrgID", "alpha"),
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
            ],
            body,
        );
        assert_eq!(r.status, 204, "HTTP push: {}", r.text());
    }
    let pushes = 2 * ts.chunks(60).len() as u64;

    // What gRPC pushed, read back over HTTP remote read: exact, bit for bit, per tenant.
    let (start, end) = (ts[17], ts[200]);
    let q = Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers: vec![
            matcher(MatcherType::Eq, "__name__", LOAD.metric),
            matcher(MatcherType::Eq, "writer", "w0"),
        ],
        hints: None,
    };
    for (tenant, want) in [("alpha", &by_grpc), ("beta", &beta)] {
        let got: BTreeMap<Labels, Samples> = weft
            .read_chunks(Some(tenant), std::slice::from_ref(&q))[0]
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            got,
            in_range(want, start, end),
            "HTTP remote read of what gRPC pushed to {tenant}"
        );
    }

    // QueryStream: what HTTP pushed, as Cortex chunks.
    let qr = |writer: &str| QueryRequest {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers: vec![
            matcher(MatcherType::Eq, "__name__", LOAD.metric),
            matcher(MatcherType::Re, "writer", writer),
        ],
    };
    let (msgs, partial) = rt
        .block_on(client.query_stream(qr("w1"), Some("alpha")))
        .expect("QueryStream");
    assert_eq!(
        partial, None,
        "nothing is missing from a node with its data local"
    );
    let got = decode_stream(&msgs, "alpha", "grpc-node-1");
    assert_eq!(
        got,
        in_range(&by_http, ts[0], ts[239]),
        "QueryStream of what HTTP pushed: whole chunks, so every sample of the series"
    );
    // Both writers, through a regex, and the chunks cover [start, end] exactly.
    let (msgs, _) = rt
        .block_on(client.query_stream(qr("w[01]"), Some("alpha")))
        .expect("QueryStream");
    let got = decode_stream(&msgs, "alpha", "grpc-node-1");
    assert_eq!(got.len(), 2 * LOAD.series_per_writer);
    for (labels, samples) in &got {
        let want = by_grpc
            .iter()
            .chain(&by_http)
            .find(|(l, _)| l == labels)
            .unwrap_or_else(|| panic!("QueryStream returned a series never pushed: {labels:?}"));
        let kept: Samples = samples
            .iter()
            .copied()
            .filter(|(t, _)| (start..=end).contains(t))
            .collect();
        assert_eq!(
            kept,
            in_range(std::slice::from_ref(want), start, end)[labels]
        );
    }
    // Another tenant sees none of it.
    let (msgs, _) = rt
        .block_on(client.query_stream(qr("w1"), Some("gamma")))
        .expect("QueryStream");
    assert!(
        msgs.iter().all(|m| m.chunkseries.is_empty()),
        "tenant gamma saw alpha's series"
    );

    // Label calls agree with the HTTP API.
    let names: LabelNamesResponse = rt
        .block_on(client.unary(
            "/cortex.Ingester/LabelNames",
            LabelNamesRequest {
                start_timestamp_ms: start,
                end_timestamp_ms: end,
                matchers: None,
            },
            Some("alpha"),
        ))
        .expect("LabelNames");
    let http_names = weft.labels(
        Some("alpha"),
        &[],
        &[
            ("start", &(start / 1000).to_string()),
            ("end", &(end / 1000 + 1).to_string()),
        ],
    );
    assert_eq!(names.label_names, http_names);
    assert_eq!(names.label_names, ["__name__", "job", "series", "writer"]);

    let values: LabelValuesResponse = rt
        .block_on(client.unary(
            "/cortex.Ingester/LabelValues",
            LabelValuesRequest {
                label_name: "series".into(),
                start_timestamp_ms: start,
                end_timestamp_ms: end,
                matchers: Some(LabelMatchers {
                    matchers: vec![matcher(MatcherType::Re, "series", "00[0-4]")],
                }),
            },
            Some("alpha"),
        ))
        .expect("LabelValues");
    assert_eq!(values.label_values, ["000", "001", "002", "003", "004"]);
    let values: LabelValuesResponse = rt
        .block_on(client.unary(
            "/cortex.Ingester/LabelValues",
            LabelValuesRequest {
                label_name: "writer".into(),
                ..Default::default()
            },
            Some("alpha"),
        ))
        .expect("LabelValues, all time");
    assert_eq!(
        values.label_values,
        weft.label_values(Some("alpha"), "writer", &[])
    );
    assert_eq!(values.label_values, ["w0", "w1"]);

    let metrics: MetricsForLabelMatchersResponse = rt
        .block_on(client.unary(
            "/cortex.Ingester/MetricsForLabelMatchers",
            MetricsForLabelMatchersRequest {
                start_timestamp_ms: start,
                end_timestamp_ms: end,
                matchers_set: vec![
                    LabelMatchers {
                        matchers: vec![
                            matcher(MatcherType::Eq, "writer", "w0"),
                            matcher(MatcherType::Eq, "series", "003"),
                        ],
                    },
                    LabelMatchers {
                        matchers: vec![
                            matcher(MatcherType::Eq, "writer", "w1"),
                            matcher(MatcherType::Nre, "series", "00[01]"),
                        ],
                    },
                ],
            },
            Some("alpha"),
        ))
        .expect("MetricsForLabelMatchers");
    let mut got: Vec<Labels> = metrics
        .metric
        .iter()
        .map(|m| {
            m.labels
                .iter()
                .map(|l| {
                    (
                        String::from_utf8_lossy(&l.name).into_owned(),
                        String::from_utf8_lossy(&l.value).into_owned(),
                    )
                })
                .collect()
        })
        .collect();
    got.sort();
    let mut want: Vec<Labels> = std::iter::once(LOAD.series_labels(0, 3))
        .chain((2..LOAD.series_per_writer).map(|s| LOAD.series_labels(1, s)))
        .collect();
    want.sort();
    assert_eq!(got, want, "MetricsForLabelMatchers: the union of both sets");

    // Hostile input: a clear error each, and the node stays up.
    let err = rt
        .block_on(client.push(vec![0x0a, 0xff, 0xff, 0x01, 0x02], Some("alpha")))
        .expect_err("garbage Push");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(!err.message().is_empty());
    let big = raw_write_request(&[(
        LOAD.series_labels(9, 0),
        (0..200_000).map(|i| (now + i, mix(i as u64))).collect(),
    )]);
    assert!(big.len() > 2_000_000);
    let err = rt
        .block_on(client.push(big, Some("alpha")))
        .expect_err("oversized Push");
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "an oversized Push: {err:?}"
    );
    let err = rt
        .block_on(client.push(raw_write_request(&by_grpc[..1]), Some("bad/tenant")))
        .expect_err("an invalid tenant");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .block_on(client.unary::<LabelNamesRequest, LabelNamesResponse>(
            "/cortex.Ingester/UserStats",
            LabelNamesRequest::default(),
            None,
        ))
        .expect_err("an unserved method");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    let err = rt
        .block_on(
            client.unary::<MetricsForLabelMatchersRequest, MetricsForLabelMatchersResponse>(
                "/cortex.Ingester/MetricsForLabelMatchers",
                MetricsForLabelMatchersRequest::default(),
                None,
            ),
        )
        .expect_err("no matchers");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .block_on(client.unary::<LabelValuesRequest, LabelValuesResponse>(
            "/cortex.Ingester/LabelValues",
            LabelValuesRequest {
                label_name: "job".into(),
                matchers: Some(LabelMatchers {
                    matchers: vec![matcher(MatcherType::Re, "job", "(unclosed")],
                }),
                ..Default::default()
            },
            None,
        ))
        .expect_err("a bad regex");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Connections past --grpc.max-connections (3) are closed at once; those open still work.
    let (extra_ok, refused) = rt.block_on(async {
        let mut open = Vec::new();
        let mut refused = 0;
        for _ in 0..4 {
            match Client::connect(port).await {
                Ok(mut c) => {
                    let r: Result<LabelNamesResponse, _> = c
                        .unary(
                            "/cortex.Ingester/LabelNames",
                            LabelNamesRequest::default(),
                            Some("alpha"),
                        )
                        .await;
                    match r {
                        Ok(_) => open.push(c),
                        Err(_) => refused += 1,
                    }
                }
                Err(_) => refused += 1,
            }
        }
        (open.len(), refused)
    });
    // The first client holds one connection: two more fit, two are refused.
    assert_eq!((extra_ok, refused), (2, 2), "connections past the bound");
    let metrics = weft.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weft_grpc_connections_refused_total ") && !l.ends_with(" 0")),
        "refused connections are counted"
    );

    // Every call counted by method and code.
    assert_eq!(grpc_count(&metrics, "Push", "OK"), pushes);
    assert_eq!(grpc_count(&metrics, "Push", "InvalidArgument"), 2);
    // Refused by the size limit before weft saw it, and counted all the same.
    assert_eq!(grpc_count(&metrics, "Push", "OutOfRange"), 1);
    assert_eq!(grpc_count(&metrics, "QueryStream", "OK"), 3);
    assert_eq!(grpc_count(&metrics, "LabelNames", "OK"), 3);
    assert_eq!(grpc_count(&metrics, "LabelValues", "OK"), 2);
    assert_eq!(grpc_count(&metrics, "LabelValues", "InvalidArgument"), 1);
    assert_eq!(grpc_count(&metrics, "MetricsForLabelMatchers", "OK"), 1);
    assert_eq!(grpc_count(&metrics, "other", "Unimplemented"), 1);

    // The node is still up and answers over both protocols.
    let (msgs, _) = rt
        .block_on(client.query_stream(qr("w0"), Some("beta")))
        .expect("QueryStream after the bad calls");
    assert_eq!(
        decode_stream(&msgs, "beta", "grpc-node-1"),
        in_range(&beta, ts[0], ts[239])
    );
}

/// Series names (`__name__` and `i`) held by `w` itself: a peer-marked `/api/v1/series`,
/// which a ring node answers from what it holds, asking nobody.
fn held_by(w: &Weft, tenant: &str) -> Vec<String> {
    let r = w
        .client()
        .get(w.url("/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D"))
        .header("X-Scope-OrgID", tenant)
        .header("x-weft-peer", "1")
        .send()
        .expect("series");
    let v: serde_json::Value =
        serde_json::from_str(&r.text().expect("series")).expect("series JSON");
    let mut out: Vec<String> = v["data"]
        .as_array()
        .expect("series data")
        .iter()
        .map(|s| s["i"].as_str().expect("label i").to_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn in_ring_mode_grpc_calls_go_through_the_ring() {
    let seed = common::seed();
    let Some(etcd) = common::etcd::Etcd::start() else {
        return;
    };
    let endpoint = etcd.endpoint();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // Replication factor 1: each series lives on exactly one node, so where it landed shows
    // whether a gRPC Push was split by owner, and a read through one node must ask the others.
    let nodes: Vec<Weft> = std::thread::scope(|s| {
        let hs: Vec<_> = ports
            .iter()
            .enumerate()
            .map(|(k, port)| {
                let (endpoint, grpc) = (endpoint.clone(), format!("127.0.0.1:{port}"));
                s.spawn(move || {
                    let id = format!("g{k}");
                    Weft::start(&[
                        "--grpc.listen",
                        &grpc,
                        "--ring.etcd-endpoints",
                        &endpoint,
                        "--ring.instance-id",
                        &id,
                        "--ring.replication-factor",
                        "1",
                        "--ring.heartbeat-timeout",
                        "3s",
                        "--ring.num-tokens",
                        "16",
                    ])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for w in &nodes {
        w.wait_ring_active(3);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = common::now_ms() - 60_000;
    let want: Vec<(Labels, Samples)> = (0..30)
        .map(|i| {
            let labels = common::labels(&[("__name__", "ring_grpc"), ("i", &format!("{i:02}"))]);
            let samples = (0..50)
                .map(|k| (now + k * 1000, mix(seed ^ (i << 8) ^ k as u64)))
                .collect();
            (labels, samples)
        })
        .collect();
    rt.block_on(async {
        let mut c = Client::connect(ports[0]).await.expect("connect g0");
        c.push(raw_write_request(&want), Some("ring")).await
    })
    .expect("gRPC Push to g0");

    // Split by owner: every node holds some, none holds all, and together they hold each
    // series once.
    let held: Vec<Vec<String>> = nodes.iter().map(|w| held_by(w, "ring")).collect();
    eprintln!(
        "series held by g0, g1, g2: {:?}",
        held.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut all: Vec<String> = held.iter().flatten().cloned().collect();
    all.sort();
    let names: Vec<String> = (0..30).map(|i| format!("{i:02}")).collect();
    assert_eq!(all, names, "each series on exactly one node (rf 1)");
    assert!(
        held.iter().all(|h| !h.is_empty() && h.len() < 30),
        "a gRPC Push must be split by owner: {held:?}"
    );

    // Through the other nodes, QueryStream and LabelValues see everything.
    let want_map: BTreeMap<Labels, Samples> = want.iter().cloned().collect();
    for (k, port) in ports.iter().enumerate().skip(1) {
        let (msgs, values) = rt.block_on(async {
            let mut c = Client::connect(*port).await.expect("connect");
            let q = QueryRequest {
                start_timestamp_ms: now - 1,
                end_timestamp_ms: now + 60_000,
                matchers: vec![matcher(MatcherType::Eq, "__name__", "ring_grpc")],
            };
            let (msgs, partial) = c.query_stream(q, Some("ring")).await.expect("QueryStream");
            assert_eq!(partial, None, "all three nodes are up");
            let values: LabelValuesResponse = c
                .unary(
                    "/cortex.Ingester/LabelValues",
                    LabelValuesRequest {
                        label_name: "i".into(),
                        ..Default::default()
                    },
                    Some("ring"),
                )
                .await
                .expect("LabelValues");
            (msgs, values)
        });
        let mut got: BTreeMap<Labels, Samples> = BTreeMap::new();
        for m in &msgs {
            for s in &m.chunkseries {
                let labels: Labels = s
                    .labels
                    .iter()
                    .map(|l| {
                        (
                            String::from_utf8_lossy(&l.name).into_owned(),
                            String::from_utf8_lossy(&l.value).into_owned(),
                        )
                    })
                    .collect();
                let e = got.entry(labels).or_default();
                for c in &s.chunks {
                    e.extend(weft::chunk::decode_bits(&c.data).expect("chunk"));
                }
            }
        }
        for s in got.values_mut() {
            s.sort();
            s.dedup();
        }
        assert_eq!(got, want_map, "QueryStream through g{k}");
        assert_eq!(values.label_values, names, "LabelValues through g{k}");
    }
}
