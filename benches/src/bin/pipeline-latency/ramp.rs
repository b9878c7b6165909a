//! The ramp: offered input rates in steps, each judged sustained or not from the job's
//! own lag gauges, until one is not.
//!
//! Why the job's gauges and not probes: at the ramp's rates the question is whether the
//! job keeps up at all; its summed input lag (scraped every second) answers that
//! directly, and the frontier delay is reported beside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use benches::machine::process_cpu_seconds;
use benches::metrics::scrape;

use crate::load::LoadGen;

/// What the ramp watches.
pub(crate) struct Ramp<'a> {
    /// The client the metrics are scraped with.
    pub(crate) http: &'a reqwest::Client,
    /// The job's HTTP base URL (`/metrics` below it).
    pub(crate) metrics_url: &'a str,
    /// The job's process id (its CPU).
    pub(crate) pid: u32,
    /// Seconds per step.
    pub(crate) step_seconds: u64,
}

impl Ramp<'_> {
    /// The summed input lag of the job now (0 when it does not answer).
    async fn lag(&self) -> f64 {
        scrape(self.http, self.metrics_url)
            .await
            .get("pipeline_input_lag")
            .copied()
            .unwrap_or(0.0)
    }

    /// Runs `rates` in turn with `run_step` (which starts the load on a thread and hands
    /// the generator back when stopped), printing one line per step; stops after the
    /// first step not sustained. Returns the highest achieved rate of a sustained step.
    pub(crate) async fn run<F>(
        &self,
        rates: &[u64],
        mut load_gen: LoadGen,
        run_step: F,
    ) -> anyhow::Result<Option<f64>>
    where
        F: Fn(u64, LoadGen, Arc<AtomicBool>) -> JoinHandle<(LoadGen, u64)>,
    {
        let mut best = None;
        for &rate in rates {
            let stop = Arc::new(AtomicBool::new(false));
            let load = run_step(rate, load_gen, Arc::clone(&stop));
            let started = Instant::now();
            let c0 = process_cpu_seconds(self.pid);
            let mut lags = Vec::new();
            let mut max_delay: f64 = 0.0;
            for _ in 0..self.step_seconds {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let m = scrape(self.http, self.metrics_url).await;
                lags.push(m.get("pipeline_input_lag").copied().unwrap_or(0.0));
                max_delay = max_delay.max(
                    m.get("pipeline_frontier_delay_seconds")
                        .copied()
                        .unwrap_or(0.0),
                );
            }
            stop.store(true, Ordering::Relaxed);
            let (returned, sent) = load
                .join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
            load_gen = returned;
            let achieved = sent as f64 / started.elapsed().as_secs_f64();
            let cpu =
                (process_cpu_seconds(self.pid) - c0) / started.elapsed().as_secs_f64() * 100.0;
            let tail = &lags[lags.len().saturating_sub(4)..];
            let growing = tail.windows(2).all(|w| w[1] > w[0]) && tail.len() > 1;
            let end_lag = tail.last().copied().unwrap_or(0.0);
            // Sustained: the lag at the end is under half a second of input and not
            // growing. (The frontier delay is reported, not judged: on a shared 2-core
            // machine a stalled broker makes it spike without the job falling behind.)
            let sustained = end_lag <= (achieved * 0.5).max(100.0) && !growing;
            println!(
                "  offered {rate}/s (achieved {achieved:.0}/s): input lag at end {end_lag:.0} records (last samples {tail:?}), \
                 max frontier delay {max_delay:.2} s, job CPU {cpu:.0}% -> {}",
                if sustained {
                    "sustained"
                } else {
                    "NOT sustained"
                }
            );
            if !sustained {
                break;
            }
            best = Some(achieved);
            // Drain before the next step.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && self.lag().await > 0.0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(best)
    }
}
