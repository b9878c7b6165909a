//! The registry client against Apicurio's Confluent-compatible API.

use eventbus::registry::{SchemaRef, register_all};
use eventbus::{BusError, Fault};
use schemas::{Event, OrderCreated};

use crate::common::{Probe, cluster};

#[tokio::test]
async fn start_up_check_fails_fast_then_passes_after_registration() {
    let cluster = cluster().await;
    let registry = cluster.registry_client();
    let topic = cluster.name("orders");
    let wanted = SchemaRef::of_on_topic::<OrderCreated>(&topic);

    let err = registry.ensure(&wanted).await.unwrap_err();
    assert!(matches!(err, BusError::NotRegistered { .. }), "{err}");
    assert_eq!(err.fault(), Fault::Setup);
    let text = err.to_string();
    assert!(
        text.contains("make schemas") && text.contains("busctl schemas register"),
        "{text}"
    );

    let id = cluster
        .register_on_topic::<OrderCreated>(&topic)
        .await
        .unwrap();
    assert_eq!(
        registry
            .ensure_all(std::slice::from_ref(&wanted))
            .await
            .unwrap(),
        vec![id]
    );
    assert_eq!(registry.versions(&wanted.subject).await.unwrap(), vec![1]);
    let v = registry
        .subject_version(&wanted.subject, "latest")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v.version, v.id), (1, id));
    assert_eq!(registry.schema_text(id).await.unwrap(), v.schema);

    // Registering the same schema again changes nothing.
    assert_eq!(
        registry
            .register(&wanted.subject, OrderCreated::schema_text())
            .await
            .unwrap(),
        id
    );
    assert_eq!(registry.versions(&wanted.subject).await.unwrap(), vec![1]);
    cluster.cleanup().await;
}

#[tokio::test]
async fn incompatible_schema_is_reported_as_such() {
    let cluster = cluster().await;
    let registry = cluster.registry_client();
    // The subject holds the Probe schema; OrderCreated's cannot follow it under BACKWARD.
    let topic = cluster.name("probes");
    cluster.register_on_topic::<Probe>(&topic).await.unwrap();
    let subject = format!("{topic}-value");
    assert_eq!(
        registry.config(None).await.unwrap().as_deref(),
        Some("BACKWARD")
    );
    let compat = registry
        .test_compatibility(&subject, OrderCreated::schema_text())
        .await
        .unwrap();
    assert!(!compat.is_compatible);
    let wrong = SchemaRef {
        subject: subject.clone(),
        schema: OrderCreated::schema_text(),
    };
    let err = registry.ensure(&wrong).await.unwrap_err();
    assert!(matches!(err, BusError::Incompatible { .. }), "{err}");
    let err = registry
        .register(&subject, OrderCreated::schema_text())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Incompatible { .. }), "{err}");
    cluster.cleanup().await;
}

#[tokio::test]
async fn unknown_schema_id_is_a_data_fault() {
    let cluster = cluster().await;
    let err = cluster
        .registry_client()
        .writer_schema(2_000_000_000)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::UnknownSchema { id: 2_000_000_000 }),
        "{err}"
    );
    assert_eq!(err.fault(), Fault::Data);
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn register_all_registers_every_project_subject_idempotently() {
    let cluster = cluster().await;
    let registry = cluster.registry_client();
    // What `make schemas` does: safe to run any number of times.
    let first = register_all(registry).await.unwrap();
    let second = register_all(registry).await.unwrap();
    let subjects = schemas::registry_subjects();
    let versions: usize = subjects.iter().map(|s| s.versions.len()).sum();
    assert_eq!(first.len(), versions);
    assert!(
        second.iter().all(|r| !r.created),
        "second run created {second:?}"
    );
    assert_eq!(
        first.iter().map(|r| r.id).collect::<Vec<_>>(),
        second.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    for s in &subjects {
        let registered = registry.versions(&s.subject).await.unwrap();
        assert!(
            registered.len() >= s.versions.len(),
            "{}: {registered:?}",
            s.subject
        );
    }
    // Every event type of the project now passes its start-up check.
    registry
        .ensure_all(&[
            SchemaRef::of::<schemas::OrderCreated>(),
            SchemaRef::of::<schemas::OrderUpdated>(),
            SchemaRef::of::<schemas::PaymentCompleted>(),
            SchemaRef::of::<schemas::PaymentFailed>(),
            SchemaRef::of::<schemas::StockAdjusted>(),
            SchemaRef::of::<schemas::StockUpdated>(),
        ])
        .await
        .unwrap();
    registry
        .ensure_registered::<schemas::OrderCreated>()
        .await
        .unwrap();
}
