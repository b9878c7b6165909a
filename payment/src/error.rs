//! The one error type of the service library, [`PaymentError`].
//!
//! Errors here are the ones that *end a run*: a bad configuration, a missing topic or
//! schema, a fenced producer, a fatal consumer error. Everything a single record can do
//! wrong (bad bytes, a decline, a gateway outage) is handled inside the loop and never
//! surfaces as a `PaymentError`: bad data goes to the DLQ, declines become
//! `payment.failed`, transient failures are retried, and a transaction that failed in
//! an abortable way is aborted and re-run.

use eventbus::kafka::KafkaError;
use eventbus::{BusError, TxnError};

/// Why the Payment Service stopped (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The configuration could not be loaded or is not usable.
    #[error("configuration: {0}")]
    Config(String),

    /// The deployment is not set up for the service: a topic is missing, partition
    /// counts differ, a schema is not registered. An operator must act.
    #[error("setup: {0}")]
    Setup(String),

    /// An eventbus call failed in a way the service cannot get past (registry refused
    /// a schema, a client could not be created).
    #[error(transparent)]
    Bus(#[from] BusError),

    /// A Kafka call failed fatally.
    #[error("kafka {operation}: {source}")]
    Kafka {
        /// What was attempted.
        operation: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },

    /// Another producer with the same `transactional.id` (or another consumer with the
    /// same `group.instance.id`) took over: this instance is a zombie and must stop.
    /// The newer instance owns the partitions; nothing was or will be committed twice.
    #[error("{client} fenced: {source}; a newer instance with the same instance id has taken over")]
    Fenced {
        /// Which client was fenced: `transactional producer` or `consumer`.
        client: &'static str,
        /// The client's error.
        #[source]
        source: KafkaError,
    },

    /// The transactional producer cannot go on (a fatal error, or an abort that itself
    /// failed); a restart's `init_transactions` cleans up. (An abortable failure never
    /// gets here: the batch is rewound and retried.)
    #[error(transparent)]
    Transaction(TxnError),

    /// The HTTP listener failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),

    /// A task of the service panicked or was cancelled.
    #[error("task: {0}")]
    Task(String),
}

impl From<TxnError> for PaymentError {
    fn from(e: TxnError) -> Self {
        match e {
            TxnError::Fenced(source) => PaymentError::Fenced {
                client: "transactional producer",
                source,
            },
            other => PaymentError::Transaction(other),
        }
    }
}

impl PaymentError {
    pub(crate) fn kafka(operation: impl Into<String>, source: KafkaError) -> Self {
        PaymentError::Kafka {
            operation: operation.into(),
            source,
        }
    }
}
