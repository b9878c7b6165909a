//! The benchmarks' own scratch topics, replicated like the project's (RF 3,
//! `min.insync.replicas=2`, see `deploy/topics.toml`).
//!
//! Why: a baseline measured on a topic with weaker durability than the real ones would
//! flatter Kafka and make every ratio look worse than it is. One helper makes every
//! benchmark's floor topics the same way; each benchmark deletes its own afterwards.

use std::collections::BTreeMap;

use eventbus::KafkaSettings;
use eventbus::admin::{Admin, TopicList, TopicSpec};

/// Replication of the scratch topics: that of the project's topics.
pub const REPLICATION_FACTOR: i32 = 3;

/// `min.insync.replicas` of the scratch topics: that of the project's topics, so that
/// acks=all waits for two copies.
pub const MIN_INSYNC_REPLICAS: &str = "2";

/// The specification of scratch topics `names` with `partitions` partitions each.
pub fn specs(names: &[&str], partitions: usize) -> TopicList {
    TopicList {
        topics: names
            .iter()
            .map(|name| TopicSpec {
                name: (*name).to_owned(),
                partitions,
                replication_factor: REPLICATION_FACTOR,
                config: BTreeMap::from([(
                    "min.insync.replicas".to_owned(),
                    MIN_INSYNC_REPLICAS.to_owned(),
                )]),
            })
            .collect(),
    }
}

/// Creates scratch topics `names` (idempotent); returns the admin client to delete
/// them with. Callers add what the topics are for to the error.
pub async fn create(
    kafka: &KafkaSettings,
    names: &[&str],
    partitions: usize,
) -> anyhow::Result<Admin> {
    let admin = Admin::new(kafka)?;
    admin.apply(&specs(names, partitions)).await?;
    Ok(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_topics_are_as_durable_as_the_project_topics() {
        let project = TopicList::load(&crate::stack::workspace_root().join("deploy/topics.toml"))
            .expect("deploy/topics.toml");
        let created = project
            .topics
            .iter()
            .find(|t| t.name == "order-service.order.created")
            .expect("order.created is declared");
        let scratch = specs(&["a", "b"], 6);
        assert_eq!(scratch.topics.len(), 2);
        for t in &scratch.topics {
            assert_eq!(t.replication_factor, created.replication_factor);
            assert_eq!(
                t.config.get("min.insync.replicas"),
                created.config.get("min.insync.replicas")
            );
            assert_eq!(t.partitions, 6);
        }
    }
}
