//! The dataflow of one worker: Kafka source → [`logic::views`](crate::logic::views) →
//! exactly-once sink, plus the two feedback paths that keep the clock honest.
//!
//! ```text
//!  KafkaSource ──events──▶ order_states ─▶ stock_levels
//!     │   │                     │               │
//!     │   └──control (uppers, dead letters)─────┼──▶ exchange to worker 0 ──▶ ExactlyOnceSink ──▶ probe
//!     │                         └───────────────┘                                               │
//!     └──announcements──▶ broadcast ──▶ EpochWaker (wakes every source)                           │
//!  KafkaSource ◀──────────────────────── committed frontier (throttling) ◀──────────────────────┘
//! ```
//!
//! - The **events** reach the logic through `CompactState` (`snapshot::state`): each
//!   order's compacted history instead of every record, so that the fold's state follows
//!   live orders, not history; the same operator keeps what snapshots write.
//! - The **announcement** path makes an idle worker move its clock past an epoch that
//!   another worker filled (see [`crate::source`]), without any periodic tick.
//! - The **committed frontier** (the probe on the sink's output) is how every source,
//!   in every process, learns that its epochs were written; it throttles on it.
//!
//! - With snapshots on, the source's **markers** go to every worker's snapshot state
//!   (which hands its copies to worker 0's collector and on to the writer thread) and to
//!   the sink (which tells the writer what a marker covers once it is committed); see
//!   [`crate::snapshot`].
//!
//! Neither path is a timely cycle: the waker and the probe act through activators and
//! shared cells, not through dataflow edges back into the source.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Operator, Probe};
use timely::dataflow::{ProbeHandle, Scope};
use timely::scheduling::SyncActivator;

use crate::logic;
use crate::sink::{SinkItem, SinkPorts, sink_operator};
use crate::snapshot::{self, WriterInput};
use crate::source::{SourceParams, kafka_source};

/// Builds the worker's dataflow; returns the source operator's address (for the fetch
/// thread's activator).
pub(crate) fn build<'scope>(
    scope: Scope<'scope, u64>,
    source: SourceParams,
    demand: Rc<Cell<u64>>,
    sink_ports: Option<SinkPorts>,
    sink_activator: Arc<Mutex<Option<SyncActivator>>>,
    committed: &ProbeHandle<u64>,
    snapshots: Option<Option<SyncSender<WriterInput>>>,
) -> Rc<[usize]> {
    let last_epoch = source.last_epoch;
    let metrics = source.metrics.clone();
    let streams = kafka_source(scope, source);
    // The logic folds each order's compacted history, so its state follows live orders,
    // not every event ever read (see `snapshot::state`).
    let (events, parts) = snapshot::state::compact(&streams.events, streams.markers.clone());
    let (orders, stock) = logic::views(&events);

    let waker = scope.activator_for(Rc::clone(&streams.address));
    streams
        .announcements
        .broadcast()
        .sink(Pipeline, "EpochWaker", move |(input, _frontier)| {
            let mut woken = false;
            input.for_each(|_cap, data| {
                for time in data.drain(..) {
                    demand.set(demand.get().max(time));
                    woken = true;
                }
            });
            if woken {
                waker.activate();
            }
        });

    let stock_items = stock
        .inner
        .map(|((sku, level), time, diff)| (time, SinkItem::Stock(sku, level, diff)));
    let order_items = orders
        .inner
        .map(|((id, view), time, diff)| (time, SinkItem::Order(id, view, diff)));
    let marks = streams
        .markers
        .clone()
        .map(|marker| (marker, SinkItem::Mark));
    if let Some(writer) = snapshots {
        snapshot::state::collect_parts(parts, writer, metrics.clone());
    }
    let items = streams
        .control
        .concat(stock_items)
        .concat(order_items)
        .concat(marks);
    sink_operator(items, sink_ports, sink_activator, last_epoch, metrics).probe_with(committed);
    streams.address
}
