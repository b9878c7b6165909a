//! `pipeline-latency`: the Inventory Service (the `pipeline` binary) alone on the real
//! cluster: figures, not assertions.
//!
//! ```sh
//! cargo build --release -p pipeline -p benches --bin pipeline --bin pipeline-latency
//! target/release/pipeline-latency                  # defaults below
//! target/release/pipeline-latency --rate 2000 --seconds 30 --workers 2 \
//!     --ramp 1000,2000,4000,8000,12000 --step-seconds 12 --epoch-ms 10
//! ```
//!
//! On a [`Stack`] of its own (every topic under a unique prefix, RF 3, 6 partitions) it
//! starts only the `pipeline` binary found beside this one (`target/release` or
//! `target/debug`: build both with the same profile) and measures:
//!
//! 1. **idle CPU** of the job: CPU time from `/proc/<pid>/stat` over `--idle-seconds`
//!    (10) with no input, and `ps -o %cpu` (lifetime average); `--idle-only` stops there;
//! 2. **Kafka's floor**: a probe record produced (acks=all) to a plain topic and read
//!    back by a `read_committed` consumer, append (ack) → readable;
//! 3. **latency at an offered load**: a background stream of mixed order, payment and
//!    stock events at `--rate` records/s, plus `--probes` probe records per second, each
//!    a `stock.adjusted` of a fresh SKU; latency is from the probe's append
//!    (acknowledged by the brokers) to its `stock.updated` being readable by a
//!    `read_committed` consumer; p50 / p99 / max (nearest rank), and the same from the
//!    send call;
//! 4. **the highest rate sustained without growing lag**: steps of `--ramp` rates,
//!    `--step-seconds` each; a step is sustained when the job's summed input lag at its
//!    end is under half a second of input and did not grow over its last seconds (the
//!    largest frontier delay of the step is reported alongside).
//!
//! The load generator, the job and the three Kafka brokers share the machine, so the
//! figures are upper bounds for latency and lower bounds for throughput. The job's log
//! is kept in `target/stack-logs/<prefix>/pipeline.log`.
//!
//! [`Stack`]: benches::stack::Stack

mod load;
mod probes;
mod ramp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use benches::machine::{process_cpu_seconds, thread_cpu_seconds};
use benches::scenario::GatewayRules;
use benches::stack::{Stack, StackOptions};
use benches::topics;
use clap::Parser;

use crate::load::{LoadGen, STOCK_ADJUSTED, producer, run_load};
use crate::probes::{Probes, send_probes, summary, watch};

/// The command line; its doc comments are `--help`'s text.
#[derive(Parser)]
#[command(
    about = "The Inventory Service alone: idle CPU, probe latency under an offered input rate beside \
             Kafka's floor, and the highest input rate without growing lag"
)]
pub(crate) struct Args {
    /// Background input records per second while the latency is measured.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of probes under that load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Probe records per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    probes: u64,
    /// Input rates of the ramp, records/s, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,8000,12000"
    )]
    ramp: Vec<u64>,
    /// No ramp: stop after the latency under `--rate`.
    #[arg(long)]
    no_ramp: bool,
    /// Seconds per ramp step.
    #[arg(long, default_value_t = 12)]
    step_seconds: u64,
    /// Timely worker threads of the job.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    workers: u64,
    /// The job's epoch length.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    epoch_ms: u64,
    /// Seconds the idle CPU is measured over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    idle_seconds: u64,
    /// Measure only the idle CPU.
    #[arg(long)]
    idle_only: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (workers, epoch_ms) = (args.workers.to_string(), args.epoch_ms.to_string());
    let options = StackOptions {
        only: vec!["pipeline"],
        // Lag gauges every second (the default is every 5 s) for the ramp's samples.
        pipeline_env: vec![("PIPELINE__SOURCE__STATISTICS_INTERVAL_MS", "1000".into())],
    };
    let stack = Stack::start_with(
        GatewayRules::default(),
        &["-w", &workers, "--epoch-ms", &epoch_ms],
        &options,
    )
    .await
    .context("starting the pipeline (build it with the same profile as this binary: `cargo build -p pipeline`)")?;
    let result = bench(&stack, &args).await;
    stack.shutdown().await;
    result
}

/// Idle CPU, then (unless `--idle-only`) the floor, the latency under load and the ramp.
async fn bench(stack: &Stack, args: &Args) -> anyhow::Result<()> {
    let pid = stack
        .pid("pipeline")
        .context("the pipeline is not running")?;
    let http = reqwest::Client::new();
    println!(
        "# Inventory Service benchmark: {} worker(s), epoch {} ms, 6 partitions per topic, RF 3",
        args.workers, args.epoch_ms
    );

    // 1. Idle CPU.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, t0, threads0) = (
        process_cpu_seconds(pid),
        Instant::now(),
        thread_cpu_seconds(pid),
    );
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle = (process_cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    let mut threads: Vec<(String, f64)> = thread_cpu_seconds(pid)
        .into_iter()
        .map(|(name, cpu)| {
            let before = threads0.get(&name).copied().unwrap_or(0.0);
            (name, cpu - before)
        })
        .filter(|(_, cpu)| *cpu > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let busiest: Vec<String> = threads
        .iter()
        .take(6)
        .map(|(name, cpu)| format!("{name} {:.0} ms", cpu * 1e3))
        .collect();
    let ps = std::process::Command::new("ps")
        .args(["-o", "%cpu=,cputime=", "-p", &pid.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "idle CPU over {} s: {idle:.2}% of one core (ps -o %cpu,cputime: {ps}); busiest threads: {}",
        args.idle_seconds,
        busiest.join(", ")
    );
    if args.idle_only {
        return Ok(());
    }

    let (names, ids) = stack.pipeline_inputs().await?;
    let probe_producer = producer(&stack.kafka, "probes")?;
    let group = |what: &str| format!("{}bench-{what}", stack.prefix);

    // 2. Kafka's floor.
    let floor_topic = stack.topic("bench-floor");
    let admin = topics::create(&stack.kafka, &[&floor_topic], 6)
        .await
        .context("creating the floor topic")?;
    let floor = Arc::new(Probes::default());
    let measured = async {
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch(
            &stack.kafka,
            group("floor"),
            &floor_topic,
            "FLOOR-",
            Arc::clone(&floor),
            Arc::clone(&stop),
        )?;
        send_probes(
            &probe_producer,
            &floor_topic,
            "FLOOR-",
            None,
            args.probes,
            5,
            &floor,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        anyhow::Ok(())
    }
    .await;
    let _ = admin.delete_topics(&[&floor_topic]).await;
    measured?;
    let (floor_ack, floor_send, floor_sent) = floor.latencies();
    println!(
        "{}",
        summary(
            "kafka floor, append -> readable (read_committed)",
            floor_ack,
            floor_sent
        )
    );
    println!(
        "{}",
        summary("kafka floor, send -> readable", floor_send, floor_sent)
    );

    // 3. Latency at the offered load.
    let load_producer = Arc::new(producer(&stack.kafka, "load")?);
    let total_sent = Arc::new(AtomicU64::new(0));
    let run_step = |rate: u64, load_gen: LoadGen, stop: Arc<AtomicBool>| {
        let producer = Arc::clone(&load_producer);
        let topics = names.inputs.clone();
        let total_sent = Arc::clone(&total_sent);
        std::thread::spawn(move || {
            let mut load_gen = load_gen;
            let sent = run_load(&producer, &topics, &mut load_gen, rate, &stop);
            total_sent.fetch_add(sent, Ordering::Relaxed);
            (load_gen, sent)
        })
    };
    let probes = Arc::new(Probes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(
        &stack.kafka,
        group("watch"),
        &names.stock_updated,
        "LAT-",
        Arc::clone(&probes),
        Arc::clone(&stop),
    )?;
    let load_stop = Arc::new(AtomicBool::new(false));
    let load = run_step(args.rate, LoadGen::new(7, ids, 500), Arc::clone(&load_stop));
    let started = Instant::now();
    let c0 = process_cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await; // warm up
    send_probes(
        &probe_producer,
        &names.inputs[STOCK_ADJUSTED],
        "LAT-",
        Some(ids[STOCK_ADJUSTED]),
        args.probes,
        args.seconds,
        &probes,
    )
    .await;
    let cpu = (process_cpu_seconds(pid) - c0) / started.elapsed().as_secs_f64() * 100.0;
    load_stop.store(true, Ordering::Relaxed);
    let (load_gen, sent) = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let achieved = sent as f64 / started.elapsed().as_secs_f64();
    let m = benches::metrics::scrape(&http, &stack.endpoints.views_rest).await;
    let (lat_ack, lat_send, lat_sent) = probes.latencies();
    println!(
        "offered load {} records/s (achieved {achieved:.0}/s) for {} s + {} probes/s; job CPU {cpu:.0}% of one core",
        args.rate, args.seconds, args.probes
    );
    println!(
        "{}",
        summary(
            "pipeline, append -> stock.updated readable",
            lat_ack,
            lat_sent
        )
    );
    println!(
        "{}",
        summary(
            "pipeline, send -> stock.updated readable",
            lat_send,
            lat_sent
        )
    );
    let txn = m
        .get("pipeline_sink_commit_seconds_count")
        .copied()
        .unwrap_or(0.0);
    println!(
        "sink: {} transactions, mean commit {:.1} ms, mean {:.1} epochs per transaction",
        txn,
        m.get("pipeline_sink_commit_seconds_sum")
            .copied()
            .unwrap_or(0.0)
            / txn.max(1.0)
            * 1e3,
        m.get("pipeline_sink_epochs_per_transaction_sum")
            .copied()
            .unwrap_or(0.0)
            / txn.max(1.0)
    );

    // 4. Ramp: the highest rate without growing lag.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("ramp ({} s per step):", args.step_seconds);
    if args.no_ramp || args.ramp.is_empty() {
        return Ok(());
    }
    let ramp = ramp::Ramp {
        http: &http,
        metrics_url: &stack.endpoints.views_rest,
        pid,
        step_seconds: args.step_seconds,
    };
    match ramp.run(&args.ramp, load_gen, run_step).await? {
        Some(rate) => println!("highest sustained input rate: {rate:.0} records/s"),
        None => println!("no step was sustained"),
    }
    println!(
        "records produced in all: {}",
        total_sent.load(Ordering::Relaxed)
    );
    Ok(())
}
