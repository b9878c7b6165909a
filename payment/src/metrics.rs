//! The service's Prometheus metrics, served at `/metrics`.
//!
//! Outcome counters move only **after the transaction that carries the outcome has
//! committed**, so they count what downstream readers see: an aborted and re-run batch
//! is not counted twice, and the counters of a run add up to the records on the topics.
//! (A `kill -9` loses the counters of the process, not the outcomes.)
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `payment_payments_total` | outcome (`completed`/`failed`), reason_code | outcomes committed |
//! | `payment_gateway_latency_seconds` | result (`ok`/`declined`/`transient`/`fatal`) | every gateway attempt |
//! | `payment_gateway_retries_total` | | transient failures retried after a backoff |
//! | `payment_duplicates_skipped_total` | | order.created records for orders already settled |
//! | `payment_transactions_total` | result (`committed`/`aborted`/`failed`) | batches (`failed`: the producer was fenced or failed fatally) |
//! | `payment_producer_reinits_total` | reason (`fenced`/`fatal`) | transactional producers replaced by a new one with the same `transactional.id` ([`crate::recovery`]) |
//! | `payment_transaction_duration_seconds` | | begin to commit of one batch |
//! | `payment_batch_records` | | input records per committed batch |
//! | `eventbus_dead_lettered_total` | topic, class | records committed to the DLQ (the project-wide DLQ metric) |
//! | `kafka_consumergroup_lag` | consumergroup, topic, partition | high watermark minus the group's committed offset (see below) |
//! | `eventbus_consumed_total` | topic | input records received |
//! | `eventbus_produced_total` | topic | outcome and DLQ records committed, per topic |
//! | `eventbus_retried_total` | topic, class (`gateway-transient`) | gateway attempts retried after a backoff |
//! | `eventbus_handler_duration_seconds` | topic | one order from its first gateway attempt to its decision |
//! | `eventbus_rebalances_total` | consumergroup, kind | assignments and revocations of the group consumer |
//!
//! The lag is computed from the group coordinator's committed offsets
//! (`eventbus::lag::track_committed`), not taken from librdkafka's statistics: the
//! offsets are committed by the *producer's* transaction, which the consumer's own
//! statistics never see, so librdkafka's `consumer_lag` would only grow.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use eventbus::BusMetrics;

/// Every metric of the service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PaymentMetrics {
    /// The eventbus metrics on the same registry (DLQ, lag, consumed).
    pub bus: BusMetrics,
    /// Outcomes committed, by outcome and reason code (empty for completed).
    pub payments: IntCounterVec,
    /// Gateway latency per attempt, by result.
    pub gateway_latency: HistogramVec,
    /// Transient gateway failures that were retried.
    pub gateway_retries: IntCounter,
    /// Duplicate order.created records skipped (the order was settled already).
    pub duplicates_skipped: IntCounter,
    /// Transactions by result.
    pub transactions: IntCounterVec,
    /// Transactional producers replaced after being fenced or failing fatally, by reason.
    pub producer_reinits: IntCounterVec,
    /// Duration of a transaction, begin to commit.
    pub transaction_duration: Histogram,
    /// Records per committed batch.
    pub batch_records: Histogram,
}

impl PaymentMetrics {
    /// Creates the metrics (and the eventbus ones) on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let bus = BusMetrics::register(registry)?;
        let payments = IntCounterVec::new(
            Opts::new("payment_payments_total", "Payment outcomes committed."),
            &["outcome", "reason_code"],
        )?;
        let gateway_latency = HistogramVec::new(
            HistogramOpts::new(
                "payment_gateway_latency_seconds",
                "Latency of every payment gateway attempt.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["result"],
        )?;
        let gateway_retries = IntCounter::new(
            "payment_gateway_retries_total",
            "Transient gateway failures retried after a backoff.",
        )?;
        let duplicates_skipped = IntCounter::new(
            "payment_duplicates_skipped_total",
            "order.created records skipped because the order was already settled.",
        )?;
        let transactions = IntCounterVec::new(
            Opts::new(
                "payment_transactions_total",
                "Batch transactions by result.",
            ),
            &["result"],
        )?;
        let producer_reinits = IntCounterVec::new(
            Opts::new(
                "payment_producer_reinits_total",
                "Transactional producers replaced by a new one with the same transactional.id after being fenced or failing fatally.",
            ),
            &["reason"],
        )?;
        let transaction_duration = Histogram::with_opts(
            HistogramOpts::new(
                "payment_transaction_duration_seconds",
                "Begin to commit of one batch transaction.",
            )
            .buckets(vec![
                0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
            ]),
        )?;
        let batch_records = Histogram::with_opts(
            HistogramOpts::new(
                "payment_batch_records",
                "Input records per committed batch.",
            )
            .buckets(vec![
                1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ]),
        )?;
        registry.register(Box::new(payments.clone()))?;
        registry.register(Box::new(gateway_latency.clone()))?;
        registry.register(Box::new(gateway_retries.clone()))?;
        registry.register(Box::new(duplicates_skipped.clone()))?;
        registry.register(Box::new(transactions.clone()))?;
        registry.register(Box::new(producer_reinits.clone()))?;
        registry.register(Box::new(transaction_duration.clone()))?;
        registry.register(Box::new(batch_records.clone()))?;
        Ok(PaymentMetrics {
            bus,
            payments,
            gateway_latency,
            gateway_retries,
            duplicates_skipped,
            transactions,
            producer_reinits,
            transaction_duration,
            batch_records,
        })
    }

    /// Everything on the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        self.bus.render()
    }
}

impl Default for PaymentMetrics {
    /// Metrics on a fresh private registry (tests, several services in one process).
    fn default() -> Self {
        PaymentMetrics::register(&Registry::new()).expect("a fresh registry has no collisions")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_payment_and_bus_metrics() {
        let m = PaymentMetrics::default();
        m.payments.with_label_values(&["completed", ""]).inc();
        m.payments
            .with_label_values(&["failed", "AMOUNT_OVER_LIMIT"])
            .inc_by(2);
        m.gateway_latency.with_label_values(&["ok"]).observe(0.002);
        m.bus
            .dead_lettered
            .with_label_values(&["t", "undecodable"])
            .inc();
        m.bus
            .consumer_lag
            .with_label_values(&["g", "t", "0"])
            .set(7);
        let text = m.render();
        for needle in [
            "payment_payments_total{outcome=\"failed\",reason_code=\"AMOUNT_OVER_LIMIT\"} 2",
            "payment_gateway_latency_seconds_bucket",
            "eventbus_dead_lettered_total{class=\"undecodable\",topic=\"t\"} 1",
            "kafka_consumergroup_lag{consumergroup=\"g\",partition=\"0\",topic=\"t\"} 7",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(PaymentMetrics::register(m.bus.registry()).is_err());
    }
}
