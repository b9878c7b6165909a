//! The served views: stock per SKU and the state of every order, as of a committed epoch.
//!
//! The dataflow's output is exchanged to worker 0 of process 0, whose sink thread applies
//! each epoch's changes here **after** the epoch's Kafka transaction committed. So a view
//! never shows anything a crash could take back: an epoch that was computed but not
//! committed may be recomputed differently after a restart (its records can get other
//! epochs), and a reader must never have seen it. The views and the `stock.updated` topic
//! move in lockstep, epoch by epoch, whatever the number of workers and processes.
//!
//! After a restart the views are rebuilt from the replayed epochs (which carry their
//! original times, so versions match the topic) and [`Views::is_ready`] turns true when
//! the replay is complete.
//!
//! Rules the API documents:
//! - a SKU whose numbers are all zero is not in the stock view (as in
//!   [`crate::logic`]); asking for it answers zeros, with the version of the epoch at
//!   which its numbers last changed (0 if they never did);
//! - `version` of a SKU is the epoch (UTC ms) of its last change, the same number as the
//!   `version` of its last `stock.updated` record;
//! - every answer carries `as_of_epoch`, the committed epoch it reflects.
//!
//! Readers take a read lock for the time of one answer; the sink thread takes the write
//! lock once per committed transaction. Changes are also published on a broadcast
//! channel for the SSE and gRPC streams; a subscriber that falls too far behind is told
//! it lagged and should re-read the snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::logic::{OrderId, OrderView, Sku, StockLevel};

/// How many change batches a slow subscriber may fall behind before it is told it lagged.
const CHANNEL_CAPACITY: usize = 1_024;

/// One SKU's change at an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StockChange {
    /// The SKU.
    pub sku: Sku,
    /// Its new numbers (zeros when it left the view).
    pub level: StockLevel,
    /// The epoch of the change, which is also the `stock.updated` version.
    pub version: u64,
}

/// One order's change at an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderChange {
    /// The order.
    pub order_id: OrderId,
    /// Its new view; `None` if it left the view (only possible if input is retracted).
    pub view: Option<OrderView>,
}

/// The changes of one committed epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// The epoch (UTC ms).
    pub epoch: u64,
    /// Changed SKUs.
    pub stock: Vec<StockChange>,
    /// Changed orders.
    pub orders: Vec<OrderChange>,
}

/// The state behind the lock.
#[derive(Clone, Debug, Default)]
pub struct ViewState {
    /// The committed epoch the views reflect; `None` before the first.
    pub as_of: Option<u64>,
    /// SKUs with non-zero numbers.
    pub stock: BTreeMap<Sku, StockLevel>,
    /// The version (epoch of the last change) of every SKU ever seen.
    pub versions: HashMap<Sku, u64>,
    /// Every order whose creation was seen.
    pub orders: HashMap<OrderId, OrderView>,
    /// One past the last committed offset of every input partition:
    /// `(topic index, partition) -> upper`. When these equal the partitions' end
    /// offsets, the views include every record written so far.
    pub offsets: BTreeMap<(u8, i32), i64>,
}

impl ViewState {
    /// One SKU: its level (zeros if not in the view) and version (0 if never seen).
    pub fn sku(&self, sku: &str) -> (StockLevel, u64) {
        (
            self.stock.get(sku).copied().unwrap_or_default(),
            self.versions.get(sku).copied().unwrap_or(0),
        )
    }

    /// The whole state as one change batch at `as_of` (0 before any epoch): what a
    /// stream sends first when its reader asks for a snapshot.
    pub fn snapshot(&self) -> Delta {
        Delta {
            epoch: self.as_of.unwrap_or(0),
            stock: self
                .stock
                .iter()
                .map(|(sku, level)| StockChange {
                    sku: sku.clone(),
                    level: *level,
                    version: self.sku(sku).1,
                })
                .collect(),
            orders: self
                .orders
                .iter()
                .map(|(id, view)| OrderChange {
                    order_id: *id,
                    view: Some(view.clone()),
                })
                .collect(),
        }
    }

    fn apply(&mut self, delta: &Delta) {
        for change in &delta.stock {
            let level = change.level;
            if level.on_hand == 0 && level.reserved == 0 {
                self.stock.remove(&change.sku);
            } else {
                self.stock.insert(change.sku.clone(), level);
            }
            self.versions.insert(change.sku.clone(), change.version);
        }
        for change in &delta.orders {
            match &change.view {
                Some(view) => {
                    self.orders.insert(change.order_id, view.clone());
                }
                None => {
                    self.orders.remove(&change.order_id);
                }
            }
        }
        self.as_of = Some(self.as_of.map_or(delta.epoch, |a| a.max(delta.epoch)));
    }
}

/// The shared views. Cheap to clone.
#[derive(Clone)]
pub struct Views {
    state: Arc<RwLock<ViewState>>,
    ready: Arc<AtomicBool>,
    changes: broadcast::Sender<Arc<Delta>>,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Default for Views {
    fn default() -> Self {
        Views::new()
    }
}

impl Views {
    /// Empty, not ready.
    pub fn new() -> Self {
        Views {
            state: Arc::default(),
            ready: Arc::default(),
            changes: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }

    /// A read guard on the state, for one consistent answer.
    pub fn read(&self) -> RwLockReadGuard<'_, ViewState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one committed (or replayed) epoch and publishes it to subscribers.
    pub fn apply(&self, delta: Delta, offsets: &[(u8, i32, i64)]) {
        let delta = Arc::new(delta);
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.apply(&delta);
            for (topic, partition, upper) in offsets {
                let entry = state.offsets.entry((*topic, *partition)).or_default();
                *entry = (*entry).max(*upper);
            }
        }
        // No subscribers is fine.
        let _ = self.changes.send(delta);
    }

    /// Sets SKU versions restored from a snapshot (the epoch of each SKU's last change).
    pub fn restore_versions(&self, versions: impl IntoIterator<Item = (crate::logic::Sku, u64)>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.versions.extend(versions);
    }

    /// Records the offsets a replay restored (the committed uppers of the bindings).
    pub fn restore_offsets(&self, offsets: impl IntoIterator<Item = ((u8, i32), i64)>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.offsets.extend(offsets);
    }

    /// Marks the views as rebuilt (replay done), as of `epoch` if the replay had one.
    pub fn set_ready(&self, epoch: Option<u64>) {
        if let Some(epoch) = epoch {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.as_of = Some(state.as_of.map_or(epoch, |a| a.max(epoch)));
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the views are rebuilt and current (after a restart's replay).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A receiver of every change batch from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Delta>> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::OrderStatus;

    #[test]
    fn deltas_apply_and_zero_skus_leave_with_their_version() {
        let views = Views::new();
        let mut rx = views.subscribe();
        let level = StockLevel {
            on_hand: 5,
            reserved: 2,
            available: 3,
        };
        let order = OrderView {
            status: OrderStatus::Created,
            currency: "EUR".into(),
            total_minor: 10,
            lines: vec![],
        };
        views.apply(
            Delta {
                epoch: 100,
                stock: vec![StockChange {
                    sku: "A".into(),
                    level,
                    version: 100,
                }],
                orders: vec![OrderChange {
                    order_id: 9,
                    view: Some(order.clone()),
                }],
            },
            &[(0, 1, 7)],
        );
        assert_eq!(views.read().sku("A"), (level, 100));
        assert_eq!(views.read().orders[&9], order);
        assert_eq!(rx.try_recv().unwrap().epoch, 100);
        views.apply(
            Delta {
                epoch: 110,
                stock: vec![StockChange {
                    sku: "A".into(),
                    level: StockLevel::default(),
                    version: 110,
                }],
                orders: vec![],
            },
            &[(0, 1, 9)],
        );
        let state = views.read();
        assert!(state.stock.is_empty());
        assert_eq!(state.sku("A"), (StockLevel::default(), 110));
        assert_eq!(state.sku("never"), (StockLevel::default(), 0));
        assert_eq!(state.as_of, Some(110));
        assert_eq!(state.offsets[&(0, 1)], 9);
        assert!(!views.is_ready());
    }
}
