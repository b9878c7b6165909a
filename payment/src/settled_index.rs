//! The settled-orders index: which orders of an assigned partition already have an
//! outcome, so that a duplicate `order.created` (a redrive, a replay, a producer retry)
//! is skipped instead of charged and published again.
//!
//! # Why the topics themselves are the index
//!
//! Offsets and outcomes commit atomically, so *re-processing after a crash* cannot
//! double an outcome: the crashed batch's outcomes were aborted along with its offsets.
//! A *second record* for the same order is different: it has its own offset, and
//! nothing in the offsets says its order was settled. The payment topics do say it, and
//! they are the only record that is exactly as committed as the offsets: an order has
//! been settled **iff** its `payment.completed` or `payment.failed` is visible to a
//! `read_committed` reader. Any side store (a database, a compacted topic) could
//! disagree with them after a crash; reading them cannot.
//!
//! Outcomes are written to the same partition number as their order
//! ([`crate::outcome`]), and the order and payment topics share one partition count, so
//! the outcomes of an input partition `p` are exactly partition `p` of the two payment
//! topics. The index of `p` is therefore built by reading partition `p` of both topics,
//! `read_committed`, from the beginning to the end, keeping only the keys (order ids);
//! then every outcome this instance commits is added to it.
//!
//! # When it is loaded, and why then
//!
//! When the first batch that holds a record of a not-yet-loaded partition is about to
//! be settled, for every unloaded partition of the assignment at once (not when the
//! assignment callback fires, and not one partition per batch). By then the consumer
//! has fetched its committed offsets, and with `isolation.level=read_committed`
//! librdkafka fetches them with `require_stable` (KIP-447): the broker answers
//! `UNSTABLE_OFFSET_COMMIT` while a transaction that carries offsets of a partition (a
//! previous owner's last batch) is still open, and librdkafka retries the whole
//! offset request of the assignment until every partition in it is stable
//! (`rd_kafka_handle_OffsetFetch`, `retry_unstable`). So once any record of the
//! assignment has arrived, every transaction with outcomes in these partitions is
//! either decided, or has no offsets yet and is doomed: its producer lost the
//! partitions, so its `send_offsets_to_transaction` fails on the old generation and it
//! aborts. Reading up to the last stable offset therefore sees every outcome that will
//! ever be visible. (Residual case: librdkafka gives up retrying the request and falls
//! back to per-partition retries, and a previous owner's transaction stays open that
//! long. A duplicate of an order settled in exactly that transaction would then get a
//! second outcome, but still no second charge: the gateway's idempotency key.)
//!
//! A partition that is revoked forgets its index; a new assignment reloads it, because
//! another instance may have settled orders in between.
//!
//! # Cost and limits
//!
//! Loading reads both payment partitions in full: about 16 bytes of memory and one
//! record read per settled order, bounded by the topics' retention (7 days by default).
//! Duplicates older than the retention are not recognised; if that matters, raise the
//! retention of the payment topics or keep a compacted per-order index. Reading happens
//! on blocking threads with an eventbus reader per topic ([`client::reader`]: assigned,
//! never joining a group, nothing committed); each load costs about 100-200 ms of
//! client set-up on top of the reading, once per assignment.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use eventbus::client::{self, ReaderOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{
    Consumer, KafkaError, Message, Offset, RDKafkaErrorCode, TopicPartitionList,
};
use eventbus::{BusMetrics, KafkaSettings};
use uuid::Uuid;

use crate::error::PaymentError;

/// The settled order ids of each loaded partition.
#[derive(Debug, Default)]
pub struct SettledIndex {
    partitions: HashMap<i32, HashSet<Uuid>>,
}

impl SettledIndex {
    /// Whether partition `p` has been loaded since it was assigned.
    pub fn is_loaded(&self, p: i32) -> bool {
        self.partitions.contains_key(&p)
    }

    /// Whether `order_id` has an outcome in partition `p`.
    pub fn contains(&self, p: i32, order_id: &Uuid) -> bool {
        self.partitions
            .get(&p)
            .is_some_and(|s| s.contains(order_id))
    }

    /// Records a committed outcome in a loaded partition (an unloaded one will read
    /// it from the topics when it is loaded).
    pub fn insert(&mut self, p: i32, order_id: Uuid) {
        if let Some(settled) = self.partitions.get_mut(&p) {
            settled.insert(order_id);
        }
    }

    /// Installs a loaded partition.
    pub fn install(&mut self, p: i32, settled: HashSet<Uuid>) {
        self.partitions.insert(p, settled);
    }

    /// Forgets a partition (revoked, or assigned anew).
    pub fn forget(&mut self, p: i32) {
        self.partitions.remove(&p);
    }

    /// Settled orders known, over all partitions.
    pub fn len(&self) -> usize {
        self.partitions.values().map(HashSet::len).sum()
    }

    /// Whether no order is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads partitions `partitions` of every topic in `topics` (`read_committed`, to the
/// end) and returns the order ids found in the keys, by partition. Each topic gets its
/// own reader, and the readers run in parallel. `metrics` are the service's (the
/// readers' client context reports to them).
pub async fn load(
    kafka: &KafkaSettings,
    topics: &[String],
    partitions: &[i32],
    timeout: Duration,
    metrics: &BusMetrics,
) -> Result<HashMap<i32, HashSet<Uuid>>, PaymentError> {
    let kafka = kafka.clone();
    let metrics = metrics.clone();
    let topics = topics.to_vec();
    let partitions = partitions.to_vec();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        // One reader per topic: librdkafka's end-of-partition event names only the
        // partition number, which would be ambiguous across two topics.
        let results: Vec<Result<HashMap<i32, HashSet<Uuid>>, PaymentError>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = topics
                    .iter()
                    .map(|topic| {
                        let (kafka, partitions) = (&kafka, &partitions);
                        let metrics = metrics.clone();
                        scope.spawn(move || read_keys(kafka, topic, partitions, deadline, metrics))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(PaymentError::Panicked("settled-index reader")))
                    })
                    .collect()
            });
        let mut found: HashMap<i32, HashSet<Uuid>> =
            partitions.iter().map(|p| (*p, HashSet::new())).collect();
        for result in results {
            for (p, ids) in result? {
                found.entry(p).or_default().extend(ids);
            }
        }
        Ok(found)
    })
    .await
    .map_err(PaymentError::task("settled-index load"))?
}

/// Reads `topic`'s `partitions` to their end.
fn read_keys(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: &[i32],
    deadline: Instant,
    metrics: BusMetrics,
) -> Result<HashMap<i32, HashSet<Uuid>>, PaymentError> {
    let mut found: HashMap<i32, HashSet<Uuid>> = HashMap::new();
    let options = ReaderOptions {
        // Only outcomes of committed transactions settle an order.
        read_committed: true,
        // The end of a partition is where reading stops; with read_committed it is
        // signalled at the last stable offset, past aborted records and markers.
        partition_eof: true,
        // librdkafka's assign() needs a group handle; the reader never joins it and
        // never commits. It keeps the service's `payment-service` prefix, which is what
        // the ACLs grant the service's principal.
        group_id: Some(format!("{}-settled-index", kafka.client_id)),
        ..ReaderOptions::default()
    };
    // The end-of-partition events this reader asks for are not errors to the shared
    // context either (it logs them at DEBUG).
    let context = BusContext::new(format!("{}/settled-index", kafka.client_id), None, metrics);
    let consumer = client::reader(kafka, &options, context)?;
    let request = Duration::from_secs(10);
    let mut open: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, request)
            .map_err(|e| PaymentError::kafka(format!("watermarks of {topic}/{p}"), e))?;
        if low < high {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| PaymentError::kafka("assign", e))?;
            open.insert(p, high);
        }
    }
    if open.is_empty() {
        return Ok(found);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| PaymentError::kafka(format!("assign {topic}"), e))?;
    let mut read = 0u64;
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PaymentError::Kafka {
                operation: format!(
                    "loading settled orders from {topic} partitions {:?}",
                    open.keys().collect::<Vec<_>>()
                ),
                source: KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
            });
        }
        match consumer.poll(left.min(Duration::from_millis(500))) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition();
                read += 1;
                if let Some(id) = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| Uuid::try_parse(k).ok())
                {
                    found.entry(p).or_default().insert(id);
                }
                if open.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                    open.remove(&p);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => {
                tracing::warn!(topic, "reading settled orders: {e}");
            }
        }
    }
    tracing::debug!(topic, read, "settled orders read");
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_tracks_partitions_separately() {
        let mut index = SettledIndex::default();
        let id = Uuid::from_u128(1);
        assert!(!index.is_loaded(0));
        index.install(0, HashSet::from([id]));
        assert!(index.is_loaded(0) && index.contains(0, &id));
        assert!(!index.contains(1, &id));
        index.insert(1, Uuid::from_u128(2));
        assert!(
            !index.is_loaded(1),
            "inserting does not make a partition loaded"
        );
        index.insert(0, Uuid::from_u128(2));
        assert_eq!(index.len(), 2);
        index.forget(0);
        assert!(!index.is_loaded(0) && !index.contains(0, &id));
    }
}
