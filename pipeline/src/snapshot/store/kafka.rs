//! The snapshot topic as a [`Store`] (the parent module's docs: keys, order, reading
//! backwards from the end, sweeping).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use eventbus::KafkaSettings;
use eventbus::client::{self, ProducerOptions, ReaderOptions};
use eventbus::kafka::{
    BaseConsumer, Consumer, FutureProducer, FutureRecord, KafkaError, Message, Offset,
    TopicPartitionList,
};

use super::{Store, io};
use crate::error::SnapshotError;
use crate::kafka;
use crate::snapshot::format::{Chunk, ChunkInfo};

/// Snapshots in a compacted topic (module docs). Reads go backwards from the end of the
/// topic in growing windows and keep the live records of the window read in memory
/// until the next write or removal.
pub struct KafkaStore {
    kafka: KafkaSettings,
    topic: String,
    producer: Option<FutureProducer>,
    runtime: Option<tokio::runtime::Runtime>,
    /// What was read of the topic's end, after a read.
    window: Option<Window>,
    /// The reader that asked the watermarks, not assigned yet: the next read's (one
    /// connection set-up less on the restore path).
    unused: Option<BaseConsumer>,
    timeout: Duration,
}

/// The end of the topic read so far: `[from, high)`.
#[derive(Default)]
struct Window {
    low: i64,
    high: i64,
    from: i64,
    /// Key → value of the records live in the window (not tombstoned after).
    live: BTreeMap<String, Vec<u8>>,
    /// Every key the window holds, live or tombstoned: an older record of it is dead.
    seen: HashSet<String>,
}

impl Window {
    fn complete(&self) -> bool {
        self.from <= self.low
    }

    fn manifests(&self) -> Vec<u64> {
        let mut markers: Vec<u64> = self
            .live
            .keys()
            .filter_map(|k| manifest_marker(k))
            .collect();
        markers.sort_unstable_by(|a, b| b.cmp(a));
        markers
    }

    /// Adds the records of `[from, self.from)`, in log order, beneath what it holds.
    fn prepend(&mut self, from: i64, records: Records) {
        let mut older: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for (key, value) in records {
            older.insert(key, value);
        }
        for (key, value) in older {
            if self.seen.insert(key.clone())
                && let Some(value) = value
            {
                self.live.insert(key, value);
            }
        }
        self.from = from;
    }
}

/// Records as read: key, and value (`None`: a tombstone).
type Records = Vec<(String, Option<Vec<u8>>)>;

/// The window a tail read starts with, in offsets (records are chunks of up to 512 KiB,
/// so this holds a few snapshots).
const TAIL_WINDOW: i64 = 64;

/// The marker of a snapshot key.
fn key_marker(key: &str) -> Option<u64> {
    key.strip_prefix("snapshot/")?.get(..20)?.parse().ok()
}

/// The marker of a manifest key.
fn manifest_marker(key: &str) -> Option<u64> {
    key.strip_prefix("snapshot/")?
        .strip_suffix("/manifest")?
        .parse()
        .ok()
}

impl std::fmt::Debug for KafkaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStore")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn kafka_error(operation: impl Into<String>) -> impl FnOnce(KafkaError) -> SnapshotError {
    let operation = operation.into();
    move |source| SnapshotError::Kafka { operation, source }
}

fn manifest_key(marker: u64) -> String {
    format!("snapshot/{marker:020}/manifest")
}

fn chunk_key(marker: u64, shard: u32, index: u32) -> String {
    format!("snapshot/{marker:020}/chunk/{shard}/{index}")
}

impl KafkaStore {
    /// A store on `topic`; clients are created when first needed.
    pub fn new(kafka: &KafkaSettings, topic: &str) -> Self {
        KafkaStore {
            kafka: kafka.clone(),
            topic: topic.to_owned(),
            producer: None,
            runtime: None,
            window: None,
            unused: None,
            timeout: Duration::from_secs(60),
        }
    }

    fn runtime(&mut self) -> Result<&tokio::runtime::Runtime, SnapshotError> {
        if self.runtime.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io(Path::new("snapshot runtime")))?;
            self.runtime = Some(runtime);
        }
        Ok(self.runtime.as_ref().expect("just set"))
    }

    /// Sends records and waits for every acknowledgement.
    fn send_all(&mut self, records: Vec<(String, Option<&[u8]>)>) -> Result<(), SnapshotError> {
        if self.producer.is_none() {
            let options = ProducerOptions {
                tuning: client::tuning([
                    // Chunks are up to `snapshot.chunk_bytes` (512 KiB by default); the
                    // librdkafka default (1 MB) leaves room for the key and headers.
                    ("compression.type", "lz4".to_owned()),
                ]),
            };
            let producer = client::producer(
                &self.kafka,
                &options,
                kafka::context(&self.kafka, "snapshots"),
            )
            .map_err(|e| SnapshotError::Bus(Box::new(e)))?;
            self.producer = Some(producer);
        }
        let producer = self.producer.clone().expect("just set");
        let topic = self.topic.clone();
        let timeout = self.timeout;
        self.runtime()?.block_on(async move {
            let sends = records.iter().map(|(key, value)| {
                let mut record = FutureRecord::<String, [u8]>::to(&topic)
                    .key(key)
                    .partition(0);
                if let Some(value) = value {
                    record = record.payload(value);
                }
                producer.send(record, timeout)
            });
            for result in futures::future::join_all(sends).await {
                result.map_err(|(e, _)| kafka_error(format!("write {topic}"))(e))?;
            }
            Ok(())
        })
    }

    fn reader(&self) -> Result<BaseConsumer, SnapshotError> {
        let options = ReaderOptions {
            read_committed: false,
            partition_eof: true,
            // Only a label, never joined or committed; prefixed with the client id
            // (the service name), which the ACLs grant the job's principal.
            group_id: Some(format!("{}-snapshot-reader", self.kafka.client_id)),
            statistics: false,
            tuning: client::tuning([
                // A read that reaches the end learns it from an empty fetch, which the
                // broker holds fetch.wait.max.ms (default 500 ms): on the restore path.
                ("fetch.wait.max.ms", "10".to_owned()),
            ]),
        };
        let consumer = client::reader(
            &self.kafka,
            &options,
            kafka::context(&self.kafka, "snapshot-reader"),
        )
        .map_err(|e| SnapshotError::Bus(Box::new(e)))?;
        let partitions = client::partition_count(&consumer, &self.topic, Duration::from_secs(10))
            .map_err(|e| SnapshotError::Bus(Box::new(e)))?;
        if partitions != 1 {
            return Err(SnapshotError::Corrupt(format!(
                "{} has {partitions} partitions, not 1",
                self.topic
            )));
        }
        Ok(consumer)
    }

    /// The records of `[from, until)` in log order (key, value; `None`: a tombstone),
    /// with a reader of its own (no end-of-partition event of another read can end it).
    /// With `keys_only`, values are left empty (a sweep needs only which keys live).
    fn read_range(
        &mut self,
        from: i64,
        until: i64,
        keys_only: bool,
    ) -> Result<Records, SnapshotError> {
        let mut records = Vec::new();
        if from >= until {
            return Ok(records);
        }
        let consumer = match self.unused.take() {
            Some(consumer) => consumer,
            None => self.reader()?,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(from))
            .map_err(kafka_error("assign snapshots"))?;
        consumer
            .assign(&tpl)
            .map_err(kafka_error("assign snapshots"))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if Instant::now() > deadline {
                return Err(SnapshotError::Corrupt(format!(
                    "{} [{from}, {until}) not read within {:?}",
                    self.topic, self.timeout
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(kafka_error(format!("read {}", self.topic))(e)),
                Some(Ok(message)) => {
                    if message.offset() >= until {
                        break;
                    }
                    let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        continue;
                    };
                    let value = message
                        .payload()
                        .map(|v| if keys_only { Vec::new() } else { v.to_vec() });
                    records.push((key.to_owned(), value));
                    if message.offset() + 1 >= until {
                        break;
                    }
                }
            }
        }
        Ok(records)
    }

    /// The window, opened (watermarks, nothing read) if there is none.
    fn window(&mut self) -> Result<&mut Window, SnapshotError> {
        if self.window.is_none() {
            let consumer = self.reader()?;
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
                .map_err(kafka_error(format!("watermarks of {}", self.topic)))?;
            self.window = Some(Window {
                low,
                high,
                from: high,
                ..Window::default()
            });
            self.unused = Some(consumer);
        }
        Ok(self.window.as_mut().expect("just set"))
    }

    /// Reads a window four times larger (to the log start at most). `false` once the
    /// whole topic is read.
    fn extend(&mut self) -> Result<bool, SnapshotError> {
        let (low, high, from) = {
            let w = self.window()?;
            if w.complete() {
                return Ok(false);
            }
            (w.low, w.high, w.from)
        };
        let start = from
            .saturating_sub((high - from).max(TAIL_WINDOW / 4) * 3)
            .max(low);
        let records = self.read_range(start, from, false)?;
        self.window()?.prepend(start, records);
        Ok(true)
    }

    /// Reads back until `done` holds for the window or the whole topic is read.
    fn read_back_until(&mut self, done: impl Fn(&Window) -> bool) -> Result<(), SnapshotError> {
        while !done(self.window()?) {
            if !self.extend()? {
                break;
            }
        }
        Ok(())
    }

    /// A live record, reading further back for it if needed.
    fn record(&mut self, key: &str) -> Result<Option<Vec<u8>>, SnapshotError> {
        self.read_back_until(|w| w.seen.contains(key))?;
        Ok(self.window()?.live.get(key).cloned())
    }
}

impl Store for KafkaStore {
    fn write(
        &mut self,
        marker: u64,
        chunks: &[Chunk],
        manifest: &[u8],
    ) -> Result<(), SnapshotError> {
        self.window = None;
        let records = chunks
            .iter()
            .map(|c| {
                (
                    chunk_key(marker, c.info.shard, c.info.index),
                    Some(c.bytes.as_slice()),
                )
            })
            .collect();
        self.send_all(records)?;
        self.send_all(vec![(manifest_key(marker), Some(manifest))])
    }

    /// The newest snapshots: reads back from the end until the window holds two
    /// manifests (a newest one that turns out unusable has a fallback) or the whole
    /// topic is read.
    fn markers(&mut self) -> Result<Vec<u64>, SnapshotError> {
        self.read_back_until(|w| w.manifests().len() >= 2)?;
        Ok(self.window()?.manifests())
    }

    fn all_markers(&mut self) -> Result<Vec<u64>, SnapshotError> {
        self.read_back_until(|_| false)?;
        Ok(self.window()?.manifests())
    }

    fn manifest(&mut self, marker: u64) -> Result<Option<Vec<u8>>, SnapshotError> {
        self.record(&manifest_key(marker))
    }

    fn chunk(&mut self, marker: u64, info: &ChunkInfo) -> Result<Option<Vec<u8>>, SnapshotError> {
        self.record(&chunk_key(marker, info.shard, info.index))
    }

    fn remove(&mut self, marker: u64, chunks: &[ChunkInfo]) -> Result<(), SnapshotError> {
        self.window = None;
        // The manifest first: a half-removed snapshot is then an unfinished one.
        self.send_all(vec![(manifest_key(marker), None)])?;
        self.send_all(
            chunks
                .iter()
                .map(|c| (chunk_key(marker, c.shard, c.index), None))
                .collect(),
        )
    }

    /// Reads the whole topic (keys only) and tombstones every live key of an older
    /// snapshot not kept.
    fn sweep(&mut self, keep: &[u64]) -> Result<usize, SnapshotError> {
        let Some(newest) = keep.iter().max().copied() else {
            return Ok(0);
        };
        self.window = None;
        let (low, high) = {
            let w = self.window()?;
            (w.low, w.high)
        };
        let mut live: BTreeSet<String> = BTreeSet::new();
        for (key, value) in self.read_range(low, high, true)? {
            if value.is_some() {
                live.insert(key);
            } else {
                live.remove(&key);
            }
        }
        self.window = None;
        let doomed: Vec<String> = live
            .into_iter()
            .filter(|key| key_marker(key).is_some_and(|m| m < newest && !keep.contains(&m)))
            .collect();
        let snapshots: BTreeSet<u64> = doomed.iter().filter_map(|k| key_marker(k)).collect();
        // Manifests first (as in `remove`), then the chunks.
        let (manifests, chunks): (Vec<String>, Vec<String>) = doomed
            .into_iter()
            .partition(|k| manifest_marker(k).is_some());
        self.send_all(manifests.into_iter().map(|k| (k, None)).collect())?;
        self.send_all(chunks.into_iter().map(|k| (k, None)).collect())?;
        Ok(snapshots.len())
    }

    fn describe(&self) -> String {
        format!("topic {}", self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_snapshot() {
        assert_eq!(key_marker(&chunk_key(42, 3, 1)), Some(42));
        assert_eq!(key_marker(&manifest_key(7)), Some(7));
        assert_eq!(manifest_marker(&manifest_key(7)), Some(7));
        assert_eq!(manifest_marker(&chunk_key(7, 0, 0)), None);
        assert_eq!(key_marker("other"), None);
    }

    #[test]
    fn a_window_read_backwards_keeps_the_newest_record_of_each_key() {
        let mut w = Window {
            low: 0,
            high: 10,
            from: 10,
            ..Window::default()
        };
        let v = |s: &str| Some(s.as_bytes().to_vec());
        // Newest part: a tombstone of `a`, a new `b`.
        w.prepend(6, vec![("a".into(), None), ("b".into(), v("b2"))]);
        // Older part: `a` and `b` written before, `c` written then removed.
        w.prepend(
            0,
            vec![
                ("a".into(), v("a1")),
                ("b".into(), v("b1")),
                ("c".into(), v("c1")),
                ("c".into(), None),
                ("d".into(), v("d1")),
            ],
        );
        assert!(w.complete());
        assert_eq!(w.live.get("a"), None, "tombstoned later");
        assert_eq!(w.live.get("b"), v("b2").as_ref(), "the newer value");
        assert_eq!(w.live.get("c"), None);
        assert_eq!(w.live.get("d"), v("d1").as_ref());
    }
}
