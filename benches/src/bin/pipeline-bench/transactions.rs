//! The services' Kafka transactions over one load, from their own `/metrics`: how many,
//! how long from begin to commit, and how much each carried.
//!
//! Why: both exactly-once writers (payment's batches, the pipeline's sink) pay one
//! transaction round (AddPartitions, EndTxn, markers) per commit, so the time and the
//! records per transaction are the first figures to read when the end-to-end latency
//! or the CPU per order moves. Histogram means come from `_sum` / `_count` deltas over
//! the step (the series summed over labels, as [`benches::metrics::sums`] reads them).
//!
//! Where each transaction's time goes comes from eventbus's
//! `eventbus_transaction_step_seconds{step}` (see `eventbus::transaction`): per step, its
//! time over the load divided by the transactions committed, so the steps of a writer
//! add up to about its whole transaction (plus the settle pause before it).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// The transaction figures of one writer over a step.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Writer {
    pub(crate) transactions: f64,
    /// Mean begin → commit, ms.
    pub(crate) mean_ms: Option<f64>,
    /// Mean input records (payment) or output records (sink) per transaction.
    pub(crate) records_per_transaction: Option<f64>,
    /// Mean epochs per transaction (the sink only).
    pub(crate) epochs_per_transaction: Option<f64>,
    /// Mean ms per committed transaction spent in each of [`STEPS`] (absent: no
    /// transaction, or a service without the step timers).
    pub(crate) steps_ms: BTreeMap<&'static str, f64>,
}

/// The timed steps of a transaction, in their order (eventbus's step names; `abort` is
/// left out: it is not part of a committed transaction).
pub(crate) const STEPS: [&str; 6] = ["settle", "begin", "send", "offsets", "deliveries", "commit"];

/// Mean ms per committed transaction of each step, from one service's scrapes.
fn steps_ms(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
) -> BTreeMap<&'static str, f64> {
    let name = |step: &str, what: &str| {
        format!("eventbus_transaction_step_seconds_{what}{{step=\"{step}\"}}")
    };
    let committed = delta(before, after, &name("commit", "count"));
    STEPS
        .iter()
        .filter_map(|step| {
            mean(1e3 * delta(before, after, &name(step, "sum")), committed).map(|ms| (*step, ms))
        })
        .collect()
}

/// Payment's and the pipeline sink's transactions over a step.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Transactions {
    pub(crate) payment: Writer,
    pub(crate) sink: Writer,
}

/// Scraped metric sums of both services at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape {
    pub(crate) payment: HashMap<String, f64>,
    pub(crate) pipeline: HashMap<String, f64>,
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)).max(0.0)
}

fn mean(sum: f64, count: f64) -> Option<f64> {
    (count > 0.0).then(|| sum / count)
}

impl Scrape {
    /// Both services' metrics now (empty maps for a service that does not answer).
    pub(crate) async fn now(http: &reqwest::Client, payment_url: &str, views_url: &str) -> Scrape {
        Scrape {
            payment: benches::metrics::scrape(http, payment_url).await,
            pipeline: benches::metrics::scrape(http, views_url).await,
        }
    }

    /// The transactions between `earlier` and this scrape.
    pub(crate) fn since(&self, earlier: &Scrape) -> Transactions {
        let (pb, pa) = (&earlier.payment, &self.payment);
        let (sb, sa) = (&earlier.pipeline, &self.pipeline);
        let payment_count = delta(pb, pa, "payment_transaction_duration_seconds_count");
        let sink_count = delta(sb, sa, "pipeline_sink_commit_seconds_count");
        Transactions {
            payment: Writer {
                transactions: payment_count,
                mean_ms: mean(
                    1e3 * delta(pb, pa, "payment_transaction_duration_seconds_sum"),
                    payment_count,
                ),
                records_per_transaction: mean(
                    delta(pb, pa, "payment_batch_records_sum"),
                    delta(pb, pa, "payment_batch_records_count"),
                ),
                epochs_per_transaction: None,
                steps_ms: steps_ms(pb, pa),
            },
            sink: Writer {
                transactions: sink_count,
                mean_ms: mean(
                    1e3 * delta(sb, sa, "pipeline_sink_commit_seconds_sum"),
                    sink_count,
                ),
                records_per_transaction: mean(
                    delta(sb, sa, "pipeline_sink_records_total"),
                    sink_count,
                ),
                epochs_per_transaction: mean(
                    delta(sb, sa, "pipeline_sink_epochs_per_transaction_sum"),
                    delta(sb, sa, "pipeline_sink_epochs_per_transaction_count"),
                ),
                steps_ms: steps_ms(sb, sa),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn means_come_from_sum_and_count_deltas() {
        let before = Scrape {
            payment: map(&[
                ("payment_transaction_duration_seconds_sum", 1.0),
                ("payment_transaction_duration_seconds_count", 10.0),
                ("payment_batch_records_sum", 100.0),
                ("payment_batch_records_count", 10.0),
            ]),
            pipeline: map(&[]),
        };
        let after = Scrape {
            payment: map(&[
                ("payment_transaction_duration_seconds_sum", 3.0),
                ("payment_transaction_duration_seconds_count", 20.0),
                ("payment_batch_records_sum", 400.0),
                ("payment_batch_records_count", 20.0),
            ]),
            pipeline: map(&[
                ("pipeline_sink_commit_seconds_sum", 0.5),
                ("pipeline_sink_commit_seconds_count", 5.0),
                ("pipeline_sink_records_total", 50.0),
                ("pipeline_sink_epochs_per_transaction_sum", 10.0),
                ("pipeline_sink_epochs_per_transaction_count", 5.0),
                (
                    "eventbus_transaction_step_seconds_count{step=\"commit\"}",
                    5.0,
                ),
                (
                    "eventbus_transaction_step_seconds_sum{step=\"commit\"}",
                    0.1,
                ),
                (
                    "eventbus_transaction_step_seconds_sum{step=\"offsets\"}",
                    0.05,
                ),
            ]),
        };
        let t = after.since(&before);
        assert_eq!(t.payment.transactions, 10.0);
        assert_eq!(t.payment.mean_ms, Some(200.0));
        assert_eq!(t.payment.records_per_transaction, Some(30.0));
        assert_eq!(t.sink.mean_ms, Some(100.0));
        assert_eq!(t.sink.records_per_transaction, Some(10.0));
        assert_eq!(t.sink.epochs_per_transaction, Some(2.0));
        // Step means per committed transaction; steps not timed are absent.
        assert_eq!(t.sink.steps_ms.get("commit"), Some(&20.0));
        assert_eq!(t.sink.steps_ms.get("offsets"), Some(&10.0));
        assert_eq!(t.sink.steps_ms.get("settle"), Some(&0.0));
        assert!(t.payment.steps_ms.is_empty(), "{:?}", t.payment.steps_ms);
        // Nothing committed in between: no means, not zeros.
        let none = after.since(&after);
        assert_eq!(none.payment.mean_ms, None);
        assert_eq!(none.sink.epochs_per_transaction, None);
    }
}
