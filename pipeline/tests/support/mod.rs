//! Shared support of the cluster tests: per-test topics and schemas, a seeded workload of
//! real events (plus garbage), the reference model, and the checks of what the job wrote.
//!
//! # The workload
//!
//! The job stamps records with ingestion epochs that a test cannot control, and the
//! fold of an order depends on the order of its records *across topics* (a cancel
//! before or after a payment). So the generated "stories" are chosen such that their
//! final state does not depend on how the topics interleave, only on the order within
//! each partition (which Kafka keeps): an order is created (sometimes twice, always on
//! the same partition), then either only changed and maybe cancelled (all on
//! `order.updated`), or only paid, or only failed (plus duplicates on the same topic).
//! Orphans (records of orders never created) and stock adjustments commute. The
//! [`Model`] fed with the deliveries in any partition-consistent order is then *the*
//! reference for the final state, at any worker count, in any run.
//!
//! # The exactly-once audit
//!
//! [`audit`] checks much more than the final state: it reads the progress topic, binds
//! every input record to the epoch the job committed it in (exactly as a restart does),
//! replays the inputs through the [`Model`] epoch by epoch, and requires that the
//! `stock.updated` records with `version = t` are exactly the SKUs whose numbers changed
//! at epoch `t`, with exactly those numbers, once. A duplicated, missing or wrong record
//! anywhere in the history fails it, and so does a dead letter written twice or never.
#![allow(dead_code, missing_docs)]

pub mod browser;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eventbus::admin::{Admin, TopicList, TopicSpec};
use eventbus::codec::frame;
use eventbus::headers::HeaderList;
use eventbus::kafka::Message;
use eventbus::reader::high_watermarks;
use eventbus::testkit::TestCluster;
use eventbus::{Producer, PublishOptions};
use futures::StreamExt;
use pipeline::clock::Bindings;
use pipeline::config::TopicNames;
use pipeline::input::decode_input;
use pipeline::logic::{InputEvent, OrderId, OrderView, Pos, Sku, StockLevel};
use pipeline::model::Model;
use pipeline::server::StatusJson;
use pipeline::{PipelineConfig, progress};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use schemas::{
    Event, OrderCreated, OrderLine, OrderUpdated, PaymentCompleted, PaymentFailed, StockAdjusted,
    StockUpdated, order_total,
};
use uuid::Uuid;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serializes the cluster tests of one test binary: they are heavy for a 2-core machine.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test's own copy of every topic the job uses, with its schemas registered.
pub struct Env {
    pub cluster: TestCluster,
    pub names: TopicNames,
    pub prefix: String,
    pub order_created_id: u32,
    pub stock_adjusted_id: u32,
    admin: Admin,
    created: Vec<String>,
}

impl Env {
    /// Creates the topics (inputs with `partitions` partitions, RF 3; stock.updated
    /// compacted; progress with one partition) and registers the schemas under the
    /// test's subjects.
    pub async fn new(partitions: i32) -> Result<Env, BoxError> {
        let cluster = TestCluster::connect().await?;
        let prefix = cluster.prefix().to_owned();
        let config = PipelineConfig {
            topics: pipeline::config::TopicConfig {
                prefix: prefix.clone(),
            },
            ..PipelineConfig::default()
        };
        let names = config.topic_names();
        let admin = Admin::new(&cluster.kafka)?;
        type Spec = (String, i32, Vec<(&'static str, &'static str)>);
        let mut specs: Vec<Spec> = names
            .inputs
            .iter()
            .map(|t| (t.clone(), partitions, vec![]))
            .collect();
        specs.push((
            names.stock_updated.clone(),
            partitions,
            vec![("cleanup.policy", "compact")],
        ));
        specs.push((names.progress.clone(), 1, vec![("retention.ms", "-1")]));
        specs.push((names.dlq.clone(), 3, vec![]));
        specs.push((
            names.snapshots.clone(),
            1,
            vec![("cleanup.policy", "compact")],
        ));
        let list = TopicList {
            topics: specs
                .iter()
                .map(|(name, p, config)| {
                    let mut config: BTreeMap<String, String> = config
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    config.insert("min.insync.replicas".into(), "2".into());
                    Ok(TopicSpec {
                        name: name.clone(),
                        partitions: usize::try_from(*p)?,
                        replication_factor: 3,
                        config,
                    })
                })
                .collect::<Result<_, BoxError>>()?,
        };
        admin.apply(&list).await?;
        let created: Vec<String> = specs.iter().map(|(n, _, _)| n.clone()).collect();
        for (name, p, _) in &specs {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let marks = high_watermarks(&cluster.kafka, name)
                    .await
                    .unwrap_or_default();
                if marks.len() == usize::try_from(*p)? {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("topic {name} has no leaders").into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let order_created_id = cluster
            .register_on_topic::<OrderCreated>(&names.inputs[0])
            .await?;
        cluster
            .register_on_topic::<OrderUpdated>(&names.inputs[1])
            .await?;
        cluster
            .register_on_topic::<PaymentCompleted>(&names.inputs[2])
            .await?;
        cluster
            .register_on_topic::<PaymentFailed>(&names.inputs[3])
            .await?;
        let stock_adjusted_id = cluster
            .register_on_topic::<StockAdjusted>(&names.inputs[4])
            .await?;
        cluster
            .register_on_topic::<StockUpdated>(&names.stock_updated)
            .await?;
        Ok(Env {
            cluster,
            names,
            prefix,
            order_created_id,
            stock_adjusted_id,
            admin,
            created,
        })
    }

    /// The job's configuration for this test: its topics, its own transactional id,
    /// the given API addresses.
    pub fn config(&self, workers: usize, http: SocketAddr, grpc: SocketAddr) -> PipelineConfig {
        let mut config = PipelineConfig {
            kafka: self.cluster.kafka.clone().with_client_id("pipeline-test"),
            registry: self.cluster.registry.clone(),
            ..PipelineConfig::default()
        };
        config.topics.prefix = self.prefix.clone();
        config.sink.transactional_id = format!("{}sink", self.prefix);
        config.server.http = http;
        config.server.grpc = grpc;
        config.timely.workers = workers;
        config
    }

    /// Deletes the records of `topic`/`partition` before `offset`, as retention would.
    pub async fn delete_records_before(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), BoxError> {
        self.admin
            .delete_records_before(topic, partition, offset)
            .await?;
        Ok(())
    }

    /// Deletes the topics and subjects.
    pub async fn cleanup(&self) {
        let names: Vec<&str> = self.created.iter().map(String::as_str).collect();
        let _ = self.admin.delete_topics(&names).await;
        self.cluster.cleanup().await;
    }
}

/// A free local port.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

// ---------------------------------------------------------------------------------------
// The workload.
// ---------------------------------------------------------------------------------------

/// One record to produce.
#[derive(Clone, Debug)]
pub enum Input {
    Created(OrderCreated),
    Updated(OrderUpdated),
    Completed(PaymentCompleted),
    Failed(PaymentFailed),
    Adjusted(StockAdjusted),
    /// Raw bytes the job must dead-letter.
    Garbage {
        topic: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
}

impl Input {
    fn topic(&self) -> usize {
        match self {
            Input::Created(_) => 0,
            Input::Updated(_) => 1,
            Input::Completed(_) => 2,
            Input::Failed(_) => 3,
            Input::Adjusted(_) => 4,
            Input::Garbage { topic, .. } => *topic,
        }
    }

    /// The event as the job decodes it (`None` for garbage).
    pub fn event(&self) -> Option<InputEvent> {
        Some(match self {
            Input::Created(e) => pipeline::input::from_created(e.clone()),
            Input::Updated(e) => pipeline::input::from_updated(e.clone()),
            Input::Completed(e) => InputEvent::PaymentCompleted {
                order_id: e.order_id.as_u128(),
            },
            Input::Failed(e) => InputEvent::PaymentFailed {
                order_id: e.order_id.as_u128(),
            },
            Input::Adjusted(e) => InputEvent::StockAdjusted {
                sku: e.sku.clone(),
                delta: e.delta,
            },
            Input::Garbage { .. } => return None,
        })
    }
}

/// Records in waves: a wave's records are independent of each other and may be sent
/// concurrently; the `k`-th record of a story is in wave `k`, so a story's records are
/// written in order.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub waves: Vec<Vec<Input>>,
}

impl Workload {
    pub fn len(&self) -> usize {
        self.waves.iter().map(Vec::len).sum()
    }

    pub fn garbage(&self) -> usize {
        self.waves
            .iter()
            .flatten()
            .filter(|i| matches!(i, Input::Garbage { .. }))
            .count()
    }
}

const BASE_MS: i64 = 1_767_000_000_000;

fn random_lines(rng: &mut StdRng, skus: usize) -> Vec<OrderLine> {
    let n = rng.random_range(1..=3);
    (0..n)
        .map(|_| {
            OrderLine::new(
                format!("SKU-{:03}", rng.random_range(0..skus)),
                rng.random_range(1..=5),
                rng.random_range(100..=5_000),
            )
        })
        .collect()
}

/// A seeded workload of about `orders * 2.6` order and payment records, stock
/// adjustments on `skus` SKUs, and five garbage records.
pub fn workload(seed: u64, orders: usize, skus: usize, env: &Env) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stories: Vec<Vec<Input>> = Vec::new();
    let mut t = 0i64;
    let mut next_time = || {
        t += 1;
        BASE_MS + t
    };
    let id = |rng: &mut StdRng| Uuid::from_u128(rng.random::<u128>() | 1);
    for _ in 0..orders {
        let order_id = id(&mut rng);
        let lines = random_lines(&mut rng, skus);
        let created = OrderCreated {
            event_id: id(&mut rng),
            order_id,
            customer_id: format!("customer-{}", rng.random_range(0..50)),
            currency: "EUR".into(),
            total_minor: order_total(&lines).unwrap_or_default(),
            lines,
            created_at: next_time(),
            channel: Some("REST".into()),
        };
        let mut story = vec![Input::Created(created.clone())];
        let roll: f64 = rng.random();
        if roll < 0.05 {
            // Orphans: records of an order that is never created.
            story.clear();
            story.push(Input::Completed(PaymentCompleted {
                event_id: id(&mut rng),
                order_id,
                payment_id: id(&mut rng),
                amount_minor: 100,
                currency: "EUR".into(),
                completed_at: next_time(),
            }));
            let lines = random_lines(&mut rng, skus);
            story.push(Input::Updated(OrderUpdated {
                event_id: id(&mut rng),
                order_id,
                revision: 1,
                kind: schemas::OrderChangeKind::LinesChanged,
                total_minor: order_total(&lines).unwrap_or_default(),
                lines,
                currency: "EUR".into(),
                updated_at: next_time(),
            }));
        } else if roll < 0.30 {
            // Created only, sometimes resent (same partition: the first one wins).
            if rng.random_bool(0.15) {
                let mut again = created.clone();
                again.event_id = id(&mut rng);
                if rng.random_bool(0.5) {
                    again.lines = random_lines(&mut rng, skus);
                    again.total_minor = order_total(&again.lines).unwrap_or_default();
                }
                story.push(Input::Created(again));
            }
        } else if roll < 0.55 {
            // Line changes (some stale), maybe a cancel, maybe a change after it.
            let mut revision = 0;
            for _ in 0..rng.random_range(1..=3) {
                let stale = revision > 0 && rng.random_bool(0.2);
                let rev = if stale { revision } else { revision + 1 };
                revision = revision.max(rev);
                let lines = random_lines(&mut rng, skus);
                story.push(Input::Updated(OrderUpdated {
                    event_id: id(&mut rng),
                    order_id,
                    revision: rev,
                    kind: schemas::OrderChangeKind::LinesChanged,
                    total_minor: order_total(&lines).unwrap_or_default(),
                    lines,
                    currency: "EUR".into(),
                    updated_at: next_time(),
                }));
            }
            if rng.random_bool(0.5) {
                revision += 1;
                story.push(Input::Updated(OrderUpdated::cancelled(
                    id(&mut rng),
                    order_id,
                    revision,
                    "EUR",
                    next_time(),
                )));
                if rng.random_bool(0.2) {
                    let lines = random_lines(&mut rng, skus);
                    story.push(Input::Updated(OrderUpdated {
                        event_id: id(&mut rng),
                        order_id,
                        revision: revision + 1,
                        kind: schemas::OrderChangeKind::LinesChanged,
                        total_minor: order_total(&lines).unwrap_or_default(),
                        lines,
                        currency: "EUR".into(),
                        updated_at: next_time(),
                    }));
                }
            }
        } else if roll < 0.85 {
            let paid = PaymentCompleted {
                event_id: id(&mut rng),
                order_id,
                payment_id: id(&mut rng),
                amount_minor: created.total_minor,
                currency: "EUR".into(),
                completed_at: next_time(),
            };
            story.push(Input::Completed(paid.clone()));
            if rng.random_bool(0.1) {
                story.push(Input::Completed(PaymentCompleted {
                    event_id: id(&mut rng),
                    ..paid
                }));
            }
        } else {
            let failed = PaymentFailed {
                event_id: id(&mut rng),
                order_id,
                amount_minor: created.total_minor,
                currency: "EUR".into(),
                reason_code: "CUSTOMER_DECLINED".into(),
                reason: "declined".into(),
                failed_at: next_time(),
            };
            story.push(Input::Failed(failed.clone()));
            if rng.random_bool(0.1) {
                story.push(Input::Failed(PaymentFailed {
                    event_id: id(&mut rng),
                    ..failed
                }));
            }
        }
        // Sometimes the payment or update is written before the created (by topic
        // speed): swap the first two records.
        if story.len() >= 2 && matches!(story[0], Input::Created(_)) && rng.random_bool(0.1) {
            story.swap(0, 1);
        }
        stories.push(story);
    }
    let depth = stories.iter().map(Vec::len).max().unwrap_or(1);
    let mut waves: Vec<Vec<Input>> = vec![Vec::new(); depth];
    for story in stories {
        for (k, input) in story.into_iter().enumerate() {
            waves[k].push(input);
        }
    }
    // Stock adjustments commute: anywhere.
    for s in 0..skus {
        for _ in 0..10 {
            let delta = if rng.random_bool(0.2) {
                -rng.random_range(1..=10)
            } else {
                rng.random_range(5..=40)
            };
            let wave = rng.random_range(0..depth);
            waves[wave].push(Input::Adjusted(StockAdjusted {
                event_id: id(&mut rng),
                sku: format!("SKU-{s:03}"),
                delta,
                reason: "restock".into(),
                adjusted_at: next_time(),
            }));
        }
    }
    // Garbage: not Avro, an unknown schema id, no value, a truncated datum, a datum that
    // breaks the domain rules.
    let zero_delta = StockAdjusted {
        event_id: id(&mut rng),
        sku: "SKU-000".into(),
        delta: 0,
        reason: "bad".into(),
        adjusted_at: next_time(),
    };
    let created_datum = match &waves[0].iter().find(|i| matches!(i, Input::Created(_))) {
        Some(Input::Created(c)) => c.to_avro().expect("encodes"),
        _ => vec![0, 1, 2],
    };
    let garbage = vec![
        Input::Garbage {
            topic: 0,
            key: b"garbage-1".to_vec(),
            value: Some(b"\xffnot avro at all".to_vec()),
        },
        Input::Garbage {
            topic: 2,
            key: b"garbage-2".to_vec(),
            value: Some(frame(0x7fff_0001, b"\x02x")),
        },
        Input::Garbage {
            topic: 1,
            key: b"garbage-3".to_vec(),
            value: None,
        },
        Input::Garbage {
            topic: 0,
            key: vec![0xff, 0x00],
            value: Some(frame(
                env.order_created_id,
                &created_datum[..created_datum.len() / 2],
            )),
        },
        Input::Garbage {
            topic: 4,
            key: b"SKU-000".to_vec(),
            value: Some(frame(
                env.stock_adjusted_id,
                &zero_delta.to_avro().expect("encodes"),
            )),
        },
    ];
    for g in garbage {
        let wave = rng.random_range(0..depth);
        waves[wave].push(g);
    }
    for wave in &mut waves {
        wave.shuffle(&mut rng);
    }
    Workload { waves }
}

/// Where a record was written.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub topic: u8,
    pub partition: i32,
    pub offset: i64,
    pub input: Input,
}

async fn send(
    producer: &Producer,
    names: &TopicNames,
    input: Input,
) -> Result<Delivered, BoxError> {
    let topic = &names.inputs[input.topic()];
    let options = PublishOptions::to_topic(topic.clone());
    let delivery = match &input {
        Input::Created(e) => producer.publish_with(e, options).await?,
        Input::Updated(e) => producer.publish_with(e, options).await?,
        Input::Completed(e) => producer.publish_with(e, options).await?,
        Input::Failed(e) => producer.publish_with(e, options).await?,
        Input::Adjusted(e) => producer.publish_with(e, options).await?,
        Input::Garbage { key, value, .. } => {
            producer
                .publish_raw(topic, Some(key), value.as_deref(), &HeaderList::new())
                .await?
        }
    };
    Ok(Delivered {
        topic: u8::try_from(input.topic())?,
        partition: delivery.partition,
        offset: delivery.offset,
        input,
    })
}

/// Produces the workload, wave by wave, `concurrency` records in flight; with `pace`,
/// sleeps that long after every `chunk` records (a steady stream). `sent` counts.
pub async fn produce(
    producer: &Producer,
    names: &TopicNames,
    workload: &Workload,
    concurrency: usize,
    pace: Option<(usize, Duration)>,
    sent: Arc<AtomicUsize>,
) -> Result<Vec<Delivered>, BoxError> {
    let mut out = Vec::with_capacity(workload.len());
    for wave in &workload.waves {
        let chunk = pace.map_or(wave.len().max(1), |(chunk, _)| chunk);
        for part in wave.chunks(chunk) {
            let results: Vec<Result<Delivered, BoxError>> =
                futures::stream::iter(part.iter().cloned())
                    .map(|input| send(producer, names, input))
                    .buffer_unordered(concurrency)
                    .collect()
                    .await;
            for r in results {
                out.push(r?);
                sent.fetch_add(1, Ordering::Relaxed);
            }
            if let Some((_, pause)) = pace {
                tokio::time::sleep(pause).await;
            }
        }
    }
    Ok(out)
}

/// The reference: every valid delivered record, in partition order.
pub fn model_of(delivered: &[Delivered]) -> Model {
    let mut model = Model::new();
    model.apply_epoch(delivered.iter().filter_map(|d| {
        d.input.event().map(|e| {
            let pos = Pos {
                time: 0,
                topic: d.topic,
                partition: d.partition,
                offset: d.offset,
            };
            (pos, e)
        })
    }));
    model
}

// ---------------------------------------------------------------------------------------
// Observing the job.
// ---------------------------------------------------------------------------------------

/// Waits until `/v1/status` reports every input partition committed up to its end.
pub async fn wait_caught_up(
    env: &Env,
    http: SocketAddr,
    timeout: Duration,
) -> Result<u64, BoxError> {
    let client = reqwest::Client::new();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in &env.names.inputs {
        for (p, high) in high_watermarks(&env.cluster.kafka, topic).await? {
            if high > 0 {
                ends.insert((topic.clone(), p), high);
            }
        }
    }
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(response) = client.get(format!("http://{http}/v1/status")).send().await
            && let Ok(status) = response.json::<StatusJson>().await
        {
            let behind = status.behind(&ends);
            if behind == 0 && status.ready {
                return Ok(status.as_of_epoch.unwrap_or(0));
            }
            last = format!("{behind} offsets behind; status {status:?}");
        }
        if Instant::now() > deadline {
            return Err(format!("the job did not catch up in {timeout:?}: {last}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `/readyz` until it answers 200.
pub async fn wait_ready(
    http: std::net::SocketAddr,
    job: &mut Job,
    timeout: Duration,
) -> Result<(), BoxError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(format!("http://{http}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = job.child.try_wait() {
            return Err(format!("the job exited with {status}:\n{}", job.tail()).into());
        }
        if Instant::now() > deadline {
            return Err(format!("the job was not ready in {timeout:?}:\n{}", job.tail()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A metric's value from `/metrics` (first sample whose line starts with `name`).
pub async fn metric(http: std::net::SocketAddr, name: &str) -> Result<f64, BoxError> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no metric {name}").into())
}

/// The REST views: stock (non-zero SKUs) and every order of `ids`.
pub async fn rest_views(
    http: SocketAddr,
    ids: impl IntoIterator<Item = OrderId>,
) -> Result<
    (
        BTreeMap<Sku, StockLevel>,
        BTreeMap<OrderId, (String, i64, String)>,
    ),
    BoxError,
> {
    let client = reqwest::Client::new();
    let inventory: serde_json::Value = client
        .get(format!("http://{http}/v1/inventory"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(inventory["as_of_epoch"].as_u64().is_some(), "{inventory}");
    let mut stock = BTreeMap::new();
    for item in inventory["items"].as_array().cloned().unwrap_or_default() {
        let level = StockLevel {
            on_hand: item["on_hand"].as_i64().unwrap_or_default(),
            reserved: item["reserved"].as_i64().unwrap_or_default(),
            available: item["available"].as_i64().unwrap_or_default(),
        };
        stock.insert(item["sku"].as_str().unwrap_or_default().to_owned(), level);
    }
    let mut orders = BTreeMap::new();
    let ids: Vec<OrderId> = ids.into_iter().collect();
    let answers: Vec<Result<(OrderId, serde_json::Value), BoxError>> = futures::stream::iter(ids)
        .map(|id| {
            let client = client.clone();
            async move {
                let url = format!("http://{http}/v1/orders/{}", Uuid::from_u128(id));
                let value: serde_json::Value = client
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Ok((id, value))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for answer in answers {
        let (id, v) = answer?;
        assert!(v["as_of_epoch"].as_u64().is_some(), "{v}");
        orders.insert(
            id,
            (
                v["status"].as_str().unwrap_or_default().to_owned(),
                v["total_minor"].as_i64().unwrap_or_default(),
                v["currency"].as_str().unwrap_or_default().to_owned(),
            ),
        );
    }
    Ok((stock, orders))
}

/// The model's orders in the REST shape.
pub fn model_orders(model: &Model) -> BTreeMap<OrderId, (String, i64, String)> {
    model
        .orders()
        .into_iter()
        .map(|(id, v): (OrderId, OrderView)| {
            (
                id,
                (v.status.as_str().to_owned(), v.total_minor, v.currency),
            )
        })
        .collect()
}

/// The gRPC views: every SKU (all pages) and the given orders.
pub async fn grpc_views(
    grpc: SocketAddr,
    ids: impl IntoIterator<Item = OrderId>,
) -> Result<
    (
        BTreeMap<Sku, StockLevel>,
        BTreeMap<OrderId, (String, i64, String)>,
    ),
    BoxError,
> {
    use pipeline::proto::view_service_client::ViewServiceClient;
    use pipeline::proto::{GetOrderViewRequest, ListInventoryRequest, OrderStatus};
    let mut client = ViewServiceClient::connect(format!("http://{grpc}")).await?;
    let mut stock = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_inventory(ListInventoryRequest {
                page_size: 7,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        assert!(page.freshness.is_some_and(|f| f.epoch > 0));
        for l in page.levels {
            stock.insert(
                l.sku.clone(),
                StockLevel {
                    on_hand: l.on_hand,
                    reserved: l.reserved,
                    available: l.available,
                },
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut orders = BTreeMap::new();
    for id in ids {
        let answer = client
            .get_order(GetOrderViewRequest {
                order_id: Uuid::from_u128(id).to_string(),
            })
            .await?
            .into_inner();
        assert!(
            answer
                .freshness
                .is_some_and(|f| f.epoch > 0 && f.as_of_ms > 0)
        );
        let Some(order) = answer.order else { continue };
        let status = match OrderStatus::try_from(order.status) {
            Ok(OrderStatus::Created) => "CREATED",
            Ok(OrderStatus::Paid) => "PAID",
            Ok(OrderStatus::PaymentFailed) => "PAYMENT_FAILED",
            Ok(OrderStatus::Cancelled) => "CANCELLED",
            _ => "?",
        };
        orders.insert(id, (status.to_owned(), order.total_minor, order.currency));
    }
    Ok((stock, orders))
}

/// One `stock.updated` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Updated {
    pub partition: i32,
    pub offset: i64,
    pub event: StockUpdated,
}

/// Every committed `stock.updated` record, by partition then offset.
pub async fn read_stock_updated(env: &Env) -> Result<Vec<Updated>, BoxError> {
    let records = env.cluster.read_all(&env.names.stock_updated, true).await?;
    let registry = env.cluster.registry_client();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let (event, _) = eventbus::codec::decode::<StockUpdated>(
            registry,
            &env.names.stock_updated,
            r.payload(),
        )
        .await
        .map_err(|f| f.error)?;
        assert_eq!(r.key(), Some(event.sku.as_bytes()), "keyed by SKU");
        let headers = HeaderList::from_headers(r.headers());
        assert_eq!(headers.get_str("ce_type"), Some("stock.updated"));
        assert_eq!(headers.get_str("ce_id"), Some(event.event_id().as_str()));
        out.push(Updated {
            partition: r.partition(),
            offset: r.offset(),
            event,
        });
    }
    Ok(out)
}

/// The compacted topic as a view: the last record of every SKU, all-zero SKUs left out.
pub fn topic_view(records: &[Updated]) -> BTreeMap<Sku, StockLevel> {
    let mut last: BTreeMap<Sku, &StockUpdated> = BTreeMap::new();
    for r in records {
        last.insert(r.event.sku.clone(), &r.event);
    }
    last.into_iter()
        .filter(|(_, e)| e.on_hand != 0 || e.reserved != 0)
        .map(|(sku, e)| {
            (
                sku,
                StockLevel {
                    on_hand: e.on_hand,
                    reserved: e.reserved,
                    available: e.available,
                },
            )
        })
        .collect()
}

/// Per SKU, versions strictly increase in offset order (so no (sku, version) twice).
pub fn check_versions(records: &[Updated]) -> Result<(), String> {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for r in records {
        if let Some(previous) = last.get(r.event.sku.as_str())
            && r.event.version <= *previous
        {
            return Err(format!(
                "{}: version {} after {} (partition {} offset {})",
                r.event.sku, r.event.version, previous, r.partition, r.offset
            ));
        }
        last.insert(&r.event.sku, r.event.version);
    }
    Ok(())
}

/// What [`audit`] saw.
#[derive(Debug)]
pub struct AuditReport {
    pub transactions: usize,
    pub epochs: usize,
    pub records: usize,
    pub stock_updates: usize,
    pub dead: usize,
    pub model: Model,
}

/// The exactly-once audit (module docs): the whole committed history, epoch by epoch.
pub async fn audit(env: &Env, stock: &[Updated]) -> Result<AuditReport, BoxError> {
    let kafka = env.cluster.kafka.clone();
    let progress_topic = env.names.progress.clone();
    let records = tokio::task::spawn_blocking(move || {
        progress::read_records(&kafka, &progress_topic, Duration::from_secs(60))
    })
    .await??;
    let bindings = Bindings::from_records(&records)?;
    let epochs: Vec<u64> = records
        .iter()
        .flat_map(|r| r.epochs.iter().map(|e| e.time))
        .collect();
    let registry = env.cluster.registry_client();

    // Every input record, bound to its committed epoch.
    let mut by_epoch: BTreeMap<u64, Vec<(Pos, InputEvent)>> = BTreeMap::new();
    let mut dead_expected: BTreeSet<(String, i32, i64)> = BTreeSet::new();
    let mut total = 0;
    for (index, topic) in env.names.inputs.iter().enumerate() {
        let t = u8::try_from(index)?;
        for r in env.cluster.read_all(topic, true).await? {
            total += 1;
            let (p, o) = (r.partition(), r.offset());
            let time = bindings
                .bind(t, p, o)
                .ok_or_else(|| format!("{topic}/{p}@{o} is not in any committed epoch"))?;
            if bindings.is_dead(t, p, o) {
                dead_expected.insert((topic.clone(), p, o));
                continue;
            }
            let event = decode_input(registry, t, topic, r.payload())
                .await
                .map_err(|e| format!("{topic}/{p}@{o} was committed as an event but: {e:?}"))?;
            let pos = Pos {
                time,
                topic: t,
                partition: p,
                offset: o,
            };
            by_epoch.entry(time).or_default().push((pos, event));
        }
    }

    // Emitted records by version.
    let mut emitted: BTreeMap<u64, BTreeMap<Sku, StockLevel>> = BTreeMap::new();
    for r in stock {
        let version = u64::try_from(r.event.version)?;
        let level = StockLevel {
            on_hand: r.event.on_hand,
            reserved: r.event.reserved,
            available: r.event.available,
        };
        if emitted
            .entry(version)
            .or_default()
            .insert(r.event.sku.clone(), level)
            .is_some()
        {
            return Err(format!("{} written twice at version {version}", r.event.sku).into());
        }
    }
    let committed: BTreeSet<u64> = epochs.iter().copied().collect();
    if let Some(stray) = emitted.keys().find(|v| !committed.contains(v)) {
        return Err(
            format!("stock.updated at version {stray}, which is no committed epoch").into(),
        );
    }

    // Replay through the model, epoch by epoch.
    let mut model = Model::new();
    let mut before: BTreeMap<Sku, StockLevel> = BTreeMap::new();
    for &time in &epochs {
        model.apply_epoch(by_epoch.remove(&time).unwrap_or_default());
        let after = model.stock();
        let mut changed: BTreeMap<Sku, StockLevel> = BTreeMap::new();
        for sku in before.keys().chain(after.keys()) {
            let old = before.get(sku).copied().unwrap_or_default();
            let new = after.get(sku).copied().unwrap_or_default();
            if old != new {
                changed.insert(sku.clone(), new);
            }
        }
        let actual = emitted.remove(&time).unwrap_or_default();
        if actual != changed {
            return Err(format!(
                "epoch {time}: expected stock.updated {changed:?}, the job wrote {actual:?}"
            )
            .into());
        }
        before = after;
    }

    // Dead letters: each exactly once.
    let mut dead_seen: BTreeSet<(String, i32, i64)> = BTreeSet::new();
    for r in env.cluster.read_all(&env.names.dlq, true).await? {
        let headers = HeaderList::from_headers(r.headers());
        let letter =
            eventbus::dlq::DeadLetter::from_headers(&headers).ok_or("not a dead letter")?;
        assert_eq!(letter.group, "inventory-service");
        if !dead_seen.insert((letter.topic, letter.partition, letter.offset)) {
            return Err("a dead letter was written twice".into());
        }
    }
    if dead_seen != dead_expected {
        return Err(
            format!("dead letters {dead_seen:?}, committed as dead {dead_expected:?}").into(),
        );
    }

    Ok(AuditReport {
        transactions: records.len(),
        epochs: epochs.len(),
        records: total,
        stock_updates: stock.len(),
        dead: dead_seen.len(),
        model,
    })
}

// ---------------------------------------------------------------------------------------
// The binary as a child process.
// ---------------------------------------------------------------------------------------

/// A running `pipeline` process; killed (SIGKILL) when dropped.
pub struct Job {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Job {
    /// Starts the binary with `args`, logging to `log`.
    pub fn start(env: &Env, args: &[String], log: &Path) -> Result<Job, BoxError> {
        Job::start_with(env, args, log, &[])
    }

    /// [`Job::start`] with extra environment variables (`PIPELINE__...` settings).
    pub fn start_with(
        env: &Env,
        args: &[String],
        log: &Path,
        vars: &[(&str, &str)],
    ) -> Result<Job, BoxError> {
        let file = std::fs::File::create(log)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_pipeline"));
        // The cluster's address and the test principal's credentials (`admin`, from
        // KAFKA_CLIENT_CONFIG or `.run/secrets/admin.conf`), as the tests connect.
        if let Some(file) = &env.cluster.kafka.client_config_file {
            command.env(eventbus::config::CLIENT_CONFIG_ENV, file);
        }
        let child = command
            .args(args)
            .envs(vars.iter().copied())
            .env("KAFKA_BOOTSTRAP", &env.cluster.kafka.bootstrap)
            .env("REGISTRY_URL", &env.cluster.registry.url)
            .env(
                "RUST_LOG",
                std::env::var("PIPELINE_TEST_LOG")
                    .unwrap_or_else(|_| "info,librdkafka=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()?;
        Ok(Job {
            child,
            log: log.to_owned(),
        })
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// The last lines of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The arguments that point the binary at `env` with the given API addresses.
pub fn job_args(env: &Env, http: SocketAddr, grpc: SocketAddr) -> Vec<String> {
    vec![
        "--topic-prefix".into(),
        env.prefix.clone(),
        "--transactional-id".into(),
        format!("{}sink", env.prefix),
        "--http".into(),
        http.to_string(),
        "--grpc".into(),
        grpc.to_string(),
    ]
}
