//! The input consumer of order.created: how it is made and which of librdkafka's
//! defaults it changes, and why. Its offsets are committed only through the batch's
//! transaction ([`crate::transaction`]), never by the consumer itself.

use eventbus::client::{self, Commits, GroupOptions, Tuning};
use eventbus::context::BusContext;
use eventbus::kafka::StreamConsumer;

use crate::config::{Config, ConsumerSettings};
use crate::error::PaymentError;
use crate::metrics::PaymentMetrics;

/// The group consumer of order.created.
pub type OrderConsumer = StreamConsumer;

/// Creates the input consumer (not subscribed): a read_committed member of the
/// service's group with explicit commits (eventbus's
/// [`client::group_consumer`]).
///
/// What eventbus sets for it, and why payment needs it:
/// - `enable.auto.commit=false` ([`Commits::Explicit`]): offsets are committed only by
///   the batch's transaction; a background commit would commit records whose outcomes
///   are not written yet; `enable.auto.offset.store=false`: nothing is ever committed
///   from the consumer, so nothing should be stored either;
/// - `isolation.level=read_committed`: an order from an aborted transaction (a
///   transactional producer upstream, a redrive tool) never happened and must not be
///   charged; it also makes librdkafka fetch committed offsets with `require_stable`,
///   which [`crate::settled_index`] relies on;
/// - `group.instance.id` (static membership, on by default): a restarted instance gets
///   its partitions back without a rebalance.
///
/// Payment's own non-default settings are in [`consumer_tuning`].
pub fn create_consumer(
    config: &Config,
    metrics: &PaymentMetrics,
) -> Result<OrderConsumer, PaymentError> {
    let kafka = &config.kafka;
    let group = config.group_id();
    let options = GroupOptions {
        group_id: group.clone(),
        instance_id: config
            .consumer
            .static_membership
            .then(|| config.transactional_id()),
        read_committed: true,
        commit: Commits::Explicit,
        tuning: consumer_tuning(&config.consumer),
    };
    // The group labels the rebalance counter. The lag gauge is set by
    // `eventbus::lag::track_committed`, not by librdkafka's statistics, which are off
    // (see consumer_tuning).
    let context = BusContext::new(
        format!("{}/{group}", kafka.client_id),
        Some(group.clone()),
        metrics.bus.clone(),
    );
    Ok(client::group_consumer(kafka, &options, context)?)
}

/// The input consumer's settings that differ from librdkafka's defaults, and why.
pub fn consumer_tuning(settings: &ConsumerSettings) -> Tuning {
    client::tuning([
        // 30 s (default 45 s): above a coordinator failover, so that a broker kill
        // does not expire the static member's session locally (see
        // ConsumerSettings::session_timeout); below the default, so that a replica gone
        // for good hands its partitions on sooner.
        (
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        ),
        // 5 minutes (librdkafka's default, configurable): far above a batch's duration.
        (
            "max.poll.interval.ms",
            settings.max_poll_interval.as_millis().to_string(),
        ),
        // A group without committed offsets (the first start) must settle the orders
        // that are already there, not skip them.
        ("auto.offset.reset", "earliest".to_owned()),
        // librdkafka's lag statistics do not see offsets committed through a producer
        // transaction (its lag would only grow); the service computes the lag itself
        // (`eventbus::lag::track_committed`), so statistics would feed nothing.
        ("statistics.interval.ms", "0".to_owned()),
    ])
}
