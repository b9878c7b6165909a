//! The service's Prometheus metrics, on one registry per running instance (so tests can
//! run several instances in one process), served at `/metrics` together with the
//! eventbus metrics registered on the same registry.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `http_requests_total` | route, method, status | REST requests answered; `route` is the route template (`/v1/orders/{order_id}`), never the raw path, so ids cannot explode the label set |
//! | `http_request_duration_seconds` | route, method | REST latency histogram |
//! | `grpc_requests_total` | method, code | gRPC calls answered by the services |
//! | `grpc_request_duration_seconds` | method | gRPC latency histogram |
//! | `ingress_publish_duration_seconds` | event_type, outcome | time to `acks=all` (ok, error, timeout) |
//! | `ingress_idempotency_total` | outcome | keyed requests: fresh, replayed, mismatch, in_progress |
//! | `ingress_idempotency_learned_total` | | keyed answers learned from the topics (earlier runs, other instances) |
//! | `eventbus_*` | | the producer's own metrics (see eventbus) |

use eventbus::BusMetrics;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Latency buckets in seconds: sub-millisecond to the publish deadline.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// REST requests by route, method and status.
    pub http_requests: IntCounterVec,
    /// REST latency by route and method.
    pub http_duration: HistogramVec,
    /// gRPC calls by method and code.
    pub grpc_requests: IntCounterVec,
    /// gRPC latency by method.
    pub grpc_duration: HistogramVec,
    /// Publish latency by event type and outcome.
    pub publish_duration: HistogramVec,
    /// Keyed requests by outcome.
    pub idempotency: IntCounterVec,
    /// Keyed answers learned from the topics.
    pub idempotency_learned: IntCounter,
    /// The eventbus metrics, on the same registry.
    pub bus: BusMetrics,
}

impl Metrics {
    /// Creates every metric on a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let http_requests = counter(
            "http_requests_total",
            "REST requests answered, by route template, method and status.",
            &["route", "method", "status"],
        )?;
        let http_duration = histogram(
            "http_request_duration_seconds",
            "REST request latency, by route template and method.",
            &["route", "method"],
        )?;
        let grpc_requests = counter(
            "grpc_requests_total",
            "gRPC calls answered, by method and status code.",
            &["method", "code"],
        )?;
        let grpc_duration = histogram(
            "grpc_request_duration_seconds",
            "gRPC call latency, by method.",
            &["method"],
        )?;
        let publish_duration = histogram(
            "ingress_publish_duration_seconds",
            "Time from publish to acks=all, by event type and outcome (ok, error, timeout).",
            &["event_type", "outcome"],
        )?;
        let idempotency = counter(
            "ingress_idempotency_total",
            "Requests with an idempotency key, by outcome (fresh, replayed, mismatch, in_progress).",
            &["outcome"],
        )?;
        let idempotency_learned = IntCounter::new(
            "ingress_idempotency_learned_total",
            "Keyed answers learned from the topics (given by earlier runs or other instances).",
        )?;
        registry.register(Box::new(idempotency_learned.clone()))?;
        let bus = BusMetrics::register(&registry)?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            grpc_requests,
            grpc_duration,
            publish_duration,
            idempotency,
            idempotency_learned,
            bus,
        })
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
