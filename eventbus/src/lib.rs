//! The infrastructure layer every service of the order pipeline stands on.
//!
//! Modules (one noun each):
//! - [`admin`]: the declarative topic list (`deploy/topics.toml`), applying it, cluster
//!   readiness and status: what `busctl` and `make up` use.

pub mod admin;
