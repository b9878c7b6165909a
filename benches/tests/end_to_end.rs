//! End to end: ingress, payment and pipeline as real processes on the real cluster.
//!
//! 1,200 orders over REST and gRPC with restocks, corrections, declines, line changes and
//! cancellations. Phase A runs with payment live (orders settle as they come); phase B
//! holds payment back while its orders are changed and cancelled, then restarts it, so
//! that every order's final status is determined by what the test sent. At the end the
//! pipeline's views, the compacted `stock.updated` topic and the order statuses must
//! equal the reference model, and every order must have exactly one payment outcome that
//! honours the gateway's decline rules.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use benches::client::{Api, Client};
use benches::scenario::{Action, GatewayRules, Mix, Scenario};
use benches::stack::Stack;
use eventbus::kafka::Message;
use eventbus::reader::{ReadOptions, read_topic};
use eventbus::{RegistryClient, RegistryConfig};
use schemas::{PaymentCompleted, PaymentFailed, StockUpdated};

async fn send(
    client: &Client,
    scenario: &Scenario,
    range: std::ops::Range<usize>,
    ids: &mut [Option<String>],
    run: &str,
) {
    for i in range {
        let key = format!("e2e-{run}-{i}");
        let r = match &scenario.actions[i] {
            Action::Adjust {
                sku,
                delta,
                reason,
                api,
            } => client.adjust(*api, &key, sku, *delta, reason).await,
            Action::Create {
                order,
                customer,
                lines,
                api,
            } => client
                .create_order(*api, &key, customer, scenario.currency, lines)
                .await
                .map(|c| ids[*order] = Some(c.order_id)),
            Action::Change { order, lines, api } => {
                let id = ids[*order].clone().expect("changes follow their order");
                client
                    .change_lines(*api, &key, &id, scenario.currency, lines)
                    .await
            }
            Action::Cancel { order, api } => {
                let id = ids[*order].clone().expect("cancels follow their order");
                client.cancel(*api, &key, &id, scenario.currency).await
            }
        };
        r.unwrap_or_else(|e| panic!("action {i} ({:?}) failed: {e:#}", scenario.actions[i]));
    }
}

async fn decode_all<E: schemas::Event>(
    registry: &RegistryClient,
    kafka: &eventbus::KafkaSettings,
    topic: &str,
) -> Vec<(String, E, i64)> {
    let records = read_topic(
        kafka,
        topic,
        &ReadOptions {
            read_committed: true,
            ..ReadOptions::default()
        },
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    for r in records {
        let key = String::from_utf8_lossy(r.key().unwrap_or_default()).to_string();
        let (event, _) = eventbus::codec::decode::<E>(registry, topic, r.payload())
            .await
            .unwrap_or_else(|f| {
                panic!(
                    "record {topic}/{}/{} does not decode: {}",
                    r.partition(),
                    r.offset(),
                    f.error
                )
            });
        out.push((key, event, r.offset()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_orders_end_in_the_reference_state() {
    let rules = GatewayRules::default();
    // Phase A: creates and stock only; phase B: with changes and cancellations.
    let a = Scenario::generate(
        11,
        &Mix {
            orders: 600,
            change_share: 0.0,
            cancel_share: 0.0,
            ..Mix::default()
        },
        rules.clone(),
    );
    let b = Scenario::generate(
        12,
        &Mix {
            orders: 600,
            restocks: 20,
            ..Mix::default()
        },
        rules.clone(),
    );
    let phase_a = a.actions.len();
    let mut actions = a.actions;
    actions.extend(b.actions.into_iter().map(|act| match act {
        Action::Create {
            order,
            customer,
            lines,
            api,
        } => Action::Create {
            order: order + 600,
            customer,
            lines,
            api,
        },
        Action::Change { order, lines, api } => Action::Change {
            order: order + 600,
            lines,
            api,
        },
        Action::Cancel { order, api } => Action::Cancel {
            order: order + 600,
            api,
        },
        adjust => adjust,
    }));
    let scenario = Scenario {
        actions,
        rules: rules.clone(),
        currency: "EUR",
    };
    let n = scenario.orders();
    assert_eq!(n, 1200);

    let mut stack = Stack::start(rules.clone(), &["-w", "2"])
        .await
        .expect("the stack starts");
    let client = Client::new(stack.endpoints.clone()).unwrap();
    let run = stack.prefix.clone();
    let mut ids: Vec<Option<String>> = vec![None; n];

    let t0 = Instant::now();
    send(&client, &scenario, 0..phase_a, &mut ids, &run).await;
    eprintln!("phase A: {phase_a} actions in {:?}", t0.elapsed());

    // Phase B with payment held back, so changes and cancels come before payments.
    stack.stop("payment").unwrap();
    let t1 = Instant::now();
    send(
        &client,
        &scenario,
        phase_a..scenario.actions.len(),
        &mut ids,
        &run,
    )
    .await;
    eprintln!(
        "phase B: {} actions in {:?}",
        scenario.actions.len() - phase_a,
        t1.elapsed()
    );
    let ids: Vec<String> = ids
        .into_iter()
        .map(|id| id.expect("every order was created"))
        .collect();

    // The pipeline must have seen every change and cancel before payment comes back.
    let mut last_change: BTreeMap<usize, &Action> = BTreeMap::new();
    for act in &scenario.actions[phase_a..] {
        if let Action::Change { order, .. } | Action::Cancel { order, .. } = act {
            last_change.insert(*order, act);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (order, act) in &last_change {
        loop {
            let seen = client.order(&ids[*order]).await.ok().flatten();
            let done = match (act, &seen) {
                (Action::Cancel { .. }, Some(o)) => o.status == "CANCELLED",
                (Action::Change { lines, .. }, Some(o)) => {
                    o.status == "CANCELLED"
                        || o.total_minor
                            == lines
                                .iter()
                                .map(|l| l.quantity * l.unit_price_minor)
                                .sum::<i64>()
                }
                _ => false,
            };
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the view never showed the change of order {order}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stack.start_payment().unwrap();
    stack.wait_payment_ready().await.unwrap();

    // Every order gets exactly one outcome.
    let registry = RegistryClient::new(&RegistryConfig::from_env()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let (completed, failed) = loop {
        let c = decode_all::<PaymentCompleted>(
            &registry,
            &stack.kafka,
            &stack.topic("payment-service.payment.completed"),
        )
        .await;
        let f = decode_all::<PaymentFailed>(
            &registry,
            &stack.kafka,
            &stack.topic("payment-service.payment.failed"),
        )
        .await;
        if c.len() + f.len() >= n || Instant::now() > deadline {
            break (c, f);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut outcome: BTreeMap<String, bool> = BTreeMap::new();
    for (_, e, _) in &completed {
        assert!(
            outcome.insert(e.order_id.to_string(), true).is_none(),
            "two outcomes for {}",
            e.order_id
        );
    }
    for (_, e, _) in &failed {
        assert!(
            outcome.insert(e.order_id.to_string(), false).is_none(),
            "two outcomes for {}",
            e.order_id
        );
    }
    assert_eq!(
        outcome.len(),
        n,
        "every order has exactly one payment outcome"
    );
    let index: BTreeMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for act in &scenario.actions {
        if let Action::Create {
            order,
            customer,
            lines,
            ..
        } = act
        {
            let declined = scenario.declined(customer, lines);
            assert_eq!(
                outcome[&ids[*order]], !declined,
                "order {order} ({customer}) outcome honours the decline rules"
            );
        }
    }
    assert_eq!(index.len(), n, "ids are unique");

    // The reference, from what was sent and the outcomes.
    let numeric: Vec<u128> = ids
        .iter()
        .map(|id| uuid::Uuid::parse_str(id).unwrap().as_u128())
        .collect();
    let (want_orders, want_stock) = scenario.reference(&numeric, |i| outcome[&ids[i]]);

    // The views converge on it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, levels) = client.inventory().await.unwrap();
        let got: BTreeMap<String, (i64, i64, i64)> = levels
            .iter()
            .map(|(s, l)| (s.clone(), (l.on_hand, l.reserved, l.available)))
            .collect();
        if got == want_stock {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inventory view\n{got:?}\n!= reference\n{want_stock:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut wrong = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let got = client
            .order(id)
            .await
            .unwrap()
            .map(|o| (o.status, o.total_minor));
        let want = want_orders.get(&numeric[i]).cloned();
        if got != want {
            wrong.push(format!(
                "order {i} {id}: view {got:?} != reference {want:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} order(s) differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let statuses: BTreeSet<&str> = want_orders.values().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["CANCELLED", "PAID", "PAYMENT_FAILED"]),
        "the run covers every final status"
    );

    // The compacted topic is itself the view: the newest record per SKU.
    let updates = decode_all::<StockUpdated>(
        &registry,
        &stack.kafka,
        &stack.topic("inventory-service.stock.updated"),
    )
    .await;
    let mut newest: BTreeMap<String, (i64, StockUpdated)> = BTreeMap::new();
    for (key, e, offset) in updates {
        assert_eq!(key, e.sku);
        if let Some((prev_offset, prev)) = newest.get(&key) {
            assert!(
                offset > *prev_offset && e.version > prev.version,
                "versions grow per SKU: {prev:?} then {e:?}"
            );
        }
        newest.insert(key, (offset, e));
    }
    let topic_view: BTreeMap<String, (i64, i64, i64)> = newest
        .into_iter()
        .filter(|(_, (_, e))| (e.on_hand, e.reserved) != (0, 0))
        .map(|(s, (_, e))| (s, (e.on_hand, e.reserved, e.available)))
        .collect();
    assert_eq!(
        topic_view, want_stock,
        "compacted stock.updated equals the reference"
    );

    eprintln!(
        "end to end: {n} orders ({} REST, {} gRPC creates), {} completed, {} failed, total {:?}",
        scenario
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Create { api: Api::Rest, .. }))
            .count(),
        scenario
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Create { api: Api::Grpc, .. }))
            .count(),
        completed.len(),
        failed.len(),
        t0.elapsed()
    );
    stack.shutdown().await;
}
