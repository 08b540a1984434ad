//! Reads asked of every node that may hold the series, merged without repeats.
//!
//! A node that takes a read (any node) answers it from everything it can reach itself
//! (memory, spill, local tier, the store) and asks every other instance of the ring with
//! [`super::PEER_HEADER`], so they answer from what they hold and ask nobody else. The
//! answers are merged series by series; replicas hold the same samples, and the merge keeps
//! each sample once (equal chunks once as they are, overlapping ones merged by timestamp:
//! see `query::merge`).
//!
//! Every instance is asked, whatever its state: a JOINING node may hold samples from before
//! a restart, a LEAVING one holds its samples until it has flushed them. Peers are asked
//! with the read's own deadline; one that does not answer in time counts as down.
//!
//! Complete or partial: with `rf` replicas and a write quorum of `rf / 2 + 1`, every
//! acknowledged sample is on at least a quorum of replicas, so it is still on one of them
//! while at most `rf - quorum` instances fail to answer: the answer is complete. Past that
//! it carries a warning (the remote read's `x-weft-partial` header, the JSON API's
//! `warnings`).

use std::time::Duration;

use prost::Message;
use serde_json::Value;
use tokio::time::Instant;

use super::desc::InstanceDesc;
use super::forward::error_chain;
use super::replicas::Ring;
use super::PEER_HEADER;
use crate::head::ChunkCopy;
use crate::metrics::{Metrics, PeerResultLabels};
use crate::model::Labels;
use crate::proto::prompb::{ChunkEncoding, ChunkedReadResponse, ReadRequest, ResponseType};
use crate::proto::{compress, read_chunked_frame};

/// The instances to ask: every instance but this one.
pub fn peers<'r>(ring: &'r Ring, self_id: &str) -> Vec<&'r InstanceDesc> {
    ring.instances()
        .iter()
        .filter(|i| i.id != self_id && !i.addr.is_empty())
        .collect()
}

/// The warning of an answer for which `failed` of the instances did not answer, or `None`
/// while that many replicas may be down without losing a sample.
pub fn partial_warning(failed: &[(String, String)], rf: usize) -> Option<String> {
    let tolerated = rf.saturating_sub(super::forward::quorum(rf));
    if failed.len() <= tolerated {
        return None;
    }
    let mut w = format!(
        "{} ring instances did not answer (replication factor {rf} tolerates {tolerated}): \
         the answer may be partial",
        failed.len()
    );
    for (id, why) in failed.iter().take(3) {
        w.push_str(&format!("; {id}: {why}"));
    }
    Some(w)
}

/// One peer's chunks of one series.
#[derive(Debug)]
pub struct PeerSeries {
    /// Index of the query in the request.
    pub query: usize,
    /// The series.
    pub labels: Labels,
    /// Its chunks.
    pub chunks: Vec<ChunkCopy>,
}

/// What the peers answered to a remote read.
#[derive(Debug, Default)]
pub struct PeerReads {
    /// Every series of every answer (a series may come from several peers).
    pub series: Vec<PeerSeries>,
    /// Peers that did not answer, and why.
    pub failed: Vec<(String, String)>,
    /// Peers' own partial markers.
    pub warnings: Vec<String>,
    /// Bytes of the answers.
    pub bytes: u64,
}

/// A remote read to ask the peers.
#[derive(Debug)]
pub struct ReadAsk<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The request as the client sent it.
    pub req: &'a ReadRequest,
    /// When the answers must be in.
    pub deadline: Instant,
    /// Largest answer taken from one peer.
    pub max_bytes: u64,
    /// Largest frame of a streamed answer.
    pub max_frame: usize,
}

/// Asks `peers` for `ask.req` (as STREAMED_XOR_CHUNKS), each answer at most
/// `ask.max_bytes` long and in by `ask.deadline`.
pub async fn remote_read(
    client: &reqwest::Client,
    metrics: &Metrics,
    peers: &[&InstanceDesc],
    ask: ReadAsk<'_>,
) -> PeerReads {
    let ReadAsk {
        tenant,
        req,
        deadline,
        max_bytes,
        max_frame,
    } = ask;
    let mut req = req.clone();
    req.accepted_response_types = vec![ResponseType::StreamedXorChunks as i32];
    let body = compress(&req.encode_to_vec());
    let asks = peers.iter().map(|p| {
        let body = body.clone();
        async move {
            let r = read_one(client, p, tenant, body, deadline, max_bytes, max_frame).await;
            (p, r)
        }
    });
    let mut out = PeerReads::default();
    for (p, r) in futures::future::join_all(asks).await {
        let result = match &r {
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        metrics
            .ring
            .read_fanout
            .get_or_create(&PeerResultLabels {
                peer: p.id.clone(),
                result,
            })
            .inc();
        match r {
            Ok((series, partial, bytes)) => {
                out.series.extend(series);
                out.bytes += bytes;
                if let Some(w) = partial {
                    out.warnings.push(format!("{}: {w}", p.id));
                }
            }
            Err(e) => out.failed.push((p.id.clone(), e)),
        }
    }
    out
}

type OneRead = (Vec<PeerSeries>, Option<String>, u64);

async fn read_one(
    client: &reqwest::Client,
    peer: &InstanceDesc,
    tenant: &str,
    body: Vec<u8>,
    deadline: Instant,
    max_bytes: u64,
    max_frame: usize,
) -> Result<OneRead, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no time left before the read's deadline".into());
    }
    let resp = client
        .post(format!("http://{}/api/v1/read", peer.addr))
        .header("X-Scope-OrgID", tenant)
        .header(PEER_HEADER, "1")
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .timeout(left)
        .body(body)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let partial = resp
        .headers()
        .get(crate::api::read::PARTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            text.trim().chars().take(512).collect::<String>()
        ));
    }
    let bytes = read_capped(resp, max_bytes).await?;
    let n = bytes.len() as u64;
    let series = tokio::task::spawn_blocking(move || parse_frames(&bytes, max_frame))
        .await
        .map_err(|e| format!("parsing: {e}"))??;
    Ok((series, partial, n))
}

/// The body of `resp`, refused past `max_bytes`.
async fn read_capped(mut resp: reqwest::Response, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if (out.len() + chunk.len()) as u64 > max_bytes {
            return Err(format!(
                "answer larger than the read's budget of {max_bytes} bytes"
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Decodes a STREAMED_XOR_CHUNKS answer into series.
pub fn parse_frames(mut buf: &[u8], max_frame: usize) -> Result<Vec<PeerSeries>, String> {
    let mut out: Vec<PeerSeries> = Vec::new();
    while !buf.is_empty() {
        let (msg, rest) =
            read_chunked_frame(buf, max_frame.max(1 << 20) * 2).map_err(|e| e.to_string())?;
        buf = rest;
        let m = ChunkedReadResponse::decode(msg).map_err(|e| e.to_string())?;
        let query = usize::try_from(m.query_index).map_err(|_| "negative query index")?;
        for s in m.chunked_series {
            let labels =
                Labels::from_strs(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
                    .map_err(|e| format!("bad labels in a peer's answer: {e}"))?;
            let chunks: Vec<ChunkCopy> = s
                .chunks
                .into_iter()
                .map(|c| ChunkCopy {
                    min_t: c.min_time_ms,
                    max_t: c.max_time_ms,
                    data: c.data,
                    flushed: false,
                    encoding: match ChunkEncoding::try_from(c.r#type) {
                        Ok(ChunkEncoding::Histogram) => crate::store::object::ENCODING_HISTOGRAM,
                        Ok(ChunkEncoding::FloatHistogram) => {
                            crate::store::object::ENCODING_FLOAT_HISTOGRAM
                        }
                        _ => crate::store::object::ENCODING_XOR,
                    },
                })
                .collect();
            // A series split over frames comes in consecutive pieces.
            match out.last_mut() {
                Some(last) if last.query == query && last.labels == labels => {
                    last.chunks.extend(chunks)
                }
                _ => out.push(PeerSeries {
                    query,
                    labels,
                    chunks,
                }),
            }
        }
    }
    Ok(out)
}

/// What a peer answered to a Prometheus JSON API call: `data` and `warnings`.
#[derive(Debug)]
pub struct JsonAnswer {
    /// The `data` member.
    pub data: Value,
    /// The `warnings` member.
    pub warnings: Vec<String>,
}

/// Asks `peers` for `path_and_query` (a GET of the Prometheus API) for `tenant`. Returns
/// the answers and the peers that failed, with why.
pub async fn json_get(
    client: &reqwest::Client,
    metrics: &Metrics,
    peers: &[&InstanceDesc],
    tenant: &str,
    path_and_query: &str,
    timeout: Duration,
    max_bytes: u64,
) -> (Vec<JsonAnswer>, Vec<(String, String)>) {
    let asks = peers.iter().map(|p| async move {
        let r = async {
            let resp = client
                .get(format!("http://{}{path_and_query}", p.addr))
                .header("X-Scope-OrgID", tenant)
                .header(PEER_HEADER, "1")
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            let status = resp.status();
            let body = read_capped(resp, max_bytes).await?;
            if !status.is_success() {
                return Err(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ));
            }
            let mut v: Value =
                serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))?;
            let warnings = v
                .get("warnings")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Ok(JsonAnswer {
                data: v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
                warnings,
            })
        }
        .await;
        (p, r)
    });
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (p, r) in futures::future::join_all(asks).await {
        metrics
            .ring
            .read_fanout
            .get_or_create(&PeerResultLabels {
                peer: p.id.clone(),
                result: if r.is_ok() { "ok" } else { "failed" },
            })
            .inc();
        match r {
            Ok(a) => ok.push(a),
            Err(e) => failed.push((p.id.clone(), e)),
        }
    }
    (ok, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_replica_of_three_is_complete_two_are_partial() {
        let f = |n: usize| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("n{i}"), "down".into())).collect()
        };
        assert_eq!(partial_warning(&f(0), 3), None);
        assert_eq!(partial_warning(&f(1), 3), None);
        let w = partial_warning(&f(2), 3).expect("two down of rf 3 is partial");
        assert!(w.contains("2 ring instances"), "{w}");
        assert!(w.contains("n0: down"), "{w}");
        // rf 1 tolerates nothing; rf 5 tolerates two.
        assert!(partial_warning(&f(1), 1).is_some());
        assert_eq!(partial_warning(&f(2), 5), None);
        assert!(partial_warning(&f(3), 5).is_some());
    }

    #[test]
    fn frames_split_series_join_and_garbage_is_an_error() {
        use crate::proto::prompb::{Chunk, ChunkedSeries, Label};
        let series = |v: &str, t: i64| ChunkedSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: v.into(),
            }],
            chunks: vec![Chunk {
                min_time_ms: t,
                max_time_ms: t,
                r#type: ChunkEncoding::Xor as i32,
                data: vec![0, 0],
            }],
        };
        let mut buf = Vec::new();
        for msg in [
            ChunkedReadResponse {
                chunked_series: vec![series("a", 1)],
                query_index: 0,
            },
            ChunkedReadResponse {
                chunked_series: vec![series("a", 2), series("b", 3)],
                query_index: 0,
            },
        ] {
            crate::proto::write_chunked_frame(&mut buf, &msg.encode_to_vec());
        }
        let got = parse_frames(&buf, 1 << 20).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].chunks.len(), 2);
        assert_eq!(got[1].labels.metric_name(), Some("b"));
        let mut bad = buf.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert!(parse_frames(&bad, 1 << 20).is_err());
        assert!(parse_frames(&buf[..buf.len() - 3], 1 << 20).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_answer_over_the_budget_or_late_counts_as_a_failed_peer() {
        use crate::proto::prompb::{ChunkedSeries, Label};
        // A peer whose answer is one frame of about 4 KiB, and a peer that never answers.
        let msg = ChunkedReadResponse {
            chunked_series: vec![ChunkedSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "x".repeat(4096),
                }],
                chunks: Vec::new(),
            }],
            query_index: 0,
        };
        let mut frame = Vec::new();
        crate::proto::write_chunked_frame(&mut frame, &msg.encode_to_vec());
        let app = axum::Router::new()
            .route(
                "/api/v1/read",
                axum::routing::post(move || {
                    let frame = frame.clone();
                    async move { frame }
                }),
            )
            .route(
                "/slow/api/v1/read",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    ""
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        let peer = |id: &str, addr: String| InstanceDesc {
            id: id.into(),
            addr,
            zone: String::new(),
            state: super::super::InstanceState::Active,
            tokens: vec![1],
            registered_at_ms: 0,
            updated_at_ms: 0,
        };
        let (big, slow) = (
            peer("big", addr.clone()),
            peer("slow", format!("{addr}/slow")),
        );
        let peers = [&big, &slow];
        let metrics = Metrics::new();
        let client = reqwest::Client::new();
        let req = ReadRequest::default();
        let ask = |max_bytes| ReadAsk {
            tenant: "t",
            req: &req,
            deadline: Instant::now() + Duration::from_millis(500),
            max_bytes,
            max_frame: 1 << 20,
        };
        let started = Instant::now();
        let got = remote_read(&client, &metrics, &peers, ask(1024)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the deadline bounds the wait"
        );
        assert!(got.series.is_empty());
        let failed: Vec<&str> = got.failed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(failed, ["big", "slow"], "{:?}", got.failed);
        assert!(got.failed[0].1.contains("budget"), "{:?}", got.failed[0]);
        // Within the budget the same answer is taken.
        let got = remote_read(&client, &metrics, &peers[..1], ask(1 << 20)).await;
        assert_eq!(got.series.len(), 1);
        assert!(got.failed.is_empty());
        let count = |peer: &str, result| {
            metrics
                .ring
                .read_fanout
                .get_or_create(&PeerResultLabels {
                    peer: peer.into(),
                    result,
                })
                .get()
        };
        assert_eq!((count("big", "failed"), count("big", "ok")), (1, 1));
        assert_eq!(count("slow", "failed"), 1);
    }
}
