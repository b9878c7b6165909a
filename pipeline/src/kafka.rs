//! The librdkafka client context of the job's own clients: logs to `tracing`, and for the
//! input consumers, statistics to the input-lag gauges.
//!
//! eventbus's `BusContext` cannot be used here: the sink's transactional producer needs a
//! `ProducerContext`, which a foreign type cannot be given in this crate, and its lag
//! gauge is computed from *committed* group offsets, which this job never commits (its
//! offsets live in the progress topic). The input lag here is what an operator wants
//! to see instead: the partition's last stable offset (the end a `read_committed`
//! reader can reach) minus the next offset the job will read.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;

use crate::metrics::Metrics;

/// Client context: logs to `tracing`; input lag from statistics when `lag` is set.
#[derive(Clone)]
pub struct JobContext {
    name: String,
    lag: Option<Metrics>,
}

impl JobContext {
    /// A context for a client called `name` in logs.
    pub fn new(name: impl Into<String>) -> Self {
        JobContext {
            name: name.into(),
            lag: None,
        }
    }

    /// A context whose statistics set `pipeline_input_lag` (input consumers).
    pub fn with_lag(name: impl Into<String>, metrics: Metrics) -> Self {
        JobContext {
            name: name.into(),
            lag: Some(metrics),
        }
    }
}

impl ClientContext for JobContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eventbus::context::log_to_tracing(&self.name, level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        let Some(metrics) = &self.lag else { return };
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

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how the progress reader knows it is done, not a problem.
        if matches!(error, KafkaError::PartitionEOF(_)) {
            return;
        }
        tracing::warn!(target: "librdkafka", client = %self.name, "{error}: {reason}");
    }
}

impl ConsumerContext for JobContext {}

impl ProducerContext for JobContext {
    type DeliveryOpaque = ();

    // Delivery failures inside a transaction surface as an abortable error of
    // `commit_transaction`, which the sink handles; here they are only logged.
    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            tracing::warn!(client = %self.name, "delivery failed: {error}");
        }
    }
}
