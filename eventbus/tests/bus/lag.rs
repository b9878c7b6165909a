//! [`eventbus::lag::track_committed`]: the lag of a group whose offsets are committed
//! outside librdkafka's statistics (payment commits through its transactions), read
//! from the group coordinator and the partitions' end offsets.

use std::sync::Arc;
use std::time::Duration;

use eventbus::client::{self, GroupOptions};
use eventbus::context::BusContext;
use eventbus::{BusMetrics, PublishOptions};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schemas::OrderCreated;

use crate::common::{cluster, order, wait_until};

/// The sum of the lag gauge over `topic`'s `partitions` for `group`.
fn total_lag(metrics: &BusMetrics, group: &str, topic: &str, partitions: i32) -> i64 {
    (0..partitions)
        .filter_map(|p| {
            metrics
                .consumer_lag
                .get_metric_with_label_values(&[group, topic, &p.to_string()])
                .ok()
        })
        .map(|g| g.get())
        .sum()
}

#[tokio::test]
async fn committed_lag_counts_from_the_earliest_offset_then_from_the_groups_commit() {
    const PARTITIONS: i32 = 3;
    let cluster = cluster().await;
    let topic = cluster.create_topic("lag", PARTITIONS).await.unwrap();
    cluster
        .register_on_topic::<OrderCreated>(&topic)
        .await
        .unwrap();
    let bus = cluster.bus().unwrap();
    let publish = |n: usize| {
        let (bus, topic) = (&bus, &topic);
        async move {
            for _ in 0..n {
                bus.producer()
                    .publish_with(&order(), PublishOptions::to_topic(topic))
                    .await
                    .unwrap();
            }
        }
    };
    publish(5).await;

    let group = cluster.group("lag");
    let metrics = BusMetrics::default();
    let context = BusContext::new("lag-test", Some(group.clone()), metrics.clone());
    let consumer = Arc::new(
        client::group_consumer(
            &cluster.bus_config().kafka,
            &GroupOptions::new(&group),
            context,
        )
        .unwrap(),
    );
    consumer.subscribe(&[&topic]).unwrap();
    // Polling joins the group; nothing is ever committed by this loop.
    let polling = {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            loop {
                let _ = consumer.recv().await;
            }
        })
    };
    let tracking = tokio::spawn(eventbus::lag::track_committed(
        consumer.clone(),
        group.clone(),
        metrics.clone(),
        Duration::from_millis(200),
    ));

    // Nothing committed: the lag runs from the earliest offset, all five records.
    let seen = |want: i64| {
        let (metrics, group, topic) = (metrics.clone(), group.clone(), topic.clone());
        move || total_lag(&metrics, &group, &topic, PARTITIONS) == want
    };
    wait_until(
        "a lag of 5 before any commit",
        Duration::from_secs(30),
        seen(5),
    )
    .await;

    // The group commits the end of every partition (as a transaction's offsets would):
    // no lag.
    let mut ends = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(&topic, p, Duration::from_secs(5))
            .unwrap();
        ends.add_partition_offset(&topic, p, Offset::Offset(high))
            .unwrap();
    }
    consumer.commit(&ends, CommitMode::Sync).unwrap();
    wait_until(
        "a lag of 0 after the commit",
        Duration::from_secs(30),
        seen(0),
    )
    .await;

    // Two more records past the commit: a lag of two.
    publish(2).await;
    wait_until(
        "a lag of 2 after two more records",
        Duration::from_secs(30),
        seen(2),
    )
    .await;

    tracking.abort();
    polling.abort();
    cluster.cleanup().await;
}
