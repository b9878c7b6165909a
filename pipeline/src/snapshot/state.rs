//! The dataflow side of snapshots, and the compaction that keeps the order fold's
//! history proportional to live orders: every worker's compacted state of its share of
//! keys, the compacted events the logic folds, a copy of the state for each marker, and
//! worker 0's collector that hands the copies to the writer thread.
//!
//! The state is kept from the source's records (exchanged by key, like the logic's own
//! exchanges), applied epoch by epoch in time order as the frontier passes them: per
//! order its history compacted by [`crate::logic::compact_order`] after every epoch that
//! touched it, per SKU the sum of its adjustments.
//!
//! **Compaction.** What reaches the logic is not the raw order records but the changes
//! of each order's compacted history: at the close of epoch `t`, the records compaction
//! keeps are inserted and those it drops (superseded line changes, anything after a
//! terminal event, duplicate creates) are retracted, at `t`. `compact_order` promises
//! that the compacted history, followed by any records with greater [`Pos`], folds to
//! the same view as the whole history followed by them, and every later epoch's records
//! have greater positions, so the views (and the output) are the same as from the whole
//! history, while the order fold's arrangement holds at most three records per created
//! order instead of every event it ever got. Stock adjustments pass through at once
//! (the `count` behind the stock view already consolidates them per SKU). The
//! compacted records of an epoch wait for its close, which the fold does anyway.
//!
//! **Snapshots.** A marker at time `m` (broadcast from worker 0's source) makes every
//! worker emit the state of all epochs below `m` once its input has passed `m`. An epoch
//! is applied only once the markers' frontier has passed it too, so a marker is never
//! emitted with later epochs in it. Only the parts output waits for markers; the
//! compacted events never wait for a snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{SyncSender, TrySendError};

use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Operator};

use super::WriterInput;
use super::format::{Entry, key_hash};
use crate::logic::{Diff, Events, InputEvent, OrderId, Pos, Sku, compact_order};
use crate::metrics::Metrics;

/// One worker's part of a snapshot: the marker and the entries of its keys.
pub(crate) type Part = (u64, Vec<Entry>);

type EventUpdate = ((Pos, InputEvent), u64, Diff);

/// An epoch waiting for its close: a capability to emit its compacted changes, and its
/// records.
type PendingEpoch = (Capability<u64>, Vec<(Pos, InputEvent)>);

fn record_key(event: &InputEvent) -> u64 {
    match event {
        InputEvent::StockAdjusted { sku, .. } => key_hash(sku),
        other => key_hash(&other.order_id().unwrap_or_default()),
    }
}

#[derive(Default)]
struct KeyState {
    orders: HashMap<OrderId, Vec<(Pos, InputEvent)>>,
    adjusted: HashMap<Sku, i64>,
}

impl KeyState {
    /// Applies one epoch's records; returns the changes of the orders' compacted
    /// histories (`+1` kept now, `-1` kept before and dropped now).
    fn apply(&mut self, mut records: Vec<(Pos, InputEvent)>) -> Vec<((Pos, InputEvent), Diff)> {
        records.sort_by_key(|record| record.0);
        let mut before: BTreeMap<OrderId, BTreeSet<Pos>> = BTreeMap::new();
        for (pos, event) in records {
            match event {
                InputEvent::StockAdjusted { sku, delta } => {
                    *self.adjusted.entry(sku).or_default() += delta;
                }
                other => {
                    let id = other.order_id().unwrap_or_default();
                    let history = self.orders.entry(id).or_default();
                    before
                        .entry(id)
                        .or_insert_with(|| history.iter().map(|(p, _)| *p).collect());
                    history.push((pos, other));
                }
            }
        }
        let mut changes = Vec::new();
        for (id, kept_before) in before {
            let Some(history) = self.orders.get_mut(&id) else {
                continue;
            };
            let compacted = compact_order(history);
            let kept_now: BTreeSet<Pos> = compacted.iter().map(|(p, _)| *p).collect();
            for record in history.iter() {
                match (
                    kept_before.contains(&record.0),
                    kept_now.contains(&record.0),
                ) {
                    (true, false) => changes.push((record.clone(), -1)),
                    (false, true) => changes.push((record.clone(), 1)),
                    _ => {}
                }
            }
            *history = compacted;
        }
        changes
    }

    fn entries(&self) -> Vec<Entry> {
        let orders = self.orders.iter().map(|(id, records)| Entry::Order {
            order_id: *id,
            records: records.clone(),
        });
        let stock = self
            .adjusted
            .iter()
            .filter(|(_, sum)| **sum != 0)
            .map(|(sku, sum)| Entry::Stock {
                sku: sku.clone(),
                adjusted: *sum,
                version: 0,
            });
        orders.chain(stock).collect()
    }
}

/// Every worker's compacted events (what the logic folds) and its part of each marker's
/// snapshot (module docs).
pub(crate) fn compact<'scope>(
    events: &Events<'scope>,
    markers: StreamVec<'scope, u64, u64>,
) -> (Events<'scope>, StreamVec<'scope, u64, Part>) {
    let mut builder = OperatorBuilder::new("CompactState".to_owned(), events.inner.scope());
    let mut records_in = builder.new_input(
        events.inner.clone(),
        Exchange::new(|((_, event), _, _): &EventUpdate| record_key(event)),
    );
    let mut markers_in = builder.new_input(markers.broadcast(), Pipeline);
    let (events_out, compacted) = builder.new_output::<Vec<EventUpdate>>();
    let (parts_out, parts) = builder.new_output::<Vec<Part>>();
    let mut events_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<EventUpdate>>>::from(events_out);
    let mut parts_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Part>>>::from(parts_out);

    builder.build(move |_capabilities| {
        let mut state = KeyState::default();
        let mut pending: BTreeMap<u64, PendingEpoch> = BTreeMap::new();
        let mut marks: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        move |frontiers| {
            let mut events = events_out.activate();
            let mut parts = parts_out.activate();
            records_in.for_each(|cap, data| {
                let mut session = events.session(&cap);
                for ((pos, event), time, diff) in data.drain(..) {
                    if matches!(event, InputEvent::StockAdjusted { .. }) {
                        session.give(((pos, event.clone()), time, diff));
                    }
                    let epoch = pending
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
                    // The source only inserts (diff 1); nothing retracts input.
                    for _ in 0..diff.max(0) {
                        epoch.1.push((pos, event.clone()));
                    }
                }
            });
            markers_in.for_each(|cap, data| {
                for marker in data.drain(..) {
                    marks
                        .entry(marker)
                        .or_insert_with(|| cap.delayed(&marker, 1));
                }
            });
            let records_done = frontiers[0].frontier();
            let markers_done = frontiers[1].frontier();
            loop {
                let next_records = pending.keys().next().copied();
                let next_mark = marks.keys().next().copied();
                match (next_records, next_mark) {
                    (records_time, Some(mark))
                        if records_time.is_none_or(|t| mark <= t)
                            && !records_done.less_than(&mark) =>
                    {
                        let cap = marks.remove(&mark).expect("present");
                        parts.session(&cap).give((mark, state.entries()));
                    }
                    (Some(time), _)
                        if !records_done.less_equal(&time) && !markers_done.less_equal(&time) =>
                    {
                        let (cap, batch) = pending.remove(&time).expect("present");
                        let changes = state.apply(batch);
                        events
                            .session(&cap)
                            .give_iterator(changes.into_iter().map(|(r, d)| (r, time, d)));
                    }
                    _ => break,
                }
            }
        }
    });
    (compacted.as_collection(), parts)
}

/// Worker 0 gathers every worker's part of a marker and hands the whole to the writer
/// thread (other workers get nothing: the exchange routes all to worker 0).
pub(crate) fn collect_parts(
    parts: StreamVec<'_, u64, Part>,
    writer: Option<SyncSender<WriterInput>>,
    metrics: Metrics,
) {
    let mut gathered: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
    parts.sink(
        Exchange::new(|_: &Part| 0u64),
        "SnapshotCollector",
        move |(input, frontier)| {
            input.for_each(|_cap, data| {
                for (marker, entries) in data.drain(..) {
                    gathered.entry(marker).or_default().extend(entries);
                }
            });
            while let Some((&marker, _)) = gathered.first_key_value() {
                if frontier.less_equal(&marker) {
                    break;
                }
                let entries = gathered.remove(&marker).unwrap_or_default();
                let Some(writer) = &writer else { continue };
                match writer.try_send(WriterInput::Parts { marker, entries }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        metrics.snapshot_skipped.inc();
                        tracing::debug!(marker, "snapshot skipped: the writer is busy");
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
        },
    );
}

/// The key state, for the unit tests of the snapshot module.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A [`KeyState`] with its restored records.
    #[derive(Default)]
    pub(crate) struct KeyStateProbe(KeyState);

    impl KeyStateProbe {
        pub(crate) fn apply(&mut self, records: Vec<(Pos, InputEvent)>) {
            let _ = self.0.apply(records);
        }

        /// What a restore introduces for this state.
        pub(crate) fn restore_records(&self) -> Vec<(Pos, InputEvent)> {
            let loaded = crate::snapshot::Loaded {
                manifest: crate::snapshot::format::Manifest {
                    format: 1,
                    marker: 0,
                    epoch: 0,
                    offsets: vec![],
                    workers: 1,
                    shards: 1,
                    chunks: vec![],
                    entries: 0,
                    written_at_ms: 0,
                },
                shards: vec![self.0.entries()],
            };
            loaded.records(0, 1)
        }

        pub(crate) fn orders(&self) -> Vec<Vec<(Pos, InputEvent)>> {
            self.0.orders.values().cloned().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use differential_dataflow::input::Input;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use timely::dataflow::operators::generic::operator::empty;

    use super::*;
    use crate::logic::{Change, Line, OrderView, StockLevel, views};
    use crate::model::Model;

    fn event(rng: &mut StdRng) -> InputEvent {
        let order_id: OrderId = rng.random_range(0..6);
        let lines = |rng: &mut StdRng| {
            vec![Line {
                sku: format!("S{}", rng.random_range(0..3)),
                quantity: rng.random_range(1..5),
                unit_price_minor: 10,
            }]
        };
        match rng.random_range(0..20) {
            0..=2 => InputEvent::OrderCreated {
                order_id,
                currency: "EUR".into(),
                lines: lines(rng),
            },
            3..=12 => InputEvent::OrderUpdated {
                order_id,
                revision: rng.random_range(0..30),
                change: Change::Lines(lines(rng)),
            },
            13 => InputEvent::OrderUpdated {
                order_id,
                revision: 1,
                change: Change::Cancel,
            },
            14 => InputEvent::PaymentCompleted { order_id },
            15 => InputEvent::PaymentFailed { order_id },
            _ => InputEvent::StockAdjusted {
                sku: format!("S{}", rng.random_range(0..3)),
                delta: rng.random_range(-3..10),
            },
        }
    }

    type Captured<D> = Arc<Mutex<Vec<(D, u64, Diff)>>>;

    /// The state of `updates` accumulated up to `time`.
    fn at<K: Ord + Clone, V: Ord + Clone>(
        updates: &[((K, V), u64, Diff)],
        time: u64,
    ) -> BTreeMap<K, V> {
        let mut sums: BTreeMap<(K, V), Diff> = BTreeMap::new();
        for ((k, v), t, d) in updates {
            if *t <= time {
                *sums.entry((k.clone(), v.clone())).or_default() += d;
            }
        }
        sums.into_iter()
            .filter(|(_, d)| *d != 0)
            .map(|((k, v), d)| {
                assert_eq!(d, 1, "one view per key");
                (k, v)
            })
            .collect()
    }

    /// The logic over the compacted events gives, at every epoch, the views of the whole
    /// history (the reference model), at 1 and 2 workers; and the compacted history of
    /// an order with a created holds at most three records.
    #[test]
    fn compacted_events_give_the_views_of_the_whole_history() {
        for seed in 0..24u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let epochs: Vec<(u64, Vec<(Pos, InputEvent)>)> = (1..=30u64)
                .map(|e| {
                    let time = 10 * e;
                    let records = (0..rng.random_range(0..8))
                        .map(|i| {
                            let pos = Pos {
                                time,
                                topic: rng.random_range(0..5),
                                partition: 0,
                                offset: i64::try_from(e * 100 + i).unwrap(),
                            };
                            (pos, event(&mut rng))
                        })
                        .collect();
                    (time, records)
                })
                .collect();
            for workers in [1, 2] {
                let orders: Captured<(OrderId, OrderView)> = Arc::default();
                let stock: Captured<(Sku, StockLevel)> = Arc::default();
                let compacted: Captured<(Pos, InputEvent)> = Arc::default();
                let (o, s, c) = (orders.clone(), stock.clone(), compacted.clone());
                let input_epochs = epochs.clone();
                timely::execute(timely::Config::process(workers), move |worker| {
                    let (o, s, c) = (o.clone(), s.clone(), c.clone());
                    let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                        let (input, events) = scope.new_collection::<(Pos, InputEvent), Diff>();
                        let (events, _parts) = compact(&events, empty(scope));
                        let c2 = c.clone();
                        let events = events.inspect(move |u| c2.lock().unwrap().push(u.clone()));
                        let (orders, stock) = views(&events);
                        let (probe, _) = orders
                            .inspect(move |u| o.lock().unwrap().push(u.clone()))
                            .probe();
                        stock
                            .inspect(move |u| s.lock().unwrap().push(u.clone()))
                            .probe_with(&probe);
                        (input, probe)
                    });
                    if worker.index() == 0 {
                        for (time, records) in &input_epochs {
                            input.advance_to(*time);
                            for record in records {
                                input.insert(record.clone());
                            }
                        }
                    }
                    input.advance_to(1_000);
                    input.flush();
                    while probe.less_than(&1_000) {
                        worker.step();
                    }
                })
                .unwrap();
                let (orders, stock, compacted) = (
                    orders.lock().unwrap().clone(),
                    stock.lock().unwrap().clone(),
                    compacted.lock().unwrap().clone(),
                );
                let mut model = Model::new();
                for (time, records) in &epochs {
                    let mut sorted = records.clone();
                    sorted.sort_by_key(|r| r.0);
                    model.apply_epoch(sorted);
                    assert_eq!(at(&orders, *time), model.orders(), "seed {seed} t {time}");
                    assert_eq!(at(&stock, *time), model.stock(), "seed {seed} t {time}");
                }
                // What the order fold holds at the end: at most three per created order.
                let mut held: BTreeMap<(OrderId, Pos), Diff> = BTreeMap::new();
                for ((pos, event), _, diff) in &compacted {
                    if let Some(id) = event.order_id() {
                        *held.entry((id, *pos)).or_default() += diff;
                    }
                }
                let mut per_order: BTreeMap<OrderId, usize> = BTreeMap::new();
                for ((id, _), diff) in held {
                    assert!(diff == 0 || diff == 1, "seed {seed}: {diff}");
                    *per_order.entry(id).or_default() += usize::try_from(diff).unwrap();
                }
                let raw = epochs
                    .iter()
                    .flat_map(|(_, r)| r)
                    .filter(|(_, e)| e.order_id().is_some())
                    .count();
                let kept: usize = per_order.values().sum();
                for (id, n) in per_order {
                    if model.orders().contains_key(&id) {
                        assert!(n <= 3, "seed {seed}: order {id} holds {n} records");
                    }
                }
                assert!(kept <= raw, "seed {seed}");
            }
        }
    }
}
