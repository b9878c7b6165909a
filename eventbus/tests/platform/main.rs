//! Proves the local platform (deploy/local) is what it claims to be: a real 3-broker
//! Kafka cluster with durable settings, a registry that enforces compatibility, and
//! (the default, secure mode) TLS, SASL/SCRAM and least-privilege ACLs per service.
//! Needs `make up` (which `make test` runs first). Every test uses its own names.
//!
//! One test binary for both concerns: linking librdkafka is slow on 2 cores.

mod cluster;
mod security;

use eventbus::context::BusContext;
use eventbus::{BusMetrics, KafkaSettings};

/// The operator principal's settings (`.run/secrets/admin.conf` or `KAFKA_CLIENT_CONFIG`).
fn admin_settings() -> KafkaSettings {
    eventbus::testkit::kafka_settings().with_client_id("test-platform")
}

fn context() -> BusContext {
    BusContext::new("test-platform", None, BusMetrics::default())
}
