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
use rdkafka::topic_partition_list::Offset;

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
fn committed_lags<C: Consumer<BusContext>>(consumer: &C) -> Result<Vec<PartitionLag>, KafkaError> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(assignment, Duration::from_secs(5))?;
    let mut lags = Vec::new();
    for e in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lags.push((e.topic().to_owned(), e.partition(), (high - from).max(0)));
    }
    Ok(lags)
}
