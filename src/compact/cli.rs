//! The compactor's flags (shared by `weft serve` and `weft compact`) and `weft compact`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{store_totals, Compactor, CompactorConfig};
use crate::metrics::Metrics;
use crate::pressure::Memory;
use crate::store::{Store, StoreOptions};

/// Flags of retention and compaction, in `weft serve` and `weft compact`.
#[derive(Debug, Clone, Args)]
pub struct CompactorFlags {
    /// Objects whose newest sample is older than now minus this are deleted from the store
    /// and the local tier. 0 keeps everything. Per-tenant overrides come from the overrides
    /// file.
    #[arg(long = "store.retention", env = "WEFT_STORE_RETENTION", default_value = "0", value_parser = parse_duration)]
    pub retention: Duration,
    /// Block sizes of the compaction levels, increasing (like Mimir's
    /// `-compactor.block-ranges`): objects are merged into one per 2h block, then per day.
    #[arg(long = "compactor.block-ranges", env = "WEFT_COMPACTOR_BLOCK_RANGES", default_value = "2h,24h", value_parser = parse_block_ranges)]
    pub block_ranges: BlockRanges,
    /// A block is compacted only once its end, and the newest sample of every object in it,
    /// is older than this: blocks still receiving data are left alone. Keep it above
    /// `--flush.max-chunk-age` plus `--flush.period`.
    #[arg(long = "compactor.block-margin", env = "WEFT_COMPACTOR_BLOCK_MARGIN", default_value = "2h", value_parser = parse_duration)]
    pub block_margin: Duration,
    /// Time between compactor runs.
    #[arg(long = "compactor.interval", env = "WEFT_COMPACTOR_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long one generation of the compactor lease is valid; it is renewed while the
    /// compactor works, and another compactor takes it over once it has expired.
    #[arg(long = "compactor.lease-ttl", env = "WEFT_COMPACTOR_LEASE_TTL", default_value = "1m", value_parser = parse_duration)]
    pub lease_ttl: Duration,
}

/// The compactor's flags in `weft serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeCompactorFlags {
    /// Run the compactor (retention and compaction) inside `weft serve`: for one node with
    /// its own bucket. Turn it off when `weft compact` serves a bucket several nodes share.
    #[arg(long = "compactor.enabled", env = "WEFT_COMPACTOR_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Retention and compaction flags.
    #[command(flatten)]
    pub flags: CompactorFlags,
}

impl ServeCompactorFlags {
    /// Starts the node's compactor if enabled (or only its catalog refresh if not), as a
    /// task that stops when the handle is aborted.
    pub fn spawn(&self, node: &crate::node::Node) -> tokio::task::JoinHandle<()> {
        self.spawn_with_retention(node, None)
    }

    /// [`spawn`](Self::spawn) with per-tenant retention (from the overrides file): `f`
    /// returns a tenant's retention, or `None` for `--store.retention`.
    pub fn spawn_with_retention(
        &self,
        node: &crate::node::Node,
        retention: Option<super::RetentionFn>,
    ) -> tokio::task::JoinHandle<()> {
        let cfg = self.flags.config(
            node.config().flush.max_object_bytes,
            node.memory().limit_bytes(),
        );
        let enabled = self.enabled;
        let mut c = Compactor::new(
            cfg,
            node.store().clone(),
            node.memory().clone(),
            node.metrics().clone(),
        )
        .with_node(node.catalog().clone(), Some(node.local().clone()));
        if let Some(f) = retention {
            c = c.with_retention(f);
        }
        let c = Arc::new(c);
        if enabled {
            tokio::spawn(c.run())
        } else {
            tokio::spawn(c.run_relist_only())
        }
    }
}

/// `--compactor.block-ranges`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRanges(pub Vec<Duration>);

fn parse_block_ranges(s: &str) -> Result<BlockRanges, String> {
    super::parse_block_ranges(s, parse_duration).map(BlockRanges)
}

impl CompactorFlags {
    /// The compactor's config from the flags; `max_object_bytes` is the size outputs are cut
    /// at, and `memory_limit_bytes` bounds a job.
    pub fn config(&self, max_object_bytes: u64, memory_limit_bytes: u64) -> CompactorConfig {
        CompactorConfig {
            interval: self.interval,
            block_ranges: self.block_ranges.0.clone(),
            block_margin: self.block_margin,
            retention: self.retention,
            max_object_bytes,
            max_job_bytes: (4 * max_object_bytes).min(memory_limit_bytes / 2),
            lease_ttl: self.lease_ttl,
            ..CompactorConfig::default()
        }
    }
}

/// `weft compact`: retention and compaction of a bucket several ingesters share.
#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    /// Object store URL (`s3://BUCKET/PREFIX`, `file://DIR`, ...), as the ingesters'.
    #[arg(long, env = "WEFT_STORE")]
    pub store: String,
    /// One run, then exit (0 also when another compactor holds the lease).
    #[arg(long)]
    pub once: bool,
    /// Size outputs are cut at.
    #[arg(long = "compactor.max-object-bytes", env = "WEFT_COMPACTOR_MAX_OBJECT_BYTES", default_value_t = 64 << 20)]
    pub max_object_bytes: u64,
    /// Memory a compaction job may use (sources and one output).
    #[arg(long = "limits.memory-bytes", env = "WEFT_LIMITS_MEMORY_BYTES", default_value_t = 1 << 30)]
    pub memory_bytes: u64,
    /// Deadline of every store call.
    #[arg(long = "store.timeout", env = "WEFT_STORE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub store_timeout: Duration,
    /// Log filter (`info`, `debug`, `weft=debug,...`).
    #[arg(long = "log.level", env = "WEFT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Per-tenant overrides (the ingesters' `--limits.overrides-file`): a tenant's
    /// `retention` there wins over `--store.retention`. Re-read every 10s.
    #[arg(long = "limits.overrides-file", env = "WEFT_LIMITS_OVERRIDES_FILE")]
    pub overrides_file: Option<std::path::PathBuf>,
    /// Retention and compaction flags.
    #[command(flatten)]
    pub compactor: CompactorFlags,
}

/// Runs `weft compact`.
pub fn run_compact(args: CompactArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft compact: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(compact_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("weft compact stopped: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn compact_main(args: CompactArgs) -> anyhow::Result<()> {
    let opts = StoreOptions {
        timeout: args.store_timeout,
        request_timeout: args.store_timeout,
        read_first_byte_timeout: args.store_timeout,
        ..StoreOptions::default()
    };
    let store = Store::open(&args.store, &opts)?;
    let metrics = Arc::new(Metrics::new());
    let memory = Arc::new(Memory::new(args.memory_bytes, &metrics));
    let cfg = args
        .compactor
        .config(args.max_object_bytes, args.memory_bytes);
    let mut c = Compactor::new(cfg, store.clone(), memory, metrics.clone());
    if let Some(path) = &args.overrides_file {
        let overrides = Arc::new(crate::limits::Overrides::load(path)?);
        tokio::spawn(
            overrides
                .clone()
                .run_reloader(Duration::from_secs(10), metrics),
        );
        c = c.with_retention(Arc::new(move |t| overrides.tenant(t).retention));
    }
    let c = Arc::new(c);
    tracing::info!(store = %args.store, holder = %c.config().holder, "weft compact starting");
    loop {
        match c.run_once().await {
            // Tests and scripts read this line.
            Ok(s) => tracing::info!(
                lease = s.lease,
                objects_before = s.objects_before,
                objects_after = s.objects_after,
                bytes_before = s.bytes_before,
                bytes_after = s.bytes_after,
                jobs = s.jobs,
                failed_jobs = s.failed_jobs,
                expired = s.expired,
                markers_finished = s.markers_finished,
                duplicate_chunks = s.duplicate_chunks,
                "compactor run done"
            ),
            Err(e) if args.once => {
                c.release().await;
                return Err(e.into());
            }
            Err(e) => tracing::warn!(error = %e, "compactor run failed; retrying next interval"),
        }
        if args.once {
            c.release().await;
            let totals = store_totals(&store).await?;
            let (n, b) = totals
                .values()
                .fold((0, 0), |(n, b), (tn, tb)| (n + tn, b + tb));
            tracing::info!(
                objects = n,
                bytes = b,
                tenants = totals.len(),
                "store after the run"
            );
            return Ok(());
        }
        tokio::select! {
            () = c.hold_lease_for(c.config().interval) => {}
            r = tokio::signal::ctrl_c() => {
                let _ = r;
                c.release().await;
                return Ok(());
            }
        }
    }
}

/// `30s`, `5m`, `2h`, `7d`, `500ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        "ms" => Duration::from_millis(n),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h or d"
            ))
        }
    })
}
