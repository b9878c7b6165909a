//! Strimzi resources from the same files the local cluster uses.
//!
//! On Kubernetes the Strimzi operator owns topics and users: a `KafkaTopic` per topic and a
//! `KafkaUser` per SCRAM principal (its password lands in a Secret of the same name, its
//! ACLs are applied by the User Operator). Writing those by hand would be a second list of
//! topics and ACLs that drifts from `deploy/topics.toml` and `deploy/acls.toml`, which
//! `busctl topics apply` and `make acls` apply to the local cluster. So they are rendered
//! from those two files (`busctl strimzi render`), committed under `deploy/strimzi/base/`,
//! and a test (`eventbus/tests/strimzi.rs`) fails when the committed file is stale. The
//! environments (`deploy/strimzi/{dev,staging,production}`) are kustomize overlays of that
//! base: they change sizes and retention, never which topics or ACLs exist.
//!
//! The output is one JSON document, a `v1` `List` (kubectl and kubeconform read JSON and
//! expand lists), built with `serde_json` rather than hand-formatted YAML. The super user
//! [`SUPER_USER`] gets a `KafkaUser` with credentials but no ACLs: it is listed in the
//! `Kafka` resource's `superUsers` (`deploy/strimzi/base/kafka.yaml`), as on the local
//! cluster.

use serde_json::{Value, json};

use crate::acl::{AclFile, ResourceType};
use crate::admin::TopicList;

/// The Strimzi API version the resources use (Strimzi 1.x serves only `v1`).
pub const API_VERSION: &str = "kafka.strimzi.io/v1";

/// The cluster name `deploy/strimzi/base/kafka.yaml` declares and the committed render uses.
pub const DEFAULT_CLUSTER: &str = "order-pipeline";

/// The namespace `deploy/strimzi/base/kafka.yaml` declares and the committed render uses.
pub const DEFAULT_NAMESPACE: &str = "order-pipeline";

/// The operator's principal: a super user in the `Kafka` resource, so it has no ACLs here.
pub const SUPER_USER: &str = "admin";

/// Where the resources go: the `Kafka` cluster they belong to and its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The `Kafka` resource's name (the `strimzi.io/cluster` label).
    pub cluster: String,
    /// The namespace of the cluster and of these resources.
    pub namespace: String,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            cluster: DEFAULT_CLUSTER.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

impl Target {
    fn metadata(&self, name: &str) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": { "strimzi.io/cluster": self.cluster },
        })
    }
}

/// One `KafkaTopic` per topic (partitions, replicas and configs as declared, defaults
/// merged), then one `KafkaUser` per user of the ACL file, after the super user's.
pub fn resources(topics: &TopicList, acls: &AclFile, target: &Target) -> Vec<Value> {
    let mut out = Vec::with_capacity(topics.topics.len() + acls.users.len() + 1);
    for t in &topics.topics {
        out.push(json!({
            "apiVersion": API_VERSION,
            "kind": "KafkaTopic",
            "metadata": target.metadata(&t.name),
            "spec": {
                "topicName": t.name,
                "partitions": t.partitions,
                "replicas": t.replication_factor,
                "config": t.config,
            },
        }));
    }
    if !acls.users.iter().any(|u| u.name == SUPER_USER) {
        out.push(json!({
            "apiVersion": API_VERSION,
            "kind": "KafkaUser",
            "metadata": target.metadata(SUPER_USER),
            "spec": { "authentication": { "type": "scram-sha-512" } },
        }));
    }
    for user in &acls.users {
        let rules: Vec<Value> = user
            .acls
            .iter()
            .map(|acl| {
                // Strimzi names the one cluster resource implicitly.
                let resource = if acl.resource.kind == ResourceType::Cluster {
                    json!({ "type": acl.resource.kind.as_str() })
                } else {
                    json!({
                        "type": acl.resource.kind.as_str(),
                        "name": acl.resource.name,
                        "patternType": acl.resource.pattern.as_str(),
                    })
                };
                let operations: Vec<&str> = acl.operations.iter().map(|o| o.as_str()).collect();
                json!({
                    "type": "allow",
                    "resource": resource,
                    "operations": operations,
                    "host": "*",
                })
            })
            .collect();
        out.push(json!({
            "apiVersion": API_VERSION,
            "kind": "KafkaUser",
            "metadata": target.metadata(&user.name),
            "spec": {
                "authentication": { "type": "scram-sha-512" },
                "authorization": { "type": "simple", "acls": rules },
            },
        }));
    }
    out
}

/// The committed file's text: [`resources`] as a pretty-printed `v1` `List`, with a final
/// newline.
pub fn render(topics: &TopicList, acls: &AclFile, target: &Target) -> String {
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": resources(topics, acls, target),
    });
    let mut text = serde_json::to_string_pretty(&list).expect("JSON values always serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_acls_carry_no_name_and_users_get_scram() {
        let topics = TopicList::parse(
            "[defaults]\nreplication_factor = 3\n[[topic]]\nname = \"t\"\npartitions = 2\n",
        )
        .unwrap();
        let acls = AclFile::parse(
            "[[user]]\nname = \"u\"\n[[user.acls]]\nresource = { type = \"cluster\", name = \"kafka-cluster\" }\noperations = [\"Describe\"]\n",
        )
        .unwrap();
        let items = resources(&topics, &acls, &Target::default());
        assert_eq!(items.len(), 3, "topic, admin, u: {items:?}");
        assert_eq!(items[0]["spec"]["partitions"], 2);
        assert_eq!(items[1]["metadata"]["name"], SUPER_USER);
        assert!(items[1]["spec"].get("authorization").is_none());
        let acl = &items[2]["spec"]["authorization"]["acls"][0];
        assert_eq!(acl["resource"], json!({ "type": "cluster" }));
        assert_eq!(items[2]["spec"]["authentication"]["type"], "scram-sha-512");
    }
}
