//! Getting past a fenced or fatally failed transactional producer without a restart.
//!
//! # Why a live instance gets fenced
//!
//! When a broker dies, the partitions it led have no leader until the controller
//! notices (its broker session timeout, ~9 s locally) and elects one. A batch
//! transaction that produced to such a partition cannot complete meanwhile; once it has
//! been open longer than `transaction.timeout.ms` (10 s), the transaction coordinator
//! aborts it on its own **and bumps the producer epoch** (Kafka ≥ 2.5, KIP-360). The
//! producer's next request with the old epoch (`EndTxn`, `AddPartitionsToTxn`) is then
//! refused with `PRODUCER_FENCED` (`INVALID_PRODUCER_EPOCH`), or, for a commit that raced
//! the coordinator's abort under transactions V2, `INVALID_TXN_STATE` (KAFKA-20785).
//! librdkafka treats both as fatal: that handle can do nothing more (it does not
//! implement KIP-588's recovery from a timed-out transaction; librdkafka#3297). The same
//! happens when an abort after a delivery timeout finds the transaction already aborted
//! by the coordinator. `make chaos` (broker kill) showed it: payment exited in 2 of 3
//! runs. Fencing is what a *second live instance* with the same `transactional.id` would
//! cause too, and that one must still stop the service; the two are told apart by
//! repetition ([`ReinitBudget`]).
//!
//! # What the processor does ([`crate::processor`])
//!
//! 1. counts the failure in the [`ReinitBudget`]; past [`TransactionConfig::reinit_limit`]
//!    failures within [`TransactionConfig::reinit_window`] the service stops with
//!    [`PaymentError::ReinitsExhausted`];
//! 2. logs a WARN, counts `payment_producer_reinits_total{reason}`, waits
//!    [`ReinitBudget::delay`] (0.5 s, 1 s, 2 s, ... at most 5 s);
//! 3. replaces the producer with a new one under the **same** `transactional.id`
//!    ([`new_producer`]): its `init_transactions` bumps the epoch again (the old handle
//!    stays fenced for good), aborts whatever the old one left open and waits for that
//!    abort to complete, so the group's committed offsets are final afterwards. While no
//!    coordinator is available (two brokers down) it is tried again, backing off up to
//!    5 s, for at most [`REPLACEMENT_PATIENCE`]; an outage does not count as fencing;
//! 4. forgets the settled-orders index of every partition: the failed transaction may
//!    have committed after all (a commit the coordinator accepted whose answer was lost),
//!    and the index is then reloaded from the committed outcomes before the next batch;
//! 5. seeks the batch's partitions back to the **group's committed offsets**
//!    ([`rewind_to_committed`]; the batch's first offsets if they cannot be fetched), so
//!    every order no committed transaction covers is settled again.
//!
//! Exactly one outcome per order still holds: outcomes and offsets commit atomically;
//! the failed transaction is either aborted (by the coordinator or by the new producer's
//! `init_transactions`) or committed, and in both cases the committed offsets and the
//! reloaded index say which orders have outcomes. An order settled again goes to the
//! gateway with the same idempotency key, so it is not charged twice.
//!
//! [`TransactionConfig::reinit_limit`]: crate::config::TransactionConfig::reinit_limit
//! [`TransactionConfig::reinit_window`]: crate::config::TransactionConfig::reinit_window

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::kafka::{Consumer, Offset, TopicPartitionList};

use crate::config::TransactionConfig;
use crate::error::PaymentError;
use crate::metrics::PaymentMetrics;
use crate::processor::OrderConsumer;
use crate::transaction::TxnProducer;

/// The first wait before a replacement producer is initialised.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait before a replacement (or before its next try).
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long a replacement's `init_transactions` is tried again while the cluster cannot
/// provide a transaction coordinator (an outage); then the service stops with the error.
pub const REPLACEMENT_PATIENCE: Duration = Duration::from_secs(300);

/// How many producer replacements are allowed within a sliding window.
#[derive(Debug)]
pub struct ReinitBudget {
    limit: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl ReinitBudget {
    /// `limit` replacements within any `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        ReinitBudget {
            limit,
            window,
            recent: VecDeque::new(),
        }
    }

    /// The budget of `config`.
    pub fn of(config: &TransactionConfig) -> Self {
        ReinitBudget::new(config.reinit_limit, config.reinit_window)
    }

    /// Records a failure at `now`. `Ok(n)`: replace the producer, the `n`th time within
    /// the window; `Err(n)`: `n` failures within the window is one too many, stop.
    pub fn record(&mut self, now: Instant) -> Result<u32, u32> {
        while let Some(first) = self.recent.front() {
            if now.saturating_duration_since(*first) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        let n = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if n > self.limit { Err(n) } else { Ok(n) }
    }

    /// The wait before the `n`th replacement within the window: 0.5 s doubling, at most 5 s.
    pub fn delay(n: u32) -> Duration {
        FIRST_DELAY
            .saturating_mul(1 << n.saturating_sub(1).min(8))
            .min(MAX_DELAY)
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// A new transactional producer with the same `transactional.id`, initialised: the old
/// one's epoch is fenced and whatever it left open is aborted once this returns.
pub async fn new_producer(
    kafka: &eventbus::KafkaSettings,
    transactional_id: &str,
    transaction: &TransactionConfig,
    metrics: &PaymentMetrics,
) -> Result<TxnProducer, PaymentError> {
    let producer = TxnProducer::new(
        kafka,
        transactional_id,
        transaction.transaction_timeout,
        transaction.call_timeout,
        metrics,
    )?;
    producer.init().await?;
    Ok(producer)
}

/// Seeks `first_offsets`' partitions of `topic` to the group's committed offsets (the
/// beginning where nothing is committed: `auto.offset.reset=earliest`). When the
/// committed offsets cannot be fetched within `timeout`, seeks to `first_offsets`
/// instead, which is as safe: records re-read whose orders have committed outcomes are
/// skipped by the settled-orders index.
pub async fn rewind_to_committed(
    consumer: &Arc<OrderConsumer>,
    topic: &str,
    first_offsets: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<(), PaymentError> {
    if first_offsets.is_empty() {
        return Ok(());
    }
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    let first_offsets = first_offsets.clone();
    tokio::task::spawn_blocking(move || {
        let mut asked = TopicPartitionList::new();
        for p in first_offsets.keys() {
            asked.add_partition(&topic, *p);
        }
        let targets: BTreeMap<i32, Offset> = match consumer.committed_offsets(asked, timeout) {
            Ok(committed) => committed
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) => Offset::Offset(o),
                        _ => Offset::Beginning,
                    };
                    (e.partition(), offset)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(
                    "cannot fetch the group's committed offsets ({e}); rewinding to the batch's first offsets"
                );
                first_offsets
                    .iter()
                    .map(|(p, o)| (*p, Offset::Offset(*o)))
                    .collect()
            }
        };
        let mut seek = TopicPartitionList::new();
        for (p, offset) in &targets {
            seek.add_partition_offset(&topic, *p, *offset)
                .map_err(|e| PaymentError::kafka("seek list", e))?;
        }
        tracing::info!(?targets, "rewound to the group's committed offsets");
        let result = consumer
            .seek_partitions(seek, timeout)
            .map_err(|e| PaymentError::kafka("seek back to the committed offsets", e))?;
        for element in result.elements() {
            if let Err(e) = element.error() {
                // A partition this member no longer owns (its group membership was taken
                // over meanwhile, before the revocation reached the loop) is the next
                // owner's to resume from the committed offset; any other failure would
                // skip records, so it stops the service.
                let still_ours = consumer
                    .assignment()
                    .map(|a| {
                        a.find_partition(element.topic(), element.partition())
                            .is_some()
                    })
                    .unwrap_or(true);
                if still_ours {
                    return Err(PaymentError::kafka(
                        format!(
                            "seek {} {} back to the committed offset",
                            element.topic(),
                            element.partition()
                        ),
                        e,
                    ));
                }
                tracing::info!(
                    partition = element.partition(),
                    "not rewound: the partition is no longer assigned to this member ({e})"
                );
            }
        }
        Ok(())
    })
    .await
    .map_err(PaymentError::task("rewind"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_slides_and_stops_past_its_limit() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut budget = ReinitBudget::new(2, s(60));
        assert_eq!(budget.record(t0), Ok(1));
        assert_eq!(budget.record(t0 + s(10)), Ok(2));
        // A third failure within 60 s of the first: a second live instance.
        assert_eq!(budget.record(t0 + s(20)), Err(3));
        // Failures spread out never exhaust it.
        let mut budget = ReinitBudget::new(2, s(60));
        for i in 0..10 {
            assert!(budget.record(t0 + s(61 * i)).is_ok(), "failure {i}");
        }
        // 0 = never replace.
        assert_eq!(ReinitBudget::new(0, s(60)).record(t0), Err(1));
    }

    #[test]
    fn delays_double_and_are_capped() {
        assert_eq!(ReinitBudget::delay(1), Duration::from_millis(500));
        assert_eq!(ReinitBudget::delay(2), Duration::from_secs(1));
        assert_eq!(ReinitBudget::delay(3), Duration::from_secs(2));
        assert_eq!(ReinitBudget::delay(5), Duration::from_secs(5));
        assert_eq!(ReinitBudget::delay(u32::MAX), Duration::from_secs(5));
    }
}
