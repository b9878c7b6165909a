//! Recovery time and memory against history length, with and without snapshots: a
//! measurement, not a pass/fail check of speed (`#[ignore]`: minutes of a shared
//! machine; run it on purpose and read the printed table).
//!
//! ```sh
//! cargo test -p pipeline --test snapshot_recovery -- --ignored --nocapture
//! PIPELINE_RECOVERY_SIZES=10000,100000 cargo test -p pipeline --test snapshot_recovery -- --ignored --nocapture
//! ```
//!
//! For each history size: the `pipeline` binary (2 workers, snapshots every second)
//! processes the whole history; its RSS is read once it caught up. Once a snapshot
//! covers every record, the job is killed (SIGKILL) and restarted twice: with snapshots
//! (restores the snapshot, replays nothing) and without (replays every record). Each
//! restart is timed from spawn to "ready and every input offset committed"
//! (`/v1/status`). The asserted parts: both restarts reach the same views.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use pipeline::Metrics;
use pipeline::snapshot::store::KafkaStore;
use support::*;

/// Resident set size of a process, in MiB (`VmRSS` of /proc).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn start(env: &Env, snapshots: bool, log: &str) -> Result<(Job, std::net::SocketAddr), BoxError> {
    let (http, grpc) = (free_addr(), free_addr());
    let mut args = job_args(env, http, grpc);
    args.extend(["-w".to_owned(), "2".to_owned()]);
    let enabled = if snapshots { "true" } else { "false" };
    let log = std::env::temp_dir().join(format!("{}{log}.log", env.prefix));
    let job = Job::start_with(
        env,
        &args,
        &log,
        &[
            ("PIPELINE__SNAPSHOT__ENABLED", enabled),
            ("PIPELINE__SNAPSHOT__INTERVAL_MS", "1000"),
        ],
    )?;
    Ok((job, http))
}

/// The newest snapshot's record count (the sum of its offsets).
async fn snapshot_covers(env: &Env) -> Result<i64, BoxError> {
    let (kafka, topic) = (env.cluster.kafka.clone(), env.names.snapshots.clone());
    let (loaded, _) = tokio::task::spawn_blocking(move || {
        pipeline::snapshot::load_newest(
            &mut KafkaStore::new(&kafka, &topic),
            &Metrics::new(),
            |_| Ok(()),
        )
    })
    .await??;
    Ok(loaded.map_or(0, |l| l.manifest.offsets.iter().map(|(_, _, o)| o).sum()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of minutes; run with --ignored --nocapture"]
async fn recovery_time_against_history() -> Result<(), BoxError> {
    let _serial = SERIAL.lock().await;
    eventbus::testkit::init_tracing();
    let sizes: Vec<usize> = std::env::var("PIPELINE_RECOVERY_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut rows = Vec::new();
    for size in sizes {
        let env = Env::new(6).await?;
        let result = measure(&env, size).await;
        env.cleanup().await;
        rows.push(result?);
    }
    println!(
        "\n| input events | first run: caught up | RSS | RSS per 1M events | restart with snapshot | restart, full replay | RSS after restore |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

async fn measure(env: &Env, size: usize) -> Result<String, BoxError> {
    let bus = env.cluster.bus()?;
    // About 3.4 records per order in the workload (created, updates, payment, restocks).
    let workload = workload(0x7e57 + size as u64, size * 10 / 34, 200, env);
    let records = workload.len();
    let timeout = Duration::from_secs(1_800);

    let started = Instant::now();
    let (mut first, http) = start(env, true, "first")?;
    let delivered = produce(
        bus.producer(),
        &env.names,
        &workload,
        256,
        None,
        Arc::new(AtomicUsize::new(0)),
    )
    .await?;
    wait_caught_up(env, http, timeout).await?;
    let first_s = started.elapsed().as_secs_f64();
    let rss = rss_mib(first.child.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    while snapshot_covers(env).await? < i64::try_from(records)? {
        assert!(
            Instant::now() < deadline,
            "no snapshot covers the history: {}",
            first.tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    first.kill();

    let started = Instant::now();
    let (mut restored, http) = start(env, true, "restored")?;
    wait_caught_up(env, http, timeout).await?;
    let restore_s = started.elapsed().as_secs_f64();
    let rss_restored = rss_mib(restored.child.id());
    let model = model_of(&delivered);
    let (stock, _) = rest_views(http, std::iter::empty()).await?;
    assert_eq!(
        stock,
        model.stock(),
        "restored from the snapshot: the model's stock"
    );
    restored.kill();

    let started = Instant::now();
    let (mut full, http) = start(env, false, "full")?;
    wait_caught_up(env, http, timeout).await?;
    let full_s = started.elapsed().as_secs_f64();
    let (stock, _) = rest_views(http, std::iter::empty()).await?;
    assert_eq!(stock, model.stock(), "full replay: the model's stock");
    full.kill();

    Ok(format!(
        "| {records} | {first_s:.1} s | {rss:.0} MiB | {:.0} MiB | {restore_s:.2} s | {full_s:.2} s | {rss_restored:.0} MiB |",
        rss / records as f64 * 1e6
    ))
}
