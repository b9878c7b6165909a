//! `[security]`: the real service (`ingress::run`) on 127.0.0.1:0 with TLS and API keys,
//! reached over HTTPS (reqwest, rustls) and gRPC over TLS (tonic).
//!
//! Needs no Kafka and no registry: both point at closed ports, so the service starts
//! (not ready), and every request checked here is decided before a dependency is asked.

use std::net::SocketAddr;
use std::time::Duration;

use ingress::Listeners;
use ingress::config::Config;
use ingress::proto::GetOrderRequest;
use ingress::proto::order_service_client::OrderServiceClient;
use servicekit::auth::hash_key;
use servicekit::{ApiKeyEntry, ApiSecurity, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const KEY: &str = "ingress-test-key";

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct App {
    rest: SocketAddr,
    grpc: SocketAddr,
    cert_pem: String,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ingress::IngressError>>,
    _dir: tempfile::TempDir,
}

impl App {
    /// The service with TLS (a certificate made now for `localhost`) and one API key.
    async fn start() -> App {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();

        let mut config = Config::from_env().unwrap();
        config.kafka.bootstrap = closed_port().to_string();
        config.kafka.client_config_file = None;
        config.registry.url = format!("http://{}", closed_port());
        config.registry.timeout = Duration::from_millis(500);
        config.views.endpoint = format!("http://{}", closed_port());
        config.idempotency.replay = false;
        config.shutdown.grace = Duration::from_secs(2);
        config.shutdown.flush_timeout = Duration::from_millis(200);
        config.security = ApiSecurity {
            tls: Some(files),
            api_keys: vec![ApiKeyEntry {
                name: "tests".into(),
                sha256: hash_key(KEY),
            }],
        };

        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (rest_addr, grpc_addr) = (rest.local_addr().unwrap(), grpc.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(ingress::run(config, Listeners { rest, grpc }, async move {
            let _ = stopped.await;
        }));
        let app = App {
            rest: rest_addr,
            grpc: grpc_addr,
            cert_pem: cert.cert.pem(),
            stop: Some(stop),
            handle,
            _dir: dir,
        };
        app.wait_serving().await;
        app
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.rest.port())
    }

    fn https(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Waits until `/healthz` answers over HTTPS (the registry check runs first).
    async fn wait_serving(&self) {
        let client = self.https();
        for _ in 0..100 {
            if let Ok(response) = client.get(self.url("/healthz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(!self.handle.is_finished(), "ingress stopped while starting");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ingress did not serve /healthz");
    }

    async fn grpc(&self, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("https://localhost:{}", self.grpc.port()))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("ingress stops")
            .unwrap();
        result.unwrap();
    }
}

#[tokio::test]
async fn rest_needs_a_key_over_tls_and_probes_stay_open() {
    let app = App::start().await;
    let client = app.https();

    let missing = client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let wrong = client
        .post(app.url("/v1/orders"))
        .bearer_auth("wrong-key")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let problem: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/unauthorized");
    assert_eq!(problem["instance"], "/v1/orders");

    let right = client
        .get(app.url("/openapi.json"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // With the key, the request reaches validation (400), not the 401.
    let invalid = client
        .post(app.url("/v1/orders"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);

    for open in ["/healthz", "/readyz", "/metrics"] {
        let response = client.get(app.url(open)).send().await.unwrap();
        assert_ne!(response.status(), 401, "{open} needs no key");
    }
    // The refusals are counted like any answer.
    let metrics = client.get(app.url("/metrics")).send().await.unwrap();
    assert!(metrics.text().await.unwrap().contains("status=\"401\""));

    // A client that does not trust the certificate is refused.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let error = untrusting
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    app.stop().await;
}

#[tokio::test]
async fn grpc_needs_a_key_over_tls_and_health_stays_open() {
    let app = App::start().await;
    let channel = app.grpc(&app.cert_pem).await.unwrap();
    let mut orders = OrderServiceClient::new(channel.clone());

    let request = || {
        tonic::Request::new(GetOrderRequest {
            order_id: "not-a-uuid".into(),
        })
    };
    let status = orders.get_order(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let mut wrong = request();
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let status = orders.get_order(wrong).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let mut right = request();
    right
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let status = orders.get_order(right).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "past the key check: {status:?}"
    );

    // gRPC health answers without a key (NOT_SERVING: Kafka is not there).
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    // A client trusting another certificate cannot connect.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    assert!(app.grpc(&other.cert.pem()).await.is_err());
    app.stop().await;
}
