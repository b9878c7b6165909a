//! Against the real cluster: payment continues the W3C trace of each order. The
//! outcome record of an order carries a `traceparent` with the order record's trace id
//! and a span id of its own (a child span); an order without a trace gets a new one.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::Service;
use eventbus::PublishOptions;
use eventbus::headers::TraceParent;
use eventbus::kafka::Message;
use payment::SimulatedGateway;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_continue_the_trace_of_their_order() {
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
    env.cluster.cleanup().await;
}
