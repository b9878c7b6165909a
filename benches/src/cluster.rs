//! How the benchmarks, the end-to-end test and the services they start reach the cluster.
//!
//! Everything here runs as one principal: the one of `KAFKA_CLIENT_CONFIG` when it is
//! set, else `admin`, whose librdkafka client config `make up` writes to
//! `.run/secrets/admin.conf` (beside it `admin.properties`, the same settings for Kafka's
//! Java tools). Without either (a plaintext cluster started by hand) the settings are the
//! environment's `KAFKA_BOOTSTRAP` and nothing else. The benchmarks create and delete
//! topics of their own and read every service's topics, which is what `admin` may do.

use std::path::PathBuf;

use eventbus::KafkaSettings;
use eventbus::config::CLIENT_CONFIG_ENV;

use crate::stack::workspace_root;

/// The folder `make up` writes to: `RUN_DIR`, or `<workspace>/.run`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("RUN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".run"))
}

/// The `admin` principal's librdkafka client config (`.run/secrets/admin.conf`).
pub fn admin_client_config() -> PathBuf {
    run_dir().join("secrets").join("admin.conf")
}

/// The client config file the benchmarks and the services they start use:
/// `KAFKA_CLIENT_CONFIG` when set, else the `admin` principal's when `make up` wrote it.
pub fn client_config_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os(CLIENT_CONFIG_ENV).filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(file));
    }
    let admin = admin_client_config();
    admin.is_file().then_some(admin)
}

/// The Kafka settings of the benchmarks: `KAFKA_BOOTSTRAP` and [`client_config_file`].
pub fn kafka_settings() -> KafkaSettings {
    let mut kafka = KafkaSettings::from_env().with_client_id("benches");
    kafka.client_config_file = client_config_file();
    kafka
}

/// The Java client properties (`--command-config` of Kafka's tools) with the same
/// security settings as `settings`' client config file: `<name>.properties` beside
/// `<name>.conf`, as `make up` writes them. `None` without a client config file or
/// without that sibling.
pub fn java_properties(settings: &KafkaSettings) -> Option<PathBuf> {
    let conf = settings.client_config_file.as_ref()?;
    let properties = conf.with_extension("properties");
    properties.is_file().then_some(properties)
}

/// Topics and partitions of the cluster, and how many of them belong to scratch stacks
/// (`stack-<id>-…`, [`crate::stack::Stack`]) that a killed test or benchmark left behind.
///
/// Why the benchmarks report it: every partition a broker leads or follows is visited by
/// every fetch of its sessions (the followers' replication sessions hold all of them), so
/// the brokers' CPU per request grows with the partition count. Measured on 3 December:
/// at 50 orders/s the three brokers used 1.40 cores with 331 partitions (264 of them
/// left by six killed stacks) and 0.98 cores with 67, while serving more requests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterShape {
    /// Topics visible to the principal.
    pub topics: usize,
    /// Their partitions.
    pub partitions: usize,
    /// Partitions of scratch stacks' topics (`eventbus::admin::SCRATCH_PREFIX`; the run's own stack is
    /// started later, so at the start these are all other runs').
    pub scratch_partitions: usize,
}

/// Reads [`ClusterShape`] from the cluster's metadata. Blocking: call from a blocking
/// context.
pub fn cluster_shape(settings: &KafkaSettings) -> Result<ClusterShape, eventbus::BusError> {
    use eventbus::admin::{Admin, Health, scratch_topics};
    let meta = Admin::new(settings)?.metadata(std::time::Duration::from_secs(10))?;
    let health = Health::from_metadata(&meta);
    Ok(ClusterShape {
        topics: health.topics,
        partitions: health.partitions,
        scratch_partitions: scratch_topics(&meta).iter().map(|(_, n)| n).sum(),
    })
}
