//! The Kafka source: each worker reads its own partitions, stamps every record with the
//! shared clock's epoch, and releases epochs as the clock moves.
//!
//! # Two halves
//!
//! A **fetch thread** per worker owns an input reader (eventbus's
//! [`client::reader`]). It `assign()`s the worker's
//! partitions (no consumer-group rebalancing: partition `(t, p)` belongs to worker
//! `(p + t) % peers` over all workers of all processes, see [`crate::clock::owner`]),
//! reads `read_committed` from the beginning, decodes through the registry, and hands
//! decoded records to the worker over a bounded queue, waking it with a timely
//! `SyncActivator`. Blocking work (polling, registry look-ups, retries while the registry
//! is down) therefore never runs on a worker thread, and a full queue stops the thread
//! from polling, which is how back-pressure reaches Kafka.
//!
//! The **source operator** on the worker drains that queue. Each record gets the epoch
//! of the operator's capability as its time; the capability follows the wall clock
//! (rounded down to the epoch length), so the dataflow frontier follows the clock and an
//! epoch's output is complete as soon as every worker has moved past it.
//!
//! # Waking without spinning
//!
//! An idle job must not burn CPU, so nothing ticks while nothing happens:
//! - new data wakes the worker through the fetch thread's `SyncActivator`;
//! - while an epoch holds records, the operator schedules itself (`activate_after`) for
//!   the moment the epoch ends, closes it, and stops ticking once its epochs are empty;
//! - a worker that has no data of its own must still move its capability past an epoch
//!   that *other* workers filled, or the frontier would wait for it forever. So the first
//!   record of an epoch also produces an *announcement* (the epoch's time) that is
//!   broadcast to every worker of every process; the announcement wakes each worker's
//!   source, which then closes its own epochs up to that time on its own clock.
//!
//! # Back-pressure
//!
//! Timely has no flow control. A worker remembers the epochs in which it ingested
//! records and watches the sink's committed frontier (a probe); while its oldest
//! uncommitted epoch is older than `clock.slack_ms`, it stops draining its queue (the
//! fetch thread then stops polling). Worker 0 holds a capability for every epoch until
//! its transaction is committed, so a slow or stuck sink throttles every source of every
//! process. Throttling only looks at epochs that hold data, so an idle job whose
//! frontier stood still does not throttle the first record after the pause.
//!
//! # Restart
//!
//! With bindings from the progress topic ([`crate::clock`]), the fetch thread first
//! replays each owned partition from its beginning up to its last committed upper and
//! tags each record with its bound epoch; the operator emits those at exactly those
//! times (its capability starts at the first committed epoch). Partitions that finished
//! replaying are paused so that no live record overtakes the replay; when all are done
//! the thread sends a "replay done" marker and the operator moves to fresh epochs
//! strictly after the last committed one. Replayed records that were dead-lettered the
//! first time are skipped (the progress record lists them), without decoding them again.
//!
//! # Order log lines and traces
//!
//! Every live record about an order (created, updated, payment outcome) or a SKU
//! (stock adjusted) gets one DEBUG line under the target [`ORDER_LOG_TARGET`] when the
//! source stamps it with its epoch: `order_id` (or `sku`), `event`, `topic`,
//! `partition`, `offset`, `epoch`, `worker`, and the trace the record's producer sent
//! in its W3C `traceparent` header, continued as a child span: `trace_id` (the
//! producer's), `parent_span_id` (the producer's span) and `span_id` (the job's new
//! span for this record; a record without a valid `traceparent` starts a new trace).
//! The sink thread adds a line when the order's new state is committed (see
//! [`crate::sink`]). DEBUG and a target of their own because a line costs tens of
//! microseconds (measured ~54 µs in a dev build, 35 ns when filtered out): on by default
//! it would cost more than a core at the rates the job sustains. Turn them on with
//! `pipeline::orders=debug` in `RUST_LOG` or `telemetry.filter`. Replayed records log
//! nothing (a restart would repeat history).
//!
//! # Bad records
//!
//! A record that is not Confluent-framed Avro, names an unknown schema, or breaks the
//! event's rules becomes a [`DeadRecord`] (with eventbus's error class): it flows to the
//! sink, which writes it to the dead-letter topic in the same transaction as its epoch,
//! and it advances its partition's offset like any record. Nothing an upstream producer
//! writes can crash the job.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use differential_dataflow::AsCollection;
use eventbus::client::{self, ReaderOptions};
use eventbus::headers::{HeaderList, TRACEPARENT, TraceParent};
use eventbus::kafka::{
    BaseConsumer, BorrowedMessage, Consumer, Message, Offset, TopicPartitionList,
};
use eventbus::{ErrorClass, KafkaSettings, RegistryClient, RegistryConfig};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::scheduling::SyncActivator;

use crate::clock::{Bindings, epoch_of, now_ms, owner};
use crate::error::PipelineError;
use crate::input::{Rejection, decode_input};
use crate::kafka;
use crate::logic::{Diff, Events, InputEvent, Pos};
use crate::metrics::Metrics;
use crate::sink::SinkItem;

/// The `tracing` target of the per-order (and per-SKU) lines, at DEBUG (module docs).
pub const ORDER_LOG_TARGET: &str = "pipeline::orders";

/// An input record that could not be ingested, on its way to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRecord {
    /// The input topic (full name).
    pub topic: String,
    /// Its index in [`crate::input::INPUT_TOPICS`].
    pub topic_index: u8,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, ms, if it had one.
    pub timestamp_ms: Option<i64>,
    /// The original key, byte for byte.
    pub key: Option<Vec<u8>>,
    /// The original value, byte for byte.
    pub value: Option<Vec<u8>>,
    /// The original headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// eventbus's error class (`undecodable`, `unknown-schema`, `schema-invalid`).
    pub class: String,
    /// What was wrong.
    pub message: String,
    /// When the job gave up on it, ms.
    pub failed_at_ms: i64,
}

/// A decoded record: an event, or a dead letter.
#[derive(Debug)]
pub(crate) enum Item {
    Event(InputEvent),
    Dead(Box<DeadRecord>),
    /// A replayed record that was dead-lettered when first read: skipped.
    Skipped,
}

/// What a fetch thread hands its worker.
#[derive(Debug)]
pub(crate) enum Fetched {
    Record {
        topic: u8,
        partition: i32,
        offset: i64,
        /// The committed epoch of a replayed record; `None` for a live one.
        bound: Option<u64>,
        item: Item,
        /// The producer's `traceparent`, read only for live records while the order log
        /// lines are on (`None` also when the header is missing or malformed).
        trace: Option<TraceParent>,
    },
    /// Every replayed record was handed over; live records follow.
    ReplayDone,
}

/// Everything a fetch thread needs.
pub(crate) struct FetchParams {
    pub kafka: KafkaSettings,
    pub registry: RegistryConfig,
    pub topics: [String; 5],
    pub service: String,
    pub worker: usize,
    pub peers: usize,
    pub bindings: Arc<Bindings>,
    pub statistics_interval_ms: u64,
    pub metrics: Metrics,
    pub stop: Arc<AtomicBool>,
}

/// Starts the fetch thread of one worker.
pub(crate) fn spawn_fetcher(
    params: FetchParams,
    queue: SyncSender<Fetched>,
    activator: SyncActivator,
) -> std::io::Result<JoinHandle<Result<(), PipelineError>>> {
    std::thread::Builder::new()
        .name(format!("fetch-{}", params.worker))
        .spawn(move || {
            let mut fetcher = Fetcher {
                queue,
                activator,
                stop: params.stop.clone(),
            };
            let result = fetcher.run(&params);
            // Whatever happened, wake the worker so it notices.
            let _ = fetcher.activator.activate();
            result
        })
}

/// The input reader of one worker: `assign()`ed partitions, `read_committed` (only
/// records of committed transactions, in their order), nothing ever committed.
fn input_reader(params: &FetchParams) -> Result<BaseConsumer, PipelineError> {
    let mut settings = params
        .kafka
        .clone()
        // One client per worker, named for it in broker logs and quotas.
        .with_client_id(format!("{}-w{}", params.kafka.client_id, params.worker));
    // The input-lag gauges' refresh interval is the source's setting (0: no gauges).
    settings.statistics_interval_ms = params.statistics_interval_ms;
    let options = ReaderOptions {
        read_committed: true,
        partition_eof: false,
        // Only a label: partitions are assigned and no offset is ever committed (they
        // live in the progress topic). The service name, because the ACLs grant the
        // job's principal the groups prefixed with it.
        group_id: Some(params.service.clone()),
        statistics: params.statistics_interval_ms > 0,
        tuning: client::tuning([
            // Partitions are assigned from their beginning; should an offset ever be out
            // of range (retention deleted it meanwhile), restart at the earliest record
            // rather than librdkafka's default, the end, which would skip records.
            ("auto.offset.reset", "earliest".to_owned()),
        ]),
    };
    let context = kafka::context(&params.kafka, &format!("fetch-{}", params.worker))
        .with_stats_hook(kafka::input_lag_hook(params.metrics.clone()));
    client::reader(&settings, &options, context).map_err(PipelineError::from)
}

/// The fetch thread's bookkeeping.
struct FetchState {
    /// Partitions still replaying, with their last committed upper.
    replay: HashMap<(u8, i32), i64>,
    replaying: bool,
    paused: Vec<(u8, i32)>,
    /// Live records that arrived while other partitions still replayed.
    held: Vec<Fetched>,
    /// Per partition, one past the last record handed over.
    next: HashMap<(u8, i32), i64>,
    topic_index: HashMap<String, u8>,
}

struct Fetcher {
    queue: SyncSender<Fetched>,
    activator: SyncActivator,
    stop: Arc<AtomicBool>,
}

impl Fetcher {
    /// Hands one item to the worker, waiting while the queue is full. `false` if the
    /// job is stopping.
    fn send(&self, mut item: Fetched) -> bool {
        loop {
            match self.queue.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    let _ = self.activator.activate();
                    if self.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }

    fn run(&mut self, params: &FetchParams) -> Result<(), PipelineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| PipelineError::Spawn {
                what: format!("fetch runtime {}", params.worker),
                source,
            })?;
        // One registry client per thread: reqwest pools belong to the runtime that
        // opened them.
        let registry = RegistryClient::new(&params.registry)?;
        let consumer = input_reader(params)?;

        // The worker's partitions, from metadata.
        let mut owned: Vec<(u8, i32)> = Vec::new();
        for (index, topic) in params.topics.iter().enumerate() {
            let topic_index = u8::try_from(index).unwrap_or(u8::MAX);
            let count = kafka::partition_count(&consumer, topic, Duration::from_secs(30))?
                .ok_or_else(|| PipelineError::MissingInput {
                    topic: topic.clone(),
                })?;
            for partition in 0..count {
                if owner(topic_index, partition, params.peers) == params.worker {
                    owned.push((topic_index, partition));
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &owned {
            tpl.add_partition_offset(
                &params.topics[usize::from(*topic)],
                *partition,
                Offset::Beginning,
            )
            .map_err(|e| PipelineError::kafka("assign", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| PipelineError::kafka("assign", e))?;

        // Partitions still to replay, with their committed upper.
        let mut replay: HashMap<(u8, i32), i64> = HashMap::new();
        for (topic, partition) in &owned {
            let upper = params.bindings.upper(*topic, *partition);
            if upper == 0 {
                continue;
            }
            let name = &params.topics[usize::from(*topic)];
            let (low, high) = consumer
                .fetch_watermarks(name, *partition, Duration::from_secs(30))
                .map_err(|e| {
                    PipelineError::kafka(format!("watermarks of {name}/{partition}"), e)
                })?;
            if high < upper {
                return Err(PipelineError::InputTruncated {
                    topic: name.clone(),
                    partition: *partition,
                    end: high,
                    committed: upper,
                });
            }
            if low >= upper {
                tracing::warn!(
                    topic = %name, partition, low, upper,
                    "every committed record of the partition was deleted by retention; its contribution to the state is lost"
                );
                continue;
            }
            replay.insert((*topic, *partition), upper);
        }
        tracing::info!(
            worker = params.worker,
            partitions = owned.len(),
            replaying = replay.len(),
            "fetch thread assigned"
        );
        let replaying = !replay.is_empty();
        if !replaying {
            if !self.send(Fetched::ReplayDone) {
                return Ok(());
            }
            let _ = self.activator.activate();
        }
        let mut state = FetchState {
            replay,
            replaying,
            paused: Vec::new(),
            held: Vec::new(),
            next: HashMap::new(),
            topic_index: params
                .topics
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), u8::try_from(i).unwrap_or(u8::MAX)))
                .collect(),
        };
        while !self.stop.load(Ordering::Relaxed) {
            let mut polled = consumer.poll(Duration::from_millis(500));
            let mut burst = 0usize;
            while let Some(result) = polled.take() {
                match result {
                    Err(e) => tracing::warn!(worker = params.worker, "input consumer: {e}"),
                    Ok(message) => {
                        if !self
                            .handle(&consumer, &runtime, &registry, params, &mut state, &message)
                        {
                            return Ok(()); // stopping
                        }
                    }
                }
                burst += 1;
                if burst < 1_024 {
                    polled = consumer.poll(Duration::ZERO);
                }
            }
            if burst > 0 {
                let _ = self.activator.activate();
            }
        }
        Ok(())
    }

    /// Handles one record: decode, tag with its bound epoch when replayed, hand over (or
    /// hold it while other partitions still replay). `false` when the job is stopping.
    fn handle(
        &self,
        consumer: &BaseConsumer,
        runtime: &tokio::runtime::Runtime,
        registry: &RegistryClient,
        params: &FetchParams,
        state: &mut FetchState,
        message: &BorrowedMessage<'_>,
    ) -> bool {
        let Some(&topic) = state.topic_index.get(message.topic()) else {
            return true;
        };
        let key = (topic, message.partition());
        let offset = message.offset();
        // A pause/resume may hand out records again: keep each once.
        if state.next.get(&key).is_some_and(|n| offset < *n) {
            return true;
        }
        state.next.insert(key, offset + 1);
        let replayed = if state.replaying {
            state.replay.get(&key).copied()
        } else {
            None
        };
        let bound = replayed
            .filter(|upper| offset < *upper)
            .and_then(|_| params.bindings.bind(topic, key.1, offset));
        let item = if bound.is_some() && params.bindings.is_dead(topic, key.1, offset) {
            Item::Skipped
        } else {
            match self.decode(runtime, registry, params, topic, message) {
                Some(item) => item,
                None => return false,
            }
        };
        let trace = if bound.is_none() && order_lines_enabled() {
            traceparent(message)
        } else {
            None
        };
        let record = Fetched::Record {
            topic,
            partition: key.1,
            offset,
            bound,
            item,
            trace,
        };
        if !state.replaying {
            return self.send(record);
        }
        if bound.is_some() {
            if !self.send(record) {
                return false;
            }
            if replayed.is_some_and(|upper| offset + 1 >= upper) {
                state.replay.remove(&key);
                pause(consumer, params, key, &mut state.paused);
            }
        } else {
            // A live record of a partition that finished replaying (or whose remaining
            // committed records were deleted): hold it until every partition is done.
            state.replay.remove(&key);
            pause(consumer, params, key, &mut state.paused);
            state.held.push(record);
        }
        if state.replay.is_empty() {
            state.replaying = false;
            tracing::info!(worker = params.worker, "replay done");
            if !self.send(Fetched::ReplayDone) {
                return false;
            }
            for record in state.held.drain(..) {
                if !self.send(record) {
                    return false;
                }
            }
            resume(consumer, params, &mut state.paused);
        }
        true
    }

    /// Decodes one record, retrying while the registry is unreachable. `None` when the
    /// job stops meanwhile.
    fn decode(
        &self,
        runtime: &tokio::runtime::Runtime,
        registry: &RegistryClient,
        params: &FetchParams,
        topic: u8,
        message: &BorrowedMessage<'_>,
    ) -> Option<Item> {
        let name = &params.topics[usize::from(topic)];
        let mut delay = Duration::from_millis(100);
        loop {
            let result = runtime.block_on(decode_input(registry, topic, name, message.payload()));
            match result {
                Ok(event) => return Some(Item::Event(event)),
                Err(Rejection::Data { class, error }) => {
                    let why = eventbus::error::chain(&error);
                    params
                        .metrics
                        .dead_lettered
                        .with_label_values(&[name.as_str(), class.as_str()])
                        .inc();
                    tracing::warn!(
                        topic = %name,
                        partition = message.partition(),
                        offset = message.offset(),
                        class = class.as_str(),
                        "dead-lettering input record: {why}"
                    );
                    return Some(Item::Dead(Box::new(dead_record(
                        name, topic, message, class, why,
                    ))));
                }
                Err(Rejection::Infrastructure(error)) => {
                    let why = eventbus::error::chain(&error);
                    tracing::warn!(topic = %name, "registry unavailable, retrying in {delay:?}: {why}");
                    if self.stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Whether the per-order lines are on (a cached check of the subscriber's filter).
fn order_lines_enabled() -> bool {
    tracing::enabled!(target: ORDER_LOG_TARGET, tracing::Level::DEBUG)
}

/// The record's W3C `traceparent`, if present and valid.
fn traceparent(message: &BorrowedMessage<'_>) -> Option<TraceParent> {
    use eventbus::kafka::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
        .and_then(TraceParent::parse)
}

/// The order line of one live record stamped with `epoch` (module docs).
fn log_ingested(
    event: &InputEvent,
    topic: &str,
    partition: i32,
    offset: i64,
    epoch: u64,
    trace: Option<TraceParent>,
) {
    if !order_lines_enabled() {
        return;
    }
    // The job's span for this record: a child of the producer's, or a new trace.
    let span = trace.map_or_else(TraceParent::generate, |t| t.child());
    let trace_id = hex::encode(span.trace_id);
    let span_id = hex::encode(span.span_id);
    let parent_span_id = trace.map(|t| hex::encode(t.span_id));
    let order_id = event
        .order_id()
        .map(|id| uuid::Uuid::from_u128(id).to_string());
    let sku = match event {
        InputEvent::StockAdjusted { sku, .. } => Some(sku.as_str()),
        _ => None,
    };
    tracing::debug!(
        target: ORDER_LOG_TARGET,
        order_id,
        sku,
        event = event.kind(),
        topic,
        partition,
        offset,
        epoch,
        trace_id,
        span_id,
        parent_span_id,
        "{} record ingested",
        if sku.is_some() { "stock" } else { "order" }
    );
}

fn dead_record(
    topic: &str,
    topic_index: u8,
    message: &BorrowedMessage<'_>,
    class: ErrorClass,
    why: String,
) -> DeadRecord {
    let headers = HeaderList::from_headers(message.headers());
    DeadRecord {
        topic: topic.to_owned(),
        topic_index,
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: headers.0,
        class: class.as_str().to_owned(),
        message: why,
        failed_at_ms: i64::try_from(now_ms()).unwrap_or(i64::MAX),
    }
}

fn partition_list(params: &FetchParams, partitions: &[(u8, i32)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(&params.topics[usize::from(*topic)], *partition);
    }
    tpl
}

fn pause(
    consumer: &BaseConsumer,
    params: &FetchParams,
    key: (u8, i32),
    paused: &mut Vec<(u8, i32)>,
) {
    if paused.contains(&key) {
        return;
    }
    if let Err(e) = consumer.pause(&partition_list(params, &[key])) {
        tracing::warn!("pause {key:?}: {e}");
    }
    paused.push(key);
}

fn resume(consumer: &BaseConsumer, params: &FetchParams, paused: &mut Vec<(u8, i32)>) {
    if paused.is_empty() {
        return;
    }
    if let Err(e) = consumer.resume(&partition_list(params, paused)) {
        tracing::warn!("resume: {e}");
    }
    paused.clear();
}

// ---------------------------------------------------------------------------------------
// The operator.
// ---------------------------------------------------------------------------------------

/// Everything the source operator needs.
pub(crate) struct SourceParams {
    pub epoch_ms: u64,
    pub slack_ms: u64,
    pub max_per_activation: usize,
    /// From the bindings: replayed records are at or after the first committed epoch,
    /// fresh epochs start after the last.
    pub first_epoch: Option<u64>,
    pub last_epoch: Option<u64>,
    pub queue: Receiver<Fetched>,
    /// The sink's committed frontier.
    pub committed: ProbeHandle<u64>,
    /// The largest epoch announced by any worker (set by the waker).
    pub demand: Rc<Cell<u64>>,
    pub metrics: Metrics,
    pub topics: [String; 5],
}

/// The streams of a worker's source.
pub(crate) struct SourceStreams<'scope> {
    /// Decoded input records at their epochs.
    pub events: Events<'scope>,
    /// For the sink: uppers of closed epochs and dead letters.
    pub control: StreamVec<'scope, u64, (u64, SinkItem)>,
    /// The first record of every epoch of this worker, as the epoch's time.
    pub announcements: StreamVec<'scope, u64, u64>,
    /// The operator's address, for activators.
    pub address: Rc<[usize]>,
}

type EventUpdate = ((Pos, InputEvent), u64, Diff);

/// Builds the source operator of this worker.
pub(crate) fn kafka_source<'scope>(
    scope: Scope<'scope, u64>,
    params: SourceParams,
) -> SourceStreams<'scope> {
    let mut builder = OperatorBuilder::new("KafkaSource".to_owned(), scope);
    let info = builder.operator_info();
    let (events_output, events) = builder.new_output::<Vec<EventUpdate>>();
    let (control_output, control) = builder.new_output::<Vec<(u64, SinkItem)>>();
    let (announce_output, announcements) = builder.new_output::<Vec<u64>>();
    let mut events_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<EventUpdate>>>::from(events_output);
    let mut control_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(u64, SinkItem)>>>::from(control_output);
    let mut announce_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<u64>>>::from(announce_output);
    let activator = scope.activator_for(Rc::clone(&info.address));
    let address = Rc::clone(&info.address);

    builder.build(move |capabilities| {
        let mut state = SourceState::new(params, capabilities);
        move |_frontiers| {
            state.step(
                &activator,
                &mut events_output,
                &mut control_output,
                &mut announce_output,
            );
        }
    });

    SourceStreams {
        events: events.as_collection(),
        control,
        announcements,
        address,
    }
}

struct SourceState {
    params: SourceParams,
    /// One capability per output (events, control, announcements), always at the same
    /// time: the open epoch. `None` once the fetch thread is gone.
    caps: Option<Vec<Capability<u64>>>,
    live: bool,
    /// Live records that arrived before the replay ended (should not happen: the fetch
    /// thread orders them after `ReplayDone`).
    early: VecDeque<Fetched>,
    /// Whether the open epoch holds records, and the uppers it reached.
    epoch_has_records: bool,
    uppers: BTreeMap<(u8, i32), i64>,
    /// Epochs of this worker that hold records and are not committed yet.
    uncommitted: VecDeque<u64>,
    throttled: bool,
    /// Dead-lettered offsets seen during replay, for a consistency warning.
    warned: HashSet<(u8, i32)>,
}

impl SourceState {
    fn new(params: SourceParams, mut caps: Vec<Capability<u64>>) -> Self {
        if let Some(first) = params.first_epoch {
            for cap in &mut caps {
                cap.downgrade(&first);
            }
        }
        SourceState {
            params,
            caps: Some(caps),
            live: false,
            early: VecDeque::new(),
            epoch_has_records: false,
            uppers: BTreeMap::new(),
            uncommitted: VecDeque::new(),
            throttled: false,
            warned: HashSet::new(),
        }
    }

    /// The next record: in live mode the early ones first.
    fn next(&mut self) -> Result<Option<Fetched>, ()> {
        if self.live
            && let Some(f) = self.early.pop_front()
        {
            return Ok(Some(f));
        }
        match self.params.queue.try_recv() {
            Ok(f) => Ok(Some(f)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
        }
    }

    fn step(
        &mut self,
        activator: &timely::scheduling::Activator,
        events_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<EventUpdate>>>,
        control_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<(u64, SinkItem)>>>,
        announce_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<u64>>>,
    ) {
        let Some(mut caps) = self.caps.take() else {
            return;
        };
        self.step_with(
            &mut caps,
            activator,
            events_output,
            control_output,
            announce_output,
        );
        self.caps = Some(caps);
    }

    fn step_with(
        &mut self,
        caps: &mut [Capability<u64>],
        activator: &timely::scheduling::Activator,
        events_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<EventUpdate>>>,
        control_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<(u64, SinkItem)>>>,
        announce_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<u64>>>,
    ) {
        let epoch_ms = self.params.epoch_ms;
        let budget = self.params.max_per_activation;
        let mut events = events_output.activate();
        let mut control = control_output.activate();
        let mut announce = announce_output.activate();

        if !self.live {
            // Replay: records at their bound epochs, grouped by epoch.
            let mut by_time: BTreeMap<u64, Vec<EventUpdate>> = BTreeMap::new();
            let mut taken = 0;
            let mut gone = false;
            while taken < budget {
                match self.next() {
                    Ok(Some(Fetched::Record {
                        topic,
                        partition,
                        offset,
                        bound: Some(time),
                        item,
                        ..
                    })) => {
                        taken += 1;
                        self.params.metrics.replayed.inc();
                        match item {
                            Item::Event(event) => {
                                let pos = Pos {
                                    time,
                                    topic,
                                    partition,
                                    offset,
                                };
                                by_time
                                    .entry(time)
                                    .or_default()
                                    .push(((pos, event), time, 1));
                            }
                            Item::Skipped => {}
                            Item::Dead(dead) => {
                                // Dead now, but not dead-lettered when it was committed:
                                // the registry lost a schema. The state may diverge.
                                if self.warned.insert((topic, partition)) {
                                    tracing::error!(
                                        topic = %dead.topic, partition, offset,
                                        "a committed record no longer decodes ({}); the rebuilt state misses it",
                                        dead.message
                                    );
                                }
                            }
                        }
                    }
                    Ok(Some(live @ Fetched::Record { bound: None, .. })) => {
                        self.early.push_back(live);
                    }
                    Ok(Some(Fetched::ReplayDone)) => {
                        self.live = true;
                        break;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        gone = true;
                        break;
                    }
                }
            }
            for (time, updates) in by_time {
                let cap = caps[0].delayed(&time);
                events.session(&cap).give_iterator(updates.into_iter());
            }
            if gone {
                // The fetch thread stopped (shutdown or failure): hold the frontier.
                return;
            }
            if !self.live {
                if taken >= budget {
                    activator.activate();
                }
                return;
            }
            // Fresh epochs start strictly after the last committed one.
            let start =
                epoch_of(now_ms(), epoch_ms).max(self.params.last_epoch.map_or(1, |last| last + 1));
            for cap in caps.iter_mut() {
                cap.downgrade(&start);
            }
            tracing::debug!(start, "source live");
        }

        // Live: close the open epoch once the clock has passed it.
        let now = now_ms();
        let open = *caps[0].time();
        let clock = epoch_of(now, epoch_ms);
        if clock > open {
            if self.epoch_has_records {
                let mut session = control.session(&caps[1]);
                for ((topic, partition), upper) in std::mem::take(&mut self.uppers) {
                    session.give((open, SinkItem::Upper(topic, partition, upper)));
                }
                self.epoch_has_records = false;
            }
            for cap in caps.iter_mut() {
                cap.downgrade(&clock);
            }
        }
        let open = *caps[0].time();

        // Back-pressure: wait while an epoch of ours is uncommitted for too long.
        while let Some(oldest) = self.uncommitted.front() {
            if self.params.committed.less_equal(oldest) {
                break;
            }
            self.uncommitted.pop_front();
        }
        let throttled = self
            .uncommitted
            .front()
            .is_some_and(|oldest| now.saturating_sub(*oldest) > self.params.slack_ms);
        if throttled && !self.throttled {
            self.params.metrics.throttled.inc();
            tracing::debug!(open, "ingestion throttled");
        }
        self.throttled = throttled;

        if throttled {
            activator.activate_after(Duration::from_millis(epoch_ms.max(1)));
        } else {
            let mut taken = 0;
            let mut events_session = events.session(&caps[0]);
            let mut control_session = control.session(&caps[1]);
            while taken < budget {
                let Ok(Some(fetched)) = self.next() else {
                    break;
                };
                let Fetched::Record {
                    topic,
                    partition,
                    offset,
                    item,
                    trace,
                    ..
                } = fetched
                else {
                    continue;
                };
                taken += 1;
                if !self.epoch_has_records {
                    self.epoch_has_records = true;
                    self.uncommitted.push_back(open);
                    announce.session(&caps[2]).give(open);
                }
                self.uppers.insert((topic, partition), offset + 1);
                let name = self
                    .params
                    .topics
                    .get(usize::from(topic))
                    .map_or("", String::as_str);
                self.params.metrics.records.with_label_values(&[name]).inc();
                match item {
                    Item::Event(event) => {
                        log_ingested(&event, name, partition, offset, open, trace);
                        let pos = Pos {
                            time: open,
                            topic,
                            partition,
                            offset,
                        };
                        events_session.give(((pos, event), open, 1));
                    }
                    Item::Dead(dead) => control_session.give((open, SinkItem::Dead(dead))),
                    Item::Skipped => {}
                }
            }
            if taken >= budget {
                activator.activate();
            }
        }

        // Wake up when the open epoch ends if it holds records, or if another worker
        // announced an epoch we have not passed yet.
        if self.epoch_has_records || self.params.demand.get() >= open {
            let wait = (open + epoch_ms).saturating_sub(now).max(1);
            activator.activate_after(Duration::from_millis(wait));
        }
    }
}
