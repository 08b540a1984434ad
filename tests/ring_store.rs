//! A ring sharing one bucket: each replica uploads its own copy of every chunk, and the
//! compactor merges them so that the store holds each sample once.
//!
//! Real etcd, three real weft nodes in ring mode (replication factor 3, so every node holds
//! every series), a `file://` store they share, and `weft compact` on it. The samples in
//! the store are counted from the objects themselves (`weft inspect object`). On the way: a
//! push carrying `x-weft-peer` is applied where it lands and never forwarded, and a node
//! that gets SIGTERM leaves the ring at once and exits 0.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::etcd::Etcd;
use common::*;
use prost::Message;
use rand::{Rng, SeedableRng};
use weft::proto::prompb::{MatcherType, WriteRequest};

const TENANT: &str = "ring-store";
const SERIES: usize = 30;
const SAMPLES: usize = 240;
const STEP_MS: i64 = 15_000;

fn objects(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            objects(&p, out);
        } else if p.to_string_lossy().contains("/chunks/") {
            out.push(p);
        }
    }
}

/// Samples held by every object of the store (the `total:` line of `weft inspect object`).
fn store_samples(store: &Path) -> (usize, u64) {
    let mut files = Vec::new();
    objects(store, &mut files);
    let mut total = 0;
    for f in &files {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["inspect", "object"])
            .arg(f)
            .output()
            .expect("weft inspect object");
        assert!(out.status.success(), "inspect {}: {:?}", f.display(), out);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("total:"))
            .unwrap_or_else(|| panic!("no total line for {}:\n{text}", f.display()));
        assert!(line.ends_with(" 0 bad chunks"), "{line}");
        let n: u64 = line
            .split(", ")
            .find_map(|p| p.strip_suffix(" samples"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no sample count in {line:?}"));
        total += n;
    }
    (files.len(), total)
}

/// GET `path` of `w` for the test's tenant; `peer` adds `x-weft-peer` (the node answers
/// from what it holds itself, asking nobody).
fn get_text(w: &Weft, path: &str, peer: bool) -> String {
    let mut rb = w.client().get(w.url(path)).header("X-Scope-OrgID", TENANT);
    if peer {
        rb = rb.header("x-weft-peer", "1");
    }
    rb.send().unwrap().text().unwrap()
}

/// Pushes `req` to `w` for the test's tenant (`peer`: as a peer's share) and wants a 204.
fn push_req(w: &Weft, req: &WriteRequest, peer: bool) {
    let mut headers = vec![
        ("X-Scope-OrgID", TENANT),
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
    ];
    if peer {
        headers.push(("x-weft-peer", "1"));
    }
    let r = w.push_raw(&headers, snappy(&req.encode_to_vec()));
    assert_eq!(r.status, 204, "{}", r.text());
}

fn everything() -> weft::proto::prompb::Query {
    query(
        i64::MIN,
        i64::MAX,
        vec![matcher(MatcherType::Re, "__name__", ".+")],
    )
}

fn assert_reads_back(w: &Weft, want: &BTreeMap<Labels, Samples>, what: &str) {
    let (sets, resp) = w.read_samples_resp(Some(TENANT), &[everything()]);
    assert_eq!(resp.status, 200, "{what}: {}", resp.text());
    assert!(
        resp.header(PARTIAL_HEADER).is_none(),
        "{what}: partial: {:?}",
        resp.header(PARTIAL_HEADER)
    );
    let got: BTreeMap<Labels, Samples> = sets[0].iter().cloned().collect();
    assert_eq!(got.len(), want.len(), "{what}: series");
    for (l, s) in want {
        assert_eq!(got.get(l), Some(s), "{what}: {}", fmt_labels(l));
    }
}

#[test]
fn replicas_upload_their_copies_and_the_compactor_keeps_each_sample_once() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let root = TempDir::new("ring-store");
    let store = root.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let url = format!("file://{}", store.display());
    let endpoint = etcd.endpoint();
    let nodes: Vec<Weft> = std::thread::scope(|s| {
        let hs: Vec<_> = ["s1", "s2", "s3"]
            .into_iter()
            .map(|id| {
                let dir = root.path().join(id);
                let (url, endpoint) = (url.clone(), endpoint.clone());
                s.spawn(move || {
                    let args = [
                        "--store",
                        url.as_str(),
                        "--ring.etcd-endpoints",
                        endpoint.as_str(),
                        "--ring.instance-id",
                        id,
                        "--ring.heartbeat-timeout",
                        "3s",
                        "--ring.num-tokens",
                        "16",
                        "--compactor.enabled",
                        "false",
                    ];
                    std::fs::create_dir_all(&dir).unwrap();
                    Weft::start_with_env(Some(&dir), &args, &[], None)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every node sees three ACTIVE instances before the first push (a push to a node that
    // sees fewer than two would get 503).
    for w in &nodes {
        w.wait_ring_active(3);
    }

    // Three days ago, in one 2h block: old enough for the compactor's block margin.
    let start = (now_ms() - 3 * 86_400_000) / 7_200_000 * 7_200_000 + 60_000;
    let mut want: BTreeMap<Labels, Samples> = BTreeMap::new();
    for i in 0..SERIES {
        let labels: Labels = vec![
            ("__name__".into(), format!("ring_store_{}", i % 3)),
            ("i".into(), i.to_string()),
        ];
        let samples: Samples = (0..SAMPLES)
            .map(|k| (start + k as i64 * STEP_MS, rng.random::<f64>().to_bits()))
            .collect();
        want.insert(labels, samples);
    }
    // Pushes of 60 samples a series, each to another node.
    for (round, k) in (0..SAMPLES).step_by(60).enumerate() {
        let req = WriteRequest {
            timeseries: want
                .iter()
                .map(|(l, s)| series_proto(l, &s[k..k + 60]))
                .collect(),
            metadata: Vec::new(),
        };
        let w = &nodes[round % nodes.len()];
        let r = w.push(TENANT, &req);
        assert_eq!(r.status, 204, "push {round}: {}", r.text());
        assert_eq!(
            r.header("X-Prometheus-Remote-Write-Samples-Written"),
            Some((SERIES * 60).to_string()),
            "push {round}"
        );
    }
    for (i, w) in nodes.iter().enumerate() {
        assert_reads_back(w, &want, &format!("through node {i}"));
    }

    // A push carrying x-weft-peer is a peer's share: applied where it lands, never
    // forwarded again. A peer-scoped read (x-weft-peer) answers from that node alone; a
    // client's read through any node finds it.
    let peer_labels: Labels = vec![("__name__".into(), "peer_only".into())];
    let peer_push = WriteRequest {
        timeseries: vec![{
            let mut ts = series_proto(&peer_labels, &[(start, 1.5f64.to_bits())]);
            ts.exemplars = vec![weft::proto::prompb::Exemplar {
                labels: vec![weft::proto::prompb::Label {
                    name: "trace_id".into(),
                    value: "ring-peer-only".into(),
                }],
                value: 1.5,
                timestamp: start,
            }];
            ts
        }],
        metadata: Vec::new(),
    };
    push_req(&nodes[0], &peer_push, true);
    for (i, w) in nodes.iter().enumerate() {
        let text = get_text(w, "/api/v1/series?match[]=peer_only", true);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let n = v["data"].as_array().map_or(0, Vec::len);
        assert_eq!(
            n,
            usize::from(i == 0),
            "node {i} holds the peer push: {text}"
        );
        assert_eq!(
            w.series(Some(TENANT), &["peer_only"], &[]).len(),
            1,
            "a client's read through node {i} finds it"
        );
        let text = get_text(w, "/api/v1/query_exemplars?query=peer_only", false);
        assert!(
            text.contains("ring-peer-only"),
            "node {i} finds the exemplar on node 0: {text}"
        );
    }

    // Metadata alone goes to the replicas of its family too (rf 3 of 3: every node).
    let metadata_push = WriteRequest {
        timeseries: Vec::new(),
        metadata: vec![weft::proto::prompb::MetricMetadata {
            r#type: 1,
            metric_family_name: "ring_store_0".into(),
            help: "a counter of the ring test".into(),
            unit: String::new(),
        }],
    };
    push_req(&nodes[1], &metadata_push, false);
    for (i, w) in nodes.iter().enumerate() {
        let text = get_text(w, "/api/v1/metadata?metric=ring_store_0", true);
        assert!(
            text.contains("a counter of the ring test"),
            "node {i} holds the metadata: {text}"
        );
    }

    for w in &nodes {
        let r = w.try_post("/ingester/flush?wait=true").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let total = (SERIES * SAMPLES) as u64;
    let (objs, before) = store_samples(&store);
    eprintln!("seed {seed}: store before compaction: {objs} objects, {before} samples ({total} written, rf 3)");
    assert_eq!(
        before,
        3 * total + 1,
        "every replica uploads its own copy (and node 0 the peer push)"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "compact",
            "--store",
            &url,
            "--once",
            "--compactor.block-margin=1m",
        ])
        .output()
        .expect("weft compact");
    assert!(
        out.status.success(),
        "weft compact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (objs, after) = store_samples(&store);
    eprintln!("store after compaction: {objs} objects, {after} samples");
    assert_eq!(after, total + 1, "the compactor keeps each sample once");

    // SIGTERM: the node leaves the ring (its entry goes at once, not after the TTL) and
    // exits 0.
    let mut nodes = nodes;
    let mut last = nodes.pop().unwrap();
    last.signal(libc::SIGTERM);
    assert!(last.wait_exit(Duration::from_secs(60)).success());
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let r = nodes[0]
            .client()
            .get(nodes[0].url("/ring?format=json"))
            .send();
        let v: serde_json::Value = serde_json::from_str(&r.unwrap().text().unwrap()).unwrap();
        if v["instances"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the SIGTERMed node is still in the ring 2 s after its exit: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A fresh single node reading the store alone sees every sample once.
    drop(nodes);
    want.insert(peer_labels, vec![(start, 1.5f64.to_bits())]);
    let fresh = Weft::start_with_env(None, &["--store", &url], &[], None);
    assert_reads_back(&fresh, &want, "a fresh node from the store");
}
