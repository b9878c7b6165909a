//! The committed Strimzi resources (`deploy/strimzi/base/topics-and-users.json`) are
//! exactly what `busctl strimzi render` makes from `deploy/topics.toml` and
//! `deploy/acls.toml`, so the Kubernetes cluster cannot drift from the local one (every
//! environment's overlay builds on that file). Offline: no cluster needed.

use std::path::PathBuf;

use eventbus::acl::AclFile;
use eventbus::admin::TopicList;
use eventbus::strimzi::{Target, render};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

const COMMITTED: &str = "deploy/strimzi/base/topics-and-users.json";

#[test]
fn strimzi_committed_render_is_current() {
    let topics = TopicList::load(&repo_file("deploy/topics.toml")).unwrap();
    let acls = AclFile::load(&repo_file("deploy/acls.toml")).unwrap();
    let fresh = render(&topics, &acls, &Target::default());
    assert!(
        read(COMMITTED) == fresh,
        "{COMMITTED} is stale: regenerate it with \
         `cargo run -p eventbus --bin busctl -- strimzi render > {COMMITTED}`"
    );
}

#[test]
fn strimzi_render_follows_topics_and_acls() {
    let topics_text = read("deploy/topics.toml");
    let acls_text = read("deploy/acls.toml");
    let acls = AclFile::parse(&acls_text).unwrap();
    let base = render(
        &TopicList::parse(&topics_text).unwrap(),
        &acls,
        &Target::default(),
    );

    // One more partition for one topic: the render, and so the staleness check, changes.
    let grown = topics_text.replacen("partitions = 6", "partitions = 7", 1);
    assert_ne!(
        grown, topics_text,
        "topics.toml has no `partitions = 6` to change"
    );
    let changed = render(
        &TopicList::parse(&grown).unwrap(),
        &acls,
        &Target::default(),
    );
    assert_ne!(changed, base, "a changed partition count rendered the same");
    assert!(changed.contains("\"partitions\": 7"));

    // A dropped ACL operation changes it too.
    let fewer = acls_text.replacen(
        "operations = [\"Write\", \"Read\", \"Describe\"]",
        "operations = [\"Write\", \"Describe\"]",
        1,
    );
    assert_ne!(fewer, acls_text, "acls.toml has no such operations line");
    let changed = render(
        &TopicList::parse(&topics_text).unwrap(),
        &AclFile::parse(&fewer).unwrap(),
        &Target::default(),
    );
    assert_ne!(changed, base, "a dropped ACL operation rendered the same");

    // Every topic and every user becomes a resource, plus the super user's credentials.
    let list: serde_json::Value = serde_json::from_str(&base).unwrap();
    let items = list["items"].as_array().unwrap();
    let kinds = |k: &str| items.iter().filter(|i| i["kind"] == k).count();
    let declared = TopicList::parse(&topics_text).unwrap().topics.len();
    assert_eq!(kinds("KafkaTopic"), declared);
    assert_eq!(kinds("KafkaUser"), acls.users.len() + 1);
}
