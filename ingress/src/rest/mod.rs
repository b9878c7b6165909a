//! The REST API (axum): routes, handlers, the OpenAPI document and the operational
//! endpoints.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/orders` | 201 + `Location`, the order (honours `Idempotency-Key`) |
//! | `PATCH /v1/orders/{order_id}` | 202, the change (`lines` or `status: CANCELLED`) |
//! | `GET /v1/orders/{order_id}` | 200, the status from the pipeline's view; 404; 503 while the pipeline is down |
//! | `POST /v1/inventory/adjustments` | 202, the adjustment |
//! | `GET /healthz` | 200 while the process serves (liveness) |
//! | `GET /readyz` | 200 when Kafka, the registry and the idempotency replay are ready, else 503 with the failing checks |
//! | `GET /metrics` | Prometheus text |
//! | `GET /openapi.json` | the OpenAPI 3.1 document, generated from the handlers and body types |
//!
//! Handlers only translate: the body becomes a draft, [`crate::commands`] decides, the
//! answer or [`Problem`] is rendered. Every error is `application/problem+json`,
//! including unknown routes (404) and methods (405). A replayed answer (same
//! `Idempotency-Key`, same request) has the first answer's status and body, plus the
//! header `Idempotent-Replayed: true`.
//!
//! With API keys configured (`[security] api_keys`), every route but `/healthz`,
//! `/readyz` and `/metrics` needs `Authorization: Bearer <key>`; without one the answer
//! is 401 with `WWW-Authenticate: Bearer` and a problem document of type
//! `/problems/unauthorized` (`servicekit::auth`). Refusals are counted in the request
//! metrics like any other answer.

pub mod dto;
pub mod extract;
pub mod problem;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use servicekit::ApiKeys;

use crate::commands::{Channel, Commands, RequestContext};
use crate::metrics::Metrics;
use crate::readiness::{self, ReadyReport};
use dto::{
    AdjustmentBody, AdjustmentOut, ChangeBody, ChangeOrderBody, CreateOrderBody, OrderBody,
    OrderStatusBody,
};
use extract::{ApiJson, BodyLimit, IdempotencyKeyHeader, OrderIdPath, TraceParentHeader};
use problem::{PROBLEM_JSON, Problem};

/// The header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// What the handlers share.
#[derive(Clone)]
pub struct RestState {
    commands: Arc<Commands>,
    metrics: Metrics,
    ready: watch::Receiver<ReadyReport>,
    openapi: Arc<String>,
}

/// The OpenAPI document's frame; the paths come from the handlers' `#[utoipa::path]`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Order Service",
        description = "Orders in, Kafka events out. Every error is an RFC 9457 problem document (application/problem+json). A 2xx answer means the event was acknowledged by Kafka with acks=all.",
        version = "1"
    ),
    tags(
        (name = "orders", description = "Place, change, cancel and read orders."),
        (name = "inventory", description = "Restocks and corrections.")
    ),
    components(schemas(problem::ProblemDocument, problem::ProblemField))
)]
pub struct ApiDoc;

/// The OpenAPI document and the API routes, generated together. The `PATCH` body's
/// schema is replaced by [`dto::change_order_schema`], which states the either-or rule
/// the derived one cannot.
fn api() -> (Router<RestState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_order))
        .routes(routes!(get_order, change_order))
        .routes(routes!(adjust_stock))
        .split_for_parts();
    if let Some(components) = doc.components.as_mut() {
        components.schemas.insert(
            "ChangeOrderBody".to_owned(),
            dto::change_order_schema().into(),
        );
    }
    (router, doc)
}

/// The OpenAPI document as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The complete router: the API, the operational endpoints, fallbacks and middleware.
/// `keys` guards every route but the operational ones (empty: no authentication).
pub fn router(
    commands: Arc<Commands>,
    metrics: Metrics,
    ready: watch::Receiver<ReadyReport>,
    body_limit: usize,
    keys: &ApiKeys,
) -> Router {
    let (api, doc) = api();
    let openapi = Arc::new(doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned()));
    let state = RestState {
        commands,
        metrics: metrics.clone(),
        ready,
        openapi,
    };
    api.route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        // Inside `track`, so that refusals are counted; before any body is read.
        .layer(keys.layer())
        .layer(middleware::from_fn_with_state(metrics, track))
        // Request spans and outcomes at DEBUG: the causes of 5xx answers are logged by
        // the service itself, at WARN (retriable) or ERROR (setup faults).
        .layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .with_state(state)
}

/// Counts every answer by route template, method and status, and times it.
async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http_duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}

fn context(key: IdempotencyKeyHeader, traceparent: TraceParentHeader) -> RequestContext {
    RequestContext {
        channel: Channel::Rest,
        key: key.0,
        traceparent: traceparent.0,
    }
}

fn with_replay_header(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Place an order.
///
/// Publishes `order.created` and answers once Kafka acknowledged it (acks=all). With an
/// `Idempotency-Key`, a retry of the same request returns the same order (and never a
/// second order); the same key with another request is 422.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 257, pattern = r#"^(?!""$)("[!-~]{1,255}"|[!-~]{1,255})$"#, description = "Makes retries safe: 1 to 255 visible ASCII characters ('!' to '~'), e.g. a UUID, bare or in double quotes (the structured-field string form). The order id is derived from it and the customer id."),
    ),
    request_body(content = CreateOrderBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted and durably published.", body = OrderBody,
            headers(("Location" = String, description = "/v1/orders/{order_id}"), ("Idempotent-Replayed" = String, description = "`true` when this is the answer to an earlier request with the same key"))),
        (status = 400, description = "Invalid request (every violation in `errors`) or malformed JSON.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is still in progress.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than the limit.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with a different request.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Kafka did not acknowledge in time; retry with the same key.", body = problem::ProblemDocument, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
async fn create_order(
    State(state): State<RestState>,
    uri: Uri,
    key: IdempotencyKeyHeader,
    traceparent: TraceParentHeader,
    ApiJson(body): ApiJson<CreateOrderBody>,
) -> Result<Response, Problem> {
    let answer = state
        .commands
        .create_order(body.into(), &context(key, traceparent))
        .await
        .map_err(|e| Problem::from(e).at(uri.path()))?;
    let body = OrderBody::from(&answer.event);
    let location = format!("/v1/orders/{}", body.order_id);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(with_replay_header(response, answer.replayed))
}

/// Change an order's lines, or cancel it.
///
/// Send `{"lines": [...]}` (the complete new lines) or `{"status": "CANCELLED"}`, not
/// both. Publishes `order.updated`; the pipeline applies it while the order is CREATED.
#[utoipa::path(
    patch,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    params(
        ("order_id" = String, Path, format = Uuid, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Id of the order: a UUID in the hyphenated 8-4-4-4-12 form, not the nil UUID."),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 257, pattern = r#"^(?!""$)("[!-~]{1,255}"|[!-~]{1,255})$"#, description = "Makes retries safe, as for POST /v1/orders."),
    ),
    request_body(content = ChangeOrderBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The change was durably published.", body = ChangeBody),
        (status = 400, description = "Invalid request or malformed JSON.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No currency given and the pipeline's view does not know the order.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is still in progress.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than the limit.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with a different request.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Kafka (or, without currency, the pipeline) unavailable; retry.", body = problem::ProblemDocument, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
async fn change_order(
    State(state): State<RestState>,
    uri: Uri,
    OrderIdPath(order_id): OrderIdPath,
    key: IdempotencyKeyHeader,
    traceparent: TraceParentHeader,
    ApiJson(body): ApiJson<ChangeOrderBody>,
) -> Result<Response, Problem> {
    let answer = state
        .commands
        .change_order(body.into_draft(order_id), &context(key, traceparent))
        .await
        .map_err(|e| Problem::from(e).at(uri.path()))?;
    let response = (StatusCode::ACCEPTED, Json(ChangeBody::from(&answer.event))).into_response();
    Ok(with_replay_header(response, answer.replayed))
}

/// Read an order's status.
///
/// Read from the pipeline's order view over gRPC; the answer says which epoch it
/// reflects. The view trails the events by milliseconds: reading an order this instance
/// accepted in the last minute waits (up to 3 s) until the view holds it, so a client
/// reads its own writes; through another instance a just-created order may be 404 for
/// a moment.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, format = Uuid, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Id of the order: a UUID in the hyphenated 8-4-4-4-12 form, not the nil UUID.")),
    responses(
        (status = 200, description = "The order as the view has it.", body = OrderStatusBody),
        (status = 400, description = "The id is not a UUID.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "The view does not hold the order.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 502, description = "The pipeline answered something unusable.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The pipeline is unavailable.", body = problem::ProblemDocument, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
async fn get_order(
    State(state): State<RestState>,
    uri: Uri,
    OrderIdPath(order_id): OrderIdPath,
) -> Result<Json<OrderStatusBody>, Problem> {
    let view = state
        .commands
        .order_status(&order_id)
        .await
        .map_err(|e| Problem::from(e).at(uri.path()))?;
    Ok(Json(OrderStatusBody::from(&view)))
}

/// Adjust a SKU's stock on hand.
///
/// Publishes `stock.adjusted`. With an `Idempotency-Key`, a retry is not applied twice.
#[utoipa::path(
    post,
    path = "/v1/inventory/adjustments",
    tag = "inventory",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 257, pattern = r#"^(?!""$)("[!-~]{1,255}"|[!-~]{1,255})$"#, description = "Makes retries safe: an adjustment without a key that is retried is applied twice. Same form as for POST /v1/orders."),
    ),
    request_body(content = AdjustmentBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The adjustment was durably published.", body = AdjustmentOut),
        (status = 400, description = "Invalid request or malformed JSON.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is still in progress.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than the limit.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with a different request.", body = problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Kafka did not acknowledge in time; retry with the same key.", body = problem::ProblemDocument, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
async fn adjust_stock(
    State(state): State<RestState>,
    uri: Uri,
    key: IdempotencyKeyHeader,
    traceparent: TraceParentHeader,
    ApiJson(body): ApiJson<AdjustmentBody>,
) -> Result<Response, Problem> {
    let answer = state
        .commands
        .adjust_stock(body.into(), &context(key, traceparent))
        .await
        .map_err(|e| Problem::from(e).at(uri.path()))?;
    let response = (
        StatusCode::ACCEPTED,
        Json(AdjustmentOut::from(&answer.event)),
    )
        .into_response();
    Ok(with_replay_header(response, answer.replayed))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(state): State<RestState>) -> Response {
    let report = state.ready.borrow().clone();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(report)).into_response();
    if status != StatusCode::OK {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(readiness::RETRY_AFTER.as_secs()),
        );
    }
    response
}

async fn metrics_text(State(state): State<RestState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi_json(State(state): State<RestState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_owned(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("There is no route {}.", uri.path())).at(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::method_not_allowed(method.as_str()).at(uri.path())
}

/// The media type of problem documents, re-exported for tests and clients.
pub const PROBLEM_CONTENT_TYPE: &str = PROBLEM_JSON;

#[cfg(test)]
mod tests {
    use schemas::MAX_LINES_PER_ORDER;
    use schemas::validation::{
        ACTIVE_CURRENCIES, MAX_ABS_STOCK_DELTA, MAX_QUANTITY, MAX_SKU_CHARS, MAX_UNIT_PRICE_MINOR,
        MIN_QUANTITY,
    };
    use serde_json::Value;

    use crate::validation::{IdempotencyKey, MAX_IDEMPOTENCY_KEY_CHARS};

    use super::*;

    fn doc() -> Value {
        serde_json::to_value(openapi()).unwrap()
    }

    #[test]
    fn lists_every_route_with_its_methods() {
        let doc = doc();
        let paths = doc["paths"].as_object().unwrap();
        let mut routes: Vec<String> = paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect();
        routes.sort();
        assert_eq!(
            routes,
            [
                "GET /v1/orders/{order_id}",
                "PATCH /v1/orders/{order_id}",
                "POST /v1/inventory/adjustments",
                "POST /v1/orders",
            ]
        );
        let post = &doc["paths"]["/v1/orders"]["post"];
        assert!(post["requestBody"]["content"]["application/json"].is_object());
        assert!(post["responses"]["400"]["content"]["application/problem+json"].is_object());
        assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
        assert_eq!(post["parameters"][0]["name"], "Idempotency-Key");
    }

    #[test]
    fn request_schemas_are_what_the_server_accepts() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        for name in ["CreateOrderBody", "LineBody", "AdjustmentBody"] {
            assert_eq!(
                schemas[name]["additionalProperties"], false,
                "{name} refuses unknown fields"
            );
        }
        let create = &schemas["CreateOrderBody"];
        assert_eq!(
            create["required"],
            serde_json::json!(["customer_id", "currency", "lines"])
        );
        assert_eq!(
            create["properties"]["lines"]["maxItems"],
            MAX_LINES_PER_ORDER
        );
        assert_eq!(create["properties"]["lines"]["minItems"], 1);
        // Required fields are not nullable: null is refused as missing.
        assert_eq!(create["properties"]["lines"]["type"], "array", "{create}");
        let currencies = create["properties"]["currency"]["enum"].as_array().unwrap();
        assert_eq!(currencies.len(), ACTIVE_CURRENCIES.len());
        let line = &schemas["LineBody"];
        assert_eq!(
            line["required"],
            serde_json::json!(["sku", "quantity", "unit_price_minor"])
        );
        assert_eq!(line["properties"]["quantity"]["minimum"], MIN_QUANTITY);
        assert_eq!(line["properties"]["quantity"]["maximum"], MAX_QUANTITY);
        assert_eq!(
            line["properties"]["unit_price_minor"]["maximum"],
            MAX_UNIT_PRICE_MINOR
        );
        assert_eq!(line["properties"]["sku"]["maxLength"], MAX_SKU_CHARS);
        // A change is one of two shapes, each closed, each with its one required field.
        let change = &schemas["ChangeOrderBody"]["oneOf"];
        let (replace, cancel) = (&change[0], &change[1]);
        for shape in [replace, cancel] {
            assert_eq!(shape["additionalProperties"], false, "{shape}");
        }
        assert_eq!(replace["required"], serde_json::json!(["lines"]));
        assert_eq!(replace["properties"]["status"]["type"], "null");
        assert_eq!(replace["properties"]["lines"]["minItems"], 1);
        assert_eq!(cancel["required"], serde_json::json!(["status"]));
        assert_eq!(
            cancel["properties"]["status"]["enum"],
            serde_json::json!(["CANCELLED"])
        );
        assert_eq!(cancel["properties"]["lines"]["type"], "null");
        // Free text: the no-control-characters rule as a pattern.
        assert_eq!(
            schemas["AdjustmentBody"]["properties"]["reason"]["pattern"],
            dto::NO_CONTROL_PATTERN
        );
        assert_eq!(
            create["properties"]["customer_id"]["pattern"],
            dto::NO_CONTROL_PATTERN
        );
        // delta: two ranges, 0 left out.
        let delta = &schemas["AdjustmentBody"]["properties"]["delta"]["anyOf"];
        assert_eq!(delta[0]["minimum"], -MAX_ABS_STOCK_DELTA);
        assert_eq!(delta[0]["maximum"], -1);
        assert_eq!(delta[1]["minimum"], 1);
        assert_eq!(delta[1]["maximum"], MAX_ABS_STOCK_DELTA);
        assert!(schemas::validation::validate_stock_delta(0).is_some());
        assert!(schemas["Problem"]["properties"]["errors"].is_object());
    }

    /// The `Idempotency-Key` and `{order_id}` parameters state the rules the extractors
    /// apply (schemathesis, `make fuzz-api`, checks the patterns against the live
    /// server); here the patterns are pinned to the constants and the parsers' edges.
    #[test]
    fn the_parameter_patterns_agree_with_the_rules() {
        let doc = doc();
        let params = |path: &str, method: &str| doc["paths"][path][method]["parameters"].clone();
        let param = |list: &Value, name: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no parameter {name}"))
                .clone()
        };
        let key = param(&params("/v1/orders", "post"), "Idempotency-Key");
        let key_pattern = key["schema"]["pattern"].as_str().unwrap().to_owned();
        // `""` is the one text of visible characters that strips to an empty key.
        assert_eq!(
            key_pattern,
            format!(
                r#"^(?!""$)("[!-~]{{1,{n}}}"|[!-~]{{1,{n}}})$"#,
                n = MAX_IDEMPOTENCY_KEY_CHARS
            )
        );
        for (path, method) in [
            ("/v1/orders/{order_id}", "patch"),
            ("/v1/inventory/adjustments", "post"),
        ] {
            let other = param(&params(path, method), "Idempotency-Key");
            assert_eq!(other["schema"]["pattern"], key_pattern, "{method} {path}");
        }
        // The header extractor strips one pair of quotes, then parses the key.
        let header_accepts = |text: &str| {
            let inner = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(text);
            IdempotencyKey::parse(inner).is_ok()
        };
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS);
        for (text, ok) in [
            ("a", true),
            ("\"a\"", true),
            ("\"", true),
            ("\"\"", false),
            ("", false),
            ("a b", false),
            ("é", false),
            (longest.as_str(), true),
            (&format!("\"{longest}\""), true),
            (&format!("{longest}k"), false),
        ] {
            assert_eq!(header_accepts(text), ok, "{text:?}");
        }

        let id = param(&params("/v1/orders/{order_id}", "get"), "order_id");
        assert_eq!(id["schema"]["format"], "uuid");
        let id_pattern = id["schema"]["pattern"].as_str().unwrap();
        assert_eq!(id_pattern, schemas::validation::ID_PATTERN);
        for (text, ok) in [
            ("0b6f1d7e-5d9c-4c8e-9a51-0d6f3f1c2a7b", true),
            ("0B6F1D7E-5D9C-4C8E-9A51-0D6F3F1C2A7B", true),
            ("00000000-0000-0000-0000-000000000000", false),
            ("0b6f1d7e5d9c4c8e9a510d6f3f1c2a7b", false),
            ("{0b6f1d7e-5d9c-4c8e-9a51-0d6f3f1c2a7b}", false),
        ] {
            assert_eq!(schemas::validation::parse_id(text).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn the_sku_pattern_agrees_with_the_rule() {
        let doc = doc();
        let pattern = doc["components"]["schemas"]["LineBody"]["properties"]["sku"]["pattern"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            pattern,
            format!("^[A-Z0-9][A-Z0-9_-]{{0,{}}}$", MAX_SKU_CHARS - 1)
        );
        // Spot checks of the rule the pattern describes.
        for (sku, ok) in [
            ("SKU-1", true),
            ("A", true),
            ("-A", false),
            ("a", false),
            ("_", false),
        ] {
            assert_eq!(schemas::validate_sku(sku).is_none(), ok, "{sku}");
        }
    }
}
