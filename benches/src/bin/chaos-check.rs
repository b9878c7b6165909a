//! The after-fault check of the chaos harness (`deploy/chaos/run.sh`), on the topics of
//! one stack (`--prefix`). It tells a duplicate **record** (the same event written twice
//! to a topic, which an idempotent but non-transactional producer cannot always rule out
//! across a leader change, see README "Faults") from a duplicate **effect** (an order
//! settled twice, stock counted twice), and fails only on lost or doubled effects:
//!
//! - **lost**: an order the client was told was accepted (201 / OK, from loadgen's
//!   `--accepted` file) that is not in `order.created`;
//! - **unsettled**: an order in `order.created` without a payment outcome after
//!   `--settle-seconds`;
//! - **settled twice**: an order with two committed outcomes (`payment.completed` +
//!   `payment.failed`, read_committed), or an outcome for an order never created;
//! - **dead letters**: any record in the DLQs (the load sends no poison);
//! - **views** (with `--views-grpc`): every order's status in the pipeline's order view
//!   is its outcome's (`PAID` / `PAYMENT_FAILED`), and the stock view equals the
//!   reference computed from what was accepted: per SKU, `on_hand` = Σ acknowledged
//!   restocks − Σ quantities of paid orders (each order counted once, by id), `reserved`
//!   = 0 once everything is settled. A duplicated `stock.adjusted` or an order counted
//!   twice shows here.
//!
//! Duplicate records are reported (`duplicate_records`, with examples: partition, offset,
//! `ce_id`) but are not a failure by themselves: consumers dedupe by order id, and the
//! views check catches them if one did not. Exits non-zero with the counts when a check
//! fails; prints one JSON line either way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use benches::client::{Client, Endpoints};
use clap::Parser;
use eventbus::codec::decode;
use eventbus::kafka::{Message, OwnedMessage};
use eventbus::reader::{ReadOptions, read_topic};
use eventbus::{RegistryClient, RegistryConfig};
use schemas::OrderCreated;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Zero lost and zero doubled orders after a fault")]
struct Args {
    /// The stack's topic prefix (`stack-…-`).
    #[arg(long)]
    prefix: String,
    /// How long to wait for payment to settle and the views to catch up.
    #[arg(long, default_value_t = 60)]
    settle_seconds: u64,
    /// loadgen's `--accepted` file: the orders and restocks the client saw accepted.
    #[arg(long)]
    accepted: Option<PathBuf>,
    /// The pipeline's views gRPC endpoint, to compare the views with the reference.
    #[arg(long)]
    views_grpc: Option<String>,
}

/// Where each key's records are: `(partition, offset, ce_id)` per record.
type Places = BTreeMap<String, Vec<(i32, i64, String)>>;

async fn read(
    kafka: &eventbus::KafkaSettings,
    topic: &str,
    committed: bool,
) -> anyhow::Result<Vec<OwnedMessage>> {
    Ok(read_topic(
        kafka,
        topic,
        &ReadOptions {
            read_committed: committed,
            timeout: Duration::from_secs(60),
            ..ReadOptions::default()
        },
    )
    .await?)
}

fn places(records: &[OwnedMessage]) -> Places {
    let mut out = Places::new();
    for record in records {
        let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
        let ce_id = eventbus::headers::HeaderList::from_headers(record.headers())
            .get_str("ce_id")
            .unwrap_or_default()
            .to_owned();
        out.entry(key)
            .or_default()
            .push((record.partition(), record.offset(), ce_id));
    }
    out
}

async fn keys(
    kafka: &eventbus::KafkaSettings,
    topic: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    Ok(places(&read(kafka, topic, true).await?)
        .into_iter()
        .map(|(key, at)| (key, at.len()))
        .collect())
}

/// What the client saw accepted.
#[derive(Default)]
struct Accepted {
    orders: BTreeSet<String>,
    restocks: BTreeMap<String, i64>,
}

fn read_accepted(path: &PathBuf) -> anyhow::Result<Accepted> {
    let mut out = Accepted::default();
    for line in std::fs::read_to_string(path)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if let Some(id) = v["order_id"].as_str() {
            out.orders.insert(id.to_owned());
        } else if let (Some(sku), Some(delta)) = (v["restock"].as_str(), v["delta"].as_i64()) {
            *out.restocks.entry(sku.to_owned()).or_default() += delta;
        }
    }
    Ok(out)
}

/// The first `order.created` of each order id, decoded (later ones are ignored, as every
/// consumer does).
async fn orders(
    registry: &RegistryClient,
    records: &[OwnedMessage],
) -> anyhow::Result<BTreeMap<String, OrderCreated>> {
    let mut out = BTreeMap::new();
    for r in records {
        let (order, _) = decode::<OrderCreated>(registry, r.topic(), r.payload())
            .await
            .map_err(|f| f.error)?;
        out.entry(order.order_id.to_string()).or_insert(order);
    }
    Ok(out)
}

/// Differences between the views and the reference; empty when they agree.
async fn view_differences(
    client: &Client,
    orders: &BTreeMap<String, OrderCreated>,
    completed: &BTreeSet<String>,
    failed: &BTreeSet<String>,
    restocks: &BTreeMap<String, i64>,
) -> anyhow::Result<Vec<String>> {
    let mut diffs = Vec::new();
    let mut on_hand: BTreeMap<String, i64> = restocks.clone();
    for (id, order) in orders {
        let expected = if completed.contains(id) {
            for line in &order.lines {
                *on_hand.entry(line.sku.clone()).or_default() -= i64::from(line.quantity);
            }
            "PAID"
        } else if failed.contains(id) {
            "PAYMENT_FAILED"
        } else {
            "CREATED"
        };
        let status = client.order(id).await?.map(|o| o.status);
        if status.as_deref() != Some(expected) && diffs.len() < 20 {
            diffs.push(format!("order {id}: view {status:?}, expected {expected}"));
        }
    }
    let (_epoch, view) = client.inventory().await?;
    let skus: BTreeSet<&String> = view.keys().chain(on_hand.keys()).collect();
    for sku in skus {
        let want = on_hand.get(sku).copied().unwrap_or(0);
        let got = view.get(sku).copied().unwrap_or_default();
        if got.on_hand != want || got.reserved != 0 {
            diffs.push(format!(
                "{sku}: view on_hand {} reserved {}, reference on_hand {want} reserved 0",
                got.on_hand, got.reserved
            ));
        }
    }
    Ok(diffs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kafka = benches::cluster::kafka_settings();
    let registry = RegistryClient::new(&RegistryConfig::from_env())?;
    let p = &args.prefix;
    let accepted = match &args.accepted {
        Some(path) => Some(read_accepted(path)?),
        None => None,
    };
    let client = match &args.views_grpc {
        Some(views) => Some(Client::new(Endpoints {
            views_grpc: views.clone(),
            ..Endpoints::default()
        })?),
        None => None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.settle_seconds);
    loop {
        let created_records =
            read(&kafka, &format!("{p}order-service.order.created"), false).await?;
        let created_at = places(&created_records);
        let completed = keys(&kafka, &format!("{p}payment-service.payment.completed")).await?;
        let failed = keys(&kafka, &format!("{p}payment-service.payment.failed")).await?;
        let mut outcomes = completed.clone();
        for (key, n) in &failed {
            *outcomes.entry(key.clone()).or_insert(0) += n;
        }
        let duplicate_records = created_at.values().filter(|at| at.len() > 1).count();
        let unsettled = created_at
            .keys()
            .filter(|k| !outcomes.contains_key(*k))
            .count();
        let settled_twice = outcomes.values().filter(|n| **n > 1).count();
        let unknown = outcomes
            .keys()
            .filter(|k| !created_at.contains_key(*k))
            .count();
        let lost: Vec<&String> = accepted
            .as_ref()
            .map(|a| {
                a.orders
                    .iter()
                    .filter(|id| !created_at.contains_key(*id))
                    .collect()
            })
            .unwrap_or_default();
        if unsettled > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let mut dlq = 0;
        for topic in ["payment-service.dlq", "inventory-service.dlq"] {
            dlq += keys(&kafka, &format!("{p}{topic}"))
                .await?
                .values()
                .sum::<usize>();
        }
        // The views, once the pipeline has caught up (asked again until the deadline).
        let mut views: Option<Vec<String>> = None;
        if let Some(client) = &client {
            let orders = orders(&registry, &created_records).await?;
            let completed: BTreeSet<String> = completed.keys().cloned().collect();
            let failed: BTreeSet<String> = failed.keys().cloned().collect();
            let restocks = accepted
                .as_ref()
                .map(|a| a.restocks.clone())
                .unwrap_or_default();
            loop {
                let diffs =
                    view_differences(client, &orders, &completed, &failed, &restocks).await?;
                if diffs.is_empty() || tokio::time::Instant::now() >= deadline {
                    views = Some(diffs);
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        // A few records written twice, to tell a resent event (same ce_id) from two.
        let examples: Vec<_> = created_at
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .take(3)
            .map(|(key, at)| json!({ "key": key, "records": at }))
            .collect();
        let view_diffs = views.as_ref().map_or(0, Vec::len);
        let report = json!({
            "orders": created_at.len(),
            "accepted": accepted.as_ref().map(|a| a.orders.len()),
            "lost": lost.len(),
            "lost_examples": lost.iter().take(3).collect::<Vec<_>>(),
            "duplicate_records": duplicate_records,
            "duplicate_record_examples": examples,
            "unsettled": unsettled,
            "settled_twice": settled_twice,
            "outcomes_without_order": unknown,
            "dead_letters": dlq,
            "views_checked": views.is_some(),
            "view_differences": view_diffs,
            "view_difference_examples": views.as_ref().map(|d| d.iter().take(5).collect::<Vec<_>>()),
        });
        println!("{report}");
        let ok = lost.is_empty()
            && unsettled == 0
            && settled_twice == 0
            && unknown == 0
            && dlq == 0
            && view_diffs == 0;
        anyhow::ensure!(ok, "a check failed: {report}");
        return Ok(());
    }
}
