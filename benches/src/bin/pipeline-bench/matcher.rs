//! The matching consumer: when each order's effect on its own SKU became readable on
//! `stock.updated` with read_committed.
//!
//! It runs on a [`crate::reader`] thread: the load's thousands of request tasks must
//! never delay the clock that stamps a record as readable, or the end-to-end figures
//! would include the load generator's queueing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::load::unique_index;
use eventbus::RegistryClient;
use eventbus::kafka::{BorrowedMessage, Message};
use schemas::StockUpdated;

use crate::reader::{OnRecord, create_time_ms};

/// Per order index: when its SKU's restock and the order's effect became readable.
///
/// The order's effect is the SKU's first record that differs from the restocked state
/// (`on_hand = restock_units, reserved = 0`): normally the reservation (`reserved = 1`).
/// When the pipeline ingests an order and its payment in the same epoch, which happens
/// when it is behind, the epoch's consolidated output shows only the sale
/// (`on_hand = restock_units - 1, reserved = 0`); that record is the order's effect too.
pub(crate) struct Matcher {
    t0: Instant,
    prefix: String,
    /// Units of the restock (0 without one).
    restock_units: i64,
    reserved_at: Vec<AtomicU64>,
    sold_at: Vec<AtomicU64>,
    /// The sale record's timestamp (the sink's produce time, ms since the epoch).
    sale_record_ms: Vec<AtomicU64>,
    restocked_at: Vec<AtomicU64>,
    reserved: AtomicU64,
    /// Orders whose sale (payment completed: `on_hand` below the restock) became
    /// readable.
    pub(crate) sold: AtomicU64,
    /// Orders whose first visible effect was the sale (order and payment in one epoch).
    pub(crate) sale_first: AtomicU64,
    /// SKUs whose restock became readable.
    pub(crate) restocked: AtomicU64,
    /// Records read.
    pub(crate) records: AtomicU64,
    /// Records of keys that are not the run's SKUs.
    pub(crate) foreign: AtomicU64,
    /// Records that did not decode as `StockUpdated`.
    pub(crate) undecodable: AtomicU64,
}

impl Matcher {
    /// A matcher of `orders` orders of unique SKUs `<prefix><index>`.
    pub(crate) fn new(prefix: String, restock_units: i64, orders: u64) -> Matcher {
        let slots = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Matcher {
            t0: Instant::now(),
            prefix,
            restock_units,
            reserved_at: slots(orders),
            sold_at: slots(orders),
            sale_record_ms: slots(orders),
            restocked_at: slots(orders),
            reserved: AtomicU64::new(0),
            sold: AtomicU64::new(0),
            sale_first: AtomicU64::new(0),
            restocked: AtomicU64::new(0),
            records: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        (at - self.t0).as_nanos() as u64 + 1
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        (stamp > 0).then(|| self.t0 + Duration::from_nanos(stamp - 1))
    }

    /// When order `i`'s effect (reservation or sale) became readable.
    pub(crate) fn reserved_at(&self, i: u64) -> Option<Instant> {
        let slot = self.reserved_at.get(i as usize)?;
        self.instant(slot.load(Ordering::Acquire))
    }

    /// When order `i`'s sale (its payment completed, `on_hand` below the restock) became
    /// readable.
    pub(crate) fn sold_at(&self, i: u64) -> Option<Instant> {
        let slot = self.sold_at.get(i as usize)?;
        self.instant(slot.load(Ordering::Acquire))
    }

    /// The timestamp of order `i`'s sale record (the sink's produce time), ms since the
    /// epoch.
    pub(crate) fn sale_record_ms(&self, i: u64) -> Option<u64> {
        let ms = self.sale_record_ms.get(i as usize)?.load(Ordering::Relaxed);
        (ms > 0).then_some(ms)
    }

    /// Sets `slot` unless already set; true if this was the first.
    fn first(slot: Option<&AtomicU64>, stamp: u64, counter: &AtomicU64) -> bool {
        let first = slot.is_some_and(|slot| {
            slot.compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if first {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        first
    }
}

impl OnRecord for Matcher {
    async fn record(
        &self,
        registry: &RegistryClient,
        topic: &str,
        msg: &BorrowedMessage<'_>,
        at: Instant,
    ) {
        self.records.fetch_add(1, Ordering::Relaxed);
        let index = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| unique_index(&self.prefix, k));
        let Some(index) = index else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match eventbus::codec::decode::<StockUpdated>(registry, topic, msg.payload()).await {
            Ok((event, _)) => {
                let stamp = self.stamp(at);
                let i = index as usize;
                if event.reserved > 0 || event.on_hand != self.restock_units {
                    let first = Self::first(self.reserved_at.get(i), stamp, &self.reserved);
                    if first && event.reserved == 0 {
                        self.sale_first.fetch_add(1, Ordering::Relaxed);
                    }
                    if event.on_hand < self.restock_units
                        && Self::first(self.sold_at.get(i), stamp, &self.sold)
                        && let Some(slot) = self.sale_record_ms.get(i)
                    {
                        slot.store(create_time_ms(msg), Ordering::Relaxed);
                    }
                } else if event.on_hand > 0 {
                    Self::first(self.restocked_at.get(i), stamp, &self.restocked);
                }
            }
            Err(_) => {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
