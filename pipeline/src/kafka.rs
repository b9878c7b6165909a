//! What the job adds to eventbus's Kafka clients: their client context, the input-lag
//! gauge, and the metadata check of its topics.
//!
//! Every client of the job is built by [`eventbus::client`] (the input readers and the
//! progress reader) or is an [`eventbus::TransactionalProducer`] (the sink), with
//! eventbus's one [`BusContext`]: logs go to `tracing`, delivery reports are counted.
//!
//! eventbus's own lag gauge is computed from *committed* group offsets, which this job
//! never commits (its offsets live in the progress topic), so its contexts carry no
//! group. The input lag is computed here instead, from the input readers' statistics
//! (a [`StatsHook`]): the partition's last stable offset (the end a `read_committed`
//! reader can reach) minus the next offset the job will read.

use std::sync::Arc;
use std::time::Duration;

use eventbus::context::{BusContext, StatsHook};
use eventbus::kafka::{BaseConsumer, KafkaError, RDKafkaErrorCode, Statistics};
use eventbus::{BusError, BusMetrics, KafkaSettings};

use crate::error::PipelineError;
use crate::metrics::Metrics;

/// The context of one of the job's clients, called `<client_id>/<name>` in logs. No
/// group: nothing of the job commits offsets to one.
pub fn context(kafka: &KafkaSettings, name: &str) -> BusContext {
    BusContext::new(
        format!("{}/{name}", kafka.client_id),
        None,
        BusMetrics::default(),
    )
}

/// A statistics hook that sets `pipeline_input_lag` per input partition (the input
/// readers').
pub fn input_lag_hook(metrics: Metrics) -> StatsHook {
    Arc::new(move |statistics: &Statistics| set_input_lag(&metrics, statistics))
}

fn set_input_lag(metrics: &Metrics, statistics: &Statistics) {
    for (topic, t) in &statistics.topics {
        for p in t.partitions.values() {
            // Partition -1 is librdkafka's internal one; only partitions we read.
            if p.partition < 0 || !p.desired {
                continue;
            }
            // app_offset: one past the last record handed to us (-1001 before the
            // first); the low watermark stands in until then.
            let next = if p.app_offset >= 0 {
                p.app_offset
            } else {
                p.lo_offset
            };
            if p.ls_offset < 0 || next < 0 {
                continue;
            }
            metrics
                .input_lag
                .with_label_values(&[topic.as_str(), &p.partition.to_string()])
                .set((p.ls_offset - next).max(0));
        }
    }
}

/// The number of partitions of `topic` from the cluster's metadata, `None` if the topic
/// does not exist. Blocking.
pub(crate) fn partition_count(
    client: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, PipelineError> {
    match eventbus::client::partition_count(client, topic, timeout) {
        Ok(count) => Ok(Some(count)),
        Err(BusError::MissingTopic(_)) => Ok(None),
        Err(BusError::Kafka {
            error:
                KafkaError::MetadataFetch(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                ),
            ..
        }) => Ok(None),
        Err(other) => Err(other.into()),
    }
}
