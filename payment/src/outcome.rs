//! Outcome records: what a settled order (or a dead record) becomes on Kafka.
//!
//! eventbus's `Producer::publish` validates, encodes, frames, sets CloudEvents headers
//! and *sends and awaits the acknowledgement* in one call, which cannot be part of
//! somebody else's transaction. This module does the same first four steps with
//! eventbus's lower-level pieces ([`eventbus::codec::validate_and_encode`],
//! [`eventbus::codec::frame`], [`CloudEventAttributes`], [`DeadLetter::headers`]) and
//! returns an [`OutRecord`]: bytes and headers, ready to be produced inside the batch's
//! transaction by [`crate::transaction`]. The wire format and headers are therefore
//! exactly those of every other producer of the project.
//!
//! Choices that matter downstream:
//! - **Partition**: an outcome is written to the *same partition number* as the order it
//!   settles, explicitly, not through the partitioner. The order and payment topics
//!   have one partition count (checked at start-up), so the pipeline can join them per
//!   partition whatever partitioner the order's producer used, and
//!   [`crate::settled_index`] knows exactly which outcome partitions to read to find an
//!   order's outcome.
//! - **Key**: the order id, as docs/design.md says for payment topics.
//! - **Event id** (`ce_id`, `event_id`): a name-based UUID (v5) of the order id and the
//!   event type. An outcome that is produced again (after an aborted transaction) has
//!   the same id, so any consumer that deduplicates by event id sees one event.
//! - **Trace**: `traceparent` continues the order's trace (a child span), or starts one.
//! - **Dead letters** keep the original key, value and headers byte for byte, plus the
//!   eventbus `dlq.*` headers, so that eventbus's redrive tool can replay them.

use eventbus::codec::{frame, validate_and_encode};
use eventbus::dlq::DeadLetter;
use eventbus::headers::{CloudEventAttributes, HeaderList, TraceParent, now_ms};
use eventbus::kafka::{Message, OwnedMessage};
use eventbus::{BusError, ErrorClass, RegistryClient, SchemaRef};
use schemas::validation::MAX_PAYMENT_REASON_CHARS;
use schemas::{Event, OrderCreated, PaymentCompleted, PaymentFailed};
use uuid::Uuid;

use crate::config::Topics;

/// The namespace of outcome event ids (UUID v5 of `"<order id>/<ce_type>"`).
pub const OUTCOME_EVENT_NAMESPACE: Uuid =
    Uuid::from_u128(0x0c55_e3a1_74d2_4f0b_9a6e_2b8d_41f7_c392);

/// A record to produce inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Destination partition; `None` lets the partitioner choose (dead letters).
    pub partition: Option<i32>,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Option<Vec<u8>>,
    /// Record headers.
    pub headers: HeaderList,
}

/// Builds outcome and dead-letter records; holds the registry ids of the outcome
/// schemas, resolved (and checked) once at start-up.
#[derive(Debug, Clone)]
pub struct OutcomeEncoder {
    topics: Topics,
    source: String,
    group: String,
    registry: RegistryClient,
    completed_schema_id: u32,
    failed_schema_id: u32,
}

impl OutcomeEncoder {
    /// Checks that the newest `payment.completed` and `payment.failed` schemas are
    /// registered under the (possibly prefixed) topics' subjects and remembers their
    /// ids. Fails with a [`BusError`] that says what to run when they are not.
    pub async fn new(
        registry: RegistryClient,
        topics: Topics,
        source: String,
        group: String,
    ) -> Result<Self, BusError> {
        let completed_schema_id = registry
            .ensure(&SchemaRef::of_on_topic::<PaymentCompleted>(
                &topics.payment_completed,
            ))
            .await?;
        let failed_schema_id = registry
            .ensure(&SchemaRef::of_on_topic::<PaymentFailed>(
                &topics.payment_failed,
            ))
            .await?;
        Ok(OutcomeEncoder {
            topics,
            source,
            group,
            registry,
            completed_schema_id,
            failed_schema_id,
        })
    }

    /// The deterministic event id of an outcome of `order_id`.
    pub fn event_id(order_id: Uuid, event_type: &str) -> Uuid {
        Uuid::new_v5(
            &OUTCOME_EVENT_NAMESPACE,
            format!("{order_id}/{event_type}").as_bytes(),
        )
    }

    /// `payment.completed` for `order`, to `partition`.
    pub fn completed(
        &self,
        order: &OrderCreated,
        payment_id: Uuid,
        partition: i32,
        trace: &TraceParent,
    ) -> Result<OutRecord, BusError> {
        let event = PaymentCompleted {
            event_id: Self::event_id(order.order_id, PaymentCompleted::TYPE),
            order_id: order.order_id,
            payment_id,
            amount_minor: order.total_minor,
            currency: order.currency.clone(),
            completed_at: now_ms(),
        };
        self.encode(
            &event,
            &self.topics.payment_completed,
            self.completed_schema_id,
            partition,
            trace,
        )
    }

    /// `payment.failed` for `order`, to `partition`. A code or reason a gateway sent in
    /// a form the schema does not allow is normalised rather than refused: the decline
    /// is real and must be published.
    pub fn failed(
        &self,
        order: &OrderCreated,
        reason_code: &str,
        reason: &str,
        partition: i32,
        trace: &TraceParent,
    ) -> Result<OutRecord, BusError> {
        let event = PaymentFailed {
            event_id: Self::event_id(order.order_id, PaymentFailed::TYPE),
            order_id: order.order_id,
            amount_minor: order.total_minor,
            currency: order.currency.clone(),
            reason_code: normalise_code(reason_code),
            reason: normalise_reason(reason, reason_code),
            failed_at: now_ms(),
        };
        self.encode(
            &event,
            &self.topics.payment_failed,
            self.failed_schema_id,
            partition,
            trace,
        )
    }

    fn encode<E: Event>(
        &self,
        event: &E,
        topic: &str,
        schema_id: u32,
        partition: i32,
        trace: &TraceParent,
    ) -> Result<OutRecord, BusError> {
        let value = frame(schema_id, &validate_and_encode(event)?);
        let event_id = event.event_id();
        let dataschema = self.registry.schema_url(schema_id);
        let headers = CloudEventAttributes {
            id: &event_id,
            source: &self.source,
            event_type: E::TYPE,
            time_ms: event.time_ms(),
            dataschema: Some(&dataschema),
        }
        .to_headers(trace);
        Ok(OutRecord {
            topic: topic.to_owned(),
            partition: Some(partition),
            key: Some(event.key().into_bytes()),
            value: Some(value),
            headers,
        })
    }

    /// The dead-letter copy of `record`: original key, value and headers, plus the
    /// eventbus `dlq.*` headers.
    pub fn dead_letter(
        &self,
        record: &OwnedMessage,
        class: ErrorClass,
        message: &str,
        attempts: u32,
        first_failure_ms: i64,
        last_failure_ms: i64,
    ) -> OutRecord {
        let letter = DeadLetter {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            timestamp_ms: record.timestamp().to_millis(),
            key: record.key().map(<[u8]>::to_vec),
            group: self.group.clone(),
            class,
            message: message.to_owned(),
            attempts,
            first_failure_ms,
            last_failure_ms,
        };
        OutRecord {
            topic: self.topics.dlq.clone(),
            partition: None,
            key: record.key().map(<[u8]>::to_vec),
            value: record.payload().map(<[u8]>::to_vec),
            headers: letter.headers(&HeaderList::from_headers(record.headers())),
        }
    }
}

/// An `UPPER_SNAKE_CASE` code from whatever a gateway sent: `card-declined` becomes
/// `CARD_DECLINED`; a code that would not start with a letter gets `DECLINED_` in front.
fn normalise_code(code: &str) -> String {
    let mut out: String = code
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_uppercase()) {
        out = format!("DECLINED_{out}").trim_end_matches('_').to_owned();
    }
    out
}

/// A reason the schema accepts: no control characters, 1 to 500 characters.
fn normalise_reason(reason: &str, code: &str) -> String {
    let clean: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    let clean = if clean.is_empty() { code.trim() } else { clean };
    let clean = if clean.is_empty() { "declined" } else { clean };
    clean.chars().take(MAX_PAYMENT_REASON_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::validation::{validate_payment_reason, validate_reason_code};

    #[test]
    fn gateway_codes_and_reasons_are_normalised() {
        assert_eq!(normalise_code("AMOUNT_OVER_LIMIT"), "AMOUNT_OVER_LIMIT");
        assert_eq!(normalise_code("card-declined"), "CARD_DECLINED");
        assert_eq!(normalise_code("05"), "DECLINED_05");
        assert_eq!(normalise_code(""), "DECLINED");
        for code in ["x", "05", "", "ünï", "do not honour"] {
            assert_eq!(validate_reason_code(&normalise_code(code)), None, "{code}");
        }
        assert_eq!(normalise_reason("a\nb", "C"), "a b");
        assert_eq!(normalise_reason("", "C"), "C");
        let long = "x".repeat(2_000);
        assert_eq!(validate_payment_reason(&normalise_reason(&long, "C")), None);
    }

    #[test]
    fn event_ids_are_stable_per_order_and_type() {
        let order = Uuid::from_u128(5);
        assert_eq!(
            OutcomeEncoder::event_id(order, "payment.completed"),
            OutcomeEncoder::event_id(order, "payment.completed")
        );
        assert_ne!(
            OutcomeEncoder::event_id(order, "payment.completed"),
            OutcomeEncoder::event_id(order, "payment.failed")
        );
    }
}
