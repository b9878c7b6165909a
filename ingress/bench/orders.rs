//! Benchmark: requests/s and latency percentiles of `POST /v1/orders` (answered after
//! `acks=all`) under wrk, beside two baselines measured in the same run on the same
//! cluster, at the same concurrency:
//!
//! * **bare produce**: librdkafka (a `FutureProducer` from `eventbus::client::producer`,
//!   without eventbus's typed layer) with the producer settings ingress uses
//!   (idempotence, `acks=all`, lz4, `linger.ms=5`), sending the same
//!   Confluent-framed Avro bytes and CloudEvents headers, awaiting each delivery report:
//!   the floor any service that waits for `acks=all` stands on;
//! * **eventbus publish**: `eventbus::Producer::publish` (validation, Avro encoding,
//!   cached registry id, headers, `acks=all`): what ingress adds on top of it is HTTP,
//!   JSON, validation and idempotency.
//!
//! Run with `ingress/bench/run.sh [--connections N] [--duration SECONDS] [--threads T]`
//! (or `cargo bench -p ingress --bench orders -- ...`). Needs the local cluster and wrk.
//! Own topics (6 partitions, RF 3, `min.insync.replicas=2`, like the real ones) are
//! created and deleted; ingress runs in this process on port 0.

use std::error::Error;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::client::{self, ProducerOptions};
use eventbus::codec::{frame, validate_and_encode};
use eventbus::context::BusContext;
use eventbus::headers::{CloudEventAttributes, TraceParent};
use eventbus::kafka::FutureRecord;
use eventbus::testkit::{TestCluster, eventually};
use eventbus::{BusMetrics, Producer, PublishOptions, RegistryClient};
use ingress::Listeners;
use ingress::config::{Config, TopicsConfig};
use schemas::{Event, OrderCreated, OrderLine, OrderUpdated, StockAdjusted};
use tokio::net::TcpListener;
use uuid::Uuid;

type BoxError = Box<dyn Error + Send + Sync>;

struct Args {
    connections: usize,
    duration: u64,
    threads: usize,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        connections: 32,
        duration: 10,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> Result<usize, BoxError> {
            Ok(it
                .next()
                .ok_or_else(|| format!("{arg} needs a value"))?
                .parse()?)
        };
        match arg.as_str() {
            "--connections" | "-c" => args.connections = value()?,
            "--duration" | "-d" => args.duration = value()? as u64,
            "--threads" | "-t" => args.threads = value()?,
            // cargo bench passes --bench to harness-less benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// Throughput and latency of one measurement.
#[derive(Debug, Clone, Copy)]
struct Figures {
    requests: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: u64,
}

fn figures(mut latencies: Vec<Duration>, elapsed: Duration, failures: u64) -> Figures {
    latencies.sort_unstable();
    let pick = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    Figures {
        requests: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        failures,
    }
}

/// Parses a wrk duration such as `812.00us`, `4.21ms` or `1.02s` into milliseconds.
fn wrk_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn run_wrk(
    base: &str,
    connections: usize,
    threads: usize,
    seconds: u64,
) -> Result<(Figures, String), BoxError> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/post_order.lua");
    let output = Command::new("wrk")
        .args([
            "-t",
            &threads.clamp(1, connections).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
            script,
            base,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let mut f = Figures {
        requests: 0,
        per_second: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        failures: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => f.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => f.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => f.per_second = v.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => f.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                f.failures += n.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", ..] => f.failures += 1,
            _ => {}
        }
    }
    Ok((f, text))
}

fn sample_order() -> OrderCreated {
    let lines = vec![
        OrderLine::new("SKU-1", 2, 1999),
        OrderLine::new("SKU-2", 1, 500),
    ];
    OrderCreated {
        event_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        customer_id: "bench-customer".into(),
        currency: "EUR".into(),
        total_minor: schemas::order_total(&lines).unwrap_or_default(),
        lines,
        created_at: ingress::idempotency::now_ms(),
        channel: Some("REST".into()),
    }
}

/// The bare produce round trip: same bytes, same settings, `connections` in flight.
async fn bare_produce(
    config: &Config,
    registry: &RegistryClient,
    topic: &str,
    connections: usize,
    seconds: u64,
) -> Result<Figures, BoxError> {
    // The same non-default choices as eventbus's typed producer (see
    // `eventbus::producer`): the configured compression, linger and delivery timeout, and
    // the Java client's key hashing. Idempotence and acks=all are the constructor's.
    let options = ProducerOptions {
        tuning: client::tuning([
            ("compression.type", config.producer.compression.clone()),
            ("linger.ms", config.producer.linger_ms.to_string()),
            (
                "delivery.timeout.ms",
                config.producer.delivery_timeout_ms.to_string(),
            ),
            ("partitioner", "murmur2_random".to_owned()),
        ]),
    };
    let context = BusContext::new("bench/bare-produce", None, BusMetrics::default());
    let producer = client::producer(&config.kafka, &options, context)?;
    let event = sample_order();
    let id = registry
        .id_for(&format!("{topic}-value"), OrderCreated::schema_text())
        .await?;
    let value = Arc::new(frame(id, &validate_and_encode(&event)?));
    let event_id = event.event_id.to_string();
    let headers = CloudEventAttributes {
        id: &event_id,
        source: "/order-service",
        event_type: OrderCreated::TYPE,
        time_ms: event.created_at,
        dataschema: None,
    }
    .to_headers(&TraceParent::generate());
    let headers = Arc::new(headers);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let producer = producer.clone();
        let value = Arc::clone(&value);
        let headers = Arc::clone(&headers);
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let key = Uuid::new_v4().to_string();
                let record = FutureRecord::to(&topic)
                    .key(&key)
                    .payload(value.as_slice())
                    .headers(headers.to_owned_headers());
                let t = Instant::now();
                match producer.send(record, Duration::from_secs(30)).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (latencies, failed) = task.await?;
        all.extend(latencies);
        failures += failed;
    }
    Ok(figures(all, started.elapsed(), failures))
}

/// eventbus's publish: validation, encoding, headers, `acks=all`.
async fn eventbus_publish(
    producer: &Producer,
    topic: &str,
    connections: usize,
    seconds: u64,
) -> Result<Figures, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let producer = producer.clone();
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let event = sample_order();
                let t = Instant::now();
                match producer
                    .publish_with(&event, PublishOptions::to_topic(&topic))
                    .await
                {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (latencies, failed) = task.await?;
        all.extend(latencies);
        failures += failed;
    }
    Ok(figures(all, started.elapsed(), failures))
}

fn row(name: &str, connections: usize, f: &Figures) -> String {
    format!(
        "| {name} | {connections} | {} | {:.0} | {:.2} | {:.2} | {} |",
        f.requests, f.per_second, f.p50_ms, f.p99_ms, f.failures
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let cluster = TestCluster::connect().await?;
    let topics = TopicsConfig {
        order_created: cluster.create_topic("bench.order.created", 6).await?,
        order_updated: cluster.create_topic("bench.order.updated", 6).await?,
        stock_adjusted: cluster.create_topic("bench.stock.adjusted", 6).await?,
    };
    cluster
        .register_on_topic::<OrderCreated>(&topics.order_created)
        .await?;
    cluster
        .register_on_topic::<OrderUpdated>(&topics.order_updated)
        .await?;
    cluster
        .register_on_topic::<StockAdjusted>(&topics.stock_adjusted)
        .await?;
    let baseline_topic = cluster.create_topic("bench.baseline", 6).await?;
    cluster
        .register_on_topic::<OrderCreated>(&baseline_topic)
        .await?;

    let mut config = Config::from_env()?;
    config.kafka.bootstrap = cluster.kafka.bootstrap.clone();
    // The cluster's credentials (the admin principal's config on the secure cluster).
    config.kafka.client_config_file = cluster.kafka.client_config_file.clone();
    config.registry.url = cluster.registry.url.clone();
    config.topics = topics.clone();
    config.readiness.interval = Duration::from_millis(500);

    let rest = TcpListener::bind("127.0.0.1:0").await?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", rest.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ingress::run(
        config.clone(),
        Listeners { rest, grpc },
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(30), Duration::from_millis(100), || {
        let http = http.clone();
        let url = format!("{base}/readyz");
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    ready.ok_or("ingress did not become ready")?;

    // Warm-up: connections, registry ids, librdkafka's producer id and leaders.
    let body = r#"{"customer_id":"bench-customer","currency":"EUR","lines":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999},{"sku":"SKU-2","quantity":1,"unit_price_minor":500}]}"#;
    for _ in 0..200 {
        http.post(format!("{base}/v1/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
    }
    let producer = Producer::new(
        &config.kafka,
        &config.producer,
        RegistryClient::new(&config.registry)?,
        BusMetrics::default(),
    )?;
    let registry = RegistryClient::new(&config.registry)?;
    eventbus_publish(&producer, &baseline_topic, 4, 1).await?;

    let mut rows = Vec::new();
    let mut levels = vec![1];
    if args.connections > 1 {
        levels.push(args.connections);
    }
    for connections in levels {
        let before = cluster.high_watermark_total(&topics.order_created).await?;
        let (ingress, raw) = run_wrk(&base, connections, args.threads, args.duration)?;
        let written = cluster.high_watermark_total(&topics.order_created).await? - before;
        eprintln!("{raw}");
        eprintln!("order.created records written during the wrk run: {written}");
        rows.push(row(
            "ingress POST /v1/orders (wrk, HTTP/1.1 keep-alive)",
            connections,
            &ingress,
        ));
        let bare = bare_produce(
            &config,
            &registry,
            &baseline_topic,
            connections,
            args.duration,
        )
        .await?;
        rows.push(row(
            "bare produce round trip (librdkafka, same bytes)",
            connections,
            &bare,
        ));
        let bus = eventbus_publish(&producer, &baseline_topic, connections, args.duration).await?;
        rows.push(row("eventbus Producer::publish", connections, &bus));
        rows.push(format!(
            "| ratio ingress / bare (req/s; p99) | {connections} | | {:.2} | | {:.2} | |",
            ingress.per_second / bare.per_second,
            ingress.p99_ms / bare.p99_ms
        ));
    }

    println!(
        "\nPOST /v1/orders at acks=all vs produce round trips; {}s per row, same cluster",
        args.duration
    );
    println!("| what | in flight | requests | req/s | p50 ms | p99 ms | failures |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }

    let _ = stop.send(());
    server.await??;
    cluster.cleanup().await;
    Ok(())
}
