//! The transactional producer: one batch's outcomes, dead letters and input offsets,
//! committed atomically.
//!
//! [`TxnProducer::commit_batch`] runs, on a blocking thread (every librdkafka
//! transactional call blocks on the network and must stay off the async workers):
//!
//! ```text
//! begin_transaction
//! produce every OutRecord (outcomes to their explicit partition, dead letters keyed)
//! send_offsets_to_transaction(next offsets, consumer group metadata)
//! commit_transaction            (flushes the records first)
//! ```
//!
//! and maps every failure onto what the caller must do ([`TxnError`]):
//!
//! | librdkafka says | we do |
//! |---|---|
//! | retriable (timeout, coordinator moving) | the same call again, a few times |
//! | `txn_requires_abort` (a record failed, the group generation changed, the coordinator timed the transaction out) | `abort_transaction`, then [`TxnError::Aborted`]: the caller rewinds the consumer and processes the records again |
//! | fatal, fenced (`PRODUCER_FENCED`, `INVALID_PRODUCER_EPOCH`, `_FENCED`) | [`TxnError::Fenced`]: a newer instance with our `transactional.id` exists; stop |
//! | fatal, other | [`TxnError::Fatal`]: stop; a restart's `init_transactions` cleans up |
//!
//! Passing the consumer's group metadata (not just the group id) to
//! `send_offsets_to_transaction` is what makes the offsets part of the group's
//! generation (KIP-447): an instance that lost its partitions in a rebalance cannot
//! commit offsets for them any more, so one `transactional.id` per *instance* (not per
//! partition) is enough to fence zombies.
//!
//! Settings that differ from librdkafka's defaults, and why:
//! - `transactional.id=<group>-<instance>`: stable per instance, so a restarted instance
//!   aborts its predecessor's open transaction and fences it (implies
//!   `enable.idempotence=true` and `acks=all`);
//! - `transaction.timeout.ms` (10 s, default 60 s): the coordinator aborts a
//!   transaction open longer. Ours are open only while a batch is produced and
//!   committed (tens of ms); a short timeout bounds how long a crashed instance that
//!   does not come back blocks `read_committed` readers (the pipeline) behind its open
//!   transaction;
//! - `delivery.timeout.ms` = the transaction timeout: librdkafka requires it to be no
//!   larger;
//! - `compression.type=lz4` and `partitioner=murmur2_random`: as every eventbus producer
//!   (Avro compresses well; keys hash as with the Java client, which matters for the
//!   keyed dead letters; outcomes carry an explicit partition);
//! - `statistics.interval.ms=0`: producer statistics feed no metric.

use std::time::{Duration, Instant};

use eventbus::KafkaConfig;
use eventbus::context::BusContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::error::PaymentError;
use crate::metrics::PaymentMetrics;
use crate::outcome::OutRecord;

/// How often a retriable transactional call is tried before giving up on it.
const CALL_ATTEMPTS: u32 = 5;

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The transaction was aborted; nothing of it is visible. Rewind and retry.
    #[error("transaction aborted: {0}")]
    Aborted(KafkaError),
    /// A newer instance with the same `transactional.id` fenced this one.
    #[error("producer fenced: {0}")]
    Fenced(KafkaError),
    /// The producer cannot continue.
    #[error("fatal transaction error: {0}")]
    Fatal(KafkaError),
}

impl From<TxnError> for PaymentError {
    fn from(e: TxnError) -> Self {
        match e {
            TxnError::Fenced(e) => PaymentError::Fenced(e.to_string()),
            TxnError::Aborted(e) | TxnError::Fatal(e) => PaymentError::kafka("transaction", e),
        }
    }
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Retry,
    Abort,
    Fenced,
    Fatal,
}

fn is_fenced_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::TransactionCoordinatorFenced
    )
}

fn classify(e: &KafkaError) -> Next {
    match e {
        KafkaError::Transaction(err) => {
            if err.is_fatal() {
                if is_fenced_code(err.code()) {
                    Next::Fenced
                } else {
                    Next::Fatal
                }
            } else if err.txn_requires_abort() {
                Next::Abort
            } else if err.is_retriable() {
                Next::Retry
            } else if is_fenced_code(err.code()) {
                Next::Fenced
            } else {
                // A state error: the producer and this code disagree about where the
                // transaction is. Not safe to go on.
                Next::Fatal
            }
        }
        other => match other.rdkafka_error_code() {
            Some(code) if is_fenced_code(code) => Next::Fenced,
            Some(RDKafkaErrorCode::Fatal) => Next::Fatal,
            _ => Next::Abort,
        },
    }
}

/// A transactional producer with a stable `transactional.id`.
pub struct TxnProducer {
    inner: FutureProducer<BusContext>,
    transactional_id: String,
    call_timeout: Duration,
}

impl std::fmt::Debug for TxnProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnProducer")
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

impl TxnProducer {
    /// Creates the producer (not initialised; see [`TxnProducer::init`]).
    pub fn new(
        kafka: &KafkaConfig,
        transactional_id: &str,
        transaction_timeout: Duration,
        call_timeout: Duration,
        metrics: &PaymentMetrics,
    ) -> Result<Self, PaymentError> {
        let timeout_ms = transaction_timeout.as_millis().to_string();
        let mut config = kafka.client_config();
        // Tunables; `kafka.extra` (already applied by client_config) may override
        // them, so it is applied again after them.
        config
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random")
            .set("statistics.interval.ms", "0");
        for (key, value) in &kafka.extra {
            config.set(key, value);
        }
        // What exactly-once rests on: never overridable. Reasons in the module docs.
        config
            .set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", &timeout_ms)
            .set("delivery.timeout.ms", &timeout_ms);
        let context = BusContext::new(
            format!("{}/txn-producer", kafka.client_id),
            None,
            metrics.bus.clone(),
        );
        let inner: FutureProducer<BusContext> = config
            .create_with_context(context)
            .map_err(|e| PaymentError::kafka("create transactional producer", e))?;
        Ok(TxnProducer {
            inner,
            transactional_id: transactional_id.to_owned(),
            call_timeout,
        })
    }

    /// The `transactional.id`.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// `init_transactions`: registers the id with its coordinator, aborts whatever a
    /// previous instance with the same id left open, and fences that instance.
    pub async fn init(&self) -> Result<(), PaymentError> {
        let producer = self.inner.clone();
        let timeout = self.call_timeout;
        tokio::task::spawn_blocking(move || {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match producer.init_transactions(timeout) {
                    Ok(()) => return Ok(()),
                    Err(e) => match classify(&e) {
                        Next::Retry | Next::Abort if attempt < CALL_ATTEMPTS * 2 => {
                            tracing::warn!(attempt, "init_transactions: {e}; retrying");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Next::Fenced => return Err(PaymentError::Fenced(e.to_string())),
                        _ => return Err(PaymentError::kafka("init_transactions", e)),
                    },
                }
            }
        })
        .await
        .map_err(|e| PaymentError::Task(format!("init_transactions: {e}")))?
    }

    /// Produces `records` and commits them with `offsets` in one transaction. Returns
    /// how long the transaction took (begin to commit).
    pub async fn commit_batch(
        &self,
        records: Vec<OutRecord>,
        offsets: TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<Duration, TxnError> {
        let producer = self.inner.clone();
        let timeout = self.call_timeout;
        tokio::task::spawn_blocking(move || {
            commit_blocking(&producer, &records, &offsets, &group, timeout)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("transaction task failed: {e}");
            Err(TxnError::Fatal(KafkaError::Canceled))
        })
    }
}

/// Calls `f` until it succeeds, fails non-retriably, or [`CALL_ATTEMPTS`] are used.
fn with_retries(
    what: &str,
    mut f: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), (Next, KafkaError)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f() {
            Ok(()) => return Ok(()),
            Err(e) => {
                let next = classify(&e);
                if next == Next::Retry && attempt < CALL_ATTEMPTS {
                    tracing::warn!(attempt, "{what}: {e}; retrying");
                    continue;
                }
                return Err((
                    if next == Next::Retry {
                        Next::Abort
                    } else {
                        next
                    },
                    e,
                ));
            }
        }
    }
}

fn commit_blocking(
    producer: &FutureProducer<BusContext>,
    records: &[OutRecord],
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
    timeout: Duration,
) -> Result<Duration, TxnError> {
    let started = Instant::now();
    if let Err(e) = producer.begin_transaction() {
        return match classify(&e) {
            Next::Fenced => Err(TxnError::Fenced(e)),
            Next::Fatal => Err(TxnError::Fatal(e)),
            Next::Retry | Next::Abort => Err(TxnError::Aborted(e)),
        };
    }
    let outcome = produce_and_commit(producer, records, offsets, group, timeout);
    match outcome {
        Ok(()) => Ok(started.elapsed()),
        Err((Next::Fenced, e)) => Err(TxnError::Fenced(e)),
        Err((Next::Fatal, e)) => Err(TxnError::Fatal(e)),
        Err((_, e)) => {
            tracing::warn!("aborting the batch's transaction: {e}");
            match with_retries("abort_transaction", || producer.abort_transaction(timeout)) {
                Ok(()) => Err(TxnError::Aborted(e)),
                Err((Next::Fenced, abort_error)) => Err(TxnError::Fenced(abort_error)),
                Err((_, abort_error)) => Err(TxnError::Fatal(abort_error)),
            }
        }
    }
}

fn produce_and_commit(
    producer: &FutureProducer<BusContext>,
    records: &[OutRecord],
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
    timeout: Duration,
) -> Result<(), (Next, KafkaError)> {
    for r in records {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&r.topic).headers(r.headers.to_owned_headers());
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        if let Some(key) = &r.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &r.value {
            record = record.payload(value.as_slice());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match producer.send_result(record) {
                // The delivery report is not awaited: commit_transaction flushes and
                // fails (abortably) if any record of the transaction was not delivered.
                Ok(_delivery) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    let next = classify(&e);
                    return Err((
                        if next == Next::Retry {
                            Next::Abort
                        } else {
                            next
                        },
                        e,
                    ));
                }
            }
        }
    }
    with_retries("send_offsets_to_transaction", || {
        producer.send_offsets_to_transaction(offsets, group, timeout)
    })?;
    with_retries("commit_transaction", || {
        producer.commit_transaction(timeout)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_abort_unless_fenced_or_fatal() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(classify(&e), Next::Abort);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::Fenced);
        assert_eq!(classify(&e), Next::Fenced);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::Fatal);
        assert_eq!(classify(&e), Next::Fatal);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidProducerEpoch);
        assert_eq!(classify(&e), Next::Fenced);
    }
}
