//! The HTTP side: liveness, readiness and metrics (port 8085 by default).
//!
//! | path | answers |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves HTTP at all (liveness: restart me if this fails) |
//! | `GET /readyz` | 200 once the transactional producer is initialised and the consumer has joined its group (received an assignment, possibly empty); 503 before that and from the moment shutdown begins |
//! | `GET /metrics` | Prometheus text format, see [`crate::metrics`] |
//!
//! Readiness deliberately does not require a *non-empty* assignment: with more replicas
//! than partitions some replicas own nothing, and a readiness probe that never passes
//! would block every rolling update.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::PaymentMetrics;

/// The readiness flags, shared by the processor and the HTTP handlers.
#[derive(Debug, Default)]
pub struct Health {
    producer_ready: AtomicBool,
    joined: AtomicBool,
    stopping: AtomicBool,
}

impl Health {
    /// `init_transactions` succeeded.
    pub fn set_producer_ready(&self) {
        self.producer_ready.store(true, Ordering::Release);
    }

    /// The consumer received an assignment.
    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::Release);
    }

    /// Shutdown has begun.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether the service is ready for work.
    pub fn is_ready(&self) -> bool {
        self.producer_ready.load(Ordering::Acquire)
            && self.joined.load(Ordering::Acquire)
            && !self.stopping.load(Ordering::Acquire)
    }

    fn describe(&self) -> String {
        format!(
            "producer_ready={} joined={} stopping={}",
            self.producer_ready.load(Ordering::Acquire),
            self.joined.load(Ordering::Acquire),
            self.stopping.load(Ordering::Acquire)
        )
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: PaymentMetrics,
}

/// The router: `/healthz`, `/readyz`, `/metrics`.
pub fn router(health: Arc<Health>, metrics: PaymentMetrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", state.health.describe()),
        )
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_follows_the_flags() {
        let health = Arc::new(Health::default());
        let metrics = PaymentMetrics::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(health.clone(), metrics.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await.0, 200);
        assert_eq!(get("/readyz").await.0, 503);
        health.set_producer_ready();
        assert_eq!(get("/readyz").await.0, 503);
        health.set_joined();
        assert_eq!(get("/readyz").await, (200, "ready\n".to_owned()));
        metrics.duplicates_skipped.inc();
        assert!(
            get("/metrics")
                .await
                .1
                .contains("payment_duplicates_skipped_total 1")
        );
        health.set_stopping();
        assert_eq!(get("/readyz").await.0, 503);
        server.abort();
    }
}
