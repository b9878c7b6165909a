//! Logs: `tracing` to stdout, as text for people or JSON for collectors.
//!
//! The filter comes from the config (`telemetry.filter`) unless `RUST_LOG` is set, so an
//! operator can turn up one module without a new config file. librdkafka's own log lines
//! arrive through eventbus's client context under the target `librdkafka`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber. Returns an error if one is installed already.
pub fn init(config: &TelemetryConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.filter))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}
