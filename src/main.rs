//! The `weft` binary: the server and its tools. See `docs/ARCHITECTURE.md`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use std::ffi::OsString;
use std::time::Duration;

use weft::api::server::ServerConfig;
use weft::api::{self, ApiLimits, AppState};
use weft::flush::FlushConfig;
use weft::head::HeadConfig;
use weft::limits::Overrides;
use weft::metrics::Metrics;
use weft::model::LabelLimits;
use weft::node::{Node, NodeConfig};
use weft::pressure::LimitSource;
use weft::store::catalog::CatalogConfig;
use weft::store::retry::CircuitConfig;
use weft::store::StoreOptions;
use weft::wal::{CheckpointPolicy, OnCorruption, SyncMode, WalConfig};

/// weft: a Prometheus remote-write ingester that keeps answering through store outages.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    serve: ServeArgs,
}

// Parsed once at start; the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Prometheus XOR chunk tools.
    #[command(subcommand)]
    Chunk(ChunkCommand),
    /// Human-readable dumps of weft's files.
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Retention and compaction of a store several ingesters share (one compactor at a
    /// time per prefix, by a lease).
    Compact(weft::compact::cli::CompactArgs),
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// Segments, records, checkpoints and totals of a WAL directory.
    Wal {
        /// The WAL directory (`<data-dir>/wal`).
        dir: PathBuf,
    },
    /// Header, index, chunks and totals of one store object (a local copy of it).
    Object {
        /// The object file.
        file: PathBuf,
    },
    /// Files and chunk records of a spill directory (`<data-dir>/spill`).
    Spill {
        /// The spill directory.
        dir: PathBuf,
    },
}

/// `--wal.sync`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SyncArg {
    /// Acknowledge a push only after an msync covered it (group commit).
    Always,
    /// Never msync: survives a process crash, not power loss. For benchmarks.
    Never,
}

/// `--wal.on-corruption`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnCorruptionArg {
    /// Keep the evidence, skip the damage, log and count what was lost, and start.
    Repair,
    /// Refuse to start, changing nothing on disk.
    Stop,
}

#[derive(Debug, Subcommand)]
enum ChunkCommand {
    /// Read one raw XOR chunk on stdin; print `t_ms value` lines.
    Decode {
        /// Print each value as 16 hex digits of its IEEE-754 bits.
        #[arg(long)]
        bits: bool,
    },
    /// Read `t_ms value` lines on stdin; write the raw chunk a fresh appender makes.
    Encode,
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WEFT_LISTEN", default_value = "0.0.0.0:9009")]
    listen: String,
    /// Most open client connections. At the cap, a new connection closes the one idle the
    /// longest (or, if all are busy, waits 1s for a slot, then is closed). Lowered at start to
    /// fit the fd limit.
    #[arg(long = "server.max-connections", env = "WEFT_SERVER_MAX_CONNECTIONS", default_value_t = ServerConfig::default().max_connections)]
    server_max_connections: usize,
    /// Longest time from the first byte of a request's headers to their end; then the
    /// connection is closed.
    #[arg(long = "server.http-read-header-timeout", env = "WEFT_SERVER_HTTP_READ_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    server_http_read_header_timeout: Duration,
    /// Longest time a connection stays open with no request in progress (keep-alive).
    #[arg(long = "server.http-idle-timeout", env = "WEFT_SERVER_HTTP_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    server_http_idle_timeout: Duration,
    /// Longest time a response may wait for the client to take any of its bytes; a client
    /// that stops reading is then disconnected.
    #[arg(long = "server.http-write-timeout", env = "WEFT_SERVER_HTTP_WRITE_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    server_http_write_timeout: Duration,
    /// Time a request body may take to arrive, plus its size at --server.http-body-min-rate;
    /// a slower body gets 408 and its connection is closed.
    #[arg(long = "server.http-body-read-timeout", env = "WEFT_SERVER_HTTP_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    server_http_body_read_timeout: Duration,
    /// Bytes per second a request body must keep up beyond --server.http-body-read-timeout
    /// (0: the timeout alone bounds a body).
    #[arg(long = "server.http-body-min-rate", env = "WEFT_SERVER_HTTP_BODY_MIN_RATE", default_value_t = ApiLimits::default().body_min_rate_bytes)]
    server_http_body_min_rate: u64,
    /// Directory for the WAL, spilled chunks and (by default) the local store.
    #[arg(long = "data-dir", env = "WEFT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Object store URL: file://, memory://, s3://, gs://, az://. Default: file://<data-dir>/store.
    #[arg(long, env = "WEFT_STORE")]
    store: Option<String>,
    /// WAL directory. Default: <data-dir>/wal.
    #[arg(long = "wal.dir", env = "WEFT_WAL_DIR")]
    wal_dir: Option<PathBuf>,
    /// Size of each preallocated WAL segment file, in bytes.
    #[arg(long = "wal.segment-size", env = "WEFT_WAL_SEGMENT_SIZE", default_value_t = 64 << 20)]
    wal_segment_size: u64,
    /// When a push is acknowledged: after its WAL records are synced (always), or at once (never).
    #[arg(
        long = "wal.sync",
        env = "WEFT_WAL_SYNC",
        value_enum,
        default_value = "always"
    )]
    wal_sync: SyncArg,
    /// What to do with a corrupt WAL record or checkpoint that is not a torn tail: repair
    /// (keep a copy, skip to the next valid record, log and count what was lost, start) or stop.
    #[arg(
        long = "wal.on-corruption",
        env = "WEFT_WAL_ON_CORRUPTION",
        value_enum,
        default_value = "repair"
    )]
    wal_on_corruption: OnCorruptionArg,
    /// Checkpoint the head this often (e.g. 30m, 90s, 2h).
    #[arg(long = "wal.checkpoint-interval", env = "WEFT_WAL_CHECKPOINT_INTERVAL", default_value = "30m", value_parser = parse_duration)]
    wal_checkpoint_interval: Duration,
    /// Checkpoint early once the WAL has grown by this many bytes since the last checkpoint.
    #[arg(long = "wal.checkpoint-bytes", env = "WEFT_WAL_CHECKPOINT_BYTES", default_value_t = 1 << 30)]
    wal_checkpoint_bytes: u64,
    /// A file of `name = value` lines (`#` comments), one flag a line without its `--`, e.g.
    /// `wal.sync = always`. Command-line flags override it; it overrides the environment.
    #[arg(long = "config.file", env = "WEFT_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// Log filter, e.g. `info` or `weft=debug`.
    #[arg(long = "log.level", env = "WEFT_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Most series one tenant may hold in memory; new series past it get 429.
    #[arg(
        long = "limits.max-series-per-tenant",
        env = "WEFT_LIMITS_MAX_SERIES_PER_TENANT",
        default_value_t = 5_000_000
    )]
    max_series_per_tenant: usize,
    /// Most exemplars one tenant holds (a ring: the oldest go first); 0 disables exemplars.
    #[arg(long = "limits.max-exemplars-per-tenant", env = "WEFT_LIMITS_MAX_EXEMPLARS_PER_TENANT", default_value_t = weft::exmeta::DEFAULT_MAX_EXEMPLARS_PER_TENANT)]
    max_exemplars_per_tenant: usize,
    /// Most metric families with metadata one tenant holds; 0 disables metadata.
    #[arg(long = "limits.max-metadata-per-tenant", env = "WEFT_LIMITS_MAX_METADATA_PER_TENANT", default_value_t = weft::exmeta::DEFAULT_MAX_METADATA_PER_TENANT)]
    max_metadata_per_tenant: usize,
    /// Most label names a series may have.
    #[arg(long = "limits.max-label-names-per-series", env = "WEFT_LIMITS_MAX_LABEL_NAMES_PER_SERIES", default_value_t = LabelLimits::default().max_label_names_per_series)]
    max_label_names_per_series: usize,
    /// Longest label name, in bytes.
    #[arg(long = "limits.max-label-name-length", env = "WEFT_LIMITS_MAX_LABEL_NAME_LENGTH", default_value_t = LabelLimits::default().max_label_name_length)]
    max_label_name_length: usize,
    /// Most tenants this node holds; a push that would create one more gets 429 (existing
    /// tenants are unaffected). A push that stores nothing never creates a tenant.
    #[arg(long = "limits.max-tenants", env = "WEFT_LIMITS_MAX_TENANTS", default_value_t = weft::limits::DEFAULT_MAX_TENANTS)]
    max_tenants: usize,
    /// How far past the wall clock a sample's timestamp may be; later samples get 400
    /// (`too_far_in_future`) and the rest of the push is stored.
    #[arg(long = "limits.creation-grace-period", env = "WEFT_LIMITS_CREATION_GRACE_PERIOD", default_value = "10m", value_parser = parse_duration)]
    creation_grace_period: Duration,
    /// Per-tenant overrides of the limits (YAML, as Mimir's runtime config: `overrides:`
    /// then one map per tenant); re-read every `--limits.overrides-reload-period`.
    #[arg(long = "limits.overrides-file", env = "WEFT_LIMITS_OVERRIDES_FILE")]
    overrides_file: Option<PathBuf>,
    /// How often `--limits.overrides-file` is re-read.
    #[arg(long = "limits.overrides-reload-period", env = "WEFT_LIMITS_OVERRIDES_RELOAD_PERIOD", default_value = "10s", value_parser = parse_duration)]
    overrides_reload_period: Duration,
    /// Which metric and label names a push may use: `utf8` (any non-empty UTF-8, as
    /// Prometheus 3) or `legacy` (`[a-zA-Z_][a-zA-Z0-9_]*`, metric names also `:`).
    #[arg(
        long = "validation.name-validation-scheme",
        env = "WEFT_VALIDATION_NAME_VALIDATION_SCHEME",
        default_value = "utf8"
    )]
    name_validation_scheme: weft::model::NameValidationScheme,
    /// Longest label value, in bytes.
    #[arg(long = "limits.max-label-value-length", env = "WEFT_LIMITS_MAX_LABEL_VALUE_LENGTH", default_value_t = LabelLimits::default().max_label_value_length)]
    max_label_value_length: usize,
    /// Largest request body, compressed, in bytes.
    #[arg(long = "limits.max-request-bytes", env = "WEFT_LIMITS_MAX_REQUEST_BYTES", default_value_t = ApiLimits::default().max_request_bytes)]
    max_request_bytes: usize,
    /// Largest request body after snappy decompression, in bytes.
    #[arg(long = "limits.max-decompressed-bytes", env = "WEFT_LIMITS_MAX_DECOMPRESSED_BYTES", default_value_t = ApiLimits::default().max_decompressed_bytes)]
    max_decompressed_bytes: usize,
    /// Remote-write requests served at once; more get 503 + Retry-After.
    #[arg(long = "limits.max-inflight-requests", env = "WEFT_LIMITS_MAX_INFLIGHT_REQUESTS", default_value_t = ApiLimits::default().max_inflight_writes)]
    max_inflight_requests: usize,
    /// Read requests (remote read, series API) served at once; more get 503 + Retry-After.
    #[arg(long = "limits.max-concurrent-reads", env = "WEFT_LIMITS_MAX_CONCURRENT_READS", default_value_t = ApiLimits::default().max_concurrent_reads)]
    max_concurrent_reads: usize,
    /// Most samples in one SAMPLES remote-read response.
    #[arg(long = "limits.max-read-samples", env = "WEFT_LIMITS_MAX_READ_SAMPLES", default_value_t = ApiLimits::default().max_read_samples)]
    max_read_samples: usize,
    /// Most bytes one remote read may hold in memory (its plan and, for SAMPLES, the encoded
    /// answer); over it the read gets a 400 asking for a narrower query.
    #[arg(long = "limits.max-read-bytes", env = "WEFT_LIMITS_MAX_READ_BYTES", default_value_t = ApiLimits::default().max_read_bytes)]
    max_read_bytes: u64,
    /// Most series one remote read may select, summed over its queries.
    #[arg(long = "limits.max-read-series", env = "WEFT_LIMITS_MAX_READ_SERIES", default_value_t = ApiLimits::default().max_read_series)]
    max_read_series: usize,
    /// Bytes of memory for everything weft holds (chunks, series, cache, request and upload
    /// buffers); the process needs up to 64 MiB more. Past it the cache shrinks, flushed
    /// chunks leave memory, unflushed ones spill to local files, and then work is refused
    /// with 503 + Retry-After. Default: 3/4 of the cgroup memory limit less 64 MiB, or 1 GiB
    /// without one.
    #[arg(long = "limits.memory-bytes", env = "WEFT_LIMITS_MEMORY_BYTES")]
    memory_bytes: Option<u64>,
    /// Bytes of local disk for the WAL and spill files; past it, pushes get 503 + Retry-After.
    #[arg(long = "limits.disk-bytes", env = "WEFT_LIMITS_DISK_BYTES", default_value_t = 10 << 30)]
    disk_bytes: u64,
    /// Bytes of push bodies being decoded at once; more get 503 + Retry-After.
    #[arg(long = "limits.max-inflight-push-bytes", env = "WEFT_LIMITS_MAX_INFLIGHT_PUSH_BYTES", default_value_t = 256 << 20)]
    max_inflight_push_bytes: u64,

    /// This ingester's name in object keys (`[A-Za-z0-9_.-]`, up to 64 bytes). Default: the host name.
    #[arg(long = "ingester.id", env = "WEFT_INGESTER_ID")]
    ingester_id: Option<String>,
    /// How often a flush cycle runs.
    #[arg(long = "flush.period", env = "WEFT_FLUSH_PERIOD", default_value = "1m", value_parser = parse_duration)]
    flush_period: Duration,
    /// Open chunks whose first sample is older than this are cut and flushed.
    #[arg(long = "flush.max-chunk-age", env = "WEFT_FLUSH_MAX_CHUNK_AGE", default_value = "1h", value_parser = parse_duration)]
    flush_max_chunk_age: Duration,
    /// Open chunks with no new sample for this long are cut and flushed.
    #[arg(long = "flush.max-chunk-idle", env = "WEFT_FLUSH_MAX_CHUNK_IDLE", default_value = "5m", value_parser = parse_duration)]
    flush_max_chunk_idle: Duration,
    /// Flushed chunks stay in memory this long (unless memory runs short), so recent queries
    /// never touch the store.
    #[arg(long = "flush.retain-period", env = "WEFT_FLUSH_RETAIN_PERIOD", default_value = "5m", value_parser = parse_duration)]
    flush_retain_period: Duration,
    /// A series with no new sample for this long (wall time) leaves the head (its postings,
    /// labels and entry give their memory back) once every chunk of it has been flushed and
    /// released; its data stays readable from the local tier and the store.
    #[arg(long = "head.series-idle-timeout", env = "WEFT_HEAD_SERIES_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    head_series_idle_timeout: Duration,
    /// Samples up to this long before their series' newest sample are still accepted, kept
    /// in out-of-order chunks and merged at read time (0, the default: none, as in
    /// Prometheus). Per tenant: `out_of_order_time_window` in the overrides file.
    #[arg(long = "ingest.out-of-order-window", env = "WEFT_INGEST_OUT_OF_ORDER_WINDOW", default_value = "0", value_parser = parse_duration)]
    ingest_out_of_order_window: Duration,
    /// Tenants uploading at once.
    #[arg(
        long = "flush.concurrency",
        env = "WEFT_FLUSH_CONCURRENCY",
        default_value_t = 4
    )]
    flush_concurrency: usize,
    /// Largest object a flush writes; a backlog goes out as several.
    #[arg(long = "flush.max-object-bytes", env = "WEFT_FLUSH_MAX_OBJECT_BYTES", default_value_t = 64 << 20)]
    flush_max_object_bytes: u64,
    /// Deadline of every store call.
    #[arg(long = "store.timeout", env = "WEFT_STORE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    store_timeout: Duration,
    /// Deadline for a store read's response to start (first byte), apart from reading its
    /// body. A read past it marks store reads down at once.
    #[arg(long = "store.read-first-byte-timeout", env = "WEFT_STORE_READ_FIRST_BYTE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    store_read_first_byte_timeout: Duration,
    /// Deadline of a store read while a probe of the down store is in flight (half-open).
    /// While reads are down and no probe is in flight, queries do not read the store at all.
    #[arg(long = "store.degraded-timeout", env = "WEFT_STORE_DEGRADED_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    store_degraded_timeout: Duration,
    /// Consecutive store failures that mark it down (reads and writes counted apart).
    #[arg(
        long = "store.circuit-failures",
        env = "WEFT_STORE_CIRCUIT_FAILURES",
        default_value_t = 5
    )]
    store_circuit_failures: u32,
    /// While the store is down, how often a probe call is let through.
    #[arg(long = "store.circuit-probe-interval", env = "WEFT_STORE_CIRCUIT_PROBE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    store_circuit_probe_interval: Duration,
    /// Most bytes of object indexes and chunks cached in memory; the cache gets at most what
    /// the rest of `--limits.memory-bytes` leaves.
    #[arg(long = "cache.bytes", env = "WEFT_CACHE_BYTES", default_value_t = 256 << 20)]
    cache_bytes: u64,
    /// Deadline of a query; store data not read by then makes the answer partial.
    #[arg(long = "query.timeout", env = "WEFT_QUERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    query_timeout: Duration,
    /// How long `POST /ingester/shutdown` tries to flush before checkpointing the rest.
    #[arg(long = "shutdown.flush-timeout", env = "WEFT_SHUTDOWN_FLUSH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    shutdown_flush_timeout: Duration,
    /// How long (sample time, after its newest sample) a flushed object stays on local disk,
    /// so that queries over it never need the store. The disk budget may cut it short.
    #[arg(long = "local.retention", env = "WEFT_LOCAL_RETENTION", default_value = "24h", value_parser = parse_duration)]
    local_retention: Duration,
    /// Size of each preallocated spill file, in bytes.
    #[arg(long = "spill.file-size", env = "WEFT_SPILL_FILE_SIZE", default_value_t = 64 << 20)]
    spill_file_size: u64,
    /// Retention and compaction.
    #[command(flatten)]
    compactor: weft::compact::cli::ServeCompactorFlags,
    /// The ring (several nodes sharing the work, membership in etcd).
    #[command(flatten)]
    ring: RingArgs,
    /// The Cortex ingester gRPC service.
    #[command(flatten)]
    grpc: GrpcArgs,
}

/// The `--grpc.*` flags: the `cortex.Ingester` gRPC service, off unless `--grpc.listen`.
#[derive(Debug, Clone, Args)]
struct GrpcArgs {
    /// Address of the `cortex.Ingester` gRPC listener (Push, QueryStream, LabelNames,
    /// LabelValues, MetricsForLabelMatchers), e.g. `0.0.0.0:9095`. Off when unset.
    #[arg(long = "grpc.listen", env = "WEFT_GRPC_LISTEN")]
    grpc_listen: Option<String>,
    /// Calls served at once on one gRPC connection (HTTP/2 streams).
    #[arg(
        long = "grpc.max-concurrent-streams",
        env = "WEFT_GRPC_MAX_CONCURRENT_STREAMS",
        default_value_t = 100
    )]
    max_concurrent_streams: u32,
    /// Open gRPC connections; one more is closed at once.
    #[arg(
        long = "grpc.max-connections",
        env = "WEFT_GRPC_MAX_CONNECTIONS",
        default_value_t = 256
    )]
    max_connections: usize,
    /// Largest gRPC message weft sends (a batch of QueryStream series, a label list).
    #[arg(long = "grpc.max-send-msg-size", env = "WEFT_GRPC_MAX_SEND_MSG_SIZE", default_value_t = 64 << 20)]
    max_send_msg_size: usize,
}

/// The `--ring.*` flags. Without `--ring.etcd-endpoints` a node works alone.
#[derive(Debug, Clone, Args)]
struct RingArgs {
    /// etcd endpoints (comma-separated URLs, e.g. `http://etcd-0:2379,http://etcd-1:2379`).
    /// Setting it turns ring mode on.
    #[arg(
        long = "ring.etcd-endpoints",
        env = "WEFT_RING_ETCD_ENDPOINTS",
        value_delimiter = ','
    )]
    etcd_endpoints: Vec<String>,
    /// PEM CA bundle that signed etcd's certificate (TLS; default: the system's roots).
    /// Setting any `--ring.etcd-tls-*` flag turns TLS on; endpoints must then be `https://`.
    #[arg(long = "ring.etcd-tls-ca-path", env = "WEFT_RING_ETCD_TLS_CA_PATH")]
    etcd_tls_ca_path: Option<std::path::PathBuf>,
    /// PEM client certificate for an etcd that asks for one (`--client-cert-auth`).
    #[arg(long = "ring.etcd-tls-cert-path", env = "WEFT_RING_ETCD_TLS_CERT_PATH")]
    etcd_tls_cert_path: Option<std::path::PathBuf>,
    /// PEM private key of `--ring.etcd-tls-cert-path`.
    #[arg(long = "ring.etcd-tls-key-path", env = "WEFT_RING_ETCD_TLS_KEY_PATH")]
    etcd_tls_key_path: Option<std::path::PathBuf>,
    /// Name etcd's certificate must carry (default: the endpoint's host).
    #[arg(
        long = "ring.etcd-tls-server-name",
        env = "WEFT_RING_ETCD_TLS_SERVER_NAME"
    )]
    etcd_tls_server_name: Option<String>,
    /// etcd user, for an etcd with authentication enabled (with `--ring.etcd-password`).
    #[arg(long = "ring.etcd-username", env = "WEFT_RING_ETCD_USERNAME")]
    etcd_username: Option<String>,
    /// Password of `--ring.etcd-username`; prefer the environment variable, which `ps` does
    /// not show.
    #[arg(
        long = "ring.etcd-password",
        env = "WEFT_RING_ETCD_PASSWORD",
        hide_env_values = true
    )]
    etcd_password: Option<String>,
    /// Key prefix of the ring in etcd; entries live under `<prefix>ring/`.
    #[arg(
        long = "ring.prefix",
        env = "WEFT_RING_PREFIX",
        default_value = "weft/"
    )]
    prefix: String,
    /// This node's id in the ring. Default: the host name. Also the default `--ingester.id`.
    #[arg(long = "ring.instance-id", env = "WEFT_RING_INSTANCE_ID")]
    instance_id: Option<String>,
    /// `host:port` at which peers reach this node's HTTP listener. Default: the address
    /// bound (with the host name in place of an unspecified address).
    #[arg(long = "ring.instance-addr", env = "WEFT_RING_INSTANCE_ADDR")]
    instance_addr: Option<String>,
    /// This node's zone; replicas of a series go to distinct zones where zones are set.
    #[arg(long = "ring.zone", env = "WEFT_RING_ZONE", default_value = "")]
    zone: String,
    /// TTL of this node's etcd lease: a node that stops renewing it leaves the ring after this.
    #[arg(long = "ring.heartbeat-timeout", env = "WEFT_RING_HEARTBEAT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    heartbeat_timeout: Duration,
    /// Replicas of each series; a push is acknowledged once a majority made it durable.
    #[arg(long = "ring.replication-factor", env = "WEFT_RING_REPLICATION_FACTOR", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=15))]
    replication_factor: u64,
    /// Tokens this node takes in the ring (kept in `<data-dir>/ring-tokens.json`).
    #[arg(long = "ring.num-tokens", env = "WEFT_RING_NUM_TOKENS", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    num_tokens: u64,
    /// Time a request to a peer may take (a forwarded push; a read, within --query.timeout).
    #[arg(long = "ring.forward-timeout", env = "WEFT_RING_FORWARD_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    forward_timeout: Duration,
    /// Forwarded pushes in flight to one peer; more fail at once (that replica counts as failed).
    #[arg(
        long = "ring.forward-max-inflight",
        env = "WEFT_RING_FORWARD_MAX_INFLIGHT",
        default_value_t = 64
    )]
    forward_max_inflight: usize,
    /// Body bytes of forwarded pushes in flight to one peer; more fail at once.
    #[arg(long = "ring.forward-max-inflight-bytes", env = "WEFT_RING_FORWARD_MAX_INFLIGHT_BYTES", default_value_t = 64 << 20)]
    forward_max_inflight_bytes: u64,
}

fn main() -> ExitCode {
    let args = match with_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("weft: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Chunk(cmd)) => chunk(cmd),
        Some(Command::Compact(args)) => weft::compact::cli::run_compact(args),
        Some(Command::Inspect(InspectCommand::Object { file })) => {
            let text = std::fs::read(&file)
                .map_err(|e| format!("reading {}: {e}", file.display()))
                .and_then(|b| weft::store::object::inspect(&b).map_err(|e| e.to_string()));
            match text {
                Ok(text) => {
                    write_stdout(&text);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("weft inspect object: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Inspect(InspectCommand::Spill { dir })) => match weft::spill::inspect(&dir) {
            Ok(text) => {
                write_stdout(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weft inspect spill: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Inspect(InspectCommand::Wal { dir })) => match weft::wal::inspect(&dir) {
            Ok(text) => {
                write_stdout(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weft inspect wal: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Inserts the settings of `--config.file` (or `$WEFT_CONFIG_FILE`) as flags before the
/// command line's own, so that the command line wins (`args_override_self`). Only `serve`
/// (given or implied) reads a config file.
fn with_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut path: Option<PathBuf> = std::env::var_os("WEFT_CONFIG_FILE").map(PathBuf::from);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config.file" {
            path = it.next().map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--config.file=") {
            path = Some(PathBuf::from(p));
        }
    }
    let Some(path) = path else { return Ok(args) };
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let at = match first.as_deref() {
        Some("serve") => 2,
        Some("chunk" | "inspect" | "help" | "compact") => return Ok(args),
        _ => 1,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading config file {}: {e}", path.display()))?;
    let mut flags = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{}:{}: want `name = value`", path.display(), i + 1))?;
        let name = name.trim().trim_start_matches("--");
        let value = value.trim().trim_matches('"');
        if name.is_empty() || name == "config.file" {
            return Err(format!(
                "{}:{}: bad setting name {name:?}",
                path.display(),
                i + 1
            ));
        }
        flags.push(OsString::from(format!("--{name}")));
        flags.push(OsString::from(value));
    }
    let mut out = args;
    out.splice(at..at, flags);
    Ok(out)
}

/// `90s`, `30m`, `2h`, `1d`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        "ms" => return Ok(Duration::from_millis(n)),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

fn chunk(cmd: ChunkCommand) -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("weft chunk: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let out = match cmd {
        ChunkCommand::Decode { bits } => weft::tools::chunk_decode_text(&input, bits)
            .map(String::into_bytes)
            .map_err(|e| e.to_string()),
        ChunkCommand::Encode => match std::str::from_utf8(&input) {
            Ok(text) => weft::tools::chunk_encode_text(text),
            Err(e) => Err(format!("stdin is not UTF-8: {e}")),
        },
    };
    match out {
        Ok(bytes) => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
                eprintln!("weft chunk: writing stdout: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft chunk: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    limit_malloc_arenas();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("weft stopped: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let limits = api_limits(&args);
    let mut cfg = node_config(&args);
    if let Some(path) = &args.overrides_file {
        // A bad file at start is an error, as in Mimir: there is no last good one to keep.
        let overrides = Arc::new(Overrides::load(path)?);
        tracing::info!(file = %path.display(), tenants = overrides.tenants().len(), "overrides loaded");
        tokio::spawn(
            overrides
                .clone()
                .run_reloader(args.overrides_reload_period, metrics.clone()),
        );
        cfg.head.overrides = overrides;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::new(metrics.clone(), limits, stop_tx.clone());

    let listener = api::server::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(data_dir = %cfg.data_dir.display(), store = %cfg.store_url, "starting");
    // Tests and scripts read the address from this line; keep it last on the line.
    tracing::info!("weft listening on http://{addr}");
    // Serve at once, so /ready can say "not ready" during replay; writes get 503 until the
    // node is set.
    let server = tokio::spawn(api::server::serve(
        listener,
        api::router(state.clone()),
        ServerConfig {
            max_connections: api::server::fit_fd_limit(args.server_max_connections),
            header_read_timeout: args.server_http_read_header_timeout,
            idle_timeout: args.server_http_idle_timeout,
            write_timeout: args.server_http_write_timeout,
        },
        metrics.server.clone(),
        stop_rx.clone(),
    ));
    let grpc = match &args.grpc.grpc_listen {
        None => None,
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("binding the gRPC listener {at}: {e}"))?;
            let grpc_addr = listener.local_addr()?;
            let svc = api::grpc::IngesterService::new(
                api::router(state.clone()),
                metrics.clone(),
                api::grpc::GrpcConfig {
                    // A Push is the uncompressed WriteRequest: the decompressed-body limit.
                    max_recv_message_bytes: args.max_decompressed_bytes,
                    max_send_message_bytes: args.grpc.max_send_msg_size,
                    max_concurrent_streams: args.grpc.max_concurrent_streams,
                    max_connections: args.grpc.max_connections,
                    timeout: args.query_timeout.max(Duration::from_secs(60)),
                    ingester_id: cfg.flush.ingester_id.clone(),
                },
            );
            tracing::info!("weft gRPC (cortex.Ingester) listening on {grpc_addr}");
            Some(tokio::spawn(api::grpc::serve(
                listener,
                svc,
                stop_rx.clone(),
            )))
        }
    };
    let ring_mode = !args.ring.etcd_endpoints.is_empty();
    // In ring mode a signal first leaves the ring (LEAVING, flush, deregister), then stops.
    let (signal_tx, signal_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        if ring_mode {
            signal_tx.send_replace(true);
        } else {
            stop_tx.send_replace(true);
        }
    });

    let shutdown_flush_timeout = cfg.shutdown_flush_timeout;
    let data_dir = cfg.data_dir.clone();
    let node = Arc::new(Node::boot(cfg, metrics.clone()).await?);
    let mut ring_tasks = Vec::new();
    let mut signalled = signal_rx.clone();
    let joined = if ring_mode {
        // etcd may be away at start: joining waits for it, and a signal ends the wait.
        tokio::select! {
            r = weft::ring::Cluster::start(ring_config(&args, addr, &data_dir), metrics) => {
                Some(r.map_err(|e| anyhow::anyhow!("joining the ring: {e}"))?)
            }
            _ = signalled.wait_for(|s| *s) => {
                tracing::info!("stopping before the node joined the ring");
                state.stop();
                None
            }
        }
    } else {
        None
    };
    if let Some(cluster) = joined {
        if state.set_ring(cluster.clone()).is_err() {
            anyhow::bail!("the ring was set twice");
        }
        if state.set_node(node.clone()).is_err() {
            anyhow::bail!("the node was set twice");
        }
        cluster
            .activate()
            .await
            .map_err(|e| anyhow::anyhow!("turning ACTIVE in the ring: {e}"))?;
        ring_tasks.push(cluster.spawn_background(node.clone()));
        let (node, state) = (node.clone(), state.clone());
        let mut signalled = signal_rx.clone();
        ring_tasks.push(tokio::spawn(async move {
            if signalled.wait_for(|s| *s).await.is_ok() {
                cluster.leave(&node, shutdown_flush_timeout).await;
                state.stop();
            }
        }));
    } else if !ring_mode && state.set_node(node.clone()).is_err() {
        anyhow::bail!("the node was set twice");
    }

    // Per-tenant retention from the overrides file (read at each run, so a reload applies);
    // a tenant without one keeps --store.retention.
    let overrides = node.head().overrides().clone();
    let retention: weft::compact::RetentionFn =
        std::sync::Arc::new(move |t| overrides.tenant(t).retention);
    let compactor = args.compactor.spawn_with_retention(&node, Some(retention));
    let mut sched_stop = stop_rx.clone();
    let schedule = {
        let node = node.clone();
        tokio::spawn(async move {
            node.run_checkpoints(async move {
                let _ = sched_stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    server.await??;
    if let Some(g) = grpc {
        // The stop signal ends it too; give its calls a moment to end.
        match tokio::time::timeout(Duration::from_secs(5), g).await {
            Ok(Ok(Err(e))) => tracing::warn!("{e:#}"),
            Err(_) => tracing::warn!("gRPC calls still running at stop"),
            _ => {}
        }
    }
    for t in ring_tasks {
        t.abort();
    }
    let _ = schedule.await;
    compactor.abort();
    node.close().await;
    tracing::info!("weft stopped");
    Ok(())
}

/// The ring's configuration from the flags; `bound` is the address the listener got.
fn ring_config(
    args: &ServeArgs,
    bound: std::net::SocketAddr,
    data_dir: &std::path::Path,
) -> weft::ring::ClusterConfig {
    let r = &args.ring;
    let instance_id = r.instance_id.clone().unwrap_or_else(|| {
        let h = host_name();
        if h.is_empty() {
            "weft".to_owned()
        } else {
            h
        }
    });
    let instance_addr = r.instance_addr.clone().unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            let h = host_name();
            let host = if h.is_empty() {
                "localhost".to_owned()
            } else {
                h
            };
            format!("{host}:{}", bound.port())
        } else {
            bound.to_string()
        }
    });
    weft::ring::ClusterConfig {
        membership: weft::ring::membership::MembershipConfig {
            endpoints: r.etcd_endpoints.clone(),
            prefix: r.prefix.clone(),
            instance_id,
            instance_addr,
            zone: r.zone.clone(),
            heartbeat_timeout: r.heartbeat_timeout,
            num_tokens: r.num_tokens as usize,
            tokens_file: data_dir.join("ring-tokens.json"),
            security: weft::ring::membership::EtcdSecurity {
                ca_path: r.etcd_tls_ca_path.clone(),
                cert_path: r.etcd_tls_cert_path.clone(),
                key_path: r.etcd_tls_key_path.clone(),
                server_name: r.etcd_tls_server_name.clone(),
                username: r.etcd_username.clone(),
                password: r.etcd_password.clone(),
            },
        },
        replication_factor: r.replication_factor as usize,
        forward: weft::ring::forward::ForwardLimits {
            timeout: r.forward_timeout,
            max_inflight: r.forward_max_inflight.max(1),
            max_inflight_bytes: r.forward_max_inflight_bytes.max(1024),
        },
    }
}

/// The HTTP layer's bounds, from the flags.
fn api_limits(args: &ServeArgs) -> ApiLimits {
    ApiLimits {
        max_request_bytes: args.max_request_bytes,
        max_decompressed_bytes: args.max_decompressed_bytes,
        max_inflight_writes: args.max_inflight_requests,
        max_concurrent_reads: args.max_concurrent_reads,
        max_read_samples: args.max_read_samples,
        max_read_bytes: args.max_read_bytes,
        max_read_series: args.max_read_series,
        max_inflight_push_bytes: args.max_inflight_push_bytes,
        body_read_timeout: args.server_http_body_read_timeout,
        body_min_rate_bytes: args.server_http_body_min_rate,
        ..ApiLimits::default()
    }
}

/// The boot config, from the flags: defaults that depend on other flags (store URL, WAL
/// dir, ingester id, memory limit) are resolved here; budget clamps are `Node::boot`'s.
fn node_config(args: &ServeArgs) -> NodeConfig {
    let store_url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("file://{}/store", args.data_dir.display()));
    NodeConfig {
        data_dir: args.data_dir.clone(),
        store_url,
        store: StoreOptions {
            timeout: args.store_timeout,
            request_timeout: args.store_timeout,
            read_first_byte_timeout: args.store_read_first_byte_timeout,
            ..StoreOptions::default()
        },
        circuit: CircuitConfig {
            failure_threshold: args.store_circuit_failures,
            probe_interval: args.store_circuit_probe_interval,
        },
        catalog: CatalogConfig {
            cache_bytes: args.cache_bytes,
            degraded_timeout: args.store_degraded_timeout,
        },
        wal_dir: args
            .wal_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("wal")),
        wal: WalConfig {
            segment_size_bytes: args.wal_segment_size,
            sync: match args.wal_sync {
                SyncArg::Always => SyncMode::Always,
                SyncArg::Never => SyncMode::Never,
            },
            on_corruption: match args.wal_on_corruption {
                OnCorruptionArg::Repair => OnCorruption::Repair,
                OnCorruptionArg::Stop => OnCorruption::Stop,
            },
        },
        checkpoint: CheckpointPolicy {
            interval: args.wal_checkpoint_interval,
            max_wal_growth_bytes: args.wal_checkpoint_bytes,
            // Often enough that a short interval or a small size threshold is honoured closely.
            poll: (args.wal_checkpoint_interval / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(10)),
            retry_backoff: Duration::from_secs(10),
        },
        head: HeadConfig {
            label_limits: LabelLimits {
                max_label_names_per_series: args.max_label_names_per_series,
                max_label_name_length: args.max_label_name_length,
                max_label_value_length: args.max_label_value_length,
                name_validation: args.name_validation_scheme,
            },
            max_series_per_tenant: args.max_series_per_tenant,
            max_tenants: args.max_tenants,
            creation_grace_period: args.creation_grace_period,
            overrides: Arc::new(Overrides::none()),
            series_idle_timeout: args.head_series_idle_timeout,
            out_of_order_window: args.ingest_out_of_order_window,
            exmeta: weft::exmeta::ExMetaConfig {
                max_exemplars_per_tenant: args.max_exemplars_per_tenant,
                max_metadata_per_tenant: args.max_metadata_per_tenant,
            },
        },
        memory_limit_bytes: memory_limit(args.memory_bytes),
        disk_budget_bytes: args.disk_bytes,
        spill_file_bytes: args.spill_file_size,
        local_retention: args.local_retention,
        flush: FlushConfig {
            period: args.flush_period,
            max_chunk_age: args.flush_max_chunk_age,
            max_chunk_idle: args.flush_max_chunk_idle,
            retain_period: args.flush_retain_period,
            concurrency: args.flush_concurrency,
            max_object_bytes: args.flush_max_object_bytes,
            // In ring mode the nodes share a bucket: each needs its own name in object keys.
            ingester_id: args.ingester_id.clone().unwrap_or_else(|| {
                match (&args.ring.instance_id, args.ring.etcd_endpoints.is_empty()) {
                    (Some(id), false) => sanitize_id(id),
                    _ => default_ingester_id(),
                }
            }),
            ..FlushConfig::default()
        },
        query_timeout: args.query_timeout,
        shutdown_flush_timeout: args.shutdown_flush_timeout,
    }
}

/// The memory limit: the flag's, else the default from the cgroup. Logs which, and warns
/// when the flag leaves no room for the fixed overhead inside the container.
fn memory_limit(flag: Option<u64>) -> u64 {
    let (default, source) = weft::pressure::read_default_memory_limit();
    let overhead_bytes = weft::pressure::FIXED_OVERHEAD_BYTES;
    let cgroup_bytes = match source {
        LimitSource::CgroupV2 { cgroup_bytes } | LimitSource::CgroupV1 { cgroup_bytes } => {
            Some(cgroup_bytes)
        }
        LimitSource::Flag | LimitSource::Fixed => None,
    };
    if let Some(limit_bytes) = flag {
        tracing::info!(limit_bytes, "memory limit from --limits.memory-bytes");
        if let Some(cgroup_bytes) = cgroup_bytes {
            if limit_bytes.saturating_add(overhead_bytes) > cgroup_bytes {
                tracing::warn!(
                    limit_bytes,
                    cgroup_bytes,
                    overhead_bytes,
                    "--limits.memory-bytes plus the fixed overhead is more than the container's \
                     memory: the kernel may kill weft before the limit refuses work"
                );
            }
        }
        return limit_bytes;
    }
    match cgroup_bytes {
        Some(cgroup_bytes) => tracing::info!(
            limit_bytes = default,
            cgroup_bytes,
            overhead_bytes,
            "memory limit: 3/4 of the cgroup's memory limit, less the fixed overhead"
        ),
        None => tracing::info!(
            limit_bytes = default,
            "memory limit: no cgroup memory limit found, so the default"
        ),
    }
    default
}

/// glibc gives each thread that allocates its own arena (up to 8 a core), and memory
/// freed in one arena is not reused by another: with blocking threads that come and go,
/// RSS grows far past what is in use. Two arenas keep it close to the accounted memory
/// (`--limits.memory-bytes` bounds the process) at no measurable cost on two cores.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called before any other thread
    // exists, so nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The host name, reduced to the characters an object key allows; `weft` if there is none.
fn default_ingester_id() -> String {
    sanitize_id(&host_name())
}

/// The host name (`HOSTNAME`, else `/etc/hostname`), possibly empty.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `id` reduced to the characters an object key allows; `weft` if nothing is left.
fn sanitize_id(id: &str) -> String {
    let id: String = id
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() || id == "." || id == ".." {
        "weft".to_owned()
    } else {
        id
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Writes a tool's output; a reader that went away (`weft inspect ... | head`) ends it
/// quietly rather than with a panic.
fn write_stdout(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
