//! Against the real cluster, the `ingress` binary as operators run it, with JSON logs on
//! (`INGRESS__TELEMETRY__FORMAT=json`): an accepted order is one `accepted` line with
//! `service`, `order_id` and the caller's `trace_id` at the top level, plus the record's
//! topic, partition and offset; a refused order writes no such line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::testkit::TestCluster;
use schemas::{OrderCreated, OrderUpdated, StockAdjusted};
use serde_json::{Value, json};

/// The caller's trace, as a client would send it.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The running binary and the JSON lines it wrote to stderr so far.
struct Ingress {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Ingress {
    /// Waits up to `timeout` for a line that `matches`.
    fn wait_line(&self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| matches(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such log line within {timeout:?}; lines: {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_order_is_one_json_line_with_its_order_id_and_trace_id() {
    eventbus::testkit::init_tracing();
    let cluster = TestCluster::connect()
        .await
        .expect("the local cluster runs (make up)");
    let mut topics = Vec::new();
    for suffix in ["order.created", "order.updated", "stock.adjusted"] {
        topics.push(cluster.create_topic(suffix, 3).await.expect("topic"));
    }
    cluster
        .register_on_topic::<OrderCreated>(&topics[0])
        .await
        .unwrap();
    cluster
        .register_on_topic::<OrderUpdated>(&topics[1])
        .await
        .unwrap();
    cluster
        .register_on_topic::<StockAdjusted>(&topics[2])
        .await
        .unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_ingress"));
    command
        .env_remove("RUST_LOG")
        .env_remove("INGRESS_CONFIG")
        .env("INGRESS__TELEMETRY__FORMAT", "json")
        .env("INGRESS__REST__LISTEN", "127.0.0.1:0")
        .env("INGRESS__GRPC__LISTEN", "127.0.0.1:0")
        .env("INGRESS__TOPICS__ORDER_CREATED", &topics[0])
        .env("INGRESS__TOPICS__ORDER_UPDATED", &topics[1])
        .env("INGRESS__TOPICS__STOCK_ADJUSTED", &topics[2])
        .env("KAFKA_BOOTSTRAP", &cluster.kafka.bootstrap)
        .env("REGISTRY_URL", &cluster.registry.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match &cluster.kafka.client_config_file {
        Some(path) => command.env("KAFKA_CLIENT_CONFIG", path),
        None => command.env_remove("KAFKA_CLIENT_CONFIG"),
    };
    let mut child = command.spawn().expect("start the ingress binary");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Every line must be JSON: a plain-text line is a failure of the format.
            let value = serde_json::from_str::<Value>(&line)
                .unwrap_or_else(|e| json!({"not_json": line, "error": e.to_string()}));
            sink.lock().unwrap().push(value);
        }
    });
    let ingress = Ingress { child, lines };

    let serving = tokio::task::block_in_place(|| {
        ingress.wait_line(Duration::from_secs(60), |l| {
            l["message"] == "ingress serving"
        })
    });
    // `rest` is the bound address as Debug: `Some(127.0.0.1:PORT)`.
    let rest = serving["rest"]
        .as_str()
        .and_then(|s| s.strip_prefix("Some(")?.strip_suffix(')'))
        .expect("the bound REST address")
        .to_owned();
    let http = reqwest::Client::new();
    let ready = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("http://{rest}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < ready, "ingress never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Refused: no `accepted` line may follow.
    let refused = http
        .post(format!("http://{rest}/v1/orders"))
        .json(&json!({"customer_id": "log-test", "currency": "EUR", "lines": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let accepted = http
        .post(format!("http://{rest}/v1/orders"))
        .header("traceparent", TRACEPARENT)
        .json(&json!({
            "customer_id": "log-test",
            "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 100}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
    let body: Value = accepted.json().await.unwrap();
    let order_id = body["order_id"].as_str().unwrap().to_owned();

    let line = tokio::task::block_in_place(|| {
        ingress.wait_line(Duration::from_secs(10), |l| l["message"] == "accepted")
    });
    assert_eq!(line["service"], "order-service", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["event"], "order.created", "{line}");
    assert_eq!(line["order_id"], order_id.as_str(), "{line}");
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    assert_ne!(
        line["span_id"], "00f067aa0ba902b7",
        "ingress's own span: {line}"
    );
    assert_eq!(line["topic"], topics[0].as_str(), "{line}");
    assert!(
        line["partition"].is_i64() && line["offset"].is_i64(),
        "{line}"
    );

    let all = ingress.lines.lock().unwrap().clone();
    assert_eq!(
        all.iter().filter(|l| l["message"] == "accepted").count(),
        1,
        "one line per accepted order, none for the refused one: {all:#?}"
    );
    assert!(
        all.iter().all(|l| l.get("not_json").is_none()),
        "every line is JSON: {all:#?}"
    );
    drop(ingress);
    cluster.cleanup().await;
}
