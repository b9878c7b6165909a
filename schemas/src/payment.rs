//! Payment events, produced by the Payment Service: `payment.completed` and
//! `payment.failed`, both keyed by order id so that they land on the same partition
//! number as the order they settle (the order and payment topics share one partition
//! count), which lets the dataflow join them without a shuffle across processes.

use apache_avro::Schema;
use uuid::Uuid;

use crate::{
    Event, SchemaError, Violations, codec,
    registry::{PAYMENT_COMPLETED, PAYMENT_FAILED},
    validation::{
        validate_amount_minor, validate_currency, validate_id, validate_payment_reason,
        validate_reason_code, validate_time_ms,
    },
};

/// The reason codes of [`PaymentFailed`] that the Payment Service emits today. The set is
/// open: consumers must accept codes they do not know (they are only checked for form).
pub mod reason_codes {
    /// The amount is over what the customer or the gateway allows.
    pub const AMOUNT_OVER_LIMIT: &str = "AMOUNT_OVER_LIMIT";
    /// The customer's payment method declined the charge.
    pub const CUSTOMER_DECLINED: &str = "CUSTOMER_DECLINED";
    /// The payment gateway could not be reached or did not answer in time.
    pub const GATEWAY_UNAVAILABLE: &str = "GATEWAY_UNAVAILABLE";
    /// Every code above.
    pub const KNOWN: [&str; 3] = [AMOUNT_OVER_LIMIT, CUSTOMER_DECLINED, GATEWAY_UNAVAILABLE];
}

/// An order was paid (topic `payment-service.payment.completed`, key: order id).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PaymentCompleted {
    /// Unique id of this event (CloudEvents `ce_id`).
    #[serde(with = "codec::uuid_text")]
    pub event_id: Uuid,
    /// Id of the order that was paid; the Kafka key.
    #[serde(with = "codec::uuid_text")]
    pub order_id: Uuid,
    /// Id of the payment, assigned by the Payment Service.
    #[serde(with = "codec::uuid_text")]
    pub payment_id: Uuid,
    /// Amount charged in minor units, at least 1.
    pub amount_minor: i64,
    /// ISO 4217 code of `amount_minor`.
    pub currency: String,
    /// When the payment completed, UTC milliseconds.
    pub completed_at: i64,
}

impl Event for PaymentCompleted {
    const TOPIC: &'static str = "payment-service.payment.completed";
    const TYPE: &'static str = "payment.completed";

    schema_binding!(PAYMENT_COMPLETED);
    fn key(&self) -> String {
        self.order_id.to_string()
    }
    fn event_id(&self) -> String {
        self.event_id.to_string()
    }
    fn time_ms(&self) -> i64 {
        self.completed_at
    }
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::default();
        v.check("event_id", validate_id(&self.event_id));
        v.check("order_id", validate_id(&self.order_id));
        v.check("payment_id", validate_id(&self.payment_id));
        v.check("amount_minor", validate_amount_minor(self.amount_minor));
        v.check("currency", validate_currency(&self.currency));
        v.check("completed_at", validate_time_ms(self.completed_at));
        v.into_result()
    }
}

/// An order could not be paid (topic `payment-service.payment.failed`, key: order id).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PaymentFailed {
    /// Unique id of this event (CloudEvents `ce_id`).
    #[serde(with = "codec::uuid_text")]
    pub event_id: Uuid,
    /// Id of the order whose payment failed; the Kafka key.
    #[serde(with = "codec::uuid_text")]
    pub order_id: Uuid,
    /// Amount that was to be charged in minor units, at least 1.
    pub amount_minor: i64,
    /// ISO 4217 code of `amount_minor`.
    pub currency: String,
    /// Machine-readable reason, `UPPER_SNAKE_CASE`; see [`reason_codes`].
    pub reason_code: String,
    /// The reason in human words.
    pub reason: String,
    /// When the payment failed, UTC milliseconds.
    pub failed_at: i64,
}

impl Event for PaymentFailed {
    const TOPIC: &'static str = "payment-service.payment.failed";
    const TYPE: &'static str = "payment.failed";

    schema_binding!(PAYMENT_FAILED);
    fn key(&self) -> String {
        self.order_id.to_string()
    }
    fn event_id(&self) -> String {
        self.event_id.to_string()
    }
    fn time_ms(&self) -> i64 {
        self.failed_at
    }
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::default();
        v.check("event_id", validate_id(&self.event_id));
        v.check("order_id", validate_id(&self.order_id));
        v.check("amount_minor", validate_amount_minor(self.amount_minor));
        v.check("currency", validate_currency(&self.currency));
        v.check("reason_code", validate_reason_code(&self.reason_code));
        v.check("reason", validate_payment_reason(&self.reason));
        v.check("failed_at", validate_time_ms(self.failed_at));
        v.into_result()
    }
}
