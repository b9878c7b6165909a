//! State snapshots: recovery and rescaling whose cost follows the live state, not the
//! length of history (design and operator procedure: `pipeline/README.md`, "State
//! snapshots").
//!
//! - [`format`]: entries, chunks, manifest (bincode, SHA-256);
//! - [`store`]: the compacted Kafka topic or a local directory;
//! - `state`: the dataflow operators that keep each worker's compacted state and hand a
//!   copy per marker to worker 0;
//! - `writer`: the writer thread (process 0), which pairs the parts of a marker with
//!   what the sink knows of it (the committed epoch, offsets and SKU versions) and
//!   writes the snapshot;
//! - here: loading, and [`load_newest`], which picks the snapshot a start restores.
//!
//! Why the writer pairs two inputs: the state comes from the dataflow (every worker's
//! keys), but what a snapshot *covers* (the input offsets of every epoch below the
//! marker, the last committed epoch, the versions the views hold) is only known to the
//! sink thread once those epochs are committed. Neither waits for the other: both hand
//! their half over with `try_send`, and a marker whose halves do not both arrive is
//! simply not written.

use std::collections::HashMap;

use crate::config::SnapshotConfig;
use crate::error::SnapshotError;
use crate::logic::{InputEvent, Pos, Sku};
use crate::metrics::Metrics;

pub mod format;
mod recover;
pub(crate) mod state;
pub mod store;
mod writer;

pub(crate) use recover::recover;
pub(crate) use writer::{Writer, WriterInput};

use format::{ChunkInfo, Entry, Manifest, decode_chunk};
use store::Store;

/// The `Pos` of the one synthetic adjustment a snapshot restores per SKU: partition −1
/// of the adjustments topic, which no Kafka record has.
pub const RESTORED_ADJUSTMENT: Pos = Pos {
    time: 0,
    topic: 4,
    partition: -1,
    offset: 0,
};

/// A verified snapshot, loaded.
#[derive(Debug)]
pub struct Loaded {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its entries, by shard.
    pub shards: Vec<Vec<Entry>>,
}

impl Loaded {
    /// The records worker `worker` of `peers` introduces at the snapshot's epoch: those
    /// of the shards `s` with `s mod peers = worker` (the dataflow then exchanges every
    /// record by key, so any split is correct; this one spreads the decoding).
    pub fn records(&self, worker: usize, peers: usize) -> Vec<(Pos, InputEvent)> {
        let mut out = Vec::new();
        for (shard, entries) in self.shards.iter().enumerate() {
            if shard % peers.max(1) != worker {
                continue;
            }
            for entry in entries {
                match entry {
                    Entry::Order { records, .. } => out.extend(records.iter().cloned()),
                    Entry::Stock { sku, adjusted, .. } if *adjusted != 0 => out.push((
                        RESTORED_ADJUSTMENT,
                        InputEvent::StockAdjusted {
                            sku: sku.clone(),
                            delta: *adjusted,
                        },
                    )),
                    Entry::Stock { .. } => {}
                }
            }
        }
        out
    }

    /// Every SKU's version as of the snapshot.
    pub fn versions(&self) -> Vec<(Sku, u64)> {
        self.shards
            .iter()
            .flatten()
            .filter_map(|entry| match entry {
                Entry::Stock { sku, version, .. } if *version > 0 => Some((sku.clone(), *version)),
                _ => None,
            })
            .collect()
    }

    /// The snapshot's offset of every partition (0 for one it does not list).
    pub fn offsets(&self) -> HashMap<(u8, i32), i64> {
        self.manifest
            .offsets
            .iter()
            .map(|(t, p, o)| ((*t, *p), *o))
            .collect()
    }

    /// Records over all shards.
    pub fn entries(&self) -> usize {
        self.shards.iter().map(Vec::len).sum()
    }
}

/// Reads and verifies the manifest of snapshot `marker`.
pub fn read_manifest(store: &mut dyn Store, marker: u64) -> Result<Manifest, SnapshotError> {
    let bytes = store
        .manifest(marker)?
        .ok_or_else(|| SnapshotError::Corrupt("no manifest".into()))?;
    let manifest = Manifest::from_bytes(&bytes)?;
    if manifest.marker != marker {
        return Err(SnapshotError::Corrupt(format!(
            "manifest of {} stored as {marker}",
            manifest.marker
        )));
    }
    Ok(manifest)
}

/// Decoded chunks: each chunk's shard and entries.
type ShardEntries = Vec<(u32, Vec<Entry>)>;

/// Reads and verifies every chunk `manifest` lists. The chunks are checked and decoded
/// in parallel, one thread per core (they are independent: a shard's chunks hold
/// distinct keys).
pub fn load_chunks(store: &mut dyn Store, manifest: Manifest) -> Result<Loaded, SnapshotError> {
    let mut fetched = Vec::with_capacity(manifest.chunks.len());
    for info in &manifest.chunks {
        let bytes = store.chunk(manifest.marker, info)?.ok_or_else(|| {
            SnapshotError::Corrupt(format!("chunk {}/{} missing", info.shard, info.index))
        })?;
        fetched.push((info, bytes));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, fetched.len().max(1));
    let fetched = &fetched;
    let decoded: Vec<Result<ShardEntries, SnapshotError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    fetched
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|(info, bytes)| Ok((info.shard, decode_chunk(info, bytes)?)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SnapshotError::Corrupt("a chunk decoder panicked".into()))
                })
            })
            .collect()
    });
    let mut shards = vec![Vec::new(); usize::try_from(manifest.shards.max(1)).unwrap_or(1)];
    for part in decoded {
        for (shard, entries) in part? {
            shards
                .get_mut(usize::try_from(shard).unwrap_or(usize::MAX))
                .ok_or_else(|| SnapshotError::Corrupt(format!("shard {shard} out of range")))?
                .extend(entries);
        }
    }
    let loaded = Loaded { manifest, shards };
    if loaded.entries() as u64 != loaded.manifest.entries {
        return Err(SnapshotError::Corrupt(format!(
            "{} entries, the manifest says {}",
            loaded.entries(),
            loaded.manifest.entries
        )));
    }
    Ok(loaded)
}

/// Reads and verifies snapshot `marker`.
pub fn load(store: &mut dyn Store, marker: u64) -> Result<Loaded, SnapshotError> {
    let manifest = read_manifest(store, marker)?;
    load_chunks(store, manifest)
}

/// The newest snapshot that verifies and that `accept` takes (e.g. not newer than the
/// progress topic), skipping any other with a WARN and `pipeline_snapshot_rejected_total`.
/// `accept` sees the manifest before any chunk is read. Also returns the markers seen
/// (for pruning). (A start uses [`recover`], which also reads the progress topic.)
pub fn load_newest(
    store: &mut dyn Store,
    metrics: &Metrics,
    mut accept: impl FnMut(&Manifest) -> Result<(), String>,
) -> Result<(Option<Loaded>, Vec<u64>), SnapshotError> {
    let mut chosen = None;
    let markers = candidates(store, metrics, |store, marker| {
        let manifest = read_manifest(store, marker)?;
        accept(&manifest).map_err(SnapshotError::Corrupt)?;
        let loaded = load_chunks(store, manifest)?;
        chosen = Some(loaded);
        Ok(Ok(()))
    })
    .map_err(|e| match e {
        Candidate::Store(e) => e,
        Candidate::Job(e) => SnapshotError::Corrupt(e.to_string()),
    })?;
    Ok((chosen, markers))
}

/// Why [`candidates`] stopped.
enum Candidate {
    /// The store could not be read.
    Store(SnapshotError),
    /// Something else the job needs failed (the progress topic).
    Job(crate::PipelineError),
}

/// Tries the store's snapshots newest first with `try_one` until one is taken (`Ok`);
/// a snapshot it rejects (`Err(SnapshotError)`) is counted and logged, and the next
/// older one tried; after the newest few (see [`Store::markers`]) every snapshot of the
/// store. `try_one` returns `Ok(Err(_))` for a failure that must stop the start.
/// Returns the markers seen.
fn candidates(
    store: &mut dyn Store,
    metrics: &Metrics,
    mut try_one: impl FnMut(
        &mut dyn Store,
        u64,
    ) -> Result<Result<(), crate::PipelineError>, SnapshotError>,
) -> Result<Vec<u64>, Candidate> {
    let mut markers = store.markers().map_err(Candidate::Store)?;
    let mut tried = std::collections::HashSet::new();
    for widened in [false, true] {
        if widened {
            markers = store.all_markers().map_err(Candidate::Store)?;
        }
        for marker in markers.clone() {
            if !tried.insert(marker) {
                continue;
            }
            match try_one(store, marker) {
                Ok(Ok(())) => return Ok(markers),
                Ok(Err(e)) => return Err(Candidate::Job(e)),
                Err(e) => {
                    metrics.snapshot_rejected.inc();
                    tracing::warn!(
                        store = %store.describe(),
                        marker,
                        "snapshot skipped, trying the previous one: {}",
                        eventbus::error::chain(&e)
                    );
                }
            }
        }
    }
    Ok(markers)
}

fn chunk_bytes(chunks: &[ChunkInfo]) -> u64 {
    chunks.iter().map(|c| c.len).sum()
}

/// The store the configuration names: the directory if one is set, else the topic.
pub fn open_store(
    config: &SnapshotConfig,
    kafka: &eventbus::KafkaSettings,
    topic: &str,
) -> Box<dyn Store> {
    match &config.directory {
        Some(dir) => Box::new(store::DirStore::new(dir)),
        None => Box::new(store::KafkaStore::new(kafka, topic)),
    }
}

/// The snapshots in the store, oldest first, with the chunks their manifests list
/// (`None` for a manifest that does not verify): what the writer prunes.
pub fn existing(store: &mut dyn Store, markers: &[u64]) -> Vec<(u64, Option<Vec<ChunkInfo>>)> {
    let mut out: Vec<(u64, Option<Vec<ChunkInfo>>)> = markers
        .iter()
        .map(|marker| {
            let chunks = store
                .manifest(*marker)
                .ok()
                .flatten()
                .and_then(|bytes| Manifest::from_bytes(&bytes).ok())
                .map(|m| m.chunks);
            (*marker, chunks)
        })
        .collect();
    out.sort_by_key(|(marker, _)| *marker);
    out
}

#[cfg(test)]
mod tests {
    use super::format::{FORMAT, encode_chunks};
    use super::*;
    use crate::logic::{Change, Line, OrderId, compact_order};
    use crate::model::Model;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_event(rng: &mut StdRng, orders: u128) -> InputEvent {
        let order_id: OrderId = rng.random_range(0..orders);
        let lines = |rng: &mut StdRng| {
            (0..rng.random_range(1..3))
                .map(|_| Line {
                    sku: format!("S{}", rng.random_range(0..4)),
                    quantity: rng.random_range(1..5),
                    unit_price_minor: 10,
                })
                .collect::<Vec<_>>()
        };
        match rng.random_range(0..10) {
            0..=2 => InputEvent::OrderCreated {
                order_id,
                currency: "EUR".into(),
                lines: lines(rng),
            },
            3 | 4 => InputEvent::OrderUpdated {
                order_id,
                revision: rng.random_range(0..4),
                change: Change::Lines(lines(rng)),
            },
            5 => InputEvent::OrderUpdated {
                order_id,
                revision: 1,
                change: Change::Cancel,
            },
            6 => InputEvent::PaymentCompleted { order_id },
            7 => InputEvent::PaymentFailed { order_id },
            _ => InputEvent::StockAdjusted {
                sku: format!("S{}", rng.random_range(0..4)),
                delta: rng.random_range(-3..10),
            },
        }
    }

    /// The snapshot's promise: the compacted state (orders by `compact_order`, SKUs by
    /// their adjustment sums), followed by any later records, gives the views the whole
    /// history followed by them gives. Checked with the reference model.
    #[test]
    fn compacted_state_then_more_records_equals_the_whole_history() {
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let records: Vec<(Pos, InputEvent)> = (0..rng.random_range(1..60))
                .map(|i| {
                    let pos = Pos {
                        time: 10 * (1 + i / 5),
                        topic: rng.random_range(0..5),
                        partition: 0,
                        offset: i64::try_from(i).unwrap(),
                    };
                    (pos, random_event(&mut rng, 6))
                })
                .collect();
            // A snapshot is cut between epochs.
            let cut = 10 * rng.random_range(1..=14u64);
            let (before, after): (Vec<_>, Vec<_>) =
                records.iter().cloned().partition(|(pos, _)| pos.time < cut);
            let mut whole = Model::new();
            whole.apply_epoch(records.iter().cloned());

            let mut state = state::tests_support::KeyStateProbe::default();
            state.apply(before);
            let mut restored = Model::new();
            let mut compacted: Vec<(Pos, InputEvent)> = state.restore_records();
            // The model wants distinct positions; the dataflow does not (every SKU's
            // restored adjustment has the same one).
            for (i, (pos, _)) in compacted.iter_mut().enumerate() {
                if *pos == RESTORED_ADJUSTMENT {
                    pos.offset = i64::try_from(i).unwrap();
                }
            }
            compacted.sort_by_key(|record| record.0);
            restored.apply_epoch(compacted);
            restored.apply_epoch(after);
            assert_eq!(restored.orders(), whole.orders(), "seed {seed}");
            assert_eq!(restored.stock(), whole.stock(), "seed {seed}");
            // Compaction keeps at most three records per created order.
            for order in state.orders() {
                let created = order
                    .iter()
                    .any(|(_, e)| matches!(e, InputEvent::OrderCreated { .. }));
                assert!(!created || order.len() <= 3, "seed {seed}: {order:?}");
                assert_eq!(compact_order(&order), order, "idempotent");
            }
        }
    }

    fn loaded_entries(n: u128) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry::Stock {
                sku: format!("S{i}"),
                adjusted: 1,
                version: 5,
            })
            .collect()
    }

    #[test]
    fn a_corrupt_or_torn_newest_snapshot_falls_back_to_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store::DirStore::new(dir.path());
        let write = |store: &mut store::DirStore, marker: u64, n: u128| {
            let entries = loaded_entries(n);
            let chunks = encode_chunks(&entries, 4, 1_024).unwrap();
            let manifest = Manifest {
                format: FORMAT,
                marker,
                epoch: marker - 10,
                offsets: vec![(0, 0, 7)],
                workers: 2,
                shards: 4,
                chunks: chunks.iter().map(|c| c.info.clone()).collect(),
                entries: entries.len() as u64,
                written_at_ms: 0,
            };
            store
                .write(marker, &chunks, &manifest.to_bytes().unwrap())
                .unwrap();
            manifest
        };
        write(&mut store, 100, 50);
        let newest = write(&mut store, 200, 60);
        let metrics = Metrics::new();
        let (loaded, markers) = load_newest(&mut store, &metrics, |_| Ok(())).unwrap();
        assert_eq!(markers, vec![200, 100]);
        let loaded = loaded.unwrap();
        assert_eq!(loaded.manifest.marker, 200);
        assert_eq!(loaded.entries(), 60);
        // Rescaling: the shards split over any worker count cover every key once.
        for peers in [1, 3] {
            let n: usize = (0..peers).map(|w| loaded.records(w, peers).len()).sum();
            assert_eq!(n, 60);
        }

        // A flipped byte in a chunk of the newest: the previous one is taken.
        let info = &newest.chunks[0];
        let path = dir
            .path()
            .join(format!("{:020}/{}-{}.chunk", 200, info.shard, info.index));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (loaded, _) = load_newest(&mut store, &metrics, |_| Ok(())).unwrap();
        assert_eq!(loaded.unwrap().manifest.marker, 100);
        assert_eq!(metrics.snapshot_rejected.get(), 1);

        // A torn newer one (a chunk missing) and one the progress does not cover.
        let torn = write(&mut store, 300, 10);
        let info = &torn.chunks[1];
        std::fs::remove_file(
            dir.path()
                .join(format!("{:020}/{}-{}.chunk", 300, info.shard, info.index)),
        )
        .unwrap();
        let (loaded, _) = load_newest(&mut store, &metrics, |m| {
            if m.marker > 150 {
                Err("after the progress".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(loaded.unwrap().manifest.marker, 100);
        assert_eq!(metrics.snapshot_rejected.get(), 3);

        // None usable: none.
        let (loaded, _) = load_newest(&mut store, &metrics, |_| Err("no".into())).unwrap();
        assert!(loaded.is_none());
    }
}
