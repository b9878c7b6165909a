//! The progress topic: what the sink commits with each transaction, and reading it back.
//!
//! `inventory-service.progress` has one partition (so its records are one total order of
//! commits) and is never deleted (`retention.ms = -1`, see `deploy/topics.toml`). Every
//! transaction of the sink writes exactly one [`ProgressRecord`] next to the
//! `stock.updated` and dead-letter records of the epochs it commits; a `read_committed`
//! reader therefore sees a record exactly when it sees that output.
//!
//! A record lists, for each epoch of the transaction, the upper offsets of the input
//! partitions the epoch ingested (the time bindings of [`crate::clock`]), and the
//! frontier after the transaction: every epoch below it is done. JSON, so that an
//! operator can read the topic with any tool; a few hundred bytes per transaction.
//!
//! On start-up, after the sink has fenced any previous incarnation of the job
//! (`init_transactions`), every process reads the whole topic ([`read_progress`]) up to
//! its last stable offset and builds the [`Bindings`].

use std::time::{Duration, Instant};

use eventbus::KafkaSettings;
use eventbus::client::{self, ReaderOptions};
use eventbus::kafka::{Consumer, KafkaError, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::clock::Bindings;
use crate::error::{PipelineError, ProgressError};
use crate::kafka;

/// The format version written into every record.
pub const FORMAT: u32 = 1;

/// One committed epoch: its time and the uppers it reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochBinding {
    /// The epoch (UTC ms); also the `version` of the `stock.updated` records it emitted.
    pub time: u64,
    /// `(topic index, partition, upper)`: one past the offset of the last record of that
    /// partition ingested in this epoch; only partitions the epoch read from.
    pub uppers: Vec<(u8, i32, i64)>,
    /// `(topic index, partition, offset)` of the records of this epoch that went to the
    /// dead-letter topic: a replay skips them instead of decoding them again (a schema
    /// registered meanwhile must not turn a dead letter into an event).
    #[serde(default)]
    pub dead: Vec<(u8, i32, i64)>,
}

/// What the sink commits with every transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// The epochs this transaction commits, in increasing time.
    pub epochs: Vec<EpochBinding>,
    /// Every epoch below this time is done (last epoch + 1).
    pub frontier: u64,
    /// Wall-clock time of the commit, for operators.
    pub committed_at_ms: u64,
}

impl ProgressRecord {
    /// Serializes to the topic's value format.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a value of the progress topic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProgressError> {
        let record: ProgressRecord = serde_json::from_slice(bytes).map_err(ProgressError::Parse)?;
        if record.format != FORMAT {
            return Err(ProgressError::Format {
                found: record.format,
                supported: FORMAT,
            });
        }
        Ok(record)
    }
}

impl Bindings {
    /// The bindings of a sequence of progress records, in the order they were committed.
    /// (Here rather than in [`crate::clock`], so that the clock does not depend on the
    /// progress topic's format.)
    ///
    /// Fails if epochs do not grow strictly or a partition's upper goes down: the
    /// progress topic would then not be one this job wrote.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a ProgressRecord>,
    ) -> Result<Self, ProgressError> {
        let mut bindings = Bindings::new();
        for record in records {
            for epoch in &record.epochs {
                bindings.push(epoch.time, epoch.uppers.iter().copied())?;
                bindings.add_dead(epoch.dead.iter().copied());
            }
        }
        Ok(bindings)
    }
}

/// Everything read from the progress topic at start-up.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The time bindings of every committed epoch.
    pub bindings: Bindings,
    /// How many progress records (transactions) were read.
    pub transactions: usize,
}

/// Reads every committed record of the progress topic (read_committed, from the
/// beginning to the last stable offset). Blocking.
pub fn read_progress(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Progress, PipelineError> {
    let records = read_records(kafka, topic, timeout)?;
    let bindings = Bindings::from_records(&records).map_err(|source| PipelineError::Progress {
        topic: topic.to_owned(),
        source,
    })?;
    Ok(Progress {
        bindings,
        transactions: records.len(),
    })
}

/// Every committed progress record of `topic`, in commit order. Blocking.
pub fn read_records(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<ProgressRecord>, PipelineError> {
    let options = ReaderOptions {
        // Only what committed transactions wrote: a record is there exactly when the
        // output of its epochs is.
        read_committed: true,
        // The end of the (one) partition ends the read.
        partition_eof: true,
        // Only a label, never joined or committed; prefixed with the client id (the
        // service name), which the ACLs grant the job's principal.
        group_id: Some(format!("{}-progress-reader", kafka.client_id)),
        statistics: false,
        tuning: client::Tuning::new(),
    };
    let consumer = client::reader(kafka, &options, kafka::context(kafka, "progress-reader"))?;
    let partitions = kafka::partition_count(&consumer, topic, Duration::from_secs(10))?;
    if partitions != Some(1) {
        return Err(PipelineError::ProgressTopicShape {
            topic: topic.to_owned(),
            partitions: partitions.unwrap_or(0),
        });
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(|e| PipelineError::kafka("assign progress", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| PipelineError::kafka("assign progress", e))?;
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Err(PipelineError::Progress {
                topic: topic.to_owned(),
                source: ProgressError::Timeout(timeout),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(PipelineError::kafka(format!("read {topic}"), e)),
            Some(Ok(message)) => {
                let record = ProgressRecord::from_bytes(message.payload().unwrap_or_default())
                    .map_err(|source| PipelineError::Progress {
                        topic: topic.to_owned(),
                        source,
                    })?;
                records.push(record);
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_build_bindings() {
        let record = ProgressRecord {
            format: FORMAT,
            epochs: vec![
                EpochBinding {
                    time: 10,
                    uppers: vec![(0, 1, 5)],
                    dead: vec![(0, 1, 3)],
                },
                EpochBinding {
                    time: 20,
                    uppers: vec![(0, 1, 9), (4, 0, 1)],
                    dead: vec![],
                },
            ],
            frontier: 21,
            committed_at_ms: 1,
        };
        let back = ProgressRecord::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(back, record);
        let b = Bindings::from_records([&record]).unwrap();
        assert_eq!(b.bind(0, 1, 6), Some(20));
        assert_eq!(b.last_epoch(), Some(20));
        assert!(b.is_dead(0, 1, 3));
        assert!(!b.is_dead(0, 1, 4));
        assert!(ProgressRecord::from_bytes(b"{}").is_err());
        let mut future = record;
        future.format = 2;
        assert!(ProgressRecord::from_bytes(&future.to_bytes()).is_err());
    }
}
