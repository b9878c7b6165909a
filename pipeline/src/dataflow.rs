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
//! - The **announcement** path makes an idle worker move its clock past an epoch that
//!   another worker filled (see [`crate::source`]), without any periodic tick.
//! - The **committed frontier** (the probe on the sink's output) is how every source,
//!   in every process, learns that its epochs were written; it throttles on it.
//!
//! Neither path is a timely cycle: the waker and the probe act through activators and
//! shared cells, not through dataflow edges back into the source.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Operator, Probe};
use timely::dataflow::{ProbeHandle, Scope};
use timely::scheduling::SyncActivator;

use crate::logic;
use crate::metrics::Metrics;
use crate::sink::{SinkItem, SinkPorts, sink_operator};
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
    metrics: Metrics,
) -> Rc<[usize]> {
    let last_epoch = source.last_epoch;
    let streams = kafka_source(scope, source);
    let (orders, stock) = logic::views(&streams.events);

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
    let items = streams.control.concat(stock_items).concat(order_items);
    sink_operator(items, sink_ports, sink_activator, last_epoch, metrics).probe_with(committed);
    streams.address
}
