//! What flows from the source to the sink: the items worker 0's sink operator gathers
//! ([`SinkItem`]), the dead letters among them ([`DeadRecord`]), and the log target both
//! ends write order lines under ([`ORDER_LOG_TARGET`]).
//!
//! Why a module of its own: the source produces these and the sink consumes them; with
//! the types in either, each of the two modules imported the other.

use serde::{Deserialize, Serialize};

use crate::logic::{Diff, OrderId, OrderView, Sku, StockLevel};

/// The `tracing` target of the per-order (and per-SKU) lines, at DEBUG (see [`crate::source`]).
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

/// What flows to worker 0's sink operator, each paired with its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkItem {
    /// A change of the stock collection.
    Stock(Sku, StockLevel, Diff),
    /// A change of the order collection.
    Order(OrderId, OrderView, Diff),
    /// A closed epoch's upper offset of one input partition: `(topic, partition, upper)`.
    Upper(u8, i32, i64),
    /// A dead letter of the epoch.
    Dead(Box<DeadRecord>),
    /// A snapshot marker at this time (see [`crate::snapshot`]): once every epoch
    /// before it is committed, the sink tells the snapshot writer what it covers.
    Mark,
}
