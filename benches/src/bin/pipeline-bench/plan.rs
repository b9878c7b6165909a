//! The knobs of one run: the command line and what each mode runs.
//!
//! Why apart from the run: `--help` is the benchmark's documentation of its knobs
//! (`benches/README.md` points at it), and [`Plan`] is written into `bench.json` as the
//! record of what was run, so both are read on their own.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// How long a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Two loads of 20 s: under 5 minutes in all.
    Short,
    /// Five loads of 60 s.
    Full,
}

// The command line; its doc comments are `--help`'s text.
#[derive(Parser)]
#[command(
    about = "The order pipeline's end-to-end latency and sustained load beside Kafka's floor"
)]
pub(crate) struct Args {
    /// `short` (under 5 minutes) or `full`.
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) mode: Mode,
    /// Folder for bench.json and bench.md.
    #[arg(long, default_value = "target/bench")]
    pub(crate) out: PathBuf,
    /// Offered loads in orders/s, comma-separated (default: by mode).
    #[arg(long, value_delimiter = ',')]
    pub(crate) rates: Option<Vec<f64>>,
    /// Seconds per load (default: by mode).
    #[arg(long)]
    pub(crate) step_secs: Option<u64>,
    /// ProducerPerformance records (default: by mode).
    #[arg(long)]
    pub(crate) producer_records: Option<u64>,
    /// EndToEndLatency records (default: by mode).
    #[arg(long)]
    pub(crate) e2e_records: Option<u64>,
    /// Transactions of the transactional hop (default: by mode).
    #[arg(long)]
    pub(crate) txn_records: Option<u64>,
    /// The transactional hop's pause after each commit, ms (default: eventbus's settle
    /// pause, what the services use; 0 shows what back-to-back transactions cost).
    #[arg(long)]
    pub(crate) txn_settle_ms: Option<u64>,
    /// Timely worker threads of the pipeline.
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    /// Share of orders sent over gRPC instead of REST.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) grpc_share: f64,
    /// A load is sustained only if its end-to-end p99 is below this.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) p99_limit_ms: f64,
    /// A load is sustained only if its backlog drains within this after it stops.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) drain_limit_s: f64,
    /// Units each SKU is restocked with before the loads.
    #[arg(long, default_value_t = 1000)]
    pub(crate) restock_units: i64,
    /// Skip the restock (orders then oversell, which the pipeline shows, not refuses).
    #[arg(long)]
    pub(crate) no_restock: bool,
    /// `fetch.wait.max.ms` of the matching consumer (the most it adds to a latency).
    #[arg(long, default_value_t = 10)]
    pub(crate) fetch_wait_ms: u64,
    /// Requests awaiting an answer at most; more are skipped and counted as errors.
    #[arg(long, default_value_t = 5000)]
    pub(crate) max_in_flight: usize,
    /// Run every load even after one was overloaded (backlog not drained, errors, or
    /// under 95 % accepted).
    #[arg(long)]
    pub(crate) keep_going: bool,
    /// Skip Kafka's floor (no ratios then).
    #[arg(long)]
    pub(crate) skip_floor: bool,
    /// Measure only Kafka's floor (needs only the cluster).
    #[arg(long, conflicts_with = "skip_floor")]
    pub(crate) floor_only: bool,
}

/// What a mode runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    /// Offered loads, orders/s, in the order they run.
    pub(crate) rates: Vec<f64>,
    /// Seconds per load.
    pub(crate) step_s: u64,
    /// ProducerPerformance records.
    pub(crate) producer_records: u64,
    /// EndToEndLatency records.
    pub(crate) e2e_records: u64,
    /// Transactions of the transactional hop (one record each).
    pub(crate) txn_records: u64,
    /// The transactional hop's settle pause, ms.
    pub(crate) txn_settle_ms: u64,
    /// `fetch.wait.max.ms` of the readers (the matcher's and the transactional hop's).
    pub(crate) fetch_wait_ms: u64,
    /// Orders/s of the warm-up.
    pub(crate) warmup_rate: f64,
    /// Seconds of the warm-up.
    pub(crate) warmup_s: u64,
    /// How long to wait for a backlog to drain before giving up on it.
    pub(crate) drain_wait_s: u64,
    /// Pause between loads (payments settle, the pipeline idles).
    pub(crate) settle_s: u64,
}

impl Plan {
    /// The plan of `args`' mode with `args`' overrides.
    pub(crate) fn of(args: &Args) -> Plan {
        let settle_ms = args
            .txn_settle_ms
            .unwrap_or(eventbus::transaction::DEFAULT_SETTLE.as_millis() as u64);
        let mut plan = match args.mode {
            Mode::Short => Plan {
                rates: vec![50.0, 200.0],
                step_s: 20,
                producer_records: 20_000,
                e2e_records: 2_000,
                txn_records: 200,
                txn_settle_ms: settle_ms,
                fetch_wait_ms: args.fetch_wait_ms,
                warmup_rate: 20.0,
                warmup_s: 3,
                drain_wait_s: 15,
                settle_s: 2,
            },
            Mode::Full => Plan {
                rates: vec![50.0, 100.0, 200.0, 400.0, 800.0],
                step_s: 60,
                producer_records: 200_000,
                e2e_records: 10_000,
                txn_records: 1_000,
                txn_settle_ms: settle_ms,
                fetch_wait_ms: args.fetch_wait_ms,
                warmup_rate: 20.0,
                warmup_s: 5,
                drain_wait_s: 60,
                settle_s: 5,
            },
        };
        if let Some(r) = &args.rates {
            plan.rates = r.clone();
        }
        if let Some(s) = args.step_secs {
            plan.step_s = s;
        }
        if let Some(n) = args.producer_records {
            plan.producer_records = n;
        }
        if let Some(n) = args.e2e_records {
            plan.e2e_records = n;
        }
        if let Some(n) = args.txn_records {
            plan.txn_records = n;
        }
        plan
    }
}
