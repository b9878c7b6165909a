//! The one error type of the library.
//!
//! Every error that stops the job is a [`PipelineError`]. A bad *record* is never one of
//! them: an undecodable or invalid input record is data for the dead-letter queue (see
//! [`crate::source`]), so nothing an upstream producer writes can stop the job. What does
//! stop it is a broken deployment (a missing topic, an unregistered schema, a corrupt
//! progress topic), an unreachable cluster at start-up, or a Kafka transaction that
//! failed fatally; the binary then exits non-zero and the operator (or Kubernetes)
//! restarts it, which is safe because the restart path is exactly-once.

use eventbus::BusError;
use eventbus::kafka::KafkaError;

/// Every error of the pipeline library.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration is invalid (bad value, unreadable file, bad timely arguments).
    #[error("configuration: {0}")]
    Config(String),

    /// The deployment is not set up for the job: a topic is missing, or a schema the
    /// sink writes is not registered. An operator must act; restarting will not help.
    #[error("setup: {0}")]
    Setup(String),

    /// A Kafka client call failed.
    #[error("kafka {operation}: {source}")]
    Kafka {
        /// What was attempted.
        operation: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },

    /// The eventbus layer (registry, codec) failed.
    #[error(transparent)]
    Bus(#[from] BusError),

    /// The progress topic holds something the job cannot use (unparseable record,
    /// epochs out of order). The exactly-once state is unknown: the job refuses to run.
    #[error("progress topic {topic}: {message}")]
    Progress {
        /// The progress topic.
        topic: String,
        /// What is wrong.
        message: String,
    },

    /// A Kafka transaction of the sink failed and could not be retried.
    #[error("sink transaction for epoch {epoch}: {message}")]
    Transaction {
        /// The last epoch of the failed transaction.
        epoch: u64,
        /// The client's error.
        message: String,
    },

    /// The HTTP or gRPC server could not start or failed.
    #[error("server: {0}")]
    Server(String),

    /// A thread of the job panicked or a worker failed.
    #[error("worker: {0}")]
    Worker(String),
}

impl PipelineError {
    /// A Kafka error with the operation that failed.
    pub fn kafka(operation: impl Into<String>, source: KafkaError) -> Self {
        PipelineError::Kafka {
            operation: operation.into(),
            source,
        }
    }
}
