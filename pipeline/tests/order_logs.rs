//! The job's per-order log lines against the real cluster: with `pipeline::orders=debug`,
//! the JSON lines (servicekit's formatter, as the services write them) of an order's
//! records carry `order_id`, `topic`, `partition`, `offset`, `epoch` and the trace its
//! producer sent, continued as a child span; the commit of its new state is logged
//! with the same order id and epoch. A record whose `traceparent` is malformed starts a
//! new trace instead of inheriting garbage.
//!
//! This file is its own test binary because it installs the global log subscriber.

mod support;

use std::time::Duration;

use eventbus::PublishOptions;
use eventbus::codec::frame;
use eventbus::headers::{HeaderList, TraceParent};
use schemas::{Event, OrderCreated, OrderLine, PaymentCompleted, order_total};
use serde_json::Value;
use servicekit::telemetry::CapturedLines;
use support::*;
use uuid::Uuid;

fn created(order_id: Uuid) -> OrderCreated {
    let lines = vec![OrderLine::new("LOG-SKU", 2, 150)];
    OrderCreated {
        event_id: Uuid::new_v4(),
        order_id,
        customer_id: "customer-logs".into(),
        currency: "EUR".into(),
        total_minor: order_total(&lines).unwrap_or_default(),
        lines,
        created_at: 1_764_000_000_000,
        channel: None,
    }
}

/// The line with `message` about `order_id` (and `event`, if given).
fn line<'a>(lines: &'a [Value], message: &str, order_id: Uuid, event: &str) -> Option<&'a Value> {
    lines.iter().find(|l| {
        l["message"] == message
            && l["order_id"] == order_id.to_string()
            && (event.is_empty() || l["event"] == event)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_lines_carry_the_record_and_continue_its_trace() -> Result<(), BoxError> {
    let captured = CapturedLines::install("inventory-service", "warn,pipeline::orders=debug")?;
    let env = Env::new(3).await?;
    let result = run(&env, &captured).await;
    env.cleanup().await;
    result
}

async fn run(env: &Env, captured: &CapturedLines) -> Result<(), BoxError> {
    let (http, grpc) = (free_addr(), free_addr());
    let config = env.config(1, http, grpc);
    let shutdown = pipeline::Shutdown::new();
    let job = {
        let shutdown = shutdown.clone();
        tokio::task::spawn_blocking(move || pipeline::run(config, shutdown))
    };
    let bus = env.cluster.bus()?;
    let producer = bus.producer();

    // Order A: created and paid, both hops of one trace (as ingress and payment write it).
    let traced = Uuid::new_v4();
    let root = TraceParent::generate();
    let payment_hop = root.child();
    let a_created = producer
        .publish_with(
            &created(traced),
            PublishOptions::to_topic(env.names.inputs[0].clone()).traceparent(&root.to_string()),
        )
        .await?;
    let paid = PaymentCompleted {
        event_id: Uuid::new_v4(),
        order_id: traced,
        payment_id: Uuid::new_v4(),
        amount_minor: 300,
        currency: "EUR".into(),
        completed_at: 1_764_000_000_100,
    };
    let a_paid = producer
        .publish_with(
            &paid,
            PublishOptions::to_topic(env.names.inputs[2].clone())
                .traceparent(&payment_hop.to_string()),
        )
        .await?;
    // Order B: a valid record whose traceparent is garbage.
    let untraced = Uuid::new_v4();
    let mut headers = HeaderList::new();
    headers.push("traceparent", "00-not-a-trace-01");
    let value = frame(env.order_created_id, &created(untraced).to_avro()?);
    let b_created = producer
        .publish_raw(
            &env.names.inputs[0],
            Some(untraced.to_string().as_bytes()),
            Some(&value),
            &headers,
        )
        .await?;

    wait_caught_up(env, http, Duration::from_secs(90)).await?;
    let committed_paid = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let lines = captured.lines();
            if line(&lines, "order state committed", traced, "").is_some_and(|_| {
                lines.iter().any(|l| {
                    l["message"] == "order state committed"
                        && l["order_id"] == traced.to_string()
                        && l["status"] == "PAID"
                })
            }) {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    shutdown.trigger();
    job.await??;
    let lines = captured.lines();
    let all = || {
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        committed_paid,
        "the PAID commit of order A is logged:\n{}",
        all()
    );

    let trace_id = hex::encode(root.trace_id);
    for (event, delivery, topic, parent) in [
        ("order.created", &a_created, &env.names.inputs[0], &root),
        (
            "payment.completed",
            &a_paid,
            &env.names.inputs[2],
            &payment_hop,
        ),
    ] {
        let l = line(&lines, "order record ingested", traced, event)
            .ok_or_else(|| format!("no {event} line for order A:\n{}", all()))?;
        assert_eq!(l["level"], "DEBUG");
        assert_eq!(l["target"], "pipeline::orders");
        assert_eq!(l["service"], "inventory-service");
        assert_eq!(l["topic"], topic.as_str(), "{l}");
        assert_eq!(l["partition"], delivery.partition, "{l}");
        assert_eq!(l["offset"], delivery.offset, "{l}");
        assert_eq!(
            l["trace_id"], trace_id,
            "the producer's trace continues: {l}"
        );
        assert_eq!(
            l["parent_span_id"],
            hex::encode(parent.span_id),
            "a child of the producer's span: {l}"
        );
        let span = l["span_id"].as_str().unwrap_or_default();
        assert!(
            span.len() == 16 && span != hex::encode(parent.span_id),
            "the job's own span: {l}"
        );
        assert!(l["epoch"].as_u64().is_some(), "{l}");
    }
    // The PAID commit has the epoch of the record whose arrival made the order PAID: the
    // payment's, or the created's if the payment was read first (topics are read at
    // their own speeds; the logic applies an early payment when its order arrives).
    let epoch_of = |event: &str| {
        line(&lines, "order record ingested", traced, event).and_then(|l| l["epoch"].as_u64())
    };
    let paid_epoch = epoch_of("payment.completed")
        .max(epoch_of("order.created"))
        .map(Value::from);
    assert!(
        lines.iter().any(|l| l["message"] == "order state committed"
            && l["order_id"] == traced.to_string()
            && l["status"] == "PAID"
            && Some(&l["epoch"]) == paid_epoch.as_ref()),
        "the PAID commit has the payment's epoch:\n{}",
        all()
    );

    // Order B: a malformed traceparent is not inherited; the job starts a new trace.
    let b = line(&lines, "order record ingested", untraced, "order.created")
        .ok_or_else(|| format!("no line for order B:\n{}", all()))?;
    assert_eq!(b["offset"], b_created.offset, "{b}");
    assert!(b["parent_span_id"].is_null(), "no parent: {b}");
    let b_trace = b["trace_id"].as_str().unwrap_or_default();
    assert!(
        b_trace.len() == 32 && b_trace != trace_id,
        "a new trace id: {b}"
    );
    // No line names an order that was never written.
    let stranger = Uuid::new_v4();
    assert!(line(&lines, "order record ingested", stranger, "").is_none());
    Ok(())
}
