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
//! | project env | `KAFKA_BOOTSTRAP`, `KAFKA_CLIENT_CONFIG`, `REGISTRY_URL` (what the Makefile and tests export) | |
//! | service env | `INGRESS__<SECTION>__<KEY>`, nested with `__` | `INGRESS__PUBLISH__DEADLINE=2s` |
//!
//! The loader is `servicekit::config`, shared by the three services. Later layers win.
//! Unknown keys are errors (`deny_unknown_fields`), so a typo in a file fails at
//! start-up instead of silently keeping a default; a bad value names its key and where
//! it came from. Durations are integer
//! milliseconds or strings with a unit (`"250ms"`, `"5s"`, `"10m"`), the same format as
//! every eventbus setting. Secrets (the SASL password, the registry password) are
//! `secrecy::SecretString`s inside the eventbus configs, so `Debug` output and logs never
//! show them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eventbus::config::duration_serde;
use eventbus::{KafkaSettings, ProducerConfig, RegistryConfig};
use figment::Figment;
use serde::{Deserialize, Serialize};
pub use servicekit::ConfigError;
use servicekit::auth::ClientKey;
pub use servicekit::telemetry::{LogFormat, TelemetryConfig};
use servicekit::{ApiSecurity, config::Loader};

/// The prefix of the service's environment variables (`INGRESS__REST__LISTEN`, ...).
pub const ENV_PREFIX: &str = "INGRESS__";
/// The environment variable naming a config file (same as `--config`).
pub const CONFIG_FILE_ENV: &str = "INGRESS_CONFIG";
/// The service's name in logs (`service` in JSON lines) and Kafka's `client.id`.
pub const SERVICE_NAME: &str = "order-service";

/// librdkafka's `delivery.timeout.ms` for this service: 30 s (eventbus's default), well
/// above a leader failover (the controller notices a dead broker after its 9 s session
/// timeout, then elects), and deliberately **not** the 5 s publish deadline.
///
/// When a record that may already be written times out, librdkafka's idempotent producer
/// must bump its epoch, and every other record still unacknowledged (on any partition)
/// is then sent again under the new epoch with new sequence numbers, which the broker
/// cannot recognise as retries: the record is written twice (librdkafka#4953). With the
/// earlier 5 s, every broker kill under load did that (`make chaos`: 32-59 `order.created`
/// written twice per run, same `ce_id`, a few offsets apart). With 30 s, records wait for
/// the new leader instead. The client still gets its 503 at the deadline; the record goes
/// on and its idempotency key stays claimed until librdkafka decides
/// ([`crate::commands`]), so a retry meets 409 and then the first answer.
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 30_000;

/// Everything the Order Service can be configured with.
///
/// The eventbus sections are not serializable (they hold secrets), so they are
/// `skip_serializing`: their defaults are serde's, plus the service's own in
/// [`Config::figment`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The REST API.
    pub rest: RestConfig,
    /// The gRPC API.
    pub grpc: GrpcConfig,
    /// The pipeline's ViewService (order status reads).
    pub views: ViewsConfig,
    /// TLS and API keys of both APIs (off by default; see the README).
    pub security: ApiSecurity,
    /// The Kafka cluster (eventbus).
    #[serde(skip_serializing)]
    pub kafka: KafkaSettings,
    /// The schema registry (eventbus).
    #[serde(skip_serializing)]
    pub registry: RegistryConfig,
    /// The producer's choices (eventbus); `delivery_timeout_ms` must stay above a leader
    /// failover, see [`DEFAULT_DELIVERY_TIMEOUT_MS`].
    #[serde(skip_serializing)]
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

impl Config {
    /// The defaults and the environment only (no file unless `INGRESS_CONFIG` names
    /// one): what tests start from.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::load(None)
    }

    /// Loads defaults, then `file` (if any, else the file named by `INGRESS_CONFIG`),
    /// then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        servicekit::config::extract(&Config::figment(file))
    }

    /// The figment with every layer, for callers that add their own (tests).
    pub fn figment(file: Option<&Path>) -> Figment {
        // The eventbus defaults that differ for this service, under every other layer.
        Loader::new(ENV_PREFIX)
            .file(file)
            .default_value("kafka.client_id", SERVICE_NAME)
            .default_value("producer.source", "/order-service")
            .default_value("producer.delivery_timeout_ms", DEFAULT_DELIVERY_TIMEOUT_MS)
            .figment::<Config>()
    }
}

/// The REST API.
#[derive(Clone, Debug, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Deserialize, Serialize)]
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
    /// The API key sent to the views API when it requires one (its
    /// `[server.security] api_keys`). A secret: best set as `INGRESS__VIEWS__API_KEY`
    /// from a Kubernetes Secret; never printed.
    #[serde(skip_serializing)]
    pub api_key: Option<ClientKey>,
    /// PEM file of the CA that signed the views API's TLS certificate (or that
    /// certificate itself); needed for an `https://` endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            endpoint: "http://127.0.0.1:50052".to_owned(),
            timeout: Duration::from_millis(1_000),
            connect_timeout: Duration::from_millis(500),
            api_key: None,
            ca_cert: None,
        }
    }
}

/// The topics the service writes. Overridable so that tests (and a shared cluster) can
/// use their own names; the registry subjects follow as `<topic>-value`.
#[derive(Clone, Debug, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// Deadline of one publish (registry lookup, send, `acks=all`). Past it the client
    /// gets 503 / UNAVAILABLE and may retry with the same idempotency key; the record is
    /// still sent until `producer.delivery_timeout_ms`, and its key stays claimed (409)
    /// until then (see [`DEFAULT_DELIVERY_TIMEOUT_MS`] for why the two differ).
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
#[derive(Clone, Debug, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Deserialize, Serialize)]
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

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file(
                "ingress.toml",
                r#"
                [rest]
                listen = "0.0.0.0:9000"
                [publish]
                deadline = "2s"
                [kafka]
                bootstrap = "from-file:9092"
                [kafka.security]
                protocol = "sasl_ssl"
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
            // A partial [kafka] section keeps the service's client id.
            assert_eq!(config.kafka.client_id, SERVICE_NAME);
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
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
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
    fn security_is_off_by_default_and_set_by_file_or_env() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.security, ApiSecurity::default());
            jail.create_file(
                "ingress.toml",
                r#"
                [security]
                tls = { cert = "/tls/tls.crt", key = "/tls/tls.key" }
                api_keys = [{ name = "dashboard", sha256 = "00" }]
                "#,
            )?;
            jail.set_env("INGRESS__SECURITY__TLS__CERT", "/override/tls.crt");
            let config =
                Config::load(Some(Path::new("ingress.toml"))).map_err(|e| e.to_string())?;
            let tls = config.security.tls.clone().unwrap();
            assert_eq!(tls.cert, Path::new("/override/tls.crt"));
            assert_eq!(tls.key, Path::new("/tls/tls.key"));
            assert_eq!(config.security.api_keys[0].name, "dashboard");
            // The hash is checked when the service starts (with the TLS files).
            let error = config.security.load().unwrap_err().to_string();
            assert!(error.contains("security.tls"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_views_key_comes_from_the_environment_and_never_prints() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.set_env("INGRESS__VIEWS__API_KEY", "views-secret-key");
            jail.set_env("INGRESS__VIEWS__CA_CERT", "/etc/ca.crt");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert!(config.views.api_key.is_some());
            assert_eq!(
                config.views.ca_cert.as_deref(),
                Some(Path::new("/etc/ca.crt"))
            );
            assert!(!format!("{config:?}").contains("views-secret-key"));
            // A missing CA file stops the client from being built, naming the key.
            let error = crate::views::ViewsClient::new(&config.views)
                .unwrap_err()
                .to_string();
            assert!(error.contains("views.ca_cert"), "{error}");
            jail.set_env("INGRESS__VIEWS__API_KEY", "two words");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("views.api_key"), "{error}");
            assert!(!error.contains("two words"), "{error}");
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
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
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
