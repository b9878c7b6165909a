//! The secure default: every client authenticates over TLS with SCRAM-SHA-512, and each
//! service principal can do what `deploy/acls.toml` grants it and nothing else.
//!
//! Each principal connects with the client config file `make up` wrote for it
//! (`.run/secrets/<principal>.conf`). Allowed operations are proven without disturbing
//! a running pipeline:
//! - a *write* sends one record larger than the topic's `max.message.bytes`: the broker
//!   checks authorization first, so an authorized writer gets `MSG_SIZE_TOO_LARGE` and
//!   nothing is appended, while an unauthorized one gets `TOPIC_AUTHORIZATION_FAILED`;
//! - a *read* fetches from a partition with a private reader (no group joined);
//! - a *group* right is checked by fetching the group's committed offsets;
//! - a *transactional id* right by `init_transactions` on a fresh id under the prefix.
//!
//! On a cluster started with `SECURITY=plaintext` these tests are skipped, saying so.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eventbus::client::{self, GroupOptions, ProducerOptions, ReaderOptions, TransactionalOptions};
use eventbus::kafka::{KafkaError, RDKafkaErrorCode};
use eventbus::{BusMetrics, KafkaSettings, SecurityProtocol, TransactionalProducer};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::context;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A principal's settings, or `None` (with the reason printed) on a plaintext cluster.
fn principal(name: &str) -> Option<KafkaSettings> {
    let file: PathBuf = eventbus::testkit::principal_config(name);
    let mut settings = KafkaSettings {
        client_config_file: Some(file.clone()),
        statistics_interval_ms: 0,
        ..KafkaSettings::default()
    };
    let resolved = settings.resolved().unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `make up`, which writes one client config per principal)",
            file.display()
        )
    });
    if resolved.security.protocol == SecurityProtocol::Plaintext {
        eprintln!(
            "skipped: the local cluster runs with SECURITY=plaintext ({} says so); \
             the secure default is what CI tests",
            file.display()
        );
        return None;
    }
    // Services name their groups and clients after themselves (the ACL prefixes).
    settings.client_id = match name {
        "ingress" => "order-service",
        "payment" => "payment-service",
        "pipeline" => "inventory-service",
        "registry" => "apicurio-registry",
        other => other,
    }
    .to_owned();
    Some(settings)
}

fn code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

/// The write probe's size: more than any topic accepts, the dead-letter topics included.
const PROBE_BYTES: usize = eventbus::dlq::MAX_RECORD_BYTES + 500_000;

/// Writes one record bigger than the topic allows. `Ok(())` means the broker got past
/// authorization (and refused the size); `Err` carries any other error.
async fn write_probe(settings: &KafkaSettings, topic: &str) -> Result<(), KafkaError> {
    let options = ProducerOptions {
        tuning: client::tuning([
            // Let the client send what the broker will refuse (the client's default is
            // 1 MB; the dead-letter topics accept up to `dlq::MAX_RECORD_BYTES`).
            ("message.max.bytes", (2 * PROBE_BYTES).to_string()),
            ("message.timeout.ms", "20000".to_owned()),
        ]),
    };
    let producer = client::producer(settings, &options, context()).expect("producer");
    // Random bytes: nothing compresses them under the limit.
    let payload: Vec<u8> = (0..PROBE_BYTES as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sent = producer
        .send(
            FutureRecord::<[u8], [u8]>::to(topic).payload(&payload),
            TIMEOUT,
        )
        .await;
    match sent {
        Ok(delivery) => panic!(
            "{topic}: a {} byte record was accepted ({delivery:?}); the probe relies on the broker refusing it",
            payload.len()
        ),
        Err((e, _)) if code(&e) == Some(RDKafkaErrorCode::MessageSizeTooLarge) => Ok(()),
        Err((e, _)) => Err(e),
    }
}

/// Asks for the topic's metadata (needs Describe, which Read implies: librdkafka keeps a
/// denied fetch silent, the metadata answer names the denial), then reads from it until a
/// record, the end of the partition, or an error arrives.
fn read_probe(settings: &KafkaSettings, topic: &str) -> Result<(), KafkaError> {
    let reader = client::reader(
        settings,
        &ReaderOptions {
            read_committed: true,
            partition_eof: true,
            ..Default::default()
        },
        context(),
    )
    .expect("reader");
    let metadata = reader.fetch_metadata(Some(topic), TIMEOUT)?;
    if let Some(error) = metadata.topics().first().and_then(|t| t.error()) {
        return Err(KafkaError::MetadataFetch(error.into()));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("offset");
    reader.assign(&tpl)?;
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return Ok(()),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    panic!("{topic}: neither a record, the end, nor an error within {TIMEOUT:?}");
}

/// Checks the right to use `group`: an allowed group's committed offsets are fetched
/// (without joining it, so a running service is not disturbed); for a group expected to
/// be denied, a member subscribes and must get the broker's refusal (librdkafka retries
/// a refused offset lookup silently, but reports a refused join).
fn group_probe(settings: &KafkaSettings, group: &str, topic: &str) -> Result<(), KafkaError> {
    group_offsets(settings, group, topic)
}

fn group_join_probe(settings: &KafkaSettings, group: &str, topic: &str) -> Result<(), KafkaError> {
    let consumer = client::group_consumer(settings, &GroupOptions::new(group), context())
        .expect("group consumer");
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + TIMEOUT;
    tokio::runtime::Handle::current().block_on(async {
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
                Ok(Err(e)) => return Err(e),
                Ok(Ok(_)) => return Ok(()),
                Err(_) if !consumer.assignment()?.elements().is_empty() => return Ok(()),
                Err(_) => {}
            }
        }
        panic!("{group}: neither a refusal nor an assignment within {TIMEOUT:?}");
    })
}

fn group_offsets(settings: &KafkaSettings, group: &str, topic: &str) -> Result<(), KafkaError> {
    let reader = client::reader(
        settings,
        &ReaderOptions {
            group_id: Some(group.to_owned()),
            ..Default::default()
        },
        context(),
    )
    .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    reader.committed_offsets(tpl, TIMEOUT).map(|_| ())
}

/// `init_transactions` on a fresh transactional id `<prefix>-acl-test-<uuid>`.
fn txn_probe(settings: &KafkaSettings, prefix: &str) -> Result<(), KafkaError> {
    let producer = TransactionalProducer::new(
        settings,
        &TransactionalOptions {
            transactional_id: format!("{prefix}-acl-test-{}", uuid::Uuid::new_v4().simple()),
            transaction_timeout: Duration::from_secs(10),
            call_timeout: TIMEOUT,
            tuning: client::Tuning::new(),
        },
        "acl-test",
        BusMetrics::default(),
    )
    .expect("transactional producer");
    producer.init().map_err(|e| e.kafka_error().clone())
}

fn assert_allowed(what: &str, result: Result<(), KafkaError>) {
    if let Err(e) = result {
        panic!("{what} must be allowed, got: {e}");
    }
}

fn assert_denied(what: &str, expected: RDKafkaErrorCode, result: Result<(), KafkaError>) {
    match result {
        Ok(()) => panic!("{what} must be refused with {expected:?}, but it was allowed"),
        Err(e) => assert_eq!(
            code(&e),
            Some(expected),
            "{what} must be refused with {expected:?}, got: {e}"
        ),
    }
}

use RDKafkaErrorCode::{
    GroupAuthorizationFailed as GROUP_DENIED, TopicAuthorizationFailed as TOPIC_DENIED,
    TransactionalIdAuthorizationFailed as TXN_DENIED,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_writes_only_the_order_and_adjustment_topics() {
    let Some(ingress) = principal("ingress") else {
        return;
    };
    for topic in [
        "order-service.order.created",
        "order-service.order.updated",
        "inventory-service.stock.adjusted",
    ] {
        assert_allowed(
            &format!("ingress writing {topic}"),
            write_probe(&ingress, topic).await,
        );
    }
    for topic in [
        "payment-service.payment.completed",
        "inventory-service.stock.updated",
        "payment-service.dlq",
    ] {
        assert_denied(
            &format!("ingress writing {topic}"),
            TOPIC_DENIED,
            write_probe(&ingress, topic).await,
        );
    }
    let settings = ingress.clone();
    tokio::task::spawn_blocking(move || {
        assert_denied(
            "ingress reading payment-service.payment.completed",
            TOPIC_DENIED,
            read_probe(&settings, "payment-service.payment.completed"),
        );
        assert_denied(
            "ingress using payment's group",
            GROUP_DENIED,
            group_join_probe(&settings, "payment-service", "order-service.order.created"),
        );
        assert_denied(
            "ingress using a transactional id",
            TXN_DENIED,
            txn_probe(&settings, "payment-service"),
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_reads_orders_and_writes_its_outcomes_in_its_own_transactions() {
    let Some(payment) = principal("payment") else {
        return;
    };
    for topic in [
        "payment-service.payment.completed",
        "payment-service.payment.failed",
        "payment-service.dlq",
    ] {
        assert_allowed(
            &format!("payment writing {topic}"),
            write_probe(&payment, topic).await,
        );
    }
    for topic in [
        "order-service.order.created",
        "inventory-service.stock.updated",
    ] {
        assert_denied(
            &format!("payment writing {topic}"),
            TOPIC_DENIED,
            write_probe(&payment, topic).await,
        );
    }
    let settings = payment.clone();
    tokio::task::spawn_blocking(move || {
        assert_allowed(
            "payment reading order.created",
            read_probe(&settings, "order-service.order.created"),
        );
        assert_denied(
            "payment reading the pipeline's progress topic",
            TOPIC_DENIED,
            read_probe(&settings, "inventory-service.progress"),
        );
        assert_allowed(
            "payment's own group",
            group_probe(&settings, "payment-service", "order-service.order.created"),
        );
        assert_denied(
            "payment using the pipeline's group",
            GROUP_DENIED,
            group_join_probe(
                &settings,
                "inventory-service",
                "order-service.order.created",
            ),
        );
        assert_allowed(
            "payment's transactional ids",
            txn_probe(&settings, "payment-service"),
        );
        assert_denied(
            "payment using the pipeline's transactional ids",
            TXN_DENIED,
            txn_probe(&settings, "inventory-service"),
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_reads_its_inputs_and_writes_only_its_outputs() {
    let Some(pipeline) = principal("pipeline") else {
        return;
    };
    for topic in [
        "inventory-service.stock.updated",
        "inventory-service.progress",
        "inventory-service.dlq",
    ] {
        assert_allowed(
            &format!("pipeline writing {topic}"),
            write_probe(&pipeline, topic).await,
        );
    }
    for topic in [
        "order-service.order.created",
        "payment-service.payment.completed",
    ] {
        assert_denied(
            &format!("pipeline writing {topic}"),
            TOPIC_DENIED,
            write_probe(&pipeline, topic).await,
        );
    }
    let settings = pipeline.clone();
    tokio::task::spawn_blocking(move || {
        for topic in [
            "order-service.order.created",
            "order-service.order.updated",
            "payment-service.payment.completed",
            "payment-service.payment.failed",
            "inventory-service.stock.adjusted",
            "inventory-service.progress",
        ] {
            assert_allowed(
                &format!("pipeline reading {topic}"),
                read_probe(&settings, topic),
            );
        }
        assert_denied(
            "pipeline reading payment's DLQ",
            TOPIC_DENIED,
            read_probe(&settings, "payment-service.dlq"),
        );
        assert_allowed(
            "pipeline's transactional ids",
            txn_probe(&settings, "inventory-service"),
        );
        assert_denied(
            "pipeline using payment's transactional ids",
            TXN_DENIED,
            txn_probe(&settings, "payment-service"),
        );
        assert_denied(
            "pipeline using payment's group",
            GROUP_DENIED,
            group_join_probe(&settings, "payment-service", "order-service.order.created"),
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_touches_only_its_storage() {
    let Some(registry) = principal("registry") else {
        return;
    };
    assert_denied(
        "registry writing order.created",
        TOPIC_DENIED,
        write_probe(&registry, "order-service.order.created").await,
    );
    let settings = registry.clone();
    tokio::task::spawn_blocking(move || {
        assert_allowed(
            "registry reading kafkasql-journal",
            read_probe(&settings, "kafkasql-journal"),
        );
        assert_denied(
            "registry reading order.created",
            TOPIC_DENIED,
            read_probe(&settings, "order-service.order.created"),
        );
    })
    .await
    .unwrap();
}

/// Metadata through `settings`: `Ok(brokers)`, or the client's global errors (the
/// reasons librdkafka gives, which say *why* it could not connect).
fn metadata(settings: &KafkaSettings) -> Result<usize, String> {
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = errors.clone();
    let context = context().with_error_hook(std::sync::Arc::new(move |e, reason| {
        sink.lock().unwrap().push(format!("{e}: {reason}"));
    }));
    let reader = client::reader(settings, &ReaderOptions::default(), context).expect("reader");
    let result = reader.fetch_metadata(None, Duration::from_secs(10));
    result.map(|m| m.brokers().len()).map_err(|e| {
        // Polling serves the client's queued error events to the context.
        for _ in 0..20 {
            let _ = reader.poll(Duration::from_millis(100));
        }
        format!("{e}; client errors: {}", errors.lock().unwrap().join(" | "))
    })
}

#[test]
fn plaintext_clients_wrong_passwords_and_untrusted_cas_are_refused() {
    let Some(admin) = principal("admin") else {
        return;
    };
    // The positive control: the right credentials and CA work, so the refusals below
    // are about them and not about a cluster that is down.
    assert_eq!(metadata(&admin).expect("admin connects"), 3);
    let resolved = admin.resolved().unwrap();

    let plaintext = KafkaSettings {
        bootstrap: resolved.bootstrap.clone(),
        statistics_interval_ms: 0,
        ..KafkaSettings::default()
    };
    let e = metadata(&plaintext).expect_err("a plaintext, unauthenticated client must be refused");
    // The TLS listener drops a connection that speaks plaintext Kafka: every broker
    // stays unreachable for this client while the admin above reaches all three.
    assert!(
        e.contains("BrokerTransportFailure") && e.contains("brokers are down"),
        "a plaintext client is cut off at the TLS listener: {e}"
    );

    let mut wrong_password = resolved.clone();
    wrong_password.security.password = Some("not-the-password".to_owned().into());
    let e = metadata(&wrong_password).expect_err("a wrong password must be refused");
    assert!(
        e.contains("SASL authentication error") && e.contains("invalid credentials"),
        "a wrong password fails SCRAM authentication: {e}"
    );

    // A client that trusts only the public CAs (not the local one) must refuse the
    // brokers' certificate.
    let mut untrusted = resolved.clone();
    let system_cas = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    let other_ca = if system_cas.is_file() {
        system_cas
    } else {
        let dir = std::env::temp_dir().join(format!("other-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=some other CA", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("ca.crt"))
            .status()
            .expect("openssl");
        assert!(status.success());
        dir.join("ca.crt")
    };
    untrusted.security.ca_location = Some(other_ca);
    let e = metadata(&untrusted).expect_err("a client that does not trust the local CA must fail");
    assert!(
        e.contains("certificate verify failed"),
        "the brokers' certificate is refused by a client that does not trust the local CA: {e}"
    );
}
