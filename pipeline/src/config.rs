//! Configuration: plain serde structs with defaults for the local cluster, layered by
//! `servicekit::config` like every service: defaults → TOML file (`-c PATH` or
//! `PIPELINE_CONFIG`) → `KAFKA_BOOTSTRAP` / `KAFKA_CLIENT_CONFIG` / `REGISTRY_URL` →
//! `PIPELINE__...` environment variables.
//!
//! Every knob that changes *results* is absent on purpose: the semantics are fixed in
//! [`crate::logic`]. What is configurable is where things are (cluster, registry, topic
//! names, ports), how the clock ticks (epoch length, back-pressure slack) and how work is
//! spread (workers, processes). The topic names all derive from one optional
//! [`TopicConfig::prefix`] so that tests (and side-by-side deployments) can run the job on
//! their own copies of every topic.
//!
//! Environment variables use `__` as the separator: `PIPELINE__CLOCK__EPOCH_MS=20`,
//! `PIPELINE__TOPICS__PREFIX=staging-`, `PIPELINE__KAFKA__BOOTSTRAP=...`.
//!
//! The views API's TLS and API keys are `[server.security]` (`servicekit::ApiSecurity`,
//! off by default); logging is `[telemetry]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use eventbus::{KafkaSettings, RegistryConfig};
use figment::Figment;
use schemas::{
    Event, OrderCreated, OrderUpdated, PaymentCompleted, PaymentFailed, StockAdjusted, StockUpdated,
};
use serde::{Deserialize, Serialize};
use servicekit::config::Loader;
use servicekit::{ApiSecurity, TelemetryConfig};

use crate::error::PipelineError;

/// The prefix of the job's environment variables (`PIPELINE__CLOCK__EPOCH_MS`, ...).
pub const ENV_PREFIX: &str = "PIPELINE__";
/// The environment variable naming a config file (same as `-c`).
pub const CONFIG_FILE_ENV: &str = "PIPELINE_CONFIG";
/// The service's name in logs (`service` in JSON lines) and Kafka's `client.id`.
pub const SERVICE_NAME: &str = "inventory-service";

/// The whole configuration of the job.
///
/// The eventbus sections are `skip_serializing` (they hold secrets): their defaults are
/// serde's, plus the job's own client id in [`PipelineConfig::figment`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// The Kafka cluster (eventbus's settings: bootstrap, security, extra librdkafka
    /// properties).
    #[serde(skip_serializing)]
    pub kafka: KafkaSettings,
    /// The schema registry.
    #[serde(skip_serializing)]
    pub registry: RegistryConfig,
    /// Topic names.
    pub topics: TopicConfig,
    /// The ingestion clock.
    pub clock: ClockConfig,
    /// The Kafka source.
    pub source: SourceConfig,
    /// The exactly-once sink.
    pub sink: SinkConfig,
    /// The views API (process 0) and every process's metrics endpoint.
    pub server: ServerConfig,
    /// Workers and processes.
    pub timely: TimelyConfig,
    /// State snapshots (off by default; see [`crate::snapshot`]).
    pub snapshot: SnapshotConfig,
    /// The service name: consumer `group.id` (only a label, no offsets are committed),
    /// the `dlq.consumer.group` header and the CloudEvents source (`/<service>`).
    pub service: String,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            kafka: KafkaSettings::from_env().with_client_id(SERVICE_NAME),
            registry: RegistryConfig::from_env(),
            topics: TopicConfig::default(),
            clock: ClockConfig::default(),
            source: SourceConfig::default(),
            sink: SinkConfig::default(),
            server: ServerConfig::default(),
            timely: TimelyConfig::default(),
            snapshot: SnapshotConfig::default(),
            service: SERVICE_NAME.to_owned(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl PipelineConfig {
    /// Layers the defaults, the TOML file `file` (else the one `PIPELINE_CONFIG` names),
    /// the shared variables and `PIPELINE__*` variables (later wins), then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, PipelineError> {
        let config: PipelineConfig = servicekit::config::extract(&Self::figment(file))
            .map_err(|e| PipelineError::ConfigLoad(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The figment with every layer, for callers that add their own (tests).
    pub fn figment(file: Option<&Path>) -> Figment {
        Loader::new(ENV_PREFIX)
            .file(file)
            .default_value("kafka.client_id", SERVICE_NAME)
            .figment::<PipelineConfig>()
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |key, problem: &str| Err(PipelineError::invalid(key, problem));
        if self.clock.epoch_ms == 0 {
            return bad("clock.epoch_ms", "must be at least 1");
        }
        if self.source.queue_capacity == 0 {
            return bad("source.queue_capacity", "must be positive");
        }
        if self.source.max_records_per_activation == 0 {
            return bad("source.max_records_per_activation", "must be positive");
        }
        if self.sink.queue_epochs == 0 {
            return bad("sink.queue_epochs", "must be positive");
        }
        if self.sink.max_epochs_per_transaction == 0 {
            return bad("sink.max_epochs_per_transaction", "must be positive");
        }
        if self.sink.transactional_id.trim().is_empty() {
            return bad("sink.transactional_id", "must not be empty");
        }
        if self.snapshot.enabled {
            if self.snapshot.interval_ms < self.clock.epoch_ms {
                return bad("snapshot.interval_ms", "must be at least clock.epoch_ms");
            }
            if self.snapshot.shards == 0 {
                return bad("snapshot.shards", "must be at least 1");
            }
            if !(1_024..=900_000).contains(&self.snapshot.chunk_bytes) {
                return bad(
                    "snapshot.chunk_bytes",
                    "must be between 1024 and 900000 (a chunk is one Kafka record)",
                );
            }
            if self.snapshot.keep == 0 {
                return bad("snapshot.keep", "must be at least 1");
            }
        }
        if self.timely.workers == 0 {
            return bad("timely.workers", "must be at least 1");
        }
        if self.timely.processes == 0 {
            return bad("timely.processes", "must be at least 1");
        }
        if self.timely.process >= self.timely.processes {
            return bad(
                "timely.process",
                &format!(
                    "{} is not below timely.processes {}",
                    self.timely.process, self.timely.processes
                ),
            );
        }
        if self.timely.processes > 1 && self.timely.hostfile.is_none() {
            return bad("timely.hostfile", "several processes need one (-h)");
        }
        if self.timely.process > 0 && self.server.metrics_addr(self.timely.process).is_none() {
            return bad(
                "server.metrics",
                &format!(
                    "must be set: server.http port {} + process {} is no port",
                    self.server.http.port(),
                    self.timely.process
                ),
            );
        }
        Ok(())
    }

    /// The resolved topic names.
    pub fn topic_names(&self) -> TopicNames {
        self.topics.names()
    }
}

/// Topic names; every name is `prefix` + the project's name for the topic.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Prepended to every topic name (and so to every registry subject): empty in
    /// production, unique per test.
    pub prefix: String,
}

impl TopicConfig {
    /// The resolved names.
    pub fn names(&self) -> TopicNames {
        let p = &self.prefix;
        TopicNames {
            inputs: crate::input::INPUT_TOPICS.map(|t| format!("{p}{t}")),
            stock_updated: format!("{p}{}", StockUpdated::TOPIC),
            progress: format!("{p}{PROGRESS_TOPIC}"),
            dlq: format!("{p}{DLQ_TOPIC}"),
            snapshots: format!("{p}{SNAPSHOTS_TOPIC}"),
        }
    }
}

/// The progress topic's name without prefix (see `deploy/topics.toml`).
pub const PROGRESS_TOPIC: &str = "inventory-service.progress";
/// The dead-letter topic's name without prefix.
pub const DLQ_TOPIC: &str = "inventory-service.dlq";
/// The snapshot topic's name without prefix (compacted, one partition).
pub const SNAPSHOTS_TOPIC: &str = "inventory-service.snapshots";

/// Every topic the job reads or writes, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicNames {
    /// The five inputs, in [`crate::input::INPUT_TOPICS`] order (the `Pos::topic` index).
    pub inputs: [String; 5],
    /// The output, compacted.
    pub stock_updated: String,
    /// The exactly-once progress and time bindings (one partition, never deleted).
    pub progress: String,
    /// Dead letters.
    pub dlq: String,
    /// State snapshots (compacted; used when `snapshot.enabled` without a directory).
    pub snapshots: String,
}

impl TopicNames {
    /// The registry subject of the output (`<stock.updated>-value`).
    pub fn stock_updated_subject(&self) -> String {
        format!("{}-value", self.stock_updated)
    }

    /// Every topic with the registry subject of its value, when it has one: what a
    /// test or an operator has to create and register.
    pub fn with_subjects(&self) -> Vec<(String, Option<&'static str>)> {
        let texts = [
            OrderCreated::schema_text(),
            OrderUpdated::schema_text(),
            PaymentCompleted::schema_text(),
            PaymentFailed::schema_text(),
            StockAdjusted::schema_text(),
        ];
        let mut out: Vec<(String, Option<&'static str>)> =
            self.inputs.iter().cloned().zip(texts.map(Some)).collect();
        out.push((
            self.stock_updated.clone(),
            Some(StockUpdated::schema_text()),
        ));
        out.push((self.progress.clone(), None));
        out.push((self.dlq.clone(), None));
        out
    }
}

/// The ingestion clock (see [`crate::clock`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// Epoch length in milliseconds: records ingested in the same epoch share a time,
    /// and an epoch's output is released (committed) as soon as it closes. Shorter
    /// epochs mean lower latency and more, smaller transactions.
    pub epoch_ms: u64,
    /// Back-pressure: a worker stops reading Kafka while an epoch it ingested is not
    /// committed after this many milliseconds.
    pub slack_ms: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            epoch_ms: 10,
            slack_ms: 500,
        }
    }
}

/// The Kafka source (see [`crate::source`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Decoded records buffered between a worker's fetch thread and the worker; a full
    /// queue stops the fetch thread from polling Kafka.
    pub queue_capacity: usize,
    /// At most this many records are ingested per activation of the source operator,
    /// so that one busy partition cannot starve the rest of the worker.
    pub max_records_per_activation: usize,
    /// `statistics.interval.ms` of the input consumers: how often the input-lag gauges
    /// are refreshed. Each report is a JSON document of every partition that librdkafka
    /// renders and the job parses, so this is not free; 0 turns the gauges off.
    pub statistics_interval_ms: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            queue_capacity: 16_384,
            max_records_per_activation: 8_192,
            statistics_interval_ms: 5_000,
        }
    }
}

/// The exactly-once sink (see [`crate::sink`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// `transactional.id`: stable across restarts, so that a restarted job fences the
    /// previous one. One per job (tests use a unique one).
    pub transactional_id: String,
    /// Closed epochs queued between worker 0 and the sink thread; when full, worker 0
    /// holds further epochs and the sources throttle.
    pub queue_epochs: usize,
    /// Queued epochs committed together in one transaction when the sink falls behind.
    pub max_epochs_per_transaction: usize,
    /// `linger.ms` of the transactional producer (see [`crate::sink`] for why 5).
    pub linger_ms: u64,
    /// `transaction.timeout.ms`: the broker aborts a transaction left open this long
    /// (a crashed job's), which also bounds how long read_committed readers can stall.
    pub transaction_timeout_ms: u64,
    /// Time limit of one blocking transaction call (init, commit, abort).
    pub call_timeout_ms: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            transactional_id: "inventory-service-sink".to_owned(),
            queue_epochs: 256,
            max_epochs_per_transaction: 100,
            linger_ms: 5,
            transaction_timeout_ms: 60_000,
            call_timeout_ms: 30_000,
        }
    }
}

/// State snapshots (see [`crate::snapshot`] and the README's "State snapshots").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Take snapshots and restore from them. With it on, input topics may have finite
    /// retention; the job refuses to start when they no longer cover what it needs.
    pub enabled: bool,
    /// At most one snapshot per this many milliseconds, while input arrives.
    pub interval_ms: u64,
    /// A local directory instead of the snapshot topic (development).
    pub directory: Option<PathBuf>,
    /// Shards per snapshot (the unit of loading; any worker count restores any).
    pub shards: u32,
    /// Largest chunk, in bytes (one Kafka record).
    pub chunk_bytes: usize,
    /// Snapshots kept; older ones are removed after a newer one is complete.
    pub keep: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            enabled: false,
            interval_ms: 60_000,
            directory: None,
            shards: 16,
            chunk_bytes: 512 * 1024,
            keep: 2,
        }
    }
}

/// The views API (see [`crate::server`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Serve at all: the API on process 0, the metrics endpoint on every process.
    pub enabled: bool,
    /// REST, SSE, `/healthz`, `/readyz`, `/metrics` (process 0).
    pub http: SocketAddr,
    /// gRPC `orderpipeline.v1.ViewService` with reflection.
    pub grpc: SocketAddr,
    /// Where a process serves its own `/metrics` and `/healthz`, so that every process
    /// of a multi-process job is scraped (each exports its own input partitions' lag,
    /// records and arrangements). Unset: process 0 serves them with the API on `http`
    /// and process `i > 0` on `http`'s IP with port `http.port + i` (8091, 8092, ...).
    /// Set: every process serves them here (process 0 on `http` too), one port for
    /// every pod.
    pub metrics: Option<SocketAddr>,
    /// TLS and API keys of both (off by default; see `pipeline/README.md`).
    pub security: ApiSecurity,
}

impl ServerConfig {
    /// The address of process `process`'s own metrics endpoint, if it has one apart
    /// from the API (see [`ServerConfig::metrics`]); `None` if the port would overflow
    /// (refused by [`PipelineConfig::validate`]).
    pub fn metrics_addr(&self, process: usize) -> Option<SocketAddr> {
        if let Some(addr) = self.metrics {
            return Some(addr);
        }
        if process == 0 {
            return None;
        }
        let port = u16::try_from(process)
            .ok()
            .and_then(|i| self.http.port().checked_add(i))?;
        Some(SocketAddr::new(self.http.ip(), port))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            enabled: true,
            http: SocketAddr::from(([127, 0, 0, 1], 8090)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50052)),
            metrics: None,
            security: ApiSecurity::default(),
        }
    }
}

/// Workers and processes, handed to timely as its own `-w -n -p -h` arguments.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimelyConfig {
    /// Worker threads in this process (`-w`).
    pub workers: usize,
    /// Processes in the job (`-n`).
    pub processes: usize,
    /// This process's index, 0-based (`-p`). Process 0 runs the sink and the API.
    pub process: usize,
    /// File with one `host:port` line per process (`-h`); needed when `processes > 1`.
    pub hostfile: Option<PathBuf>,
}

impl Default for TimelyConfig {
    fn default() -> Self {
        TimelyConfig {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

impl TimelyConfig {
    /// timely's own command-line arguments for this configuration.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "pipeline".to_owned(),
            "-w".to_owned(),
            self.workers.to_string(),
            "-n".to_owned(),
            self.processes.to_string(),
            "-p".to_owned(),
            self.process.to_string(),
        ];
        if let Some(hostfile) = &self.hostfile {
            args.push("-h".to_owned());
            args.push(hostfile.display().to_string());
        }
        args
    }

    /// The timely configuration, parsed by timely itself from [`TimelyConfig::args`].
    pub fn timely_config(&self) -> Result<timely::Config, PipelineError> {
        timely::Config::from_args(self.args().into_iter()).map_err(|e| {
            PipelineError::invalid("timely", format!("timely refused its arguments: {e}"))
        })
    }

    /// Workers over all processes.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_names_have_the_prefix() {
        let mut c = PipelineConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.topic_names().inputs[0],
            "order-service.order.created".to_owned()
        );
        c.topics.prefix = "t-1-".into();
        let names = c.topic_names();
        assert_eq!(names.progress, "t-1-inventory-service.progress");
        assert_eq!(names.dlq, "t-1-inventory-service.dlq");
        assert_eq!(
            names.stock_updated_subject(),
            "t-1-inventory-service.stock.updated-value"
        );
        assert_eq!(names.with_subjects().len(), 8);
    }

    #[test]
    fn timely_args_round_trip_through_timely() {
        let t = TimelyConfig {
            workers: 2,
            ..TimelyConfig::default()
        };
        assert!(t.timely_config().is_ok());
        let mut c = PipelineConfig::default();
        c.timely.processes = 2;
        assert!(c.validate().is_err(), "two processes need a hostfile");
        c.timely.hostfile = Some("hosts.txt".into());
        c.validate().unwrap();
        assert_eq!(
            c.timely.args()[1..],
            ["-w", "1", "-n", "2", "-p", "0", "-h", "hosts.txt"]
        );
    }

    #[test]
    fn every_process_but_0_has_a_metrics_address_unless_one_is_set() {
        let mut c = PipelineConfig::default();
        assert_eq!(c.server.metrics_addr(0), None, "process 0: with the API");
        assert_eq!(
            c.server.metrics_addr(2),
            Some(SocketAddr::from(([127, 0, 0, 1], 8092)))
        );
        c.server.http = SocketAddr::from(([127, 0, 0, 1], 65_535));
        c.timely.processes = 2;
        c.timely.process = 1;
        c.timely.hostfile = Some("hosts.txt".into());
        assert_eq!(c.server.metrics_addr(1), None, "no port 65536");
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains("server.metrics"), "{error}");
        let set = SocketAddr::from(([0, 0, 0, 0], 9464));
        c.server.metrics = Some(set);
        c.validate().unwrap();
        assert_eq!(c.server.metrics_addr(0), Some(set), "every process, 0 too");
        assert_eq!(c.server.metrics_addr(1), Some(set));
    }

    #[test]
    fn the_example_config_is_valid_and_shows_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.example.toml");
        let c = PipelineConfig::load(Some(&file)).unwrap();
        let d = PipelineConfig::default();
        assert_eq!(c.clock.epoch_ms, d.clock.epoch_ms);
        assert_eq!(c.sink.transactional_id, d.sink.transactional_id);
        assert_eq!(
            c.source.statistics_interval_ms,
            d.source.statistics_interval_ms
        );
        assert_eq!(c.server.http, d.server.http);
        let hosts = Path::new(env!("CARGO_MANIFEST_DIR")).join("hosts.example");
        let t = TimelyConfig {
            workers: 2,
            processes: 2,
            process: 1,
            hostfile: Some(hosts),
        };
        assert!(t.timely_config().is_ok(), "the example hostfile parses");
    }

    #[test]
    fn toml_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pipeline.toml");
        std::fs::write(
            &file,
            "[clock]\nepoch_ms = 25\n[topics]\nprefix = \"x-\"\n[timely]\nworkers = 3\n",
        )
        .unwrap();
        let c = PipelineConfig::load(Some(&file)).unwrap();
        assert_eq!(c.clock.epoch_ms, 25);
        assert_eq!(c.clock.slack_ms, 500);
        assert_eq!(c.timely.workers, 3);
        assert_eq!(c.topic_names().dlq, "x-inventory-service.dlq");
        assert!(PipelineConfig::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
    fn env_layers_security_and_errors_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            // Hermetic: `make test` exports KAFKA_BOOTSTRAP, KAFKA_CLIENT_CONFIG, REGISTRY_URL.
            jail.clear_env();
            jail.create_file("p.toml", "[kafka]\nbootstrap = \"file:9092\"\n")?;
            jail.set_env("PIPELINE_CONFIG", "p.toml");
            jail.set_env("KAFKA_CLIENT_CONFIG", "/run/secrets/inventory.conf");
            jail.set_env("PIPELINE__SERVER__SECURITY__TLS__CERT", "/tls/tls.crt");
            jail.set_env("PIPELINE__SERVER__SECURITY__TLS__KEY", "/tls/tls.key");
            jail.set_env("PIPELINE__TELEMETRY__FORMAT", "json");
            let c = PipelineConfig::load(None).unwrap();
            assert_eq!(c.kafka.bootstrap, "file:9092");
            assert_eq!(
                c.kafka.client_id, SERVICE_NAME,
                "kept under a partial [kafka]"
            );
            assert_eq!(
                c.kafka.client_config_file.as_deref(),
                Some(Path::new("/run/secrets/inventory.conf"))
            );
            let tls = c.server.security.tls.clone().unwrap();
            assert_eq!(tls.cert, Path::new("/tls/tls.crt"));
            assert!(c.server.security.api_keys.is_empty());
            assert_eq!(c.telemetry.format, servicekit::LogFormat::Json);
            // (A bad value in a file, not the environment: the other tests of this
            // binary run concurrently and read the environment too.)
            jail.create_file("bad.toml", "[clock]\nepoch_ms = \"soon\"\n")?;
            let error = PipelineConfig::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(error.contains("clock.epoch_ms"), "{error}");
            assert!(error.contains("bad.toml"), "{error}");
            Ok(())
        });
    }
}
