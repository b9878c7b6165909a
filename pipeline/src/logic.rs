//! The Inventory Service's dataflow logic: input events in, order and stock views out.
//!
//! Everything here is a function from differential-dataflow collections to collections,
//! with no I/O, so that it can be driven by the Kafka source in production and by
//! in-memory inputs in tests (see `tests/logic_vs_model.rs`, which compares it with the
//! sequential [`crate::model::Model`] at 1, 2 and 4 workers).
//!
//! # Input
//!
//! The input is a collection of `(Pos, InputEvent)` records at timely timestamps of type
//! [`Time`] (`u64`). [`Pos`] is the record's coordinates: ingestion epoch (ms), topic,
//! partition, offset. Its derived `Ord` (in that field order) is a total order that does
//! not depend on how many workers read the topics or in which order they deliver records,
//! so every decision below that needs "which came first" uses `Pos`, never arrival order
//! or the worker that saw a record. The Kafka layer stamps a record's timely time with
//! `pos.time`; the logic itself only relies on `Pos` for ordering, so it is also correct
//! if records are inserted at other times.
//!
//! Each `(Pos, InputEvent)` is expected once (a `Pos` names one Kafka record). Per order,
//! a record counts as present when its accumulated multiplicity is positive, so retracting
//! a record "un-happens" it and the order is re-folded without it; stock adjustments are
//! weighted by multiplicity (a record inserted twice at the same `Pos` would count twice).
//!
//! # Semantics
//!
//! Per order, the state is a fold over that order's records:
//!
//! 1. The **first `order.created` by `Pos`** is the base: it sets currency and lines
//!    (revision 0) and the status `CREATED`. Later `order.created` records for the same
//!    id are ignored (producer retries, client resends), even if their lines differ.
//! 2. Then **all other records of the order, in `Pos` order**, are applied, including
//!    those whose `Pos` is before the created: topics are read at different speeds, so a
//!    payment or update may be ingested before its order. They take effect once the
//!    created arrives, as if they had come after it.
//! 3. `order.updated` with `Change::Lines` replaces the lines only while `CREATED` and
//!    only if its revision is greater than the last applied one (the created counts as
//!    revision 0, so the first real update has revision >= 1). Replayed or stale updates
//!    are ignored.
//! 4. `order.updated` with `Change::Cancel` moves `CREATED` to `CANCELLED` whatever its
//!    revision (a cancellation is an explicit intent, never "stale").
//!    `payment.completed` moves `CREATED` to `PAID`, `payment.failed` to
//!    `PAYMENT_FAILED`.
//! 5. `PAID`, `PAYMENT_FAILED` and `CANCELLED` are **terminal and absorbing**: every
//!    later record is ignored (a cancel after payment, a payment after a cancel, a line
//!    change after payment, a second payment outcome).
//! 6. Records of an order whose created has not been seen yield **no order state and no
//!    stock effect**; they wait in the fold's history until the created arrives.
//!
//! The order view has the status, the currency, the current lines and
//! `total_minor = Σ quantity × unit_price_minor` computed with saturating arithmetic
//! (inputs are validated upstream; saturation only keeps a hostile value from
//! panicking the job).
//!
//! Per SKU, over all orders' current lines (a SKU listed twice in one order counts
//! twice):
//!
//! - `reserved` = Σ quantities in orders whose status is `CREATED`;
//! - `on_hand` = Σ `stock.adjusted` deltas − Σ quantities in `PAID` orders;
//! - `available = on_hand − reserved`. A negative `available` (oversold) is reported
//!   as is, never clamped: oversold must be visible.
//!
//! `PAYMENT_FAILED` and `CANCELLED` orders contribute nothing: their reservation is
//! released. A SKU is in the stock view exactly when `on_hand` or `reserved` is
//! non-zero; **a SKU whose numbers are all zero is absent** (it disappears when its
//! contributions cancel out, and a view reader should treat an absent SKU as all
//! zeros). This is what a differential aggregation does naturally, and the reference
//! model does the same.
//!
//! # Why it is built this way
//!
//! - **Orders: `reduce` per order id over its event history.** The fold needs the whole
//!   history in `Pos` order (late creates, revision checks, terminal states), which is
//!   exactly what `reduce` hands its logic: the values for one key, sorted by their
//!   `Ord`, i.e. by `Pos`. Differential only re-runs the fold for orders that got a new
//!   record in a time, and emits the retraction of the old view and the new view as
//!   diffs; no epoch recomputes from scratch. Orders are exchanged by id, so workers
//!   fold disjoint sets of orders. The cost is that each order's records stay in the
//!   reduce's arrangement (a handful per order).
//! - **Stock: contributions as diffs, then `count`.** Each order view is exploded into
//!   per-SKU contributions whose differential *weight* is the pair
//!   `(on_hand delta, reserved delta)`; `stock.adjusted` records become
//!   `(delta, 0)` weights. When an order's view changes, the retraction of the old view
//!   retracts its old contributions, so a status change moves quantities from
//!   `reserved` to `on_hand` without any stateful code here. `count` then accumulates
//!   the weights per SKU (exchanged by SKU) and emits only SKUs whose accumulation is
//!   non-zero, which gives the "absent when all zero" rule. The arrangement behind
//!   `count` compacts to one accumulated weight per SKU.
//! - **Weights are [`Diff`] (`isize`)**, the usual differential difference type, so
//!   that the input can be an ordinary `InputSession`. The crate requires a 64-bit
//!   target so that `isize` and `i64` are the same width (checked at compile time).

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

// Quantities and deltas are `i64`; they travel as `isize` weights. Lossless only on 64-bit.
const _: () = assert!(
    std::mem::size_of::<isize>() == std::mem::size_of::<i64>(),
    "the pipeline requires a 64-bit target"
);

/// Timely timestamp of the dataflow: the ingestion epoch in UTC milliseconds (`Pos::time`).
pub type Time = u64;

/// Difference (multiplicity / weight) type of all collections here.
pub type Diff = isize;

/// An order id, the 128 bits of the order's UUID.
pub type OrderId = u128;

/// A stock keeping unit, as sent by clients.
pub type Sku = String;

/// A collection of input records: each record's position and its decoded event.
pub type Events<'scope> = VecCollection<'scope, Time, (Pos, InputEvent), Diff>;

/// The order view collection: one `(order id, view)` per order whose created was seen.
pub type Orders<'scope> = VecCollection<'scope, Time, (OrderId, OrderView), Diff>;

/// The stock view collection: one `(sku, level)` per SKU with non-zero numbers.
pub type Stock<'scope> = VecCollection<'scope, Time, (Sku, StockLevel), Diff>;

/// Where an input record was read: a total order over all input records.
///
/// Field order matters: the derived `Ord` compares `time` first, then `topic`,
/// `partition` and `offset`, which gives the same order at any number of workers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Pos {
    /// Ingestion epoch, UTC milliseconds; also the record's timely timestamp.
    pub time: u64,
    /// Index of the source topic in the source's topic list.
    pub topic: u8,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset within the partition.
    pub offset: i64,
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Line {
    /// The SKU ordered.
    pub sku: Sku,
    /// Units ordered (positive after upstream validation).
    pub quantity: i64,
    /// Price per unit in minor units of the order's currency.
    pub unit_price_minor: i64,
}

/// What an `order.updated` event changes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Change {
    /// Replace all lines of the order (if the revision is new and the order is `CREATED`).
    Lines(Vec<Line>),
    /// Cancel the order (if it is `CREATED`).
    Cancel,
}

/// A decoded input event, independent of its wire format.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InputEvent {
    /// `order-service.order.created`.
    OrderCreated {
        /// The new order.
        order_id: OrderId,
        /// ISO 4217 currency of the prices.
        currency: String,
        /// The ordered lines (revision 0).
        lines: Vec<Line>,
    },
    /// `order-service.order.updated`.
    OrderUpdated {
        /// The order changed.
        order_id: OrderId,
        /// Revision of the change; line changes apply only with a growing revision.
        revision: u32,
        /// The change itself.
        change: Change,
    },
    /// `payment-service.payment.completed`.
    PaymentCompleted {
        /// The order paid.
        order_id: OrderId,
    },
    /// `payment-service.payment.failed`.
    PaymentFailed {
        /// The order whose payment failed.
        order_id: OrderId,
    },
    /// `inventory-service.stock.adjusted`: a restock (positive) or correction.
    StockAdjusted {
        /// The SKU adjusted.
        sku: Sku,
        /// Units added to (positive) or removed from (negative) on-hand stock.
        delta: i64,
    },
}

impl InputEvent {
    /// The order this event belongs to, `None` for stock adjustments.
    pub fn order_id(&self) -> Option<OrderId> {
        match self {
            InputEvent::OrderCreated { order_id, .. }
            | InputEvent::OrderUpdated { order_id, .. }
            | InputEvent::PaymentCompleted { order_id }
            | InputEvent::PaymentFailed { order_id } => Some(*order_id),
            InputEvent::StockAdjusted { .. } => None,
        }
    }

    /// What the event is, for log lines: its CloudEvents type (`order.created`, ...,
    /// `stock.adjusted`), and for `order.updated` which change it makes.
    pub fn kind(&self) -> &'static str {
        match self {
            InputEvent::OrderCreated { .. } => "order.created",
            InputEvent::OrderUpdated {
                change: Change::Cancel,
                ..
            } => "order.updated (cancel)",
            InputEvent::OrderUpdated { .. } => "order.updated (lines)",
            InputEvent::PaymentCompleted { .. } => "payment.completed",
            InputEvent::PaymentFailed { .. } => "payment.failed",
            InputEvent::StockAdjusted { .. } => "stock.adjusted",
        }
    }
}

/// Status of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Created and not settled: its lines are reserved.
    Created,
    /// Payment completed (terminal): its lines have left on-hand stock.
    Paid,
    /// Payment failed (terminal): its reservation is released.
    PaymentFailed,
    /// Cancelled by the client (terminal): its reservation is released.
    Cancelled,
}

impl OrderStatus {
    /// The wire name used by the REST/gRPC views: `CREATED`, `PAID`, `PAYMENT_FAILED`,
    /// `CANCELLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Paid => "PAID",
            OrderStatus::PaymentFailed => "PAYMENT_FAILED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// Whether the status is terminal (absorbing): every later event is ignored.
    pub fn is_terminal(self) -> bool {
        !matches!(self, OrderStatus::Created)
    }
}

/// The current state of one order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderView {
    /// Current status.
    pub status: OrderStatus,
    /// Currency, from the first `order.created`.
    pub currency: String,
    /// `Σ quantity × unit_price_minor` over `lines`, saturating at the `i64` bounds.
    pub total_minor: i64,
    /// Current lines: the created's, or the last applied line change's.
    pub lines: Vec<Line>,
}

/// The stock numbers of one SKU.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct StockLevel {
    /// Σ adjustments − Σ quantities of paid orders.
    pub on_hand: i64,
    /// Σ quantities of orders in status `CREATED`.
    pub reserved: i64,
    /// `on_hand − reserved`; negative when oversold.
    pub available: i64,
}

/// The order-related part of an [`InputEvent`], the value folded per order.
///
/// Its derived `Ord` is only a tie-breaker: values are `(Pos, OrderEvent)` and `Pos`
/// values are unique.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum OrderEvent {
    Created { currency: String, lines: Vec<Line> },
    Lines { revision: u32, lines: Vec<Line> },
    Cancel,
    Paid,
    Failed,
}

/// Splits an input record into its order id and the part the order fold needs.
fn order_event(pos: Pos, event: InputEvent) -> Option<(OrderId, (Pos, OrderEvent))> {
    let (order_id, event) = match event {
        InputEvent::OrderCreated {
            order_id,
            currency,
            lines,
        } => (order_id, OrderEvent::Created { currency, lines }),
        InputEvent::OrderUpdated {
            order_id,
            revision,
            change,
        } => match change {
            Change::Lines(lines) => (order_id, OrderEvent::Lines { revision, lines }),
            Change::Cancel => (order_id, OrderEvent::Cancel),
        },
        InputEvent::PaymentCompleted { order_id } => (order_id, OrderEvent::Paid),
        InputEvent::PaymentFailed { order_id } => (order_id, OrderEvent::Failed),
        InputEvent::StockAdjusted { .. } => return None,
    };
    Some((order_id, (pos, event)))
}

/// `Σ quantity × unit_price_minor`, saturating.
fn total_minor(lines: &[Line]) -> i64 {
    lines.iter().fold(0i64, |total, line| {
        total.saturating_add(line.quantity.saturating_mul(line.unit_price_minor))
    })
}

/// Folds one order's records, given in `Pos` order, into its view (module docs, rules 1-6).
///
/// Returns `None` while the order has no `order.created`.
fn fold_order<'a>(events: impl Iterator<Item = &'a OrderEvent> + Clone) -> Option<OrderView> {
    let (currency, created_lines) = events.clone().find_map(|event| match event {
        OrderEvent::Created { currency, lines } => Some((currency, lines)),
        _ => None,
    })?;
    let mut status = OrderStatus::Created;
    let mut lines = created_lines;
    let mut revision = 0u32;
    for event in events {
        if status.is_terminal() {
            break;
        }
        match event {
            // The first created is the base; any other created is a duplicate.
            OrderEvent::Created { .. } => {}
            OrderEvent::Lines {
                revision: update_revision,
                lines: update_lines,
            } => {
                if *update_revision > revision {
                    revision = *update_revision;
                    lines = update_lines;
                }
            }
            OrderEvent::Cancel => status = OrderStatus::Cancelled,
            OrderEvent::Paid => status = OrderStatus::Paid,
            OrderEvent::Failed => status = OrderStatus::PaymentFailed,
        }
    }
    Some(OrderView {
        status,
        currency: currency.clone(),
        total_minor: total_minor(lines),
        lines: lines.clone(),
    })
}

/// The view of every order whose `order.created` has been seen, kept incrementally.
///
/// Output: exactly one `(order id, view)` with multiplicity 1 per such order at every
/// closed time; a change is a retraction of the old view plus the new view at the time
/// of the record that caused it. Records are exchanged by order id.
pub fn order_states<'scope>(events: &Events<'scope>) -> Orders<'scope> {
    events
        .clone()
        .flat_map(|(pos, event)| order_event(pos, event))
        .reduce_named("OrderStates", |_order_id, history, output| {
            // `history` is sorted by value, i.e. by `Pos`; keep records present now.
            let present = history
                .iter()
                .filter(|(_, count)| *count > 0)
                .map(|((_pos, event), _)| event);
            if let Some(view) = fold_order(present) {
                output.push((view, 1 as Diff));
            }
        })
}

/// The stock level of every SKU with non-zero numbers, from adjustments and order views.
///
/// `orders` is normally [`order_states`] of the same `events`. Output: exactly one
/// `(sku, level)` with multiplicity 1 per SKU whose `on_hand` or `reserved` is non-zero
/// at every closed time; SKUs whose numbers all return to zero are retracted. Records are
/// exchanged by SKU.
pub fn stock_levels<'scope>(events: &Events<'scope>, orders: &Orders<'scope>) -> Stock<'scope> {
    // Weights are `(on_hand delta, reserved delta)`, multiplied by the record's count.
    let adjustments = events.clone().explode(|(_pos, event)| match event {
        InputEvent::StockAdjusted { sku, delta } => Some((sku, (delta as Diff, 0 as Diff))),
        _ => None,
    });
    let from_orders = orders.clone().explode(|(_order_id, view)| {
        let status = view.status;
        let contribution = |quantity: i64| -> (Diff, Diff) {
            match status {
                OrderStatus::Created => (0, quantity as Diff),
                OrderStatus::Paid => (-(quantity as Diff), 0),
                OrderStatus::PaymentFailed | OrderStatus::Cancelled => (0, 0),
            }
        };
        view.lines
            .into_iter()
            .map(|line| (line.sku, contribution(line.quantity)))
            .filter(|(_sku, (on_hand, reserved))| *on_hand != 0 || *reserved != 0)
            .collect::<Vec<_>>()
    });
    adjustments
        .concat(from_orders)
        .count()
        .map(|(sku, (on_hand, reserved))| {
            let (on_hand, reserved) = (on_hand as i64, reserved as i64);
            let level = StockLevel {
                on_hand,
                reserved,
                available: on_hand.saturating_sub(reserved),
            };
            (sku, level)
        })
}

/// Both views of `events`: `(order_states(events), stock_levels(events, orders))`.
pub fn views<'scope>(events: &Events<'scope>) -> (Orders<'scope>, Stock<'scope>) {
    let orders = order_states(events);
    let stock = stock_levels(events, &orders);
    (orders, stock)
}

/// One order's records compacted for a snapshot: records that, followed by any records
/// with greater [`Pos`], fold to the same view as `history` followed by them.
///
/// Without an `order.created` every record is kept (each may matter once the created
/// arrives). With one, the fold's state is the first created (currency, base lines),
/// the last line change applied (revision and lines) and the terminal event, if any:
/// exactly those records are kept, with their original positions, so a fold over them
/// (rules 1-6 of the module docs) reaches the same status, lines and revision. Records
/// of other orders or stock adjustments in `history` are dropped.
pub fn compact_order(history: &[(Pos, InputEvent)]) -> Vec<(Pos, InputEvent)> {
    let mut sorted: Vec<&(Pos, InputEvent)> = history.iter().collect();
    sorted.sort();
    let created = sorted
        .iter()
        .position(|(_, event)| matches!(event, InputEvent::OrderCreated { .. }));
    let Some(created) = created else {
        return sorted
            .into_iter()
            .filter(|(_, event)| event.order_id().is_some())
            .cloned()
            .collect();
    };
    let mut revision = 0u32;
    let mut lines = None;
    let mut terminal = None;
    for (index, (_, event)) in sorted.iter().enumerate() {
        match event {
            InputEvent::OrderUpdated {
                revision: update,
                change: Change::Lines(_),
                ..
            } => {
                if *update > revision {
                    revision = *update;
                    lines = Some(index);
                }
            }
            InputEvent::OrderUpdated {
                change: Change::Cancel,
                ..
            }
            | InputEvent::PaymentCompleted { .. }
            | InputEvent::PaymentFailed { .. } => {
                terminal = Some(index);
                break;
            }
            InputEvent::OrderCreated { .. } | InputEvent::StockAdjusted { .. } => {}
        }
    }
    let mut kept: Vec<usize> = [Some(created), lines, terminal]
        .into_iter()
        .flatten()
        .collect();
    kept.sort_unstable();
    kept.into_iter()
        .map(|index| sorted[index].clone())
        .collect()
}
