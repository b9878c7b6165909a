//! The pipeline part of a run: the stack started, every SKU restocked, a warm-up, then
//! each offered load in turn until one is overloaded.
//!
//! Why: this is the sequence `benches/README.md` describes under "What one run does";
//! it owns the stack's lifetime (the services are stopped and the topics deleted
//! whatever happens) and the matching consumer's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::client::{Api, Client};
use benches::load::{OrderMix, Skus, unique_sku};
use benches::machine::CpuSample;
use benches::scenario::GatewayRules;
use benches::stack::Stack;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use crate::cost::{GcLogs, Offsets, Processes, records_between};
use crate::floor::{Floor, run_floor};
use crate::matcher::Matcher;
use crate::plan::{Args, Plan};
use crate::reader::start_reader;
use crate::report::fmt_opt;
use crate::stages::Stages;
use crate::step::{Ctx, StepReport, ratio, report_step, run_load};
use crate::transactions::Scrape;

/// Restocks every SKU of the run through ingress and waits until the restocks are
/// readable; returns (accepted, failed, seconds).
async fn restock(ctx: &Ctx<'_>, orders: u64, run_id: &str) -> anyhow::Result<(u64, u64, f64)> {
    let start = Instant::now();
    let prefix = match &ctx.mix.skus {
        Skus::Unique(p) => p.clone(),
        Skus::Pool(_) => bail!("the benchmark uses unique SKUs"),
    };
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let reporter = {
        let (done, matcher) = (done.clone(), ctx.matcher.clone());
        tokio::spawn(async move {
            for _ in 0..3600 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "restock: {} / {orders} accepted, {} readable",
                    done.load(Ordering::Relaxed),
                    matcher.restocked.load(Ordering::Relaxed)
                );
            }
        })
    };
    futures::stream::iter(0..orders)
        .map(|i| {
            let (client, key, sku) = (
                ctx.client.clone(),
                format!("{run_id}-restock-{i}"),
                unique_sku(&prefix, i),
            );
            let units = ctx.args.restock_units;
            async move { client.adjust(Api::Rest, &key, &sku, units, "restock").await }
        })
        .buffer_unordered(64)
        .for_each(|r| {
            let counter = if r.is_ok() { &done } else { &failed };
            counter.fetch_add(1, Ordering::Relaxed);
            async {}
        })
        .await;
    let accepted = done.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60 + orders / 100);
    while ctx.matcher.restocked.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reporter.abort();
    let readable = ctx.matcher.restocked.load(Ordering::Relaxed);
    if readable < accepted {
        eprintln!("restock: only {readable} of {accepted} restocks became readable; going on");
    }
    Ok((
        accepted,
        failed.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    ))
}

/// Kafka's floor measured twice with the services running: idle, after the warm-up and
/// before the loads (the one the loads are compared with), and after the loads.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Floors {
    pub(crate) before: Option<Floor>,
    pub(crate) after: Option<Floor>,
    pub(crate) error: Option<String>,
}

/// The floor unless skipped; a failure is reported, not fatal.
async fn floor(
    args: &Args,
    plan: &Plan,
    run_id: &str,
    record_size: usize,
    when: &str,
    errors: &mut Vec<String>,
) -> Option<Floor> {
    if args.skip_floor {
        return None;
    }
    eprintln!("floor ({when}), with the services running idle ...");
    match run_floor(
        &benches::cluster::kafka_settings(),
        plan,
        &format!("{run_id}-{when}"),
        record_size,
    )
    .await
    {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("floor ({when}) failed: {e:#}");
            errors.push(format!("{when}: {e:#}"));
            None
        }
    }
}

/// The pipeline part of `bench.json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PipelineReport {
    pub(crate) floors: Floors,
    pub(crate) stack_prefix: String,
    pub(crate) workers: usize,
    pub(crate) restock: serde_json::Value,
    pub(crate) warmup: serde_json::Value,
    pub(crate) steps: Vec<StepReport>,
    pub(crate) skipped_rates: Vec<f64>,
    pub(crate) highest_sustained_per_sec: Option<f64>,
    /// The same under the fixed p99 limit (`--p99-limit-ms`).
    pub(crate) highest_sustained_fixed_limit_per_sec: Option<f64>,
    pub(crate) consumer: serde_json::Value,
}

/// The largest offered rate of the steps `pick` accepts.
fn highest(steps: &[StepReport], pick: impl Fn(&StepReport) -> bool) -> Option<f64> {
    steps
        .iter()
        .filter(|s| pick(s))
        .map(|s| s.offered_per_sec)
        .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))))
}

/// Starts the stack, restocks, warms up, measures Kafka's floor with the services idle,
/// runs every load, and measures the floor again; the stack is shut down whatever
/// happens.
pub(crate) async fn run_pipeline(
    args: &Args,
    plan: &Plan,
    mix: Arc<OrderMix>,
    record_size: usize,
    run_id: &str,
) -> anyhow::Result<PipelineReport> {
    let warm = (plan.warmup_rate * plan.warmup_s as f64).round() as u64;
    let counts: Vec<u64> = plan
        .rates
        .iter()
        .map(|r| (r * plan.step_s as f64).round() as u64)
        .collect();
    let orders = warm + counts.iter().sum::<u64>();

    eprintln!(
        "pipeline: starting ingress, payment and pipeline -w {} ...",
        args.workers
    );
    let workers = args.workers.to_string();
    let stack = Stack::start(GatewayRules::default(), &["-w", &workers])
        .await
        .context("starting the stack (build with `cargo build --release -p ingress -p payment -p pipeline -p benches`)")?;
    eprintln!(
        "pipeline: ready on prefix {}: ingress {} / {}, views {}; logs in {}",
        stack.prefix,
        stack.endpoints.ingress_rest,
        stack.endpoints.ingress_grpc,
        stack.endpoints.views_rest,
        stack
            .log("pipeline")
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    let result = async {
        let prefix = match &mix.skus {
            Skus::Unique(p) => p.clone(),
            Skus::Pool(_) => bail!("the benchmark uses unique SKUs"),
        };
        let restock_units = if args.no_restock {
            0
        } else {
            args.restock_units
        };
        let matcher = Arc::new(Matcher::new(prefix.clone(), restock_units, orders));
        // Ends both readers.
        let stop = Arc::new(AtomicBool::new(false));
        let reader = start_reader(
            &stack.kafka,
            "stock-updated-reader",
            vec![stack.topic("inventory-service.stock.updated")],
            matcher.clone(),
            stop.clone(),
            args.fetch_wait_ms,
        )?;
        let created_topic = stack.topic("order-service.order.created");
        let stages = Arc::new(Stages::new(prefix.clone(), created_topic.clone(), orders));
        let stage_reader = start_reader(
            &stack.kafka,
            "stage-reader",
            vec![created_topic, stack.topic("payment-service.payment.completed")],
            stages.clone(),
            stop.clone(),
            args.fetch_wait_ms,
        )?;
        let ctx = Ctx {
            client: Client::new(stack.endpoints.clone())?,
            mix: mix.clone(),
            matcher: matcher.clone(),
            stages: stages.clone(),
            plan,
            args,
        };
        let result = async {
            let restock = if args.no_restock {
                json!({"skipped": true})
            } else {
                eprintln!(
                    "restock: {orders} SKUs × {} units through POST /v1/inventory/adjustments ...",
                    args.restock_units
                );
                let (ok, failed, secs) = restock(&ctx, orders, run_id).await?;
                eprintln!("restock: {ok} accepted, {failed} failed, readable after {secs:.1} s");
                json!({"skus": orders, "units": args.restock_units, "accepted": ok, "failed": failed,
                       "readable": matcher.restocked.load(Ordering::Relaxed), "seconds": secs})
            };
            let w = run_load(&ctx, "warm-up", plan.warmup_rate, plan.warmup_s, 0).await;
            let warmup = json!({"rate": plan.warmup_rate, "seconds": plan.warmup_s,
                "accepted": w.ok(), "readable": (0..warm).filter(|i| matcher.reserved_at(*i).is_some()).count()});
            tokio::time::sleep(Duration::from_secs(plan.settle_s)).await;
            let mut floor_errors = Vec::new();
            let before = floor(args, plan, run_id, record_size, "before", &mut floor_errors).await;
            tokio::time::sleep(Duration::from_secs(plan.settle_s)).await;

            let processes = Processes::of(&stack);
            let gc_logs = GcLogs::of_brokers();
            let offsets = Offsets::new(&stack.kafka, &stack)?;
            let offsets = Arc::new(offsets);
            let ends = || {
                let offsets = offsets.clone();
                async move { tokio::task::spawn_blocking(move || offsets.ends()).await }
            };
            let http = reqwest::Client::new();
            let scrape = || Scrape::now(&http, &stack.payment_url, &stack.endpoints.views_rest);
            let mut steps = Vec::new();
            let mut skipped_rates = Vec::new();
            let mut first = warm;
            for (k, (&rate, &count)) in plan.rates.iter().zip(&counts).enumerate() {
                if !args.keep_going && steps.last().is_some_and(|s: &StepReport| s.overloaded) {
                    skipped_rates.push(rate);
                    continue;
                }
                let label = format!("load {}/{} at {rate}/s", k + 1, plan.rates.len());
                eprintln!("{label}: {count} orders over {} s, open loop ...", plan.step_s);
                let (cpu0, ends0, scrape0) = (CpuSample::now(), ends().await?, scrape().await);
                let (used0, gc0) = (processes.read(), gc_logs.mark());
                let run = run_load(&ctx, &label, rate, plan.step_s, first).await;
                let used = processes.read();
                let (cpu, ends1, scrape1) = (CpuSample::now().busy_pct_since(cpu0), ends().await?, scrape().await);
                let mut step = report_step(&ctx, &run, rate, plan.step_s, cpu, before.as_ref());
                let cost = used.since(&used0, step.accepted);
                let records = records_between(&ends0, &ends1, cost.seconds);
                step.ratio_kafka_records_vs_producer_performance = before
                    .as_ref()
                    .and_then(|f| ratio(records.moved_per_sec, f.producer_performance.records_per_sec));
                step.cpu = Some(cost);
                step.gc = gc_logs.since(&gc0);
                step.kafka_records = Some(records);
                step.transactions = Some(scrape1.since(&scrape0));
                eprintln!(
                    "{label}: accepted {:.1}/s, e2e p50 {} p99 {} ms, drain {}, {}",
                    step.achieved_per_sec,
                    fmt_opt(step.end_to_end.map(|s| s.p50_ms), 1),
                    fmt_opt(step.end_to_end.map(|s| s.p99_ms), 1),
                    step.drain_s.map(|d| format!("{d:.1} s")).unwrap_or("none".into()),
                    if step.sustained {
                        "sustained".to_string()
                    } else {
                        format!("not sustained: {}", step.not_sustained_because.join("; "))
                    }
                );
                steps.push(step);
                first += count;
                tokio::time::sleep(Duration::from_secs(plan.settle_s)).await;
            }
            let after = floor(args, plan, run_id, record_size, "after", &mut floor_errors).await;
            let highest_sustained = highest(&steps, |s| s.sustained);
            let highest_fixed = highest(&steps, |s| s.sustained_fixed_limit);
            anyhow::Ok(PipelineReport {
                floors: Floors {
                    before,
                    after,
                    error: (!floor_errors.is_empty()).then(|| floor_errors.join("; ")),
                },
                stack_prefix: stack.prefix.clone(),
                workers: args.workers,
                restock,
                warmup,
                steps,
                skipped_rates,
                highest_sustained_per_sec: highest_sustained,
                highest_sustained_fixed_limit_per_sec: highest_fixed,
                consumer: json!({
                    "isolation_level": "read_committed",
                    "fetch_wait_max_ms": args.fetch_wait_ms,
                    "records": matcher.records.load(Ordering::Relaxed),
                    "orders_first_seen_as_sale": matcher.sale_first.load(Ordering::Relaxed),
                    "foreign_keys": matcher.foreign.load(Ordering::Relaxed),
                    "undecodable": matcher.undecodable.load(Ordering::Relaxed),
                    "errors": reader.errors(),
                    "orders_sold": matcher.sold.load(Ordering::Relaxed),
                    "stage_reader_undecodable": stages.undecodable.load(Ordering::Relaxed),
                    "stage_reader_errors": stage_reader.errors(),
                }),
            })
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || {
            reader.join();
            stage_reader.join();
        })
        .await;
        result
    }
    .await;
    eprintln!("pipeline: stopping the services and deleting the stack's topics ...");
    stack.shutdown().await;
    result
}
