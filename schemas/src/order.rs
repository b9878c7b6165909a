//! Order events, produced by the Order Service (ingress): `order.created` and
//! `order.updated`, both keyed by order id.
//!
//! An order update carries the *complete* new set of lines, not a diff, plus a revision
//! that grows per order. A consumer therefore never needs the previous update to apply
//! the next one, and can drop a stale or replayed update by comparing revisions: the
//! state of an order is a pure function of its created event and its highest revision.

use apache_avro::Schema;
use uuid::Uuid;

use crate::{
    Event, SchemaError, Violations, codec,
    registry::{ORDER_CREATED, ORDER_UPDATED},
    validation::{
        validate_channel, validate_currency, validate_customer_id, validate_id, validate_lines,
        validate_order_total, validate_time_ms,
    },
};

/// One line of an order: a quantity of one SKU at a unit price.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OrderLine {
    /// Stock keeping unit, see [`validate_sku`](crate::validate_sku).
    pub sku: String,
    /// Units ordered, `1..=10_000`.
    pub quantity: i32,
    /// Price of one unit in minor units of the order's currency, `1..=100_000_000`.
    pub unit_price_minor: i64,
}

impl OrderLine {
    /// A line of `quantity` units of `sku` at `unit_price_minor` each.
    pub fn new(sku: impl Into<String>, quantity: i32, unit_price_minor: i64) -> Self {
        Self {
            sku: sku.into(),
            quantity,
            unit_price_minor,
        }
    }
}

/// What kind of change an [`OrderUpdated`] describes (Avro enum `OrderChangeKind`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderChangeKind {
    /// The lines were replaced by the event's `lines` (Avro `LINES_CHANGED`).
    LinesChanged,
    /// The order was cancelled; its reservation is released (Avro `CANCELLED`).
    Cancelled,
}

/// An order was accepted (topic `order-service.order.created`, key: order id). Mirrors
/// schema v2.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OrderCreated {
    /// Unique id of this event (CloudEvents `ce_id`).
    #[serde(with = "codec::uuid_text")]
    pub event_id: Uuid,
    /// Id of the order; the Kafka key.
    #[serde(with = "codec::uuid_text")]
    pub order_id: Uuid,
    /// Id of the customer, as the client sent it.
    pub customer_id: String,
    /// ISO 4217 code of every amount of the order.
    pub currency: String,
    /// The ordered lines, `1..=`[`MAX_LINES_PER_ORDER`](crate::MAX_LINES_PER_ORDER).
    pub lines: Vec<OrderLine>,
    /// Total in minor units: exactly [`order_total`](crate::order_total) of the lines.
    pub total_minor: i64,
    /// When the order was accepted, UTC milliseconds.
    pub created_at: i64,
    /// Which API accepted the order: `REST` or `GRPC` (v2; `None` when read from v1 data).
    pub channel: Option<String>,
}

impl Event for OrderCreated {
    const TOPIC: &'static str = "order-service.order.created";
    const TYPE: &'static str = "order.created";

    schema_binding!(ORDER_CREATED);
    fn key(&self) -> String {
        self.order_id.to_string()
    }
    fn event_id(&self) -> String {
        self.event_id.to_string()
    }
    fn time_ms(&self) -> i64 {
        self.created_at
    }
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::default();
        v.check("event_id", validate_id(&self.event_id));
        v.check("order_id", validate_id(&self.order_id));
        v.check("customer_id", validate_customer_id(&self.customer_id));
        v.check("currency", validate_currency(&self.currency));
        validate_lines(&self.lines, "lines", &mut v);
        v.check(
            "total_minor",
            validate_order_total(&self.lines, self.total_minor),
        );
        v.check("created_at", validate_time_ms(self.created_at));
        v.check("channel", validate_channel(self.channel.as_deref()));
        v.into_result()
    }
}

/// An order changed (topic `order-service.order.updated`, key: order id).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OrderUpdated {
    /// Unique id of this event (CloudEvents `ce_id`).
    #[serde(with = "codec::uuid_text")]
    pub event_id: Uuid,
    /// Id of the order that changed; the Kafka key.
    #[serde(with = "codec::uuid_text")]
    pub order_id: Uuid,
    /// Revision this change produces: 1 for an order's first update, then 2, 3, ...
    pub revision: i32,
    /// Lines replaced, or order cancelled.
    pub kind: OrderChangeKind,
    /// [`OrderChangeKind::LinesChanged`]: the complete new lines;
    /// [`OrderChangeKind::Cancelled`]: empty.
    pub lines: Vec<OrderLine>,
    /// ISO 4217 code of the order (unchanged since it was created).
    pub currency: String,
    /// New total in minor units: [`order_total`](crate::order_total) of the lines, 0 when cancelled.
    pub total_minor: i64,
    /// When the change was accepted, UTC milliseconds.
    pub updated_at: i64,
}

impl OrderUpdated {
    /// A cancellation of `order_id` at `revision`: no lines, total 0.
    pub fn cancelled(
        event_id: Uuid,
        order_id: Uuid,
        revision: i32,
        currency: impl Into<String>,
        updated_at: i64,
    ) -> Self {
        Self {
            event_id,
            order_id,
            revision,
            kind: OrderChangeKind::Cancelled,
            lines: Vec::new(),
            currency: currency.into(),
            total_minor: 0,
            updated_at,
        }
    }
}

impl Event for OrderUpdated {
    const TOPIC: &'static str = "order-service.order.updated";
    const TYPE: &'static str = "order.updated";

    schema_binding!(ORDER_UPDATED);
    fn key(&self) -> String {
        self.order_id.to_string()
    }
    fn event_id(&self) -> String {
        self.event_id.to_string()
    }
    fn time_ms(&self) -> i64 {
        self.updated_at
    }
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::default();
        v.check("event_id", validate_id(&self.event_id));
        v.check("order_id", validate_id(&self.order_id));
        if self.revision < 1 {
            v.push(
                "revision",
                format!("must be at least 1, got {}", self.revision),
            );
        }
        v.check("currency", validate_currency(&self.currency));
        match self.kind {
            OrderChangeKind::LinesChanged => {
                validate_lines(&self.lines, "lines", &mut v);
                v.check(
                    "total_minor",
                    validate_order_total(&self.lines, self.total_minor),
                );
            }
            OrderChangeKind::Cancelled => {
                if !self.lines.is_empty() {
                    v.push(
                        "lines",
                        format!(
                            "must be empty for CANCELLED, got {} line(s)",
                            self.lines.len()
                        ),
                    );
                }
                if self.total_minor != 0 {
                    v.push(
                        "total_minor",
                        format!("must be 0 for CANCELLED, got {}", self.total_minor),
                    );
                }
            }
        }
        v.check("updated_at", validate_time_ms(self.updated_at));
        v.into_result()
    }
}
