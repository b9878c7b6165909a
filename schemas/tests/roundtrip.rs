//! Encoding and decoding: every event survives a round trip, older data is read into the
//! newest type, and bytes that do not match the writer schema are refused.

mod common;

use apache_avro::{Schema, types::Value, writer::datum::GenericDatumWriter};
use schemas::{Event, OrderCreated, SchemaError, registry_subjects};

fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: &E) {
    let bytes = event.to_avro().unwrap();
    let back = E::from_avro(E::schema(), &bytes).unwrap();
    assert_eq!(&back, event, "{}", E::TYPE);
}

#[test]
fn order_created_round_trips() {
    round_trip(&common::order_created());
    round_trip(&OrderCreated {
        channel: None,
        ..common::order_created()
    });
}

#[test]
fn order_updated_round_trips() {
    round_trip(&common::order_updated());
    round_trip(&common::order_cancelled());
}

#[test]
fn payment_completed_round_trips() {
    round_trip(&common::payment_completed());
}

#[test]
fn payment_failed_round_trips() {
    round_trip(&common::payment_failed());
}

#[test]
fn stock_adjusted_round_trips() {
    round_trip(&common::stock_adjusted());
}

#[test]
fn stock_updated_round_trips() {
    round_trip(&common::stock_updated());
}

/// The shape of order.created v1, as an older producer would have had it.
#[derive(serde::Serialize)]
struct OrderCreatedV1 {
    event_id: String,
    order_id: String,
    customer_id: String,
    currency: String,
    lines: Vec<schemas::OrderLine>,
    total_minor: i64,
    created_at: i64,
}

fn order_created_v1_schema() -> Schema {
    let history = registry_subjects()
        .into_iter()
        .find(|s| s.topic == OrderCreated::TOPIC)
        .unwrap();
    Schema::parse_str(history.versions[0]).unwrap()
}

#[test]
fn order_created_v1_bytes_decode_into_the_v2_type() {
    let v1 = order_created_v1_schema();
    let expected = OrderCreated {
        channel: None,
        ..common::order_created()
    };
    let old = OrderCreatedV1 {
        event_id: expected.event_id.to_string(),
        order_id: expected.order_id.to_string(),
        customer_id: expected.customer_id.clone(),
        currency: expected.currency.clone(),
        lines: expected.lines.clone(),
        total_minor: expected.total_minor,
        created_at: expected.created_at,
    };
    let bytes = GenericDatumWriter::builder(&v1)
        .build()
        .unwrap()
        .write_value_to_vec(apache_avro::to_value(&old).unwrap())
        .unwrap();

    let decoded = OrderCreated::from_avro(&v1, &bytes).unwrap();
    assert_eq!(decoded, expected);
    assert!(decoded.validate().is_ok());

    // And the v1 bytes are not what v2 writes: the version really differs on the wire.
    let v2_bytes = expected.to_avro().unwrap();
    assert_ne!(v2_bytes, bytes);
    // Reading v2 bytes as if they were v1 leaves the channel's union index unread.
    assert!(matches!(
        OrderCreated::from_avro(&v1, &v2_bytes),
        Err(SchemaError::Shape { .. })
    ));
}

#[test]
fn ids_are_lowercase_hyphenated_strings_on_the_wire() {
    let event = common::payment_completed();
    let bytes = event.to_avro().unwrap();
    // Read back with a schema that declares plain strings (what a client without the
    // logical type sees): the text must be the canonical form.
    let plain = PaymentCompletedPlain::schema();
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&plain)
        .build()
        .unwrap()
        .read_value(&mut bytes.as_slice())
        .unwrap();
    let Value::Record(fields) = value else {
        panic!("not a record: {value:?}")
    };
    assert_eq!(
        fields[1],
        (
            "order_id".to_owned(),
            Value::String("01910000-0000-7000-8000-000000000002".to_owned())
        )
    );
    assert_eq!(event.key(), "01910000-0000-7000-8000-000000000002");
    assert_eq!(event.event_id(), event.event_id.hyphenated().to_string());
}

/// payment.completed with its ids declared as plain strings.
struct PaymentCompletedPlain;
impl PaymentCompletedPlain {
    fn schema() -> Schema {
        let text = schemas::PaymentCompleted::schema_text()
            .replace(r#"{"logicalType":"uuid","type":"string"}"#, r#""string""#);
        assert!(!text.contains("uuid"));
        Schema::parse_str(&text).unwrap()
    }
}

#[test]
fn the_newest_schema_is_what_is_written() {
    let event = common::order_created();
    let bytes = event.to_avro().unwrap();
    let value = apache_avro::reader::datum::GenericDatumReader::builder(OrderCreated::schema())
        .build()
        .unwrap()
        .read_value(&mut bytes.as_slice())
        .unwrap();
    let Value::Record(fields) = value else {
        panic!("not a record")
    };
    let names: Vec<_> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "event_id",
            "order_id",
            "customer_id",
            "currency",
            "lines",
            "total_minor",
            "created_at",
            "channel"
        ]
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = common::stock_adjusted().to_avro().unwrap();
    bytes.push(0);
    let error =
        schemas::StockAdjusted::from_avro(schemas::StockAdjusted::schema(), &bytes).unwrap_err();
    assert!(
        matches!(&error, SchemaError::Shape { message, .. } if message.contains("left over")),
        "{error}"
    );
}

#[test]
fn truncated_and_foreign_bytes_are_errors_not_panics() {
    let bytes = common::order_created().to_avro().unwrap();
    // Every cut is refused, including those apache-avro alone would accept: cut before
    // the trailing optional channel (a missing union index reads as null) or inside its
    // text (a short string reads as null).
    for end in 0..bytes.len() {
        let error = OrderCreated::from_avro(OrderCreated::schema(), &bytes[..end]).unwrap_err();
        assert!(
            matches!(&error, SchemaError::Shape { message, .. } if message.contains("ends early")),
            "{end} of {} bytes: {error}",
            bytes.len()
        );
    }
    // stock.updated bytes read as order.created: refused.
    let other = common::stock_updated().to_avro().unwrap();
    assert!(OrderCreated::from_avro(OrderCreated::schema(), &other).is_err());
    // A writer schema that cannot be resolved into the reader's: refused.
    assert!(OrderCreated::from_avro(schemas::StockUpdated::schema(), &other).is_err());
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..2_000 {
        let len = rng.random_range(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = OrderCreated::from_avro(OrderCreated::schema(), &bytes);
        let _ = schemas::OrderUpdated::from_avro(schemas::OrderUpdated::schema(), &bytes);
        let _ = schemas::StockUpdated::from_avro(schemas::StockUpdated::schema(), &bytes);
    }
}

#[test]
fn every_change_kind_is_a_symbol_of_the_schema() {
    use schemas::{OrderChangeKind, OrderUpdated};
    let Schema::Record(record) = OrderUpdated::schema() else {
        panic!("not a record")
    };
    let kind = &record.fields[record.lookup["kind"]].schema;
    let Schema::Enum(kind) = kind else {
        panic!("kind is not an enum: {kind:?}")
    };
    assert_eq!(kind.symbols, ["LINES_CHANGED", "CANCELLED"]);
    for variant in [OrderChangeKind::LinesChanged, OrderChangeKind::Cancelled] {
        let Value::String(symbol) = apache_avro::to_value(variant).unwrap() else {
            panic!("a unit variant is not a string")
        };
        assert!(kind.symbols.contains(&symbol), "{symbol}");
    }
}

#[test]
fn a_value_the_schema_cannot_hold_is_an_encoding_error() {
    // total_minor is an Avro long; a record holding text there is refused by the writer
    // rather than written as bytes that no reader could decode.
    let schema = OrderCreated::schema();
    let mut value = apache_avro::to_value(common::order_created()).unwrap();
    let Value::Record(fields) = &mut value else {
        panic!("not a record")
    };
    assert_eq!(fields[5].0, "total_minor");
    fields[5].1 = Value::String("4498".to_owned());
    let result = GenericDatumWriter::builder(schema)
        .build()
        .unwrap()
        .write_value_to_vec(value);
    assert!(result.is_err());
}
