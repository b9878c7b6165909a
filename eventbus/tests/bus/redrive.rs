//! Redrive: a dead-lettered record replayed to its topic is processed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use eventbus::redrive::{self, Cli, Filter, REDRIVE_AT, REDRIVE_FROM};
use eventbus::{Envelope, ErrorClass, HandlerError, PublishOptions};
use rdkafka::Message;
use schemas::OrderCreated;

use crate::common::{
    cluster, consumer_config, header, header_names, log, order, start, wait_until,
};

#[tokio::test]
async fn a_redriven_record_is_processed() {
    let cluster = cluster().await;
    let topic = cluster.create_topic("orders", 1).await.unwrap();
    let dlq_topic = cluster.create_topic("svc.dlq", 2).await.unwrap();
    cluster
        .register_on_topic::<OrderCreated>(&topic)
        .await
        .unwrap();
    let group = cluster.group("svc");
    let bus = cluster.bus().unwrap();
    let event = order();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    bus.producer()
        .publish_with(
            &event,
            PublishOptions::to_topic(&topic)
                .traceparent(trace)
                .header("x-tenant", "acme"),
        )
        .await
        .unwrap();

    // The handler is broken (a bug, say) until "the fix is deployed".
    let broken = Arc::new(AtomicBool::new(true));
    let processed = log::<Envelope<OrderCreated>>();
    let handler = {
        let (broken, processed) = (broken.clone(), processed.clone());
        move |env: Envelope<OrderCreated>| {
            let (broken, processed) = (broken.clone(), processed.clone());
            async move {
                if broken.load(Ordering::SeqCst) {
                    return Err(HandlerError::fatal("missing tax rate for SKU-1"));
                }
                processed.lock().unwrap().push(env);
                Ok(())
            }
        }
    };
    let running = start(
        bus.consumer::<OrderCreated>(consumer_config(&group, &topic, &dlq_topic))
            .unwrap(),
        handler,
    );
    let dead = cluster
        .wait_for_records(&dlq_topic, 1, Duration::from_secs(30))
        .await
        .unwrap();
    let (dlq_partition, dlq_offset) = (dead[0].partition(), dead[0].offset());

    // `dlq list` shows it, filtered by class; another class shows nothing.
    let connection = [
        "--bootstrap",
        &cluster.kafka.bootstrap,
        "--registry",
        &cluster.registry.url,
    ];
    let mut out = Vec::new();
    let mut args = vec!["dlq"];
    args.extend(connection);
    args.extend(["list", &dlq_topic, "--class", "handler-fatal"]);
    Cli::try_parse_from(&args)
        .unwrap()
        .run(&mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!(
            "{dlq_partition}:{dlq_offset}\t{topic}\tkey={}",
            event.order_id
        )),
        "{text}"
    );
    assert!(
        text.contains("missing tax rate") && text.ends_with("1 record(s)\n"),
        "{text}"
    );
    let none = redrive::list(
        &cluster.kafka,
        &dlq_topic,
        &Filter {
            class: Some(ErrorClass::Undecodable),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert!(none.is_empty());

    // `dlq inspect` decodes the value through the registry.
    let mut out = Vec::new();
    let mut args = vec!["dlq"];
    args.extend(connection);
    let (p, o) = (dlq_partition.to_string(), dlq_offset.to_string());
    args.extend(["inspect", &dlq_topic, "--partition", &p, "--offset", &o]);
    Cli::try_parse_from(&args)
        .unwrap()
        .run(&mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("dlq.error.class: handler-fatal"), "{text}");
    assert!(
        text.contains(&format!("\"order_id\": \"{}\"", event.order_id)),
        "{text}"
    );
    assert!(
        text.contains("value (") && text.contains("hex): 00"),
        "{text}"
    );

    // The fix is deployed; replay that one record.
    broken.store(false, Ordering::SeqCst);
    let mut out = Vec::new();
    let mut args = vec!["dlq"];
    args.extend(connection);
    args.extend(["replay", &dlq_topic, "--partition", &p, "--offset", &o]);
    Cli::try_parse_from(&args)
        .unwrap()
        .run(&mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!("replayed {dlq_topic}/{p}/{o} -> {topic}/0/1")),
        "{text}"
    );

    wait_until(
        "the redriven record is processed",
        Duration::from_secs(30),
        || processed.lock().unwrap().len() == 1,
    )
    .await;
    running.stop().await.unwrap();
    let env = processed.lock().unwrap()[0].clone();
    assert_eq!(env.event, event);
    assert_eq!(env.offset, 1, "a new record on the original topic");
    assert_eq!(env.key_str(), Some(event.order_id.to_string().as_str()));
    assert_eq!(
        env.headers.get_str(REDRIVE_FROM),
        Some(format!("{dlq_topic}/{p}/{o}").as_str())
    );
    assert!(env.headers.get_str(REDRIVE_AT).is_some());
    assert_eq!(env.headers.get_str("traceparent"), Some(trace));
    assert_eq!(env.headers.get_str("x-tenant"), Some("acme"));
    assert_eq!(
        env.headers.get_str("ce_id"),
        Some(event.event_id.to_string().as_str())
    );

    // On the topic: original headers once each, no dlq.* headers.
    let replayed = &cluster.read_all(&topic, true).await.unwrap()[1];
    let names = header_names(replayed);
    assert!(names.iter().all(|n| !n.starts_with("dlq.")), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| *n == "ce_id").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        header(replayed, "ce_type").as_deref(),
        Some("order.created")
    );
    // Nothing more was dead-lettered.
    assert_eq!(cluster.high_watermark_total(&dlq_topic).await.unwrap(), 1);
    cluster.cleanup().await;
}

#[tokio::test]
async fn replay_selects_by_range_and_filter_and_dry_run_sends_nothing() {
    let cluster = cluster().await;
    let topic_a = cluster.create_topic("a", 1).await.unwrap();
    let topic_b = cluster.create_topic("b", 1).await.unwrap();
    let dlq_topic = cluster.create_topic("svc.dlq", 1).await.unwrap();
    let bus = cluster.bus().unwrap();
    // Build dead letters by hand: 2 from topic a (fatal, undecodable), 1 from topic b.
    for (i, (origin, class)) in [
        (&topic_a, ErrorClass::HandlerFatal),
        (&topic_a, ErrorClass::Undecodable),
        (&topic_b, ErrorClass::HandlerFatal),
    ]
    .into_iter()
    .enumerate()
    {
        let letter = eventbus::dlq::DeadLetter {
            topic: origin.clone(),
            partition: 0,
            offset: i as i64,
            timestamp_ms: Some(1),
            key: Some(format!("k{i}").into_bytes()),
            group: "g".into(),
            class,
            message: "m".into(),
            attempts: 1,
            first_failure_ms: 2,
            last_failure_ms: 3,
        };
        let headers = letter.headers(&eventbus::HeaderList::new().with("x-i", i.to_string()));
        bus.producer()
            .publish_raw(
                &dlq_topic,
                Some(format!("k{i}").as_bytes()),
                Some(b"v"),
                &headers,
            )
            .await
            .unwrap();
    }
    let fatal_from_a = Filter {
        class: Some(ErrorClass::HandlerFatal),
        original_topic: Some(topic_a.clone()),
        ..Filter::default()
    };
    let dry = redrive::replay(
        &cluster.kafka,
        bus.producer(),
        &dlq_topic,
        &fatal_from_a,
        true,
    )
    .await
    .unwrap();
    assert_eq!(dry.len(), 1);
    assert!(dry[0].delivery.is_none());
    assert_eq!(
        cluster.high_watermark_total(&topic_a).await.unwrap(),
        0,
        "a dry run sends nothing"
    );

    let range = Filter {
        from: Some(1),
        to: Some(2),
        ..Filter::default()
    };
    let done = redrive::replay(&cluster.kafka, bus.producer(), &dlq_topic, &range, false)
        .await
        .unwrap();
    assert_eq!(
        done.iter()
            .map(|r| (r.offset, r.target.clone()))
            .collect::<Vec<_>>(),
        [(1, topic_a.clone()), (2, topic_b.clone())]
    );
    let a = cluster.read_all(&topic_a, true).await.unwrap();
    let b = cluster.read_all(&topic_b, true).await.unwrap();
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].key(), Some(&b"k1"[..]));
    assert_eq!(header(&a[0], "x-i").as_deref(), Some("1"));
    assert_eq!(b[0].key(), Some(&b"k2"[..]));
    cluster.cleanup().await;
}
