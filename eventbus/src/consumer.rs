//! The consumer runner: typed handlers, retries with backoff, dead-lettering, and
//! offsets committed only for records that are finished.
//!
//! # Contract
//!
//! A [`Handler`] gets one decoded, validated [`Envelope`] at a time and answers:
//! - `Ok(())`: done; the offset may be committed;
//! - [`HandlerError::Retriable`]: try again later. The record's partition is **paused**
//!   (its later records wait, so per-partition order holds), the runner **keeps polling**
//!   (other partitions flow, and the consumer stays in its group), and the record is
//!   retried after an exponential backoff with jitter ([`RetryPolicy`]). After
//!   `max_attempts` attempts it is dead-lettered as `retries-exhausted`;
//! - [`HandlerError::Fatal`]: dead-lettered at once as `handler-fatal`.
//!
//! A pause takes hold asynchronously: records of the paused partition that librdkafka
//! had already fetched may still arrive. They are kept, in order, behind the waiting
//! record and handled after it, so nothing is skipped and no seek is needed.
//!
//! Records that never reach the handler are dead-lettered at once: no value or bad
//! framing or bad Avro (`undecodable`), a schema id the registry does not know
//! (`unknown-schema`), a value that does not fit the type or breaks its domain rules
//! (`schema-invalid`). See [`crate::dlq`] for the headers.
//!
//! Infrastructure failures are not the record's fault and never dead-letter it: an
//! unreachable registry while decoding, or a DLQ write that fails, pause the partition
//! and retry with the same backoff (capped at `max_delay`) until they succeed.
//!
//! # Offsets (at-least-once)
//!
//! `enable.auto.offset.store=false`: the runner stores a record's offset only after the
//! handler accepted it or the DLQ acknowledged its dead-letter copy; librdkafka commits
//! stored offsets every `commit_interval_ms`, on rebalance and on shutdown. A crash
//! before that redelivers the record to the next owner of the partition. Handlers must
//! therefore be idempotent (the events carry ids for that). Storing in order per
//! partition is safe because a partition never has more than one record in flight.
//!
//! # Shutdown
//!
//! [`ConsumerRunner::run`] takes a `shutdown` future (mini-redis style). When it
//! completes, the runner finishes the handler call in progress (it does not start
//! another), commits the stored offsets synchronously and leaves the group. Records
//! waiting for a retry are not committed: the next owner gets them again.
//!
//! # Limits
//!
//! Handler calls are sequential across partitions of one runner (retries wait without
//! blocking anything). Scale with partitions and instances; a single call must finish
//! within `max.poll.interval.ms` (5 minutes by default).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::codec::{Consumable, decode};
use crate::config::{ConsumerConfig, KafkaSettings, RetryPolicy};
use crate::context::{AssignmentChange, BusContext, TopicPartition};
use crate::dlq::{DeadLetter, ErrorClass};
use crate::error::{BusError, Fault};
use crate::headers::{HeaderList, TRACEPARENT, TraceParent, now_ms};
use crate::metrics::BusMetrics;
use crate::producer::{Delivery, Producer};

/// A boxed error of a handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler answers when it could not handle a record.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (a dependency is down, a timeout, a conflict that will clear).
    #[error(transparent)]
    Retriable(BoxError),
    /// Never try again; dead-letter the record (the record cannot be processed).
    #[error(transparent)]
    Fatal(BoxError),
}

impl HandlerError {
    /// A retriable error.
    pub fn retriable(e: impl Into<BoxError>) -> Self {
        HandlerError::Retriable(e.into())
    }

    /// A fatal error.
    pub fn fatal(e: impl Into<BoxError>) -> Self {
        HandlerError::Fatal(e.into())
    }

    /// Whether it is [`HandlerError::Retriable`].
    pub fn is_retriable(&self) -> bool {
        matches!(self, HandlerError::Retriable(_))
    }

    /// The error and its sources as one line (`a: b: c`), for the DLQ header.
    pub fn message(&self) -> String {
        let (HandlerError::Retriable(e) | HandlerError::Fatal(e)) = self;
        crate::error::chain(e.as_ref())
    }
}

impl From<BusError> for HandlerError {
    /// A bus error from inside a handler (say, publishing the next event) is retriable
    /// exactly when the bus says so.
    fn from(e: BusError) -> Self {
        if e.is_retriable() {
            HandlerError::Retriable(Box::new(e))
        } else {
            HandlerError::Fatal(Box::new(e))
        }
    }
}

/// A decoded, validated event and where it came from.
#[derive(Debug, Clone)]
pub struct Envelope<E> {
    /// The event.
    pub event: E,
    /// Topic it was read from.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The record timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// All record headers (CloudEvents, `traceparent`, `redrive.*`, ...).
    pub headers: HeaderList,
    /// The writer schema id from the wire header.
    pub schema_id: u32,
    /// Which attempt this is: 1 for the first.
    pub attempt: u32,
}

impl<E> Envelope<E> {
    /// The key as UTF-8, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The trace context the producer sent, if valid.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.headers
            .get_str(TRACEPARENT)
            .and_then(TraceParent::parse)
    }

    /// The trace context for what this handler publishes next: a child span of the
    /// producer's trace, or a new trace.
    pub fn next_hop_trace(&self) -> TraceParent {
        self.traceparent()
            .map(|t| t.child())
            .unwrap_or_else(TraceParent::generate)
    }
}

/// Handles records of type `E`. Implemented for every
/// `Fn(Envelope<E>) -> impl Future<Output = Result<(), HandlerError>>`.
pub trait Handler<E>: Send + Sync {
    /// Handles one record; see the module docs for what each answer does.
    fn handle(
        &self,
        envelope: Envelope<E>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<E, F, Fut> Handler<E> for F
where
    F: Fn(Envelope<E>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(
        &self,
        envelope: Envelope<E>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(envelope)
    }
}

/// Where a record is in its life.
#[derive(Debug)]
enum Stage {
    /// Decode and hand to the handler.
    Handle,
    /// Give up and write it to the DLQ.
    DeadLetter { class: ErrorClass, message: String },
}

/// A record and what has happened to it so far.
#[derive(Debug)]
struct Work {
    record: OwnedMessage,
    stage: Stage,
    /// Handler attempts made.
    attempts: u32,
    /// Failures so far (handler or infrastructure): the backoff exponent.
    failures: u32,
    first_failure_ms: Option<i64>,
    last_failure_ms: Option<i64>,
}

impl Work {
    fn new(record: OwnedMessage) -> Self {
        Work {
            record,
            stage: Stage::Handle,
            attempts: 0,
            failures: 0,
            first_failure_ms: None,
            last_failure_ms: None,
        }
    }

    fn failed_now(&mut self) {
        let now = now_ms();
        self.first_failure_ms.get_or_insert(now);
        self.last_failure_ms = Some(now);
    }

    fn topic(&self) -> &str {
        self.record.topic()
    }
}

/// A record waiting for its next attempt; its partition is paused meanwhile.
#[derive(Debug)]
struct Waiting {
    work: Work,
    due: tokio::time::Instant,
    /// Later records of the partition that were fetched before the pause took hold;
    /// they are handled, in order, after `work`.
    backlog: VecDeque<OwnedMessage>,
}

/// The result of one step of a record.
enum Step {
    /// Handled or dead-lettered: store the offset.
    Finished,
    /// Try again after `delay`.
    Later(Work, Duration),
}

/// Consumes one group subscription and runs a [`Handler`] over its records.
pub struct ConsumerRunner<C> {
    consumer: Arc<StreamConsumer<BusContext>>,
    context: Arc<BusContext>,
    producer: Producer,
    metrics: BusMetrics,
    group: String,
    dlq_topic: String,
    topics: Vec<String>,
    retry: RetryPolicy,
    _event: PhantomData<fn() -> C>,
}

impl<C> std::fmt::Debug for ConsumerRunner<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRunner")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("dlq_topic", &self.dlq_topic)
            .finish_non_exhaustive()
    }
}

impl<C: Consumable> ConsumerRunner<C> {
    /// Creates the consumer (not subscribed yet). `producer` writes dead letters and
    /// brings the registry client that decodes records.
    pub fn new(
        kafka: &KafkaSettings,
        config: ConsumerConfig,
        producer: Producer,
    ) -> Result<Self, BusError> {
        if config.retry.max_attempts == 0 {
            return Err(BusError::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        let topics = if config.topics.is_empty() {
            C::default_topics()
        } else {
            config.topics.clone()
        };
        let metrics = producer.metrics().clone();
        // Offsets are stored by the runner after a record is finished, and the stored
        // offsets are committed in the background, on rebalance and at shutdown. Never
        // commit what was merely received.
        let options = crate::client::GroupOptions {
            group_id: config.group_id.clone(),
            instance_id: None,
            read_committed: config.read_committed,
            commit: crate::client::Commits::StoredEvery(Duration::from_millis(
                config.commit_interval_ms,
            )),
            tuning: crate::client::tuning([
                ("auto.offset.reset", config.auto_offset_reset.clone()),
                ("session.timeout.ms", config.session_timeout_ms.to_string()),
                (
                    "max.poll.interval.ms",
                    config.max_poll_interval_ms.to_string(),
                ),
                // Errors are delivered through the context; end-of-partition is not one.
                ("enable.partition.eof", "false".to_owned()),
            ]),
        };
        let context = BusContext::new(
            format!("{}/{}", kafka.client_id, config.group_id),
            Some(config.group_id.clone()),
            metrics.clone(),
        );
        let consumer = crate::client::group_consumer(kafka, &options, context)?;
        let context = consumer.context().clone();
        Ok(ConsumerRunner {
            consumer: Arc::new(consumer),
            context,
            producer,
            metrics,
            dlq_topic: config.dlq_topic(),
            group: config.group_id,
            topics,
            retry: config.retry,
            _event: PhantomData,
        })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> &str {
        &self.dlq_topic
    }

    /// The subscribed topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Subscribes and runs `handler` over every record until `shutdown` completes; then
    /// drains, commits and leaves the group (see the module docs).
    ///
    /// Returns an error only for what ends consumption: a failed subscription or a fatal
    /// consumer error.
    pub async fn run<H: Handler<C>>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), BusError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|e| BusError::kafka(format!("subscribe to {topics:?}"), e))?;
        tracing::info!(group = %self.group, topics = ?self.topics, dlq = %self.dlq_topic, "consumer runner started");

        let result = self.poll_loop(&handler, shutdown).await;

        // Graceful end: commit what is stored, then leave the group. Both block on the
        // network, so they run off the async threads.
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let r = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
            r
        })
        .await;
        match committed {
            Ok(Ok(())) => tracing::info!(group = %self.group, "offsets committed at shutdown"),
            Ok(Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset))) => {}
            Ok(Err(e)) => tracing::warn!(group = %self.group, "final commit failed: {e}"),
            Err(e) => tracing::warn!(group = %self.group, "final commit task failed: {e}"),
        }
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!(group = %self.group, "consumer runner stopped");
        result
    }

    async fn poll_loop<H: Handler<C>>(
        &self,
        handler: &H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), BusError> {
        let mut waiting: HashMap<TopicPartition, Waiting> = HashMap::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            self.apply_assignment_changes(&mut waiting);
            let next = waiting
                .iter()
                .min_by_key(|(_, w)| w.due)
                .map(|(tp, w)| (tp.clone(), w.due));
            let timer = async {
                match next.as_ref() {
                    Some((_, due)) => tokio::time::sleep_until(*due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!(group = %self.group, waiting = waiting.len(), "shutdown requested");
                    return Ok(());
                }
                () = timer => {
                    let Some((tp, _)) = next else { continue };
                    // A rebalance may have taken the partition away in the meantime.
                    self.apply_assignment_changes(&mut waiting);
                    let Some(w) = waiting.remove(&tp) else { continue };
                    if let Some(w) = self.drive(handler, &tp, w.work, w.backlog, true).await {
                        waiting.insert(tp, w);
                    }
                }
                received = self.consumer.recv() => {
                    let record = match received {
                        Ok(m) => m.detach(),
                        Err(e) => {
                            self.on_consume_error(e)?;
                            continue;
                        }
                    };
                    self.metrics.consumed.with_label_values(&[record.topic()]).inc();
                    self.apply_assignment_changes(&mut waiting);
                    let tp = (record.topic().to_owned(), record.partition());
                    if let Some(w) = waiting.get_mut(&tp) {
                        // Fetched before the pause took hold: keep it for after the
                        // waiting record, so the partition's order holds.
                        w.backlog.push_back(record);
                        continue;
                    }
                    if let Some(w) = self.drive(handler, &tp, Work::new(record), VecDeque::new(), false).await {
                        waiting.insert(tp, w);
                    }
                }
            }
        }
    }

    /// Takes the records of one partition forward, in order, until they are all
    /// finished (offsets stored; the partition resumed if it was paused) or one has to
    /// wait (the partition paused; returned).
    async fn drive<H: Handler<C>>(
        &self,
        handler: &H,
        tp: &TopicPartition,
        mut work: Work,
        mut backlog: VecDeque<OwnedMessage>,
        paused: bool,
    ) -> Option<Waiting> {
        loop {
            let offset = work.record.offset();
            match self.step(handler, work).await {
                Step::Later(work, delay) => {
                    if !paused {
                        self.pause(tp);
                    }
                    return Some(Waiting {
                        work,
                        due: tokio::time::Instant::now() + delay,
                        backlog,
                    });
                }
                Step::Finished => {
                    self.store(tp, offset);
                    match backlog.pop_front() {
                        Some(next) => work = Work::new(next),
                        None => {
                            if paused {
                                self.resume(tp);
                            }
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Drops the waiting records of partitions that were revoked or assigned anew: the
    /// partition's next owner (maybe us again) restarts from its committed offset.
    fn apply_assignment_changes(&self, waiting: &mut HashMap<TopicPartition, Waiting>) {
        for change in self.context.take_assignment_changes() {
            let (AssignmentChange::Revoked(tps) | AssignmentChange::Assigned(tps)) = change;
            for tp in tps {
                if let Some(w) = waiting.remove(&tp) {
                    tracing::info!(
                        group = %self.group, topic = %tp.0, partition = tp.1, offset = w.work.record.offset(),
                        "partition changed owner while a record waited for a retry; it will be redelivered"
                    );
                }
            }
        }
    }

    fn on_consume_error(&self, e: KafkaError) -> Result<(), BusError> {
        let e = BusError::kafka("consume", e);
        if matches!(
            &e,
            BusError::Kafka {
                error: KafkaError::MessageConsumptionFatal(_),
                ..
            }
        ) {
            tracing::error!(group = %self.group, "{e}");
            return Err(e);
        }
        match e.fault() {
            // A subscribed topic that does not exist (auto creation is off) or access
            // denied: keep running, the operator may fix it.
            Fault::Setup => tracing::warn!(group = %self.group, "{e}"),
            _ => tracing::debug!(group = %self.group, "{e}"),
        }
        Ok(())
    }

    /// Takes a record one step: decode + handle, or dead-letter.
    async fn step<H: Handler<C>>(&self, handler: &H, mut work: Work) -> Step {
        if matches!(work.stage, Stage::Handle) {
            let topic = work.topic().to_owned();
            match decode::<C>(self.producer.registry(), &topic, work.record.payload()).await {
                Err(failure) => match failure.class {
                    None => {
                        // The registry is unreachable: not the record's fault.
                        work.failed_now();
                        work.failures += 1;
                        return self.later(work, "infrastructure", &failure.error.to_string());
                    }
                    Some(class) => {
                        tracing::warn!(
                            group = %self.group, topic = %topic, partition = work.record.partition(),
                            offset = work.record.offset(), class = class.as_str(),
                            "record cannot be decoded, dead-lettering: {}", failure.error
                        );
                        work.failed_now();
                        work.stage = Stage::DeadLetter {
                            class,
                            message: failure.error.to_string(),
                        };
                    }
                },
                Ok((event, schema_id)) => {
                    work.attempts += 1;
                    let envelope = Envelope {
                        event,
                        topic: topic.clone(),
                        partition: work.record.partition(),
                        offset: work.record.offset(),
                        key: work.record.key().map(<[u8]>::to_vec),
                        timestamp_ms: work.record.timestamp().to_millis(),
                        headers: HeaderList::from_headers(work.record.headers()),
                        schema_id,
                        attempt: work.attempts,
                    };
                    let started = Instant::now();
                    let outcome = handler.handle(envelope).await;
                    self.metrics
                        .handler_duration
                        .with_label_values(&[&topic])
                        .observe(started.elapsed().as_secs_f64());
                    match outcome {
                        Ok(()) => {
                            self.metrics.handled.with_label_values(&[&topic]).inc();
                            return Step::Finished;
                        }
                        Err(e) => {
                            work.failed_now();
                            let message = e.message();
                            if e.is_retriable() && work.attempts < self.retry.max_attempts {
                                work.failures += 1;
                                return self.later(work, "handler-retriable", &message);
                            }
                            let class = if e.is_retriable() {
                                ErrorClass::RetriesExhausted
                            } else {
                                ErrorClass::HandlerFatal
                            };
                            tracing::warn!(
                                group = %self.group, topic = %topic, partition = work.record.partition(),
                                offset = work.record.offset(), attempts = work.attempts, class = class.as_str(),
                                "handler gave up on the record, dead-lettering: {message}"
                            );
                            work.stage = Stage::DeadLetter { class, message };
                        }
                    }
                }
            }
        }
        match self.dead_letter(&work).await {
            Ok(delivery) => {
                let Stage::DeadLetter { class, .. } = &work.stage else {
                    unreachable!("dead-letter stage")
                };
                self.metrics
                    .dead_lettered
                    .with_label_values(&[work.topic(), class.as_str()])
                    .inc();
                tracing::info!(
                    group = %self.group, topic = %work.topic(), partition = work.record.partition(),
                    offset = work.record.offset(), dlq = %delivery.topic, dlq_partition = delivery.partition,
                    dlq_offset = delivery.offset, class = class.as_str(), "record dead-lettered"
                );
                Step::Finished
            }
            Err(e) => {
                // The record must not be committed before its DLQ copy is safe.
                if e.fault() == Fault::Setup {
                    tracing::error!(group = %self.group, dlq = %self.dlq_topic, "cannot write to the DLQ (create it?): {e}");
                }
                work.failures += 1;
                self.later(work, "infrastructure", &e.to_string())
            }
        }
    }

    fn later(&self, work: Work, class: &str, why: &str) -> Step {
        let delay = self.retry.delay(work.failures);
        self.metrics
            .retried
            .with_label_values(&[work.topic(), class])
            .inc();
        tracing::warn!(
            group = %self.group, topic = %work.topic(), partition = work.record.partition(),
            offset = work.record.offset(), attempts = work.attempts, failures = work.failures,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), class,
            "retrying later: {why}"
        );
        Step::Later(work, delay)
    }

    async fn dead_letter(&self, work: &Work) -> Result<Delivery, BusError> {
        let Stage::DeadLetter { class, message } = &work.stage else {
            return Err(BusError::Config(
                "dead_letter called before giving up".into(),
            ));
        };
        let now = now_ms();
        let letter = DeadLetter {
            topic: work.topic().to_owned(),
            partition: work.record.partition(),
            offset: work.record.offset(),
            timestamp_ms: work.record.timestamp().to_millis(),
            key: work.record.key().map(<[u8]>::to_vec),
            group: self.group.clone(),
            class: *class,
            message: message.clone(),
            attempts: work.attempts,
            first_failure_ms: work.first_failure_ms.unwrap_or(now),
            last_failure_ms: work.last_failure_ms.unwrap_or(now),
        };
        let headers = letter.headers(&HeaderList::from_headers(work.record.headers()));
        self.producer
            .publish_raw(
                &self.dlq_topic,
                work.record.key(),
                work.record.payload(),
                &headers,
            )
            .await
    }

    fn store(&self, tp: &TopicPartition, offset: i64) {
        // librdkafka stores offset + 1: the next record to read.
        if let Err(e) = self.consumer.store_offset(&tp.0, tp.1, offset) {
            tracing::debug!(group = %self.group, topic = %tp.0, partition = tp.1, "offset not stored (partition revoked?): {e}");
        }
    }

    fn tpl(tp: &TopicPartition) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        tpl
    }

    fn pause(&self, tp: &TopicPartition) {
        if let Err(e) = self.consumer.pause(&Self::tpl(tp)) {
            tracing::warn!(group = %self.group, topic = %tp.0, partition = tp.1, "pause failed: {e}");
        }
    }

    fn resume(&self, tp: &TopicPartition) {
        if let Err(e) = self.consumer.resume(&Self::tpl(tp)) {
            tracing::warn!(group = %self.group, topic = %tp.0, partition = tp.1, "resume failed: {e}");
        }
    }
}
