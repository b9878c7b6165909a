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
//! | `eventbus_rebalances_total` | consumergroup, kind | assignment changes of a group consumer: `assigned`, `revoked`, `error` |
//! | `kafka_consumergroup_lag` | consumergroup, topic, partition | high watermark minus the group's committed offset |
//! | `eventbus_transaction_step_seconds` | producer, step | one step of a [`crate::TransactionalProducer`]'s transactions: `settle`, `begin`, `send`, `offsets`, `deliveries`, `commit`, `abort` |
//!
//! The lag has the name and labels kafka_exporter gives it, so the usual dashboards and
//! alert rules apply unchanged. A group consumer whose offsets are committed by the
//! consumer itself gets it from librdkafka's statistics ([`crate::context`]); one whose
//! offsets are committed by a transactional producer (which the statistics never see)
//! runs [`crate::lag::track_committed`].

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

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
    /// `kafka_consumergroup_lag{consumergroup,topic,partition}`.
    pub consumer_lag: IntGaugeVec,
    /// Assignment changes of group consumers, by group and kind.
    pub rebalances: IntCounterVec,
    /// The steps of transactional producers' transactions, by producer and step.
    pub transaction_step: HistogramVec,
}

impl BusMetrics {
    /// Creates the metrics and registers them on `registry`.
    ///
    /// Fails if they are registered there already: create one `BusMetrics` per registry
    /// and clone it. (Prometheus's own error: what a service registering its metrics
    /// handles anyway; [`BusError`](crate::BusError) takes it with `?`.)
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
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
        )?;
        registry.register(Box::new(handler_duration.clone()))?;
        // Finer at the low end than the handler's: the steps of a transaction take from
        // tens of microseconds (begin) to tens of milliseconds (commit).
        let transaction_step = HistogramVec::new(
            HistogramOpts::new(
                "eventbus_transaction_step_seconds",
                "One step of a transactional producer's transactions (settle, begin, send, \
                 offsets, deliveries, commit, abort).",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                0.15, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["producer", "step"],
        )?;
        registry.register(Box::new(transaction_step.clone()))?;
        let rebalances = counter(
            "eventbus_rebalances_total",
            "Assignment changes of a group consumer (assigned, revoked, error).",
            &["consumergroup", "kind"],
        )?;
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "kafka_consumergroup_lag",
                "High watermark minus the consumer group's committed offset, per partition.",
            ),
            &["consumergroup", "topic", "partition"],
        )?;
        registry.register(Box::new(consumer_lag.clone()))?;
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
            rebalances,
            transaction_step,
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
