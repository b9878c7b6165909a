//! Layered configuration: defaults → an optional TOML file → environment variables.
//!
//! The defaults run against the local platform with no file at all (`cargo run -p
//! payment`); a deployment ships one file per environment; a single value can still be
//! overridden for one pod or one test without touching the file. figment merges; the
//! structs here say what exists and what the defaults are.
//!
//! | layer | how | example |
//! |---|---|---|
//! | defaults | `Default` impls below (`#[serde(default)]`, a file may set any subset) | HTTP on 127.0.0.1:8085 |
//! | file | `--config PATH` or `PAYMENT_CONFIG=PATH` (TOML) | `payment.toml` |
//! | project env | `KAFKA_BOOTSTRAP`, `KAFKA_CLIENT_CONFIG`, `REGISTRY_URL` (what the Makefile and tests export) | |
//! | service env | `PAYMENT__<SECTION>__<KEY>`, nested with `__` | `PAYMENT__TRANSACTION__COMMIT_INTERVAL=50ms` |
//!
//! The loader is `servicekit::config`, shared by the three services. Later layers win. Unknown keys are errors (`deny_unknown_fields`), so a typo fails at
//! start-up instead of silently keeping a default. Durations are integer milliseconds or
//! strings with a unit (`"250ms"`, `"5s"`, `"1m"`), as everywhere in the project.
//!
//! # Names and identities
//!
//! [`TopicsConfig::prefix`] is put in front of *every* name the service owns: the four
//! topics, the consumer group and the transactional id (and so the registry subjects,
//! which follow the topics). One knob gives a test, or a second pipeline sharing a
//! cluster, a namespace of its own.
//!
//! [`Config::instance_id`] names *this replica* and must be stable across its restarts
//! and unique among live replicas (a StatefulSet ordinal, say). It becomes:
//! - the `transactional.id` `<prefix><group>-<instance>`: a restarted replica's
//!   `init_transactions` aborts whatever its crashed predecessor left open and fences it
//!   (its next transactional call fails), so two generations never both commit;
//! - the `group.instance.id` (static membership, [`ConsumerSettings::static_membership`]):
//!   a restarted replica takes its partitions back at once instead of waiting for a
//!   rebalance.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use eventbus::config::duration_serde;
use eventbus::{Jitter, KafkaSettings, RegistryConfig, RetryPolicy};
use figment::Figment;
use serde::{Deserialize, Serialize};
use servicekit::ConfigError;
use servicekit::config::Loader;
pub use servicekit::telemetry::{LogFormat, TelemetryConfig};

use crate::error::PaymentError;
use crate::gateway::SimulatedGatewayConfig;

/// The prefix of the service's environment variables (`PAYMENT__HTTP__LISTEN`, ...).
pub const ENV_PREFIX: &str = "PAYMENT__";
/// The environment variable naming a config file (same as `--config`).
pub const CONFIG_FILE_ENV: &str = "PAYMENT_CONFIG";
/// The service's name in logs (`service` in JSON lines) and Kafka's `client.id`.
pub const SERVICE_NAME: &str = "payment-service";

/// Everything the Payment Service can be configured with.
///
/// The eventbus sections and the gateway are `skip_serializing` (they hold secrets or are
/// not serializable): their defaults are serde's, plus the service's own in
/// [`Config::figment`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This replica's stable id (see the module docs); `0` for a single instance.
    pub instance_id: String,
    /// CloudEvents `ce_source` of the outcome events.
    pub source: String,
    /// Health, readiness and metrics.
    pub http: HttpConfig,
    /// The Kafka cluster (eventbus).
    #[serde(skip_serializing)]
    pub kafka: KafkaSettings,
    /// The schema registry (eventbus).
    #[serde(skip_serializing)]
    pub registry: RegistryConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// The input consumer.
    pub consumer: ConsumerSettings,
    /// Batches and transactions.
    pub transaction: TransactionConfig,
    /// Settling one order: concurrency and retries.
    pub settle: SettleConfig,
    /// The simulated payment gateway (used unless a program passes its own gateway).
    #[serde(skip_serializing)]
    pub gateway: SimulatedGatewayConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance_id: "0".to_owned(),
            source: "/payment-service".to_owned(),
            http: HttpConfig::default(),
            kafka: KafkaSettings {
                client_id: SERVICE_NAME.to_owned(),
                ..KafkaSettings::default()
            },
            registry: RegistryConfig::default(),
            topics: TopicsConfig::default(),
            consumer: ConsumerSettings::default(),
            transaction: TransactionConfig::default(),
            settle: SettleConfig::default(),
            gateway: SimulatedGatewayConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Config {
    /// The defaults and the environment only (no file unless `PAYMENT_CONFIG` names one).
    pub fn from_env() -> Result<Config, PaymentError> {
        Self::extract(Config::figment(None))
    }

    /// Loads defaults, then `file` (if any, else the file named by `PAYMENT_CONFIG`),
    /// then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, PaymentError> {
        Self::extract(Config::figment(file))
    }

    /// Extracts and validates a configuration from `figment`.
    pub fn extract(figment: Figment) -> Result<Config, PaymentError> {
        let config: Config = servicekit::config::extract(&figment)?;
        config.validate()?;
        Ok(config)
    }

    /// The figment with every layer, for callers that add their own (tests).
    pub fn figment(file: Option<&Path>) -> Figment {
        // The eventbus default client id is `eventbus`; broker logs and quotas should
        // name this service, also when a file sets only part of `[kafka]`.
        Loader::new(ENV_PREFIX)
            .file(file)
            .default_value("kafka.client_id", SERVICE_NAME)
            .figment::<Config>()
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), PaymentError> {
        let bad = |key: &str, rule: &str| Err(ConfigError::rule(key, rule).into());
        if self.instance_id.trim().is_empty() {
            return bad("instance_id", "must not be empty");
        }
        if self.transaction.max_batch == 0 {
            return bad("transaction.max_batch", "must be at least 1");
        }
        if self.transaction.commit_interval.is_zero() {
            return bad("transaction.commit_interval", "must be positive");
        }
        if self.transaction.transaction_timeout < Duration::from_secs(1) {
            return bad("transaction.transaction_timeout", "must be at least 1s");
        }
        if self.settle.max_in_flight == 0 {
            return bad("settle.max_in_flight", "must be at least 1");
        }
        if self.settle.retry.max_attempts == 0 {
            return bad("settle.retry.max_attempts", "must be at least 1");
        }
        Ok(self.gateway.validate()?)
    }

    /// The consumer group: `<prefix><consumer.group_id>`.
    pub fn group_id(&self) -> String {
        format!("{}{}", self.topics.prefix, self.consumer.group_id)
    }

    /// The `transactional.id` (and `group.instance.id`): `<group>-<instance_id>`.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id(), self.instance_id)
    }
}

/// Health, readiness and metrics over HTTP.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (when `main` binds; tests pass their own listener).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8085)),
        }
    }
}

/// Topic names, before the prefix. The registry subjects follow as `<topic>-value`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// Put in front of every topic, the group and the transactional id (module docs).
    pub prefix: String,
    /// The input: order.created.
    pub order_created: String,
    /// Output: payment.completed. Must have as many partitions as the input.
    pub payment_completed: String,
    /// Output: payment.failed. Must have as many partitions as the input.
    pub payment_failed: String,
    /// Dead letters (any partition count).
    pub dlq: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            prefix: String::new(),
            order_created: <schemas::OrderCreated as schemas::Event>::TOPIC.to_owned(),
            payment_completed: <schemas::PaymentCompleted as schemas::Event>::TOPIC.to_owned(),
            payment_failed: <schemas::PaymentFailed as schemas::Event>::TOPIC.to_owned(),
            dlq: "payment-service.dlq".to_owned(),
        }
    }
}

/// The topic names with the prefix applied: what the service actually uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// order.created (input).
    pub order_created: String,
    /// payment.completed (output).
    pub payment_completed: String,
    /// payment.failed (output).
    pub payment_failed: String,
    /// The dead-letter topic.
    pub dlq: String,
}

impl TopicsConfig {
    /// The names with [`TopicsConfig::prefix`] applied.
    pub fn resolve(&self) -> Topics {
        let p = &self.prefix;
        Topics {
            order_created: format!("{p}{}", self.order_created),
            payment_completed: format!("{p}{}", self.payment_completed),
            payment_failed: format!("{p}{}", self.payment_failed),
            dlq: format!("{p}{}", self.dlq),
        }
    }
}

/// The input consumer.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// `group.id` before the prefix: `payment-service` (docs/design.md).
    pub group_id: String,
    /// Use static membership (`group.instance.id` = the transactional id): a restarted
    /// replica gets its partitions back without a rebalance. The price: a replica that
    /// stops for good keeps its partitions until `session_timeout` passes.
    pub static_membership: bool,
    /// `session.timeout.ms`: how long a silent member keeps its partitions. 30 s, above
    /// a group coordinator's failover (a dead broker is noticed after 9 s, then the
    /// coordinator moves): a static member whose *local* session timer expires while the
    /// coordinator moves rejoins, and librdkafka then reports that rejoin as fenced by
    /// "another consumer with the same group.instance.id" (its own earlier member id),
    /// fatally (librdkafka#3437). `make chaos` saw payment exit that way with 10 s.
    #[serde(with = "duration_serde")]
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`: a batch (settling plus committing) must finish within it.
    #[serde(with = "duration_serde")]
    pub max_poll_interval: Duration,
    /// How long loading the settled orders of newly assigned partitions may take.
    #[serde(with = "duration_serde")]
    pub settled_load_timeout: Duration,
    /// How often the consumer-lag gauge is refreshed.
    #[serde(with = "duration_serde")]
    pub lag_interval: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            group_id: "payment-service".to_owned(),
            static_membership: true,
            session_timeout: Duration::from_secs(30),
            max_poll_interval: Duration::from_secs(300),
            settled_load_timeout: Duration::from_secs(120),
            lag_interval: Duration::from_secs(5),
        }
    }
}

/// Batches and transactions. See the crate docs for why 100 ms / 500 records.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionConfig {
    /// The longest a record waits in a batch before the batch is settled and committed,
    /// counted from the batch's first record.
    #[serde(with = "duration_serde")]
    pub commit_interval: Duration,
    /// A batch also closes when no record arrived for this long (group commit): an
    /// order arriving at an idle service is settled and committed at once, while under
    /// load the records queued during one transaction arrive back to back and share the
    /// next one. Zero turns this off (batches close only by `commit_interval` and
    /// `max_batch`).
    #[serde(with = "duration_serde")]
    pub linger: Duration,
    /// The most records in one batch (one transaction).
    pub max_batch: usize,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction left open longer.
    /// A transaction is open only while its outcomes are produced and committed (the
    /// gateway calls happen before it begins), so a short value is safe, and it bounds
    /// how long a replica that dies mid-commit and never comes back blocks
    /// `read_committed` readers of the payment topics.
    #[serde(with = "duration_serde")]
    pub transaction_timeout: Duration,
    /// Time limit of one blocking transactional call (init, send offsets, commit, abort).
    #[serde(with = "duration_serde")]
    pub call_timeout: Duration,
    /// How often within [`TransactionConfig::reinit_window`] a fenced or fatally failed
    /// transactional producer is replaced by a new one with the same `transactional.id`
    /// (see [`crate::recovery`]). One failure more within the window stops the service:
    /// repeated fencing means a second live instance with this id, not an outage. 0
    /// never replaces the producer (the first fenced or fatal error stops the service).
    pub reinit_limit: u32,
    /// The window of [`TransactionConfig::reinit_limit`].
    #[serde(with = "duration_serde")]
    pub reinit_window: Duration,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            commit_interval: Duration::from_millis(100),
            linger: Duration::from_millis(5),
            max_batch: 500,
            transaction_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            reinit_limit: 3,
            reinit_window: Duration::from_secs(60),
        }
    }
}

/// What happens to an order whose gateway calls failed transiently on every attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRetriesExhausted {
    /// Dead-letter the order (`retries-exhausted`), in the batch's transaction, for an
    /// operator to redrive once the gateway is back. The order keeps its reservation
    /// meanwhile. The default (the issue asks for it).
    #[default]
    DeadLetter,
    /// Publish `payment.failed` with reason code `GATEWAY_UNAVAILABLE`: the order is
    /// settled (its stock released) and is never retried.
    Fail,
}

/// Settling orders: concurrency and retries of the gateway.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettleConfig {
    /// Gateway calls in flight at once within a batch.
    pub max_in_flight: usize,
    /// Retries of transient gateway errors: exponential backoff with full jitter.
    pub retry: RetryPolicy,
    /// What to do when the retries are used up.
    pub on_retries_exhausted: OnRetriesExhausted,
}

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            max_in_flight: 64,
            // A whole batch waits for its slowest order, so the envelope stays short:
            // 5 attempts span at most 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s of backoff.
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(2),
                jitter: Jitter::Full,
            },
            on_retries_exhausted: OnRetriesExhausted::DeadLetter,
        }
    }
}

#[cfg(test)]
// figment::Jail's closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8085");
        assert_eq!(c.group_id(), "payment-service");
        assert_eq!(c.transactional_id(), "payment-service-0");
        let t = c.topics.resolve();
        assert_eq!(t.order_created, "order-service.order.created");
        assert_eq!(t.payment_completed, "payment-service.payment.completed");
        assert_eq!(t.payment_failed, "payment-service.payment.failed");
        assert_eq!(t.dlq, "payment-service.dlq");
        assert_eq!(c.transaction.commit_interval, Duration::from_millis(100));
        assert_eq!(c.transaction.linger, Duration::from_millis(5));
        assert_eq!(c.transaction.max_batch, 500);
    }

    #[test]
    fn layers_file_then_env() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file(
                "payment.toml",
                r#"
instance_id = "2"
[topics]
prefix = "staging-"
[transaction]
commit_interval = "250ms"
linger = "0s"
[gateway]
amount_limit_minor = 5000
declined_customers = ["bad-1", "bad-2"]
[settle]
on_retries_exhausted = "fail"
"#,
            )?;
            jail.set_env("KAFKA_BOOTSTRAP", "k1:9092");
            jail.set_env("PAYMENT__TRANSACTION__MAX_BATCH", "50");
            jail.set_env("PAYMENT__GATEWAY__TRANSIENT_FAILURE_RATE", "0.25");
            jail.set_env("PAYMENT__SETTLE__RETRY__BASE_DELAY", "5ms");
            let c = Config::extract(Config::figment(Some(Path::new("payment.toml")))).unwrap();
            assert_eq!(c.kafka.bootstrap, "k1:9092");
            assert_eq!(c.kafka.client_id, "payment-service");
            assert_eq!(c.transaction.commit_interval, Duration::from_millis(250));
            assert_eq!(c.transaction.linger, Duration::ZERO);
            assert_eq!(c.transaction.max_batch, 50);
            assert_eq!(c.gateway.amount_limit_minor, 5000);
            assert_eq!(c.gateway.declined_customers, ["bad-1", "bad-2"]);
            assert!((c.gateway.transient_failure_rate - 0.25).abs() < f64::EPSILON);
            assert_eq!(c.settle.retry.base_delay, Duration::from_millis(5));
            assert_eq!(c.settle.on_retries_exhausted, OnRetriesExhausted::Fail);
            assert_eq!(c.transactional_id(), "staging-payment-service-2");
            assert_eq!(
                c.topics.resolve().payment_failed,
                "staging-payment-service.payment.failed"
            );
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_defaults() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file("example.toml", include_str!("../payment.example.toml"))?;
            let c = Config::extract(Config::figment(Some(Path::new("example.toml")))).unwrap();
            let d = Config::default();
            assert_eq!(c.transactional_id(), d.transactional_id());
            assert_eq!(c.http.listen, d.http.listen);
            assert_eq!(c.topics.resolve(), d.topics.resolve());
            assert_eq!(c.transaction.commit_interval, d.transaction.commit_interval);
            assert_eq!(c.transaction.linger, d.transaction.linger);
            assert_eq!(c.transaction.max_batch, d.transaction.max_batch);
            assert_eq!(
                c.transaction.transaction_timeout,
                d.transaction.transaction_timeout
            );
            assert_eq!(c.transaction.reinit_limit, d.transaction.reinit_limit);
            assert_eq!(c.transaction.reinit_window, d.transaction.reinit_window);
            assert_eq!(c.settle.retry, d.settle.retry);
            assert_eq!(c.settle.max_in_flight, d.settle.max_in_flight);
            assert_eq!(c.gateway.amount_limit_minor, d.gateway.amount_limit_minor);
            assert_eq!(c.gateway.latency, d.gateway.latency);
            assert_eq!(c.consumer.session_timeout, d.consumer.session_timeout);
            assert_eq!(c.consumer.max_poll_interval, d.consumer.max_poll_interval);
            assert_eq!(c.telemetry.filter, d.telemetry.filter);
            Ok(())
        });
    }

    #[test]
    fn lists_and_durations_from_env() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.set_env(
                "PAYMENT__GATEWAY__DECLINED_CUSTOMERS",
                "[customer-13,customer-42]",
            );
            jail.set_env("PAYMENT__GATEWAY__LATENCY", "1ms");
            jail.set_env("PAYMENT__GATEWAY__LEDGER_PATH", "/tmp/ledger.txt");
            jail.set_env("PAYMENT__HTTP__LISTEN", "127.0.0.1:9999");
            let c = Config::extract(Config::figment(None)).unwrap();
            assert_eq!(c.gateway.declined_customers, ["customer-13", "customer-42"]);
            assert_eq!(c.gateway.latency, Duration::from_millis(1));
            assert_eq!(
                c.gateway.ledger_path.as_deref(),
                Some(Path::new("/tmp/ledger.txt"))
            );
            assert_eq!(c.http.listen.port(), 9999);
            Ok(())
        });
    }

    #[test]
    fn telemetry_and_partial_kafka_sections() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file("p.toml", "[kafka]\nbootstrap = \"k9:9092\"\n")?;
            jail.set_env("PAYMENT__TELEMETRY__FORMAT", "json");
            let c = Config::extract(Config::figment(Some(Path::new("p.toml")))).unwrap();
            assert_eq!(c.telemetry.format, LogFormat::Json);
            assert_eq!(c.kafka.bootstrap, "k9:9092");
            assert_eq!(
                c.kafka.client_id, SERVICE_NAME,
                "kept under a partial [kafka]"
            );
            // The old `json = true` is gone; the error names the key.
            jail.create_file("old.toml", "[telemetry]\njson = true\n")?;
            let e = Config::extract(Config::figment(Some(Path::new("old.toml")))).unwrap_err();
            assert!(e.to_string().contains("telemetry.json"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn typos_and_bad_values_fail() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file("a.toml", "[transaction]\ncommit_intervall = 5\n")?;
            let e = Config::extract(Config::figment(Some(Path::new("a.toml")))).unwrap_err();
            assert!(e.to_string().contains("commit_intervall"), "{e}");
            jail.create_file("b.toml", "[gateway]\ntransient_failure_rate = 1.5\n")?;
            let e = Config::extract(Config::figment(Some(Path::new("b.toml")))).unwrap_err();
            assert!(e.to_string().contains("transient_failure_rate"), "{e}");
            let missing = Config::extract(Config::figment(Some(Path::new("nope.toml"))));
            assert!(missing.is_err());
            Ok(())
        });
    }
}
