//! Readiness: whether this instance should get traffic, for `/readyz` and the standard
//! gRPC health service.
//!
//! Ready means a create request would succeed right now:
//! * **kafka**: the cluster answers metadata for every topic the service writes, and
//!   each of their partitions has a leader;
//! * **registry**: the registry answers and each event schema is registered under its
//!   topic's subject and compatible with the subject's versions (eventbus's start-up
//!   check, re-run);
//! * **idempotency**: the start-up replay of the topics has caught up (see
//!   [`crate::idempotency`]), so the instance knows the keys answered before it started;
//! * not shutting down (a draining instance leaves the load balancer first).
//!
//! A background task checks every `readiness.interval` and publishes a
//! [`ReadyReport`]; the probe endpoints only read the last report. Probes are therefore
//! cheap and cannot pile up on a slow Kafka, and the report says which check failed and
//! why. `/healthz` (liveness) deliberately depends on none of this: a Kafka outage must
//! not make an orchestrator restart every ingress.

use std::sync::Arc;
use std::time::Duration;

use eventbus::client::{self, ReaderOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{BaseConsumer, Consumer, KafkaError, RDKafkaErrorCode};
use eventbus::{BusError, BusMetrics, KafkaSettings, RegistryClient, SchemaRef};
use serde::Serialize;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::{ReadinessConfig, TopicsConfig};

/// One check of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `kafka`, `registry`, `idempotency` or `shutdown`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The outcome of the last round of checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyReport {
    /// Whether every check passed.
    pub ready: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

impl ReadyReport {
    fn starting() -> Self {
        ReadyReport {
            ready: false,
            checks: vec![Check {
                name: "startup",
                ok: false,
                detail: Some("not checked yet".to_owned()),
            }],
        }
    }
}

/// The gRPC service names whose health follows readiness.
pub const SERVICES: [&str; 2] = [
    "orderpipeline.v1.OrderService",
    "orderpipeline.v1.InventoryAdminService",
];

/// Runs the checks; see the module docs.
pub struct Prober {
    client: Arc<BaseConsumer>,
    registry: RegistryClient,
    schemas: Vec<SchemaRef>,
    topics: Vec<String>,
    replay: watch::Receiver<bool>,
    report: watch::Sender<ReadyReport>,
    health: HealthReporter,
    config: ReadinessConfig,
}

impl Prober {
    /// A prober and the receiver of its reports.
    pub fn new(
        kafka: &KafkaSettings,
        registry: RegistryClient,
        topics: &TopicsConfig,
        replay: watch::Receiver<bool>,
        health: HealthReporter,
        config: ReadinessConfig,
    ) -> Result<(Self, watch::Receiver<ReadyReport>), BusError> {
        // Only metadata requests: a reader that is never assigned anything.
        let context = BusContext::new(
            format!("{}/readiness", kafka.client_id),
            None,
            BusMetrics::default(),
        );
        let client = client::reader(kafka, &ReaderOptions::default(), context)?;
        let schemas = vec![
            SchemaRef::of_on_topic::<schemas::OrderCreated>(&topics.order_created),
            SchemaRef::of_on_topic::<schemas::OrderUpdated>(&topics.order_updated),
            SchemaRef::of_on_topic::<schemas::StockAdjusted>(&topics.stock_adjusted),
        ];
        let (report, receiver) = watch::channel(ReadyReport::starting());
        Ok((
            Prober {
                client: Arc::new(client),
                registry,
                schemas,
                topics: topics.all().iter().map(|t| (*t).to_owned()).collect(),
                replay,
                report,
                health,
                config,
            },
            receiver,
        ))
    }

    /// Checks every `interval` until `stop` turns `true`; then reports not ready (and
    /// NOT_SERVING) for good.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // Re-check at once when the replay catches up, so readiness does not lag it by
        // an interval; stop watching once it did (or its sender is gone).
        let mut replay = self.replay.clone();
        let mut watch_replay = !*replay.borrow_and_update();
        loop {
            let report = self.check().await;
            self.publish(report).await;
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                changed = replay.changed(), if watch_replay => {
                    if changed.is_err() || *replay.borrow_and_update() {
                        watch_replay = false;
                    }
                }
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        let stopping = ReadyReport {
            ready: false,
            checks: vec![Check {
                name: "shutdown",
                ok: false,
                detail: Some("shutting down".to_owned()),
            }],
        };
        self.publish(stopping).await;
    }

    async fn publish(&self, report: ReadyReport) {
        let status = if report.ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in SERVICES.into_iter().chain([""]) {
            self.health.set_service_status(service, status).await;
        }
        if !report.ready && *self.report.borrow() != report {
            tracing::info!(?report, "not ready");
        }
        self.report.send_replace(report);
    }

    async fn check(&self) -> ReadyReport {
        let (kafka, registry) = tokio::join!(self.check_kafka(), self.check_registry());
        let replayed = *self.replay.borrow();
        let checks = vec![
            kafka,
            registry,
            Check {
                name: "idempotency",
                ok: replayed,
                detail: (!replayed)
                    .then(|| "replaying the topics' recent idempotency keys".to_owned()),
            },
        ];
        ReadyReport {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    async fn check_kafka(&self) -> Check {
        let client = Arc::clone(&self.client);
        let topics = self.topics.clone();
        let timeout = self.config.timeout;
        let outcome = tokio::task::spawn_blocking(move || -> Result<(), BusError> {
            for topic in &topics {
                let metadata =
                    client
                        .fetch_metadata(Some(topic), timeout)
                        .map_err(|e| BusError::Kafka {
                            operation: format!("metadata of {topic}"),
                            error: e,
                        })?;
                let found = metadata
                    .topics()
                    .iter()
                    .find(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                    .ok_or_else(|| BusError::MissingTopic(topic.clone()))?;
                if let Some(p) = found.partitions().iter().find(|p| p.leader() < 0) {
                    return Err(BusError::Kafka {
                        operation: format!("leader of {topic}/{}", p.id()),
                        error: KafkaError::MetadataFetch(RDKafkaErrorCode::LeaderNotAvailable),
                    });
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|source| {
            Err(BusError::Task {
                operation: "kafka check",
                source,
            })
        });
        check("kafka", outcome)
    }

    async fn check_registry(&self) -> Check {
        let outcome = match tokio::time::timeout(
            self.config.timeout,
            self.registry.ensure_all(&self.schemas),
        )
        .await
        {
            Err(_) => Err(BusError::Timeout(format!(
                "the registry gave no answer within {:?}",
                self.config.timeout
            ))),
            Ok(Err(error)) => Err(error),
            Ok(Ok(_)) => Ok(()),
        };
        check("registry", outcome)
    }
}

fn check(name: &'static str, outcome: Result<(), BusError>) -> Check {
    match outcome {
        Ok(()) => Check {
            name,
            ok: true,
            detail: None,
        },
        Err(error) => Check {
            name,
            ok: false,
            detail: Some(eventbus::chain(&error)),
        },
    }
}

/// How long `/readyz` callers should wait before asking again after a 503.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
