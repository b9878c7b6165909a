//! Configuration as plain serde structs, with defaults that work against the local
//! cluster (`deploy/local`), so a service can layer files and environment over them
//! with figment and a test can use `Default::default()`.
//!
//! Durations are written in config files as integer milliseconds (`250`) or as a number
//! with a unit (`"250ms"`, `"2s"`, `"1m"`). Secrets are [`SecretString`]s: they never
//! print in `Debug` output or logs.
//!
//! # Reaching a secured cluster
//!
//! [`KafkaSettings`] holds everything every client shares: bootstrap, client id,
//! [`Security`] (TLS, SASL/SCRAM credentials, the CA to trust) and `extra` librdkafka
//! properties. The usual way to fill it is a *client config file*: the librdkafka
//! properties file that `make up` writes per principal (`.run/secrets/<principal>.conf`,
//! mode 0600; what `kcat -F` reads), named by `client_config_file` or the
//! `KAFKA_CLIENT_CONFIG` environment variable. Its `bootstrap.servers`, security
//! settings and credentials win over the struct's own; any other property in it joins
//! `extra`. Resolution happens in [`KafkaSettings::resolved`], which every client
//! constructor in [`crate::client`] calls, so no client can forget it.
//!
//! `extra` is the escape hatch for any other librdkafka property
//! (`"socket.keepalive.enable" = "true"`), applied after the settings chosen by the
//! client constructors, except for [`PROTECTED_KEYS`]: the settings exactly-once
//! delivery depends on. Naming one in `extra` (or in the client config file) is a
//! configuration error in every service alike, reported by [`KafkaSettings::validate`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::BusError;

/// The local cluster's brokers (see `deploy/local`).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092";
/// The local Apicurio Registry.
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:8081";
/// Where Apicurio Registry 3 serves the Confluent-compatible API.
pub const CCOMPAT_PATH: &str = "/apis/ccompat/v7";
/// The environment variable naming a librdkafka client config file.
pub const CLIENT_CONFIG_ENV: &str = "KAFKA_CLIENT_CONFIG";

/// librdkafka properties that exactly-once delivery and commit-after-processing depend
/// on. The client constructors set them; `extra` and client config files cannot.
pub const PROTECTED_KEYS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "isolation.level",
    "transactional.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

/// How to reach the Kafka cluster; shared by every client of a service.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub bootstrap: String,
    /// `client.id`: shows in broker logs, quotas and metrics; use the service name.
    pub client_id: String,
    /// A librdkafka properties file with the cluster's address, security and this
    /// principal's credentials (`.run/secrets/<principal>.conf`); `KAFKA_CLIENT_CONFIG`.
    pub client_config_file: Option<PathBuf>,
    /// TLS and SASL.
    pub security: Security,
    /// `statistics.interval.ms`: how often librdkafka reports statistics, which feed the
    /// consumer-lag gauge. 0 turns statistics (and the lag gauge) off.
    pub statistics_interval_ms: u64,
    /// Any other librdkafka property, applied last; never one of [`PROTECTED_KEYS`].
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap: DEFAULT_BOOTSTRAP.to_owned(),
            client_id: "eventbus".to_owned(),
            client_config_file: None,
            security: Security::default(),
            statistics_interval_ms: 5_000,
            extra: BTreeMap::new(),
        }
    }
}

/// `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication: only for `SECURITY=plaintext make up`.
    #[default]
    Plaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL without TLS (credentials in the clear: avoid).
    SaslPlaintext,
    /// SASL over TLS: what the local secure cluster and Strimzi's SCRAM listeners use.
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "plaintext" => Some(SecurityProtocol::Plaintext),
            "ssl" => Some(SecurityProtocol::Ssl),
            "sasl_plaintext" => Some(SecurityProtocol::SaslPlaintext),
            "sasl_ssl" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// TLS and SASL settings of every client.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// `security.protocol`.
    pub protocol: SecurityProtocol,
    /// `sasl.mechanism`: `SCRAM-SHA-512` (what the local cluster and Strimzi's
    /// `KafkaUser` with SCRAM use).
    pub mechanism: String,
    /// `sasl.username`: the principal.
    pub username: Option<String>,
    /// `sasl.password`. Never logged; prefer a client config file.
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// `ssl.ca.location`: PEM file of the CA that signed the brokers' certificates;
    /// `None` trusts the system's CAs.
    pub ca_location: Option<PathBuf>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            protocol: SecurityProtocol::Plaintext,
            mechanism: "SCRAM-SHA-512".to_owned(),
            username: None,
            password: None,
            ca_location: None,
        }
    }
}

impl KafkaSettings {
    /// The defaults, with `bootstrap` from `KAFKA_BOOTSTRAP` and the client config file
    /// from `KAFKA_CLIENT_CONFIG` when they are set.
    pub fn from_env() -> Self {
        let mut config = KafkaSettings::default();
        if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP")
            && !bootstrap.trim().is_empty()
        {
            config.bootstrap = bootstrap;
        }
        if let Ok(file) = std::env::var(CLIENT_CONFIG_ENV)
            && !file.trim().is_empty()
        {
            config.client_config_file = Some(PathBuf::from(file));
        }
        config
    }

    /// The same configuration with another `client.id`.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// The settings with the client config file (if any) merged in: its bootstrap,
    /// security and credentials win; its other properties join `extra`. Validated.
    pub fn resolved(&self) -> Result<KafkaSettings, BusError> {
        let mut settings = self.clone();
        if let Some(path) = &self.client_config_file {
            let properties = read_properties(path)?;
            settings.apply_properties(path, properties)?;
            settings.client_config_file = None;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses [`PROTECTED_KEYS`] in `extra` and incomplete security settings.
    pub fn validate(&self) -> Result<(), BusError> {
        for key in self.extra.keys() {
            let normalized = key.trim().to_ascii_lowercase();
            if PROTECTED_KEYS.contains(&normalized.as_str()) {
                return Err(BusError::Config(format!(
                    "kafka.extra sets `{key}`, which exactly-once delivery depends on: \
                     eventbus sets it for each kind of client and it cannot be overridden; \
                     remove it from the configuration"
                )));
            }
        }
        let security = &self.security;
        if security.protocol.uses_sasl()
            && (security.username.is_none() || security.password.is_none())
        {
            return Err(BusError::Config(format!(
                "kafka.security.protocol is {} but no SASL username/password is set: \
                 point KAFKA_CLIENT_CONFIG (kafka.client_config_file) at the principal's \
                 client config, e.g. .run/secrets/<service>.conf",
                security.protocol.as_str()
            )));
        }
        if let Some(ca) = &security.ca_location
            && !ca.is_file()
        {
            return Err(BusError::Config(format!(
                "kafka.security.ca_location {} is not a readable file",
                ca.display()
            )));
        }
        Ok(())
    }

    fn apply_properties(
        &mut self,
        path: &Path,
        properties: BTreeMap<String, String>,
    ) -> Result<(), BusError> {
        for (key, value) in properties {
            match key.as_str() {
                "bootstrap.servers" => self.bootstrap = value,
                "security.protocol" => {
                    self.security.protocol = SecurityProtocol::parse(&value).ok_or_else(|| {
                        BusError::Config(format!(
                            "{}: unknown security.protocol {value:?} \
                             (plaintext, ssl, sasl_plaintext or sasl_ssl)",
                            path.display()
                        ))
                    })?
                }
                "sasl.mechanism" | "sasl.mechanisms" => self.security.mechanism = value,
                "sasl.username" => self.security.username = Some(value),
                "sasl.password" => self.security.password = Some(SecretString::from(value)),
                "ssl.ca.location" => self.security.ca_location = Some(PathBuf::from(value)),
                _ => {
                    self.extra.insert(key, value);
                }
            }
        }
        Ok(())
    }

    /// The security and bootstrap properties as librdkafka takes them (password
    /// included: only for building a client, never for printing).
    pub(crate) fn connection_properties(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("bootstrap.servers", self.bootstrap.clone()),
            (
                "security.protocol",
                self.security.protocol.as_str().to_owned(),
            ),
        ];
        if self.security.protocol.uses_sasl() {
            out.push(("sasl.mechanism", self.security.mechanism.clone()));
            if let Some(user) = &self.security.username {
                out.push(("sasl.username", user.clone()));
            }
            if let Some(password) = &self.security.password {
                out.push(("sasl.password", password.expose_secret().to_owned()));
            }
        }
        if self.security.protocol.uses_tls()
            && let Some(ca) = &self.security.ca_location
        {
            out.push(("ssl.ca.location", ca.display().to_string()));
        }
        out
    }

    /// The principal these settings authenticate as, for logs (`ANONYMOUS` without SASL).
    pub fn principal(&self) -> &str {
        self.security.username.as_deref().unwrap_or("ANONYMOUS")
    }
}

/// The `key=value` pairs of a properties file.
type Properties = BTreeMap<String, String>;

/// Reads a Java/librdkafka style properties file: `key=value` lines, `#` comments.
fn read_properties(path: &Path) -> Result<Properties, BusError> {
    let text = std::fs::read_to_string(path).map_err(BusError::io(format!(
        "cannot read the Kafka client config file {} ({CLIENT_CONFIG_ENV}; \
         `make up` writes one per principal into .run/secrets/)",
        path.display()
    )))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(BusError::Config(format!(
                "{}:{}: expected `key=value`",
                path.display(),
                n + 1
            )));
        };
        out.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(out)
}

/// How to reach the schema registry (Apicurio Registry 3, Confluent-compatible API).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry's root URL (`http://127.0.0.1:8081`) or its ccompat base URL
    /// (`.../apis/ccompat/v7`); the ccompat path is added when missing.
    pub url: String,
    /// Time limit of one HTTP request.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// HTTP basic-auth user, if the registry wants one.
    pub username: Option<String>,
    /// HTTP basic-auth password.
    pub password: Option<SecretString>,
    /// Register an event's schema on first publish when it is not registered yet.
    /// Off by default: schemas are registered by `make schemas`, so that a service with
    /// an unreviewed schema fails at start-up instead of creating a version.
    pub auto_register: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: DEFAULT_REGISTRY_URL.to_owned(),
            timeout: Duration::from_secs(10),
            username: None,
            password: None,
            auto_register: false,
        }
    }
}

impl RegistryConfig {
    /// The defaults, with `url` from `REGISTRY_URL` when it is set.
    pub fn from_env() -> Self {
        let mut config = RegistryConfig::default();
        if let Ok(url) = std::env::var("REGISTRY_URL")
            && !url.trim().is_empty()
        {
            config.url = url;
        }
        config
    }

    /// The base URL of the Confluent-compatible API, without a trailing slash.
    pub fn ccompat_base(&self) -> String {
        let url = self.url.trim_end_matches('/');
        if url.contains("/apis/ccompat/") {
            url.to_owned()
        } else {
            format!("{url}{CCOMPAT_PATH}")
        }
    }
}

/// How a random delay is drawn inside the exponential envelope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// "Full jitter": uniform in `[0, envelope]`. Spreads retries of many consumers
    /// best (AWS Architecture Blog, "Exponential Backoff And Jitter"). The default.
    #[default]
    Full,
    /// "Equal jitter": uniform in `[envelope/2, envelope]`; every delay is at least as
    /// long as the envelope before it, so delays never shrink.
    Equal,
    /// No randomness: exactly the envelope. For tests that measure delays.
    None,
}

/// Retries of a handler that returned a retriable error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; after the last one fails retriably, the
    /// record goes to the DLQ as `retries-exhausted`. At least 1.
    pub max_attempts: u32,
    /// The envelope after the first failure; it doubles after each further failure.
    #[serde(with = "duration_serde")]
    pub base_delay: Duration,
    /// The envelope never grows past this.
    #[serde(with = "duration_serde")]
    pub max_delay: Duration,
    /// How the delay is drawn inside the envelope.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay after `failures` failures (1 = after the first):
    /// `min(max_delay, base_delay * 2^(failures-1))`.
    pub fn envelope(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        let factor = 1u32 << exponent;
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before the next attempt after `failures` failures, drawn with `rng`.
    pub fn delay_with<R: rand::Rng + ?Sized>(&self, failures: u32, rng: &mut R) -> Duration {
        let envelope = self.envelope(failures);
        let nanos = u64::try_from(envelope.as_nanos()).unwrap_or(u64::MAX);
        match self.jitter {
            Jitter::None => envelope,
            Jitter::Full => Duration::from_nanos(rng.random_range(0..=nanos)),
            Jitter::Equal => Duration::from_nanos(rng.random_range(nanos / 2..=nanos)),
        }
    }

    /// The delay before the next attempt after `failures` failures.
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_with(failures, &mut rand::rng())
    }
}

/// Serde for durations: integer milliseconds, or a string `"<n>ms"`, `"<n>s"`, `"<n>m"`.
pub mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Writes whole milliseconds.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads integer milliseconds or a string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(text) => parse(&text).map_err(de::Error::custom),
        }
    }

    /// Parses `"250ms"`, `"2s"`, `"1m"` or `"250"` (milliseconds).
    pub fn parse(text: &str) -> Result<Duration, crate::BusError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().map_err(|source| crate::BusError::Duration {
            text: text.to_owned(),
            source: Some(source),
        })?;
        match unit.trim() {
            "" | "ms" => Ok(Duration::from_millis(n)),
            "s" => Ok(Duration::from_secs(n)),
            "m" => Ok(Duration::from_secs(n * 60)),
            _ => Err(crate::BusError::Duration {
                text: text.to_owned(),
                source: None,
            }),
        }
    }
}

/// Settings of the producer that are a service's choice (the safety settings are not).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// CloudEvents `ce_source` of everything this producer publishes, e.g.
    /// `/order-service`.
    pub source: String,
    /// `linger.ms`: how long librdkafka waits to fill a batch. See
    /// [`crate::producer`] for why 5.
    pub linger_ms: u64,
    /// `delivery.timeout.ms`: the bound on how long `publish` can wait for the broker's
    /// acknowledgement, retries included.
    pub delivery_timeout_ms: u64,
    /// `compression.type`.
    pub compression: String,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            source: "/eventbus".to_owned(),
            linger_ms: 5,
            delivery_timeout_ms: 30_000,
            compression: "lz4".to_owned(),
        }
    }
}

/// Settings of one consumer runner.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// `group.id`: by convention the service name, e.g. `payment-service`.
    pub group_id: String,
    /// Topics to subscribe to; empty means the event type's own topics.
    pub topics: Vec<String>,
    /// The dead-letter topic; `None` means `<group_id>.dlq`.
    pub dlq_topic: Option<String>,
    /// Retries of retriable handler errors.
    pub retry: RetryPolicy,
    /// Where a group without committed offsets starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Read only committed records of transactional producers (`read_committed`).
    pub read_committed: bool,
    /// `auto.commit.interval.ms`: how often stored offsets are committed in the
    /// background; shutdown and rebalances commit too.
    pub commit_interval_ms: u64,
    /// `session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `max.poll.interval.ms`: a handler call longer than this makes the consumer leave
    /// its group.
    pub max_poll_interval_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: "eventbus".to_owned(),
            topics: Vec::new(),
            dlq_topic: None,
            retry: RetryPolicy::default(),
            auto_offset_reset: "earliest".to_owned(),
            read_committed: true,
            commit_interval_ms: 1_000,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
        }
    }
}

impl ConsumerConfig {
    /// Defaults for the group `group_id` (and DLQ `<group_id>.dlq`).
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerConfig {
            group_id: group_id.into(),
            ..ConsumerConfig::default()
        }
    }

    /// The dead-letter topic of this consumer.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.group_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            jitter,
        }
    }

    #[test]
    fn envelope_doubles_then_caps() {
        let p = policy(Jitter::None);
        let ms: Vec<u128> = (1..=7).map(|n| p.envelope(n).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        // No overflow for absurd attempt counts.
        assert_eq!(p.envelope(u32::MAX), Duration::from_secs(1));
        assert_eq!(p.delay(3), Duration::from_millis(400));
    }

    #[test]
    fn full_jitter_stays_in_bounds_and_spreads() {
        let p = policy(Jitter::Full);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for failures in 1..=8 {
            let cap = p.envelope(failures);
            let draws: Vec<Duration> = (0..2_000)
                .map(|_| p.delay_with(failures, &mut rng))
                .collect();
            assert!(
                draws.iter().all(|d| *d <= cap),
                "a delay exceeded the envelope {cap:?}"
            );
            // Uniform on [0, cap]: some draws in the lowest and in the highest tenth.
            assert!(
                draws.iter().any(|d| *d < cap / 10),
                "no small delays for {failures}"
            );
            assert!(
                draws.iter().any(|d| *d > cap * 9 / 10),
                "no large delays for {failures}"
            );
            let mean = draws.iter().map(|d| d.as_secs_f64()).sum::<f64>() / draws.len() as f64;
            let half = cap.as_secs_f64() / 2.0;
            assert!(
                (mean - half).abs() < half * 0.1,
                "mean {mean} far from {half}"
            );
        }
        // The cap holds for the jittered delay too.
        assert!((0..1000).all(|_| p.delay_with(30, &mut rng) <= Duration::from_secs(1)));
    }

    #[test]
    fn equal_jitter_never_shrinks() {
        let p = policy(Jitter::Equal);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for failures in 1..=4 {
            let cap = p.envelope(failures);
            for _ in 0..500 {
                let d = p.delay_with(failures, &mut rng);
                assert!(d >= cap / 2 && d <= cap);
            }
        }
    }

    #[test]
    fn durations_parse_from_config() {
        let p: RetryPolicy = toml::from_str(
            r#"max_attempts = 4
base_delay = "250ms"
max_delay = 2000
jitter = "equal""#,
        )
        .unwrap();
        assert_eq!(p.base_delay, Duration::from_millis(250));
        assert_eq!(p.max_delay, Duration::from_secs(2));
        assert_eq!(p.jitter, Jitter::Equal);
        assert_eq!(
            duration_serde::parse("1m").unwrap(),
            Duration::from_secs(60)
        );
        assert!(duration_serde::parse("5h").is_err());
        let back = toml::to_string(&p).unwrap();
        assert!(back.contains("base_delay = 250"), "{back}");
    }

    #[test]
    fn registry_url_gets_ccompat_path_once() {
        let mut c = RegistryConfig::default();
        assert_eq!(c.ccompat_base(), "http://127.0.0.1:8081/apis/ccompat/v7");
        c.url = "http://r:8081/apis/ccompat/v7/".into();
        assert_eq!(c.ccompat_base(), "http://r:8081/apis/ccompat/v7");
    }

    #[test]
    fn protected_keys_cannot_be_overridden() {
        for key in [
            "acks",
            "enable.idempotence",
            "Isolation.Level",
            "transactional.id",
            "enable.auto.commit",
        ] {
            let mut k = KafkaSettings::default();
            k.extra.insert(key.into(), "x".into());
            let e = k.resolved().unwrap_err().to_string();
            assert!(e.contains("cannot be overridden"), "{key}: {e}");
        }
        // An unprotected key is fine.
        let mut k = KafkaSettings::default();
        k.extra
            .insert("socket.keepalive.enable".into(), "true".into());
        assert!(k.resolved().is_ok());
        assert_eq!(
            ConsumerConfig::new("payment-service").dlq_topic(),
            "payment-service.dlq"
        );
    }

    #[test]
    fn client_config_file_fills_security_and_secrets_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "not checked here").unwrap();
        let file = dir.path().join("payment.conf");
        std::fs::write(
            &file,
            format!(
                "# written by make up\nbootstrap.servers=h:1\nsecurity.protocol=SASL_SSL\n\
                 sasl.mechanisms=SCRAM-SHA-512\nsasl.username=payment\nsasl.password=hunter2\n\
                 ssl.ca.location={}\nsocket.keepalive.enable=true\n",
                ca.display()
            ),
        )
        .unwrap();
        let k = KafkaSettings {
            client_config_file: Some(file.clone()),
            ..KafkaSettings::default()
        };
        let r = k.resolved().unwrap();
        assert_eq!(r.bootstrap, "h:1");
        assert_eq!(r.security.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(r.principal(), "payment");
        assert_eq!(
            r.extra.get("socket.keepalive.enable").map(String::as_str),
            Some("true")
        );
        let props = r.connection_properties();
        assert!(props.contains(&("sasl.password", "hunter2".to_owned())));
        assert!(!format!("{r:?}").contains("hunter2"));

        // A protected key smuggled in through the file is refused too.
        std::fs::write(&file, "bootstrap.servers=h:1\nacks=1\n").unwrap();
        assert!(k.resolved().unwrap_err().to_string().contains("`acks`"));
        // SASL without credentials is a clear error, and so is a missing file.
        std::fs::write(&file, "security.protocol=sasl_ssl\n").unwrap();
        assert!(
            k.resolved()
                .unwrap_err()
                .to_string()
                .contains("no SASL username")
        );
        std::fs::remove_file(&file).unwrap();
        assert!(
            k.resolved()
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}
