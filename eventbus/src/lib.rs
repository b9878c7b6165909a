//! The infrastructure layer every service of the order pipeline stands on.
//!
//! Services talk to Kafka and the schema registry only through this crate, so that
//! every one of them publishes the same wire format and headers, retries the same way,
//! dead-letters the same way and exports the same metrics.
//!
//! Modules (one noun each):
//! - [`client`]: the one place that builds Kafka clients (producer, transactional
//!   producer, reader, group consumer, admin) from one [`KafkaSettings`].
//! - [`kafka`]: the librdkafka types services handle (messages, offsets, errors).
//! - [`transaction`]: the transactional producer of the exactly-once paths.
//! - [`admin`]: the declarative topic list (`deploy/topics.toml`), applying it, cluster
//!   readiness and status: what `busctl` and `make up` use.
//! - [`config`]: serde configuration (`KafkaSettings` with [`Security`], `RegistryConfig`, `RetryPolicy`,
//!   `ProducerConfig`, `ConsumerConfig`) with defaults for the local cluster.
//! - [`error`]: [`BusError`], the one error type; each error knows its [`Fault`] and
//!   whether it is retriable.
//! - [`context`]: the shared librdkafka client context (logs → tracing, statistics →
//!   consumer-lag metrics, rebalances → the runner).
//! - [`metrics`]: the Prometheus metrics.
//! - [`lag`]: `kafka_consumergroup_lag` for groups whose offsets a transactional
//!   producer commits.
//! - [`registry`]: the registry client (Confluent-compatible API), caches,
//!   [`registry::register_all`] and the start-up check `ensure_registered`.
//! - [`codec`]: Confluent wire format, validation before encoding, decoding by writer
//!   schema id.
//! - [`headers`]: CloudEvents binary-mode headers, W3C `traceparent`, header lists.
//! - [`producer`]: validated, acknowledged publishing.
//! - [`consumer`]: the consumer runner (typed handlers, backoff, DLQ, commits).
//! - [`dlq`]: dead-letter headers and error classes.
//! - [`redrive`]: list, inspect and replay DLQ records (the `dlq` binary).
//! - [`reader`]: bounded reads of a topic from the beginning (redrive and tests).
//! - `testkit` (feature `testkit`): unique topics and helpers for integration tests.
//!
//! # Use
//!
//! ```no_run
//! use eventbus::{BusConfig, BusMetrics, ConsumerConfig, Envelope, EventBus, HandlerError, PublishOptions};
//! use schemas::{OrderCreated, PaymentCompleted};
//!
//! # fn settle(_: &OrderCreated) -> Result<PaymentCompleted, HandlerError> { unimplemented!() }
//! # async fn example(prometheus: &prometheus::Registry) -> Result<(), eventbus::BusError> {
//! let bus = EventBus::new(&BusConfig::from_env(), BusMetrics::register(prometheus)?)?;
//! bus.registry().ensure_registered::<PaymentCompleted>().await?; // fail fast at start-up
//!
//! let producer = bus.producer().clone();
//! let handler = move |order: Envelope<OrderCreated>| {
//!     let producer = producer.clone();
//!     async move {
//!         let completed = settle(&order.event)?; // Err(HandlerError::retriable/fatal) as fits
//!         let trace = PublishOptions { traceparent: Some(order.next_hop_trace()), ..Default::default() };
//!         producer.publish_with(&completed, trace).await?; // retriable iff the bus says so
//!         Ok::<(), HandlerError>(())
//!     }
//! };
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! bus.consumer::<OrderCreated>(ConsumerConfig::new("payment-service"))? // DLQ: payment-service.dlq
//!     .run(handler, shutdown)
//!     .await
//! # }
//! ```

pub mod acl;
pub mod admin;
pub mod client;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod context;
pub mod dlq;
pub mod error;
pub mod headers;
pub mod kafka;
pub mod lag;
pub mod metrics;
pub mod producer;
pub mod reader;
pub mod redrive;
pub mod registry;
pub mod strimzi;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transaction;

pub use codec::Consumable;
pub use config::{
    ConsumerConfig, Jitter, KafkaSettings, ProducerConfig, RegistryConfig, RetryPolicy, Security,
    SecurityProtocol,
};
pub use consumer::{ConsumerRunner, Envelope, Handler, HandlerError};
pub use dlq::ErrorClass;
pub use error::{BusError, Fault, chain};
pub use headers::{HeaderList, TraceParent};
pub use metrics::BusMetrics;
pub use producer::{Delivery, Producer, PublishOptions};
pub use registry::{RegistryClient, SchemaRef};
pub use transaction::{TransactionalProducer, TxnError};

use serde::Deserialize;

/// Everything a service needs to reach Kafka and the registry, for figment layering.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// The cluster.
    pub kafka: KafkaSettings,
    /// The schema registry.
    pub registry: RegistryConfig,
    /// The producer's choices.
    pub producer: ProducerConfig,
}

impl BusConfig {
    /// Defaults, with `KAFKA_BOOTSTRAP` and `REGISTRY_URL` from the environment.
    pub fn from_env() -> Self {
        BusConfig {
            kafka: KafkaSettings::from_env(),
            registry: RegistryConfig::from_env(),
            producer: ProducerConfig::default(),
        }
    }
}

/// A service's connection to the bus: one registry client, one producer, one metrics
/// set, shared by every consumer runner the service starts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventBus {
    kafka: KafkaSettings,
    registry: RegistryClient,
    producer: Producer,
    metrics: BusMetrics,
}

impl EventBus {
    /// Creates the registry client and the producer. Nothing blocks: connections are
    /// made in the background and the first call waits for them.
    pub fn new(config: &BusConfig, metrics: BusMetrics) -> Result<Self, BusError> {
        let registry = RegistryClient::new(&config.registry)?;
        let producer = Producer::new(
            &config.kafka,
            &config.producer,
            registry.clone(),
            metrics.clone(),
        )?;
        Ok(EventBus {
            kafka: config.kafka.clone(),
            registry,
            producer,
            metrics,
        })
    }

    /// The producer.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The registry client.
    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The metrics.
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    /// The Kafka configuration.
    pub fn kafka(&self) -> &KafkaSettings {
        &self.kafka
    }

    /// A consumer runner for `C` (an event type, or a service's enum over several).
    pub fn consumer<C: Consumable>(
        &self,
        config: ConsumerConfig,
    ) -> Result<ConsumerRunner<C>, BusError> {
        ConsumerRunner::new(&self.kafka, config, self.producer.clone())
    }
}
