//! The one error type of the service library, [`PaymentError`].
//!
//! Errors here are the ones that *end a run*: a bad configuration, a missing topic or
//! schema, a fenced producer, a fatal consumer error. Everything a single record can do
//! wrong (bad bytes, a decline, a gateway outage) is handled inside the loop and never
//! surfaces as a `PaymentError`: bad data goes to the DLQ, declines become
//! `payment.failed`, transient failures are retried, and a transaction that failed in
//! an abortable way is aborted and re-run.
//!
//! Every variant keeps its cause as its `source()`, and [`PaymentError::fault`] answers
//! with eventbus's [`Fault`], so the binary (and an operator) can tell a deployment
//! problem from an outage without reading message text.

use eventbus::kafka::KafkaError;
use eventbus::{BusError, Fault, TxnError};
use servicekit::ConfigError;

/// Why the Payment Service stopped (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The configuration could not be loaded or breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The simulated gateway's ledger file could not be read or opened.
    #[error("simulated gateway ledger {path}: {source}")]
    Ledger {
        /// The ledger file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A topic the service reads or writes does not exist (automatic topic creation is
    /// off), or this principal may not see it.
    #[error(
        "topic {topic}: {source}; create the topics with `make up` / `busctl topics apply`, and check the principal's ACLs (deploy/acls.toml)"
    )]
    Topic {
        /// The topic.
        topic: String,
        /// What the metadata request answered.
        #[source]
        source: Box<BusError>,
    },

    /// An outcome topic does not have as many partitions as `order.created`: outcomes go
    /// to their order's partition number, so the counts must match.
    #[error(
        "{output} has {output_partitions} partitions but {input} has {input_partitions}: the order and payment topics must have one partition count (outcomes go to their order's partition)"
    )]
    PartitionMismatch {
        /// The outcome topic.
        output: String,
        /// Its partition count.
        output_partitions: i32,
        /// `order.created`.
        input: String,
        /// Its partition count.
        input_partitions: i32,
    },

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

    /// The transactional producer was fenced or failed fatally more often within the
    /// re-initialisation window than [`crate::config::TransactionConfig::reinit_limit`]
    /// allows, each time replaced by a new one (see [`crate::recovery`]). Repeated
    /// fencing is a second live instance with the same instance id.
    #[error(
        "transactional producer {transactional_id} failed {failures} times within {window:?} \
         (replaced by a new one each time); another live instance with the same instance id \
         (transactional.id) keeps fencing it, or the cluster keeps aborting its transactions: \
         make instance ids unique, then restart. Last failure: {source}"
    )]
    ReinitsExhausted {
        /// The `transactional.id`.
        transactional_id: String,
        /// Failures within the window.
        failures: u32,
        /// The window.
        window: std::time::Duration,
        /// The last failure.
        #[source]
        source: Box<PaymentError>,
    },

    /// The transactional producer cannot go on (a fatal error, or an abort that itself
    /// failed); a restart's `init_transactions` cleans up. (An abortable failure never
    /// gets here: the batch is rewound and retried.)
    #[error(transparent)]
    Transaction(TxnError),

    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    /// The HTTP listener failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),

    /// A blocking task of the service panicked or was cancelled.
    #[error("{operation} task: {source}")]
    Task {
        /// What the task was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },

    /// A thread of the service panicked (the panic message went to stderr).
    #[error("{0} panicked")]
    Panicked(&'static str),
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

    pub(crate) fn task(operation: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| PaymentError::Task { operation, source }
    }

    /// Whose fault the error is, in eventbus's terms: [`Fault::Setup`] for what an
    /// operator must fix (configuration, topics, a second instance with our id),
    /// [`Fault::Infrastructure`] for the cluster or the process failing.
    pub fn fault(&self) -> Fault {
        match self {
            PaymentError::Config(_)
            | PaymentError::Ledger { .. }
            | PaymentError::Topic { .. }
            | PaymentError::PartitionMismatch { .. }
            | PaymentError::Fenced { .. }
            | PaymentError::Metrics(_) => Fault::Setup,
            PaymentError::Bus(e) => e.fault(),
            PaymentError::Kafka { source, .. } => Fault::of_kafka(source),
            PaymentError::Transaction(e) => e.fault(),
            PaymentError::ReinitsExhausted { source, .. } => source.fault(),
            PaymentError::Http(_) | PaymentError::Task { .. } | PaymentError::Panicked(_) => {
                Fault::Infrastructure
            }
        }
    }

    /// Whether starting the service again may get past the error without an operator.
    pub fn is_retriable(&self) -> bool {
        match self {
            PaymentError::Bus(e) => e.is_retriable(),
            other => other.fault() == Fault::Infrastructure,
        }
    }
}
