//! Open-loop load: requests sent on a fixed schedule, measured from when they were due.
//!
//! # Why open loop
//!
//! A closed-loop generator (N clients, each sending its next request when the previous
//! one is answered) slows down exactly when the system under test does: while the
//! server stalls for a second, the clients send nothing, so the stall shows up as *one*
//! slow request instead of the hundreds that real users, who do not wait for each other,
//! would have seen. That is coordinated omission, and it makes tail latencies look
//! orders of magnitude better than they are. Here request `i` is due at
//! `start + i / rate`, whether or not earlier ones have been answered, and its latency
//! is counted from that due time, not from when it actually left: if the generator
//! itself falls behind (a busy 2-core machine), the delay is charged to the result, not
//! hidden.
//!
//! The one bound is [`Pace::max_in_flight`]: a request that would exceed it is not sent
//! but recorded as skipped (an error of the run), so that a hung server cannot make the
//! generator use unbounded memory, and the schedule still does not slow down.
//!
//! [`OrderMix`] makes the orders: deterministic per index (seed + index), so a run can
//! be repeated and a request can be generated in any order or in parallel.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

use crate::client::{Api, Line};

/// The schedule of an open-loop run.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Requests per second.
    pub rate: f64,
    /// How long requests are sent for.
    pub duration: Duration,
    /// Requests awaiting an answer at most; one more is skipped (and counted), never
    /// delayed.
    pub max_in_flight: usize,
    /// A request not answered within this is a failure.
    pub answer_timeout: Duration,
}

impl Pace {
    /// The number of requests the schedule holds: `rate × duration`, rounded.
    pub fn requests(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).round().max(0.0) as u64
    }

    /// When request `i` (0-based) is due.
    pub fn due(&self, start: Instant, i: u64) -> Instant {
        start + Duration::from_secs_f64(i as f64 / self.rate.max(f64::MIN_POSITIVE))
    }
}

/// Live counters of a run, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Requests answered with success.
    pub ok: AtomicU64,
    /// Requests answered with an error (or not answered in time).
    pub failed: AtomicU64,
    /// Requests not sent because [`Pace::max_in_flight`] were outstanding.
    pub skipped: AtomicU64,
}

impl Counters {
    /// `(sent, ok, failed, skipped)` now.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
        )
    }
}

/// Why a scheduled request has no answer.
#[derive(Debug, Clone)]
pub enum RequestError {
    /// Skipped: the in-flight limit was reached when it was due.
    NotSent(usize),
    /// Sent, but not answered within the answer timeout.
    NoAnswer(Duration),
    /// The client's error (its causes are its `source()`s).
    Failed(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::NotSent(n) => write!(f, "not sent: {n} requests already in flight"),
            RequestError::NoAnswer(t) => write!(f, "no answer within {t:?}"),
            RequestError::Failed(e) => Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the client's error stands for itself, so its source is ours.
            RequestError::Failed(e) => e.source(),
            _ => None,
        }
    }
}

/// What became of one scheduled request.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    /// The request's index (the run's first index plus its position in the schedule).
    pub index: u64,
    /// When it was due.
    pub due: Instant,
    /// When it actually left (`None` when skipped).
    pub sent: Option<Instant>,
    /// When its answer arrived (`None` when skipped or timed out).
    pub answered: Option<Instant>,
    /// The answer, or why there is none.
    pub result: Result<T, RequestError>,
}

impl<T> Outcome<T> {
    /// Due time → successful answer: the latency a user would have seen.
    pub fn latency(&self) -> Option<Duration> {
        match (&self.result, self.answered) {
            (Ok(_), Some(at)) => Some(at.saturating_duration_since(self.due)),
            _ => None,
        }
    }
}

/// A finished open-loop run.
#[derive(Debug)]
pub struct Run<T> {
    /// When request 0 was due.
    pub start: Instant,
    /// When the schedule ended (`start + duration`).
    pub end: Instant,
    /// Every scheduled request, in index order.
    pub outcomes: Vec<Outcome<T>>,
    /// The largest delay between a request's due time and its actual send: how far the
    /// generator itself fell behind (already included in the latencies).
    pub max_send_delay: Duration,
}

impl<T> Run<T> {
    /// Successful answers.
    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_ok()).count()
    }

    /// Successful answers per second of the schedule.
    pub fn achieved_rate(&self) -> f64 {
        let secs = (self.end - self.start).as_secs_f64();
        if secs > 0.0 {
            self.ok() as f64 / secs
        } else {
            0.0
        }
    }

    /// Latencies (due → answer) of the successful requests.
    pub fn latencies(&self) -> Vec<Duration> {
        self.outcomes.iter().filter_map(Outcome::latency).collect()
    }

    /// Up to `n` distinct error messages, with how often each occurred.
    pub fn error_samples(&self, n: usize) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for o in &self.outcomes {
            if let Err(e) = &o.result {
                let mut text = eventbus::chain(e);
                // Long answers (a whole problem document) would drown the report.
                if let Some((end, _)) = text.char_indices().nth(300) {
                    text.truncate(end);
                }
                *counts.entry(text).or_default() += 1;
            }
        }
        let mut v: Vec<(String, usize)> = counts.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(n);
        v
    }
}

/// Sends `pace.requests()` requests on the open-loop schedule, request `i` with index
/// `first_index + i` made by `send`, and returns once every sent request is answered
/// or has timed out (so within `duration + answer_timeout`).
///
/// `send` is called on the schedule's task (keep it cheap: build the future, do the
/// work inside it); the future runs on its own task so a slow answer delays nothing.
pub async fn open_loop<T, E, F, Fut>(
    pace: &Pace,
    counters: &Arc<Counters>,
    first_index: u64,
    mut send: F,
) -> Run<T>
where
    T: Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>> + Send + 'static,
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let total = pace.requests();
    let start = Instant::now();
    let mut tasks: JoinSet<Outcome<T>> = JoinSet::new();
    let mut outcomes = Vec::with_capacity(total as usize);
    let mut max_send_delay = Duration::ZERO;
    for i in 0..total {
        let due = pace.due(start, i);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        while let Some(done) = tasks.try_join_next() {
            if let Ok(o) = done {
                outcomes.push(o);
            }
        }
        let index = first_index + i;
        if tasks.len() >= pace.max_in_flight {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            outcomes.push(Outcome {
                index,
                due,
                sent: None,
                answered: None,
                result: Err(RequestError::NotSent(pace.max_in_flight)),
            });
            continue;
        }
        let sent = Instant::now();
        max_send_delay = max_send_delay.max(sent - due);
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let fut = send(index);
        let (counters, timeout) = (counters.clone(), pace.answer_timeout);
        tasks.spawn(async move {
            let result = match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(RequestError::Failed(Arc::from(e.into()))),
                Err(_) => Err(RequestError::NoAnswer(timeout)),
            };
            let answered = Instant::now();
            match &result {
                Ok(_) => counters.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.failed.fetch_add(1, Ordering::Relaxed),
            };
            Outcome {
                index,
                due,
                sent: Some(sent),
                answered: result.is_ok().then_some(answered),
                result,
            }
        });
    }
    let end = start + pace.duration;
    // Each task ends within answer_timeout of its send, so this ends too.
    while let Some(done) = tasks.join_next().await {
        if let Ok(o) = done {
            outcomes.push(o);
        }
    }
    outcomes.sort_by_key(|o| o.index);
    Run {
        start,
        end,
        outcomes,
        max_send_delay,
    }
}

/// Which SKUs orders use.
#[derive(Debug, Clone)]
pub enum Skus {
    /// A shared pool `SKU-000`, `SKU-001`, ...: orders contend for the same stock.
    Pool(usize),
    /// One line per order, of a SKU no other order uses: `<prefix><index>`. Its first
    /// `stock.updated` with a reservation is that order's, so it can be matched by key.
    Unique(String),
}

/// The shape of generated orders.
#[derive(Debug, Clone)]
pub struct OrderMix {
    /// Seed of the per-order random choices.
    pub seed: u64,
    /// Prefix of idempotency keys (make it unique per run).
    pub run: String,
    /// Share of orders sent over gRPC (the rest over REST).
    pub grpc_share: f64,
    /// The SKUs.
    pub skus: Skus,
    /// Lines per order at most (at least 1; [`Skus::Unique`] always uses 1).
    pub max_lines: usize,
    /// Share of orders by customers the payment gateway declines.
    pub declined_share: f64,
    /// Those customers (the services' `declined_customers`).
    pub declined_customers: Vec<String>,
}

/// One generated order.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// Its index.
    pub index: u64,
    /// The API it goes through.
    pub api: Api,
    /// Its idempotency key.
    pub key: String,
    /// The customer.
    pub customer: String,
    /// Its lines.
    pub lines: Vec<Line>,
}

impl OrderMix {
    /// Order `index`: the same mix and index always give the same order.
    pub fn order(&self, index: u64) -> OrderRequest {
        let mut rng = StdRng::seed_from_u64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let api = if rng.random_bool(self.grpc_share.clamp(0.0, 1.0)) {
            Api::Grpc
        } else {
            Api::Rest
        };
        let customer = if !self.declined_customers.is_empty()
            && rng.random_bool(self.declined_share.clamp(0.0, 1.0))
        {
            self.declined_customers[rng.random_range(0..self.declined_customers.len())].clone()
        } else {
            format!("load-customer-{}", rng.random_range(0..1000))
        };
        let lines = match &self.skus {
            Skus::Unique(prefix) => vec![Line {
                sku: unique_sku(prefix, index),
                quantity: 1,
                unit_price_minor: rng.random_range(199..=9_999),
            }],
            Skus::Pool(n) => (0..rng.random_range(1..=self.max_lines.max(1)))
                .map(|_| Line {
                    sku: pool_sku(rng.random_range(0..(*n).max(1))),
                    quantity: rng.random_range(1..=4),
                    unit_price_minor: rng.random_range(199..=9_999),
                })
                .collect(),
        };
        OrderRequest {
            index,
            api,
            key: format!("{}-{index}", self.run),
            customer,
            lines,
        }
    }
}

/// SKU number `i` of a [`Skus::Pool`].
pub fn pool_sku(i: usize) -> String {
    format!("SKU-{i:03}")
}

/// The SKU of order `index` under [`Skus::Unique`].
pub fn unique_sku(prefix: &str, index: u64) -> String {
    format!("{prefix}{index}")
}

/// The order index of a [`Skus::Unique`] SKU (`None` for any other key).
pub fn unique_index(prefix: &str, sku: &str) -> Option<u64> {
    sku.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_rate_times_duration() {
        let pace = Pace {
            rate: 200.0,
            duration: Duration::from_secs(3),
            max_in_flight: 10,
            answer_timeout: Duration::from_secs(1),
        };
        assert_eq!(pace.requests(), 600);
        let t = Instant::now();
        assert_eq!(pace.due(t, 100) - t, Duration::from_millis(500));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_answers_do_not_slow_the_schedule_and_count_from_the_due_time() {
        // Every answer takes 300 ms; 50 requests at 100/s must still all leave within
        // about half a second, and each latency must be at least the 300 ms.
        let pace = Pace {
            rate: 100.0,
            duration: Duration::from_millis(500),
            max_in_flight: 1000,
            answer_timeout: Duration::from_secs(5),
        };
        let counters = Arc::new(Counters::default());
        let run = open_loop(&pace, &counters, 10, |i| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<u64, String>(i)
        })
        .await;
        assert_eq!(run.outcomes.len(), 50);
        assert_eq!(run.ok(), 50);
        assert_eq!(run.outcomes[0].index, 10);
        let last_sent = run.outcomes.iter().filter_map(|o| o.sent).max().unwrap();
        assert!(last_sent - run.start < Duration::from_millis(700));
        assert!(
            run.latencies()
                .iter()
                .all(|l| *l >= Duration::from_millis(300))
        );
        assert_eq!(counters.snapshot(), (50, 50, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_over_the_in_flight_bound_are_skipped_not_delayed() {
        let pace = Pace {
            rate: 100.0,
            duration: Duration::from_millis(200),
            max_in_flight: 5,
            answer_timeout: Duration::from_millis(500),
        };
        let counters = Arc::new(Counters::default());
        let run = open_loop(&pace, &counters, 0, |_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<(), String>(())
        })
        .await;
        assert_eq!(run.outcomes.len(), 20);
        let (sent, ok, failed, skipped) = counters.snapshot();
        assert_eq!((sent, ok, failed, skipped), (5, 0, 5, 15));
        assert!(run.error_samples(3)[0].0.starts_with("not sent"));
    }

    #[test]
    fn orders_are_deterministic_and_unique_skus_round_trip() {
        let mix = OrderMix {
            seed: 1,
            run: "r".into(),
            grpc_share: 0.5,
            skus: Skus::Unique("BENCH-x-".into()),
            max_lines: 3,
            declined_share: 0.0,
            declined_customers: vec![],
        };
        let a = mix.order(42);
        assert_eq!(format!("{a:?}"), format!("{:?}", mix.order(42)));
        assert_eq!(a.lines.len(), 1);
        assert_eq!(a.key, "r-42");
        assert_eq!(unique_index("BENCH-x-", &a.lines[0].sku), Some(42));
        assert_eq!(unique_index("BENCH-x-", "SKU-001"), None);
        let pool = OrderMix {
            skus: Skus::Pool(5),
            ..mix
        };
        let grpc = (0..1000)
            .filter(|i| pool.order(*i).api == Api::Grpc)
            .count();
        assert!((400..600).contains(&grpc), "{grpc}");
        assert!((0..100).all(|i| {
            let o = pool.order(i);
            (1..=3).contains(&o.lines.len()) && o.lines.iter().all(|l| l.sku < pool_sku(5))
        }));
    }
}
