//! The one librdkafka client context every client of this crate uses.
//!
//! Following Materialize's `kafka-util`, librdkafka's own channels are routed into the
//! service's observability instead of stderr:
//! - **logs** go to `tracing` under target `librdkafka`, at the matching level, with
//!   the client name and facility as fields;
//! - **statistics** (every `statistics.interval.ms`) set the `eventbus_consumer_lag`
//!   gauge per group, topic and partition;
//! - **global errors** (all brokers down, authentication) are logged once with their
//!   [`Fault`](crate::Fault): transient transport errors at WARN, others at ERROR;
//! - **rebalances** are recorded so that the consumer runner can drop the retry state of
//!   partitions it no longer owns, and newly assigned partitions are resumed (a pause
//!   from an earlier ownership must not stall them).

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::error::BusError;
use crate::metrics::BusMetrics;

/// A partition as `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// A change of a consumer's assignment, as seen by [`BusContext`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentChange {
    /// These partitions were taken away.
    Revoked(Vec<TopicPartition>),
    /// These partitions were given to the consumer.
    Assigned(Vec<TopicPartition>),
}

/// The shared `ClientContext` (and `ConsumerContext`) of every client of this crate.
#[derive(Clone)]
pub struct BusContext {
    name: String,
    group: Option<String>,
    metrics: BusMetrics,
    changes: Arc<Mutex<Vec<AssignmentChange>>>,
}

impl BusContext {
    /// A context for a client named `name` (for logs), in consumer group `group` if any.
    pub fn new(name: impl Into<String>, group: Option<String>, metrics: BusMetrics) -> Self {
        BusContext {
            name: name.into(),
            group,
            metrics,
            changes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The assignment changes since the last call, oldest first.
    pub fn take_assignment_changes(&self) -> Vec<AssignmentChange> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, change: AssignmentChange) {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change);
    }
}

/// Routes one librdkafka log line into `tracing` (target `librdkafka`, fields `client`
/// and `facility`) at the matching level. Every client context of the project uses this,
/// including ones that cannot be a [`BusContext`] (the pipeline's transactional sink).
pub fn log_to_tracing(client: &str, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", client, facility = fac, "{log_message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", client, facility = fac, "{log_message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", client, facility = fac, "{log_message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", client, facility = fac, "{log_message}")
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for BusContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(&self.name, level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        // Only consumers report a lag; producers' partitions carry -1.
        if statistics.client_type != "consumer" {
            return;
        }
        let group = self.group.as_deref().unwrap_or("");
        for (topic, t) in &statistics.topics {
            for p in t.partitions.values() {
                // Partition -1 is librdkafka's internal "unassigned" partition; a lag of -1
                // means "not known yet" (no committed offset or no high watermark).
                if p.partition < 0 || p.consumer_lag < 0 || !p.desired {
                    continue;
                }
                self.metrics
                    .consumer_lag
                    .with_label_values(&[group, topic, &p.partition.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is a notification for readers that asked for it
        // (`enable.partition.eof`), not a failure.
        if matches!(error, KafkaError::PartitionEOF(_))
            || matches!(&error, KafkaError::Global(code) if *code == rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            tracing::debug!(target: "librdkafka", client = %self.name, "{error}: {reason}");
            return;
        }
        let e = BusError::kafka("client", error);
        let fault = e.fault().as_str();
        if e.is_retriable() {
            tracing::warn!(target: "librdkafka", client = %self.name, fault, "{e}: {reason}");
        } else {
            tracing::error!(target: "librdkafka", client = %self.name, fault, "{e}: {reason}");
        }
    }
}

impl ConsumerContext for BusContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(client = %self.name, partitions = ?partitions(tpl), "partitions revoked");
            self.record(AssignmentChange::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(client = %self.name, partitions = ?partitions(tpl), "partitions assigned");
                // A partition paused for a backoff while we owned it before would stay
                // paused; a new assignment starts clean.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::debug!(client = %self.name, "resume after assignment: {e}");
                }
                self.record(AssignmentChange::Assigned(partitions(tpl)));
            }
            Rebalance::Error(e) => tracing::warn!(client = %self.name, "rebalance error: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => {
                tracing::trace!(client = %self.name, offsets = ?partitions(offsets), "offsets committed")
            }
            // "No offset" means nothing new was stored since the last commit.
            Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(client = %self.name, "offset commit failed: {e}"),
        }
    }
}
