//! The consumer runner: DLQ for bad records, retries with growing delays, fatal errors,
//! order under retries, at-least-once across a crash.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::codec::frame;
use eventbus::dlq;
use eventbus::headers::{HeaderList, now_ms};
use eventbus::{BusMetrics, Envelope, HandlerError, PublishOptions, RetryPolicy};
use rand::RngCore;
use rdkafka::Message;
use schemas::{Event, OrderCreated, OrderLine};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{
    cluster, consumer_config, header, header_names, log, order, order_topics, start, wait_until,
};

#[tokio::test]
async fn bad_records_land_in_the_dlq_with_all_headers_and_the_consumer_goes_on() {
    let cluster = cluster().await;
    let (topic, dlq_topic, group, schema_id) = order_topics(&cluster).await;
    let bus = cluster.bus().unwrap();
    let producer = bus.producer();
    let started_ms = now_ms();

    // 1. Random bytes (first byte forced away from the Confluent magic 0x00).
    let mut random = vec![0u8; 64];
    rand::rng().fill_bytes(&mut random);
    random[0] |= 0x80;
    let original_headers = HeaderList::new().with("x-origin", "fuzzer").with(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    producer
        .publish_raw(
            &topic,
            Some(b"key-random"),
            Some(&random),
            &original_headers,
        )
        .await
        .unwrap();
    // 2. Framed, but with a schema id the registry does not have.
    let unknown = frame(2_000_000_001, &order().to_avro().unwrap());
    producer
        .publish_raw(
            &topic,
            Some(&[0xff, 0xfe]),
            Some(&unknown),
            &HeaderList::new(),
        )
        .await
        .unwrap();
    // 3. Valid Avro under the right id, but breaking the domain rules (bad total).
    let mut broken = order();
    broken.total_minor += 1;
    let broken_value = frame(schema_id, &broken.to_avro().unwrap());
    producer
        .publish_raw(
            &topic,
            Some(b"key-broken"),
            Some(&broken_value),
            &HeaderList::new(),
        )
        .await
        .unwrap();
    // 4. A good event after them.
    let good = order();
    producer
        .publish_with(&good, PublishOptions::to_topic(&topic))
        .await
        .unwrap();

    let seen = log::<OrderCreated>();
    let handler = {
        let seen = seen.clone();
        move |env: Envelope<OrderCreated>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(env.event);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let runner = bus
        .consumer::<OrderCreated>(consumer_config(&group, &topic, &dlq_topic))
        .unwrap();
    let running = start(runner, handler);
    wait_until("the good event is handled", Duration::from_secs(30), || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(
        seen.lock().unwrap()[0],
        good,
        "the consumer went on past the bad records"
    );

    let dead = cluster
        .wait_for_records(&dlq_topic, 3, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(dead.len(), 3);
    let originals = cluster.read_all(&topic, true).await.unwrap();
    let classes: Vec<String> = dead
        .iter()
        .map(|m| header(m, dlq::ERROR_CLASS).unwrap())
        .collect();
    assert_eq!(classes, ["undecodable", "unknown-schema", "schema-invalid"]);

    for (d, o) in dead.iter().zip(&originals) {
        // Key and value byte for byte.
        assert_eq!(d.key(), o.key());
        assert_eq!(d.payload(), o.payload());
        assert_eq!(
            header(d, dlq::ORIGINAL_TOPIC).as_deref(),
            Some(topic.as_str())
        );
        assert_eq!(header(d, dlq::ORIGINAL_PARTITION).as_deref(), Some("0"));
        assert_eq!(
            header(d, dlq::ORIGINAL_OFFSET),
            Some(o.offset().to_string())
        );
        assert_eq!(
            header(d, dlq::ORIGINAL_TIMESTAMP),
            o.timestamp().to_millis().map(|t| t.to_string())
        );
        assert_eq!(
            header(d, dlq::CONSUMER_GROUP).as_deref(),
            Some(group.as_str())
        );
        assert_eq!(
            header(d, dlq::ATTEMPTS).as_deref(),
            Some("0"),
            "never reached the handler"
        );
        let message = header(d, dlq::ERROR_MESSAGE).unwrap();
        assert!(
            !message.is_empty()
                && message.len() <= dlq::MAX_ERROR_MESSAGE
                && !message.contains('\n')
        );
        let first: i64 = header(d, dlq::FIRST_FAILURE_MS).unwrap().parse().unwrap();
        let last: i64 = header(d, dlq::LAST_FAILURE_MS).unwrap().parse().unwrap();
        assert!(
            started_ms <= first && first <= last && last <= now_ms(),
            "{first} {last}"
        );
    }
    // Keys: UTF-8 as is, binary as hex.
    assert_eq!(
        header(&dead[0], dlq::ORIGINAL_KEY).as_deref(),
        Some("key-random")
    );
    assert_eq!(header(&dead[1], dlq::ORIGINAL_KEY).as_deref(), Some("fffe"));
    assert_eq!(
        header(&dead[1], dlq::ORIGINAL_KEY_ENCODING).as_deref(),
        Some("hex")
    );
    // The original record's own headers are kept, once.
    assert_eq!(header(&dead[0], "x-origin").as_deref(), Some("fuzzer"));
    assert_eq!(
        header_names(&dead[0])
            .iter()
            .filter(|n| *n == "traceparent")
            .count(),
        1
    );
    assert!(
        header(&dead[0], dlq::ERROR_MESSAGE)
            .unwrap()
            .contains("magic byte")
    );
    assert!(
        header(&dead[1], dlq::ERROR_MESSAGE)
            .unwrap()
            .contains("2000000001")
    );
    assert!(
        header(&dead[2], dlq::ERROR_MESSAGE)
            .unwrap()
            .contains("total_minor")
    );

    running.stop().await.unwrap();
    // Handled and dead-lettered records are committed: the group's offset is past all 4.
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, Some(4))]
    );
    let m = bus.metrics();
    assert_eq!(
        BusMetrics::count(&m.dead_lettered, &[&topic, "undecodable"]),
        1
    );
    assert_eq!(
        BusMetrics::count(&m.dead_lettered, &[&topic, "unknown-schema"]),
        1
    );
    assert_eq!(
        BusMetrics::count(&m.dead_lettered, &[&topic, "schema-invalid"]),
        1
    );
    assert_eq!(BusMetrics::count(&m.consumed, &[&topic]), 4);
    assert_eq!(BusMetrics::count(&m.handled, &[&topic]), 1);
    cluster.cleanup().await;
}

#[tokio::test]
async fn transient_failures_are_retried_with_growing_delays_until_success() {
    let cluster = cluster().await;
    let (topic, dlq_topic, group, _) = order_topics(&cluster).await;
    let bus = cluster.bus().unwrap();
    let event = order();
    bus.producer()
        .publish_with(&event, PublishOptions::to_topic(&topic))
        .await
        .unwrap();

    let attempts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        move |env: Envelope<OrderCreated>| {
            let attempts = attempts.clone();
            async move {
                attempts.lock().unwrap().push((env.attempt, Instant::now()));
                if env.attempt <= 3 {
                    Err(HandlerError::retriable(format!(
                        "payment provider busy (attempt {})",
                        env.attempt
                    )))
                } else {
                    Ok(())
                }
            }
        }
    };
    let mut config = consumer_config(&group, &topic, &dlq_topic);
    // Exact envelopes (no jitter) so that growth is measurable: 300, 600, 1200 ms.
    config.retry = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(300),
        max_delay: Duration::from_secs(10),
        jitter: eventbus::Jitter::None,
    };
    let running = start(bus.consumer::<OrderCreated>(config).unwrap(), handler);
    wait_until("the fourth attempt", Duration::from_secs(30), || {
        attempts.lock().unwrap().len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();

    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(
        attempts.iter().map(|a| a.0).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "exactly four attempts"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    for (gap, nominal) in gaps.iter().zip([300u64, 600, 1200]) {
        let nominal = Duration::from_millis(nominal);
        assert!(
            *gap >= nominal,
            "gap {gap:?} shorter than the backoff {nominal:?}"
        );
        assert!(
            *gap < nominal + Duration::from_millis(700),
            "gap {gap:?} much longer than {nominal:?}"
        );
    }
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "delays grow: {gaps:?}"
    );

    assert_eq!(
        cluster.high_watermark_total(&dlq_topic).await.unwrap(),
        0,
        "nothing dead-lettered"
    );
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, Some(1))]
    );
    assert_eq!(
        BusMetrics::count(&bus.metrics().retried, &[&topic, "handler-retriable"]),
        3
    );
    assert_eq!(BusMetrics::count(&bus.metrics().handled, &[&topic]), 1);
    cluster.cleanup().await;
}

#[tokio::test]
async fn retries_keep_partition_order_and_do_not_block_other_partitions() {
    let cluster = cluster().await;
    let topic = cluster.create_topic("orders", 2).await.unwrap();
    let dlq_topic = cluster.create_topic("svc.dlq", 1).await.unwrap();
    cluster
        .register_on_topic::<OrderCreated>(&topic)
        .await
        .unwrap();
    let group = cluster.group("svc");
    let bus = cluster.bus().unwrap();
    // Partition 0: A (fails twice), then A2. Partition 1: B.
    let (a, a2, b) = (order(), order(), order());
    for (event, partition) in [(&a, 0), (&a2, 0), (&b, 1)] {
        let options = PublishOptions {
            partition: Some(partition),
            ..PublishOptions::to_topic(&topic)
        };
        bus.producer().publish_with(event, options).await.unwrap();
    }
    let a_id = a.order_id;
    let handled = log::<(uuid::Uuid, Instant)>();
    let handler = {
        let handled = handled.clone();
        move |env: Envelope<OrderCreated>| {
            let handled = handled.clone();
            async move {
                if env.event.order_id == a_id && env.attempt <= 2 {
                    return Err(HandlerError::retriable("not yet"));
                }
                handled
                    .lock()
                    .unwrap()
                    .push((env.event.order_id, Instant::now()));
                Ok(())
            }
        }
    };
    let mut config = consumer_config(&group, &topic, &dlq_topic);
    config.retry.base_delay = Duration::from_millis(1_000);
    let running = start(bus.consumer::<OrderCreated>(config).unwrap(), handler);
    wait_until("all three handled", Duration::from_secs(30), || {
        handled.lock().unwrap().len() == 3
    })
    .await;
    running.stop().await.unwrap();
    let order_seen: Vec<uuid::Uuid> = handled.lock().unwrap().iter().map(|h| h.0).collect();
    let pos = |id| order_seen.iter().position(|x| *x == id).unwrap();
    assert!(
        pos(b.order_id) < pos(a.order_id),
        "B (other partition) flowed while A waited: {order_seen:?}"
    );
    assert!(
        pos(a.order_id) < pos(a2.order_id),
        "A2 waited for A (same partition): {order_seen:?}"
    );
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, Some(2)), (1, Some(1))]
    );
    cluster.cleanup().await;
}

#[tokio::test]
async fn fatal_errors_go_to_the_dlq_at_once_and_exhausted_retries_after_the_last_attempt() {
    let cluster = cluster().await;
    let (topic, dlq_topic, group, _) = order_topics(&cluster).await;
    let bus = cluster.bus().unwrap();
    let mut fatal = order();
    fatal.customer_id = "fatal".into();
    let mut flaky = order();
    flaky.customer_id = "flaky".into();
    bus.producer()
        .publish_with(&fatal, PublishOptions::to_topic(&topic))
        .await
        .unwrap();
    bus.producer()
        .publish_with(&flaky, PublishOptions::to_topic(&topic))
        .await
        .unwrap();

    let calls: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let handler = {
        let calls = calls.clone();
        move |env: Envelope<OrderCreated>| {
            let calls = calls.clone();
            async move {
                calls
                    .lock()
                    .unwrap()
                    .push((env.event.customer_id.clone(), env.attempt));
                if env.event.customer_id == "fatal" {
                    Err(HandlerError::fatal(std::io::Error::other(
                        "card number rejected by issuer",
                    )))
                } else {
                    Err(HandlerError::retriable("issuer timeout"))
                }
            }
        }
    };
    let mut config = consumer_config(&group, &topic, &dlq_topic);
    config.retry.max_attempts = 3;
    let running = start(bus.consumer::<OrderCreated>(config).unwrap(), handler);
    let dead = cluster
        .wait_for_records(&dlq_topic, 2, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().filter(|c| c.0 == "fatal").count(),
        1,
        "a fatal error is never retried: {calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.0 == "flaky")
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );

    assert_eq!(
        header(&dead[0], dlq::ERROR_CLASS).as_deref(),
        Some("handler-fatal")
    );
    assert_eq!(header(&dead[0], dlq::ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(
        header(&dead[0], dlq::ERROR_MESSAGE).as_deref(),
        Some("card number rejected by issuer")
    );
    assert_eq!(
        header(&dead[0], dlq::ORIGINAL_KEY),
        Some(fatal.order_id.to_string())
    );
    assert_eq!(
        header(&dead[0], "ce_id"),
        Some(fatal.event_id.to_string()),
        "CloudEvents headers kept"
    );
    assert_eq!(
        header(&dead[1], dlq::ERROR_CLASS).as_deref(),
        Some("retries-exhausted")
    );
    assert_eq!(header(&dead[1], dlq::ATTEMPTS).as_deref(), Some("3"));
    let first: i64 = header(&dead[1], dlq::FIRST_FAILURE_MS)
        .unwrap()
        .parse()
        .unwrap();
    let last: i64 = header(&dead[1], dlq::LAST_FAILURE_MS)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last - first >= 100 + 200 - 20,
        "first and last failure span the backoffs: {first} {last}"
    );
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, Some(2))]
    );
    cluster.cleanup().await;
}

/// The child side of `a_crash_before_commit_redelivers_the_record`.
#[tokio::test]
#[ignore = "child process of a_crash_before_commit_redelivers_the_record; runs only when spawned by it"]
async fn crash_child() {
    let (Ok(topic), Ok(group)) = (
        std::env::var("EVENTBUS_CRASH_TOPIC"),
        std::env::var("EVENTBUS_CRASH_GROUP"),
    ) else {
        panic!(
            "crash_child is started by a_crash_before_commit_redelivers_the_record with its topic and group"
        );
    };
    let cluster = cluster().await;
    let bus = cluster.bus().unwrap();
    let runner = bus
        .consumer::<OrderCreated>(consumer_config(&group, &topic, &format!("{topic}.dlq")))
        .unwrap();
    let handler = |env: Envelope<OrderCreated>| async move {
        // Tell the parent, then hang inside the handler: the offset is never stored.
        println!("HANDLED {} {}", env.partition, env.offset);
        std::future::pending::<()>().await;
        Ok::<(), HandlerError>(())
    };
    runner.run(handler, std::future::pending()).await.unwrap();
}

#[tokio::test]
async fn a_crash_before_commit_redelivers_the_record() {
    let cluster = cluster().await;
    let (topic, dlq_topic, group, _) = order_topics(&cluster).await;
    let bus = cluster.bus().unwrap();
    let event = order();
    let delivery = bus
        .producer()
        .publish_with(&event, PublishOptions::to_topic(&topic))
        .await
        .unwrap();

    // A consumer in a child process handles the record and is killed with SIGKILL before
    // anything is committed.
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "consumer::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EVENTBUS_CRASH_TOPIC", &topic)
        .env("EVENTBUS_CRASH_GROUP", &group)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true) // also if this test fails before killing it
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    let handled = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints "test consumer::crash_child ... " before the test's own
            // output, on the same line.
            if let Some(at) = line.find("HANDLED ") {
                return Some(line[at..].to_owned());
            }
            output.push(line);
        }
        None
    })
    .await;
    let Ok(handled) = handled else {
        panic!(
            "the child consumer handled nothing within 60 s; its output:\n{}",
            output.join("\n")
        )
    };
    assert_eq!(handled, Some(format!("HANDLED 0 {}", delivery.offset)));
    // Give the child's background auto-commit time to commit anything it (wrongly) stored.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    child.kill().await.unwrap(); // SIGKILL: no shutdown, no commit, no leaving the group
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, None)],
        "nothing committed"
    );

    // A new consumer in the same group gets the same record again.
    let seen = log::<(i64, OrderCreated)>();
    let handler = {
        let seen = seen.clone();
        move |env: Envelope<OrderCreated>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((env.offset, env.event));
                Ok::<(), HandlerError>(())
            }
        }
    };
    let running = start(
        bus.consumer::<OrderCreated>(consumer_config(&group, &topic, &dlq_topic))
            .unwrap(),
        handler,
    );
    // The dead member holds the partition until its session times out (6 s).
    wait_until("redelivery", Duration::from_secs(45), || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    running.stop().await.unwrap();
    assert_eq!(seen.lock().unwrap().clone(), vec![(delivery.offset, event)]);
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, Some(1))]
    );
    cluster.cleanup().await;
}

#[tokio::test]
async fn shutdown_finishes_the_handler_in_progress_and_commits_it() {
    let cluster = cluster().await;
    let (topic, dlq_topic, group, _) = order_topics(&cluster).await;
    let bus = cluster.bus().unwrap();
    let mut slow = order();
    slow.lines = vec![OrderLine::new("SLOW-1", 1, 100)];
    slow.total_minor = 100;
    bus.producer()
        .publish_with(&slow, PublishOptions::to_topic(&topic))
        .await
        .unwrap();

    let entered = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let handler = {
        let (entered, finished) = (entered.clone(), finished.clone());
        move |_env: Envelope<OrderCreated>| {
            let (entered, finished) = (entered.clone(), finished.clone());
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let running = start(
        bus.consumer::<OrderCreated>(consumer_config(&group, &topic, &dlq_topic))
            .unwrap(),
        handler,
    );
    wait_until("the handler started", Duration::from_secs(30), || {
        entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // Shut down while the handler is in the middle of its work: it is drained, then
    // the offset is committed synchronously before `run` returns.
    running.stop().await.unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, Some(1))]
    );
    cluster.cleanup().await;
}

#[tokio::test]
async fn consumer_lag_is_exported_from_librdkafka_statistics() {
    let cluster = cluster().await;
    let (topic, dlq_topic, group, _) = order_topics(&cluster).await;
    let mut config = cluster.bus_config();
    config.kafka.statistics_interval_ms = 500;
    let bus = eventbus::EventBus::new(&config, BusMetrics::default()).unwrap();
    for _ in 0..5 {
        bus.producer()
            .publish_with(&order(), PublishOptions::to_topic(&topic))
            .await
            .unwrap();
    }
    // A handler that accepts two records and then keeps retrying the third holds the
    // committed offset at 2 while the high watermark is 5: the lag must read 3.
    let handler = |env: Envelope<OrderCreated>| async move {
        if env.offset < 2 {
            Ok(())
        } else {
            Err(HandlerError::retriable("hold"))
        }
    };
    let mut consumer = consumer_config(&group, &topic, &dlq_topic);
    consumer.retry.max_attempts = 1_000;
    let running = start(bus.consumer::<OrderCreated>(consumer).unwrap(), handler);
    let lag = bus.metrics().consumer_lag.clone();
    let group_label = group.clone();
    let topic_label = topic.clone();
    wait_until(
        "a lag of 3 is reported",
        Duration::from_secs(30),
        move || {
            lag.get_metric_with_label_values(&[&group_label, &topic_label, "0"])
                .map(|g| g.get() == 3)
                .unwrap_or(false)
        },
    )
    .await;
    // Under the conventional name and labels, so the usual dashboards and rules apply;
    // and the assignment that preceded it was counted as a rebalance.
    let text = bus.metrics().render();
    let expected = format!(
        "kafka_consumergroup_lag{{consumergroup=\"{group}\",partition=\"0\",topic=\"{topic}\"}} 3"
    );
    assert!(text.contains(&expected), "{expected} not in\n{text}");
    let assigned =
        format!("eventbus_rebalances_total{{consumergroup=\"{group}\",kind=\"assigned\"}}");
    assert!(text.contains(&assigned), "{assigned} not in\n{text}");
    running.stop().await.unwrap();
    let text = bus.metrics().render();
    assert!(
        text.contains("eventbus_handler_duration_seconds_count"),
        "{text}"
    );
    cluster.cleanup().await;
}

#[tokio::test]
async fn a_backoff_longer_than_max_poll_interval_keeps_the_consumer_in_its_group() {
    let cluster = cluster().await;
    let (topic, dlq_topic, group, _) = order_topics(&cluster).await;
    let bus = cluster.bus().unwrap();
    bus.producer()
        .publish_with(&order(), PublishOptions::to_topic(&topic))
        .await
        .unwrap();

    let attempts = log::<u32>();
    let handler = {
        let attempts = attempts.clone();
        move |env: Envelope<OrderCreated>| {
            let attempts = attempts.clone();
            async move {
                attempts.lock().unwrap().push(env.attempt);
                if env.attempt == 1 {
                    Err(HandlerError::retriable("later"))
                } else {
                    Ok(())
                }
            }
        }
    };
    let mut config = consumer_config(&group, &topic, &dlq_topic);
    // The smallest max.poll.interval.ms librdkafka accepts here (>= session timeout), and
    // a backoff well beyond it: a consumer that stopped polling while it waits would be
    // thrown out of the group, its partition revoked, and the record delivered anew as
    // attempt 1.
    config.max_poll_interval_ms = 6_000;
    config.retry.base_delay = Duration::from_millis(9_000);
    config.retry.max_delay = Duration::from_millis(9_000);
    let running = start(bus.consumer::<OrderCreated>(config).unwrap(), handler);
    wait_until(
        "the retry after the long backoff",
        Duration::from_secs(40),
        || attempts.lock().unwrap().len() >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();
    assert_eq!(
        attempts.lock().unwrap().clone(),
        [1, 2],
        "no redelivery: the consumer stayed in its group"
    );
    assert_eq!(
        cluster.committed_offsets(&group, &topic).await.unwrap(),
        vec![(0, Some(1))]
    );
    cluster.cleanup().await;
}
