//! Real servers on 127.0.0.1:0: an axum router and a tonic server behind
//! `servicekit::security`, reached with real clients (reqwest over rustls, tonic).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use servicekit::auth::{ApiKeyName, hash_key};
use servicekit::{ApiKeyEntry, ApiSecurity, Security, ServerTls, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const KEY: &str = "test-key-0123456789abcdef";

struct SelfSigned {
    cert_pem: String,
    key_pem: String,
}

fn self_signed() -> SelfSigned {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    SelfSigned {
        cert_pem: cert.cert.pem(),
        key_pem: cert.signing_key.serialize_pem(),
    }
}

fn keys() -> Vec<ApiKeyEntry> {
    vec![ApiKeyEntry {
        name: "tests".into(),
        sha256: hash_key(KEY),
    }]
}

fn router(security: &Security) -> Router {
    Router::new()
        .route(
            "/v1/thing",
            get(|name: Option<axum::Extension<ApiKeyName>>| async move {
                name.map_or_else(|| "anonymous".to_owned(), |n| n.0.0.to_string())
            }),
        )
        .route("/healthz", get(|| async { "alive" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(|| async { "# metrics" }))
        .layer(security.keys.layer())
}

/// Serves `router(security)` on a fresh port until the returned sender is dropped.
async fn serve_http(security: &Security) -> (SocketAddr, oneshot::Sender<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = security.http_listener(tcp).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = router(security);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    (addr, stop_tx)
}

fn client(trusted: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = trusted {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn api_keys_guard_everything_but_the_probes() {
    let security = ApiSecurity {
        tls: None,
        api_keys: keys(),
    }
    .load()
    .unwrap();
    let (addr, _stop) = serve_http(&security).await;
    let http = client(None);
    let url = format!("http://{addr}/v1/thing");

    let missing = http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    assert_eq!(problem["type"], "/problems/unauthorized");
    assert_eq!(problem["instance"], "/v1/thing");

    let wrong = http
        .get(&url)
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let text = wrong.text().await.unwrap();
    assert!(
        !text.contains("not-the-key"),
        "the key is not echoed: {text}"
    );

    let basic = http
        .get(&url)
        .header("authorization", format!("Basic {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    let right = http.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(
        right.text().await.unwrap(),
        "tests",
        "the key's name is passed on"
    );

    for open in ["/healthz", "/readyz", "/metrics"] {
        let response = http
            .get(format!("http://{addr}{open}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{open} stays open");
    }
    // Only exact paths are open.
    let sneaky = http
        .get(format!("http://{addr}/healthz/../v1/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(sneaky.status(), 401);
}

#[tokio::test]
async fn no_keys_means_open() {
    let security = ApiSecurity::default().load().unwrap();
    let (addr, _stop) = serve_http(&security).await;
    let response = client(None)
        .get(format!("http://{addr}/v1/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "anonymous");
}

#[tokio::test]
async fn https_with_a_trusted_certificate_and_refused_without() {
    let cert = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    std::fs::write(&files.cert, &cert.cert_pem).unwrap();
    std::fs::write(&files.key, &cert.key_pem).unwrap();
    let security = ApiSecurity {
        tls: Some(files),
        api_keys: keys(),
    }
    .load()
    .unwrap();
    let (addr, _stop) = serve_http(&security).await;
    let url = format!("https://localhost:{}/v1/thing", addr.port());

    let trusting = client(Some(&cert.cert_pem));
    let response = trusting.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "tests");
    let response = trusting.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401, "TLS does not replace the key");

    // A client that trusts another certificate (and no system roots) is refused.
    let other = self_signed();
    let error = client(Some(&other.cert_pem))
        .get(&url)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = client(None)
        .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // The server survived the failed handshakes.
    let response = trusting
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A tonic server with the health service behind the interceptor (as an API service
/// would be) and a second health service left open, on one port.
async fn serve_grpc(security: &Security) -> (SocketAddr, oneshot::Sender<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let guarded = InterceptedService::new(health, security.keys.interceptor());
    let mut server = security.grpc_server().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = server.add_service(guarded);
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(tcp), async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    (addr, stop_tx)
}

async fn check(channel: tonic::transport::Channel, key: Option<&str>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    HealthClient::new(channel).check(request).await.map(|_| ())
}

#[tokio::test]
async fn grpc_calls_need_a_key_and_tls_works() {
    let cert = self_signed();
    let tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let security = Security {
        tls: Some(tls),
        keys: servicekit::ApiKeys::new(&keys()).unwrap(),
    };
    let (addr, _stop) = serve_grpc(&security).await;
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&cert.cert_pem))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.unwrap();
    let status = check(channel.clone(), None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = check(channel.clone(), Some("wrong")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    check(channel, Some(KEY)).await.unwrap();

    // A client that does not trust the certificate cannot connect.
    let other = self_signed();
    let untrusting =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&other.cert_pem))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
    assert!(untrusting.connect().await.is_err());
}

#[tokio::test]
async fn grpc_without_tls_or_keys_is_open() {
    let security = Security::default();
    let (addr, _stop) = serve_grpc(&security).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    check(channel, None).await.unwrap();
}
