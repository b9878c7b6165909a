//! The snapshot format, version [`FORMAT`]: entries sharded by key and split into
//! checksummed chunks, and a manifest (written last) that lists them.
//!
//! Both are bincode (standard configuration, through serde). A chunk is a plain
//! concatenation of encoded [`Entry`] values, so that it can be cut at any entry
//! boundary when it reaches the configured size. The manifest is stored as the SHA-256
//! of its body followed by the body: a torn or altered manifest fails that check, a
//! torn or altered chunk fails the digest the manifest lists for it, and either makes
//! the whole snapshot unusable (the loader then takes the previous one).

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;
use crate::logic::{InputEvent, OrderId, Pos, Sku};

/// The format version written into every manifest.
pub const FORMAT: u32 = 1;

/// One key's state as of the snapshot's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// An order's compacted history ([`crate::logic::compact_order`]).
    Order {
        /// The order.
        order_id: OrderId,
        /// Its records, in `Pos` order.
        records: Vec<(Pos, InputEvent)>,
    },
    /// A SKU's adjustments and view version.
    Stock {
        /// The SKU.
        sku: Sku,
        /// Σ `stock.adjusted` deltas.
        adjusted: i64,
        /// The epoch of its last change in the views (the `stock.updated` version); 0 if
        /// it never changed.
        version: u64,
    },
}

impl Entry {
    /// The shard of this entry among `shards`: differential's hash of the key (the
    /// same hash its exchanges use). Shards are only a unit of loading (any worker may
    /// introduce any record, the dataflow exchanges them by key), so the hash need not
    /// be stable across builds.
    pub fn shard(&self, shards: u32) -> u32 {
        let hash = match self {
            Entry::Order { order_id, .. } => key_hash(order_id),
            Entry::Stock { sku, .. } => key_hash(sku),
        };
        u32::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
    }
}

/// The hash of a key, as differential's exchanges compute it.
pub fn key_hash<K: std::hash::Hash>(key: &K) -> u64 {
    differential_dataflow::Hashable::hashed(key)
}

/// One chunk as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Its shard.
    pub shard: u32,
    /// Its index within the shard.
    pub index: u32,
    /// Its length in bytes.
    pub len: u64,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// The header of a snapshot: what it covers and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The marker time: the snapshot holds every epoch below it. Its identity in a store.
    pub marker: u64,
    /// The last committed epoch below `marker` (the time the state is restored at).
    pub epoch: u64,
    /// `(topic index, partition, offset)`: one past the last record the state includes,
    /// per input partition that ever had a committed record.
    pub offsets: Vec<(u8, i32, i64)>,
    /// Workers of the job that wrote it (information: any count restores it).
    pub workers: u32,
    /// Shard count.
    pub shards: u32,
    /// Every chunk, by shard and index.
    pub chunks: Vec<ChunkInfo>,
    /// Entries over all chunks.
    pub entries: u64,
    /// Wall-clock time of the write, UTC ms.
    pub written_at_ms: u64,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl Manifest {
    /// The stored form: SHA-256 of the body, then the body.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let body = bincode::serde::encode_to_vec(self, config()).map_err(SnapshotError::Encode)?;
        let mut out = sha256(&body).to_vec();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parses and verifies a stored manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() < 32 {
            return Err(SnapshotError::Corrupt(
                "manifest shorter than its checksum".into(),
            ));
        }
        let (sum, body) = bytes.split_at(32);
        if sha256(body).as_slice() != sum {
            return Err(SnapshotError::Corrupt("manifest checksum mismatch".into()));
        }
        let (manifest, _): (Manifest, usize) =
            bincode::serde::decode_from_slice(body, config()).map_err(SnapshotError::Decode)?;
        if manifest.format != FORMAT {
            return Err(SnapshotError::Format {
                found: manifest.format,
                supported: FORMAT,
            });
        }
        Ok(manifest)
    }
}

/// A chunk ready to be stored.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// What the manifest says of it.
    pub info: ChunkInfo,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Encodes entries into chunks of at most about `chunk_bytes` each, by shard.
pub fn encode_chunks(
    entries: &[Entry],
    shards: u32,
    chunk_bytes: usize,
) -> Result<Vec<Chunk>, SnapshotError> {
    let mut by_shard: Vec<Vec<&Entry>> =
        vec![Vec::new(); usize::try_from(shards.max(1)).unwrap_or(1)];
    for entry in entries {
        let shard = usize::try_from(entry.shard(shards)).unwrap_or(0);
        by_shard[shard].push(entry);
    }
    let mut chunks = Vec::new();
    for (shard, entries) in by_shard.into_iter().enumerate() {
        let shard = u32::try_from(shard).unwrap_or(u32::MAX);
        let mut bytes = Vec::new();
        let mut index = 0u32;
        let mut seal = |bytes: &mut Vec<u8>, index: &mut u32| {
            let done = std::mem::take(bytes);
            chunks.push(Chunk {
                info: ChunkInfo {
                    shard,
                    index: *index,
                    len: done.len() as u64,
                    sha256: sha256(&done),
                },
                bytes: done,
            });
            *index += 1;
        };
        for entry in entries {
            bincode::serde::encode_into_std_write(entry, &mut bytes, config())
                .map_err(SnapshotError::Encode)?;
            if bytes.len() >= chunk_bytes {
                seal(&mut bytes, &mut index);
            }
        }
        if !bytes.is_empty() {
            seal(&mut bytes, &mut index);
        }
    }
    Ok(chunks)
}

/// Verifies a chunk against its manifest line and decodes its entries.
pub fn decode_chunk(info: &ChunkInfo, bytes: &[u8]) -> Result<Vec<Entry>, SnapshotError> {
    if bytes.len() as u64 != info.len || sha256(bytes) != info.sha256 {
        return Err(SnapshotError::Corrupt(format!(
            "chunk {}/{} does not match its checksum",
            info.shard, info.index
        )));
    }
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (entry, used): (Entry, usize) =
            bincode::serde::decode_from_slice(rest, config()).map_err(SnapshotError::Decode)?;
        entries.push(entry);
        rest = &rest[used..];
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u128) -> Vec<Entry> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(Entry::Order {
                order_id: i,
                records: vec![(
                    Pos {
                        time: 10,
                        topic: 2,
                        partition: 1,
                        offset: i64::try_from(i).unwrap(),
                    },
                    InputEvent::PaymentCompleted { order_id: i },
                )],
            });
            out.push(Entry::Stock {
                sku: format!("SKU-{i}"),
                adjusted: -3,
                version: 7,
            });
        }
        out
    }

    #[test]
    fn chunks_round_trip_and_detect_corruption() {
        let all = entries(500);
        let chunks = encode_chunks(&all, 4, 1_000).unwrap();
        assert!(chunks.len() > 4, "small chunks split shards");
        let mut back = Vec::new();
        for chunk in &chunks {
            assert!(chunk.bytes.len() < 1_000 + 200);
            for entry in decode_chunk(&chunk.info, &chunk.bytes).unwrap() {
                assert_eq!(entry.shard(4), chunk.info.shard);
                back.push(entry);
            }
        }
        assert_eq!(back.len(), all.len());
        for entry in &all {
            assert!(back.contains(entry));
        }
        let mut bad = chunks[0].bytes.clone();
        bad[3] ^= 1;
        assert!(decode_chunk(&chunks[0].info, &bad).is_err());
        assert!(decode_chunk(&chunks[0].info, &chunks[0].bytes[1..]).is_err());
    }

    #[test]
    fn manifests_verify() {
        let manifest = Manifest {
            format: FORMAT,
            marker: 120,
            epoch: 110,
            offsets: vec![(0, 1, 5)],
            workers: 2,
            shards: 4,
            chunks: vec![],
            entries: 0,
            written_at_ms: 1,
        };
        let bytes = manifest.to_bytes().unwrap();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), manifest);
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(Manifest::from_bytes(&bad).is_err());
        assert!(Manifest::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let future = Manifest {
            format: 2,
            ..manifest
        };
        assert!(matches!(
            Manifest::from_bytes(&future.to_bytes().unwrap()),
            Err(SnapshotError::Format { .. })
        ));
    }
}
