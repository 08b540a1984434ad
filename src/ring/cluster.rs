//! [`Cluster`]: this node's part in the ring at run time: its membership, the forwarder to
//! its peers, and the steps of joining and leaving.
//!
//! Life of a node in ring mode:
//! 1. boot as a single node does (WAL replay, checkpoint restore); `/ready` says not ready;
//! 2. [`Cluster::start`]: register in etcd as JOINING with its tokens (the same as before a
//!    restart: they are kept in `<data-dir>/ring-tokens.json`);
//! 3. [`Cluster::activate`]: ACTIVE; peers send it its share of writes; `/ready` says ready;
//! 4. on SIGTERM or `POST /ingester/shutdown`, [`Cluster::leave`]: LEAVING (it takes no new
//!    samples; peers stop sending them), flush everything to the store, delete its entry,
//!    then stop serving.
//!
//! A node that crashes stops renewing its lease; etcd deletes its entry after
//! `--ring.heartbeat-timeout` and writes go to the next owners meanwhile (the quorum holds
//! with one replica down). Back, it replays its WAL and registers with the same tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::forward::{ForwardLimits, Forwarder};
use super::membership::{Membership, MembershipConfig};
use super::replicas::Ring;
use super::{InstanceState, RingError};
use crate::metrics::Metrics;
use crate::node::Node;

/// How often a ring node lists the store again, to see what its peers uploaded.
pub const RELIST_PERIOD: Duration = Duration::from_secs(60);

/// How long an instance that vanished from the ring without leaving (its lease expired:
/// it crashed, or lost etcd) counts as a missing replica for reads, unless it comes back.
pub const LOST_FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The ring flags.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Membership in etcd.
    pub membership: MembershipConfig,
    /// `--ring.replication-factor`.
    pub replication_factor: usize,
    /// Bounds on forwarding to one owner.
    pub forward: ForwardLimits,
}

/// This node's part in the ring.
#[derive(Debug)]
pub struct Cluster {
    membership: Arc<Membership>,
    forwarder: Forwarder,
    rf: usize,
    leaving: AtomicBool,
    active: AtomicBool,
    peer_timeout: Duration,
    /// Instances that vanished without leaving, and when this node noticed.
    lost: parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Cluster {
    /// Joins the ring as JOINING (see the module docs).
    pub async fn start(
        cfg: ClusterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cluster>, RingError> {
        let membership =
            Membership::start(cfg.membership, cfg.replication_factor, metrics.clone()).await?;
        Ok(Arc::new(Cluster {
            membership,
            peer_timeout: cfg.forward.timeout,
            forwarder: Forwarder::new(cfg.forward, metrics),
            rf: cfg.replication_factor.clamp(1, super::forward::MAX_RF),
            leaving: AtomicBool::new(false),
            active: AtomicBool::new(false),
            lost: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// The ring as this node sees it now.
    pub fn ring(&self) -> Arc<Ring> {
        self.membership.ring()
    }

    /// This node's instance id.
    pub fn self_id(&self) -> &str {
        self.membership.self_id()
    }

    /// The replication factor.
    pub fn replication_factor(&self) -> usize {
        self.rf
    }

    /// Time a request to a peer may take (`--ring.forward-timeout`).
    pub fn peer_timeout(&self) -> Duration {
        self.peer_timeout
    }

    /// The forwarder to the peers.
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Whether this node is leaving: it takes no new samples.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// Whether this node is ACTIVE (and not leaving): `/ready`.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire) && !self.is_leaving()
    }

    /// Turns ACTIVE: peers start sending this node its share.
    pub async fn activate(&self) -> Result<(), RingError> {
        self.membership.set_state(InstanceState::Active).await?;
        self.active.store(true, Ordering::Release);
        tracing::info!(id = self.self_id(), "ring: ACTIVE");
        Ok(())
    }

    /// Leaves the ring: LEAVING (no new samples from now on), flush everything within
    /// `flush_timeout`, then delete this node's entry. Runs once; a second call waits for
    /// nothing and returns at once. What the flush could not upload stays in the WAL and
    /// the exit checkpoint (replicas hold it too), and the node still leaves.
    pub async fn leave(&self, node: &Node, flush_timeout: Duration) {
        if self.leaving.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(id = self.self_id(), "ring: LEAVING");
        if let Err(e) = self.membership.set_state(InstanceState::Leaving).await {
            tracing::warn!(error = %e, "ring: could not publish LEAVING; flushing anyway");
        }
        // Pushes admitted just before the flag was set finish their append before the flush
        // looks at the head (an append takes milliseconds).
        tokio::time::sleep(Duration::from_millis(200)).await;
        match node.flusher().flush_all(flush_timeout).await {
            Ok(s) => tracing::info!(
                chunks = s.chunks,
                objects = s.objects,
                "ring: flushed everything before leaving"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "ring: flush before leaving incomplete; the WAL and checkpoint keep the rest"
            ),
        }
        match self.membership.leave().await {
            Ok(()) => tracing::info!(id = self.self_id(), "ring: left"),
            Err(e) => tracing::warn!(
                error = %e,
                "ring: could not delete this node's entry; it goes when its lease expires"
            ),
        }
    }

    /// Instances that vanished from the ring without leaving (lease expired) in the last
    /// [`LOST_FORGET_AFTER`] and have not come back: reads count them as replicas that did
    /// not answer, since what they held unflushed is only on their replicas now.
    pub fn lost(&self) -> Vec<String> {
        let mut lost = self.lost.lock();
        lost.retain(|_, at| at.elapsed() < LOST_FORGET_AFTER);
        let mut ids: Vec<String> = lost.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Notes the change from ring `old` to `new`: instances gone without having been
    /// LEAVING are lost; instances back are no longer. Returns whether any left.
    fn note_change(&self, old: &Ring, new: &Ring) -> bool {
        let mut lost = self.lost.lock();
        let mut gone = false;
        for i in old.instances() {
            if new.index_of(&i.id).is_none() {
                gone = true;
                if i.state != InstanceState::Leaving && i.id != self.self_id() {
                    tracing::warn!(id = %i.id, "ring: instance vanished without leaving (lease expired)");
                    lost.insert(i.id.clone(), std::time::Instant::now());
                }
            }
        }
        for i in new.instances() {
            lost.remove(&i.id);
        }
        gone
    }

    /// What `/ring` shows: the membership's status with the lost instances.
    pub fn status(&self) -> super::membership::MembershipStatus {
        let mut s = self.membership.status();
        s.lost = self.lost();
        s
    }

    /// Background work of a ring node: forgets departed peers' bounds and lists the store
    /// again when an instance left the ring (it flushed before leaving, or crashed: its
    /// uploads are then visible to every reader) and every [`RELIST_PERIOD`].
    pub fn spawn_background(self: &Arc<Self>, node: Arc<Node>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut rx = me.membership.subscribe();
            let mut known: Arc<Ring> = rx.borrow().clone();
            let mut tick = tokio::time::interval(RELIST_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let relist = tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let ring = rx.borrow_and_update().clone();
                        me.forwarder.retain(&ring);
                        let gone = me.note_change(&known, &ring);
                        known = ring;
                        gone
                    }
                    _ = tick.tick() => true,
                };
                if relist {
                    match node.catalog().load().await {
                        Ok(n) => tracing::debug!(objects = n, "ring: store listed again"),
                        Err(e) => tracing::warn!(error = %e, "ring: listing the store failed"),
                    }
                }
            }
        })
    }
}
