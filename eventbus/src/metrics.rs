//! Prometheus metrics of the layer, registered once per service.
//!
//! A service creates one [`BusMetrics`] on the registry it serves at `/metrics` and hands
//! it to the [`crate::EventBus`]; everything built from the bus (producer, consumer
//! runners, the shared client context) counts into it. Tests use
//! [`BusMetrics::default`], which registers into a private registry, so that many
//! buses in one process never collide.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `eventbus_produced_total` | topic | records acknowledged by the brokers |
//! | `eventbus_publish_failed_total` | topic, class | publishes refused or failed (`invalid`, `kafka`, `registry`, ...) |
//! | `eventbus_consumed_total` | topic | records received by a runner |
//! | `eventbus_handled_total` | topic | records the handler accepted |
//! | `eventbus_retried_total` | topic, class | retries scheduled (`handler-retriable`, `infrastructure`) |
//! | `eventbus_dead_lettered_total` | topic, class | records written to a DLQ, by error class |
//! | `eventbus_handler_duration_seconds` | topic | handler latency, every attempt |
//! | `eventbus_consumer_lag` | group, topic, partition | high watermark minus committed offset, from librdkafka statistics |

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::error::BusError;

/// The layer's metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct BusMetrics {
    registry: Registry,
    /// Records acknowledged by the brokers, by topic.
    pub produced: IntCounterVec,
    /// Publishes that failed, by topic and class.
    pub publish_failed: IntCounterVec,
    /// Records received by a consumer runner, by topic.
    pub consumed: IntCounterVec,
    /// Records handled successfully, by topic.
    pub handled: IntCounterVec,
    /// Retries scheduled, by topic and class.
    pub retried: IntCounterVec,
    /// Records dead-lettered, by original topic and error class.
    pub dead_lettered: IntCounterVec,
    /// Handler latency in seconds, by topic.
    pub handler_duration: HistogramVec,
    /// Consumer lag per partition, from librdkafka statistics.
    pub consumer_lag: IntGaugeVec,
}

impl BusMetrics {
    /// Creates the metrics and registers them on `registry`.
    ///
    /// Fails if they are registered there already: create one `BusMetrics` per registry
    /// and clone it.
    pub fn register(registry: &Registry) -> Result<Self, BusError> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, BusError> {
                let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(metrics_error)?;
                registry
                    .register(Box::new(c.clone()))
                    .map_err(metrics_error)?;
                Ok(c)
            };
        let produced = counter(
            "eventbus_produced_total",
            "Records acknowledged by the brokers.",
            &["topic"],
        )?;
        let publish_failed = counter(
            "eventbus_publish_failed_total",
            "Publishes refused before sending or failed at the brokers.",
            &["topic", "class"],
        )?;
        let consumed = counter(
            "eventbus_consumed_total",
            "Records received by a consumer runner.",
            &["topic"],
        )?;
        let handled = counter(
            "eventbus_handled_total",
            "Records the handler accepted.",
            &["topic"],
        )?;
        let retried = counter(
            "eventbus_retried_total",
            "Retries scheduled with backoff.",
            &["topic", "class"],
        )?;
        let dead_lettered = counter(
            "eventbus_dead_lettered_total",
            "Records written to a dead-letter topic, by original topic and error class.",
            &["topic", "class"],
        )?;
        let handler_duration = HistogramVec::new(
            HistogramOpts::new(
                "eventbus_handler_duration_seconds",
                "Handler latency, every attempt.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["topic"],
        )
        .map_err(metrics_error)?;
        registry
            .register(Box::new(handler_duration.clone()))
            .map_err(metrics_error)?;
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "eventbus_consumer_lag",
                "High watermark minus committed offset per partition (librdkafka statistics).",
            ),
            &["group", "topic", "partition"],
        )
        .map_err(metrics_error)?;
        registry
            .register(Box::new(consumer_lag.clone()))
            .map_err(metrics_error)?;
        Ok(BusMetrics {
            registry: registry.clone(),
            produced,
            publish_failed,
            consumed,
            handled,
            retried,
            dead_lettered,
            handler_duration,
            consumer_lag,
        })
    }

    /// The registry the metrics are registered on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry's metrics in the Prometheus text format, for a `/metrics` endpoint.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// The current value of a counter, for tests and status output.
    pub fn count(counter: &IntCounterVec, labels: &[&str]) -> u64 {
        counter
            .get_metric_with_label_values(labels)
            .map(|c| c.get())
            .unwrap_or(0)
    }
}

impl Default for BusMetrics {
    /// Metrics on a fresh private registry.
    fn default() -> Self {
        BusMetrics::register(&Registry::new()).expect("fresh registry has no collisions")
    }
}

fn metrics_error(e: prometheus::Error) -> BusError {
    BusError::Metrics(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_renders() {
        let registry = Registry::new();
        let m = BusMetrics::register(&registry).unwrap();
        assert!(
            BusMetrics::register(&registry).is_err(),
            "double registration must fail"
        );
        m.produced.with_label_values(&["t"]).inc();
        m.dead_lettered
            .with_label_values(&["t", "undecodable"])
            .inc_by(2);
        m.handler_duration.with_label_values(&["t"]).observe(0.003);
        let text = m.render();
        assert!(
            text.contains("eventbus_produced_total{topic=\"t\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("eventbus_dead_lettered_total{class=\"undecodable\",topic=\"t\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("eventbus_handler_duration_seconds_bucket"),
            "{text}"
        );
        assert_eq!(
            BusMetrics::count(&m.dead_lettered, &["t", "undecodable"]),
            2
        );
    }
}
