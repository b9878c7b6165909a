//! The fetch thread of one worker: assigns the worker's partitions, replays them up to
//! the committed offsets, decodes records through the registry and hands them to the
//! worker over a bounded queue (see the parent module's docs).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use eventbus::client::{self, ReaderOptions};
use eventbus::headers::{HeaderList, TraceParent};
use eventbus::kafka::{
    BaseConsumer, BorrowedMessage, Consumer, Message, Offset, TopicPartitionList,
};
use eventbus::{ErrorClass, KafkaSettings, RegistryClient, RegistryConfig};
use timely::scheduling::SyncActivator;

use super::{DeadRecord, Fetched, Item, order_lines_enabled};
use crate::clock::{Bindings, now_ms, owner};
use crate::error::PipelineError;
use crate::input::{Rejection, decode_input};
use crate::kafka;
use crate::metrics::Metrics;

/// Everything a fetch thread needs.
pub(crate) struct FetchParams {
    pub kafka: KafkaSettings,
    pub registry: RegistryConfig,
    pub topics: [String; 5],
    pub service: String,
    pub worker: usize,
    pub peers: usize,
    pub bindings: Arc<Bindings>,
    /// A restored snapshot's offsets: each partition is read from here (0: beginning).
    pub start_offsets: HashMap<(u8, i32), i64>,
    /// Snapshots on: records the state needs but retention deleted stop the job.
    pub strict_retention: bool,
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
        // Partitions still to replay, with their committed upper. Asked before assign():
        // once the consumer fetches, each ListOffsets waits behind a long-polling Fetch
        // on the same connection (fetch.wait.max.ms), which made this ~0.45 s per
        // partition (13 s for 29 partitions on a restart), against milliseconds before.
        let planning = std::time::Instant::now();
        let mut replay: HashMap<(u8, i32), i64> = HashMap::new();
        for (topic, partition) in &owned {
            let upper = params.bindings.upper(*topic, *partition);
            let start = params
                .start_offsets
                .get(&(*topic, *partition))
                .copied()
                .unwrap_or(0);
            if upper == 0 || start >= upper {
                continue; // nothing committed after the snapshot (if any)
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
            if params.strict_retention && low > start {
                return Err(PipelineError::RetentionGap {
                    topic: name.clone(),
                    partition: *partition,
                    needed: start,
                    earliest: low,
                    missing: low - start,
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
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &owned {
            let start = params.start_offsets.get(&(*topic, *partition)).copied();
            tpl.add_partition_offset(
                &params.topics[usize::from(*topic)],
                *partition,
                start
                    .filter(|s| *s > 0)
                    .map_or(Offset::Beginning, Offset::Offset),
            )
            .map_err(|e| PipelineError::kafka("assign", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| PipelineError::kafka("assign", e))?;

        tracing::info!(
            worker = params.worker,
            partitions = owned.len(),
            replaying = replay.len(),
            planned_ms = u64::try_from(planning.elapsed().as_millis()).unwrap_or(u64::MAX),
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
            TraceParent::from_headers(message.headers())
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
            // A record without a key is dead-lettered like a bad value (eventbus's
            // check_key says why). A pure function of the record, like the decoding, so a
            // replay decides the same.
            let result = match eventbus::codec::check_key(message.key()) {
                Ok(()) => runtime.block_on(decode_input(registry, topic, name, message.payload())),
                Err(failure) => Err(Rejection::from(failure)),
            };
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
