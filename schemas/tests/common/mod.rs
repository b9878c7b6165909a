//! Valid sample events shared by the integration tests.

#![allow(dead_code)] // Each test binary uses a different subset.

use schemas::{
    OrderChangeKind, OrderCreated, OrderLine, OrderUpdated, PaymentCompleted, PaymentFailed,
    StockAdjusted, StockUpdated, reason_codes,
};
use uuid::Uuid;

/// 2026-01-02T03:04:05.678Z
pub const T: i64 = 1_767_323_045_678;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_0000 | n)
}

pub fn lines() -> Vec<OrderLine> {
    vec![
        OrderLine::new("SKU-1", 2, 1999),
        OrderLine::new("0SKU_2", 1, 500),
    ]
}

pub fn order_created() -> OrderCreated {
    OrderCreated {
        event_id: id(1),
        order_id: id(2),
        customer_id: "customer-42 (Zoë)".to_owned(),
        currency: "EUR".to_owned(),
        lines: lines(),
        total_minor: 2 * 1999 + 500,
        created_at: T,
        channel: Some("REST".to_owned()),
    }
}

pub fn order_updated() -> OrderUpdated {
    OrderUpdated {
        event_id: id(3),
        order_id: id(2),
        revision: 1,
        kind: OrderChangeKind::LinesChanged,
        lines: vec![OrderLine::new("SKU-1", 3, 1999)],
        currency: "EUR".to_owned(),
        total_minor: 3 * 1999,
        updated_at: T + 1,
    }
}

pub fn order_cancelled() -> OrderUpdated {
    OrderUpdated::cancelled(id(4), id(2), 2, "EUR", T + 2)
}

pub fn payment_completed() -> PaymentCompleted {
    PaymentCompleted {
        event_id: id(5),
        order_id: id(2),
        payment_id: id(6),
        amount_minor: 4498,
        currency: "EUR".to_owned(),
        completed_at: T + 3,
    }
}

pub fn payment_failed() -> PaymentFailed {
    PaymentFailed {
        event_id: id(7),
        order_id: id(2),
        amount_minor: 4498,
        currency: "JPY".to_owned(),
        reason_code: reason_codes::CUSTOMER_DECLINED.to_owned(),
        reason: "The card issuer declined the charge.".to_owned(),
        failed_at: T + 4,
    }
}

pub fn stock_adjusted() -> StockAdjusted {
    StockAdjusted {
        event_id: id(8),
        sku: "SKU-1".to_owned(),
        delta: -25,
        reason: "stocktake correction".to_owned(),
        adjusted_at: T + 5,
    }
}

pub fn stock_updated() -> StockUpdated {
    // Oversold: available is negative, and that is valid.
    StockUpdated::new("SKU-1", 3, 5, 7, T + 6)
}
