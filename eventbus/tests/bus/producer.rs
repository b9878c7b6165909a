//! Publishing: wire format, headers, acknowledgement; invalid events never reach Kafka.

use std::time::Duration;

use eventbus::codec::unframe;
use eventbus::{BusError, BusMetrics, PublishOptions, TraceParent};
use rdkafka::Message;
use schemas::{Event, OrderCreated, OrderLine};

use crate::common::{cluster, header, order, probe};

#[tokio::test]
async fn publish_writes_confluent_framed_avro_with_cloudevents_headers() {
    let cluster = cluster().await;
    let topic = cluster.create_topic("orders", 3).await.unwrap();
    let id = cluster
        .register_on_topic::<OrderCreated>(&topic)
        .await
        .unwrap();
    let bus = cluster.bus().unwrap();

    let event = order();
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let delivery = bus
        .producer()
        .publish_with(
            &event,
            PublishOptions::to_topic(&topic)
                .traceparent(trace)
                .header("x-tenant", "acme"),
        )
        .await
        .unwrap();
    // A second event without a trace context gets a new, well-formed one.
    let second = order();
    bus.producer()
        .publish_with(&second, PublishOptions::to_topic(&topic))
        .await
        .unwrap();

    let records = cluster.read_all(&topic, true).await.unwrap();
    assert_eq!(records.len(), 2);
    let first = records
        .iter()
        .find(|m| m.partition() == delivery.partition && m.offset() == delivery.offset)
        .expect("the acknowledged offset holds the record");
    assert_eq!(first.key(), Some(event.order_id.to_string().as_bytes()));

    let (schema_id, datum) = unframe(first.payload().unwrap()).unwrap();
    assert_eq!(schema_id, id, "the wire header carries the registered id");
    let writer = cluster
        .registry_client()
        .writer_schema(schema_id)
        .await
        .unwrap();
    assert_eq!(OrderCreated::from_avro(&writer, datum).unwrap(), event);

    let expect = [
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", event.event_id.to_string()),
        ("ce_source", "/eventbus-test".to_owned()),
        ("ce_type", "order.created".to_owned()),
        ("ce_time", "2025-01-01T00:00:00.000Z".to_owned()),
        ("content-type", "application/avro".to_owned()),
        ("traceparent", trace.to_owned()),
        ("x-tenant", "acme".to_owned()),
        ("ce_dataschema", cluster.registry_client().schema_url(id)),
    ];
    for (name, value) in expect {
        assert_eq!(
            header(first, name).as_deref(),
            Some(value.as_str()),
            "header {name}"
        );
    }
    let other = records
        .iter()
        .find(|m| m.key() == Some(second.order_id.to_string().as_bytes()))
        .unwrap();
    let generated = header(other, "traceparent").unwrap();
    assert!(
        TraceParent::parse(&generated).is_some(),
        "generated traceparent {generated}"
    );
    assert_ne!(generated, trace);

    assert_eq!(BusMetrics::count(&bus.metrics().produced, &[&topic]), 2);
    cluster.cleanup().await;
}

#[tokio::test]
async fn invalid_events_are_refused_before_anything_is_sent() {
    let cluster = cluster().await;
    let orders = cluster.create_topic("orders", 3).await.unwrap();
    let probes = cluster.create_topic("probes", 1).await.unwrap();
    cluster
        .register_on_topic::<OrderCreated>(&orders)
        .await
        .unwrap();
    cluster
        .register_on_topic::<crate::common::Probe>(&probes)
        .await
        .unwrap();
    let bus = cluster.bus().unwrap();

    // Domain rules: a negative quantity and a total that does not add up.
    let mut bad = order();
    bad.lines = vec![OrderLine::new("SKU-1", -3, 100)];
    bad.total_minor = 1;
    let err = bus
        .producer()
        .publish_with(&bad, PublishOptions::to_topic(&orders))
        .await
        .unwrap_err();
    let BusError::Invalid(violations) = &err else {
        panic!("expected Invalid, got {err}")
    };
    let fields: Vec<&str> = violations.0.iter().map(|v| v.field.as_str()).collect();
    assert!(fields.iter().any(|f| f.contains("quantity")), "{fields:?}");
    assert!(fields.contains(&"total_minor"), "{fields:?}");
    assert!(!err.is_retriable());

    // The schema: an enum symbol the schema does not have (the domain rules pass).
    let mut off_schema = probe("k1");
    off_schema.status = "LOST".into();
    let err = bus
        .producer()
        .publish_with(&off_schema, PublishOptions::to_topic(&probes))
        .await
        .unwrap_err();
    let BusError::Invalid(violations) = &err else {
        panic!("expected Invalid, got {err}")
    };
    assert!(violations.0[0].description.contains("Avro schema"), "{err}");

    // Nothing reached Kafka: every partition's high watermark is still 0, also after the
    // producer had time to send anything it might have queued.
    bus.producer().flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(cluster.high_watermark_total(&orders).await.unwrap(), 0);
    assert_eq!(cluster.high_watermark_total(&probes).await.unwrap(), 0);
    assert_eq!(
        BusMetrics::count(&bus.metrics().publish_failed, &[&orders, "invalid"]),
        1
    );
    assert_eq!(
        BusMetrics::count(&bus.metrics().publish_failed, &[&probes, "invalid"]),
        1
    );

    // The same producer still publishes valid events.
    bus.producer()
        .publish_with(&probe("k2"), PublishOptions::to_topic(&probes))
        .await
        .unwrap();
    assert_eq!(cluster.high_watermark_total(&probes).await.unwrap(), 1);
    cluster.cleanup().await;
}

#[tokio::test]
async fn publishing_an_unregistered_schema_fails_with_what_to_run() {
    let cluster = cluster().await;
    let topic = cluster.create_topic("orders", 1).await.unwrap();
    let bus = cluster.bus().unwrap();
    let err = bus
        .producer()
        .publish_with(&order(), PublishOptions::to_topic(&topic))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::NotRegistered { .. }), "{err}");
    assert!(err.to_string().contains("make schemas"), "{err}");
    assert_eq!(cluster.high_watermark_total(&topic).await.unwrap(), 0);
    cluster.cleanup().await;
}

#[tokio::test]
async fn publishing_to_a_missing_topic_is_a_setup_error() {
    let cluster = cluster().await;
    let topic = cluster.name("never-created");
    let mut config = cluster.bus_config();
    config.registry.auto_register = true;
    // How long librdkafka waits for a topic to appear (10 s in the producer); shortened
    // here to keep the test fast.
    config
        .kafka
        .extra
        .insert("topic.metadata.propagation.max.ms".into(), "2000".into());
    let bus = eventbus::EventBus::new(&config, BusMetrics::default()).unwrap();
    let err = bus
        .producer()
        .publish_with(&order(), PublishOptions::to_topic(&topic))
        .await
        .unwrap_err();
    // Auto topic creation is off on the cluster: the topic stays unknown, which is the
    // operator's to fix, not an outage to retry.
    assert!(matches!(err, BusError::Kafka { .. }), "{err}");
    assert_eq!(err.fault(), eventbus::Fault::Setup, "{err}");
    assert!(!err.is_retriable(), "{err}");
    let _ = cluster
        .registry_client()
        .delete_subject(&format!("{topic}-value"), true)
        .await;
    cluster.cleanup().await;
}
