//! Event schemas of the order pipeline, and their Rust types. No I/O.
//!
//! Every service of the pipeline talks to the others only through six Kafka topics, so the
//! events *are* the interface. This crate owns that interface in one place, for producers
//! and consumers alike:
//!
//! * the **Avro schemas** (`schemas/avro/<topic>/vN.avsc`) are the source of truth. They
//!   are embedded with `include_str!`, so a binary always carries exactly the schemas it
//!   was built with, and every version ever published stays in the tree: the tests check
//!   the whole history backward-transitively (any version reads data written with any
//!   earlier one) and the registry enforces BACKWARD on top (see [`registry_subjects`]);
//! * the **Rust types** ([`OrderCreated`], [`OrderUpdated`], [`PaymentCompleted`],
//!   [`PaymentFailed`], [`StockAdjusted`], [`StockUpdated`]) mirror the *newest* version
//!   of each schema. Decoding resolves data written with any older version into them, so
//!   a consumer never deals with versions itself;
//! * the **domain rules** ([`Event::validate`] and the helpers of [`validation`]) are
//!   written once, here, with the limits as public constants, so that the REST and gRPC
//!   ingress refuses a request with exactly the rules (and field paths) that a consumer
//!   would later apply to the event, instead of a second, drifting copy.
//!
//! The [`Event`] trait is the contract with the infrastructure layer (`eventbus`): it
//! knows the topic, the CloudEvents type, the key, the schema, how to validate the
//! event's domain rules and how to turn the event into and out of an Avro datum. Framing
//! (the Confluent wire format's magic byte and schema id), the registry and Kafka itself
//! are `eventbus`'s business; this crate does no I/O at all.
//!
//! # Conventions every crate relies on
//!
//! * **Ids** are [`uuid::Uuid`] in Rust and `{"type": "string", "logicalType": "uuid"}`
//!   in Avro: on the wire a plain Avro string, always the lowercase hyphenated form
//!   (`67e55044-10b1-426f-9247-bb680e5fe0c8`). Because the Rust type is `Uuid`, an event
//!   cannot hold a malformed id, and [`Event::key`] is always that one canonical text: a
//!   key spelled in upper case by one producer and lower case by another would land on
//!   different partitions and break the co-partitioning of orders and payments.
//! * **Money** is an `i64` count of minor units (cents for EUR, yen for JPY) plus an
//!   active ISO 4217 code ([`validation::ACTIVE_CURRENCIES`]). Never floating point.
//! * **Times** are `i64` UTC milliseconds since the Unix epoch (`timestamp-millis`).
//! * **Keys** are the order id for order and payment events (so both are co-partitioned
//!   by order) and the SKU for stock events.
//! * The CloudEvents `ce_id` of [`StockUpdated`], which has no id field of its own, is a
//!   name-based UUID (v5) of `"{sku}@{version}"` ([`StockUpdated::derived_event_id`]): a
//!   replay of the same numbers produces the same id, so it can be deduplicated.
//!
//! # Encoding
//!
//! [`Event::to_avro`] serializes with serde into an Avro [`apache_avro::types::Value`]
//! and writes it as a bare datum with the newest schema (the writer validates the value
//! against the schema first). [`Event::from_avro`] reads a datum with the writer's schema
//! (whatever version the registry says the bytes were written with), resolves it into
//! the newest schema (filling defaults such as `channel = null` for order.created v1) and
//! deserializes the result. A datum must be consumed exactly: trailing bytes mean the
//! writer schema does not describe the bytes, and are an error rather than silently
//! ignored.
//!
//! # Example
//!
//! ```
//! use schemas::{Event, OrderCreated, OrderLine, order_total};
//! use uuid::Uuid;
//!
//! let lines = vec![OrderLine::new("SKU-1", 2, 1999), OrderLine::new("SKU-2", 1, 500)];
//! let event = OrderCreated {
//!     event_id: Uuid::from_u128(1),
//!     order_id: Uuid::from_u128(2),
//!     customer_id: "customer-42".into(),
//!     currency: "EUR".into(),
//!     total_minor: order_total(&lines).unwrap_or_default(),
//!     lines,
//!     created_at: 1_767_323_045_678,
//!     channel: Some("REST".into()),
//! };
//! event.validate()?;
//! assert_eq!(event.key(), "00000000-0000-0000-0000-000000000002");
//!
//! // Producer side: the datum; `eventbus` frames it with the registered schema's id.
//! let datum = event.to_avro()?;
//! // Consumer side: `eventbus` looks the writer schema up by that id.
//! let decoded = OrderCreated::from_avro(OrderCreated::schema(), &datum)?;
//! assert_eq!(decoded, event);
//!
//! // Invalid input: every violation, with its path.
//! let bad = OrderCreated { currency: "eur".into(), total_minor: 1, ..event };
//! let violations = bad.validate().unwrap_err();
//! assert_eq!(violations.fields().collect::<Vec<_>>(), ["currency", "total_minor"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use apache_avro::Schema;

/// The part of an [`Event`] impl that only binds the type to its schema history: the
/// newest schema and its text, and the Avro codec with that schema. Written once here so
/// the six event impls differ only in what really differs (topic, key, time, rules).
macro_rules! schema_binding {
    ($history:ident) => {
        fn schema() -> &'static Schema {
            $history.schema()
        }
        fn schema_text() -> &'static str {
            $history.newest_text()
        }
        fn to_avro(&self) -> Result<Vec<u8>, SchemaError> {
            codec::encode(self, Self::schema())
        }
        fn from_avro(writer: &Schema, datum: &[u8]) -> Result<Self, SchemaError> {
            codec::decode(writer, Self::schema(), datum)
        }
    };
}

mod codec;
mod currency;
mod order;
mod payment;
mod registry;
mod stock;
pub mod validation;

pub use order::{OrderChangeKind, OrderCreated, OrderLine, OrderUpdated};
pub use payment::{PaymentCompleted, PaymentFailed, reason_codes};
pub use registry::{SubjectHistory, registry_subjects};
pub use stock::{STOCK_UPDATED_ID_NAMESPACE, StockAdjusted, StockUpdated};
pub use validation::{
    MAX_LINES_PER_ORDER, order_total, validate_currency, validate_lines, validate_sku,
};

/// One violated rule of one field, for 400 / INVALID_ARGUMENT answers and DLQ headers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldViolation {
    /// Path of the field, e.g. `lines[2].quantity`.
    pub field: String,
    /// What is wrong, in words a client developer can act on.
    pub description: String,
}

impl FieldViolation {
    /// A violation of the field at `field` (a path such as `lines[2].quantity`).
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Every violated rule of an event or request, never just the first.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{} invalid field(s): {}", .0.len(), .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// Records that `field` breaks a rule, described by `description`.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the outcome of a check helper such as [`validate_sku`]: `Some(description)`
    /// becomes a violation of `field`, `None` (the rule holds) records nothing.
    pub fn check(&mut self, field: &str, outcome: Option<String>) {
        if let Some(description) = outcome {
            self.push(field, description);
        }
    }

    /// Like [`Violations::check`], but builds the field path (e.g. `lines[3].sku`) only
    /// when the rule is broken, which keeps validating valid events free of allocations
    /// for paths.
    pub fn check_with(&mut self, field: impl FnOnce() -> String, outcome: Option<String>) {
        if let Some(description) = outcome {
            self.push(field(), description);
        }
    }

    /// Whether no rule is broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of violations.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The paths of the violated fields, in the order they were found.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|v| v.field.as_str())
    }

    /// `Ok(())` when empty, else `Err(self)`: the tail of every `validate`.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// The one error type of the crate: turning events into and out of Avro, and reading ids
/// given as text. Every variant that has a cause keeps it as its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The Avro library refused the value or the bytes.
    #[error("avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
    /// The bytes decoded, but not into the shape of the Rust type (the datum is
    /// truncated, or bytes are left over after it).
    #[error("avro value does not match {type_name}: {message}")]
    Shape {
        /// The Rust type expected.
        type_name: &'static str,
        /// What did not match.
        message: String,
    },
    /// The decoded Avro value does not fit the Rust type.
    #[error("avro value does not match {type_name}: {source}")]
    Value {
        /// The Rust type expected.
        type_name: &'static str,
        /// The Avro library's explanation.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// An id given as text is not 36 characters long (the hyphenated 8-4-4-4-12 form).
    #[error("must be a UUID in the hyphenated form 8-4-4-4-12, got {text:?}")]
    IdForm {
        /// The text given.
        text: String,
    },
    /// An id given as text is not a UUID.
    #[error("must be a UUID: {source}")]
    IdSyntax {
        /// The UUID parser's explanation.
        #[source]
        source: uuid::Error,
    },
    /// The id is the nil UUID, always a forgotten assignment rather than a real id.
    #[error("must be a real UUID, not the nil UUID")]
    NilId,
}

/// An event of the pipeline: one Avro schema, one topic, one CloudEvents type.
pub trait Event: Sized + Send + Sync + 'static {
    /// The topic the event is published to, e.g. `order-service.order.created`.
    const TOPIC: &'static str;
    /// The CloudEvents `ce_type`, e.g. `order.created`.
    const TYPE: &'static str;

    /// The registry subject: `<topic>-value` (TopicNameStrategy).
    fn subject() -> String {
        format!("{}-value", Self::TOPIC)
    }
    /// The newest schema, parsed once.
    fn schema() -> &'static Schema;
    /// The newest schema's text as registered in the registry (compact JSON of the .avsc).
    fn schema_text() -> &'static str;
    /// The Kafka key: order id or SKU (see docs/design.md's topic table).
    fn key(&self) -> String;
    /// The event's own id (UUID), used as CloudEvents `ce_id`.
    fn event_id(&self) -> String;
    /// The event time in UTC milliseconds, used as CloudEvents `ce_time`.
    fn time_ms(&self) -> i64;
    /// Checks the domain rules (beyond the schema's types): every violation is listed.
    fn validate(&self) -> Result<(), Violations>;
    /// Encodes as an Avro datum (no framing) with [`Event::schema`].
    fn to_avro(&self) -> Result<Vec<u8>, SchemaError>;
    /// Decodes an Avro datum written with `writer` (any earlier or equal version),
    /// resolving it into the newest schema.
    fn from_avro(writer: &Schema, datum: &[u8]) -> Result<Self, SchemaError>;
}
