//! The clock: one timeline for five topics, and the durable bindings that let a restart
//! put every record back at exactly the time it had.
//!
//! # Why a clock
//!
//! Offsets of different topics (and partitions) are not comparable, yet the dataflow
//! must decide "which came first" between, say, a cancellation and a payment of the
//! same order. So every record is stamped with an **ingestion epoch**: the wall-clock
//! millisecond at which a worker read it, rounded down to the epoch length (10 ms by
//! default). A record's [`Pos`](crate::logic::Pos) is `(epoch, topic, partition,
//! offset)`, a total order that does not depend on the number of workers. The epoch is
//! also the record's timely timestamp, so the dataflow's frontier *is* the clock: when
//! every worker has moved past epoch `t`, `t` is closed and its output can be released.
//!
//! # Why bindings (reclocking)
//!
//! The logic folds each order's records in `Pos` order, so the state it computes
//! depends on the epochs the records got. A restarted job rebuilds its state by reading
//! the inputs again; if it stamped them with new epochs, a cancellation and a payment
//! that were once in different epochs could land in the same one (or the other way
//! round), the rebuilt state could differ from what was emitted, and the next
//! `stock.updated` would contradict the last. The fix is Materialize's "remap"
//! collection: the sink commits, in the same Kafka transaction as an epoch's output, a
//! progress record with the **upper offset** of every partition that epoch ingested
//! (one past its last record). The sequence of committed records is then a function
//! from `(partition, offset)` to epoch: a record belongs to the first committed epoch
//! whose upper for its partition is above its offset ([`Bindings::bind`]). On restart
//! the job reads all bindings, replays every input partition from its beginning up to
//! the last committed upper at exactly the bound epochs (so it recomputes the very
//! output it emitted, and emits none of it again), then continues with fresh epochs
//! strictly after the last committed one.
//!
//! Records after the last committed upper were never part of a committed epoch; they
//! simply get fresh epochs, as if read for the first time.
//!
//! # Limits
//!
//! The bindings are never compacted. Without snapshots the input topics must still hold
//! every record the bindings cover: deleting input records by retention loses exactly
//! the state they contributed. With snapshots ([`crate::snapshot`]) a restart reads each
//! partition only from the restored snapshot's offset, so the inputs need only hold
//! what follows it (the job refuses to start otherwise), and the progress topic only
//! from the snapshot's epoch on (its end read backwards, see [`crate::progress`]).

use std::collections::{HashMap, HashSet};

use crate::error::ProgressError;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` rounded down to a multiple of `epoch_ms`.
pub fn epoch_of(ms: u64, epoch_ms: u64) -> u64 {
    ms - ms % epoch_ms.max(1)
}

/// A partition of an input: `(topic index, partition)`.
pub type Partition = (u8, i32);

/// Which worker reads a partition: `(partition + topic) % peers`, over all workers of all
/// processes. Deterministic, so every worker knows its share without coordination, and
/// partition `p` of the co-partitioned order and payment topics lands on different
/// workers for different topics (spreading the load of a hot partition number).
pub fn owner(topic: u8, partition: i32, peers: usize) -> usize {
    let partition = usize::try_from(partition).unwrap_or(0);
    (partition + usize::from(topic)) % peers.max(1)
}

/// The committed time bindings: for each input partition, the epochs that ingested
/// records from it and the upper offset each reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bindings {
    /// Per partition: `(upper, epoch)` in increasing order of both.
    partitions: HashMap<Partition, Vec<(i64, u64)>>,
    /// The first and last committed epochs.
    first: Option<u64>,
    last: Option<u64>,
    /// Committed epochs.
    epochs: usize,
    /// Records that were dead-lettered in a committed epoch: `(topic, partition, offset)`.
    dead: HashSet<(u8, i32, i64)>,
}

impl Bindings {
    /// No bindings: a job that never committed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records dead-lettered offsets, which a replay skips (see [`Bindings::is_dead`]).
    pub fn add_dead(&mut self, dead: impl IntoIterator<Item = (u8, i32, i64)>) {
        self.dead.extend(dead);
    }

    /// Appends one committed epoch and the uppers of the partitions it ingested.
    pub fn push(
        &mut self,
        time: u64,
        uppers: impl IntoIterator<Item = (u8, i32, i64)>,
    ) -> Result<(), ProgressError> {
        if let Some(last) = self.last
            && time <= last
        {
            return Err(ProgressError::EpochOrder { time, last });
        }
        for (topic, partition, upper) in uppers {
            let list = self.partitions.entry((topic, partition)).or_default();
            if let Some((previous, _)) = list.last()
                && upper <= *previous
            {
                return Err(ProgressError::UpperOrder {
                    topic,
                    partition,
                    previous: *previous,
                    upper,
                    time,
                });
            }
            list.push((upper, time));
        }
        self.first.get_or_insert(time);
        self.last = Some(time);
        self.epochs += 1;
        Ok(())
    }

    /// The epoch the record at `offset` of `(topic, partition)` was committed in, or
    /// `None` if it is at or after the partition's last committed upper.
    pub fn bind(&self, topic: u8, partition: i32, offset: i64) -> Option<u64> {
        let list = self.partitions.get(&(topic, partition))?;
        let index = list.partition_point(|(upper, _)| *upper <= offset);
        list.get(index).map(|(_, epoch)| *epoch)
    }

    /// Whether the record was dead-lettered when its epoch was committed.
    pub fn is_dead(&self, topic: u8, partition: i32, offset: i64) -> bool {
        self.dead.contains(&(topic, partition, offset))
    }

    /// Records a committed dead letter.
    pub fn push_dead(&mut self, topic: u8, partition: i32, offset: i64) {
        self.dead.insert((topic, partition, offset));
    }

    /// One past the last committed offset of `(topic, partition)`; 0 if none.
    pub fn upper(&self, topic: u8, partition: i32) -> i64 {
        self.partitions
            .get(&(topic, partition))
            .and_then(|list| list.last())
            .map_or(0, |(upper, _)| *upper)
    }

    /// Every partition's last committed upper.
    pub fn uppers(&self) -> impl Iterator<Item = (Partition, i64)> + '_ {
        self.partitions
            .iter()
            .filter_map(|(p, list)| list.last().map(|(upper, _)| (*p, *upper)))
    }

    /// The first committed epoch, if any: no replayed record has an earlier time.
    pub fn first_epoch(&self) -> Option<u64> {
        self.first
    }

    /// The last committed epoch, if any: output at or before it was emitted already.
    pub fn last_epoch(&self) -> Option<u64> {
        self.last
    }

    /// How many epochs were committed.
    pub fn epochs(&self) -> usize {
        self.epochs
    }

    /// Whether nothing was ever committed.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_bind_to_the_first_epoch_whose_upper_is_above_them() {
        let mut b = Bindings::new();
        b.push(100, [(0, 0, 3), (1, 2, 1)]).unwrap();
        b.push(110, [(0, 0, 5)]).unwrap();
        b.push(130, [(1, 2, 4), (0, 1, 2)]).unwrap();
        assert_eq!(b.bind(0, 0, 0), Some(100));
        assert_eq!(b.bind(0, 0, 2), Some(100));
        assert_eq!(b.bind(0, 0, 3), Some(110));
        assert_eq!(b.bind(0, 0, 4), Some(110));
        assert_eq!(b.bind(0, 0, 5), None, "at the upper: not committed");
        assert_eq!(b.bind(1, 2, 0), Some(100));
        assert_eq!(b.bind(1, 2, 3), Some(130));
        assert_eq!(b.bind(0, 1, 1), Some(130));
        assert_eq!(b.bind(4, 0, 0), None, "never ingested");
        assert_eq!(b.upper(0, 0), 5);
        assert_eq!(b.upper(2, 0), 0);
        assert_eq!(
            (b.first_epoch(), b.last_epoch(), b.epochs()),
            (Some(100), Some(130), 3)
        );
    }

    #[test]
    fn out_of_order_progress_is_refused() {
        let mut b = Bindings::new();
        b.push(100, [(0, 0, 3)]).unwrap();
        assert!(b.push(100, [(0, 0, 4)]).is_err());
        assert!(b.push(90, [(0, 0, 4)]).is_err());
        assert!(b.push(120, [(0, 0, 3)]).is_err(), "upper must grow");
    }

    #[test]
    fn epochs_and_owners() {
        assert_eq!(epoch_of(1_234, 10), 1_230);
        assert_eq!(epoch_of(1_230, 10), 1_230);
        assert_eq!(epoch_of(7, 1), 7);
        assert_eq!(owner(0, 0, 4), 0);
        assert_eq!(owner(1, 0, 4), 1);
        assert_eq!(owner(3, 5, 4), 0);
        assert_eq!(owner(4, 5, 1), 0);
        // Every worker owns a share of 5 topics x 6 partitions.
        let mut counts = [0usize; 4];
        for t in 0..5u8 {
            for p in 0..6 {
                counts[owner(t, p, 4)] += 1;
            }
        }
        assert!(counts.iter().all(|c| *c >= 7), "{counts:?}");
    }
}
