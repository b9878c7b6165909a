//! The two baselines beside `POST /v1/orders`, at the same concurrency on the same
//! cluster: a bare librdkafka produce round trip with the same bytes, and eventbus's
//! typed publish.
//!
//! Why both: the bare produce is the floor any service that waits for `acks=all` stands
//! on; the publish adds validation, Avro encoding, the cached registry id and headers.
//! What ingress adds on top of the publish is HTTP, JSON, validation and idempotency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::records::{framed, order_created};
use eventbus::client::{self, ProducerOptions};
use eventbus::context::BusContext;
use eventbus::headers::{CloudEventAttributes, TraceParent};
use eventbus::kafka::FutureRecord;
use eventbus::{BusMetrics, KafkaSettings, Producer, ProducerConfig, PublishOptions};
use schemas::{Event, OrderCreated, OrderLine};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::figures::Figures;

/// The order wrk's script posts (`benches/wrk/post_order.lua`), as an event.
pub(crate) fn sample_order() -> OrderCreated {
    let lines = vec![
        OrderLine::new("SKU-1", 2, 1999),
        OrderLine::new("SKU-2", 1, 500),
    ];
    order_created(
        Uuid::new_v4(),
        "bench-customer",
        lines,
        eventbus::headers::now_ms(),
    )
}

/// The producer settings of ingress: eventbus's defaults (lz4, `linger.ms=5`) with
/// ingress's delivery timeout (`ingress::config::DEFAULT_DELIVERY_TIMEOUT_MS`).
pub(crate) fn ingress_producer_config() -> ProducerConfig {
    ProducerConfig {
        source: "/order-service".to_owned(),
        // ingress::config::DEFAULT_DELIVERY_TIMEOUT_MS (above a broker failover).
        delivery_timeout_ms: 30_000,
        ..ProducerConfig::default()
    }
}

/// Runs `connections` loops of `attempt` until `seconds` have passed; each loop awaits
/// its attempt before the next, like one keep-alive connection.
pub(crate) async fn closed_loops<F, Fut>(
    connections: usize,
    seconds: u64,
    attempt: F,
) -> anyhow::Result<Figures>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let attempt = attempt.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if attempt().await {
                    latencies.push(t.elapsed());
                } else {
                    failures += 1;
                }
            }
            (latencies, failures)
        });
    }
    let mut all = Vec::new();
    let mut failures = 0;
    while let Some(done) = tasks.join_next().await {
        let (latencies, failed) = done?;
        all.extend(latencies);
        failures += failed;
    }
    Ok(Figures::of(all, started.elapsed(), failures))
}

/// The bare produce round trip: same bytes, same settings, `connections` in flight.
pub(crate) async fn bare_produce(
    kafka: &KafkaSettings,
    schema_id: u32,
    topic: &str,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Figures> {
    let config = ingress_producer_config();
    // The same non-default choices as eventbus's typed producer (see
    // `eventbus::producer`): the configured compression, linger and delivery timeout, and
    // the Java client's key hashing. Idempotence and acks=all are the constructor's.
    let options = ProducerOptions {
        tuning: client::tuning([
            ("compression.type", config.compression.clone()),
            ("linger.ms", config.linger_ms.to_string()),
            (
                "delivery.timeout.ms",
                config.delivery_timeout_ms.to_string(),
            ),
            ("partitioner", "murmur2_random".to_owned()),
        ]),
    };
    let context = BusContext::new("bench/bare-produce", None, BusMetrics::default());
    let producer = client::producer(kafka, &options, context)?;
    let event = sample_order();
    let value = Arc::new(framed(schema_id, &event)?);
    let event_id = event.event_id.to_string();
    let headers = Arc::new(
        CloudEventAttributes {
            id: &event_id,
            source: "/order-service",
            event_type: OrderCreated::TYPE,
            time_ms: event.created_at,
            dataschema: None,
        }
        .to_headers(&TraceParent::generate()),
    );
    let topic: Arc<str> = topic.into();
    closed_loops(connections, seconds, move || {
        let (producer, value, headers, topic) = (
            producer.clone(),
            Arc::clone(&value),
            Arc::clone(&headers),
            Arc::clone(&topic),
        );
        async move {
            let key = Uuid::new_v4().to_string();
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(value.as_slice())
                .headers(headers.to_owned_headers());
            producer.send(record, Duration::from_secs(30)).await.is_ok()
        }
    })
    .await
}

/// eventbus's publish: validation, encoding, headers, `acks=all`.
pub(crate) async fn eventbus_publish(
    producer: &Producer,
    topic: &str,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Figures> {
    let (producer, topic) = (producer.clone(), Arc::<str>::from(topic));
    closed_loops(connections, seconds, move || {
        let (producer, topic) = (producer.clone(), Arc::clone(&topic));
        async move {
            let event = sample_order();
            producer
                .publish_with(&event, PublishOptions::to_topic(&*topic))
                .await
                .is_ok()
        }
    })
    .await
}
