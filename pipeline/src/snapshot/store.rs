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
//!
//! A start reads the topic **from its end backwards** ([`KafkaStore`]): the newest
//! snapshots and their chunks are the last records written (then only the tombstones of
//! the ones they replaced), so a restore reads about one snapshot's bytes however many
//! snapshots were written before it and whether or not compaction has dropped them yet
//! (it only runs on closed segments). The writer thread, once per start, reads the whole
//! topic off the restore path and tombstones whatever older snapshot is left, including
//! the chunks of a write that was cut short before its manifest ([`Store::sweep`]).

use std::path::{Path, PathBuf};

use super::format::{Chunk, ChunkInfo};
use crate::error::SnapshotError;

mod kafka;

pub use kafka::KafkaStore;

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
    /// Like [`Store::markers`], but certainly every snapshot of the store ([`Store::markers`]
    /// may look only at the newest few, which is all a start normally needs).
    fn all_markers(&mut self) -> Result<Vec<u64>, SnapshotError> {
        self.markers()
    }
    /// Removes every record of every snapshot, complete or not (the chunks of a write
    /// that never got its manifest), that is older than the newest of `keep` and not in
    /// `keep`. Returns how many snapshots it removed.
    fn sweep(&mut self, keep: &[u64]) -> Result<usize, SnapshotError>;
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

    fn sweep(&mut self, keep: &[u64]) -> Result<usize, SnapshotError> {
        let Some(newest) = keep.iter().max().copied() else {
            return Ok(0);
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            let Some(marker) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if marker < newest && !keep.contains(&marker) {
                self.remove(marker, &[])?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_sweep_removes_older_unfinished_and_unkept_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DirStore::new(dir.path());
        let chunk = |marker: u64| Chunk {
            info: ChunkInfo {
                shard: 0,
                index: 0,
                len: 1,
                sha256: [0; 32],
            },
            bytes: vec![u8::try_from(marker % 256).unwrap()],
        };
        for marker in [10, 20, 30] {
            store.write(marker, &[chunk(marker)], b"m").unwrap();
        }
        // An unfinished write (chunks, no manifest), older and newer than the kept ones.
        for marker in [15, 40] {
            let d = dir.path().join(format!("{marker:020}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("0-0.chunk"), b"x").unwrap();
        }
        assert_eq!(store.markers().unwrap(), vec![30, 20, 10]);
        assert_eq!(store.sweep(&[20, 30]).unwrap(), 2, "10 and the torn 15");
        assert_eq!(store.markers().unwrap(), vec![30, 20]);
        assert!(!dir.path().join(format!("{:020}", 15)).exists());
        assert!(
            dir.path().join(format!("{:020}", 40)).exists(),
            "newer than every kept snapshot: maybe being written"
        );
    }
}
