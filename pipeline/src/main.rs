//! The `pipeline` binary: parse the command line and the layered configuration, start
//! logging, run the job until SIGINT/SIGTERM, exit non-zero if it failed.
//!
//! ```text
//! pipeline [-c pipeline.toml] [-w WORKERS] [-n PROCESSES -p INDEX -h HOSTFILE]
//!          [--http ADDR] [--grpc ADDR] [--topic-prefix PREFIX] [--no-server]
//! ```
//!
//! `-w -n -p -h` are timely's own options (threads per process, processes, this
//! process's index, hostfile); they are handed to timely unchanged. `-h` is the
//! hostfile, as in timely, so help is `--help` only. See `pipeline/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser};
use pipeline::{PipelineConfig, Shutdown};

/// Inventory Service: the timely/differential dataflow job.
#[derive(Parser, Debug)]
#[command(name = "pipeline", version, disable_help_flag = true)]
struct Args {
    /// TOML configuration file (layered over the defaults, under `PIPELINE__*` env).
    #[arg(short = 'c', long = "config", env = "PIPELINE_CONFIG")]
    config: Option<PathBuf>,
    /// Worker threads in this process (timely `-w`).
    #[arg(short = 'w', long = "workers")]
    workers: Option<usize>,
    /// Processes in the job (timely `-n`).
    #[arg(short = 'n', long = "processes")]
    processes: Option<usize>,
    /// This process's index, 0-based (timely `-p`); process 0 runs the sink and the API.
    #[arg(short = 'p', long = "process")]
    process: Option<usize>,
    /// Hostfile: one `host:port` line per process (timely `-h`).
    #[arg(short = 'h', long = "hostfile")]
    hostfile: Option<PathBuf>,
    /// REST/SSE/metrics address (process 0).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// gRPC address (process 0).
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Prefix of every topic name (side-by-side deployments, tests).
    #[arg(long = "topic-prefix")]
    topic_prefix: Option<String>,
    /// The sink's `transactional.id` (one per job).
    #[arg(long = "transactional-id")]
    transactional_id: Option<String>,
    /// Epoch length in milliseconds.
    #[arg(long = "epoch-ms")]
    epoch_ms: Option<u64>,
    /// Do not serve the API, even on process 0.
    #[arg(long = "no-server")]
    no_server: bool,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    help: Option<bool>,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn config(args: &Args) -> Result<PipelineConfig, pipeline::PipelineError> {
    let mut config = PipelineConfig::load(args.config.as_deref())?;
    if let Some(w) = args.workers {
        config.timely.workers = w;
    }
    if let Some(n) = args.processes {
        config.timely.processes = n;
    }
    if let Some(p) = args.process {
        config.timely.process = p;
    }
    if let Some(h) = &args.hostfile {
        config.timely.hostfile = Some(h.clone());
    }
    if let Some(a) = args.http {
        config.server.http = a;
    }
    if let Some(a) = args.grpc {
        config.server.grpc = a;
    }
    if let Some(p) = &args.topic_prefix {
        config.topics.prefix = p.clone();
    }
    if let Some(t) = &args.transactional_id {
        config.sink.transactional_id = t.clone();
    }
    if let Some(e) = args.epoch_ms {
        config.clock.epoch_ms = e;
    }
    if args.no_server {
        config.server.enabled = false;
    }
    config.validate()?;
    Ok(config)
}

/// Triggers `shutdown` on SIGINT or SIGTERM.
fn watch_signals(shutdown: Shutdown) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{SignalKind, signal};
                    let Ok(mut term) = signal(SignalKind::terminate()) else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                #[cfg(not(unix))]
                {
                    let _ = tokio::signal::ctrl_c().await;
                }
                tracing::info!("shutdown requested");
                shutdown.trigger();
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("no signal handling: {e}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    let config = match config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        workers = config.timely.workers,
        processes = config.timely.processes,
        process = config.timely.process,
        epoch_ms = config.clock.epoch_ms,
        prefix = %config.topics.prefix,
        "starting the Inventory Service"
    );
    let shutdown = Shutdown::new();
    watch_signals(shutdown.clone());
    match pipeline::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("pipeline failed: {e}");
            eprintln!("pipeline: {e}");
            ExitCode::FAILURE
        }
    }
}
