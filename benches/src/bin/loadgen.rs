//! `loadgen`: orders at a target rate against running services (by default the local
//! `make up` ones), open loop (see [`benches::load`]): request `i` is due at
//! `start + i / rate` however slow the answers are, and its latency counts from then.
//!
//! ```text
//! loadgen --rate 200 --duration 60 --grpc-share 0.4 --skus 50 --max-lines 3 \
//!         --declined-share 0.05 --restock 1000 --json target/loadgen.json
//! ```
//!
//! Prints progress on stderr each second and a summary (achieved rate, errors, latency
//! due → answer: p50, p95, p99, max, per API) at the end. For the latency all the way to
//! `stock.updated`, use `pipeline-bench`.
//!
//! Like a real client, a request refused with 503 / UNAVAILABLE (Kafka did not
//! acknowledge in time, or writes are refused), 409 / ABORTED (the first request with the
//! key is still in flight) or not answered at all (service down) is sent again with the
//! **same Idempotency-Key**, after 0.5 s doubling up to 4 s, for at most `--retry-for`
//! seconds (0: never). Latency still counts from the first attempt's due time.
//! `--accepted FILE` writes one JSON line per accepted order (id, customer, lines) and
//! per restock, for `chaos-check` to compare the topics and views with.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use benches::client::{Api, Client, Endpoints, Refusal};
use benches::load::{Counters, OrderMix, Pace, Skus, open_loop, pool_sku};
use benches::scenario::GatewayRules;
use benches::stats::Summary;
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Open-loop order load against the ingress API")]
struct Args {
    /// Target orders per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Share of orders sent over gRPC (the rest over REST).
    #[arg(long, default_value_t = 0.4)]
    grpc_share: f64,
    /// SKUs in the shared pool (`SKU-000` ...).
    #[arg(long, default_value_t = 50)]
    skus: usize,
    /// Give every order one line of a SKU of its own (`LOAD-<run>-<n>`) instead.
    #[arg(long)]
    unique_skus: bool,
    /// Lines per order at most (pool SKUs).
    #[arg(long, default_value_t = 3)]
    max_lines: usize,
    /// Share of orders by customers the simulated gateway declines (`blocked-0..4`).
    #[arg(long, default_value_t = 0.05)]
    declined_share: f64,
    /// Restock every pool SKU with this many units first (0: no restock).
    #[arg(long, default_value_t = 0)]
    restock: i64,
    /// Seed of the order stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests awaiting an answer at most; more are skipped and counted as errors.
    #[arg(long, default_value_t = 5000)]
    max_in_flight: usize,
    /// Ingress REST base URL.
    #[arg(long, env = "INGRESS_REST", default_value = "http://127.0.0.1:8080")]
    ingress_rest: String,
    /// Ingress gRPC URL.
    #[arg(long, env = "INGRESS_GRPC", default_value = "http://127.0.0.1:50051")]
    ingress_grpc: String,
    /// Also write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Retry refused or unanswered orders (same key) for up to this many seconds; 0: never.
    #[arg(long, default_value_t = 20)]
    retry_for: u64,
    /// Write every accepted order and restock here, one JSON line each.
    #[arg(long)]
    accepted: Option<PathBuf>,
}

/// loadgen's `--accepted` file, shared by the request tasks.
type AcceptedLog = Arc<Mutex<std::io::BufWriter<std::fs::File>>>;

/// Retries and refusals over the run (the [`Counters`] count requests, not attempts).
#[derive(Default)]
struct Attempts {
    /// Attempts sent again after a refusal or no answer.
    retried: AtomicU64,
    /// Answers 503 / UNAVAILABLE (every attempt).
    unavailable: AtomicU64,
    /// Answers 409 / ABORTED (every attempt).
    in_progress: AtomicU64,
    /// Attempts that reached no service.
    unreachable: AtomicU64,
}

/// Creates `order`, retrying as a real client does (see the module docs).
async fn create_with_retries(
    client: &Client,
    order: &benches::load::OrderRequest,
    retry_for: Duration,
    attempts: &Attempts,
) -> anyhow::Result<benches::client::Created> {
    with_retries(retry_for, attempts, || {
        client.create_order(order.api, &order.key, &order.customer, "EUR", &order.lines)
    })
    .await
}

/// Runs `request` (each call sends the same request, with the same key) until it is
/// answered, retrying refusals as a real client does (see the module docs).
async fn with_retries<T, F, Fut>(
    retry_for: Duration,
    attempts: &Attempts,
    request: F,
) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        let error = match request().await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let refusal = Refusal::of(&error);
        let counter = match refusal {
            Refusal::Unavailable => &attempts.unavailable,
            Refusal::InProgress => &attempts.in_progress,
            Refusal::Unreachable => &attempts.unreachable,
            Refusal::Final => return Err(error),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() + pause > retry_for {
            return Err(error);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(4));
        attempts.retried.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.rate.is_finite() || args.rate <= 0.0 || args.duration == 0 {
        bail!("--rate must be positive and --duration at least 1");
    }
    let client = Client::new(Endpoints {
        ingress_rest: args.ingress_rest.clone(),
        ingress_grpc: args.ingress_grpc.clone(),
        ..Endpoints::default()
    })?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mix = Arc::new(OrderMix {
        seed: args.seed,
        run: format!("loadgen-{run}"),
        grpc_share: args.grpc_share,
        skus: if args.unique_skus {
            Skus::Unique(format!("LOAD-{}-", run.to_uppercase()))
        } else {
            Skus::Pool(args.skus)
        },
        max_lines: args.max_lines,
        declined_share: args.declined_share,
        declined_customers: GatewayRules::default().declined_customers,
    });

    let accepted: Option<AcceptedLog> = match &args.accepted {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Some(Arc::new(Mutex::new(std::io::BufWriter::new(
                std::fs::File::create(path)?,
            ))))
        }
        None => None,
    };
    let record = |line: serde_json::Value| {
        if let Some(file) = &accepted {
            let mut file = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A lost line only weakens the check; the run goes on.
            let _ = writeln!(file, "{line}");
        }
    };
    if args.restock != 0 && !args.unique_skus {
        eprintln!(
            "restocking {} SKUs with {} units ...",
            args.skus, args.restock
        );
        // Retried like the orders (a loaded machine answered one with 503 once); the
        // refusals are not counted with the load's.
        let (retry_for, refusals) = (Duration::from_secs(args.retry_for), Attempts::default());
        let results = futures::stream::iter(0..args.skus)
            .map(|i| {
                let (client, key) = (client.clone(), format!("loadgen-{run}-restock-{i}"));
                let (refusals, sku) = (&refusals, pool_sku(i));
                async move {
                    let r = with_retries(retry_for, refusals, || {
                        client.adjust(Api::Rest, &key, &sku, args.restock, "restock")
                    })
                    .await;
                    (i, r)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for (i, r) in &results {
            if r.is_ok() {
                record(json!({"restock": pool_sku(*i), "delta": args.restock}));
            }
        }
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        if failed > 0 {
            bail!(
                "{failed} restocks failed: is ingress running at {}?",
                args.ingress_rest
            );
        }
    }

    let pace = Pace {
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        max_in_flight: args.max_in_flight,
        answer_timeout: Duration::from_secs(30),
    };
    eprintln!(
        "sending {} orders at {}/s for {} s (open loop) to {} / {} ...",
        pace.requests(),
        args.rate,
        args.duration,
        args.ingress_rest,
        args.ingress_grpc
    );
    let counters = Arc::new(Counters::default());
    let attempts = Arc::new(Attempts::default());
    let progress = {
        let counters = counters.clone();
        let attempts = attempts.clone();
        let limit = args.duration + 40;
        tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..limit {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (sent, ok, failed, skipped) = counters.snapshot();
                let t = start.elapsed().as_secs_f64().min(args.duration as f64);
                eprintln!(
                    "{:>5.1} s  sent {sent}  ok {ok} ({:.1}/s)  failed {failed}  skipped {skipped}  retried {}  unavailable {}  in_progress {}  unreachable {}",
                    start.elapsed().as_secs_f64(),
                    ok as f64 / t.max(1e-3),
                    attempts.retried.load(Ordering::Relaxed),
                    attempts.unavailable.load(Ordering::Relaxed),
                    attempts.in_progress.load(Ordering::Relaxed),
                    attempts.unreachable.load(Ordering::Relaxed),
                );
            }
        })
    };
    let sender = (
        client.clone(),
        mix.clone(),
        attempts.clone(),
        accepted.clone(),
    );
    let retry_for = Duration::from_secs(args.retry_for);
    let result = open_loop(&pace, &counters, 0, move |i| {
        let (client, order, attempts, accepted) = (
            sender.0.clone(),
            sender.1.order(i),
            sender.2.clone(),
            sender.3.clone(),
        );
        async move {
            let created = create_with_retries(&client, &order, retry_for, &attempts).await?;
            if let Some(file) = accepted {
                let lines: Vec<_> = order
                    .lines
                    .iter()
                    .map(|l| json!({"sku": l.sku, "quantity": l.quantity}))
                    .collect();
                let line = json!({"order_id": created.order_id, "customer": order.customer, "lines": lines});
                let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let _ = writeln!(file, "{line}");
            }
            anyhow::Ok(order.api)
        }
    })
    .await;
    if let Some(file) = &accepted {
        file.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush()?;
    }
    progress.abort();

    let by_api = |api: Api| {
        let mut v: Vec<Duration> = result
            .outcomes
            .iter()
            .filter(|o| matches!(&o.result, Ok(a) if *a == api))
            .filter_map(|o| o.latency())
            .collect();
        Summary::of(&mut v)
    };
    let all = Summary::of(&mut result.latencies());
    let failed = result.outcomes.len() - result.ok();
    let summary = json!({
        "offered_per_sec": args.rate,
        "duration_s": args.duration,
        "scheduled": result.outcomes.len(),
        "accepted": result.ok(),
        "failed": failed,
        "achieved_per_sec": result.achieved_rate(),
        "max_send_delay_ms": result.max_send_delay.as_secs_f64() * 1e3,
        "latency_due_to_answer": all,
        "rest": by_api(Api::Rest),
        "grpc": by_api(Api::Grpc),
        "errors": result.error_samples(5),
        "retried": attempts.retried.load(Ordering::Relaxed),
        "unavailable_answers": attempts.unavailable.load(Ordering::Relaxed),
        "in_progress_answers": attempts.in_progress.load(Ordering::Relaxed),
        "unreachable_attempts": attempts.unreachable.load(Ordering::Relaxed),
        "mix": {
            "grpc_share": args.grpc_share,
            "skus": if args.unique_skus { json!("unique") } else { json!(args.skus) },
            "max_lines": args.max_lines,
            "declined_share": args.declined_share,
            "seed": args.seed,
        },
    });
    let line = |name: &str, s: Option<Summary>| match s {
        Some(s) => format!(
            "  {name:<5} {:>6} ok   p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms\n",
            s.count, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
        ),
        None => format!("  {name:<5}      0 ok\n"),
    };
    print!(
        "offered {}/s for {} s: {} scheduled, {} accepted ({:.1}/s), {failed} failed\n\
         latency from the scheduled send time to the answer:\n{}{}{}",
        args.rate,
        args.duration,
        result.outcomes.len(),
        result.ok(),
        result.achieved_rate(),
        line("all", all),
        line("REST", by_api(Api::Rest)),
        line("gRPC", by_api(Api::Grpc)),
    );
    for (e, n) in result.error_samples(5) {
        println!("  error ×{n}: {e}");
    }
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    if result.ok() == 0 {
        bail!(
            "no order was accepted: is ingress running at {}?",
            args.ingress_rest
        );
    }
    Ok(())
}
