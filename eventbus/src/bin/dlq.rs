//! `dlq`: list, inspect and replay the records of a dead-letter topic.
//!
//! ```text
//! dlq list payment-service.dlq [--class handler-fatal] [--original-topic T] [--partition P --from A --to B]
//! dlq inspect payment-service.dlq --partition 0 --offset 12
//! dlq replay payment-service.dlq --partition 0 --offset 12      # one record
//! dlq replay payment-service.dlq --partition 0 --from 10 --to 20 # a range
//! dlq replay payment-service.dlq --all --class retries-exhausted [--dry-run]
//! ```
//!
//! `KAFKA_BOOTSTRAP` and `REGISTRY_URL` (or `--bootstrap`, `--registry`) say where the
//! cluster is. The logic lives in `eventbus::redrive`; this is the thin main.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = eventbus::redrive::Cli::parse();
    let mut out = std::io::stdout();
    match cli.run(&mut out).await.map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dlq: {e:#}");
            ExitCode::FAILURE
        }
    }
}
