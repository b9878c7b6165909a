//! The job against the real cluster and registry (`KAFKA_BOOTSTRAP`, `REGISTRY_URL`;
//! `make up` starts them). Every test has its own topics, subjects and transactional id.
//! The tests of this file run one at a time (they are heavy for a 2-core machine).
//!
//! - `views_and_topic_equal_the_model`: thousands of mixed events plus garbage through
//!   the in-process job at 2 workers; REST, gRPC and the compacted topic equal the
//!   reference model, the full history passes the exactly-once audit, garbage is in the
//!   DLQ exactly once.
//! - `kill_and_restart_is_exactly_once`: the binary is killed (SIGKILL) while a steady
//!   stream is being produced and restarted; no duplicated or missing `stock.updated`
//!   version, the audit passes over both incarnations, the final state is the model's.
//! - `two_processes_match_one`: 2 processes x 2 workers (timely `-n 2 -p i -h`) give the
//!   same views and compacted topic as 1 process x 1 worker on the same events.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use support::*;

const SEED: u64 = 0x5eed_2026;
const ORDERS: usize = 1_150;
const SKUS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_topic_equal_the_model() -> Result<(), BoxError> {
    let _serial = SERIAL.lock().await;
    eventbus::testkit::init_tracing();
    let env = Env::new(6).await?;
    let result = views_and_topic_equal_the_model_in(&env).await;
    env.cleanup().await;
    result
}

async fn views_and_topic_equal_the_model_in(env: &Env) -> Result<(), BoxError> {
    let started = Instant::now();
    let workload = workload(SEED, ORDERS, SKUS, env);
    let (http, grpc) = (free_addr(), free_addr());
    let mut config = env.config(2, http, grpc);
    // Input-lag gauges every second (the default is every 5 s), checked below.
    config.source.statistics_interval_ms = 1_000;
    let shutdown = pipeline::Shutdown::new();
    let job = {
        let shutdown = shutdown.clone();
        tokio::task::spawn_blocking(move || pipeline::run(config, shutdown))
    };
    let bus = env.cluster.bus()?;
    let delivered = produce(
        bus.producer(),
        &env.names,
        &workload,
        64,
        None,
        Arc::new(AtomicUsize::new(0)),
    )
    .await?;
    let produced_in = started.elapsed();
    let as_of = wait_caught_up(env, http, Duration::from_secs(120)).await?;
    let caught_up_in = started.elapsed();
    let model = model_of(&delivered);

    let ids: Vec<u128> = model.orders().keys().copied().collect();
    let (rest_stock, rest_orders) = rest_views(http, ids.iter().copied()).await?;
    assert_eq!(rest_stock, model.stock(), "REST inventory equals the model");
    assert_eq!(
        rest_orders,
        model_orders(&model),
        "REST orders equal the model"
    );
    let (grpc_stock, grpc_orders) = grpc_views(grpc, ids.iter().copied().take(100)).await?;
    assert_eq!(grpc_stock, model.stock(), "gRPC inventory equals the model");
    let expected: std::collections::BTreeMap<_, _> =
        model_orders(&model).into_iter().take(100).collect();
    assert_eq!(grpc_orders, expected, "gRPC orders equal the model");

    let stock = read_stock_updated(env).await?;
    check_versions(&stock)?;
    assert_eq!(
        topic_view(&stock),
        model.stock(),
        "the compacted topic equals the model"
    );
    let report = audit(env, &stock).await?;
    assert_eq!(report.model.stock(), model.stock());
    assert_eq!(
        report.dead,
        workload.garbage(),
        "every garbage record dead-lettered once"
    );
    assert_eq!(report.records, workload.len());

    // The streams: a snapshot over SSE and over gRPC equals the model too.
    assert_eq!(
        sse_snapshot_stock(http, &model).await?,
        model.stock(),
        "SSE snapshot"
    );
    assert_eq!(
        grpc_watch_snapshot(grpc, model.stock().len()).await?,
        model.stock(),
        "gRPC watch snapshot"
    );
    // The live page in a real headless Chromium shows what GET /v1/inventory shows, after
    // the real job processed the workload (skipped, with a message, without Chromium).
    page_equals_rest(http).await?;
    // Metrics: records, arrangements, commits, views, no lag.
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?;
    let total = |name: &str| -> f64 { samples(&text, name).iter().sum() };
    assert_eq!(
        total("pipeline_records_total"),
        workload.len() as f64,
        "{text}"
    );
    assert!(total("pipeline_arrangement_records") > 0.0, "{text}");
    assert!(
        total("pipeline_sink_commit_seconds_count") >= report.transactions as f64 - 1.0,
        "{text}"
    );
    // eventbus's step timers of the sink's producer are served with the job's metrics.
    assert!(
        total("eventbus_transaction_step_seconds_count{producer=\"sink\",step=\"commit\"}")
            >= report.transactions as f64 - 1.0,
        "{text}"
    );
    assert_eq!(
        total("pipeline_view_rows{view=\"orders\"}"),
        ids.len() as f64,
        "{text}"
    );
    assert_eq!(
        total("pipeline_dead_lettered_total"),
        workload.garbage() as f64,
        "{text}"
    );
    // The input readers' statistics hook: a gauge for every input partition (the two
    // workers' readers together), and every one at zero once the job caught up.
    let partitions = env.names.inputs.len() * 6;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = reqwest::get(format!("http://{http}/metrics"))
            .await?
            .text()
            .await?;
        let lags = samples(&text, "pipeline_input_lag{");
        if lags.len() == partitions && lags.iter().all(|lag| *lag == 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "input lag gauges: {} of {partitions}, {lags:?}",
            lags.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    shutdown.trigger();
    job.await??;
    eprintln!(
        "integration: {} records ({} garbage), {} orders, {} SKUs; produced in {produced_in:?}, \
         caught up in {caught_up_in:?} (as of epoch {as_of}); {} transactions, {} epochs, {} stock.updated",
        workload.len(),
        workload.garbage(),
        ids.len(),
        model.stock().len(),
        report.transactions,
        report.epochs,
        report.stock_updates
    );
    Ok(())
}

/// The values of the samples whose line starts with `prefix` (a metric name, or a name
/// and labels) in a Prometheus text page.
fn samples(text: &str, prefix: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect()
}

/// Opens the inventory page at `http` in headless Chromium and waits until its stock
/// table and epoch equal `GET /v1/inventory` (the job is caught up: the view is still).
async fn page_equals_rest(http: std::net::SocketAddr) -> Result<(), BoxError> {
    let Some(chromium) = browser::chromium_or_skip("the inventory page check") else {
        return Ok(());
    };
    let inventory: serde_json::Value = reqwest::get(format!("http://{http}/v1/inventory"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let expected = inventory.clone();
    let (page, ok) = tokio::task::spawn_blocking(move || {
        let mut browser = browser::Browser::launch(&chromium, 1200, 800)?;
        browser.navigate(&format!("http://{http}/"))?;
        let seen = browser.wait_for(Duration::from_secs(30), browser::read_page, |p| {
            browser::page_matches(p, &expected)
        })?;
        // PIPELINE_PAGE_SCREENSHOT=/tmp/page.png: the page as the real job filled it.
        if let Some(path) = std::env::var_os("PIPELINE_PAGE_SCREENSHOT") {
            browser.screenshot(std::path::Path::new(&path))?;
            eprintln!("screenshot of the page: {}", path.to_string_lossy());
        }
        Ok::<_, BoxError>(seen)
    })
    .await??;
    assert!(
        ok,
        "the page's table equals GET /v1/inventory\npage: {page:?}\napi: {inventory}"
    );
    assert_eq!(
        page.stock.len(),
        inventory["items"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_is_exactly_once() -> Result<(), BoxError> {
    let _serial = SERIAL.lock().await;
    eventbus::testkit::init_tracing();
    let env = Env::new(6).await?;
    let result = kill_and_restart_in(&env).await;
    env.cleanup().await;
    result
}

async fn kill_and_restart_in(env: &Env) -> Result<(), BoxError> {
    let started = Instant::now();
    let logs = tempfile::tempdir()?;
    let workload = workload(SEED + 1, ORDERS, SKUS, env);
    let (http, grpc) = (free_addr(), free_addr());
    let mut args = job_args(env, http, grpc);
    args.extend(["-w".to_owned(), "2".to_owned()]);
    let mut first = Job::start(env, &args, &logs.path().join("first.log"))?;
    wait_ready(http, &mut first, Duration::from_secs(60)).await?;

    // A steady stream: 40 records every 100 ms.
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let bus = env.cluster.bus()?;
        let names = env.names.clone();
        let workload = workload.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            produce(
                bus.producer(),
                &names,
                &workload,
                40,
                Some((40, Duration::from_millis(100))),
                sent,
            )
            .await
            .map_err(|e| e.to_string())
        })
    };
    // Kill -9 in the middle, once the first incarnation has committed some output.
    let total = workload.len();
    while sent.load(std::sync::atomic::Ordering::Relaxed) < total * 2 / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed_before = metric(http, "pipeline_committed_epoch").await?;
    assert!(
        committed_before > 0.0,
        "the first incarnation committed nothing"
    );
    first.kill();
    let killed_at = sent.load(std::sync::atomic::Ordering::Relaxed);
    let stock_before = read_stock_updated(env).await?;
    assert!(!stock_before.is_empty());

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (http, grpc) = (free_addr(), free_addr());
    let mut args = job_args(env, http, grpc);
    args.extend(["-w".to_owned(), "2".to_owned()]);
    let mut second = Job::start(env, &args, &logs.path().join("second.log"))?;
    wait_ready(http, &mut second, Duration::from_secs(60)).await?;
    let replayed = metric(http, "pipeline_replayed_total").await?;
    assert!(replayed > 0.0, "the restart replayed nothing");

    let delivered = producer.await??;
    wait_caught_up(env, http, Duration::from_secs(120))
        .await
        .map_err(|e| format!("{e}\n{}", second.tail()))?;
    let model = model_of(&delivered);

    let stock = read_stock_updated(env).await?;
    // What the first incarnation committed is still there, unchanged, in front.
    for before in &stock_before {
        assert!(
            stock.contains(before),
            "a committed record changed: {before:?}"
        );
    }
    check_versions(&stock)?;
    assert_eq!(
        topic_view(&stock),
        model.stock(),
        "the compacted topic equals the model"
    );
    let report = audit(env, &stock).await?;
    assert_eq!(report.dead, workload.garbage());
    let ids: Vec<u128> = model.orders().keys().copied().collect();
    let (rest_stock, rest_orders) = rest_views(http, ids).await?;
    assert_eq!(rest_stock, model.stock(), "REST inventory equals the model");
    assert_eq!(
        rest_orders,
        model_orders(&model),
        "REST orders equal the model"
    );

    let status = second.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit on SIGTERM, got {status:?}:\n{}",
        second.tail()
    );
    eprintln!(
        "restart: {} records, killed after {killed_at} sent ({} stock.updated committed by then, \
         last epoch {committed_before}), {replayed} records replayed; {} transactions, {} epochs, \
         {} stock.updated in all; {:?}",
        workload.len(),
        stock_before.len(),
        report.transactions,
        report.epochs,
        report.stock_updates,
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_match_one() -> Result<(), BoxError> {
    let _serial = SERIAL.lock().await;
    eventbus::testkit::init_tracing();
    let one = Env::new(6).await?;
    let two = match Env::new(6).await {
        Ok(env) => env,
        Err(e) => {
            one.cleanup().await;
            return Err(e);
        }
    };
    let result = two_processes_match_one_in(&one, &two).await;
    one.cleanup().await;
    two.cleanup().await;
    result
}

async fn two_processes_match_one_in(one: &Env, two: &Env) -> Result<(), BoxError> {
    let started = Instant::now();
    let logs = tempfile::tempdir()?;
    // One process, one worker.
    let (http_one, grpc_one) = (free_addr(), free_addr());
    let mut args = job_args(one, http_one, grpc_one);
    args.extend(["-w".to_owned(), "1".to_owned()]);
    let mut single = Job::start(one, &args, &logs.path().join("single.log"))?;
    // Two processes, two workers each.
    let hostfile = logs.path().join("hosts.txt");
    std::fs::write(&hostfile, format!("{}\n{}\n", free_addr(), free_addr()))?;
    let (http_two, grpc_two) = (free_addr(), free_addr());
    // Process 1 serves its own metrics (process 0 serves them with the API).
    let metrics_two = free_addr();
    let mut cluster = Vec::new();
    for process in 0..2 {
        let mut args = job_args(two, http_two, grpc_two);
        args.extend(["-w", "2", "-n", "2", "-p", &process.to_string(), "-h"].map(str::to_owned));
        args.push(hostfile.display().to_string());
        if process == 1 {
            args.extend(["--metrics".to_owned(), metrics_two.to_string()]);
        }
        cluster.push(Job::start(
            two,
            &args,
            &logs.path().join(format!("process-{process}.log")),
        )?);
    }
    wait_ready(http_one, &mut single, Duration::from_secs(60)).await?;
    wait_ready(http_two, &mut cluster[0], Duration::from_secs(60))
        .await
        .map_err(|e| format!("{e}\nprocess 1:\n{}", cluster[1].tail()))?;

    let load_one = workload(SEED + 2, ORDERS, SKUS, one);
    let load_two = workload(SEED + 2, ORDERS, SKUS, two);
    let (bus_one, bus_two) = (one.cluster.bus()?, two.cluster.bus()?);
    let (delivered_one, delivered_two) = tokio::join!(
        produce(
            bus_one.producer(),
            &one.names,
            &load_one,
            64,
            None,
            Arc::default()
        ),
        produce(
            bus_two.producer(),
            &two.names,
            &load_two,
            64,
            None,
            Arc::default()
        ),
    );
    let (delivered_one, delivered_two) = (delivered_one?, delivered_two?);
    wait_caught_up(one, http_one, Duration::from_secs(120)).await?;
    wait_caught_up(two, http_two, Duration::from_secs(120))
        .await
        .map_err(|e| format!("{e}\n{}\n{}", cluster[0].tail(), cluster[1].tail()))?;

    let model = model_of(&delivered_one);
    assert_eq!(
        model_of(&delivered_two).stock(),
        model.stock(),
        "same events"
    );
    let ids: Vec<u128> = model.orders().keys().copied().collect();
    let views_one = rest_views(http_one, ids.iter().copied()).await?;
    let views_two = rest_views(http_two, ids.iter().copied()).await?;
    assert_eq!(views_one, views_two, "REST views: 2 x 2 equals 1 x 1");
    assert_eq!(views_one.0, model.stock());
    assert_eq!(views_one.1, model_orders(&model));
    let grpc_two_views = grpc_views(grpc_two, ids.iter().copied().take(100)).await?;
    assert_eq!(grpc_two_views.0, model.stock(), "gRPC inventory of 2 x 2");

    let stock_one = read_stock_updated(one).await?;
    let stock_two = read_stock_updated(two).await?;
    check_versions(&stock_one)?;
    check_versions(&stock_two)?;
    assert_eq!(
        topic_view(&stock_one),
        topic_view(&stock_two),
        "compacted topics: 2 x 2 equals 1 x 1"
    );
    assert_eq!(topic_view(&stock_two), model.stock());
    let report_one = audit(one, &stock_one).await?;
    let report_two = audit(two, &stock_two).await?;

    // Every process exports its metrics: each counts the records its workers read (the
    // two add up to the workload), and each has a lag gauge for every partition its
    // workers read (some each, all of them together).
    let partitions = two.names.inputs.len() * 6;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut records = Vec::new();
        let mut lag_gauges = Vec::new();
        for addr in [http_two, metrics_two] {
            let text = reqwest::get(format!("http://{addr}/metrics"))
                .await?
                .error_for_status()?
                .text()
                .await?;
            records.push(samples(&text, "pipeline_records_total").iter().sum());
            lag_gauges.push(samples(&text, "pipeline_input_lag{").len());
        }
        let done = records.iter().sum::<f64>() == load_two.len() as f64
            && lag_gauges.iter().sum::<usize>() == partitions;
        if done {
            assert!(
                records
                    .iter()
                    .all(|r| *r > 0.0 && *r < load_two.len() as f64),
                "each process read a share: {records:?}"
            );
            assert!(lag_gauges.iter().all(|g| *g > 0), "{lag_gauges:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records per process {records:?} (of {}), lag gauges {lag_gauges:?} (of {partitions})",
            load_two.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let healthz = reqwest::get(format!("http://{metrics_two}/healthz")).await?;
    assert_eq!(healthz.status(), 200, "process 1's liveness");
    let api = reqwest::get(format!("http://{metrics_two}/v1/inventory")).await?;
    assert_eq!(api.status(), 404, "process 1 serves no API");

    // SIGTERM to both processes: each leaves its loop and exits cleanly.
    for job in cluster.iter() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(job.child.id().to_string())
            .status();
    }
    for (process, job) in cluster.iter_mut().enumerate() {
        let status = job.terminate(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "process {process} exit: {status:?}\n{}",
            job.tail()
        );
    }
    single.terminate(Duration::from_secs(10));
    eprintln!(
        "processes: {} records each; 1x1: {} transactions, {} epochs, {} stock.updated; \
         2x2: {} transactions, {} epochs, {} stock.updated; {:?}",
        load_one.len(),
        report_one.transactions,
        report_one.epochs,
        report_one.stock_updates,
        report_two.transactions,
        report_two.epochs,
        report_two.stock_updates,
        started.elapsed()
    );
    Ok(())
}

/// Reads `/v1/stream?snapshot=true` until every row of the model's views came, returns
/// the stock rows (zero rows left out).
async fn sse_snapshot_stock(
    http: std::net::SocketAddr,
    model: &pipeline::model::Model,
) -> Result<std::collections::BTreeMap<String, pipeline::logic::StockLevel>, BoxError> {
    let rows = model.stock().len() + model.orders().len();
    let mut response = reqwest::get(format!("http://{http}/v1/stream?snapshot=true"))
        .await?
        .error_for_status()?;
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("text/event-stream")
    );
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while text.matches("\n\n").count() < rows {
        if Instant::now() > deadline {
            return Err("SSE snapshot incomplete".into());
        }
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await?? {
            Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
            None => break,
        }
    }
    let mut stock = std::collections::BTreeMap::new();
    for event in text.split("\n\n") {
        if !event.contains("event: stock") {
            continue;
        }
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .ok_or("SSE event without data")?;
        let v: serde_json::Value = serde_json::from_str(data)?;
        assert!(v["epoch"].as_u64().is_some(), "{v}");
        let level = pipeline::logic::StockLevel {
            on_hand: v["on_hand"].as_i64().unwrap_or_default(),
            reserved: v["reserved"].as_i64().unwrap_or_default(),
            available: v["available"].as_i64().unwrap_or_default(),
        };
        stock.insert(v["sku"].as_str().unwrap_or_default().to_owned(), level);
    }
    Ok(stock)
}

/// `WatchChanges` with a snapshot of the stock view: its first `rows` changes.
async fn grpc_watch_snapshot(
    grpc: std::net::SocketAddr,
    rows: usize,
) -> Result<std::collections::BTreeMap<String, pipeline::logic::StockLevel>, BoxError> {
    use pipeline::proto::view_change::Change;
    use pipeline::proto::view_service_client::ViewServiceClient;
    use pipeline::proto::{ViewKind, WatchChangesRequest};
    let mut client = ViewServiceClient::connect(format!("http://{grpc}")).await?;
    let mut stream = client
        .watch_changes(WatchChangesRequest {
            kinds: vec![ViewKind::Stock as i32],
            snapshot: true,
        })
        .await?
        .into_inner();
    let mut stock = std::collections::BTreeMap::new();
    while stock.len() < rows {
        let change = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await??
            .ok_or("watch ended")?;
        assert!(change.freshness.is_some_and(|f| f.epoch > 0));
        let Some(Change::Stock(level)) = change.change else {
            return Err("a non-stock change in a stock watch".into());
        };
        stock.insert(
            level.sku,
            pipeline::logic::StockLevel {
                on_hand: level.on_hand,
                reserved: level.reserved,
                available: level.available,
            },
        );
    }
    Ok(stock)
}
