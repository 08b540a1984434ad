//! The ring drill of issue 11: a real etcd, a real S3 (moto) shared by every node, and
//! `weft serve` nodes in ring mode (rf 3, heartbeat timeout 3 s, 32 tokens each) under
//! steady remote-write load from writers that push to every node in turn.
//!
//! The phases, in order, with writers pushing throughout:
//! 1. three nodes come up and every node's `/ring?format=json` shows the same three ACTIVE;
//! 2. one node is SIGKILLed: pushes keep being acknowledged (two of three replicas are a
//!    quorum), its entry vanishes from the others' ring after the heartbeat timeout, and it
//!    comes back on the same data dir and id with the same tokens;
//! 3. a fourth node joins and every node sees four ACTIVE;
//! 4. one node leaves gracefully (`POST /ingester/shutdown`): it exits 0, its objects are in
//!    the bucket, and it vanishes from the others' ring at once, not after the lease's TTL;
//! 5. etcd is SIGSTOPped for longer than the heartbeat timeout: pushes keep being
//!    acknowledged with the last ring seen, `/ring` says etcd is down; after SIGCONT every
//!    node reports etcd up and all members ACTIVE within 10 s;
//! 6. writers stop; through EVERY remaining node, remote read (SAMPLES and
//!    STREAMED_XOR_CHUNKS) of all series gives exactly the acknowledged samples (every one,
//!    bit exact, no repeats; unacknowledged ones may be there, nothing else), never partial;
//!    `/api/v1/series` lists every series once; a remote write 2.0 push through one node
//!    reads back through each; `weft_ring_*` metrics are there and moved;
//! 7. two of the three nodes are SIGKILLed: a read on the survivor answers within 2 s and is
//!    marked partial, and a push gets 503 with Retry-After; SIGTERM then makes the survivor
//!    exit 0.
//!
//! Every 204 must carry `X-Prometheus-Remote-Write-Samples-Written` with the push's count,
//! and every `/ring` view must show each instance owning part of the token space.
//!
//! A push that gets 503 (or no answer) is retried with the same body on the next node, as
//! Prometheus retries; a sample counts as acknowledged only once a 204 came back for it.
//!
//! Knobs: `WEFT_TEST_SEED` repeats a run's data; `WEFT_TEST_LOG=1` echoes the nodes' logs.
//! Each start's log is kept in `<temp>/logs/`, and the whole directory is kept when the test
//! fails. Without etcd or moto the test is skipped (a failure with `CI=true`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::etcd::{etcd_self_check, Etcd};
use common::s3::{s3_env, Bucket, Moto};
use common::workload::Workload;
use common::*;
use serde_json::Value;
use weft::proto::prompb::MatcherType;

// ---- the set-up ----

const BUCKET: &str = "weft-ring";
const STORE_PREFIX: &str = "ring";
const TENANT: &str = "ring-drill";
const RING_PREFIX: &str = "weft-test/";
const REPLICATION_FACTOR: u64 = 3;
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
const NUM_TOKENS: usize = 32;

/// Writer threads; each owns [`SERIES_PER_WRITER`] series and pushes all of them at one
/// timestamp in each push.
const WRITERS: usize = 3;
/// 300 series in all.
const SERIES_PER_WRITER: usize = 100;
/// Each writer pushes at most this often: ~1 500 samples/s in all, each stored three times,
/// which a debug build on two shared cores keeps up with.
const PUSH_INTERVAL: Duration = Duration::from_millis(200);
/// How long a writer retries one push (same body, next node) before it gives up on it; its
/// samples then count as unacknowledged.
const PUSH_RETRY_DEADLINE: Duration = Duration::from_secs(15);
/// Pause between retries of a push that got 503 or no answer.
const PUSH_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Timeout of one push attempt.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nodes may take to agree on a ring after a change that needs no lease to lapse.
const RING_SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// After a graceful leave, how soon the others must stop listing the node. The leaving node
/// deletes its entry itself, so only the watch's delay remains; a lapsed lease would take
/// 2 to 3 s (the TTL less the time since the last keepalive), which this tells apart.
const LEAVE_VISIBLE_WITHIN: Duration = Duration::from_millis(1500);
/// How long etcd stays stopped at least: twice the heartbeat timeout.
const ETCD_PAUSE: Duration = Duration::from_secs(6);
/// How long etcd stays stopped at most, waiting for every node to report it down.
const ETCD_PAUSE_MAX: Duration = Duration::from_secs(15);
/// After SIGCONT, every node must report etcd up and every member ACTIVE within this.
const ETCD_RECOVERY_WITHIN: Duration = Duration::from_secs(10);
/// A dashboard's deadline for a read on the survivor of a two-node loss.
const DEGRADED_READ_WITHIN: Duration = Duration::from_secs(2);
/// The share of pushes that must be acknowledged during a node loss and during the etcd
/// outage. With two of three replicas alive, and with the last ring, every push should be;
/// the slack covers pushes caught in the moment a node dies.
const MIN_ACK_SHARE: f64 = 0.8;

const WORKLOAD: Workload = Workload {
    metric: "ring_drill_samples",
    job: "ring-drill",
    series_per_writer: SERIES_PER_WRITER,
    arbitrary_percent: 20,
};

// ---- the phases and what writers saw in each ----

const PHASES: [&str; 8] = [
    "three nodes",
    "one node killed",
    "node back",
    "fourth node",
    "graceful leave",
    "etcd stopped",
    "etcd back",
    "draining",
];

/// Push outcomes during one phase (a push belongs to the phase it started in).
#[derive(Debug, Default, Clone)]
struct PhaseStats {
    pushes: u64,
    acked: u64,
    acked_first_try: u64,
    gave_up: u64,
    attempts_204: u64,
    attempts_503: u64,
    attempts_no_answer: u64,
    /// 503s without a Retry-After header.
    missing_retry_after: u64,
    /// Anything but 204, 503 or no answer; the first few kept.
    unexpected: Vec<String>,
    /// The first few 503 answers (node and body), for the post-mortem.
    first_503s: Vec<String>,
    /// The last 503 answer after those.
    last_503: Option<String>,
}

/// One push: all series of its writer at `ts`.
#[derive(Debug, Clone, Copy)]
struct Push {
    ts: i64,
    acked: bool,
}

/// What the writers did: their pushes (for the read-back) and the outcomes by phase.
#[derive(Debug)]
struct Model {
    seed: u64,
    pushes: Vec<Mutex<Vec<Push>>>,
    phase: AtomicUsize,
    stats: Mutex<Vec<PhaseStats>>,
}

impl Model {
    fn new(seed: u64) -> Model {
        Model {
            seed,
            pushes: (0..WRITERS).map(|_| Mutex::new(Vec::new())).collect(),
            phase: AtomicUsize::new(0),
            stats: Mutex::new(vec![PhaseStats::default(); PHASES.len()]),
        }
    }

    fn enter(&self, phase: &str) {
        let i = PHASES
            .iter()
            .position(|p| *p == phase)
            .unwrap_or_else(|| panic!("no phase {phase:?}"));
        self.phase.store(i, Ordering::SeqCst);
        eprintln!("[{:>6.1}s] phase: {phase}", elapsed_s());
    }

    fn stats_of(&self, phase: &str) -> PhaseStats {
        let i = PHASES
            .iter()
            .position(|p| *p == phase)
            .expect("known phase");
        self.stats.lock().unwrap_or_else(|e| e.into_inner())[i].clone()
    }

    fn update(&self, phase: usize, f: impl FnOnce(&mut PhaseStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner())[phase]);
    }

    fn pushes(&self, writer: usize) -> Vec<Push> {
        self.pushes[writer]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn elapsed_s() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

// ---- the nodes ----

/// One node of the drill: its id (ring instance id and ingester id), its data dir (kept
/// across restarts) and, while it runs, its process.
#[derive(Debug)]
struct Node {
    id: String,
    dir: PathBuf,
    weft: Option<Weft>,
    starts: usize,
}

/// etcd, moto and the nodes. `urls` is what the writers push to: one slot per node, `None`
/// while the node is down or leaving.
struct Cluster {
    // Field order matters: the nodes die before etcd and moto.
    nodes: Vec<Node>,
    urls: Arc<RwLock<Vec<Option<String>>>>,
    /// For the test's own polling of `/ring` (one client: each one starts a runtime thread).
    client: reqwest::blocking::Client,
    root: TempDir,
    env: Vec<(String, String)>,
    moto: Moto,
    etcd: Etcd,
}

impl Cluster {
    fn node_args(&self, id: &str) -> Vec<String> {
        [
            ("--store", format!("s3://{BUCKET}/{STORE_PREFIX}")),
            // Nodes share the bucket; their object keys must differ.
            ("--ingester.id", id.to_string()),
            ("--ring.etcd-endpoints", self.etcd.endpoint()),
            ("--ring.instance-id", id.to_string()),
            ("--ring.prefix", RING_PREFIX.to_string()),
            (
                "--ring.heartbeat-timeout",
                format!("{}s", HEARTBEAT_TIMEOUT.as_secs()),
            ),
            ("--ring.replication-factor", REPLICATION_FACTOR.to_string()),
            ("--ring.num-tokens", NUM_TOKENS.to_string()),
            // Several ingesters share the bucket: compaction belongs to a separate `weft
            // compact` (docs/operations.md, Compaction), and none runs in this drill.
            ("--compactor.enabled", "false".to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }

    /// Adds node slots for `ids` (not started).
    fn add(&mut self, ids: &[&str]) {
        for id in ids {
            let dir = self.root.path().join(id);
            std::fs::create_dir_all(&dir).expect("node data dir");
            self.nodes.push(Node {
                id: id.to_string(),
                dir,
                weft: None,
                starts: 0,
            });
            self.urls.write().unwrap().push(None);
        }
    }

    /// Starts the nodes `which` at once (in parallel), each waiting for `/ready` (WAL
    /// replayed and ACTIVE in the ring), and hands them to the writers.
    fn start(&mut self, which: &[usize]) {
        let jobs: Vec<(usize, Vec<String>, PathBuf, PathBuf)> = which
            .iter()
            .map(|&i| {
                let args = self.node_args(&self.nodes[i].id);
                let logs = self.root.path().join("logs");
                let node = &mut self.nodes[i];
                assert!(node.weft.is_none(), "{} is running already", node.id);
                node.starts += 1;
                let log = logs.join(format!("{}-{}.log", node.id, node.starts));
                (i, args, node.dir.clone(), log)
            })
            .collect();
        let env = &self.env;
        let started: Vec<(usize, Weft)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(i, args, dir, log)| {
                    s.spawn(move || {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        (i, Weft::start_with_env(Some(&dir), &args, env, Some(log)))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a node did not start"))
                .collect()
        });
        for (i, weft) in started {
            eprintln!(
                "[{:>6.1}s] {} is ready at {} (start {})",
                elapsed_s(),
                self.nodes[i].id,
                weft.base,
                self.nodes[i].starts
            );
            self.urls.write().unwrap()[i] = Some(weft.base.clone());
            self.nodes[i].weft = Some(weft);
        }
    }

    fn weft(&self, i: usize) -> &Weft {
        self.nodes[i]
            .weft
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.nodes[i].id))
    }

    /// (id, base URL) of every running node.
    fn running(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .filter_map(|n| n.weft.as_ref().map(|w| (n.id.clone(), w.base.clone())))
            .collect()
    }

    fn running_ids(&self) -> BTreeSet<String> {
        self.running().into_iter().map(|(id, _)| id).collect()
    }

    /// SIGKILL; the writers learn of it the hard way (no answer) and only then stop using it.
    fn kill(&mut self, i: usize) {
        let mut weft = self.nodes[i].weft.take().expect("node is running");
        weft.signal(libc::SIGKILL);
        weft.wait_exit(Duration::from_secs(10));
        self.urls.write().unwrap()[i] = None;
        eprintln!("[{:>6.1}s] {} killed", elapsed_s(), self.nodes[i].id);
    }

    /// Every running node's ring view.
    fn views(&self) -> Vec<(String, Result<RingView, String>)> {
        self.running()
            .into_iter()
            .map(|(id, base)| {
                let v = ring_view(&self.client, &base);
                (id, v)
            })
            .collect()
    }

    /// Waits until every running node sees exactly the running nodes, all ACTIVE, with etcd
    /// up; returns how long that took.
    fn wait_ring_settled(&self, timeout: Duration, what: &str) -> Duration {
        let want = self.running_ids();
        let start = Instant::now();
        loop {
            let views = self.views();
            let bad: Vec<String> = views
                .iter()
                .filter_map(|(id, v)| match v {
                    Ok(v) if v.etcd_up && v.all_active(&want) => None,
                    Ok(v) => Some(format!("{id} sees {}", v.summary())),
                    Err(e) => Some(format!("{id}: {e}")),
                })
                .collect();
            if bad.is_empty() {
                for (id, v) in &views {
                    let v = v.as_ref().expect("checked above");
                    assert_eq!(&v.self_id, id, "/ring of {id} names itself {:?}", v.self_id);
                    assert_eq!(
                        v.replication_factor, REPLICATION_FACTOR,
                        "{id}: replication_factor"
                    );
                    for (m, inst) in &v.instances {
                        assert_eq!(
                            inst.token_count, NUM_TOKENS,
                            "{id} sees {m} with {} tokens, want {NUM_TOKENS}",
                            inst.token_count
                        );
                        // An instance whose every token another one claims too owns
                        // nothing and takes no writes: each series then has a replica
                        // fewer (nodes started together used to pick the same tokens).
                        assert!(
                            inst.ownership > 0.0,
                            "{id} sees {m} owning none of the token space: {}",
                            v.summary()
                        );
                    }
                    assert_eq!(
                        v.healthy,
                        want.len() as u64 >= REPLICATION_FACTOR,
                        "{id}: \"healthy\" with {} ACTIVE of rf {REPLICATION_FACTOR}",
                        want.len()
                    );
                    let total: f64 = v.instances.values().map(|i| i.ownership).sum();
                    assert!(
                        (total - 1.0).abs() < 1e-3,
                        "{id}: ownership sums to {total}: {}",
                        v.summary()
                    );
                }
                let took = start.elapsed();
                eprintln!(
                    "[{:>6.1}s] {what}: every node sees {want:?} ACTIVE after {took:?}",
                    elapsed_s()
                );
                return took;
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: nodes did not all see {want:?} ACTIVE with etcd up within \
                 {timeout:?}:\n  {}",
                bad.join("\n  ")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until no running node lists `gone`; returns how long that took from `since`.
    fn wait_absent(&self, gone: &str, since: Instant, timeout: Duration) -> Duration {
        loop {
            let views = self.views();
            let still: Vec<String> = views
                .iter()
                .filter_map(|(id, v)| match v {
                    Ok(v) if !v.instances.contains_key(gone) => None,
                    Ok(v) => Some(format!("{id} sees {}", v.summary())),
                    Err(e) => Some(format!("{id}: {e}")),
                })
                .collect();
            if still.is_empty() {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < timeout,
                "{gone} still in the ring {:?} after it stopped:\n  {}",
                since.elapsed(),
                still.join("\n  ")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---- /ring?format=json ----

#[derive(Debug, Clone)]
struct Instance {
    state: String,
    addr: String,
    token_count: usize,
    /// Share of the token space.
    ownership: f64,
    /// The tokens themselves, if the page lists them (rather than counting them).
    tokens: Option<Vec<u64>>,
}

#[derive(Debug, Clone)]
struct RingView {
    self_id: String,
    replication_factor: u64,
    etcd_up: bool,
    healthy: bool,
    instances: BTreeMap<String, Instance>,
}

impl RingView {
    fn all_active(&self, want: &BTreeSet<String>) -> bool {
        self.instances.keys().cloned().collect::<BTreeSet<_>>() == *want
            && self.instances.values().all(|i| i.state == "ACTIVE")
    }

    fn summary(&self) -> String {
        let members: Vec<String> = self
            .instances
            .iter()
            .map(|(id, i)| format!("{id}={}@{} owns {:.4}", i.state, i.addr, i.ownership))
            .collect();
        format!("etcd_up={} [{}]", self.etcd_up, members.join(", "))
    }
}

/// Parses the JSON of `/ring?format=json` (the contract: `self`, `replication_factor`,
/// `etcd_up`, `instances[]` with `id`, `addr`, `zone`, `state`, `tokens`, `ownership`,
/// and `healthy`). `tokens` may be the list or its length.
fn parse_ring(v: &Value) -> Result<RingView, String> {
    let field = |k: &str| v.get(k).ok_or_else(|| format!("no {k:?} in {v}"));
    let self_id = field("self")?
        .as_str()
        .ok_or("\"self\" is not a string")?
        .to_string();
    let replication_factor = field("replication_factor")?
        .as_u64()
        .ok_or("\"replication_factor\" is not a number")?;
    let etcd_up = field("etcd_up")?
        .as_bool()
        .ok_or("\"etcd_up\" is not a bool")?;
    let healthy = field("healthy")?
        .as_bool()
        .ok_or("\"healthy\" is not a bool")?;
    let mut instances = BTreeMap::new();
    for inst in field("instances")?
        .as_array()
        .ok_or("\"instances\" is not a list")?
    {
        let s = |k: &str| {
            inst.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("instance without string {k:?}: {inst}"))
        };
        if inst.get("zone").is_none() {
            return Err(format!("instance without \"zone\": {inst}"));
        }
        let ownership = inst
            .get("ownership")
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("instance without a numeric \"ownership\": {inst}"))?;
        let (token_count, tokens) = match inst.get("tokens") {
            Some(Value::Array(a)) => {
                let t: Option<Vec<u64>> = a.iter().map(Value::as_u64).collect();
                (a.len(), t)
            }
            Some(Value::Number(n)) => (n.as_u64().unwrap_or(0) as usize, None),
            _ => return Err(format!("instance without tokens: {inst}")),
        };
        instances.insert(
            s("id")?,
            Instance {
                state: s("state")?,
                addr: s("addr")?,
                token_count,
                ownership,
                tokens,
            },
        );
    }
    Ok(RingView {
        self_id,
        replication_factor,
        etcd_up,
        healthy,
        instances,
    })
}

fn ring_view(client: &reqwest::blocking::Client, base: &str) -> Result<RingView, String> {
    let r = client
        .get(format!("{base}/ring?format=json"))
        .timeout(Duration::from_secs(5))
        .send()
        .map_err(|e| format!("GET /ring?format=json: {e:#}"))?;
    let status = r.status().as_u16();
    let body = r.text().map_err(|e| format!("/ring body: {e:#}"))?;
    if status != 200 {
        return Err(format!("/ring?format=json answered {status}: {body}"));
    }
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("/ring is not JSON ({e}): {body}"))?;
    parse_ring(&v)
}

// ---- the writers ----

fn run_writer(
    writer: usize,
    model: Arc<Model>,
    urls: Arc<RwLock<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::blocking::Client::builder()
        .timeout(PUSH_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("reqwest client");
    let mut last_ts = 0i64;
    // Each writer starts on a different node, then goes round.
    let mut next = writer;
    while !stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let ts = (last_ts + 1).max(now_ms());
        last_ts = ts;
        let phase = model.phase.load(Ordering::SeqCst);
        let body = WORKLOAD.encode_push(model.seed, writer, 0, &[ts]);
        model.update(phase, |s| s.pushes += 1);
        let mut attempts = 0;
        let acked = loop {
            let url = {
                let urls = urls.read().unwrap();
                let live: Vec<&String> = urls.iter().flatten().collect();
                if live.is_empty() {
                    None
                } else {
                    next += 1;
                    Some(live[next % live.len()].clone())
                }
            };
            attempts += 1;
            if let Some(url) = url {
                let mut rb = client.post(format!("{url}/api/v1/push"));
                for (k, v) in WRITE_HEADERS {
                    rb = rb.header(k, v);
                }
                match rb.header("X-Scope-OrgID", TENANT).body(body.clone()).send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let retry_after = r.headers().contains_key("retry-after");
                        let samples_written = r
                            .headers()
                            .get("X-Prometheus-Remote-Write-Samples-Written")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let text = r.text().unwrap_or_default();
                        match status {
                            204 => {
                                model.update(phase, |s| {
                                    // Every series' one sample, as in single-node mode.
                                    let want = SERIES_PER_WRITER.to_string();
                                    if samples_written.as_deref() != Some(want.as_str())
                                        && s.unexpected.len() < 10
                                    {
                                        s.unexpected.push(format!(
                                            "{url}: 204 with Samples-Written {samples_written:?}, \
                                             want {want}"
                                        ));
                                    }
                                    s.attempts_204 += 1;
                                    s.acked += 1;
                                    if attempts == 1 {
                                        s.acked_first_try += 1;
                                    }
                                });
                                break true;
                            }
                            503 => model.update(phase, |s| {
                                s.attempts_503 += 1;
                                if !retry_after {
                                    s.missing_retry_after += 1;
                                }
                                let line = format!("[{:.1}s] {url}: {}", elapsed_s(), text.trim());
                                if s.first_503s.len() < 3 {
                                    s.first_503s.push(line);
                                } else {
                                    s.last_503 = Some(line);
                                }
                            }),
                            other => {
                                model.update(phase, |s| {
                                    if s.unexpected.len() < 10 {
                                        s.unexpected
                                            .push(format!("{url}: {other}: {}", text.trim()));
                                    }
                                });
                                // Prometheus drops a batch that gets a 4xx; so does this.
                                break false;
                            }
                        }
                    }
                    Err(_) => model.update(phase, |s| s.attempts_no_answer += 1),
                }
            }
            if began.elapsed() > PUSH_RETRY_DEADLINE || stop.load(Ordering::SeqCst) {
                model.update(phase, |s| s.gave_up += 1);
                break false;
            }
            std::thread::sleep(PUSH_RETRY_PAUSE);
        };
        model.pushes[writer]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Push { ts, acked });
        if let Some(rest) = PUSH_INTERVAL.checked_sub(began.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// Stops the writers when dropped, so that a failing test does not leave them pushing.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Starts [`WRITERS`] writer threads pushing to the nodes in `urls`.
fn spawn_writers(
    model: &Arc<Model>,
    urls: &Arc<RwLock<Vec<Option<String>>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (model, urls, stop) = (Arc::clone(model), Arc::clone(urls), Arc::clone(stop));
            std::thread::spawn(move || run_writer(w, model, urls, stop))
        })
        .collect()
}

/// Lets the writers push for `d` while checking nothing else.
fn write_for(d: Duration) {
    std::thread::sleep(d);
}

fn print_stats(model: &Model) {
    let stats = model.stats.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("pushes by phase (a push belongs to the phase it started in):");
    for (name, s) in PHASES.iter().zip(stats.iter()) {
        eprintln!(
            "  {name:<16} pushes {:>4}  acked {:>4} (first try {:>4})  gave up {:>2}  \
             attempts: 204 {:>4}, 503 {:>3}, no answer {:>3}",
            s.pushes,
            s.acked,
            s.acked_first_try,
            s.gave_up,
            s.attempts_204,
            s.attempts_503,
            s.attempts_no_answer
        );
        for line in s.first_503s.iter().chain(&s.last_503) {
            eprintln!("      503: {}", line.chars().take(400).collect::<String>());
        }
    }
}

fn assert_ack_share(model: &Model, phase: &str) {
    let s = model.stats_of(phase);
    if s.pushes < 5 || (s.acked as f64) < MIN_ACK_SHARE * s.pushes as f64 {
        print_stats(model);
    }
    let share = s.acked as f64 / s.pushes.max(1) as f64;
    assert!(
        s.pushes >= 5 && share >= MIN_ACK_SHARE,
        "phase {phase:?}: {} of {} pushes acknowledged ({:.0} %, want ≥ {:.0} %); {s:?}",
        s.acked,
        s.pushes,
        share * 100.0,
        MIN_ACK_SHARE * 100.0
    );
}

// ---- the read-back ----

/// Compares one answer (all series of every writer) with the model: every acknowledged
/// sample there with its exact bits, nothing that was never sent, no other series. SAMPLES
/// may turn -0.0 into +0.0 (proto3 leaves out a zero value). Returns (acked samples checked,
/// unacknowledged samples found), or what is wrong.
fn check_answer(
    model: &Model,
    set: &SeriesSet,
    chunks: bool,
    what: &str,
) -> Result<(u64, u64), String> {
    let neg_zero = (-0.0f64).to_bits();
    let mut problems = Vec::new();
    let mut problem = |p: String| {
        if problems.len() < 30 {
            problems.push(p);
        }
    };
    let mut by_labels: BTreeMap<&Labels, &Samples> = BTreeMap::new();
    for (labels, samples) in set {
        if by_labels.insert(labels, samples).is_some() {
            problem(format!("{} appears twice", fmt_labels(labels)));
        }
    }
    let (mut acked_checked, mut unacked_found, mut lost) = (0u64, 0u64, 0u64);
    for w in 0..WRITERS {
        let pushes: BTreeMap<i64, bool> = model
            .pushes(w)
            .into_iter()
            .map(|p| (p.ts, p.acked))
            .collect();
        for s in 0..SERIES_PER_WRITER {
            let labels = WORKLOAD.series_labels(w, s);
            let empty = Vec::new();
            let got = by_labels.get(&labels).copied().unwrap_or(&empty);
            let got_map: BTreeMap<i64, u64> = got.iter().copied().collect();
            for (&t, &acked) in &pushes {
                let want = WORKLOAD.value_bits(model.seed, w, 0, s, t);
                match got_map.get(&t) {
                    Some(&gv) => {
                        let proto3_zero = !chunks && want == neg_zero && gv == 0;
                        if gv != want && !proto3_zero {
                            problem(format!(
                                "{}: t={t} reads back bits={gv:#018x}, sent {want:#018x}",
                                fmt_labels(&labels)
                            ));
                        }
                        if acked {
                            acked_checked += 1;
                        } else {
                            unacked_found += 1;
                        }
                    }
                    None if acked => {
                        lost += 1;
                        problem(format!(
                            "{}: acknowledged t={t} bits={want:#018x} is missing",
                            fmt_labels(&labels)
                        ));
                    }
                    None => {}
                }
            }
            for &(t, v) in got {
                if !pushes.contains_key(&t) {
                    problem(format!(
                        "{}: t={t} bits={v:#018x} was never sent",
                        fmt_labels(&labels)
                    ));
                }
            }
        }
    }
    for labels in by_labels.keys() {
        let ours = (0..WRITERS)
            .any(|w| (0..SERIES_PER_WRITER).any(|s| WORKLOAD.series_labels(w, s) == **labels));
        if !ours {
            problem(format!("{} was never written", fmt_labels(labels)));
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "{what}: {lost} acknowledged samples missing; problems:\n  {}",
            problems.join("\n  ")
        ));
    }
    Ok((acked_checked, unacked_found))
}

/// `weft_ring_<name>` as a counter (`_total`) or as it is.
fn ring_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_value(text, &format!("weft_ring_{name}_total"), labels)
        .or_else(|| metric_value(text, &format!("weft_ring_{name}"), labels))
}

// ---- the drill ----

#[test]
fn acknowledged_samples_read_back_exact_through_every_node_across_kill_join_leave_and_etcd_stop() {
    self_check();
    START.get_or_init(Instant::now);
    let seed = seed();
    let Some(etcd) = Etcd::start() else { return };
    etcd_self_check(&etcd);
    let Some(moto) = Moto::start(&[BUCKET]) else {
        return;
    };
    let env = s3_env(&moto.endpoint());
    let root = TempDir::new("weft-ring");
    std::fs::create_dir_all(root.path().join("logs")).expect("logs dir");
    eprintln!(
        "etcd at {}, moto at {}, nodes' data and logs in {}",
        etcd.endpoint(),
        moto.endpoint(),
        root.path().display()
    );
    let mut cluster = Cluster {
        nodes: Vec::new(),
        urls: Arc::new(RwLock::new(Vec::new())),
        client: http_client(),
        root,
        env,
        moto,
        etcd,
    };
    let bucket = Bucket::new(&cluster.moto, BUCKET);

    // 1. Three nodes.
    cluster.add(&["n1", "n2", "n3"]);
    cluster.start(&[0, 1, 2]);
    cluster.wait_ring_settled(RING_SETTLE_TIMEOUT, "three nodes");
    for (id, base) in cluster.running() {
        let r = cluster
            .client
            .get(format!("{base}/ring"))
            .send()
            .unwrap_or_else(|e| panic!("{id}: GET /ring: {e}"));
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let status = r.status().as_u16();
        let html = r.text().unwrap_or_default();
        assert_eq!(status, 200, "{id}: GET /ring: {html}");
        assert!(
            ct.starts_with("text/html"),
            "{id}: GET /ring has Content-Type {ct:?}"
        );
        for member in ["n1", "n2", "n3"] {
            assert!(
                html.contains(member),
                "{id}: the /ring page does not mention {member}"
            );
        }
    }
    let first_views = cluster.views();
    let n1_tokens_before = first_views
        .iter()
        .find_map(|(_, v)| v.as_ref().ok()?.instances.get("n1")?.tokens.clone());
    let tokens_file = cluster.nodes[0].dir.join("ring-tokens.json");
    let tokens_file_before = std::fs::read(&tokens_file)
        .unwrap_or_else(|e| panic!("{} after the first start: {e}", tokens_file.display()));
    let n3_forwards_at_start = ring_metric(&cluster.weft(2).metrics(), "forward_requests", &[]);

    let model = Arc::new(Model::new(seed));
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(Arc::clone(&stop));
    let writers = spawn_writers(&model, &cluster.urls, &stop);
    model.enter("three nodes");
    write_for(Duration::from_secs(4));

    // 2. SIGKILL n1 under load; the others keep acknowledging; its entry lapses; it returns.
    model.enter("one node killed");
    cluster.kill(0);
    let killed_at = Instant::now();
    let lapse = cluster.wait_absent("n1", killed_at, HEARTBEAT_TIMEOUT + Duration::from_secs(10));
    eprintln!(
        "[{:>6.1}s] n1's entry lapsed {lapse:?} after SIGKILL (heartbeat timeout {HEARTBEAT_TIMEOUT:?})",
        elapsed_s()
    );
    // The survivors list it as lost (vanished without leaving) until it returns: their
    // reads count it as a missing replica.
    for (id, base) in cluster.running() {
        let text = cluster
            .client
            .get(format!("{base}/ring?format=json"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("{id}: GET /ring?format=json: {e}"));
        let v: Value = serde_json::from_str(&text).expect("/ring JSON");
        assert_eq!(v["lost"], serde_json::json!(["n1"]), "{id}: {v}");
    }
    write_for(Duration::from_secs(2));
    model.enter("node back");
    cluster.start(&[0]);
    cluster.wait_ring_settled(RING_SETTLE_TIMEOUT, "n1 back");
    let tokens_file_after = std::fs::read(&tokens_file).expect("tokens file after the restart");
    assert_eq!(
        tokens_file_after,
        tokens_file_before,
        "n1 came back on the same data dir with a different {}",
        tokens_file.display()
    );
    if let Some(before) = &n1_tokens_before {
        let after = cluster
            .views()
            .iter()
            .find_map(|(_, v)| v.as_ref().ok()?.instances.get("n1")?.tokens.clone());
        assert_eq!(
            after.as_ref(),
            Some(before),
            "n1 came back with other tokens"
        );
    }
    assert_ack_share(&model, "one node killed");
    write_for(Duration::from_secs(2));

    // 3. A fourth node joins.
    model.enter("fourth node");
    cluster.add(&["n4"]);
    cluster.start(&[3]);
    cluster.wait_ring_settled(RING_SETTLE_TIMEOUT, "four nodes");
    write_for(Duration::from_secs(4));

    // 4. n2 leaves gracefully: LEAVING, flush, entry deleted, exit 0.
    model.enter("graceful leave");
    let objects_of_n2 = |b: &Bucket| {
        b.list(STORE_PREFIX)
            .iter()
            .filter(|o| o.key.contains("-n2-"))
            .count()
    };
    cluster.urls.write().unwrap()[1] = None;
    let shutdown = cluster.weft(1).try_post("/ingester/shutdown");
    eprintln!(
        "[{:>6.1}s] POST /ingester/shutdown to n2: {:?}",
        elapsed_s(),
        shutdown.as_ref().map(|r| (r.status, r.text()))
    );
    if let Ok(r) = &shutdown {
        assert!(
            r.status < 300,
            "POST /ingester/shutdown answered {}: {}",
            r.status,
            r.text()
        );
    }
    let mut n2 = cluster.nodes[1].weft.take().expect("n2 runs");
    let status = n2.wait_exit(Duration::from_secs(90));
    let exited_at = Instant::now();
    assert!(
        status.success(),
        "n2 ended with {status} after /ingester/shutdown, want exit 0:\n{}",
        n2.log_tail()
    );
    drop(n2);
    let gone_after = cluster.wait_absent("n2", exited_at, Duration::from_secs(10));
    eprintln!(
        "[{:>6.1}s] n2 exited 0; gone from every ring {gone_after:?} after its exit",
        elapsed_s()
    );
    assert!(
        gone_after <= LEAVE_VISIBLE_WITHIN,
        "n2 left the others' ring {gone_after:?} after it exited; a graceful leave deletes its \
         entry before exiting, so it must be gone within {LEAVE_VISIBLE_WITHIN:?} (a lapsed \
         lease takes up to {HEARTBEAT_TIMEOUT:?})"
    );
    let n2_objects = objects_of_n2(&bucket);
    assert!(
        n2_objects > 0,
        "n2 flushed on shutdown, yet the bucket holds no object of ingester n2"
    );
    cluster.wait_ring_settled(RING_SETTLE_TIMEOUT, "after n2 left");
    write_for(Duration::from_secs(2));

    // 5. etcd stopped for longer than the heartbeat timeout.
    model.enter("etcd stopped");
    cluster.etcd.pause();
    let paused_at = Instant::now();
    let mut seen_down: BTreeSet<String> = BTreeSet::new();
    let want_down = cluster.running_ids();
    while paused_at.elapsed() < ETCD_PAUSE
        || (seen_down != want_down && paused_at.elapsed() < ETCD_PAUSE_MAX)
    {
        for (id, v) in cluster.views() {
            match v {
                Ok(v) if !v.etcd_up => {
                    if seen_down.insert(id.clone()) {
                        eprintln!(
                            "[{:>6.1}s] {id} reports etcd down {:?} into the stop",
                            elapsed_s(),
                            paused_at.elapsed()
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("/ring of {id} failed while etcd is stopped: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.etcd.resume();
    let resumed_at = Instant::now();
    model.enter("etcd back");
    eprintln!(
        "[{:>6.1}s] etcd resumed after {:?}",
        elapsed_s(),
        paused_at.elapsed()
    );
    assert_eq!(
        seen_down,
        want_down,
        "not every node's /ring said etcd was down during a {:?} stop",
        resumed_at - paused_at
    );
    let recovered = cluster.wait_ring_settled(ETCD_RECOVERY_WITHIN, "after etcd came back");
    eprintln!("every node saw etcd up and all members ACTIVE {recovered:?} after SIGCONT");
    assert_ack_share(&model, "etcd stopped");
    write_for(Duration::from_secs(3));

    // 6. Writers stop; read back through every node.
    model.enter("draining");
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer thread");
    }
    print_stats(&model);
    for phase in PHASES {
        let s = model.stats_of(phase);
        assert!(
            s.unexpected.is_empty(),
            "phase {phase:?}: pushes got answers other than 204/503: {:?}",
            s.unexpected
        );
        assert_eq!(
            s.missing_retry_after, 0,
            "phase {phase:?}: 503s without Retry-After"
        );
    }
    let total_acked: u64 = (0..WRITERS)
        .map(|w| model.pushes(w).iter().filter(|p| p.acked).count() as u64)
        .sum();
    assert!(total_acked > 0, "no push was ever acknowledged");

    let first_ts = (0..WRITERS)
        .filter_map(|w| model.pushes(w).first().map(|p| p.ts))
        .min()
        .expect("pushes");
    let last_ts = (0..WRITERS)
        .filter_map(|w| model.pushes(w).last().map(|p| p.ts))
        .max()
        .expect("pushes");
    let all = vec![query(
        first_ts - 60_000,
        last_ts + 60_000,
        vec![matcher(MatcherType::Eq, "__name__", WORKLOAD.metric)],
    )];
    let expected_series: BTreeSet<BTreeMap<String, String>> = (0..WRITERS)
        .flat_map(|w| (0..SERIES_PER_WRITER).map(move |s| WORKLOAD.series_labels(w, s)))
        .map(|l| l.into_iter().collect())
        .collect();
    let range = [
        ("start", ((first_ts - 60_000) / 1000).to_string()),
        ("end", ((last_ts + 60_000) / 1000 + 1).to_string()),
    ];
    let range: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let selector = format!("{{__name__=\"{}\"}}", WORKLOAD.metric);
    for node in &cluster.nodes {
        let Some(weft) = &node.weft else { continue };
        let t = Instant::now();
        let (sets, r) = weft.read_samples_resp(Some(TENANT), &all);
        assert_eq!(
            r.header(PARTIAL_HEADER),
            None,
            "{}: SAMPLES read marked partial with every replica set short of one node at most",
            node.id
        );
        let (acked, unacked) =
            check_answer(&model, &sets[0], false, &format!("{} SAMPLES", node.id))
                .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "[{:>6.1}s] {} SAMPLES: {} series, {acked} acknowledged samples exact, {unacked} \
             unacknowledged present, in {:?}",
            elapsed_s(),
            node.id,
            sets[0].len(),
            t.elapsed()
        );
        let t = Instant::now();
        let (sets, r) = weft.read_chunks_resp(Some(TENANT), &all);
        assert_eq!(
            r.header(PARTIAL_HEADER),
            None,
            "{}: STREAMED_XOR_CHUNKS read marked partial",
            node.id
        );
        let (acked_c, _) = check_answer(&model, &sets[0], true, &format!("{} CHUNKS", node.id))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(acked_c, acked, "{}: SAMPLES and CHUNKS disagree", node.id);
        eprintln!(
            "[{:>6.1}s] {} STREAMED_XOR_CHUNKS: exact, in {:?}",
            elapsed_s(),
            node.id,
            t.elapsed()
        );
        let (status, v) = weft.api_get(
            Some(TENANT),
            "/api/v1/series",
            &[&[("match[]", selector.as_str())][..], &range[..]].concat(),
        );
        assert_eq!(status, 200, "{}: /api/v1/series: {v}", node.id);
        assert!(
            api_warnings(&v).is_empty(),
            "{}: /api/v1/series warns with one node down at most: {v}",
            node.id
        );
        let listed: Vec<BTreeMap<String, String>> = serde_json::from_value(v["data"].clone())
            .unwrap_or_else(|e| panic!("{}: /api/v1/series data ({e}): {v}", node.id));
        let listed_set: BTreeSet<_> = listed.iter().cloned().collect();
        assert_eq!(
            listed.len(),
            listed_set.len(),
            "{}: /api/v1/series lists a series twice",
            node.id
        );
        assert_eq!(
            listed_set, expected_series,
            "{}: /api/v1/series does not list exactly the written series",
            node.id
        );
        let writers_seen = weft.label_values(Some(TENANT), "writer", &[&selector]);
        let want_writers: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
        assert_eq!(
            writers_seen, want_writers,
            "{}: label values of writer",
            node.id
        );
    }

    // Remote write 2.0 through the ring: pushed to one node, read back through each.
    let v2_ts = last_ts + 1;
    let v2_series: Vec<(Labels, u64)> = (0..20)
        .map(|k| {
            let labels = labels(&[
                ("__name__", "ring_drill_v2"),
                ("job", "ring-drill"),
                ("k", &format!("{k:02}")),
            ]);
            (labels, (k as f64 * 1.25 + 0.5).to_bits())
        })
        .collect();
    let v2_body = {
        use prost::Message;
        use weft::proto::prompb_v2;
        let mut symbols = vec![String::new()];
        let mut sym = |x: &str| -> u32 {
            symbols.push(x.to_string());
            (symbols.len() - 1) as u32
        };
        let timeseries = v2_series
            .iter()
            .map(|(labels, bits)| prompb_v2::TimeSeries {
                labels_refs: labels.iter().flat_map(|(n, v)| [sym(n), sym(v)]).collect(),
                samples: vec![prompb_v2::Sample {
                    value: f64::from_bits(*bits),
                    timestamp: v2_ts,
                }],
                ..Default::default()
            })
            .collect();
        snappy(
            &prompb_v2::Request {
                symbols,
                timeseries,
            }
            .encode_to_vec(),
        )
    };
    let r = cluster.weft(2).push_raw(
        &[
            (
                "Content-Type",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            ),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
            ("X-Scope-OrgID", TENANT),
        ],
        v2_body,
    );
    assert_eq!(r.status, 204, "remote write 2.0 through n3: {}", r.text());
    assert_eq!(
        r.header("X-Prometheus-Remote-Write-Samples-Written")
            .as_deref(),
        Some("20"),
        "remote write 2.0 through n3: Samples-Written"
    );
    let v2_query = vec![query(
        v2_ts,
        v2_ts,
        vec![matcher(MatcherType::Eq, "__name__", "ring_drill_v2")],
    )];
    let want_v2: SeriesSet = v2_series
        .iter()
        .map(|(l, bits)| (l.clone(), vec![(v2_ts, *bits)]))
        .collect();
    for (id, _) in cluster.running() {
        let i = cluster.nodes.iter().position(|n| n.id == id).expect("node");
        let got = cluster
            .weft(i)
            .read_chunks(Some(TENANT), &v2_query)
            .remove(0);
        assert_eq!(
            got, want_v2,
            "{id}: the remote write 2.0 push reads back differently"
        );
    }

    // The ring's metrics: there, consistent with the ring, and moving.
    for (id, base) in cluster.running() {
        let text = cluster
            .client
            .get(format!("{base}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("{id}: /metrics: {e}"));
        assert_eq!(
            ring_metric(&text, "members", &[("state", "ACTIVE")]),
            Some(3.0),
            "{id}: weft_ring_members{{state=\"ACTIVE\"}}"
        );
        assert_eq!(
            ring_metric(&text, "etcd_up", &[]),
            Some(1.0),
            "{id}: etcd_up"
        );
        let fanout = ring_metric(&text, "read_fanout", &[]).unwrap_or(0.0);
        assert!(
            fanout > 0.0,
            "{id}: weft_ring_read_fanout did not move after reads"
        );
        let owned = ring_metric(&text, "owned_token_ppm", &[]).unwrap_or(0.0);
        assert!(
            owned > 0.0 && owned < 1_000_000.0,
            "{id}: weft_ring_owned_token_ppm = {owned}"
        );
    }
    let n3_metrics = cluster.weft(2).metrics();
    let n3_forwards = ring_metric(&n3_metrics, "forward_requests", &[]).unwrap_or(0.0);
    assert!(
        n3_forwards > n3_forwards_at_start.unwrap_or(0.0),
        "n3's weft_ring_forward_requests did not move under load ({n3_forwards_at_start:?} → \
         {n3_forwards})"
    );
    let forwarded_samples = ring_metric(&n3_metrics, "forward_samples", &[]).unwrap_or(0.0);
    assert!(
        forwarded_samples > 0.0,
        "n3's weft_ring_forward_samples is 0"
    );
    eprintln!(
        "n3: {n3_forwards} forwarded pushes, {forwarded_samples} forwarded samples, \
         {:?} lease regrants",
        ring_metric(&n3_metrics, "lease_regrants", &[])
    );

    // 7. Two of three down: the survivor answers fast and says it is partial; pushes fail.
    cluster.kill(2);
    cluster.kill(3);
    let killed_at = Instant::now();
    let survivor = cluster.weft(0);
    let recent = vec![query(
        last_ts - 10_000,
        last_ts + 60_000,
        vec![matcher(MatcherType::Eq, "__name__", WORKLOAD.metric)],
    )];
    let t = Instant::now();
    let (_, r) = survivor.read_samples_resp(Some(TENANT), &recent);
    let took = t.elapsed();
    eprintln!(
        "two nodes down: the survivor's read took {took:?} ({:?} after the kills), partial = {:?}",
        killed_at.elapsed(),
        r.header(PARTIAL_HEADER)
    );
    assert!(
        took <= DEGRADED_READ_WITHIN,
        "with two of three nodes down a read took {took:?}, over {DEGRADED_READ_WITHIN:?}"
    );
    assert!(
        r.header(PARTIAL_HEADER).is_some(),
        "with two of three replicas down the read is not marked partial ({:?} after the kills)",
        killed_at.elapsed()
    );
    let (status, v) = survivor.api_get(
        Some(TENANT),
        "/api/v1/series",
        &[&[("match[]", selector.as_str())][..], &range[..]].concat(),
    );
    assert_eq!(status, 200, "/api/v1/series with two nodes down: {v}");
    assert!(
        !api_warnings(&v).is_empty(),
        "/api/v1/series with two of three nodes down has no warnings: {v}"
    );
    let body = WORKLOAD.encode_push(seed, 0, 0, &[last_ts + 1]);
    let client = http_client();
    let mut rb = client.post(survivor.url("/api/v1/push"));
    for (k, v) in WRITE_HEADERS {
        rb = rb.header(k, v);
    }
    let r = rb
        .header("X-Scope-OrgID", TENANT)
        .body(body)
        .send()
        .expect("push to the survivor");
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").cloned();
    assert_eq!(
        status,
        503,
        "a push with two of three replicas down must not be acknowledged: {}",
        r.text().unwrap_or_default()
    );
    assert!(retry_after.is_some(), "the 503 has no Retry-After");
    eprintln!("two nodes down: push answered 503, Retry-After {retry_after:?}",);

    // SIGTERM leaves like /ingester/shutdown: flush, deregister, exit 0 (its peers are gone,
    // the store is not).
    let mut n1 = cluster.nodes[0].weft.take().expect("n1 runs");
    n1.signal(libc::SIGTERM);
    let status = n1.wait_exit(Duration::from_secs(90));
    assert!(
        status.success(),
        "n1 ended with {status} after SIGTERM, want exit 0:\n{}",
        n1.log_tail()
    );
    eprintln!(
        "n1 exited 0 after SIGTERM; the drill took {:.0} s",
        elapsed_s()
    );
}

/// The drill's own machinery (writers, model, read-back check) against one plain weft, no
/// ring: every push is acknowledged and reads back exact, and the check does fail on a
/// missing acknowledged sample and on a sample that was never sent. Proves that a failure of
/// the drill is the ring's, not the harness's.
#[test]
fn drill_model_reads_back_a_plain_weft_and_catches_lost_and_invented_samples() {
    self_check();
    let seed = seed();
    let weft = Weft::start(&[]);
    let model = Arc::new(Model::new(seed));
    let urls = Arc::new(RwLock::new(vec![Some(weft.base.clone())]));
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(Arc::clone(&stop));
    let writers = spawn_writers(&model, &urls, &stop);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer thread");
    }
    let s = model.stats_of("three nodes");
    assert!(s.pushes >= 3 && s.acked == s.pushes, "plain weft: {s:?}");
    let last_ts = (0..WRITERS)
        .filter_map(|w| model.pushes(w).last().map(|p| p.ts))
        .max()
        .expect("pushes");
    let all = vec![query(
        0,
        last_ts + 1,
        vec![matcher(MatcherType::Eq, "__name__", WORKLOAD.metric)],
    )];
    let set = weft.read_chunks(Some(TENANT), &all).remove(0);
    let (acked, unacked) =
        check_answer(&model, &set, true, "plain weft").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unacked, 0);
    assert_eq!(acked, s.acked * SERIES_PER_WRITER as u64);
    let set_samples = weft.read_samples(Some(TENANT), &all).remove(0);
    check_answer(&model, &set_samples, false, "plain weft, SAMPLES")
        .unwrap_or_else(|e| panic!("{e}"));

    let mut lost = set.clone();
    lost[7].1.remove(0);
    let e = check_answer(&model, &lost, true, "one sample removed")
        .expect_err("check_answer missed a lost acknowledged sample");
    assert!(e.contains("1 acknowledged samples missing"), "{e}");
    let mut invented = set.clone();
    let (t, v) = *invented[3].1.last().expect("samples");
    invented[3].1.push((t + 1, v));
    let e = check_answer(&model, &invented, true, "one sample added")
        .expect_err("check_answer missed a sample that was never sent");
    assert!(e.contains("was never sent"), "{e}");
    let mut changed = set;
    changed[5].1[0].1 ^= 1;
    let e = check_answer(&model, &changed, true, "one value changed")
        .expect_err("check_answer missed a changed value");
    assert!(e.contains("reads back bits="), "{e}");
}
