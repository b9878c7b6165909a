//! The Kafka source: each worker reads its own partitions, stamps every record with the
//! shared clock's epoch, and releases epochs as the clock moves.
//!
//! # Two halves
//!
//! A **fetch thread** per worker owns an input reader (eventbus's
//! [`client::reader`](eventbus::client::reader)). It `assign()`s the worker's
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
//!
//! # Layout
//!
//! `fetch` is the fetch thread (Kafka, the registry, replay bookkeeping); `operator`
//! is the timely operator (epochs, announcements, back-pressure). What they hand each
//! other (`Fetched` records) and what flows on to the sink ([`DeadRecord`]) is here.

use eventbus::headers::TraceParent;

use crate::logic::InputEvent;

mod fetch;
mod operator;

pub(crate) use fetch::{FetchParams, spawn_fetcher};
pub(crate) use operator::{SourceParams, kafka_source};

pub use crate::flow::{DeadRecord, ORDER_LOG_TARGET};

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

/// Whether the per-order lines are on (a cached check of the subscriber's filter).
pub(crate) fn order_lines_enabled() -> bool {
    tracing::enabled!(target: ORDER_LOG_TARGET, tracing::Level::DEBUG)
}
