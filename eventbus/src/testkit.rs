//! Test support against the real cluster and registry (feature `testkit`).
//!
//! Every test gets its own [`TestCluster`] with a unique prefix (`test-<8 hex>-`):
//! topics, consumer groups and registry subjects are named under it, so tests never see
//! each other's data and may run in parallel. Topics are created with the admin client
//! at replication factor 3 and `min.insync.replicas=2`, like the real ones (auto topic
//! creation is off on the cluster). [`TestCluster::cleanup`] deletes what the test made.
//!
//! The cluster and registry come from `KAFKA_BOOTSTRAP` and `REGISTRY_URL` (defaults:
//! the local cluster of `deploy/local`). [`TestCluster::connect`] fails with a message
//! that says how to start them.
//!
//! ```no_run
//! # async fn t() -> Result<(), eventbus::BusError> {
//! let cluster = eventbus::testkit::TestCluster::connect().await?;
//! let topic = cluster.create_topic("orders", 3).await?;
//! // ... produce and consume ...
//! let records = cluster.read_all(&topic, true).await?;
//! cluster.cleanup().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::OwnedMessage;

use crate::kafka::AdminClient;

use crate::admin::AdminError;
use crate::config::{KafkaSettings, RegistryConfig};
use crate::error::BusError;
use crate::reader::{ReadOptions, high_watermarks, read_topic};
use crate::registry::RegistryClient;
use crate::{BusConfig, BusMetrics, EventBus};

/// A test's view of the real cluster and registry, with a unique name prefix.
pub struct TestCluster {
    /// Kafka settings (bootstrap from `KAFKA_BOOTSTRAP`).
    pub kafka: KafkaSettings,
    /// Registry settings (URL from `REGISTRY_URL`).
    pub registry: RegistryConfig,
    prefix: String,
    admin: AdminClient,
    registry_client: RegistryClient,
    topics: Mutex<Vec<String>>,
    subjects: Mutex<Vec<String>>,
}

impl TestCluster {
    /// Connects and checks that the cluster and the registry answer.
    pub async fn connect() -> Result<Self, BusError> {
        let kafka = kafka_settings().with_client_id("eventbus-test");
        let registry = RegistryConfig::from_env();
        let admin = admin_client(&kafka)?;
        let registry_client = RegistryClient::new(&registry)?;
        let cluster = TestCluster {
            prefix: format!("test-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            kafka,
            registry,
            admin,
            registry_client,
            topics: Mutex::new(Vec::new()),
            subjects: Mutex::new(Vec::new()),
        };
        let bootstrap = cluster.kafka.bootstrap.clone();
        let kafka = cluster.kafka.clone();
        tokio::task::spawn_blocking(move || probe(&kafka, Duration::from_secs(10)))
            .await
            .map_err(BusError::task("probe"))?
            .map_err(|e| BusError::Unavailable {
                what: format!("Kafka at {bootstrap}"),
                hint: HOW_TO_START,
                source: Box::new(e),
            })?;
        cluster
            .registry_client
            .config(None)
            .await
            .map_err(|e| BusError::Unavailable {
                what: format!("registry at {}", cluster.registry.url),
                hint: HOW_TO_START,
                source: Box::new(e),
            })?;
        Ok(cluster)
    }

    /// The unique prefix of this test's names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A unique name: prefix + `suffix`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// A unique consumer group id.
    pub fn group(&self, suffix: &str) -> String {
        self.name(&format!("group-{suffix}"))
    }

    /// A registry client (shared caches).
    pub fn registry_client(&self) -> &RegistryClient {
        &self.registry_client
    }

    /// A bus on this cluster with fresh private metrics.
    pub fn bus(&self) -> Result<EventBus, BusError> {
        self.bus_with(BusMetrics::default())
    }

    /// A bus on this cluster with the given metrics.
    pub fn bus_with(&self, metrics: BusMetrics) -> Result<EventBus, BusError> {
        EventBus::new(&self.bus_config(), metrics)
    }

    /// The bus configuration for this cluster.
    pub fn bus_config(&self) -> BusConfig {
        BusConfig {
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            producer: crate::config::ProducerConfig {
                source: "/eventbus-test".to_owned(),
                ..Default::default()
            },
        }
    }

    /// Creates topic `<prefix><suffix>` with `partitions` partitions, replication factor
    /// 3 and `min.insync.replicas=2`, and waits until every partition has a leader.
    pub async fn create_topic(&self, suffix: &str, partitions: i32) -> Result<String, BusError> {
        let name = self.name(suffix);
        let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(3))
            .set("min.insync.replicas", "2");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| BusError::kafka(format!("create topic {name}"), e))?;
        for r in results {
            if let Err((t, code)) = r {
                return Err(AdminError::Topic {
                    operation: "create",
                    topic: t,
                    code,
                }
                .into());
            }
        }
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        let kafka = self.kafka.clone();
        let wanted = usize::try_from(partitions).unwrap_or(0);
        let topic_name = name.clone();
        eventually(Duration::from_secs(30), Duration::from_millis(100), || {
            let kafka = kafka.clone();
            let topic_name = topic_name.clone();
            async move {
                high_watermarks(&kafka, &topic_name)
                    .await
                    .ok()
                    .filter(|w| w.len() == wanted)
            }
        })
        .await
        .ok_or_else(|| BusError::Timeout(format!("topic {name} has no leaders after 30 s")))?;
        Ok(name)
    }

    /// Registers `E`'s newest schema under `<topic>-value` (removed by cleanup).
    pub async fn register_on_topic<E: schemas::Event>(&self, topic: &str) -> Result<u32, BusError> {
        let subject = format!("{topic}-value");
        let id = self
            .registry_client
            .register(&subject, E::schema_text())
            .await?;
        self.subjects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(subject);
        Ok(id)
    }

    /// Every record of `topic` now, by partition then offset.
    pub async fn read_all(
        &self,
        topic: &str,
        read_committed: bool,
    ) -> Result<Vec<OwnedMessage>, BusError> {
        read_topic(
            &self.kafka,
            topic,
            &ReadOptions {
                read_committed,
                ..ReadOptions::default()
            },
        )
        .await
    }

    /// The sum of the high watermarks of `topic`: how many offsets were ever written.
    pub async fn high_watermark_total(&self, topic: &str) -> Result<i64, BusError> {
        Ok(high_watermarks(&self.kafka, topic)
            .await?
            .iter()
            .map(|(_, h)| h)
            .sum())
    }

    /// The committed offsets of `group` on every partition of `topic`, by partition;
    /// `None` where the group never committed.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(i32, Option<i64>)>, BusError> {
        let partitions = high_watermarks(&self.kafka, topic).await?;
        let kafka = self.kafka.clone();
        let group = group.to_owned();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = crate::client::reader(
                &kafka,
                &crate::client::ReaderOptions {
                    group_id: Some(group.clone()),
                    ..Default::default()
                },
                crate::context::BusContext::new(
                    "eventbus-test/offsets",
                    None,
                    BusMetrics::default(),
                ),
            )?;
            let mut tpl = rdkafka::TopicPartitionList::new();
            for (p, _) in &partitions {
                tpl.add_partition(&topic, *p);
            }
            let committed = rdkafka::consumer::Consumer::committed_offsets(
                &consumer,
                tpl,
                Duration::from_secs(10),
            )
            .map_err(|e| BusError::kafka(format!("committed offsets of {group}"), e))?;
            Ok(committed
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    (e.partition(), offset)
                })
                .collect())
        })
        .await
        .map_err(BusError::task("offsets"))?
    }

    /// Polls `topic` until it holds at least `count` records, then returns them all.
    pub async fn wait_for_records(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<OwnedMessage>, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.read_all(topic, false).await?;
            if records.len() >= count {
                return Ok(records);
            }
            if Instant::now() >= deadline {
                return Err(BusError::Timeout(format!(
                    "{topic} has {} record(s), expected {count}, after {timeout:?}",
                    records.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Deletes the topics and subjects this test created; failures are only logged.
    /// Also done on drop (a failing test panics before it gets here), but calling it at
    /// the end of a test deletes them without blocking a thread.
    pub async fn cleanup(&self) {
        let topics = std::mem::take(&mut *self.topics.lock().unwrap_or_else(|e| e.into_inner()));
        let subjects =
            std::mem::take(&mut *self.subjects.lock().unwrap_or_else(|e| e.into_inner()));
        delete_all(&self.admin, &self.registry_client, topics, subjects).await;
    }
}

async fn delete_all(
    admin: &AdminClient,
    registry: &RegistryClient,
    topics: Vec<String>,
    subjects: Vec<String>,
) {
    if !topics.is_empty() {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = admin.delete_topics(&names, &AdminOptions::new()).await {
            tracing::warn!("deleting test topics {names:?}: {e}");
        }
    }
    for s in subjects {
        if let Err(e) = registry.delete_subject(&s, true).await {
            tracing::warn!("deleting test subject {s}: {e}");
        }
    }
}

impl Drop for TestCluster {
    /// Deletes what [`TestCluster::cleanup`] did not (a test that panicked), on a
    /// thread of its own with its own runtime: drop cannot await.
    fn drop(&mut self) {
        let topics = std::mem::take(&mut *self.topics.lock().unwrap_or_else(|e| e.into_inner()));
        let subjects =
            std::mem::take(&mut *self.subjects.lock().unwrap_or_else(|e| e.into_inner()));
        if topics.is_empty() && subjects.is_empty() {
            return;
        }
        let kafka = self.kafka.clone();
        let registry = self.registry_client.clone();
        let cleaner = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let admin = admin_client(&kafka);
                match admin {
                    Ok(admin) => delete_all(&admin, &registry, topics, subjects).await,
                    Err(e) => tracing::warn!("cannot clean up test topics {topics:?}: {e}"),
                }
            });
        });
        let _ = cleaner.join();
    }
}

/// The Kafka settings tests connect with: `KAFKA_BOOTSTRAP`, and the client config file
/// from `KAFKA_CLIENT_CONFIG` or, when that is unset, the `admin` principal's config that
/// `make up` writes into this repository's `.run/secrets/` (so `cargo test` works on the
/// secure local cluster without extra set-up). Tests run as `admin`; the services'
/// own principals and their ACLs are exercised by the ACL tests.
pub fn kafka_settings() -> KafkaSettings {
    let mut kafka = KafkaSettings::from_env();
    if kafka.client_config_file.is_none() {
        let local =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run/secrets/admin.conf");
        if local.is_file() {
            kafka.client_config_file = Some(local);
        }
    }
    kafka
}

/// The path of a principal's client config file written by `make up`
/// (`<repo>/.run/secrets/<principal>.conf`), or `RUN_DIR`'s when that is set.
pub fn principal_config(principal: &str) -> std::path::PathBuf {
    let run = std::env::var("RUN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run"));
    run.join("secrets").join(format!("{principal}.conf"))
}

fn admin_client(kafka: &KafkaSettings) -> Result<AdminClient, BusError> {
    crate::client::admin(
        kafka,
        crate::context::BusContext::new("eventbus-test/admin", None, BusMetrics::default()),
    )
}

/// Asks the cluster for its brokers, to check it answers.
fn probe(kafka: &KafkaSettings, timeout: Duration) -> Result<usize, BusError> {
    let consumer = crate::client::reader(
        kafka,
        &crate::client::ReaderOptions::default(),
        crate::context::BusContext::new("eventbus-test/probe", None, BusMetrics::default()),
    )?;
    rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, timeout)
        .map(|m| m.brokers().len())
        .map_err(|e| BusError::kafka("fetch metadata", e))
}

/// What to do when the cluster or the registry does not answer a test.
const HOW_TO_START: &str = "start the local cluster with `make up` (deploy/local/platform.sh up), or set KAFKA_BOOTSTRAP / REGISTRY_URL";

/// Polls `f` every `interval` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, interval: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Installs a `tracing` subscriber for tests (once; `RUST_LOG` filters, default `warn`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
