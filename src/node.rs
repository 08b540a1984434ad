//! The boot sequence: one function that builds every part of a running weft, in order, and
//! hands back a [`Node`] that is ready to take writes.
//!
//! Before, the parts were set one by one into the HTTP state as they became ready, and
//! every handler had to cope with a part that was not there yet. Now the HTTP layer sees
//! either nothing (booting: `/ready` and writes answer 503) or a whole [`Node`].
//!
//! The order of [`Node::boot`], and why:
//!
//! 1. the data directory, the store and the local tier; the catalog starts listing the store
//!    in the background (it runs alongside replay, which is the long part);
//! 2. the spill directory (replay resolves spilled chunks' references into it);
//! 3. WAL replay, in a blocking task;
//! 4. spill files nothing refers to are removed (only now is every reference known);
//! 5. the flusher, the memory reclaimer and the balancer start (they need the ingester,
//!    for flush marks and checkpoints, and the flusher, to release flushed chunks);
//! 6. the catalog gets up to one store deadline to finish its listing, so a fresh
//!    ingester's first queries see the store; past that, weft serves anyway.
//!
//! **Invariant:** `node` knows nothing about HTTP; `api` holds a `Node` once it is whole.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::flush::{FlushConfig, Flusher};
use crate::head::{Head, HeadConfig};
use crate::ingest::{IngestError, Ingester};
use crate::local::{LocalConfig, LocalError, LocalTier};
use crate::metrics::Metrics;
use crate::pressure::{Balancer, Memory, Pressure};
use crate::query::Querier;
use crate::spill::{Spill, SpillConfig, SpillError};
use crate::store::catalog::{Catalog, CatalogConfig};
use crate::store::health::{run_read_probe, StoreHealth};
use crate::store::retry::CircuitConfig;
use crate::store::{Store, StoreError, StoreOptions};
use crate::wal::{run_checkpoint_schedule, CheckpointPolicy, WalConfig, WalError};

/// Everything [`Node::boot`] needs, as the operator set it. The clamps that keep one
/// setting within another's budget (object size within memory, spill files and checkpoint
/// growth within the disk budget) are applied by `boot`, not by the caller.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `--data-dir`: created if missing; holds `local/` and `spill/` (and by default the WAL).
    pub data_dir: PathBuf,
    /// The object store URL (`file://`, `memory://`, `s3://`, ...).
    pub store_url: String,
    /// How to talk to the store.
    pub store: StoreOptions,
    /// The read and write circuit breakers.
    pub circuit: CircuitConfig,
    /// The catalog's cache bound and degraded read deadline; the cache bound is also the
    /// cache's cap inside the memory limit.
    pub catalog: CatalogConfig,
    /// The WAL directory.
    pub wal_dir: PathBuf,
    /// WAL segment size and sync mode.
    pub wal: WalConfig,
    /// When checkpoints are taken; `max_wal_growth_bytes` is clamped to the disk budget.
    pub checkpoint: CheckpointPolicy,
    /// Series and label limits of the head.
    pub head: HeadConfig,
    /// `--limits.memory-bytes`, resolved (the flag, or the default from the cgroup).
    pub memory_limit_bytes: u64,
    /// `--limits.disk-bytes`: WAL, spill and local tier.
    pub disk_budget_bytes: u64,
    /// `--spill.file-size`; clamped to the disk budget.
    pub spill_file_bytes: u64,
    /// `--local.retention`.
    pub local_retention: Duration,
    /// The flusher; `max_object_bytes` is clamped to the memory limit.
    pub flush: FlushConfig,
    /// `--query.timeout`.
    pub query_timeout: Duration,
    /// How long `POST /ingester/shutdown` tries to flush before checkpointing the rest.
    pub shutdown_flush_timeout: Duration,
}

/// Why a node could not boot. Each variant names the step; its source says what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The data directory could not be created.
    #[error("creating the data directory {}", path.display())]
    DataDir {
        /// `--data-dir`.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The store URL is invalid or its client could not be built.
    #[error("opening the store {url}")]
    Store {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The local tier's directories could not be opened.
    #[error("opening the local tier")]
    Local(#[source] LocalError),
    /// The spill directory could not be opened.
    #[error("opening the spill directory")]
    Spill(#[source] SpillError),
    /// WAL replay failed (an unreadable directory, or corruption with
    /// `--wal.on-corruption=stop`).
    #[error("replaying the WAL in {}", dir.display())]
    Replay {
        /// The WAL directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: IngestError,
    },
    /// The replay task panicked or was cancelled.
    #[error("the WAL replay task did not finish")]
    ReplayTask(#[source] tokio::task::JoinError),
}

/// Every part of a running weft, built whole by [`Node::boot`]. Shared as an `Arc`.
///
/// The background tasks it starts (catalog loader, read probe, flusher, balancer) stop
/// when the node is dropped.
#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    metrics: Arc<Metrics>,
    head: Arc<Head>,
    store: Store,
    health: StoreHealth,
    local: Arc<LocalTier>,
    catalog: Arc<Catalog>,
    memory: Arc<Memory>,
    querier: Querier,
    spill: Arc<Spill>,
    ingester: Arc<Ingester>,
    flusher: Arc<Flusher>,
    pressure: Arc<Pressure>,
    balancer: Arc<Balancer>,
    _tasks: Tasks,
}

/// Background tasks that stop when dropped: with the node, or with a boot that failed
/// half-way (the loops run for ever, and nothing else would stop them).
#[derive(Debug, Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(f));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Node {
    /// Builds a ready node: opens the store, the local tier and the spill, replays the WAL,
    /// and starts the catalog loader, the read probe, the flusher and the balancer (see the
    /// module docs for the order). `metrics` is shared with whoever serves `/metrics` while
    /// this runs. Must run inside a tokio runtime.
    pub async fn boot(mut cfg: NodeConfig, metrics: Arc<Metrics>) -> Result<Node, BootError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| BootError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        // The budgets bound each other; apply the clamps once, here, so the config the node
        // keeps is the one it runs with.
        cfg.flush.max_object_bytes = crate::pressure::flush_object_bytes(
            cfg.flush.max_object_bytes,
            cfg.memory_limit_bytes,
            cfg.flush.concurrency,
        );
        cfg.spill_file_bytes =
            crate::pressure::spill_file_bytes(cfg.spill_file_bytes, cfg.disk_budget_bytes);
        cfg.checkpoint.max_wal_growth_bytes = crate::pressure::checkpoint_bytes(
            cfg.checkpoint.max_wal_growth_bytes,
            cfg.disk_budget_bytes,
        );

        let head = Arc::new(Head::new(cfg.head.clone(), metrics.clone()));
        let store = Store::open(&cfg.store_url, &cfg.store).map_err(|source| BootError::Store {
            url: cfg.store_url.clone(),
            source,
        })?;
        let health = {
            let metrics = metrics.clone();
            StoreHealth::with_observer(
                CircuitConfig {
                    failure_threshold: cfg.circuit.failure_threshold.max(1),
                    ..cfg.circuit
                },
                move |op, up| metrics.set_store_up(op, up),
            )
        };
        let local = Arc::new(
            LocalTier::open(LocalConfig {
                dir: cfg.data_dir.join("local"),
                retention: cfg.local_retention,
            })
            .map_err(BootError::Local)?,
        );
        let catalog = Arc::new(
            Catalog::new(store.clone(), health.read.clone(), cfg.catalog)
                .with_local_tier(local.clone()),
        );
        let memory = Arc::new(
            Memory::new(cfg.memory_limit_bytes, &metrics)
                .with_cache(catalog.clone(), cfg.catalog.cache_bytes),
        );
        // The listing runs alongside replay, which is the long part of a start.
        let mut tasks = Tasks::default();
        tasks.spawn(catalog.clone().run_loader());
        tasks.spawn(run_read_probe(store.clone(), health.read.clone()));

        let spill = Arc::new(
            Spill::open(SpillConfig {
                dir: cfg.data_dir.join("spill"),
                file_size: cfg.spill_file_bytes,
            })
            .map_err(BootError::Spill)?,
        );
        head.set_spill(spill.clone());
        tracing::info!(dir = %cfg.wal_dir.display(), "replaying the WAL");
        let (replay_head, wal_dir, wal_cfg) = (head.clone(), cfg.wal_dir.clone(), cfg.wal.clone());
        let (ingester, stats) =
            tokio::task::spawn_blocking(move || Ingester::open(replay_head, &wal_dir, wal_cfg))
                .await
                .map_err(BootError::ReplayTask)?
                .map_err(|source| BootError::Replay {
                    dir: cfg.wal_dir.clone(),
                    source,
                })?;
        metrics.observe_wal_replay(
            stats.corrupt_regions,
            stats.corrupt_bytes,
            stats.lost_samples,
            stats.evidence_not_kept,
        );
        // wal::replay and ingest log what was replayed and how fast; this line marks
        // readiness (tests read it).
        tracing::info!(
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "WAL replay done; ready"
        );
        let ingester = Arc::new(ingester);
        // Spill files no restored chunk refers to hold nothing the WAL does not also have.
        let removed = spill.gc();
        if removed > 0 {
            tracing::info!(files = removed, "removed spill files nothing refers to");
        }

        let flusher = Arc::new(
            Flusher::new(
                cfg.flush.clone(),
                head.clone(),
                ingester.clone(),
                store.clone(),
                health.write.clone(),
                catalog.clone(),
                metrics.clone(),
                memory.clone(),
            )
            .with_local_tier(local.clone()),
        );
        tasks.spawn(flusher.clone().run());
        // A reservation that does not fit first asks for memory back; weak, because the
        // memory accounting would otherwise hold itself through the reclaimer.
        memory.set_reclaimer(crate::pressure::reclaimer(
            Arc::downgrade(&memory),
            head.clone(),
            flusher.clone(),
        ));
        let pressure = Arc::new(Pressure::new(
            memory.clone(),
            cfg.disk_budget_bytes,
            &cfg.wal_dir,
        ));
        let balancer = Arc::new(Balancer {
            pressure: pressure.clone(),
            head: head.clone(),
            flusher: flusher.clone(),
            spill: spill.clone(),
            ingester: ingester.clone(),
            metrics: metrics.clone(),
            local: Some(local.clone()),
        });
        tasks.spawn(balancer.clone().run());

        // Give the catalog (listed since the start, alongside replay) up to one store
        // deadline, so that a fresh ingester's first queries see the store; past that,
        // serve anyway: the loader keeps trying, and queries say they may be incomplete
        // until it succeeds.
        let waited = std::time::Instant::now();
        while !catalog.is_loaded() && waited.elapsed() < cfg.store.timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !catalog.is_loaded() {
            tracing::warn!(
                "store catalog not loaded yet (is the store reachable?); serving without it meanwhile"
            );
        }

        let querier = Querier::with_store(head.clone(), catalog.clone(), cfg.query_timeout)
            .with_memory(memory.clone());
        Ok(Node {
            cfg,
            metrics,
            head,
            store,
            health,
            local,
            catalog,
            memory,
            querier,
            spill,
            ingester,
            flusher,
            pressure,
            balancer,
            _tasks: tasks,
        })
    }

    /// Runs the checkpoint schedule (`--wal.checkpoint-interval`, WAL growth) until
    /// `shutdown` completes; returns how many checkpoints it wrote.
    pub async fn run_checkpoints(&self, shutdown: impl std::future::Future<Output = ()>) -> u64 {
        let ingester = self.ingester.clone();
        run_checkpoint_schedule(
            self.ingester.wal().clone(),
            self.cfg.checkpoint.clone(),
            move || {
                let ing = ingester.clone();
                async move {
                    tokio::task::spawn_blocking(move || ing.checkpoint().map(|_| ()))
                        .await
                        .unwrap_or(Err(WalError::Closed.into()))
                }
            },
            shutdown,
        )
        .await
    }

    /// The last step of a stop: the shutdown checkpoint (so the next start replays it
    /// instead of the segments), then the WAL is closed. Failures are logged: the WAL
    /// segments still hold everything a failed checkpoint would have.
    pub async fn close(&self) {
        let ing = self.ingester.clone();
        match tokio::task::spawn_blocking(move || ing.checkpoint()).await {
            Ok(Ok(s)) => tracing::info!(
                series = s.series,
                chunks = s.chunks,
                "shutdown checkpoint written"
            ),
            Ok(Err(e)) => tracing::error!(
                "shutdown checkpoint failed (the WAL segments still hold the data): {e}"
            ),
            Err(e) => tracing::error!(
                "shutdown checkpoint task failed (the WAL segments still hold the data): {e}"
            ),
        }
        if let Err(e) = self.ingester.wal().close() {
            tracing::error!("closing the WAL: {e}");
        }
    }

    /// The settings it runs with (clamps applied).
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The in-memory series of every tenant.
    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// The object store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store's read and write breakers.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// The local tier.
    pub fn local(&self) -> &Arc<LocalTier> {
        &self.local
    }

    /// The catalog of store objects.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The memory accounting.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    /// Reads over every tier.
    pub fn querier(&self) -> &Querier {
        &self.querier
    }

    /// The spill files.
    pub fn spill(&self) -> &Arc<Spill> {
        &self.spill
    }

    /// The durable write path (head and WAL).
    pub fn ingester(&self) -> &Arc<Ingester> {
        &self.ingester
    }

    /// The flusher.
    pub fn flusher(&self) -> &Arc<Flusher> {
        &self.flusher
    }

    /// The memory and disk budgets' admission.
    pub fn pressure(&self) -> &Arc<Pressure> {
        &self.pressure
    }

    /// The balancer that keeps memory and disk within their budgets.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }
}

#[cfg(test)]
impl NodeConfig {
    /// A node's config over `data_dir` and an in-memory store, with short deadlines.
    pub(crate) fn for_test(data_dir: &std::path::Path) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.to_owned(),
            store_url: "memory://".to_owned(),
            store: StoreOptions {
                timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(2),
                ..StoreOptions::default()
            },
            circuit: CircuitConfig {
                failure_threshold: 5,
                probe_interval: Duration::from_secs(5),
            },
            catalog: CatalogConfig {
                cache_bytes: 1 << 20,
                degraded_timeout: Duration::from_millis(500),
            },
            wal_dir: data_dir.join("wal"),
            wal: WalConfig {
                segment_size_bytes: 1 << 20,
                sync: crate::wal::SyncMode::Always,
                on_corruption: crate::wal::OnCorruption::Repair,
            },
            checkpoint: CheckpointPolicy {
                interval: Duration::from_secs(3600),
                max_wal_growth_bytes: 1 << 30,
                poll: Duration::from_secs(10),
                retry_backoff: Duration::from_secs(10),
            },
            head: HeadConfig::default(),
            memory_limit_bytes: 256 << 20,
            disk_budget_bytes: 1 << 30,
            spill_file_bytes: 1 << 20,
            local_retention: Duration::from_secs(3600),
            flush: FlushConfig {
                // No flush during a test: what it reads back comes from the head.
                period: Duration::from_secs(3600),
                ..FlushConfig::default()
            },
            query_timeout: Duration::from_secs(5),
            shutdown_flush_timeout: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MatchOp, Matcher, TenantId};
    use crate::proto::prompb;
    use prost::Message;

    /// Pushes one series with `samples` through the node's durable write path.
    async fn push(node: &Node, name: &str, samples: &[(i64, f64)]) {
        let req = prompb::WriteRequest {
            timeseries: vec![prompb::TimeSeries {
                labels: vec![prompb::Label {
                    name: "__name__".to_owned(),
                    value: name.to_owned(),
                }],
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| prompb::Sample { value, timestamp })
                    .collect(),
                exemplars: vec![],
                histograms: Vec::new(),
            }],
            metadata: vec![],
        };
        let body = req.encode_to_vec();
        let mut batch = crate::proto::WriteBatch::default();
        crate::proto::decode_write_request(&body, &mut batch).unwrap();
        let tenant = node
            .head()
            .tenant_or_create(&TenantId::parse(TenantId::DEFAULT).unwrap());
        let mut log = crate::head::WalLog::default();
        let (report, pos) = node.ingester().append(&tenant, &batch, &mut log).unwrap();
        assert_eq!(report.appended, samples.len() as u64, "{report:?}");
        node.ingester().wait_durable(pos.unwrap()).await.unwrap();
    }

    /// The names of the series named `name` the node's querier finds, and its warnings.
    async fn series(node: &Node, name: &str) -> (Vec<String>, Vec<String>) {
        let m = vec![Matcher::new(MatchOp::Eq, "__name__", name).unwrap()];
        let a = node
            .querier()
            .series(
                &TenantId::parse(TenantId::DEFAULT).unwrap(),
                &[m],
                i64::MIN,
                i64::MAX,
            )
            .await;
        (
            a.data
                .iter()
                .map(|l| l.get("__name__").unwrap_or_default().to_owned())
                .collect(),
            a.warnings,
        )
    }

    #[tokio::test]
    async fn boot_on_an_empty_dir_gives_a_node_that_takes_writes_and_answers_completely() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::boot(NodeConfig::for_test(dir.path()), Arc::new(Metrics::new()))
            .await
            .unwrap();
        // memory:// lists at once: the catalog is loaded before boot returns, so answers
        // carry no "catalog not loaded" warning.
        assert!(node.catalog().is_loaded());
        assert!(!node.ingester().wal().is_poisoned());
        push(&node, "up", &[(1_000, 1.0), (2_000, 2.0)]).await;
        let (found, warnings) = series(&node, "up").await;
        assert_eq!(found, vec!["up".to_owned()]);
        assert!(warnings.is_empty(), "{warnings:?}");
        // The budget clamps were applied to the config the node keeps.
        assert!(node.config().checkpoint.max_wal_growth_bytes <= 1 << 30);
    }

    #[tokio::test]
    async fn a_closed_node_boots_again_from_its_shutdown_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::boot(NodeConfig::for_test(dir.path()), Arc::new(Metrics::new()))
            .await
            .unwrap();
        push(&node, "restored", &[(1_000, 1.5)]).await;
        node.close().await;
        drop(node);
        assert!(
            std::fs::read_dir(dir.path().join("wal")).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoint")),
            "no shutdown checkpoint"
        );
        let node = Node::boot(NodeConfig::for_test(dir.path()), Arc::new(Metrics::new()))
            .await
            .unwrap();
        let (found, _) = series(&node, "restored").await;
        assert_eq!(found, vec!["restored".to_owned()]);
    }

    #[tokio::test]
    async fn boot_on_a_wal_dir_that_is_a_file_fails_naming_the_step_and_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        std::fs::write(&wal, b"not a directory").unwrap();
        let err = Node::boot(NodeConfig::for_test(dir.path()), Arc::new(Metrics::new()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BootError::Replay { dir, .. } if *dir == wal),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("replaying the WAL in {}", wal.display())),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn boot_with_an_unknown_store_scheme_fails_before_touching_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::for_test(dir.path());
        cfg.store_url = "nosuch://bucket".to_owned();
        let err = Node::boot(cfg, Arc::new(Metrics::new())).await.unwrap_err();
        assert!(
            matches!(&err, BootError::Store { url, .. } if url == "nosuch://bucket"),
            "{err:?}"
        );
        assert!(!dir.path().join("wal").exists());
    }
}
