//! Against the real cluster: records that cannot be settled go to the DLQ, in the
//! batch's transaction, with eventbus's `dlq.*` headers, and the service goes on with
//! the orders after them. Orders whose gateway calls kept failing are dead-lettered as
//! `retries-exhausted`, and a redrive of them settles them once the gateway is back.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Service, metric};
use eventbus::codec::frame;
use eventbus::dlq::{self, DeadLetter};
use eventbus::headers::HeaderList;
use eventbus::kafka::{Message, OwnedMessage};
use eventbus::redrive;
use eventbus::{ErrorClass, Jitter, RetryPolicy};
use payment::SimulatedGateway;
use schemas::{Event, OrderCreated, OrderLine};

async fn wait_dlq(env: &common::Env, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = env.dlq().await;
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} dead letters",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlq_and_the_service_goes_on() {
    // One partition: a total order, so "the orders after the poison" is exact.
    let env = common::setup(1).await;
    let mut config = env.config();
    config.gateway.unsupported_currencies = vec!["JPY".to_owned()];
    config.gateway.transient_failure_rate = 0.0;
    let gateway = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());

    let before = common::orders(5, 21);
    let after = common::orders(5, 22);
    env.publish(&before).await;
    // 1. Random bytes: not the Confluent wire format.
    let poison: Vec<u8> = (0..64u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(0x91))
        .collect();
    env.publish_raw(b"poison-key", &poison).await;
    // 2. Framed, but with a schema id the registry does not know.
    let valid = common::orders(1, 23).remove(0);
    let unknown_schema = frame(0x7fff_fff0, &valid.to_avro().unwrap());
    env.publish_raw(b"unknown-schema", &unknown_schema).await;
    // 3. Decodes, but breaks the domain rules (the total does not match the lines);
    //    written byte by byte because a well-behaved producer refuses it.
    let mut invalid = common::order("customer-1", vec![OrderLine::new("SKU-1", 1, 100)], "EUR");
    invalid.total_minor = 999;
    let subject_id = env
        .cluster
        .registry_client()
        .id_for(
            &format!("{}-value", env.topics.order_created),
            OrderCreated::schema_text(),
        )
        .await
        .unwrap();
    let invalid_value = frame(subject_id, &invalid.to_avro().unwrap());
    env.publish_raw(invalid.order_id.to_string().as_bytes(), &invalid_value)
        .await;
    // 4. A valid order the gateway refuses as a bad request (fatal, not a decline).
    let yen = common::order("customer-2", vec![OrderLine::new("SKU-1", 1, 100)], "JPY");
    env.publish(std::slice::from_ref(&yen)).await;
    env.publish(&after).await;

    let service = Service::start(config.clone(), gateway.clone()).await;
    let outcomes = env.wait_outcomes(10, Duration::from_secs(90)).await;
    let dead = wait_dlq(&env, 4, Duration::from_secs(30)).await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;
    let dead_lettered = metric(service.addr, "eventbus_dead_lettered_total").await;
    service.stop().await.unwrap();

    let mut settled = before.clone();
    settled.extend(after.iter().cloned());
    outcomes.assert_exactly_once(&settled, &config.gateway, &HashMap::new());
    assert_eq!(env.dlq().await.len(), 4);
    assert_eq!(dead_lettered, 4.0);

    let letters: Vec<(DeadLetter, &OwnedMessage)> = dead
        .iter()
        .map(|m| {
            let h = HeaderList::from_headers(m.headers());
            (DeadLetter::from_headers(&h).expect("dlq headers"), m)
        })
        .collect();
    let class_of = |key: &[u8]| {
        letters
            .iter()
            .find(|(l, _)| l.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no dead letter for key {}", String::from_utf8_lossy(key)))
    };
    let (l, m) = class_of(b"poison-key");
    assert_eq!(l.class, ErrorClass::Undecodable);
    assert_eq!(
        m.payload(),
        Some(poison.as_slice()),
        "value kept byte for byte"
    );
    assert_eq!(m.key(), Some(&b"poison-key"[..]));
    assert_eq!(l.topic, env.topics.order_created);
    assert_eq!(
        (l.partition, l.offset),
        (0, 5),
        "the sixth record of the partition"
    );
    assert_eq!(l.group, config.group_id());
    assert_eq!(l.attempts, 0);
    let (l, m) = class_of(b"unknown-schema");
    assert_eq!(l.class, ErrorClass::UnknownSchema);
    assert_eq!(m.payload(), Some(unknown_schema.as_slice()));
    let (l, _) = class_of(invalid.order_id.to_string().as_bytes());
    assert_eq!(l.class, ErrorClass::SchemaInvalid);
    assert!(l.message.contains("total_minor"), "{}", l.message);
    let (l, _) = class_of(yen.order_id.to_string().as_bytes());
    assert_eq!(l.class, ErrorClass::HandlerFatal);
    assert_eq!(l.attempts, 1);
    assert!(l.message.contains("JPY"), "{}", l.message);
    for (_, m) in &letters {
        let h = HeaderList::from_headers(m.headers());
        assert!(h.get_str(dlq::ERROR_MESSAGE).is_some());
        assert!(h.get_str(dlq::FIRST_FAILURE_MS).is_some());
    }
    println!(
        "4 dead letters ({:?}), 10 orders around them settled",
        letters
            .iter()
            .map(|(l, _)| l.class.as_str())
            .collect::<Vec<_>>()
    );
    env.cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_dead_lettered_and_a_redrive_settles_them() {
    let env = common::setup(1).await;
    let mut config = env.config();
    config.gateway.transient_failure_rate = 1.0;
    config.settle.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(10),
        jitter: Jitter::Full,
    };
    let orders: Vec<_> = common::orders(20, 31)
        .into_iter()
        .filter(|o| {
            config
                .gateway
                .verdict(&payment::ChargeRequest::for_order(o))
                .is_none()
        })
        .take(3)
        .collect();
    env.publish(&orders).await;

    // The gateway is down for good: every order is dead-lettered after 3 attempts.
    let down = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());
    let service = Service::start(config.clone(), down.clone()).await;
    let dead = wait_dlq(&env, 3, Duration::from_secs(90)).await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;
    service.stop().await.unwrap();
    assert_eq!(
        env.outcomes().await.len(),
        0,
        "no outcome for an unsettled order"
    );
    for m in &dead {
        let l = DeadLetter::from_headers(&HeaderList::from_headers(m.headers())).unwrap();
        assert_eq!(l.class, ErrorClass::RetriesExhausted);
        assert_eq!(l.attempts, 3);
        assert!(l.first_failure_ms <= l.last_failure_ms);
    }
    for o in &orders {
        assert_eq!(down.requests(&o.order_id.to_string()), 3);
        assert_eq!(down.charges(), 0);
    }

    // The gateway is back; an operator redrives the DLQ with eventbus's tool. The
    // orders were never settled, so the redriven records are settled now, once.
    // (Done here the way redrive::replay does it: original key and value, replay
    // headers, to the original topic; but from the committed dead letters, whereas
    // redrive reads the DLQ read_uncommitted.)
    for m in &dead {
        let record = redrive::DlqRecord::from_message(m);
        let letter = record.letter.clone().unwrap();
        env.producer
            .publish_raw(
                &letter.topic,
                record.key.as_deref(),
                record.value.as_deref(),
                &record.replay_headers(eventbus::headers::now_ms()),
            )
            .await
            .unwrap();
    }
    config.gateway.transient_failure_rate = 0.0;
    let up = Arc::new(SimulatedGateway::new(config.gateway.clone()).unwrap());
    let service = Service::start(config.clone(), up.clone()).await;
    let outcomes = env.wait_outcomes(3, Duration::from_secs(90)).await;
    env.wait_caught_up(&config.group_id(), Duration::from_secs(30))
        .await;
    service.stop().await.unwrap();
    outcomes.assert_exactly_once(&orders, &config.gateway, &HashMap::new());
    assert_eq!(up.charges(), 3);
    assert_eq!(env.dlq().await.len(), 3, "nothing new dead-lettered");
    env.cluster.cleanup().await;
}
