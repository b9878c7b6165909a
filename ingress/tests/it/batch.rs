//! `CreateOrders`: one stream, one reply per request, each order on Kafka before its
//! reply, refusals as replies with the unary call's code and details.

use std::collections::{BTreeMap, BTreeSet};

use ingress::grpc::batch::WINDOW;
use ingress::proto::create_orders_reply::Result as Outcome;
use ingress::proto::{CreateOrderRequest, CreateOrdersReply, OrderLine};
use schemas::OrderCreated;
use tonic::Code;

use crate::common::{TestApp, TestEnv};

fn request(request_id: &str, customer: &str, quantity: i64) -> CreateOrderRequest {
    CreateOrderRequest {
        request_id: request_id.to_owned(),
        customer_id: customer.to_owned(),
        currency: "EUR".to_owned(),
        lines: vec![OrderLine {
            sku: "SKU-1".to_owned(),
            quantity,
            unit_price_minor: 100,
        }],
    }
}

/// Sends `requests` as one CreateOrders call and returns the replies by index.
async fn call(
    app: &TestApp,
    requests: Vec<CreateOrderRequest>,
) -> BTreeMap<u64, CreateOrdersReply> {
    let sent = requests.len();
    let mut replies = app
        .orders()
        .await
        .create_orders(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut by_index = BTreeMap::new();
    while let Some(reply) = replies.message().await.unwrap() {
        let index = reply.index;
        assert!(
            by_index.insert(index, reply).is_none(),
            "a second reply for request {index}"
        );
    }
    assert_eq!(by_index.len(), sent, "one reply per request");
    by_index
}

fn order_id(reply: &CreateOrdersReply) -> String {
    match &reply.result {
        Some(Outcome::Order(order)) => order.order_id.clone(),
        other => panic!("request {} was refused: {other:?}", reply.index),
    }
}

fn error_code(reply: &CreateOrdersReply) -> Code {
    match &reply.result {
        Some(Outcome::Error(error)) => Code::from(error.code),
        other => panic!("request {} was accepted: {other:?}", reply.index),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_orders_gets_one_reply_each_and_refusals_do_not_end_it() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;
    // A key used before by a unary call: the same request replays its order, another
    // request with it is refused.
    let first = app
        .orders()
        .await
        .create_order(request("key-used-before", "customer-b", 1))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    let replies = call(
        &app,
        vec![
            request("batch-0", "customer-b", 2),
            request("", "customer-b", 0),
            request("key-used-before", "customer-b", 1),
            request("", "customer-b", 3),
            request("key-used-before", "customer-b", 7),
            request("not a valid key\u{7}", "customer-b", 1),
        ],
    )
    .await;

    let new_orders: BTreeSet<String> = [0, 3].iter().map(|i| order_id(&replies[i])).collect();
    assert_eq!(new_orders.len(), 2);
    assert_eq!(replies[&0].request_id, "batch-0");
    // Invalid: the unary call's INVALID_ARGUMENT with its field path.
    assert_eq!(error_code(&replies[&1]), Code::InvalidArgument);
    let Some(Outcome::Error(invalid)) = &replies[&1].result else {
        unreachable!()
    };
    assert_eq!(invalid.field_violations.len(), 1, "{invalid:?}");
    assert_eq!(invalid.field_violations[0].field, "lines[0].quantity");
    // Replayed: the first order, not a new one.
    assert_eq!(order_id(&replies[&2]), first.order_id);
    assert_eq!(error_code(&replies[&4]), Code::FailedPrecondition);
    assert_eq!(error_code(&replies[&5]), Code::InvalidArgument);

    // Every accepted order is on Kafka, once; nothing else is.
    let records = env.records(&env.topics.order_created).await;
    let mut on_kafka = BTreeSet::new();
    for record in &records {
        let event: OrderCreated = env.decode(record).await;
        assert!(on_kafka.insert(event.order_id.to_string()), "written twice");
    }
    let mut expected = new_orders.clone();
    expected.insert(first.order_id.clone());
    assert_eq!(on_kafka, expected);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"grpc_requests_total{code="Ok",method="CreateOrders"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"grpc_requests_total{code="InvalidArgument",method="CreateOrders"} 2"#),
        "{metrics}"
    );

    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_window_is_answered_in_full() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;
    let count = WINDOW * 2 + 17;
    let requests = (0..count)
        .map(|i| request(&format!("window-{i}"), "customer-w", 1))
        .collect();

    let replies = call(&app, requests).await;

    let indices: Vec<u64> = replies.keys().copied().collect();
    assert_eq!(indices, (0..count as u64).collect::<Vec<_>>());
    let ids: BTreeSet<String> = replies.values().map(order_id).collect();
    assert_eq!(ids.len(), count, "distinct orders");
    for (index, reply) in &replies {
        assert_eq!(reply.request_id, format!("window-{index}"));
    }
    let records = env.records(&env.topics.order_created).await;
    assert_eq!(records.len(), count);

    app.stop().await.unwrap();
    env.cleanup().await;
}
