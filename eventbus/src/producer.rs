//! The producer: typed, validated, acknowledged publishing.
//!
//! [`Producer::publish`] does, in order:
//! 1. validate the event's domain rules and encode it against its Avro schema; an
//!    invalid event is [`BusError::Invalid`] and **nothing is sent**;
//! 2. find the schema's registry id under `<topic>-value` (cached after the first time);
//! 3. frame the datum in the Confluent wire format;
//! 4. set CloudEvents binary-mode headers (`ce_specversion`, `ce_id`, `ce_source`,
//!    `ce_type`, `ce_time`, `ce_dataschema`, `content-type`) and `traceparent` (the
//!    caller's, or a new trace);
//! 5. send keyed by [`schemas::Event::key`] and wait for the brokers' acknowledgement.
//!
//! It returns only when the record is durably written (`acks=all`: on every in-sync
//! replica, at least `min.insync.replicas` = 2 here), or with a typed error whose
//! [`BusError::is_retriable`] says whether to try again.
//!
//! Settings that differ from librdkafka's defaults, and why:
//! - `enable.idempotence=true`: librdkafka's own retries can neither duplicate nor
//!   reorder records within a partition (it also enforces `acks=all` and at most 5
//!   in-flight requests);
//! - `acks=all`: stated explicitly, as idempotence requires it; a record acknowledged
//!   by one broker only could be lost with that broker;
//! - `compression.type=lz4`: Avro compresses well and lz4 costs little CPU on both
//!   ends; batches stay compressed on the brokers and on the wire to consumers;
//! - `linger.ms=5`: wait at most 5 ms to fill a batch. Publishing is on the request
//!   path of the ingress API, so a long linger would add straight to its latency;
//!   0 would send tiny batches under load. 5 ms batches well at the rates we see while
//!   staying small next to the ~ms `acks=all` round trip (librdkafka's current default
//!   is also 5, set here so it cannot change under us);
//! - `delivery.timeout.ms=30000` (default 300000): a publish fails within 30 s instead
//!   of 5 minutes, so that a caller (an HTTP request, a consumer handler) can answer or
//!   back off while its own deadline still means something;
//! - `partitioner=murmur2_random`: the same key goes to the same partition as with the
//!   Java client (librdkafka's default hashes with CRC32), so topics produced by any
//!   client stay co-partitioned by order id;
//! - `topic.metadata.propagation.max.ms=10000` (default 30000): auto topic creation is
//!   off in this project, so a topic the brokers still do not know after 10 s is a
//!   deployment error. The publish then fails as an unknown topic (a setup fault, not
//!   retriable) instead of timing out like an outage after `delivery.timeout.ms`.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use schemas::Event;

use crate::codec::{frame, validate_and_encode};
use crate::config::{KafkaSettings, ProducerConfig};
use crate::context::BusContext;
use crate::error::{BusError, Fault};
use crate::headers::{CloudEventAttributes, HeaderList, TraceParent};
use crate::metrics::BusMetrics;
use crate::registry::RegistryClient;

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset in the partition.
    pub offset: i64,
}

/// Optional parts of a publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Another topic than the event's own (tests with unique topics, mirroring).
    /// The schema is then looked up under `<topic>-value`.
    pub topic: Option<String>,
    /// The caller's trace context; a new trace is started when `None`.
    pub traceparent: Option<TraceParent>,
    /// Extra headers, appended after the CloudEvents ones.
    pub headers: HeaderList,
    /// A partition chosen by the caller instead of the key's (tests of ordering).
    pub partition: Option<i32>,
}

impl PublishOptions {
    /// Publish to `topic` instead of the event's own.
    pub fn to_topic(topic: impl Into<String>) -> Self {
        PublishOptions {
            topic: Some(topic.into()),
            ..PublishOptions::default()
        }
    }

    /// Continue the trace `traceparent` (a W3C header value; ignored if malformed).
    pub fn traceparent(mut self, traceparent: &str) -> Self {
        self.traceparent = TraceParent::parse(traceparent);
        self
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(name, value);
        self
    }
}

/// A producer of typed events (and of raw records for DLQ and redrive).
/// Cheap to clone: clones share one librdkafka producer.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<BusContext>,
    registry: RegistryClient,
    metrics: BusMetrics,
    source: String,
    queue_timeout: Duration,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Creates the producer. Connects in the background; the first publish waits for it.
    pub fn new(
        kafka: &KafkaSettings,
        config: &ProducerConfig,
        registry: RegistryClient,
        metrics: BusMetrics,
    ) -> Result<Self, BusError> {
        // Every setting below is a non-default; the module docs say why for each.
        let options = crate::client::ProducerOptions {
            tuning: crate::client::tuning([
                ("compression.type", config.compression.clone()),
                ("linger.ms", config.linger_ms.to_string()),
                (
                    "delivery.timeout.ms",
                    config.delivery_timeout_ms.to_string(),
                ),
                ("partitioner", "murmur2_random".to_owned()),
                ("topic.metadata.propagation.max.ms", "10000".to_owned()),
            ]),
        };
        let context = BusContext::new(
            format!("{}/producer", kafka.client_id),
            None,
            metrics.clone(),
        );
        let inner = crate::client::producer(kafka, &options, context)?;
        Ok(Producer {
            inner,
            registry,
            metrics,
            source: config.source.clone(),
            queue_timeout: Duration::from_millis(config.delivery_timeout_ms),
        })
    }

    /// The registry client this producer encodes with.
    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The metrics this producer counts into.
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    /// Validates, encodes and publishes `event` to its topic; returns once the brokers
    /// have acknowledged it.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Delivery, BusError> {
        self.publish_with(event, PublishOptions::default()).await
    }

    /// [`Producer::publish`] with a topic override, a trace context or extra headers.
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<Delivery, BusError> {
        let topic = options.topic.as_deref().unwrap_or(E::TOPIC);
        let result = self.publish_inner(event, topic, &options).await;
        if let Err(e) = &result {
            let class = match e {
                BusError::Invalid(_) => Some("invalid"),
                BusError::NotRegistered { .. } | BusError::Incompatible { .. } => {
                    Some("not-registered")
                }
                BusError::Registry { .. } => Some("registry"),
                // Counted by publish_raw.
                BusError::Kafka { .. } => None,
                _ => Some("other"),
            };
            if let Some(class) = class {
                self.metrics
                    .publish_failed
                    .with_label_values(&[topic, class])
                    .inc();
            }
            if e.fault() == Fault::Data {
                tracing::warn!(topic, event_type = E::TYPE, "publish refused: {e}");
            }
        }
        result
    }

    async fn publish_inner<E: Event>(
        &self,
        event: &E,
        topic: &str,
        options: &PublishOptions,
    ) -> Result<Delivery, BusError> {
        // 1. Nothing is sent unless the event is valid and fits its schema.
        let datum = validate_and_encode(event)?;
        // 2-3. Registry id (cached), Confluent framing.
        let subject = format!("{topic}-value");
        let id = self.registry.id_for(&subject, E::schema_text()).await?;
        let value = frame(id, &datum);
        // 4. CloudEvents binary mode + trace context + the caller's headers.
        let traceparent = options.traceparent.unwrap_or_else(TraceParent::generate);
        let event_id = event.event_id();
        let dataschema = self.registry.schema_url(id);
        let mut headers = CloudEventAttributes {
            id: &event_id,
            source: &self.source,
            event_type: E::TYPE,
            time_ms: event.time_ms(),
            dataschema: Some(&dataschema),
        }
        .to_headers(&traceparent);
        headers.extend(options.headers.clone());
        // 5. Keyed send, acknowledged.
        let key = event.key();
        self.send(
            topic,
            options.partition,
            Some(key.as_bytes()),
            Some(&value),
            &headers,
        )
        .await
    }

    /// Sends bytes as they are (no validation, no encoding) and waits for the
    /// acknowledgement. For the DLQ and redrive, which forward records byte for byte.
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &HeaderList,
    ) -> Result<Delivery, BusError> {
        self.send(topic, None, key, value, headers).await
    }

    /// [`Producer::publish_raw`] to a given partition.
    pub async fn publish_raw_to_partition(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &HeaderList,
    ) -> Result<Delivery, BusError> {
        self.send(topic, Some(partition), key, value, headers).await
    }

    async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &HeaderList,
    ) -> Result<Delivery, BusError> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(headers.to_owned_headers());
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        match self
            .inner
            .send(record, Timeout::After(self.queue_timeout))
            .await
        {
            Ok(delivered) => {
                self.metrics.produced.with_label_values(&[topic]).inc();
                Ok(Delivery {
                    topic: topic.to_owned(),
                    partition: delivered.partition,
                    offset: delivered.offset,
                })
            }
            Err((error, _record)) => {
                self.metrics
                    .publish_failed
                    .with_label_values(&[topic, "kafka"])
                    .inc();
                Err(BusError::kafka(format!("produce to {topic}"), error))
            }
        }
    }

    /// Waits until every queued record is delivered (for a clean shutdown).
    pub async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.flush(timeout))
            .await
            .map_err(BusError::task("flush"))?
            .map_err(|e| BusError::kafka("flush", e))
    }
}
