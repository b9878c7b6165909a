//! Where snapshots live: a compacted Kafka topic (the default, reachable from any pod) or
//! a local directory (development).
//!
//! Both hold, per snapshot (named by its marker time), the chunks and a manifest that is
//! written only after every chunk was acknowledged, so a snapshot without a manifest is
//! unfinished and is ignored. Old snapshots are removed after a newer one is complete:
//! in the topic by tombstones (compaction then drops their records), in the directory
//! by deleting it.
//!
//! Kafka keys: `snapshot/<marker, 20 digits>/chunk/<shard>/<index>` and
//! `snapshot/<marker>/manifest`. The topic is compacted (not deleted by time): a
//! snapshot must outlive any retention, and compaction keeps exactly the live records
//! of the snapshots not yet removed. It has one partition, so that the manifest is
//! after its chunks in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eventbus::KafkaSettings;
use eventbus::client::{self, ProducerOptions, ReaderOptions};
use eventbus::kafka::{
    Consumer, FutureProducer, FutureRecord, KafkaError, Message, Offset, TopicPartitionList,
};

use super::format::{Chunk, ChunkInfo};
use crate::error::SnapshotError;
use crate::kafka;

/// A snapshot store (blocking calls: the writer thread and start-up use it).
pub trait Store: Send {
    /// Writes every chunk of snapshot `marker`, then its manifest.
    fn write(
        &mut self,
        marker: u64,
        chunks: &[Chunk],
        manifest: &[u8],
    ) -> Result<(), SnapshotError>;
    /// The markers of every snapshot that has a manifest, newest first.
    fn markers(&mut self) -> Result<Vec<u64>, SnapshotError>;
    /// The stored manifest of snapshot `marker`.
    fn manifest(&mut self, marker: u64) -> Result<Option<Vec<u8>>, SnapshotError>;
    /// One stored chunk.
    fn chunk(&mut self, marker: u64, info: &ChunkInfo) -> Result<Option<Vec<u8>>, SnapshotError>;
    /// Removes snapshot `marker`: its manifest, then the listed chunks.
    fn remove(&mut self, marker: u64, chunks: &[ChunkInfo]) -> Result<(), SnapshotError>;
    /// Where it is, for messages.
    fn describe(&self) -> String;
}

/// Snapshots as files: `<dir>/<marker>/<shard>-<index>.chunk` and `<dir>/<marker>/manifest`
/// (written to a temporary name and renamed, so it is complete or absent).
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// A store in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirStore { dir: dir.into() }
    }

    fn snapshot_dir(&self, marker: u64) -> PathBuf {
        self.dir.join(format!("{marker:020}"))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, SnapshotError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

impl Store for DirStore {
    fn write(
        &mut self,
        marker: u64,
        chunks: &[Chunk],
        manifest: &[u8],
    ) -> Result<(), SnapshotError> {
        let dir = self.snapshot_dir(marker);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for chunk in chunks {
            let path = dir.join(format!("{}-{}.chunk", chunk.info.shard, chunk.info.index));
            std::fs::write(&path, &chunk.bytes).map_err(io(&path))?;
        }
        let tmp = dir.join("manifest.tmp");
        std::fs::write(&tmp, manifest).map_err(io(&tmp))?;
        let path = dir.join("manifest");
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    fn markers(&mut self) -> Result<Vec<u64>, SnapshotError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut markers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            if let Some(marker) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                && entry.path().join("manifest").exists()
            {
                markers.push(marker);
            }
        }
        markers.sort_unstable_by(|a, b| b.cmp(a));
        Ok(markers)
    }

    fn manifest(&mut self, marker: u64) -> Result<Option<Vec<u8>>, SnapshotError> {
        read_optional(&self.snapshot_dir(marker).join("manifest"))
    }

    fn chunk(&mut self, marker: u64, info: &ChunkInfo) -> Result<Option<Vec<u8>>, SnapshotError> {
        read_optional(
            &self
                .snapshot_dir(marker)
                .join(format!("{}-{}.chunk", info.shard, info.index)),
        )
    }

    fn remove(&mut self, marker: u64, _chunks: &[ChunkInfo]) -> Result<(), SnapshotError> {
        let dir = self.snapshot_dir(marker);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&dir)(e)),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Snapshots in a compacted topic (module docs). Reads load the whole topic once and
/// keep its live records in memory until the next write or removal.
pub struct KafkaStore {
    kafka: KafkaSettings,
    topic: String,
    producer: Option<FutureProducer>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Key → value of the live records, after a read.
    cache: Option<BTreeMap<String, Vec<u8>>>,
    timeout: Duration,
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
            cache: None,
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

    /// Every live record of the topic (compacted: tombstones remove keys).
    fn load(&mut self) -> Result<&BTreeMap<String, Vec<u8>>, SnapshotError> {
        if self.cache.is_none() {
            let options = ReaderOptions {
                read_committed: false,
                partition_eof: true,
                // Only a label, never joined or committed; prefixed with the client id
                // (the service name), which the ACLs grant the job's principal.
                group_id: Some(format!("{}-snapshot-reader", self.kafka.client_id)),
                statistics: false,
                tuning: client::Tuning::new(),
            };
            let consumer = client::reader(
                &self.kafka,
                &options,
                kafka::context(&self.kafka, "snapshot-reader"),
            )
            .map_err(|e| SnapshotError::Bus(Box::new(e)))?;
            let partitions =
                client::partition_count(&consumer, &self.topic, Duration::from_secs(10))
                    .map_err(|e| SnapshotError::Bus(Box::new(e)))?;
            let mut tpl = TopicPartitionList::new();
            for partition in 0..partitions {
                tpl.add_partition_offset(&self.topic, partition, Offset::Beginning)
                    .map_err(kafka_error("assign snapshots"))?;
            }
            consumer
                .assign(&tpl)
                .map_err(kafka_error("assign snapshots"))?;
            let mut records = BTreeMap::new();
            let mut open: BTreeSet<i32> = (0..partitions).collect();
            let deadline = Instant::now() + self.timeout;
            while !open.is_empty() {
                if Instant::now() > deadline {
                    return Err(SnapshotError::Corrupt(format!(
                        "{} not read to its end within {:?}",
                        self.topic, self.timeout
                    )));
                }
                match consumer.poll(Duration::from_millis(200)) {
                    None => {}
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        open.remove(&p);
                    }
                    Some(Err(e)) => return Err(kafka_error(format!("read {}", self.topic))(e)),
                    Some(Ok(message)) => {
                        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok())
                        else {
                            continue;
                        };
                        match message.payload() {
                            Some(value) => records.insert(key.to_owned(), value.to_vec()),
                            None => records.remove(key),
                        };
                    }
                }
            }
            self.cache = Some(records);
        }
        Ok(self.cache.as_ref().expect("just set"))
    }
}

impl Store for KafkaStore {
    fn write(
        &mut self,
        marker: u64,
        chunks: &[Chunk],
        manifest: &[u8],
    ) -> Result<(), SnapshotError> {
        self.cache = None;
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

    fn markers(&mut self) -> Result<Vec<u64>, SnapshotError> {
        let mut markers: Vec<u64> = self
            .load()?
            .keys()
            .filter_map(|key| {
                let rest = key.strip_prefix("snapshot/")?.strip_suffix("/manifest")?;
                rest.parse().ok()
            })
            .collect();
        markers.sort_unstable_by(|a, b| b.cmp(a));
        Ok(markers)
    }

    fn manifest(&mut self, marker: u64) -> Result<Option<Vec<u8>>, SnapshotError> {
        Ok(self.load()?.get(&manifest_key(marker)).cloned())
    }

    fn chunk(&mut self, marker: u64, info: &ChunkInfo) -> Result<Option<Vec<u8>>, SnapshotError> {
        Ok(self
            .load()?
            .get(&chunk_key(marker, info.shard, info.index))
            .cloned())
    }

    fn remove(&mut self, marker: u64, chunks: &[ChunkInfo]) -> Result<(), SnapshotError> {
        self.cache = None;
        // The manifest first: a half-removed snapshot is then an unfinished one.
        self.send_all(vec![(manifest_key(marker), None)])?;
        self.send_all(
            chunks
                .iter()
                .map(|c| (chunk_key(marker, c.shard, c.index), None))
                .collect(),
        )
    }

    fn describe(&self) -> String {
        format!("topic {}", self.topic)
    }
}
