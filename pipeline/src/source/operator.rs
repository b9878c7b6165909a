//! The source operator on each worker: drains the fetch thread's queue, stamps records
//! with the open epoch, closes epochs as the clock moves, announces them to the other
//! workers and throttles while the sink is behind (see the parent module's docs).

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use differential_dataflow::AsCollection;
use eventbus::headers::TraceParent;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use super::{Fetched, Item, ORDER_LOG_TARGET, order_lines_enabled};
use crate::clock::{epoch_of, now_ms};
use crate::flow::SinkItem;
use crate::logic::{Diff, Events, InputEvent, Pos};
use crate::metrics::Metrics;

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
    /// Worker 0 with snapshots on: emit a snapshot marker at most this often.
    pub snapshot_every_ms: Option<u64>,
    /// A restored snapshot's records of this worker, inserted at its epoch (which is
    /// then `first_epoch`).
    pub restore: Option<(u64, Vec<(Pos, InputEvent)>)>,
}

/// The streams of a worker's source.
pub(crate) struct SourceStreams<'scope> {
    /// Decoded input records at their epochs.
    pub events: Events<'scope>,
    /// For the sink: uppers of closed epochs and dead letters.
    pub control: StreamVec<'scope, u64, (u64, SinkItem)>,
    /// The first record of every epoch of this worker, as the epoch's time.
    pub announcements: StreamVec<'scope, u64, u64>,
    /// Snapshot markers (worker 0 only), each at its own time.
    pub markers: StreamVec<'scope, u64, u64>,
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
    let (marker_output, markers) = builder.new_output::<Vec<u64>>();
    let mut events_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<EventUpdate>>>::from(events_output);
    let mut control_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(u64, SinkItem)>>>::from(control_output);
    let mut announce_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<u64>>>::from(announce_output);
    let mut marker_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<u64>>>::from(marker_output);
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
                &mut marker_output,
            );
        }
    });

    SourceStreams {
        events: events.as_collection(),
        control,
        announcements,
        markers,
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
    /// The last snapshot marker (or the live start), and whether input arrived since.
    last_marker: u64,
    active: bool,
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
            last_marker: 0,
            active: false,
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
        marker_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<u64>>>,
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
            marker_output,
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
        marker_output: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<u64>>>,
    ) {
        let epoch_ms = self.params.epoch_ms;
        let budget = self.params.max_per_activation;
        let mut events = events_output.activate();
        let mut control = control_output.activate();
        let mut announce = announce_output.activate();
        let mut markers = marker_output.activate();

        if let Some((time, records)) = self.params.restore.take() {
            // A snapshot's state, at its (committed) epoch: rebuilt, never emitted.
            let cap = caps[0].delayed(&time);
            events
                .session(&cap)
                .give_iterator(records.into_iter().map(|record| (record, time, 1)));
        }

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
            self.last_marker = start;
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
            // Worker 0: a snapshot marker at the new open epoch, when due and input
            // arrived (here or, announced, anywhere) since the last one.
            self.active |= self.params.demand.get() > self.last_marker;
            if let Some(every) = self.params.snapshot_every_ms
                && self.active
                && clock >= self.last_marker.saturating_add(every)
            {
                markers.session(&caps[3]).give(clock);
                // Announced like an epoch with records, so that every worker closes
                // the marker's epoch even when no more input comes: the snapshot then
                // completes at once instead of waiting for the next record.
                announce.session(&caps[2]).give(clock);
                tracing::debug!(marker = clock, "snapshot marker");
                self.last_marker = clock;
                self.active = false;
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
                self.active = true;
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

        // Worker 0: input arrived since the last snapshot marker, so one is due even if
        // nothing else comes; wake up for it.
        if let Some(every) = self.params.snapshot_every_ms
            && self.active
        {
            let due = self.last_marker.saturating_add(every).saturating_sub(now);
            activator.activate_after(Duration::from_millis(due.max(epoch_ms).max(1)));
        }

        // Wake up when the open epoch ends if it holds records, or if another worker
        // announced an epoch we have not passed yet.
        if self.epoch_has_records || self.params.demand.get() >= open {
            let wait = (open + epoch_ms).saturating_sub(now).max(1);
            activator.activate_after(Duration::from_millis(wait));
        }
    }
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
    let trace_id = span.trace_id_hex();
    let span_id = span.span_id_hex();
    let parent_span_id = trace.map(|t| t.span_id_hex());
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
