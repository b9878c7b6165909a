//! The librdkafka types a service handles without building a client: messages,
//! offsets, partition lists, errors, statistics, and the client types (with the shared
//! [`BusContext`]) that [`crate::client`]'s constructors return.
//!
//! Service crates import these from here and have no `rdkafka` dependency of their own,
//! so [`crate::client`] stays the only place that can configure a Kafka client (a
//! workspace test fails if a service crate depends on `rdkafka`).

use crate::context::BusContext;

pub use rdkafka::Timestamp;
pub use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata, Rebalance};
pub use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
pub use rdkafka::message::{
    BorrowedHeaders, BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage, ToBytes,
};
pub use rdkafka::producer::{BaseRecord, Producer as ProducerClient};
pub use rdkafka::statistics::Statistics;
pub use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
pub use rdkafka::util::Timeout;

/// A polled consumer (readers, metadata), as [`crate::client::reader`] returns it.
pub type BaseConsumer = rdkafka::consumer::BaseConsumer<BusContext>;
/// A consumer-group member read as a stream, as [`crate::client::group_consumer`]
/// returns it.
pub type StreamConsumer = rdkafka::consumer::StreamConsumer<BusContext>;
/// An admin client, as [`crate::client::admin`] returns it.
pub type AdminClient = rdkafka::admin::AdminClient<BusContext>;

/// A record for a [`FutureProducer`] (ingress's bare-produce benchmark baseline).
pub use rdkafka::producer::FutureRecord;
/// An idempotent producer whose deliveries are futures, as [`crate::client::producer`]
/// returns it.
pub type FutureProducer = rdkafka::producer::FutureProducer<BusContext>;
