//! The Order Service: a REST API (axum) and a gRPC API (tonic) that turn order commands
//! into Avro events on Kafka, acknowledged by every in-sync replica before the client
//! hears "yes".
//!
//! # Shape
//!
//! [`run`] takes a [`Config`], two already bound listeners and a shutdown future. Binding
//! outside lets tests listen on port 0 and learn the port, and lets `main` fail before
//! anything starts if a port is taken; the shutdown future lets a test stop the service
//! exactly when it wants (mini-redis style), and `main` pass SIGINT/SIGTERM
//! (`servicekit::shutdown::signal`).
//!
//! # Security
//!
//! `[security]` (`servicekit::ApiSecurity`) turns on TLS for both listeners and bearer
//! API keys for both APIs. Keys are checked before any handler runs: REST answers 401
//! (problem+json, `WWW-Authenticate: Bearer`), gRPC `UNAUTHENTICATED`. `/healthz`,
//! `/readyz`, `/metrics` and gRPC health stay open for probes and Prometheus.
//!
//! Modules, one noun each:
//! - [`config`]: layered configuration (defaults → file → env);
//! - [`validation`]: request drafts → domain values, every violation with its field path,
//!   built on the `schemas` crate's rules so API and events agree;
//! - [`commands`]: the use cases both APIs share (validate, idempotency, publish within a
//!   deadline, answer);
//! - [`idempotency`]: deterministic ids, the per-instance cache of answers, and the
//!   follower that rebuilds it from Kafka across restarts and instances;
//! - [`rest`]: axum router, RFC 9457 problems, OpenAPI;
//! - [`grpc`]: tonic services, rich error details, the strict codec;
//! - [`views`]: the client of the pipeline's ViewService (order status reads);
//! - [`readiness`]: the background checks behind `/readyz` and gRPC health;
//! - [`metrics`]: Prometheus metrics (logs: `servicekit::telemetry`);
//! - [`proto`]: the generated protobuf code.
//!
//! # Lifecycle
//!
//! Start: metrics, the eventbus producer and registry client, the start-up schema check
//! (a schema that is not registered stops the service with the command to run; an
//! unreachable registry only delays readiness), the idempotency follower, the readiness
//! prober, then both servers. Stop (the shutdown future resolves, or a server fails):
//! readiness turns false and gRPC health NOT_SERVING, both servers stop accepting and
//! let in-flight requests finish (bounded by `shutdown.grace`), then the producer is
//! flushed (bounded by `shutdown.flush_timeout`) and the background tasks end.

pub mod commands;
pub mod config;
pub mod grpc;
pub mod idempotency;
pub mod metrics;
pub use ::proto;
pub mod readiness;
pub mod recent;
pub mod rest;
pub mod validation;
pub mod views;

use std::future::Future;
use std::net::SocketAddr;

use eventbus::{BusConfig, BusError, EventBus, Fault, RegistryClient, SchemaRef};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::Config;

use crate::commands::Commands;
use crate::grpc::GrpcApi;
use crate::idempotency::{IdempotencyCache, LogFollower};
use crate::metrics::Metrics;
use crate::proto::inventory_admin_service_server::InventoryAdminServiceServer;
use crate::proto::order_service_server::OrderServiceServer;
use crate::readiness::Prober;
use crate::views::ViewsClient;

/// Everything that can stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({api}): {source}")]
    Bind {
        /// `REST` or `gRPC`.
        api: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The `[security]` section is unusable (TLS files, API key hashes).
    #[error("{0}")]
    Security(#[from] servicekit::Error),
    /// The eventbus could not be set up (producer, registry client).
    #[error("eventbus: {0}")]
    Bus(#[from] BusError),
    /// A schema the service writes is not registered (or not compatible).
    #[error("start-up schema check: {0}")]
    Schemas(BusError),
    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The views client's endpoint URL or TLS settings are unusable.
    #[error("views.endpoint: {0}")]
    ViewsEndpoint(#[source] tonic::transport::Error),
    /// The views client's CA file could not be read.
    #[error("views.ca_cert {}: {source}", path.display())]
    ViewsCaCert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The readiness prober's Kafka client could not be created.
    #[error("readiness client: {0}")]
    Readiness(#[source] BusError),
    /// The reflection service could not be built.
    #[error("grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The REST server failed.
    #[error("REST server: {0}")]
    Rest(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[source] tonic::transport::Error),
}

impl IngressError {
    /// Whose fault the error is, in eventbus's terms: a Kafka or registry error keeps
    /// its own classification, a server that failed while running is infrastructure,
    /// everything else (addresses, files, keys, schemas) an operator must fix.
    pub fn fault(&self) -> Fault {
        match self {
            IngressError::Bus(e) | IngressError::Readiness(e) => e.fault(),
            IngressError::Schemas(e) if e.is_retriable() => e.fault(),
            IngressError::Rest(_) | IngressError::Grpc(_) => Fault::Infrastructure,
            _ => Fault::Setup,
        }
    }

    /// Whether starting again may get past the error without an operator.
    pub fn is_retriable(&self) -> bool {
        match self {
            IngressError::Bus(e) | IngressError::Readiness(e) | IngressError::Schemas(e) => {
                e.is_retriable()
            }
            other => other.fault() == Fault::Infrastructure,
        }
    }
}

/// The two bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// The REST API's.
    pub rest: TcpListener,
    /// The gRPC API's.
    pub grpc: TcpListener,
}

impl Listeners {
    /// Binds `rest.listen` and `grpc.listen`.
    pub async fn bind(config: &Config) -> Result<Self, IngressError> {
        let bind = |api: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| IngressError::Bind { api, addr, source })
        };
        Ok(Listeners {
            rest: bind("REST", config.rest.listen).await?,
            grpc: bind("gRPC", config.grpc.listen).await?,
        })
    }
}

/// The schemas the service writes, on its configured topics.
fn written_schemas(config: &Config) -> Vec<SchemaRef> {
    vec![
        SchemaRef::of_on_topic::<schemas::OrderCreated>(&config.topics.order_created),
        SchemaRef::of_on_topic::<schemas::OrderUpdated>(&config.topics.order_updated),
        SchemaRef::of_on_topic::<schemas::StockAdjusted>(&config.topics.stock_adjusted),
    ]
}

/// The start-up schema check: an unregistered or incompatible schema is fatal (with the
/// command to run), unless the registry may register on first publish; an unreachable
/// registry only delays readiness.
async fn check_schemas(registry: &RegistryClient, config: &Config) -> Result<(), IngressError> {
    let timeout = config.registry.timeout;
    match tokio::time::timeout(timeout, registry.ensure_all(&written_schemas(config))).await {
        Ok(Ok(ids)) => {
            tracing::info!(?ids, "event schemas are registered");
            Ok(())
        }
        Ok(Err(error)) if error.fault() == Fault::Setup && !config.registry.auto_register => {
            Err(IngressError::Schemas(error))
        }
        Ok(Err(error)) => {
            tracing::warn!(
                "start-up schema check could not complete (readiness waits for it): {error}"
            );
            Ok(())
        }
        Err(_) => {
            tracing::warn!("start-up schema check: the registry did not answer within {timeout:?}");
            Ok(())
        }
    }
}

/// Resolves once `stop` holds `true` (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    // `wait_for` errs only when the sender is dropped, which also means "stop".
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Runs the service on `listeners` until `shutdown` resolves (or a server fails), then
/// shuts down gracefully. See the crate docs for the lifecycle.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngressError> {
    let security = config.security.load()?;
    let metrics = Metrics::new()?;
    let bus = EventBus::new(
        &BusConfig {
            kafka: config.kafka.clone(),
            registry: config.registry.clone(),
            producer: config.producer.clone(),
        },
        metrics.bus.clone(),
    )?;
    check_schemas(bus.registry(), &config).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let cache = IdempotencyCache::new(config.idempotency.capacity, config.idempotency.ttl);
    let (replayed_tx, replayed_rx) = watch::channel(!config.idempotency.replay);
    if config.idempotency.replay {
        let follower = LogFollower::new(
            &config.kafka,
            bus.registry().clone(),
            config.topics.clone(),
            cache.clone(),
            &config.idempotency,
            replayed_tx,
            metrics.idempotency_learned.clone(),
        );
        tasks.spawn(follower.run(stop_rx.clone()));
    }

    let views = ViewsClient::new(&config.views)?;
    let commands = Commands::new(
        bus.producer().clone(),
        config.topics.clone(),
        cache,
        views,
        config.publish.clone(),
        metrics.clone(),
    );

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let (prober, ready_rx) = Prober::new(
        &config.kafka,
        bus.registry().clone(),
        &config.topics,
        replayed_rx,
        health_reporter,
        config.readiness.clone(),
    )
    .map_err(IngressError::Readiness)?;
    tasks.spawn(prober.run(stop_rx.clone()));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(proto::order_service_server::SERVICE_NAME)
        .with_service_name(proto::inventory_admin_service_server::SERVICE_NAME)
        .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(proto::order_service_server::SERVICE_NAME)
        .with_service_name(proto::inventory_admin_service_server::SERVICE_NAME)
        .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
        .build_v1alpha()?;
    let api = GrpcApi::new(commands.clone(), metrics.clone());
    let max_message = config.grpc.max_message_bytes;
    // Every service but health (probes) needs a key when keys are configured.
    let keys = &security.keys;
    let grpc_server = security
        .grpc_server()
        .map_err(IngressError::Grpc)?
        .add_service(health_service)
        .add_service(keys.guard(reflection_v1))
        .add_service(keys.guard(reflection_v1alpha))
        .add_service(
            keys.guard(OrderServiceServer::new(api.clone()).max_decoding_message_size(max_message)),
        )
        .add_service(
            keys.guard(
                InventoryAdminServiceServer::new(api).max_decoding_message_size(max_message),
            ),
        );
    let router = rest::router(
        commands.clone(),
        metrics.clone(),
        ready_rx,
        config.rest.body_limit_bytes,
        &security.keys,
    );

    let rest_addr = listeners.rest.local_addr().ok();
    let grpc_addr = listeners.grpc.local_addr().ok();
    let rest_listener = security
        .http_listener(listeners.rest)
        .map_err(IngressError::Rest)?;
    tracing::info!(
        rest = ?rest_addr,
        grpc = ?grpc_addr,
        security = %security.describe(),
        topics = ?config.topics.all(),
        "ingress serving"
    );

    // The caller's shutdown future only flips the shared stop flag.
    let signal_tx = stop_tx.clone();
    let signal = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: draining in-flight requests");
        signal_tx.send_replace(true);
    });

    let rest = async {
        let result = axum::serve(rest_listener, router)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .await
            .map_err(IngressError::Rest);
        // Whichever server ends first (a failure) stops the other one too.
        stop_tx.send_replace(true);
        result
    };
    let grpc = async {
        let result = grpc_server
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listeners.grpc),
                stopped(stop_rx.clone()),
            )
            .await
            .map_err(IngressError::Grpc);
        stop_tx.send_replace(true);
        result
    };
    let grace = config.shutdown.grace;
    let deadline = async {
        stopped(stop_rx.clone()).await;
        tokio::time::sleep(grace).await;
    };
    let outcome = tokio::select! {
        (rest, grpc) = async { tokio::join!(rest, grpc) } => rest.and(grpc),
        () = deadline => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period; dropping them");
            Ok(())
        }
    };
    stop_tx.send_replace(true);
    signal.abort();

    match commands
        .producer()
        .flush(config.shutdown.flush_timeout)
        .await
    {
        Ok(()) => tracing::info!("producer flushed"),
        Err(error) => tracing::warn!("producer flush: {error}"),
    }
    let background = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown.flush_timeout, background)
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time");
    }
    tracing::info!("ingress stopped");
    outcome
}
