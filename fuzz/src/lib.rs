//! What the fuzz targets check, one function per target, so that the targets themselves
//! are one line each and a crash input can be replayed with `cargo +nightly fuzz run
//! <target> <file>` or turned into a regression test of the owning crate.
//!
//! Every function takes untrusted bytes, runs them through the same code a service runs
//! on a record or request, and asserts the properties that must hold for *any* input:
//! no panic, and for inputs that are accepted, that what is accepted is consistent
//! (a decoded event re-encodes to the same event; a request the API accepts becomes an
//! event the consumers accept, which is the promise of `ingress::validation`).
//!
//! Input layouts (the first byte selects the variant, so one corpus covers every type):
//! * [`event_decode`]: `[writer index, reader index, Confluent-framed value…]`, the
//!   writer among every version of every schema ([`writers`]), the reader among the six
//!   event types ([`readers`]); a writer of another topic is "a valid record of the wrong schema".
//! * [`rest_body`]: `[route, body…]`: 0 `POST /v1/orders`, 1 `PATCH /v1/orders/{id}`
//!   (body `<path id>\n<json>`), 2 `POST /v1/inventory/adjustments`.
//! * [`headers`]: the value of `Idempotency-Key` / `traceparent`.
//! * [`grpc_message`]: `[message index, protobuf bytes…]`.

use std::fmt::Debug;
use std::sync::LazyLock;

use apache_avro::Schema;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, Request, header::CONTENT_TYPE};
use axum::response::IntoResponse;
use eventbus::codec::{frame, unframe};
use eventbus::headers::TraceParent;
use ingress::rest::dto::{AdjustmentBody, ChangeOrderBody, CreateOrderBody};
use ingress::rest::extract::{ApiJson, IDEMPOTENCY_KEY, IdempotencyKeyHeader};
use ingress::validation::{
    IdempotencyKey, MAX_IDEMPOTENCY_KEY_CHARS, validate_adjustment, validate_change, validate_order,
};
use schemas::{
    Event, MAX_LINES_PER_ORDER, OrderChangeKind, OrderCreated, OrderUpdated, PaymentCompleted,
    PaymentFailed, StockAdjusted, StockUpdated, order_total,
};
use uuid::Uuid;

/// Every version of every subject's schema, parsed: the writers a record may name.
pub fn writers() -> &'static [(&'static str, Schema)] {
    static WRITERS: LazyLock<Vec<(&'static str, Schema)>> = LazyLock::new(|| {
        schemas::registry_subjects()
            .into_iter()
            .flat_map(|subject| {
                subject.versions.into_iter().map(move |text| {
                    let schema = Schema::parse_str(text).expect("embedded schemas parse");
                    (subject.topic, schema)
                })
            })
            .collect()
    });
    &WRITERS
}

/// The event topics in the reader index order of [`event_decode`]: the order of
/// [`schemas::registry_subjects`], which the seed writer (`benches`' `fuzz-seeds`) uses too.
pub fn readers() -> &'static [&'static str] {
    static READERS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        schemas::registry_subjects()
            .into_iter()
            .map(|s| s.topic)
            .collect()
    });
    &READERS
}

/// Confluent framing, then the datum read with the chosen writer into the chosen event
/// type, as `eventbus::codec::decode` does after its registry lookup.
pub fn event_decode(data: &[u8]) {
    let [writer, reader, value @ ..] = data else {
        return;
    };
    let Ok((id, datum)) = unframe(value) else {
        return;
    };
    assert_eq!(frame(id, datum), value, "framing round trip");
    let (_, writer) = &writers()[usize::from(*writer) % writers().len()];
    match readers()[usize::from(*reader) % readers().len()] {
        OrderCreated::TOPIC => decoded::<OrderCreated>(writer, datum),
        OrderUpdated::TOPIC => decoded::<OrderUpdated>(writer, datum),
        PaymentCompleted::TOPIC => decoded::<PaymentCompleted>(writer, datum),
        PaymentFailed::TOPIC => decoded::<PaymentFailed>(writer, datum),
        StockAdjusted::TOPIC => decoded::<StockAdjusted>(writer, datum),
        StockUpdated::TOPIC => decoded::<StockUpdated>(writer, datum),
        other => panic!("no event type for topic {other}"),
    }
}

/// A datum that decodes is an event the newest schema can express: it re-encodes, and
/// the re-encoded datum decodes to the same event. The domain rules may refuse it (that
/// is the DLQ's job), but must not panic.
fn decoded<E: Event + PartialEq + Debug>(writer: &Schema, datum: &[u8]) {
    let Ok(event) = E::from_avro(writer, datum) else {
        return;
    };
    let _ = event.validate();
    let _ = (event.key(), event.event_id(), event.time_ms());
    let encoded = event
        .to_avro()
        .unwrap_or_else(|e| panic!("a decoded {} does not re-encode: {e}", E::TYPE));
    let again = E::from_avro(E::schema(), &encoded)
        .unwrap_or_else(|e| panic!("a re-encoded {} does not decode: {e}", E::TYPE));
    assert_eq!(again, event, "{} round trip", E::TYPE);
}

/// The order id used when a `PATCH` input has no path part.
const ORDER_ID: &str = "0b6f1d7e-5d9c-4c8e-9a51-0d6f3f1c2a7b";

/// A REST body through the route's extractor and the shared validation. A request the
/// API accepts must become an event that passes the event's own rules and its schema.
pub fn rest_body(data: &[u8]) {
    let Some((route, body)) = data.split_first() else {
        return;
    };
    match route % 3 {
        0 => {
            let Some(body) = extract::<CreateOrderBody>(body) else {
                return;
            };
            let Ok(order) = validate_order(body.into()) else {
                return;
            };
            assert!((1..=MAX_LINES_PER_ORDER).contains(&order.lines.len()));
            assert_eq!(order_total(&order.lines), Some(order.total_minor));
            let order_id = Uuid::from_u128(7);
            accepted(&OrderCreated {
                event_id: Uuid::from_u128(8),
                order_id,
                customer_id: order.customer_id,
                currency: order.currency,
                total_minor: order.total_minor,
                lines: order.lines,
                created_at: 1_767_323_045_678,
                channel: Some("REST".into()),
            });
        }
        1 => {
            let (path, json) = match body.iter().position(|b| *b == b'\n') {
                Some(at) => (
                    String::from_utf8_lossy(&body[..at]).into_owned(),
                    &body[at + 1..],
                ),
                None => (ORDER_ID.to_owned(), body),
            };
            let Some(body) = extract::<ChangeOrderBody>(json) else {
                return;
            };
            let Ok(change) = validate_change(body.into_draft(path)) else {
                return;
            };
            let currency = change.currency.unwrap_or_else(|| "EUR".to_owned());
            let event = match change.kind {
                ingress::validation::ChangeKind::Lines { lines, total_minor } => OrderUpdated {
                    event_id: Uuid::from_u128(9),
                    order_id: change.order_id,
                    revision: 1,
                    kind: OrderChangeKind::LinesChanged,
                    lines,
                    currency,
                    total_minor,
                    updated_at: 1_767_323_045_678,
                },
                ingress::validation::ChangeKind::Cancel => OrderUpdated::cancelled(
                    Uuid::from_u128(9),
                    change.order_id,
                    1,
                    currency,
                    1_767_323_045_678,
                ),
            };
            accepted(&event);
        }
        _ => {
            let Some(body) = extract::<AdjustmentBody>(body) else {
                return;
            };
            let Ok(adjustment) = validate_adjustment(body.into()) else {
                return;
            };
            assert_ne!(adjustment.delta, 0);
            accepted(&StockAdjusted {
                event_id: Uuid::from_u128(10),
                sku: adjustment.sku,
                delta: adjustment.delta,
                reason: adjustment.reason,
                adjusted_at: 1_767_323_045_678,
            });
        }
    }
}

/// The body through [`ApiJson`] as the router runs it; a refusal is rendered as the
/// problem document the client would get.
fn extract<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    let request = Request::builder()
        .method("POST")
        .uri("/v1/orders")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a fixed request builds");
    match futures::executor::block_on(ApiJson::<T>::from_request(request, &())) {
        Ok(ApiJson(value)) => Some(value),
        Err(problem) => {
            let response = problem.into_response();
            assert!(response.status().is_client_error(), "{}", response.status());
            None
        }
    }
}

/// What the API accepted, the consumers accept.
fn accepted<E: Event + Debug>(event: &E) {
    if let Err(violations) = event.validate() {
        panic!(
            "the API accepted what the {} rules refuse: {violations}\n{event:?}",
            E::TYPE
        );
    }
    if let Err(e) = event.to_avro() {
        panic!(
            "the API accepted a {} its schema cannot hold: {e}\n{event:?}",
            E::TYPE
        );
    }
}

/// `Idempotency-Key` (the parser and the REST header extractor) and `traceparent`.
pub fn headers(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = IdempotencyKey::parse(text) {
            assert_eq!(key.as_str(), text);
            assert!((1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&text.len()));
            assert!(text.bytes().all(|b| (b'!'..=b'~').contains(&b)));
        }
        if let Some(parent) = TraceParent::parse(text) {
            assert_ne!(parent.trace_id, [0; 16]);
            assert_ne!(parent.span_id, [0; 8]);
            assert_eq!(TraceParent::parse(&parent.to_string()), Some(parent));
            assert_eq!(parent.child().trace_id, parent.trace_id);
        }
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let (mut parts, ()) = Request::builder()
        .uri("/v1/orders")
        .header(IDEMPOTENCY_KEY, value)
        .body(())
        .expect("a valid header value builds")
        .into_parts();
    match futures::executor::block_on(IdempotencyKeyHeader::from_request_parts(&mut parts, &())) {
        Ok(IdempotencyKeyHeader(Some(key))) => {
            assert!(IdempotencyKey::parse(key.as_str()).is_ok());
        }
        Ok(IdempotencyKeyHeader(None)) => panic!("a present header read as absent"),
        Err(problem) => assert!(problem.into_response().status().is_client_error()),
    }
}

/// Every request message of both gRPC APIs: a message that decodes re-encodes to one
/// that decodes to the same message.
pub fn grpc_message(data: &[u8]) {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    match which % 9 {
        0 => message::<proto::CreateOrderRequest>(bytes),
        1 => message::<proto::UpdateOrderRequest>(bytes),
        2 => message::<proto::CancelOrderRequest>(bytes),
        3 => message::<proto::GetOrderRequest>(bytes),
        4 => message::<proto::AdjustStockRequest>(bytes),
        5 => message::<proto::GetInventoryRequest>(bytes),
        6 => message::<proto::ListInventoryRequest>(bytes),
        7 => message::<proto::GetOrderViewRequest>(bytes),
        _ => message::<proto::WatchChangesRequest>(bytes),
    }
}

fn message<M: prost::Message + Default + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(decoded) = M::decode(bytes) else {
        return;
    };
    let again = M::decode(decoded.encode_to_vec().as_slice()).expect("re-encoded decodes");
    assert_eq!(again, decoded);
}
