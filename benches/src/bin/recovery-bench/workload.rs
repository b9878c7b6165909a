//! The history: seeded events written straight onto the pipeline's input topics with
//! eventbus's producer (framed Avro, keys on the partitions a Java client would pick),
//! the fastest way to write millions of them (no ingress, no payment service).
//!
//! Two workloads, so that "history" (events ever written) and "live state" (distinct
//! keys) can be told apart:
//!
//! - **bounded**: a fixed set of orders is created once; then the same orders and SKUs
//!   get line changes (`order.updated`, growing revisions), restocks and corrections
//!   (`stock.adjusted`) and, rarely, a payment outcome, over and over. History grows,
//!   the live state does not: this is the workload the goal "recovery flat in history"
//!   is about.
//! - **growing**: every order is new (created, a line change, a payment outcome) plus
//!   restocks: the live state grows with history, as in a shop that never forgets an
//!   order. Reported for honesty: here recovery follows the live state, which grows.

use std::collections::VecDeque;
use std::time::Duration;

use benches::records::{framed, order_created, random_lines};
use eventbus::client::{self, ProducerOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{FutureProducer, FutureRecord, ProducerClient};
use eventbus::{BusMetrics, KafkaSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::{
    Event, OrderChangeKind, OrderUpdated, PaymentCompleted, PaymentFailed, StockAdjusted,
};
use uuid::Uuid;

/// The pipeline's five inputs, in the order of `pipeline::input::INPUT_TOPICS`.
pub(crate) const INPUTS: usize = 5;
const ORDER_CREATED: usize = 0;
const ORDER_UPDATED: usize = 1;
const PAYMENT_COMPLETED: usize = 2;
const PAYMENT_FAILED: usize = 3;
const STOCK_ADJUSTED: usize = 4;

/// Encoded records: `(input index, key, value)`.
type Encoded = (usize, String, Vec<u8>);

/// Which workload (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A fixed set of orders and SKUs, changed again and again.
    Bounded,
    /// A new order every few events.
    Growing,
}

/// A seeded generator of one workload.
pub(crate) struct Workload {
    kind: Kind,
    rng: StdRng,
    ids: [u32; INPUTS],
    skus: u32,
    /// Bounded: the orders and their last revision.
    orders: Vec<(Uuid, i32)>,
    /// Bounded: orders created so far (the first events create them all).
    created: usize,
    /// Growing: follow-ups of recent orders, due after `n` events.
    later: VecDeque<(u64, Encoded)>,
    /// Growing: orders created.
    new_orders: u64,
    n: u64,
    payment_share: f64,
}

impl Workload {
    /// A generator writing with the registry ids `ids` (one per input).
    pub(crate) fn new(
        kind: Kind,
        seed: u64,
        ids: [u32; INPUTS],
        orders: usize,
        skus: u32,
        payment_share: f64,
    ) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        let orders = match kind {
            Kind::Bounded => (0..orders)
                .map(|_| (Uuid::from_u128(rng.random::<u128>() | 1), 0))
                .collect(),
            Kind::Growing => Vec::new(),
        };
        Workload {
            kind,
            rng,
            ids,
            skus,
            orders,
            created: 0,
            later: VecDeque::new(),
            new_orders: 0,
            n: 0,
            payment_share,
        }
    }

    /// Distinct orders written so far (the live order keys).
    pub(crate) fn orders(&self) -> u64 {
        match self.kind {
            Kind::Bounded => self.created as u64,
            Kind::Growing => self.new_orders,
        }
    }

    fn encode<E: Event>(&self, topic: usize, event: &E) -> Encoded {
        let value = framed(self.ids[topic], event).expect("valid workload event");
        (topic, event.key(), value)
    }

    fn adjustment(&mut self, now: i64) -> Encoded {
        let delta = if self.rng.random_bool(0.8) {
            self.rng.random_range(5..=50)
        } else {
            -self.rng.random_range(1..=5)
        };
        let event = StockAdjusted {
            event_id: Uuid::from_u128(self.rng.random::<u128>() | 1),
            sku: format!("SKU-{:04}", self.rng.random_range(0..self.skus)),
            delta,
            reason: "restock".into(),
            adjusted_at: now,
        };
        self.encode(STOCK_ADJUSTED, &event)
    }

    fn payment(&mut self, order_id: Uuid, total: i64, now: i64) -> Encoded {
        let id = Uuid::from_u128(self.rng.random::<u128>() | 1);
        if self.rng.random_bool(0.8) {
            let event = PaymentCompleted {
                event_id: id,
                order_id,
                payment_id: id,
                amount_minor: total,
                currency: "EUR".into(),
                completed_at: now,
            };
            self.encode(PAYMENT_COMPLETED, &event)
        } else {
            let event = PaymentFailed {
                event_id: id,
                order_id,
                amount_minor: total,
                currency: "EUR".into(),
                reason_code: "CUSTOMER_DECLINED".into(),
                reason: "declined".into(),
                failed_at: now,
            };
            self.encode(PAYMENT_FAILED, &event)
        }
    }

    fn update(&mut self, order_id: Uuid, revision: i32, now: i64) -> Encoded {
        let lines = random_lines(&mut self.rng, 3, self.skus, 4, 9_000);
        let event = OrderUpdated {
            event_id: Uuid::from_u128(self.rng.random::<u128>() | 1),
            order_id,
            revision,
            kind: OrderChangeKind::LinesChanged,
            total_minor: schemas::order_total(&lines).unwrap_or(0),
            lines,
            currency: "EUR".into(),
            updated_at: now,
        };
        self.encode(ORDER_UPDATED, &event)
    }

    /// The next record.
    pub(crate) fn next(&mut self) -> Encoded {
        self.n += 1;
        let now = eventbus::headers::now_ms();
        match self.kind {
            Kind::Bounded => {
                if self.created < self.orders.len() {
                    let (id, _) = self.orders[self.created];
                    self.created += 1;
                    let lines = random_lines(&mut self.rng, 3, self.skus, 4, 9_000);
                    return self.encode(ORDER_CREATED, &order_created(id, "bench", lines, now));
                }
                let roll: f64 = self.rng.random();
                if roll < 0.3 {
                    return self.adjustment(now);
                }
                let index = self.rng.random_range(0..self.orders.len());
                let (id, revision) = self.orders[index];
                if roll < 0.3 + self.payment_share {
                    return self.payment(id, 1_000, now);
                }
                self.orders[index].1 = revision + 1;
                self.update(id, revision + 1, now)
            }
            Kind::Growing => {
                if let Some((due, _)) = self.later.front()
                    && *due <= self.n
                {
                    return self.later.pop_front().expect("front").1;
                }
                if self.rng.random_bool(0.1) {
                    return self.adjustment(now);
                }
                let id = Uuid::from_u128(self.rng.random::<u128>() | 1);
                self.new_orders += 1;
                let lines = random_lines(&mut self.rng, 3, self.skus, 4, 9_000);
                let created = order_created(id, "bench", lines, now);
                let update = self.update(id, 1, now);
                let payment = self.payment(id, created.total_minor, now);
                self.later.push_back((self.n + 50, update));
                self.later.push_back((self.n + 100, payment));
                self.encode(ORDER_CREATED, &created)
            }
        }
    }
}

/// An idempotent, `acks=all` producer (eventbus's), tuned for bulk writes.
pub(crate) fn producer(kafka: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let options = ProducerOptions {
        tuning: client::tuning([
            // Bulk: large batches (the history is written as fast as the brokers take it).
            ("linger.ms", "20".to_owned()),
            ("batch.size", "1000000".to_owned()),
            ("compression.type", "lz4".to_owned()),
            // Keys land on the partitions a Java client would pick.
            ("partitioner", "murmur2_random".to_owned()),
            // Room for a burst of a million records (default 100 000).
            ("queue.buffering.max.messages", "1000000".to_owned()),
        ]),
    };
    let context = BusContext::new("bench/recovery".to_owned(), None, BusMetrics::default());
    Ok(client::producer(kafka, &options, context)?)
}

/// Writes `count` records of `workload` as fast as the producer takes them, then waits
/// until every one is acknowledged. Blocking.
pub(crate) fn produce(
    producer: &FutureProducer,
    topics: &[String; INPUTS],
    workload: &mut Workload,
    count: u64,
) -> anyhow::Result<()> {
    for _ in 0..count {
        let (topic, key, value) = workload.next();
        let mut record = FutureRecord::to(&topics[topic]).key(&key).payload(&value);
        loop {
            match producer.send_result(record) {
                // Fire and forget: the flush below waits for every acknowledgement.
                Ok(_delivery) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(())
}
