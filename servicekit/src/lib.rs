//! `servicekit`: the scaffold the three services (ingress, payment, pipeline) share, so
//! that each `main` is a page long and each concern is written once.
//!
//! Why a crate: the services used to carry three copies of the same configuration loader,
//! logging set-up and signal handling, which had already drifted apart (one read `json =
//! true`, one `format = "json"`, one an environment variable; one honoured
//! `KAFKA_BOOTSTRAP` in its loader, one in a `Default` impl). Server TLS and API keys
//! would have been two more copies per service. Here they are one implementation with one
//! set of tests; a service only says *what* it serves.
//!
//! Modules, one noun each:
//! - [`config`]: the layered loader (defaults → TOML file → shared env → service env);
//! - [`telemetry`]: logging (`tracing`), text or JSON lines with the service name;
//! - [`shutdown`]: the SIGINT/SIGTERM future;
//! - [`tls`]: server TLS from PEM files, for axum ([`tls::HttpListener`]) and tonic;
//! - [`auth`]: bearer API keys stored as SHA-256 hashes, a tower layer for axum and a
//!   tonic interceptor;
//! - [`security`]: the `ApiSecurity` config section that turns both of the above on;
//! - [`error`]: the crate's one error type, nesting each part's.
//!
//! The crypto provider is rustls's `ring` everywhere (see the workspace `Cargo.toml`).

pub mod auth;
pub mod config;
pub mod error;
pub mod security;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use auth::{ApiKeyEntry, ApiKeys};
pub use config::ConfigError;
pub use error::Error;
pub use security::{ApiSecurity, Security};
pub use telemetry::{LogFormat, TelemetryConfig};
pub use tls::{HttpListener, ServerTls, TlsFiles};
