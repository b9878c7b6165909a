//! Stock events, keyed by SKU: `stock.adjusted` (by hand, through ingress) and
//! `stock.updated` (computed by the dataflow job).
//!
//! `stock.updated` carries *absolute* numbers and a version that only grows, never
//! deltas. Its topic is compacted by SKU, so the latest record per SKU is the current
//! view; reading it twice, or reading an older record after a newer one, is harmless for
//! a consumer that keeps the highest version. For the same reason its CloudEvents id is
//! not random but derived from SKU and version ([`StockUpdated::derived_event_id`]): a
//! replay that re-emits the same numbers emits the same id.

use apache_avro::Schema;
use uuid::Uuid;

use crate::{
    Event, SchemaError, Violations, codec,
    registry::{STOCK_ADJUSTED, STOCK_UPDATED},
    validation::{
        validate_adjustment_reason, validate_id, validate_sku, validate_stock_delta,
        validate_time_ms,
    },
};

/// The namespace of [`StockUpdated::derived_event_id`] (a fixed, random UUID: changing
/// it would change every derived id).
pub const STOCK_UPDATED_ID_NAMESPACE: Uuid =
    Uuid::from_u128(0x3122_0054_dd3e_48c4_8a7c_9ef2_8d14_ee47);

/// Stock on hand of a SKU was changed by hand (topic `inventory-service.stock.adjusted`,
/// key: SKU).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StockAdjusted {
    /// Unique id of this event (CloudEvents `ce_id`).
    #[serde(with = "codec::uuid_text")]
    pub event_id: Uuid,
    /// The SKU adjusted; the Kafka key.
    pub sku: String,
    /// Units added (positive) or removed (negative); never 0, `|delta| <= 1_000_000_000`.
    pub delta: i64,
    /// Why, in words, 1 to 200 characters.
    pub reason: String,
    /// When the adjustment was accepted, UTC milliseconds.
    pub adjusted_at: i64,
}

impl Event for StockAdjusted {
    const TOPIC: &'static str = "inventory-service.stock.adjusted";
    const TYPE: &'static str = "stock.adjusted";

    schema_binding!(STOCK_ADJUSTED);
    fn key(&self) -> String {
        self.sku.clone()
    }
    fn event_id(&self) -> String {
        self.event_id.to_string()
    }
    fn time_ms(&self) -> i64 {
        self.adjusted_at
    }
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::default();
        v.check("event_id", validate_id(&self.event_id));
        v.check("sku", validate_sku(&self.sku));
        v.check("delta", validate_stock_delta(self.delta));
        v.check("reason", validate_adjustment_reason(&self.reason));
        v.check("adjusted_at", validate_time_ms(self.adjusted_at));
        v.into_result()
    }
}

/// The current numbers of one SKU (topic `inventory-service.stock.updated`, compacted,
/// key: SKU).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StockUpdated {
    /// The SKU; the Kafka key.
    pub sku: String,
    /// Units in stock: adjustments minus sold units; negative if more was sold than stocked.
    pub on_hand: i64,
    /// Units held by open orders; never negative.
    pub reserved: i64,
    /// `on_hand - reserved`; negative means oversold, and is shown.
    pub available: i64,
    /// Starts at 1 and only grows; keep the highest seen.
    pub version: i64,
    /// When the numbers were computed, UTC milliseconds.
    pub updated_at: i64,
}

impl StockUpdated {
    /// The numbers of `sku`, with `available` computed as `on_hand - reserved`
    /// (saturating; numbers that large break [`Event::validate`]'s rules anyway).
    pub fn new(
        sku: impl Into<String>,
        on_hand: i64,
        reserved: i64,
        version: i64,
        updated_at: i64,
    ) -> Self {
        Self {
            sku: sku.into(),
            on_hand,
            reserved,
            available: on_hand.saturating_sub(reserved),
            version,
            updated_at,
        }
    }

    /// The event's deterministic id: the name-based (v5) UUID of `"{sku}@{version}"` in
    /// [`STOCK_UPDATED_ID_NAMESPACE`]. `@` cannot occur in a valid SKU, so different
    /// (sku, version) pairs never share a name.
    pub fn derived_event_id(&self) -> Uuid {
        let name = format!("{}@{}", self.sku, self.version);
        Uuid::new_v5(&STOCK_UPDATED_ID_NAMESPACE, name.as_bytes())
    }
}

impl Event for StockUpdated {
    const TOPIC: &'static str = "inventory-service.stock.updated";
    const TYPE: &'static str = "stock.updated";

    schema_binding!(STOCK_UPDATED);
    fn key(&self) -> String {
        self.sku.clone()
    }
    /// [`StockUpdated::derived_event_id`], as text.
    fn event_id(&self) -> String {
        self.derived_event_id().to_string()
    }
    fn time_ms(&self) -> i64 {
        self.updated_at
    }
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::default();
        v.check("sku", validate_sku(&self.sku));
        if self.reserved < 0 {
            v.push(
                "reserved",
                format!("must not be negative, got {}", self.reserved),
            );
        }
        match self.on_hand.checked_sub(self.reserved) {
            Some(expected) if expected == self.available => {}
            Some(expected) => v.push(
                "available",
                format!(
                    "must equal on_hand - reserved, {expected}, got {}",
                    self.available
                ),
            ),
            None => v.push(
                "available",
                "cannot be checked: on_hand - reserved overflows a 64-bit integer",
            ),
        }
        if self.version < 1 {
            v.push(
                "version",
                format!("must be at least 1, got {}", self.version),
            );
        }
        v.check("updated_at", validate_time_ms(self.updated_at));
        v.into_result()
    }
}
