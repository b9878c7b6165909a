//! The processor: the consume-settle-produce loop, one transaction per batch.
//!
//! ```text
//! loop:
//!   collect   poll order.created until max_batch records, commit_interval after the
//!             batch's first record, or linger after its last one (assignment changes
//!             applied as they come)
//!   index     load the settled-orders index of partitions seen for the first time
//!   decide    decode each record; undecodable → dead letter; order already settled
//!             (index or earlier in the batch) → skip; else settle through the gateway
//!             (concurrently, up to settle.max_in_flight, with retries)
//!   build     outcome records (same partition as the order), dead letters
//!   commit    one transaction: records + the batch's next offsets (with the group's
//!             metadata) → commit            [crate::transaction]
//!   after     committed: add the settled orders to the index, count the metrics
//!             aborted:   seek the batch's partitions back to the group's committed
//!                        offsets, back off, and collect again (the same records come back)
//!             fenced/fatal: replace the producer (same transactional.id), forget the
//!                        settled index, rewind as above [crate::recovery]; fenced again
//!                        and again within a minute: stop with an error (exit non-zero)
//! ```
//!
//! # Exactly one outcome per order
//!
//! - **Crash anywhere** (kill -9 in the middle of a gateway call, between produce and
//!   commit, ...): the batch's transaction was not committed, so neither its outcomes nor
//!   its offsets are visible; the restarted instance (same `transactional.id`) aborts
//!   the leftover transaction in `init_transactions`, resumes from the committed offsets
//!   and settles the same orders again. The gateway sees the same idempotency key and
//!   does not charge twice. `read_committed` readers never see the aborted outcomes.
//! - **Fenced by the coordinator** (a broker failover held a transaction open past
//!   `transaction.timeout.ms`, so the coordinator aborted it and bumped the epoch): the
//!   producer is replaced by a new one with the same `transactional.id` and the batch is
//!   redone from the committed offsets ([`crate::recovery`] says why that is exact).
//! - **Rebalance**: revocations are applied between polls, never inside a transaction;
//!   records of revoked partitions are dropped from the batch (the next owner gets them
//!   from the committed offset). A member that lost its partitions without noticing
//!   (session timeout) fails in `send_offsets_to_transaction` on its stale generation
//!   (KIP-447) and aborts.
//! - **A second record for a settled order** (redrive, replay): skipped via
//!   [`crate::settled_index`], its offset committed with the batch, counted in
//!   `payment_duplicates_skipped_total`. No gateway call is made for it.
//!
//! # Latency and throughput: the commit interval
//!
//! A batch closes `commit_interval` (100 ms) after its first record or at `max_batch`
//! (500) records, whichever comes first. Each transaction costs a round of coordinator
//! requests (add partitions, add offsets, the offset commit, end transaction) plus the
//! markers the coordinator writes to every partition afterwards; until those markers
//! are written, the *next* transaction's `AddPartitionsToTxn`/`AddOffsetsToTxn` are
//! refused with `CONCURRENT_TRANSACTIONS` and retried by librdkafka. On the local
//! 3-broker cluster (2 cores) that puts a floor of about 110 ms under every
//! transaction, whether it carries 100, 500 or 2000 records. Measured with
//! `tests/throughput.rs` (release binary, 20 000 backlogged orders, default gateway):
//!
//! | commit_interval / max_batch | outcomes/s (backlog) | p50 / p99 order → outcome visible at 20 orders/s |
//! |---|---|---|
//! | 20 ms / 100 | ~500 | ~225 / ~420 ms |
//! | **100 ms / 500** | **~1750-1950** | **~270 / ~490 ms** |
//! | 500 ms / 2000 | ~4150 | ~460 / ~770 ms |
//!
//! A shorter interval hardly lowers latency (the transaction floor dominates) but
//! multiplies transactions and markers and caps throughput at batch size / floor; a
//! longer one adds its full length to every order's latency at low rates and pays off
//! only under a backlog. 100 ms / 500 keeps the batch wait about the size of the
//! transaction floor. (The figures move with the machine's load.)
//!
//! **Group commit** (`linger`, 5 ms): a batch also closes when no record arrived for
//! `linger`. At an idle service an order is committed at once instead of waiting out
//! the interval; under load, what queued up in the consumer during one transaction
//! arrives back to back and shares the next, so batches grow with the load by
//! themselves and `commit_interval` only caps the wait. Measured with
//! `latency_at_a_low_rate` (300 orders at 50/s, debug build, the machine loaded by
//! another Kafka cluster and builds, load average 17-23), alternating the two:
//!
//! | linger | created → outcome stamped p50 / p99 | → visible (read_committed) p50 / p99 | transactions |
//! |---|---|---|---|
//! | 0 (before) | 143-185 / 453-575 ms | 304-348 / 694-772 ms | 26-34 |
//! | 5 ms | 106-126 / 356-719 ms | 239-280 / 581-1382 ms | 44-61 |
//!
//! About 60-90 ms off the median for about twice the transactions (each costs the
//! brokers a round of coordinator requests and markers): at 50 orders/s that is
//! 10 rather than 5 transactions a second.
//!
//! # Input records that are not orders
//!
//! Bytes that are not Confluent-framed Avro, an unknown schema id, or an event that
//! breaks its domain rules are dead-lettered (eventbus error classes and headers) in the
//! same transaction as the offsets, logged at WARN, and the loop goes on. A registry
//! that cannot be reached is not the record's fault: the batch is rewound and retried.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventbus::client::{self, Commits, GroupOptions, Tuning};
use eventbus::codec::{DecodeFailure, decode};
use eventbus::context::{AssignmentChange, BusContext};
use eventbus::headers::{TraceParent, now_ms};
use eventbus::kafka::{
    Consumer, KafkaError, Message, Offset, OwnedMessage, RDKafkaErrorCode, StreamConsumer,
    TopicPartitionList,
};
use eventbus::{ErrorClass, Fault, Jitter, KafkaSettings, RegistryClient, RetryPolicy, TxnError};
use futures::StreamExt;
use schemas::OrderCreated;
use uuid::Uuid;

use crate::config::{Config, ConsumerSettings, SettleConfig, Topics, TransactionConfig};
use crate::error::PaymentError;
use crate::gateway::PaymentGateway;
use crate::metrics::PaymentMetrics;
use crate::outcome::{OutRecord, OutcomeEncoder};
use crate::recovery::{self, ReinitBudget};
use crate::server::Health;
use crate::settled_index::{self, SettledIndex};
use crate::settlement::{Settlement, settle};
use crate::transaction::TxnProducer;

/// The group consumer of order.created.
pub type OrderConsumer = StreamConsumer;

/// Creates the input consumer (not subscribed): a read_committed member of the
/// service's group with explicit commits (eventbus's
/// [`client::group_consumer`]).
///
/// What eventbus sets for it, and why payment needs it:
/// - `enable.auto.commit=false` ([`Commits::Explicit`]): offsets are committed only by
///   the batch's transaction; a background commit would commit records whose outcomes
///   are not written yet; `enable.auto.offset.store=false`: nothing is ever committed
///   from the consumer, so nothing should be stored either;
/// - `isolation.level=read_committed`: an order from an aborted transaction (a
///   transactional producer upstream, a redrive tool) never happened and must not be
///   charged; it also makes librdkafka fetch committed offsets with `require_stable`,
///   which [`crate::settled_index`] relies on;
/// - `group.instance.id` (static membership, on by default): a restarted instance gets
///   its partitions back without a rebalance.
///
/// Payment's own non-default settings are in [`consumer_tuning`].
pub fn create_consumer(
    config: &Config,
    metrics: &PaymentMetrics,
) -> Result<OrderConsumer, PaymentError> {
    let kafka = &config.kafka;
    let group = config.group_id();
    let options = GroupOptions {
        group_id: group.clone(),
        instance_id: config
            .consumer
            .static_membership
            .then(|| config.transactional_id()),
        read_committed: true,
        commit: Commits::Explicit,
        tuning: consumer_tuning(&config.consumer),
    };
    // The group labels the rebalance counter. The lag gauge is set by
    // `eventbus::lag::track_committed`, not by librdkafka's statistics, which are off
    // (see consumer_tuning).
    let context = BusContext::new(
        format!("{}/{group}", kafka.client_id),
        Some(group.clone()),
        metrics.bus.clone(),
    );
    Ok(client::group_consumer(kafka, &options, context)?)
}

/// The input consumer's settings that differ from librdkafka's defaults, and why.
pub fn consumer_tuning(settings: &ConsumerSettings) -> Tuning {
    client::tuning([
        // 30 s (default 45 s): above a coordinator failover, so that a broker kill
        // does not expire the static member's session locally (see
        // ConsumerSettings::session_timeout); below the default, so that a replica gone
        // for good hands its partitions on sooner.
        (
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        ),
        // 5 minutes (librdkafka's default, configurable): far above a batch's duration.
        (
            "max.poll.interval.ms",
            settings.max_poll_interval.as_millis().to_string(),
        ),
        // A group without committed offsets (the first start) must settle the orders
        // that are already there, not skip them.
        ("auto.offset.reset", "earliest".to_owned()),
        // librdkafka's lag statistics do not see offsets committed through a producer
        // transaction (its lag would only grow); the service computes the lag itself
        // (`eventbus::lag::track_committed`), so statistics would feed nothing.
        ("statistics.interval.ms", "0".to_owned()),
    ])
}

/// Records polled since the last commit, and where each partition's part begins.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<OwnedMessage>,
    first_offsets: BTreeMap<i32, i64>,
}

impl Batch {
    fn push(&mut self, record: OwnedMessage) {
        self.first_offsets
            .entry(record.partition())
            .or_insert(record.offset());
        self.records.push(record);
    }

    fn drop_partition(&mut self, p: i32) -> usize {
        let before = self.records.len();
        self.records.retain(|r| r.partition() != p);
        self.first_offsets.remove(&p);
        before - self.records.len()
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The next offset to consume per partition: the last record's offset + 1.
    fn next_offsets(&self) -> BTreeMap<i32, i64> {
        let mut next = BTreeMap::new();
        for r in &self.records {
            let entry = next.entry(r.partition()).or_insert(0);
            *entry = (*entry).max(r.offset() + 1);
        }
        next
    }
}

/// What one record of a batch turned into.
enum Work {
    /// A valid order to settle.
    Order(OrderCreated),
    /// An order that already has an outcome.
    Duplicate,
    /// A record that never became an order.
    Dead { class: ErrorClass, message: String },
}

/// Effects of a batch that happen only once its transaction has committed.
#[derive(Default)]
struct Tally {
    settled: Vec<(i32, Uuid)>,
    /// One log line per settled payment, written once the transaction committed.
    lines: Vec<SettledLine>,
    completed: u64,
    failed: BTreeMap<String, u64>,
    dead: HashMap<ErrorClass, u64>,
    duplicates: u64,
}

/// What the log line of one settled payment says (see [`SettledLine::log`]).
struct SettledLine {
    order_id: Uuid,
    partition: i32,
    offset: i64,
    /// `completed` or `failed`.
    outcome: &'static str,
    /// The reason code of a failed payment.
    reason_code: Option<String>,
    /// The trace context written on the outcome record.
    trace: TraceParent,
    /// The order record's trace context, when it carried a valid `traceparent`.
    parent: Option<TraceParent>,
}

impl SettledLine {
    /// One INFO line per settled payment, with the fields the log store correlates on:
    /// `order_id`, `trace_id` (the order's trace), the input's `topic`, `partition`
    /// and `offset`.
    fn log(&self, input_topic: &str) {
        tracing::info!(
            order_id = %self.order_id,
            trace_id = %self.trace.trace_id_hex(),
            span_id = %self.trace.span_id_hex(),
            parent_span_id = self.parent.map(|t| t.span_id_hex()).as_deref(),
            topic = input_topic,
            partition = self.partition,
            offset = self.offset,
            outcome = self.outcome,
            reason_code = self.reason_code.as_deref(),
            "payment settled"
        );
    }
}

/// How a batch ended.
enum Ending {
    Committed,
    /// Aborted or not attempted; the consumer was rewound.
    Retry,
}

/// The loop; see the module docs.
pub struct Processor<G: PaymentGateway> {
    consumer: Arc<OrderConsumer>,
    producer: TxnProducer,
    encoder: OutcomeEncoder,
    registry: RegistryClient,
    gateway: Arc<G>,
    kafka: KafkaSettings,
    topics: Topics,
    transaction: TransactionConfig,
    settle: SettleConfig,
    settled_load_timeout: Duration,
    metrics: PaymentMetrics,
    health: Arc<Health>,
    settled: SettledIndex,
    assigned: BTreeSet<i32>,
    transactional_id: String,
    reinits: ReinitBudget,
}

impl<G: PaymentGateway> std::fmt::Debug for Processor<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("topics", &self.topics)
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

/// Everything a [`Processor`] is made of.
pub struct Parts<G: PaymentGateway> {
    /// The input consumer (not subscribed yet).
    pub consumer: Arc<OrderConsumer>,
    /// The initialised transactional producer.
    pub producer: TxnProducer,
    /// Outcome and dead-letter encoding.
    pub encoder: OutcomeEncoder,
    /// The registry (decoding).
    pub registry: RegistryClient,
    /// The gateway.
    pub gateway: Arc<G>,
    /// Metrics.
    pub metrics: PaymentMetrics,
    /// Readiness flags.
    pub health: Arc<Health>,
}

impl<G: PaymentGateway> Processor<G> {
    /// A processor for `config` from its parts.
    pub fn new(config: &Config, parts: Parts<G>) -> Self {
        Processor {
            consumer: parts.consumer,
            producer: parts.producer,
            encoder: parts.encoder,
            registry: parts.registry,
            gateway: parts.gateway,
            kafka: config.kafka.clone(),
            topics: config.topics.resolve(),
            transaction: config.transaction.clone(),
            settle: config.settle.clone(),
            settled_load_timeout: config.consumer.settled_load_timeout,
            metrics: parts.metrics,
            health: parts.health,
            settled: SettledIndex::default(),
            assigned: BTreeSet::new(),
            transactional_id: config.transactional_id(),
            reinits: ReinitBudget::of(&config.transaction),
        }
    }

    /// Subscribes and runs batches until `shutdown` completes; then finishes the batch
    /// being collected (settles and commits it) and returns. Returns an error only for
    /// what must stop the service (fenced, fatal client errors).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), PaymentError> {
        self.consumer
            .subscribe(&[&self.topics.order_created])
            .map_err(|e| {
                PaymentError::kafka(format!("subscribe to {}", self.topics.order_created), e)
            })?;
        tracing::info!(
            topic = %self.topics.order_created,
            transactional_id = %self.producer.transactional_id(),
            commit_interval_ms = u64::try_from(self.transaction.commit_interval.as_millis()).unwrap_or(u64::MAX),
            max_batch = self.transaction.max_batch,
            "payment processor started"
        );
        let mut shutdown = std::pin::pin!(shutdown);
        let mut stopping = false;
        let mut failures = 0u32;
        let backoff = RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            jitter: Jitter::Full,
        };
        let result = loop {
            if stopping {
                break Ok(());
            }
            let batch = match self.collect(shutdown.as_mut(), &mut stopping).await {
                Ok(batch) => batch,
                Err(e) => break Err(e),
            };
            if batch.is_empty() {
                continue;
            }
            match self.process(batch).await {
                Ok(Ending::Committed) => failures = 0,
                Ok(Ending::Retry) => {
                    failures += 1;
                    let delay = backoff.delay(failures);
                    tracing::warn!(
                        failures,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "batch not committed; its records will be processed again"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => break Err(e),
            }
        };
        self.health.set_stopping();
        if let Err(e) = &result {
            tracing::error!("payment processor stopped: {e}");
        } else {
            tracing::info!("payment processor stopped");
        }
        // Leaving the group (unless static) and destroying the clients block on the
        // network: off the async workers.
        let consumer = self.consumer;
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || {
            drop(consumer);
            drop(producer);
        })
        .await;
        result
    }

    /// Polls until the batch is full, its commit interval has passed, or shutdown.
    async fn collect(
        &mut self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
        stopping: &mut bool,
    ) -> Result<Batch, PaymentError> {
        let consumer = self.consumer.clone();
        let mut batch = Batch::default();
        // The batch closes at the earlier of `commit_interval` after its first record
        // and `linger` after its last one (see the module docs).
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut idle_deadline: Option<tokio::time::Instant> = None;
        let linger = self.transaction.linger;
        // Assignment changes are recorded inside polls that may return no record; look
        // at them regularly so readiness does not wait for the first order.
        let mut housekeeping = tokio::time::interval(Duration::from_millis(200));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while batch.len() < self.transaction.max_batch {
            let close_at = match (deadline, idle_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timer = async {
                match close_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.as_mut(), if !*stopping => {
                    tracing::info!(pending = batch.len(), "shutdown requested; finishing the current batch");
                    *stopping = true;
                    self.health.set_stopping();
                    break;
                }
                () = timer => break,
                received = consumer.recv() => {
                    let record = match received {
                        Ok(m) => Some(m.detach()),
                        Err(e) => {
                            self.on_consume_error(e)?;
                            None
                        }
                    };
                    self.apply_assignment_changes(&mut batch);
                    if let Some(record) = record {
                        self.metrics.bus.consumed.with_label_values(&[record.topic()]).inc();
                        batch.push(record);
                        let now = tokio::time::Instant::now();
                        deadline.get_or_insert(now + self.transaction.commit_interval);
                        if !linger.is_zero() {
                            idle_deadline = Some(now + linger);
                        }
                    }
                }
                _ = housekeeping.tick() => {
                    self.apply_assignment_changes(&mut batch);
                }
            }
        }
        self.apply_assignment_changes(&mut batch);
        Ok(batch)
    }

    fn apply_assignment_changes(&mut self, batch: &mut Batch) {
        for change in self.consumer.context().take_assignment_changes() {
            match change {
                AssignmentChange::Revoked(tps) => {
                    for (topic, p) in tps {
                        if topic != self.topics.order_created {
                            continue;
                        }
                        let dropped = batch.drop_partition(p);
                        if dropped > 0 {
                            tracing::info!(
                                partition = p,
                                dropped,
                                "partition revoked; its uncommitted records go to the next owner"
                            );
                        }
                        self.settled.forget(p);
                        self.assigned.remove(&p);
                    }
                }
                AssignmentChange::Assigned(tps) => {
                    for (topic, p) in tps {
                        if topic == self.topics.order_created {
                            // Another instance may have settled orders here meanwhile.
                            self.settled.forget(p);
                            self.assigned.insert(p);
                        }
                    }
                    self.health.set_joined();
                }
            }
        }
    }

    fn on_consume_error(&self, e: KafkaError) -> Result<(), PaymentError> {
        match &e {
            KafkaError::MessageConsumptionFatal(code) => {
                if *code == RDKafkaErrorCode::FencedInstanceId {
                    Err(PaymentError::Fenced {
                        client: "consumer",
                        source: e,
                    })
                } else {
                    Err(PaymentError::kafka("consume", e))
                }
            }
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            ) => {
                tracing::warn!(topic = %self.topics.order_created, "input topic missing: {e}");
                Ok(())
            }
            _ => {
                tracing::debug!("consume: {e}");
                Ok(())
            }
        }
    }

    async fn process(&mut self, batch: Batch) -> Result<Ending, PaymentError> {
        let started = std::time::Instant::now();
        // 1. The settled-orders index of partitions seen for the first time.
        // When one partition of the batch is new, every unloaded partition of the
        // assignment is loaded with it: one load per assignment rather than one per
        // partition (see crate::settled_index for why that is as safe).
        let needed = batch
            .first_offsets
            .keys()
            .any(|p| !self.settled.is_loaded(*p));
        if needed {
            let missing: Vec<i32> = self
                .assigned
                .iter()
                .chain(batch.first_offsets.keys())
                .copied()
                .filter(|p| !self.settled.is_loaded(*p))
                .collect::<BTreeSet<i32>>()
                .into_iter()
                .collect();
            let topics = [
                self.topics.payment_completed.clone(),
                self.topics.payment_failed.clone(),
            ];
            let loaded = settled_index::load(
                &self.kafka,
                &topics,
                &missing,
                self.settled_load_timeout,
                &self.metrics.bus,
            )
            .await;
            match loaded {
                Ok(loaded) => {
                    for (p, ids) in loaded {
                        tracing::info!(partition = p, settled = ids.len(), "settled orders loaded");
                        self.settled.install(p, ids);
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot load the settled orders of {missing:?}: {e}");
                    self.rewind(&batch).await?;
                    return Ok(Ending::Retry);
                }
            }
        }

        let indexed = started.elapsed();
        // 2. Decode and deduplicate.
        let mut works = Vec::with_capacity(batch.len());
        let mut in_batch: HashSet<Uuid> = HashSet::new();
        for record in &batch.records {
            let work = match decode::<OrderCreated>(
                &self.registry,
                record.topic(),
                record.payload(),
            )
            .await
            {
                Ok((order, _schema_id)) => {
                    if self.settled.contains(record.partition(), &order.order_id)
                        || !in_batch.insert(order.order_id)
                    {
                        tracing::debug!(order_id = %order.order_id, offset = record.offset(), "order already settled; skipping");
                        Work::Duplicate
                    } else {
                        Work::Order(order)
                    }
                }
                Err(DecodeFailure {
                    class: Some(class),
                    error,
                }) => {
                    tracing::warn!(
                        topic = %record.topic(), partition = record.partition(), offset = record.offset(),
                        class = class.as_str(), "record is not a valid order, dead-lettering: {error}"
                    );
                    Work::Dead {
                        class,
                        message: error.to_string(),
                    }
                }
                Err(DecodeFailure { class: None, error }) => {
                    tracing::warn!("cannot decode (registry unavailable?): {error}");
                    self.rewind(&batch).await?;
                    return Ok(Ending::Retry);
                }
            };
            works.push(work);
        }

        // 3. Settle, concurrently, results in input order.
        let gateway = &*self.gateway;
        let settle_config = &self.settle;
        let metrics = &self.metrics;
        let input_topic = self.topics.order_created.as_str();
        // Unordered, so that an order waiting out a retry backoff does not hold up the
        // calls behind it (`buffered` would: its in-flight slots stay taken until the
        // head finishes); the results are put back in input order afterwards. The
        // futures are collected first: a stream that maps borrowed items through a
        // closure trips the compiler's Send inference for the spawned service future.
        let pending: Vec<_> = works
            .iter()
            .enumerate()
            .filter_map(|(index, work)| match work {
                Work::Order(order) => Some(async move {
                    let started = std::time::Instant::now();
                    let settlement =
                        settle(gateway, order, settle_config, metrics, input_topic).await;
                    // The handler latency of the bus's metric: one order, from its
                    // first gateway attempt to its decision.
                    metrics
                        .bus
                        .handler_duration
                        .with_label_values(&[input_topic])
                        .observe(started.elapsed().as_secs_f64());
                    (index, settlement)
                }),
                _ => None,
            })
            .collect();
        let mut settlements: Vec<Option<Settlement>> = vec![None; works.len()];
        let mut done = futures::stream::iter(pending).buffer_unordered(self.settle.max_in_flight);
        while let Some((index, settlement)) = done.next().await {
            settlements[index] = Some(settlement);
        }
        drop(done);

        let decided = started.elapsed();
        // 4. Records to produce.
        let mut records: Vec<OutRecord> = Vec::with_capacity(batch.len());
        let mut tally = Tally::default();
        for ((record, work), settlement) in batch.records.iter().zip(&works).zip(settlements) {
            let p = record.partition();
            match (work, settlement) {
                (Work::Duplicate, _) => tally.duplicates += 1,
                (Work::Dead { class, message }, _) => {
                    let now = now_ms();
                    records.push(
                        self.encoder
                            .dead_letter(record, *class, message, 0, now, now),
                    );
                    *tally.dead.entry(*class).or_default() += 1;
                }
                (Work::Order(order), Some(settlement)) => {
                    let parent = TraceParent::from_headers(record.headers());
                    let trace = parent.map_or_else(TraceParent::generate, |t| t.child());
                    let line = |outcome, reason_code| SettledLine {
                        order_id: order.order_id,
                        partition: p,
                        offset: record.offset(),
                        outcome,
                        reason_code,
                        trace,
                        parent,
                    };
                    let built = match settlement {
                        Settlement::Completed { payment_id } => self
                            .encoder
                            .completed(order, payment_id, p, &trace)
                            .map(|r| (r, None, line("completed", None))),
                        Settlement::Failed {
                            reason_code,
                            reason,
                        } => self
                            .encoder
                            .failed(order, &reason_code, &reason, p, &trace)
                            .map(|r| {
                                let logged = line("failed", Some(reason_code.clone()));
                                (r, Some(reason_code), logged)
                            }),
                        Settlement::DeadLetter {
                            class,
                            message,
                            attempts,
                            first_failure_ms,
                            last_failure_ms,
                        } => {
                            records.push(self.encoder.dead_letter(
                                record,
                                class,
                                &message,
                                attempts,
                                first_failure_ms,
                                last_failure_ms,
                            ));
                            *tally.dead.entry(class).or_default() += 1;
                            continue;
                        }
                    };
                    match built {
                        Ok((out, failed_code, logged)) => {
                            records.push(out);
                            tally.settled.push((p, order.order_id));
                            tally.lines.push(logged);
                            match failed_code {
                                None => tally.completed += 1,
                                Some(code) => *tally.failed.entry(code).or_default() += 1,
                            }
                        }
                        Err(e) => {
                            // Our own event does not fit its schema: a bug, not the
                            // order's fault, but the order cannot be settled either.
                            tracing::warn!(order_id = %order.order_id, "outcome cannot be encoded, dead-lettering the order: {e}");
                            let now = now_ms();
                            records.push(self.encoder.dead_letter(
                                record,
                                ErrorClass::HandlerFatal,
                                &format!("outcome cannot be encoded: {e}"),
                                1,
                                now,
                                now,
                            ));
                            *tally.dead.entry(ErrorClass::HandlerFatal).or_default() += 1;
                        }
                    }
                }
                (Work::Order(_), None) => unreachable!("every order is settled"),
            }
        }

        let built = started.elapsed();
        // 5. One transaction: records + next offsets, in the group's current generation.
        let next = batch.next_offsets();
        let mut offsets = TopicPartitionList::new();
        for (p, offset) in &next {
            offsets
                .add_partition_offset(&self.topics.order_created, *p, Offset::Offset(*offset))
                .map_err(|e| PaymentError::kafka("offset list", e))?;
        }
        let Some(group) = self.consumer.group_metadata() else {
            tracing::warn!("no consumer group metadata yet; retrying the batch");
            self.rewind(&batch).await?;
            return Ok(Ending::Retry);
        };
        match self.producer.commit_batch(records, offsets, group).await {
            Ok(took) => {
                self.metrics
                    .transactions
                    .with_label_values(&["committed"])
                    .inc();
                self.metrics
                    .transaction_duration
                    .observe(took.as_secs_f64());
                self.metrics.batch_records.observe(batch.len() as f64);
                for (p, id) in &tally.settled {
                    self.settled.insert(*p, *id);
                }
                let m = &self.metrics;
                m.payments
                    .with_label_values(&["completed", ""])
                    .inc_by(tally.completed);
                for (code, n) in &tally.failed {
                    m.payments.with_label_values(&["failed", code]).inc_by(*n);
                }
                for (class, n) in &tally.dead {
                    m.bus
                        .dead_lettered
                        .with_label_values(&[&self.topics.order_created, class.as_str()])
                        .inc_by(*n);
                }
                m.duplicates_skipped.inc_by(tally.duplicates);
                // Records out, per topic, as they are now visible to read_committed readers.
                let failed: u64 = tally.failed.values().sum();
                let dead: u64 = tally.dead.values().sum();
                for (topic, n) in [
                    (&self.topics.payment_completed, tally.completed),
                    (&self.topics.payment_failed, failed),
                    (&self.topics.dlq, dead),
                ] {
                    if n > 0 {
                        m.bus.produced.with_label_values(&[topic]).inc_by(n);
                    }
                }
                for line in &tally.lines {
                    line.log(&self.topics.order_created);
                }
                tracing::debug!(
                    records = batch.len(),
                    completed = tally.completed,
                    failed = tally.failed.values().sum::<u64>(),
                    dead = tally.dead.values().sum::<u64>(),
                    duplicates = tally.duplicates,
                    index_ms = indexed.as_millis() as u64,
                    settle_ms = (decided - indexed).as_millis() as u64,
                    build_ms = (built - decided).as_millis() as u64,
                    transaction_ms = took.as_millis() as u64,
                    "batch committed"
                );
                Ok(Ending::Committed)
            }
            Err(TxnError::Abortable(e)) => {
                self.metrics
                    .transactions
                    .with_label_values(&["aborted"])
                    .inc();
                tracing::warn!(records = batch.len(), "transaction aborted: {e}");
                self.rewind_to_committed(&batch).await?;
                Ok(Ending::Retry)
            }
            Err(failure) => {
                self.metrics
                    .transactions
                    .with_label_values(&["failed"])
                    .inc();
                self.replace_producer(failure, &batch).await?;
                Ok(Ending::Retry)
            }
        }
    }

    /// After the producer was fenced or failed fatally: a new producer with the same
    /// `transactional.id`, the settled index forgotten, the batch's partitions rewound to
    /// the committed offsets; or, past the [`ReinitBudget`], the error that stops the
    /// service. See [`crate::recovery`].
    async fn replace_producer(
        &mut self,
        failure: TxnError,
        batch: &Batch,
    ) -> Result<(), PaymentError> {
        let reason = match failure {
            TxnError::Fenced(_) => "fenced",
            _ => "fatal",
        };
        let failure = PaymentError::from(failure);
        let n = match self.reinits.record(std::time::Instant::now()) {
            Ok(n) => n,
            Err(failures) => {
                return Err(PaymentError::ReinitsExhausted {
                    transactional_id: self.transactional_id.clone(),
                    failures,
                    window: self.reinits.window(),
                    source: Box::new(failure),
                });
            }
        };
        let mut delay = ReinitBudget::delay(n);
        tracing::warn!(
            transactional_id = %self.transactional_id,
            reason,
            failures_in_window = n,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            records = batch.len(),
            "transactional producer cannot go on; replacing it with a new one under the same transactional.id: {}",
            eventbus::chain(&failure)
        );
        self.metrics
            .producer_reinits
            .with_label_values(&[reason])
            .inc();
        // The replacement's init_transactions needs the transaction coordinator: while
        // the cluster cannot provide one (an outage, not a second instance), keep trying,
        // for at most REPLACEMENT_PATIENCE.
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(delay).await;
            match recovery::new_producer(
                &self.kafka,
                &self.transactional_id,
                &self.transaction,
                &self.metrics,
            )
            .await
            {
                Ok(producer) => {
                    let old = std::mem::replace(&mut self.producer, producer);
                    // Destroying a client blocks on the network: off the async workers,
                    // and not waited for (it may wait out requests to a dead broker).
                    drop(tokio::task::spawn_blocking(move || drop(old)));
                    break;
                }
                // Not something a new producer gets past (authorization, configuration).
                Err(e) if e.fault() == Fault::Setup => return Err(e),
                Err(e) if started.elapsed() >= recovery::REPLACEMENT_PATIENCE => return Err(e),
                Err(e) => {
                    delay = (delay * 2).min(recovery::MAX_DELAY);
                    tracing::warn!(
                        transactional_id = %self.transactional_id,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "the replacement transactional producer could not be initialised; trying again: {}",
                        eventbus::chain(&e)
                    );
                }
            }
        }
        tracing::info!(transactional_id = %self.transactional_id, "transactional producer replaced");
        // The failed transaction may have committed after all: the index is reloaded
        // from the committed outcomes before the next batch.
        let partitions: Vec<i32> = self
            .assigned
            .iter()
            .chain(batch.first_offsets.keys())
            .copied()
            .collect();
        for p in partitions {
            self.settled.forget(p);
        }
        self.rewind_to_committed(batch).await
    }

    /// Seeks the batch's (still assigned) partitions back to the group's committed
    /// offsets ([`recovery::rewind_to_committed`]).
    async fn rewind_to_committed(&self, batch: &Batch) -> Result<(), PaymentError> {
        let first: BTreeMap<i32, i64> = batch
            .first_offsets
            .iter()
            .filter(|(p, _)| self.assigned.contains(p))
            .map(|(p, o)| (*p, *o))
            .collect();
        recovery::rewind_to_committed(
            &self.consumer,
            &self.topics.order_created,
            &first,
            self.transaction.call_timeout,
        )
        .await
    }

    /// Seeks the batch's partitions back to the batch's first offsets, so the same
    /// records are polled again. A failed seek would silently skip records, so it
    /// stops the service instead (a restart resumes from the committed offsets).
    async fn rewind(&self, batch: &Batch) -> Result<(), PaymentError> {
        let mut tpl = TopicPartitionList::new();
        for (p, first) in &batch.first_offsets {
            if self.assigned.contains(p) {
                tpl.add_partition_offset(&self.topics.order_created, *p, Offset::Offset(*first))
                    .map_err(|e| PaymentError::kafka("seek list", e))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || {
            consumer.seek_partitions(tpl, Duration::from_secs(10))
        })
        .await
        .map_err(PaymentError::task("seek"))?
        .map_err(|e| PaymentError::kafka("seek back after an aborted batch", e))?;
        for element in result.elements() {
            if let Err(e) = element.error() {
                return Err(PaymentError::kafka(
                    format!(
                        "seek {} {} back after an aborted batch",
                        element.topic(),
                        element.partition()
                    ),
                    e,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventbus::kafka::Timestamp;

    fn record(p: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            p,
            offset,
            None,
        )
    }

    #[test]
    fn batch_offsets_and_revocation() {
        let mut b = Batch::default();
        for (p, o) in [(0, 10), (1, 5), (0, 11), (1, 6), (0, 12)] {
            b.push(record(p, o));
        }
        assert_eq!(b.first_offsets, BTreeMap::from([(0, 10), (1, 5)]));
        assert_eq!(b.next_offsets(), BTreeMap::from([(0, 13), (1, 7)]));
        assert_eq!(b.drop_partition(0), 3);
        assert_eq!(b.len(), 2);
        assert_eq!(b.next_offsets(), BTreeMap::from([(1, 7)]));
        assert_eq!(b.first_offsets, BTreeMap::from([(1, 5)]));
    }
}
