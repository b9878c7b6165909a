//! `payment`: the Payment Service binary. Parses the configuration, starts logging,
//! binds the HTTP port and runs [`payment::run`] until SIGINT or SIGTERM. The scaffold
//! (config loader, logging, signals) is `servicekit`'s.
//!
//! Exit codes: 0 after a graceful shutdown (the batch in progress committed), 1 when
//! the service stopped on an error (fenced by a newer instance, a fatal Kafka error, a
//! setup problem such as a missing topic or schema), 2 for a configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use payment::config::{CONFIG_FILE_ENV, SERVICE_NAME};

/// Payment Service: order.created → payment.completed | payment.failed, exactly once.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (layered over the defaults, under `PAYMENT__*` variables).
    #[arg(long, env = CONFIG_FILE_ENV)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match payment::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return fail(2, &eventbus::chain(&error)),
    };
    if let Err(error) = servicekit::telemetry::init(&config.telemetry, SERVICE_NAME) {
        return fail(2, &eventbus::chain(&error));
    }
    let listener = match tokio::net::TcpListener::bind(config.http.listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(1, &format!("binding {}: {error}", config.http.listen)),
    };
    tracing::info!(
        instance_id = %config.instance_id,
        group = %config.group_id(),
        // The client config file's bootstrap wins over the configured one.
        bootstrap = %config
            .kafka
            .resolved()
            .map(|k| k.bootstrap)
            .unwrap_or_else(|_| config.kafka.bootstrap.clone()),
        "payment service starting"
    );
    match payment::run(config, listener, servicekit::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let text = eventbus::chain(&error);
            tracing::error!(
                fault = error.fault().as_str(),
                retriable = error.is_retriable(),
                "payment service stopped: {text}"
            );
            eprintln!("payment: {text}");
            ExitCode::from(1)
        }
    }
}

/// Logs (and prints, in case logging is not up yet) `error`, and exits with `code`.
fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{error}");
    eprintln!("payment: {error}");
    ExitCode::from(code)
}
