//! Idempotency keys: a retried request returns the first answer and never produces a
//! second order, across restarts and across instances, without a database.
//!
//! # Design
//!
//! Three mechanisms, each covering what the one before cannot:
//!
//! 1. **Deterministic ids.** With a key, the order id is the name-based UUID (v5) of
//!    `customer_id` and the key ([`order_id_for`]), and every event id is a v5 UUID of
//!    the operation, the order id and the key ([`created_event_id`],
//!    [`change_event_id`], [`adjustment_event_id`]). Whatever instance handles a retry,
//!    before or after any crash, it publishes an event with the *same* order id and the
//!    *same* CloudEvents `ce_id`. Consumers already treat the first `order.created` of
//!    an order id as the order and ignore later ones (payment and pipeline both key
//!    their state by order id), so even a duplicate record is harmless. This holds
//!    unconditionally; the other two mechanisms only avoid the duplicate record.
//! 2. **A bounded cache per instance** ([`IdempotencyCache`]): scope (operation +
//!    customer or order + key) → request fingerprint and the published event. A retry
//!    is answered from it without publishing; the same key with a different request is
//!    refused (422 / FAILED_PRECONDITION); a retry while the first request is still
//!    publishing is told to come back (409 / ABORTED), so one instance never publishes
//!    two events for one key at all. Capacity and TTL bound its memory.
//! 3. **The topics are the shared log of answers** ([`LogFollower`]). Every keyed event
//!    carries the key, the request fingerprint and the key's scope as Kafka headers
//!    ([`KEY_HEADER`], [`FINGERPRINT_HEADER`], [`SCOPE_HEADER`]). Each instance reads its topics from
//!    `now - lookback` at start-up and then follows them, inserting every keyed event
//!    into its cache. So the cache survives restarts (rebuilt from Kafka, which stores
//!    exactly what was acknowledged: the key record *is* the event, written atomically
//!    with it), and an instance learns the keys other instances answered, typically
//!    within milliseconds. `/readyz` stays 503 until the start-up replay caught up with
//!    the high watermarks, so a load balancer never sends a retry to an instance that
//!    has not read the answers yet. A record whose scope the instance knows already
//!    (every record it published itself) is skipped without decoding, which keeps the
//!    follower's cost to fetching the records back (see the benchmark in `bench/`).
//!
//! # What holds, and the one race
//!
//! * Same instance, any time within the TTL: one event, the identical answer.
//! * After a restart or on another instance, once that instance has read the first
//!   event (start-up replay or following): one event, the identical answer.
//! * Two instances receiving the same key *within the follow lag* (both before either
//!   has read the other's event, typically a few milliseconds), or a retry after the
//!   lookback/TTL: both publish. The two events carry the same order id and `ce_id`;
//!   they differ only in `created_at` (and `traceparent`), and the second answer has the
//!   same order id but its own `created_at`. Downstream dedupes them by order id.
//! * A publish that missed its deadline (503) is still being sent by librdkafka: the
//!   instance keeps the key claimed until librdkafka reports the record's fate, so a
//!   retry meanwhile is told 409 (in progress), and afterwards gets the first answer
//!   (written) or publishes the same ids again (failed). A retry on *another* instance
//!   meanwhile may publish the same ids again (the race above).
//!
//! The fingerprint is a v5 UUID (SHA-1) of the operation and the validated request in
//! canonical JSON; it only has to tell a client's own requests apart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventbus::client::{self, GroupOptions};
use eventbus::codec::decode;
use eventbus::context::BusContext;
use eventbus::kafka::{
    BorrowedMessage, Consumer, Headers as _, Message as _, Offset, StreamConsumer,
    TopicPartitionList,
};
use eventbus::{BusError, BusMetrics, KafkaSettings, RegistryClient};
use schemas::{OrderCreated, OrderUpdated, StockAdjusted};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{IdempotencyConfig, TopicsConfig};
use crate::validation::IdempotencyKey;

/// The high watermark to catch up to, per `(topic, partition)` that had records to replay.
type CatchUpTargets = HashMap<(String, i32), i64>;

/// Namespace of order ids derived from `customer_id` and an idempotency key.
pub const ORDER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_2c4e_8a3b_4f5e_9c7d_1a2b_3c4d_5e6f);
/// Namespace of event ids derived from an operation, an order id and a key.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x0c9e_7b5a_41d2_4e8f_b3a6_5d4c_2e1f_9a8b);
/// Namespace of idempotency scopes.
pub const SCOPE_NAMESPACE: Uuid = Uuid::from_u128(0x2d7c_5a18_e943_4b06_a1f2_7e8d_9c0b_3f64);
/// Namespace of request fingerprints.
pub const FINGERPRINT_NAMESPACE: Uuid = Uuid::from_u128(0x9b2e_44f1_0a6c_4d37_8e15_c2f3_a4b5_d6e7);

/// Kafka header carrying the idempotency key of the request that produced an event.
pub const KEY_HEADER: &str = "idempotency-key";
/// Kafka header carrying the request's fingerprint (a UUID in text).
pub const FINGERPRINT_HEADER: &str = "idempotency-fingerprint";
/// Kafka header carrying the key's [`Scope`] id (a UUID in text): a follower that knows
/// the scope already (every record its own instance published) skips decoding.
pub const SCOPE_HEADER: &str = "idempotency-scope";

/// The operations a key is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /v1/orders`, `CreateOrder`: scoped by customer.
    CreateOrder,
    /// `PATCH /v1/orders/{id}`, `UpdateOrder`, `CancelOrder`: scoped by order.
    ChangeOrder,
    /// `POST /v1/inventory/adjustments`, `AdjustStock`.
    AdjustStock,
}

impl Operation {
    /// A stable name, part of the derived ids: never change it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateOrder => "create-order",
            Operation::ChangeOrder => "change-order",
            Operation::AdjustStock => "adjust-stock",
        }
    }
}

/// Where a key is unique: the same key in two scopes is two keys. A scope is the v5
/// UUID of its parts (operation, customer or order, key) joined by control characters,
/// which customer ids and keys cannot contain, so different parts never share a scope.
/// Being a fixed 16 bytes, it is also what the cache stores and what the
/// [`SCOPE_HEADER`] of a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope(Uuid);

impl Scope {
    fn of(operation: Operation, subject: &str, key: &str) -> Self {
        Scope(Uuid::new_v5(
            &SCOPE_NAMESPACE,
            format!("{}\n{subject}\n{key}", operation.as_str()).as_bytes(),
        ))
    }

    /// An order creation by `customer_id`.
    pub fn create_order(customer_id: &str, key: &str) -> Self {
        Scope::of(Operation::CreateOrder, customer_id, key)
    }

    /// A change of `order_id`.
    pub fn change_order(order_id: &Uuid, key: &str) -> Self {
        Scope::of(Operation::ChangeOrder, &order_id.to_string(), key)
    }

    /// A stock adjustment.
    pub fn adjust_stock(key: &str) -> Self {
        Scope::of(Operation::AdjustStock, "", key)
    }

    /// The scope's id.
    pub fn id(&self) -> Uuid {
        self.0
    }
}

/// The order id for an order created by `customer_id` with idempotency key `key`.
pub fn order_id_for(customer_id: &str, key: &IdempotencyKey) -> Uuid {
    Uuid::new_v5(
        &ORDER_ID_NAMESPACE,
        format!("{customer_id}\n{}", key.as_str()).as_bytes(),
    )
}

/// The id of the one `order.created` event of an order.
pub fn created_event_id(order_id: &Uuid) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("order.created\n{order_id}").as_bytes(),
    )
}

/// The id of the `order.updated` event of a keyed change of `order_id`.
pub fn change_event_id(order_id: &Uuid, key: &IdempotencyKey) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("order.updated\n{order_id}\n{}", key.as_str()).as_bytes(),
    )
}

/// The id of the `stock.adjusted` event of a keyed adjustment.
pub fn adjustment_event_id(key: &IdempotencyKey) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("stock.adjusted\n{}", key.as_str()).as_bytes(),
    )
}

/// The fingerprint of a validated request: equal requests, equal fingerprints.
pub fn fingerprint<T: serde::Serialize>(operation: Operation, request: &T) -> Uuid {
    // Serializing plain structs of strings and numbers cannot fail; an empty text would
    // only make every such request look alike, which the operation prefix still scopes.
    let json = serde_json::to_string(request).unwrap_or_default();
    Uuid::new_v5(
        &FINGERPRINT_NAMESPACE,
        format!("{}\n{json}", operation.as_str()).as_bytes(),
    )
}

/// What a keyed request produced: its event, from which either API renders its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An order was created.
    Created(OrderCreated),
    /// An order was changed or cancelled.
    Updated(OrderUpdated),
    /// Stock was adjusted.
    Adjusted(StockAdjusted),
}

/// The result of [`IdempotencyCache::claim`].
#[derive(Debug)]
pub enum Claim {
    /// The key is new: publish, then [`ClaimGuard::complete`]. Dropping the guard
    /// without completing (the publish failed) frees the key for a retry.
    Fresh(ClaimGuard),
    /// The key was answered: answer the same.
    Replay(Outcome),
    /// The key is being answered right now by another request.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

enum SlotState {
    InFlight,
    Done(Outcome),
}

struct Slot {
    seq: u64,
    expires: Instant,
    fingerprint: Uuid,
    state: SlotState,
}

#[derive(Default)]
struct State {
    slots: HashMap<Scope, Slot>,
    /// Insertion order, for eviction; entries whose `seq` no longer matches their slot
    /// are stale and skipped.
    order: VecDeque<(Scope, u64)>,
    next_seq: u64,
}

/// The per-instance memory of keys: bounded by capacity (oldest first out) and TTL.
/// Cheap to clone; clones share the memory.
#[derive(Clone)]
pub struct IdempotencyCache {
    state: Arc<Mutex<State>>,
    capacity: usize,
    ttl: Duration,
}

impl std::fmt::Debug for IdempotencyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("len", &self.len())
            .finish()
    }
}

impl IdempotencyCache {
    /// A cache of at most `capacity` keys, each honoured for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        IdempotencyCache {
            state: Arc::default(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys are remembered (in flight included).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `scope` is remembered (answered or in flight) and not expired.
    pub fn knows(&self, scope: &Scope) -> bool {
        let now = Instant::now();
        self.lock()
            .slots
            .get(scope)
            .is_some_and(|slot| slot.expires > now)
    }

    /// Looks `scope` up for a request with `fingerprint`, and claims it if it is new.
    pub fn claim(&self, scope: &Scope, fingerprint: Uuid) -> Claim {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(slot) = state.slots.get(scope)
            && slot.expires > now
        {
            return if slot.fingerprint != fingerprint {
                Claim::Mismatch
            } else {
                match &slot.state {
                    SlotState::InFlight => Claim::InProgress,
                    SlotState::Done(outcome) => Claim::Replay(outcome.clone()),
                }
            };
        }
        let seq = self.insert(
            &mut state,
            *scope,
            fingerprint,
            SlotState::InFlight,
            now + self.ttl,
        );
        Claim::Fresh(ClaimGuard {
            cache: self.clone(),
            scope: *scope,
            seq,
            done: false,
        })
    }

    /// Remembers an answer read from the log. An answer already known, or a request in
    /// flight for the same key (whose publish carries the same ids), is left alone.
    /// `answered_at` is when the answer was given, so the TTL counts from then.
    pub fn remember(
        &self,
        scope: Scope,
        fingerprint: Uuid,
        outcome: Outcome,
        answered_at: SystemTime,
    ) -> bool {
        let age = SystemTime::now()
            .duration_since(answered_at)
            .unwrap_or_default();
        let Some(remaining) = self.ttl.checked_sub(age) else {
            return false;
        };
        let now = Instant::now();
        let mut state = self.lock();
        if state
            .slots
            .get(&scope)
            .is_some_and(|slot| slot.expires > now)
        {
            return false;
        }
        self.insert(
            &mut state,
            scope,
            fingerprint,
            SlotState::Done(outcome),
            now + remaining,
        );
        true
    }

    fn insert(
        &self,
        state: &mut State,
        scope: Scope,
        fingerprint: Uuid,
        slot: SlotState,
        expires: Instant,
    ) -> u64 {
        let seq = state.next_seq;
        state.next_seq += 1;
        state.slots.insert(
            scope,
            Slot {
                seq,
                expires,
                fingerprint,
                state: slot,
            },
        );
        state.order.push_back((scope, seq));
        // Evict from the oldest end: stale queue entries, expired keys, and anything
        // beyond capacity.
        let now = Instant::now();
        while let Some((front, front_seq)) = state.order.front() {
            let current = state.slots.get(front).filter(|s| s.seq == *front_seq);
            let evict = match current {
                None => true,
                Some(slot) => slot.expires <= now || state.slots.len() > self.capacity,
            };
            if !evict {
                break;
            }
            if let Some((front, front_seq)) = state.order.pop_front()
                && state.slots.get(&front).is_some_and(|s| s.seq == front_seq)
            {
                state.slots.remove(&front);
            }
        }
        seq
    }
}

/// A claimed key; see [`Claim::Fresh`].
#[derive(Debug)]
pub struct ClaimGuard {
    cache: IdempotencyCache,
    scope: Scope,
    seq: u64,
    done: bool,
}

impl ClaimGuard {
    /// The claimed scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Records the answer: later requests with the key get it.
    pub fn complete(mut self, outcome: Outcome) {
        let mut state = self.cache.lock();
        if let Some(slot) = state.slots.get_mut(&self.scope)
            && slot.seq == self.seq
        {
            slot.state = SlotState::Done(outcome);
        }
        self.done = true;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.cache.lock();
        if state
            .slots
            .get(&self.scope)
            .is_some_and(|slot| slot.seq == self.seq)
        {
            state.slots.remove(&self.scope);
        }
    }
}

/// Reads the service's topics back into the cache: from `now - lookback` at start-up,
/// then following them. See the module docs.
pub struct LogFollower {
    kafka: KafkaSettings,
    registry: RegistryClient,
    topics: TopicsConfig,
    cache: IdempotencyCache,
    lookback: Duration,
    caught_up: watch::Sender<bool>,
    learned: prometheus::IntCounter,
}

/// How long a Kafka metadata or offsets request of the follower may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl LogFollower {
    /// A follower filling `cache`; `caught_up` becomes `true` once the start-up replay
    /// has reached the high watermarks that existed when it started.
    pub fn new(
        kafka: &KafkaSettings,
        registry: RegistryClient,
        topics: TopicsConfig,
        cache: IdempotencyCache,
        config: &IdempotencyConfig,
        caught_up: watch::Sender<bool>,
        learned: prometheus::IntCounter,
    ) -> Self {
        LogFollower {
            kafka: kafka.clone(),
            registry,
            topics,
            cache,
            lookback: config.lookback,
            caught_up,
            learned,
        }
    }

    /// Runs until `stop` turns `true`. Kafka being unreachable is retried with backoff
    /// (readiness stays false meanwhile); it never ends the service.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            if *stop.borrow() {
                return;
            }
            match self.start().await {
                Ok((consumer, targets)) => {
                    self.follow(consumer, targets, &mut stop).await;
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        "idempotency replay cannot start yet (retrying in {backoff:?}): {error}"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Creates the consumer and assigns every partition of the topics at the first
    /// offset at or after `now - lookback`; returns the high watermarks to catch up to.
    async fn start(&self) -> Result<(StreamConsumer, CatchUpTargets), BusError> {
        // A stream consumer that is only ever `assign()`ed (below): it never joins its
        // group and never commits (explicit commits, and none are made); every start
        // replays by time instead. The group id is unique per start and keeps the
        // service's prefix (`order-service-...`), which its ACLs grant.
        let mut options = GroupOptions::new(format!(
            "{}-idempotency-{}",
            self.kafka.client_id,
            Uuid::new_v4()
        ));
        options.tuning = client::tuning([
            // No statistics: they only feed the group lag gauge, and this consumer has
            // no group offsets to lag behind.
            ("statistics.interval.ms", "0".to_owned()),
        ]);
        let context = BusContext::new(
            format!("{}/idempotency", self.kafka.client_id),
            None,
            BusMetrics::default(),
        );
        let consumer = client::group_consumer(&self.kafka, &options, context)?;
        let topics: Vec<String> = self.topics.all().iter().map(|t| (*t).to_owned()).collect();
        let since_ms =
            now_ms().saturating_sub(i64::try_from(self.lookback.as_millis()).unwrap_or(i64::MAX));
        // Metadata, offsets by time and watermarks are blocking calls.
        let (consumer, assignment, targets) = tokio::task::spawn_blocking(move || {
            let client = &consumer;
            let mut by_time = TopicPartitionList::new();
            for topic in &topics {
                let metadata = client
                    .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                    .map_err(|e| BusError::Kafka {
                        operation: format!("metadata of {topic}"),
                        error: e,
                    })?;
                let Some(found) = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                else {
                    return Err(BusError::MissingTopic(topic.clone()));
                };
                for partition in found.partitions() {
                    by_time
                        .add_partition_offset(topic, partition.id(), Offset::Offset(since_ms))
                        .map_err(|e| BusError::Kafka {
                            operation: format!("offsets of {topic}"),
                            error: e,
                        })?;
                }
            }
            let starts = client
                .offsets_for_times(by_time, REQUEST_TIMEOUT)
                .map_err(|e| BusError::Kafka {
                    operation: "offsets for times".into(),
                    error: e,
                })?;
            let mut assignment = TopicPartitionList::new();
            let mut targets = HashMap::new();
            for element in starts.elements() {
                let (topic, partition) = (element.topic().to_owned(), element.partition());
                let (_, high) = client
                    .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)
                    .map_err(|e| BusError::Kafka {
                        operation: format!("watermarks of {topic}/{partition}"),
                        error: e,
                    })?;
                // No record at or after the time: start at the end.
                let start = match element.offset() {
                    Offset::Offset(offset) if offset >= 0 => offset,
                    _ => high,
                };
                assignment
                    .add_partition_offset(&topic, partition, Offset::Offset(start))
                    .map_err(|e| BusError::Kafka {
                        operation: format!("assign {topic}/{partition}"),
                        error: e,
                    })?;
                if start < high {
                    targets.insert((topic, partition), high);
                }
            }
            Ok((consumer, assignment, targets))
        })
        .await
        .map_err(|source| BusError::Task {
            operation: "idempotency replay",
            source,
        })??;
        consumer.assign(&assignment).map_err(|e| BusError::Kafka {
            operation: "assign".into(),
            error: e,
        })?;
        Ok((consumer, targets))
    }

    async fn follow(
        &self,
        consumer: StreamConsumer,
        mut targets: CatchUpTargets,
        stop: &mut watch::Receiver<bool>,
    ) {
        let started = Instant::now();
        let mut learned = 0usize;
        let mut announced = false;
        // Records can also be passed without being received (retention deleted them
        // meanwhile, and the consumer reset to the end): check positions now and then.
        let mut positions = tokio::time::interval(Duration::from_secs(1));
        loop {
            if !announced && targets.is_empty() {
                announced = true;
                tracing::info!(
                    keys = learned,
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "idempotency replay caught up; following the topics"
                );
                self.caught_up.send_replace(true);
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = positions.tick(), if !targets.is_empty() => {
                    if let Ok(assigned) = consumer.position() {
                        for element in assigned.elements() {
                            let key = (element.topic().to_owned(), element.partition());
                            if let (Offset::Offset(next), Some(high)) = (element.offset(), targets.get(&key))
                                && next >= *high
                            {
                                targets.remove(&key);
                            }
                        }
                    }
                }
                received = consumer.recv() => match received {
                    Ok(message) => {
                        let key = (message.topic().to_owned(), message.partition());
                        if targets.get(&key).is_some_and(|high| message.offset() + 1 >= *high) {
                            targets.remove(&key);
                        }
                        if self.learn(&message).await {
                            learned += 1;
                            self.learned.inc();
                        }
                    }
                    Err(error) => {
                        tracing::warn!("idempotency follower: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }

    /// Inserts the answer a keyed record stands for; `false` for records without a key
    /// or that cannot be read (logged: at worst a retry publishes the same ids again).
    async fn learn(&self, message: &BorrowedMessage<'_>) -> bool {
        let Some(headers) = message.headers() else {
            return false;
        };
        let mut key = None;
        let mut fingerprint = None;
        let mut scope = None;
        let uuid = |value: Option<&[u8]>| {
            value
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| Uuid::try_parse(v).ok())
        };
        for header in headers.iter() {
            match header.key {
                KEY_HEADER => key = header.value.and_then(|v| std::str::from_utf8(v).ok()),
                FINGERPRINT_HEADER => fingerprint = uuid(header.value),
                SCOPE_HEADER => scope = uuid(header.value).map(Scope),
                _ => {}
            }
        }
        let (Some(key), Some(fingerprint)) = (key, fingerprint) else {
            return false;
        };
        // Known already (typically: this instance published it): nothing to decode.
        if scope.is_some_and(|scope| self.cache.knows(&scope)) {
            return false;
        }
        let topic = message.topic();
        let value = message.payload();
        let decoded = if topic == self.topics.order_created {
            decode::<OrderCreated>(&self.registry, topic, value)
                .await
                .map(|(event, _)| {
                    let scope = Scope::create_order(&event.customer_id, key);
                    (scope, event.created_at, Outcome::Created(event))
                })
        } else if topic == self.topics.order_updated {
            decode::<OrderUpdated>(&self.registry, topic, value)
                .await
                .map(|(event, _)| {
                    let scope = Scope::change_order(&event.order_id, key);
                    (scope, event.updated_at, Outcome::Updated(event))
                })
        } else {
            decode::<StockAdjusted>(&self.registry, topic, value)
                .await
                .map(|(event, _)| {
                    let scope = Scope::adjust_stock(key);
                    (scope, event.adjusted_at, Outcome::Adjusted(event))
                })
        };
        match decoded {
            Ok((scope, at_ms, outcome)) => {
                let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
                self.cache.remember(scope, fingerprint, outcome, at)
            }
            Err(failure) => {
                tracing::warn!(
                    topic,
                    partition = message.partition(),
                    offset = message.offset(),
                    "idempotency follower skips a keyed record it cannot decode: {}",
                    failure.error
                );
                false
            }
        }
    }
}

/// Now, UTC milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::parse(k).unwrap()
    }

    fn adjusted(delta: i64) -> Outcome {
        Outcome::Adjusted(StockAdjusted {
            event_id: Uuid::from_u128(1),
            sku: "A".into(),
            delta,
            reason: "r".into(),
            adjusted_at: 1,
        })
    }

    #[test]
    fn ids_are_deterministic_and_scoped() {
        let a = order_id_for("c-1", &key("k"));
        assert_eq!(a, order_id_for("c-1", &key("k")));
        assert_ne!(a, order_id_for("c-2", &key("k")));
        assert_ne!(a, order_id_for("c-1", &key("k2")));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(created_event_id(&a), a);
        assert_ne!(
            change_event_id(&a, &key("k")),
            change_event_id(&a, &key("k2"))
        );
        assert_ne!(Scope::create_order("c", "k"), Scope::adjust_stock("k"));
    }

    #[test]
    fn scopes_differ_by_every_part() {
        let order = Uuid::from_u128(7);
        let scopes = [
            Scope::create_order("c", "k"),
            Scope::create_order("c", "k2"),
            Scope::create_order("c2", "k"),
            Scope::change_order(&order, "k"),
            Scope::adjust_stock("k"),
        ];
        for (i, a) in scopes.iter().enumerate() {
            for b in &scopes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(Scope::create_order("c", "k"), Scope::create_order("c", "k"));
    }

    #[test]
    fn claims_replays_and_mismatches() {
        let cache = IdempotencyCache::new(10, Duration::from_secs(60));
        let scope = Scope::adjust_stock("k");
        let Claim::Fresh(guard) = cache.claim(&scope, Uuid::from_u128(1)) else {
            panic!("fresh")
        };
        assert!(matches!(
            cache.claim(&scope, Uuid::from_u128(1)),
            Claim::InProgress
        ));
        assert!(matches!(
            cache.claim(&scope, Uuid::from_u128(2)),
            Claim::Mismatch
        ));
        guard.complete(adjusted(5));
        assert!(
            matches!(cache.claim(&scope, Uuid::from_u128(1)), Claim::Replay(o) if o == adjusted(5))
        );
        assert!(matches!(
            cache.claim(&scope, Uuid::from_u128(2)),
            Claim::Mismatch
        ));
    }

    #[test]
    fn a_failed_attempt_frees_the_key() {
        let cache = IdempotencyCache::new(10, Duration::from_secs(60));
        let scope = Scope::adjust_stock("k");
        let Claim::Fresh(guard) = cache.claim(&scope, Uuid::from_u128(1)) else {
            panic!("fresh")
        };
        drop(guard);
        assert!(cache.is_empty());
        assert!(matches!(
            cache.claim(&scope, Uuid::from_u128(2)),
            Claim::Fresh(_)
        ));
    }

    #[test]
    fn bounded_by_capacity_and_ttl() {
        let cache = IdempotencyCache::new(3, Duration::from_secs(60));
        for i in 0..5u128 {
            let scope = Scope::adjust_stock(&i.to_string());
            assert!(cache.remember(scope, Uuid::from_u128(i), adjusted(1), SystemTime::now()));
        }
        assert_eq!(cache.len(), 3);
        // The oldest went first.
        assert!(matches!(
            cache.claim(&Scope::adjust_stock("0"), Uuid::from_u128(9)),
            Claim::Fresh(_)
        ));
        assert!(matches!(
            cache.claim(&Scope::adjust_stock("4"), Uuid::from_u128(4)),
            Claim::Replay(_)
        ));
        // An answer older than the TTL is not remembered; a known one is not replaced.
        let old = SystemTime::now() - Duration::from_secs(120);
        assert!(!cache.remember(Scope::adjust_stock("x"), Uuid::nil(), adjusted(1), old));
        assert!(!cache.remember(
            Scope::adjust_stock("4"),
            Uuid::nil(),
            adjusted(2),
            SystemTime::now()
        ));
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        assert_eq!(
            fingerprint(Operation::AdjustStock, &("A", 1)),
            fingerprint(Operation::AdjustStock, &("A", 1))
        );
        assert_ne!(
            fingerprint(Operation::AdjustStock, &("A", 1)),
            fingerprint(Operation::AdjustStock, &("A", 2))
        );
        assert_ne!(
            fingerprint(Operation::AdjustStock, &("A", 1)),
            fingerprint(Operation::ChangeOrder, &("A", 1))
        );
    }
}
