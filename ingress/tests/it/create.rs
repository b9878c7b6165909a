//! Orders over REST and gRPC end up as Avro events on Kafka, with CloudEvents headers,
//! and the answer comes only after the acknowledgement.

use eventbus::kafka::Message as _;
use ingress::proto::{
    AdjustStockRequest, CancelOrderRequest, CreateOrderRequest, OrderLine, OrderStatus,
    UpdateOrderRequest,
};
use schemas::{OrderChangeKind, OrderCreated, OrderUpdated, StockAdjusted};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{TestApp, TestEnv, header, order_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_create_publishes_an_acknowledged_event() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;

    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = app
        .http
        .post(format!("{}/v1/orders", app.rest))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(order_json("customer-rest").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "CREATED");
    assert_eq!(body["total_minor"], 2 * 1999 + 500);
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["customer_id"], "customer-rest");
    let order_id: Uuid = body["order_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/v1/orders/{order_id}"));

    // 201 means acknowledged: the record is already there.
    let records = env.records(&env.topics.order_created).await;
    assert_eq!(records.len(), 1, "exactly one event");
    let record = &records[0];
    assert_eq!(record.key(), Some(order_id.to_string().as_bytes()));
    let event: OrderCreated = env.decode(record).await;
    assert_eq!(event.order_id, order_id);
    assert_eq!(event.customer_id, "customer-rest");
    assert_eq!(event.currency, "EUR");
    assert_eq!(event.total_minor, 4498);
    assert_eq!(event.lines.len(), 2);
    assert_eq!(event.lines[0], schemas::OrderLine::new("SKU-1", 2, 1999));
    assert_eq!(event.channel.as_deref(), Some("REST"));
    assert_eq!(event.created_at, body["created_at_ms"].as_i64().unwrap());
    // CloudEvents binary mode, and the caller's trace continued.
    assert_eq!(header(record, "ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header(record, "ce_id"), Some(event.event_id.to_string()));
    assert_eq!(header(record, "ce_type").as_deref(), Some("order.created"));
    assert_eq!(
        header(record, "ce_source").as_deref(),
        Some("/order-service")
    );
    assert!(header(record, "ce_time").unwrap().ends_with('Z'));
    assert_eq!(
        header(record, "content-type").as_deref(),
        Some("application/avro")
    );
    assert!(
        header(record, "traceparent")
            .unwrap()
            .contains("0af7651916cd43dd8448eb211c80319c")
    );
    // No key, no idempotency headers.
    assert_eq!(header(record, "idempotency-key"), None);

    // Metrics count the request by route template and status.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"http_requests_total{method="POST",route="/v1/orders",status="201"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("eventbus_produced_total"), "{metrics}");

    app.stop().await.unwrap();
    env.cleanup().await;
}

fn grpc_lines() -> Vec<OrderLine> {
    vec![
        OrderLine {
            sku: "SKU-1".into(),
            quantity: 3,
            unit_price_minor: 250,
        },
        OrderLine {
            sku: "SKU-9".into(),
            quantity: 1,
            unit_price_minor: 1,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_create_update_cancel_and_adjust_publish_events() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;
    let mut orders = app.orders().await;

    let created = orders
        .create_order(CreateOrderRequest {
            request_id: String::new(),
            customer_id: "customer-grpc".into(),
            currency: "JPY".into(),
            lines: grpc_lines(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(created.status, OrderStatus::Created as i32);
    assert_eq!(created.total_minor, 751);
    let records = env.records(&env.topics.order_created).await;
    assert_eq!(records.len(), 1);
    let event: OrderCreated = env.decode(&records[0]).await;
    assert_eq!(event.order_id.to_string(), created.order_id);
    assert_eq!(event.currency, "JPY");
    assert_eq!(event.channel.as_deref(), Some("GRPC"));
    assert_eq!(
        header(&records[0], "ce_type").as_deref(),
        Some("order.created")
    );

    // Change the lines (currency given: no pipeline needed), then cancel.
    let changed = orders
        .update_order(UpdateOrderRequest {
            request_id: String::new(),
            order_id: created.order_id.clone(),
            lines: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 1,
                unit_price_minor: 250,
            }],
            currency: Some("JPY".into()),
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(changed.total_minor, 250);
    let cancelled = orders
        .cancel_order(CancelOrderRequest {
            request_id: String::new(),
            order_id: created.order_id.clone(),
            currency: Some("JPY".into()),
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert!(cancelled.revision > changed.revision, "revisions grow");
    let updates = env.records(&env.topics.order_updated).await;
    assert_eq!(updates.len(), 2);
    let mut decoded = Vec::new();
    for record in &updates {
        assert_eq!(header(record, "ce_type").as_deref(), Some("order.updated"));
        decoded.push(env.decode::<OrderUpdated>(record).await);
    }
    decoded.sort_by_key(|e| e.revision);
    assert_eq!(decoded[0].kind, OrderChangeKind::LinesChanged);
    assert_eq!(decoded[0].total_minor, 250);
    assert_eq!(decoded[1].kind, OrderChangeKind::Cancelled);
    assert!(decoded[1].lines.is_empty());
    assert_eq!(decoded[1].currency, "JPY");

    // Stock adjustment.
    let adjusted = app
        .admin()
        .await
        .adjust_stock(AdjustStockRequest {
            request_id: String::new(),
            sku: "SKU-1".into(),
            delta: 100,
            reason: "restock".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let records = env.records(&env.topics.stock_adjusted).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key(), Some(&b"SKU-1"[..]));
    let event: StockAdjusted = env.decode(&records[0]).await;
    assert_eq!(event.event_id.to_string(), adjusted.adjustment_id);
    assert_eq!(event.delta, 100);

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"grpc_requests_total{code="Ok",method="CreateOrder"} 1"#),
        "{metrics}"
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_change_cancel_and_adjust_publish_events() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;
    let order_id = Uuid::new_v4();
    let path = format!("/v1/orders/{order_id}");

    let response = app
        .send(
            reqwest::Method::PATCH,
            &path,
            &json!({"lines": [{"sku": "SKU-3", "quantity": 4, "unit_price_minor": 100}], "currency": "EUR"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let change: Value = response.json().await.unwrap();
    assert_eq!(change["kind"], "LINES_CHANGED");
    assert_eq!(change["total_minor"], 400);
    let response = app
        .send(
            reqwest::Method::PATCH,
            &path,
            &json!({"status": "CANCELLED", "currency": "EUR"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let cancel: Value = response.json().await.unwrap();
    assert_eq!(cancel["kind"], "CANCELLED");
    assert_eq!(cancel["total_minor"], 0);
    assert!(cancel["revision"].as_i64() > change["revision"].as_i64());
    let updates = env.records(&env.topics.order_updated).await;
    assert_eq!(updates.len(), 2);
    for record in &updates {
        assert_eq!(record.key(), Some(order_id.to_string().as_bytes()));
        let event: OrderUpdated = env.decode(record).await;
        assert_eq!(event.order_id, order_id);
    }

    let response = app
        .post(
            "/v1/inventory/adjustments",
            &json!({"sku": "SKU-3", "delta": -7, "reason": "stocktake"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let adjustment: Value = response.json().await.unwrap();
    assert_eq!(adjustment["delta"], -7);
    let records = env.records(&env.topics.stock_adjusted).await;
    assert_eq!(records.len(), 1);
    let event: StockAdjusted = env.decode(&records[0]).await;
    assert_eq!(event.reason, "stocktake");
    assert_eq!(
        event.event_id.to_string(),
        adjustment["adjustment_id"].as_str().unwrap()
    );

    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints_and_grpc_health_and_reflection() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;

    let (status, body) = app.get_json("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alive")));
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kafka", "registry", "idempotency"]);

    // The served OpenAPI document lists the routes and refuses unknown fields.
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    for (path, method) in [
        ("/v1/orders", "post"),
        ("/v1/orders/{order_id}", "patch"),
        ("/v1/orders/{order_id}", "get"),
        ("/v1/inventory/adjustments", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let create = &doc["components"]["schemas"]["CreateOrderBody"];
    assert_eq!(create["additionalProperties"], false, "{create}");

    // Standard gRPC health: SERVING for the services.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    for service in [
        "",
        "orderpipeline.v1.OrderService",
        "orderpipeline.v1.InventoryAdminService",
    ] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    // Reflection lists the services.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}")
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "orderpipeline.v1.OrderService",
        "orderpipeline.v1.InventoryAdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.iter().any(|s| s == expected), "{services:?}");
    }
    // The shared descriptor set also describes the pipeline's ViewService, which ingress
    // only calls: reflection must not advertise it here.
    assert!(
        !services.iter().any(|s| s == "orderpipeline.v1.ViewService"),
        "{services:?}"
    );

    app.stop().await.unwrap();
    env.cleanup().await;
}
