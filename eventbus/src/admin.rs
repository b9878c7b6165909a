//! Topics as data, and the cluster's health.
//!
//! The project's topics are declared once, in `deploy/topics.toml` ([`TopicList`]); the
//! local bootstrap applies that file and the Kubernetes `KafkaTopic` resources are made
//! from it, so the two cannot drift. Applying is idempotent and declarative: a missing
//! topic is created, a topic whose config differs gets the declared config (the whole
//! declared set, so a setting removed from the file goes back to the broker default),
//! partitions may grow but never shrink (shrinking would re-key every record, so it is
//! refused with an error naming the topic).
//!
//! Readiness ([`wait_ready`]) is polled, never slept for: the cluster is ready when the
//! expected number of brokers answer metadata and no partition of a visible topic is
//! under-replicated or leaderless.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;

use crate::config::KafkaSettings;
use crate::context::BusContext;
use crate::error::{BusError, Fault};

/// Names of topic settings whose value on the cluster differs from the declared one.
type DriftedKeys = Vec<String>;
use crate::metrics::BusMetrics;

/// What went wrong in a topic administration step (nested in [`BusError::Admin`]).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The topic list is not TOML of the expected shape.
    #[error("invalid topic list {path}: {source}")]
    Syntax {
        /// The file.
        path: String,
        /// The TOML error (with line and column).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The topic list breaks a rule (a topic declared twice, no partitions).
    #[error("invalid topic list {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A topic has more partitions than declared: shrinking is not possible in Kafka.
    #[error(
        "topic {topic} has {actual} partitions but {declared} are declared; Kafka cannot shrink a topic (recreate it by hand if you mean it)"
    )]
    Shrink {
        /// The topic.
        topic: String,
        /// Partitions on the cluster.
        actual: usize,
        /// Partitions in the file.
        declared: usize,
    },
    /// The cluster did not become ready in time.
    #[error("cluster not ready after {waited:?}: {last}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The last observed state.
        last: String,
    },
    /// A per-topic operation failed.
    #[error("{operation} {topic}: {code}")]
    Topic {
        /// What was attempted.
        operation: &'static str,
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}

impl AdminError {
    /// Whose fault it is: a cluster that is not ready yet is infrastructure, the rest
    /// needs an operator (a wrong file, a refused change).
    pub fn fault(&self) -> Fault {
        match self {
            AdminError::NotReady { .. } => Fault::Infrastructure,
            _ => Fault::Setup,
        }
    }
}

/// One declared topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: usize,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic-level configs (defaults merged with the topic's own).
    pub config: BTreeMap<String, String>,
}

/// The declared topics, with defaults already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicList {
    /// The topics in file order.
    pub topics: Vec<TopicSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDefaults {
    replication_factor: i32,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTopic {
    name: String,
    partitions: usize,
    replication_factor: Option<i32>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    defaults: FileDefaults,
    topic: Vec<FileTopic>,
}

impl TopicList {
    /// Reads and checks a topic list file (`deploy/topics.toml`).
    pub fn load(path: &Path) -> Result<Self, BusError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(BusError::io(format!("read {shown}")))?;
        Ok(Self::parse_named(&text, &shown)?)
    }

    /// Parses the TOML text of a topic list; the error says what is wrong. Errors name
    /// the file `topics.toml`.
    pub fn parse(text: &str) -> Result<Self, BusError> {
        Ok(Self::parse_named(text, "topics.toml")?)
    }

    fn parse_named(text: &str, path: &str) -> Result<Self, AdminError> {
        let file: File = toml::from_str(text).map_err(|e| AdminError::Syntax {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let invalid = |message: String| AdminError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut topics = Vec::with_capacity(file.topic.len());
        for t in file.topic {
            if !seen.insert(t.name.clone()) {
                return Err(invalid(format!("topic {} is declared twice", t.name)));
            }
            if t.partitions == 0 {
                return Err(invalid(format!(
                    "topic {} needs at least one partition",
                    t.name
                )));
            }
            let mut config = file.defaults.config.clone();
            config.extend(t.config);
            topics.push(TopicSpec {
                replication_factor: t
                    .replication_factor
                    .unwrap_or(file.defaults.replication_factor),
                name: t.name,
                partitions: t.partitions,
                config,
            });
        }
        Ok(TopicList { topics })
    }

    /// Looks a topic up by name.
    pub fn get(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// What [`Admin::apply`] did to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The topic was created.
    Created(String),
    /// Partitions were added: topic, from, to.
    Grew(String, usize, usize),
    /// Configs were changed: topic and the keys whose values changed.
    Reconfigured(String, Vec<String>),
    /// Nothing to do.
    Unchanged(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Created(t) => write!(f, "created      {t}"),
            Change::Grew(t, a, b) => write!(f, "partitions   {t}: {a} -> {b}"),
            Change::Reconfigured(t, keys) => write!(f, "reconfigured {t}: {}", keys.join(", ")),
            Change::Unchanged(t) => write!(f, "unchanged    {t}"),
        }
    }
}

/// An admin client plus a metadata client, built by [`crate::client`].
pub struct Admin {
    admin: AdminClient<BusContext>,
    meta: BaseConsumer<BusContext>,
}

impl Admin {
    /// Connects (lazily: nothing is sent until the first call) with `settings`
    /// (bootstrap, security, credentials).
    pub fn new(settings: &KafkaSettings) -> Result<Self, BusError> {
        let context = || {
            BusContext::new(
                format!("{}/admin", settings.client_id),
                None,
                BusMetrics::default(),
            )
        };
        Ok(Admin {
            admin: crate::client::admin(settings, context())?,
            meta: crate::client::reader(
                settings,
                &crate::client::ReaderOptions::default(),
                context(),
            )?,
        })
    }

    /// The underlying rdkafka admin client.
    pub fn client(&self) -> &AdminClient<BusContext> {
        &self.admin
    }

    /// Deletes topics (benchmarks and tests clean up after themselves); errors per topic
    /// are ignored, a failed request is returned.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<(), BusError> {
        self.admin
            .delete_topics(topics, &AdminOptions::new())
            .await
            .map_err(|e| BusError::kafka("delete topics", e))?;
        Ok(())
    }

    /// Deletes the records of `topic`/`partition` before `offset` (what retention does
    /// to old segments); tests use it to prove a job copes with input that is gone.
    pub async fn delete_records_before(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| BusError::kafka("delete records", e))?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let result = self
            .admin
            .delete_records(&tpl, &options)
            .await
            .map_err(|e| BusError::kafka("delete records", e))?;
        for e in result.elements() {
            if let Err(error) = e.error() {
                return Err(BusError::kafka("delete records", error));
            }
        }
        Ok(())
    }

    /// Cluster metadata (all topics), blocking up to `timeout`; call from a blocking context.
    pub fn metadata(&self, timeout: Duration) -> Result<Metadata, BusError> {
        self.meta
            .fetch_metadata(None, timeout)
            .map_err(|e| BusError::kafka("fetch metadata", e))
    }

    /// Brings the cluster in line with `list`; returns what changed, topic by topic.
    pub async fn apply(&self, list: &TopicList) -> Result<Vec<Change>, BusError> {
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let meta = tokio::task::block_in_place(|| self.metadata(Duration::from_secs(10)))?;
        let existing: BTreeMap<String, usize> = meta
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect();

        let mut changes = Vec::new();
        // Create what is missing, in one request.
        let missing: Vec<&TopicSpec> = list
            .topics
            .iter()
            .filter(|t| !existing.contains_key(&t.name))
            .collect();
        if !missing.is_empty() {
            let news: Vec<NewTopic<'_>> = missing
                .iter()
                .map(|t| {
                    let mut n = NewTopic::new(
                        &t.name,
                        t.partitions as i32,
                        TopicReplication::Fixed(t.replication_factor),
                    );
                    for (k, v) in &t.config {
                        n = n.set(k, v);
                    }
                    n
                })
                .collect();
            let created = self
                .admin
                .create_topics(news.iter(), &opts)
                .await
                .map_err(|e| BusError::kafka("create topics", e))?;
            for res in created {
                match res {
                    Ok(t) => changes.push(Change::Created(t)),
                    // Created concurrently by someone else: fine, it is there.
                    Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        changes.push(Change::Unchanged(t))
                    }
                    Err((topic, code)) => {
                        return Err(AdminError::Topic {
                            operation: "create",
                            topic,
                            code,
                        }
                        .into());
                    }
                }
            }
        }

        for spec in list
            .topics
            .iter()
            .filter(|t| existing.contains_key(&t.name))
        {
            let actual = existing[&spec.name];
            let mut changed = false;
            if actual > spec.partitions {
                return Err(AdminError::Shrink {
                    topic: spec.name.clone(),
                    actual,
                    declared: spec.partitions,
                }
                .into());
            }
            if actual < spec.partitions {
                let np = NewPartitions::new(&spec.name, spec.partitions);
                let grown = self
                    .admin
                    .create_partitions([&np], &opts)
                    .await
                    .map_err(|e| BusError::kafka(format!("add partitions to {}", spec.name), e))?;
                for res in grown {
                    res.map_err(|(topic, code)| AdminError::Topic {
                        operation: "add partitions to",
                        topic,
                        code,
                    })?;
                }
                changes.push(Change::Grew(spec.name.clone(), actual, spec.partitions));
                changed = true;
            }
            let differing = self.config_drift(spec).await?;
            if !differing.is_empty() {
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&spec.name));
                for (k, v) in &spec.config {
                    alter = alter.set(k, v);
                }
                let altered = self
                    .admin
                    .alter_configs([&alter], &opts)
                    .await
                    .map_err(|e| BusError::kafka(format!("alter configs of {}", spec.name), e))?;
                for res in altered {
                    res.map_err(|(_, code)| AdminError::Topic {
                        operation: "alter configs of",
                        topic: spec.name.clone(),
                        code,
                    })?;
                }
                changes.push(Change::Reconfigured(spec.name.clone(), differing));
                changed = true;
            }
            if !changed {
                changes.push(Change::Unchanged(spec.name.clone()));
            }
        }
        Ok(changes)
    }

    /// Keys whose value on the cluster differs from the spec, including dynamic topic
    /// settings the spec does not declare (they would be reset by an apply).
    async fn config_drift(&self, spec: &TopicSpec) -> Result<DriftedKeys, BusError> {
        let res = self
            .admin
            .describe_configs(
                [&ResourceSpecifier::Topic(&spec.name)],
                &AdminOptions::new(),
            )
            .await
            .map_err(|e| BusError::kafka(format!("describe configs of {}", spec.name), e))?;
        let mut drift = Vec::new();
        for r in res {
            let resource = r.map_err(|code| AdminError::Topic {
                operation: "describe configs of",
                topic: spec.name.clone(),
                code,
            })?;
            let entries = resource.entry_map();
            for (k, v) in &spec.config {
                if entries.get(k.as_str()).and_then(|e| e.value.as_deref()) != Some(v.as_str()) {
                    drift.push(k.clone());
                }
            }
            for e in &resource.entries {
                if matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic)
                    && !spec.config.contains_key(&e.name)
                {
                    drift.push(e.name.clone());
                }
            }
        }
        Ok(drift)
    }
}

/// The name prefix of scratch stacks' topics: tests and benchmarks run the services on
/// `stack-<id>-…` copies of every topic and delete them when they end; a killed run
/// leaves them behind, and every partition adds to the brokers' CPU per fetch.
pub const SCRATCH_PREFIX: &str = "stack-";

/// The topics of scratch stacks ([`SCRATCH_PREFIX`]) in `meta`, with their partition
/// counts.
pub fn scratch_topics(meta: &Metadata) -> Vec<(String, usize)> {
    meta.topics()
        .iter()
        .filter(|t| t.name().starts_with(SCRATCH_PREFIX))
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect()
}

/// A snapshot of cluster health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Broker ids answering metadata, with their addresses.
    pub brokers: Vec<(i32, String)>,
    /// Number of topics visible.
    pub topics: usize,
    /// Number of partitions visible.
    pub partitions: usize,
    /// `topic/partition` whose in-sync replicas are fewer than their replicas.
    pub under_replicated: Vec<String>,
    /// `topic/partition` without a leader.
    pub offline: Vec<String>,
}

impl Health {
    /// Reads health from metadata.
    pub fn from_metadata(meta: &Metadata) -> Self {
        let mut h = Health {
            brokers: meta
                .brokers()
                .iter()
                .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
                .collect(),
            topics: 0,
            partitions: 0,
            under_replicated: Vec::new(),
            offline: Vec::new(),
        };
        h.brokers.sort();
        for t in meta.topics() {
            h.topics += 1;
            for p in t.partitions() {
                h.partitions += 1;
                if p.leader() < 0 {
                    h.offline.push(format!("{}/{}", t.name(), p.id()));
                } else if p.isr().len() < p.replicas().len() {
                    h.under_replicated.push(format!("{}/{}", t.name(), p.id()));
                }
            }
        }
        h
    }

    /// Ready: at least `brokers` brokers, nothing offline or under-replicated.
    pub fn is_ready(&self, brokers: usize) -> bool {
        self.brokers.len() >= brokers && self.offline.is_empty() && self.under_replicated.is_empty()
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} broker(s) [{}], {} topic(s), {} partition(s), {} under-replicated, {} offline",
            self.brokers.len(),
            self.brokers
                .iter()
                .map(|(id, a)| format!("{id}@{a}"))
                .collect::<Vec<_>>()
                .join(" "),
            self.topics,
            self.partitions,
            self.under_replicated.len(),
            self.offline.len()
        )
    }
}

/// Polls metadata until [`Health::is_ready`] holds for `brokers`, or `timeout` passes.
/// `progress` is called with each observed state that differs from the previous one.
/// Blocking: call from a blocking context.
pub fn wait_ready(
    admin: &Admin,
    brokers: usize,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Health, BusError> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    loop {
        let observed = match admin.metadata(Duration::from_secs(2)) {
            Ok(meta) => {
                let h = Health::from_metadata(&meta);
                if h.is_ready(brokers) {
                    return Ok(h);
                }
                h.summary()
            }
            Err(e) => format!("metadata: {e}"),
        };
        if observed != last {
            progress(&observed);
            last = observed;
        }
        if start.elapsed() > timeout {
            return Err(AdminError::NotReady {
                waited: start.elapsed(),
                last,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_merge_and_topic_wins() {
        let list = TopicList::parse(
            r#"
            [defaults]
            replication_factor = 3
            [defaults.config]
            "min.insync.replicas" = "2"
            "retention.ms" = "1000"
            [[topic]]
            name = "a"
            partitions = 6
            [topic.config]
            "retention.ms" = "5"
            [[topic]]
            name = "b"
            partitions = 1
            replication_factor = 1
            "#,
        )
        .unwrap();
        let a = list.get("a").unwrap();
        assert_eq!(a.replication_factor, 3);
        assert_eq!(a.config["retention.ms"], "5");
        assert_eq!(a.config["min.insync.replicas"], "2");
        assert_eq!(list.get("b").unwrap().replication_factor, 1);
    }

    #[test]
    fn duplicates_zero_partitions_and_unknown_keys_are_refused() {
        let dup = "[defaults]\nreplication_factor = 3\n[[topic]]\nname = \"a\"\npartitions = 1\n[[topic]]\nname = \"a\"\npartitions = 1\n";
        assert!(
            TopicList::parse(dup)
                .unwrap_err()
                .to_string()
                .contains("declared twice")
        );
        let zero = "[defaults]\nreplication_factor = 3\n[[topic]]\nname = \"a\"\npartitions = 0\n";
        assert!(
            TopicList::parse(zero)
                .unwrap_err()
                .to_string()
                .contains("at least one partition")
        );
        let typo = "[defaults]\nreplication_factor = 3\n[[topic]]\nname = \"a\"\npartitionz = 1\n";
        assert!(TopicList::parse(typo).is_err());
    }

    #[test]
    fn the_projects_topic_list_is_valid_and_co_partitioned() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/topics.toml");
        let list = TopicList::load(&path).unwrap();
        let order_and_payment: Vec<usize> = list
            .topics
            .iter()
            .filter(|t| {
                t.name.starts_with("order-service.")
                    || t.name.starts_with("payment-service.payment.")
            })
            .map(|t| t.partitions)
            .collect();
        assert_eq!(order_and_payment.len(), 4);
        assert!(
            order_and_payment.windows(2).all(|w| w[0] == w[1]),
            "order and payment topics must be co-partitioned"
        );
        for t in &list.topics {
            assert_eq!(t.replication_factor, 3, "{}", t.name);
            assert_eq!(
                t.config.get("min.insync.replicas").map(String::as_str),
                Some("2"),
                "{}",
                t.name
            );
        }
    }
}
