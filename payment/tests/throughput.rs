//! Outcomes per second with transactions on: a measurement, not a pass/fail test, so
//! it is `#[ignore]`d. Run it with
//!
//! ```sh
//! cargo build --release -p payment
//! PAYMENT_BIN=target/release/payment cargo test -p payment --test throughput -- --ignored --nocapture
//! ```
//!
//! `THROUGHPUT_ORDERS` (5000), `THROUGHPUT_COMMIT_INTERVAL` (100ms), `THROUGHPUT_LINGER`
//! (5ms), `THROUGHPUT_RETRY_BACKOFF_MS` (100), `THROUGHPUT_MAX_BATCH`
//! (500), `THROUGHPUT_LATENCY` / `THROUGHPUT_JITTER` (gateway, 2ms / 3ms) and
//! `THROUGHPUT_TRANSIENT` (0.02) change the run; `THROUGHPUT_RUST_LOG` and
//! `THROUGHPUT_LOG_FILE` keep the service's log. The orders are produced before the
//! service starts; the clock runs from `/readyz` to the last outcome committed (the
//! service's own `payment_payments_total`), then the topics are checked.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::BusMetrics;
use eventbus::client::{self, ReaderOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{Consumer, Message, Offset, TopicPartitionList};
use uuid::Uuid;

use common::{metric, metric_in};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly (see the file docs)"]
async fn outcomes_per_second_with_transactions() {
    let n: usize = var("THROUGHPUT_ORDERS", "5000").parse().unwrap();
    let env = common::setup(6).await;
    let orders = common::orders(n, 99);
    let produced = Instant::now();
    env.publish(&orders).await;
    let produce_took = produced.elapsed();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let binary = var("PAYMENT_BIN", env!("CARGO_BIN_EXE_payment"));
    let dir = tempfile::tempdir().unwrap();
    let log_path = std::env::var("THROUGHPUT_LOG_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("payment.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(&binary)
        .envs(common::kafka_env(&env))
        .env("REGISTRY_URL", &env.cluster.registry.url)
        .env("PAYMENT__TOPICS__PREFIX", env.cluster.prefix())
        .env("PAYMENT__HTTP__LISTEN", addr.to_string())
        .env(
            "PAYMENT__GATEWAY__AMOUNT_LIMIT_MINOR",
            common::LIMIT.to_string(),
        )
        .env(
            "PAYMENT__GATEWAY__LATENCY",
            var("THROUGHPUT_LATENCY", "2ms"),
        )
        .env(
            "PAYMENT__GATEWAY__LATENCY_JITTER",
            var("THROUGHPUT_JITTER", "3ms"),
        )
        .env(
            "PAYMENT__GATEWAY__TRANSIENT_FAILURE_RATE",
            var("THROUGHPUT_TRANSIENT", "0.02"),
        )
        .env(
            "PAYMENT__TRANSACTION__COMMIT_INTERVAL",
            var("THROUGHPUT_COMMIT_INTERVAL", "100ms"),
        )
        .env(
            "PAYMENT__TRANSACTION__MAX_BATCH",
            var("THROUGHPUT_MAX_BATCH", "500"),
        )
        .env("RUST_LOG", var("THROUGHPUT_RUST_LOG", "warn"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    common::wait_ready(addr, Duration::from_secs(60)).await;
    let started = Instant::now();
    loop {
        let done = metric(addr, "payment_payments_total").await as usize;
        if done >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{done} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    let transactions = metric_in(&text, "payment_transactions_total");
    let txn_seconds = metric_in(&text, "payment_transaction_duration_seconds_sum");
    let gateway_seconds = metric_in(&text, "payment_gateway_latency_seconds_sum");
    let gateway_calls = metric_in(&text, "payment_gateway_latency_seconds_count");
    let outcomes = env.outcomes().await;
    assert_eq!(outcomes.len(), n, "exactly one outcome per order");
    println!(
        "{n} orders (produced in {produce_took:.2?}) -> {} outcomes in {took:.2?} = {:.0} outcomes/s \
         | binary {binary} | commit_interval {} max_batch {} | {transactions} transactions, \
         mean {:.1} ms begin->commit, {:.0} records/transaction | gateway {gateway_calls} calls, mean {:.2} ms",
        outcomes.len(),
        n as f64 / took.as_secs_f64(),
        var("THROUGHPUT_COMMIT_INTERVAL", "100ms"),
        var("THROUGHPUT_MAX_BATCH", "500"),
        1000.0 * txn_seconds / transactions.max(1.0),
        n as f64 / transactions.max(1.0),
        1000.0 * gateway_seconds / gateway_calls.max(1.0),
    );
    env.cluster.cleanup().await;
}

/// Latency at a low, steady rate: orders are published one by one (`THROUGHPUT_RATE`
/// per second, 20 by default) to a running service; the latency of an order is its
/// outcome's `completed_at`/`failed_at` minus its `created_at` (both stamped on this
/// machine's clock), which covers produce, poll, the batch wait and the gateway; and
/// the *visible* latency, from `created_at` to the moment a `read_committed` consumer
/// in this test receives the outcome, which adds the transaction's commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly (see the file docs)"]
async fn latency_at_a_low_rate() {
    let n: usize = var("THROUGHPUT_ORDERS", "200").parse().unwrap();
    let rate: f64 = var("THROUGHPUT_RATE", "20").parse().unwrap();
    let env = common::setup(6).await;
    let mut config = env.config();
    config.gateway.transient_failure_rate = var("THROUGHPUT_TRANSIENT", "0.02").parse().unwrap();
    config.gateway.latency =
        eventbus::config::duration_serde::parse(&var("THROUGHPUT_LATENCY", "2ms")).unwrap();
    config.gateway.latency_jitter =
        eventbus::config::duration_serde::parse(&var("THROUGHPUT_JITTER", "3ms")).unwrap();
    config.settle.retry = payment::config::SettleConfig::default().retry;
    config.transaction.commit_interval =
        eventbus::config::duration_serde::parse(&var("THROUGHPUT_COMMIT_INTERVAL", "100ms"))
            .unwrap();
    // The group commit's idle close (the default unless given; "0s" is the batching
    // before it) and the transactional producer's `retry.backoff.ms` (librdkafka's
    // 100 ms unless given): the commit path's variants, run against each other.
    if let Ok(linger) = std::env::var("THROUGHPUT_LINGER") {
        config.transaction.linger = eventbus::config::duration_serde::parse(&linger).unwrap();
    }
    if let Ok(backoff) = std::env::var("THROUGHPUT_RETRY_BACKOFF_MS") {
        config
            .kafka
            .extra
            .insert("retry.backoff.ms".to_owned(), backoff);
    }
    let gateway =
        std::sync::Arc::new(payment::SimulatedGateway::new(config.gateway.clone()).unwrap());
    let service = common::Service::start(config.clone(), gateway).await;
    let seen = Arc::new(Mutex::new(HashMap::<Uuid, i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let kafka = env.cluster.kafka.clone();
        let topics = [
            env.topics.payment_completed.clone(),
            env.topics.payment_failed.clone(),
        ];
        let partitions = env.partitions;
        std::thread::spawn(move || {
            let options = ReaderOptions {
                read_committed: true,
                tuning: client::tuning([
                    // Deliver each outcome as soon as it is visible: the measured latency
                    // should not include up to 500 ms of fetch wait.
                    ("fetch.wait.max.ms", "10".to_owned()),
                ]),
                ..ReaderOptions::default()
            };
            let context = BusContext::new("payment-test/latency", None, BusMetrics::default());
            let consumer = client::reader(&kafka, &options, context).unwrap();
            // Every partition of both outcome topics, from the beginning.
            let mut tpl = TopicPartitionList::new();
            for topic in &topics {
                for p in 0..partitions {
                    tpl.add_partition_offset(topic, p, Offset::Beginning)
                        .unwrap();
                }
            }
            consumer.assign(&tpl).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    let at = eventbus::headers::now_ms();
                    if let Some(id) = m.key().and_then(|k| Uuid::try_parse_ascii(k).ok()) {
                        seen.lock().unwrap().insert(id, at);
                    }
                }
            }
        })
    };
    service.wait_ready(Duration::from_secs(60)).await;
    // Warm-up: the first batch loads the settled-orders index.
    let warm = common::orders(1, 5);
    env.publish(&warm).await;
    env.wait_outcomes(1, Duration::from_secs(60)).await;

    let mut orders = Vec::with_capacity(n);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = tokio::time::Instant::now();
    for seed in 0..n as u64 {
        tokio::time::sleep_until(next).await;
        next += interval;
        let mut order = common::orders(1, 1_000 + seed).remove(0);
        order.created_at = eventbus::headers::now_ms();
        env.publish(std::slice::from_ref(&order)).await;
        orders.push(order);
    }
    let outcomes = env.wait_outcomes(n + 1, Duration::from_secs(120)).await;
    let transactions = metric(service.addr, "payment_transactions_total").await;
    service.stop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < n + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let mut visible: Vec<i64> = orders
        .iter()
        .filter_map(|o| {
            seen.lock()
                .unwrap()
                .get(&o.order_id)
                .map(|at| at - o.created_at)
        })
        .collect();
    assert_eq!(
        visible.len(),
        n,
        "every outcome seen by the read_committed watcher"
    );
    visible.sort_unstable();
    let created: HashMap<_, _> = orders.iter().map(|o| (o.order_id, o.created_at)).collect();
    let mut latencies: Vec<i64> = outcomes
        .completed
        .iter()
        .filter_map(|(_, e)| created.get(&e.order_id).map(|c| e.completed_at - c))
        .chain(
            outcomes
                .failed
                .iter()
                .filter_map(|(_, e)| created.get(&e.order_id).map(|c| e.failed_at - c)),
        )
        .collect();
    latencies.sort_unstable();
    let q = |v: &[i64], f: f64| v[((v.len() as f64 - 1.0) * f).round() as usize];
    println!(
        "{n} orders at {rate}/s, commit_interval {}, linger {:?}, retry.backoff.ms {}: created -> outcome stamped p50 {} / p99 {} ms; \
         created -> visible to read_committed p50 {} / p90 {} / p99 {} / max {} ms; {transactions} transactions",
        var("THROUGHPUT_COMMIT_INTERVAL", "100ms"),
        config.transaction.linger,
        var("THROUGHPUT_RETRY_BACKOFF_MS", "100"),
        q(&latencies, 0.5),
        q(&latencies, 0.99),
        q(&visible, 0.5),
        q(&visible, 0.9),
        q(&visible, 0.99),
        q(&visible, 1.0),
    );
    env.cluster.cleanup().await;
}
