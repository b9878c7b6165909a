//! The exactly-once sink: every closed epoch's output, its dead letters and its progress
//! record in one Kafka transaction, written by a thread of its own.
//!
//! # Shape (Materialize's Kafka sink, simplified)
//!
//! 1. On every worker the output collections (stock levels, order views) and the
//!    source's control items (uppers of closed epochs, dead letters) are turned into
//!    [`SinkItem`]s stamped with their time and **exchanged to worker 0**, so that one
//!    place sees each epoch whole, whatever the number of workers and processes.
//! 2. Worker 0's operator buffers items by time. When the frontier passes an epoch `t`
//!    (every worker has moved past it), `t` is complete: the operator consolidates it
//!    into absolute values per SKU (a SKU that left the view is written as zeros),
//!    order changes, dead letters and the uppers of the partitions it read, and hands
//!    that to the sink thread over a bounded channel. It never blocks: if the channel is
//!    full it keeps the epoch and retries shortly, and meanwhile the sources throttle.
//! 3. The **sink thread** owns the transactional producer (blocking calls stay off the
//!    worker threads). Per transaction: `begin`, the epochs' `stock.updated` records
//!    (key SKU, `version` = the epoch, Confluent-framed Avro with CloudEvents headers),
//!    their dead letters, one [`ProgressRecord`] on the progress topic, `commit`. When it
//!    falls behind it commits several queued epochs in one transaction (one progress
//!    record lists them all), which is how the sink keeps up when a commit takes longer
//!    than an epoch. Before it picks the epochs of a transaction it waits out eventbus's
//!    settle pause ([`TransactionalProducer::settle`], 10 ms after the previous commit):
//!    begun earlier, the transaction would wait ~20 ms for the coordinator instead, and
//!    the epochs closed during the pause join it.
//! 4. After the commit the thread acknowledges the last epoch to worker 0 (channel plus
//!    `SyncActivator`) and applies the epochs to the [`Views`]. Worker 0 holds a
//!    capability for every epoch until it is acknowledged, so the operator's output
//!    frontier is the **committed frontier**: every worker probes it to throttle its
//!    source, and `frontier delay` measures it.
//!
//! # Restart
//!
//! On start-up, before any worker runs, process 0 creates the producer with the stable
//! `transactional.id` and calls `init_transactions`, which fences the previous
//! incarnation (its open transaction is aborted, its producer can never commit again).
//! Only then is the progress topic read, by every process. The replayed epochs (times up
//! to the last committed one) reach this operator like any others; they are applied to
//! the views (so versions are rebuilt exactly) but never written again. Epochs after it
//! are new. Nothing committed is emitted twice, nothing ingested is skipped.
//!
//! # Failure
//!
//! A transaction that fails abortably is aborted and redone (the same epochs, the same
//! records); a retriable call is retried by eventbus's
//! [`TransactionalProducer`]; a fenced or fatal producer (a newer incarnation took
//! over, authorization) stops the job with an error, and the binary exits non-zero. The
//! restart path is exactly-once, so stopping is always safe.
//!
//! # Producer settings
//!
//! The producer is eventbus's [`TransactionalProducer`], which sets what exactly-once
//! depends on: the stable `transactional.id` (from the config), `enable.idempotence`
//! (required for transactions; no duplicates or reordering from librdkafka's own
//! retries), `acks=all`, and `transaction.timeout.ms` from the config (a crashed job's
//! open transaction blocks `read_committed` readers at most that long, unless a restart
//! aborts it sooner; `delivery.timeout.ms` equals it). The job's own choices, passed as
//! tuning in `fenced_producer`: `compression.type=lz4`, `partitioner=murmur2_random`
//! (keys land on the partitions a Java client would pick) and `linger.ms=5`: the commit
//! waits for whatever is queued at once, so linger only matters while the records of a
//! transaction are being produced; a few milliseconds let them batch into few requests
//! without adding noticeably to the commit; `message.max.bytes` of
//! [`eventbus::dlq::MAX_RECORD_BYTES`] (about 2 MiB), so that the dead-letter copy of an
//! input record as large as its topic allows fits. `PIPELINE_SINK_DEBUG` (for example
//! `eos,msg,protocol`) sets librdkafka's `debug` contexts of this producer.
//!
//! The producer is a `BaseProducer` whose events only the sink thread serves: while
//! committing, and once a second while idle (a `ThreadedProducer`'s polling thread
//! alone cost about 0.7 % of a core in an idle job: rust-rdkafka's `poll` spins through
//! the last millisecond of every 100 ms step). Before `commit_transaction` the sink
//! thread waits for the transaction's delivery reports
//! ([`TransactionalProducer::await_deliveries`], checking every 0.2-2 ms):
//! rust-rdkafka's `commit_transaction` first runs its own flush, which polls in steps of
//! 100 ms that never end early, so every commit took at least 100 ms, idle or not
//! (measured 103-107 ms for one-record transactions; 15-20 ms after this change).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::client::{self, TransactionalOptions};
use eventbus::codec::{frame, validate_and_encode};
use eventbus::dlq::DeadLetter;
use eventbus::headers::{CloudEventAttributes, HeaderList, TraceParent};
use eventbus::kafka::BaseRecord;
use eventbus::{BusMetrics, ErrorClass, KafkaSettings, TransactionalProducer, TxnError};
use schemas::{Event, StockUpdated};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::scheduling::SyncActivator;

use crate::config::{SinkConfig, TopicNames};
use crate::error::PipelineError;
use crate::flow::{DeadRecord, ORDER_LOG_TARGET};
use crate::logic::{Diff, OrderId, OrderView, Sku, StockLevel};
use crate::metrics::Metrics;
use crate::progress::{EpochBinding, FORMAT, ProgressRecord};
use crate::snapshot::WriterInput;
use crate::views::{Delta, OrderChange, StockChange, Views};

pub use crate::flow::SinkItem;

/// One complete epoch, ready to be written.
#[derive(Debug)]
pub(crate) struct EpochOutput {
    pub delta: Delta,
    pub dead: Vec<DeadRecord>,
    pub uppers: Vec<(u8, i32, i64)>,
}

/// From worker 0 to the sink thread.
#[derive(Debug)]
pub(crate) enum SinkCommand {
    /// A replayed epoch (committed before the restart): views only.
    Replay(Delta),
    /// The replay is complete (last committed epoch, if any).
    Rebuilt(Option<u64>),
    /// A new epoch: write it.
    Commit(Box<EpochOutput>),
    /// A snapshot marker: every epoch before it is committed once this is handled.
    Snapshot(u64),
}

/// Health flags shared by the sink and the API.
#[derive(Debug, Default)]
pub struct Health {
    /// The sink committed at least one transaction since start.
    pub committed_once: AtomicBool,
    /// The job failed (the sink or a fetch thread stopped with an error).
    pub failed: AtomicBool,
}

/// Consolidates one epoch's items.
pub(crate) fn consolidate(time: u64, items: Vec<SinkItem>) -> EpochOutput {
    let mut stock: BTreeMap<(Sku, StockLevel), Diff> = BTreeMap::new();
    let mut orders: BTreeMap<(OrderId, OrderView), Diff> = BTreeMap::new();
    let mut dead = Vec::new();
    let mut uppers = Vec::new();
    for item in items {
        match item {
            SinkItem::Stock(sku, level, diff) => *stock.entry((sku, level)).or_default() += diff,
            SinkItem::Order(id, view, diff) => *orders.entry((id, view)).or_default() += diff,
            SinkItem::Upper(topic, partition, upper) => uppers.push((topic, partition, upper)),
            SinkItem::Dead(d) => dead.push(*d),
            SinkItem::Mark => {}
        }
    }
    // Per key: the added value is the new one; a key with only a retraction left.
    let mut new_stock: BTreeMap<Sku, StockLevel> = BTreeMap::new();
    for ((sku, level), diff) in stock {
        if diff > 0 {
            new_stock.insert(sku, level);
        } else if diff < 0 {
            new_stock.entry(sku).or_default();
        }
    }
    let mut new_orders: BTreeMap<OrderId, Option<OrderView>> = BTreeMap::new();
    for ((id, view), diff) in orders {
        if diff > 0 {
            new_orders.insert(id, Some(view));
        } else if diff < 0 {
            new_orders.entry(id).or_insert(None);
        }
    }
    uppers.sort_unstable();
    dead.sort_by_key(|d: &DeadRecord| (d.topic_index, d.partition, d.offset));
    EpochOutput {
        delta: Delta {
            epoch: time,
            stock: new_stock
                .into_iter()
                .map(|(sku, level)| StockChange {
                    sku,
                    level,
                    version: time,
                })
                .collect(),
            orders: new_orders
                .into_iter()
                .map(|(order_id, view)| OrderChange { order_id, view })
                .collect(),
        },
        dead,
        uppers,
    }
}

// ---------------------------------------------------------------------------------------
// The operator (worker 0 does the work; the other workers' instances see no data).
// ---------------------------------------------------------------------------------------

/// Worker 0's ends of the channels to and from the sink thread.
pub(crate) struct SinkPorts {
    pub commands: SyncSender<SinkCommand>,
    pub acks: Receiver<u64>,
}

/// Builds the sink operator; its output carries no data, only the committed frontier.
pub(crate) fn sink_operator<'scope>(
    input: StreamVec<'scope, u64, (u64, SinkItem)>,
    ports: Option<SinkPorts>,
    activator_slot: Arc<Mutex<Option<SyncActivator>>>,
    last_epoch: Option<u64>,
    metrics: Metrics,
) -> StreamVec<'scope, u64, ()> {
    let scope = input.scope();
    let replayed = move |t: u64| last_epoch.is_some_and(|last| t <= last);
    input.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Exchange::new(|_item: &(u64, SinkItem)| 0u64),
        "ExactlyOnceSink",
        move |initial, info| {
            drop(initial);
            let activator = scope.activator_for(Rc::clone(&info.address));
            if ports.is_some() {
                *activator_slot.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(scope.worker().sync_activator_for(info.address.to_vec()));
            }
            let mut pending: BTreeMap<u64, Vec<SinkItem>> = BTreeMap::new();
            let mut held: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
            let mut inflight: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
            let mut blocked: Option<SinkCommand> = None;
            let mut rebuilt_sent = false;
            let replay_bound = last_epoch.unwrap_or(0);
            move |(input, frontier), _output| {
                input.for_each(|cap, data| {
                    for (time, item) in data.drain(..) {
                        if !replayed(time) {
                            held.entry(time).or_insert_with(|| cap.delayed(&time, 0));
                        }
                        pending.entry(time).or_default().push(item);
                    }
                });
                let Some(ports) = &ports else {
                    // Not worker 0: nothing is routed here.
                    pending.clear();
                    held.clear();
                    return;
                };
                while let Ok(acked) = ports.acks.try_recv() {
                    inflight.retain(|time, _| *time > acked);
                }
                let send = |command: SinkCommand, blocked: &mut Option<SinkCommand>| -> bool {
                    match ports.commands.try_send(command) {
                        Ok(()) => true,
                        Err(TrySendError::Full(command)) => {
                            *blocked = Some(command);
                            false
                        }
                        // The sink thread stopped (failure or shutdown): nothing to do.
                        Err(TrySendError::Disconnected(_)) => false,
                    }
                };
                let mut stalled = false;
                if let Some(command) = blocked.take() {
                    stalled = !send(command, &mut blocked);
                }
                while !stalled {
                    let Some((&time, _)) = pending.first_key_value() else {
                        break;
                    };
                    if frontier.less_equal(&time) {
                        break; // not closed yet
                    }
                    if !replayed(time) && !rebuilt_sent {
                        rebuilt_sent = true;
                        if !send(SinkCommand::Rebuilt(last_epoch), &mut blocked) {
                            stalled = true;
                            break;
                        }
                    }
                    let mut items = pending.remove(&time).unwrap_or_default();
                    let marks = items.len();
                    items.retain(|item| *item != SinkItem::Mark);
                    if items.len() < marks {
                        // Every epoch before `time` was sent already; best effort: a
                        // full queue skips this snapshot (the writer then drops it).
                        let _ = ports.commands.try_send(SinkCommand::Snapshot(time));
                    }
                    if items.is_empty() {
                        held.remove(&time); // a marker alone: nothing to commit
                        continue;
                    }
                    let output = consolidate(time, items);
                    let command = if replayed(time) {
                        SinkCommand::Replay(output.delta)
                    } else {
                        if let Some(cap) = held.remove(&time) {
                            inflight.insert(time, cap);
                        }
                        SinkCommand::Commit(Box::new(output))
                    };
                    stalled = !send(command, &mut blocked);
                }
                if !stalled
                    && !rebuilt_sent
                    && !frontier.less_equal(&replay_bound)
                    && pending.keys().next().is_none_or(|t| !replayed(*t))
                {
                    rebuilt_sent = true;
                    send(SinkCommand::Rebuilt(last_epoch), &mut blocked);
                }
                if blocked.is_some() {
                    activator.activate_after(Duration::from_millis(2));
                }
                let oldest = [held.keys().next(), inflight.keys().next()]
                    .into_iter()
                    .flatten()
                    .min()
                    .copied();
                metrics.set_oldest_pending(oldest);
            }
        },
    )
}

// ---------------------------------------------------------------------------------------
// The sink thread.
// ---------------------------------------------------------------------------------------

/// Creates the transactional producer and fences any previous incarnation of the job
/// (`init_transactions`). Blocking; call before the workers start. Its transaction
/// steps are timed into `metrics` (producer `sink`).
pub(crate) fn fenced_producer(
    kafka: &KafkaSettings,
    sink: &SinkConfig,
    metrics: BusMetrics,
) -> Result<TransactionalProducer, PipelineError> {
    let mut tuning = client::tuning([
        // Small batches of keyed Avro records compress well, and lz4 costs little CPU.
        ("compression.type", "lz4".to_owned()),
        // Batch a transaction's records into few requests; the commit does not wait for
        // linger (see the module docs for why 5 ms).
        ("linger.ms", sink.linger_ms.to_string()),
        // Keys land on the partitions a Java client would pick.
        ("partitioner", "murmur2_random".to_owned()),
        // Dead letters keep the original byte for byte: a record of about 1 MiB (the
        // input topic's limit) plus the dlq.* headers is larger than librdkafka's default
        // (1,000,000), which failed the epoch's transaction on every attempt and stopped
        // the job; the DLQ topic accepts as much (deploy/topics.toml).
        (
            "message.max.bytes",
            eventbus::dlq::MAX_RECORD_BYTES.to_string(),
        ),
    ]);
    // librdkafka's debug contexts for this producer only (e.g. `eos,msg,protocol`), for
    // investigating a slow or failing sink.
    if let Ok(debug) = std::env::var("PIPELINE_SINK_DEBUG") {
        tuning.insert("debug".to_owned(), debug);
    }
    let options = TransactionalOptions {
        transactional_id: sink.transactional_id.clone(),
        transaction_timeout: Duration::from_millis(sink.transaction_timeout_ms),
        call_timeout: Duration::from_millis(sink.call_timeout_ms),
        tuning,
    };
    let producer = TransactionalProducer::new(kafka, &options, "sink", metrics)?;
    let started = Instant::now();
    producer.init().map_err(|e| {
        PipelineError::kafka(
            "init_transactions (fencing the previous job)",
            e.kafka_error().clone(),
        )
    })?;
    tracing::info!(
        transactional_id = %sink.transactional_id,
        took_ms = started.elapsed().as_millis() as u64,
        "sink producer ready; any previous incarnation is fenced"
    );
    Ok(producer)
}

/// Everything the sink thread needs.
pub(crate) struct SinkThread {
    pub producer: TransactionalProducer,
    pub commands: Receiver<SinkCommand>,
    pub acks: Sender<u64>,
    pub activator: Arc<Mutex<Option<SyncActivator>>>,
    pub views: Views,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub topics: TopicNames,
    pub config: SinkConfig,
    /// Registry id of the `stock.updated` schema under the output topic's subject.
    pub schema_id: u32,
    /// Its registry URL (`ce_dataschema`).
    pub dataschema: String,
    /// CloudEvents `ce_source`.
    pub source: String,
    /// `dlq.consumer.group`.
    pub group: String,
    /// The committed uppers restored by the replay.
    pub restored: Vec<((u8, i32), i64)>,
    /// A restored snapshot's epoch and SKU versions: the views take these versions
    /// right after the snapshot's epoch (whose replay stamps every SKU with it).
    pub restored_versions: Option<(u64, Vec<(Sku, u64)>)>,
    /// The snapshot writer, when snapshots are on.
    pub snapshots: Option<SyncSender<WriterInput>>,
}

/// One DEBUG line per order whose state an epoch committed, under
/// [`ORDER_LOG_TARGET`]: the order's new status is now
/// in the views and its SKUs' numbers in `stock.updated` (version = `epoch`). The line of
/// the record whose arrival made the change (topic, partition, offset, trace) has the
/// same `epoch` (for a payment read before its order: the order's `order.created`).
fn log_committed(delta: &Delta) {
    if !tracing::enabled!(target: ORDER_LOG_TARGET, tracing::Level::DEBUG) {
        return;
    }
    for change in &delta.orders {
        let order_id = uuid::Uuid::from_u128(change.order_id);
        let status = change
            .view
            .as_ref()
            .map_or("REMOVED", |v| v.status.as_str());
        tracing::debug!(
            target: ORDER_LOG_TARGET,
            order_id = %order_id,
            status,
            epoch = delta.epoch,
            "order state committed"
        );
    }
}

impl SinkThread {
    /// The thread's loop: returns when worker 0 is gone, or with the error that stops
    /// the job.
    pub(crate) fn run_blocking(mut self) -> Result<(), PipelineError> {
        let mut deferred: Option<SinkCommand> = None;
        loop {
            let command = match deferred.take() {
                Some(command) => command,
                None => match self.commands.recv_timeout(Duration::from_secs(1)) {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => {
                        self.serve_events(); // errors and logs of an idle producer
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break, // worker 0 is gone
                },
            };
            match command {
                SinkCommand::Replay(delta) => {
                    let epoch = delta.epoch;
                    if self
                        .restored_versions
                        .as_ref()
                        .is_some_and(|(s, _)| epoch > *s)
                    {
                        self.restore_versions();
                    }
                    self.views.apply(delta, &[]);
                    if self
                        .restored_versions
                        .as_ref()
                        .is_some_and(|(s, _)| epoch == *s)
                    {
                        self.restore_versions();
                    }
                }
                SinkCommand::Snapshot(marker) => self.mark_snapshot(marker),
                SinkCommand::Rebuilt(epoch) => {
                    self.restore_versions();
                    self.views.restore_offsets(self.restored.iter().copied());
                    self.views.set_ready(epoch);
                    tracing::info!(as_of = ?epoch, "views rebuilt");
                }
                SinkCommand::Commit(first) => {
                    // The coordinator's pause after the previous commit: epochs closed
                    // meanwhile join this transaction (eventbus's "settle pause").
                    self.producer.settle();
                    let mut group = vec![*first];
                    while group.len() < self.config.max_epochs_per_transaction {
                        match self.commands.try_recv() {
                            Ok(SinkCommand::Commit(next)) => group.push(*next),
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let started = Instant::now();
                    self.transact(&group)?;
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .epochs_per_transaction
                        .observe(group.len() as f64);
                    let last = group.last().map_or(0, |e| e.delta.epoch);
                    self.health.committed_once.store(true, Ordering::Release);
                    self.metrics
                        .committed_epoch
                        .set(i64::try_from(last).unwrap_or(i64::MAX));
                    // Acknowledge first (releases the frontier), then publish.
                    let _ = self.acks.send(last);
                    if let Some(activator) = self
                        .activator
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                    {
                        let _ = activator.activate();
                    }
                    for epoch in group {
                        log_committed(&epoch.delta);
                        self.views.apply(epoch.delta, &epoch.uppers);
                    }
                    let state = self.views.read();
                    self.metrics
                        .view_rows
                        .with_label_values(&["stock"])
                        .set(i64::try_from(state.stock.len()).unwrap_or(i64::MAX));
                    self.metrics
                        .view_rows
                        .with_label_values(&["orders"])
                        .set(i64::try_from(state.orders.len()).unwrap_or(i64::MAX));
                }
            }
        }
        Ok(())
    }

    /// Writes `group` in one transaction, redoing it after abortable failures.
    fn transact(&self, group: &[EpochOutput]) -> Result<(), PipelineError> {
        let last = group.last().map_or(0, |e| e.delta.epoch);
        let fail = |attempt: u32, source: TxnError| PipelineError::Transaction {
            epoch: last,
            attempt,
            source,
        };
        const ATTEMPTS: u32 = 5;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.try_transact(group) {
                Ok(()) => return Ok(()),
                Err(TxnError::Abortable(e)) => e,
                // A newer incarnation owns the transactional id, or the producer cannot
                // go on: nothing of this transaction becomes visible, and a restart's
                // `init` cleans up.
                Err(e @ (TxnError::Fenced(_) | TxnError::Fatal(_))) => {
                    return Err(fail(attempt, e));
                }
            };
            if let Err(e) = self.producer.abort() {
                tracing::warn!(epoch = last, attempt, "sink transaction failed: {error}");
                return Err(fail(attempt, e));
            }
            if attempt == ATTEMPTS {
                return Err(fail(attempt, TxnError::Abortable(error)));
            }
            tracing::warn!(
                epoch = last,
                attempt,
                "sink transaction failed, redoing it: {error}"
            );
            std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
        }
    }

    fn try_transact(&self, group: &[EpochOutput]) -> Result<(), TxnError> {
        let started = Instant::now();
        self.producer.begin()?;
        let mut stock_records = 0u64;
        let mut dead_records = 0u64;
        for epoch in group {
            let time = epoch.delta.epoch;
            for change in &epoch.delta.stock {
                let (value, headers) = self.encode_stock(change, time);
                self.producer.send(
                    BaseRecord::to(&self.topics.stock_updated)
                        .key(change.sku.as_bytes())
                        .payload(&value)
                        .headers(headers.to_owned_headers()),
                )?;
                stock_records += 1;
            }
            for dead in &epoch.dead {
                let headers = self.dead_letter_headers(dead);
                let mut record = BaseRecord::<[u8], [u8]>::to(&self.topics.dlq)
                    .headers(headers.to_owned_headers());
                if let Some(key) = &dead.key {
                    record = record.key(key.as_slice());
                }
                if let Some(value) = &dead.value {
                    record = record.payload(value.as_slice());
                }
                self.producer.send(record)?;
                dead_records += 1;
            }
        }
        let progress = ProgressRecord {
            format: FORMAT,
            epochs: group
                .iter()
                .map(|e| EpochBinding {
                    time: e.delta.epoch,
                    uppers: e.uppers.clone(),
                    dead: e
                        .dead
                        .iter()
                        .map(|d| (d.topic_index, d.partition, d.offset))
                        .collect(),
                })
                .collect(),
            frontier: group.last().map_or(0, |e| e.delta.epoch + 1),
            committed_at_ms: crate::clock::now_ms(),
        };
        let bytes = progress.to_bytes();
        self.producer.send(
            BaseRecord::to(&self.topics.progress)
                .partition(0)
                .key("progress".as_bytes())
                .payload(&bytes),
        )?;
        let produced = started.elapsed();
        // Every record acknowledged first, served here every 0.2-2 ms; then
        // `commit_transaction` has nothing left to flush (see the module docs).
        self.producer.await_deliveries()?;
        self.producer.commit()?;
        tracing::debug!(
            epochs = group.len(),
            stock_records,
            produce_us = produced.as_micros() as u64,
            commit_us = (started.elapsed() - produced).as_micros() as u64,
            "transaction committed"
        );
        self.metrics
            .sink_records
            .with_label_values(&[self.topics.stock_updated.as_str()])
            .inc_by(stock_records);
        if dead_records > 0 {
            self.metrics
                .sink_records
                .with_label_values(&[self.topics.dlq.as_str()])
                .inc_by(dead_records);
        }
        self.metrics
            .sink_records
            .with_label_values(&[self.topics.progress.as_str()])
            .inc();
        Ok(())
    }

    /// Gives the views a restored snapshot's SKU versions (once).
    fn restore_versions(&mut self) {
        if let Some((_, versions)) = self.restored_versions.take() {
            self.views.restore_versions(versions);
        }
    }

    /// Every epoch before `marker` is committed and in the views: hands what the
    /// snapshot covers to the writer (never waits: a busy writer skips the marker).
    fn mark_snapshot(&self, marker: u64) {
        let Some(writer) = &self.snapshots else {
            return;
        };
        let mark = {
            let state = self.views.read();
            WriterInput::Mark {
                marker,
                epoch: state.as_of,
                offsets: state.offsets.clone(),
                versions: state
                    .versions
                    .iter()
                    .map(|(s, v)| (s.clone(), *v))
                    .collect(),
            }
        };
        if writer.try_send(mark).is_err() {
            self.metrics.snapshot_skipped.inc();
        }
    }

    /// Serves the producer's queued events (delivery reports, errors, logs) without
    /// waiting.
    fn serve_events(&self) {
        // `poll` serves at most one event; a delivery report covers a whole batch.
        for _ in 0..16 {
            self.producer.poll();
        }
    }

    /// The Confluent-framed value and CloudEvents headers of one `stock.updated`.
    fn encode_stock(&self, change: &StockChange, time: u64) -> (Vec<u8>, HeaderList) {
        let version = i64::try_from(time).unwrap_or(i64::MAX);
        let event = StockUpdated::new(
            change.sku.clone(),
            change.level.on_hand,
            change.level.reserved,
            version,
            version,
        );
        // The numbers come from validated inputs; should a rule still fail (a hostile
        // quantity near i64::MAX), the record is written anyway: a missing update would
        // be worse than a strange one, and the schema itself is still enforced.
        let datum = validate_and_encode(&event).or_else(|e| {
            tracing::error!(sku = %change.sku, "stock.updated breaks a rule, written anyway: {e}");
            event.to_avro()
        });
        let datum = datum.unwrap_or_else(|e| {
            tracing::error!(sku = %change.sku, "stock.updated does not fit its schema: {e}");
            Vec::new()
        });
        let id = event.event_id();
        let headers = CloudEventAttributes {
            id: &id,
            source: &self.source,
            event_type: StockUpdated::TYPE,
            time_ms: version,
            dataschema: Some(&self.dataschema),
        }
        .to_headers(&TraceParent::generate());
        (frame(self.schema_id, &datum), headers)
    }

    fn dead_letter_headers(&self, dead: &DeadRecord) -> HeaderList {
        let letter = DeadLetter {
            topic: dead.topic.clone(),
            partition: dead.partition,
            offset: dead.offset,
            timestamp_ms: dead.timestamp_ms,
            key: dead.key.clone(),
            group: self.group.clone(),
            class: ErrorClass::parse(&dead.class).unwrap_or(ErrorClass::Undecodable),
            message: dead.message.clone(),
            attempts: 0,
            first_failure_ms: dead.failed_at_ms,
            last_failure_ms: dead.failed_at_ms,
        };
        letter.headers(&HeaderList(dead.headers.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::OrderStatus;

    #[test]
    fn epochs_consolidate_to_absolute_values() {
        let level = |on_hand, reserved| StockLevel {
            on_hand,
            reserved,
            available: on_hand - reserved,
        };
        let view = |status| OrderView {
            status,
            currency: "EUR".into(),
            total_minor: 1,
            lines: vec![],
        };
        let items = vec![
            SinkItem::Stock("A".into(), level(5, 0), -1),
            SinkItem::Stock("A".into(), level(5, 2), 1),
            SinkItem::Stock("B".into(), level(0, 2), -1), // left the view
            SinkItem::Stock("C".into(), level(1, 0), 1),
            SinkItem::Stock("C".into(), level(1, 0), -1), // cancels out
            SinkItem::Order(1, view(OrderStatus::Created), -1),
            SinkItem::Order(1, view(OrderStatus::Paid), 1),
            SinkItem::Upper(0, 2, 10),
            SinkItem::Upper(0, 1, 4),
        ];
        let out = consolidate(100, items);
        assert_eq!(out.delta.epoch, 100);
        let stock: Vec<(&str, StockLevel, u64)> = out
            .delta
            .stock
            .iter()
            .map(|c| (c.sku.as_str(), c.level, c.version))
            .collect();
        assert_eq!(
            stock,
            vec![("A", level(5, 2), 100), ("B", StockLevel::default(), 100)]
        );
        assert_eq!(out.delta.orders.len(), 1);
        assert_eq!(
            out.delta.orders[0].view.as_ref().map(|v| v.status),
            Some(OrderStatus::Paid)
        );
        assert_eq!(out.uppers, vec![(0, 1, 4), (0, 2, 10)]);
    }
}
