//! The one error type of the library, [`PipelineError`], and the detail of a bad progress
//! topic, [`ProgressError`], which it carries as a cause.
//!
//! Every error that stops the job is a [`PipelineError`]. A bad *record* is never one of
//! them: an undecodable or invalid input record is data for the dead-letter queue (see
//! [`crate::source`]), so nothing an upstream producer writes can stop the job. What does
//! stop it is a broken deployment (a missing topic, an unregistered schema, a corrupt
//! progress topic, a bad setting), an unreachable cluster at start-up, or a Kafka
//! transaction that failed fatally; the binary then exits non-zero and the operator (or
//! Kubernetes) restarts it, which is safe because the restart path is exactly-once.
//!
//! Each variant keeps what caused it as its `source()` (print the whole chain with
//! `eventbus::error::chain`), and [`PipelineError::fault`] answers with eventbus's
//! [`Fault`]: `Setup` (an operator must act: restarting will not help), or
//! `Infrastructure` (a broker, the registry or the machine failed: a restart may).

use std::net::SocketAddr;
use std::time::Duration;

use eventbus::kafka::KafkaError;
use eventbus::transaction::TxnError;
use eventbus::{BusError, Fault};

/// Every error of the pipeline library.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration could not be loaded (an unreadable file, a value of the wrong
    /// type); the cause names the key and where its value came from.
    #[error("configuration: {0}")]
    ConfigLoad(#[source] Box<servicekit::ConfigError>),

    /// A setting breaks a rule of the job (no cause: the value itself is wrong).
    #[error("configuration: {key}: {problem}")]
    InvalidSetting {
        /// The setting, as written in the file (`clock.epoch_ms`).
        key: &'static str,
        /// What is wrong with its value.
        problem: String,
    },

    /// `[server.security]` could not be loaded (TLS files, API keys).
    #[error("configuration: server.{0}")]
    ApiSecurity(#[source] Box<servicekit::Error>),

    /// timely refused its arguments or could not start its workers or connect its
    /// processes.
    #[error("timely: {0}")]
    Timely(#[source] TimelyError),

    /// An input topic does not exist. An operator must create it.
    #[error(
        "input topic {topic} does not exist; create the topics from deploy/topics.toml (busctl topics apply)"
    )]
    MissingInput {
        /// The topic (with its prefix).
        topic: String,
    },

    /// The progress topic is missing or has another partition count than one.
    #[error(
        "progress topic {topic} must exist with exactly one partition (found {partitions}); create it from deploy/topics.toml"
    )]
    ProgressTopicShape {
        /// The topic.
        topic: String,
        /// Its partitions (0: missing).
        partitions: i32,
    },

    /// An input partition ends before the offset the progress topic says was committed:
    /// the topic was recreated or truncated, and the state cannot be rebuilt.
    #[error(
        "input {topic}/{partition} ends at offset {end}, but offset {committed} was committed: the topic was recreated or truncated, the job's state cannot be rebuilt"
    )]
    InputTruncated {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Its high watermark.
        end: i64,
        /// The committed upper from the progress topic.
        committed: i64,
    },

    /// With snapshots on, an input partition no longer holds records the state needs:
    /// neither a snapshot nor the topic covers them (retention deleted them).
    #[error(
        "input {topic}/{partition} starts at offset {earliest}, but the state needs offsets from {needed} ({missing} records deleted by retention, not covered by a snapshot); restore the topic or a snapshot that covers offset {earliest}, or start a new job"
    )]
    RetentionGap {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first offset the state needs (the snapshot's offset; 0 without one).
        needed: i64,
        /// The partition's earliest offset.
        earliest: i64,
        /// `earliest - needed`.
        missing: i64,
    },

    /// The snapshot store could not be read or written.
    #[error("snapshot store {store}: {source}")]
    Snapshot {
        /// The store (topic or directory).
        store: String,
        /// What failed.
        #[source]
        source: Box<SnapshotError>,
    },

    /// The schema the sink writes is not registered.
    #[error("the sink cannot write stock.updated: {source}")]
    SchemaNotRegistered {
        /// The registry subject.
        subject: String,
        /// The registry's answer.
        #[source]
        source: Box<BusError>,
    },

    /// A Kafka client call failed.
    #[error("kafka {operation}: {source}")]
    Kafka {
        /// What was attempted.
        operation: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },

    /// The eventbus layer (clients, registry, codec) failed. (Boxed, as the other large
    /// causes: errors travel by value through every `?`.)
    #[error(transparent)]
    Bus(Box<BusError>),

    /// The progress topic holds something the job cannot use. The exactly-once state is
    /// unknown: the job refuses to run.
    #[error("progress topic {topic}: {source}")]
    Progress {
        /// The progress topic.
        topic: String,
        /// What is wrong.
        #[source]
        source: ProgressError,
    },

    /// A Kafka transaction of the sink failed and could not be redone.
    #[error("sink transaction for epoch {epoch} (attempt {attempt}): {source}")]
    Transaction {
        /// The last epoch of the failed transaction.
        epoch: u64,
        /// The attempt that failed.
        attempt: u32,
        /// The producer's error (of the abort, if aborting failed too).
        #[source]
        source: TxnError,
    },

    /// A listening port could not be bound (taken, not allowed).
    #[error("bind {what} {addr}: {source}")]
    Bind {
        /// `HTTP`, `gRPC` or `metrics`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// A server could not be set up (TLS acceptor, gRPC TLS, reflection).
    #[error("{what}: {source}")]
    Server {
        /// Which part.
        what: &'static str,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A thread or a runtime could not be started.
    #[error("start {what}: {source}")]
    Spawn {
        /// The thread or runtime.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// A thread of the job panicked (a bug: the panic message is in the log).
    #[error("the {thread} thread panicked")]
    Panicked {
        /// Which thread.
        thread: String,
    },

    /// The connection to a peer process of a multi-process job closed (the peer died):
    /// the job stops (fail-stop); restart every process of it.
    #[error(
        "a peer process of the job was lost (timely's connection closed): restart every process of the job"
    )]
    PeerLost,
}

impl From<BusError> for PipelineError {
    fn from(error: BusError) -> Self {
        PipelineError::Bus(Box::new(error))
    }
}

impl PipelineError {
    /// A Kafka error with the operation that failed.
    pub fn kafka(operation: impl Into<String>, source: KafkaError) -> Self {
        PipelineError::Kafka {
            operation: operation.into(),
            source,
        }
    }

    /// A setting that breaks a rule.
    pub fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        PipelineError::InvalidSetting {
            key,
            problem: problem.into(),
        }
    }

    /// Whether the configuration is at fault (the binary exits with 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            PipelineError::ConfigLoad(_)
                | PipelineError::InvalidSetting { .. }
                | PipelineError::ApiSecurity(_)
        )
    }

    /// Whose fault it is, in eventbus's terms: `Setup` when an operator must act
    /// (configuration, topics, schemas, the progress topic, a port taken, a fenced
    /// producer), else what the Kafka or eventbus error says, else `Infrastructure`.
    pub fn fault(&self) -> Fault {
        match self {
            PipelineError::ConfigLoad(_)
            | PipelineError::InvalidSetting { .. }
            | PipelineError::ApiSecurity(_)
            | PipelineError::MissingInput { .. }
            | PipelineError::ProgressTopicShape { .. }
            | PipelineError::InputTruncated { .. }
            | PipelineError::RetentionGap { .. }
            | PipelineError::SchemaNotRegistered { .. }
            | PipelineError::Progress { .. }
            | PipelineError::Bind { .. } => Fault::Setup,
            PipelineError::Kafka { source, .. } => Fault::of_kafka(source),
            PipelineError::Bus(e) => e.fault(),
            PipelineError::Transaction { source, .. } => source.fault(),
            PipelineError::Timely(_)
            | PipelineError::Snapshot { .. }
            | PipelineError::Server { .. }
            | PipelineError::Spawn { .. }
            | PipelineError::Panicked { .. }
            | PipelineError::PeerLost => Fault::Infrastructure,
        }
    }
}

/// What is wrong with the progress topic's contents.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// A record is not JSON of the progress record's shape.
    #[error("not a progress record: {0}")]
    Parse(#[source] serde_json::Error),
    /// A record has a format version this job does not read.
    #[error("progress format {found} is not the supported {supported}")]
    Format {
        /// The record's version.
        found: u32,
        /// The job's.
        supported: u32,
    },
    /// Epochs do not grow strictly: the topic is not one this job wrote.
    #[error("epoch {time} committed after epoch {last}")]
    EpochOrder {
        /// The later record's epoch.
        time: u64,
        /// The epoch before it.
        last: u64,
    },
    /// A partition's committed upper went down.
    #[error(
        "upper of topic {topic} partition {partition} went from {previous} to {upper} at epoch {time}"
    )]
    UpperOrder {
        /// Input topic index.
        topic: u8,
        /// Partition.
        partition: i32,
        /// The upper before.
        previous: i64,
        /// The lower one after.
        upper: i64,
        /// The epoch that recorded it.
        time: u64,
    },
    /// The topic was not read to its end in time.
    #[error("not read to its end within {0:?}")]
    Timeout(Duration),
}

/// What went wrong with a snapshot: a reason to skip it for the previous one (when
/// loading) or to skip writing it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// bincode could not encode an entry or the manifest.
    #[error("encode: {0}")]
    Encode(#[source] bincode::error::EncodeError),
    /// A chunk or manifest does not decode.
    #[error("decode: {0}")]
    Decode(#[source] bincode::error::DecodeError),
    /// A checksum, a length or the set of chunks does not match.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A manifest of a format version this job does not read.
    #[error("snapshot format {found} is not the supported {supported}")]
    Format {
        /// The manifest's version.
        found: u32,
        /// The job's.
        supported: u32,
    },
    /// Reading or writing the directory store.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the Kafka store.
    #[error("{operation}: {source}")]
    Kafka {
        /// What was done.
        operation: String,
        /// Kafka's error.
        #[source]
        source: KafkaError,
    },
    /// The Kafka store's client could not be built.
    #[error("{0}")]
    Bus(#[source] Box<BusError>),
}

/// An error timely reported. timely's own API reports errors as text, which this
/// wraps so that it can be a `source()`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimelyError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn causes_are_kept_and_faults_classified() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let bind = PipelineError::Bind {
            what: "HTTP",
            addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            source: io,
        };
        assert_eq!(bind.fault(), Fault::Setup);
        assert!(
            bind.source()
                .is_some_and(|s| s.to_string() == "address in use")
        );
        let progress = PipelineError::Progress {
            topic: "p".into(),
            source: ProgressError::EpochOrder { time: 1, last: 2 },
        };
        assert_eq!(progress.fault(), Fault::Setup);
        assert!(progress.source().is_some());
        assert!(!progress.is_config());
        let timely = PipelineError::Timely(TimelyError("connect".into()));
        assert_eq!(timely.fault(), Fault::Infrastructure);
        assert!(PipelineError::invalid("clock.epoch_ms", "must be at least 1").is_config());
        assert_eq!(
            PipelineError::invalid("clock.epoch_ms", "must be at least 1").to_string(),
            "configuration: clock.epoch_ms: must be at least 1"
        );
    }
}
