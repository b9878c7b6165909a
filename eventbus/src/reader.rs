//! Bounded reads: every record of a topic (or an offset range of it) that exists *now*,
//! then stop. Used by the redrive tool to list DLQs and by tests to see what reached a
//! topic.
//!
//! No consumer group is joined (partitions are assigned under a throw-away group id,
//! nothing is committed), so reading never disturbs a service's offsets. The end of each partition is its high
//! watermark when the read starts; with `read_committed` it is the last stable offset,
//! found through librdkafka's end-of-partition event, so open or aborted transactions
//! never make a read hang.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::KafkaSettings;
use crate::context::BusContext;
use crate::error::BusError;
use crate::metrics::BusMetrics;

/// What to read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Only committed records of transactional producers.
    pub read_committed: bool,
    /// Only this partition.
    pub partition: Option<i32>,
    /// First offset to read (inclusive), in every partition read.
    pub from_offset: Option<i64>,
    /// Last offset to read (inclusive), in every partition read.
    pub to_offset: Option<i64>,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            read_committed: false,
            partition: None,
            from_offset: None,
            to_offset: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Reads the records `options` selects, ordered by partition then offset.
pub async fn read_topic(
    kafka: &KafkaSettings,
    topic: &str,
    options: &ReadOptions,
) -> Result<Vec<OwnedMessage>, BusError> {
    let kafka = kafka.clone();
    let topic = topic.to_owned();
    let options = options.clone();
    tokio::task::spawn_blocking(move || read_blocking(&kafka, &topic, &options))
        .await
        .map_err(BusError::task("read"))?
}

/// The high watermark of every partition of `topic`, by partition.
pub async fn high_watermarks(
    kafka: &KafkaSettings,
    topic: &str,
) -> Result<Vec<(i32, i64)>, BusError> {
    let kafka = kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = reader_consumer(&kafka, false)?;
        let timeout = Duration::from_secs(10);
        partitions_of(&consumer, &topic, timeout)?
            .into_iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .map(|(_, high)| (p, high))
                    .map_err(|e| BusError::kafka(format!("watermarks of {topic}/{p}"), e))
            })
            .collect()
    })
    .await
    .map_err(BusError::task("watermark"))?
}

fn reader_consumer(
    kafka: &KafkaSettings,
    read_committed: bool,
) -> Result<BaseConsumer<BusContext>, BusError> {
    let options = crate::client::ReaderOptions {
        read_committed,
        partition_eof: true,
        ..Default::default()
    };
    let context = BusContext::new(
        format!("{}/reader", kafka.client_id),
        None,
        BusMetrics::default(),
    );
    crate::client::reader(kafka, &options, context)
}

fn partitions_of(
    consumer: &BaseConsumer<BusContext>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, BusError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| BusError::kafka(format!("metadata of {topic}"), e))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| BusError::Config(format!("topic {topic} not in metadata")))?;
    if let Some(err) = t.error() {
        return Err(BusError::kafka(
            format!("metadata of {topic}"),
            KafkaError::MetadataFetch(err.into()),
        ));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

fn read_blocking(
    kafka: &KafkaSettings,
    topic: &str,
    options: &ReadOptions,
) -> Result<Vec<OwnedMessage>, BusError> {
    let deadline = Instant::now() + options.timeout;
    let consumer = reader_consumer(kafka, options.read_committed)?;
    let request = Duration::from_secs(10).min(options.timeout);
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(&consumer, topic, request)? {
        if options.partition.is_some_and(|only| only != p) {
            continue;
        }
        let (low, high) = consumer
            .fetch_watermarks(topic, p, request)
            .map_err(|e| BusError::kafka(format!("watermarks of {topic}/{p}"), e))?;
        let start = options.from_offset.map_or(low, |f| f.max(low));
        let end = options.to_offset.map_or(high, |t| (t + 1).min(high));
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| BusError::kafka("assign", e))?;
            ends.insert(p, end);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&tpl)
        .map_err(|e| BusError::kafka("assign", e))?;
    let mut records = Vec::new();
    while !ends.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BusError::Timeout(format!(
                "reading {topic}: partitions {:?} not finished after {:?}",
                ends.keys().collect::<Vec<_>>(),
                options.timeout
            )));
        }
        match consumer.poll(left.min(Duration::from_millis(500))) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition();
                if let Some(end) = ends.get(&p).copied() {
                    if m.offset() < end {
                        records.push(m.detach());
                    }
                    if m.offset() + 1 >= end {
                        ends.remove(&p);
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => {
                let e = BusError::kafka(format!("read {topic}"), e);
                if !e.is_retriable() {
                    return Err(e);
                }
            }
        }
    }
    records.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(records)
}
