//! The writer thread (process 0): pairs the two halves of a marker (every worker's
//! entries from the dataflow, and what the sink knows once the epochs below the marker
//! are committed), writes the snapshot, prunes older ones and, once per start, sweeps
//! orphan chunks. Failures are logged and counted; the job goes on.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use super::chunk_bytes;
use super::format::{ChunkInfo, Entry, FORMAT, Manifest, encode_chunks};
use super::store::Store;
use crate::clock::now_ms;
use crate::config::SnapshotConfig;
use crate::error::SnapshotError;
use crate::logic::Sku;
use crate::metrics::Metrics;

/// What reaches the writer thread.
#[derive(Debug)]
pub(crate) enum WriterInput {
    /// Every worker's entries for a marker (from worker 0's collector).
    Parts {
        /// The marker.
        marker: u64,
        /// All workers' entries.
        entries: Vec<Entry>,
    },
    /// What the sink knows once every epoch below the marker is committed.
    Mark {
        /// The marker.
        marker: u64,
        /// The last committed epoch below it (`None`: nothing committed yet).
        epoch: Option<u64>,
        /// The committed offsets (`(topic, partition) -> upper`).
        offsets: BTreeMap<(u8, i32), i64>,
        /// Every SKU's version in the views.
        versions: Vec<(Sku, u64)>,
    },
}

/// The writer thread of process 0 (module docs).
pub(crate) struct Writer {
    pub store: Box<dyn Store>,
    pub input: Receiver<WriterInput>,
    pub config: SnapshotConfig,
    pub workers: u32,
    pub metrics: Metrics,
    /// Snapshots in the store, oldest first, with their chunks (for pruning; `None`:
    /// its manifest does not verify, removed after the first snapshot written).
    pub existing: Vec<(u64, Option<Vec<ChunkInfo>>)>,
    /// Whether this start's sweep of older snapshots and orphan chunks ran (once, after
    /// the first snapshot written).
    pub swept: bool,
}

impl Writer {
    /// Runs until every sender is gone. Failures are logged (WARN) and counted; the job
    /// goes on, and the next marker tries again.
    pub(crate) fn run(mut self) {
        let mut parts: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        let mut marks: BTreeMap<u64, WriterInput> = BTreeMap::new();
        while let Ok(first) = self.input.recv() {
            // Everything queued meanwhile too: a writer slower than the markers writes
            // the newest complete snapshot and drops the older ones.
            let mut inputs = vec![first];
            inputs.extend(self.input.try_iter());
            for input in inputs {
                match input {
                    WriterInput::Parts { marker, entries } => {
                        parts.insert(marker, entries);
                    }
                    mark @ WriterInput::Mark { marker, .. } => {
                        marks.insert(marker, mark);
                    }
                }
            }
            let Some(marker) = parts.keys().rev().find(|m| marks.contains_key(m)).copied() else {
                continue;
            };
            let (Some(entries), Some(mark)) = (parts.remove(&marker), marks.remove(&marker)) else {
                continue;
            };
            // Older halves can never complete now.
            let dropped = parts.keys().filter(|m| **m < marker).count();
            parts.retain(|m, _| *m > marker);
            marks.retain(|m, _| *m > marker);
            self.metrics.snapshot_skipped.inc_by(dropped as u64);
            if let Err(e) = self.write(marker, entries, mark) {
                self.metrics.snapshot_failed.inc();
                tracing::warn!(
                    marker,
                    "snapshot not written: {}",
                    eventbus::error::chain(&e)
                );
            }
        }
    }

    fn write(
        &mut self,
        marker: u64,
        entries: Vec<Entry>,
        mark: WriterInput,
    ) -> Result<(), SnapshotError> {
        let WriterInput::Mark {
            epoch,
            offsets,
            versions,
            ..
        } = mark
        else {
            return Ok(());
        };
        let Some(epoch) = epoch else {
            return Ok(()); // nothing committed: nothing to restore
        };
        let started = Instant::now();
        let mut entries = entries;
        let mut versions: HashMap<Sku, u64> = versions.into_iter().collect();
        for entry in &mut entries {
            if let Entry::Stock { sku, version, .. } = entry {
                *version = versions.remove(sku).unwrap_or(0);
            }
        }
        entries.extend(versions.into_iter().map(|(sku, version)| Entry::Stock {
            sku,
            adjusted: 0,
            version,
        }));
        let chunks = encode_chunks(&entries, self.config.shards, self.config.chunk_bytes)?;
        let infos: Vec<ChunkInfo> = chunks.iter().map(|c| c.info.clone()).collect();
        let manifest = Manifest {
            format: FORMAT,
            marker,
            epoch,
            offsets: offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect(),
            workers: self.workers,
            shards: self.config.shards,
            chunks: infos.clone(),
            entries: entries.len() as u64,
            written_at_ms: now_ms(),
        };
        self.store.write(marker, &chunks, &manifest.to_bytes()?)?;
        let bytes = chunk_bytes(&infos);
        self.metrics
            .snapshot_write_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.note_snapshot(epoch, bytes);
        tracing::info!(
            store = %self.store.describe(),
            marker,
            epoch,
            entries = entries.len(),
            bytes,
            write_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        for (old, _) in self.existing.iter().filter(|(_, chunks)| chunks.is_none()) {
            self.store.remove(*old, &[])?;
        }
        self.existing.retain(|(_, chunks)| chunks.is_some());
        self.existing.push((marker, Some(infos)));
        while self.existing.len() > self.config.keep.max(1) {
            let (old, chunks) = self.existing.remove(0);
            self.store.remove(old, &chunks.unwrap_or_default())?;
        }
        if !self.swept {
            // Once per start, off the restore path: whatever a previous incarnation left
            // (the chunks of a write cut short, snapshots it had not pruned yet).
            self.swept = true;
            let keep: Vec<u64> = self.existing.iter().map(|(m, _)| *m).collect();
            let started = Instant::now();
            let removed = self.store.sweep(&keep)?;
            tracing::info!(
                store = %self.store.describe(),
                removed,
                sweep_ms = started.elapsed().as_millis() as u64,
                "older snapshots and unfinished writes swept"
            );
        }
        Ok(())
    }
}
