//! Kafka's transactional floor: one record per transaction, read back with
//! `read_committed`, one at a time, on a topic of the run's own.
//!
//! Why beside `EndToEndLatency`: that tool measures one plain hop, but everything the
//! pipeline serves is written in Kafka transactions, and a record of a transaction is
//! readable by a `read_committed` consumer only once the commit has returned *and* the
//! coordinator has written the commit markers to the record's partition, the followers
//! have fetched them and the high watermark (so the last stable offset) has moved on.
//! No exactly-once sink on this cluster can be faster than this hop; the ratio of the
//! pipeline's latency to it is what the sink's design can still win, the ratio of this
//! hop to `EndToEndLatency` is what transactions themselves cost here.
//!
//! The path is the sink's own: eventbus's [`TransactionalProducer`] (`begin`, one record,
//! [`TransactionalProducer::await_deliveries`], `commit`), `linger.ms=0` (one record per
//! transaction: nothing to batch), and the matcher's reader ([`start_reader`]: a thread
//! of its own, read_committed, the matcher's `fetch.wait.max.ms`). Per transaction: **produce** = begin → the record's
//! delivery acknowledged, **commit** = begin → commit returned,
//! **visible** = begin → the reader has the record, **after commit** = the difference.
//! Each transaction begins after eventbus's settle pause since the previous one
//! ([`eventbus::transaction::DEFAULT_SETTLE`], not counted in its latency): without it,
//! each would wait for the coordinator instead (see that module).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::stats::Summary;
use eventbus::client::{self, TransactionalOptions};
use eventbus::kafka::{BaseRecord, BorrowedMessage, Message};
use eventbus::{BusMetrics, KafkaSettings, RegistryClient, TransactionalProducer};
use serde::Serialize;

use crate::reader::{OnRecord, start_reader};

/// Partitions of the hop's topic, as the pipeline's outputs (the reader reads them all).
pub(crate) const PARTITIONS: i32 = 6;

/// The figures of one run of the hop.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TxnHop {
    /// Transactions (one record each) run.
    pub(crate) transactions: u64,
    /// Transactions per second, one after another (each begun once the previous one's
    /// record was read and the settle pause had passed).
    pub(crate) per_sec: f64,
    /// begin → the record's delivery acknowledged (partition added to the transaction,
    /// record written with acks=all).
    pub(crate) produce: Summary,
    /// begin → commit returned.
    pub(crate) commit: Summary,
    /// begin → the record read with `read_committed`.
    pub(crate) visible: Summary,
    /// commit returned → the record read (markers written, replicated, fetched).
    pub(crate) after_commit: Summary,
}

/// Runs `transactions` one-record transactions on `topic` (which must exist with
/// [`PARTITIONS`] partitions) under `transactional_id`. Blocking: call from a blocking
/// context.
pub(crate) fn run(
    kafka: &KafkaSettings,
    topic: &str,
    transactional_id: &str,
    transactions: u64,
    record_size: usize,
    fetch_wait_ms: u64,
    settle: Duration,
) -> anyhow::Result<TxnHop> {
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_tx, seen) = mpsc::channel::<(u64, Instant)>();
    let reader = start_reader(
        kafka,
        "txn-hop-reader",
        vec![topic.to_owned()],
        Arc::new(ReadClock(seen_tx)),
        stop.clone(),
        fetch_wait_ms,
    )?;
    let result = (|| {
        let producer = TransactionalProducer::new(
            kafka,
            &TransactionalOptions {
                transactional_id: transactional_id.to_owned(),
                transaction_timeout: Duration::from_secs(60),
                call_timeout: Duration::from_secs(30),
                // One record per transaction: nothing to wait for.
                tuning: client::tuning([("linger.ms", "0".to_owned())]),
            },
            "txn-hop",
            BusMetrics::default(),
        )?
        .with_settle(settle);
        producer.init().context("init_transactions")?;
        let payload = vec![0x5au8; record_size];
        let (mut produce, mut commit) = (Vec::new(), Vec::new());
        let (mut visible, mut after) = (Vec::new(), Vec::new());
        let started = Instant::now();
        for i in 0..transactions {
            let key = i.to_be_bytes();
            // The pause after the previous transaction is not this one's latency.
            producer.settle();
            let t0 = Instant::now();
            producer.begin()?;
            producer.send(BaseRecord::to(topic).key(&key[..]).payload(&payload[..]))?;
            producer.await_deliveries()?;
            let delivered = Instant::now();
            producer.commit()?;
            let t1 = Instant::now();
            let t2 = loop {
                match seen.recv_timeout(Duration::from_secs(30)) {
                    Ok((k, at)) if k == i => break at,
                    Ok(_) => continue,
                    Err(_) => bail!(
                        "transaction {i}: its record was not readable within 30 s ({} reader errors)",
                        reader.errors()
                    ),
                }
            };
            produce.push(delivered - t0);
            commit.push(t1 - t0);
            visible.push(t2 - t0);
            after.push(t2.saturating_duration_since(t1));
        }
        let none = || anyhow::anyhow!("no transactions run");
        Ok(TxnHop {
            transactions,
            per_sec: transactions as f64 / started.elapsed().as_secs_f64(),
            produce: Summary::of(&mut produce).ok_or_else(none)?,
            commit: Summary::of(&mut commit).ok_or_else(none)?,
            visible: Summary::of(&mut visible).ok_or_else(none)?,
            after_commit: Summary::of(&mut after).ok_or_else(none)?,
        })
    })();
    stop.store(true, Ordering::Relaxed);
    reader.join();
    result
}

/// Hands each record's key (the transaction's index) and read time to the hop.
struct ReadClock(mpsc::Sender<(u64, Instant)>);

impl OnRecord for ReadClock {
    async fn record(
        &self,
        _registry: &RegistryClient,
        _topic: &str,
        msg: &BorrowedMessage<'_>,
        at: Instant,
    ) {
        if let Some(i) = msg
            .key()
            .and_then(|k| <[u8; 8]>::try_from(k).ok())
            .map(u64::from_be_bytes)
        {
            let _ = self.0.send((i, at));
        }
    }
}
