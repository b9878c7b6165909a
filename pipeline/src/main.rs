//! The `pipeline` binary: parse the command line and the layered configuration, start
//! logging, run the job until SIGINT/SIGTERM, exit non-zero if it failed.
//!
//! ```text
//! pipeline [-c pipeline.toml] [-w WORKERS] [-n PROCESSES -p INDEX -h HOSTFILE]
//!          [--http ADDR] [--grpc ADDR] [--metrics ADDR] [--topic-prefix PREFIX] [--no-server]
//! ```
//!
//! `-w -n -p -h` are timely's own options (threads per process, processes, this
//! process's index, hostfile); they are handed to timely unchanged. `-h` is the
//! hostfile, as in timely, so help is `--help` only. See `pipeline/README.md`.
//!
//! The scaffold (config loader, logging, signals, the API's TLS and keys) is
//! `servicekit`'s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser};
use pipeline::config::{CONFIG_FILE_ENV, SERVICE_NAME};
use pipeline::{PipelineConfig, Shutdown};

/// Inventory Service: the timely/differential dataflow job.
#[derive(Parser, Debug)]
#[command(name = "pipeline", version, disable_help_flag = true)]
struct Args {
    /// TOML configuration file (layered over the defaults, under `PIPELINE__*` env).
    #[arg(short = 'c', long = "config", env = CONFIG_FILE_ENV)]
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
    /// This process's own `/metrics` and `/healthz` address (default: process 0 on
    /// `--http`, process i on the `--http` port + i).
    #[arg(long)]
    metrics: Option<SocketAddr>,
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
    if let Some(a) = args.metrics {
        config.server.metrics = Some(a);
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

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(config) => config,
        Err(e) => return fail(2, &e),
    };
    if let Err(e) = servicekit::telemetry::init(&config.telemetry, SERVICE_NAME) {
        return fail(2, &e);
    }
    tracing::info!(
        workers = config.timely.workers,
        processes = config.timely.processes,
        process = config.timely.process,
        epoch_ms = config.clock.epoch_ms,
        prefix = %config.topics.prefix,
        "starting the Inventory Service"
    );
    let shutdown = Shutdown::new();
    let on_signal = shutdown.clone();
    if let Err(e) = servicekit::shutdown::on_signal(move || on_signal.trigger()) {
        tracing::warn!("no signal handling: {e}");
    }
    match pipeline::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_config() => fail(2, &e),
        Err(e) => fail(1, &e),
    }
}

/// Logs (and prints, in case logging is not up yet) `error` with its causes, and exits
/// with `code`.
fn fail(code: u8, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    let text = eventbus::error::chain(error);
    tracing::error!("pipeline failed: {text}");
    eprintln!("pipeline: {text}");
    ExitCode::from(code)
}
