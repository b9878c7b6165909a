//! State snapshots against the real cluster and registry (`make up`): each test has its
//! own topics (the snapshot topic included), subjects and transactional id, and runs the
//! job in-process so that it can read its metrics directly.
//!
//! - `restore_equals_full_replay_at_any_worker_count`: a job at 2 workers writes
//!   snapshots to the snapshot topic while input arrives; a restart at 1 worker restores
//!   the newest one and replays fewer records than a full replay (3 workers, snapshots
//!   off), with the same views (versions included) as the full replay and the model; a
//!   corrupt newer snapshot is skipped (metric) for the previous one at 3 workers while
//!   new input arrives, and the chunks of an older write without a manifest are swept; 2 processes x 1 worker restore it too; the exactly-once audit
//!   passes over every incarnation; input
//!   older than the snapshot deleted (retention) → the job still recovers the model.
//! - `killed_repeatedly_with_snapshots_is_exactly_once`: the binary with snapshots on is
//!   killed (SIGKILL) three times under a steady stream and restarted at 1, 3 and 2
//!   workers; every restart restores a snapshot; the exactly-once audit passes over the
//!   four incarnations, the topic and the views equal the model.
//! - `retention_without_snapshot_refuses_to_start`: input records deleted and no
//!   snapshot → the job refuses with an error naming the topic, partition and offsets.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use pipeline::snapshot::format::{ChunkInfo, Entry, encode_chunks};
use pipeline::snapshot::store::{KafkaStore, Store};
use pipeline::{Metrics, PipelineError, Shutdown, Views};
use support::*;

/// The marker of the orphan chunks written in step 4 (older than any real snapshot).
const ORPHAN_MARKER: u64 = 1_000;

struct Running {
    shutdown: Shutdown,
    handle: Option<tokio::task::JoinHandle<Result<(), PipelineError>>>,
    metrics: Metrics,
    http: std::net::SocketAddr,
}

impl Drop for Running {
    /// A failed assertion stops the job too (the runtime waits for it otherwise).
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn start(env: &Env, workers: usize, snapshots: bool) -> Running {
    let (http, grpc) = (free_addr(), free_addr());
    let mut config = env.config(workers, http, grpc);
    config.snapshot.enabled = snapshots;
    config.snapshot.interval_ms = 300;
    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let handle = {
        let (shutdown, metrics) = (shutdown.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || {
            pipeline::run_with(config, shutdown, metrics, Views::new())
        })
    };
    Running {
        shutdown,
        handle: Some(handle),
        metrics,
        http,
    }
}

async fn stop(mut job: Running) -> Result<(), BoxError> {
    job.shutdown.trigger();
    if let Some(handle) = job.handle.take() {
        handle.await??;
    }
    Ok(())
}

async fn inventory(http: std::net::SocketAddr) -> Result<serde_json::Value, BoxError> {
    let body: serde_json::Value = reqwest::get(format!("http://{http}/v1/inventory"))
        .await?
        .json()
        .await?;
    Ok(body["items"].clone())
}

async fn check_model(
    env: &Env,
    http: std::net::SocketAddr,
    delivered: &[Delivered],
) -> Result<(), BoxError> {
    let model = model_of(delivered);
    let (stock, orders) = rest_views(http, model.orders().keys().copied()).await?;
    assert_eq!(stock, model.stock(), "stock equals the model");
    assert_eq!(orders, model_orders(&model), "orders equal the model");
    let _ = env;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_equals_full_replay_at_any_worker_count() -> Result<(), BoxError> {
    let _serial = SERIAL.lock().await;
    eventbus::testkit::init_tracing();
    let env = Env::new(3).await?;
    let result = restore_in(&env).await;
    env.cleanup().await;
    result
}

async fn restore_in(env: &Env) -> Result<(), BoxError> {
    let bus = env.cluster.bus()?;
    let timeout = Duration::from_secs(180);
    let send = |seed: u64, orders: usize| {
        let workload = workload(seed, orders, 25, env);
        let producer = bus.producer();
        async move {
            produce(
                producer,
                &env.names,
                &workload,
                16,
                None,
                Arc::new(AtomicUsize::new(0)),
            )
            .await
        }
    };

    // 1. Two workers, snapshots on, while input arrives.
    let a = start(env, 2, true);
    let mut delivered = send(0x51, 300).await?;
    wait_caught_up(env, a.http, timeout).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.metrics.snapshot_bytes.get() == 0 {
        assert!(Instant::now() < deadline, "no snapshot written in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(a).await?;
    // More input committed by a job without snapshots: the restore must replay it.
    let a2 = start(env, 2, false);
    delivered.extend(send(0x52, 150).await?);
    wait_caught_up(env, a2.http, timeout).await?;
    stop(a2).await?;
    let records = delivered.len() as i64;

    // 2. Restore at 1 worker: fewer records replayed, the model's views.
    let b = start(env, 1, true);
    wait_caught_up(env, b.http, timeout).await?;
    check_model(env, b.http, &delivered).await?;
    let restored = b.metrics.snapshot_restored_entries.get();
    let replayed_b = i64::try_from(b.metrics.replayed.get())?;
    let inventory_b = inventory(b.http).await?;
    println!(
        "restore at 1 worker: {restored} keys restored, {replayed_b} of {records} records replayed, load {:.3} s",
        b.metrics.snapshot_load_seconds.get()
    );
    assert!(restored > 0, "a snapshot was restored");
    assert!(
        replayed_b > 0,
        "the records after the snapshot were replayed"
    );
    stop(b).await?;

    // 3. The full replay (snapshots off, 3 workers): same views, versions included.
    let full = start(env, 3, false);
    wait_caught_up(env, full.http, timeout).await?;
    let replayed_full = i64::try_from(full.metrics.replayed.get())?;
    assert_eq!(
        inventory(full.http).await?,
        inventory_b,
        "same views and versions as the full replay"
    );
    println!("full replay: {replayed_full} records replayed");
    assert!(
        replayed_b < replayed_full,
        "the restore replayed {replayed_b} records, the full replay {replayed_full}"
    );
    stop(full).await?;

    // 4. A corrupt newer snapshot is skipped; 3 workers; new input meanwhile. And the
    // chunks of an older write that never got its manifest (an orphan) are swept.
    let (kafka, topic) = (env.cluster.kafka.clone(), env.names.snapshots.clone());
    let orphan = tokio::task::spawn_blocking(move || -> Result<ChunkInfo, BoxError> {
        let mut store = KafkaStore::new(&kafka, &topic);
        store.write(
            u64::MAX / 2,
            &[],
            b"not a manifest at all, and longer than 32 bytes",
        )?;
        let chunks = encode_chunks(
            &[Entry::Stock {
                sku: "ORPHAN".into(),
                adjusted: 1,
                version: 1,
            }],
            1,
            1_024,
        )?;
        // Written, then its manifest removed: chunks without a manifest, as a write cut
        // short leaves them.
        store.write(ORPHAN_MARKER, &chunks, b"manifest")?;
        store.remove(ORPHAN_MARKER, &[])?;
        let info = chunks[0].info.clone();
        assert!(store.chunk(ORPHAN_MARKER, &info)?.is_some());
        Ok(info)
    })
    .await??;
    let d = start(env, 3, true);
    delivered.extend(send(0x53, 150).await?);
    wait_caught_up(env, d.http, timeout).await?;
    check_model(env, d.http, &delivered).await?;
    // Snapshots were written for this input (the last one may complete just after the
    // views caught up), and output went on.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.metrics.snapshot_write_seconds.get_sample_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "no snapshot written for the new input"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.metrics.commit_seconds.get_sample_count() > 0);
    assert!(
        d.metrics.snapshot_rejected.get() >= 1,
        "the corrupt snapshot was rejected"
    );
    assert!(
        d.metrics.snapshot_restored_entries.get() > 0,
        "the previous one was restored"
    );
    // The writer sweeps once it has written its first snapshot.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (kafka, topic, info) = (
            env.cluster.kafka.clone(),
            env.names.snapshots.clone(),
            orphan.clone(),
        );
        let left = tokio::task::spawn_blocking(move || {
            KafkaStore::new(&kafka, &topic).chunk(ORPHAN_MARKER, &info)
        })
        .await??;
        if left.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the orphan chunk was not swept in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop(d).await?;

    // 4b. Two processes x 1 worker (the binary, `-n 2`) restore the snapshot written
    // at 3 workers: each process loads it, the views are the model's.
    let logs = tempfile::tempdir()?;
    let hostfile = logs.path().join("hosts.txt");
    std::fs::write(&hostfile, format!("{}\n{}\n", free_addr(), free_addr()))?;
    let (http, grpc, metrics_1) = (free_addr(), free_addr(), free_addr());
    let mut processes = Vec::new();
    for process in 0..2 {
        let mut args = job_args(env, http, grpc);
        args.extend(["-w", "1", "-n", "2", "-p", &process.to_string(), "-h"].map(str::to_owned));
        args.push(hostfile.display().to_string());
        if process == 1 {
            args.extend(["--metrics".to_owned(), metrics_1.to_string()]);
        }
        processes.push(Job::start_with(
            env,
            &args,
            &logs.path().join(format!("process-{process}.log")),
            &[("PIPELINE__SNAPSHOT__ENABLED", "true")],
        )?);
    }
    wait_caught_up(env, http, timeout)
        .await
        .map_err(|e| format!("{e}\n{}\n{}", processes[0].tail(), processes[1].tail()))?;
    check_model(env, http, &delivered).await?;
    for addr in [http, metrics_1] {
        let restored = metric(addr, "pipeline_snapshot_restored_entries").await?;
        assert!(restored > 0.0, "process at {addr} restored the snapshot");
    }
    for mut process in processes {
        process.terminate(Duration::from_secs(20));
    }

    // 5. Exactly-once over every incarnation.
    let stock = read_stock_updated(env).await?;
    check_versions(&stock).map_err(|e| -> BoxError { e.into() })?;
    let report = audit(env, &stock).await?;
    assert_eq!(report.model.stock(), model_of(&delivered).stock());
    assert_eq!(report.records, delivered.len());

    // 6. Retention deletes what the newest snapshot covers: the job still recovers.
    let (kafka, topic) = (env.cluster.kafka.clone(), env.names.snapshots.clone());
    let (loaded, _) = tokio::task::spawn_blocking(move || {
        let mut store = KafkaStore::new(&kafka, &topic);
        pipeline::snapshot::load_newest(&mut store, &Metrics::new(), |_| Ok(()))
    })
    .await??;
    let loaded = loaded.ok_or("a snapshot")?;
    let mut deleted = 0;
    for (topic, partition, offset) in &loaded.manifest.offsets {
        if *offset > 0 {
            env.delete_records_before(&env.names.inputs[usize::from(*topic)], *partition, *offset)
                .await?;
            deleted += offset;
        }
    }
    assert!(deleted > 0);
    let e = start(env, 2, true);
    wait_caught_up(env, e.http, timeout).await?;
    check_model(env, e.http, &delivered).await?;
    stop(e).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_without_snapshot_refuses_to_start() -> Result<(), BoxError> {
    let _serial = SERIAL.lock().await;
    eventbus::testkit::init_tracing();
    let env = Env::new(2).await?;
    let result = retention_in(&env).await;
    env.cleanup().await;
    result
}

async fn retention_in(env: &Env) -> Result<(), BoxError> {
    let bus = env.cluster.bus()?;
    let workload = workload(0x61, 60, 10, env);
    // Snapshots off: nothing is snapshotted.
    let a = start(env, 1, false);
    produce(
        bus.producer(),
        &env.names,
        &workload,
        16,
        None,
        Arc::new(AtomicUsize::new(0)),
    )
    .await?;
    wait_caught_up(env, a.http, Duration::from_secs(120)).await?;
    stop(a).await?;
    let topic = env.names.inputs[0].clone();
    env.delete_records_before(&topic, 0, 1).await?;

    // Snapshots on, none in the store, offset 0 of the partition gone: refused.
    let mut b = start(env, 1, true);
    let handle = b.handle.take().ok_or("a handle")?;
    let result = tokio::time::timeout(Duration::from_secs(60), handle).await??;
    let error = result.expect_err("the job must refuse to start");
    let text = error.to_string();
    assert!(
        matches!(error, PipelineError::RetentionGap { .. }),
        "{text}"
    );
    assert!(
        text.contains(&format!("{topic}/0")) && text.contains("offset 1"),
        "{text}"
    );
    assert_eq!(error.fault(), eventbus::Fault::Setup);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_repeatedly_with_snapshots_is_exactly_once() -> Result<(), BoxError> {
    let _serial = SERIAL.lock().await;
    eventbus::testkit::init_tracing();
    let env = Env::new(3).await?;
    let result = killed_repeatedly_in(&env).await;
    env.cleanup().await;
    result
}

/// The binary with snapshots on (every 300 ms), killed with SIGKILL three times while a
/// steady stream is produced, restarted each time at another worker count.
async fn killed_repeatedly_in(env: &Env) -> Result<(), BoxError> {
    let logs = tempfile::tempdir()?;
    let workload = workload(0x71, 500, 25, env);
    let total = workload.len();
    let spawn = |workers: usize, name: &str| -> Result<(Job, std::net::SocketAddr), BoxError> {
        let (http, grpc) = (free_addr(), free_addr());
        let mut args = job_args(env, http, grpc);
        args.extend(["-w".to_owned(), workers.to_string()]);
        let job = Job::start_with(
            env,
            &args,
            &logs.path().join(format!("{name}.log")),
            &[
                ("PIPELINE__SNAPSHOT__ENABLED", "true"),
                ("PIPELINE__SNAPSHOT__INTERVAL_MS", "300"),
            ],
        )?;
        Ok((job, http))
    };
    let (mut job, mut http) = spawn(2, "incarnation-0")?;
    wait_ready(http, &mut job, Duration::from_secs(60)).await?;

    // A steady stream: 30 records every 100 ms.
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let bus = env.cluster.bus()?;
        let names = env.names.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            produce(
                bus.producer(),
                &names,
                &workload,
                30,
                Some((30, Duration::from_millis(100))),
                sent,
            )
            .await
            .map_err(|e| e.to_string())
        })
    };
    let mut restored = Vec::new();
    for (kill, workers) in [(1usize, 1usize), (2, 3), (3, 2)] {
        while sent.load(std::sync::atomic::Ordering::Relaxed) < total * kill / 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // This incarnation wrote a snapshot of its own before it dies.
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(http, "pipeline_snapshot_write_seconds_count").await? < 1.0 {
            assert!(Instant::now() < deadline, "no snapshot: {}", job.tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        job.kill();
        let (next, next_http) = spawn(workers, &format!("incarnation-{kill}"))?;
        (job, http) = (next, next_http);
        wait_ready(http, &mut job, Duration::from_secs(60)).await?;
        restored.push(metric(http, "pipeline_snapshot_restored_entries").await?);
    }
    let delivered = producer.await??;
    wait_caught_up(env, http, Duration::from_secs(180))
        .await
        .map_err(|e| format!("{e}\n{}", job.tail()))?;
    println!("keys restored by the three restarts: {restored:?}");
    assert!(
        restored.iter().all(|r| *r > 0.0),
        "every restart restored a snapshot: {restored:?}"
    );
    // Keys only grow (orders are never removed): a restart restores the snapshot of the
    // incarnation before it (the keys stop growing once the stream has sent everything).
    assert!(
        restored.windows(2).all(|w| w[0] <= w[1]) && restored[0] < restored[2],
        "each restart restored the newer snapshot of the incarnation before: {restored:?}"
    );

    // No duplicated, missing or wrong stock.updated version over four incarnations.
    let model = model_of(&delivered);
    let stock = read_stock_updated(env).await?;
    check_versions(&stock).map_err(|e| -> BoxError { e.into() })?;
    assert_eq!(
        topic_view(&stock),
        model.stock(),
        "the compacted topic equals the model"
    );
    let report = audit(env, &stock).await?;
    assert_eq!(report.model.stock(), model.stock());
    assert_eq!(report.records, delivered.len());
    check_model(env, http, &delivered).await?;
    let status = job.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {}",
        job.tail()
    );
    Ok(())
}
