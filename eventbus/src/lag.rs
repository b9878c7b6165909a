//! Consumer lag for a group whose offsets are committed by a transactional producer.
//!
//! librdkafka's statistics compute a consumer's lag from the offsets *the consumer*
//! committed; offsets sent with `send_offsets_to_transaction` are committed by the
//! producer, so the statistics never see them and their lag would only grow. A
//! consume-transform-produce service (payment) therefore asks the group coordinator
//! for the committed offsets of its assignment now and then ([`track_committed`]) and
//! sets the same gauge the statistics set for other consumers,
//! `kafka_consumergroup_lag{consumergroup,topic,partition}`: one name for every
//! group consumer, whichever way it commits.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::context::{BusContext, TopicPartition};
use crate::metrics::BusMetrics;

/// One partition's lag: `(topic, partition, lag)`.
type PartitionLag = (String, i32, i64);

/// Keeps `kafka_consumergroup_lag` right for `consumer`'s assignment in `group`: every
/// `interval`, the high watermark minus the group's committed offset (or minus the low
/// watermark when nothing is committed yet), per assigned partition; series of
/// partitions no longer assigned are removed. Runs until aborted.
pub async fn track_committed<C>(
    consumer: Arc<C>,
    group: String,
    metrics: BusMetrics,
    interval: Duration,
) where
    C: Consumer<BusContext> + Send + Sync + 'static,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown: BTreeSet<TopicPartition> = BTreeSet::new();
    loop {
        ticker.tick().await;
        let consumer = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || committed_lags(&*consumer)).await;
        match lags {
            Ok(Ok(lags)) => {
                let now: BTreeSet<TopicPartition> =
                    lags.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
                for (topic, p) in shown.difference(&now) {
                    let _ =
                        metrics
                            .consumer_lag
                            .remove_label_values(&[&group, topic, &p.to_string()]);
                }
                for (topic, p, lag) in lags {
                    metrics
                        .consumer_lag
                        .with_label_values(&[&group, &topic, &p.to_string()])
                        .set(lag);
                }
                shown = now;
            }
            Ok(Err(e)) => tracing::debug!("consumer lag not refreshed: {e}"),
            Err(e) => tracing::debug!("consumer lag task: {e}"),
        }
    }
}

/// The lag of every assigned partition from the coordinator's committed offsets.
/// Blocking.
///
/// The end offsets come from one batched ListOffsets per broker
/// (`offsets_for_times` with [`Offset::End`], which librdkafka passes as Kafka's
/// "latest" timestamp, -1; the consumer's
/// `isolation.level` applies, so a read_committed consumer gets the last stable
/// offset), not from `fetch_watermarks` per partition: a fetching consumer's broker
/// connections are busy with long-polling Fetch requests, and each ListOffsets waits
/// behind one (up to `fetch.wait.max.ms`), so one request per partition made a refresh
/// of six partitions take seconds. The earliest offsets ([`Offset::Beginning`], -2) are
/// asked, batched the same way, only for partitions the group never committed.
fn committed_lags<C: Consumer<BusContext>>(consumer: &C) -> Result<Vec<PartitionLag>, KafkaError> {
    let timeout = Duration::from_secs(5);
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(assignment, timeout)?;
    let mut latest_asked = TopicPartitionList::new();
    let mut earliest_asked = TopicPartitionList::new();
    for e in committed.elements() {
        latest_asked.add_partition_offset(e.topic(), e.partition(), Offset::End)?;
        if !matches!(e.offset(), Offset::Offset(_)) {
            earliest_asked.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)?;
        }
    }
    let latest = consumer.offsets_for_times(latest_asked, timeout)?;
    let earliest = if earliest_asked.count() == 0 {
        earliest_asked
    } else {
        consumer.offsets_for_times(earliest_asked, timeout)?
    };
    let offset_in = |list: &TopicPartitionList, topic: &str, partition: i32| match list
        .find_partition(topic, partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    };
    let mut lags = Vec::new();
    for e in committed.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let Some(high) = offset_in(&latest, topic, partition) else {
            continue;
        };
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => offset_in(&earliest, topic, partition).unwrap_or(high),
        };
        lags.push((topic.to_owned(), partition, (high - from).max(0)));
    }
    Ok(lags)
}
