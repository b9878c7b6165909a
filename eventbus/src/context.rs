//! The one librdkafka client context every client of this crate uses.
//!
//! Following Materialize's `kafka-util`, librdkafka's own channels are routed into the
//! service's observability instead of stderr:
//! - **logs** go to `tracing` under target `librdkafka`, at the matching level, with
//!   the client name and facility as fields;
//! - **statistics** (every `statistics.interval.ms`) set the `kafka_consumergroup_lag`
//!   gauge per group, topic and partition;
//! - **global errors** (all brokers down, authentication) are logged once with their
//!   [`Fault`](crate::Fault): transient transport errors at WARN, others at ERROR;
//! - **rebalances** are counted (`eventbus_rebalances_total{consumergroup,kind}`) and
//!   recorded so that the consumer runner can drop the retry state of
//!   partitions it no longer owns, and newly assigned partitions are resumed (a pause
//!   from an earlier ownership must not stall them);
//! - **statistics hooks** let a client that has no committed group offsets (the
//!   pipeline's `assign()`ed inputs, whose offsets live in its progress topic) compute
//!   its own lag from the same statistics;
//! - **delivery reports** of a [`BaseProducer`](rdkafka::producer::BaseProducer) are
//!   counted by [`Deliveries`], so a transactional producer can wait for exactly its
//!   in-flight records instead of `flush`ing in librdkafka's 100 ms steps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
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

/// A function that reads a client's statistics (see [`BusContext::with_stats_hook`]).
pub type StatsHook = Arc<dyn Fn(&Statistics) + Send + Sync>;

/// A function that sees a client's global errors (see [`BusContext::with_error_hook`]).
pub type ErrorHook = Arc<dyn Fn(&KafkaError, &str) + Send + Sync>;

/// Delivery reports of one producer: how many records are still in flight, and the
/// first delivery error since the last [`Deliveries::take_error`].
#[derive(Debug, Default)]
pub struct Deliveries {
    sent: AtomicU64,
    done: AtomicU64,
    error: Mutex<Option<KafkaError>>,
}

impl Deliveries {
    /// Counts one record handed to librdkafka.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::AcqRel);
    }

    /// Records handed to librdkafka whose delivery report has not arrived yet.
    pub fn in_flight(&self) -> u64 {
        let done = self.done.load(Ordering::Acquire);
        self.sent.load(Ordering::Acquire).saturating_sub(done)
    }

    /// The first delivery error since the last call, if any.
    pub fn take_error(&self) -> Option<KafkaError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn report(&self, result: Result<(), KafkaError>) {
        if let Err(e) = result {
            let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// The shared `ClientContext` (and `ConsumerContext`, `ProducerContext`) of every
/// Kafka client of the project.
#[derive(Clone)]
pub struct BusContext {
    name: String,
    group: Option<String>,
    metrics: BusMetrics,
    changes: Arc<Mutex<Vec<AssignmentChange>>>,
    stats_hook: Option<StatsHook>,
    error_hook: Option<ErrorHook>,
    deliveries: Arc<Deliveries>,
}

impl BusContext {
    /// A context for a client named `name` (for logs), in consumer group `group` if any.
    pub fn new(name: impl Into<String>, group: Option<String>, metrics: BusMetrics) -> Self {
        BusContext {
            name: name.into(),
            group,
            metrics,
            changes: Arc::new(Mutex::new(Vec::new())),
            stats_hook: None,
            error_hook: None,
            deliveries: Arc::new(Deliveries::default()),
        }
    }

    /// A context whose statistics go to `hook` as well (needs
    /// `statistics.interval.ms` > 0 in the client's settings).
    pub fn with_stats_hook(mut self, hook: StatsHook) -> Self {
        self.stats_hook = Some(hook);
        self
    }

    /// A context whose global errors (authentication, TLS, all brokers down) also go
    /// to `hook` with librdkafka's reason text: for readiness checks and tests that must
    /// tell *why* a client cannot connect.
    pub fn with_error_hook(mut self, hook: ErrorHook) -> Self {
        self.error_hook = Some(hook);
        self
    }

    /// The client's name in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The delivery reports of this context's producer.
    pub fn deliveries(&self) -> &Arc<Deliveries> {
        &self.deliveries
    }

    /// The assignment changes since the last call, oldest first.
    pub fn take_assignment_changes(&self) -> Vec<AssignmentChange> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Counts one rebalance event of kind `assigned`, `revoked` or `error`.
    fn count_rebalance(&self, kind: &str) {
        let group = self.group.as_deref().unwrap_or("");
        self.metrics
            .rebalances
            .with_label_values(&[group, kind])
            .inc();
    }

    /// Drops the lag series of partitions this consumer no longer owns, so a revoked
    /// partition does not keep showing its last lag (its new owner reports it).
    fn forget_lag(&self, revoked: &[TopicPartition]) {
        if let Some(group) = &self.group {
            for (topic, partition) in revoked {
                let _ = self.metrics.consumer_lag.remove_label_values(&[
                    group,
                    topic,
                    &partition.to_string(),
                ]);
            }
        }
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
        if let Some(hook) = &self.stats_hook {
            hook(&statistics);
        }
        // Only group consumers report a lag; producers' partitions carry -1.
        if statistics.client_type != "consumer" || self.group.is_none() {
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
        if let Some(hook) = &self.error_hook {
            hook(&error, reason);
        }
        // End of partition is a notification for readers that asked for it
        // (`enable.partition.eof`), not a failure.
        if matches!(error, KafkaError::PartitionEOF(_))
            || matches!(&error, KafkaError::Global(code) if *code == rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            tracing::debug!(target: "librdkafka", client = %self.name, "{error}: {reason}");
            return;
        }
        // A client dropped while a connection was still authenticating reports the torn
        // handshake as an authentication error "... Broker transport failure (after 0ms in
        // state DOWN)": its own shutdown, not a refused credential.
        if reason.contains("Broker transport failure") && reason.contains("in state DOWN") {
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

impl ProducerContext for BusContext {
    type DeliveryOpaque = ();

    // Only `BaseProducer`s call this (a `FutureProducer` wraps the context and reports
    // to its futures). Failures inside a transaction also surface as an abortable
    // error of `commit_transaction`; here they are counted and kept for the caller.
    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self.deliveries.report(Ok(())),
            Err((error, _)) => {
                // Records purged by an abort were meant to vanish; only real failures warn.
                if matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                ) {
                    tracing::debug!(client = %self.name, "delivery purged: {error}");
                } else {
                    tracing::warn!(client = %self.name, "delivery failed: {error}");
                }
                self.deliveries.report(Err(error.clone()));
            }
        }
    }
}

impl ConsumerContext for BusContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(client = %self.name, partitions = ?partitions(tpl), "partitions revoked");
            self.count_rebalance("revoked");
            self.forget_lag(&partitions(tpl));
            self.record(AssignmentChange::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(client = %self.name, partitions = ?partitions(tpl), "partitions assigned");
                self.count_rebalance("assigned");
                // A partition paused for a backoff while we owned it before would stay
                // paused; a new assignment starts clean.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::debug!(client = %self.name, "resume after assignment: {e}");
                }
                self.record(AssignmentChange::Assigned(partitions(tpl)));
            }
            Rebalance::Error(e) => {
                self.count_rebalance("error");
                tracing::warn!(client = %self.name, "rebalance error: {e}")
            }
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
