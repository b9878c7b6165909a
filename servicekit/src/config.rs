//! The layered configuration loader every service uses.
//!
//! Why layers: the defaults run against the local platform with no file at all (`cargo
//! run -p ingress`), a deployment ships one file per environment, and a single value can
//! still be overridden for one pod or one test without touching the file. Why one loader:
//! the three services had three copies of this logic, and they had drifted (the pipeline
//! read `KAFKA_BOOTSTRAP` in a `Default` impl, the others in their loaders).
//!
//! | layer | how | example |
//! |---|---|---|
//! | defaults | `T::default()`, serialized, so a file may set any subset of a section | REST on 127.0.0.1:8080 |
//! | file | the `file` argument (`--config PATH`), else `<PREFIX>_CONFIG=PATH` (TOML) | `INGRESS_CONFIG=ingress.toml` |
//! | shared env | `KAFKA_BOOTSTRAP` → `kafka.bootstrap`, `KAFKA_CLIENT_CONFIG` → `kafka.client_config_file`, `REGISTRY_URL` → `registry.url` | what the Makefile, the platform script and the tests export |
//! | service env | `<PREFIX>__<SECTION>__<KEY>`, nested with `__` | `INGRESS__PUBLISH__DEADLINE=2s` |
//!
//! Later layers win. The defaults are a real layer (not only serde's `#[serde(default)]`)
//! so that a service's own defaults survive a partial section: a file that sets only
//! `[kafka] bootstrap` keeps the service's `kafka.client_id`, where serde alone would
//! fall back to the *section type's* default. Fields whose type cannot be serialized may
//! be `#[serde(skip_serializing)]`; serde's defaults then apply to them, and
//! [`Loader::default_value`] puts back what differs.
//!
//! A file that was asked for but is missing is an error (not an empty layer). Errors name
//! the key and where its value came from:
//!
//! ```text
//! configuration key `rest.listen` (INGRESS__REST__LISTEN environment variable): invalid socket address syntax
//! ```
//!
//! Typical use:
//!
//! ```no_run
//! # #[derive(Default, serde::Serialize, serde::Deserialize)]
//! # struct Config {}
//! let config: Config = servicekit::config::load("PAYMENT", None)?;
//! # Ok::<(), servicekit::ConfigError>(())
//! ```

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The raw environment variables every service honours, and the key each one sets.
pub const SHARED_ENV: [(&str, &str); 3] = [
    ("KAFKA_BOOTSTRAP", "kafka.bootstrap"),
    ("KAFKA_CLIENT_CONFIG", "kafka.client_config_file"),
    ("REGISTRY_URL", "registry.url"),
];

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is missing, of the wrong type, unknown (a typo), or a file is unreadable.
    #[error("configuration key `{key}`{origin}: {message}")]
    Invalid {
        /// The dotted key (`rest.listen`); empty for a whole-document problem.
        key: String,
        /// Where the value came from (a file, an environment variable), with its own
        /// leading ` (`…`)`, or empty.
        origin: String,
        /// What is wrong.
        message: String,
        /// figment's own error, with every further problem it found.
        #[source]
        source: Box<figment::Error>,
    },
    /// A value parsed but breaks a rule that serde cannot express.
    #[error("configuration key `{key}`: {message}")]
    Rule {
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A broken rule at `key` (for a service's own `validate`).
    pub fn rule(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Rule {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The dotted key the error is about.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::Rule { key, .. } => key,
        }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        // The profile ("default") is figment's and means nothing to an operator.
        let key = error.path.join(".");
        let origin = origin(&error);
        ConfigError::Invalid {
            key,
            origin,
            message: error.kind.to_string(),
            source: Box::new(error),
        }
    }
}

/// Where the value of a failing key came from, as ` (…)`: the file, or the exact
/// environment variable (figment itself only names the provider).
fn origin(error: &figment::Error) -> String {
    let Some(metadata) = &error.metadata else {
        return String::new();
    };
    if let Some(source) = &metadata.source {
        return format!(" (in {source})");
    }
    if !metadata.name.ends_with("environment variable(s)") {
        return format!(" ({})", metadata.name);
    }
    // A prefixed provider is named "`INGRESS__` environment variable(s)".
    let prefix = metadata
        .name
        .strip_prefix('`')
        .and_then(|name| name.split('`').next());
    let key = error.path.join(".");
    let variable = match prefix {
        Some(prefix) => Some(format!(
            "{prefix}{}",
            error.path.join("__").to_ascii_uppercase()
        )),
        None => SHARED_ENV
            .iter()
            .find(|(_, shared_key)| *shared_key == key)
            .map(|(variable, _)| (*variable).to_owned()),
    };
    match variable {
        Some(variable) => format!(" ({variable} environment variable)"),
        None => " (environment)".to_owned(),
    }
}

/// The environment variable naming a config file: `<PREFIX>_CONFIG`.
pub fn file_env(env_prefix: &str) -> String {
    format!("{}_CONFIG", bare(env_prefix))
}

/// `INGRESS`, `INGRESS_` and `INGRESS__` all mean the prefix `INGRESS`.
fn bare(env_prefix: &str) -> &str {
    env_prefix.trim_end_matches('_')
}

/// The loader, for services that add default values beyond `T::default()`; [`load`] is
/// the common case.
#[derive(Debug, Clone)]
pub struct Loader {
    env_prefix: String,
    file: Option<PathBuf>,
    extra_defaults: Vec<(String, Value)>,
}

impl Loader {
    /// A loader for the service whose variables are `<env_prefix>__SECTION__KEY` and whose
    /// file variable is `<env_prefix>_CONFIG` (`env_prefix` is `INGRESS`, say).
    pub fn new(env_prefix: &str) -> Self {
        Loader {
            env_prefix: bare(env_prefix).to_owned(),
            file: None,
            extra_defaults: Vec::new(),
        }
    }

    /// The TOML file to layer; `None` falls back to `<PREFIX>_CONFIG`, if that is set
    /// and not empty.
    pub fn file(mut self, file: Option<&Path>) -> Self {
        self.file = file.map(Path::to_path_buf);
        self
    }

    /// A default for one dotted key, used only where `T::default()` has no value (its
    /// field is `skip_serializing`). Every other layer wins over it.
    ///
    /// # Panics
    ///
    /// If `value` cannot be serialized (a programming error, e.g. a map with non-string
    /// keys).
    pub fn default_value(mut self, key: &str, value: impl Serialize) -> Self {
        let value = Value::serialize(value)
            .unwrap_or_else(|e| panic!("default for `{key}` is not serializable: {e}"));
        self.extra_defaults.push((key.to_owned(), value));
        self
    }

    /// The file that will be read: the one given, else `<PREFIX>_CONFIG`.
    pub fn resolved_file(&self) -> Option<PathBuf> {
        self.file.clone().or_else(|| {
            std::env::var_os(file_env(&self.env_prefix))
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        })
    }

    /// The figment with every layer, for callers that add their own (tests).
    pub fn figment<T: Default + Serialize>(&self) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(T::default()));
        for (key, value) in &self.extra_defaults {
            // `join`: only where nothing is set yet.
            figment = figment.join(Serialized::default(key, value.clone()));
        }
        if let Some(file) = self.resolved_file() {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::raw().only(&SHARED_ENV.map(|(var, _)| var)).map(|var| {
                SHARED_ENV
                    .iter()
                    .find(|(name, _)| var.as_str().eq_ignore_ascii_case(name))
                    .map_or_else(|| var.as_str().to_owned(), |(_, key)| (*key).to_owned())
                    .into()
            }))
            .merge(Env::prefixed(&format!("{}__", self.env_prefix)).split("__"))
    }

    /// Loads `T` from every layer.
    pub fn load<T: Default + Serialize + DeserializeOwned>(&self) -> Result<T, ConfigError> {
        extract(&self.figment::<T>())
    }
}

/// Extracts `T` from a figment (the last step of [`load`], for callers that built or
/// extended the figment themselves).
pub fn extract<T: DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(ConfigError::from)
}

/// Loads `T`: its defaults, then `file` (else the file named by `<PREFIX>_CONFIG`), then
/// the shared variables (`KAFKA_BOOTSTRAP`, `KAFKA_CLIENT_CONFIG`, `REGISTRY_URL`), then
/// `<PREFIX>__SECTION__KEY` variables. See the module docs.
pub fn load<T>(env_prefix: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    Loader::new(env_prefix).file(file).load()
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use std::net::SocketAddr;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Kafka {
        bootstrap: String,
        client_id: String,
        client_config_file: Option<PathBuf>,
    }

    impl Default for Kafka {
        fn default() -> Self {
            Kafka {
                bootstrap: "localhost:9092".into(),
                client_id: "generic".into(),
                client_config_file: None,
            }
        }
    }

    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Registry {
        url: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Rest {
        listen: SocketAddr,
        body_limit: usize,
    }

    impl Default for Rest {
        fn default() -> Self {
            Rest {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                body_limit: 1024,
            }
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Config {
        kafka: Kafka,
        registry: Registry,
        rest: Rest,
        security: crate::ApiSecurity,
        telemetry: crate::TelemetryConfig,
    }

    impl Default for Config {
        fn default() -> Self {
            Config {
                // A service default that differs from the section type's.
                kafka: Kafka {
                    client_id: "order-service".into(),
                    ..Kafka::default()
                },
                registry: Registry::default(),
                rest: Rest::default(),
                security: crate::ApiSecurity::default(),
                telemetry: crate::TelemetryConfig::default(),
            }
        }
    }

    #[test]
    fn file_then_shared_env_then_service_env() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file(
                "svc.toml",
                r#"
                [rest]
                listen = "0.0.0.0:9000"
                body_limit = 10
                [kafka]
                bootstrap = "from-file:9092"
                "#,
            )?;
            jail.set_env("KAFKA_BOOTSTRAP", "from-env:9092");
            jail.set_env("KAFKA_CLIENT_CONFIG", "/etc/kafka/client.properties");
            jail.set_env("REGISTRY_URL", "http://registry:8081");
            jail.set_env("SVC__REST__BODY_LIMIT", "20");
            let c: Config = load("SVC", Some(Path::new("svc.toml"))).unwrap();
            assert_eq!(c.rest.listen, "0.0.0.0:9000".parse().unwrap());
            assert_eq!(c.rest.body_limit, 20, "service env wins over the file");
            assert_eq!(
                c.kafka.bootstrap, "from-env:9092",
                "shared env wins over the file"
            );
            assert_eq!(
                c.kafka.client_config_file.as_deref(),
                Some(Path::new("/etc/kafka/client.properties"))
            );
            assert_eq!(c.registry.url, "http://registry:8081");
            // The service's default survives a partial [kafka] section.
            assert_eq!(c.kafka.client_id, "order-service");
            Ok(())
        });
    }

    #[test]
    fn the_service_env_beats_the_shared_env_and_the_file_variable_is_read() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file("from-var.toml", "[rest]\nbody_limit = 7\n")?;
            jail.set_env("SVC_CONFIG", "from-var.toml");
            jail.set_env("KAFKA_BOOTSTRAP", "shared:9092");
            jail.set_env("SVC__KAFKA__BOOTSTRAP", "own:9092");
            let c: Config = load("SVC__", None).unwrap();
            assert_eq!(c.rest.body_limit, 7);
            assert_eq!(c.kafka.bootstrap, "own:9092");
            // An explicit file wins over the variable.
            jail.create_file("explicit.toml", "[rest]\nbody_limit = 8\n")?;
            let c: Config = load("SVC", Some(Path::new("explicit.toml"))).unwrap();
            assert_eq!(c.rest.body_limit, 8);
            Ok(())
        });
    }

    #[test]
    fn nested_sections_and_lists_from_env() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.set_env("SVC__SECURITY__TLS__CERT", "/tls/cert.pem");
            jail.set_env("SVC__SECURITY__TLS__KEY", "/tls/key.pem");
            jail.set_env(
                "SVC__SECURITY__API_KEYS",
                format!(r#"[{{name="dash",sha256="{}"}}]"#, "ab".repeat(32)),
            );
            jail.set_env("SVC__TELEMETRY__FORMAT", "json");
            let c: Config = load("SVC", None).unwrap();
            let tls = c.security.tls.unwrap();
            assert_eq!(tls.cert, Path::new("/tls/cert.pem"));
            assert_eq!(tls.key, Path::new("/tls/key.pem"));
            assert_eq!(c.security.api_keys.len(), 1);
            assert_eq!(c.security.api_keys[0].name, "dash");
            assert_eq!(c.telemetry.format, crate::LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_the_key_and_its_origin() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.set_env("SVC__REST__BODY_LIMIT", "lots");
            let error = load::<Config>("SVC", None).unwrap_err();
            assert_eq!(error.key(), "rest.body_limit");
            let text = error.to_string();
            assert!(text.contains("`rest.body_limit`"), "{text}");
            assert!(text.contains("SVC__REST__BODY_LIMIT"), "{text}");
            assert!(std::error::Error::source(&error).is_some());

            jail.clear_env();
            jail.create_file("bad.toml", "[rest]\nlisten = \"not an address\"\n")?;
            let text = load::<Config>("SVC", Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(text.contains("`rest.listen`"), "{text}");
            assert!(text.contains("bad.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn typos_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file("typo.toml", "[rest]\nlisten_addr = \"0.0.0.0:1\"\n")?;
            let text = load::<Config>("SVC", Some(Path::new("typo.toml")))
                .unwrap_err()
                .to_string();
            assert!(text.contains("listen_addr"), "{text}");
            let text = load::<Config>("SVC", Some(Path::new("missing.toml")))
                .unwrap_err()
                .to_string();
            assert!(text.contains("missing.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn extra_defaults_fill_only_what_nothing_else_sets() {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Opaque {
            #[serde(skip_serializing)]
            kafka: Kafka,
        }
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            let loader = Loader::new("SVC").default_value("kafka.client_id", "payment-service");
            let c: Opaque = loader.load().unwrap();
            assert_eq!(c.kafka.client_id, "payment-service");
            assert_eq!(c.kafka.bootstrap, "localhost:9092");
            jail.set_env("SVC__KAFKA__CLIENT_ID", "mine");
            let c: Opaque = loader.load().unwrap();
            assert_eq!(c.kafka.client_id, "mine");
            Ok(())
        });
    }

    #[test]
    fn rule_errors_name_their_key() {
        let error = ConfigError::rule("clock.epoch_ms", "must be at least 1");
        assert_eq!(error.key(), "clock.epoch_ms");
        assert_eq!(
            error.to_string(),
            "configuration key `clock.epoch_ms`: must be at least 1"
        );
    }
}
