//! The figures of one row of the ingress benchmark's table, however measured (wrk or
//! a produce loop), so the rows compare column by column.
//!
//! Why a module: the table, the ratio rows and both measurement kinds share this one
//! shape, and the percentiles come from [`benches::stats::Summary`] like every other
//! benchmark's.

use std::time::Duration;

use benches::stats::Summary;

/// Throughput and latency of one measurement (NaN where there is no figure).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    /// Requests (or records) answered successfully.
    pub(crate) requests: u64,
    /// Of those, per second.
    pub(crate) per_second: f64,
    /// Median latency.
    pub(crate) p50_ms: f64,
    /// 99th percentile latency.
    pub(crate) p99_ms: f64,
    /// Failed requests.
    pub(crate) failures: u64,
}

impl Figures {
    /// The figures of `latencies` measured over `elapsed`.
    pub(crate) fn of(mut latencies: Vec<Duration>, elapsed: Duration, failures: u64) -> Figures {
        let summary = Summary::of(&mut latencies);
        Figures {
            requests: latencies.len() as u64,
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: summary.map_or(f64::NAN, |s| s.p50_ms),
            p99_ms: summary.map_or(f64::NAN, |s| s.p99_ms),
            failures,
        }
    }

    /// One markdown row: `| name | in flight | requests | req/s | p50 | p99 | failures |`.
    pub(crate) fn row(&self, name: &str, connections: usize) -> String {
        format!(
            "| {name} | {connections} | {} | {:.0} | {:.2} | {:.2} | {} |",
            self.requests, self.per_second, self.p50_ms, self.p99_ms, self.failures
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_rows() {
        let f = Figures::of(
            (1..=100).map(Duration::from_millis).collect(),
            Duration::from_secs(2),
            3,
        );
        assert_eq!(f.row("x", 4), "| x | 4 | 100 | 50 | 50.00 | 99.00 | 3 |");
        let none = Figures::of(vec![], Duration::from_secs(1), 5);
        assert!(none.p50_ms.is_nan() && none.p99_ms.is_nan());
        assert_eq!((none.requests, none.failures), (0, 5));
    }
}
