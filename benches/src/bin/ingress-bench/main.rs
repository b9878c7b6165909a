//! `ingress-bench`: requests/s and latency percentiles of `POST /v1/orders` (answered
//! after `acks=all`) under wrk, beside two baselines measured in the same run on the same
//! cluster, at the same concurrency (see [`baselines`]):
//!
//! * **bare produce**: librdkafka (a `FutureProducer` from `eventbus::client::producer`,
//!   without eventbus's typed layer) with the producer settings ingress uses
//!   (idempotence, `acks=all`, lz4, `linger.ms=5`), sending the same Confluent-framed
//!   Avro bytes and CloudEvents headers, awaiting each delivery report;
//! * **eventbus publish**: `eventbus::Producer::publish` (validation, Avro encoding,
//!   cached registry id, headers, `acks=all`).
//!
//! and the same order over gRPC, unary `CreateOrder` and the `CreateOrders` stream, at the
//! same number in flight (see [`grpc`]).
//!
//! Run with `benches/wrk/ingress-bench.sh [--connections N] [--duration SECONDS]
//! [--threads T]`, which builds `ingress` and this binary with the same profile: the
//! `ingress` binary beside this one runs as a process on a [`Stack`] of its own (every
//! topic under a unique prefix, 6 partitions, RF 3, `min.insync.replicas=2`, like the
//! real ones; only ingress started, so nothing else consumes its orders or shares the
//! CPU). Needs the local cluster and wrk.
//!
//! [`Stack`]: benches::stack::Stack

mod baselines;
mod figures;
mod grpc;
mod wrk;

use anyhow::Context;
use benches::scenario::GatewayRules;
use benches::stack::{Stack, StackOptions};
use benches::topics;
use clap::Parser;
use eventbus::reader::high_watermarks;
use eventbus::{BusMetrics, KafkaSettings, Producer, RegistryClient, RegistryConfig};
use schemas::{Event, OrderCreated};

use crate::baselines::{bare_produce, eventbus_publish, ingress_producer_config};

/// The command line; its doc comments are `--help`'s text.
#[derive(Parser)]
#[command(
    about = "POST /v1/orders under wrk beside a bare produce round trip and eventbus's publish"
)]
struct Args {
    /// Connections (requests in flight) of the second row set; the first is always 1.
    #[arg(short, long, default_value_t = 32)]
    connections: usize,
    /// Seconds per row.
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
    /// wrk threads.
    #[arg(short, long, default_value_t = 1)]
    threads: usize,
}

/// The records on all partitions of `topic`.
async fn records(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<i64> {
    Ok(high_watermarks(kafka, topic)
        .await?
        .iter()
        .map(|(_, h)| h)
        .sum())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
    {
        anyhow::bail!("wrk is not installed: apt-get install -y wrk");
    }
    let stack = Stack::start_with(
        GatewayRules::default(),
        &[],
        &StackOptions {
            only: vec!["ingress"],
            ..StackOptions::default()
        },
    )
    .await
    .context("starting ingress (build it with the same profile as this binary: `cargo build -p ingress`)")?;
    let baseline = stack.topic("bench.baseline");
    let result = bench(&stack, &baseline, &args).await;
    let registry = RegistryClient::new(&RegistryConfig::from_env())?;
    let _ = registry
        .delete_subject(&format!("{baseline}-value"), true)
        .await;
    if let Ok(admin) = eventbus::admin::Admin::new(&stack.kafka) {
        let _ = admin.delete_topics(&[&baseline]).await;
    }
    stack.shutdown().await;
    result
}

async fn bench(stack: &Stack, baseline_topic: &str, args: &Args) -> anyhow::Result<()> {
    let kafka = &stack.kafka;
    let order_created = stack.topic(OrderCreated::TOPIC);
    topics::create(kafka, &[baseline_topic], 6)
        .await
        .context("creating the baseline topic")?;
    let registry = RegistryClient::new(&RegistryConfig::from_env())?;
    let schema_id = registry
        .register(
            &format!("{baseline_topic}-value"),
            OrderCreated::schema_text(),
        )
        .await
        .context("registering the baseline subject")?;

    // Warm-up: connections, registry ids, librdkafka's producer id and leaders.
    let base = stack.endpoints.ingress_rest.clone();
    let http = reqwest::Client::new();
    let body = r#"{"customer_id":"bench-customer","currency":"EUR","lines":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999},{"sku":"SKU-2","quantity":1,"unit_price_minor":500}]}"#;
    for _ in 0..200 {
        http.post(format!("{base}/v1/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
    }
    let producer = Producer::new(
        kafka,
        &ingress_producer_config(),
        RegistryClient::new(&RegistryConfig::from_env())?,
        BusMetrics::default(),
    )?;
    eventbus_publish(&producer, baseline_topic, 4, 1).await?;
    let grpc_client = grpc::connect(&stack.endpoints.ingress_grpc).await?;
    grpc::unary(&grpc_client, 4, 1).await?;

    let mut rows = Vec::new();
    let mut levels = vec![1];
    if args.connections > 1 {
        levels.push(args.connections);
    }
    for connections in levels {
        let before = records(kafka, &order_created).await?;
        let (ingress, raw) = wrk::run(&base, connections, args.threads, args.duration)?;
        let written = records(kafka, &order_created).await? - before;
        eprintln!("{raw}");
        eprintln!("order.created records written during the wrk run: {written}");
        rows.push(ingress.row(
            "ingress POST /v1/orders (wrk, HTTP/1.1 keep-alive)",
            connections,
        ));
        let bare =
            bare_produce(kafka, schema_id, baseline_topic, connections, args.duration).await?;
        rows.push(bare.row(
            "bare produce round trip (librdkafka, same bytes)",
            connections,
        ));
        let bus = eventbus_publish(&producer, baseline_topic, connections, args.duration).await?;
        rows.push(bus.row("eventbus Producer::publish", connections));
        rows.push(format!(
            "| ratio ingress / bare (req/s; p99) | {connections} | | {:.2} | | {:.2} | |",
            ingress.per_second / bare.per_second,
            ingress.p99_ms / bare.p99_ms
        ));
        let unary = grpc::unary(&grpc_client, connections, args.duration).await?;
        rows.push(unary.row(
            "gRPC CreateOrder (unary calls, one HTTP/2 connection)",
            connections,
        ));
        let stream = grpc::streamed(&grpc_client, connections, args.duration).await?;
        rows.push(stream.row("gRPC CreateOrders (one stream)", connections));
        rows.push(format!(
            "| ratio CreateOrders / CreateOrder (req/s; p99) | {connections} | | {:.2} | | {:.2} | |",
            stream.per_second / unary.per_second,
            stream.p99_ms / unary.p99_ms
        ));
    }

    println!(
        "\nPOST /v1/orders and gRPC at acks=all vs produce round trips; {}s per row, same cluster",
        args.duration
    );
    println!("| what | in flight | requests | req/s | p50 ms | p99 ms | failures |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
