//! One order's time by stage, from the timestamps its records already carry.
//!
//! Why from records: every hop of an order leaves a record whose timestamp is its
//! producer's clock at `produce()` (Kafka's CreateTime), on this one machine: ingress's
//! `order.created`, payment's `payment.completed` (inside its transaction), the sink's
//! `stock.updated` that shows the sale (inside its). With the moment the request left,
//! the 201 arrived and the sale became readable (the bench's clock), they cut the sale's
//! latency into consecutive stages without touching the services:
//!
//! | stage | from | to |
//! |---|---|---|
//! | ingress accept | request sent | `order.created` produced |
//! | produce → 201 | `order.created` produced | 201 received (acks=all) |
//! | payment | `order.created` produced | `payment.completed` produced |
//! | outcome produced → sale produced | `payment.completed` produced | sale record produced (payment's commit, the pipeline's read, epoch close, the wait for the sink's transaction in flight) |
//! | sale produced → readable | sale record produced | sale readable (read_committed): the rest of the sink's transaction, its commit and markers |
//!
//! The produce → 201 stage overlaps the payment stage (both start at the produce); the
//! others follow each other, so ingress accept + payment + the last two is the sale's
//! latency from the request's send. Timestamps have millisecond resolution.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benches::load::unique_index;
use benches::stats::Summary;
use eventbus::RegistryClient;
use eventbus::kafka::BorrowedMessage;
use schemas::{OrderCreated, PaymentCompleted};
use serde::Serialize;
use uuid::Uuid;

use crate::reader::{OnRecord, create_time_ms};

/// The stages' names, in the order of [`Stages::of`]'s result.
pub(crate) const NAMES: [&str; 5] = [
    "ingress accept (request sent → order.created produced)",
    "produce → 201 (acks=all)",
    "payment (order.created → payment.completed produced)",
    "outcome produced → sale produced (payment's commit, pipeline read, epoch, sink queue)",
    "sale produced → readable (sink's commit and markers)",
];

/// The record timestamps of every order of a run, by order index.
pub(crate) struct Stages {
    /// The run's SKU prefix (an order's index is its SKU's suffix).
    prefix: String,
    created_topic: String,
    /// The bench's clock → ms since the epoch.
    t0: (Instant, u64),
    created_ms: Vec<AtomicU64>,
    paid_ms: Vec<AtomicU64>,
    /// Order id → index, from `order.created`; and payments read before their order.
    ids: Mutex<(HashMap<Uuid, u64>, HashMap<Uuid, u64>)>,
    /// Records that did not decode.
    pub(crate) undecodable: AtomicU64,
}

/// One stage over a load's orders.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stage {
    pub(crate) stage: &'static str,
    pub(crate) summary: Option<Summary>,
}

/// The instants of one order the bench itself saw.
pub(crate) struct Seen {
    pub(crate) index: u64,
    pub(crate) sent: Instant,
    pub(crate) answered: Instant,
    pub(crate) sale_readable: Instant,
    pub(crate) sale_record_ms: u64,
}

impl Stages {
    /// Timestamps for `orders` orders of SKUs `<prefix><index>`, reading `created_topic`.
    pub(crate) fn new(prefix: String, created_topic: String, orders: u64) -> Stages {
        let slots = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Stages {
            prefix,
            created_topic,
            t0: (Instant::now(), unix_ms),
            created_ms: slots(orders),
            paid_ms: slots(orders),
            ids: Mutex::new((HashMap::new(), HashMap::new())),
            undecodable: AtomicU64::new(0),
        }
    }

    /// `t` on the records' clock, ms since the epoch.
    fn unix_ms(&self, t: Instant) -> f64 {
        let (i0, ms0) = self.t0;
        let offset = if t >= i0 {
            (t - i0).as_secs_f64()
        } else {
            -(i0 - t).as_secs_f64()
        };
        ms0 as f64 + 1e3 * offset
    }

    fn slot(slots: &[AtomicU64], i: u64) -> Option<u64> {
        let v = slots.get(i as usize)?.load(Ordering::Relaxed);
        (v > 0).then_some(v)
    }

    /// The stages of the orders in `seen` (those whose records were all read), in the
    /// order of [`NAMES`].
    pub(crate) fn of(&self, seen: &[Seen]) -> Vec<Stage> {
        let mut samples: [Vec<Duration>; 5] = Default::default();
        let span = |from: f64, to: f64| Duration::from_secs_f64(((to - from) / 1e3).max(0.0));
        for s in seen {
            let (Some(created), Some(paid)) = (
                Self::slot(&self.created_ms, s.index),
                Self::slot(&self.paid_ms, s.index),
            ) else {
                continue;
            };
            let (created, paid, sale) = (created as f64, paid as f64, s.sale_record_ms as f64);
            samples[0].push(span(self.unix_ms(s.sent), created));
            samples[1].push(span(created, self.unix_ms(s.answered)));
            samples[2].push(span(created, paid));
            samples[3].push(span(paid, sale));
            samples[4].push(span(sale, self.unix_ms(s.sale_readable)));
        }
        NAMES
            .iter()
            .zip(samples.iter_mut())
            .map(|(stage, v)| Stage {
                stage,
                summary: Summary::of(v),
            })
            .collect()
    }

    fn set(slots: &[AtomicU64], i: u64, ms: u64) {
        if let Some(slot) = slots.get(i as usize) {
            let _ = slot.compare_exchange(0, ms.max(1), Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

impl OnRecord for Stages {
    async fn record(
        &self,
        registry: &RegistryClient,
        topic: &str,
        msg: &BorrowedMessage<'_>,
        _at: Instant,
    ) {
        use eventbus::kafka::Message;
        let ms = create_time_ms(msg);
        if topic == self.created_topic {
            let Ok((order, _)) =
                eventbus::codec::decode::<OrderCreated>(registry, topic, msg.payload()).await
            else {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let Some(index) = order
                .lines
                .first()
                .and_then(|l| unique_index(&self.prefix, &l.sku))
            else {
                return;
            };
            Self::set(&self.created_ms, index, ms);
            let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            ids.0.insert(order.order_id, index);
            if let Some(paid) = ids.1.remove(&order.order_id) {
                Self::set(&self.paid_ms, index, paid);
            }
        } else {
            let Ok((paid, _)) =
                eventbus::codec::decode::<PaymentCompleted>(registry, topic, msg.payload()).await
            else {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            match ids.0.get(&paid.order_id) {
                Some(index) => Self::set(&self.paid_ms, *index, ms),
                None => {
                    ids.1.insert(paid.order_id, ms);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_cut_from_record_times_and_the_bench_clock() {
        let stages = Stages::new("SKU-".into(), "created".into(), 3);
        let (i0, ms0) = stages.t0;
        let at = |ms: u64| i0 + Duration::from_millis(ms);
        // Order 1: sent at +0, produced at +3, 201 at +10, paid at +40, sale produced at
        // +90, readable at +100 (all ms after t0).
        Stages::set(&stages.created_ms, 1, ms0 + 3);
        Stages::set(&stages.paid_ms, 1, ms0 + 40);
        let seen = [
            Seen {
                index: 1,
                sent: at(0),
                answered: at(10),
                sale_readable: at(100),
                sale_record_ms: ms0 + 90,
            },
            // Order 2's records were never read: left out, not counted as zero.
            Seen {
                index: 2,
                sent: at(0),
                answered: at(10),
                sale_readable: at(100),
                sale_record_ms: ms0 + 90,
            },
        ];
        let got: Vec<f64> = stages
            .of(&seen)
            .iter()
            .map(|s| s.summary.map(|x| x.p50_ms.round()).unwrap_or(-1.0))
            .collect();
        assert_eq!(got, vec![3.0, 7.0, 37.0, 50.0, 10.0]);
        assert!(
            stages
                .of(&seen)
                .iter()
                .all(|s| s.summary.unwrap().count == 1)
        );
        assert!(stages.of(&[]).iter().all(|s| s.summary.is_none()));
    }
}
