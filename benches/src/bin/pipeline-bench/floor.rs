//! Kafka's floor of this benchmark: `ProducerPerformance` and `EndToEndLatency` on two
//! topics of the run's own, with records of the size of a real `order.created`.
//!
//! Why here and not in [`benches::floor`]: the library runs the tools; what this module
//! adds is the choice of this comparison (the services' producer settings, the order
//! size as the load produces it, the floor's own topics created and deleted).

use anyhow::Context;
use benches::floor::{
    EndToEnd, ProducerPerf, ToolConnection, end_to_end_latency, producer_performance,
};
use benches::load::OrderMix;
use benches::records::{FIXED_CREATED_AT_MS, mean_framed_size, order_created};
use benches::topics;
use eventbus::KafkaSettings;
use schemas::{OrderCreated, OrderLine};
use serde::Serialize;

use crate::plan::Plan;
use crate::txn_hop::{self, TxnHop};

/// Kafka's figures of one run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Floor {
    /// The most one producer gets through with the services' settings.
    pub(crate) producer_performance: ProducerPerf,
    /// One hop, one record at a time.
    pub(crate) end_to_end_latency: EndToEnd,
    /// One transactional hop (one record per transaction, read_committed), one at a time.
    pub(crate) transactional_hop: TxnHop,
}

/// The average size of the order.created records the load produces, as ingress writes
/// them: Avro datum + 5-byte Confluent header (headers and key not counted).
pub(crate) fn order_record_size(mix: &OrderMix) -> usize {
    let events: Vec<OrderCreated> = (0..200u64)
        .map(|i| {
            let o = mix.order(i);
            let lines: Vec<OrderLine> = o
                .lines
                .iter()
                .map(|l| OrderLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity as i32,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect();
            order_created(uuid::Uuid::now_v7(), o.customer, lines, FIXED_CREATED_AT_MS)
        })
        .collect();
    mean_framed_size(&events)
}

/// Runs both tools and the transactional hop on three topics of run `run`'s own, deleted
/// afterwards.
pub(crate) async fn run_floor(
    kafka: &KafkaSettings,
    plan: &Plan,
    run: &str,
    record_size: usize,
) -> anyhow::Result<Floor> {
    let pp_topic = format!("bench-floor-pp-{run}");
    let e2e_topic = format!("bench-floor-e2e-{run}");
    let txn_topic = format!("bench-floor-txn-{run}");
    let tools = ToolConnection::for_settings(kafka)?;
    let admin = topics::create(
        kafka,
        &[&pp_topic, &e2e_topic, &txn_topic],
        txn_hop::PARTITIONS as usize,
    )
    .await
    .context("creating the floor topics")?;
    let result = async {
        eprintln!(
            "floor: ProducerPerformance, {} records of {record_size} B, acks=all, idempotence ...",
            plan.producer_records
        );
        let pp = {
            let (c, t, n) = (tools.clone(), pp_topic.clone(), plan.producer_records);
            tokio::task::spawn_blocking(move || {
                producer_performance(
                    &c,
                    &t,
                    n,
                    record_size,
                    &[("compression.type", "lz4"), ("linger.ms", "5")],
                )
            })
            .await??
        };
        eprintln!(
            "floor: ProducerPerformance {:.0} records/s, p50 {} ms, p99 {} ms",
            pp.records_per_sec, pp.p50_ms, pp.p99_ms
        );
        eprintln!(
            "floor: EndToEndLatency, {} records of {record_size} B, acks=all, one at a time ...",
            plan.e2e_records
        );
        let e2e = {
            let (c, t, n) = (tools.clone(), e2e_topic.clone(), plan.e2e_records);
            tokio::task::spawn_blocking(move || end_to_end_latency(&c, &t, n, record_size, "all"))
                .await??
        };
        eprintln!(
            "floor: EndToEndLatency avg {:.2} ms, p50 {} ms, p99 {} ms",
            e2e.avg_ms, e2e.p50_ms, e2e.p99_ms
        );
        eprintln!(
            "floor: transactional hop, {} transactions of one {record_size} B record, read_committed ...",
            plan.txn_records
        );
        let txn = {
            let (k, t, n, id) = (
                kafka.clone(),
                txn_topic.clone(),
                plan.txn_records,
                format!("bench-floor-txn-{run}"),
            );
            let wait = plan.fetch_wait_ms;
            let settle = std::time::Duration::from_millis(plan.txn_settle_ms);
            tokio::task::spawn_blocking(move || {
                txn_hop::run(&k, &t, &id, n, record_size, wait, settle)
            })
                .await??
        };
        eprintln!(
            "floor: transactional hop visible p50 {:.1} ms, p99 {:.1} ms (commit p50 {:.1} ms)",
            txn.visible.p50_ms, txn.visible.p99_ms, txn.commit.p50_ms
        );
        anyhow::Ok(Floor {
            producer_performance: pp,
            end_to_end_latency: e2e,
            transactional_hop: txn,
        })
    }
    .await;
    let _ = admin
        .delete_topics(&[&pp_topic, &e2e_topic, &txn_topic])
        .await;
    result
}
