//! The `weft` binary: the server and its tools. See `docs/ARCHITECTURE.md`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use weft::api::{self, ApiLimits, AppState};
use weft::head::{Head, HeadConfig};
use weft::metrics::Metrics;
use weft::model::LabelLimits;

/// weft: a Prometheus remote-write ingester that keeps answering through store outages.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Prometheus XOR chunk tools.
    #[command(subcommand)]
    Chunk(ChunkCommand),
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
    /// Directory for the WAL, spilled chunks and (by default) the local store.
    #[arg(long = "data-dir", env = "WEFT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Object store URL: file://, memory://, s3://, gs://, az://. Default: file://<data-dir>/store.
    #[arg(long, env = "WEFT_STORE")]
    store: Option<String>,
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
    /// Most label names a series may have.
    #[arg(long = "limits.max-label-names-per-series", env = "WEFT_LIMITS_MAX_LABEL_NAMES_PER_SERIES", default_value_t = LabelLimits::default().max_label_names_per_series)]
    max_label_names_per_series: usize,
    /// Longest label name, in bytes.
    #[arg(long = "limits.max-label-name-length", env = "WEFT_LIMITS_MAX_LABEL_NAME_LENGTH", default_value_t = LabelLimits::default().max_label_name_length)]
    max_label_name_length: usize,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Chunk(cmd)) => chunk(cmd),
    }
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
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", args.data_dir.display()))?;
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| format!("file://{}/store", args.data_dir.display()));
    let metrics = Arc::new(Metrics::new());
    let head = Arc::new(Head::new(
        HeadConfig {
            label_limits: LabelLimits {
                max_label_names_per_series: args.max_label_names_per_series,
                max_label_name_length: args.max_label_name_length,
                max_label_value_length: args.max_label_value_length,
            },
            max_series_per_tenant: args.max_series_per_tenant,
        },
        metrics.clone(),
    ));
    let limits = ApiLimits {
        max_request_bytes: args.max_request_bytes,
        max_decompressed_bytes: args.max_decompressed_bytes,
        max_inflight_writes: args.max_inflight_requests,
        max_concurrent_reads: args.max_concurrent_reads,
        max_read_samples: args.max_read_samples,
        ..ApiLimits::default()
    };
    let state = AppState::new(head, metrics, limits);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(data_dir = %args.data_dir.display(), %store, "starting");
    // Tests and scripts read the address from this line; keep it last on the line.
    tracing::info!("weft listening on http://{addr}");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("weft stopped");
    Ok(())
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
