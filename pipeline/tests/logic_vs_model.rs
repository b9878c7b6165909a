//! The dataflow logic against the sequential reference model.
//!
//! As in differential-dataflow's own tests: the same seeded random input goes through
//! [`pipeline::model::Model`] and through [`pipeline::logic::views`] run by timely at 1,
//! 2 and 4 workers, and the accumulated outputs are compared with the model's views
//! after *every* epoch, not only at the end. Focused tests then pin each semantic rule
//! with small hand-written streams and exact expected values (checked against both the
//! dataflow and the model), and two sanity tests show the comparison can fail.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use differential_dataflow::input::Input;
use pipeline::logic::{
    Change, Diff, InputEvent, Line, OrderId, OrderStatus, OrderView, Pos, Sku, StockLevel, views,
};
use pipeline::model::Model;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const TOPIC_CREATED: u8 = 0;
const TOPIC_UPDATED: u8 = 1;
const TOPIC_COMPLETED: u8 = 2;
const TOPIC_FAILED: u8 = 3;
const TOPIC_ADJUSTED: u8 = 4;
/// Order and payment topics are co-partitioned by order id.
const ORDER_PARTITIONS: u128 = 3;
const STOCK_PARTITIONS: usize = 2;
/// Ingestion epochs are `BASE_TIME + epoch * EPOCH_MS` milliseconds.
const BASE_TIME: u64 = 1_750_000_000_000;
const EPOCH_MS: u64 = 10;

/// The records ingested in one epoch, all with `pos.time == time`, in input order.
#[derive(Clone, Debug)]
struct Epoch {
    time: u64,
    records: Vec<(Pos, InputEvent)>,
    /// Records retracted at this time (dataflow-only tests; the model has no retractions).
    retract: Vec<(Pos, InputEvent)>,
}

/// Both views at one closed time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    orders: BTreeMap<OrderId, OrderView>,
    stock: BTreeMap<Sku, StockLevel>,
}

type OrderUpdate = ((OrderId, OrderView), u64, Diff);
type StockUpdate = ((Sku, StockLevel), u64, Diff);

// ---------------------------------------------------------------------------------------
// Running the two implementations.
// ---------------------------------------------------------------------------------------

/// Runs `views` at `workers` workers; returns every output update of both views.
///
/// Record `i` (counting over all epochs) is fed by worker `i % workers`. Each epoch is
/// closed (input advanced past it) and run until the probe passes it before the next.
fn run_dataflow(workers: usize, epochs: &[Epoch]) -> (Vec<OrderUpdate>, Vec<StockUpdate>) {
    let epochs = Arc::new(epochs.to_vec());
    let orders_out: Arc<Mutex<Vec<OrderUpdate>>> = Arc::default();
    let stock_out: Arc<Mutex<Vec<StockUpdate>>> = Arc::default();
    let (orders_sink, stock_sink) = (Arc::clone(&orders_out), Arc::clone(&stock_out));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (orders_sink, stock_sink) = (Arc::clone(&orders_sink), Arc::clone(&stock_sink));
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<(Pos, InputEvent), Diff>();
            let (orders, stock) = views(&events);
            let (probe, _) = orders
                .inspect(move |update| orders_sink.lock().unwrap().push(update.clone()))
                .probe();
            stock
                .inspect(move |update| stock_sink.lock().unwrap().push(update.clone()))
                .probe_with(&probe);
            (input, probe)
        });
        let mut seq = 0usize;
        for epoch in epochs.iter() {
            input.advance_to(epoch.time);
            let all = epoch
                .records
                .iter()
                .map(|r| (r, 1))
                .chain(epoch.retract.iter().map(|r| (r, -1)));
            for (record, diff) in all {
                if seq % peers == index {
                    input.update(record.clone(), diff);
                }
                seq += 1;
            }
            input.advance_to(epoch.time + 1);
            input.flush();
            worker.step_or_park_while(None, || probe.less_than(input.time()));
        }
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|result| result.expect("worker ran"));
    let orders = std::mem::take(&mut *orders_out.lock().unwrap());
    let stock = std::mem::take(&mut *stock_out.lock().unwrap());
    (orders, stock)
}

/// The model's views after each epoch.
fn model_snapshots(epochs: &[Epoch]) -> Vec<Snapshot> {
    let mut model = Model::new();
    epochs
        .iter()
        .map(|epoch| {
            assert!(epoch.retract.is_empty(), "the model has no retractions");
            model.apply_epoch(epoch.records.iter().cloned());
            Snapshot {
                orders: model.orders(),
                stock: model.stock(),
            }
        })
        .collect()
}

/// Accumulates `updates` up to each of `times` (sorted) into one map per time.
///
/// Fails if an update is at a time that is not an epoch time, or if an accumulated
/// collection is not a function of its key with multiplicity 1.
fn accumulate<K, V>(
    updates: &[((K, V), u64, Diff)],
    times: &[u64],
) -> Result<Vec<BTreeMap<K, V>>, String>
where
    K: Ord + Clone + Debug,
    V: Ord + Clone + Debug,
{
    let mut sorted = updates.to_vec();
    sorted.sort_by_key(|(_, time, _)| *time);
    if let Some((data, time, _)) = sorted
        .iter()
        .find(|(_, t, _)| times.binary_search(t).is_err())
    {
        return Err(format!("update at {time}, not an epoch time: {data:?}"));
    }
    let mut acc: BTreeMap<(K, V), Diff> = BTreeMap::new();
    let mut next = 0;
    let mut out = Vec::with_capacity(times.len());
    for &time in times {
        while next < sorted.len() && sorted[next].1 <= time {
            let (data, _, diff) = &sorted[next];
            *acc.entry(data.clone()).or_default() += diff;
            next += 1;
        }
        acc.retain(|_, diff| *diff != 0);
        let mut view = BTreeMap::new();
        for ((key, value), count) in &acc {
            if *count != 1 {
                return Err(format!(
                    "at {time}: {key:?} -> {value:?} has multiplicity {count}"
                ));
            }
            if let Some(other) = view.insert(key.clone(), value.clone()) {
                return Err(format!(
                    "at {time}: {key:?} has two values {other:?} and {value:?}"
                ));
            }
        }
        out.push(view);
    }
    Ok(out)
}

/// The dataflow's views after each epoch, from its output updates.
fn dataflow_snapshots(
    epochs: &[Epoch],
    orders: &[OrderUpdate],
    stock: &[StockUpdate],
) -> Result<Vec<Snapshot>, String> {
    let times: Vec<u64> = epochs.iter().map(|epoch| epoch.time).collect();
    let orders = accumulate(orders, &times)?;
    let stock = accumulate(stock, &times)?;
    Ok(orders
        .into_iter()
        .zip(stock)
        .map(|(orders, stock)| Snapshot { orders, stock })
        .collect())
}

/// Describes the first difference between two maps.
fn first_difference<K: Ord + Debug, V: PartialEq + Debug>(
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
) -> String {
    for (key, value) in expected {
        match actual.get(key) {
            Some(other) if other == value => {}
            other => return format!("{key:?}: expected {value:?}, got {other:?}"),
        }
    }
    match actual.keys().find(|key| !expected.contains_key(*key)) {
        Some(key) => format!("{key:?}: expected absent, got {:?}", actual[key]),
        None => "no difference".to_string(),
    }
}

/// Compares per-epoch snapshots; describes the first mismatch.
fn compare(epochs: &[Epoch], expected: &[Snapshot], actual: &[Snapshot]) -> Result<(), String> {
    assert_eq!(expected.len(), actual.len());
    for (i, (want, got)) in expected.iter().zip(actual).enumerate() {
        let time = epochs[i].time;
        if want.orders != got.orders {
            let diff = first_difference(&want.orders, &got.orders);
            return Err(format!("epoch {i} (t={time}): orders differ: {diff}"));
        }
        if want.stock != got.stock {
            let diff = first_difference(&want.stock, &got.stock);
            return Err(format!("epoch {i} (t={time}): stock differs: {diff}"));
        }
    }
    Ok(())
}

/// Runs both implementations at each worker count, asserts they agree after every epoch,
/// and returns the snapshots.
fn check_both(epochs: &[Epoch], worker_counts: &[usize]) -> Vec<Snapshot> {
    let expected = model_snapshots(epochs);
    for &workers in worker_counts {
        let (orders, stock) = run_dataflow(workers, epochs);
        let actual = dataflow_snapshots(epochs, &orders, &stock)
            .unwrap_or_else(|e| panic!("{workers} workers: malformed output: {e}"));
        if let Err(e) = compare(epochs, &expected, &actual) {
            panic!("{workers} workers: dataflow differs from model: {e}");
        }
    }
    expected
}

// ---------------------------------------------------------------------------------------
// Seeded random streams.
// ---------------------------------------------------------------------------------------

/// Size of a random stream.
struct Params {
    orders: usize,
    skus: usize,
    epochs: u64,
}

const PARAMS: Params = Params {
    orders: 300,
    skus: 20,
    epochs: 150,
};
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

fn sku(index: usize) -> Sku {
    format!("SKU-{index:03}")
}

fn random_lines(rng: &mut StdRng, skus: usize) -> Vec<Line> {
    (0..rng.random_range(1..=3))
        .map(|_| Line {
            sku: sku(rng.random_range(0..skus)),
            quantity: rng.random_range(1..=5),
            unit_price_minor: rng.random_range(50..=20_000),
        })
        .collect()
}

/// A realistic mixed stream: orders with updates (growing revisions, stale replays),
/// cancellations, completed and failed payments, duplicate creates, events after terminal
/// states, orders never created, restocks and corrections; then ingestion skew per topic
/// (order.created often lags, so payments and updates are ingested before their order),
/// offsets growing per (topic, partition), and a shuffled input order within each epoch.
fn generate(seed: u64, params: &Params) -> Vec<Epoch> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (skus, last_epoch) = (params.skus, params.epochs - 1);
    // (logical epoch, topic, partition, event)
    let mut raw: Vec<(u64, u8, i32, InputEvent)> = Vec::new();
    let adjust = |raw: &mut Vec<_>, epoch, index: usize, delta| {
        let event = InputEvent::StockAdjusted {
            sku: sku(index),
            delta,
        };
        raw.push((
            epoch,
            TOPIC_ADJUSTED,
            (index % STOCK_PARTITIONS) as i32,
            event,
        ));
    };
    for index in 0..skus {
        if rng.random_bool(0.7) {
            adjust(&mut raw, 0, index, rng.random_range(5..=40));
        }
    }
    for epoch in 1..params.epochs {
        if rng.random_bool(0.3) {
            let delta = if rng.random_bool(0.7) {
                rng.random_range(1..=30) // restock
            } else {
                -rng.random_range(1..=6) // correction: breakage, miscount
            };
            adjust(&mut raw, epoch, rng.random_range(0..skus), delta);
        }
    }
    for _ in 0..params.orders {
        let order_id: OrderId = rng.random();
        let partition = (order_id % ORDER_PARTITIONS) as i32;
        let mut push =
            |epoch: u64, topic, event| raw.push((epoch.min(last_epoch), topic, partition, event));
        let mut t = rng.random_range(0..params.epochs - 10);
        let currency = if rng.random_bool(0.7) { "EUR" } else { "USD" }.to_string();
        // 3% of orders are never created (lost upstream): their events must do nothing.
        if rng.random_bool(0.97) {
            let lines = random_lines(&mut rng, skus);
            push(
                t,
                TOPIC_CREATED,
                InputEvent::OrderCreated {
                    order_id,
                    currency,
                    lines,
                },
            );
            if rng.random_bool(0.08) {
                // A client resend with different content: ignored.
                let lines = random_lines(&mut rng, skus);
                let event = InputEvent::OrderCreated {
                    order_id,
                    currency: "JPY".into(),
                    lines,
                };
                push(t + rng.random_range(0..3), TOPIC_CREATED, event);
            }
        }
        let mut revision = 0u32;
        for _ in 0..rng.random_range(0..=3) {
            t += rng.random_range(0..=2);
            revision += rng.random_range(1..=2);
            let change = Change::Lines(random_lines(&mut rng, skus));
            push(
                t,
                TOPIC_UPDATED,
                InputEvent::OrderUpdated {
                    order_id,
                    revision,
                    change,
                },
            );
        }
        if revision > 0 && rng.random_bool(0.2) {
            // A replayed or stale update (revision not above the last applied one).
            t += rng.random_range(0..=2);
            let stale = rng.random_range(0..=revision);
            let change = Change::Lines(random_lines(&mut rng, skus));
            push(
                t,
                TOPIC_UPDATED,
                InputEvent::OrderUpdated {
                    order_id,
                    revision: stale,
                    change,
                },
            );
        }
        t += rng.random_range(0..=3);
        let cancel = |revision| InputEvent::OrderUpdated {
            order_id,
            revision,
            change: Change::Cancel,
        };
        let outcome = match rng.random_range(0..100) {
            0..50 => Some((TOPIC_COMPLETED, InputEvent::PaymentCompleted { order_id })),
            50..68 => Some((TOPIC_FAILED, InputEvent::PaymentFailed { order_id })),
            68..85 => Some((TOPIC_UPDATED, cancel(revision + 1))),
            _ => None, // stays CREATED
        };
        if let Some((topic, event)) = outcome {
            push(t, topic, event);
            if rng.random_bool(0.25) {
                // Something after the terminal state: must be ignored.
                t += rng.random_range(0..=3);
                let (topic, event) = match rng.random_range(0..4) {
                    0 => (TOPIC_UPDATED, cancel(revision + 2)),
                    1 => (TOPIC_COMPLETED, InputEvent::PaymentCompleted { order_id }),
                    2 => (TOPIC_FAILED, InputEvent::PaymentFailed { order_id }),
                    _ => {
                        let change = Change::Lines(random_lines(&mut rng, skus));
                        let event = InputEvent::OrderUpdated {
                            order_id,
                            revision: revision + 5,
                            change,
                        };
                        (TOPIC_UPDATED, event)
                    }
                };
                push(t, topic, event);
            }
        }
    }

    // Ingestion skew: topics are read at different speeds.
    let mut ingested: Vec<(u64, u8, i32, usize, InputEvent)> = raw
        .into_iter()
        .enumerate()
        .map(|(seq, (epoch, topic, partition, event))| {
            let lag = if topic == TOPIC_CREATED && rng.random_bool(0.25) {
                rng.random_range(1..=5)
            } else if rng.random_bool(0.05) {
                rng.random_range(1..=2)
            } else {
                0
            };
            ((epoch + lag).min(last_epoch), topic, partition, seq, event)
        })
        .collect();
    // Offsets grow per (topic, partition) in ingestion order.
    ingested.sort_by_key(|(epoch, topic, partition, seq, _)| (*epoch, *topic, *partition, *seq));
    let mut offsets: HashMap<(u8, i32), i64> = HashMap::new();
    let mut epochs: Vec<Epoch> = (0..params.epochs)
        .map(|epoch| Epoch {
            time: BASE_TIME + epoch * EPOCH_MS,
            records: Vec::new(),
            retract: Vec::new(),
        })
        .collect();
    for (epoch, topic, partition, _, event) in ingested {
        let offset = offsets
            .entry((topic, partition))
            .or_insert(1_000 * i64::from(topic));
        *offset += 1;
        let pos = Pos {
            time: epochs[epoch as usize].time,
            topic,
            partition,
            offset: *offset,
        };
        epochs[epoch as usize].records.push((pos, event));
    }
    for epoch in &mut epochs {
        epoch.records.shuffle(&mut rng);
    }
    epochs
}

fn random_streams_match_model(workers: usize) {
    for seed in SEEDS {
        let start = Instant::now();
        let epochs = generate(seed, &PARAMS);
        let expected = model_snapshots(&epochs);
        let (orders, stock) = run_dataflow(workers, &epochs);
        let actual = dataflow_snapshots(&epochs, &orders, &stock)
            .unwrap_or_else(|e| panic!("seed {seed}, {workers} workers: malformed output: {e}"));
        if let Err(e) = compare(&epochs, &expected, &actual) {
            panic!("seed {seed}, {workers} workers: dataflow differs from model: {e}");
        }
        eprintln!(
            "seed {seed}, {workers} workers: {} records, {} order and {} stock updates, {:?}",
            epochs.iter().map(|e| e.records.len()).sum::<usize>(),
            orders.len(),
            stock.len(),
            start.elapsed()
        );
    }
}

#[test]
fn random_streams_match_model_1_worker() {
    random_streams_match_model(1);
}

#[test]
fn random_streams_match_model_2_workers() {
    random_streams_match_model(2);
}

#[test]
fn random_streams_match_model_4_workers() {
    random_streams_match_model(4);
}

/// The random streams exercise what they claim to (so a pass means something).
#[test]
fn random_streams_cover_the_edge_cases() {
    let epochs = generate(SEEDS[0], &PARAMS);
    let snapshots = model_snapshots(&epochs);
    let last = snapshots.last().unwrap();
    let count = |status| {
        last.orders
            .values()
            .filter(|view| view.status == status)
            .count()
    };
    for status in [
        OrderStatus::Created,
        OrderStatus::Paid,
        OrderStatus::PaymentFailed,
        OrderStatus::Cancelled,
    ] {
        assert!(
            count(status) >= 10,
            "only {} orders {status:?}",
            count(status)
        );
    }
    assert!(last.stock.len() >= 15, "only {} SKUs", last.stock.len());
    assert!(
        last.stock.values().any(|level| level.available < 0),
        "nothing oversold"
    );
    // Some order event is ingested before its created.
    let mut created_at: HashMap<OrderId, Pos> = HashMap::new();
    let records: Vec<&(Pos, InputEvent)> = epochs.iter().flat_map(|e| &e.records).collect();
    for (pos, event) in &records {
        if let InputEvent::OrderCreated { order_id, .. } = event {
            let first = created_at.entry(*order_id).or_insert(*pos);
            *first = (*first).min(*pos);
        }
    }
    let early = records
        .iter()
        .filter(|(pos, event)| {
            !matches!(event, InputEvent::OrderCreated { .. })
                && event
                    .order_id()
                    .and_then(|id| created_at.get(&id))
                    .is_some_and(|created| pos < created)
        })
        .count();
    assert!(
        early >= 5,
        "only {early} events ingested before their created"
    );
    // Views change in many epochs, not just a few.
    let changes = snapshots.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        changes >= PARAMS.epochs as usize / 2,
        "views changed in only {changes} epochs"
    );
}

// ---------------------------------------------------------------------------------------
// The comparison can fail.
// ---------------------------------------------------------------------------------------

/// A model that missed one epoch must not compare equal to the dataflow.
#[test]
fn comparison_detects_a_dropped_epoch() {
    let epochs = generate(SEEDS[0], &PARAMS);
    let (orders, stock) = run_dataflow(1, &epochs);
    let actual = dataflow_snapshots(&epochs, &orders, &stock).unwrap();
    compare(&epochs, &model_snapshots(&epochs), &actual).expect("the faithful model agrees");

    let dropped = epochs.len() / 2;
    assert!(!epochs[dropped].records.is_empty());
    let mut lossy = epochs.clone();
    lossy[dropped].records.clear();
    let err =
        compare(&epochs, &model_snapshots(&lossy), &actual).expect_err("a lossy model differs");
    assert!(
        err.starts_with(&format!("epoch {dropped} ")),
        "first mismatch at the dropped epoch: {err}"
    );
}

/// A dataflow output with one altered update must not compare equal to the model.
#[test]
fn comparison_detects_a_tampered_output() {
    let epochs = generate(SEEDS[1], &PARAMS);
    let (mut orders, stock) = run_dataflow(1, &epochs);
    let expected = model_snapshots(&epochs);
    // Alter the total of one added view: its later retraction no longer cancels it.
    let victim = orders.iter().position(|(_, _, diff)| *diff > 0).unwrap();
    orders[victim].0.1.total_minor += 1;
    let verdict = dataflow_snapshots(&epochs, &orders, &stock)
        .and_then(|actual| compare(&epochs, &expected, &actual));
    assert!(verdict.is_err(), "tampering went unnoticed");
}

// ---------------------------------------------------------------------------------------
// Focused tests: one rule each, exact values, dataflow and model.
// ---------------------------------------------------------------------------------------

/// Builds hand-written streams: one `epoch()` call per epoch, then its records.
#[derive(Default)]
struct Script {
    epochs: Vec<Epoch>,
    offsets: HashMap<(u8, i32), i64>,
}

impl Script {
    fn new() -> Self {
        Self::default()
    }

    /// Starts the next epoch.
    fn epoch(&mut self) -> &mut Self {
        let time = BASE_TIME + self.epochs.len() as u64 * EPOCH_MS;
        self.epochs.push(Epoch {
            time,
            records: Vec::new(),
            retract: Vec::new(),
        });
        self
    }

    /// Appends a record read from `(topic, partition)` at the next offset there.
    fn record(&mut self, topic: u8, partition: i32, event: InputEvent) -> &mut Self {
        let offset = self.offsets.entry((topic, partition)).or_default();
        *offset += 1;
        let epoch = self.epochs.last_mut().expect("call epoch() first");
        let pos = Pos {
            time: epoch.time,
            topic,
            partition,
            offset: *offset,
        };
        epoch.records.push((pos, event));
        self
    }

    fn created(
        &mut self,
        order_id: OrderId,
        currency: &str,
        lines: &[(&str, i64, i64)],
    ) -> &mut Self {
        self.created_on(0, order_id, currency, lines)
    }

    fn created_on(
        &mut self,
        partition: i32,
        order_id: OrderId,
        currency: &str,
        lines: &[(&str, i64, i64)],
    ) -> &mut Self {
        let event = InputEvent::OrderCreated {
            order_id,
            currency: currency.into(),
            lines: lines_of(lines),
        };
        self.record(TOPIC_CREATED, partition, event)
    }

    fn update(
        &mut self,
        order_id: OrderId,
        revision: u32,
        lines: &[(&str, i64, i64)],
    ) -> &mut Self {
        let change = Change::Lines(lines_of(lines));
        self.record(
            TOPIC_UPDATED,
            0,
            InputEvent::OrderUpdated {
                order_id,
                revision,
                change,
            },
        )
    }

    fn cancel(&mut self, order_id: OrderId, revision: u32) -> &mut Self {
        let event = InputEvent::OrderUpdated {
            order_id,
            revision,
            change: Change::Cancel,
        };
        self.record(TOPIC_UPDATED, 0, event)
    }

    fn paid(&mut self, order_id: OrderId) -> &mut Self {
        self.record(
            TOPIC_COMPLETED,
            0,
            InputEvent::PaymentCompleted { order_id },
        )
    }

    fn failed(&mut self, order_id: OrderId) -> &mut Self {
        self.record(TOPIC_FAILED, 0, InputEvent::PaymentFailed { order_id })
    }

    fn adjust(&mut self, sku: &str, delta: i64) -> &mut Self {
        self.record(
            TOPIC_ADJUSTED,
            0,
            InputEvent::StockAdjusted {
                sku: sku.into(),
                delta,
            },
        )
    }

    /// Runs both implementations at 1 and 2 workers; the snapshots after each epoch.
    fn run(&self) -> Vec<Snapshot> {
        check_both(&self.epochs, &[1, 2])
    }
}

fn lines_of(lines: &[(&str, i64, i64)]) -> Vec<Line> {
    lines
        .iter()
        .map(|(sku, quantity, unit_price_minor)| Line {
            sku: sku.to_string(),
            quantity: *quantity,
            unit_price_minor: *unit_price_minor,
        })
        .collect()
}

fn level(on_hand: i64, reserved: i64, available: i64) -> StockLevel {
    StockLevel {
        on_hand,
        reserved,
        available,
    }
}

fn stock_of(levels: &[(&str, StockLevel)]) -> BTreeMap<Sku, StockLevel> {
    levels
        .iter()
        .map(|(sku, level)| (sku.to_string(), *level))
        .collect()
}

fn status(snapshot: &Snapshot, order_id: OrderId) -> Option<OrderStatus> {
    snapshot.orders.get(&order_id).map(|view| view.status)
}

#[test]
fn created_order_reserves_and_oversold_is_visible() {
    let s = Script::new()
        .epoch()
        .adjust("A", 5)
        .epoch()
        .created(1, "EUR", &[("A", 3, 100), ("B", 2, 250)])
        .run();
    assert_eq!(s[0].orders, BTreeMap::new());
    assert_eq!(s[0].stock, stock_of(&[("A", level(5, 0, 5))]));
    let view = OrderView {
        status: OrderStatus::Created,
        currency: "EUR".into(),
        total_minor: 800,
        lines: lines_of(&[("A", 3, 100), ("B", 2, 250)]),
    };
    assert_eq!(s[1].orders, BTreeMap::from([(1, view)]));
    // B has no stock: reserved 2 makes it oversold, kept negative.
    assert_eq!(
        s[1].stock,
        stock_of(&[("A", level(5, 3, 2)), ("B", level(0, 2, -2))])
    );
}

#[test]
fn completed_payment_turns_reservation_into_sale() {
    let s = Script::new()
        .epoch()
        .adjust("A", 5)
        .created(1, "EUR", &[("A", 3, 100), ("B", 2, 250)])
        .epoch()
        .paid(1)
        .run();
    assert_eq!(
        s[0].stock,
        stock_of(&[("A", level(5, 3, 2)), ("B", level(0, 2, -2))])
    );
    assert_eq!(status(&s[1], 1), Some(OrderStatus::Paid));
    assert_eq!(s[1].orders[&1].total_minor, 800);
    assert_eq!(
        s[1].stock,
        stock_of(&[("A", level(2, 0, 2)), ("B", level(-2, 0, -2))])
    );
}

#[test]
fn failed_payment_and_cancel_release_reservation() {
    let s = Script::new()
        .epoch()
        .adjust("A", 10)
        .created(1, "EUR", &[("A", 3, 100)])
        .created(2, "EUR", &[("A", 4, 100), ("B", 1, 100)])
        .epoch()
        .failed(1)
        .epoch()
        .cancel(2, 1)
        .run();
    assert_eq!(
        s[0].stock,
        stock_of(&[("A", level(10, 7, 3)), ("B", level(0, 1, -1))])
    );
    assert_eq!(status(&s[1], 1), Some(OrderStatus::PaymentFailed));
    assert_eq!(
        s[1].stock,
        stock_of(&[("A", level(10, 4, 6)), ("B", level(0, 1, -1))])
    );
    assert_eq!(status(&s[2], 2), Some(OrderStatus::Cancelled));
    // B's numbers are all zero again: it leaves the view.
    assert_eq!(s[2].stock, stock_of(&[("A", level(10, 0, 10))]));
    // Released orders keep their view (status, currency, total, lines).
    assert_eq!(s[2].orders[&2].total_minor, 500);
    assert_eq!(
        s[2].orders[&2].lines,
        lines_of(&[("A", 4, 100), ("B", 1, 100)])
    );
}

#[test]
fn terminal_states_absorb_later_events() {
    let s = Script::new()
        .epoch()
        .created(1, "EUR", &[("A", 1, 100)])
        .created(2, "EUR", &[("B", 2, 100)])
        .created(3, "EUR", &[("C", 3, 100)])
        .epoch()
        .paid(1)
        .cancel(2, 1)
        .failed(3)
        .epoch()
        .cancel(1, 2) // cancel after PAID
        .update(1, 9, &[("A", 7, 100)]) // line change after PAID
        .failed(1) // second outcome
        .paid(2) // payment after CANCELLED
        .paid(3) // second outcome
        .run();
    assert_eq!(
        s[1], s[2],
        "nothing after a terminal event changes anything"
    );
    assert_eq!(status(&s[2], 1), Some(OrderStatus::Paid));
    assert_eq!(status(&s[2], 2), Some(OrderStatus::Cancelled));
    assert_eq!(status(&s[2], 3), Some(OrderStatus::PaymentFailed));
    assert_eq!(s[2].orders[&1].lines, lines_of(&[("A", 1, 100)]));
    assert_eq!(s[2].stock, stock_of(&[("A", level(-1, 0, -1))]));
}

#[test]
fn line_changes_need_a_growing_revision() {
    let s = Script::new()
        .epoch()
        .created(1, "EUR", &[("A", 1, 100)])
        .epoch()
        .update(1, 0, &[("Z", 9, 100)]) // revision 0 is the created's: ignored
        .epoch()
        .update(1, 2, &[("A", 4, 100)]) // applied
        .epoch()
        .update(1, 1, &[("B", 9, 100)]) // stale: ignored
        .update(1, 2, &[("C", 7, 100)]) // replay of 2: ignored
        .epoch()
        .update(1, 3, &[("A", 2, 150), ("B", 1, 1000)]) // applied
        .run();
    let reserved = |i: usize| s[i].stock.clone();
    assert_eq!(reserved(0), stock_of(&[("A", level(0, 1, -1))]));
    assert_eq!(s[1], s[0]);
    assert_eq!(reserved(2), stock_of(&[("A", level(0, 4, -4))]));
    assert_eq!(s[2].orders[&1].total_minor, 400);
    assert_eq!(s[3], s[2]);
    assert_eq!(
        reserved(4),
        stock_of(&[("A", level(0, 2, -2)), ("B", level(0, 1, -1))])
    );
    assert_eq!(s[4].orders[&1].total_minor, 1300);
    assert_eq!(
        s[4].orders[&1].lines,
        lines_of(&[("A", 2, 150), ("B", 1, 1000)])
    );
}

#[test]
fn cancel_applies_whatever_its_revision() {
    let s = Script::new()
        .epoch()
        .created(1, "EUR", &[("A", 1, 100)])
        .update(1, 5, &[("A", 2, 100)])
        .epoch()
        .cancel(1, 0)
        .run();
    assert_eq!(status(&s[0], 1), Some(OrderStatus::Created));
    assert_eq!(status(&s[1], 1), Some(OrderStatus::Cancelled));
    assert_eq!(s[1].stock, BTreeMap::new());
}

#[test]
fn events_before_created_wait_for_it() {
    let s = Script::new()
        .epoch()
        .update(1, 1, &[("B", 2, 300)]) // topic 1 < topic 2: before the payment by Pos
        .paid(1)
        .cancel(2, 1)
        .adjust("B", 1)
        .epoch()
        .epoch()
        .created(1, "EUR", &[("A", 1, 100)])
        .created(2, "USD", &[("C", 5, 100)])
        .run();
    // Without their created, the events yield no order and no stock effect.
    for snapshot in &s[0..2] {
        assert_eq!(snapshot.orders, BTreeMap::new());
        assert_eq!(snapshot.stock, stock_of(&[("B", level(1, 0, 1))]));
    }
    // Created first, then the earlier events in Pos order: lines changed, then paid.
    let view = OrderView {
        status: OrderStatus::Paid,
        currency: "EUR".into(),
        total_minor: 600,
        lines: lines_of(&[("B", 2, 300)]),
    };
    assert_eq!(s[2].orders[&1], view);
    assert_eq!(status(&s[2], 2), Some(OrderStatus::Cancelled));
    assert_eq!(s[2].stock, stock_of(&[("B", level(-1, 0, -1))]));
}

#[test]
fn first_created_by_pos_wins() {
    let s = Script::new()
        .epoch()
        // Input order is not Pos order: the partition-0 record has the lower Pos.
        .created_on(1, 1, "EUR", &[("A", 5, 100)])
        .created_on(0, 1, "USD", &[("B", 1, 700)])
        .epoch()
        .created(1, "JPY", &[("C", 3, 100)]) // a later resend
        .run();
    let view = OrderView {
        status: OrderStatus::Created,
        currency: "USD".into(),
        total_minor: 700,
        lines: lines_of(&[("B", 1, 700)]),
    };
    assert_eq!(s[0].orders, BTreeMap::from([(1, view)]));
    assert_eq!(s[1], s[0]);
    assert_eq!(s[1].stock, stock_of(&[("B", level(0, 1, -1))]));
}

#[test]
fn pos_order_not_input_order_decides() {
    let mut script = Script::new();
    script.epoch().created(1, "EUR", &[("A", 1, 100)]);
    script.epoch().paid(1).cancel(1, 1);
    // Fed payment first, but the cancel (topic 1) precedes the payment (topic 2) by Pos.
    let s = script.run();
    assert_eq!(status(&s[1], 1), Some(OrderStatus::Cancelled));
    assert_eq!(s[1].stock, BTreeMap::new());
}

#[test]
fn orphan_events_have_no_effect() {
    let s = Script::new()
        .epoch()
        .update(7, 1, &[("A", 1, 100)])
        .paid(7)
        .failed(8)
        .cancel(9, 1)
        .epoch()
        .paid(9)
        .run();
    for snapshot in &s {
        assert_eq!(snapshot.orders, BTreeMap::new());
        assert_eq!(snapshot.stock, BTreeMap::new());
    }
}

#[test]
fn sku_disappears_when_its_numbers_return_to_zero() {
    let s = Script::new()
        .epoch()
        .adjust("A", 5)
        .created(1, "EUR", &[("B", 2, 100)])
        .created(2, "EUR", &[("C", 2, 100)])
        .epoch()
        .adjust("A", -5)
        .cancel(1, 1)
        .paid(2)
        .epoch()
        .adjust("C", 2)
        .run();
    assert_eq!(
        s[0].stock,
        stock_of(&[
            ("A", level(5, 0, 5)),
            ("B", level(0, 2, -2)),
            ("C", level(0, 2, -2))
        ])
    );
    assert_eq!(s[1].stock, stock_of(&[("C", level(-2, 0, -2))]));
    assert_eq!(s[2].stock, BTreeMap::new());
    assert_eq!(s[2].orders.len(), 2, "orders stay in the order view");
}

#[test]
fn same_sku_on_two_lines_counts_twice() {
    let s = Script::new()
        .epoch()
        .created(1, "EUR", &[("A", 2, 100), ("A", 3, 10)])
        .run();
    assert_eq!(s[0].orders[&1].total_minor, 230);
    assert_eq!(s[0].stock, stock_of(&[("A", level(0, 5, -5))]));
}

#[test]
fn totals_saturate() {
    let s = Script::new()
        .epoch()
        .created(1, "EUR", &[("A", 2, i64::MAX)])
        .created(2, "EUR", &[("A", 1, i64::MAX), ("B", 1, 1)])
        .created(3, "EUR", &[("A", 1, i64::MIN), ("B", 1, -1)])
        .run();
    assert_eq!(s[0].orders[&1].total_minor, i64::MAX);
    assert_eq!(s[0].orders[&2].total_minor, i64::MAX);
    assert_eq!(s[0].orders[&3].total_minor, i64::MIN);
}

/// Dataflow only (the model has no retractions): retracting an input record re-folds
/// the order without it.
#[test]
fn retracting_a_record_refolds_the_order() {
    let mut script = Script::new();
    script.epoch().created(1, "EUR", &[("A", 2, 100)]).paid(1);
    script.epoch();
    let paid = script.epochs[0].records[1].clone();
    script.epochs[1].retract.push(paid);
    for workers in [1, 2] {
        let (orders, stock) = run_dataflow(workers, &script.epochs);
        let s = dataflow_snapshots(&script.epochs, &orders, &stock).unwrap();
        assert_eq!(status(&s[0], 1), Some(OrderStatus::Paid));
        assert_eq!(s[0].stock, stock_of(&[("A", level(-2, 0, -2))]));
        assert_eq!(status(&s[1], 1), Some(OrderStatus::Created));
        assert_eq!(s[1].stock, stock_of(&[("A", level(0, 2, -2))]));
    }
}
