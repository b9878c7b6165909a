//! Against the real cluster: N orders in → exactly N outcomes out (`read_committed`),
//! decline rules honoured, retries exercised; and duplicates of settled orders (within
//! a batch, after settlement, after a restart) never produce a second outcome or a
//! second charge.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{DECLINED, LIMIT, Service, metric};
use payment::SimulatedGateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_orders_in_exactly_n_outcomes_out() {
    const N: usize = 500;
    let env = common::setup(6).await;
    let orders = common::orders(N, 1);
    env.publish(&orders).await;
    let config = env.config();
    let gateway = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());

    let started = Instant::now();
    let service = Service::start(config.clone(), gateway.clone()).await;
    service.wait_ready(Duration::from_secs(60)).await;
    let outcomes = env.wait_outcomes(N, Duration::from_secs(120)).await;
    let took = started.elapsed();
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;

    // Metrics, while running: outcomes counted once each, retries happened.
    let addr = service.addr;
    assert_eq!(metric(addr, "payment_payments_total").await, N as f64);
    let retries = metric(addr, "payment_gateway_retries_total").await;
    assert!(retries > 0.0, "a 20% transient rate must cause retries");
    assert!(metric(addr, "payment_transactions_total").await >= 1.0);
    // The bus metrics every service shares: records in and out, retries, handler
    // latency per order, and the group's assignment. (In and handled count again what
    // an aborted batch re-reads; out counts committed records only.)
    assert!(metric(addr, "eventbus_consumed_total").await >= N as f64);
    assert_eq!(metric(addr, "eventbus_produced_total").await, N as f64);
    assert_eq!(metric(addr, "eventbus_retried_total").await, retries);
    assert!(metric(addr, "eventbus_handler_duration_seconds_count").await >= N as f64);
    assert!(metric(addr, "eventbus_rebalances_total").await >= 1.0);
    // The lag gauge is refreshed every 500 ms here: it reaches 0 once caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(addr, "kafka_consumergroup_lag").await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "consumer lag gauge never reached 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.stop().await.expect("graceful shutdown");

    // Nothing more arrived after the graceful stop.
    let again = env.outcomes().await;
    assert_eq!(again.len(), outcomes.len());
    let partitions = common::input_partitions(&env).await;
    again.assert_exactly_once(&orders, &config.gateway, &partitions);
    let reasons = again.by_reason();
    assert!(reasons.get("AMOUNT_OVER_LIMIT").copied().unwrap_or(0) > 0);
    assert!(reasons.get("CUSTOMER_DECLINED").copied().unwrap_or(0) > 0);
    assert!(env.dlq().await.is_empty(), "no order was dead-lettered");
    // One charge per completed order, never more (the gateway keys by order id).
    assert_eq!(gateway.charges(), again.completed.len());
    assert!(gateway.total_requests() > N as u64);
    println!(
        "{N} orders -> {} outcomes {reasons:?} in {took:.2?} (from start, incl. group join); \
         {retries} retries, {} gateway requests; limit {LIMIT}, declined {DECLINED:?}",
        again.len(),
        gateway.total_requests()
    );
    env.cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_of_settled_orders_are_skipped_across_restarts() {
    let env = common::setup(3).await;
    let config = env.config();

    // Phase 1: 20 orders, two of them duplicated right behind the original (same
    // batch), settled by instance A.
    let orders = common::orders(20, 2);
    let mut first = orders.clone();
    first.insert(5, common::duplicate(&orders[4]));
    first.push(common::duplicate(&orders[0]));
    env.publish(&first).await;
    let gateway_a = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());
    let a = Service::start(config.clone(), gateway_a.clone()).await;
    env.wait_outcomes(20, Duration::from_secs(90)).await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;
    assert_eq!(
        metric(a.addr, "payment_duplicates_skipped_total").await,
        2.0
    );

    // Phase 2: while A runs, five settled orders are replayed (after settlement).
    let replayed: Vec<_> = orders[10..15].iter().map(common::duplicate).collect();
    env.publish(&replayed).await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;
    assert_eq!(
        metric(a.addr, "payment_duplicates_skipped_total").await,
        7.0
    );
    a.stop().await.unwrap();
    for o in &orders {
        let key = o.order_id.to_string();
        // Duplicates never reached the gateway: only the original's attempts did.
        assert!(gateway_a.requests(&key) >= 1);
    }
    let charged_by_a = gateway_a.charges();

    // Phase 3: after a restart (a new instance B, empty memory), the same five and two
    // more are replayed, with three new orders.
    let replayed_again: Vec<_> = orders[10..17].iter().map(common::duplicate).collect();
    let new_orders = common::orders(3, 3);
    env.publish(&replayed_again).await;
    env.publish(&new_orders).await;
    let gateway_b = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());
    let b = Service::start(config.clone(), gateway_b.clone()).await;
    env.wait_outcomes(23, Duration::from_secs(90)).await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;
    assert_eq!(
        metric(b.addr, "payment_duplicates_skipped_total").await,
        7.0
    );
    b.stop().await.unwrap();

    // Exactly one outcome per order, none for any duplicate; B never called the gateway
    // for a settled order.
    let mut all = orders.clone();
    all.extend(new_orders.iter().cloned());
    let outcomes = env.outcomes().await;
    let partitions: HashMap<_, _> = common::input_partitions(&env).await;
    outcomes.assert_exactly_once(&all, &config.gateway, &partitions);
    for o in &orders {
        assert_eq!(
            gateway_b.requests(&o.order_id.to_string()),
            0,
            "a settled order must not reach the gateway again"
        );
    }
    for o in &new_orders {
        assert!(gateway_b.requests(&o.order_id.to_string()) >= 1);
    }
    let completed_new = new_orders
        .iter()
        .filter(|o| {
            config
                .gateway
                .verdict(&payment::ChargeRequest::for_order(o))
                .is_none()
        })
        .count();
    assert_eq!(gateway_b.charges(), completed_new);
    assert_eq!(charged_by_a + completed_new, outcomes.completed.len());
    env.cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_with_the_same_id_fences_the_first() {
    let env = common::setup(3).await;
    let config = env.config();
    let first_orders = common::orders(30, 41);
    env.publish(&first_orders).await;
    let a = Service::start(
        config.clone(),
        Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap()),
    )
    .await;
    env.wait_outcomes(30, Duration::from_secs(90)).await;

    // B: same instance id, so the same transactional.id and group.instance.id. Its
    // init_transactions fences A's producer and its join fences A's consumer.
    let b = Service::start(
        config.clone(),
        Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap()),
    )
    .await;
    b.wait_ready(Duration::from_secs(60)).await;
    let second_orders = common::orders(30, 42);
    env.publish(&second_orders).await;
    let a_result = a.wait_exit(Duration::from_secs(60)).await;
    let error = a_result.expect_err("the older instance must stop");
    assert!(
        matches!(error, payment::PaymentError::Fenced { .. }),
        "stopped as fenced: {error}"
    );
    env.wait_outcomes(60, Duration::from_secs(90)).await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;
    b.stop().await.unwrap();
    let mut all = first_orders;
    all.extend(second_orders);
    let partitions = common::input_partitions(&env).await;
    env.outcomes()
        .await
        .assert_exactly_once(&all, &config.gateway, &partitions);
    println!("the first instance stopped with: {error}");
    env.cluster.cleanup().await;
}
