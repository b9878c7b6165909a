//! A read_committed reader of some of the stack's topics on a thread and runtime of its
//! own, handing every record with the moment it was read to an [`OnRecord`].
//!
//! Why a thread of its own: the load's thousands of request tasks must never delay the
//! clock that stamps a record as readable, or the figures would include the load
//! generator's queueing. Why read_committed: the pipeline and payment write in Kafka
//! transactions, and a record of an open or aborted transaction must not count as
//! delivered. The consumer is only `assign()`ed, from the beginning of every partition:
//! it never joins its group and never commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventbus::client::{self, GroupOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{BorrowedMessage, Consumer, Message, Offset, Timestamp, TopicPartitionList};
use eventbus::{KafkaSettings, RegistryClient, RegistryConfig};

/// What a reader does with each record.
pub(crate) trait OnRecord: Send + Sync + 'static {
    /// A record of `topic`, read at `at`.
    async fn record(
        &self,
        registry: &RegistryClient,
        topic: &str,
        msg: &BorrowedMessage<'_>,
        at: Instant,
    );
}

/// The record's timestamp in ms since the epoch (its producer's CreateTime), 0 without.
pub(crate) fn create_time_ms(msg: &impl Message) -> u64 {
    match msg.timestamp() {
        Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms.max(0) as u64,
        Timestamp::NotAvailable => 0,
    }
}

/// A running reader: its thread and its consumer's error count.
pub(crate) struct Reader {
    handle: std::thread::JoinHandle<()>,
    errors: Arc<AtomicU64>,
}

impl Reader {
    /// Errors the consumer reported so far.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Waits for the thread (set the reader's stop flag first).
    pub(crate) fn join(self) {
        let _ = self.handle.join();
    }
}

/// Starts the reader of `topics` on a thread named `name` (with its own runtime) and
/// returns once all their partitions are assigned; it ends once `stop` is set.
pub(crate) fn start_reader<H: OnRecord>(
    kafka: &KafkaSettings,
    name: &str,
    topics: Vec<String>,
    handler: Arc<H>,
    stop: Arc<AtomicBool>,
    fetch_wait_ms: u64,
) -> anyhow::Result<Reader> {
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
    let context_name = format!("pipeline-bench/{name}");
    let errors = Arc::new(AtomicU64::new(0));
    let counted = errors.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let handle = std::thread::Builder::new()
        .name(name.into())
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
                let context = BusContext::new(context_name, None, eventbus::BusMetrics::default());
                let consumer = match client::group_consumer(&kafka, &options, context) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context("consumer")));
                        return;
                    }
                };
                let assigned = (|| {
                    let mut tpl = TopicPartitionList::new();
                    for topic in &topics {
                        let partitions =
                            client::partition_count(&consumer, topic, Duration::from_secs(10))
                                .with_context(|| format!("metadata of {topic}"))?;
                        if partitions == 0 {
                            bail!("{topic} has no partitions");
                        }
                        for p in 0..partitions {
                            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
                        }
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
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                        Err(_) => {}
                        Ok(Ok(msg)) => {
                            let at = Instant::now();
                            let topic = msg.topic().to_owned();
                            handler.record(&registry, &topic, &msg, at).await;
                        }
                        Ok(Err(_)) => {
                            counted.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        })?;
    match ready_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => Ok(Reader { handle, errors }),
        Ok(Err(e)) => Err(e.context(format!("the {name} reader did not start"))),
        Err(_) => bail!("the {name} reader did not start within 60 s"),
    }
}
