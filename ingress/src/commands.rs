//! The use cases both APIs share: validate, check the idempotency key, build the event,
//! publish it within the deadline, answer.
//!
//! The REST and gRPC layers only translate: wire format → draft, [`Answer`] /
//! [`CommandError`] → response. Everything that decides something lives here once, so
//! the two APIs cannot drift in behaviour, only in spelling.
//!
//! # Durability
//!
//! An answer is given only after `Producer::publish_with` returned, which is after the
//! brokers acknowledged with `acks=all` (every in-sync replica, at least
//! `min.insync.replicas`). The publish runs under a deadline
//! ([`crate::config::PublishConfig::deadline`]); when it passes, or Kafka reports a
//! retriable error, the client gets [`CommandError::Unavailable`] (503 + `Retry-After` /
//! UNAVAILABLE) and may retry with the same idempotency key. A record that missed the
//! deadline is still being sent by librdkafka: its key stays claimed until librdkafka
//! reports its fate, so a retry meanwhile gets 409 / ABORTED (still in progress), and
//! afterwards the first answer (written) or a new publish of the same ids (not written);
//! see [`crate::idempotency`]. Errors that retrying cannot fix (a topic missing, a
//! schema not registered) are [`CommandError::Internal`]: logged at ERROR with the cause,
//! answered without it.
//!
//! # Order changes
//!
//! `order.updated` needs a revision that grows per order, and the currency of the order.
//! Ingress keeps no order state, so:
//! * the **revision** is the number of seconds since 2025-01-01T00:00:00Z, made strictly
//!   increasing within the process ([`RevisionClock`]). It fits the event's `int` until
//!   2093, and later changes get higher revisions, so the pipeline (which applies a
//!   change only if its revision is higher than the last one applied) keeps the last
//!   change accepted. Two instances changing one order within the same second may tie
//!   or invert by clock skew; a client that needs strict ordering sends its changes to
//!   one instance one after the other.
//! * the **currency** is taken from the request when given (it must be the order's),
//!   else read from the pipeline's order view: a change of an order the view does not
//!   know is 404, and while the pipeline is down it is 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use eventbus::headers::TraceParent;
use eventbus::{BusError, Fault, Producer, PublishOptions};
use schemas::{Event, OrderChangeKind, OrderCreated, OrderUpdated, StockAdjusted, Violations};
use uuid::Uuid;

use crate::config::{PublishConfig, TopicsConfig};
use crate::idempotency::{
    self, Claim, ClaimGuard, FINGERPRINT_HEADER, IdempotencyCache, KEY_HEADER, Operation, Outcome,
    SCOPE_HEADER, Scope,
};
use crate::metrics::Metrics;
use crate::recent::{
    READ_YOUR_WRITES_POLL, READ_YOUR_WRITES_WAIT, RECENT_ORDERS, RECENT_ORDERS_TTL, RecentOrders,
};
use crate::validation::{
    AdjustmentDraft, ChangeDraft, ChangeKind, IdempotencyKey, OrderDraft, validate_adjustment,
    validate_change, validate_order, validate_order_id,
};
use crate::views::{OrderStatusView, ViewsClient, ViewsError};

/// Which API a request came through; recorded in order.created's `channel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The REST API.
    Rest,
    /// The gRPC API.
    Grpc,
}

impl Channel {
    /// The value of order.created's `channel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Rest => "REST",
            Channel::Grpc => "GRPC",
        }
    }
}

/// What a request brings besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The API.
    pub channel: Channel,
    /// The idempotency key, if the client sent one (already validated).
    pub key: Option<IdempotencyKey>,
    /// The caller's W3C `traceparent`, continued into the event's headers.
    pub traceparent: Option<String>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// The published event (or, for a replay, the event published the first time).
    pub event: T,
    /// Whether this answer is a replay of an earlier request with the same key.
    pub replayed: bool,
}

/// Why a request was not answered with success.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request breaks the rules; every violation is listed. Nothing was published.
    #[error("{0}")]
    Invalid(Violations),
    /// The idempotency key was used before with a different request.
    #[error("idempotency-key reused with a different request")]
    KeyReused,
    /// A request with the same idempotency key is being processed right now.
    #[error("a request with this idempotency key is still being processed")]
    InProgress,
    /// The thing asked for does not exist (in the pipeline's view).
    #[error("{0}")]
    NotFound(String),
    /// A dependency (Kafka, the pipeline) could not answer in time; retry later with the
    /// same key.
    #[error("{detail}")]
    Unavailable {
        /// What is unavailable, for the client.
        detail: String,
        /// When to retry.
        retry_after: Duration,
        /// What failed, when there is more than a deadline that passed (logged, never sent).
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A dependency answered something this service cannot use (a bad gateway).
    #[error("{detail}")]
    BadUpstream {
        /// What to tell the client.
        detail: String,
        /// What the dependency answered (logged, never sent).
        #[source]
        cause: ViewsError,
    },
    /// A bug or a setup problem; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[source] BusError),
}

/// Revisions for `order.updated`: seconds since 2025-01-01T00:00:00Z, strictly
/// increasing within the process. See the module docs.
#[derive(Debug, Default)]
pub struct RevisionClock {
    last: AtomicI32,
}

/// 2025-01-01T00:00:00Z in milliseconds since the Unix epoch.
pub const REVISION_EPOCH_MS: i64 = 1_735_689_600_000;

impl RevisionClock {
    /// The next revision at wall-clock time `now_ms`: at least 1, greater than any
    /// revision this clock gave before.
    pub fn next(&self, now_ms: i64) -> i32 {
        let seconds =
            (now_ms.saturating_sub(REVISION_EPOCH_MS) / 1000).clamp(1, i64::from(i32::MAX));
        let now = i32::try_from(seconds).unwrap_or(i32::MAX);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

/// The use cases. Shared by the REST and gRPC servers behind an `Arc`.
#[derive(Debug)]
pub struct Commands {
    producer: Producer,
    topics: TopicsConfig,
    cache: IdempotencyCache,
    views: ViewsClient,
    publish: PublishConfig,
    revisions: RevisionClock,
    metrics: Metrics,
    recent: RecentOrders,
}

impl Commands {
    /// The use cases over these parts.
    pub fn new(
        producer: Producer,
        topics: TopicsConfig,
        cache: IdempotencyCache,
        views: ViewsClient,
        publish: PublishConfig,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Commands {
            producer,
            topics,
            cache,
            views,
            publish,
            revisions: RevisionClock::default(),
            metrics,
            recent: RecentOrders::new(RECENT_ORDERS, RECENT_ORDERS_TTL),
        })
    }

    /// The producer (for the shutdown flush).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The `Retry-After` of a 503.
    pub fn retry_after(&self) -> Duration {
        self.publish.retry_after.max(Duration::from_secs(1))
    }

    /// Places an order: publishes order.created.
    pub async fn create_order(
        &self,
        draft: OrderDraft,
        ctx: &RequestContext,
    ) -> Result<Answer<OrderCreated>, CommandError> {
        let order = validate_order(draft).map_err(CommandError::Invalid)?;
        let claim = match &ctx.key {
            Some(key) => {
                let scope = Scope::create_order(&order.customer_id, key.as_str());
                let fingerprint = idempotency::fingerprint(Operation::CreateOrder, &order);
                match self.claim(&scope, fingerprint)? {
                    Claimed::Replay(Outcome::Created(event)) => return Ok(replay(event)),
                    Claimed::Replay(_) => return Err(CommandError::KeyReused),
                    Claimed::Fresh(guard) => Some((guard, key, fingerprint)),
                }
            }
            None => None,
        };
        let order_id = match &claim {
            Some((_, key, _)) => idempotency::order_id_for(&order.customer_id, key),
            None => Uuid::new_v4(),
        };
        let event = OrderCreated {
            event_id: idempotency::created_event_id(&order_id),
            order_id,
            customer_id: order.customer_id,
            currency: order.currency,
            lines: order.lines,
            total_minor: order.total_minor,
            created_at: idempotency::now_ms(),
            channel: Some(ctx.channel.as_str().to_owned()),
        };
        let topic = self.topics.order_created.clone();
        let answer = self
            .publish(event, &topic, ctx, claim, Outcome::Created)
            .await?;
        self.recent.accepted(order_id);
        Ok(answer)
    }

    /// Replaces an order's lines or cancels it: publishes order.updated.
    pub async fn change_order(
        &self,
        draft: ChangeDraft,
        ctx: &RequestContext,
    ) -> Result<Answer<OrderUpdated>, CommandError> {
        let change = validate_change(draft).map_err(CommandError::Invalid)?;
        let claim = match &ctx.key {
            Some(key) => {
                let scope = Scope::change_order(&change.order_id, key.as_str());
                let fingerprint = idempotency::fingerprint(Operation::ChangeOrder, &change);
                match self.claim(&scope, fingerprint)? {
                    Claimed::Replay(Outcome::Updated(event)) => return Ok(replay(event)),
                    Claimed::Replay(_) => return Err(CommandError::KeyReused),
                    Claimed::Fresh(guard) => Some((guard, key, fingerprint)),
                }
            }
            None => None,
        };
        let currency = match change.currency {
            Some(currency) => currency,
            None => match self.order_view(change.order_id).await {
                Ok(Some(view)) => view.currency,
                Ok(None) => return Err(not_found(&change.order_id)),
                Err(error) => return Err(self.views_error(error)),
            },
        };
        let event_id = match &claim {
            Some((_, key, _)) => idempotency::change_event_id(&change.order_id, key),
            None => Uuid::new_v4(),
        };
        let now = idempotency::now_ms();
        let revision = self.revisions.next(now);
        let event = match change.kind {
            ChangeKind::Lines { lines, total_minor } => OrderUpdated {
                event_id,
                order_id: change.order_id,
                revision,
                kind: OrderChangeKind::LinesChanged,
                lines,
                currency,
                total_minor,
                updated_at: now,
            },
            ChangeKind::Cancel => {
                OrderUpdated::cancelled(event_id, change.order_id, revision, currency, now)
            }
        };
        let topic = self.topics.order_updated.clone();
        self.publish(event, &topic, ctx, claim, Outcome::Updated)
            .await
    }

    /// Adjusts a SKU's stock on hand: publishes stock.adjusted.
    pub async fn adjust_stock(
        &self,
        draft: AdjustmentDraft,
        ctx: &RequestContext,
    ) -> Result<Answer<StockAdjusted>, CommandError> {
        let adjustment = validate_adjustment(draft).map_err(CommandError::Invalid)?;
        let claim = match &ctx.key {
            Some(key) => {
                let scope = Scope::adjust_stock(key.as_str());
                let fingerprint = idempotency::fingerprint(Operation::AdjustStock, &adjustment);
                match self.claim(&scope, fingerprint)? {
                    Claimed::Replay(Outcome::Adjusted(event)) => return Ok(replay(event)),
                    Claimed::Replay(_) => return Err(CommandError::KeyReused),
                    Claimed::Fresh(guard) => Some((guard, key, fingerprint)),
                }
            }
            None => None,
        };
        let event_id = match &claim {
            Some((_, key, _)) => idempotency::adjustment_event_id(key),
            None => Uuid::new_v4(),
        };
        let event = StockAdjusted {
            event_id,
            sku: adjustment.sku,
            delta: adjustment.delta,
            reason: adjustment.reason,
            adjusted_at: idempotency::now_ms(),
        };
        let topic = self.topics.stock_adjusted.clone();
        self.publish(event, &topic, ctx, claim, Outcome::Adjusted)
            .await
    }

    /// Reads an order's status from the pipeline's view. An order this process accepted
    /// lately that the view does not hold yet is waited for, up to
    /// [`READ_YOUR_WRITES_WAIT`] (read-your-writes, see [`crate::recent`]); so is the
    /// order whose currency a change without one looks up.
    pub async fn order_status(&self, order_id: &str) -> Result<OrderStatusView, CommandError> {
        let mut violations = Violations::default();
        let Some(id) = validate_order_id(&mut violations, "order_id", Some(order_id)) else {
            return Err(CommandError::Invalid(violations));
        };
        match self.order_view(id).await {
            Ok(Some(view)) => Ok(view),
            Ok(None) => Err(not_found(&id)),
            Err(error) => Err(self.views_error(error)),
        }
    }

    /// The view's order; for an order this process accepted lately and the view does
    /// not hold yet, asked again until it does or [`READ_YOUR_WRITES_WAIT`] passed.
    async fn order_view(&self, id: Uuid) -> Result<Option<OrderStatusView>, ViewsError> {
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
        loop {
            match self.views.order(id).await? {
                Some(view) => return Ok(Some(view)),
                None if tokio::time::Instant::now() < deadline && self.recent.contains(&id) => {
                    tokio::time::sleep(READ_YOUR_WRITES_POLL).await;
                }
                None => return Ok(None),
            }
        }
    }

    fn claim(&self, scope: &Scope, fingerprint: Uuid) -> Result<Claimed, CommandError> {
        let (result, label) = match self.cache.claim(scope, fingerprint) {
            Claim::Fresh(guard) => (Ok(Claimed::Fresh(guard)), "fresh"),
            Claim::Replay(outcome) => (Ok(Claimed::Replay(outcome)), "replayed"),
            Claim::InProgress => (Err(CommandError::InProgress), "in_progress"),
            Claim::Mismatch => (Err(CommandError::KeyReused), "mismatch"),
        };
        self.metrics.idempotency.with_label_values(&[label]).inc();
        result
    }

    /// Publishes `event` to `topic` within the deadline; on success records the answer
    /// under the claimed key.
    async fn publish<E: Event + Clone + Send + Sync + 'static>(
        &self,
        event: E,
        topic: &str,
        ctx: &RequestContext,
        claim: Option<(ClaimGuard, &IdempotencyKey, Uuid)>,
        outcome: fn(E) -> Outcome,
    ) -> Result<Answer<E>, CommandError> {
        let mut options = PublishOptions::to_topic(topic);
        // The caller's trace continued (this service's span as its child), or a new
        // one: decided here so that the log line below names the trace id the record
        // carries.
        let trace = TraceParent::next_hop(ctx.traceparent.as_deref());
        options.traceparent = Some(trace);
        let guard = match claim {
            Some((guard, key, fingerprint)) => {
                options = options
                    .header(KEY_HEADER, key.as_str())
                    .header(FINGERPRINT_HEADER, fingerprint.to_string())
                    .header(SCOPE_HEADER, guard.scope().id().to_string());
                Some(guard)
            }
            None => None,
        };
        let started = std::time::Instant::now();
        // The publish runs on a task of its own, which also settles the key's claim once
        // librdkafka reports the record's fate, so the claim outlives the deadline: a
        // client told to retry (503) meets 409 while the first record may still be
        // written, and the first answer afterwards, instead of publishing the event a
        // second time. On an error the guard is dropped there and the key is free again.
        let deadline = self.publish.deadline;
        let producer = self.producer.clone();
        let published = event.clone();
        let mut publishing = tokio::spawn(async move {
            let result = producer.publish_with(&published, options).await;
            if let Ok(delivery) = &result {
                if started.elapsed() > deadline {
                    tracing::info!(
                        event = E::TYPE,
                        key = %published.key(),
                        event_id = %published.event_id(),
                        partition = delivery.partition,
                        offset = delivery.offset,
                        "accepted after the client was told to retry; a retry with the same key gets this answer"
                    );
                }
                if let Some(guard) = guard {
                    guard.complete(outcome(published));
                }
            }
            result
        });
        let result = match tokio::time::timeout(deadline, &mut publishing).await {
            Ok(Ok(published)) => Ok(published),
            Ok(Err(panicked)) => {
                return Err(CommandError::Unavailable {
                    detail: "the event could not be written to Kafka; retry with the same idempotency key"
                        .to_owned(),
                    retry_after: self.retry_after(),
                    cause: Some(Box::new(panicked)),
                });
            }
            Err(elapsed) => Err(elapsed),
        };
        let label = match &result {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "error",
            Err(_) => "timeout",
        };
        self.metrics
            .publish_duration
            .with_label_values(&[E::TYPE, label])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(delivery)) => {
                // One line per accepted request, with the fields the log store
                // correlates on (order events are keyed by their order id).
                let order_id = E::TYPE.starts_with("order.").then(|| event.key());
                tracing::info!(
                    event = E::TYPE,
                    order_id = order_id.as_deref(),
                    key = %event.key(),
                    trace_id = %trace.trace_id_hex(),
                    span_id = %trace.span_id_hex(),
                    topic = %delivery.topic,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    event_id = %event.event_id(),
                    "accepted"
                );
                Ok(Answer {
                    event,
                    replayed: false,
                })
            }
            Ok(Err(error)) => Err(self.bus_error(topic, error)),
            Err(_) => {
                tracing::warn!(topic, deadline = ?self.publish.deadline, "publish not acknowledged within the deadline");
                Err(CommandError::Unavailable {
                    detail: format!(
                        "Kafka did not acknowledge the event within {} ms; retry with the same idempotency key",
                        self.publish.deadline.as_millis()
                    ),
                    retry_after: self.retry_after(),
                    cause: None,
                })
            }
        }
    }

    fn bus_error(&self, topic: &str, error: BusError) -> CommandError {
        if let BusError::Invalid(violations) = error {
            // The API's rules are the events' rules, so this is a drift between the two
            // (a bug), but the answer is still the client's violations.
            tracing::warn!(
                topic,
                "event refused by its own validation after the request passed: {violations}"
            );
            return CommandError::Invalid(violations);
        }
        if error.is_retriable() || error.fault() == Fault::Infrastructure {
            tracing::warn!(
                topic,
                fault = error.fault().as_str(),
                "publish failed, client may retry: {error}"
            );
            return CommandError::Unavailable {
                detail:
                    "the event could not be written to Kafka; retry with the same idempotency key"
                        .to_owned(),
                retry_after: self.retry_after(),
                cause: Some(Box::new(error)),
            };
        }
        match error.fault() {
            Fault::Setup => tracing::error!(topic, fault = "setup", "publish failed: {error}"),
            _ => tracing::warn!(
                topic,
                fault = error.fault().as_str(),
                "publish failed: {error}"
            ),
        }
        CommandError::Internal(error)
    }

    fn views_error(&self, error: ViewsError) -> CommandError {
        if error.is_retriable() {
            tracing::debug!("{error}");
            CommandError::Unavailable {
                detail: "the order views of the pipeline are not available; retry later".to_owned(),
                retry_after: self.retry_after(),
                cause: Some(Box::new(error)),
            }
        } else {
            tracing::warn!("views answered something unusable: {error}");
            CommandError::BadUpstream {
                detail: "the pipeline's views gave an unusable answer".to_owned(),
                cause: error,
            }
        }
    }
}

enum Claimed {
    Fresh(ClaimGuard),
    Replay(Outcome),
}

fn replay<T>(event: T) -> Answer<T> {
    Answer {
        event,
        replayed: true,
    }
}

fn not_found(order_id: &Uuid) -> CommandError {
    CommandError::NotFound(format!(
        "order {order_id} is not in the pipeline's order view"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_grow_and_fit() {
        let clock = RevisionClock::default();
        let t = REVISION_EPOCH_MS + 10_000;
        assert_eq!(clock.next(t), 10);
        // Same second, or a clock step back: still increasing.
        assert_eq!(clock.next(t), 11);
        assert_eq!(clock.next(t - 5_000), 12);
        assert_eq!(clock.next(t + 60_000), 70);
        // 2093-01-01 still fits an i32.
        let late = RevisionClock::default().next(3_881_174_400_000);
        assert!(late > 2_000_000_000, "{late}");
        // Before the epoch (a broken clock): at least 1.
        assert_eq!(RevisionClock::default().next(0), 1);
    }
}
