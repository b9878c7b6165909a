//! `make bench`: the order pipeline end to end beside Kafka's own floor, in one run on the
//! same cluster.
//!
//! 1. **Pipeline.** [`Stack::start`](benches::stack::Stack::start) runs ingress, payment
//!    and the pipeline (`-w 2`) as release processes on prefixed copies of every topic.
//!    Every order of the run has one line of a SKU no other order uses, so its
//!    `stock.updated` records are found by key. All those SKUs are restocked first (and
//!    the restocks awaited on the topic), a short warm-up follows.
//! 2. **Floor.** Then, with the services running idle (the machine state the loads run
//!    in, not a quieter one), on topics of its own (RF 3, 6 partitions,
//!    `min.insync.replicas=2`) Kafka's `ProducerPerformance` (acks=all, idempotence,
//!    lz4, linger 5 ms: the services' producer settings) and `EndToEndLatency` (acks=all,
//!    one record at a time, one hop) run with records of the size of a real
//!    `order.created` event (Avro + the 5-byte Confluent header, measured here). The
//!    floor is measured once more after the loads, to show how much the machine drifted.
//! 3. **Loads.** Each offered load runs open loop (see [`benches::load`]):
//!    `POST /v1/orders` on a fixed schedule that does not slow down when answers do.
//!    Around each load (and its drain) the run reads every process's CPU seconds
//!    (brokers, registry, monitoring, the services, the load generator and the reader
//!    thread: [`cost`]), the end offsets of the stack's topics (Kafka records written and
//!    read, the unit ProducerPerformance counts) and the services' transaction
//!    histograms ([`transactions`]).
//! 4. **Matching.** A consumer started before any load reads the prefixed
//!    `inventory-service.stock.updated` with `isolation.level=read_committed` (what any
//!    downstream reader sees: the pipeline writes in Kafka transactions, and a record of
//!    an open or aborted transaction must not count as delivered), all partitions
//!    assigned from the beginning, on a thread of its own so the load's tasks never delay
//!    its clock. Per SKU it keeps the time the first record showing the order became
//!    readable (its reservation, or the sale if the pipeline took in the order and its
//!    payment in one epoch) and the time the sale (payment completed) became readable.
//!    End-to-end latency is the first minus the time the 201 arrived; the sale latency
//!    the second minus the same.
//! 5. **Sustained.** A load is sustained when errors ≤ 1 %, ≥ 95 % of the offered rate
//!    was accepted, end-to-end p99 ≤ 4 × the floor's one-hop p99 of the same run (the
//!    goal; `--p99-limit-ms`, 1 s, when the floor is skipped; the fixed-limit verdict is
//!    a second column) and the backlog (accepted, not yet readable) drained within
//!    `--drain-limit-s` (5 s) after the load stopped. The highest sustained load is the
//!    largest sustained step. Higher loads are not run once one is overloaded (backlog
//!    not drained at all, errors, or under 95 % accepted): they could only be worse and
//!    would take the drain wait each.
//!
//! Writes `<out>/bench.json` and `<out>/bench.md` (also printed); progress goes to
//! stderr. All traffic goes to 127.0.0.1 and the configured cluster.

mod cost;
mod floor;
mod matcher;
mod pipeline;
mod plan;
mod reader;
mod report;
mod stages;
mod step;
mod transactions;
mod txn_hop;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use benches::load::{OrderMix, Skus};
use benches::machine::{self, CpuSample, loadavg};
use clap::Parser;
use serde_json::json;

use crate::plan::{Args, Plan};
use crate::report::{RULE, markdown, write_out};
use crate::step::ratio;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::of(&args);
    if plan.rates.is_empty()
        || plan.rates.iter().any(|r| !r.is_finite() || *r <= 0.0)
        || plan.step_s == 0
    {
        bail!("rates must be positive and --step-secs at least 1");
    }
    let started = Instant::now();
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut machine = machine::describe();
    // How busy the machine is before the run starts (others' builds and tests share it).
    let cpu0 = CpuSample::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    machine["cpu_busy_pct_before"] = json!(CpuSample::now().busy_pct_since(cpu0));
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mix = Arc::new(OrderMix {
        seed: 7,
        run: format!("bench-{run_id}"),
        grpc_share: args.grpc_share,
        skus: Skus::Unique(format!("BENCH-{}-", run_id.to_uppercase())),
        max_lines: 1,
        declined_share: 0.0,
        declined_customers: Vec::new(),
    });
    let record_size = floor::order_record_size(&mix);
    let kafka = benches::cluster::kafka_settings();
    // The partition count drives the brokers' CPU per fetch: say what the run met.
    let shape = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || benches::cluster::cluster_shape(&kafka)).await?
    };
    match &shape {
        Ok(s) if s.scratch_partitions > 0 => eprintln!(
            "pipeline-bench: warning: {} of the cluster's {} partitions belong to scratch stacks \
             (`stack-…` topics) that earlier runs left; they raise the brokers' CPU per request \
             (delete them when no test or benchmark runs)",
            s.scratch_partitions, s.partitions
        ),
        Ok(_) => {}
        Err(e) => eprintln!("pipeline-bench: cluster metadata unavailable: {e}"),
    }
    machine["cluster"] = json!(shape.ok());
    eprintln!(
        "pipeline-bench ({:?} mode): loads {:?} orders/s × {} s, order.created records of {record_size} B; machine load {}",
        args.mode,
        plan.rates,
        plan.step_s,
        loadavg()
    );

    // The floor is measured inside the pipeline part, with the services running idle
    // (the machine state of the loads), before and after the loads; alone only with
    // --floor-only.
    let (pipe, pipe_error, floor_only) = if args.floor_only {
        let f = floor::run_floor(&kafka, &plan, &run_id, record_size).await;
        (None, Some("skipped (--floor-only)".to_string()), Some(f))
    } else {
        match pipeline::run_pipeline(&args, &plan, mix, record_size, &run_id).await {
            Ok(p) => (Some(p), None, None),
            Err(e) => {
                eprintln!("pipeline failed: {e:#}");
                (None, Some(format!("{e:#}")), None)
            }
        }
    };
    let (floor, floor_error) = match (floor_only, &pipe) {
        (Some(Ok(f)), _) => (Some(f), None),
        (Some(Err(e)), _) => (None, Some(format!("{e:#}"))),
        (None, _) if args.skip_floor => (None, Some("skipped (--skip-floor)".to_string())),
        (None, Some(p)) => (p.floors.before.clone(), p.floors.error.clone()),
        (None, None) => (
            None,
            Some("not reached: the pipeline part failed first".to_string()),
        ),
    };

    machine["loadavg_at_end"] = json!(loadavg());
    let ratios = pipe.as_ref().map(|p| {
        json!({
            "per_load": p.steps.iter().map(|s| json!({
                "offered_per_sec": s.offered_per_sec,
                "p50_vs_end_to_end_latency_p50": s.ratio_p50_vs_floor,
                "p99_vs_end_to_end_latency_p99": s.ratio_p99_vs_floor,
                "accepted_rate_vs_producer_performance": s.ratio_rate_vs_producer_performance,
            })).collect::<Vec<_>>(),
            "highest_sustained_vs_producer_performance": p.highest_sustained_per_sec
                .zip(floor.as_ref())
                .and_then(|(h, f)| ratio(h, f.producer_performance.records_per_sec)),
        })
    });
    let report = json!({
        "benchmark": "pipeline",
        "mode": args.mode,
        "started_at_unix_ms": started_unix_ms,
        "duration_s": started.elapsed().as_secs_f64(),
        "machine": machine,
        "record_size_bytes": record_size,
        "plan": plan,
        "settings": {
            "acks": "all",
            "enable_idempotence": true,
            "replication_factor": 3,
            "min_insync_replicas": 2,
            "partitions": 6,
            "pipeline_workers": args.workers,
            "grpc_share": args.grpc_share,
            "p99_limit_ms": args.p99_limit_ms,
            "drain_limit_s": args.drain_limit_s,
            "sustained_rule": RULE,
            "latency": "end_to_end = first stock.updated of the order's SKU that shows the order (reserved > 0, or on_hand below the restock when order and payment were taken in in one epoch) readable (read_committed) minus the time its 201 arrived (orders never readable within the drain wait count with the time they had waited then); post_latency = due time (open-loop schedule) to 201",
        },
        "floor": floor,
        "floor_error": floor_error,
        "pipeline": pipe,
        "pipeline_error": pipe_error,
        "ratios_pipeline_over_floor": ratios,
    });
    let table = markdown(&report, floor.as_ref(), pipe.as_ref());
    write_out(&args.out, &report, &table)?;
    println!("{table}");
    eprintln!(
        "pipeline-bench: done in {:.0} s; wrote {} and {}",
        started.elapsed().as_secs_f64(),
        args.out.join("bench.json").display(),
        args.out.join("bench.md").display()
    );
    if !args.floor_only
        && let Some(e) = report["pipeline_error"].as_str()
    {
        bail!("the pipeline part did not complete: {e}");
    }
    if !args.skip_floor
        && let Some(e) = report["floor_error"].as_str()
    {
        bail!("the floor part did not complete: {e}");
    }
    Ok(())
}
