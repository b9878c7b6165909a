//! The dataflow side of snapshots: every worker's compacted state of its share of keys,
//! a copy of it for each marker, and worker 0's collector that hands the copies to the
//! writer thread.
//!
//! The state is kept from the source's records (exchanged by key, like the logic's own
//! exchanges), applied epoch by epoch in time order as the frontier passes them: per
//! order its history compacted by [`crate::logic::compact_order`] after every epoch that
//! touched it, per SKU the sum of its adjustments. A marker at time `t` (broadcast from
//! worker 0's source) makes every worker emit the state of all epochs below `t` once its
//! input has passed `t`. Only this operator's own output waits for that; the logic and
//! the sink never do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{SyncSender, TrySendError};

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Operator};

use super::WriterInput;
use super::format::{Entry, key_hash};
use crate::logic::{Events, InputEvent, OrderId, Pos, Sku, compact_order};
use crate::metrics::Metrics;

/// One worker's part of a snapshot: the marker and the entries of its keys.
pub(crate) type Part = (u64, Vec<Entry>);

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
    fn apply(&mut self, mut records: Vec<(Pos, InputEvent)>) {
        records.sort_by_key(|record| record.0);
        let mut touched = HashSet::new();
        for (pos, event) in records {
            match event {
                InputEvent::StockAdjusted { sku, delta } => {
                    *self.adjusted.entry(sku).or_default() += delta;
                }
                other => {
                    let id = other.order_id().unwrap_or_default();
                    self.orders.entry(id).or_default().push((pos, other));
                    touched.insert(id);
                }
            }
        }
        for id in touched {
            if let Some(history) = self.orders.get_mut(&id) {
                *history = compact_order(history);
            }
        }
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

/// Every worker's part of each marker's snapshot.
pub(crate) fn snapshot_parts<'scope>(
    events: &Events<'scope>,
    markers: StreamVec<'scope, u64, u64>,
) -> StreamVec<'scope, u64, Part> {
    events
        .inner
        .clone()
        .binary_frontier::<_, timely::container::CapacityContainerBuilder<Vec<Part>>, _, _, _, _>(
            markers.broadcast(),
            Exchange::new(|((_, event), _, _): &((Pos, InputEvent), u64, isize)| record_key(event)),
            Pipeline,
            "SnapshotState",
            |_initial, _info| {
                let mut state = KeyState::default();
                let mut pending: BTreeMap<u64, Vec<(Pos, InputEvent)>> = BTreeMap::new();
                let mut marks: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
                move |(records, frontier), (marker_input, _), output| {
                    records.for_each(|_cap, data| {
                        for ((pos, event), time, diff) in data.drain(..) {
                            // The source only inserts (diff 1); nothing retracts input.
                            for _ in 0..diff.max(0) {
                                pending.entry(time).or_default().push((pos, event.clone()));
                            }
                        }
                    });
                    marker_input.for_each(|cap, data| {
                        for marker in data.drain(..) {
                            marks
                                .entry(marker)
                                .or_insert_with(|| cap.delayed(&marker, 0));
                        }
                    });
                    loop {
                        let next_records = pending.keys().next().copied();
                        let next_mark = marks.keys().next().copied();
                        match (next_records, next_mark) {
                            (records_time, Some(mark))
                                if records_time.is_none_or(|t| mark <= t)
                                    && !frontier.less_than(&mark) =>
                            {
                                let cap = marks.remove(&mark).expect("present");
                                output.session(&cap).give((mark, state.entries()));
                            }
                            (Some(time), _) if !frontier.less_equal(&time) => {
                                let batch = pending.remove(&time).unwrap_or_default();
                                state.apply(batch);
                            }
                            _ => break,
                        }
                    }
                }
            },
        )
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
            self.0.apply(records);
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
