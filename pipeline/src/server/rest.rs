//! The REST routes of the views API: JSON answers as of one committed epoch, RFC 9457
//! problems for errors, and the operational routes (`/healthz`, `/readyz`, `/metrics`).
//! The table of routes and answers is in the parent module's docs.
//!
//! The OpenAPI 3.1 document (`GET /openapi.json`, [`openapi`]) is generated with utoipa
//! from the handlers' annotations and the answer types below, which the handlers
//! serialize, so the document describes what is sent; the path parameters carry the
//! patterns of the rules the handlers apply (pinned by a test to the `schemas` rules).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::logic::{Line, OrderId, OrderView, StockLevel};

/// One SKU in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineJson {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Price per unit, minor units.
    pub unit_price_minor: i64,
}

/// One order in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// `GET /v1/inventory`: every SKU with non-zero numbers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InventoryJson {
    /// The committed epoch the answer reflects (null before the first one).
    pub as_of_epoch: Option<u64>,
    /// The SKUs, by SKU.
    pub items: Vec<StockJson>,
}

/// `GET /v1/inventory/{sku}`: one SKU (zeros if the view does not hold it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StockAnswer {
    /// The SKU's numbers.
    #[serde(flatten)]
    pub stock: StockJson,
    /// The committed epoch the answer reflects (null before the first one).
    pub as_of_epoch: Option<u64>,
}

/// `GET /v1/orders/{id}`: one order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderAnswer {
    /// The order.
    #[serde(flatten)]
    pub order: OrderJson,
    /// The committed epoch the answer reflects (null before the first one).
    pub as_of_epoch: Option<u64>,
}

/// One input partition's committed position in `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OffsetJson {
    /// The input topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the views will include.
    pub next_offset: i64,
}

/// `GET /v1/status`: readiness and how far the views have read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusJson {
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// Whether the views are rebuilt after the start.
    pub rebuilt: bool,
    /// The last committed epoch (null before the first one).
    pub as_of_epoch: Option<u64>,
    /// How far the dataflow's frontier trails the ingestion clock.
    pub frontier_delay_seconds: f64,
    /// The committed input positions: equal to the partitions' ends, the views include
    /// every record written so far.
    pub offsets: Vec<OffsetJson>,
}

impl StatusJson {
    /// How many records of `ends` (topic, partition → end offset, e.g. the high
    /// watermarks) the views do not include yet: 0 once every partition is committed up
    /// to its end. A partition the job has not committed counts from offset 0.
    pub fn behind(&self, ends: &std::collections::BTreeMap<(String, i32), i64>) -> i64 {
        ends.iter()
            .map(|((topic, partition), end)| {
                let next = self
                    .offsets
                    .iter()
                    .find(|o| &o.topic == topic && o.partition == *partition)
                    .map_or(0, |o| o.next_offset);
                (end - next).max(0)
            })
            .sum()
    }
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemJson {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// The epoch a 404 looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_epoch: Option<u64>,
}

pub(super) fn problem(
    status: StatusCode,
    title: &str,
    detail: String,
    as_of: Option<u64>,
) -> Response {
    let body = ProblemJson {
        kind: "about:blank".to_owned(),
        title: title.to_owned(),
        status: status.as_u16(),
        detail,
        as_of_epoch: as_of,
    };
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

/// The OpenAPI document of the views API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Inventory views",
        description = "The pipeline's views (stock per SKU, status per order), each answer as of one committed epoch. Errors are RFC 9457 problem documents (application/problem+json). 503 while the views are rebuilt after a start.",
        version = "1"
    ),
    paths(list_inventory, get_inventory, get_order, status, super::sse::stream),
    components(schemas(ProblemJson))
)]
pub struct ViewsDoc;

/// The views API's OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ViewsDoc::openapi()
}

pub(super) async fn openapi_json() -> Response {
    match ViewsDoc::openapi().to_pretty_json() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            text,
        )
            .into_response(),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No document",
            format!("the OpenAPI document does not serialize: {e}"),
            None,
        ),
    }
}

/// Every SKU with non-zero numbers.
#[utoipa::path(
    get,
    path = "/v1/inventory",
    tag = "inventory",
    responses(
        (status = 200, description = "The stock view.", body = InventoryJson),
        (status = 503, description = "The views are being rebuilt after a start.", body = ProblemJson, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_inventory(State(app): AppState) -> Response {
    let state = app.0;
    if !state.views.is_ready() {
        return not_ready();
    }
    let views = state.views.read();
    let items: Vec<StockJson> = views
        .stock
        .iter()
        .map(|(sku, level)| StockJson::new(sku, *level, views.sku(sku).1))
        .collect();
    Json(InventoryJson {
        as_of_epoch: views.as_of,
        items,
    })
    .into_response()
}

/// One SKU; a SKU the view does not hold answers 200 with zeros.
#[utoipa::path(
    get,
    path = "/v1/inventory/{sku}",
    tag = "inventory",
    params(("sku" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Z0-9][A-Z0-9_-]{0,63}$", description = "Stock keeping unit: A-Z, 0-9, '_' and '-', starting with A-Z or 0-9.")),
    responses(
        (status = 200, description = "The SKU's numbers (zeros if never seen).", body = StockAnswer),
        (status = 400, description = "Not a valid SKU.", body = ProblemJson, content_type = "application/problem+json"),
        (status = 503, description = "The views are being rebuilt after a start.", body = ProblemJson, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_inventory(State(app): AppState, Path(sku): Path<String>) -> Response {
    let state = app.0;
    if let Some(why) = schemas::validate_sku(&sku) {
        return problem(StatusCode::BAD_REQUEST, "Invalid SKU", why, None);
    }
    if !state.views.is_ready() {
        return not_ready();
    }
    let views = state.views.read();
    let (level, version) = views.sku(&sku);
    Json(StockAnswer {
        stock: StockJson::new(&sku, level, version),
        as_of_epoch: views.as_of,
    })
    .into_response()
}

/// One order, as of the last committed epoch.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, format = Uuid, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Id of the order: a UUID in the hyphenated 8-4-4-4-12 form, not the nil UUID.")),
    responses(
        (status = 200, description = "The order.", body = OrderAnswer),
        (status = 400, description = "Not a valid order id.", body = ProblemJson, content_type = "application/problem+json"),
        (status = 404, description = "The view has no such order at this epoch (`as_of_epoch` says which).", body = ProblemJson, content_type = "application/problem+json"),
        (status = 503, description = "The views are being rebuilt after a start.", body = ProblemJson, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_order(State(app): AppState, Path(id): Path<String>) -> Response {
    let state = app.0;
    // The same rule as ingress and the events: the hyphenated form, not the nil UUID.
    let order_id = match schemas::validation::parse_id(&id) {
        Ok(order_id) => order_id,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid order id",
                format!("{id:?}: {e}"),
                None,
            );
        }
    };
    if !state.views.is_ready() {
        return not_ready();
    }
    let views = state.views.read();
    match views.orders.get(&order_id.as_u128()) {
        Some(view) => Json(OrderAnswer {
            order: OrderJson::new(order_id.as_u128(), view),
            as_of_epoch: views.as_of,
        })
        .into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "Order not found",
            format!("the view has no order {order_id} as of this epoch"),
            views.as_of,
        ),
    }
}

/// Readiness, the last epoch and the committed input positions.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operations",
    responses((status = 200, description = "The job's status.", body = StatusJson))
)]
pub(super) async fn status(State(app): AppState) -> Response {
    let state = app.0;
    let views = state.views.read();
    let offsets = views
        .offsets
        .iter()
        .map(|((topic, partition), next)| OffsetJson {
            topic: state
                .topics
                .inputs
                .get(usize::from(*topic))
                .cloned()
                .unwrap_or_default(),
            partition: *partition,
            next_offset: *next,
        })
        .collect();
    Json(StatusJson {
        ready: state.ready(),
        rebuilt: state.views.is_ready(),
        as_of_epoch: views.as_of,
        frontier_delay_seconds: state.metrics.frontier_delay(),
        offsets,
    })
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

    #[test]
    fn behind_counts_what_the_views_lack() {
        let at = |topic: &str, partition, next_offset| OffsetJson {
            topic: topic.to_owned(),
            partition,
            next_offset,
        };
        let status = StatusJson {
            ready: true,
            rebuilt: true,
            as_of_epoch: Some(7),
            frontier_delay_seconds: 0.0,
            offsets: vec![at("a", 0, 10), at("a", 1, 5), at("b", 0, 3)],
        };
        let ends = |pairs: &[(&str, i32, i64)]| {
            pairs
                .iter()
                .map(|(t, p, e)| (((*t).to_owned(), *p), *e))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        // Caught up, and a partition the job is past (a stale end) counts 0.
        assert_eq!(status.behind(&ends(&[("a", 0, 10), ("a", 1, 4)])), 0);
        // 2 left on a/1; an uncommitted partition counts from offset 0.
        assert_eq!(status.behind(&ends(&[("a", 1, 7), ("c", 0, 4)])), 6);
    }

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

    /// The document lists every API route, and its path patterns are the rules the
    /// handlers apply (schemathesis checks them against a live server: `make fuzz-api`).
    #[tokio::test]
    async fn the_openapi_document_describes_the_routes() {
        let (status, content_type, doc) = get(&state(), "/openapi.json").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "application/json")
        );
        let mut paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/v1/inventory",
                "/v1/inventory/{sku}",
                "/v1/orders/{id}",
                "/v1/status",
                "/v1/stream"
            ]
        );
        let sku = &doc["paths"]["/v1/inventory/{sku}"]["get"]["parameters"][0]["schema"];
        let max = schemas::validation::MAX_SKU_CHARS;
        assert_eq!(sku["maxLength"], max);
        assert_eq!(
            sku["pattern"],
            format!("^[A-Z0-9][A-Z0-9_-]{{0,{}}}$", max - 1)
        );
        let id = &doc["paths"]["/v1/orders/{id}"]["get"];
        assert_eq!(id["parameters"][0]["schema"]["format"], "uuid");
        assert_eq!(
            id["parameters"][0]["schema"]["pattern"],
            schemas::validation::ID_PATTERN
        );
        assert!(
            id["responses"]["404"]["content"]["application/problem+json"].is_object(),
            "{id}"
        );
        for (text, ok) in [
            ("0b6f1d7e-5d9c-4c8e-9a51-0d6f3f1c2a7b", true),
            ("00000000-0000-0000-0000-000000000000", false),
            ("0b6f1d7e5d9c4c8e9a510d6f3f1c2a7b", false),
        ] {
            assert_eq!(schemas::validation::parse_id(text).is_ok(), ok, "{text}");
        }
        // A malformed query of the stream is a problem document, like every other error.
        let (status, content_type, body) = get(&state(), "/v1/stream?snapshot=maybe").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::BAD_REQUEST, "application/problem+json")
        );
        assert_eq!(body["status"], 400);
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
        for id in [
            "not-a-uuid",
            "0b6f1d7e5d9c4c8e9a510d6f3f1c2a7b",
            "00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(
                get(&state, &format!("/v1/orders/{id}")).await.0,
                StatusCode::BAD_REQUEST,
                "{id}: the hyphenated form only, not nil, as ingress and the events"
            );
        }

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
