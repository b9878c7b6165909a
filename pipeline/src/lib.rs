//! Inventory Service: the dataflow job.
//!
//! The job keeps two always-current views over the order and inventory topics:
//! the state of every order ([`logic::OrderView`]) and the stock of every SKU
//! ([`logic::StockLevel`]). It is built in layers:
//!
//! - [`logic`]: the pure dataflow logic, written as differential-dataflow
//!   collection-to-collection functions over decoded input events. No I/O; the
//!   Kafka source maps Avro records to [`logic::InputEvent`]s stamped with their
//!   [`logic::Pos`], and the sink reads the output collections.
//! - [`model`]: a plain sequential reference implementation of the same
//!   semantics, used by the tests to check the dataflow at several worker counts.
//!
//! The semantics (ordering of events per order, terminal states, revisions,
//! when a SKU disappears from the view) are documented once, in [`logic`].

pub mod logic;
pub mod model;
