//! `ingress`: the Order Service binary. Parses the command line, loads the layered
//! configuration, starts logging, binds the two listeners and runs the service until
//! SIGINT or SIGTERM, then shuts down gracefully (see [`ingress::run`]). The scaffold
//! (config loader, logging, signals, TLS, API keys) is `servicekit`'s.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ingress::config::{CONFIG_FILE_ENV, Config, SERVICE_NAME};

/// The Order Service: REST and gRPC order API publishing order events to Kafka.
#[derive(Parser, Debug)]
#[command(name = "ingress", version, about)]
struct Cli {
    /// A TOML config file, layered over the defaults and under `INGRESS__*` variables.
    #[arg(long, env = CONFIG_FILE_ENV)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return fail(2, &error),
    };
    if cli.print_config {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    if let Err(error) = servicekit::telemetry::init(&config.telemetry, SERVICE_NAME) {
        return fail(2, &error);
    }
    let listeners = match ingress::Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(error) => return fail(1, &error),
    };
    match ingress::run(config, listeners, servicekit::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let text = eventbus::chain(&error);
            tracing::error!(
                fault = error.fault().as_str(),
                retriable = error.is_retriable(),
                "ingress stopped: {text}"
            );
            eprintln!("ingress: {text}");
            ExitCode::from(1)
        }
    }
}

/// Logs (and prints, in case logging is not up yet) `error` with its causes; exit 2 is
/// a configuration problem, 1 a failure while starting or running.
fn fail(code: u8, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    let text = eventbus::chain(error);
    tracing::error!("{text}");
    eprintln!("ingress: {text}");
    ExitCode::from(code)
}
