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
//! 3-broker cluster (2 cores) that put a floor of about 110 ms under every
//! transaction, whether it carried 100, 500 or 2000 records, when the table below was
//! measured; since eventbus sends the offsets after the records (3 December), a small
//! transaction takes about 50 ms (`eventbus_transaction_step_seconds` shows each
//! step). Measured with `tests/throughput.rs` (release binary, 20 000 backlogged
//! orders, default gateway):
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

mod batch;
mod consumer;
mod effects;
mod rewind;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventbus::codec::{DecodeFailure, decode};
use eventbus::kafka::{Consumer, Message, Offset, TopicPartitionList};
use eventbus::{Jitter, KafkaSettings, RegistryClient, RetryPolicy, TxnError};
use futures::StreamExt;
use schemas::OrderCreated;
use uuid::Uuid;

pub use consumer::{OrderConsumer, consumer_tuning, create_consumer};

use crate::config::{Config, SettleConfig, Topics, TransactionConfig};
use crate::error::PaymentError;
use crate::gateway::PaymentGateway;
use crate::metrics::PaymentMetrics;
use crate::outcome::OutcomeEncoder;
use crate::recovery::ReinitBudget;
use crate::server::Health;
use crate::settled_index::{self, SettledIndex};
use crate::settlement::{Settlement, settle};
use crate::transaction::TxnProducer;
use batch::Batch;
use effects::{Timings, Work};

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

    /// One batch, steps 1-5 of the module docs.
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
            // A record without a key is dead-lettered like a bad value (eventbus's
            // check_key says why): its order's other records may be on another partition.
            let decoded = match eventbus::codec::check_key(record.key()) {
                Ok(()) => {
                    decode::<OrderCreated>(&self.registry, record.topic(), record.payload()).await
                }
                Err(failure) => Err(failure),
            };
            let work = match decoded {
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
        let (records, tally) = self.build(&batch.records, &works, settlements);
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
                let timings = Timings {
                    index: indexed,
                    settle: decided - indexed,
                    build: built - decided,
                };
                self.on_committed(tally, batch.len(), took, &timings);
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
}
