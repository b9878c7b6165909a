//! One error type for the whole layer, and what the caller should do about it.
//!
//! Modelled on Arroyo's errors: every error knows *whose fault* it is ([`Fault`]) and
//! *whether trying again can help* ([`BusError::is_retriable`]). The consumer runner and
//! the DLQ code decide from these two facts alone, never from message text:
//!
//! | fault | retriable | what happens in a consumer |
//! |---|---|---|
//! | [`Fault::Data`] | no | the record goes to the DLQ at once (`undecodable`, `unknown-schema`, `schema-invalid`) |
//! | [`Fault::Infrastructure`] | yes | the partition is paused and the step is retried with backoff, without limit: a broker or registry outage must not empty a topic into its DLQ |
//! | [`Fault::Setup`] | no | the service should stop and tell the operator what to run (missing topic, unregistered schema) |
//!
//! Data faults are logged at WARN (somebody else's bad record is not our outage);
//! infrastructure faults at WARN while retried, ERROR only when they end a run.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use schemas::{SchemaError, Violations};

use crate::acl::AclError;
use crate::admin::AdminError;
use crate::transaction::TxnError;

/// Whose fault an error is. Decides logging level and what a consumer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The event or record itself is wrong (invalid, undecodable, unknown schema):
    /// retrying cannot help, the producer or the data must change.
    Data,
    /// A broker, the registry or the network failed or timed out: retrying can help.
    Infrastructure,
    /// The deployment is not set up for this call (a missing topic, an unregistered or
    /// incompatible schema, a bad configuration): an operator must act.
    Setup,
}

impl Fault {
    /// A short stable name for labels and logs: `data`, `infrastructure`, `setup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Data => "data",
            Fault::Infrastructure => "infrastructure",
            Fault::Setup => "setup",
        }
    }

    /// Whose fault a Kafka client error is: authorization, unknown topics and refused
    /// settings are setup; records the broker refuses are data; the rest infrastructure.
    pub fn of_kafka(error: &KafkaError) -> Fault {
        if kafka_is_setup_error(error) {
            Fault::Setup
        } else if kafka_is_data_error(error) {
            Fault::Data
        } else {
            Fault::Infrastructure
        }
    }
}

/// The hint every "schema is not there" error carries.
pub const REGISTER_HINT: &str =
    "run `make schemas` (or `busctl schemas register`) to register the project's schemas";

/// Every error of the eventbus library: the crate's one public error type. Errors with
/// structure of their own ([`AdminError`], [`AclError`], [`TxnError`], [`SchemaError`])
/// are nested as variants, each kept as the variant's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The event breaks its domain rules or does not fit its Avro schema. Nothing was sent.
    #[error("invalid event: {0}")]
    Invalid(#[source] Violations),

    /// The record's framing is wrong (no value, no magic byte, a short header): there is
    /// nothing to decode, so no deeper cause.
    #[error("cannot decode record: {0}")]
    Decode(String),

    /// The Avro bytes (or a schema's text) could not be turned into a value or an event.
    #[error("cannot decode record: {0}")]
    Codec(#[from] SchemaError),

    /// The record names a schema id the registry does not know.
    #[error("unknown schema id {id}: the registry has no such schema")]
    UnknownSchema {
        /// The schema id from the record's wire header.
        id: u32,
    },

    /// The schema of an event is not registered under its subject.
    #[error("schema for subject {subject} is not registered; {hint}")]
    NotRegistered {
        /// The subject, `<topic>-value`.
        subject: String,
        /// What to run.
        hint: &'static str,
    },

    /// The schema of an event is registered, but the registry says it cannot be
    /// registered as the subject's next version (or was refused when registering).
    #[error(
        "schema for subject {subject} is not compatible with the registered versions: {message}; {hint}"
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// The registry's explanation.
        message: String,
        /// What to run.
        hint: &'static str,
    },

    /// The registry answered with an error or could not be reached.
    #[error("schema registry {operation}: {message}")]
    Registry {
        /// What was asked, e.g. `GET /schemas/ids/7`.
        operation: String,
        /// HTTP status, if the registry answered at all.
        status: Option<u16>,
        /// The registry's error text, or the transport error's.
        message: String,
        /// The transport or parsing error, when there is one (not for an error answer).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// A Kafka client call failed.
    #[error("kafka {operation}: {error}")]
    Kafka {
        /// What was attempted, e.g. `produce to payment-service.dlq`.
        operation: String,
        /// The client's error.
        #[source]
        error: KafkaError,
    },

    /// The configuration is not usable (a rule of ours, no deeper cause).
    #[error("configuration: {0}")]
    Config(String),

    /// A duration setting is not a number followed by `ms`, `s` or `m`.
    #[error("not a duration: {text:?} (a whole number followed by ms, s or m; no unit is ms)")]
    Duration {
        /// The text given.
        text: String,
        /// Why the number part did not parse, if that was the problem (else the unit).
        #[source]
        source: Option<std::num::ParseIntError>,
    },

    /// A file could not be read or written.
    #[error("{operation}: {source}")]
    Io {
        /// What was attempted, with the path, e.g. `read deploy/topics.toml`.
        operation: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A blocking task that ran a client call panicked or was cancelled.
    #[error("{operation} task: {source}")]
    Task {
        /// What the task was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },

    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    /// A topic the service needs does not exist (automatic creation is off).
    #[error("topic {0} does not exist: run `make up` (busctl topics apply) to create the topics")]
    MissingTopic(String),

    /// A service a call needs (the cluster, the registry) does not answer at all.
    #[error("{what} does not answer ({source}); {hint}")]
    Unavailable {
        /// What does not answer, with its address.
        what: String,
        /// What to do about it.
        hint: &'static str,
        /// The failed call.
        #[source]
        source: Box<BusError>,
    },

    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),

    /// A topic administration step failed (topic list, apply, readiness).
    #[error(transparent)]
    Admin(#[from] AdminError),

    /// The ACL file is not usable.
    #[error(transparent)]
    Acl(#[from] AclError),

    /// A transactional step failed; the [`TxnError`] says whether to abort, stop or give up.
    #[error(transparent)]
    Transaction(#[from] TxnError),
}

impl BusError {
    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            BusError::Invalid(_)
            | BusError::Decode(_)
            | BusError::Codec(_)
            | BusError::UnknownSchema { .. } => Fault::Data,
            BusError::NotRegistered { .. }
            | BusError::Incompatible { .. }
            | BusError::Config(_)
            | BusError::Duration { .. }
            | BusError::Metrics(_)
            | BusError::Acl(_)
            | BusError::MissingTopic(_) => Fault::Setup,
            BusError::Registry { status, .. } => match status {
                // 4xx other than timeouts and throttling: our request is wrong or the thing
                // does not exist; the caller maps 404s to the specific variants above.
                Some(s) if (400..500).contains(s) && *s != 408 && *s != 429 => Fault::Setup,
                _ => Fault::Infrastructure,
            },
            BusError::Kafka { error, .. } => Fault::of_kafka(error),
            BusError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Fault::Setup,
                _ => Fault::Infrastructure,
            },
            BusError::Task { .. } | BusError::Timeout(_) | BusError::Unavailable { .. } => {
                Fault::Infrastructure
            }
            BusError::Admin(e) => e.fault(),
            BusError::Transaction(e) => e.fault(),
        }
    }

    /// Whether the same call may succeed if tried again later.
    pub fn is_retriable(&self) -> bool {
        match self {
            BusError::Kafka { error, .. } => kafka_is_retriable(error),
            BusError::Transaction(e) => matches!(e, TxnError::Abortable(_)),
            // A task that panicked panics again.
            BusError::Task { source, .. } => source.is_cancelled(),
            other => other.fault() == Fault::Infrastructure,
        }
    }

    /// The violations, if this is [`BusError::Invalid`].
    pub fn violations(&self) -> Option<&Violations> {
        match self {
            BusError::Invalid(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn kafka(operation: impl Into<String>, error: KafkaError) -> Self {
        BusError::Kafka {
            operation: operation.into(),
            error,
        }
    }

    pub(crate) fn io(operation: impl Into<String>) -> impl Fn(std::io::Error) -> Self {
        let operation = operation.into();
        move |source| BusError::Io {
            operation: operation.clone(),
            source,
        }
    }

    pub(crate) fn task(operation: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| BusError::Task { operation, source }
    }
}

impl From<Violations> for BusError {
    fn from(v: Violations) -> Self {
        BusError::Invalid(v)
    }
}

/// An error and its causes as one line, `outer: cause: root`, for logs, exit messages
/// and DLQ headers. A cause whose text the line already holds (an error that prints its
/// source in its own message) is not repeated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Error codes for which the same request may succeed later (leader elections,
/// timeouts, brokers restarting, too few in-sync replicas for `acks=all`).
fn kafka_is_retriable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    if let KafkaError::Transaction(err) = e {
        return err.is_retriable();
    }
    if matches!(e, KafkaError::Canceled) {
        return false;
    }
    match e.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            C::MessageTimedOut
                | C::QueueFull
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::OperationTimedOut
                | C::TimedOutQueue
                | C::Retry
                | C::WaitCache
                | C::WaitingForCoordinator
                | C::InProgress
                | C::RequestTimedOut
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::BrokerNotAvailable
                | C::ReplicaNotAvailable
                | C::NetworkException
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::KafkaStorageError
                | C::FencedLeaderEpoch
                | C::UnknownLeaderEpoch
                | C::RebalanceInProgress
                | C::ThrottlingQuotaExceeded
                | C::PreferredLeaderNotAvailable
                | C::EligibleLeadersNotAvailable
                | C::ISRInsufficient
        ),
        None => false,
    }
}

/// Errors an operator must fix: the topic does not exist (auto creation is off in
/// this project), access is denied, the configuration is refused.
fn kafka_is_setup_error(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    if matches!(
        e,
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) | KafkaError::Subscription(_)
    ) {
        return true;
    }
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::UnknownTopic
                | C::UnknownTopicOrPartition
                | C::UnknownPartition
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
                | C::InvalidConfig
                | C::InvalidRequiredAcks
                | C::InvalidTopic
                | C::UnsupportedCompressionType
        )
    )
}

/// Errors caused by the record itself (too large, refused by the broker's checks).
fn kafka_is_data_error(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidRecord
                | C::InvalidMessage
                | C::InvalidTimestamp
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_retries() {
        let timeout = BusError::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert_eq!(timeout.fault(), Fault::Infrastructure);
        assert!(timeout.is_retriable());

        let missing = BusError::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition),
        );
        assert_eq!(missing.fault(), Fault::Setup);
        assert!(!missing.is_retriable());

        let too_big = BusError::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert_eq!(too_big.fault(), Fault::Data);
        assert!(!too_big.is_retriable());

        let invalid = BusError::Invalid(Violations::default());
        assert_eq!(invalid.fault(), Fault::Data);
        assert!(!invalid.is_retriable());

        let down = BusError::Registry {
            operation: "GET /subjects".into(),
            status: None,
            message: "connection refused".into(),
            source: None,
        };
        assert!(down.is_retriable());
        let bad = BusError::Registry {
            operation: "POST /subjects/x".into(),
            status: Some(422),
            message: "bad schema".into(),
            source: None,
        };
        assert_eq!(bad.fault(), Fault::Setup);
        assert!(!bad.is_retriable());
        let overloaded = BusError::Registry {
            operation: "GET /schemas/ids/1".into(),
            status: Some(503),
            message: "".into(),
            source: None,
        };
        assert!(overloaded.is_retriable());

        let unregistered = BusError::NotRegistered {
            subject: "a-value".into(),
            hint: REGISTER_HINT,
        };
        assert!(unregistered.to_string().contains("make schemas"));
        assert!(!unregistered.is_retriable());
    }
}
