//! Collecting a batch: the records polled since the last commit, closed by size, by the
//! commit interval after its first record or by `linger` after its last one (group
//! commit, see the parent module), with the consumer's assignment changes applied
//! between polls, never inside a transaction.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use eventbus::context::AssignmentChange;
use eventbus::kafka::{Consumer, KafkaError, Message, OwnedMessage, RDKafkaErrorCode};

use super::Processor;
use crate::error::PaymentError;
use crate::gateway::PaymentGateway;

/// Records polled since the last commit, and where each partition's part begins.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) records: Vec<OwnedMessage>,
    pub(super) first_offsets: BTreeMap<i32, i64>,
}

impl Batch {
    pub(super) fn push(&mut self, record: OwnedMessage) {
        self.first_offsets
            .entry(record.partition())
            .or_insert(record.offset());
        self.records.push(record);
    }

    pub(super) fn drop_partition(&mut self, p: i32) -> usize {
        let before = self.records.len();
        self.records.retain(|r| r.partition() != p);
        self.first_offsets.remove(&p);
        before - self.records.len()
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The next offset to consume per partition: the last record's offset + 1.
    pub(super) fn next_offsets(&self) -> BTreeMap<i32, i64> {
        let mut next = BTreeMap::new();
        for r in &self.records {
            let entry = next.entry(r.partition()).or_insert(0);
            *entry = (*entry).max(r.offset() + 1);
        }
        next
    }
}

impl<G: PaymentGateway> Processor<G> {
    /// Polls until the batch is full, its commit interval has passed, or shutdown.
    pub(super) async fn collect(
        &mut self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
        stopping: &mut bool,
    ) -> Result<Batch, PaymentError> {
        let consumer = self.consumer.clone();
        let mut batch = Batch::default();
        // The batch closes at the earlier of `commit_interval` after its first record
        // and `linger` after its last one (see the module docs).
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut idle_deadline: Option<tokio::time::Instant> = None;
        let linger = self.transaction.linger;
        // Assignment changes are recorded inside polls that may return no record; look
        // at them regularly so readiness does not wait for the first order.
        let mut housekeeping = tokio::time::interval(Duration::from_millis(200));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while batch.len() < self.transaction.max_batch {
            let close_at = match (deadline, idle_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timer = async {
                match close_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.as_mut(), if !*stopping => {
                    tracing::info!(pending = batch.len(), "shutdown requested; finishing the current batch");
                    *stopping = true;
                    self.health.set_stopping();
                    break;
                }
                () = timer => break,
                received = consumer.recv() => {
                    let record = match received {
                        Ok(m) => Some(m.detach()),
                        Err(e) => {
                            self.on_consume_error(e)?;
                            None
                        }
                    };
                    self.apply_assignment_changes(&mut batch);
                    if let Some(record) = record {
                        self.metrics.bus.consumed.with_label_values(&[record.topic()]).inc();
                        batch.push(record);
                        let now = tokio::time::Instant::now();
                        deadline.get_or_insert(now + self.transaction.commit_interval);
                        if !linger.is_zero() {
                            idle_deadline = Some(now + linger);
                        }
                    }
                }
                _ = housekeeping.tick() => {
                    self.apply_assignment_changes(&mut batch);
                }
            }
        }
        self.apply_assignment_changes(&mut batch);
        Ok(batch)
    }

    fn apply_assignment_changes(&mut self, batch: &mut Batch) {
        for change in self.consumer.context().take_assignment_changes() {
            match change {
                AssignmentChange::Revoked(tps) => {
                    for (topic, p) in tps {
                        if topic != self.topics.order_created {
                            continue;
                        }
                        let dropped = batch.drop_partition(p);
                        if dropped > 0 {
                            tracing::info!(
                                partition = p,
                                dropped,
                                "partition revoked; its uncommitted records go to the next owner"
                            );
                        }
                        self.settled.forget(p);
                        self.assigned.remove(&p);
                    }
                }
                AssignmentChange::Assigned(tps) => {
                    for (topic, p) in tps {
                        if topic == self.topics.order_created {
                            // Another instance may have settled orders here meanwhile.
                            self.settled.forget(p);
                            self.assigned.insert(p);
                        }
                    }
                    self.health.set_joined();
                }
            }
        }
    }

    fn on_consume_error(&self, e: KafkaError) -> Result<(), PaymentError> {
        match &e {
            KafkaError::MessageConsumptionFatal(code) => {
                if *code == RDKafkaErrorCode::FencedInstanceId {
                    Err(PaymentError::Fenced {
                        client: "consumer",
                        source: e,
                    })
                } else {
                    Err(PaymentError::kafka("consume", e))
                }
            }
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            ) => {
                tracing::warn!(topic = %self.topics.order_created, "input topic missing: {e}");
                Ok(())
            }
            _ => {
                tracing::debug!("consume: {e}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventbus::kafka::Timestamp;

    fn record(p: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            p,
            offset,
            None,
        )
    }

    #[test]
    fn batch_offsets_and_revocation() {
        let mut b = Batch::default();
        for (p, o) in [(0, 10), (1, 5), (0, 11), (1, 6), (0, 12)] {
            b.push(record(p, o));
        }
        assert_eq!(b.first_offsets, BTreeMap::from([(0, 10), (1, 5)]));
        assert_eq!(b.next_offsets(), BTreeMap::from([(0, 13), (1, 7)]));
        assert_eq!(b.drop_partition(0), 3);
        assert_eq!(b.len(), 2);
        assert_eq!(b.next_offsets(), BTreeMap::from([(1, 7)]));
        assert_eq!(b.first_offsets, BTreeMap::from([(1, 5)]));
    }
}
