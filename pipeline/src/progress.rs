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
//! (`init_transactions`), every process reads the topic up to its last stable offset and
//! builds the [`Bindings`]: the whole topic ([`read_progress`]) when there is no
//! snapshot to restore, otherwise only its tail back to the snapshot's epoch
//! ([`ProgressTail`], [`Bindings::after_snapshot`]), so that a restore reads what was
//! committed since the snapshot, not every transaction ever committed.

use std::time::{Duration, Instant};

use eventbus::KafkaSettings;
use eventbus::client::{self, ReaderOptions};
use eventbus::kafka::{BaseConsumer, Consumer, KafkaError, Message, Offset, TopicPartitionList};
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

    /// The bindings a restore from a snapshot needs: the snapshot's `offsets` as the
    /// uppers of its `epoch` (every record below them is in the snapshot), then every
    /// epoch after it from `records` (a tail of the progress topic that reaches back to
    /// `epoch`; epochs at or before it are skipped).
    ///
    /// Fails like [`Bindings::from_records`] if the records do not continue the
    /// snapshot (an upper at or below the snapshot's offset, epochs out of order).
    pub fn after_snapshot<'a>(
        epoch: u64,
        offsets: &[(u8, i32, i64)],
        records: impl IntoIterator<Item = &'a ProgressRecord>,
    ) -> Result<Self, ProgressError> {
        let mut bindings = Bindings::new();
        bindings.push(epoch, offsets.iter().copied().filter(|(_, _, o)| *o > 0))?;
        for record in records {
            for binding in record.epochs.iter().filter(|e| e.time > epoch) {
                bindings.push(binding.time, binding.uppers.iter().copied())?;
                bindings.add_dead(binding.dead.iter().copied());
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
    let consumer = progress_reader(kafka, topic)?;
    Ok(read_from(&consumer, topic, Offset::Beginning, timeout)?
        .into_iter()
        .map(|(_, record)| record)
        .collect())
}

/// The progress topic read backwards from its end, only as far as a restore needs.
///
/// A snapshot at epoch `e` needs the epochs committed after `e`: the records from the
/// last one that holds an epoch at or before `e` to the end ([`ProgressTail::covering`]).
/// The tail is read in growing windows (512 offsets, then 4 times more each time), so
/// the cost follows the transactions committed since the snapshot, not the topic's
/// length.
pub struct ProgressTail {
    kafka: KafkaSettings,
    topic: String,
    timeout: Duration,
    /// The log start offset and the end (last stable offset when opened).
    low: i64,
    high: i64,
    /// The window read so far: `[from, high)`, its records with their offsets.
    from: i64,
    records: Vec<(i64, ProgressRecord)>,
    /// The reader that asked the watermarks, not assigned yet: the first read's (one
    /// connection set-up less on the restore path).
    unused: Option<BaseConsumer>,
}

impl std::fmt::Debug for ProgressTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressTail")
            .field("topic", &self.topic)
            .field("from", &self.from)
            .field("high", &self.high)
            .finish_non_exhaustive()
    }
}

/// The first window of [`ProgressTail`], in offsets (a transaction takes two: its record
/// and its commit marker).
const TAIL_WINDOW: i64 = 512;

impl ProgressTail {
    /// Opens the topic (checks it has one partition) and reads its last window. Blocking.
    pub fn open(
        kafka: &KafkaSettings,
        topic: &str,
        timeout: Duration,
    ) -> Result<ProgressTail, PipelineError> {
        let consumer = progress_reader(kafka, topic)?;
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .map_err(|e| PipelineError::kafka(format!("watermarks of {topic}"), e))?;
        let mut tail = ProgressTail {
            kafka: kafka.clone(),
            topic: topic.to_owned(),
            timeout,
            low,
            high,
            from: high,
            records: Vec::new(),
            unused: Some(consumer),
        };
        tail.extend()?;
        Ok(tail)
    }

    /// Reads a window four times larger (from the log start at most).
    fn extend(&mut self) -> Result<(), PipelineError> {
        if self.from <= self.low {
            return Ok(());
        }
        let read = (self.high - self.from).max(TAIL_WINDOW / 4) * 4;
        let from = self.from.saturating_sub(read).max(self.low);
        // Re-reads the window read before too (at most a third of the total): simpler
        // than stitching two reads. A new reader each time, so that no end-of-partition
        // event of the previous read can end this one early.
        let consumer = match self.unused.take() {
            Some(consumer) => consumer,
            None => progress_reader(&self.kafka, &self.topic)?,
        };
        self.records = read_from(&consumer, &self.topic, Offset::Offset(from), self.timeout)?;
        self.from = from;
        Ok(())
    }

    /// The last committed epoch, if any transaction was ever committed.
    pub fn last_epoch(&mut self) -> Result<Option<u64>, PipelineError> {
        while self.records.is_empty() && self.from > self.low {
            self.extend()?;
        }
        Ok(self
            .records
            .last()
            .and_then(|(_, r)| r.epochs.last())
            .map(|e| e.time))
    }

    /// The records from the last one holding an epoch at or before `epoch` to the end
    /// (all of them if none does), in commit order.
    pub fn covering(&mut self, epoch: u64) -> Result<Vec<&ProgressRecord>, PipelineError> {
        loop {
            let reaches = self
                .records
                .first()
                .and_then(|(_, r)| r.epochs.first())
                .is_some_and(|e| e.time <= epoch);
            if reaches || self.from <= self.low {
                break;
            }
            self.extend()?;
        }
        let start = self
            .records
            .iter()
            .rposition(|(_, r)| r.epochs.first().is_some_and(|e| e.time <= epoch))
            .unwrap_or(0);
        Ok(self.records[start..].iter().map(|(_, r)| r).collect())
    }

    /// Every record read so far (how many transactions a restore looked at).
    pub fn records_read(&self) -> usize {
        self.records.len()
    }
}

fn progress_reader(kafka: &KafkaSettings, topic: &str) -> Result<BaseConsumer, PipelineError> {
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
        tuning: client::tuning([
            // The read ends at the partition's end, which the reader learns from a fetch
            // that returns nothing: the broker holds such a fetch fetch.wait.max.ms
            // (default 500 ms), which was most of a restore's progress read.
            ("fetch.wait.max.ms", "10".to_owned()),
        ]),
    };
    let consumer = client::reader(kafka, &options, kafka::context(kafka, "progress-reader"))?;
    let partitions = kafka::partition_count(&consumer, topic, Duration::from_secs(10))?;
    if partitions != Some(1) {
        return Err(PipelineError::ProgressTopicShape {
            topic: topic.to_owned(),
            partitions: partitions.unwrap_or(0),
        });
    }
    Ok(consumer)
}

/// The committed records of the progress topic from `start` to its end, with their
/// offsets. Blocking.
fn read_from(
    consumer: &BaseConsumer,
    topic: &str,
    start: Offset,
    timeout: Duration,
) -> Result<Vec<(i64, ProgressRecord)>, PipelineError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, start)
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
                records.push((message.offset(), record));
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
