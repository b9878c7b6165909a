//! Prometheus metrics of one process of the job, on a registry of its own (so that
//! several jobs in one test process never collide), served by every process at
//! `/metrics` (process 0 with the API; see [`crate::server::ops_router`]). The source's
//! metrics (lag, records, dead letters, arrangements) are the process's own workers';
//! the sink's and the views' exist on process 0 only.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `pipeline_input_lag` | topic, partition | last stable offset minus the next offset the job reads (librdkafka statistics, every `source.statistics_interval_ms`) |
//! | `pipeline_records_total` | topic | input records ingested (use `rate()` for records/s) |
//! | `pipeline_dead_lettered_total` | topic, class | input records sent to the DLQ |
//! | `pipeline_replayed_total` | | records re-read at their bound epochs after a restart |
//! | `pipeline_throttled_total` | | times a worker paused ingestion because its epochs were not committed within the slack |
//! | `pipeline_frontier_delay_seconds` | | now minus the oldest ingested epoch not yet committed; 0 when nothing is pending |
//! | `pipeline_committed_epoch` | | the last committed epoch (UTC ms) |
//! | `pipeline_arrangement_records` | worker | updates held in the worker's arrangements (differential's batch, merge and drop events, see [`watch_arrangements`]) |
//! | `pipeline_view_rows` | view | rows of the served views (`stock`, `orders`) |
//! | `pipeline_sink_commit_seconds` | | latency of one transaction (begin → commit) |
//! | `pipeline_sink_epochs_per_transaction` | | epochs committed together |
//! | `pipeline_sink_records_total` | topic | records written by committed transactions |
//! | `pipeline_snapshot_age_seconds` | | now minus the epoch of the newest snapshot written or restored (0: none) |
//! | `pipeline_snapshot_bytes` | | size of that snapshot's chunks |
//! | `pipeline_snapshot_write_seconds` | | one snapshot write: encode, store, manifest |
//! | `pipeline_snapshot_load_seconds` | | loading and verifying the snapshot at start |
//! | `pipeline_snapshot_restored_entries` | | keys restored from it |
//! | `pipeline_snapshot_rejected_total` | | snapshots skipped at start (torn, corrupt, not covered by the progress topic) |
//! | `pipeline_snapshot_skipped_total` | | markers not written because the writer was busy |
//! | `pipeline_snapshot_failed_total` | | snapshot writes that failed (the job goes on) |
//! | `eventbus_transaction_step_seconds` | producer (`sink`), step | where the sink's transactions spend their time (eventbus's [`eventbus::transaction`] module docs) |
//!
//! Records replayed after a snapshot are `pipeline_replayed_total`.
//!
//! Why "frontier delay" is not simply `now − frontier`: the job does not tick while it
//! is idle (that would cost CPU for nothing), so an idle job's frontier stands still and
//! `now − frontier` would grow without meaning anything. The delay measured here is the
//! age of the oldest epoch that holds input and is not committed yet, which equals
//! `now − frontier` whenever there is work, and is 0 when there is none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::clock::now_ms;

/// The job's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Input lag per partition.
    pub input_lag: IntGaugeVec,
    /// Records ingested per topic.
    pub records: IntCounterVec,
    /// Records dead-lettered per topic and class.
    pub dead_lettered: IntCounterVec,
    /// Records replayed after a restart.
    pub replayed: IntCounter,
    /// Throttling events.
    pub throttled: IntCounter,
    /// The oldest pending epoch (0: none), read at scrape time.
    oldest_pending: Arc<AtomicU64>,
    frontier_delay: prometheus::Gauge,
    /// The last committed epoch.
    pub committed_epoch: IntGauge,
    /// Arrangement sizes per worker.
    pub arrangement_records: IntGaugeVec,
    /// View sizes.
    pub view_rows: IntGaugeVec,
    /// Transaction latency.
    pub commit_seconds: Histogram,
    /// Epochs per transaction.
    pub epochs_per_transaction: Histogram,
    /// Records written by committed transactions, per topic.
    pub sink_records: IntCounterVec,
    /// The epoch of the newest snapshot (0: none), read at scrape time.
    snapshot_epoch: Arc<AtomicU64>,
    snapshot_age: prometheus::Gauge,
    /// eventbus's metrics, on the same registry (the sink's transaction steps).
    pub bus: eventbus::BusMetrics,
    /// Size of the newest snapshot.
    pub snapshot_bytes: IntGauge,
    /// Snapshot write durations.
    pub snapshot_write_seconds: Histogram,
    /// Loading the snapshot at start.
    pub snapshot_load_seconds: prometheus::Gauge,
    /// Keys restored from a snapshot.
    pub snapshot_restored_entries: IntGauge,
    /// Snapshots rejected at start.
    pub snapshot_rejected: IntCounter,
    /// Markers skipped because the writer was busy.
    pub snapshot_skipped: IntCounter,
    /// Failed snapshot writes.
    pub snapshot_failed: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are fixed and the registry is fresh: registration cannot collide.
    registry
        .register(Box::new(c.clone()))
        .expect("metric registers on a fresh registry");
    c
}

impl Metrics {
    /// Fresh metrics on a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let input_lag = gauge_vec(
            "pipeline_input_lag",
            "Last stable offset minus the next offset the job reads, per input partition.",
            &["topic", "partition"],
        );
        let records = counter_vec(
            "pipeline_records_total",
            "Input records ingested.",
            &["topic"],
        );
        let dead_lettered = counter_vec(
            "pipeline_dead_lettered_total",
            "Input records sent to the dead-letter topic.",
            &["topic", "class"],
        );
        let replayed = register(
            &r,
            IntCounter::new(
                "pipeline_replayed_total",
                "Input records re-read at their bound epochs after a restart.",
            )
            .expect("valid metric"),
        );
        let throttled = register(
            &r,
            IntCounter::new(
                "pipeline_throttled_total",
                "Times a worker paused ingestion: its epochs were not committed within the slack.",
            )
            .expect("valid metric"),
        );
        let frontier_delay = register(
            &r,
            prometheus::Gauge::new(
                "pipeline_frontier_delay_seconds",
                "Now minus the oldest ingested epoch that is not committed yet (0 when idle).",
            )
            .expect("valid metric"),
        );
        let committed_epoch = register(
            &r,
            IntGauge::new(
                "pipeline_committed_epoch",
                "The last committed epoch, UTC milliseconds.",
            )
            .expect("valid metric"),
        );
        let arrangement_records = gauge_vec(
            "pipeline_arrangement_records",
            "Updates held in the arrangements of a worker.",
            &["worker"],
        );
        let view_rows = gauge_vec("pipeline_view_rows", "Rows of the served views.", &["view"]);
        let commit_seconds = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "pipeline_sink_commit_seconds",
                    "Latency of one sink transaction, begin to commit.",
                )
                .buckets(vec![
                    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                ]),
            )
            .expect("valid metric"),
        );
        let epochs_per_transaction = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "pipeline_sink_epochs_per_transaction",
                    "Epochs committed together in one transaction.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            )
            .expect("valid metric"),
        );
        let sink_records = counter_vec(
            "pipeline_sink_records_total",
            "Records written by committed sink transactions.",
            &["topic"],
        );
        let gauge = |name: &str, help: &str| {
            register(
                &r,
                prometheus::Gauge::new(name, help).expect("valid metric"),
            )
        };
        let int_gauge =
            |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        let counter = |name: &str, help: &str| {
            register(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let snapshot_age = gauge(
            "pipeline_snapshot_age_seconds",
            "Now minus the epoch of the newest snapshot written or restored (0: none).",
        );
        let snapshot_bytes = int_gauge(
            "pipeline_snapshot_bytes",
            "Size of the newest snapshot's chunks.",
        );
        let snapshot_write_seconds = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "pipeline_snapshot_write_seconds",
                    "One snapshot write: encode, store the chunks and the manifest.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            )
            .expect("valid metric"),
        );
        let snapshot_load_seconds = gauge(
            "pipeline_snapshot_load_seconds",
            "Loading and verifying the snapshot at start.",
        );
        let snapshot_restored_entries = int_gauge(
            "pipeline_snapshot_restored_entries",
            "Keys restored from a snapshot at start.",
        );
        let snapshot_rejected = counter(
            "pipeline_snapshot_rejected_total",
            "Snapshots skipped at start: torn, corrupt or not covered by the progress topic.",
        );
        let snapshot_skipped = counter(
            "pipeline_snapshot_skipped_total",
            "Snapshot markers not written because the writer was still busy.",
        );
        let snapshot_failed = counter(
            "pipeline_snapshot_failed_total",
            "Snapshot writes that failed.",
        );
        let bus = eventbus::BusMetrics::register(&r).expect("fresh registry has no collisions");
        Metrics {
            bus,
            registry: r,
            snapshot_epoch: Arc::new(AtomicU64::new(0)),
            snapshot_age,
            snapshot_bytes,
            snapshot_write_seconds,
            snapshot_load_seconds,
            snapshot_restored_entries,
            snapshot_rejected,
            snapshot_skipped,
            snapshot_failed,
            input_lag,
            records,
            dead_lettered,
            replayed,
            throttled,
            oldest_pending: Arc::new(AtomicU64::new(0)),
            frontier_delay,
            committed_epoch,
            arrangement_records,
            view_rows,
            commit_seconds,
            epochs_per_transaction,
            sink_records,
        }
    }

    /// Records the oldest epoch that holds input and is not committed (`None`: none).
    pub fn set_oldest_pending(&self, epoch: Option<u64>) {
        self.oldest_pending
            .store(epoch.unwrap_or(0), Ordering::Relaxed);
    }

    /// The current frontier delay in seconds (see the module docs).
    pub fn frontier_delay(&self) -> f64 {
        match self.oldest_pending.load(Ordering::Relaxed) {
            0 => 0.0,
            oldest => now_ms().saturating_sub(oldest) as f64 / 1000.0,
        }
    }

    /// Records the newest snapshot (written or restored): its epoch and size.
    pub fn note_snapshot(&self, epoch: u64, bytes: u64) {
        self.snapshot_epoch.store(epoch, Ordering::Relaxed);
        self.snapshot_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Seconds since the newest snapshot's epoch (0 without one).
    pub fn snapshot_age(&self) -> f64 {
        match self.snapshot_epoch.load(Ordering::Relaxed) {
            0 => 0.0,
            epoch => now_ms().saturating_sub(epoch) as f64 / 1000.0,
        }
    }

    /// The registry, for adding a service's own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        self.frontier_delay.set(self.frontier_delay());
        self.snapshot_age.set(self.snapshot_age());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Keeps `pipeline_arrangement_records{worker}` equal to the number of updates in the
/// worker's arrangements (the reduce over order histories, the counts per SKU and the
/// arrangements behind them), from differential's own logging: a new batch adds its
/// length, a completed merge replaces its two inputs by its output, a dropped batch
/// subtracts. Call before building the dataflow; timely flushes the events on every step.
pub fn watch_arrangements(worker: &mut timely::worker::Worker, metrics: &Metrics) {
    use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
    let gauge = metrics
        .arrangement_records
        .with_label_values(&[&worker.index().to_string()]);
    let Some(mut register) = worker.log_register() else {
        return;
    };
    let mut total: i64 = 0;
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    register.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_time, data| {
        let Some(events) = data else { return };
        for (_, event) in events.iter() {
            match event {
                DifferentialEvent::Batch(b) => total += count(b.length),
                DifferentialEvent::Merge(m) => {
                    if let Some(complete) = m.complete {
                        total += count(complete) - count(m.length1) - count(m.length2);
                    }
                }
                DifferentialEvent::Drop(d) => total -= count(d.length),
                _ => {}
            }
        }
        gauge.set(total);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_measures_delay() {
        let m = Metrics::new();
        m.records.with_label_values(&["t"]).inc_by(3);
        assert_eq!(m.frontier_delay(), 0.0);
        m.set_oldest_pending(Some(now_ms() - 2_000));
        assert!(m.frontier_delay() >= 2.0);
        let text = m.render();
        assert!(
            text.contains("pipeline_records_total{topic=\"t\"} 3"),
            "{text}"
        );
        assert!(text.contains("pipeline_frontier_delay_seconds 2"), "{text}");
    }
}
