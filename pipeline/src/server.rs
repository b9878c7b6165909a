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
//! | `GET /openapi.json` | the OpenAPI 3.1 document of these routes (utoipa, from the handlers) |
//! | `GET /v1/status` | readiness, `as_of_epoch` and the committed input offsets (`topic`, `partition`, `next_offset`): when they equal the partitions' ends, the views include every record written so far |
//! | `GET /healthz` | 200 while the job runs, 503 once it failed |
//! | `GET /readyz` | 200 once the restart's rebuild is done and the sink has committed (or has nothing to commit); 503 before |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /` | the live inventory page ([`page`]): the stock table and order status changes, following the stream |
//!
//! One module per job: `rest` (JSON routes and the operational ones), `sse` (the event
//! stream), `grpc` (`ViewService`), [`page`] (the live page); this one binds, secures
//! and serves them.
//!
//! Views endpoints answer 503 (gRPC `UNAVAILABLE`) until the views are rebuilt after a
//! start, so that nobody mistakes a half-replayed view for the current one.
//!
//! `[server.security]` (`servicekit::ApiSecurity`, off by default) serves both ports
//! over TLS and requires `Authorization: Bearer <key>` on every REST and SSE route but
//! `/healthz`, `/readyz` and `/metrics` (401, `WWW-Authenticate: Bearer`, problem+json)
//! and on every gRPC call, reflection included (`UNAUTHENTICATED`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use servicekit::ApiKeys;

use crate::Shutdown;
use crate::config::{ServerConfig, TopicNames};
use crate::error::PipelineError;
use crate::metrics::Metrics;
use crate::proto;
use crate::proto::view_service_server::ViewServiceServer;
use crate::sink::Health;
use crate::views::Views;

mod grpc;
pub mod page;
mod rest;
mod sse;

pub use rest::{LineJson, OffsetJson, OrderJson, StatusJson, StockJson, ViewsDoc, openapi};

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
    let service = ViewServiceServer::new(grpc::GrpcViews {
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

/// The REST router (also used by tests without a socket).
pub fn router(state: ApiState, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/v1/inventory", get(rest::list_inventory))
        .route("/v1/inventory/{sku}", get(rest::get_inventory))
        .route("/v1/orders/{id}", get(rest::get_order))
        .route("/v1/stream", get(sse::stream))
        .route("/v1/status", get(rest::status))
        .route("/openapi.json", get(rest::openapi_json))
        .route("/readyz", get(rest::readyz))
        .with_state((state.clone(), shutdown.clone()))
        .merge(page::routes())
        .merge(ops_router(state, shutdown))
}

/// `/metrics` and `/healthz` alone: what every process serves, with the API or on its
/// own address ([`serve_ops`]).
pub fn ops_router(state: ApiState, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/healthz", get(rest::healthz))
        .route("/metrics", get(rest::metrics))
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

/// The handlers' state: the API state and the job's shutdown (streams end with it).
type AppState = State<(ApiState, Shutdown)>;

/// What the tests of the server modules share: an API state and a filled view.
#[cfg(test)]
mod testing {
    use super::*;
    use crate::logic::{Line, OrderStatus, OrderView, StockLevel};
    use crate::views::{Delta, OrderChange, StockChange};

    pub(super) fn state() -> ApiState {
        ApiState {
            views: Views::new(),
            metrics: Metrics::new(),
            health: Arc::default(),
            topics: crate::config::TopicConfig::default().names(),
        }
    }

    pub(super) fn fill(views: &Views) {
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
}

#[cfg(test)]
mod tests {
    use super::testing::{fill, state};
    use super::*;
    use tonic::Request;

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
