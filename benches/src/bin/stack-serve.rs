//! Runs the three services as a [`benches::stack::Stack`] (unique topic prefix, free
//! ports, the shared cluster) for tools that are not written in Rust: it prints one JSON
//! line with the endpoints once every service is ready, serves until its standard input
//! closes or it gets SIGINT/SIGTERM, then stops the services and deletes the stack's
//! topics and subjects.
//!
//! `deploy/fuzz/schemathesis.sh` (`make fuzz-api`) points schemathesis at it.
//! Needs the service binaries built (`cargo build -p ingress -p payment -p pipeline`).

use benches::scenario::GatewayRules;
use benches::stack::Stack;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::start(GatewayRules::default(), &["-w", "1"]).await?;
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
        })
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stdin.read_to_end(&mut sink) => {}
    }
    eprintln!("stack-serve: stopping {}", stack.prefix);
    stack.shutdown().await;
    Ok(())
}
