//! Idempotent retries: the same key returns the same answer and leaves exactly one event
//! on the topic, within one instance, across a restart and across two instances; the same
//! key with another request is refused.

use std::time::Duration;

use eventbus::kafka::Message as _;
use eventbus::testkit::eventually;
use ingress::idempotency::{FINGERPRINT_HEADER, KEY_HEADER, SCOPE_HEADER, Scope, order_id_for};
use ingress::proto::{CreateOrderRequest, OrderLine};
use ingress::validation::IdempotencyKey;
use schemas::OrderCreated;
use serde_json::Value;
use tonic::Code;
use uuid::Uuid;

use crate::common::{TestApp, TestEnv, header, order_json};

async fn post_order(app: &TestApp, customer: &str, key: &str) -> (u16, Option<String>, Value) {
    let response = app
        .post("/v1/orders", &order_json(customer), Some(key))
        .await;
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, response.json().await.unwrap())
}

/// Waits a moment, then returns the records of the order created topic: a second event
/// would have had time to arrive.
async fn settled_created(env: &TestEnv) -> Vec<eventbus::kafka::OwnedMessage> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.records(&env.topics.order_created).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_post_returns_the_same_order_and_one_event() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;
    let key = Uuid::new_v4().to_string();

    let (status, replayed, first) = post_order(&app, "customer-1", &key).await;
    assert_eq!((status, replayed), (201, None));
    let (status, replayed, second) = post_order(&app, "customer-1", &key).await;
    assert_eq!(status, 201);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(second, first, "the retry returns the same body");

    // The order id is the one derived from customer and key.
    let derived = order_id_for("customer-1", &IdempotencyKey::parse(&key).unwrap());
    assert_eq!(first["order_id"], derived.to_string());

    let records = settled_created(&env).await;
    assert_eq!(records.len(), 1, "exactly one event for two requests");
    assert_eq!(header(&records[0], KEY_HEADER), Some(key.clone()));
    assert!(header(&records[0], FINGERPRINT_HEADER).is_some());
    assert_eq!(
        header(&records[0], SCOPE_HEADER),
        Some(Scope::create_order("customer-1", &key).id().to_string())
    );
    let event: OrderCreated = env.decode(&records[0]).await;
    assert_eq!(event.order_id, derived);

    // The same key with a different body: 422, and still one event.
    let mut other = order_json("customer-1");
    other["lines"][0]["quantity"] = 3.into();
    let response = app.post("/v1/orders", &other, Some(&key)).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["title"],
        "idempotency-key reused with a different request"
    );
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    assert_eq!(settled_created(&env).await.len(), 1);

    // The key is scoped by customer: another customer's order with the same key is
    // another order.
    let (status, _, third) = post_order(&app, "customer-2", &key).await;
    assert_eq!(status, 201);
    assert_ne!(third["order_id"], first["order_id"]);
    assert_eq!(settled_created(&env).await.len(), 2);

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"ingress_idempotency_total{outcome="replayed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ingress_idempotency_total{outcome="mismatch"} 1"#),
        "{metrics}"
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_request_id_is_the_same_key_as_rest() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;
    let key = Uuid::new_v4().to_string();
    let request = CreateOrderRequest {
        request_id: key.clone(),
        customer_id: "customer-1".into(),
        currency: "EUR".into(),
        lines: vec![
            OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: 1999,
            },
            OrderLine {
                sku: "SKU-2".into(),
                quantity: 1,
                unit_price_minor: 500,
            },
        ],
    };
    let mut orders = app.orders().await;
    let first = orders
        .create_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = orders
        .create_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    // The same order over REST with the same key is the same order.
    let (status, replayed, body) = post_order(&app, "customer-1", &key).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    let order = first.order.unwrap();
    assert_eq!(body["order_id"], order.order_id);
    assert_eq!(body["created_at_ms"], order.created_at_ms);
    assert_eq!(settled_created(&env).await.len(), 1);

    // Same request_id, different request.
    let mut other = request;
    other.currency = "USD".into();
    let status = orders.create_order(other).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(settled_created(&env).await.len(), 1);
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_a_restart_and_on_another_instance_publish_nothing_new() {
    let env = TestEnv::new().await;
    let key = Uuid::new_v4().to_string();

    // First instance answers, then stops.
    let first_app = TestApp::spawn(env.config()).await;
    let (status, _, first) = post_order(&first_app, "customer-1", &key).await;
    assert_eq!(status, 201);
    first_app.stop().await.unwrap();

    // A new instance learns the answer from the topic before it is ready.
    let restarted = TestApp::spawn(env.config()).await;
    let (status, replayed, again) = post_order(&restarted, "customer-1", &key).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first, "same body after a restart");
    assert_eq!(settled_created(&env).await.len(), 1);

    // A second instance running beside it learns keys answered by the first as they
    // are published (it follows the topics).
    let beside = TestApp::spawn(env.config()).await;
    let key2 = Uuid::new_v4().to_string();
    let (status, _, answered) = post_order(&restarted, "customer-7", &key2).await;
    assert_eq!(status, 201);
    let learned = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            beside
                .metrics()
                .await
                .contains("ingress_idempotency_learned_total 2")
                .then_some(())
        },
    )
    .await;
    assert!(learned.is_some(), "{}", beside.metrics().await);
    let (status, replayed, elsewhere) = post_order(&beside, "customer-7", &key2).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(elsewhere, answered, "same body from the other instance");

    let records = settled_created(&env).await;
    assert_eq!(
        records.len(),
        2,
        "one event per key, whatever instance answered"
    );
    let mut keys: Vec<Option<String>> = records.iter().map(|r| header(r, KEY_HEADER)).collect();
    keys.sort();
    let mut expected = vec![Some(key), Some(key2)];
    expected.sort();
    assert_eq!(keys, expected);
    for record in &records {
        assert!(record.key().is_some());
    }
    restarted.stop().await.unwrap();
    beside.stop().await.unwrap();
    env.cleanup().await;
}
