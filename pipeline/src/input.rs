//! The input: which topics the job reads, and how a Kafka record becomes a
//! [`InputEvent`] or a dead letter.
//!
//! The five input topics have a fixed order, [`INPUT_TOPICS`]; a topic's index in it is
//! the `topic` field of every [`Pos`](crate::logic::Pos) read from it. That index is part of the
//! total order the dataflow folds orders in, and it is written into the progress topic,
//! so it must never change between two runs of the same job (append new topics at the
//! end, never reorder).
//!
//! Decoding goes through eventbus: Confluent wire format, writer schema by id from the
//! registry (cached), resolution into the newest schema, then the event's domain rules.
//! The result is mapped to the engine-neutral [`InputEvent`] (UUIDs become their
//! 128 bits, quantities widen to `i64`). Anything that fails is *data*: the record is
//! dead-lettered with eventbus's error class and still advances its partition's offset.
//! Only an unreachable registry is not the record's fault; the caller retries it.

use eventbus::RegistryClient;
use eventbus::codec::{DecodeFailure, decode};
use eventbus::{BusError, ErrorClass};
use schemas::{
    Event, OrderChangeKind, OrderCreated, OrderLine, OrderUpdated, PaymentCompleted, PaymentFailed,
    StockAdjusted,
};

use crate::logic::{Change, InputEvent, Line};

/// The input topics (without prefix) in `Pos::topic` order: created, updated, completed,
/// failed, adjusted. Never reorder.
pub const INPUT_TOPICS: [&str; 5] = [
    OrderCreated::TOPIC,
    OrderUpdated::TOPIC,
    PaymentCompleted::TOPIC,
    PaymentFailed::TOPIC,
    StockAdjusted::TOPIC,
];

/// Why a record could not be ingested, by eventbus's fault classification: the
/// record's ([`Fault::Data`](eventbus::Fault::Data): dead-letter it) or the registry's
/// (`Infrastructure`: retry, never dead-letter).
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The record is at fault: dead-letter it with this class.
    #[error("{error}")]
    Data {
        /// The DLQ error class.
        class: ErrorClass,
        /// What is wrong (its text becomes `dlq.error.message`).
        #[source]
        error: BusError,
    },
    /// The registry could not be asked (unreachable, timed out): retry, never DLQ.
    #[error("{0}")]
    Infrastructure(#[source] BusError),
}

impl From<DecodeFailure> for Rejection {
    fn from(failure: DecodeFailure) -> Self {
        match failure.class {
            Some(class) => Rejection::Data {
                class,
                error: failure.error,
            },
            None => Rejection::Infrastructure(failure.error),
        }
    }
}

/// Decodes the value of a record read from input topic number `topic` (an index into
/// [`INPUT_TOPICS`]; `topic_name` is the actual, possibly prefixed, name).
pub async fn decode_input(
    registry: &RegistryClient,
    topic: u8,
    topic_name: &str,
    value: Option<&[u8]>,
) -> Result<InputEvent, Rejection> {
    Ok(match topic {
        0 => from_created(decode::<OrderCreated>(registry, topic_name, value).await?.0),
        1 => from_updated(decode::<OrderUpdated>(registry, topic_name, value).await?.0),
        2 => {
            let (e, _) = decode::<PaymentCompleted>(registry, topic_name, value).await?;
            InputEvent::PaymentCompleted {
                order_id: e.order_id.as_u128(),
            }
        }
        3 => {
            let (e, _) = decode::<PaymentFailed>(registry, topic_name, value).await?;
            InputEvent::PaymentFailed {
                order_id: e.order_id.as_u128(),
            }
        }
        4 => {
            let (e, _) = decode::<StockAdjusted>(registry, topic_name, value).await?;
            InputEvent::StockAdjusted {
                sku: e.sku,
                delta: e.delta,
            }
        }
        other => {
            return Err(Rejection::Data {
                class: ErrorClass::Undecodable,
                error: BusError::Decode(format!("no input topic number {other}")),
            });
        }
    })
}

fn lines(lines: Vec<OrderLine>) -> Vec<Line> {
    lines
        .into_iter()
        .map(|l| Line {
            sku: l.sku,
            quantity: i64::from(l.quantity),
            unit_price_minor: l.unit_price_minor,
        })
        .collect()
}

/// `order.created` → [`InputEvent::OrderCreated`].
pub fn from_created(e: OrderCreated) -> InputEvent {
    InputEvent::OrderCreated {
        order_id: e.order_id.as_u128(),
        currency: e.currency,
        lines: lines(e.lines),
    }
}

/// `order.updated` → [`InputEvent::OrderUpdated`]. The revision is at least 1 after
/// validation; a negative one (impossible after validation) would map to 0, which the
/// fold treats as stale.
pub fn from_updated(e: OrderUpdated) -> InputEvent {
    let change = match e.kind {
        OrderChangeKind::LinesChanged => Change::Lines(lines(e.lines)),
        OrderChangeKind::Cancelled => Change::Cancel,
    };
    InputEvent::OrderUpdated {
        order_id: e.order_id.as_u128(),
        revision: u32::try_from(e.revision).unwrap_or(0),
        change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn events_map_to_input_events() {
        let id = Uuid::from_u128(7);
        let created = OrderCreated {
            event_id: Uuid::from_u128(1),
            order_id: id,
            customer_id: "c".into(),
            currency: "EUR".into(),
            lines: vec![OrderLine::new("A", 2, 150)],
            total_minor: 300,
            created_at: 1,
            channel: None,
        };
        assert_eq!(
            from_created(created),
            InputEvent::OrderCreated {
                order_id: 7,
                currency: "EUR".into(),
                lines: vec![Line {
                    sku: "A".into(),
                    quantity: 2,
                    unit_price_minor: 150
                }],
            }
        );
        let cancel = OrderUpdated::cancelled(Uuid::from_u128(2), id, 3, "EUR", 2);
        assert_eq!(
            from_updated(cancel),
            InputEvent::OrderUpdated {
                order_id: 7,
                revision: 3,
                change: Change::Cancel
            }
        );
        assert_eq!(INPUT_TOPICS[4], "inventory-service.stock.adjusted");
    }
}
