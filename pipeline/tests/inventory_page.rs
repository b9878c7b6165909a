//! The live inventory page (`GET /`) in a real headless Chromium, against the views API
//! served in-process on port 0 (no Kafka needed: the views are fed known epochs, as the
//! sink thread feeds them after each committed transaction).
//!
//! - `the_page_shows_what_the_api_serves_and_follows_the_stream`: once loaded, the page's
//!   stock table and epoch equal `GET /v1/inventory`; then a new epoch is applied to
//!   the views (one SKU changed, one gone to zero, one new, an order cancelled) and the
//!   page shows it through the event stream alone, without a reload. A comparison with a
//!   deliberately wrong number and with the superseded view must both fail.
//! - `the_page_loads_nothing_from_other_origins`: every resource the page loaded came
//!   from the server, and the assets carry a Content-Security-Policy of `'self'`.
//!
//! Chromium: `$CHROMIUM` or `chromium` on `PATH` (Debian: `apt-get install chromium`);
//! without it the tests say so and pass, unless `REQUIRE_CHROMIUM=1` (CI), which makes
//! a missing browser a failure. `PIPELINE_PAGE_SCREENSHOT=path.png` saves a
//! screenshot of the page after the live update.

#[path = "support/browser.rs"]
mod browser;

use std::sync::Arc;
use std::time::Duration;

use browser::{BoxError, Browser, chromium_or_skip, expected_rows, page_matches, read_page};
use pipeline::logic::{Line, OrderStatus, OrderView, StockLevel};
use pipeline::server::{ApiState, Listeners, serve};
use pipeline::views::{Delta, OrderChange, StockChange, Views};
use pipeline::{Metrics, Shutdown};
use tokio::net::TcpListener;

const FIRST: u64 = 1_764_000_000_000;
const SECOND: u64 = FIRST + 10;

fn level(on_hand: i64, reserved: i64) -> StockLevel {
    StockLevel {
        on_hand,
        reserved,
        available: on_hand - reserved,
    }
}

fn stock(sku: &str, level: StockLevel, version: u64) -> StockChange {
    StockChange {
        sku: sku.into(),
        level,
        version,
    }
}

fn order(id: u128, status: OrderStatus) -> OrderChange {
    OrderChange {
        order_id: id,
        view: Some(OrderView {
            status,
            currency: "EUR".into(),
            total_minor: 2_500,
            lines: vec![Line {
                sku: "SKU-A".into(),
                quantity: 2,
                unit_price_minor: 1_250,
            }],
        }),
    }
}

/// The views API on 127.0.0.1:0 over `views`; returns its base URL.
async fn serve_views(views: &Views, shutdown: &Shutdown) -> Result<String, BoxError> {
    let listeners = Listeners {
        http: TcpListener::bind("127.0.0.1:0").await?,
        grpc: TcpListener::bind("127.0.0.1:0").await?,
    };
    let port = listeners.http.local_addr()?.port();
    let state = ApiState {
        views: views.clone(),
        metrics: Metrics::new(),
        health: Arc::default(),
        topics: pipeline::config::TopicConfig::default().names(),
    };
    serve(
        listeners,
        &servicekit::Security::default(),
        state,
        shutdown.clone(),
    )
    .await?;
    Ok(format!("http://127.0.0.1:{port}"))
}

async fn inventory(base: &str) -> Result<serde_json::Value, BoxError> {
    Ok(reqwest::get(format!("{base}/v1/inventory"))
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Runs blocking browser work off the async runtime.
async fn in_browser<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_the_api_serves_and_follows_the_stream() -> Result<(), BoxError> {
    let Some(chromium) =
        chromium_or_skip("the_page_shows_what_the_api_serves_and_follows_the_stream")
    else {
        return Ok(());
    };
    let views = Views::new();
    views.apply(
        Delta {
            epoch: FIRST,
            stock: vec![
                stock("SKU-A", level(10, 3), FIRST),
                stock("SKU-B", level(4, 6), FIRST), // oversold: available -2
                stock("SKU-C", level(7, 0), FIRST),
            ],
            orders: vec![order(42, OrderStatus::Paid)],
        },
        &[(0, 0, 3)],
    );
    views.set_ready(None);
    let shutdown = Shutdown::new();
    let base = serve_views(&views, &shutdown).await?;
    let before = inventory(&base).await?;
    assert_eq!(before["items"].as_array().map(Vec::len), Some(3));

    let (mut browser, loaded) = {
        let (base, before) = (base.clone(), before.clone());
        in_browser(move || {
            let mut browser = Browser::launch(&chromium, 1200, 800)?;
            browser.navigate(&format!("{base}/"))?;
            let (page, ok) = browser.wait_for(Duration::from_secs(20), read_page, |p| {
                p.connection == "live" && page_matches(p, &before)
            })?;
            assert!(
                ok,
                "the loaded page equals GET /v1/inventory\npage: {page:?}\napi: {before}"
            );
            Ok((browser, page))
        })
        .await?
    };
    // The validator can fail: one wrong number is a mismatch.
    let mut wrong = before.clone();
    wrong["items"][1]["available"] = serde_json::json!(-1);
    assert!(!page_matches(&loaded, &wrong), "a wrong number is detected");
    let mut wrong_epoch = before.clone();
    wrong_epoch["as_of_epoch"] = serde_json::json!(FIRST - 10);
    assert!(
        !page_matches(&loaded, &wrong_epoch),
        "a wrong epoch is detected"
    );
    assert_eq!(loaded.stock[1][3], "-2", "oversold shows as negative");

    // A later epoch, applied to the views only: the page must follow the stream.
    views.apply(
        Delta {
            epoch: SECOND,
            stock: vec![
                stock("SKU-A", level(10, 5), SECOND),
                stock("SKU-C", level(0, 0), SECOND), // leaves the table
                stock("SKU-D", level(12, 0), SECOND),
            ],
            orders: vec![order(42, OrderStatus::Cancelled)],
        },
        &[(0, 0, 5)],
    );
    let after = inventory(&base).await?;
    assert_eq!(after["as_of_epoch"], SECOND);
    let screenshot = std::env::var_os("PIPELINE_PAGE_SCREENSHOT").map(std::path::PathBuf::from);
    let updated = {
        let after = after.clone();
        in_browser(move || {
            let (page, ok) = browser.wait_for(Duration::from_secs(20), read_page, |p| {
                page_matches(p, &after)
            })?;
            assert!(
                ok,
                "the page follows the stream to the new epoch\npage: {page:?}\napi: {after}"
            );
            if let Some(path) = screenshot {
                browser.screenshot(&path)?;
                eprintln!("screenshot of the page: {}", path.display());
            }
            Ok(page)
        })
        .await?
    };
    assert!(
        !page_matches(&updated, &before),
        "the superseded view no longer matches"
    );
    let (rows, _) = expected_rows(&after);
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["SKU-A", "SKU-B", "SKU-D"],
        "a SKU gone to zero left the table, a new one joined"
    );
    assert_eq!(
        updated
            .orders
            .first()
            .map(|(id, status)| (id.as_str(), status.as_str())),
        Some((uuid::Uuid::from_u128(42).to_string().as_str(), "CANCELLED")),
        "the order's new status arrived over the stream"
    );
    assert_eq!(updated.connection, "live");
    shutdown.trigger();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_nothing_from_other_origins() -> Result<(), BoxError> {
    let Some(chromium) = chromium_or_skip("the_page_loads_nothing_from_other_origins") else {
        return Ok(());
    };
    let views = Views::new();
    views.set_ready(None);
    let shutdown = Shutdown::new();
    let base = serve_views(&views, &shutdown).await?;
    for path in ["/", "/assets/page.js", "/assets/page.css"] {
        let response = reqwest::get(format!("{base}{path}")).await?;
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"].to_str()?;
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
    }
    let origin = base.clone();
    let (resources, epoch) = in_browser(move || {
        let mut browser = Browser::launch(&chromium, 800, 600)?;
        browser.navigate(&format!("{origin}/"))?;
        let (page, ok) = browser.wait_for(Duration::from_secs(20), read_page, |p| {
            p.connection == "live"
        })?;
        assert!(ok, "the page connects: {page:?}");
        let resources =
            browser.evaluate("performance.getEntriesByType('resource').map((r) => r.name)")?;
        Ok((resources, page.epoch))
    })
    .await?;
    let resources: Vec<String> = serde_json::from_value(resources)?;
    assert!(
        resources.iter().any(|r| r.ends_with("/assets/page.js")),
        "{resources:?}"
    );
    let foreign: Vec<&String> = resources
        .iter()
        .filter(|r| !r.starts_with(&format!("{base}/")))
        .collect();
    assert!(foreign.is_empty(), "loaded from elsewhere: {foreign:?}");
    assert_eq!(epoch, "–", "no committed epoch yet, and the page says so");
    shutdown.trigger();
    Ok(())
}
