//! Runs the three services as a [`benches::stack::Stack`] (unique topic prefix, free
//! ports, the shared cluster) for tools that are not written in Rust: it prints one JSON
//! line with the endpoints and the services' process ids once every service is ready,
//! serves until its standard input closes or it gets SIGINT/SIGTERM, then stops the
//! services and deletes the stack's topics and subjects.
//!
//! Commands on standard input, one per line (the chaos harness's supervisor role):
//! `restart <service>` starts a service again as it was started (after a `kill -9`) and
//! prints `{"restarted": <service>, "pid": <pid>, "ready_ms": <ms>}` once it is ready.
//!
//! `restart-job pipeline` restarts every process of the pipeline job, as its README
//! prescribes after a lost process, and prints `{"restarted": "pipeline job", "found":
//! {<process>: "running" | how it ended}, "pids": {...}, "ready_ms": <ms>}`.
//!
//! `--supervise FILE` makes it the services' supervisor too, as a deployment's would be
//! (Kubernetes restarts a container that exits): a service that **exits by itself**
//! (an exit status, not a signal: the harness's own `kill -9` is left to it) is started
//! again within a second, at most 5 times, and the event is appended to FILE as a line
//! `<unix seconds> <service> exited (<status>), restarted (pid <pid>)`. The processes
//! of a multi-process pipeline job are left alone: the job's recovery is
//! `restart-job pipeline`.
//!
//! `--pipeline-processes N` runs the pipeline job as N processes of one worker each
//! (`pipeline`, process 0 with the API, and `pipeline-1`, ...; timely's hostfile on free
//! ports); the JSON line then names every process's pid and `/metrics` URL.
//!
//! `deploy/fuzz/schemathesis.sh` (`make fuzz-api`) and `deploy/chaos/run.sh`
//! (`make chaos`) use it. Needs the service binaries built
//! (`cargo build -p ingress -p payment -p pipeline`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benches::scenario::GatewayRules;
use benches::stack::{Stack, StackOptions};
use clap::Parser;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "The three services on the cluster, until standard input closes")]
struct Args {
    /// Processes of the pipeline job (one worker each).
    #[arg(long, default_value_t = 1)]
    pipeline_processes: usize,
    /// Restart a service that exits by itself; the events go to this file.
    #[arg(long)]
    supervise: Option<PathBuf>,
}

/// Restarts per service the supervisor allows before it leaves a service down.
const MAX_RESTARTS: u32 = 5;

/// The supervisor's round: every service that exited by itself is started again.
fn supervise(stack: &mut Stack, file: &PathBuf, restarts: &mut BTreeMap<&'static str, u32>) {
    let job = stack.pipeline_processes();
    for (name, status) in stack.ended() {
        let count = restarts.entry(name).or_default();
        if status.code().is_none()
            || (job.len() > 1 && job.contains(&name))
            || *count >= MAX_RESTARTS
        {
            continue;
        }
        *count += 1;
        let outcome = match stack.restart(name) {
            Ok(()) => format!("restarted (pid {})", stack.pid(name).unwrap_or_default()),
            Err(e) => format!("restart failed: {e:#}"),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "{:.3} {name} exited ({status}), {outcome}",
            now.as_secs_f64()
        );
        eprintln!("stack-serve: {line}");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Every service process's pid, by name.
fn pids(stack: &Stack) -> Value {
    let mut names = vec!["ingress", "payment"];
    names.extend(stack.pipeline_processes());
    Value::Object(
        names
            .into_iter()
            .map(|name| (name.to_owned(), json!(stack.pid(name))))
            .collect::<Map<_, _>>(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut stack = if args.pipeline_processes > 1 {
        let options = StackOptions {
            only: vec!["payment", "ingress"],
            ..StackOptions::default()
        };
        let mut stack = Stack::start_with(GatewayRules::default(), &[], &options).await?;
        stack.start_pipeline_job(args.pipeline_processes, 1).await?;
        stack
    } else {
        Stack::start(GatewayRules::default(), &["-w", "1"]).await?
    };
    let e = &stack.endpoints;
    println!(
        "{}",
        json!({
            "prefix": stack.prefix,
            "ingress_rest": e.ingress_rest,
            "ingress_grpc": e.ingress_grpc,
            "views_rest": e.views_rest,
            "views_grpc": e.views_grpc,
            "payment": stack.payment_url,
            "pipeline_metrics": stack.pipeline_metrics,
            "pids": pids(&stack),
        })
    );
    let mut term = signal(SignalKind::terminate())?;
    // A second after an exit: the supervisor's round every second.
    let mut rounds = tokio::time::interval(Duration::from_secs(1));
    let mut restarts = BTreeMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = rounds.tick() => {
                if let Some(file) = &args.supervise {
                    supervise(&mut stack, file, &mut restarts);
                }
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let mut words = line.split_whitespace();
                    match (words.next(), words.next()) {
                        (Some("restart"), Some(name)) => {
                            let started = Instant::now();
                            let result = match stack.restart(name) {
                                Ok(()) => stack.wait_service_ready(name).await,
                                Err(e) => Err(e),
                            };
                            match result {
                                Ok(()) => println!(
                                    "{}",
                                    json!({
                                        "restarted": name,
                                        "pid": stack.pid(name),
                                        "ready_ms": started.elapsed().as_millis() as u64,
                                    })
                                ),
                                Err(e) => println!("{}", json!({"error": format!("{e:#}")})),
                            }
                        }
                        (Some("restart-job"), Some("pipeline")) => {
                            let started = Instant::now();
                            match stack.restart_pipeline_job().await {
                                Ok(found) => println!(
                                    "{}",
                                    json!({
                                        "restarted": "pipeline job",
                                        "found": found.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect::<Map<_, _>>(),
                                        "pids": pids(&stack),
                                        "ready_ms": started.elapsed().as_millis() as u64,
                                    })
                                ),
                                Err(e) => println!("{}", json!({"error": format!("{e:#}")})),
                            }
                        }
                        _ => eprintln!("stack-serve: unknown command {line:?}"),
                    }
                }
                Ok(None) | Err(_) => break,
            },
        }
    }
    eprintln!("stack-serve: stopping {}", stack.prefix);
    stack.shutdown().await;
    Ok(())
}
