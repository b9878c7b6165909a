//! The matching consumer: when each order's effect on its own SKU became readable on
//! `stock.updated` with read_committed.
//!
//! Why a thread and runtime of its own: the load's thousands of request tasks must never
//! delay the clock that stamps a record as readable, or the end-to-end figures would
//! include the load generator's queueing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::load::unique_index;
use eventbus::client::{self, GroupOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{Consumer, Message, Offset, TopicPartitionList};
use eventbus::{KafkaSettings, RegistryClient, RegistryConfig};
use schemas::StockUpdated;

/// Per order index: when its SKU's restock and the order's effect became readable.
///
/// The order's effect is the SKU's first record that differs from the restocked state
/// (`on_hand = restock_units, reserved = 0`): normally the reservation (`reserved = 1`).
/// When the pipeline ingests an order and its payment in the same epoch, which happens
/// when it is behind, the epoch's consolidated output shows only the sale
/// (`on_hand = restock_units - 1, reserved = 0`); that record is the order's effect too.
pub(crate) struct Matcher {
    t0: Instant,
    prefix: String,
    /// Units of the restock (0 without one).
    restock_units: i64,
    reserved_at: Vec<AtomicU64>,
    sold_at: Vec<AtomicU64>,
    restocked_at: Vec<AtomicU64>,
    reserved: AtomicU64,
    /// Orders whose sale (payment completed: `on_hand` below the restock) became
    /// readable.
    pub(crate) sold: AtomicU64,
    /// Orders whose first visible effect was the sale (order and payment in one epoch).
    pub(crate) sale_first: AtomicU64,
    /// SKUs whose restock became readable.
    pub(crate) restocked: AtomicU64,
    /// Records read.
    pub(crate) records: AtomicU64,
    /// Records of keys that are not the run's SKUs.
    pub(crate) foreign: AtomicU64,
    /// Records that did not decode as `StockUpdated`.
    pub(crate) undecodable: AtomicU64,
    /// Errors of the consumer.
    pub(crate) consumer_errors: AtomicU64,
    /// Set to end the reader.
    pub(crate) stop: AtomicBool,
}

impl Matcher {
    /// A matcher of `orders` orders of unique SKUs `<prefix><index>`.
    pub(crate) fn new(prefix: String, restock_units: i64, orders: u64) -> Matcher {
        let slots = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Matcher {
            t0: Instant::now(),
            prefix,
            restock_units,
            reserved_at: slots(orders),
            sold_at: slots(orders),
            restocked_at: slots(orders),
            reserved: AtomicU64::new(0),
            sold: AtomicU64::new(0),
            sale_first: AtomicU64::new(0),
            restocked: AtomicU64::new(0),
            records: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            consumer_errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        (at - self.t0).as_nanos() as u64 + 1
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        (stamp > 0).then(|| self.t0 + Duration::from_nanos(stamp - 1))
    }

    /// When order `i`'s effect (reservation or sale) became readable.
    pub(crate) fn reserved_at(&self, i: u64) -> Option<Instant> {
        let slot = self.reserved_at.get(i as usize)?;
        self.instant(slot.load(Ordering::Acquire))
    }

    /// When order `i`'s sale (its payment completed, `on_hand` below the restock) became
    /// readable.
    pub(crate) fn sold_at(&self, i: u64) -> Option<Instant> {
        let slot = self.sold_at.get(i as usize)?;
        self.instant(slot.load(Ordering::Acquire))
    }

    /// Sets `slot` unless already set; true if this was the first.
    fn first(slot: Option<&AtomicU64>, stamp: u64, counter: &AtomicU64) -> bool {
        let first = slot.is_some_and(|slot| {
            slot.compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if first {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    async fn record(
        &self,
        registry: &RegistryClient,
        topic: &str,
        msg: &impl Message,
        at: Instant,
    ) {
        self.records.fetch_add(1, Ordering::Relaxed);
        let index = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| unique_index(&self.prefix, k));
        let Some(index) = index else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match eventbus::codec::decode::<StockUpdated>(registry, topic, msg.payload()).await {
            Ok((event, _)) => {
                let stamp = self.stamp(at);
                let i = index as usize;
                if event.reserved > 0 || event.on_hand != self.restock_units {
                    let first = Self::first(self.reserved_at.get(i), stamp, &self.reserved);
                    if first && event.reserved == 0 {
                        self.sale_first.fetch_add(1, Ordering::Relaxed);
                    }
                    if event.on_hand < self.restock_units {
                        Self::first(self.sold_at.get(i), stamp, &self.sold);
                    }
                } else if event.on_hand > 0 {
                    Self::first(self.restocked_at.get(i), stamp, &self.restocked);
                }
            }
            Err(_) => {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Starts the read_committed consumer on a thread of its own (with its own runtime) and
/// returns once all partitions are assigned.
pub(crate) fn start_matcher(
    kafka: &KafkaSettings,
    topic: String,
    matcher: Arc<Matcher>,
    fetch_wait_ms: u64,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    // A read_committed stream consumer that is only `assign()`ed (below, from the
    // beginning): it never joins its group and never commits.
    let mut options =
        GroupOptions::new(format!("pipeline-bench-{}", uuid::Uuid::new_v4().simple()));
    options.read_committed = true;
    options.tuning = client::tuning([
        // The most the reader adds to a measured latency (`--fetch-wait-ms`).
        ("fetch.wait.max.ms", fetch_wait_ms.to_string()),
        // No statistics: they only feed a group lag gauge, and there are no group offsets.
        ("statistics.interval.ms", "0".to_owned()),
    ]);
    let kafka = kafka.clone();
    let registry = RegistryClient::new(&RegistryConfig::from_env())?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let handle = std::thread::Builder::new()
        .name("stock-updated-reader".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::new(e).context("runtime")));
                    return;
                }
            };
            rt.block_on(async move {
                let context = BusContext::new(
                    "pipeline-bench/stock-updated",
                    None,
                    eventbus::BusMetrics::default(),
                );
                let consumer = match client::group_consumer(&kafka, &options, context) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context("consumer")));
                        return;
                    }
                };
                let assigned = (|| {
                    let meta = consumer
                        .fetch_metadata(Some(&topic), Duration::from_secs(10))
                        .with_context(|| format!("metadata of {topic}"))?;
                    let partitions = meta
                        .topics()
                        .first()
                        .map(|t| t.partitions().len())
                        .unwrap_or(0);
                    if partitions == 0 {
                        bail!("{topic} has no partitions");
                    }
                    let mut tpl = TopicPartitionList::new();
                    for p in 0..partitions as i32 {
                        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
                    }
                    consumer.assign(&tpl)?;
                    anyhow::Ok(())
                })();
                let failed = assigned.is_err();
                let _ = ready_tx.send(assigned);
                if failed {
                    return;
                }
                // Bounded: ends when told to, and in any case after a day.
                let deadline = Instant::now() + Duration::from_secs(24 * 3600);
                while !matcher.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                        Err(_) => {}
                        Ok(Ok(msg)) => {
                            let at = Instant::now();
                            matcher.record(&registry, &topic, &msg, at).await;
                        }
                        Ok(Err(_)) => {
                            matcher.consumer_errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        })?;
    match ready_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e.context("the stock.updated reader did not start")),
        Err(_) => bail!("the stock.updated reader did not start within 60 s"),
    }
}
