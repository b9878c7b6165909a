//! The after-fault check of the chaos harness (`deploy/chaos/run.sh`): on the topics of
//! one stack (`--prefix`), every order in `order.created` has exactly one payment
//! outcome (`payment.completed` or `payment.failed`, committed records only), no outcome
//! names an order that was never created, no order was written twice, and the DLQs are
//! empty (the load sends no poison). Orders and outcomes are keyed by the order id
//! (docs/design.md), so the keys are compared; nothing is decoded.
//!
//! Exits non-zero with the counts when a check fails; prints one JSON line either way.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use eventbus::reader::{ReadOptions, read_topic};

#[derive(Parser)]
#[command(about = "Exactly one payment outcome per accepted order, empty DLQs")]
struct Args {
    /// The stack's topic prefix (`stack-…-`).
    #[arg(long)]
    prefix: String,
    /// How long to wait for payment to settle the last orders.
    #[arg(long, default_value_t = 60)]
    settle_seconds: u64,
}

/// Where each key's records are: `(partition, offset, ce_id)` per record.
type Places = BTreeMap<String, Vec<(i32, i64, String)>>;

async fn keys(
    kafka: &eventbus::KafkaSettings,
    topic: &str,
    committed: bool,
) -> anyhow::Result<BTreeMap<String, usize>> {
    Ok(places(kafka, topic, committed)
        .await?
        .into_iter()
        .map(|(key, at)| (key, at.len()))
        .collect())
}

async fn places(
    kafka: &eventbus::KafkaSettings,
    topic: &str,
    committed: bool,
) -> anyhow::Result<Places> {
    let records = read_topic(
        kafka,
        topic,
        &ReadOptions {
            read_committed: committed,
            timeout: Duration::from_secs(60),
            ..ReadOptions::default()
        },
    )
    .await?;
    let mut out = Places::new();
    for record in records {
        use eventbus::kafka::Message;
        let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
        let ce_id = eventbus::headers::HeaderList::from_headers(record.headers())
            .get_str("ce_id")
            .unwrap_or_default()
            .to_owned();
        out.entry(key)
            .or_default()
            .push((record.partition(), record.offset(), ce_id));
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kafka = benches::cluster::kafka_settings();
    let p = &args.prefix;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.settle_seconds);
    loop {
        let created_at = places(&kafka, &format!("{p}order-service.order.created"), false).await?;
        let created: BTreeMap<&String, usize> =
            created_at.iter().map(|(k, at)| (k, at.len())).collect();
        let mut outcomes = keys(
            &kafka,
            &format!("{p}payment-service.payment.completed"),
            true,
        )
        .await?;
        for (key, n) in keys(&kafka, &format!("{p}payment-service.payment.failed"), true).await? {
            *outcomes.entry(key).or_insert(0) += n;
        }
        let written_twice = created.values().filter(|n| **n > 1).count();
        let unsettled = created
            .keys()
            .filter(|k| !outcomes.contains_key(**k))
            .count();
        let settled_twice = outcomes.values().filter(|n| **n > 1).count();
        let unknown = outcomes.keys().filter(|k| !created.contains_key(k)).count();
        if unsettled > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let mut dlq = 0;
        for topic in ["payment-service.dlq", "inventory-service.dlq"] {
            dlq += keys(&kafka, &format!("{p}{topic}"), true)
                .await?
                .values()
                .sum::<usize>();
        }
        // A few records written twice, to tell a resent event (same ce_id) from two.
        let examples: Vec<_> = created_at
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .take(3)
            .map(|(key, at)| serde_json::json!({ "key": key, "records": at }))
            .collect();
        let report = serde_json::json!({
            "written_twice_examples": examples,
            "orders": created.len(),
            "written_twice": written_twice,
            "unsettled": unsettled,
            "settled_twice": settled_twice,
            "outcomes_without_order": unknown,
            "dead_letters": dlq,
        });
        println!("{report}");
        let ok =
            written_twice == 0 && unsettled == 0 && settled_twice == 0 && unknown == 0 && dlq == 0;
        anyhow::ensure!(ok, "a check failed: {report}");
        return Ok(());
    }
}
