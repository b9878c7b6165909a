//! The views API of process 0: REST + server-sent events (axum) and gRPC (tonic,
//! `orderpipeline.v1.ViewService`, with reflection), plus `/healthz`, `/readyz` and
//! `/metrics`.
//!
//! Only process 0 serves the API: it runs worker 0, where all output is gathered, and
//! holds the views. Every process serves its own `/metrics` and `/healthz`
//! ([`ops_router`]; process 0 with the API, the others on `server.metrics` or the API
//! port + their index), because each reads its own input partitions and keeps its own
//! arrangements, whose lag and sizes nobody else knows (see `pipeline/README.md`). Every answer reflects one committed epoch and says which
//! (`as_of_epoch`, UTC ms; gRPC `Freshness`), so an answer is the same whatever the
//! number of workers and processes.
//!
//! REST (`application/json`; errors are RFC 9457 `application/problem+json`):
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/inventory` | `{"as_of_epoch", "items": [level...]}`, SKUs with non-zero numbers, by SKU |
//! | `GET /v1/inventory/{sku}` | `{"sku", "on_hand", "reserved", "available", "version", "as_of_epoch"}`; a SKU the view does not hold answers **200 with zeros** (and the version of its last change, 0 if it never had one): "all zero" and "never seen" are the same stock, and a 404 would make dashboards special-case it. 400 for a malformed SKU |
//! | `GET /v1/orders/{id}` | `{"order_id", "status", "total_minor", "currency", "lines", "as_of_epoch"}`; 404 problem (with `as_of_epoch`) if the view has no such order at that epoch; 400 for a malformed id |
//! | `GET /v1/stream` | SSE: `event: stock` / `event: order` per changed row, JSON data with `epoch`; `?snapshot=true` sends the current views first; `event: lagged` if the client fell behind (re-read the snapshot) |
//! | `GET /v1/status` | readiness, `as_of_epoch` and the committed input offsets (`topic`, `partition`, `next_offset`): when they equal the partitions' ends, the views include every record written so far |
//! | `GET /healthz` | 200 while the job runs, 503 once it failed |
//! | `GET /readyz` | 200 once the restart's rebuild is done and the sink has committed (or has nothing to commit); 503 before |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /` | the live inventory page ([`page`]): the stock table and order status changes, following the stream |
//!
//! Views endpoints answer 503 (gRPC `UNAVAILABLE`) until the views are rebuilt after a
//! start, so that nobody mistakes a half-replayed view for the current one.
//!
//! `[server.security]` (`servicekit::ApiSecurity`, off by default) serves both ports
//! over TLS and requires `Authorization: Bearer <key>` on every REST and SSE route but
//! `/healthz`, `/readyz` and `/metrics` (401, `WWW-Authenticate: Bearer`, problem+json)
//! and on every gRPC call, reflection included (`UNAUTHENTICATED`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{BroadcastStream, TcpListenerStream};
use tonic::{Request, Response as GrpcResponse, Status};

use servicekit::ApiKeys;

use crate::Shutdown;
use crate::config::{ServerConfig, TopicNames};
use crate::error::PipelineError;
use crate::logic::{Line, OrderId, OrderStatus, OrderView, StockLevel};
use crate::metrics::Metrics;
use crate::proto;
use crate::proto::view_service_server::{ViewService, ViewServiceServer};
use crate::sink::Health;
use crate::views::{Delta, ViewState, Views};

pub mod page;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The views.
    pub views: Views,
    /// The metrics (rendered at `/metrics`).
    pub metrics: Metrics,
    /// The job's health flags.
    pub health: Arc<Health>,
    /// Topic names (for `/v1/status`).
    pub topics: TopicNames,
}

impl ApiState {
    fn ready(&self) -> bool {
        self.views.is_ready()
            && !self.health.failed.load(Ordering::Acquire)
            && (self.health.committed_once.load(Ordering::Acquire)
                || self.metrics.frontier_delay() == 0.0)
    }
}

/// The two bound listeners of the views API.
#[derive(Debug)]
pub struct Listeners {
    /// REST, SSE and the operational endpoints.
    pub http: TcpListener,
    /// gRPC.
    pub grpc: TcpListener,
}

impl Listeners {
    /// Binds `config.http` and `config.grpc`, failing fast if a port is taken.
    pub async fn bind(config: &ServerConfig) -> Result<Self, PipelineError> {
        let http = TcpListener::bind(config.http)
            .await
            .map_err(|source| PipelineError::Bind {
                what: "HTTP",
                addr: config.http,
                source,
            })?;
        let grpc = TcpListener::bind(config.grpc)
            .await
            .map_err(|source| PipelineError::Bind {
                what: "gRPC",
                addr: config.grpc,
                source,
            })?;
        Ok(Listeners { http, grpc })
    }
}

/// Binds both listeners (failing fast if a port is taken) and serves until `shutdown`.
/// The returned task ends when both servers have stopped.
pub async fn start(
    config: &ServerConfig,
    state: ApiState,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, PipelineError> {
    // The security section first: a bad TLS file should not leave a port bound.
    let security = load_security(config)?;
    let listeners = Listeners::bind(config).await?;
    serve(listeners, &security, state, shutdown).await
}

/// Binds `addr` and serves [`ops_router`] there until `shutdown` (see [`serve_ops`]).
pub async fn start_ops(
    config: &ServerConfig,
    addr: std::net::SocketAddr,
    state: ApiState,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, PipelineError> {
    let security = load_security(config)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| PipelineError::Bind {
            what: "metrics",
            addr,
            source,
        })?;
    serve_ops(listener, &security, state, shutdown).await
}

/// `[server.security]`, loaded (TLS files read, keys parsed).
fn load_security(config: &ServerConfig) -> Result<servicekit::Security, PipelineError> {
    config
        .security
        .load()
        .map_err(|e| PipelineError::ApiSecurity(Box::new(e)))
}

fn server_error(
    what: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> PipelineError {
    PipelineError::Server {
        what,
        source: Box::new(source),
    }
}

/// Serves `app` on `http` until `shutdown`; `what` names the server in the error log.
fn spawn_http(
    http: servicekit::HttpListener,
    app: Router,
    shutdown: Shutdown,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let result = axum::serve(http, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = result {
            tracing::error!("{what} server: {e}");
        }
    })
}

/// Serves on `listeners` (TLS and API keys as `security` says) until `shutdown`. The
/// returned task ends when both servers have stopped.
pub async fn serve(
    listeners: Listeners,
    security: &servicekit::Security,
    state: ApiState,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, PipelineError> {
    let http_addr = listeners.http.local_addr().ok();
    let grpc_addr = listeners.grpc.local_addr().ok();
    let http = security
        .http_listener(listeners.http)
        .map_err(|e| server_error("HTTP listener", e))?;
    tracing::info!(
        http = ?http_addr,
        grpc = ?grpc_addr,
        security = %security.describe(),
        "views API listening"
    );

    let app = router(state.clone(), shutdown.clone()).layer(security.keys.layer());
    let http_task = spawn_http(http, app, shutdown.clone(), "HTTP");

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .with_service_name(proto::view_service_server::SERVICE_NAME)
        .build_v1()
        .map_err(|e| server_error("gRPC reflection", e))?;
    let service = ViewServiceServer::new(GrpcViews {
        state,
        shutdown: shutdown.clone(),
    });
    let keys: &ApiKeys = &security.keys;
    let grpc_server = security
        .grpc_server()
        .map_err(|e| server_error("gRPC TLS", e))?
        .add_service(keys.guard(service))
        .add_service(keys.guard(reflection));
    let grpc_task = tokio::spawn(async move {
        let result = grpc_server
            .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), async move {
                shutdown.wait().await
            })
            .await;
        if let Err(e) = result {
            tracing::error!("gRPC server: {e}");
        }
    });
    Ok(tokio::spawn(async move {
        let _ = http_task.await;
        let _ = grpc_task.await;
    }))
}

// ---------------------------------------------------------------------------------------
// JSON shapes.
// ---------------------------------------------------------------------------------------

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
    fn new(sku: &str, level: StockLevel, version: u64) -> Self {
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
    fn new(order_id: OrderId, view: &OrderView) -> Self {
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

fn problem(status: StatusCode, title: &str, detail: String, as_of: Option<u64>) -> Response {
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

// ---------------------------------------------------------------------------------------
// REST.
// ---------------------------------------------------------------------------------------

/// The REST router (also used by tests without a socket).
pub fn router(state: ApiState, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/v1/inventory", get(list_inventory))
        .route("/v1/inventory/{sku}", get(get_inventory))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/stream", get(stream))
        .route("/v1/status", get(status))
        .route("/readyz", get(readyz))
        .with_state((state.clone(), shutdown.clone()))
        .merge(page::routes())
        .merge(ops_router(state, shutdown))
}

/// `/metrics` and `/healthz` alone: what every process serves, with the API or on its
/// own address ([`serve_ops`]).
pub fn ops_router(state: ApiState, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state((state, shutdown))
}

/// Serves [`ops_router`] on `listener` (TLS as `security` says; both routes need no
/// key) until `shutdown`: the metrics of a process that serves no API. The returned task
/// ends when the server has stopped.
pub async fn serve_ops(
    listener: TcpListener,
    security: &servicekit::Security,
    state: ApiState,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, PipelineError> {
    let addr = listener.local_addr().ok();
    let http = security
        .http_listener(listener)
        .map_err(|e| server_error("metrics listener", e))?;
    tracing::info!(metrics = ?addr, "metrics listening");
    let app = ops_router(state, shutdown.clone());
    Ok(spawn_http(http, app, shutdown, "metrics"))
}

type AppState = State<(ApiState, Shutdown)>;

async fn list_inventory(State((state, _)): AppState) -> Response {
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

async fn get_inventory(State((state, _)): AppState, Path(sku): Path<String>) -> Response {
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

async fn get_order(State((state, _)): AppState, Path(id): Path<String>) -> Response {
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

#[derive(Deserialize)]
struct StreamQuery {
    #[serde(default)]
    snapshot: bool,
}

fn sse_events(delta: &Delta) -> Vec<SseEvent> {
    let mut events = Vec::with_capacity(delta.stock.len() + delta.orders.len());
    for change in &delta.stock {
        let mut data =
            serde_json::to_value(StockJson::new(&change.sku, change.level, change.version))
                .unwrap_or_default();
        data["epoch"] = json!(delta.epoch);
        events.push(SseEvent::default().event("stock").data(data.to_string()));
    }
    for change in &delta.orders {
        let data = match &change.view {
            Some(view) => {
                let mut data =
                    serde_json::to_value(OrderJson::new(change.order_id, view)).unwrap_or_default();
                data["epoch"] = json!(delta.epoch);
                data
            }
            None => json!({
                "order_id": uuid::Uuid::from_u128(change.order_id).to_string(),
                "removed": true,
                "epoch": delta.epoch,
            }),
        };
        events.push(SseEvent::default().event("order").data(data.to_string()));
    }
    events
}

fn snapshot_delta(views: &ViewState) -> Delta {
    Delta {
        epoch: views.as_of.unwrap_or(0),
        stock: views
            .stock
            .iter()
            .map(|(sku, level)| crate::views::StockChange {
                sku: sku.clone(),
                level: *level,
                version: views.sku(sku).1,
            })
            .collect(),
        orders: views
            .orders
            .iter()
            .map(|(id, view)| crate::views::OrderChange {
                order_id: *id,
                view: Some(view.clone()),
            })
            .collect(),
    }
}

async fn stream(
    State((state, shutdown)): AppState,
    Query(query): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before reading the snapshot, so that no change falls in between (a
    // change may then be sent twice, which is harmless for absolute values).
    let receiver = state.views.subscribe();
    let snapshot = if query.snapshot {
        sse_events(&snapshot_delta(&state.views.read()))
    } else {
        Vec::new()
    };
    let changes = BroadcastStream::new(receiver).flat_map(|item| {
        let events = match item {
            Ok(delta) => sse_events(&delta),
            Err(lagged) => vec![
                SseEvent::default()
                    .event("lagged")
                    .data(json!({ "detail": lagged.to_string() }).to_string()),
            ],
        };
        futures::stream::iter(events)
    });
    let events = futures::stream::iter(snapshot)
        .chain(changes)
        .map(Ok)
        .take_until(async move { shutdown.wait().await });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn status(State((state, _)): AppState) -> Response {
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

async fn healthz(State((state, _)): AppState) -> Response {
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

async fn readyz(State((state, _)): AppState) -> Response {
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

async fn metrics(State((state, _)): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// gRPC.
// ---------------------------------------------------------------------------------------

struct GrpcViews {
    state: ApiState,
    shutdown: Shutdown,
}

fn freshness(as_of: Option<u64>) -> Option<proto::Freshness> {
    let epoch = as_of.unwrap_or(0);
    Some(proto::Freshness {
        epoch,
        as_of_ms: i64::try_from(epoch).unwrap_or(i64::MAX),
    })
}

fn proto_level(sku: &str, level: StockLevel, version: u64) -> proto::StockLevel {
    proto::StockLevel {
        sku: sku.to_owned(),
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available,
        version: i64::try_from(version).unwrap_or(i64::MAX),
    }
}

fn proto_order(order_id: OrderId, view: &OrderView) -> proto::OrderView {
    let status = match view.status {
        OrderStatus::Created => proto::OrderStatus::Created,
        OrderStatus::Paid => proto::OrderStatus::Paid,
        OrderStatus::PaymentFailed => proto::OrderStatus::PaymentFailed,
        OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
    };
    proto::OrderView {
        order_id: uuid::Uuid::from_u128(order_id).to_string(),
        status: status as i32,
        total_minor: view.total_minor,
        currency: view.currency.clone(),
    }
}

fn proto_changes(delta: &Delta, stock: bool, orders: bool) -> Vec<proto::ViewChange> {
    let fresh = freshness(Some(delta.epoch));
    let mut out = Vec::new();
    if stock {
        out.extend(delta.stock.iter().map(|c| proto::ViewChange {
            change: Some(proto::view_change::Change::Stock(proto_level(
                &c.sku, c.level, c.version,
            ))),
            freshness: fresh,
        }));
    }
    if orders {
        out.extend(delta.orders.iter().filter_map(|c| {
            c.view.as_ref().map(|view| proto::ViewChange {
                change: Some(proto::view_change::Change::Order(proto_order(
                    c.order_id, view,
                ))),
                freshness: fresh,
            })
        }));
    }
    out
}

type ChangeStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<proto::ViewChange, Status>> + Send + 'static>>;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

#[tonic::async_trait]
impl ViewService for GrpcViews {
    async fn get_inventory(
        &self,
        request: Request<proto::GetInventoryRequest>,
    ) -> Result<GrpcResponse<proto::GetInventoryResponse>, Status> {
        let sku = request.into_inner().sku;
        if let Some(why) = schemas::validate_sku(&sku) {
            return Err(Status::invalid_argument(format!("sku: {why}")));
        }
        if !self.state.views.is_ready() {
            return Err(Status::unavailable("the views are being rebuilt"));
        }
        let views = self.state.views.read();
        let (level, version) = views.sku(&sku);
        Ok(GrpcResponse::new(proto::GetInventoryResponse {
            level: Some(proto_level(&sku, level, version)),
            freshness: freshness(views.as_of),
        }))
    }

    async fn list_inventory(
        &self,
        request: Request<proto::ListInventoryRequest>,
    ) -> Result<GrpcResponse<proto::ListInventoryResponse>, Status> {
        let request = request.into_inner();
        let size = match usize::try_from(request.page_size).unwrap_or(MAX_PAGE) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            let bytes = hex::decode(&request.page_token)
                .map_err(|_| Status::invalid_argument("page_token: not a token of this API"))?;
            Some(
                String::from_utf8(bytes)
                    .map_err(|_| Status::invalid_argument("page_token: not a token of this API"))?,
            )
        };
        if !self.state.views.is_ready() {
            return Err(Status::unavailable("the views are being rebuilt"));
        }
        let views = self.state.views.read();
        let range = match &after {
            Some(after) => views.stock.range::<str, _>((
                std::ops::Bound::Excluded(after.as_str()),
                std::ops::Bound::Unbounded,
            )),
            None => views.stock.range::<str, _>(..),
        };
        let mut levels: Vec<proto::StockLevel> = range
            .take(size + 1)
            .map(|(sku, level)| proto_level(sku, *level, views.sku(sku).1))
            .collect();
        let next_page_token = if levels.len() > size {
            levels.truncate(size);
            levels
                .last()
                .map(|l| hex::encode(&l.sku))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(GrpcResponse::new(proto::ListInventoryResponse {
            levels,
            next_page_token,
            freshness: freshness(views.as_of),
        }))
    }

    async fn get_order(
        &self,
        request: Request<proto::GetOrderViewRequest>,
    ) -> Result<GrpcResponse<proto::GetOrderViewResponse>, Status> {
        let id = request.into_inner().order_id;
        let order_id = uuid::Uuid::try_parse(&id)
            .map_err(|_| Status::invalid_argument(format!("order_id: {id:?} is not a UUID")))?
            .as_u128();
        if !self.state.views.is_ready() {
            return Err(Status::unavailable("the views are being rebuilt"));
        }
        let views = self.state.views.read();
        Ok(GrpcResponse::new(proto::GetOrderViewResponse {
            order: views
                .orders
                .get(&order_id)
                .map(|v| proto_order(order_id, v)),
            freshness: freshness(views.as_of),
        }))
    }

    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<proto::WatchChangesRequest>,
    ) -> Result<GrpcResponse<Self::WatchChangesStream>, Status> {
        let request = request.into_inner();
        let kinds: Vec<proto::ViewKind> = request
            .kinds
            .iter()
            .map(|k| proto::ViewKind::try_from(*k).unwrap_or(proto::ViewKind::Unspecified))
            .collect();
        if kinds.contains(&proto::ViewKind::Unspecified) {
            return Err(Status::invalid_argument(
                "kinds: unknown or unspecified view kind",
            ));
        }
        let all = kinds.is_empty();
        let stock = all || kinds.contains(&proto::ViewKind::Stock);
        let orders = all || kinds.contains(&proto::ViewKind::Orders);
        let receiver = self.state.views.subscribe();
        let snapshot = if request.snapshot {
            proto_changes(&snapshot_delta(&self.state.views.read()), stock, orders)
        } else {
            Vec::new()
        };
        let changes = BroadcastStream::new(receiver).flat_map(move |item| {
            let items: Vec<Result<proto::ViewChange, Status>> = match item {
                Ok(delta) => proto_changes(&delta, stock, orders)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Err(lagged) => vec![Err(Status::data_loss(format!(
                    "the watcher fell behind ({lagged}); watch again with snapshot = true"
                )))],
            };
            futures::stream::iter(items)
        });
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::iter(snapshot.into_iter().map(Ok))
            .chain(changes)
            .take_until(async move { shutdown.wait().await });
        Ok(GrpcResponse::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::OrderStatus;
    use crate::views::{OrderChange, StockChange};
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state() -> ApiState {
        ApiState {
            views: Views::new(),
            metrics: Metrics::new(),
            health: Arc::default(),
            topics: crate::config::TopicConfig::default().names(),
        }
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

    fn fill(views: &Views) {
        views.apply(
            Delta {
                epoch: 1_000,
                stock: vec![
                    StockChange {
                        sku: "A".into(),
                        level: StockLevel {
                            on_hand: 5,
                            reserved: 7,
                            available: -2,
                        },
                        version: 1_000,
                    },
                    StockChange {
                        sku: "B".into(),
                        level: StockLevel {
                            on_hand: 1,
                            reserved: 0,
                            available: 1,
                        },
                        version: 1_000,
                    },
                ],
                orders: vec![OrderChange {
                    order_id: 42,
                    view: Some(OrderView {
                        status: OrderStatus::Paid,
                        currency: "EUR".into(),
                        total_minor: 1_999,
                        lines: vec![Line {
                            sku: "A".into(),
                            quantity: 1,
                            unit_price_minor: 1_999,
                        }],
                    }),
                }],
            },
            &[(0, 0, 10)],
        );
        views.set_ready(None);
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

    #[tokio::test]
    async fn grpc_pages_validates_and_reports_freshness() {
        let state = state();
        let grpc = GrpcViews {
            state: state.clone(),
            shutdown: Shutdown::new(),
        };
        let unavailable = grpc
            .get_inventory(Request::new(proto::GetInventoryRequest { sku: "A".into() }))
            .await
            .unwrap_err();
        assert_eq!(unavailable.code(), tonic::Code::Unavailable);
        fill(&state.views);
        let invalid = grpc
            .get_inventory(Request::new(proto::GetInventoryRequest {
                sku: "a b".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

        let first = grpc
            .list_inventory(Request::new(proto::ListInventoryRequest {
                page_size: 1,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.levels.len(), 1);
        assert_eq!(first.levels[0].sku, "A");
        assert_eq!(first.freshness.map(|f| f.epoch), Some(1_000));
        let second = grpc
            .list_inventory(Request::new(proto::ListInventoryRequest {
                page_size: 1,
                page_token: first.next_page_token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.levels[0].sku, "B");
        assert!(second.next_page_token.is_empty());

        let order = grpc
            .get_order(Request::new(proto::GetOrderViewRequest {
                order_id: uuid::Uuid::from_u128(42).to_string(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            order.order.map(|o| o.status),
            Some(proto::OrderStatus::Paid as i32)
        );
        let missing = grpc
            .get_order(Request::new(proto::GetOrderViewRequest {
                order_id: uuid::Uuid::from_u128(7).to_string(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(missing.order.is_none());
        assert_eq!(missing.freshness.map(|f| f.as_of_ms), Some(1_000));
    }

    /// The real servers on 127.0.0.1:0 with TLS (a certificate made now) and one key:
    /// REST, SSE and gRPC need the key, the probes do not, and a client that does not
    /// trust the certificate is refused.
    #[tokio::test]
    async fn the_served_api_wants_tls_and_a_key() {
        const KEY: &str = "views-test-key";
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_pem = cert.cert.pem();
        let security = servicekit::Security {
            tls: Some(
                servicekit::ServerTls::from_pem(
                    cert_pem.as_bytes(),
                    cert.signing_key.serialize_pem().as_bytes(),
                )
                .unwrap(),
            ),
            keys: ApiKeys::new(&[servicekit::ApiKeyEntry {
                name: "dashboard".into(),
                sha256: servicekit::auth::hash_key(KEY),
            }])
            .unwrap(),
        };
        let state = state();
        fill(&state.views);
        let listeners = Listeners {
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let http_port = listeners.http.local_addr().unwrap().port();
        let grpc_port = listeners.grpc.local_addr().unwrap().port();
        let shutdown = Shutdown::new();
        let handle = serve(listeners, &security, state, shutdown.clone())
            .await
            .unwrap();

        let url = |path: &str| format!("https://localhost:{http_port}{path}");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        let missing = client.get(url("/v1/inventory")).send().await.unwrap();
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            missing.headers()["content-type"],
            "application/problem+json"
        );
        let wrong = client
            .get(url("/v1/inventory"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let right = client
            .get(url("/v1/inventory"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        let body: serde_json::Value = right.json().await.unwrap();
        assert_eq!(body["items"][0]["sku"], "A");
        let stream = client.get(url("/v1/stream")).send().await.unwrap();
        assert_eq!(stream.status(), 401, "SSE needs the key too");
        let stream = client
            .get(url("/v1/stream?snapshot=true"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        drop(stream);
        for open in ["/healthz", "/readyz", "/metrics"] {
            let response = client.get(url(open)).send().await.unwrap();
            assert_ne!(response.status(), 401, "{open} needs no key");
        }
        let untrusting = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        let error = untrusting.get(url("/healthz")).send().await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");

        let channel =
            tonic::transport::Endpoint::from_shared(format!("https://localhost:{grpc_port}"))
                .unwrap()
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
                        .domain_name("localhost"),
                )
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut views = proto::view_service_client::ViewServiceClient::new(channel);
        let request = || Request::new(proto::GetInventoryRequest { sku: "A".into() });
        let refused = views.get_inventory(request()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut keyed = request();
        keyed
            .metadata_mut()
            .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        let level = views.get_inventory(keyed).await.unwrap().into_inner();
        assert_eq!(level.level.map(|l| l.on_hand), Some(5));

        shutdown.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(10), handle)
            .await
            .expect("both servers stop")
            .unwrap();
    }
}
