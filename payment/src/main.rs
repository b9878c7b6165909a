//! `payment`: the Payment Service binary. Parses the configuration, starts logging,
//! binds the HTTP port and runs [`payment::run`] until SIGINT or SIGTERM.
//!
//! Exit codes: 0 after a graceful shutdown (the batch in progress committed), 1 when
//! the service stopped on an error (fenced by a newer instance, a fatal Kafka error, a
//! setup problem such as a missing topic or schema).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Payment Service: order.created → payment.completed | payment.failed, exactly once.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (layered over the defaults, under `PAYMENT__*` variables).
    #[arg(long, env = payment::config::CONFIG_FILE_ENV)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = payment::Config::load(args.config.as_deref()).context("loading configuration")?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.telemetry.filter));
    if config.telemetry.json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    tracing::info!(
        instance_id = %config.instance_id,
        group = %config.group_id(),
        bootstrap = %config.kafka.bootstrap,
        "payment service starting"
    );
    payment::run(config, listener, shutdown_signal())
        .await
        .context("payment service stopped")?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
