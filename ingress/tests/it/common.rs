//! The test harness: unique topics on the real cluster, ingress started on port 0, a
//! typed client for both APIs, and reading events back through the registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventbus::kafka::{Headers as _, Message as _, OwnedMessage};
use eventbus::testkit::{TestCluster, eventually};
use ingress::config::{Config, TopicsConfig};
use ingress::proto::inventory_admin_service_client::InventoryAdminServiceClient;
use ingress::proto::order_service_client::OrderServiceClient;
use ingress::{IngressError, Listeners};
use schemas::{Event, OrderCreated, OrderUpdated, StockAdjusted};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Partitions of each test topic (the real ones have 6; 3 keeps topic creation fast).
pub const PARTITIONS: i32 = 3;

/// A test's own topics and subjects on the real cluster; several apps may share them
/// (restarts, two instances).
pub struct TestEnv {
    /// The cluster handle (unique prefix).
    pub cluster: Arc<TestCluster>,
    /// The topics the apps write.
    pub topics: TopicsConfig,
}

impl TestEnv {
    /// Creates the three topics and registers the event schemas under their subjects.
    pub async fn new() -> TestEnv {
        eventbus::testkit::init_tracing();
        let cluster = TestCluster::connect()
            .await
            .expect("the local cluster runs (make up)");
        let order_created = cluster
            .create_topic("order.created", PARTITIONS)
            .await
            .expect("topic");
        let order_updated = cluster
            .create_topic("order.updated", PARTITIONS)
            .await
            .expect("topic");
        let stock_adjusted = cluster
            .create_topic("stock.adjusted", PARTITIONS)
            .await
            .expect("topic");
        cluster
            .register_on_topic::<OrderCreated>(&order_created)
            .await
            .expect("register");
        cluster
            .register_on_topic::<OrderUpdated>(&order_updated)
            .await
            .expect("register");
        cluster
            .register_on_topic::<StockAdjusted>(&stock_adjusted)
            .await
            .expect("register");
        TestEnv {
            cluster: Arc::new(cluster),
            topics: TopicsConfig {
                order_created,
                order_updated,
                stock_adjusted,
            },
        }
    }

    /// The configuration of an app on these topics: the environment's cluster, fast
    /// readiness checks, and a views endpoint nobody listens on (the pipeline is down)
    /// unless the test says otherwise.
    pub fn config(&self) -> Config {
        let mut config = Config::from_env().expect("config");
        config.kafka.bootstrap = self.cluster.kafka.bootstrap.clone();
        // The cluster's credentials (the admin principal's config on the secure cluster).
        config.kafka.client_config_file = self.cluster.kafka.client_config_file.clone();
        config.registry.url = self.cluster.registry.url.clone();
        config.topics = self.topics.clone();
        config.readiness.interval = Duration::from_millis(200);
        config.views.endpoint = format!("http://{}", closed_port());
        config.views.timeout = Duration::from_millis(500);
        config.shutdown.grace = Duration::from_secs(10);
        config
    }

    /// Every record of `topic` now, by partition then offset.
    pub async fn records(&self, topic: &str) -> Vec<OwnedMessage> {
        self.cluster
            .read_all(topic, false)
            .await
            .expect("read topic")
    }

    /// The total high watermark of each topic: created, updated, adjusted.
    pub async fn watermarks(&self) -> [i64; 3] {
        let mut out = [0; 3];
        for (slot, topic) in out.iter_mut().zip(self.topics.all()) {
            *slot = self
                .cluster
                .high_watermark_total(topic)
                .await
                .expect("watermarks");
        }
        out
    }

    /// Decodes a record through the registry (writer schema by the id in the record).
    pub async fn decode<E: Event>(&self, record: &OwnedMessage) -> E {
        let (event, _id) = eventbus::codec::decode::<E>(
            self.cluster.registry_client(),
            record.topic(),
            record.payload(),
        )
        .await
        .map_err(|f| f.error)
        .expect("record decodes through the registry");
        event
    }

    /// Deletes the topics and subjects.
    pub async fn cleanup(&self) {
        self.cluster.cleanup().await;
    }
}

/// A header of a record, as text.
pub fn header(record: &OwnedMessage, name: &str) -> Option<String> {
    record.headers().and_then(|headers| {
        headers
            .iter()
            .filter(|h| h.key == name)
            .last()
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A running ingress.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub rest: String,
    /// The gRPC address.
    pub grpc_addr: SocketAddr,
    /// An HTTP client.
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), IngressError>>>,
}

impl TestApp {
    /// Starts ingress with `config` on two port-0 listeners. Does not wait for readiness.
    pub async fn start(config: Config) -> TestApp {
        let rest = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let rest_addr = rest.local_addr().expect("addr");
        let grpc_addr = grpc.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(ingress::run(config, Listeners { rest, grpc }, async move {
            let _ = rx.await;
        }));
        TestApp {
            rest: format!("http://{rest_addr}"),
            grpc_addr,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Starts ingress and waits until `/readyz` says ready.
    pub async fn spawn(config: Config) -> TestApp {
        let app = TestApp::start(config).await;
        app.wait_ready().await;
        app
    }

    /// Waits until `/readyz` is 200 (30 s at most).
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.rest);
        let http = self.http.clone();
        let ready = eventually(Duration::from_secs(30), Duration::from_millis(100), || {
            let url = url.clone();
            let http = http.clone();
            async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        assert!(
            ready.is_some(),
            "ingress did not become ready: {:?}",
            self.get_json("/readyz").await
        );
    }

    /// A gRPC OrderService client.
    pub async fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("grpc connect")
    }

    /// A gRPC InventoryAdminService client.
    pub async fn admin(&self) -> InventoryAdminServiceClient<Channel> {
        InventoryAdminServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("grpc connect")
    }

    /// A gRPC channel.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("grpc connect")
    }

    /// `POST` JSON, with an idempotency key if given.
    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, body, key).await
    }

    /// Sends JSON with `method`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.rest))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("request")
    }

    /// `GET` and parse JSON (any status).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.rest))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.rest))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), IngressError> {
        self.trigger_shutdown();
        self.join().await
    }

    /// Triggers shutdown without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `run` to return.
    pub async fn join(&mut self) -> Result<(), IngressError> {
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("ingress stops within 30 s")
            .expect("ingress task did not panic")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// A valid order body.
pub fn order_json(customer: &str) -> Value {
    serde_json::json!({
        "customer_id": customer,
        "currency": "EUR",
        "lines": [
            {"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1999},
            {"sku": "SKU-2", "quantity": 1, "unit_price_minor": 500}
        ]
    })
}
