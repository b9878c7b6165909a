//! The Payment Service: settles every `order.created` exactly once, as
//! `payment.completed` or `payment.failed`.
//!
//! It consumes `order-service.order.created` in group `payment-service`, charges each
//! order through a [`PaymentGateway`], and publishes the outcome **in a Kafka
//! transaction that also commits the consumed offsets** (consume-transform-produce):
//! an outcome is visible to `read_committed` readers if and only if the offsets of the
//! order that caused it are committed. Records that cannot be settled go, in the same
//! transaction, to `payment-service.dlq`.
//!
//! # Guarantees
//!
//! - **Exactly one outcome per order** across crashes (`kill -9` anywhere), restarts
//!   and rebalances: a batch's outcomes, dead letters and offsets commit together or
//!   not at all; a restarted instance (same [`Config::instance_id`], so the same
//!   `transactional.id`) aborts its predecessor's open transaction and fences it; a
//!   member that lost its partitions cannot commit offsets for them (KIP-447: the
//!   consumer group metadata goes into the transaction).
//! - **Never charged twice**: every gateway call carries the order id as its
//!   idempotency key (re-processing after a crash is a replay at the provider), and an
//!   `order.created` for an order that already has an outcome (a redrive, a replay) is
//!   skipped without calling the gateway at all ([`settled_index`]).
//! - **Declines are outcomes**, not errors: `payment.failed` with a reason code.
//!   Transient gateway errors are retried with exponential backoff and full jitter;
//!   exhausted retries, fatal gateway errors and undecodable records are dead-lettered
//!   with eventbus's `dlq.*` headers, and the service goes on.
//!
//! # Modules (one noun each)
//!
//! - [`config`]: layered configuration (defaults → TOML file → `PAYMENT__*` env);
//! - [`gateway`]: the [`PaymentGateway`] port and the seeded [`SimulatedGateway`];
//! - [`settlement`]: one order through the gateway, with retries, to one [`Settlement`];
//! - [`settled_index`]: the index of settled orders that makes duplicates harmless;
//! - [`outcome`]: outcome and dead-letter records (wire format, headers, partition);
//! - [`transaction`]: the transactional producer (begin, produce, offsets, commit);
//! - [`processor`]: the batch loop that ties them together, rebalances and rewinds;
//! - [`recovery`]: replacing a fenced or fatally failed producer without a restart;
//! - [`server`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`metrics`]: what is counted;
//! - [`error`]: [`PaymentError`], the reasons the service stops.
//!
//! # Running
//!
//! The binary (`cargo run -p payment -- --config payment.toml`) parses the
//! configuration, starts logging and calls [`run`]; SIGINT or SIGTERM finishes the batch
//! in progress, commits it and exits 0. A producer fenced or failed fatally is
//! replaced in place (a broker failover can time a transaction out, see [`recovery`]);
//! one fenced again and again (a second live instance with the same id) or a fatal
//! consumer error exits non-zero. The library entry points take the HTTP listener and the shutdown signal,
//! so tests run the whole service in-process:
//!
//! ```no_run
//! # async fn example() -> Result<(), payment::PaymentError> {
//! let config = payment::Config::load(None)?;
//! let listener = tokio::net::TcpListener::bind(config.http.listen).await?;
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! payment::run(config, listener, shutdown).await
//! # }
//! ```
//!
//! A real payment provider plugs in with [`run_with_gateway`] and its own
//! [`PaymentGateway`] implementation (see [`gateway`] for the contract).
//!
//! # Before it starts
//!
//! The four topics must exist (automatic creation is off in this project), and the
//! payment topics must have as many partitions as `order.created` (checked: outcomes are
//! written to their order's partition number). The newest `payment.completed` and
//! `payment.failed` schemas must be registered under `<topic>-value` (`make schemas`).
//! The service checks both at start-up and stops with a message that says what to run.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventbus::Fault;
use eventbus::client::{self, ReaderOptions};
use eventbus::context::BusContext;
use futures::FutureExt;
use tokio::net::TcpListener;

pub mod config;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod outcome;
pub mod processor;
pub mod recovery;
pub mod server;
pub mod settled_index;
pub mod settlement;
pub mod transaction;

pub use config::{Config, Topics};
pub use error::PaymentError;
pub use gateway::{
    Charge, ChargeRequest, GatewayError, PaymentGateway, SimulatedGateway, SimulatedGatewayConfig,
};
pub use metrics::PaymentMetrics;
pub use settlement::Settlement;

use crate::outcome::OutcomeEncoder;
use crate::processor::{Parts, Processor};
use crate::server::Health;
use crate::transaction::TxnProducer;

/// Runs the service with the [`SimulatedGateway`] of `config.gateway` until `shutdown`
/// completes (then finishes and commits the batch in progress) or a fatal error.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PaymentError> {
    let gateway = SimulatedGateway::new(config.gateway.clone())?;
    run_with_gateway(config, Arc::new(gateway), listener, shutdown).await
}

/// Runs the service with `gateway`; otherwise as [`run`].
pub async fn run_with_gateway<G: PaymentGateway>(
    config: Config,
    gateway: Arc<G>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PaymentError> {
    config.validate()?;
    let metrics = PaymentMetrics::register(&prometheus::Registry::new())?;
    let health = Arc::new(Health::default());
    let shutdown = shutdown.boxed().shared();

    // HTTP first, so that liveness answers while the service starts.
    let address = listener.local_addr()?;
    let app = server::router(health.clone(), metrics.clone());
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    tracing::info!(%address, "serving /healthz, /readyz and /metrics");

    let result = tokio::select! {
        started = start(&config, gateway, metrics.clone(), health.clone()) => match started {
            Ok((processor, lag)) => {
                let result = processor.run(shutdown.clone()).await;
                lag.abort();
                result
            }
            Err(e) => Err(e),
        },
        () = shutdown.clone() => {
            tracing::info!("shutdown requested during start-up");
            Ok(())
        }
    };
    health.set_stopping();
    let _ = stop_http.send(());
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("http server: {e}"),
        Err(e) => tracing::warn!("http server task: {e}"),
    }
    result
}

/// Checks the setup, initialises the transactional producer and creates the consumer.
async fn start<G: PaymentGateway>(
    config: &Config,
    gateway: Arc<G>,
    metrics: PaymentMetrics,
    health: Arc<Health>,
) -> Result<(Processor<G>, tokio::task::JoinHandle<()>), PaymentError> {
    let topics = config.topics.resolve();
    check_topics(config, &topics, &metrics).await?;
    let registry = eventbus::RegistryClient::new(&config.registry)?;
    let encoder = OutcomeEncoder::new(
        registry.clone(),
        topics.clone(),
        config.source.clone(),
        config.group_id(),
    )
    .await?;
    let producer = TxnProducer::new(
        &config.kafka,
        &config.transactional_id(),
        config.transaction.transaction_timeout,
        config.transaction.call_timeout,
        &metrics,
    )?;
    // Before consuming: aborts what a crashed predecessor left open, so that the
    // committed offsets the consumer is about to fetch are final.
    producer.init().await?;
    health.set_producer_ready();
    tracing::info!(transactional_id = %config.transactional_id(), "transactions initialised");
    let consumer = Arc::new(processor::create_consumer(config, &metrics)?);
    let lag = tokio::spawn(eventbus::lag::track_committed(
        consumer.clone(),
        config.group_id(),
        metrics.bus.clone(),
        config.consumer.lag_interval,
    ));
    let processor = Processor::new(
        config,
        Parts {
            consumer,
            producer,
            encoder,
            registry,
            gateway,
            metrics,
            health,
        },
    );
    Ok((processor, lag))
}

/// Fails with [`PaymentError::Topic`] or [`PaymentError::PartitionMismatch`] unless the four topics exist and the payment
/// topics have as many partitions as the input (co-partitioning).
async fn check_topics(
    config: &Config,
    topics: &Topics,
    metrics: &PaymentMetrics,
) -> Result<(), PaymentError> {
    let kafka = config.kafka.clone();
    let context = BusContext::new(
        format!("{}/topic-check", kafka.client_id),
        None,
        metrics.bus.clone(),
    );
    let topics = topics.clone();
    tokio::task::spawn_blocking(move || {
        // A reader is eventbus's client for metadata; it never joins its group.
        let client = client::reader(&kafka, &ReaderOptions::default(), context)?;
        let count = |topic: &str| -> Result<i32, PaymentError> {
            client::partition_count(&client, topic, Duration::from_secs(10)).map_err(|e| {
                // A missing topic (MissingTopic, or the metadata's UnknownTopic), access
                // denied, a refused configuration: an operator must act.
                if e.fault() == Fault::Setup {
                    PaymentError::Topic {
                        topic: topic.to_owned(),
                        source: Box::new(e),
                    }
                } else {
                    PaymentError::Bus(e)
                }
            })
        };
        let input = count(&topics.order_created)?;
        for output in [&topics.payment_completed, &topics.payment_failed] {
            let n = count(output)?;
            if n != input {
                return Err(PaymentError::PartitionMismatch {
                    output: output.clone(),
                    output_partitions: n,
                    input: topics.order_created.clone(),
                    input_partitions: input,
                });
            }
        }
        count(&topics.dlq)?;
        Ok(())
    })
    .await
    .map_err(PaymentError::task("topic check"))?
}
