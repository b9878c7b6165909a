//! `ingress`: the Order Service binary. Parses the command line, loads the layered
//! configuration, starts logging, binds the two listeners and runs the service until
//! SIGINT or SIGTERM, then shuts down gracefully (see [`ingress::run`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The Order Service: REST and gRPC order API publishing order events to Kafka.
#[derive(Parser, Debug)]
#[command(name = "ingress", version, about)]
struct Cli {
    /// A TOML config file, layered over the defaults and under `INGRESS__*` variables.
    #[arg(long, env = ingress::config::CONFIG_FILE_ENV)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match ingress::config::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ingress: {error}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    if let Err(error) = ingress::telemetry::init(&config.telemetry) {
        eprintln!("ingress: logging: {error}");
        return ExitCode::from(2);
    }
    let listeners = match ingress::Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    match ingress::run(config, listeners, ingress::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
