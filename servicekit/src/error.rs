//! The one public error type of servicekit, [`Error`].
//!
//! Each part keeps the error type that carries its structure ([`ConfigError`] names the
//! key and where its value came from, [`TlsError`] the file, [`AuthError`] the entry in
//! the key list, [`TelemetryError`] the filter); [`Error`] nests them, each as its
//! `source()`, for the calls that can fail in more than one part (the security section:
//! TLS and keys). Every one of them is an operator's to fix, never an outage: in
//! eventbus's terms their fault is always `Fault::Setup` (servicekit does not depend on
//! eventbus; the services' own error types map them so).

use crate::auth::AuthError;
use crate::config::ConfigError;
use crate::telemetry::TelemetryError;
use crate::tls::TlsError;

/// Every error of servicekit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration could not be loaded or breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS files of the security section.
    #[error("security.tls: {0}")]
    Tls(#[from] TlsError),
    /// The API key list of the security section.
    #[error("security.{0}")]
    Keys(#[from] AuthError),
    /// Logging could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}
