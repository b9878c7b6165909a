//! A plain sequential reference implementation of the semantics in [`crate::logic`].
//!
//! The tests run the same seeded input through this model and through the dataflow at
//! several worker counts and compare the views after every epoch. For that comparison
//! to mean something, the model is written independently of the dataflow code and in a
//! different style: it is a state machine over records applied one at a time in `Pos`
//! order, keeping running stock counters that it moves on each status transition,
//! rather than a fold over each order's history followed by an aggregation.
//!
//! - Records of an order that arrive before its `order.created` are parked in a
//!   per-order pending list; when the created arrives, the order is created and the
//!   parked records are replayed in `Pos` order. Later records apply directly. Because
//!   records are applied in global `Pos` order, this equals "created first, then the
//!   rest in `Pos` order".
//! - Stock keeps `(on_hand, reserved)` per SKU; creating an order reserves its lines,
//!   a line change swaps the reservation, a completed payment turns the reservation
//!   into a sale, a failure or cancellation releases it. [`Model::stock`] leaves out
//!   SKUs whose numbers are all zero, like the dataflow.
//!
//! The model requires records in increasing `Pos` order across calls (within one
//! [`Model::apply_epoch`] call it sorts them itself). That holds when each call is one
//! epoch and `Pos::time` is the epoch, which is how the dataflow is fed too.

use std::collections::BTreeMap;

use crate::logic::{
    Change, InputEvent, Line, OrderId, OrderStatus, OrderView, Pos, Sku, StockLevel,
};

/// A record of an order other than its creation.
#[derive(Clone, Debug)]
enum Step {
    Lines { revision: u32, lines: Vec<Line> },
    Cancel,
    Paid,
    Failed,
}

/// An order after its creation.
#[derive(Clone, Debug)]
struct Order {
    status: OrderStatus,
    currency: String,
    lines: Vec<Line>,
    /// Last applied line-change revision; the created is revision 0.
    revision: u32,
}

/// The sequential reference: apply epochs of records, then read the views.
#[derive(Clone, Debug, Default)]
pub struct Model {
    orders: BTreeMap<OrderId, Order>,
    /// Records of orders whose created has not been seen, in `Pos` order.
    pending: BTreeMap<OrderId, Vec<Step>>,
    /// `(on_hand, reserved)` per SKU; may hold zeros, filtered on read.
    stock: BTreeMap<Sku, (i64, i64)>,
    last: Option<Pos>,
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the records of one epoch, in `Pos` order.
    ///
    /// # Panics
    ///
    /// If a record's `Pos` is not greater than every `Pos` applied before (including
    /// a repeated `Pos` within the batch): the model only supports in-order epochs.
    pub fn apply_epoch(&mut self, records: impl IntoIterator<Item = (Pos, InputEvent)>) {
        let mut records: Vec<(Pos, InputEvent)> = records.into_iter().collect();
        records.sort_by_key(|(pos, _)| *pos);
        for (pos, event) in records {
            if let Some(last) = self.last {
                assert!(pos > last, "model fed out of order: {pos:?} after {last:?}");
            }
            self.last = Some(pos);
            self.apply(event);
        }
    }

    fn apply(&mut self, event: InputEvent) {
        let (order_id, step) = match event {
            InputEvent::StockAdjusted { sku, delta } => {
                self.stock.entry(sku).or_default().0 += delta;
                return;
            }
            InputEvent::OrderCreated {
                order_id,
                currency,
                lines,
            } => {
                if self.orders.contains_key(&order_id) {
                    return; // a duplicate created: the first one won
                }
                self.change_reserved(&lines, 1);
                let order = Order {
                    status: OrderStatus::Created,
                    currency,
                    lines,
                    revision: 0,
                };
                self.orders.insert(order_id, order);
                for step in self.pending.remove(&order_id).unwrap_or_default() {
                    self.step(order_id, step);
                }
                return;
            }
            InputEvent::OrderUpdated {
                order_id,
                revision,
                change: Change::Lines(lines),
            } => (order_id, Step::Lines { revision, lines }),
            InputEvent::OrderUpdated {
                order_id,
                change: Change::Cancel,
                ..
            } => (order_id, Step::Cancel),
            InputEvent::PaymentCompleted { order_id } => (order_id, Step::Paid),
            InputEvent::PaymentFailed { order_id } => (order_id, Step::Failed),
        };
        if self.orders.contains_key(&order_id) {
            self.step(order_id, step);
        } else {
            self.pending.entry(order_id).or_default().push(step);
        }
    }

    /// Applies a non-creation record to an existing order, moving stock as needed.
    fn step(&mut self, order_id: OrderId, step: Step) {
        let order = self.orders.get(&order_id).expect("step on a created order");
        if order.status != OrderStatus::Created {
            return; // terminal states absorb everything
        }
        let old_lines = order.lines.clone();
        let old_revision = order.revision;
        let new_status = match step {
            Step::Lines { revision, lines } => {
                if revision > old_revision {
                    self.change_reserved(&old_lines, -1);
                    self.change_reserved(&lines, 1);
                    let order = self.orders.get_mut(&order_id).expect("present");
                    order.revision = revision;
                    order.lines = lines;
                }
                return;
            }
            Step::Cancel => OrderStatus::Cancelled,
            Step::Failed => OrderStatus::PaymentFailed,
            Step::Paid => {
                for line in &old_lines {
                    self.stock.entry(line.sku.clone()).or_default().0 -= line.quantity;
                }
                OrderStatus::Paid
            }
        };
        self.change_reserved(&old_lines, -1);
        self.orders.get_mut(&order_id).expect("present").status = new_status;
    }

    fn change_reserved(&mut self, lines: &[Line], sign: i64) {
        for line in lines {
            self.stock.entry(line.sku.clone()).or_default().1 += sign * line.quantity;
        }
    }

    /// The view of every order whose created has been applied.
    pub fn orders(&self) -> BTreeMap<OrderId, OrderView> {
        self.orders
            .iter()
            .map(|(order_id, order)| {
                let mut total: i64 = 0;
                for line in &order.lines {
                    let amount = line.quantity.saturating_mul(line.unit_price_minor);
                    total = total.saturating_add(amount);
                }
                let view = OrderView {
                    status: order.status,
                    currency: order.currency.clone(),
                    total_minor: total,
                    lines: order.lines.clone(),
                };
                (*order_id, view)
            })
            .collect()
    }

    /// The stock of every SKU whose `on_hand` or `reserved` is non-zero.
    pub fn stock(&self) -> BTreeMap<Sku, StockLevel> {
        self.stock
            .iter()
            .filter(|(_, (on_hand, reserved))| *on_hand != 0 || *reserved != 0)
            .map(|(sku, (on_hand, reserved))| {
                let level = StockLevel {
                    on_hand: *on_hand,
                    reserved: *reserved,
                    available: on_hand.saturating_sub(*reserved),
                };
                (sku.clone(), level)
            })
            .collect()
    }
}
