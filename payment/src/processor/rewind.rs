//! Putting a batch back: after an aborted transaction or a registry that cannot be
//! reached, the consumer is sought back so that the same records come again; after a
//! fenced or fatal producer, the producer is replaced and the partitions rewound to
//! the group's committed offsets ([`crate::recovery`] says why that is exact).

use std::collections::BTreeMap;
use std::time::Duration;

use eventbus::kafka::{Consumer, Offset, TopicPartitionList};
use eventbus::{Fault, TxnError};

use super::Processor;
use super::batch::Batch;
use crate::error::PaymentError;
use crate::gateway::PaymentGateway;
use crate::recovery::{self, ReinitBudget};

impl<G: PaymentGateway> Processor<G> {
    /// After the producer was fenced or failed fatally: a new producer with the same
    /// `transactional.id`, the settled index forgotten, the batch's partitions rewound to
    /// the committed offsets; or, past the [`ReinitBudget`], the error that stops the
    /// service. See [`crate::recovery`].
    pub(super) async fn replace_producer(
        &mut self,
        failure: TxnError,
        batch: &Batch,
    ) -> Result<(), PaymentError> {
        let reason = match failure {
            TxnError::Fenced(_) => "fenced",
            _ => "fatal",
        };
        let failure = PaymentError::from(failure);
        let n = match self.reinits.record(std::time::Instant::now()) {
            Ok(n) => n,
            Err(failures) => {
                return Err(PaymentError::ReinitsExhausted {
                    transactional_id: self.transactional_id.clone(),
                    failures,
                    window: self.reinits.window(),
                    source: Box::new(failure),
                });
            }
        };
        let mut delay = ReinitBudget::delay(n);
        tracing::warn!(
            transactional_id = %self.transactional_id,
            reason,
            failures_in_window = n,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            records = batch.len(),
            "transactional producer cannot go on; replacing it with a new one under the same transactional.id: {}",
            eventbus::chain(&failure)
        );
        self.metrics
            .producer_reinits
            .with_label_values(&[reason])
            .inc();
        // The replacement's init_transactions needs the transaction coordinator: while
        // the cluster cannot provide one (an outage, not a second instance), keep trying,
        // for at most REPLACEMENT_PATIENCE.
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(delay).await;
            match recovery::new_producer(
                &self.kafka,
                &self.transactional_id,
                &self.transaction,
                &self.metrics,
            )
            .await
            {
                Ok(producer) => {
                    let old = std::mem::replace(&mut self.producer, producer);
                    // Destroying a client blocks on the network: off the async workers,
                    // and not waited for (it may wait out requests to a dead broker).
                    drop(tokio::task::spawn_blocking(move || drop(old)));
                    break;
                }
                // Not something a new producer gets past (authorization, configuration).
                Err(e) if e.fault() == Fault::Setup => return Err(e),
                Err(e) if started.elapsed() >= recovery::REPLACEMENT_PATIENCE => return Err(e),
                Err(e) => {
                    delay = (delay * 2).min(recovery::MAX_DELAY);
                    tracing::warn!(
                        transactional_id = %self.transactional_id,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "the replacement transactional producer could not be initialised; trying again: {}",
                        eventbus::chain(&e)
                    );
                }
            }
        }
        tracing::info!(transactional_id = %self.transactional_id, "transactional producer replaced");
        // The failed transaction may have committed after all: the index is reloaded
        // from the committed outcomes before the next batch.
        let partitions: Vec<i32> = self
            .assigned
            .iter()
            .chain(batch.first_offsets.keys())
            .copied()
            .collect();
        for p in partitions {
            self.settled.forget(p);
        }
        self.rewind_to_committed(batch).await
    }

    /// Seeks the batch's (still assigned) partitions back to the group's committed
    /// offsets ([`recovery::rewind_to_committed`]).
    pub(super) async fn rewind_to_committed(&self, batch: &Batch) -> Result<(), PaymentError> {
        let first: BTreeMap<i32, i64> = batch
            .first_offsets
            .iter()
            .filter(|(p, _)| self.assigned.contains(p))
            .map(|(p, o)| (*p, *o))
            .collect();
        recovery::rewind_to_committed(
            &self.consumer,
            &self.topics.order_created,
            &first,
            self.transaction.call_timeout,
        )
        .await
    }

    /// Seeks the batch's partitions back to the batch's first offsets, so the same
    /// records are polled again. A failed seek would silently skip records, so it
    /// stops the service instead (a restart resumes from the committed offsets).
    pub(super) async fn rewind(&self, batch: &Batch) -> Result<(), PaymentError> {
        let mut tpl = TopicPartitionList::new();
        for (p, first) in &batch.first_offsets {
            if self.assigned.contains(p) {
                tpl.add_partition_offset(&self.topics.order_created, *p, Offset::Offset(*first))
                    .map_err(|e| PaymentError::kafka("seek list", e))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || {
            consumer.seek_partitions(tpl, Duration::from_secs(10))
        })
        .await
        .map_err(PaymentError::task("seek"))?
        .map_err(|e| PaymentError::kafka("seek back after an aborted batch", e))?;
        for element in result.elements() {
            if let Err(e) = element.error() {
                return Err(PaymentError::kafka(
                    format!(
                        "seek {} {} back after an aborted batch",
                        element.topic(),
                        element.partition()
                    ),
                    e,
                ));
            }
        }
        Ok(())
    }
}
