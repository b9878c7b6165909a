//! The transactional producer: one batch's outcomes, dead letters and input offsets,
//! committed atomically.
//!
//! [`TxnProducer`] is payment's thin layer over eventbus's
//! [`eventbus::TransactionalProducer`]: it builds it with
//! payment's settings, runs its blocking calls on a blocking thread (every librdkafka
//! transactional call blocks on the network and must stay off the async workers), and
//! turns an [`OutRecord`] batch into one transaction:
//!
//! ```text
//! begin_transaction
//! produce every OutRecord (outcomes to their explicit partition, dead letters keyed)
//! send_offsets_to_transaction(next offsets, consumer group metadata)
//! commit                        (waits for the records' delivery reports, then commits)
//! ```
//!
//! What a failure means is eventbus's to decide ([`TxnError`], see
//! [`eventbus::transaction`]); what the batch loop does about it:
//!
//! | [`TxnError`] | the processor |
//! |---|---|
//! | — (retriable: timeout, coordinator moving) | nothing: eventbus retries the call a few times |
//! | [`TxnError::Abortable`] (a record failed, the group generation changed, the coordinator timed the transaction out) | the transaction has been aborted already; rewind the consumer and process the records again |
//! | [`TxnError::Fenced`] | the coordinator timed a transaction out and bumped the epoch (a broker failover), or a newer instance with our `transactional.id` exists: replace the producer with a new one under the same id and redo the batch; fenced again and again within a minute, stop ([`crate::recovery`]) |
//! | [`TxnError::Fatal`] | as fenced: replace the producer, redo the batch |
//!
//! Passing the consumer's group metadata (not just the group id) to
//! `send_offsets_to_transaction` is what makes the offsets part of the group's
//! generation (KIP-447): an instance that lost its partitions in a rebalance cannot
//! commit offsets for them any more, so one `transactional.id` per *instance* (not per
//! partition) is enough to fence zombies.
//!
//! Settings that differ from librdkafka's defaults, and why:
//! - `transactional.id=<group>-<instance>`: stable per instance, so a restarted instance
//!   aborts its predecessor's open transaction and fences it (eventbus also sets
//!   `enable.idempotence=true` and `acks=all`, which no configuration can change);
//! - `transaction.timeout.ms` (10 s, default 60 s): the coordinator aborts a
//!   transaction open longer. Ours are open only while a batch is produced and
//!   committed (tens of ms); a short timeout bounds how long a crashed instance that
//!   does not come back blocks `read_committed` readers (the pipeline) behind its open
//!   transaction; `delivery.timeout.ms` is set to the same value by eventbus (librdkafka
//!   requires it to be no larger);
//! - `compression.type=lz4` and `partitioner=murmur2_random`: in [`tuning`], as every
//!   eventbus producer;
//! - `message.max.bytes` ([`eventbus::dlq::MAX_RECORD_BYTES`], about 2 MiB; default
//!   1,000,000): the dead-letter copy of a record as large as the input topic accepts
//!   must fit, or its batch's transaction fails on every attempt;
//! - `retry.backoff.ms` is left at librdkafka's default (100 ms). It is what a refused
//!   `AddOffsetsToTxn` waits, and it was refused in most transactions while it raced
//!   the batch's own `AddPartitionsToTxn`; eventbus now sends the offsets after the
//!   records are acknowledged, so nothing races (eventbus's [`eventbus::transaction`],
//!   "Offsets after the records": the offsets step fell from 74-96 to 10-15 ms per
//!   transaction). With that, 10 ms instead of 100 gained nothing more. A refusal
//!   because the previous transaction's markers are still being written hits
//!   `AddPartitionsToTxn`, which librdkafka retries after a fixed 20 ms;
//! - statistics off (eventbus's default for producers): they feed no metric.

use std::sync::Arc;
use std::time::Duration;

use eventbus::client::{self, TransactionalOptions, Tuning};
use eventbus::kafka::{BaseRecord, ConsumerGroupMetadata, KafkaError, TopicPartitionList};
use eventbus::{KafkaSettings, TransactionalProducer, TxnError};

use crate::error::PaymentError;
use crate::metrics::PaymentMetrics;
use crate::outcome::OutRecord;

/// The non-default settings of the transactional producer (the exactly-once ones are
/// eventbus's and not tunable).
pub fn tuning() -> Tuning {
    client::tuning([
        // Avro compresses well; lz4 is cheap on the CPU. As every eventbus producer.
        ("compression.type", "lz4".to_owned()),
        // Keys hash as with the Java client (which matters for the keyed dead letters;
        // outcomes carry an explicit partition). As every eventbus producer.
        ("partitioner", "murmur2_random".to_owned()),
        // Dead letters keep the original byte for byte: a record of about 1 MiB (the
        // input topic's limit) plus the dlq.* headers is larger than librdkafka's default
        // (1,000,000); the DLQ topic accepts as much (deploy/topics.toml).
        (
            "message.max.bytes",
            eventbus::dlq::MAX_RECORD_BYTES.to_string(),
        ),
    ])
}

/// A transactional producer with a stable `transactional.id`.
#[derive(Clone)]
pub struct TxnProducer {
    inner: Arc<TransactionalProducer>,
}

impl std::fmt::Debug for TxnProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnProducer")
            .field("transactional_id", &self.inner.transactional_id())
            .finish_non_exhaustive()
    }
}

impl TxnProducer {
    /// Creates the producer (not initialised; see [`TxnProducer::init`]).
    pub fn new(
        kafka: &KafkaSettings,
        transactional_id: &str,
        transaction_timeout: Duration,
        call_timeout: Duration,
        metrics: &PaymentMetrics,
    ) -> Result<Self, PaymentError> {
        let options = TransactionalOptions {
            transactional_id: transactional_id.to_owned(),
            transaction_timeout,
            call_timeout,
            tuning: tuning(),
        };
        // No settle pause (eventbus's default is 10 ms): it shortens the sink's
        // back-to-back transactions, but payment's were as long with it as without
        // (pipeline-bench A/B of 3 December, mean 92-105 vs 95-102 ms at 50 orders/s),
        // and payment's batches already wait `linger` for more orders.
        let inner =
            TransactionalProducer::new(kafka, &options, "txn-producer", metrics.bus.clone())?
                .with_settle(Duration::ZERO);
        Ok(TxnProducer {
            inner: Arc::new(inner),
        })
    }

    /// The `transactional.id`.
    pub fn transactional_id(&self) -> &str {
        self.inner.transactional_id()
    }

    /// `init_transactions`: registers the id with its coordinator, aborts whatever a
    /// previous instance with the same id left open, and fences that instance.
    /// (eventbus retries a coordinator that is still loading for a while.)
    pub async fn init(&self) -> Result<(), PaymentError> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || producer.init())
            .await
            .map_err(PaymentError::task("init_transactions"))?
            .map_err(|e| match e {
                // Nothing to abort before the first transaction: a coordinator that
                // stayed unavailable through the retries.
                TxnError::Abortable(source) => PaymentError::kafka("init_transactions", source),
                other => other.into(),
            })
    }

    /// Produces `records` and commits them with `offsets` in one transaction. Returns
    /// how long the transaction took (begin to commit). On [`TxnError::Abortable`] the
    /// transaction has been aborted: nothing of it is visible.
    pub async fn commit_batch(
        &self,
        records: Vec<OutRecord>,
        offsets: TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<Duration, TxnError> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<_> = records
                .iter()
                .map(|r| r.headers.to_owned_headers())
                .collect();
            let batch = records.iter().zip(headers).map(|(r, headers)| {
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&r.topic).headers(headers);
                if let Some(p) = r.partition {
                    record = record.partition(p);
                }
                if let Some(key) = &r.key {
                    record = record.key(key.as_slice());
                }
                if let Some(value) = &r.value {
                    record = record.payload(value.as_slice());
                }
                record
            });
            producer.commit_records(batch, Some((&offsets, &group)))
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("transaction task failed: {e}");
            Err(TxnError::Fatal(KafkaError::Canceled))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_leaves_the_guarantees_to_eventbus() {
        let tuning = tuning();
        for key in eventbus::config::PROTECTED_KEYS {
            assert!(!tuning.contains_key(*key), "{key} is eventbus's to set");
        }
    }
}
