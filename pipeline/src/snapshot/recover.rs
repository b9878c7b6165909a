//! What a start recovers from: the progress topic's bindings and, with snapshots on, the
//! newest usable snapshot, reading only what the restore needs.
//!
//! Without snapshots (or with none usable) the whole progress topic is read and every
//! input is replayed from its beginning, as before snapshots existed. With one, the
//! order is: the snapshot store's newest manifests (the end of the snapshot topic), the
//! progress topic's end back to the snapshot's epoch ([`ProgressTail`]), the checks that
//! the snapshot belongs to this progress, then its chunks. So a restore reads the
//! transactions committed since the snapshot and one snapshot's bytes, whatever the
//! length of history.

use std::time::{Duration, Instant};

use super::format::{ChunkInfo, Manifest};
use super::read_manifest;
use super::store::Store;
use super::{Candidate, Loaded, candidates, chunk_bytes, existing, load_chunks, open_store};
use crate::clock::Bindings;
use crate::config::TopicNames;
use crate::error::SnapshotError;
use crate::metrics::Metrics;
use crate::progress::{Progress, ProgressRecord, ProgressTail, read_progress};
use crate::{PipelineConfig, PipelineError};

/// What a start recovers from.
pub(crate) struct Recovery {
    /// The bindings to replay with (from the snapshot's epoch on, if one is restored).
    pub progress: Progress,
    /// The snapshot restored, if any.
    pub loaded: Option<Loaded>,
    /// The store (snapshots on), for the writer.
    pub store: Option<Box<dyn Store>>,
    /// What the store holds (see [`existing`]), for the writer's pruning.
    pub existing: Vec<(u64, Option<Vec<ChunkInfo>>)>,
}

/// Reads the progress topic and, with snapshots on, picks and loads the snapshot to
/// restore (module docs). Blocking.
pub(crate) fn recover(
    config: &PipelineConfig,
    topics: &TopicNames,
    metrics: &Metrics,
    timeout: Duration,
) -> Result<Recovery, PipelineError> {
    let started = Instant::now();
    if !config.snapshot.enabled {
        let progress = read_progress(&config.kafka, &topics.progress, timeout)?;
        log_progress(&progress, started, "whole topic");
        return Ok(Recovery {
            progress,
            loaded: None,
            store: None,
            existing: Vec::new(),
        });
    }
    let mut tail = ProgressTail::open(&config.kafka, &topics.progress, timeout)?;
    let last = tail.last_epoch()?;
    let tail_ms = started.elapsed().as_millis() as u64;
    let mut store = open_store(&config.snapshot, &config.kafka, &topics.snapshots);
    let mut chosen: Option<(Loaded, Bindings)> = None;
    let markers = candidates(store.as_mut(), metrics, |store, marker| {
        let manifest = read_manifest(store, marker)?;
        let bindings = match covered(&manifest, last, &mut tail) {
            Ok(Ok(bindings)) => bindings,
            Ok(Err(reason)) => return Err(SnapshotError::Corrupt(reason)),
            Err(e) => return Ok(Err(e)),
        };
        chosen = Some((load_chunks(store, manifest)?, bindings));
        Ok(Ok(()))
    })
    .map_err(|e| match e {
        Candidate::Store(source) => PipelineError::Snapshot {
            store: store.describe(),
            source: Box::new(source),
        },
        Candidate::Job(e) => e,
    })?;
    let existing = existing(store.as_mut(), &markers);
    let Some((loaded, bindings)) = chosen else {
        // None usable: the full replay of a job without snapshots.
        let progress = read_progress(&config.kafka, &topics.progress, timeout)?;
        log_progress(&progress, started, "whole topic, no usable snapshot");
        return Ok(Recovery {
            progress,
            loaded: None,
            store: Some(store),
            existing,
        });
    };
    let seconds = started.elapsed().as_secs_f64();
    metrics.snapshot_load_seconds.set(seconds);
    metrics
        .snapshot_restored_entries
        .set(i64::try_from(loaded.entries()).unwrap_or(i64::MAX));
    metrics.note_snapshot(loaded.manifest.epoch, chunk_bytes(&loaded.manifest.chunks));
    tracing::info!(
        store = %store.describe(),
        marker = loaded.manifest.marker,
        epoch = loaded.manifest.epoch,
        entries = loaded.entries(),
        bytes = chunk_bytes(&loaded.manifest.chunks),
        written_by_workers = loaded.manifest.workers,
        load_ms = started.elapsed().as_millis() as u64,
        progress_tail_ms = tail_ms,
        "snapshot loaded"
    );
    let progress = Progress {
        bindings,
        transactions: tail.records_read(),
    };
    log_progress(&progress, started, "since the snapshot");
    Ok(Recovery {
        progress,
        loaded: Some(loaded),
        store: Some(store),
        existing,
    })
}

fn log_progress(progress: &Progress, started: Instant, read: &str) {
    tracing::info!(
        transactions = progress.transactions,
        epochs = progress.bindings.epochs(),
        last_epoch = ?progress.bindings.last_epoch(),
        read,
        ms = started.elapsed().as_millis() as u64,
        "progress read"
    );
}

/// Whether the progress topic covers the snapshot: its epoch is one the topic
/// committed (`Ok(Err(reason))` if not), with the offsets the snapshot lists for the
/// partitions that epoch read; then the bindings of the epochs after it.
/// `Err`: the topic could not be read.
fn covered(
    manifest: &Manifest,
    last: Option<u64>,
    tail: &mut ProgressTail,
) -> Result<Result<Bindings, String>, PipelineError> {
    if last.is_none_or(|last| manifest.epoch > last) {
        return Ok(Err(format!(
            "its epoch {} is after the last committed one ({last:?}): not this job's progress",
            manifest.epoch
        )));
    }
    let records = tail.covering(manifest.epoch)?;
    Ok(check_continues(manifest, &records))
}

/// The checks of [`covered`] on the records from the one holding the snapshot's epoch.
fn check_continues(manifest: &Manifest, records: &[&ProgressRecord]) -> Result<Bindings, String> {
    let Some(binding) = records
        .iter()
        .flat_map(|r| &r.epochs)
        .find(|e| e.time == manifest.epoch)
    else {
        return Err(format!(
            "its epoch {} was never committed: not this job's progress",
            manifest.epoch
        ));
    };
    for (topic, partition, upper) in &binding.uppers {
        let offset = manifest
            .offsets
            .iter()
            .find(|(t, p, _)| t == topic && p == partition)
            .map_or(0, |(_, _, o)| *o);
        if offset != *upper {
            return Err(format!(
                "its offset {offset} of input {topic}/{partition} is not the {upper} its epoch committed"
            ));
        }
    }
    Bindings::after_snapshot(manifest.epoch, &manifest.offsets, records.iter().copied())
        .map_err(|e| format!("the progress after it does not continue it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{EpochBinding, FORMAT};

    type Uppers<'a> = &'a [(u8, i32, i64)];

    fn record(epochs: &[(u64, Uppers<'_>)]) -> ProgressRecord {
        ProgressRecord {
            format: FORMAT,
            epochs: epochs
                .iter()
                .map(|(time, uppers)| EpochBinding {
                    time: *time,
                    uppers: uppers.to_vec(),
                    dead: vec![(0, 0, *time as i64)],
                })
                .collect(),
            frontier: epochs.last().map_or(0, |e| e.0 + 1),
            committed_at_ms: 0,
        }
    }

    fn manifest(epoch: u64, offsets: &[(u8, i32, i64)]) -> Manifest {
        Manifest {
            format: super::super::format::FORMAT,
            marker: epoch + 5,
            epoch,
            offsets: offsets.to_vec(),
            workers: 2,
            shards: 4,
            chunks: vec![],
            entries: 0,
            written_at_ms: 0,
        }
    }

    #[test]
    fn bindings_after_a_snapshot_start_at_its_offsets() {
        let records = [
            record(&[(10, &[(0, 0, 3)]), (20, &[(0, 0, 5), (1, 0, 2)])]),
            record(&[(30, &[(0, 0, 9)]), (40, &[(2, 1, 4)])]),
        ];
        let refs: Vec<&ProgressRecord> = records.iter().collect();
        // A snapshot at 20: partitions 0/0 up to 5, 1/0 up to 2, 3/0 (read before) 7.
        let snapshot = manifest(20, &[(0, 0, 5), (1, 0, 2), (3, 0, 7)]);
        let b = check_continues(&snapshot, &refs).unwrap();
        assert_eq!(b.bind(0, 0, 5), Some(30));
        assert_eq!(b.bind(0, 0, 8), Some(30));
        assert_eq!(b.bind(0, 0, 9), None);
        assert_eq!(b.bind(2, 1, 0), Some(40));
        assert_eq!(
            b.upper(3, 0),
            7,
            "a partition not read since keeps its offset"
        );
        assert_eq!(b.upper(1, 0), 2);
        assert_eq!((b.first_epoch(), b.last_epoch()), (Some(20), Some(40)));
        assert!(b.is_dead(0, 0, 30) && b.is_dead(0, 0, 40));
        assert!(
            !b.is_dead(0, 0, 10),
            "dead letters before the snapshot are not needed"
        );

        // Not this progress: an epoch never committed, an offset that differs.
        assert!(check_continues(&manifest(25, &[(0, 0, 5)]), &refs).is_err());
        assert!(check_continues(&manifest(20, &[(0, 0, 4), (1, 0, 2)]), &refs).is_err());
        // Offsets beyond what later epochs committed: the progress does not continue it.
        assert!(check_continues(&manifest(20, &[(0, 0, 5), (1, 0, 2), (2, 1, 6)]), &refs).is_err());
    }
}
