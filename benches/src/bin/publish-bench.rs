//! Publish throughput of eventbus beside Kafka's own ProducerPerformance.
//!
//! Both sides run against the same cluster with acks=all, idempotence, RF 3 and the same
//! record size (the average encoded size of the events published). Ours pays for
//! everything a service publish does: domain validation, Avro encoding, the registry's
//! schema id (cached), CloudEvents and traceparent headers, one future per event.
//!
//! `cargo run --release -p benches --bin publish-bench -- --events 20000 --out target/bench`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use benches::floor::{ToolConnection, producer_performance};
use benches::records::{FIXED_CREATED_AT_MS, mean_framed_size, order_created, random_lines};
use benches::stats::Summary;
use benches::topics;
use clap::Parser;
use eventbus::{BusConfig, BusMetrics, EventBus, PublishOptions};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use schemas::{Event, OrderCreated};

#[derive(Parser)]
struct Args {
    /// Events to publish (and records for ProducerPerformance).
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 6)]
    partitions: usize,
    /// Folder for publish.json and publish.md.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn order(rng: &mut impl Rng) -> OrderCreated {
    let lines = random_lines(rng, 4, 200, 5, 20_000);
    let customer = format!("customer-{}", rng.random_range(0..10_000));
    order_created(uuid::Uuid::new_v4(), customer, lines, FIXED_CREATED_AT_MS)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Connects as the principal of `KAFKA_CLIENT_CONFIG` or, after `make up`, as admin
    // (benches::cluster); ProducerPerformance with the same TLS and SCRAM settings.
    let config = BusConfig {
        kafka: benches::cluster::kafka_settings(),
        ..BusConfig::from_env()
    };
    let tools = ToolConnection::for_settings(&config.kafka)?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let ours = format!("bench-publish-{run}");
    let floor = format!("bench-floor-{run}");

    let admin = topics::create(&config.kafka, &[&ours, &floor], args.partitions)
        .await
        .context("creating the benchmark topics")?;

    let bus = EventBus::new(&config, BusMetrics::default())?;
    bus.registry()
        .register(&format!("{ours}-value"), OrderCreated::schema_text())
        .await
        .context("registering the benchmark subject")?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let events: Vec<OrderCreated> = (0..args.events).map(|_| order(&mut rng)).collect();
    let record_size = mean_framed_size(events.iter().take(1000));
    // Warm-up: connections, schema id cache, JIT of nothing (this is Rust) but the brokers'.
    for e in events.iter().take(200) {
        bus.producer()
            .publish_with(e, PublishOptions::to_topic(&ours))
            .await?;
    }

    eprintln!(
        "publishing {} events ({} B each on average), {} in flight ...",
        args.events, record_size, args.concurrency
    );
    let start = Instant::now();
    let producer = bus.producer();
    let mut latencies: Vec<Duration> = futures::stream::iter(events.iter())
        .map(|e| async {
            let t = Instant::now();
            producer
                .publish_with(e, PublishOptions::to_topic(&ours))
                .await
                .map(|_| t.elapsed())
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = start.elapsed();
    let ours_rate = args.events as f64 / elapsed.as_secs_f64();
    let lat = Summary::of(&mut latencies).context("no samples")?;

    eprintln!(
        "running Kafka's ProducerPerformance with {} records of {record_size} B ...",
        args.events
    );
    let perf = tokio::task::spawn_blocking({
        let floor = floor.clone();
        move || {
            producer_performance(
                &tools,
                &floor,
                args.events,
                record_size,
                &[("compression.type", "lz4"), ("linger.ms", "5")],
            )
        }
    })
    .await??;

    let report = serde_json::json!({
        "benchmark": "publish",
        "events": args.events,
        "record_size_bytes": record_size,
        "concurrency": args.concurrency,
        "partitions": args.partitions,
        "settings": "acks=all, enable.idempotence=true, compression lz4, linger.ms 5, RF 3, min.insync.replicas 2",
        "eventbus": { "events_per_sec": ours_rate, "latency": lat },
        "kafka_producer_performance": perf,
        "ratio_events_per_sec": ours_rate / perf.records_per_sec,
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("publish.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let table = format!(
        "| publish, acks=all, RF 3, {record_size} B records | events/s | p50 ms | p99 ms |\n|---|---|---|---|\n\
         | eventbus typed publish ({} in flight) | {:.0} | {:.1} | {:.1} |\n\
         | Kafka ProducerPerformance | {:.0} | {:.1} | {:.1} |\n\
         | ratio eventbus / Kafka | {:.2} | | |\n",
        args.concurrency,
        ours_rate,
        lat.p50_ms,
        lat.p99_ms,
        perf.records_per_sec,
        perf.p50_ms,
        perf.p99_ms,
        ours_rate / perf.records_per_sec
    );
    std::fs::write(args.out.join("publish.md"), &table)?;
    println!("{table}");

    let _ = admin.delete_topics(&[&ours, &floor]).await;
    let _ = bus
        .registry()
        .delete_subject(&format!("{ours}-value"), false)
        .await;
    Ok(())
}
