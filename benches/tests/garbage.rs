//! Garbage on every input topic: payment and the pipeline as real processes on the real
//! cluster, each of their inputs given the seven kinds of bad record of
//! `garbage_kinds` (random bytes, wrong magic byte, unknown schema id, a valid record of
//! another input's schema, a domain-rule breach, a record of about 1 MiB, no key) among
//! valid traffic.
//!
//! Two rounds of the same shape, a baseline without garbage and then one with the 35
//! garbage records (7 kinds × the pipeline's 5 inputs; the 7 on `order.created` are
//! payment's input too). In each round payment is stopped first, so that the final state
//! does not depend on how the topics interleave: the orders, their line changes and the
//! restocks are written (shuffled with the garbage), the pipeline's views must show every
//! order `CREATED` with its changed lines and the stock reserved; then payment starts,
//! settles the backlog, and the views must show every order `PAID` or `PAYMENT_FAILED` as
//! the gateway's rules say, with stock sold. Both stretches are timed from the last write
//! (resp. from payment being ready) and printed beside the baseline's.
//!
//! At the end: every garbage record is in the right DLQ (order.created's in both,
//! the others in the pipeline's) exactly once, with its origin (topic, partition, offset),
//! the consumer group, the error class of its kind, key and headers byte for byte;
//! nothing else is in either DLQ (no valid record was dead-lettered); every order has
//! exactly one payment outcome; both consumers' lag is back to 0.
//!
//! "Keep their pace": a consumer that stalls on a record (a retry loop on a DLQ write
//! that cannot succeed, a crash: the stack does not restart anything) never finishes a
//! round ([`WAIT`] fails it); one that is merely slowed by each bad record (a backoff per
//! record, a blocking lookup) must still finish within twice the baseline plus
//! [`PACE_SLACK`]. Twice, because the machine is shared (2 cores, the brokers, other
//! builds): measured on a quiet machine 0.15 s → 0.26 s (pipeline) and 0.80 s → 1.07 s
//! (payment and views), on a loaded one 3.0 s → 3.6 s and 12.5 s → 15.9 s; a second per
//! garbage record would add 35 s to the pipeline's round.

mod garbage_kinds;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use benches::scenario::GatewayRules;
use benches::stack::{Stack, StackOptions};
use eventbus::dlq::{self, DeadLetter};
use eventbus::headers::HeaderList;
use eventbus::kafka::Message;
use eventbus::reader::{ReadOptions, read_topic};
use eventbus::{
    BusConfig, BusMetrics, EventBus, Producer, ProducerConfig, PublishOptions, RegistryClient,
    RegistryConfig,
};
use garbage_kinds::{Garbage, Kind, TOPICS};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use schemas::{
    OrderChangeKind, OrderCreated, OrderLine, OrderUpdated, PaymentCompleted, PaymentFailed,
    StockAdjusted, order_total,
};
use uuid::Uuid;

/// How much longer than twice the baseline a round with garbage may take (module docs).
const PACE_SLACK: Duration = Duration::from_secs(10);
/// Orders per round.
const ORDERS: usize = 24;
/// How long any one wait may take before the test gives up.
const WAIT: Duration = Duration::from_secs(120);

/// One valid record.
#[derive(Clone, Debug)]
enum Valid {
    Created(OrderCreated),
    Updated(OrderUpdated),
    Adjusted(StockAdjusted),
}

/// What a round writes, and what the views must show after it.
struct Round {
    name: &'static str,
    orders: Vec<OrderCreated>,
    /// Final lines per order (changed lines where an update was sent).
    lines: HashMap<Uuid, Vec<OrderLine>>,
    restocks: BTreeMap<String, i64>,
    records: Vec<Result<Valid, Garbage>>,
}

/// Where a garbage record was written.
struct Written {
    garbage: Garbage,
    topic: String,
    partition: i32,
    offset: i64,
}

fn round(name: &'static str, tag: &str, rng: &mut StdRng, garbage: Vec<Garbage>) -> Round {
    let rules = GatewayRules::default();
    let sku = |k: usize| format!("{tag}-SKU-{k}");
    let mut orders = Vec::new();
    let mut lines = HashMap::new();
    let mut records: Vec<Result<Valid, Garbage>> = Vec::new();
    for i in 0..ORDERS {
        let (customer, order_lines) = match i % 8 {
            0 => (
                rules.declined_customers[0].clone(),
                vec![OrderLine::new(sku(i % 4), 2, 1_000)],
            ),
            // Over the gateway's limit (1,000,000 minor units).
            1 => (
                format!("{tag}-customer-{i}"),
                vec![OrderLine::new(sku(i % 4), 3, 400_000)],
            ),
            _ => (
                format!("{tag}-customer-{i}"),
                vec![
                    OrderLine::new(sku(i % 4), 1 + (i % 3) as i32, 1_500),
                    OrderLine::new(sku((i + 1) % 4), 1, 700),
                ],
            ),
        };
        let order = OrderCreated {
            event_id: Uuid::new_v4(),
            order_id: Uuid::new_v4(),
            customer_id: customer,
            currency: "EUR".into(),
            total_minor: order_total(&order_lines).expect("total"),
            lines: order_lines.clone(),
            created_at: eventbus::headers::now_ms(),
            channel: Some("REST".into()),
        };
        lines.insert(order.order_id, order_lines);
        if i % 3 == 0 {
            // A line change, applied while the order is CREATED (payment is stopped).
            let changed = vec![OrderLine::new(sku((i + 2) % 4), 4, 900)];
            lines.insert(order.order_id, changed.clone());
            records.push(Ok(Valid::Updated(OrderUpdated {
                event_id: Uuid::new_v4(),
                order_id: order.order_id,
                revision: 1,
                kind: OrderChangeKind::LinesChanged,
                total_minor: order_total(&changed).expect("total"),
                lines: changed,
                currency: "EUR".into(),
                updated_at: eventbus::headers::now_ms(),
            })));
        }
        records.push(Ok(Valid::Created(order.clone())));
        orders.push(order);
    }
    let mut restocks = BTreeMap::new();
    for k in 0..8 {
        let delta = 50 + k as i64;
        *restocks.entry(sku(k % 4)).or_insert(0) += delta;
        records.push(Ok(Valid::Adjusted(StockAdjusted {
            event_id: Uuid::new_v4(),
            sku: sku(k % 4),
            delta,
            reason: "restock".into(),
            adjusted_at: eventbus::headers::now_ms(),
        })));
    }
    records.extend(garbage.into_iter().map(Err));
    records.shuffle(rng);
    Round {
        name,
        orders,
        lines,
        restocks,
        records,
    }
}

/// The outcome the gateway's rules give an order: `None` completed, else the reason.
fn expected_failure(order: &OrderCreated) -> Option<&'static str> {
    let rules = GatewayRules::default();
    if rules.declined_customers.contains(&order.customer_id) {
        Some("CUSTOMER_DECLINED")
    } else if order.total_minor > rules.amount_limit_minor {
        Some("AMOUNT_OVER_LIMIT")
    } else {
        None
    }
}

/// The test's producer: compression off, so that an oversized record is as large on the
/// broker as in the test, and `message.max.bytes` above the topics' limit, so that
/// librdkafka hands it to the broker (whose limit is the one the test is about).
fn producer() -> Producer {
    let mut kafka = benches::cluster::kafka_settings();
    kafka
        .extra
        .insert("message.max.bytes".into(), "2000000".into());
    let config = BusConfig {
        kafka,
        registry: RegistryConfig::from_env(),
        producer: ProducerConfig {
            compression: "none".into(),
            ..ProducerConfig::default()
        },
    };
    EventBus::new(&config, BusMetrics::default())
        .expect("producer")
        .producer()
        .clone()
}

async fn write(
    producer: &Producer,
    inputs: &[String],
    records: &[Result<Valid, Garbage>],
) -> Vec<Written> {
    let mut written = Vec::new();
    for r in records {
        match r {
            Ok(Valid::Created(e)) => producer
                .publish_with(e, PublishOptions::to_topic(&inputs[0]))
                .await
                .map(drop),
            Ok(Valid::Updated(e)) => producer
                .publish_with(e, PublishOptions::to_topic(&inputs[1]))
                .await
                .map(drop),
            Ok(Valid::Adjusted(e)) => producer
                .publish_with(e, PublishOptions::to_topic(&inputs[4]))
                .await
                .map(drop),
            Err(g) => {
                let topic = &inputs[g.topic];
                let headers = HeaderList::new().with("x-garbage", g.kind.name());
                producer
                    .publish_raw(topic, g.key.as_deref(), Some(&g.value), &headers)
                    .await
                    .map(|d| {
                        written.push(Written {
                            garbage: g.clone(),
                            topic: topic.clone(),
                            partition: d.partition,
                            offset: d.offset,
                        });
                    })
            }
        }
        .unwrap_or_else(|e| panic!("writing a record: {e}"));
    }
    written
}

/// The pipeline's view of one order: (status, total), `None` while it has none.
async fn order_view(http: &reqwest::Client, views: &str, id: Uuid) -> Option<(String, i64)> {
    let r = http
        .get(format!("{views}/v1/orders/{id}"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    Some((v["status"].as_str()?.to_owned(), v["total_minor"].as_i64()?))
}

/// (on_hand, reserved) of a SKU in the pipeline's view.
async fn stock_view(http: &reqwest::Client, views: &str, sku: &str) -> Option<(i64, i64)> {
    let v: serde_json::Value = http
        .get(format!("{views}/v1/inventory/{sku}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((v["on_hand"].as_i64()?, v["reserved"].as_i64()?))
}

/// Polls until the views show `round`'s orders with `status_of` and its SKUs with
/// `stock`; panics with what differs after [`WAIT`].
async fn wait_views(
    stack: &Stack,
    round: &Round,
    status_of: impl Fn(&OrderCreated) -> &'static str,
    stock: &BTreeMap<String, (i64, i64)>,
    what: &str,
) -> Duration {
    let http = reqwest::Client::new();
    let views = &stack.endpoints.views_rest;
    let started = Instant::now();
    loop {
        let mut wrong = Vec::new();
        for o in &round.orders {
            let total = order_total(&round.lines[&o.order_id]).expect("total");
            let want = (status_of(o).to_owned(), total);
            let got = order_view(&http, views, o.order_id).await;
            if got.as_ref() != Some(&want) {
                wrong.push(format!("order {}: {got:?}, want {want:?}", o.order_id));
            }
        }
        for (sku, want) in stock {
            let got = stock_view(&http, views, sku).await;
            if got != Some(*want) {
                wrong.push(format!("{sku}: {got:?}, want {want:?}"));
            }
        }
        if wrong.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WAIT,
            "{} round, {what}: after {WAIT:?} the views still differ ({} of them): {}\n\
             (logs: {} and {})",
            round.name,
            wrong.len(),
            wrong[..wrong.len().min(5)].join("; "),
            stack.log("pipeline").display(),
            stack.log("payment").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per SKU (on_hand, reserved) while every order of `round` is CREATED, and after
/// payment settled them.
fn expected_stock(round: &Round) -> [BTreeMap<String, (i64, i64)>; 2] {
    let mut created: BTreeMap<String, (i64, i64)> = round
        .restocks
        .iter()
        .map(|(s, d)| (s.clone(), (*d, 0)))
        .collect();
    let mut settled = created.clone();
    for o in &round.orders {
        for l in &round.lines[&o.order_id] {
            let q = i64::from(l.quantity);
            created.entry(l.sku.clone()).or_default().1 += q;
            if expected_failure(o).is_none() {
                settled.entry(l.sku.clone()).or_default().0 -= q;
            }
        }
    }
    [created, settled]
}

/// Every committed record of `topic`.
async fn read(stack: &Stack, topic: &str) -> Vec<eventbus::kafka::OwnedMessage> {
    let options = ReadOptions {
        read_committed: true,
        ..ReadOptions::default()
    };
    read_topic(&stack.kafka, topic, &options)
        .await
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
}

/// Runs one round (module docs); returns (pipeline's time, payment's and the
/// pipeline's time after payment was ready) and where the garbage went.
async fn run_round(
    stack: &mut Stack,
    producer: &Producer,
    inputs: &[String],
    round: &Round,
) -> (Duration, Duration, Vec<Written>) {
    let [created, settled] = expected_stock(round);
    stack.stop("payment").expect("stop payment");
    let written = write(producer, inputs, &round.records).await;
    let pipeline = wait_views(stack, round, |_| "CREATED", &created, "payment stopped").await;
    stack.restart("payment").expect("restart payment");
    stack
        .wait_service_ready("payment")
        .await
        .expect("payment ready");
    let status = |o: &OrderCreated| match expected_failure(o) {
        None => "PAID",
        Some(_) => "PAYMENT_FAILED",
    };
    let payment = wait_views(stack, round, status, &settled, "payment running").await;
    println!(
        "{} round: {} records ({} garbage); the pipeline showed them {:.2} s after the last \
         write; payment's outcomes were in the views {:.2} s after it was ready",
        round.name,
        round.records.len(),
        written.len(),
        pipeline.as_secs_f64(),
        payment.as_secs_f64()
    );
    (pipeline, payment, written)
}

/// Checks one DLQ: exactly the `expected` garbage, each once, with its origin.
fn check_dlq(dlq_topic: &str, records: &[eventbus::kafka::OwnedMessage], expected: &[&Written]) {
    let mut by_origin: HashMap<(String, i32, i64), &Written> = expected
        .iter()
        .map(|w| ((w.topic.clone(), w.partition, w.offset), *w))
        .collect();
    let mut seen = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for m in records {
        let headers = HeaderList::from_headers(m.headers());
        let letter = DeadLetter::from_headers(&headers)
            .unwrap_or_else(|| panic!("{dlq_topic}@{}: no dlq.* headers", m.offset()));
        let origin = (letter.topic.clone(), letter.partition, letter.offset);
        assert!(
            seen.insert(origin.clone()),
            "{dlq_topic}: {origin:?} dead-lettered twice"
        );
        let w = by_origin.remove(&origin).unwrap_or_else(|| {
            panic!(
                "{dlq_topic}: {origin:?} ({}, {}) is not a garbage record: a valid record \
                 was dead-lettered",
                letter.class, letter.message
            )
        });
        let kind = w.garbage.kind;
        let at = format!(
            "{dlq_topic}: {} on {}",
            kind.name(),
            TOPICS[w.garbage.topic]
        );
        assert_eq!(letter.class, kind.class(), "{at}: {}", letter.message);
        assert_eq!(headers.get_str("x-garbage"), Some(kind.name()), "{at}");
        assert_eq!(m.key(), w.garbage.key.as_deref(), "{at}: key kept");
        assert_eq!(letter.key, w.garbage.key, "{at}: dlq.original.key");
        assert_eq!(m.payload(), Some(w.garbage.value.as_slice()), "{at}: value");
        assert_eq!(letter.attempts, 0, "{at}: never reached a handler");
        assert!(
            !letter.message.is_empty() && letter.message.len() <= dlq::MAX_ERROR_MESSAGE,
            "{at}"
        );
        groups.insert(letter.group);
    }
    let missing: Vec<String> = by_origin
        .values()
        .map(|w| format!("{} on {}", w.garbage.kind.name(), TOPICS[w.garbage.topic]))
        .collect();
    assert!(
        missing.is_empty(),
        "{dlq_topic}: never dead-lettered: {missing:?}"
    );
    assert_eq!(
        groups.len(),
        1,
        "{dlq_topic}: one consumer group: {groups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_garbage_on_every_input_is_dead_lettered_once_and_the_consumers_keep_pace() {
    let options = StackOptions {
        only: vec!["pipeline", "payment"],
        ..StackOptions::default()
    };
    let mut stack = Stack::start_with(GatewayRules::default(), &["-w", "1"], &options)
        .await
        .expect("the stack starts (make up; cargo build -p payment -p pipeline)");
    let (names, ids) = stack.pipeline_inputs().await.expect("input topics");
    let inputs = names.inputs.clone();
    let payment_dlq = stack.topic("payment-service.dlq");
    let producer = producer();
    let mut rng = StdRng::seed_from_u64(15);

    let baseline = round("baseline", "B", &mut rng, Vec::new());
    let garbage = garbage_kinds::all(&mut rng, &[0, 1, 2, 3, 4], &ids);
    assert_eq!(garbage.len(), 35);
    let dirty = round("garbage", "G", &mut rng, garbage);
    let (base_pipeline, base_payment, none) =
        run_round(&mut stack, &producer, &inputs, &baseline).await;
    assert!(none.is_empty());
    let (pipeline, payment, written) = run_round(&mut stack, &producer, &inputs, &dirty).await;

    // Every garbage record in the right DLQ, once, and nothing else there.
    let on_created: Vec<&Written> = written.iter().filter(|w| w.garbage.topic == 0).collect();
    assert_eq!(on_created.len(), Kind::ALL.len());
    check_dlq(&payment_dlq, &read(&stack, &payment_dlq).await, &on_created);
    let all: Vec<&Written> = written.iter().collect();
    check_dlq(&names.dlq, &read(&stack, &names.dlq).await, &all);

    // Exactly one outcome per order, the one the gateway's rules give (the garbage the
    // test wrote onto the outcome topics aside).
    let registry = RegistryClient::new(&RegistryConfig::from_env()).expect("registry");
    let mut outcomes: HashMap<Uuid, Vec<Option<String>>> = HashMap::new();
    let is_garbage = |m: &eventbus::kafka::OwnedMessage| {
        HeaderList::from_headers(m.headers())
            .get("x-garbage")
            .is_some()
    };
    for m in read(&stack, &inputs[2])
        .await
        .iter()
        .filter(|m| !is_garbage(m))
    {
        let (e, _) =
            eventbus::codec::decode::<PaymentCompleted>(&registry, &inputs[2], m.payload())
                .await
                .map_err(|f| f.error)
                .expect("payment.completed decodes");
        outcomes.entry(e.order_id).or_default().push(None);
    }
    for m in read(&stack, &inputs[3])
        .await
        .iter()
        .filter(|m| !is_garbage(m))
    {
        let (e, _) = eventbus::codec::decode::<PaymentFailed>(&registry, &inputs[3], m.payload())
            .await
            .map_err(|f| f.error)
            .expect("payment.failed decodes");
        outcomes
            .entry(e.order_id)
            .or_default()
            .push(Some(e.reason_code));
    }
    let orders: Vec<&OrderCreated> = baseline.orders.iter().chain(&dirty.orders).collect();
    assert_eq!(outcomes.len(), orders.len(), "outcomes only for the orders");
    for o in orders {
        let want = vec![expected_failure(o).map(str::to_owned)];
        assert_eq!(
            outcomes.get(&o.order_id),
            Some(&want),
            "order {}",
            o.order_id
        );
    }

    // Both consumers caught up (payment's lag gauge refreshes every 5 s, the pipeline's
    // from librdkafka's statistics).
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let payment = benches::metrics::scrape(&http, &stack.payment_url).await;
        let pipeline = benches::metrics::scrape(&http, &stack.endpoints.views_rest).await;
        let payment_lag = payment.get("kafka_consumergroup_lag");
        let pipeline_lag = pipeline.get("pipeline_input_lag");
        if payment_lag == Some(&0.0) && pipeline_lag == Some(&0.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "lag not back to 0: payment {payment_lag:?}, pipeline {pipeline_lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    println!(
        "pace: pipeline {:.2} s with garbage vs {:.2} s without; payment and views {:.2} s \
         vs {:.2} s (bound: 2 x baseline + {} s)",
        pipeline.as_secs_f64(),
        base_pipeline.as_secs_f64(),
        payment.as_secs_f64(),
        base_payment.as_secs_f64(),
        PACE_SLACK.as_secs()
    );
    assert!(
        pipeline <= 2 * base_pipeline + PACE_SLACK,
        "the pipeline lost its pace"
    );
    assert!(
        payment <= 2 * base_payment + PACE_SLACK,
        "payment lost its pace"
    );
    stack.shutdown().await;
}
