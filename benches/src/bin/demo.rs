//! `make demo`: a realistic stream of shop activity against the running services, with
//! the pipeline's inventory view shown live in the terminal and the final totals at the
//! end.
//!
//! Orders go in over REST and gRPC (some by customers the simulated gateway declines,
//! some over its amount limit), some are changed or cancelled, and stock is restocked
//! and corrected along the way. The table is redrawn in place from the view (gRPC
//! ListInventory) a few times a second.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use benches::client::{Api, Client, Endpoints, Level};
use benches::scenario::{Action, GatewayRules, Mix, Scenario};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Orders to send.
    #[arg(long, default_value_t = 300)]
    orders: usize,
    /// Actions sent per second (orders, changes, cancels, restocks).
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Seed of the stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Default)]
struct Counters {
    rest: AtomicUsize,
    grpc: AtomicUsize,
    orders: AtomicUsize,
    changes: AtomicUsize,
    cancels: AtomicUsize,
    adjustments: AtomicUsize,
    errors: AtomicUsize,
}

fn render(
    epoch: u64,
    levels: &BTreeMap<String, Level>,
    c: &Counters,
    started: Instant,
    done: bool,
) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "order pipeline demo: {:>5.1} s  orders {}  changes {}  cancels {}  stock adjustments {}  (REST {}, gRPC {}, errors {}){}\n",
        started.elapsed().as_secs_f64(),
        c.orders.load(Ordering::Relaxed),
        c.changes.load(Ordering::Relaxed),
        c.cancels.load(Ordering::Relaxed),
        c.adjustments.load(Ordering::Relaxed),
        c.rest.load(Ordering::Relaxed),
        c.grpc.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        if done { "  [all sent]" } else { "" }
    ));
    s.push_str(&format!("inventory view as of epoch {epoch}\n\n"));
    s.push_str(&format!(
        "  {:<10} {:>9} {:>9} {:>10} {:>8}\n",
        "SKU", "on hand", "reserved", "available", "version"
    ));
    for (sku, l) in levels {
        let flag = if l.available < 0 { "  oversold" } else { "" };
        s.push_str(&format!(
            "  {:<10} {:>9} {:>9} {:>10} {:>8}{flag}\n",
            sku, l.on_hand, l.reserved, l.available, l.version
        ));
    }
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(Endpoints::default())?;
    let mix = Mix {
        orders: args.orders,
        ..Mix::default()
    };
    let scenario = Scenario::generate(args.seed, &mix, GatewayRules::default());
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let run = uuid::Uuid::new_v4().simple().to_string();

    // The display: redraw the view in place (or print it every few seconds to a pipe).
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let display = {
        let (client, counters) = (client.clone(), counters.clone());
        tokio::spawn(async move {
            let mut last_print = Instant::now() - Duration::from_secs(10);
            loop {
                let done = *stop_rx.borrow();
                match client.inventory().await {
                    Ok((epoch, levels)) => {
                        let frame = render(epoch, &levels, &counters, started, done);
                        if tty {
                            print!("\x1b[H\x1b[2J{frame}");
                            let _ = std::io::stdout().flush();
                        } else if last_print.elapsed() > Duration::from_secs(3) || done {
                            println!("{frame}");
                            last_print = Instant::now();
                        }
                    }
                    Err(e) => eprintln!("views unavailable: {e}"),
                }
                if done {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop_rx.changed() => {}
                }
            }
        })
    };

    // The stream: paced, each action awaited (ingress answers once Kafka has the event).
    let mut ids: Vec<Option<String>> = vec![None; scenario.orders()];
    let pause = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let mut next = Instant::now();
    for (i, action) in scenario.actions.iter().enumerate() {
        tokio::time::sleep_until(next.into()).await;
        next += pause;
        let key = format!("demo-{run}-{i}");
        let (api, result) = match action {
            Action::Adjust {
                sku,
                delta,
                reason,
                api,
            } => {
                counters.adjustments.fetch_add(1, Ordering::Relaxed);
                (*api, client.adjust(*api, &key, sku, *delta, reason).await)
            }
            Action::Create {
                order,
                customer,
                lines,
                api,
            } => {
                counters.orders.fetch_add(1, Ordering::Relaxed);
                let r = client
                    .create_order(*api, &key, customer, scenario.currency, lines)
                    .await;
                (*api, r.map(|c| ids[*order] = Some(c.order_id)))
            }
            Action::Change { order, lines, api } => match &ids[*order] {
                Some(id) => {
                    counters.changes.fetch_add(1, Ordering::Relaxed);
                    (
                        *api,
                        client
                            .change_lines(*api, &key, id, scenario.currency, lines)
                            .await,
                    )
                }
                None => continue,
            },
            Action::Cancel { order, api } => match &ids[*order] {
                Some(id) => {
                    counters.cancels.fetch_add(1, Ordering::Relaxed);
                    (*api, client.cancel(*api, &key, id, scenario.currency).await)
                }
                None => continue,
            },
        };
        match api {
            Api::Rest => counters.rest.fetch_add(1, Ordering::Relaxed),
            Api::Grpc => counters.grpc.fetch_add(1, Ordering::Relaxed),
        };
        if let Err(e) = result {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("request failed: {e:#}");
        }
    }

    // Let payments settle: wait until no SKU has reservations left (all orders final).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((_, levels)) = client.inventory().await
            && levels.values().all(|l| l.reserved == 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_tx.send(true);
    let _ = display.await;

    // Final totals, read back from the view.
    let mut by_status: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for id in ids.iter().flatten() {
        let status = match client.order(id).await {
            Ok(Some(o)) => (o.status, o.total_minor),
            Ok(None) => ("NOT IN VIEW".to_string(), 0),
            Err(e) => (format!("ERROR {e}"), 0),
        };
        let e = by_status.entry(status.0).or_default();
        e.0 += 1;
        e.1 += status.1;
    }
    println!("\nfinal order totals (from the pipeline's order view):");
    for (status, (n, total)) in &by_status {
        println!(
            "  {status:<15} {n:>5} orders  {:>12.2} {}",
            *total as f64 / 100.0,
            scenario.currency
        );
    }
    let (_, levels) = client.inventory().await?;
    let on_hand: i64 = levels.values().map(|l| l.on_hand).sum();
    let reserved: i64 = levels.values().map(|l| l.reserved).sum();
    println!(
        "  stock: {} SKUs, {on_hand} units on hand, {reserved} reserved",
        levels.len()
    );
    if counters.errors.load(Ordering::Relaxed) > 0 {
        anyhow::bail!(
            "{} request(s) failed (see above)",
            counters.errors.load(Ordering::Relaxed)
        );
    }
    Ok(())
}
