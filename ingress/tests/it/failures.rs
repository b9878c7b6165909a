//! Honest failures: the pipeline down is 503 / UNAVAILABLE for reads, Kafka unreachable
//! is 503 + Retry-After / UNAVAILABLE for writes, and the client can then retry safely.

use std::time::Duration;

use ingress::idempotency::order_id_for;
use ingress::proto::{CreateOrderRequest, GetOrderRequest, OrderLine};
use ingress::validation::IdempotencyKey;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::common::{TestApp, TestEnv, closed_port, order_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_with_the_pipeline_down_are_503_and_unavailable() {
    let env = TestEnv::new().await;
    // env.config() points the views client at a closed port.
    let app = TestApp::spawn(env.config()).await;
    let id = Uuid::new_v4();

    let response = app
        .http
        .get(format!("{}/v1/orders/{id}", app.rest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/unavailable");
    assert_eq!(problem["instance"], format!("/v1/orders/{id}"));

    let status = app
        .orders()
        .await
        .get_order(GetOrderRequest {
            order_id: id.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_some());

    // A change without a currency needs the view: 503 too, and nothing is published.
    let response = app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/orders/{id}"),
            &json!({"status": "CANCELLED"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(env.watermarks().await, [0, 0, 0]);

    // Writes do not depend on the pipeline.
    assert_eq!(
        app.post("/v1/orders", &order_json("c"), None)
            .await
            .status(),
        201
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_is_503_with_retry_after_and_the_retry_is_safe() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    config.kafka.bootstrap = closed_port().to_string();
    // A client config file's bootstrap wins over `bootstrap`: without it, nothing points
    // the instance at the real cluster.
    config.kafka.client_config_file = None;
    config.publish.deadline = Duration::from_millis(1500);
    config.publish.retry_after = Duration::from_secs(2);
    config.producer.delivery_timeout_ms = 1500;
    config.shutdown.flush_timeout = Duration::from_millis(500);
    // Kafka is down: the instance starts but never becomes ready.
    let down = TestApp::start(config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, report) = down.get_json("/readyz").await;
    assert_eq!(status, 503, "{report}");

    let key = Uuid::new_v4().to_string();
    let started = std::time::Instant::now();
    let response = down
        .post("/v1/orders", &order_json("customer-1"), Some(&key))
        .await;
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the deadline"
    );
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/unavailable");
    assert!(
        problem["detail"].as_str().unwrap().contains("retry"),
        "{problem}"
    );

    let status = down
        .orders()
        .await
        .create_order(CreateOrderRequest {
            request_id: Uuid::new_v4().to_string(),
            customer_id: "customer-1".into(),
            currency: "EUR".into(),
            lines: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 1,
                unit_price_minor: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.get_details_retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(2))
    );

    // The same key is not stuck: a retry is processed again (and fails again here).
    let response = down
        .post("/v1/orders", &order_json("customer-1"), Some(&key))
        .await;
    assert_eq!(response.status(), 503);
    down.stop().await.unwrap();

    // The client retries against a healthy instance: one order, with the id the key
    // determines.
    let healthy = TestApp::spawn(env.config()).await;
    let response = healthy
        .post("/v1/orders", &order_json("customer-1"), Some(&key))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let expected = order_id_for("customer-1", &IdempotencyKey::parse(&key).unwrap());
    assert_eq!(body["order_id"], expected.to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.records(&env.topics.order_created).await.len(), 1);
    healthy.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_deadline_gets_the_first_answer_and_never_writes_twice() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    // Every publish misses its deadline (503), and its record is written a few
    // milliseconds later anyway: what a leader change does to a 5 s deadline.
    config.publish.deadline = Duration::from_millis(1);
    let app = TestApp::spawn(config).await;
    let key = Uuid::new_v4().to_string();
    let first = app
        .post("/v1/orders", &order_json("customer-7"), Some(&key))
        .await;
    assert_eq!(first.status(), 503);

    // The client retries with the same key at once and then every 100 ms: while the first
    // record's fate is unknown it is told 409 (in progress), then it gets the first answer.
    // It is never published again (that would be a 503 again here).
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    let body: Value = loop {
        let response = app
            .post("/v1/orders", &order_json("customer-7"), Some(&key))
            .await;
        let status = response.status().as_u16();
        statuses.push(status);
        if status == 201 {
            break response.json().await.unwrap();
        }
        assert_eq!(
            status, 409,
            "a retry before the first record's fate: {statuses:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expected = order_id_for("customer-7", &IdempotencyKey::parse(&key).unwrap());
    assert_eq!(body["order_id"], expected.to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.records(&env.topics.order_created).await.len(),
        1,
        "one record for the key (retries: {statuses:?})"
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}
