//! Writes the seed corpus of every fuzz target (`fuzz/`, run by `make fuzz`) into
//! `<dir>/<target>/` (default `fuzz/corpus`): valid events of every type framed as a producer frames them, the
//! request bodies of the ingress tests (valid and each kind of invalid one), header
//! values and protobuf requests. Generated from the real types, so the seeds follow the
//! schemas when they evolve; `make fuzz` runs it before the fuzzers.

use std::path::{Path, PathBuf};

use eventbus::codec::frame;
use prost::Message;
use schemas::{
    Event, OrderCreated, OrderLine, OrderUpdated, PaymentCompleted, PaymentFailed, StockAdjusted,
    StockUpdated, order_total,
};
use uuid::Uuid;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let folder = dir.join(target);
    std::fs::create_dir_all(&folder).expect("corpus folder");
    std::fs::write(folder.join(name), bytes).expect("seed file");
}

/// `[writer, reader, framed value]` for the newest writer of the event's topic.
fn event_seed<E: Event>(dir: &Path, name: &str, event: &E) {
    let subjects = schemas::registry_subjects();
    let writer = subjects
        .iter()
        .flat_map(|s| s.versions.iter().map(|_| s.topic))
        .collect::<Vec<_>>()
        .iter()
        .rposition(|topic| *topic == E::TOPIC)
        .expect("every topic has a writer");
    let reader = subjects
        .iter()
        .position(|s| s.topic == E::TOPIC)
        .expect("every topic has a subject");
    let datum = event.to_avro().expect("seed events encode");
    let mut bytes = vec![writer as u8, reader as u8];
    bytes.extend(frame(1, &datum));
    write(dir, "event_decode", name, &bytes);
}

fn events(dir: &Path) {
    let lines = vec![
        OrderLine::new("SKU-1", 2, 1999),
        OrderLine::new("SKU-2", 1, 500),
    ];
    let created = OrderCreated {
        event_id: Uuid::from_u128(1),
        order_id: Uuid::from_u128(2),
        customer_id: "customer-42".into(),
        currency: "EUR".into(),
        total_minor: order_total(&lines).unwrap_or_default(),
        lines: lines.clone(),
        created_at: 1_767_323_045_678,
        channel: Some("REST".into()),
    };
    event_seed(dir, "order-created", &created);
    event_seed(
        dir,
        "order-created-no-channel",
        &OrderCreated {
            channel: None,
            ..created.clone()
        },
    );
    // Breaks the domain rules (a DLQ case), still fits the schema.
    event_seed(
        dir,
        "order-created-invalid",
        &OrderCreated {
            currency: "eur".into(),
            total_minor: 1,
            lines: vec![OrderLine::new("x", 0, 0)],
            ..created.clone()
        },
    );
    event_seed(
        dir,
        "order-updated",
        &OrderUpdated {
            event_id: Uuid::from_u128(3),
            order_id: Uuid::from_u128(2),
            revision: 1,
            kind: schemas::OrderChangeKind::LinesChanged,
            lines: lines.clone(),
            currency: "EUR".into(),
            total_minor: created.total_minor,
            updated_at: 1_767_323_045_700,
        },
    );
    event_seed(
        dir,
        "order-cancelled",
        &OrderUpdated::cancelled(
            Uuid::from_u128(4),
            Uuid::from_u128(2),
            2,
            "EUR",
            1_767_323_045_800,
        ),
    );
    event_seed(
        dir,
        "payment-completed",
        &PaymentCompleted {
            event_id: Uuid::from_u128(5),
            order_id: Uuid::from_u128(2),
            payment_id: Uuid::from_u128(6),
            amount_minor: created.total_minor,
            currency: "EUR".into(),
            completed_at: 1_767_323_045_900,
        },
    );
    event_seed(
        dir,
        "payment-failed",
        &PaymentFailed {
            event_id: Uuid::from_u128(7),
            order_id: Uuid::from_u128(2),
            amount_minor: created.total_minor,
            currency: "EUR".into(),
            reason_code: schemas::reason_codes::CUSTOMER_DECLINED.into(),
            reason: "declined".into(),
            failed_at: 1_767_323_045_900,
        },
    );
    event_seed(
        dir,
        "stock-adjusted",
        &StockAdjusted {
            event_id: Uuid::from_u128(8),
            sku: "SKU-1".into(),
            delta: 100,
            reason: "restock".into(),
            adjusted_at: 1_767_323_045_000,
        },
    );
    event_seed(
        dir,
        "stock-updated",
        &StockUpdated {
            sku: "SKU-1".into(),
            on_hand: 100,
            reserved: 2,
            available: 98,
            version: 3,
            updated_at: 1_767_323_046_000,
        },
    );
    // Framing faults: wrong magic byte, short header, empty.
    write(
        dir,
        "event_decode",
        "wrong-magic",
        &[0, 0, 1, 0, 0, 0, 1, 2],
    );
    write(dir, "event_decode", "short-header", &[0, 0, 0, 0, 1]);
}

fn rest(dir: &Path) {
    let bodies: [(&str, u8, &str); 14] = [
        (
            "create",
            0,
            r#"{"customer_id":"c-1","currency":"EUR","lines":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999},{"sku":"SKU-2","quantity":1,"unit_price_minor":500}]}"#,
        ),
        ("create-empty", 0, "{}"),
        (
            "create-nulls",
            0,
            r#"{"customer_id":null,"currency":null,"lines":null}"#,
        ),
        (
            "create-bad-fields",
            0,
            r#"{"currency":"eur","lines":[{"sku":"x","quantity":0,"unit_price_minor":0}]}"#,
        ),
        (
            "create-unknown-field",
            0,
            r#"{"customer_id":"c","currency":"EUR","lines":[{"sku":"SKU-1","quantity":1,"unit_price_minor":1}],"total_minor":1}"#,
        ),
        (
            "create-wrong-type",
            0,
            r#"{"customer_id":"c","currency":"EUR","lines":[{"sku":"SKU-1","quantity":"two","unit_price_minor":1}]}"#,
        ),
        (
            "create-huge",
            0,
            r#"{"customer_id":"c","currency":"JPY","lines":[{"sku":"SKU-1","quantity":10000,"unit_price_minor":100000000}]}"#,
        ),
        ("create-array", 0, "[1, 2]"),
        ("create-trailing", 0, r#"{"customer_id":"c"} x"#),
        (
            "change-lines",
            1,
            r#"{"lines":[{"sku":"SKU-1","quantity":1,"unit_price_minor":1999}],"currency":"EUR"}"#,
        ),
        ("change-cancel", 1, r#"{"status":"CANCELLED"}"#),
        (
            "change-path",
            1,
            "not-a-uuid\n{\"status\":\"CANCELLED\",\"lines\":[]}",
        ),
        (
            "adjust",
            2,
            r#"{"sku":"SKU-1","delta":-5,"reason":"damaged"}"#,
        ),
        ("adjust-zero", 2, r#"{"sku":"SKU-1","delta":0,"reason":""}"#),
    ];
    for (name, route, body) in bodies {
        let mut bytes = vec![route];
        bytes.extend_from_slice(body.as_bytes());
        write(dir, "rest_bodies", name, &bytes);
    }
}

fn headers(dir: &Path) {
    let values: [(&str, &str); 6] = [
        ("key-uuid", "0b6f1d7e-5d9c-4c8e-9a51-0d6f3f1c2a7b"),
        ("key-quoted", "\"order-17\""),
        ("key-space", "a b"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "traceparent-zero",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        (
            "traceparent-upper",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        ),
    ];
    for (name, value) in values {
        write(dir, "headers", name, value.as_bytes());
    }
}

fn grpc(dir: &Path) {
    let line = proto::OrderLine {
        sku: "SKU-1".into(),
        quantity: 2,
        unit_price_minor: 1999,
    };
    let messages: [(&str, u8, Vec<u8>); 5] = [
        (
            "create",
            0,
            proto::CreateOrderRequest {
                request_id: "req-1".into(),
                customer_id: "c-1".into(),
                currency: "EUR".into(),
                lines: vec![line.clone()],
            }
            .encode_to_vec(),
        ),
        (
            "cancel",
            2,
            proto::CancelOrderRequest {
                order_id: "0b6f1d7e-5d9c-4c8e-9a51-0d6f3f1c2a7b".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "adjust",
            4,
            proto::AdjustStockRequest {
                sku: "SKU-1".into(),
                delta: -3,
                reason: "damaged".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "list",
            6,
            proto::ListInventoryRequest::default().encode_to_vec(),
        ),
        ("truncated", 0, vec![0x0a, 0x10, b'r']),
    ];
    for (name, which, bytes) in messages {
        let mut seed = vec![which];
        seed.extend(bytes);
        write(dir, "grpc_messages", name, &seed);
    }
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    events(&dir);
    rest(&dir);
    headers(&dir);
    grpc(&dir);
    println!("seed corpus written to {}", dir.display());
}
