//! The live inventory page at `/`: the stock table and the latest order status changes,
//! kept current by the SSE stream, with the committed epoch the page reflects.
//!
//! Why in the job and not a separate front end: the page is a view of the views, and a
//! reader should not need anything but this process (no build step, no CDN, no other
//! origin). Its three files are compiled into the binary (`include_str!`) and served with
//! a Content-Security-Policy that allows this origin only. The script reads
//! `GET /v1/inventory` once, then follows `GET /v1/stream`; both carry absolute numbers
//! with versions, so the page merges them by version (see `page.js`).
//!
//! With `[server.security]` API keys on, `/` and `/assets/*` need the key like every
//! other view route, and a browser's `EventSource` cannot send one: use the page behind a
//! proxy that adds the `Authorization` header, or with keys off (the local default).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page's HTML.
pub const INDEX_HTML: &str = include_str!("index.html");
/// The page's script.
pub const PAGE_JS: &str = include_str!("page.js");
/// The page's style sheet.
pub const PAGE_CSS: &str = include_str!("page.css");

/// This origin only: no CDN, no inline script or style, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // The assets change with the binary; a reload after an upgrade should see them.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/assets/page.js` and `/assets/page.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/page.js",
            get(|| async { asset("text/javascript; charset=utf-8", PAGE_JS) }),
        )
        .route(
            "/assets/page.css",
            get(|| async { asset("text/css; charset=utf-8", PAGE_CSS) }),
        )
}
