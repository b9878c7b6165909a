//! Shared helpers: a test-only event type, valid real events, running a runner.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use eventbus::testkit::TestCluster;
use eventbus::{
    BusError, Consumable, ConsumerConfig, ConsumerRunner, Handler, Jitter, RetryPolicy,
};
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use schemas::{Event, FieldViolation, OrderCreated, OrderLine, SchemaError, Violations};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A test-only event whose schema has an enum, so that a value outside the schema can be
/// built (the real event types are too well typed for that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub id: String,
    pub key: String,
    /// Must be a symbol of the schema's enum (`OK`, `LATE`) to encode.
    pub status: String,
    pub time_ms: i64,
}

const PROBE_SCHEMA: &str = r#"{"type":"record","name":"Probe","namespace":"eventbus.test","fields":[{"name":"id","type":"string"},{"name":"key","type":"string"},{"name":"status","type":{"type":"enum","name":"ProbeStatus","symbols":["OK","LATE"]}},{"name":"time_ms","type":"long"}]}"#;
static PROBE: LazyLock<Schema> = LazyLock::new(|| Schema::parse_str(PROBE_SCHEMA).unwrap());

fn avro(e: apache_avro::Error) -> SchemaError {
    SchemaError::Avro(Box::new(e))
}

impl Event for Probe {
    const TOPIC: &'static str = "eventbus-test.probe";
    const TYPE: &'static str = "eventbus.probe";

    fn schema() -> &'static Schema {
        &PROBE
    }
    fn schema_text() -> &'static str {
        PROBE_SCHEMA
    }
    fn key(&self) -> String {
        self.key.clone()
    }
    fn event_id(&self) -> String {
        self.id.clone()
    }
    fn time_ms(&self) -> i64 {
        self.time_ms
    }
    fn validate(&self) -> Result<(), Violations> {
        if self.key.is_empty() {
            return Err(Violations(vec![FieldViolation {
                field: "key".into(),
                description: "must not be empty".into(),
            }]));
        }
        Ok(())
    }
    fn to_avro(&self) -> Result<Vec<u8>, SchemaError> {
        let status = match ["OK", "LATE"].iter().position(|s| *s == self.status) {
            Some(i) => Value::Enum(i as u32, self.status.clone()),
            // Not a symbol: the writer's validation must refuse it.
            None => Value::String(self.status.clone()),
        };
        let value = Value::Record(vec![
            ("id".into(), Value::String(self.id.clone())),
            ("key".into(), Value::String(self.key.clone())),
            ("status".into(), status),
            ("time_ms".into(), Value::Long(self.time_ms)),
        ]);
        GenericDatumWriter::builder(&PROBE)
            .build()
            .map_err(avro)?
            .write_value_to_vec(value)
            .map_err(avro)
    }
    fn from_avro(writer: &Schema, datum: &[u8]) -> Result<Self, SchemaError> {
        let mut input = datum;
        let value = GenericDatumReader::builder(writer)
            .reader_schema(&PROBE)
            .build()
            .map_err(avro)?
            .read_value(&mut input)
            .map_err(avro)?;
        let shape = |m: &str| SchemaError::Shape {
            type_name: "Probe",
            message: m.to_owned(),
        };
        let Value::Record(fields) = value else {
            return Err(shape("not a record"));
        };
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) | Some(Value::Enum(_, s)) => Ok(s),
            _ => Err(shape("expected a string")),
        };
        Ok(Probe {
            id: text(get("id"))?,
            key: text(get("key"))?,
            status: text(get("status"))?,
            time_ms: match get("time_ms") {
                Some(Value::Long(t)) => t,
                _ => return Err(shape("expected a long")),
            },
        })
    }
}

pub fn probe(key: &str) -> Probe {
    Probe {
        id: uuid::Uuid::new_v4().to_string(),
        key: key.to_owned(),
        status: "OK".into(),
        time_ms: 1_700_000_000_000,
    }
}

/// A valid order.created event (the real type).
pub fn order() -> OrderCreated {
    let lines = vec![
        OrderLine::new("SKU-1", 2, 1999),
        OrderLine::new("SKU-2", 1, 500),
    ];
    OrderCreated {
        event_id: uuid::Uuid::new_v4(),
        order_id: uuid::Uuid::new_v4(),
        customer_id: "customer-7".into(),
        currency: "EUR".into(),
        total_minor: 2 * 1999 + 500,
        lines,
        created_at: 1_735_689_600_000,
        channel: Some("REST".into()),
    }
}

/// Connects to the real cluster, or fails the test saying how to start it.
pub async fn cluster() -> TestCluster {
    eventbus::testkit::init_tracing();
    match TestCluster::connect().await {
        Ok(c) => c,
        Err(e) => panic!("the integration tests need the real cluster and registry: {e}"),
    }
}

/// The usual fixture: an `orders` topic with `OrderCreated` registered on it, a DLQ
/// topic and a group, all unique to the test: (topic, dlq, group, schema id).
pub async fn order_topics(cluster: &TestCluster) -> (String, String, String, u32) {
    let topic = cluster.create_topic("orders", 1).await.unwrap();
    let dlq_topic = cluster.create_topic("svc.dlq", 1).await.unwrap();
    let schema_id = cluster
        .register_on_topic::<OrderCreated>(&topic)
        .await
        .unwrap();
    (topic, dlq_topic, cluster.group("svc"), schema_id)
}

/// A consumer config for tests: own group and DLQ, short timeouts, exact delays.
pub fn consumer_config(group: &str, topic: &str, dlq: &str) -> ConsumerConfig {
    ConsumerConfig {
        topics: vec![topic.to_owned()],
        dlq_topic: Some(dlq.to_owned()),
        session_timeout_ms: 6_000,
        commit_interval_ms: 200,
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            jitter: Jitter::None,
        },
        ..ConsumerConfig::new(group)
    }
}

/// A runner running in a task, stopped through its shutdown future.
pub struct Running {
    handle: JoinHandle<Result<(), BusError>>,
    stop: oneshot::Sender<()>,
}

pub fn start<C: Consumable, H: Handler<C> + 'static>(
    runner: ConsumerRunner<C>,
    handler: H,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(runner.run(handler, async move {
        let _ = stopped.await;
    }));
    Running { handle, stop }
}

impl Running {
    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(self) -> Result<(), BusError> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("runner did not stop within 30 s")
            .expect("runner task panicked")
    }
}

/// Shared log of what a handler saw.
pub type Log<T> = Arc<Mutex<Vec<T>>>;

pub fn log<T>() -> Log<T> {
    Arc::new(Mutex::new(Vec::new()))
}

/// Waits until `cond` holds, failing the test with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A header of a record as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Every header name of a record.
pub fn header_names(m: &OwnedMessage) -> Vec<String> {
    m.headers()
        .map(|h| h.iter().map(|h| h.key.to_owned()).collect())
        .unwrap_or_default()
}
