//! `make bench`: the order pipeline end to end beside Kafka's own floor, in one run on the
//! same cluster.
//!
//! 1. **Floor.** On topics of its own (RF 3, 6 partitions, `min.insync.replicas=2`) Kafka's
//!    `ProducerPerformance` (acks=all, idempotence, lz4, linger 5 ms: the services'
//!    producer settings) and `EndToEndLatency` (acks=all, one record at a time, one hop)
//!    run with records of the size of a real `order.created` event (Avro + the 5-byte
//!    Confluent header, measured here).
//! 2. **Pipeline.** [`Stack::start`] runs ingress, payment and the pipeline (`-w 2`) as
//!    release processes on prefixed copies of every topic. Every order of the run has one
//!    line of a SKU no other order uses, so its `stock.updated` record is found by key.
//!    All those SKUs are restocked first (and the restocks awaited on the topic), a short
//!    warm-up follows, then each offered load runs open loop (see [`benches::load`]):
//!    `POST /v1/orders` on a fixed schedule that does not slow down when answers do.
//! 3. **Matching.** A consumer started before any load reads the prefixed
//!    `inventory-service.stock.updated` with `isolation.level=read_committed` (what any
//!    downstream reader sees: the pipeline writes in Kafka transactions, and a record of
//!    an open or aborted transaction must not count as delivered), all partitions
//!    assigned from the beginning, on a thread of its own so the load's tasks never delay
//!    its clock. Per SKU it keeps the time the first record showing the order became
//!    readable: its reservation, or, if the pipeline took in the order and its payment
//!    in the same epoch (it does when behind), the sale; later records are ignored.
//!    End-to-end latency is that time minus the time the 201 arrived.
//! 4. **Sustained.** A load is sustained when errors ≤ 1 %, ≥ 95 % of the offered rate
//!    was accepted, end-to-end p99 < `--p99-limit-ms` (1 s) and the backlog (accepted,
//!    not yet readable) drained within `--drain-limit-s` (5 s) after the load stopped.
//!    The highest sustained load is the largest sustained step. Higher loads are not
//!    run once one is overloaded (backlog not drained at all, errors, or under 95 %
//!    accepted): they could only be worse and would take the drain wait each.
//!
//! Writes `<out>/bench.json` and `<out>/bench.md` (also printed); progress goes to
//! stderr. All traffic goes to 127.0.0.1 and the configured cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use benches::client::{Api, Client};
use benches::floor::{
    EndToEnd, ProducerPerf, ToolConnection, end_to_end_latency, producer_performance,
};
use benches::load::{Counters, OrderMix, Pace, Run, Skus, open_loop, unique_index, unique_sku};
use benches::scenario::GatewayRules;
use benches::stack::Stack;
use benches::stats::Summary;
use clap::{Parser, ValueEnum};
use eventbus::admin::{Admin, TopicList};
use eventbus::client::{self, GroupOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{Consumer, Message, Offset, TopicPartitionList};
use eventbus::{KafkaSettings, RegistryClient, RegistryConfig};
use futures::StreamExt;
use schemas::{Event, OrderCreated, OrderLine, StockUpdated};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Two loads of 20 s: under 5 minutes in all.
    Short,
    /// Five loads of 60 s.
    Full,
}

#[derive(Parser)]
#[command(
    about = "The order pipeline's end-to-end latency and sustained load beside Kafka's floor"
)]
struct Args {
    /// `short` (under 5 minutes) or `full`.
    #[arg(long, value_enum, default_value = "full")]
    mode: Mode,
    /// Folder for bench.json and bench.md.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Offered loads in orders/s, comma-separated (default: by mode).
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// Seconds per load (default: by mode).
    #[arg(long)]
    step_secs: Option<u64>,
    /// ProducerPerformance records (default: by mode).
    #[arg(long)]
    producer_records: Option<u64>,
    /// EndToEndLatency records (default: by mode).
    #[arg(long)]
    e2e_records: Option<u64>,
    /// Timely worker threads of the pipeline.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Share of orders sent over gRPC instead of REST.
    #[arg(long, default_value_t = 0.0)]
    grpc_share: f64,
    /// A load is sustained only if its end-to-end p99 is below this.
    #[arg(long, default_value_t = 1000.0)]
    p99_limit_ms: f64,
    /// A load is sustained only if its backlog drains within this after it stops.
    #[arg(long, default_value_t = 5.0)]
    drain_limit_s: f64,
    /// Units each SKU is restocked with before the loads.
    #[arg(long, default_value_t = 1000)]
    restock_units: i64,
    /// Skip the restock (orders then oversell, which the pipeline shows, not refuses).
    #[arg(long)]
    no_restock: bool,
    /// `fetch.wait.max.ms` of the matching consumer (the most it adds to a latency).
    #[arg(long, default_value_t = 10)]
    fetch_wait_ms: u64,
    /// Requests awaiting an answer at most; more are skipped and counted as errors.
    #[arg(long, default_value_t = 5000)]
    max_in_flight: usize,
    /// Run every load even after one was overloaded (backlog not drained, errors, or
    /// under 95 % accepted).
    #[arg(long)]
    keep_going: bool,
    /// Skip Kafka's floor (no ratios then).
    #[arg(long)]
    skip_floor: bool,
    /// Measure only Kafka's floor (needs only the cluster).
    #[arg(long, conflicts_with = "skip_floor")]
    floor_only: bool,
}

/// What a mode runs.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    rates: Vec<f64>,
    step_s: u64,
    producer_records: u64,
    e2e_records: u64,
    warmup_rate: f64,
    warmup_s: u64,
    /// How long to wait for a backlog to drain before giving up on it.
    drain_wait_s: u64,
    /// Pause between loads (payments settle, the pipeline idles).
    settle_s: u64,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        let mut plan = match args.mode {
            Mode::Short => Plan {
                rates: vec![50.0, 200.0],
                step_s: 20,
                producer_records: 20_000,
                e2e_records: 2_000,
                warmup_rate: 20.0,
                warmup_s: 3,
                drain_wait_s: 15,
                settle_s: 2,
            },
            Mode::Full => Plan {
                rates: vec![50.0, 100.0, 200.0, 400.0, 800.0],
                step_s: 60,
                producer_records: 200_000,
                e2e_records: 10_000,
                warmup_rate: 20.0,
                warmup_s: 5,
                drain_wait_s: 60,
                settle_s: 5,
            },
        };
        if let Some(r) = &args.rates {
            plan.rates = r.clone();
        }
        if let Some(s) = args.step_secs {
            plan.step_s = s;
        }
        if let Some(n) = args.producer_records {
            plan.producer_records = n;
        }
        if let Some(n) = args.e2e_records {
            plan.e2e_records = n;
        }
        plan
    }
}

// ---------------------------------------------------------------------------------------
// Machine

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> serde_json::Value {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model,
        "mem_total_mib": mem_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": loadavg(),
    })
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = read("/proc/stat");
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

fn busy_pct(from: (u64, u64), to: (u64, u64)) -> Option<f64> {
    let total = to.1.checked_sub(from.1)?;
    (total > 0).then(|| 100.0 * to.0.saturating_sub(from.0) as f64 / total as f64)
}

// ---------------------------------------------------------------------------------------
// Floor

#[derive(Debug, Clone, Serialize)]
struct Floor {
    producer_performance: ProducerPerf,
    end_to_end_latency: EndToEnd,
}

/// The average size of the order.created records the load produces, as ingress writes
/// them: Avro datum + 5-byte Confluent header (headers and key not counted).
fn order_record_size(mix: &OrderMix) -> usize {
    let n = 200u64;
    let total: usize = (0..n)
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
            let event = OrderCreated {
                event_id: uuid::Uuid::new_v4(),
                order_id: uuid::Uuid::now_v7(),
                customer_id: o.customer,
                currency: "EUR".into(),
                total_minor: schemas::order_total(&lines).unwrap_or(0),
                lines,
                created_at: 1_764_000_000_000,
                channel: Some("REST".into()),
            };
            event.to_avro().map(|v| v.len() + 5).unwrap_or(0)
        })
        .sum();
    total / n as usize
}

async fn run_floor(
    kafka: &KafkaSettings,
    plan: &Plan,
    run: &str,
    record_size: usize,
) -> anyhow::Result<Floor> {
    let pp_topic = format!("bench-floor-pp-{run}");
    let e2e_topic = format!("bench-floor-e2e-{run}");
    let admin = Admin::new(kafka)?;
    let tools = ToolConnection::for_settings(kafka)?;
    let list = TopicList::parse(&format!(
        "[defaults]\nreplication_factor = 3\n[defaults.config]\n\"min.insync.replicas\" = \"2\"\n\
         [[topic]]\nname = \"{pp_topic}\"\npartitions = 6\n[[topic]]\nname = \"{e2e_topic}\"\npartitions = 6\n"
    ))
    .map_err(anyhow::Error::msg)?;
    admin
        .apply(&list)
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
        anyhow::Ok(Floor {
            producer_performance: pp,
            end_to_end_latency: e2e,
        })
    }
    .await;
    let _ = admin.delete_topics(&[&pp_topic, &e2e_topic]).await;
    result
}

// ---------------------------------------------------------------------------------------
// The matching consumer

/// Per order index: when its SKU's restock and the order's effect became readable.
///
/// The order's effect is the SKU's first record that differs from the restocked state
/// (`on_hand = restock_units, reserved = 0`): normally the reservation (`reserved = 1`).
/// When the pipeline ingests an order and its payment in the same epoch, which happens
/// when it is behind, the epoch's consolidated output shows only the sale
/// (`on_hand = restock_units - 1, reserved = 0`); that record is the order's effect too.
struct Matcher {
    t0: Instant,
    prefix: String,
    /// Units of the restock (0 without one).
    restock_units: i64,
    reserved_at: Vec<AtomicU64>,
    restocked_at: Vec<AtomicU64>,
    reserved: AtomicU64,
    /// Orders whose first visible effect was the sale (order and payment in one epoch).
    sale_first: AtomicU64,
    restocked: AtomicU64,
    records: AtomicU64,
    foreign: AtomicU64,
    undecodable: AtomicU64,
    consumer_errors: AtomicU64,
    stop: AtomicBool,
}

impl Matcher {
    fn new(prefix: String, restock_units: i64, orders: u64) -> Matcher {
        let slots = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Matcher {
            t0: Instant::now(),
            prefix,
            restock_units,
            reserved_at: slots(orders),
            restocked_at: slots(orders),
            reserved: AtomicU64::new(0),
            sale_first: AtomicU64::new(0),
            restocked: AtomicU64::new(0),
            records: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            consumer_errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        (at - self.t0).as_nanos() as u64 + 1
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        (stamp > 0).then(|| self.t0 + Duration::from_nanos(stamp - 1))
    }

    /// When order `i`'s effect (reservation or sale) became readable.
    fn reserved_at(&self, i: u64) -> Option<Instant> {
        let slot = self.reserved_at.get(i as usize)?;
        self.instant(slot.load(Ordering::Acquire))
    }

    /// Sets `slot` unless already set; true if this was the first.
    fn first(slot: Option<&AtomicU64>, stamp: u64, counter: &AtomicU64) -> bool {
        let first = slot.is_some_and(|slot| {
            slot.compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if first {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    async fn record(
        &self,
        registry: &RegistryClient,
        topic: &str,
        msg: &impl Message,
        at: Instant,
    ) {
        self.records.fetch_add(1, Ordering::Relaxed);
        let index = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| unique_index(&self.prefix, k));
        let Some(index) = index else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match eventbus::codec::decode::<StockUpdated>(registry, topic, msg.payload()).await {
            Ok((event, _)) => {
                let stamp = self.stamp(at);
                let i = index as usize;
                if event.reserved > 0 || event.on_hand != self.restock_units {
                    let first = Self::first(self.reserved_at.get(i), stamp, &self.reserved);
                    if first && event.reserved == 0 {
                        self.sale_first.fetch_add(1, Ordering::Relaxed);
                    }
                } else if event.on_hand > 0 {
                    Self::first(self.restocked_at.get(i), stamp, &self.restocked);
                }
            }
            Err(_) => {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Starts the read_committed consumer on a thread of its own (with its own runtime) and
/// returns once all partitions are assigned.
fn start_matcher(
    kafka: &KafkaSettings,
    topic: String,
    matcher: Arc<Matcher>,
    fetch_wait_ms: u64,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    // A read_committed stream consumer that is only `assign()`ed (below, from the
    // beginning): it never joins its group and never commits.
    let mut options =
        GroupOptions::new(format!("pipeline-bench-{}", uuid::Uuid::new_v4().simple()));
    options.read_committed = true;
    options.tuning = client::tuning([
        // The most the reader adds to a measured latency (`--fetch-wait-ms`).
        ("fetch.wait.max.ms", fetch_wait_ms.to_string()),
        // No statistics: they only feed a group lag gauge, and there are no group offsets.
        ("statistics.interval.ms", "0".to_owned()),
    ]);
    let kafka = kafka.clone();
    let registry = RegistryClient::new(&RegistryConfig::from_env())?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let handle = std::thread::Builder::new()
        .name("stock-updated-reader".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::new(e).context("runtime")));
                    return;
                }
            };
            rt.block_on(async move {
                let context = BusContext::new(
                    "pipeline-bench/stock-updated",
                    None,
                    eventbus::BusMetrics::default(),
                );
                let consumer = match client::group_consumer(&kafka, &options, context) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context("consumer")));
                        return;
                    }
                };
                let assigned = (|| {
                    let meta = consumer
                        .fetch_metadata(Some(&topic), Duration::from_secs(10))
                        .with_context(|| format!("metadata of {topic}"))?;
                    let partitions = meta
                        .topics()
                        .first()
                        .map(|t| t.partitions().len())
                        .unwrap_or(0);
                    if partitions == 0 {
                        bail!("{topic} has no partitions");
                    }
                    let mut tpl = TopicPartitionList::new();
                    for p in 0..partitions as i32 {
                        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
                    }
                    consumer.assign(&tpl)?;
                    anyhow::Ok(())
                })();
                let failed = assigned.is_err();
                let _ = ready_tx.send(assigned);
                if failed {
                    return;
                }
                // Bounded: ends when told to, and in any case after a day.
                let deadline = Instant::now() + Duration::from_secs(24 * 3600);
                while !matcher.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                        Err(_) => {}
                        Ok(Ok(msg)) => {
                            let at = Instant::now();
                            matcher.record(&registry, &topic, &msg, at).await;
                        }
                        Ok(Err(_)) => {
                            matcher.consumer_errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        })?;
    match ready_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e.context("the stock.updated reader did not start")),
        Err(_) => bail!("the stock.updated reader did not start within 60 s"),
    }
}

// ---------------------------------------------------------------------------------------
// Loads

#[derive(Debug, Clone, Serialize)]
struct StepReport {
    offered_per_sec: f64,
    duration_s: u64,
    scheduled: usize,
    accepted: usize,
    failed: usize,
    skipped: usize,
    achieved_per_sec: f64,
    /// How far the generator fell behind its schedule at worst (included in latencies).
    max_send_delay_ms: f64,
    /// Due time → 201 received.
    post_latency: Option<Summary>,
    /// 201 received → first stock.updated of the SKU showing the order readable
    /// (read_committed). The headline figure. Orders never readable within the drain
    /// wait count with the time they had waited then (a lower bound).
    end_to_end: Option<Summary>,
    /// Due time → readable: what the client's clock would say end to end.
    due_to_readable: Option<Summary>,
    /// Orders whose record was readable before their 201 arrived (counted as 0 ms).
    readable_before_accepted: usize,
    matched: usize,
    unmatched: usize,
    /// Accepted but not yet readable when the load stopped.
    outstanding_at_end: usize,
    outstanding_max: usize,
    /// Accepted but not yet readable at each second of the load.
    outstanding_per_second: Vec<usize>,
    /// Load stopped → last accepted order readable; `None` if it did not drain in time.
    drain_s: Option<f64>,
    /// CPU busy % of the whole machine during the load (all processes).
    cpu_busy_pct: Option<f64>,
    loadavg_after: String,
    sustained: bool,
    not_sustained_because: Vec<String>,
    /// Clearly beyond capacity: backlog not drained within the drain wait, errors over
    /// 1 %, or under 95 % accepted. Higher loads are then not run.
    overloaded: bool,
    errors: Vec<(String, usize)>,
    ratio_p50_vs_floor: Option<f64>,
    ratio_p99_vs_floor: Option<f64>,
    ratio_rate_vs_producer_performance: Option<f64>,
}

struct Ctx<'a> {
    client: Client,
    mix: Arc<OrderMix>,
    matcher: Arc<Matcher>,
    plan: &'a Plan,
    args: &'a Args,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Runs one open-loop load of orders `first..first + rate × secs` and waits for its
/// backlog to drain (bounded).
async fn run_load(ctx: &Ctx<'_>, label: &str, rate: f64, secs: u64, first: u64) -> Run<()> {
    let pace = Pace {
        rate,
        duration: Duration::from_secs(secs),
        max_in_flight: ctx.args.max_in_flight,
        answer_timeout: Duration::from_secs(30),
    };
    let counters = Arc::new(Counters::default());
    let range = first..first + pace.requests();
    // Progress, once a second, until the load and its drain are over.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let progress = {
        let (counters, matcher, label) = (counters.clone(), ctx.matcher.clone(), label.to_string());
        let range = range.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let limit = Duration::from_secs(secs + 120);
            while start.elapsed() < limit {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop_rx.changed() => return,
                }
                let (sent, ok, failed, skipped) = counters.snapshot();
                let readable = range
                    .clone()
                    .filter(|i| matcher.reserved_at(*i).is_some())
                    .count() as u64;
                let t = start.elapsed().as_secs_f64().min(secs as f64).max(1e-3);
                eprintln!(
                    "{label}: {:>5.1} s  sent {sent}  accepted {ok} ({:.1}/s)  failed {failed}  skipped {skipped}  readable {readable}  outstanding {}",
                    start.elapsed().as_secs_f64(),
                    ok as f64 / t,
                    ok.saturating_sub(readable)
                );
            }
        })
    };
    let (client, mix) = (ctx.client.clone(), ctx.mix.clone());
    let run = open_loop(&pace, &counters, first, move |i| {
        let (client, order) = (client.clone(), mix.order(i));
        async move {
            client
                .create_order(order.api, &order.key, &order.customer, "EUR", &order.lines)
                .await
                .map(|_| ())
        }
    })
    .await;
    // Drain: every accepted order's effect readable, or give up after drain_wait_s.
    let deadline = run.end + Duration::from_secs(ctx.plan.drain_wait_s);
    while Instant::now() < deadline {
        let waiting = run
            .outcomes
            .iter()
            .filter(|o| o.result.is_ok() && ctx.matcher.reserved_at(o.index).is_none())
            .count();
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let _ = progress.await;
    run
}

fn report_step(
    ctx: &Ctx<'_>,
    run: &Run<()>,
    rate: f64,
    secs: u64,
    cpu: Option<f64>,
    floor: Option<&Floor>,
) -> StepReport {
    let m = &ctx.matcher;
    let accepted: Vec<(u64, Instant, Instant)> = run
        .outcomes
        .iter()
        .filter_map(|o| Some((o.index, o.due, o.answered.filter(|_| o.result.is_ok())?)))
        .collect();
    let mut e2e = Vec::new();
    let mut due_to_readable = Vec::new();
    let mut before = 0;
    let mut readable = Vec::new();
    // An order never seen within the drain wait counts with the time it had waited
    // when the wait ended: a lower bound, but leaving it out would flatter the tail.
    let gave_up = run.end + Duration::from_secs(ctx.plan.drain_wait_s);
    for (i, due, at) in &accepted {
        match m.reserved_at(*i) {
            Some(r) => {
                if r < *at {
                    before += 1;
                }
                e2e.push(r.saturating_duration_since(*at));
                due_to_readable.push(r.saturating_duration_since(*due));
                readable.push(r);
            }
            None => {
                e2e.push(gave_up.saturating_duration_since(*at));
                due_to_readable.push(gave_up.saturating_duration_since(*due));
            }
        }
    }
    let outstanding = |t: Instant| {
        accepted
            .iter()
            .filter(|(i, _, at)| *at <= t && m.reserved_at(*i).is_none_or(|r| r > t))
            .count()
    };
    let per_second: Vec<usize> = (1..=secs)
        .map(|k| outstanding(run.start + Duration::from_secs(k)))
        .collect();
    let matched = readable.len();
    let drain_s = (matched == accepted.len()).then(|| {
        readable
            .iter()
            .max()
            .map(|last| last.saturating_duration_since(run.end).as_secs_f64())
            .unwrap_or(0.0)
    });
    let failed = run
        .outcomes
        .iter()
        .filter(|o| o.sent.is_some() && o.result.is_err())
        .count();
    let skipped = run.outcomes.iter().filter(|o| o.sent.is_none()).count();
    let end_to_end = Summary::of(&mut e2e);
    let achieved = run.achieved_rate();

    let mut why = Vec::new();
    let scheduled = run.outcomes.len();
    let too_many_errors = (failed + skipped) as f64 > 0.01 * scheduled as f64;
    let too_few_accepted = achieved < 0.95 * rate;
    let overloaded = too_many_errors || too_few_accepted || drain_s.is_none();
    if too_many_errors {
        why.push(format!(
            "{} of {scheduled} requests failed",
            failed + skipped
        ));
    }
    if too_few_accepted {
        why.push(format!("accepted {achieved:.1}/s < 95 % of {rate}/s"));
    }
    match &end_to_end {
        Some(s) if s.p99_ms >= ctx.args.p99_limit_ms => why.push(format!(
            "p99 {:.0} ms >= {:.0} ms",
            s.p99_ms, ctx.args.p99_limit_ms
        )),
        None => why.push("no order became readable".into()),
        _ => {}
    }
    match drain_s {
        Some(d) if d > ctx.args.drain_limit_s => why.push(format!(
            "backlog drained in {d:.1} s > {} s",
            ctx.args.drain_limit_s
        )),
        None => why.push(format!(
            "{} accepted orders not readable {} s after the load",
            accepted.len() - matched,
            ctx.plan.drain_wait_s
        )),
        _ => {}
    }
    let floor_e2e = floor.map(|f| f.end_to_end_latency);
    StepReport {
        offered_per_sec: rate,
        duration_s: secs,
        scheduled,
        accepted: accepted.len(),
        failed,
        skipped,
        achieved_per_sec: achieved,
        max_send_delay_ms: ms(run.max_send_delay),
        post_latency: Summary::of(&mut run.latencies()),
        end_to_end,
        due_to_readable: Summary::of(&mut due_to_readable),
        readable_before_accepted: before,
        matched,
        unmatched: accepted.len() - matched,
        outstanding_at_end: outstanding(run.end),
        outstanding_max: per_second.iter().copied().max().unwrap_or(0),
        outstanding_per_second: per_second,
        drain_s,
        cpu_busy_pct: cpu,
        loadavg_after: loadavg(),
        sustained: why.is_empty(),
        not_sustained_because: why,
        overloaded,
        errors: run.error_samples(5),
        ratio_p50_vs_floor: end_to_end
            .zip(floor_e2e)
            .and_then(|(s, f)| ratio(s.p50_ms, f.p50_ms)),
        ratio_p99_vs_floor: end_to_end
            .zip(floor_e2e)
            .and_then(|(s, f)| ratio(s.p99_ms, f.p99_ms)),
        ratio_rate_vs_producer_performance: floor
            .and_then(|f| ratio(achieved, f.producer_performance.records_per_sec)),
    }
}

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

#[derive(Debug, Clone, Serialize)]
struct PipelineReport {
    stack_prefix: String,
    workers: usize,
    restock: serde_json::Value,
    warmup: serde_json::Value,
    steps: Vec<StepReport>,
    skipped_rates: Vec<f64>,
    highest_sustained_per_sec: Option<f64>,
    consumer: serde_json::Value,
}

async fn run_pipeline(
    args: &Args,
    plan: &Plan,
    mix: Arc<OrderMix>,
    floor: Option<&Floor>,
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
        let matcher = Arc::new(Matcher::new(prefix, restock_units, orders));
        let reader = start_matcher(
            &stack.kafka,
            stack.topic("inventory-service.stock.updated"),
            matcher.clone(),
            args.fetch_wait_ms,
        )?;
        let ctx = Ctx {
            client: Client::new(stack.endpoints.clone())?,
            mix: mix.clone(),
            matcher: matcher.clone(),
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
                let cpu0 = cpu_jiffies();
                let run = run_load(&ctx, &label, rate, plan.step_s, first).await;
                let cpu = busy_pct(cpu0, cpu_jiffies());
                let step = report_step(&ctx, &run, rate, plan.step_s, cpu, floor);
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
            let highest = steps
                .iter()
                .filter(|s| s.sustained)
                .map(|s| s.offered_per_sec)
                .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))));
            anyhow::Ok(PipelineReport {
                stack_prefix: stack.prefix.clone(),
                workers: args.workers,
                restock,
                warmup,
                steps,
                skipped_rates,
                highest_sustained_per_sec: highest,
                consumer: json!({
                    "isolation_level": "read_committed",
                    "fetch_wait_max_ms": args.fetch_wait_ms,
                    "records": matcher.records.load(Ordering::Relaxed),
                    "orders_first_seen_as_sale": matcher.sale_first.load(Ordering::Relaxed),
                    "foreign_keys": matcher.foreign.load(Ordering::Relaxed),
                    "undecodable": matcher.undecodable.load(Ordering::Relaxed),
                    "errors": matcher.consumer_errors.load(Ordering::Relaxed),
                }),
            })
        }
        .await;
        matcher.stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        result
    }
    .await;
    eprintln!("pipeline: stopping the services and deleting the stack's topics ...");
    stack.shutdown().await;
    result
}

// ---------------------------------------------------------------------------------------
// Report

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

const RULE: &str = "a load is sustained when errors ≤ 1 %, at least 95 % of the offered rate is accepted, \
the end-to-end p99 is below the limit and the backlog (accepted orders not yet readable) drains within \
the drain limit after the load stops; the highest sustained load is the largest sustained step";

fn markdown(
    report: &serde_json::Value,
    floor: Option<&Floor>,
    pipe: Option<&PipelineReport>,
) -> String {
    let m = &report["machine"];
    let mut s = String::new();
    s.push_str(&format!(
        "## Order pipeline benchmark ({} mode)\n\n",
        report["mode"].as_str().unwrap_or("?")
    ));
    s.push_str(&format!(
        "Machine: {} × {}, {} MiB RAM, Linux {}; CPU {} % busy before the run; load average {} at start, {} at end.  \n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_total_mib"],
        m["kernel"].as_str().unwrap_or("?"),
        fmt_opt(m["cpu_busy_pct_before"].as_f64(), 0),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
        m["loadavg_at_end"].as_str().unwrap_or("?")
    ));
    s.push_str(&format!(
        "Records: {} B (an order.created event: Avro + 5-byte header), acks=all, idempotence, RF 3, \
         min.insync.replicas 2, 6 partitions. Everything (3 brokers, registry, services, load, tools) \
         shares this machine.\n\n",
        report["record_size_bytes"]
    ));
    s.push_str("### Kafka's floor\n\n| tool | records | records/s | avg ms | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n");
    match floor {
        Some(f) => {
            let (p, e) = (&f.producer_performance, &f.end_to_end_latency);
            s.push_str(&format!(
                "| ProducerPerformance (max throughput, lz4, linger 5 ms) | {} | {:.0} | {:.1} | {:.0} | {:.0} |\n",
                p.records, p.records_per_sec, p.avg_ms, p.p50_ms, p.p99_ms
            ));
            s.push_str(&format!(
                "| EndToEndLatency (one hop, one record at a time) | {} | – | {:.2} | {:.0} | {:.0} |\n\n",
                e.records, e.avg_ms, e.p50_ms, e.p99_ms
            ));
        }
        None => s.push_str(&format!(
            "| not measured: {} | | | | | |\n\n",
            report["floor_error"].as_str().unwrap_or("skipped")
        )),
    }
    s.push_str(
        "### Pipeline: `POST /v1/orders` answered 201 → its `stock.updated` readable (read_committed)\n\n\
         | offered /s | accepted /s | errors | POST p50 / p99 ms | e2e p50 ms | p95 ms | p99 ms | max ms \
         | backlog at end | drain s | CPU busy | sustained | p50 / floor p50 | p99 / floor p99 | rate / ProducerPerformance |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    match pipe {
        Some(p) => {
            for st in &p.steps {
                let e = st.end_to_end;
                s.push_str(&format!(
                    "| {} | {:.1} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    st.offered_per_sec,
                    st.achieved_per_sec,
                    st.failed + st.skipped,
                    fmt_opt(st.post_latency.map(|x| x.p50_ms), 1),
                    fmt_opt(st.post_latency.map(|x| x.p99_ms), 1),
                    fmt_opt(e.map(|x| x.p50_ms), 1),
                    fmt_opt(e.map(|x| x.p95_ms), 1),
                    fmt_opt(e.map(|x| x.p99_ms), 1),
                    fmt_opt(e.map(|x| x.max_ms), 1),
                    st.outstanding_at_end,
                    st.drain_s.map(|d| format!("{d:.2}")).unwrap_or_else(|| "did not".into()),
                    st.cpu_busy_pct.map(|c| format!("{c:.0} %")).unwrap_or_default(),
                    if st.sustained { "yes" } else { "no" },
                    fmt_opt(st.ratio_p50_vs_floor, 1),
                    fmt_opt(st.ratio_p99_vs_floor, 1),
                    fmt_opt(st.ratio_rate_vs_producer_performance, 4),
                ));
            }
            for r in &p.skipped_rates {
                s.push_str(&format!(
                    "| {r} | not run: a lower load was overloaded | | | | | | | | | | | | | |\n"
                ));
            }
            let pp = floor.map(|f| f.producer_performance.records_per_sec);
            s.push_str(&format!(
                "\nHighest sustained load: **{}** orders/s{}.  \nRule: {RULE} (p99 limit {} ms, drain limit {} s).\n",
                fmt_opt(p.highest_sustained_per_sec, 0),
                match (p.highest_sustained_per_sec, pp) {
                    (Some(h), Some(pp)) if pp > 0.0 => format!(
                        " = {:.4} × ProducerPerformance's {pp:.0} records/s",
                        h / pp
                    ),
                    _ => String::new(),
                },
                report["settings"]["p99_limit_ms"],
                report["settings"]["drain_limit_s"],
            ));
            s.push_str(&format!(
                "Matching consumer (read_committed, fetch.wait.max.ms {}): {} records read, {} orders first \
                 seen as the sale (order and payment taken in in one epoch), {} undecodable.  \n",
                p.consumer["fetch_wait_max_ms"],
                p.consumer["records"],
                p.consumer["orders_first_seen_as_sale"],
                p.consumer["undecodable"],
            ));
            for st in p.steps.iter().filter(|st| !st.sustained) {
                s.push_str(&format!(
                    "{}/s not sustained: {}.  \n",
                    st.offered_per_sec,
                    st.not_sustained_because.join("; ")
                ));
            }
        }
        None => s.push_str(&format!(
            "| not measured: {} | | | | | | | | | | | | | | |\n",
            report["pipeline_error"].as_str().unwrap_or("?")
        )),
    }
    s
}

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
    let mut machine = machine();
    // How busy the machine is before the run starts (others' builds and tests share it).
    let cpu0 = cpu_jiffies();
    tokio::time::sleep(Duration::from_secs(2)).await;
    machine["cpu_busy_pct_before"] = json!(busy_pct(cpu0, cpu_jiffies()));
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
    let record_size = order_record_size(&mix);
    let kafka = benches::cluster::kafka_settings();
    eprintln!(
        "pipeline-bench ({:?} mode): loads {:?} orders/s × {} s, order.created records of {record_size} B; machine load {}",
        args.mode,
        plan.rates,
        plan.step_s,
        loadavg()
    );

    let (floor, floor_error) = if args.skip_floor {
        (None, Some("skipped (--skip-floor)".to_string()))
    } else {
        match run_floor(&kafka, &plan, &run_id, record_size).await {
            Ok(f) => (Some(f), None),
            Err(e) => {
                eprintln!("floor failed: {e:#}");
                (None, Some(format!("{e:#}")))
            }
        }
    };

    let (pipe, pipe_error) = if args.floor_only {
        (None, Some("skipped (--floor-only)".to_string()))
    } else {
        match run_pipeline(&args, &plan, mix, floor.as_ref(), &run_id).await {
            Ok(p) => (Some(p), None),
            Err(e) => {
                eprintln!("pipeline failed: {e:#}");
                (None, Some(format!("{e:#}")))
            }
        }
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

fn write_out(out: &Path, report: &serde_json::Value, table: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(
        out.join("bench.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("bench.md"), table)?;
    Ok(())
}
