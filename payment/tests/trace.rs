//! Against the real cluster: payment continues the W3C trace of each order. The
//! outcome record of an order carries a `traceparent` with the order record's trace id
//! and a span id of its own (a child span), and the service's JSON log has one
//! `payment settled` line per order with that trace id, the order id and the input's
//! topic, partition and offset as top-level fields (servicekit's JSON format, as
//! `PAYMENT__TELEMETRY__FORMAT=json` writes it).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::Service;
use eventbus::PublishOptions;
use eventbus::headers::TraceParent;
use eventbus::kafka::Message;
use payment::SimulatedGateway;
use serde_json::Value;
use servicekit::telemetry::CapturedLines;
use uuid::Uuid;

/// The `payment settled` lines among `captured`.
fn settled(captured: &CapturedLines) -> Vec<Value> {
    captured
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "payment settled")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_and_log_lines_continue_the_trace_of_their_order() {
    // The service's JSON format, at INFO for payment, as the process's logger (this
    // file's only test, so nothing else installs one first).
    let lines = CapturedLines::install(payment::config::SERVICE_NAME, "warn,payment=info")
        .expect("the first logger of this test binary");
    let env = common::setup(3).await;
    let orders = common::orders(12, 7);
    // Each order under a trace of its own, as ingress writes them.
    let mut parents: HashMap<Uuid, TraceParent> = HashMap::new();
    for order in &orders {
        let parent = TraceParent::generate();
        env.producer
            .publish_with(
                order,
                PublishOptions::to_topic(&env.topics.order_created)
                    .traceparent(&parent.to_string()),
            )
            .await
            .expect("publish order");
        parents.insert(order.order_id, parent);
    }
    let config = env.config();
    let gateway = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());
    let service = Service::start(config, gateway).await;
    service.wait_ready(Duration::from_secs(60)).await;
    env.wait_outcomes(orders.len(), Duration::from_secs(120))
        .await;
    service.stop().await.expect("graceful shutdown");

    let mut seen = 0;
    for topic in [&env.topics.payment_completed, &env.topics.payment_failed] {
        for record in common::read_all(&env, topic, true).await {
            let order_id: Uuid = std::str::from_utf8(record.key().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let parent = parents[&order_id];
            let written = TraceParent::from_headers(record.headers())
                .unwrap_or_else(|| panic!("outcome of {order_id} has no valid traceparent"));
            assert_eq!(
                written.trace_id_hex(),
                parent.trace_id_hex(),
                "the outcome of {order_id} is in its order's trace"
            );
            assert_ne!(
                written.span_id, parent.span_id,
                "payment writes a span of its own, not its parent's"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, orders.len(), "one outcome per order");

    // One log line per settled payment, correlated by order id and trace id.
    let settled = settled(&lines);
    assert_eq!(settled.len(), orders.len(), "{settled:?}");
    for line in &settled {
        let order_id: Uuid = line["order_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(line["service"], "payment-service");
        assert_eq!(line["level"], "INFO");
        assert_eq!(
            line["trace_id"].as_str(),
            Some(parents[&order_id].trace_id_hex().as_str()),
            "{line}"
        );
        assert_eq!(
            line["parent_span_id"].as_str(),
            Some(parents[&order_id].span_id_hex().as_str()),
            "{line}"
        );
        assert_eq!(
            line["topic"].as_str(),
            Some(env.topics.order_created.as_str())
        );
        assert!(line["partition"].as_i64().is_some(), "{line}");
        assert!(line["offset"].as_i64().is_some(), "{line}");
        assert!(
            matches!(line["outcome"].as_str(), Some("completed" | "failed")),
            "{line}"
        );
    }
    env.cluster.cleanup().await;
}
