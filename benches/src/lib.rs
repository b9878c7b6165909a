//! Benchmarks of the order pipeline, each beside a baseline measured in the same run on
//! the same cluster: figures and ratios, never assertions.
//!
//! - `publish-bench`: eventbus typed publish (validate, Avro, registry, CloudEvents
//!   headers, acks=all, RF 3) against Kafka's own `ProducerPerformance`.
//! - `pipeline-bench` (`make bench`): `POST /v1/orders` → `stock.updated` readable, at
//!   fixed open-loop loads, against `ProducerPerformance` and `EndToEndLatency`.
//! - `loadgen`: open-loop orders at a target rate against running services.
//! - `pipeline-latency`: the pipeline alone, its input fed directly: probe latency beside
//!   Kafka's floor, idle CPU, the highest input rate without growing lag.
//! - `ingress-bench`: `POST /v1/orders` under wrk beside a bare produce and eventbus's
//!   publish.

pub mod client;
pub mod cluster;
pub mod floor;
pub mod load;
pub mod machine;
pub mod metrics;
pub mod records;
pub mod scenario;
pub mod stack;
pub mod stats;
pub mod topics;

pub use ::proto;
