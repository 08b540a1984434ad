//! Membership in etcd: this node's entry under a lease, kept alive; the ring from a watch.
//!
//! Each node puts `<prefix>ring/<instance id>` (JSON [`InstanceDesc`], `docs/formats.md`)
//! under a lease with TTL `--ring.heartbeat-timeout`. Two tasks run per node:
//!
//! - **keepalive**: renews the lease every TTL/3. If etcd says the lease is gone (it expired
//!   while etcd was away or frozen), it grants a new one and puts the entry again with the
//!   same tokens and state. It also puts the entry again when a put failed or the watch saw
//!   our key deleted.
//! - **watch**: reads the whole prefix, then watches it from the next revision, publishing a
//!   new [`Ring`] on every change. Any error, a cancelled or compacted watch, or a failed
//!   keepalive (a frozen etcd leaves a watch silent, not broken) ends the session; the next
//!   one reads the prefix again, so nothing missed in between is lost.
//!
//! **Invariant:** etcd being unreachable never changes the ring: only what etcd says (a
//! read, an event) removes an instance, and this node's own entry is always in its own ring
//! from registration until it leaves.
//!
//! **Invariant:** each task has at most one etcd call outstanding, every call has a deadline
//! (1–2 s), and retries back off to at most 1 s: nothing queues or grows while etcd is away,
//! and recovery takes about a second once it answers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::desc::{InstanceDesc, InstanceState};
use super::replicas::Ring;
use super::{tokens, RingError};
use crate::metrics::{Metrics, ReasonLabels, StateLabels};

/// How this node joins the ring (from the `--ring.*` flags).
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// `--ring.etcd-endpoints`, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// `--ring.prefix` (default `weft/`); entries live under `<prefix>ring/`.
    pub prefix: String,
    /// `--ring.instance-id`.
    pub instance_id: String,
    /// `--ring.instance-addr`.
    pub instance_addr: String,
    /// `--ring.zone` (empty: none).
    pub zone: String,
    /// `--ring.heartbeat-timeout`: the lease TTL (etcd counts whole seconds, at least 1).
    pub heartbeat_timeout: Duration,
    /// `--ring.num-tokens` (default 128).
    pub num_tokens: usize,
    /// Where this node keeps its tokens across restarts (`<data-dir>/ring-tokens.json`).
    pub tokens_file: PathBuf,
    /// How to reach etcd: TLS and credentials (`--ring.etcd-tls-*`, `--ring.etcd-username`).
    pub security: EtcdSecurity,
}

/// TLS and authentication to etcd. TLS is on when any of its files is given or an endpoint is
/// `https://`; then every endpoint must be `https://`.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// `--ring.etcd-tls-ca-path`: PEM CA bundle that signed etcd's certificate (none: the
    /// system's roots).
    pub ca_path: Option<PathBuf>,
    /// `--ring.etcd-tls-cert-path`: PEM client certificate, for etcds that ask for one
    /// (`--client-cert-auth`, as a Kubernetes control plane's etcd does).
    pub cert_path: Option<PathBuf>,
    /// `--ring.etcd-tls-key-path`: the client certificate's PEM private key.
    pub key_path: Option<PathBuf>,
    /// `--ring.etcd-tls-server-name`: the name etcd's certificate must carry (none: the
    /// endpoint's host).
    pub server_name: Option<String>,
    /// `--ring.etcd-username` (with `--ring.etcd-password`) for etcd's own authentication.
    pub username: Option<String>,
    /// `--ring.etcd-password`. Never printed.
    pub password: Option<String>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("ca_path", &self.ca_path)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("server_name", &self.server_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl EtcdSecurity {
    /// Whether TLS is on for `endpoints`.
    fn tls_on(&self, endpoints: &[String]) -> bool {
        self.ca_path.is_some()
            || self.cert_path.is_some()
            || self.key_path.is_some()
            || self.server_name.is_some()
            || endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// The connect options these settings add to `options`; an error says which setting is
    /// unusable (a file that cannot be read, a certificate without its key, a plain
    /// endpoint with TLS on, a user without a password).
    pub fn apply(
        &self,
        endpoints: &[String],
        mut options: ConnectOptions,
    ) -> Result<ConnectOptions, RingError> {
        let bad = |what: String| RingError::Etcd(what);
        if self.tls_on(endpoints) {
            if let Some(e) = endpoints.iter().find(|e| !e.starts_with("https://")) {
                return Err(bad(format!(
                    "etcd endpoint {e:?} is not https:// but TLS is on (a --ring.etcd-tls-* \
                     flag or another endpoint asks for it): list every endpoint as https://"
                )));
            }
            let read = |flag: &str, p: &PathBuf| {
                std::fs::read(p).map_err(|e| bad(format!("{flag} {}: {e}", p.display())))
            };
            let mut tls = etcd_client::TlsOptions::new();
            tls = match &self.ca_path {
                Some(p) => tls.ca_certificate(etcd_client::Certificate::from_pem(read(
                    "--ring.etcd-tls-ca-path",
                    p,
                )?)),
                None => tls.with_native_roots(),
            };
            match (&self.cert_path, &self.key_path) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read("--ring.etcd-tls-cert-path", c)?,
                        read("--ring.etcd-tls-key-path", k)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(bad(
                        "--ring.etcd-tls-cert-path and --ring.etcd-tls-key-path go together"
                            .to_string(),
                    ))
                }
            }
            if let Some(name) = &self.server_name {
                tls = tls.domain_name(name.clone());
            }
            options = options.with_tls(tls);
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => {
                options = options
                    .with_user(u.clone(), p.clone())
                    .with_auto_token_refresh(true);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(bad(
                    "--ring.etcd-username needs --ring.etcd-password (or WEFT_RING_ETCD_PASSWORD)"
                        .to_string(),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "--ring.etcd-password without --ring.etcd-username".to_string()
                ))
            }
        }
        Ok(options)
    }
}

/// What `/ring` shows: the ring this node uses and how it knows it.
#[derive(Debug, Clone)]
pub struct MembershipStatus {
    /// This node's id.
    pub self_id: String,
    /// `--ring.replication-factor`.
    pub replication_factor: usize,
    /// The ring this node routes by.
    pub ring: Arc<Ring>,
    /// Whether etcd answered this node's last call.
    pub etcd_up: bool,
    /// When etcd last confirmed the ring (a watch event, a get or a keepalive), ms since the epoch.
    pub last_confirmed_ms: i64,
    /// The lease this node's entry lives under (0 before it registered).
    pub lease_id: i64,
    /// The etcd endpoints.
    pub endpoints: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// Instances that vanished from the ring without leaving (lease expired) and count as
    /// missing replicas for reads (`Cluster::lost`; empty from `Membership::status`).
    pub lost: Vec<String>,
}

/// The longest wait between two tries while etcd does not answer: short, so that a node
/// notices etcd's return within about a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The first wait after a failed call.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How many times `start` reads the ring again when another writer changed our key (or,
/// with tokens picked in this start, any ring entry) between its read and its registration.
const START_ATTEMPTS: usize = 100;
/// HTTP/2 pings on the etcd connection. etcd's server sends GOAWAY to a client that pings
/// more often than `--grpc-keepalive-min-time` (default 5 s), so these stay well above it;
/// the keepalive task's own call deadlines notice a frozen etcd much sooner.
const HTTP2_PING_EVERY: Duration = Duration::from_secs(10);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The timings that follow from `--ring.heartbeat-timeout`.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The lease TTL.
    ttl_secs: i64,
    /// A keepalive every TTL/3, so two can be lost before the lease expires.
    keepalive_every: Duration,
    /// The deadline of every etcd call: a frozen etcd answers nothing, and without a
    /// deadline a call would wait for ever. Between 1 s and 2 s.
    call_timeout: Duration,
}

impl Timing {
    fn new(heartbeat_timeout: Duration) -> Timing {
        let ttl_secs = lease_ttl_secs(heartbeat_timeout);
        let keepalive_every = Duration::from_millis(ttl_secs as u64 * 1000 / 3);
        let call_timeout = keepalive_every.clamp(Duration::from_secs(1), Duration::from_secs(2));
        Timing {
            ttl_secs,
            keepalive_every,
            call_timeout,
        }
    }
}

/// Exponential backoff from [`MIN_BACKOFF`], capped at [`MAX_BACKOFF`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: MIN_BACKOFF }
    }

    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }
}

/// Why an etcd call failed.
#[derive(Debug)]
enum CallError {
    /// No answer within [`Timing::call_timeout`] (etcd down, frozen or unreachable).
    Timeout,
    /// etcd, or the connection to it, answered with an error.
    Etcd(etcd_client::Error),
}

impl CallError {
    /// Whether etcd answered that the lease is gone (expired or revoked). etcd answered, so
    /// this is not an outage.
    fn lease_not_found(&self) -> bool {
        match self {
            CallError::Timeout => false,
            CallError::Etcd(etcd_client::Error::LeaseKeepAliveError(m)) => {
                m.contains("lease not found")
            }
            CallError::Etcd(etcd_client::Error::GRpcStatus(s)) => {
                s.message().contains("lease not found")
            }
            CallError::Etcd(_) => false,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => write!(f, "no answer in time"),
            CallError::Etcd(e) => write!(f, "{e}"),
        }
    }
}

/// The ring as etcd last showed it, besides our own entry.
#[derive(Debug, Default)]
struct View {
    /// The other instances, by id.
    others: BTreeMap<String, InstanceDesc>,
    /// Entries that did not parse and were warned about: key → mod revision. Only keys
    /// present under the prefix stay here, so it is bounded by what etcd holds.
    warned_bad: HashMap<String, i64>,
}

/// What the tasks and the handle share.
struct Shared {
    cfg: MembershipConfig,
    replication_factor: usize,
    metrics: Arc<Metrics>,
    client: Client,
    timing: Timing,
    /// `<prefix>ring/`.
    ring_prefix: String,
    /// `<prefix>ring/<instance id>`.
    key: String,
    /// Our entry as this node wants etcd to hold it. Lock order: `view`, then `me`.
    me: Mutex<InstanceDesc>,
    /// Serialises puts of our entry, so an older snapshot of `me` never lands after a newer.
    put_lock: tokio::sync::Mutex<()>,
    /// The lease our entry lives under (0 before registration and after leaving).
    lease_id: AtomicI64,
    /// Set by `leave`: nothing puts our entry again.
    left: AtomicBool,
    /// Whether etcd answered the last call.
    etcd_up: AtomicBool,
    /// When etcd last confirmed the ring, ms since the epoch.
    last_confirmed_ms: AtomicI64,
    view: Mutex<View>,
    ring_tx: watch::Sender<Arc<Ring>>,
    /// The lease under which the watch last saw our entry (0: not seen).
    confirmed_tx: watch::Sender<i64>,
    /// Our entry must be put again (a put failed, or our key was deleted under us).
    needs_put: AtomicBool,
    /// Wakes the keepalive task for a put now.
    reput: Notify,
    /// Wakes the watch task to drop its stream and read the ring again: the keepalive saw
    /// etcd fail, and a frozen etcd leaves a watch stream silent rather than broken.
    resync: Notify,
    /// Whether the watch stream is established (then a keepalive confirms the ring too).
    watch_live: AtomicBool,
    /// Failure reasons already warned about in the current outage (each warns once).
    warned: Mutex<HashSet<&'static str>>,
}

/// This node's membership: started once in ring mode, shared.
///
/// Two tasks run until [`Membership::leave`] or drop: the keepalive (one call each TTL/3,
/// re-registering under a new lease if the old one expired) and the watch (the ring from
/// the prefix, read again after any error). Each has at most one etcd call outstanding, and
/// while etcd is away nothing queues: the ring this node last saw stays in use.
pub struct Membership {
    shared: Arc<Shared>,
    keepalive_task: Mutex<Option<JoinHandle<()>>>,
    watch_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("instance_id", &self.shared.cfg.instance_id)
            .field("lease_id", &self.shared.lease_id.load(Ordering::Relaxed))
            .field("etcd_up", &self.shared.etcd_up.load(Ordering::Relaxed))
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The seed of a new node's tokens: its id and the time, so two nodes (or two lives of one
/// node without its tokens file) pick different tokens.
fn token_seed(id: &str) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // FNV-1a of the id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ nanos
}

impl Membership {
    /// Connects to etcd, reads the ring, takes this node's tokens (from the tokens file, or
    /// new ones), registers as JOINING under a fresh lease and starts the keepalive and the
    /// watch. Returns once this node's own entry is in the ring it sees.
    ///
    /// While etcd does not answer this keeps trying (capped backoff, a warning per kind of
    /// failure). Fails at once on bad endpoints, an unusable tokens file, or
    /// [`RingError::DuplicateId`]: a live entry with our id and another address.
    pub async fn start(
        cfg: MembershipConfig,
        replication_factor: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Membership>, RingError> {
        if cfg.instance_id.is_empty() || cfg.instance_addr.is_empty() {
            return Err(RingError::Etcd(
                "the instance id and address must not be empty".to_string(),
            ));
        }
        let timing = Timing::new(cfg.heartbeat_timeout);
        let client = connect(&cfg, timing, &metrics).await?;
        let ring_prefix = format!("{}ring/", cfg.prefix);
        let key = format!("{ring_prefix}{}", cfg.instance_id);
        let now = now_ms();
        let me = InstanceDesc {
            id: cfg.instance_id.clone(),
            addr: cfg.instance_addr.clone(),
            zone: cfg.zone.clone(),
            state: InstanceState::Joining,
            tokens: Vec::new(),
            registered_at_ms: now,
            updated_at_ms: now,
        };
        metrics.ring.etcd_up.set(0);
        let shared = Arc::new(Shared {
            cfg,
            replication_factor,
            metrics,
            client,
            timing,
            ring_prefix,
            key,
            me: Mutex::new(me),
            put_lock: tokio::sync::Mutex::new(()),
            lease_id: AtomicI64::new(0),
            // Not in the ring until registered: `publish` leaves us out meanwhile.
            left: AtomicBool::new(true),
            etcd_up: AtomicBool::new(false),
            last_confirmed_ms: AtomicI64::new(0),
            view: Mutex::new(View::default()),
            ring_tx: watch::channel(Arc::new(Ring::default())).0,
            confirmed_tx: watch::channel(0).0,
            needs_put: AtomicBool::new(false),
            reput: Notify::new(),
            resync: Notify::new(),
            watch_live: AtomicBool::new(false),
            warned: Mutex::new(HashSet::new()),
        });
        shared.register().await?;

        let keepalive = tokio::spawn(keepalive_loop(shared.clone()));
        let watcher = tokio::spawn(watch_loop(shared.clone()));
        let membership = Arc::new(Membership {
            shared: shared.clone(),
            keepalive_task: Mutex::new(Some(keepalive)),
            watch_task: Mutex::new(Some(watcher)),
        });
        // Our entry counts once the watch has seen it under our current lease (which the
        // keepalive may have replaced meanwhile).
        let mut confirmed = shared.confirmed_tx.subscribe();
        loop {
            let seen = *confirmed.borrow_and_update();
            if seen != 0 && seen == shared.lease_id.load(Ordering::Acquire) {
                break;
            }
            if confirmed.changed().await.is_err() {
                return Err(RingError::Etcd("membership stopped while starting".into()));
            }
        }
        tracing::info!(
            id = %shared.cfg.instance_id,
            lease = format_args!("{:x}", shared.lease_id.load(Ordering::Relaxed)),
            members = shared.ring_tx.borrow().instances().len(),
            "ring: registered in etcd"
        );
        Ok(membership)
    }

    /// The latest ring (cheap: an `Arc` clone).
    pub fn ring(&self) -> Arc<Ring> {
        self.shared.ring_tx.borrow().clone()
    }

    /// A receiver that sees every new ring.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Ring>> {
        self.shared.ring_tx.subscribe()
    }

    /// This node's id.
    pub fn self_id(&self) -> &str {
        &self.shared.cfg.instance_id
    }

    /// Sets this node's state in its entry (and in the local ring at once).
    ///
    /// If etcd does not take the put, the local ring keeps the new state, the keepalive task
    /// puts the entry again until etcd does, and this returns the error.
    pub async fn set_state(&self, state: InstanceState) -> Result<(), RingError> {
        let sh = &self.shared;
        if sh.left.load(Ordering::Acquire) {
            return Err(RingError::Etcd("this node has left the ring".to_string()));
        }
        {
            let mut me = sh.me.lock();
            me.state = state;
            me.updated_at_ms = now_ms();
        }
        sh.publish(&sh.view.lock());
        match sh.put_me().await {
            Ok(()) => Ok(()),
            Err(e) => {
                sh.needs_put.store(true, Ordering::Release);
                sh.reput.notify_one();
                Err(RingError::Etcd(format!(
                    "putting our entry as {}: {e} (retried in the background)",
                    state.as_str()
                )))
            }
        }
    }

    /// Leaves the ring: deletes this node's entry and revokes its lease; stops the tasks.
    ///
    /// Peers' watches see the delete at once. If etcd does not answer, the entry goes when
    /// its lease expires (no more keepalives), and this returns the error.
    pub async fn leave(&self) -> Result<(), RingError> {
        let sh = &self.shared;
        if sh.left.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The keepalive goes first, so that nothing puts our entry back.
        if let Some(t) = self.keepalive_task.lock().take() {
            t.abort();
        }
        let _put = sh.put_lock.lock().await;
        let lease = sh.lease_id.swap(0, Ordering::AcqRel);
        let deleted = sh
            .call("delete", {
                let mut c = sh.client.clone();
                let key = sh.key.clone();
                async move { c.delete(key, None).await }
            })
            .await;
        // Revoking also deletes any put of ours that raced the delete.
        let revoked = if lease != 0 {
            sh.call("lease", {
                let mut c = sh.client.clone();
                async move { c.lease_revoke(lease).await }
            })
            .await
            .map(|_| ())
        } else {
            Ok(())
        };
        if let Some(t) = self.watch_task.lock().take() {
            t.abort();
        }
        sh.watch_live.store(false, Ordering::Release);
        sh.publish(&sh.view.lock());
        match (deleted, revoked) {
            (Err(d), Err(r)) => Err(RingError::Etcd(format!(
                "leaving: delete: {d}; revoke: {r}; the entry goes when its lease expires"
            ))),
            _ => {
                tracing::info!(id = %sh.cfg.instance_id, "ring: left");
                Ok(())
            }
        }
    }

    /// What `/ring` shows.
    pub fn status(&self) -> MembershipStatus {
        let sh = &self.shared;
        sh.update_age();
        MembershipStatus {
            self_id: sh.cfg.instance_id.clone(),
            replication_factor: sh.replication_factor,
            ring: self.ring(),
            etcd_up: sh.etcd_up.load(Ordering::Acquire),
            last_confirmed_ms: sh.last_confirmed_ms.load(Ordering::Acquire),
            lease_id: sh.lease_id.load(Ordering::Acquire),
            endpoints: sh.cfg.endpoints.clone(),
            prefix: sh.cfg.prefix.clone(),
            lost: Vec::new(),
        }
    }

    /// Waits until `pred` holds for the ring this node sees, or `timeout` passes.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Ring) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.subscribe();
        loop {
            if pred(&rx.borrow_and_update()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return pred(&rx.borrow()),
            }
        }
    }

    /// Times this node's lease was lost and granted again.
    pub fn lease_regrants(&self) -> u64 {
        self.shared.metrics.ring.lease_regrants.get()
    }

    /// Stops both tasks without leaving, as a crash would: the entry stays until its lease
    /// expires.
    #[cfg(test)]
    fn crash(&self) {
        for t in [&self.keepalive_task, &self.watch_task] {
            if let Some(t) = t.lock().take() {
                t.abort();
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Without a handle nobody can leave or read the ring: the tasks stop, and the entry
        // goes when its lease expires.
        for t in [&self.keepalive_task, &self.watch_task] {
            if let Some(t) = t.lock().take() {
                t.abort();
            }
        }
    }
}

/// The etcd client: connecting is lazy in etcd-client (calls wait for the channel), so this
/// fails only on endpoints that cannot be used at all.
async fn connect(
    cfg: &MembershipConfig,
    timing: Timing,
    metrics: &Metrics,
) -> Result<Client, RingError> {
    if cfg.endpoints.is_empty() {
        return Err(RingError::Etcd("no etcd endpoints".to_string()));
    }
    let options = ConnectOptions::new()
        .with_connect_timeout(timing.call_timeout)
        .with_keep_alive(HTTP2_PING_EVERY, HTTP2_PING_TIMEOUT)
        .with_keep_alive_while_idle(false)
        .with_tcp_keepalive(Duration::from_secs(30));
    let options = cfg.security.apply(&cfg.endpoints, options)?;
    let mut backoff = Backoff::new();
    loop {
        match tokio::time::timeout(
            timing.call_timeout,
            Client::connect(&cfg.endpoints, Some(options.clone())),
        )
        .await
        {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(
                e @ (etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_)),
            )) => {
                return Err(RingError::Etcd(format!(
                    "endpoints {:?}: {e}",
                    cfg.endpoints
                )));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "ring: connecting to etcd"),
            Err(_) => tracing::warn!("ring: connecting to etcd: no answer in time"),
        }
        metrics
            .ring
            .etcd_errors
            .get_or_create(&ReasonLabels { reason: "connect" })
            .inc();
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

impl Shared {
    fn etcd_ok(&self) {
        self.metrics.ring.etcd_up.set(1);
        let was_up = self.etcd_up.swap(true, Ordering::AcqRel);
        let mut warned = self.warned.lock();
        if !was_up && !warned.is_empty() {
            tracing::info!("ring: etcd answers again");
        }
        warned.clear();
    }

    fn etcd_failed(&self, reason: &'static str, err: &dyn std::fmt::Display) {
        self.metrics
            .ring
            .etcd_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
        self.metrics.ring.etcd_up.set(0);
        self.etcd_up.store(false, Ordering::Release);
        if self.warned.lock().insert(reason) {
            tracing::warn!(reason, error = %err, "ring: etcd call failed; retrying, keeping the ring last seen");
        } else {
            tracing::debug!(reason, error = %err, "ring: etcd call failed again");
        }
    }

    /// One etcd call under the call deadline, its outcome counted.
    async fn call<T>(
        &self,
        reason: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timing.call_timeout, fut).await {
            Ok(Ok(v)) => {
                self.etcd_ok();
                Ok(v)
            }
            Ok(Err(e)) => {
                let e = CallError::Etcd(e);
                if e.lease_not_found() {
                    self.etcd_ok();
                } else {
                    self.etcd_failed(reason, &e);
                }
                Err(e)
            }
            Err(_) => {
                let e = CallError::Timeout;
                self.etcd_failed(reason, &e);
                Err(e)
            }
        }
    }

    /// Like [`Shared::call`], tried again with backoff until etcd answers.
    async fn call_until_answered<T, Fut>(
        &self,
        reason: &'static str,
        mut f: impl FnMut(Client) -> Fut,
    ) -> Result<T, CallError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut backoff = Backoff::new();
        loop {
            match self.call(reason, f(self.client.clone())).await {
                Ok(v) => return Ok(v),
                Err(e) if e.lease_not_found() => return Err(e),
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }

    fn confirm(&self) {
        self.last_confirmed_ms.store(now_ms(), Ordering::Release);
        self.metrics.ring.ring_age_seconds.set(0);
    }

    fn update_age(&self) {
        let last = self.last_confirmed_ms.load(Ordering::Acquire);
        if last > 0 {
            let age = (now_ms() - last).max(0) / 1000;
            self.metrics.ring.ring_age_seconds.set(age);
        }
    }

    /// Publishes the ring of `view` plus our entry (unless we left), if it differs from the
    /// current one.
    ///
    /// Our own entry comes from `me`, not from etcd: this node knows it is alive, and keeps
    /// routing to itself while etcd is away or while it registers again under a new lease.
    fn publish(&self, view: &View) {
        let mut instances: Vec<InstanceDesc> = view.others.values().cloned().collect();
        if !self.left.load(Ordering::Acquire) {
            instances.push(self.me.lock().clone());
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        if self.ring_tx.borrow().instances() == instances.as_slice() {
            return;
        }
        let ring = Arc::new(Ring::new(instances));
        let m = &self.metrics.ring;
        for state in [
            InstanceState::Joining,
            InstanceState::Active,
            InstanceState::Leaving,
        ] {
            let n = ring.instances().iter().filter(|i| i.state == state).count();
            m.members
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(n as i64);
        }
        let share = ring
            .index_of(&self.cfg.instance_id)
            .and_then(|i| ring.ownership().get(i).copied())
            .unwrap_or(0.0);
        m.owned_token_ppm.set((share * 1e6).round() as i64);
        m.ring_updates.inc();
        self.ring_tx.send_replace(ring);
    }

    /// Warns once per key and revision about an entry that does not parse.
    fn bad_entry(&self, view: &mut View, key: &str, mod_revision: i64, reason: &str) {
        if view.warned_bad.get(key) == Some(&mod_revision) {
            return;
        }
        view.warned_bad.insert(key.to_string(), mod_revision);
        self.metrics
            .ring
            .etcd_errors
            .get_or_create(&ReasonLabels {
                reason: "bad_entry",
            })
            .inc();
        tracing::warn!(
            key,
            mod_revision,
            reason,
            "ring: skipping an entry that does not parse"
        );
    }

    /// Replaces the view with a full read of the prefix. Returns our own key's value, if
    /// etcd holds it.
    fn apply_snapshot<'a>(&self, view: &mut View, kvs: &'a [KeyValue]) -> Option<&'a KeyValue> {
        let mut own = None;
        let mut others = BTreeMap::new();
        let mut present = HashSet::new();
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key());
            let Some(id) = key.strip_prefix(&self.ring_prefix) else {
                continue;
            };
            if key == self.key {
                own = Some(kv);
                continue;
            }
            match InstanceDesc::from_json(id, kv.value()) {
                Ok(d) => {
                    others.insert(id.to_string(), d);
                }
                Err(reason) => {
                    present.insert(key.to_string());
                    self.bad_entry(view, &key, kv.mod_revision(), &reason);
                }
            }
        }
        view.others = others;
        view.warned_bad.retain(|k, _| present.contains(k));
        own
    }

    /// Our own entry as the watch or a read saw it: under our current lease (confirmed),
    /// absent (put it again), or under a lease not ours now.
    fn own_seen(&self, lease: Option<i64>) {
        let current = self.lease_id.load(Ordering::Acquire);
        match lease {
            Some(l) if l == current && l != 0 => {
                self.confirmed_tx.send_replace(l);
            }
            Some(l) => {
                // Our own earlier put (the keepalive's newer one follows), or another process
                // with our id. Not fought over: that would be a put war between the two.
                tracing::debug!(
                    lease = format_args!("{l:x}"),
                    current = format_args!("{current:x}"),
                    "ring: our key is under another lease"
                );
                self.confirmed_tx.send_replace(0);
            }
            None => {
                self.confirmed_tx.send_replace(0);
                if !self.left.load(Ordering::Acquire) {
                    tracing::info!("ring: our entry is gone from etcd; putting it again");
                    self.needs_put.store(true, Ordering::Release);
                    self.reput.notify_one();
                }
            }
        }
    }

    /// Puts our entry under the current lease.
    async fn put_me(&self) -> Result<(), CallError> {
        let _put = self.put_lock.lock().await;
        if self.left.load(Ordering::Acquire) {
            return Ok(());
        }
        let lease = self.lease_id.load(Ordering::Acquire);
        let value = self.me.lock().to_json();
        let mut c = self.client.clone();
        let key = self.key.clone();
        self.call("put", async move {
            c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
        })
        .await
        .map(|_| ())
    }

    /// The first registration: the duplicate check, the tokens, a lease, our entry.
    async fn register(&self) -> Result<(), RingError> {
        let mut tokens: Option<Vec<u32>> = None;
        // Whether our tokens were picked in this start (not read from the tokens file): they
        // were picked for the ring as read, so they are registered only if no other entry
        // was written since (nodes started together would otherwise pick from the same
        // view and crowd the same ranges); if one was, they are picked again.
        let mut fresh = false;
        for attempt in 0..START_ATTEMPTS {
            let prefix = self.ring_prefix.clone();
            let resp = self
                .call_until_answered("get", |mut c| {
                    let prefix = prefix.clone();
                    async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
                })
                .await
                .map_err(|e| RingError::Etcd(e.to_string()))?;
            let read_revision = resp.header().map_or(0, |h| h.revision());
            let (own, others) = {
                let mut view = self.view.lock();
                let own = self
                    .apply_snapshot(&mut view, resp.kvs())
                    .map(|kv| (kv.mod_revision(), kv.lease(), kv.value().to_vec()));
                let others: Vec<InstanceDesc> = view.others.values().cloned().collect();
                (own, others)
            };

            let seen_mod_revision = match &own {
                None => 0,
                Some((rev, lease, value)) => {
                    self.check_own_entry(*lease, value).await?;
                    *rev
                }
            };
            let mine = match tokens.take() {
                Some(_) if fresh => self.new_tokens(others, attempt)?,
                Some(t) => t,
                None => match self.saved_tokens()? {
                    Some(t) => t,
                    None => {
                        fresh = true;
                        self.new_tokens(others, attempt)?
                    }
                },
            };
            let lease = self
                .call_until_answered("lease", |mut c| {
                    let ttl = self.timing.ttl_secs;
                    async move { c.lease_grant(ttl, None).await }
                })
                .await
                .map_err(|e| RingError::Etcd(e.to_string()))?
                .id();
            let value = {
                let mut me = self.me.lock();
                me.tokens = mine.clone();
                me.updated_at_ms = now_ms();
                me.to_json()
            };
            // Put only if our key is as we read it: two nodes starting with one id at once
            // cannot both pass the duplicate check.
            let mut when = vec![Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                seen_mod_revision,
            )];
            if fresh && read_revision > 0 {
                // No entry of the ring written since our read (a range compare holds for
                // every key under the prefix; an empty range holds).
                when.push(
                    Compare::mod_revision(
                        self.ring_prefix.clone(),
                        CompareOp::Less,
                        read_revision + 1,
                    )
                    .with_prefix(),
                );
            }
            let txn = Txn::new().when(when).and_then([TxnOp::put(
                self.key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
            let mut c = self.client.clone();
            match self.call("put", async move { c.txn(txn).await }).await {
                Ok(r) if r.succeeded() => {
                    self.lease_id.store(lease, Ordering::Release);
                    self.left.store(false, Ordering::Release);
                    self.publish(&self.view.lock());
                    return Ok(());
                }
                Ok(_) => tracing::info!("ring: our key changed while registering; reading again"),
                Err(_) => {}
            }
            // The lease is of no use now; it would expire anyway.
            let mut c = self.client.clone();
            let _ = self
                .call("lease", async move { c.lease_revoke(lease).await })
                .await;
            tokens = Some(mine);
            // Jittered, so that nodes started together do not retry in step.
            let jitter = token_seed(&self.cfg.instance_id).wrapping_add(attempt as u64) % 200;
            tokio::time::sleep(MIN_BACKOFF + Duration::from_millis(jitter)).await;
        }
        Err(RingError::Etcd(format!(
            "could not register {}: the key kept changing",
            self.key
        )))
    }

    /// An entry with our id is in etcd: ours from a previous life (same address: taken
    /// over), dead (its lease gone), unreadable (overwritten), or another live node's.
    async fn check_own_entry(&self, lease: i64, value: &[u8]) -> Result<(), RingError> {
        let old = InstanceDesc::from_json(&self.cfg.instance_id, value);
        if let Ok(d) = &old {
            if d.addr == self.cfg.instance_addr {
                tracing::info!(
                    id = %self.cfg.instance_id,
                    "ring: taking over our entry from a previous life"
                );
                return Ok(());
            }
        }
        let live = lease != 0
            && self
                .call_until_answered("lease", |mut c| async move {
                    c.lease_time_to_live(lease, None).await
                })
                .await
                .map_err(|e| RingError::Etcd(e.to_string()))?
                .ttl()
                > 0;
        match old {
            Ok(d) if live => {
                tracing::error!(
                    id = %self.cfg.instance_id,
                    their_addr = %d.addr,
                    our_addr = %self.cfg.instance_addr,
                    "ring: another live node holds our instance id"
                );
                Err(RingError::DuplicateId(self.cfg.instance_id.clone()))
            }
            Ok(_) => Ok(()),
            Err(reason) => {
                tracing::warn!(key = %self.key, reason, "ring: overwriting our unreadable entry");
                Ok(())
            }
        }
    }

    /// Our tokens from the tokens file, if it has them.
    fn saved_tokens(&self) -> Result<Option<Vec<u32>>, RingError> {
        let path = &self.cfg.tokens_file;
        let Some(mut t) = tokens::load(path)? else {
            return Ok(None);
        };
        t.sort_unstable();
        t.dedup();
        if t.len() != self.cfg.num_tokens {
            tracing::info!(
                kept = t.len(),
                num_tokens = self.cfg.num_tokens,
                "ring: keeping the tokens of the tokens file, not --ring.num-tokens"
            );
        }
        Ok(Some(t))
    }

    /// New tokens for the ring of `others`, saved before we register with them.
    fn new_tokens(&self, others: Vec<InstanceDesc>, attempt: usize) -> Result<Vec<u32>, RingError> {
        let path = &self.cfg.tokens_file;
        let seed = token_seed(&self.cfg.instance_id).wrapping_add(attempt as u64);
        // Balanced for this ring's replication factor, within this node's zone if it has one.
        let t = tokens::generate_in_zone(
            self.cfg.num_tokens,
            &Ring::new(others),
            seed,
            self.replication_factor,
            &self.cfg.zone,
        );
        tokens::save(path, &t)?;
        tracing::info!(n = t.len(), seed, file = %path.display(), "ring: new tokens");
        Ok(t)
    }

    /// One keepalive round; `Err` means etcd did not answer.
    async fn keepalive_once(&self) -> Result<(), ()> {
        let lease = self.lease_id.load(Ordering::Acquire);
        let mut c = self.client.clone();
        match self
            .call("keepalive", async move { c.lease_keep_alive(lease).await })
            .await
        {
            Ok(_) => {
                if self.watch_live.load(Ordering::Acquire) {
                    self.confirm();
                }
            }
            Err(e) if e.lease_not_found() => {
                tracing::warn!(
                    lease = format_args!("{lease:x}"),
                    "ring: our lease expired (etcd away longer than the heartbeat timeout?); \
                     registering again under a new lease"
                );
                let ttl = self.timing.ttl_secs;
                let mut c = self.client.clone();
                let granted = self
                    .call("lease", async move { c.lease_grant(ttl, None).await })
                    .await
                    .map_err(|_| ())?;
                self.lease_id.store(granted.id(), Ordering::Release);
                self.metrics.ring.lease_regrants.inc();
                {
                    self.me.lock().updated_at_ms = now_ms();
                }
                self.needs_put.store(true, Ordering::Release);
            }
            Err(_) => {
                // A frozen etcd leaves the watch stream silent: have it read the ring again.
                self.resync.notify_one();
                return Err(());
            }
        }
        if self.needs_put.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.put_me().await {
                self.needs_put.store(true, Ordering::Release);
                return if e.lease_not_found() { Ok(()) } else { Err(()) };
            }
        }
        Ok(())
    }

    /// One watch session: read the prefix, then follow it from the next revision. Returns
    /// on any failure, cancellation or compaction; the caller starts another.
    async fn watch_session(&self, backoff: &mut Backoff) {
        let prefix = self.ring_prefix.clone();
        let mut c = self.client.clone();
        let Ok(resp) = self
            .call("get", async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await
        else {
            return;
        };
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let own_lease = {
            let mut view = self.view.lock();
            let own = self
                .apply_snapshot(&mut view, resp.kvs())
                .map(|kv| kv.lease());
            self.publish(&view);
            own
        };
        self.confirm();
        self.own_seen(own_lease);

        let prefix = self.ring_prefix.clone();
        let mut c = self.client.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let Ok(mut stream) = self
            .call("watch", async move { c.watch(prefix, Some(options)).await })
            .await
        else {
            return;
        };
        self.watch_live.store(true, Ordering::Release);
        backoff.reset();
        loop {
            tokio::select! {
                _ = self.resync.notified() => {
                    tracing::debug!("ring: reading the ring again after a failed keepalive");
                    return;
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            // etcd answered (so it is up), but this watch is over: its start
                            // revision was compacted away, or etcd cancelled it. A fresh read
                            // and a new watch make up for whatever it missed.
                            self.metrics
                                .ring
                                .etcd_errors
                                .get_or_create(&ReasonLabels { reason: "watch" })
                                .inc();
                            tracing::info!(
                                reason = resp.cancel_reason(),
                                compact_revision = resp.compact_revision(),
                                "ring: watch cancelled by etcd; reading the ring again"
                            );
                            return;
                        }
                        self.etcd_ok();
                        if !resp.events().is_empty() {
                            self.apply_events(resp.events());
                        }
                        self.confirm();
                    }
                    Ok(None) => {
                        self.etcd_failed("watch", &"the stream ended");
                        return;
                    }
                    Err(e) => {
                        self.etcd_failed("watch", &e);
                        return;
                    }
                }
            }
        }
    }

    fn apply_events(&self, events: &[etcd_client::Event]) {
        let mut own: Option<Option<i64>> = None;
        {
            let mut view = self.view.lock();
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let Some(id) = key.strip_prefix(&self.ring_prefix) else {
                    continue;
                };
                let is_own = key == self.key;
                match ev.event_type() {
                    EventType::Put if is_own => own = Some(Some(kv.lease())),
                    EventType::Delete if is_own => own = Some(None),
                    EventType::Put => match InstanceDesc::from_json(id, kv.value()) {
                        Ok(d) => {
                            view.warned_bad.remove(key.as_ref());
                            view.others.insert(id.to_string(), d);
                        }
                        Err(reason) => {
                            // What etcd holds now is unreadable: the old value no longer counts.
                            view.others.remove(id);
                            self.bad_entry(&mut view, &key, kv.mod_revision(), &reason);
                        }
                    },
                    EventType::Delete => {
                        view.others.remove(id);
                        view.warned_bad.remove(key.as_ref());
                    }
                }
            }
            self.publish(&view);
        }
        if let Some(own) = own {
            self.own_seen(own);
        }
    }
}

async fn keepalive_loop(sh: Arc<Shared>) {
    let mut backoff = Backoff::new();
    let mut delay = sh.timing.keepalive_every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sh.reput.notified() => {}
        }
        if sh.left.load(Ordering::Acquire) {
            return;
        }
        match sh.keepalive_once().await {
            Ok(()) => {
                backoff.reset();
                delay = sh.timing.keepalive_every;
            }
            Err(()) => delay = backoff.next_delay(),
        }
        sh.update_age();
    }
}

async fn watch_loop(sh: Arc<Shared>) {
    let mut backoff = Backoff::new();
    loop {
        sh.watch_session(&mut backoff).await;
        sh.watch_live.store(false, Ordering::Release);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Whether this duration is a valid heartbeat timeout (etcd leases count whole seconds).
pub fn lease_ttl_secs(d: Duration) -> i64 {
    d.as_secs().max(1) as i64
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
