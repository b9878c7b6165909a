//! Shared set-up of the integration tests: each test gets its own topics (under a unique
//! prefix, replication factor 3), its own registry subjects, group and transactional id,
//! on the real cluster and registry (`KAFKA_BOOTSTRAP`, `REGISTRY_URL`).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::codec::decode;
use eventbus::headers::HeaderList;
use eventbus::kafka::{Message, OwnedMessage};
use eventbus::testkit::TestCluster;
use eventbus::{Jitter, Producer, PublishOptions, RetryPolicy};
use payment::config::{Topics, TopicsConfig};
use payment::{ChargeRequest, Config, GatewayError, PaymentGateway, SimulatedGatewayConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::{OrderCreated, OrderLine, PaymentCompleted, PaymentFailed};
use uuid::Uuid;

/// Every record of `topic` that exists now, by partition then offset (eventbus's
/// bounded read: assigned, never joined, nothing committed).
pub async fn read_all(env: &Env, topic: &str, read_committed: bool) -> Vec<OwnedMessage> {
    env.cluster
        .read_all(topic, read_committed)
        .await
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
}

/// The environment a spawned `payment` binary needs to reach the test's cluster as the
/// tests' principal: the bootstrap, and the client config file (credentials, CA) when
/// the cluster is secured (`KAFKA_CLIENT_CONFIG`, and the service's own key for it).
pub fn kafka_env(env: &Env) -> Vec<(&'static str, String)> {
    let kafka = &env.cluster.kafka;
    let mut vars = vec![("KAFKA_BOOTSTRAP", kafka.bootstrap.clone())];
    if let Some(file) = &kafka.client_config_file {
        let file = file.display().to_string();
        vars.push(("KAFKA_CLIENT_CONFIG", file.clone()));
        vars.push(("PAYMENT__KAFKA__CLIENT_CONFIG_FILE", file));
    }
    vars
}

/// The amount limit of the tests' gateways, in minor units.
pub const LIMIT: i64 = 100_000;
/// The customers the tests' gateways decline.
pub const DECLINED: [&str; 2] = ["customer-13", "customer-42"];

/// A test's topics on the real cluster.
pub struct Env {
    pub cluster: TestCluster,
    pub topics: Topics,
    pub partitions: i32,
    pub producer: Producer,
}

/// Creates the four topics (payment topics with `partitions` like the input, the DLQ
/// with 3) and registers the schemas under the test's subjects.
pub async fn setup(partitions: i32) -> Env {
    eventbus::testkit::init_tracing();
    let cluster = TestCluster::connect()
        .await
        .expect("the local cluster and registry must be running (make up)");
    let names = TopicsConfig::default();
    let created = cluster
        .create_topic(&names.order_created, partitions)
        .await
        .unwrap();
    let completed = cluster
        .create_topic(&names.payment_completed, partitions)
        .await
        .unwrap();
    let failed = cluster
        .create_topic(&names.payment_failed, partitions)
        .await
        .unwrap();
    let dlq = cluster.create_topic(&names.dlq, 3).await.unwrap();
    cluster
        .register_on_topic::<OrderCreated>(&created)
        .await
        .unwrap();
    cluster
        .register_on_topic::<PaymentCompleted>(&completed)
        .await
        .unwrap();
    cluster
        .register_on_topic::<PaymentFailed>(&failed)
        .await
        .unwrap();
    let producer = cluster.bus().unwrap().producer().clone();
    let topics = Topics {
        order_created: created,
        payment_completed: completed,
        payment_failed: failed,
        dlq,
    };
    Env {
        cluster,
        topics,
        partitions,
        producer,
    }
}

impl Env {
    /// The service configuration for this test: its prefix, fast retries, a gateway
    /// with the tests' decline rules and a transient failure rate.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.topics.prefix = self.cluster.prefix().to_owned();
        config.kafka = self.cluster.kafka.clone().with_client_id("payment-test");
        config.registry = self.cluster.registry.clone();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.settle.retry = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            jitter: Jitter::Full,
        };
        config.gateway = gateway_config();
        config.consumer.lag_interval = Duration::from_millis(500);
        assert_eq!(config.topics.resolve(), self.topics);
        config
    }

    /// Publishes `orders` to the input topic (acknowledged, in order per key).
    pub async fn publish(&self, orders: &[OrderCreated]) {
        for chunk in orders.chunks(250) {
            let sends = chunk.iter().map(|o| {
                self.producer
                    .publish_with(o, PublishOptions::to_topic(&self.topics.order_created))
            });
            for result in futures::future::join_all(sends).await {
                result.expect("publish order");
            }
        }
    }

    /// Publishes raw bytes to the input topic.
    pub async fn publish_raw(&self, key: &[u8], value: &[u8]) {
        self.producer
            .publish_raw(
                &self.topics.order_created,
                Some(key),
                Some(value),
                &HeaderList::new(),
            )
            .await
            .expect("publish raw record");
    }

    /// Every committed outcome now.
    pub async fn outcomes(&self) -> Outcomes {
        let registry = self.cluster.registry_client();
        let mut out = Outcomes::default();
        for m in read_all(self, &self.topics.payment_completed, true).await {
            let (e, _) = decode::<PaymentCompleted>(registry, m.topic(), m.payload())
                .await
                .map_err(|f| f.error)
                .unwrap();
            assert_eq!(m.key(), Some(e.order_id.to_string().as_bytes()));
            out.completed.push((m.partition(), e));
        }
        for m in read_all(self, &self.topics.payment_failed, true).await {
            let (e, _) = decode::<PaymentFailed>(registry, m.topic(), m.payload())
                .await
                .map_err(|f| f.error)
                .unwrap();
            assert_eq!(m.key(), Some(e.order_id.to_string().as_bytes()));
            out.failed.push((m.partition(), e));
        }
        out
    }

    /// Records on the outcome topics including aborted ones (`read_uncommitted`).
    pub async fn raw_outcome_records(&self) -> usize {
        let mut n = 0;
        for topic in [&self.topics.payment_completed, &self.topics.payment_failed] {
            n += read_all(self, topic, false).await.len();
        }
        n
    }

    /// Every committed DLQ record now.
    pub async fn dlq(&self) -> Vec<OwnedMessage> {
        read_all(self, &self.topics.dlq, true).await
    }

    /// Waits until at least `n` outcomes are committed; returns them.
    pub async fn wait_outcomes(&self, n: usize, timeout: Duration) -> Outcomes {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.outcomes().await;
            if o.len() >= n {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} outcomes after {timeout:?}",
                o.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until the group has committed every offset of the input topic.
    pub async fn wait_caught_up(&self, group: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let lag = self.group_lag(group).await;
            if lag == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "group {group} still {lag} behind after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// High watermarks minus the group's committed offsets, summed over partitions.
    pub async fn group_lag(&self, group: &str) -> i64 {
        let topic = &self.topics.order_created;
        let high: HashMap<i32, i64> = eventbus::reader::high_watermarks(&self.cluster.kafka, topic)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let committed = self.cluster.committed_offsets(group, topic).await.unwrap();
        committed
            .into_iter()
            .map(|(p, done)| high.get(&p).copied().unwrap_or(0) - done.unwrap_or(0))
            .sum()
    }
}

/// Committed outcomes, with the partition each was read from.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub completed: Vec<(i32, PaymentCompleted)>,
    pub failed: Vec<(i32, PaymentFailed)>,
}

impl Outcomes {
    pub fn len(&self) -> usize {
        self.completed.len() + self.failed.len()
    }

    /// How many outcomes each order has.
    pub fn per_order(&self) -> HashMap<Uuid, usize> {
        let mut n = HashMap::new();
        for (_, e) in &self.completed {
            *n.entry(e.order_id).or_default() += 1;
        }
        for (_, e) in &self.failed {
            *n.entry(e.order_id).or_default() += 1;
        }
        n
    }

    /// Asserts that `orders` got exactly one outcome each, the one `gateway` decides,
    /// on the order's own partition (`partition_of`), and nothing else is there.
    pub fn assert_exactly_once(
        &self,
        orders: &[OrderCreated],
        gateway: &SimulatedGatewayConfig,
        partition_of: &HashMap<Uuid, i32>,
    ) {
        let per_order = self.per_order();
        let duplicated: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicated.is_empty(),
            "orders with several outcomes: {duplicated:?}"
        );
        let missing: Vec<_> = orders
            .iter()
            .filter(|o| !per_order.contains_key(&o.order_id))
            .map(|o| o.order_id)
            .collect();
        assert!(
            missing.is_empty(),
            "{} orders without an outcome: {missing:?}",
            missing.len()
        );
        assert_eq!(self.len(), orders.len(), "exactly one outcome per order");
        let completed: HashMap<Uuid, (i32, &PaymentCompleted)> = self
            .completed
            .iter()
            .map(|(p, e)| (e.order_id, (*p, e)))
            .collect();
        let failed: HashMap<Uuid, (i32, &PaymentFailed)> = self
            .failed
            .iter()
            .map(|(p, e)| (e.order_id, (*p, e)))
            .collect();
        for o in orders {
            let expected_partition = partition_of.get(&o.order_id).copied();
            match gateway.verdict(&ChargeRequest::for_order(o)) {
                None => {
                    let (p, e) = completed
                        .get(&o.order_id)
                        .unwrap_or_else(|| panic!("{} should be completed", o.order_id));
                    assert_eq!(e.amount_minor, o.total_minor);
                    assert_eq!(e.currency, o.currency);
                    if let Some(ep) = expected_partition {
                        assert_eq!(*p, ep, "outcome on the order's partition");
                    }
                }
                Some(GatewayError::Declined { code, .. }) => {
                    let (p, e) = failed
                        .get(&o.order_id)
                        .unwrap_or_else(|| panic!("{} should have failed with {code}", o.order_id));
                    assert_eq!(e.reason_code, code, "order {}", o.order_id);
                    if let Some(ep) = expected_partition {
                        assert_eq!(*p, ep, "outcome on the order's partition");
                    }
                }
                Some(other) => panic!("test orders never get {other:?}"),
            }
        }
    }

    /// Counts by reason: `completed`, or the failure's reason code.
    pub fn by_reason(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        *m.entry("completed".to_owned()).or_default() += self.completed.len();
        for (_, e) in &self.failed {
            *m.entry(e.reason_code.clone()).or_default() += 1;
        }
        m
    }
}

/// The tests' gateway: limit, decline list, 20% transient failures, ~1-3 ms latency.
pub fn gateway_config() -> SimulatedGatewayConfig {
    SimulatedGatewayConfig {
        amount_limit_minor: LIMIT,
        declined_customers: DECLINED.iter().map(|s| (*s).to_owned()).collect(),
        unsupported_currencies: Vec::new(),
        transient_failure_rate: 0.2,
        latency: Duration::from_millis(1),
        latency_jitter: Duration::from_millis(2),
        seed: 7,
        ledger_path: None,
    }
}

/// `n` orders from `seed`: 60 customers (two on the decline list), about one in ten
/// over the amount limit.
pub fn orders(n: usize, seed: u64) -> Vec<OrderCreated> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let lines = if rng.random_bool(0.1) {
                vec![OrderLine::new("SKU-BIG", 3, 50_000)]
            } else {
                (0..rng.random_range(1..=3))
                    .map(|i| {
                        OrderLine::new(
                            format!("SKU-{i}"),
                            rng.random_range(1..=5),
                            rng.random_range(100..=5_000),
                        )
                    })
                    .collect()
            };
            order(
                &format!("customer-{}", rng.random_range(0..60)),
                lines,
                "EUR",
            )
        })
        .collect()
}

/// One valid order.
pub fn order(customer: &str, lines: Vec<OrderLine>, currency: &str) -> OrderCreated {
    OrderCreated {
        event_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        customer_id: customer.to_owned(),
        currency: currency.to_owned(),
        total_minor: schemas::order_total(&lines).unwrap(),
        lines,
        created_at: eventbus::headers::now_ms(),
        channel: Some("REST".to_owned()),
    }
}

/// The same order again, as a redrive or replay would send it (new event id).
pub fn duplicate(o: &OrderCreated) -> OrderCreated {
    OrderCreated {
        event_id: Uuid::new_v4(),
        ..o.clone()
    }
}

/// Where each order landed (the input partition), from reading the input topic back.
pub async fn input_partitions(env: &Env) -> HashMap<Uuid, i32> {
    let registry = env.cluster.registry_client();
    let mut map = HashMap::new();
    for m in read_all(env, &env.topics.order_created, true).await {
        if let Ok((o, _)) = decode::<OrderCreated>(registry, m.topic(), m.payload()).await {
            map.insert(o.order_id, m.partition());
        }
    }
    map
}

/// The service running in this process.
pub struct Service {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), payment::PaymentError>>,
}

impl Service {
    /// Starts `payment::run_with_gateway` on a free port.
    pub async fn start<G: PaymentGateway>(config: Config, gateway: Arc<G>) -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(payment::run_with_gateway(
            config,
            gateway,
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        Service {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Asks for a graceful shutdown and waits for it.
    pub async fn stop(mut self) -> Result<(), payment::PaymentError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("graceful shutdown within 60 s")
            .expect("service task")
    }

    /// Waits for the service to stop on its own (without asking it to).
    pub async fn wait_exit(mut self, timeout: Duration) -> Result<(), payment::PaymentError> {
        tokio::time::timeout(timeout, &mut self.task)
            .await
            .expect("the service stops on its own")
            .expect("service task")
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        wait_ready(self.addr, timeout).await;
    }
}

/// Waits until `/readyz` at `addr` answers 200.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/readyz")).await
            && r.status().as_u16() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not ready after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of every series of metric `name` (exact name, any labels) at `addr`.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_in(&text, name)
}

/// The sum of every series of metric `name` in a Prometheus text.
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
