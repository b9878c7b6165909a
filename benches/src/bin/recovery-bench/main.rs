//! `recovery-bench` (`make bench-recovery`): how long the Inventory Service takes to be
//! ready and caught up again after a `kill -9`, against the length of its history, with
//! and without state snapshots; and its memory. Figures, not assertions.
//!
//! ```sh
//! make bench-recovery                                  # full: 100k, 1M, 5M events
//! make bench-recovery RECOVERY_MODE=short              # 20k and 100k, bounded only
//! target/release/recovery-bench --sizes 100000,1000000 --workloads bounded --orders 5000
//! ```
//!
//! Per workload (see `workload.rs`: **bounded** live state, or **growing**), on a stack
//! of its own (every topic under a unique prefix, RF 3, 6 partitions; only topics and
//! schemas, the job is this benchmark's process):
//!
//! 1. the `pipeline` binary (`-w 2`, snapshots on every `--snapshot-interval-ms`) runs
//!    while the history is written straight onto its inputs, up to the next size;
//! 2. once it has caught up and a snapshot covers every record, its RSS is read and it
//!    is killed with SIGKILL;
//! 3. **with snapshots**: a new process is started and timed from spawn until
//!    `/v1/status` says ready with every input offset committed (fencing, the progress
//!    topic's tail, the snapshot, the rebuild, the replay of what followed it); RSS;
//!    SIGKILL;
//! 4. **without** (snapshots off): the same, replaying the whole history; its views
//!    (`/v1/inventory`, versions included) must equal the restored ones; SIGKILL;
//! 5. the job is started again with snapshots and the next size's history follows.
//!
//! Sizes are cumulative (the 1M history is the 100k one plus 900k more). The job, the
//! writer and the three brokers share the machine.

mod job;
mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::scenario::GatewayRules;
use benches::stack::{Stack, StackOptions};
use clap::Parser;
use pipeline::snapshot::store::{KafkaStore, Store};

use crate::job::{Job, JobSpec, rss_mib};
use crate::workload::{INPUTS, Kind, Workload, produce, producer};

/// The command line; its doc comments are `--help`'s text.
#[derive(Parser)]
#[command(
    about = "Recovery of the Inventory Service after kill -9 against history length, with and without snapshots, and its RSS"
)]
struct Args {
    /// `short` (20k and 100k events, bounded workload) or `full` (100k, 1M, 5M, both
    /// workloads); `--sizes` and `--workloads` override.
    #[arg(long, default_value = "full")]
    mode: String,
    /// History sizes (input events ever written), increasing, comma-separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<u64>,
    /// Workloads, comma-separated: bounded, growing.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<Kind>,
    /// Bounded workload: the orders (created once, then changed again and again).
    #[arg(long, default_value_t = 5_000)]
    orders: usize,
    /// SKUs of both workloads.
    #[arg(long, default_value_t = 500)]
    skus: u32,
    /// Bounded workload: share of events that are payment outcomes (which end an order).
    #[arg(long, default_value_t = 0.001)]
    payment_share: f64,
    /// Timely worker threads of the job.
    #[arg(long, default_value_t = 2)]
    workers: u64,
    /// The job's `snapshot.interval_ms`.
    #[arg(long, default_value_t = 5_000)]
    snapshot_interval_ms: u64,
    /// No full replay above this many events (it takes long; the row says so).
    #[arg(long, default_value_t = u64::MAX)]
    full_replay_max: u64,
    /// Longest wait for the job to catch up, seconds.
    #[arg(long, default_value_t = 3_600)]
    timeout_secs: u64,
    /// Where `recovery.md` and `recovery.json` go.
    #[arg(long, default_value = "target/bench-recovery")]
    out: std::path::PathBuf,
}

/// One measured point.
#[derive(Debug, serde::Serialize)]
struct Row {
    workload: Kind,
    events: u64,
    orders: u64,
    skus: u32,
    write_rate: f64,
    first_run_s: f64,
    rss_first_mib: f64,
    snapshot_bytes: f64,
    snapshot_entries: f64,
    restore_s: f64,
    restore_load_s: f64,
    replayed_after_snapshot: f64,
    rss_restored_mib: f64,
    full_replay_s: Option<f64>,
    rss_full_mib: Option<f64>,
    views_equal: Option<bool>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let short = args.mode == "short";
    if args.sizes.is_empty() {
        args.sizes = if short {
            vec![20_000, 100_000]
        } else {
            vec![100_000, 1_000_000, 5_000_000]
        };
    }
    if args.workloads.is_empty() {
        args.workloads = if short {
            vec![Kind::Bounded]
        } else {
            vec![Kind::Bounded, Kind::Growing]
        };
    }
    if short {
        args.orders = args.orders.min(1_000);
    }
    if args.sizes.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--sizes must increase");
    }
    let mut rows = Vec::new();
    for kind in args.workloads.clone() {
        let stack = Stack::start_with(
            GatewayRules::default(),
            &[],
            // Topics and schemas only: the job is this benchmark's own process.
            &StackOptions {
                only: vec!["none"],
                pipeline_env: vec![],
            },
        )
        .await
        .context("creating the stack's topics")?;
        let result = run(&stack, &args, kind, &mut rows).await;
        stack.shutdown().await;
        result?;
    }
    let table = report(&rows);
    println!("{table}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("recovery.md"), &table)?;
    std::fs::write(
        args.out.join("recovery.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": benches::machine::describe(),
            "args": {
                "sizes": args.sizes, "orders": args.orders, "skus": args.skus,
                "payment_share": args.payment_share, "workers": args.workers,
                "snapshot_interval_ms": args.snapshot_interval_ms,
            },
            "rows": rows,
        }))?,
    )?;
    Ok(())
}

/// The end offset of every input partition that has records.
async fn ends(stack: &Stack, topics: &[String]) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut out = BTreeMap::new();
    for topic in topics {
        for (p, high) in eventbus::reader::high_watermarks(&stack.kafka, topic).await? {
            if high > 0 {
                out.insert((topic.clone(), p), high);
            }
        }
    }
    Ok(out)
}

/// The input records the newest snapshot covers (the sum of its offsets).
async fn snapshot_covers(stack: &Stack, topic: &str) -> anyhow::Result<i64> {
    let (kafka, topic) = (stack.kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let mut store = KafkaStore::new(&kafka, &topic);
        let Some(marker) = store.markers()?.first().copied() else {
            return Ok(0);
        };
        let manifest = pipeline::snapshot::read_manifest(&mut store, marker)?;
        Ok(manifest.offsets.iter().map(|(_, _, o)| o).sum())
    })
    .await?
}

async fn run(stack: &Stack, args: &Args, kind: Kind, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (names, ids) = stack.pipeline_inputs().await?;
    let topics: [String; INPUTS] = names.inputs.clone();
    let timeout = Duration::from_secs(args.timeout_secs);
    let on = JobSpec {
        workers: args.workers,
        snapshots: true,
        interval_ms: args.snapshot_interval_ms,
    };
    let off = JobSpec {
        snapshots: false,
        ..on
    };
    let seed = 0x7ec0 + kind as u64;
    let mut workload = Some(Workload::new(
        kind,
        seed,
        ids,
        args.orders,
        args.skus,
        args.payment_share,
    ));
    let producer = producer(&stack.kafka)?;
    let mut written = 0u64;
    let mut job = Job::start(stack, &on, "pipeline-first")?;
    for &size in &args.sizes {
        eprintln!("[{kind:?}] writing events {written}..{size}");
        let started = Instant::now();
        let (count, topics_w, producer_w) = (size - written, topics.clone(), producer.clone());
        let mut w = workload.take().expect("workload");
        let w = tokio::task::spawn_blocking(move || {
            produce(&producer_w, &topics_w, &mut w, count).map(|()| w)
        })
        .await??;
        let write_rate = count as f64 / started.elapsed().as_secs_f64();
        let orders = w.orders();
        workload = Some(w);
        written = size;
        let ends = ends(stack, &topics).await?;
        let total: i64 = ends.values().sum();
        if u64::try_from(total)? != size {
            bail!("the inputs hold {total} records, {size} were written");
        }
        let first_run = job.wait_caught_up(&ends, started, timeout).await?;
        eprintln!(
            "[{kind:?}] {size} events: written at {write_rate:.0}/s, caught up after {:.1} s; waiting for a snapshot of all",
            first_run.as_secs_f64()
        );
        let deadline = Instant::now()
            + Duration::from_secs(120)
            + 2 * Duration::from_millis(args.snapshot_interval_ms);
        while snapshot_covers(stack, &names.snapshots).await? < total {
            if Instant::now() > deadline {
                bail!("no snapshot covers the history: see {}", job.log.display());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (rss_first, _) = rss_mib(job.pid());
        job.kill();

        // With snapshots.
        let started = Instant::now();
        let mut restored = Job::start(stack, &on, &format!("pipeline-restore-{size}"))?;
        let restore = restored.wait_caught_up(&ends, started, timeout).await?;
        let (rss_restored, _) = rss_mib(restored.pid());
        let metrics = restored.metrics().await;
        let views = restored.inventory().await?;
        restored.kill();
        let metric = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
        eprintln!(
            "[{kind:?}] {size} events: restored in {:.2} s",
            restore.as_secs_f64()
        );

        // Without: the whole history replayed.
        let (mut full_s, mut rss_full, mut equal) = (None, None, None);
        if size <= args.full_replay_max {
            let started = Instant::now();
            let mut full = Job::start(stack, &off, &format!("pipeline-replay-{size}"))?;
            let replay = full.wait_caught_up(&ends, started, timeout).await?;
            rss_full = Some(rss_mib(full.pid()).0);
            equal = Some(full.inventory().await? == views);
            full.kill();
            full_s = Some(replay.as_secs_f64());
            eprintln!(
                "[{kind:?}] {size} events: full replay in {:.2} s",
                replay.as_secs_f64()
            );
        }
        rows.push(Row {
            workload: kind,
            events: size,
            orders,
            skus: args.skus,
            write_rate,
            first_run_s: first_run.as_secs_f64(),
            rss_first_mib: rss_first,
            snapshot_bytes: metric("pipeline_snapshot_bytes"),
            snapshot_entries: metric("pipeline_snapshot_restored_entries"),
            restore_s: restore.as_secs_f64(),
            restore_load_s: metric("pipeline_snapshot_load_seconds"),
            replayed_after_snapshot: metric("pipeline_replayed_total"),
            rss_restored_mib: rss_restored,
            full_replay_s: full_s,
            rss_full_mib: rss_full,
            views_equal: equal,
        });
        job = Job::start(stack, &on, &format!("pipeline-after-{size}"))?;
    }
    job.kill();
    Ok(())
}

fn report(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | events (history) | live keys: orders / SKUs | snapshot | recovery with snapshot | of which progress + snapshot read | records replayed after it | full replay | RSS caught up | RSS per 1M events | RSS after restore | RSS after full replay | same views |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let opt = |v: Option<f64>, unit: &str| {
            v.map_or("not run".to_owned(), |v| format!("{v:.2}{unit}"))
        };
        out.push_str(&format!(
            "| {:?} | {} | {} / {} | {:.2} MB, {:.0} keys | {:.2} s | {:.2} s | {:.0} | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {} | {} |\n",
            r.workload,
            r.events,
            r.orders,
            r.skus,
            r.snapshot_bytes / 1e6,
            r.snapshot_entries,
            r.restore_s,
            r.restore_load_s,
            r.replayed_after_snapshot,
            opt(r.full_replay_s, " s"),
            r.rss_first_mib,
            r.rss_first_mib / r.events as f64 * 1e6,
            r.rss_restored_mib,
            r.rss_full_mib.map_or("-".to_owned(), |v| format!("{v:.0} MiB")),
            r.views_equal.map_or("-", |e| if e { "yes" } else { "NO" }),
        ));
    }
    out
}
