//! Requests → domain values, with every violated rule listed by field path.
//!
//! Both APIs turn what they received into the same API-neutral *drafts* ([`OrderDraft`],
//! [`ChangeDraft`], [`AdjustmentDraft`]: every field optional, numbers as wide as the
//! wire allows) and call the same functions here, so a request is refused with the same
//! rules and the same paths (`lines[2].quantity`) whether it came as JSON or protobuf.
//! The rules themselves are not written here: every check is a helper of
//! [`schemas::validation`] with its limits constants, the very functions the events'
//! own [`schemas::Event::validate`] uses, so the API can never accept what a consumer
//! would refuse, nor refuse what it would accept.
//!
//! What this module adds is what only a request has:
//! * **requiredness**: a field missing from JSON (or `null`) is `is required`, reported
//!   for every missing field at once, which plain serde cannot do (it stops at the
//!   first missing field), hence the `Option`s in the drafts;
//! * **wide numbers**: quantities arrive as `i64` and are range-checked before they are
//!   narrowed to the event's `int`, so `2^40` is "must be between 1 and 10000", never a
//!   wrapped number;
//! * **totals**: the total is computed with checked arithmetic over the raw numbers,
//!   so even lines that break the limits cannot overflow; an overflow is one more
//!   violation on `total_minor`, the path the event uses;
//! * the shape of a change: either new `lines` or `status: CANCELLED`, never both;
//! * idempotency keys ([`IdempotencyKey`]).

use schemas::validation::{
    parse_id, validate_adjustment_reason, validate_currency, validate_customer_id,
    validate_quantity, validate_sku, validate_stock_delta, validate_unit_price_minor,
};
use schemas::{FieldViolation, MAX_LINES_PER_ORDER, OrderLine, Violations};
use uuid::Uuid;

/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// The description of a missing field.
pub const REQUIRED: &str = "is required";

/// One line as received: any field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineDraft {
    /// Stock keeping unit.
    pub sku: Option<String>,
    /// Units, as wide as the wire allows.
    pub quantity: Option<i64>,
    /// Unit price in minor units.
    pub unit_price_minor: Option<i64>,
}

/// An order as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderDraft {
    /// The customer.
    pub customer_id: Option<String>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// The lines.
    pub lines: Option<Vec<LineDraft>>,
}

/// A change of an order as received: new lines, or a status (only `CANCELLED`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeDraft {
    /// The order, as text (a path parameter or a message field).
    pub order_id: Option<String>,
    /// The complete new lines.
    pub lines: Option<Vec<LineDraft>>,
    /// The requested status.
    pub status: Option<String>,
    /// The order's currency, if the client says it.
    pub currency: Option<String>,
}

/// A stock adjustment as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustmentDraft {
    /// The SKU.
    pub sku: Option<String>,
    /// Units added (positive) or removed (negative).
    pub delta: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// A valid new order; the total is computed, never taken from the client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewOrder {
    /// The customer.
    pub customer_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// 1 to [`MAX_LINES_PER_ORDER`] valid lines.
    pub lines: Vec<OrderLine>,
    /// `Σ quantity × unit_price_minor`.
    pub total_minor: i64,
}

/// What a valid change does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ChangeKind {
    /// Replace the lines; the new total is computed.
    Lines {
        /// 1 to [`MAX_LINES_PER_ORDER`] valid lines.
        lines: Vec<OrderLine>,
        /// `Σ quantity × unit_price_minor`.
        total_minor: i64,
    },
    /// Cancel the order.
    Cancel,
}

/// A valid change of an order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrderChange {
    /// The order.
    pub order_id: Uuid,
    /// What to do.
    pub kind: ChangeKind,
    /// The order's currency if the client gave it (valid); else it is looked up.
    pub currency: Option<String>,
}

/// A valid stock adjustment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adjustment {
    /// The SKU.
    pub sku: String,
    /// Units added or removed; never 0.
    pub delta: i64,
    /// Why.
    pub reason: String,
}

/// A valid idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_CHARS`] visible ASCII characters
/// (`!` to `~`). Visible ASCII fits in an HTTP header, a Kafka header and a log line as
/// is; UUIDs, ULIDs and base64 tokens all qualify.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a key; the error is the violated rule, under the field `idempotency_key`
    /// (each API names the field its own way: `Idempotency-Key`, `request_id`).
    pub fn parse(text: &str) -> Result<Self, FieldViolation> {
        let broken = |description: String| FieldViolation::new("idempotency_key", description);
        if text.is_empty() {
            return Err(broken(format!(
                "must not be empty: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters, e.g. a UUID"
            )));
        }
        if let Some(bad) = text.chars().find(|c| !matches!(c, '!'..='~')) {
            return Err(broken(format!(
                "may only contain visible ASCII characters ('!' to '~'); found {bad:?}"
            )));
        }
        if text.len() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(broken(format!(
                "must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {}",
                text.len()
            )));
        }
        Ok(IdempotencyKey(text.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a required text field with `check`, recording "is required" when missing.
fn required_text(
    violations: &mut Violations,
    field: &str,
    value: Option<String>,
    check: fn(&str) -> Option<String>,
) -> Option<String> {
    match value {
        None => {
            violations.push(field, REQUIRED);
            None
        }
        Some(value) => match check(&value) {
            Some(description) => {
                violations.push(field, description);
                None
            }
            None => Some(value),
        },
    }
}

/// Checks lines under `field` (`lines`) and computes their total. Every line is
/// checked, also past the maximum count, so one answer lists every problem.
fn validate_line_drafts(
    violations: &mut Violations,
    field: &str,
    drafts: Option<Vec<LineDraft>>,
) -> Option<(Vec<OrderLine>, i64)> {
    let Some(drafts) = drafts else {
        violations.push(field, REQUIRED);
        return None;
    };
    let before = violations.len();
    if drafts.is_empty() {
        violations.push(field, "must have at least 1 line");
    } else if drafts.len() > MAX_LINES_PER_ORDER {
        violations.push(
            field,
            format!(
                "must have at most {MAX_LINES_PER_ORDER} lines, got {}",
                drafts.len()
            ),
        );
    }
    // The total over the raw numbers, checked: `None` once it overflows.
    let mut total: Option<i64> = Some(0);
    let mut lines = Vec::with_capacity(drafts.len());
    for (index, draft) in drafts.into_iter().enumerate() {
        let sku = match draft.sku {
            None => {
                violations.push(format!("{field}[{index}].sku"), REQUIRED);
                None
            }
            Some(sku) => {
                violations.check_with(|| format!("{field}[{index}].sku"), validate_sku(&sku));
                Some(sku)
            }
        };
        let quantity = match draft.quantity {
            None => {
                violations.push(format!("{field}[{index}].quantity"), REQUIRED);
                None
            }
            Some(quantity) => {
                violations.check_with(
                    || format!("{field}[{index}].quantity"),
                    validate_quantity(quantity),
                );
                Some(quantity)
            }
        };
        let price = match draft.unit_price_minor {
            None => {
                violations.push(format!("{field}[{index}].unit_price_minor"), REQUIRED);
                None
            }
            Some(price) => {
                violations.check_with(
                    || format!("{field}[{index}].unit_price_minor"),
                    validate_unit_price_minor(price),
                );
                Some(price)
            }
        };
        if let (Some(quantity), Some(price)) = (quantity, price) {
            total = total.and_then(|t| quantity.checked_mul(price).and_then(|a| t.checked_add(a)));
            if let (Some(sku), Ok(quantity)) = (sku, i32::try_from(quantity)) {
                lines.push(OrderLine::new(sku, quantity, price));
            }
        }
    }
    if total.is_none() {
        violations.push(
            "total_minor",
            "the sum of quantity * unit_price_minor over the lines overflows a 64-bit integer",
        );
    }
    if violations.len() > before {
        return None;
    }
    total.map(|total| (lines, total))
}

/// Checks an order draft: every violation, or the valid order with its total.
pub fn validate_order(draft: OrderDraft) -> Result<NewOrder, Violations> {
    let mut v = Violations::default();
    let customer_id = required_text(
        &mut v,
        "customer_id",
        draft.customer_id,
        validate_customer_id,
    );
    let currency = required_text(&mut v, "currency", draft.currency, validate_currency);
    let lines = validate_line_drafts(&mut v, "lines", draft.lines);
    match (customer_id, currency, lines) {
        (Some(customer_id), Some(currency), Some((lines, total_minor))) if v.is_empty() => {
            Ok(NewOrder {
                customer_id,
                currency,
                lines,
                total_minor,
            })
        }
        _ => Err(v),
    }
}

/// Checks an order id given as text, under `field`.
pub fn validate_order_id(
    violations: &mut Violations,
    field: &str,
    text: Option<&str>,
) -> Option<Uuid> {
    match text {
        None => {
            violations.push(field, REQUIRED);
            None
        }
        Some(text) => match parse_id(text) {
            Ok(id) => Some(id),
            Err(error) => {
                violations.push(field, error.to_string());
                None
            }
        },
    }
}

/// The only status a client may set.
pub const CANCELLED: &str = "CANCELLED";

/// Checks a change draft: exactly one of `lines` and `status` (which must be
/// `CANCELLED`), a valid order id and, if given, a valid currency.
pub fn validate_change(draft: ChangeDraft) -> Result<OrderChange, Violations> {
    let mut v = Violations::default();
    let order_id = validate_order_id(&mut v, "order_id", draft.order_id.as_deref());
    let currency = match draft.currency {
        Some(currency) => {
            v.check("currency", validate_currency(&currency));
            Some(currency)
        }
        None => None,
    };
    let kind = match (draft.lines, draft.status) {
        (Some(_), Some(_)) => {
            let both = "give either `lines` (to replace the lines) or `status: CANCELLED` (to cancel), not both";
            v.push("lines", both);
            v.push("status", both);
            None
        }
        (None, None) => {
            let neither = "one of `lines` (to replace the lines) or `status: CANCELLED` (to cancel) is required";
            v.push("lines", neither);
            v.push("status", neither);
            None
        }
        (Some(lines), None) => validate_line_drafts(&mut v, "lines", Some(lines))
            .map(|(lines, total_minor)| ChangeKind::Lines { lines, total_minor }),
        (None, Some(status)) if status == CANCELLED => Some(ChangeKind::Cancel),
        (None, Some(status)) => {
            v.push(
                "status",
                format!("must be {CANCELLED} (to change lines, send `lines`), got {status:?}"),
            );
            None
        }
    };
    match (order_id, kind) {
        (Some(order_id), Some(kind)) if v.is_empty() => Ok(OrderChange {
            order_id,
            kind,
            currency,
        }),
        _ => Err(v),
    }
}

/// Checks an adjustment draft.
pub fn validate_adjustment(draft: AdjustmentDraft) -> Result<Adjustment, Violations> {
    let mut v = Violations::default();
    let sku = required_text(&mut v, "sku", draft.sku, validate_sku);
    let delta = match draft.delta {
        None => {
            v.push("delta", REQUIRED);
            None
        }
        Some(delta) => match validate_stock_delta(delta) {
            Some(description) => {
                v.push("delta", description);
                None
            }
            None => Some(delta),
        },
    };
    let reason = required_text(&mut v, "reason", draft.reason, validate_adjustment_reason);
    match (sku, delta, reason) {
        (Some(sku), Some(delta), Some(reason)) if v.is_empty() => {
            Ok(Adjustment { sku, delta, reason })
        }
        _ => Err(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i64, price: i64) -> LineDraft {
        LineDraft {
            sku: Some(sku.into()),
            quantity: Some(quantity),
            unit_price_minor: Some(price),
        }
    }

    fn order(lines: Vec<LineDraft>) -> OrderDraft {
        OrderDraft {
            customer_id: Some("c-1".into()),
            currency: Some("EUR".into()),
            lines: Some(lines),
        }
    }

    fn fields(v: &Violations) -> Vec<&str> {
        v.fields().collect()
    }

    #[test]
    fn a_valid_order_gets_its_total() {
        let o = validate_order(order(vec![line("SKU-1", 2, 1999), line("SKU-2", 1, 500)])).unwrap();
        assert_eq!(o.total_minor, 4498);
        assert_eq!(o.lines[0], OrderLine::new("SKU-1", 2, 1999));
    }

    #[test]
    fn every_missing_field_is_listed() {
        let v = validate_order(OrderDraft::default()).unwrap_err();
        assert_eq!(fields(&v), ["customer_id", "currency", "lines"]);
        assert!(v.0.iter().all(|f| f.description == REQUIRED));
        let v = validate_order(order(vec![LineDraft::default()])).unwrap_err();
        assert_eq!(
            fields(&v),
            [
                "lines[0].sku",
                "lines[0].quantity",
                "lines[0].unit_price_minor"
            ]
        );
    }

    #[test]
    fn rules_and_paths_are_the_events() {
        let mut draft = order(vec![
            line("SKU-1", 0, 1),
            line("sku-2", 1, -5),
            line("SKU-3", 1 << 40, 1),
        ]);
        draft.currency = Some("eur".into());
        let v = validate_order(draft).unwrap_err();
        assert_eq!(
            fields(&v),
            [
                "currency",
                "lines[0].quantity",
                "lines[1].sku",
                "lines[1].unit_price_minor",
                "lines[2].quantity"
            ]
        );
        assert!(v.0[0].description.contains("upper case"), "{v}");
    }

    #[test]
    fn too_many_lines_and_overflowing_totals() {
        let v = validate_order(order((0..101).map(|_| line("SKU-1", 1, 1)).collect())).unwrap_err();
        assert_eq!(fields(&v), ["lines"]);
        let v = validate_order(order(vec![line("SKU-1", 2, i64::MAX / 2 + 1)])).unwrap_err();
        assert_eq!(fields(&v), ["lines[0].unit_price_minor", "total_minor"]);
        // The largest valid order does not overflow.
        let max = validate_order(order(
            (0..100)
                .map(|_| line("SKU-1", 10_000, 100_000_000))
                .collect(),
        ))
        .unwrap();
        assert_eq!(max.total_minor, 100 * 10_000 * 100_000_000);
    }

    #[test]
    fn changes_are_lines_xor_cancel() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let base = ChangeDraft {
            order_id: Some(id.into()),
            ..ChangeDraft::default()
        };
        let v = validate_change(base.clone()).unwrap_err();
        assert_eq!(fields(&v), ["lines", "status"]);
        let both = ChangeDraft {
            lines: Some(vec![line("A", 1, 1)]),
            status: Some(CANCELLED.into()),
            ..base.clone()
        };
        assert_eq!(
            fields(&validate_change(both).unwrap_err()),
            ["lines", "status"]
        );
        let paid = ChangeDraft {
            status: Some("PAID".into()),
            ..base.clone()
        };
        assert_eq!(fields(&validate_change(paid).unwrap_err()), ["status"]);
        let cancel = ChangeDraft {
            status: Some(CANCELLED.into()),
            ..base.clone()
        };
        assert_eq!(validate_change(cancel).unwrap().kind, ChangeKind::Cancel);
        let bad_id = ChangeDraft {
            order_id: Some("nope".into()),
            status: Some(CANCELLED.into()),
            currency: Some("XXX".into()),
            ..base
        };
        assert_eq!(
            fields(&validate_change(bad_id).unwrap_err()),
            ["order_id", "currency"]
        );
    }

    #[test]
    fn adjustments() {
        let v = validate_adjustment(AdjustmentDraft {
            sku: Some("SKU-1".into()),
            delta: Some(0),
            reason: Some(String::new()),
        })
        .unwrap_err();
        assert_eq!(fields(&v), ["delta", "reason"]);
        assert!(
            validate_adjustment(AdjustmentDraft {
                sku: Some("SKU-1".into()),
                delta: Some(-5),
                reason: Some("stocktake".into()),
            })
            .is_ok()
        );
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("0b8f2c1e-5d7a-4e8e-9a55-3c1f0f6f0a11").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
    }
}
