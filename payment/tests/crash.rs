//! Against the real cluster, with the real binary: thousands of orders, `kill -9` of the
//! service in the middle of the run (three times), a restart → still exactly one outcome per order,
//! none duplicated, none missing, and no order charged twice (the simulated gateway's
//! ledger file survives the crash like a real provider's records).
//!
//! `CRASH_RUST_LOG` sets the service's log filter (default `info,librdkafka=warn`); the
//! log is printed when the test fails.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{Env, metric};
use eventbus::BusMetrics;
use eventbus::client::{self, ReaderOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{Consumer, Offset, TopicPartitionList};

/// A free local port (bound and released; the child binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the `payment` binary configured for `env` through environment variables only.
fn spawn(env: &Env, addr: SocketAddr, ledger: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let binary =
        std::env::var("PAYMENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_payment").to_owned());
    Command::new(binary)
        .envs(common::kafka_env(env))
        .env("REGISTRY_URL", &env.cluster.registry.url)
        .env("PAYMENT__TOPICS__PREFIX", env.cluster.prefix())
        .env("PAYMENT__HTTP__LISTEN", addr.to_string())
        .env(
            "PAYMENT__GATEWAY__AMOUNT_LIMIT_MINOR",
            common::LIMIT.to_string(),
        )
        .env(
            "PAYMENT__GATEWAY__DECLINED_CUSTOMERS",
            format!("[{}]", common::DECLINED.join(",")),
        )
        .env("PAYMENT__GATEWAY__TRANSIENT_FAILURE_RATE", "0.2")
        .env("PAYMENT__GATEWAY__LATENCY", "1ms")
        .env("PAYMENT__GATEWAY__LATENCY_JITTER", "2ms")
        .env("PAYMENT__GATEWAY__SEED", "7")
        .env("PAYMENT__GATEWAY__LEDGER_PATH", ledger)
        .env("PAYMENT__SETTLE__RETRY__MAX_ATTEMPTS", "10")
        .env("PAYMENT__SETTLE__RETRY__BASE_DELAY", "5ms")
        .env("PAYMENT__SETTLE__RETRY__MAX_DELAY", "50ms")
        .env(
            "RUST_LOG",
            std::env::var("CRASH_RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".to_owned()),
        )
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start the payment binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_then_restart_gives_exactly_n_outcomes() {
    const N: usize = 3_000;
    let env = common::setup(6).await;
    let orders = common::orders(N, 11);
    env.publish(&orders).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    let log = dir.path().join("payment.log");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let group = format!("{}payment-service", env.cluster.prefix());

    // Runs 1-3: run i is killed with SIGKILL once the outcome topics hold 700, 1450 and
    // 2200 records (committed or not; or, when an earlier run overshot that, as soon as
    // it has written anything): not multiples of the batch size, so the kill tends to
    // land while a batch's transaction is open, and at most about 2200 of the 3000
    // orders are settled before the last run, which so always has work left (however
    // fast the runs are). A read_uncommitted reader in a thread of its own counts the
    // records as they arrive, so a kill lands within milliseconds of its mark, before
    // the transaction that crossed it commits.
    let started = Instant::now();
    let mut kills = Vec::new();
    let seen = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let kafka = env.cluster.kafka.clone();
        let topics = [
            env.topics.payment_completed.clone(),
            env.topics.payment_failed.clone(),
        ];
        let partitions = env.partitions;
        std::thread::spawn(move || {
            let options = ReaderOptions {
                tuning: client::tuning([
                    // Hand over each record at once: the kill must follow its mark closely.
                    ("fetch.wait.max.ms", "5".to_owned()),
                ]),
                ..ReaderOptions::default()
            };
            let context =
                BusContext::new("payment-test/crash-counter", None, BusMetrics::default());
            let reader = client::reader(&kafka, &options, context).unwrap();
            let mut tpl = TopicPartitionList::new();
            for topic in &topics {
                for p in 0..partitions {
                    tpl.add_partition_offset(topic, p, Offset::Beginning)
                        .unwrap();
                }
            }
            reader.assign(&tpl).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(_)) = reader.poll(Duration::from_millis(20)) {
                    seen.fetch_add(1, Ordering::AcqRel);
                }
            }
        })
    };
    let written = || seen.load(Ordering::Acquire);
    for target in [700, 1450, 2200] {
        let mark = target.max(written() + 1);
        let mut child = spawn(&env, addr, &ledger, &log);
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "no progress; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the service died on its own; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            if written() >= mark {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap(); // SIGKILL
        assert!(!child.wait().unwrap().success());
        let committed = env.outcomes().await.len();
        let raw = env.raw_outcome_records().await;
        let charges = std::fs::read_to_string(&ledger).unwrap().lines().count();
        kills.push(format!(
            "at {:.2?}: {committed} outcomes committed, {raw} outcome records on the topics incl. aborted/open, {charges} charges",
            started.elapsed()
        ));
    }

    // Last run: same instance id → same transactional id: the open transaction of the
    // killed process is aborted, the group resumes from the committed offsets.
    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    let restarted = Instant::now();
    let mut last = spawn(&env, addr, &ledger, &log);
    let outcomes = env.wait_outcomes(N, Duration::from_secs(240)).await;
    let recovered_in = restarted.elapsed();
    env.wait_caught_up(&group, Duration::from_secs(60)).await;
    let skipped = metric(addr, "payment_duplicates_skipped_total").await;
    let transactions = metric(addr, "payment_transactions_total").await;
    // Graceful stop: SIGTERM, exit 0.
    let term = Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = last.wait().unwrap();
    assert!(
        status.success(),
        "graceful exit; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let raw_final = env.raw_outcome_records().await;

    let after = env.outcomes().await;
    assert_eq!(
        after.len(),
        outcomes.len(),
        "nothing arrived after the catch-up"
    );
    let partitions = common::input_partitions(&env).await;
    after.assert_exactly_once(&orders, &common::gateway_config(), &partitions);
    assert!(env.dlq().await.is_empty());

    // The ledger (the provider's record of charges) has one line per completed order:
    // orders re-settled after the crash reused their idempotency key.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let keys: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    let unique: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "no order charged twice");
    let completed: HashSet<String> = after
        .completed
        .iter()
        .map(|(_, e)| e.order_id.to_string())
        .collect();
    assert_eq!(unique.len(), completed.len());
    assert!(completed.iter().all(|k| unique.contains(k.as_str())));

    let total = started.elapsed();
    println!(
        "kill -9 three times: {}; last run reached {N} outcomes in {recovered_in:.2?} (total {total:.2?}), \
         {transactions} transactions, {skipped} duplicates skipped; final: {} committed outcomes for {N} orders \
         ({} records on the topics incl. aborted), {} charges = completed orders",
        kills.join("; "),
        after.len(),
        raw_final,
        keys.len()
    );
    env.cluster.cleanup().await;
}
