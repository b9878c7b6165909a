//! The one place that builds Kafka clients.
//!
//! Every librdkafka client of the project (the typed [`Producer`](crate::Producer), the
//! consumer runner, payment's and the pipeline's transactional producers, the
//! pipeline's `assign()`ed inputs, ingress's idempotency index, readers, admin clients)
//! is created by a function of this module, from one [`KafkaSettings`], with the one
//! [`BusContext`]. That is what makes a security setting, a client config file or a
//! protected setting apply to all of them alike (Materialize's `kafka-util` does the
//! same): a service crate never sees an rdkafka `ClientConfig`.
//!
//! Each constructor applies, in this order:
//! 1. the connection: bootstrap, client id, security and credentials
//!    ([`KafkaSettings::resolved`], which also reads the client config file and refuses
//!    [`crate::config::PROTECTED_KEYS`] in `extra`);
//! 2. the caller's `tuning` (non-default choices such as `fetch.wait.max.ms`, each
//!    commented where the caller sets it; protected keys are refused here too);
//! 3. `extra` from the configuration;
//! 4. the settings the kind of client depends on for its guarantees (idempotence,
//!    `acks=all`, `isolation.level`, `transactional.id`, commit mode), last, so nothing
//!    above can change them.
//!
//! Statistics are off unless the caller asks for them: only group consumers (lag
//! gauge) and clients with a [`StatsHook`](crate::context::StatsHook) use them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{BaseProducer, FutureProducer};

use crate::config::{KafkaSettings, PROTECTED_KEYS};
use crate::context::BusContext;
use crate::error::BusError;

/// Non-default librdkafka settings a caller chose, applied before `extra`.
pub type Tuning = BTreeMap<String, String>;

/// Builds a [`Tuning`] from pairs.
pub fn tuning<const N: usize>(pairs: [(&str, String); N]) -> Tuning {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The connection settings, the caller's tuning and `extra`, for a client named
/// `<client_id><suffix>`.
fn base(
    settings: &KafkaSettings,
    suffix: &str,
    tuning: &Tuning,
    statistics: bool,
) -> Result<ClientConfig, BusError> {
    let settings = settings.resolved()?;
    for key in tuning.keys() {
        if PROTECTED_KEYS.contains(&key.as_str()) {
            return Err(BusError::Config(format!(
                "client tuning sets `{key}`, which only eventbus's constructors may set"
            )));
        }
    }
    let mut config = ClientConfig::new();
    for (key, value) in settings.connection_properties() {
        config.set(key, value);
    }
    config.set("client.id", format!("{}{suffix}", settings.client_id));
    let interval = if statistics {
        settings.statistics_interval_ms
    } else {
        0
    };
    config.set("statistics.interval.ms", interval.to_string());
    for (key, value) in tuning.iter().chain(settings.extra.iter()) {
        config.set(key, value);
    }
    Ok(config)
}

/// `isolation.level`: `read_committed` sees only committed transactions.
fn isolation(read_committed: bool) -> &'static str {
    if read_committed {
        "read_committed"
    } else {
        "read_uncommitted"
    }
}

fn guarantee(config: &mut ClientConfig, pairs: &[(&str, &str)]) {
    for (key, value) in pairs {
        config.set(*key, *value);
    }
}

/// The settings of an idempotent producer (the typed [`Producer`](crate::Producer)).
#[derive(Clone, Debug, Default)]
pub struct ProducerOptions {
    /// Non-default choices (linger, compression, timeouts).
    pub tuning: Tuning,
}

/// An idempotent, `acks=all` producer whose deliveries are futures.
pub fn producer(
    settings: &KafkaSettings,
    options: &ProducerOptions,
    context: BusContext,
) -> Result<FutureProducer<BusContext>, BusError> {
    let mut config = base(settings, "", &options.tuning, false)?;
    // Nothing acknowledged may be lost or doubled by a retry: the broker dedupes
    // retried batches (idempotence) and a write counts once every in-sync replica has it.
    guarantee(
        &mut config,
        &[("enable.idempotence", "true"), ("acks", "all")],
    );
    config
        .create_with_context(context)
        .map_err(|e| BusError::kafka("create producer", e))
}

/// The settings of a transactional producer.
#[derive(Clone, Debug)]
pub struct TransactionalOptions {
    /// `transactional.id`: stable per instance, so a restart fences its predecessor.
    pub transactional_id: String,
    /// `transaction.timeout.ms` (also the `delivery.timeout.ms`, which librdkafka
    /// requires to be no larger).
    pub transaction_timeout: Duration,
    /// How long one transactional call (init, commit, abort) may block.
    pub call_timeout: Duration,
    /// Non-default choices (linger, compression, partitioner, retry backoff).
    pub tuning: Tuning,
}

/// A transactional producer (not initialised): see
/// [`TransactionalProducer`](crate::transaction::TransactionalProducer), which wraps it.
pub fn transactional_producer(
    settings: &KafkaSettings,
    options: &TransactionalOptions,
    context: BusContext,
) -> Result<BaseProducer<BusContext>, BusError> {
    let mut config = base(settings, "-txn", &options.tuning, false)?;
    let timeout_ms = options.transaction_timeout.as_millis().to_string();
    config
        .set("transaction.timeout.ms", &timeout_ms)
        .set("delivery.timeout.ms", &timeout_ms);
    guarantee(
        &mut config,
        &[
            ("transactional.id", options.transactional_id.as_str()),
            ("enable.idempotence", "true"),
            ("acks", "all"),
        ],
    );
    config
        .create_with_context(context)
        .map_err(|e| BusError::kafka("create transactional producer", e))
}

/// The settings of a reader: a consumer that is `assign()`ed partitions and offsets
/// explicitly, never joins a group and never commits.
#[derive(Clone, Debug, Default)]
pub struct ReaderOptions {
    /// `isolation.level=read_committed`: see only committed transactions.
    pub read_committed: bool,
    /// `enable.partition.eof`: report the end of each partition (bounded reads).
    pub partition_eof: bool,
    /// The `group.id` librdkafka's assignment needs; default `<client_id>-reader-<uuid>`
    /// (the service's own group prefix, so its ACLs cover it). Never joined.
    pub group_id: Option<String>,
    /// Turn statistics on (for a [`StatsHook`](crate::context::StatsHook)).
    pub statistics: bool,
    /// Non-default choices (fetch sizes and waits).
    pub tuning: Tuning,
}

/// A reader (`BaseConsumer`) for `assign()` and explicit offsets; also the client for
/// metadata and watermarks.
pub fn reader(
    settings: &KafkaSettings,
    options: &ReaderOptions,
    context: BusContext,
) -> Result<BaseConsumer<BusContext>, BusError> {
    let mut config = base(settings, "-reader", &options.tuning, options.statistics)?;
    let group = options.group_id.clone().unwrap_or_else(|| {
        format!(
            "{}-reader-{}",
            settings.client_id,
            uuid::Uuid::new_v4().simple()
        )
    });
    config.set("group.id", group).set(
        "enable.partition.eof",
        if options.partition_eof {
            "true"
        } else {
            "false"
        },
    );
    guarantee(
        &mut config,
        &[
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", isolation(options.read_committed)),
        ],
    );
    config
        .create_with_context(context)
        .map_err(|e| BusError::kafka("create reader", e))
}

/// How a group consumer commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commits {
    /// Only explicit commits (or offsets sent to a transaction).
    Explicit,
    /// Offsets the caller *stored* after finishing a record are committed in the
    /// background every interval, on rebalance and at close; nothing merely received is.
    StoredEvery(Duration),
}

/// The settings of a consumer-group member.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id` (static membership), if any.
    pub instance_id: Option<String>,
    /// `isolation.level=read_committed`.
    pub read_committed: bool,
    /// How offsets are committed.
    pub commit: Commits,
    /// Non-default choices (offset reset, session and poll timeouts, fetch waits).
    pub tuning: Tuning,
}

impl GroupOptions {
    /// A read_committed member of `group_id` with explicit commits.
    pub fn new(group_id: impl Into<String>) -> Self {
        GroupOptions {
            group_id: group_id.into(),
            instance_id: None,
            read_committed: true,
            commit: Commits::Explicit,
            tuning: Tuning::new(),
        }
    }
}

/// A consumer-group member that is polled as a stream.
pub fn group_consumer(
    settings: &KafkaSettings,
    options: &GroupOptions,
    context: BusContext,
) -> Result<StreamConsumer<BusContext>, BusError> {
    let mut config = base(settings, "", &options.tuning, true)?;
    config.set("group.id", &options.group_id);
    if let Some(instance) = &options.instance_id {
        config.set("group.instance.id", instance);
    }
    let interval;
    let auto_commit = match options.commit {
        Commits::Explicit => "false",
        Commits::StoredEvery(every) => {
            interval = every.as_millis().to_string();
            config.set("auto.commit.interval.ms", &interval);
            "true"
        }
    };
    guarantee(
        &mut config,
        &[
            ("enable.auto.commit", auto_commit),
            // Never commit what was merely received: the caller stores an offset once
            // the record's work is durable (or sends offsets to its transaction).
            ("enable.auto.offset.store", "false"),
            ("isolation.level", isolation(options.read_committed)),
        ],
    );
    config
        .create_with_context(context)
        .map_err(|e| BusError::kafka("create group consumer", e))
}

/// An admin client (topics, configs, partitions).
pub fn admin(
    settings: &KafkaSettings,
    context: BusContext,
) -> Result<AdminClient<BusContext>, BusError> {
    base(settings, "-admin", &Tuning::new(), false)?
        .create_with_context(context)
        .map_err(|e| BusError::kafka("create admin client", e))
}

/// The number of partitions of `topic`, from the cluster's metadata; a missing topic is
/// a [`Fault::Setup`](crate::Fault::Setup) error that names it. Blocking.
pub fn partition_count<C: Consumer<BusContext>>(
    client: &C,
    topic: &str,
    timeout: Duration,
) -> Result<i32, BusError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| BusError::kafka(format!("metadata of {topic}"), e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(BusError::MissingTopic(topic.to_owned()));
    };
    if let Some(error) = t.error() {
        use rdkafka::types::RDKafkaRespErr as E;
        if matches!(
            error,
            E::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART | E::RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC
        ) {
            return Err(BusError::MissingTopic(topic.to_owned()));
        }
        return Err(BusError::kafka(
            format!("metadata of {topic}"),
            rdkafka::error::KafkaError::MetadataFetch(error.into()),
        ));
    }
    if t.partitions().is_empty() {
        return Err(BusError::MissingTopic(topic.to_owned()));
    }
    Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusMetrics;

    fn context() -> BusContext {
        BusContext::new("test", None, BusMetrics::default())
    }

    #[test]
    fn guarantees_win_over_tuning_and_extra_is_checked() {
        let mut settings = KafkaSettings::default();
        settings
            .extra
            .insert("socket.keepalive.enable".into(), "true".into());
        // A protected key in the caller's tuning is refused, not silently overridden.
        let options = ProducerOptions {
            tuning: tuning([("acks", "1".to_owned())]),
        };
        let e = producer(&settings, &options, context()).err().unwrap();
        assert!(e.to_string().contains("`acks`"), "{e}");
        // And in extra.
        settings
            .extra
            .insert("enable.auto.commit".into(), "true".into());
        let e = group_consumer(&settings, &GroupOptions::new("g"), context())
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot be overridden"), "{e}");
    }

    #[tokio::test]
    async fn every_kind_of_client_is_built_from_the_same_settings() {
        let settings = KafkaSettings::default();
        let _producer = producer(&settings, &ProducerOptions::default(), context()).unwrap();
        let _reader = reader(&settings, &ReaderOptions::default(), context()).unwrap();
        let _group = group_consumer(&settings, &GroupOptions::new("g"), context()).unwrap();
        let _admin = admin(&settings, context()).unwrap();
        transactional_producer(
            &settings,
            &TransactionalOptions {
                transactional_id: "t".into(),
                transaction_timeout: Duration::from_secs(10),
                call_timeout: Duration::from_secs(5),
                tuning: Tuning::new(),
            },
            context(),
        )
        .unwrap();
    }
}
