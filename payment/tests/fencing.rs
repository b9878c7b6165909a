//! Against the real cluster: a transactional producer fenced under a running service (what
//! the coordinator does when a broker failover holds a transaction open past
//! `transaction.timeout.ms`: it aborts it and bumps the epoch) is replaced by a new one
//! with the same `transactional.id`, and every order still gets exactly one outcome;
//! fencing that keeps coming back (a second live instance) stops the service with a
//! clear error.
//!
//! The fence is made the way the coordinator's timeout makes it: another
//! `init_transactions` under the service's `transactional.id` bumps the epoch, so the
//! service's next transactional request is refused with `PRODUCER_FENCED`, which
//! librdkafka reports as fatal. (Killing a broker does the same on the chaos cluster:
//! `make chaos`.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Env, Service, metric};
use eventbus::client::TransactionalOptions;
use eventbus::{BusMetrics, TransactionalProducer};
use payment::{Config, PaymentError, SimulatedGateway};

/// Bumps the epoch of `config`'s transactional id, as a newer instance (or the
/// coordinator timing a transaction out) does.
async fn fence(env: &Env, config: &Config) {
    let options = TransactionalOptions {
        transactional_id: config.transactional_id(),
        transaction_timeout: Duration::from_secs(10),
        call_timeout: Duration::from_secs(30),
        tuning: payment::transaction::tuning(),
    };
    let kafka = env
        .cluster
        .kafka
        .clone()
        .with_client_id("payment-test-fencer");
    tokio::task::spawn_blocking(move || {
        let intruder =
            TransactionalProducer::new(&kafka, &options, "fencer", BusMetrics::default())
                .expect("create the fencing producer");
        intruder
            .init()
            .expect("init_transactions fences the service");
    })
    .await
    .unwrap();
}

/// Publishes `orders` in slices of 10 every 100 ms (a steady stream) until done or `stop`.
fn stream(
    env: Arc<Env>,
    orders: Vec<schemas::OrderCreated>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        for slice in orders.chunks(10) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            env.publish(slice).await;
            sent += slice.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_replaced_and_every_order_still_has_one_outcome() {
    let env = Arc::new(common::setup(3).await);
    let config = env.config();
    let gateway = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());
    let service = Service::start(config.clone(), gateway.clone()).await;
    service.wait_ready(Duration::from_secs(60)).await;

    // Orders stream in while the producer is fenced twice, 3 s apart: transactions are
    // open, about to begin or committing when the epoch moves.
    let orders = common::orders(300, 51);
    let publisher = stream(
        env.clone(),
        orders.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    fence(&env, &config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    fence(&env, &config).await;
    assert_eq!(publisher.await.unwrap(), orders.len());

    env.wait_outcomes(orders.len(), Duration::from_secs(120))
        .await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(60))
        .await;
    let reinits = metric(service.addr, "payment_producer_reinits_total").await;
    assert!(
        (1.0..=2.0).contains(&reinits),
        "each fence replaces the producer once: {reinits}"
    );
    assert!(metric(service.addr, "payment_transactions_total").await >= 1.0);
    // Still running: a graceful stop commits what is left and returns Ok.
    service
        .stop()
        .await
        .expect("the service survived being fenced");

    let partitions = common::input_partitions(&env).await;
    env.outcomes()
        .await
        .assert_exactly_once(&orders, &config.gateway, &partitions);
    assert!(env.dlq().await.is_empty(), "nothing was dead-lettered");
    // One charge per completed order: orders redone after a fence replayed at the gateway.
    let completed = env.outcomes().await.completed.len();
    assert_eq!(gateway.charges(), completed);
    println!("300 orders, fenced twice: {reinits} producer replacements, exactly one outcome each");
    env.cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_again_and_again_stops_the_service_with_a_clear_error() {
    let env = Arc::new(common::setup(3).await);
    let mut config = env.config();
    config.transaction.reinit_limit = 2;
    config.transaction.reinit_window = Duration::from_secs(60);
    let service = Service::start(
        config.clone(),
        Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap()),
    )
    .await;
    service.wait_ready(Duration::from_secs(60)).await;

    // A second live instance: it takes the transactional id back every second while
    // orders keep coming.
    let orders = common::orders(400, 52);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = stream(env.clone(), orders.clone(), stop.clone());
    let fencer = {
        let (env, config, stop) = (env.clone(), config.clone(), stop.clone());
        tokio::spawn(async move {
            let mut fences = 0;
            while !stop.load(Ordering::Relaxed) && fences < 30 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                fence(&env, &config).await;
                fences += 1;
            }
            fences
        })
    };
    let started = Instant::now();
    let result = service.wait_exit(Duration::from_secs(60)).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let fences = fencer.await.unwrap();
    let sent = publisher.await.unwrap();

    let error = result.expect_err("repeated fencing must stop the service");
    match &error {
        PaymentError::ReinitsExhausted {
            failures, window, ..
        } => {
            assert_eq!(*failures, 3, "the third failure within the window stops it");
            assert_eq!(*window, Duration::from_secs(60));
        }
        other => panic!("stopped for another reason: {other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("another live instance with the same instance id"),
        "{text}"
    );
    assert_eq!(
        error.fault(),
        eventbus::Fault::Setup,
        "an operator must act"
    );
    // Whatever was committed before it stopped is exactly once.
    let outcomes = env.outcomes().await;
    let doubled: Vec<_> = outcomes
        .per_order()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(doubled.is_empty(), "orders with two outcomes: {doubled:?}");
    println!(
        "stopped after {took:.1?} and {fences} fences ({sent} orders sent, {} settled): {error}",
        outcomes.len()
    );
    env.cluster.cleanup().await;
}
