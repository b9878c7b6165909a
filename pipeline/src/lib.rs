//! Inventory Service: the dataflow job.
//!
//! The job keeps two always-current views over the order and inventory topics: the state
//! of every order ([`logic::OrderView`]) and the stock of every SKU
//! ([`logic::StockLevel`]). It writes every change of a SKU to
//! `inventory-service.stock.updated` exactly once and serves both views over REST, SSE
//! and gRPC. It is built in layers, one noun per module:
//!
//! - [`logic`]: the pure dataflow logic, differential-dataflow collection-to-collection
//!   functions over decoded input events (semantics documented there, once);
//!   [`model`] is a plain sequential reference of the same semantics for the tests;
//! - [`input`]: the five input topics and how a record becomes an event or a dead letter;
//! - [`clock`]: one timeline for five topics (ingestion epochs) and the durable time
//!   bindings that make a restart reproduce every record's epoch;
//! - [`source`]: per worker, a fetch thread reading its assigned partitions and a timely
//!   source operator that stamps records with epochs, wakes without spinning and
//!   throttles when the sink falls behind;
//! - `dataflow`: source → logic → sink, and the wake-up and back-pressure paths;
//! - [`flow`]: what the source hands the sink (items, dead letters);
//! - [`sink`]: exchange to worker 0, one Kafka transaction per (group of) closed epochs
//!   with the output, the dead letters and a [`progress`] record;
//! - [`progress`]: the progress topic's records and reading them back on restart;
//! - [`snapshot`]: state snapshots (the compacted per-key state as of a committed
//!   epoch), written off the worker threads and restored at any worker count;
//! - [`views`]: the served views, as of the last committed epoch;
//! - [`server`]: REST, SSE and gRPC on process 0, `/healthz`, `/readyz`, `/metrics`;
//! - [`config`], [`metrics`], [`error`], [`kafka`] (the clients' context and the
//!   input-lag gauge; every client is built by `eventbus::client`).
//!
//! # Running
//!
//! [`run`] runs the job until its [`Shutdown`] is triggered or it fails; the `pipeline`
//! binary wraps it with a command line (see `pipeline/README.md` for operators).
//! `timely.workers` threads per process and `timely.processes` processes (timely's
//! `-w -n -p -h`) share the work; the output and the views are the same at any count,
//! because every decision uses the records' positions, never who read them, and all
//! output goes through worker 0.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use schemas::{Event, StockUpdated};
use timely::dataflow::ProbeHandle;
use timely::scheduling::SyncActivator;

pub mod clock;
pub mod config;
mod dataflow;
pub mod error;
pub mod flow;
pub mod input;
pub mod kafka;
pub mod logic;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod server;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod views;

pub use ::proto;

pub use config::PipelineConfig;
pub use error::PipelineError;
use error::TimelyError;
pub use metrics::Metrics;
pub use views::Views;

use crate::config::TopicNames;
use crate::progress::Progress;
use crate::sink::{Health, SinkPorts, SinkThread, fenced_producer};
use crate::source::{FetchParams, SourceParams, spawn_fetcher};

/// Stops a running job: every worker leaves its loop, the fetch threads and the sink
/// thread finish, the servers shut down gracefully. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    signal: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// Not triggered.
    pub fn new() -> Self {
        Shutdown {
            flag: Arc::default(),
            signal: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Asks the job to stop.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        self.signal.send_replace(true);
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once triggered.
    pub async fn wait(&self) {
        let mut rx = self.signal.subscribe();
        let _ = rx.wait_for(|triggered| *triggered).await;
    }
}

/// The first error that stopped the job; later ones are only logged.
#[derive(Default)]
struct Failure {
    first: Mutex<Option<PipelineError>>,
}

/// What every worker shares.
struct Shared {
    config: PipelineConfig,
    topics: TopicNames,
    metrics: Metrics,
    shutdown: Shutdown,
    health: Arc<Health>,
    failure: Failure,
    progress: OnceLock<Option<Arc<Progress>>>,
    /// The snapshot this start restores (`None`: off, none usable, or loading failed).
    snapshot: OnceLock<Option<Arc<snapshot::Loaded>>>,
    /// Worker 0's end of the snapshot writer's channel (process 0, snapshots on).
    snapshot_writer: Mutex<Option<SyncSender<snapshot::WriterInput>>>,
    sink_ports: Mutex<Option<SinkPorts>>,
    sink_activator: Arc<Mutex<Option<SyncActivator>>>,
}

impl Shared {
    /// Records a failure and stops the job.
    fn fail(&self, error: PipelineError) {
        tracing::error!(
            fault = error.fault().as_str(),
            "the job stops: {}",
            eventbus::error::chain(&error)
        );
        self.health.failed.store(true, Ordering::Release);
        let mut first = self.failure.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(error);
        }
        drop(first);
        self.shutdown.trigger();
    }

    fn progress_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }
}

/// Runs the job until `shutdown` is triggered or it fails. Blocking.
///
/// Process 0 (`config.timely.process == 0`) first checks that the output schema is
/// registered, fences any previous incarnation of the job (`init_transactions`), reads
/// the progress topic, starts the sink thread and (if enabled) the API servers; then
/// every process starts its timely workers. Returns the first error that stopped the
/// job, or `Ok` after a requested shutdown.
pub fn run(config: PipelineConfig, shutdown: Shutdown) -> Result<(), PipelineError> {
    run_with(config, shutdown, Metrics::new(), Views::new())
}

/// [`run`] with the metrics and views supplied by the caller (to read them in-process).
pub fn run_with(
    config: PipelineConfig,
    shutdown: Shutdown,
    metrics: Metrics,
    views: Views,
) -> Result<(), PipelineError> {
    config.validate()?;
    let timely_config = config.timely.timely_config()?;
    let topics = config.topic_names();
    let health = Arc::new(Health::default());
    let shared = Arc::new(Shared {
        config: config.clone(),
        topics: topics.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        health: Arc::clone(&health),
        failure: Failure::default(),
        progress: OnceLock::new(),
        snapshot: OnceLock::new(),
        snapshot_writer: Mutex::new(None),
        sink_ports: Mutex::new(None),
        sink_activator: Arc::default(),
    });

    // Process 0: fence, read progress, start the sink thread and the servers.
    let mut sink_thread = None;
    let mut runtime = None;
    let mut server = None;
    if config.timely.process == 0 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("api")
            .enable_all()
            .build()
            .map_err(|source| PipelineError::Spawn {
                what: "API runtime".into(),
                source,
            })?;
        let registry = eventbus::RegistryClient::new(&config.registry)?;
        let subject = topics.stock_updated_subject();
        let schema_id = rt
            .block_on(registry.id_for(&subject, StockUpdated::schema_text()))
            .map_err(|e| match e {
                eventbus::BusError::NotRegistered { .. } => PipelineError::SchemaNotRegistered {
                    subject: subject.clone(),
                    source: Box::new(e),
                },
                other => other.into(),
            })?;
        let producer = fenced_producer(&config.kafka, &config.sink, metrics.bus.clone())?;
        let recovery = snapshot::recover(&config, &topics, &metrics, shared.progress_timeout())?;
        let progress = recovery.progress;
        let restored: Vec<((u8, i32), i64)> = progress.bindings.uppers().collect();
        let restored_versions = recovery
            .loaded
            .as_ref()
            .map(|loaded| (loaded.manifest.epoch, loaded.versions()));
        let _ = shared.snapshot.set(recovery.loaded.map(Arc::new));
        let mut snapshots = None;
        if let Some(store) = recovery.store {
            // Room for a few markers' halves: the writer drains the queue and writes
            // only the newest complete snapshot, so a slow store costs skipped
            // snapshots, never a blocked worker or sink (both only `try_send`).
            let (writer_tx, writer_rx) = sync_channel(16);
            let writer = snapshot::Writer {
                store,
                input: writer_rx,
                config: config.snapshot.clone(),
                workers: u32::try_from(config.timely.peers()).unwrap_or(u32::MAX),
                metrics: metrics.clone(),
                existing: recovery.existing,
                swept: false,
            };
            // Not joined: a write cut short by the end of the job is a torn snapshot,
            // which the next start skips (and the one after sweeps).
            std::thread::Builder::new()
                .name("snapshots".into())
                .spawn(move || writer.run())
                .map_err(|source| PipelineError::Spawn {
                    what: "snapshot writer".into(),
                    source,
                })?;
            *shared
                .snapshot_writer
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(writer_tx.clone());
            snapshots = Some(writer_tx);
        }
        let _ = shared.progress.set(Some(Arc::new(progress)));

        let (commands_tx, commands_rx) = sync_channel(config.sink.queue_epochs);
        let (acks_tx, acks_rx) = channel();
        *shared.sink_ports.lock().unwrap_or_else(|e| e.into_inner()) = Some(SinkPorts {
            commands: commands_tx,
            acks: acks_rx,
        });
        let thread = SinkThread {
            producer,
            commands: commands_rx,
            acks: acks_tx,
            activator: Arc::clone(&shared.sink_activator),
            views: views.clone(),
            metrics: metrics.clone(),
            health: Arc::clone(&health),
            topics: topics.clone(),
            config: config.sink.clone(),
            schema_id,
            dataschema: registry.schema_url(schema_id),
            source: format!("/{}", config.service),
            group: config.service.clone(),
            restored,
            restored_versions,
            snapshots,
        };
        let sink_shared = Arc::clone(&shared);
        sink_thread = Some(
            std::thread::Builder::new()
                .name("sink".into())
                .spawn(move || {
                    if let Err(e) = thread.run_blocking() {
                        sink_shared.fail(e);
                    }
                })
                .map_err(|source| PipelineError::Spawn {
                    what: "sink thread".into(),
                    source,
                })?,
        );
        if config.server.enabled {
            let state = server::ApiState {
                views: views.clone(),
                metrics: metrics.clone(),
                health: Arc::clone(&health),
                topics: topics.clone(),
            };
            let handle = rt.block_on(server::start(&config.server, state, shutdown.clone()))?;
            server = Some(handle);
        }
        runtime = Some(rt);
    }
    // Every process's own `/metrics` and `/healthz` (process 0's are on the API too).
    let mut ops = None;
    if config.server.enabled
        && let Some(addr) = config.server.metrics_addr(config.timely.process)
    {
        let rt = match runtime.take() {
            Some(rt) => rt,
            None => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("metrics")
                .enable_all()
                .build()
                .map_err(|source| PipelineError::Spawn {
                    what: "metrics runtime".into(),
                    source,
                })?,
        };
        let state = server::ApiState {
            views: views.clone(),
            metrics: metrics.clone(),
            health: Arc::clone(&health),
            topics: topics.clone(),
        };
        ops = Some(rt.block_on(server::start_ops(
            &config.server,
            addr,
            state,
            shutdown.clone(),
        ))?);
        runtime = Some(rt);
    }

    let worker_shared = Arc::clone(&shared);
    let guards = timely::execute(timely_config, move |worker| {
        if let Err(e) = worker_main(worker, &worker_shared) {
            worker_shared.fail(e);
        }
    })
    .map_err(|e| PipelineError::Timely(TimelyError(e)));
    let guards = match guards {
        Ok(guards) => guards,
        Err(e) => {
            shutdown.trigger();
            return Err(e);
        }
    };
    // A lost peer process closes timely's connections: its communication threads panic,
    // and dropping their guards inside `join` panics again ("Send thread panic"). That
    // is the fail-stop the README documents, so it ends here as an error (exit 1, the
    // orderly shutdown below), not as a panic out of `run` (exit 101, nothing logged).
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()))
        .unwrap_or_else(|_| {
            shared.fail(PipelineError::PeerLost);
            Vec::new()
        });
    for (index, result) in joined.into_iter().enumerate() {
        if let Err(panic) = result {
            tracing::error!(worker = index, "worker thread panicked: {panic}");
            shared.fail(PipelineError::Panicked {
                thread: format!("worker {index}"),
            });
        }
    }
    // Workers are gone; make sure everything else stops too.
    shutdown.trigger();
    drop(
        shared
            .sink_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
    );
    if let Some(thread) = sink_thread
        && thread.join().is_err()
    {
        shared.fail(PipelineError::Panicked {
            thread: "sink".into(),
        });
    }
    if let Some(rt) = &runtime {
        for handle in [server, ops].into_iter().flatten() {
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
            });
        }
    }
    if let Some(rt) = runtime {
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    let first = shared
        .failure
        .first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match first {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// One worker: build the dataflow, start the fetch thread, step until shutdown.
fn worker_main(worker: &mut timely::worker::Worker, shared: &Shared) -> Result<(), PipelineError> {
    let index = worker.index();
    let peers = worker.peers();
    let config = &shared.config;
    // Processes other than 0 read the progress and load the snapshot here, once (the
    // other workers of the process wait for it): they are connected to process 0, which
    // fenced the previous job before starting timely (and did the same before it).
    let progress = shared.progress.get_or_init(|| {
        match snapshot::recover(
            config,
            &shared.topics,
            &shared.metrics,
            shared.progress_timeout(),
        ) {
            Ok(recovery) => {
                let _ = shared.snapshot.set(recovery.loaded.map(Arc::new));
                Some(Arc::new(recovery.progress))
            }
            Err(e) => {
                let _ = shared.snapshot.set(None);
                shared.fail(e);
                None
            }
        }
    });
    let Some(progress) = progress.clone() else {
        return Ok(()); // failure recorded
    };
    if shared.shutdown.is_triggered() {
        return Ok(()); // failure recorded
    }
    let bindings = Arc::new(progress.bindings.clone());
    let snapshot = shared.snapshot.get().cloned().flatten();
    let restore = snapshot
        .as_ref()
        .map(|s| (s.manifest.epoch, s.records(index, peers)));
    let start_offsets = snapshot.as_ref().map(|s| s.offsets()).unwrap_or_default();

    let (queue_tx, queue_rx) = sync_channel(config.source.queue_capacity);
    let committed = ProbeHandle::new();
    let demand = Rc::new(Cell::new(0u64));
    let ports = if index == 0 {
        shared
            .sink_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    } else {
        None
    };
    let source = SourceParams {
        epoch_ms: config.clock.epoch_ms,
        slack_ms: config.clock.slack_ms,
        max_per_activation: config.source.max_records_per_activation,
        first_epoch: restore
            .as_ref()
            .map(|(epoch, _)| *epoch)
            .or(bindings.first_epoch()),
        last_epoch: bindings.last_epoch(),
        queue: queue_rx,
        committed: committed.clone(),
        demand: Rc::clone(&demand),
        metrics: shared.metrics.clone(),
        topics: shared.topics.inputs.clone(),
        snapshot_every_ms: (config.snapshot.enabled && index == 0)
            .then_some(config.snapshot.interval_ms),
        restore,
    };
    let snapshot_wiring = config.snapshot.enabled.then(|| {
        if index == 0 {
            shared
                .snapshot_writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        } else {
            None
        }
    });
    let sink_activator = Arc::clone(&shared.sink_activator);
    metrics::watch_arrangements(worker, &shared.metrics);
    let address = worker.dataflow::<u64, _, _>(|scope| {
        dataflow::build(
            scope,
            source,
            demand,
            ports,
            sink_activator,
            &committed,
            snapshot_wiring,
        )
    });

    let stop = Arc::new(AtomicBool::new(false));
    let fetcher = spawn_fetcher(
        FetchParams {
            kafka: config.kafka.clone(),
            registry: config.registry.clone(),
            topics: shared.topics.inputs.clone(),
            service: config.service.clone(),
            worker: index,
            peers,
            bindings,
            start_offsets,
            strict_retention: config.snapshot.enabled,
            statistics_interval_ms: config.source.statistics_interval_ms,
            metrics: shared.metrics.clone(),
            stop: Arc::clone(&stop),
        },
        queue_tx,
        worker.sync_activator_for(address.to_vec()),
    )
    .map_err(|source| PipelineError::Spawn {
        what: format!("fetch thread {index}"),
        source,
    })?;

    tracing::info!(worker = index, peers, "worker running");
    while !shared.shutdown.is_triggered() {
        worker.step_or_park(Some(Duration::from_millis(500)));
        if fetcher.is_finished() {
            break;
        }
    }
    stop.store(true, Ordering::Release);
    // timely keeps stepping a worker until its dataflows complete, which an unbounded
    // source never does: drop them (this also drops worker 0's end of the sink channel,
    // which lets the sink thread finish).
    for dataflow in worker.installed_dataflows() {
        worker.drop_dataflow(dataflow);
    }
    match fetcher.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => shared.fail(e),
        Err(_) => shared.fail(PipelineError::Panicked {
            thread: format!("fetch {index}"),
        }),
    }
    Ok(())
}
