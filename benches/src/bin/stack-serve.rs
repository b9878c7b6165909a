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
//! `deploy/fuzz/schemathesis.sh` (`make fuzz-api`) and `deploy/chaos/run.sh`
//! (`make chaos`) use it. Needs the service binaries built
//! (`cargo build -p ingress -p payment -p pipeline`).

use std::time::Instant;

use benches::scenario::GatewayRules;
use benches::stack::Stack;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut stack = Stack::start(GatewayRules::default(), &["-w", "1"]).await?;
    let e = &stack.endpoints;
    println!(
        "{}",
        serde_json::json!({
            "prefix": stack.prefix,
            "ingress_rest": e.ingress_rest,
            "ingress_grpc": e.ingress_grpc,
            "views_rest": e.views_rest,
            "views_grpc": e.views_grpc,
            "payment": stack.payment_url,
            "pids": {
                "ingress": stack.pid("ingress"),
                "payment": stack.pid("payment"),
                "pipeline": stack.pid("pipeline"),
            },
        })
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
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
                                    serde_json::json!({
                                        "restarted": name,
                                        "pid": stack.pid(name),
                                        "ready_ms": started.elapsed().as_millis() as u64,
                                    })
                                ),
                                Err(e) => println!("{}", serde_json::json!({"error": format!("{e:#}")})),
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
