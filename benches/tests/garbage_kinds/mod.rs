//! The seven kinds of bad input of `tests/garbage.rs`, for any of the pipeline's five
//! input topics (payment's one input, `order.created`, is the first of them).
//!
//! Each garbage record carries the header `x-garbage: <kind>` (a dead letter keeps the
//! original's headers, so the test can tell which record a dead letter is) and, except
//! the missing-key kind, the key `garbage-<kind>-<topic index>`.
//!
//! # Oversized
//!
//! The topics keep Kafka's default `max.message.bytes` (1,048,588 bytes: deploy/topics.toml
//! sets none, and neither does the brokers' config), so the largest record anyone can write
//! is a value of about 1 MiB. That is what [`Kind::Oversized`] writes: a value of
//! [`OVERSIZED_VALUE`] bytes, a well-formed event of the topic's own schema whose one free
//! text field (customer id, SKU, currency, payment reason, adjustment reason) is random text
//! of that length, so it decodes and then breaks a domain limit (at most 500 characters
//! anywhere; a valid event is under ~10 KB). Its dead-letter copy, the same value plus
//! the `dlq.*` headers, is then larger than the input record: the case a consumer's DLQ
//! producer must be able to write.

use eventbus::codec::frame;
use eventbus::dlq::ErrorClass;
use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use schemas::{
    Event, OrderChangeKind, OrderCreated, OrderLine, OrderUpdated, PaymentCompleted, PaymentFailed,
    StockAdjusted,
};
use uuid::Uuid;

/// The value size of an oversized record: the topics' default `max.message.bytes`
/// (1,048,588) less the record batch's own overhead (61 bytes of batch header, ~50 of
/// record framing, the key) and some slack: the broker accepts it, and nothing larger
/// than a few bytes more would be.
pub const OVERSIZED_VALUE: usize = 1_048_300;

/// The input topics in the pipeline's order (`pipeline::input::INPUT_TOPICS`).
pub const TOPICS: [&str; 5] = ["created", "updated", "completed", "failed", "adjusted"];

/// A kind of bad input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Random bytes (first byte not the Confluent magic 0x00).
    RandomBytes,
    /// A well-formed event of the topic's schema whose first byte is 0x01, not 0x00.
    WrongMagic,
    /// A well-formed datum framed with a schema id the registry does not have.
    UnknownSchema,
    /// A valid event of another input's schema, framed with that schema's id.
    WrongSchema,
    /// The topic's own schema, well-formed Avro, breaking a domain rule.
    DomainInvalid,
    /// About 1 MiB: the largest value the topic accepts (module docs).
    Oversized,
    /// A valid event of the topic's schema without a key.
    MissingKey,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::RandomBytes,
        Kind::WrongMagic,
        Kind::UnknownSchema,
        Kind::WrongSchema,
        Kind::DomainInvalid,
        Kind::Oversized,
        Kind::MissingKey,
    ];

    /// The `x-garbage` header value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::RandomBytes => "random-bytes",
            Kind::WrongMagic => "wrong-magic",
            Kind::UnknownSchema => "unknown-schema-id",
            Kind::WrongSchema => "wrong-schema",
            Kind::DomainInvalid => "domain-invalid",
            Kind::Oversized => "oversized",
            Kind::MissingKey => "missing-key",
        }
    }

    /// The DLQ error class the record must get.
    pub fn class(self) -> ErrorClass {
        match self {
            Kind::RandomBytes | Kind::WrongMagic => ErrorClass::Undecodable,
            Kind::UnknownSchema => ErrorClass::UnknownSchema,
            // The writer schema is known; resolving it into the reader's record type fails.
            Kind::WrongSchema => ErrorClass::Undecodable,
            Kind::DomainInvalid | Kind::Oversized | Kind::MissingKey => ErrorClass::SchemaInvalid,
        }
    }
}

/// One record to write.
#[derive(Clone, Debug)]
pub struct Garbage {
    /// Input topic index (see [`TOPICS`]).
    pub topic: usize,
    /// What it is.
    pub kind: Kind,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
}

fn now_ms() -> i64 {
    eventbus::headers::now_ms()
}

/// Random printable text (incompressible enough that its size on the wire stays close).
fn text(rng: &mut StdRng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A valid event of input `topic`, about nothing the test reads (fresh ids, a SKU of
/// its own), with `filler` as its one free text field when given (breaking the rules).
fn event(topic: usize, filler: Option<String>, tweak_rules: bool) -> (String, Vec<u8>) {
    let sku = "GARBAGE-SKU".to_owned();
    let currency = |bad: bool| {
        if bad {
            "xx".to_owned()
        } else {
            "EUR".to_owned()
        }
    };
    let datum = |r: Result<Vec<u8>, schemas::SchemaError>| r.expect("encodes as Avro");
    match topic {
        0 => {
            let lines = vec![OrderLine::new(sku, 1, 100)];
            let e = OrderCreated {
                event_id: Uuid::new_v4(),
                order_id: Uuid::new_v4(),
                customer_id: filler.unwrap_or_else(|| "garbage-customer".into()),
                currency: currency(tweak_rules),
                total_minor: 100,
                lines,
                created_at: now_ms(),
                channel: None,
            };
            (e.key(), datum(e.to_avro()))
        }
        1 => {
            let e = OrderUpdated {
                event_id: Uuid::new_v4(),
                order_id: Uuid::new_v4(),
                revision: 1,
                kind: OrderChangeKind::LinesChanged,
                lines: vec![OrderLine::new(filler.unwrap_or(sku), 1, 100)],
                total_minor: 100,
                currency: currency(tweak_rules),
                updated_at: now_ms(),
            };
            (e.key(), datum(e.to_avro()))
        }
        2 => {
            let e = PaymentCompleted {
                event_id: Uuid::new_v4(),
                order_id: Uuid::new_v4(),
                payment_id: Uuid::new_v4(),
                amount_minor: 100,
                currency: filler.unwrap_or_else(|| currency(tweak_rules)),
                completed_at: now_ms(),
            };
            (e.key(), datum(e.to_avro()))
        }
        3 => {
            let e = PaymentFailed {
                event_id: Uuid::new_v4(),
                order_id: Uuid::new_v4(),
                amount_minor: 100,
                currency: currency(tweak_rules),
                reason_code: "CUSTOMER_DECLINED".into(),
                reason: filler.unwrap_or_else(|| "declined".into()),
                failed_at: now_ms(),
            };
            (e.key(), datum(e.to_avro()))
        }
        _ => {
            let e = StockAdjusted {
                event_id: Uuid::new_v4(),
                sku,
                delta: if tweak_rules { 0 } else { 1 },
                reason: filler.unwrap_or_else(|| "restock".into()),
                adjusted_at: now_ms(),
            };
            (e.key(), datum(e.to_avro()))
        }
    }
}

/// The record of `kind` for input `topic`, framed with `ids` (the inputs' schema ids).
pub fn garbage(rng: &mut StdRng, topic: usize, kind: Kind, ids: &[u32; 5]) -> Garbage {
    let key = Some(format!("garbage-{}-{topic}", kind.name()).into_bytes());
    let own = |tweak: bool| frame(ids[topic], &event(topic, None, tweak).1);
    let value = match kind {
        Kind::RandomBytes => {
            let mut bytes = vec![0u8; 64];
            rng.fill_bytes(&mut bytes);
            bytes[0] |= 0x80;
            bytes
        }
        Kind::WrongMagic => {
            let mut bytes = own(false);
            bytes[0] = 0x01;
            bytes
        }
        Kind::UnknownSchema => frame(0x7fff_0000 + topic as u32, &event(topic, None, false).1),
        Kind::WrongSchema => {
            // Another input's event: created <- completed, updated <- failed,
            // completed <- adjusted, failed <- created, adjusted <- updated.
            let other = (topic + 2) % 5;
            frame(ids[other], &event(other, None, false).1)
        }
        Kind::DomainInvalid => own(true),
        Kind::Oversized => {
            // Size the filler so that the framed value is exactly OVERSIZED_VALUE bytes
            // (the Avro length prefix of the empty probe is 1 byte, of ~1 MiB 3 bytes).
            let probe = frame(ids[topic], &event(topic, Some(String::new()), false).1).len();
            let filler = text(rng, OVERSIZED_VALUE - probe - 2);
            let value = frame(ids[topic], &event(topic, Some(filler), false).1);
            assert_eq!(value.len(), OVERSIZED_VALUE, "oversized value size");
            value
        }
        Kind::MissingKey => {
            return Garbage {
                topic,
                kind,
                key: None,
                value: own(false),
            };
        }
    };
    Garbage {
        topic,
        kind,
        key,
        value,
    }
}

/// Every kind for every topic in `topics`.
pub fn all(rng: &mut StdRng, topics: &[usize], ids: &[u32; 5]) -> Vec<Garbage> {
    topics
        .iter()
        .flat_map(|&t| Kind::ALL.map(|k| (t, k)))
        .map(|(t, k)| garbage(rng, t, k, ids))
        .collect()
}
