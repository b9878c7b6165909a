//! The background input: a seeded stream of mixed order, payment and stock events,
//! produced fire-and-forget at a fixed rate straight onto the pipeline's input topics.
//!
//! Why not through ingress and payment: this benchmark measures the pipeline alone, so
//! the input is written the way those services would write it (framed Avro, keys on the
//! partitions a Java client would pick) without their CPU on the shared machine.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches::records::{framed, order_created, random_lines};
use eventbus::client::{self, ProducerOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{FutureProducer, FutureRecord};
use eventbus::{BusMetrics, KafkaSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::{Event, OrderUpdated, PaymentCompleted, PaymentFailed, StockAdjusted};
use uuid::Uuid;

/// The pipeline's five inputs, in the order of `pipeline::input::INPUT_TOPICS`.
pub(crate) const INPUTS: usize = 5;
/// Index of `order.created` in the inputs.
const ORDER_CREATED: usize = 0;
/// Index of `order.updated`.
const ORDER_UPDATED: usize = 1;
/// Index of `payment.completed`.
const PAYMENT_COMPLETED: usize = 2;
/// Index of `payment.failed`.
const PAYMENT_FAILED: usize = 3;
/// Index of `stock.adjusted` (also the probes' topic).
pub(crate) const STOCK_ADJUSTED: usize = 4;

/// Encoded records: `(input index, key, value)`.
type Encoded = (usize, Vec<u8>, Vec<u8>);

/// Mixed order/payment/stock events, generated on the fly: every order is created,
/// and about 100 records later paid (55%), failed (15%), cancelled (15%) or left open.
pub(crate) struct LoadGen {
    rng: StdRng,
    ids: [u32; INPUTS],
    later: VecDeque<(u64, Encoded)>,
    n: u64,
    skus: u32,
}

impl LoadGen {
    /// A generator seeded with `seed`, writing with the registry ids `ids` (one per
    /// input), over `skus` SKUs.
    pub(crate) fn new(seed: u64, ids: [u32; INPUTS], skus: u32) -> LoadGen {
        LoadGen {
            rng: StdRng::seed_from_u64(seed),
            ids,
            later: VecDeque::new(),
            n: 0,
            skus,
        }
    }

    fn encode<E: Event>(&self, topic: usize, event: &E) -> Encoded {
        let value = framed(self.ids[topic], event).expect("valid load event");
        (topic, event.key().into_bytes(), value)
    }

    /// The next record.
    pub(crate) fn next(&mut self) -> Encoded {
        self.n += 1;
        if let Some((due, _)) = self.later.front()
            && *due <= self.n
        {
            return self.later.pop_front().expect("front").1;
        }
        let now = eventbus::headers::now_ms();
        let id = Uuid::from_u128(self.rng.random::<u128>() | 1);
        if self.rng.random_bool(0.1) {
            let event = StockAdjusted {
                event_id: id,
                sku: format!("SKU-{:04}", self.rng.random_range(0..self.skus)),
                delta: self.rng.random_range(5..=50),
                reason: "restock".into(),
                adjusted_at: now,
            };
            return self.encode(STOCK_ADJUSTED, &event);
        }
        let lines = random_lines(&mut self.rng, 3, self.skus, 4, 9_000);
        let created = order_created(id, "bench", lines, now);
        let total = created.total_minor;
        let roll: f64 = self.rng.random();
        let follow = Uuid::from_u128(self.rng.random::<u128>() | 1);
        let later = if roll < 0.55 {
            Some(self.encode(
                PAYMENT_COMPLETED,
                &PaymentCompleted {
                    event_id: follow,
                    order_id: id,
                    payment_id: follow,
                    amount_minor: total,
                    currency: "EUR".into(),
                    completed_at: now,
                },
            ))
        } else if roll < 0.70 {
            Some(self.encode(
                PAYMENT_FAILED,
                &PaymentFailed {
                    event_id: follow,
                    order_id: id,
                    amount_minor: total,
                    currency: "EUR".into(),
                    reason_code: "CUSTOMER_DECLINED".into(),
                    reason: "declined".into(),
                    failed_at: now,
                },
            ))
        } else if roll < 0.85 {
            Some(self.encode(
                ORDER_UPDATED,
                &OrderUpdated::cancelled(follow, id, 1, "EUR", now),
            ))
        } else {
            None
        };
        if let Some(record) = later {
            self.later.push_back((self.n + 100, record));
        }
        self.encode(ORDER_CREATED, &created)
    }
}

/// An idempotent, `acks=all` producer (eventbus's) for the load and the probes.
pub(crate) fn producer(kafka: &KafkaSettings, name: &str) -> anyhow::Result<FutureProducer> {
    let options = ProducerOptions {
        tuning: client::tuning([
            // Batch like the services' producers do.
            ("linger.ms", "5".to_owned()),
            ("compression.type", "lz4".to_owned()),
            // Keys land on the partitions a Java client would pick.
            ("partitioner", "murmur2_random".to_owned()),
            // Room for the load's bursts (default 100 000): at the ramp's highest rates a
            // broker pause fills the default queue, which would throttle the offered load.
            ("queue.buffering.max.messages", "1000000".to_owned()),
        ]),
    };
    let context = BusContext::new(format!("bench/{name}"), None, BusMetrics::default());
    Ok(client::producer(kafka, &options, context)?)
}

/// Produces `load_gen`'s records at `rate` per second until `stop`; returns records sent.
/// Fire and forget: the producer's own thread serves the delivery reports.
pub(crate) fn run_load(
    producer: &FutureProducer,
    topics: &[String; INPUTS],
    load_gen: &mut LoadGen,
    rate: u64,
    stop: &AtomicBool,
) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let (topic, key, value) = load_gen.next();
            let mut record = FutureRecord::to(&topics[topic]).key(&key).payload(&value);
            loop {
                match producer.send_result(record) {
                    // The delivery future is dropped: nobody waits for this record.
                    Ok(_delivery) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}
