//! The REST routes of the views API: JSON answers as of one committed epoch, RFC 9457
//! problems for errors, and the operational routes (`/healthz`, `/readyz`, `/metrics`).
//! The table of routes and answers is in the parent module's docs.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use crate::logic::{Line, OrderId, OrderView, StockLevel};

/// One SKU in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockJson {
    /// The SKU.
    pub sku: String,
    /// Units in stock.
    pub on_hand: i64,
    /// Units held by open orders.
    pub reserved: i64,
    /// `on_hand - reserved`; negative when oversold.
    pub available: i64,
    /// Epoch of the SKU's last change (= `stock.updated` version); 0 if never.
    pub version: u64,
}

impl StockJson {
    pub(super) fn new(sku: &str, level: StockLevel, version: u64) -> Self {
        StockJson {
            sku: sku.to_owned(),
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: level.available,
            version,
        }
    }
}

/// One order line in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineJson {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Price per unit, minor units.
    pub unit_price_minor: i64,
}

/// One order in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderJson {
    /// The order id (UUID text).
    pub order_id: String,
    /// `CREATED`, `PAID`, `PAYMENT_FAILED` or `CANCELLED`.
    pub status: String,
    /// Total of the current lines, minor units.
    pub total_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Current lines.
    pub lines: Vec<LineJson>,
}

impl OrderJson {
    pub(super) fn new(order_id: OrderId, view: &OrderView) -> Self {
        OrderJson {
            order_id: uuid::Uuid::from_u128(order_id).to_string(),
            status: view.status.as_str().to_owned(),
            total_minor: view.total_minor,
            currency: view.currency.clone(),
            lines: view
                .lines
                .iter()
                .map(|l: &Line| LineJson {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
        }
    }
}

pub(super) fn problem(
    status: StatusCode,
    title: &str,
    detail: String,
    as_of: Option<u64>,
) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(epoch) = as_of {
        body["as_of_epoch"] = json!(epoch);
    }
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn not_ready() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Views not ready",
        "the views are being rebuilt after a start; retry shortly".into(),
        None,
    )
}

pub(super) async fn list_inventory(State((state, _)): AppState) -> Response {
    if !state.views.is_ready() {
        return not_ready();
    }
    let views = state.views.read();
    let items: Vec<StockJson> = views
        .stock
        .iter()
        .map(|(sku, level)| StockJson::new(sku, *level, views.sku(sku).1))
        .collect();
    Json(json!({ "as_of_epoch": views.as_of, "items": items })).into_response()
}

pub(super) async fn get_inventory(
    State((state, _)): AppState,
    Path(sku): Path<String>,
) -> Response {
    if let Some(why) = schemas::validate_sku(&sku) {
        return problem(StatusCode::BAD_REQUEST, "Invalid SKU", why, None);
    }
    if !state.views.is_ready() {
        return not_ready();
    }
    let views = state.views.read();
    let (level, version) = views.sku(&sku);
    let mut body = serde_json::to_value(StockJson::new(&sku, level, version)).unwrap_or_default();
    body["as_of_epoch"] = json!(views.as_of);
    Json(body).into_response()
}

pub(super) async fn get_order(State((state, _)): AppState, Path(id): Path<String>) -> Response {
    let Ok(order_id) = uuid::Uuid::try_parse(&id) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Invalid order id",
            format!("{id:?} is not a UUID"),
            None,
        );
    };
    if !state.views.is_ready() {
        return not_ready();
    }
    let views = state.views.read();
    match views.orders.get(&order_id.as_u128()) {
        Some(view) => {
            let mut body =
                serde_json::to_value(OrderJson::new(order_id.as_u128(), view)).unwrap_or_default();
            body["as_of_epoch"] = json!(views.as_of);
            Json(body).into_response()
        }
        None => problem(
            StatusCode::NOT_FOUND,
            "Order not found",
            format!("the view has no order {order_id} as of this epoch"),
            views.as_of,
        ),
    }
}

pub(super) async fn status(State((state, _)): AppState) -> Response {
    let views = state.views.read();
    let offsets: Vec<serde_json::Value> = views
        .offsets
        .iter()
        .map(|((topic, partition), next)| {
            json!({
                "topic": state.topics.inputs.get(usize::from(*topic)).cloned().unwrap_or_default(),
                "partition": partition,
                "next_offset": next,
            })
        })
        .collect();
    Json(json!({
        "ready": state.ready(),
        "rebuilt": state.views.is_ready(),
        "as_of_epoch": views.as_of,
        "frontier_delay_seconds": state.metrics.frontier_delay(),
        "offsets": offsets,
    }))
    .into_response()
}

pub(super) async fn healthz(State((state, _)): AppState) -> Response {
    if state.health.failed.load(Ordering::Acquire) {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Failed",
            "the job failed and is stopping".into(),
            None,
        )
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

pub(super) async fn readyz(State((state, _)): AppState) -> Response {
    if state.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready",
            "rebuilding the views, or the sink has not committed yet".into(),
            None,
        )
    }
}

pub(super) async fn metrics(State((state, _)): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fill, state};
    use super::super::{ApiState, router};
    use super::*;
    use crate::Shutdown;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(state: &ApiState, uri: &str) -> (StatusCode, String, serde_json::Value) {
        let response = router(state.clone(), Shutdown::new())
            .oneshot(axum::http::Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, content_type, json)
    }

    #[tokio::test]
    async fn rest_answers_with_epochs_problems_and_zeros() {
        let state = state();
        let (status, content_type, _) = get(&state, "/v1/inventory/A").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not rebuilt yet");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(
            get(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        fill(&state.views);

        let (status, _, body) = get(&state, "/v1/inventory/A").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["available"], -2, "oversold is shown");
        assert_eq!(
            (body["version"].as_u64(), body["as_of_epoch"].as_u64()),
            (Some(1_000), Some(1_000))
        );
        let (status, _, body) = get(&state, "/v1/inventory/NEVER-SEEN").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (body["on_hand"].as_i64(), body["version"].as_u64()),
            (Some(0), Some(0))
        );
        let (status, content_type, body) = get(&state, "/v1/inventory/bad%20sku").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::BAD_REQUEST, "application/problem+json")
        );
        assert_eq!(body["status"], 400);

        let (status, _, body) = get(&state, "/v1/inventory").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(body["as_of_epoch"], 1_000);

        let id = uuid::Uuid::from_u128(42);
        let (status, _, body) = get(&state, &format!("/v1/orders/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (body["status"].as_str(), body["total_minor"].as_i64()),
            (Some("PAID"), Some(1_999))
        );
        let (status, content_type, body) =
            get(&state, &format!("/v1/orders/{}", uuid::Uuid::from_u128(7))).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::NOT_FOUND, "application/problem+json")
        );
        assert_eq!(
            body["as_of_epoch"], 1_000,
            "a 404 says which epoch it looked at"
        );
        assert_eq!(
            get(&state, "/v1/orders/not-a-uuid").await.0,
            StatusCode::BAD_REQUEST
        );

        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&state, "/readyz").await.0,
            StatusCode::OK,
            "rebuilt, nothing pending"
        );
        let (_, _, status) = get(&state, "/v1/status").await;
        assert_eq!(status["offsets"][0]["next_offset"], 10);
        state.health.failed.store(true, Ordering::Release);
        assert_eq!(
            get(&state, "/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
