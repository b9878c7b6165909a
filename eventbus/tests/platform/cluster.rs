//! The cluster and the registry are what they claim to be: three brokers with durable
//! settings, and a registry that enforces compatibility.

use std::time::Duration;

use eventbus::client::{self, GroupOptions, ProducerOptions, ReaderOptions};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::json;

use crate::{admin_settings, context};

fn registry() -> String {
    std::env::var("REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

#[test]
fn metadata_lists_three_brokers_and_declared_topics_are_fully_replicated() {
    let c = client::reader(&admin_settings(), &ReaderOptions::default(), context()).unwrap();
    let meta = c
        .fetch_metadata(Some("order-service.order.created"), Duration::from_secs(10))
        .unwrap();
    let mut ids: Vec<i32> = meta.brokers().iter().map(|b| b.id()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3], "the cluster has exactly nodes 1, 2, 3");
    let topic = &meta.topics()[0];
    assert!(
        topic.error().is_none(),
        "order-service.order.created exists: {:?}",
        topic.error()
    );
    assert_eq!(topic.partitions().len(), 6);
    for p in topic.partitions() {
        let mut replicas = p.replicas().to_vec();
        let mut isr = p.isr().to_vec();
        replicas.sort();
        isr.sort();
        assert_eq!(
            replicas,
            vec![1, 2, 3],
            "partition {} has 3 replicas",
            p.id()
        );
        assert_eq!(
            isr,
            replicas,
            "partition {} has all replicas in sync",
            p.id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_produced_with_acks_all_and_idempotence_is_read_back() {
    let topic = format!("test-platform-{}", uuid::Uuid::new_v4());
    let admin = client::admin(&admin_settings(), context()).unwrap();
    let res =
        admin
            .create_topics(
                [&NewTopic::new(&topic, 1, TopicReplication::Fixed(3))
                    .set("min.insync.replicas", "2")],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .unwrap();
    assert!(res[0].is_ok(), "{res:?}");

    // Idempotent, acks=all: what eventbus's constructor always sets.
    let producer =
        client::producer(&admin_settings(), &ProducerOptions::default(), context()).unwrap();
    let payload = format!("hello {}", uuid::Uuid::new_v4());
    let delivered = producer
        .send(
            FutureRecord::to(&topic).key("k1").payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(delivered.partition, 0);

    let mut options = GroupOptions::new(format!("test-platform-{}", uuid::Uuid::new_v4()));
    options.read_committed = false;
    options.tuning = client::tuning([("auto.offset.reset", "earliest".to_owned())]);
    let consumer = client::group_consumer(&admin_settings(), &options, context()).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.key(), Some(&b"k1"[..]));
    assert_eq!(msg.payload_view::<str>().unwrap().unwrap(), payload);
    assert_eq!(msg.offset(), delivered.offset);

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_stores_schemas_by_id_and_refuses_incompatible_versions() {
    let http = reqwest::Client::new();
    let base = format!("{}/apis/ccompat/v7", registry());
    let subject = format!("test-platform-{}-value", uuid::Uuid::new_v4());
    let v1 = json!({"type": "record", "name": "Probe", "namespace": "test",
        "fields": [{"name": "a", "type": "string"}]})
    .to_string();

    let resp = http
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": v1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "register v1: {}",
        resp.text().await.unwrap_or_default()
    );
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    let fetched: serde_json::Value = http
        .get(format!("{base}/schemas/ids/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fetched: serde_json::Value =
        serde_json::from_str(fetched["schema"].as_str().unwrap()).unwrap();
    assert_eq!(
        fetched,
        serde_json::from_str::<serde_json::Value>(&v1).unwrap()
    );

    // A new required field without a default cannot read data written with v1.
    let v2 = json!({"type": "record", "name": "Probe", "namespace": "test",
        "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "long"}]})
    .to_string();
    let resp = http
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": v2}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        409,
        "incompatible v2 must be refused: {}",
        resp.text().await.unwrap_or_default()
    );

    // ...while a compatible one (new field with a default) is accepted.
    let v2ok = json!({"type": "record", "name": "Probe", "namespace": "test",
        "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "long", "default": 0}]})
    .to_string();
    let resp = http
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": v2ok}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "compatible v2: {}",
        resp.text().await.unwrap_or_default()
    );

    let _ = http
        .delete(format!("{base}/subjects/{subject}"))
        .send()
        .await;
}
