//! Layered configuration: defaults → an optional TOML file → environment variables.
//!
//! Why layers: the defaults run against the local platform with no file at all (`cargo
//! run -p ingress`), a deployment ships one file per environment, and a single value can
//! still be overridden for one pod or one test without touching the file. figment does
//! the merging; the structs here only say what exists and what the defaults are.
//!
//! | layer | how | example |
//! |---|---|---|
//! | defaults | `Default` impls below (`#[serde(default)]`, so a file may set any subset) | REST on 127.0.0.1:8080 |
//! | file | `--config PATH` or `INGRESS_CONFIG=PATH` (TOML) | `ingress.toml` |
//! | project env | `KAFKA_BOOTSTRAP`, `REGISTRY_URL` (what the Makefile and tests export) | |
//! | service env | `INGRESS__<SECTION>__<KEY>`, nested with `__` | `INGRESS__PUBLISH__DEADLINE=2s` |
//!
//! Later layers win. Unknown keys are errors (`deny_unknown_fields`), so a typo in a file
//! fails at start-up instead of silently keeping a default. Durations are integer
//! milliseconds or strings with a unit (`"250ms"`, `"5s"`, `"10m"`), the same format as
//! every eventbus setting. Secrets (the SASL password, the registry password) are
//! `secrecy::SecretString`s inside the eventbus configs, so `Debug` output and logs never
//! show them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use eventbus::config::duration_serde;
use eventbus::{KafkaConfig, ProducerConfig, RegistryConfig};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

/// The prefix of the service's environment variables (`INGRESS__REST__LISTEN`, ...).
pub const ENV_PREFIX: &str = "INGRESS__";
/// The environment variable naming a config file (same as `--config`).
pub const CONFIG_FILE_ENV: &str = "INGRESS_CONFIG";

/// librdkafka's `delivery.timeout.ms` for this service: the publish deadline (5 s), so
/// that a record the client was told to retry is not still being sent half a minute later
/// (eventbus's default is 30 s).
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 5_000;

/// Everything the Order Service can be configured with.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The REST API.
    pub rest: RestConfig,
    /// The gRPC API.
    pub grpc: GrpcConfig,
    /// The pipeline's ViewService (order status reads).
    pub views: ViewsConfig,
    /// The Kafka cluster (eventbus).
    pub kafka: KafkaConfig,
    /// The schema registry (eventbus).
    pub registry: RegistryConfig,
    /// The producer's choices (eventbus); `delivery_timeout_ms` should not exceed
    /// [`PublishConfig::deadline`] by much, see there.
    pub producer: ProducerConfig,
    /// The topics the service writes (and reads back for idempotency).
    pub topics: TopicsConfig,
    /// Publishing deadlines.
    pub publish: PublishConfig,
    /// Idempotency keys.
    pub idempotency: IdempotencyConfig,
    /// The readiness probe.
    pub readiness: ReadinessConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

/// An error loading the configuration.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// The defaults and the environment only (no file): what tests start from.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::figment(None)
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }

    /// Loads defaults, then `file` (if any, else the file named by `INGRESS_CONFIG`),
    /// then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env_file = std::env::var_os(CONFIG_FILE_ENV).map(std::path::PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        Config::figment(file.as_deref())
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }

    /// The figment with every layer, for callers that add their own (tests).
    pub fn figment(file: Option<&Path>) -> Figment {
        // The eventbus defaults that differ for this service, as the lowest layer.
        let mut figment = Figment::new()
            .merge(Serialized::default("kafka.client_id", "order-service"))
            .merge(Serialized::default("producer.source", "/order-service"))
            .merge(Serialized::default(
                "producer.delivery_timeout_ms",
                DEFAULT_DELIVERY_TIMEOUT_MS,
            ));
        if let Some(file) = file {
            // `file_exact`: a file that was asked for but is missing is an error, not an
            // empty layer.
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(
                Env::raw()
                    .only(&["KAFKA_BOOTSTRAP", "REGISTRY_URL"])
                    .map(|key| {
                        if key == "KAFKA_BOOTSTRAP" {
                            "kafka.bootstrap".into()
                        } else {
                            "registry.url".into()
                        }
                    }),
            )
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
    }
}

/// The REST API.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Address to listen on (when `main` binds; tests pass their own listener).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger is 413. An order of 100 lines
    /// with long SKUs is about 8 KiB, so 64 KiB leaves room without inviting abuse.
    pub body_limit_bytes: usize,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 64 * 1024,
        }
    }
}

/// The gRPC API.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on (when `main` binds).
    pub listen: SocketAddr,
    /// Largest request message accepted, in bytes; larger is OUT_OF_RANGE (tonic).
    pub max_message_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 64 * 1024,
        }
    }
}

/// The pipeline's ViewService, which answers order status reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewsConfig {
    /// gRPC endpoint URL.
    pub endpoint: String,
    /// Time limit of one call: a status read must fail fast (503) rather than hang
    /// while the pipeline is down.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Time limit of establishing the connection.
    #[serde(with = "duration_serde")]
    pub connect_timeout: Duration,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            endpoint: "http://127.0.0.1:50052".to_owned(),
            timeout: Duration::from_millis(1_000),
            connect_timeout: Duration::from_millis(500),
        }
    }
}

/// The topics the service writes. Overridable so that tests (and a shared cluster) can
/// use their own names; the registry subjects follow as `<topic>-value`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// order.created events.
    pub order_created: String,
    /// order.updated events.
    pub order_updated: String,
    /// stock.adjusted events.
    pub stock_adjusted: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        use schemas::Event as _;
        TopicsConfig {
            order_created: schemas::OrderCreated::TOPIC.to_owned(),
            order_updated: schemas::OrderUpdated::TOPIC.to_owned(),
            stock_adjusted: schemas::StockAdjusted::TOPIC.to_owned(),
        }
    }
}

impl TopicsConfig {
    /// The three topics, in a fixed order.
    pub fn all(&self) -> [&str; 3] {
        [
            &self.order_created,
            &self.order_updated,
            &self.stock_adjusted,
        ]
    }
}

/// How long a mutating request may wait for Kafka.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// Deadline of one publish (registry lookup, send, `acks=all`). Past it the client
    /// gets 503 / UNAVAILABLE and may retry with the same idempotency key. Keep
    /// `producer.delivery_timeout_ms` close to it, so that librdkafka also gives up on
    /// the record soon after the client was told to retry.
    #[serde(with = "duration_serde")]
    pub deadline: Duration,
    /// The `Retry-After` sent with a 503 (whole seconds, at least 1).
    #[serde(with = "duration_serde")]
    pub retry_after: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            deadline: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// Idempotency keys: how many answers are remembered, how long, and how far back the
/// topics are read to remember answers given before a restart or by another instance.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// Most keys remembered; the oldest are forgotten first.
    pub capacity: usize,
    /// How long a key is honoured by the cache. (Order ids derived from a key stay the
    /// same forever; see the crate docs.)
    #[serde(with = "duration_serde")]
    pub ttl: Duration,
    /// Read the topics back (from `now - lookback`, then follow them) to learn the keys
    /// answered by earlier runs and by other instances.
    pub replay: bool,
    /// How far back the start-up replay reads. Also bounded by `capacity`.
    #[serde(with = "duration_serde")]
    pub lookback: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            capacity: 100_000,
            ttl: Duration::from_secs(24 * 3600),
            replay: true,
            lookback: Duration::from_secs(24 * 3600),
        }
    }
}

/// The readiness probe (`/readyz`, gRPC health).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// How often Kafka and the registry are checked.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// Time limit of one check.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Graceful shutdown.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After the shutdown signal, how long in-flight requests may take to finish
    /// before the servers are dropped.
    #[serde(with = "duration_serde")]
    pub grace: Duration,
    /// How long the final producer flush may take.
    #[serde(with = "duration_serde")]
    pub flush_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(20),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// Log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            filter: "info,librdkafka=warn".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ingress.toml",
                r#"
                [rest]
                listen = "0.0.0.0:9000"
                [publish]
                deadline = "2s"
                [kafka]
                bootstrap = "from-file:9092"
                [kafka.sasl]
                username = "u"
                password = "hunter2"
                "#,
            )?;
            jail.set_env("INGRESS__PUBLISH__DEADLINE", "750ms");
            jail.set_env("INGRESS__IDEMPOTENCY__CAPACITY", "10");
            jail.set_env("KAFKA_BOOTSTRAP", "from-env:9092");
            let config =
                Config::load(Some(Path::new("ingress.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.rest.listen, "0.0.0.0:9000".parse().unwrap());
            assert_eq!(config.publish.deadline, Duration::from_millis(750));
            assert_eq!(config.idempotency.capacity, 10);
            assert_eq!(config.kafka.bootstrap, "from-env:9092");
            // Defaults survive where nothing was said.
            assert_eq!(config.grpc.listen, "127.0.0.1:50051".parse().unwrap());
            assert_eq!(config.views.endpoint, "http://127.0.0.1:50052");
            // The secret is there but never printed.
            assert!(!format!("{config:?}").contains("hunter2"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[rest]\nlisten_addr = \"0.0.0.0:1\"\n")?;
            let error = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(error.contains("listen_addr"), "{error}");
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ingress.example.toml");
            let example = Config::load(Some(&path)).map_err(|e| e.to_string())?;
            let defaults = Config::load(None).map_err(|e| e.to_string())?;
            // Debug output covers every field (secrets aside, none are set).
            assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
            Ok(())
        });
    }

    #[test]
    fn service_defaults_name_the_service() {
        figment::Jail::expect_with(|_jail| {
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.producer.source, "/order-service");
            assert_eq!(config.kafka.client_id, "order-service");
            assert_eq!(
                config.producer.delivery_timeout_ms,
                DEFAULT_DELIVERY_TIMEOUT_MS
            );
            // The rest of the eventbus defaults are kept.
            assert_eq!(
                config.producer.linger_ms,
                ProducerConfig::default().linger_ms
            );
            Ok(())
        });
    }
}
