//! The domain rules of the events, as constants and small reusable checks.
//!
//! An Avro schema can say that `quantity` is an `int`; it cannot say that it is between 1
//! and 10 000, that `total_minor` is the sum of the lines, or that `currency` is a real
//! currency. Those rules live here, once, and are used in two places:
//!
//! * every event's [`Event::validate`](crate::Event::validate), which producers run before
//!   publishing and consumers may run after decoding (an event that breaks them goes to
//!   the dead-letter queue instead of into the views);
//! * the ingress API, which checks a request with the same helpers and the same field
//!   paths before it ever becomes an event, so a client gets a 400 listing *every*
//!   problem (`lines[1].quantity`, `currency`, ...) rather than an event that a consumer
//!   rejects later.
//!
//! The checks of single values return `Option<String>`: `None` when the rule holds, else
//! a description a client developer can act on. They do not know the field's path, which
//! depends on where the value sits in a request or event; [`Violations::check`] and
//! [`Violations::check_with`] attach it. Checks of composite values ([`validate_lines`])
//! push their violations, with paths under the prefix they are given, directly.
//!
//! Arithmetic on amounts is checked: a total that overflows an `i64` is a violation, not
//! a panic or a silently wrapped number.

use uuid::Uuid;

use crate::{OrderLine, SchemaError, Violations};

pub use crate::currency::{ACTIVE_CURRENCIES, is_active_currency, validate_currency};

/// Most lines an order may have.
pub const MAX_LINES_PER_ORDER: usize = 100;
/// Fewest units of a SKU a line may order.
pub const MIN_QUANTITY: i32 = 1;
/// Most units of a SKU a line may order.
pub const MAX_QUANTITY: i32 = 10_000;
/// Lowest unit price, in minor units: nothing is free.
pub const MIN_UNIT_PRICE_MINOR: i64 = 1;
/// Highest unit price, in minor units (one million EUR in cents).
pub const MAX_UNIT_PRICE_MINOR: i64 = 100_000_000;
/// Longest SKU, in characters.
pub const MAX_SKU_CHARS: usize = 64;
/// Longest customer id, in characters.
pub const MAX_CUSTOMER_ID_CHARS: usize = 128;
/// Largest stock adjustment either way (`|delta|`).
pub const MAX_ABS_STOCK_DELTA: i64 = 1_000_000_000;
/// Longest reason of a stock adjustment, in characters.
pub const MAX_ADJUSTMENT_REASON_CHARS: usize = 200;
/// Longest machine-readable reason code of a failed payment, in characters.
pub const MAX_REASON_CODE_CHARS: usize = 64;
/// Longest human-readable reason of a failed payment, in characters.
pub const MAX_PAYMENT_REASON_CHARS: usize = 500;
/// The values order.created's `channel` may take: the API that accepted the order.
pub const ORDER_CHANNELS: [&str; 2] = ["REST", "GRPC"];

/// Checks a SKU: 1 to [`MAX_SKU_CHARS`] characters of `A-Z`, `0-9`, `_` and `-`,
/// starting with `A-Z` or `0-9`. SKUs are case-sensitive keys (of Kafka records and of
/// the views), so lower case is refused rather than folded.
pub fn validate_sku(sku: &str) -> Option<String> {
    const RULE: &str = "characters of A-Z, 0-9, '_' and '-', starting with A-Z or 0-9";
    let Some(first) = sku.chars().next() else {
        return Some(format!("must not be empty: 1 to {MAX_SKU_CHARS} {RULE}"));
    };
    let chars = sku.chars().count();
    if chars > MAX_SKU_CHARS {
        return Some(format!(
            "must be at most {MAX_SKU_CHARS} characters, got {chars}"
        ));
    }
    if let Some(bad) = sku
        .chars()
        .find(|c| !matches!(c, 'A'..='Z' | '0'..='9' | '_' | '-'))
    {
        return Some(format!("may only contain {RULE}; found {bad:?}"));
    }
    if !first.is_ascii_alphanumeric() {
        return Some(format!("must start with A-Z or 0-9, got {first:?}"));
    }
    None
}

/// Checks a customer id: 1 to [`MAX_CUSTOMER_ID_CHARS`] characters, none of them a
/// control character (they would corrupt logs and headers).
pub fn validate_customer_id(customer_id: &str) -> Option<String> {
    check_text(customer_id, MAX_CUSTOMER_ID_CHARS)
}

/// Checks the quantity of an order line: [`MIN_QUANTITY`]`..=`[`MAX_QUANTITY`]. Takes an
/// `i64` so that an API can check a wider number before narrowing it to the schema's
/// `int`.
pub fn validate_quantity(quantity: i64) -> Option<String> {
    if (i64::from(MIN_QUANTITY)..=i64::from(MAX_QUANTITY)).contains(&quantity) {
        None
    } else {
        Some(format!(
            "must be between {MIN_QUANTITY} and {MAX_QUANTITY}, got {quantity}"
        ))
    }
}

/// Checks a unit price in minor units: [`MIN_UNIT_PRICE_MINOR`]`..=`[`MAX_UNIT_PRICE_MINOR`].
pub fn validate_unit_price_minor(unit_price_minor: i64) -> Option<String> {
    if (MIN_UNIT_PRICE_MINOR..=MAX_UNIT_PRICE_MINOR).contains(&unit_price_minor) {
        None
    } else {
        Some(format!(
            "must be between {MIN_UNIT_PRICE_MINOR} and {MAX_UNIT_PRICE_MINOR} minor units, got {unit_price_minor}"
        ))
    }
}

/// Checks the lines of an order (or of an order change that replaces them): 1 to
/// [`MAX_LINES_PER_ORDER`] lines, each with a valid SKU, quantity and unit price.
///
/// `field` is the path of the list itself, e.g. `lines`; a violation of the count is
/// reported there and a violation of a line under it, e.g. `lines[1].quantity`. Every
/// line is checked, also past the maximum, so that one answer lists every problem.
pub fn validate_lines(lines: &[OrderLine], field: &str, violations: &mut Violations) {
    if lines.is_empty() {
        violations.push(field, "must have at least 1 line");
    } else if lines.len() > MAX_LINES_PER_ORDER {
        violations.push(
            field,
            format!(
                "must have at most {MAX_LINES_PER_ORDER} lines, got {}",
                lines.len()
            ),
        );
    }
    for (index, line) in lines.iter().enumerate() {
        violations.check_with(|| format!("{field}[{index}].sku"), validate_sku(&line.sku));
        violations.check_with(
            || format!("{field}[{index}].quantity"),
            validate_quantity(i64::from(line.quantity)),
        );
        violations.check_with(
            || format!("{field}[{index}].unit_price_minor"),
            validate_unit_price_minor(line.unit_price_minor),
        );
    }
}

/// The total of `lines` in minor units, `sum(quantity * unit_price_minor)`, or `None` if
/// it overflows an `i64`. Lines within the limits never overflow (the largest valid order
/// totals 10^14); only invalid input can, and it must not panic.
pub fn order_total(lines: &[OrderLine]) -> Option<i64> {
    lines.iter().try_fold(0_i64, |total, line| {
        i64::from(line.quantity)
            .checked_mul(line.unit_price_minor)
            .and_then(|amount| total.checked_add(amount))
    })
}

/// Checks that `total_minor` is exactly [`order_total`] of `lines`.
pub fn validate_order_total(lines: &[OrderLine], total_minor: i64) -> Option<String> {
    match order_total(lines) {
        None => Some(
            "cannot be checked: the sum of quantity * unit_price_minor over the lines overflows a 64-bit integer"
                .to_owned(),
        ),
        Some(expected) if expected != total_minor => Some(format!(
            "must equal the sum of quantity * unit_price_minor over the lines, {expected}, got {total_minor}"
        )),
        Some(_) => None,
    }
}

/// Checks an id: the nil UUID (all zeros, what `Uuid::default()` gives) is refused, as it
/// is always a forgotten assignment rather than a real id. (That an id *is* a UUID is
/// guaranteed by its type; see [`parse_id`] for text.)
pub fn validate_id(id: &Uuid) -> Option<String> {
    id.is_nil()
        .then(|| "must be a real UUID, not the nil UUID".to_owned())
}

/// [`parse_id`]'s rule as an OpenAPI (ECMA-262) pattern, for the API documents that take
/// an id in a path: the hyphenated 8-4-4-4-12 form, either case, not the nil UUID.
/// OpenAPI attributes take literals, so the documents spell it out and their tests
/// compare it with this.
pub const ID_PATTERN: &str = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Parses an id given as text (a path parameter, a JSON field): the hyphenated form, in
/// either case, and not nil. The error's text is a description for a
/// [`FieldViolation`](crate::FieldViolation).
pub fn parse_id(text: &str) -> Result<Uuid, SchemaError> {
    if text.len() != 36 {
        return Err(SchemaError::IdForm { text: text.into() });
    }
    let id = Uuid::try_parse(text).map_err(|source| SchemaError::IdSyntax { source })?;
    if id.is_nil() {
        return Err(SchemaError::NilId);
    }
    Ok(id)
}

/// Checks an event time: UTC milliseconds since the Unix epoch, after the epoch.
pub fn validate_time_ms(time_ms: i64) -> Option<String> {
    (time_ms <= 0).then(|| {
        format!("must be UTC milliseconds since the Unix epoch, greater than 0, got {time_ms}")
    })
}

/// Checks an amount of a payment in minor units: at least 1.
pub fn validate_amount_minor(amount_minor: i64) -> Option<String> {
    (amount_minor < 1).then(|| format!("must be at least 1 minor unit, got {amount_minor}"))
}

/// Checks a stock adjustment: not 0, and at most [`MAX_ABS_STOCK_DELTA`] either way.
pub fn validate_stock_delta(delta: i64) -> Option<String> {
    if delta == 0 {
        Some("must not be 0: an adjustment adds (positive) or removes (negative) units".to_owned())
    } else if delta.unsigned_abs() > MAX_ABS_STOCK_DELTA.unsigned_abs() {
        Some(format!(
            "must be between -{MAX_ABS_STOCK_DELTA} and {MAX_ABS_STOCK_DELTA}, got {delta}"
        ))
    } else {
        None
    }
}

/// Checks the reason of a stock adjustment: 1 to [`MAX_ADJUSTMENT_REASON_CHARS`]
/// characters, no control characters.
pub fn validate_adjustment_reason(reason: &str) -> Option<String> {
    check_text(reason, MAX_ADJUSTMENT_REASON_CHARS)
}

/// Checks the reason code of a failed payment: `UPPER_SNAKE_CASE` (`A-Z` first, then
/// `A-Z`, `0-9`, `_`), 1 to [`MAX_REASON_CODE_CHARS`] characters. The set of codes is
/// open (see [`reason_codes`](crate::reason_codes) for the known ones), so only the form
/// is checked.
pub fn validate_reason_code(code: &str) -> Option<String> {
    let Some(first) = code.chars().next() else {
        return Some(
            "must not be empty: an UPPER_SNAKE_CASE code such as CUSTOMER_DECLINED".to_owned(),
        );
    };
    let upper_snake = first.is_ascii_uppercase()
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !upper_snake {
        return Some(format!(
            "must be UPPER_SNAKE_CASE (A-Z first, then A-Z, 0-9, '_'), got {code:?}"
        ));
    }
    // ASCII only from here on: bytes are characters.
    (code.len() > MAX_REASON_CODE_CHARS).then(|| {
        format!(
            "must be at most {MAX_REASON_CODE_CHARS} characters, got {}",
            code.len()
        )
    })
}

/// Checks the human-readable reason of a failed payment: 1 to
/// [`MAX_PAYMENT_REASON_CHARS`] characters, no control characters.
pub fn validate_payment_reason(reason: &str) -> Option<String> {
    check_text(reason, MAX_PAYMENT_REASON_CHARS)
}

/// Checks order.created's optional `channel`: absent, or one of [`ORDER_CHANNELS`].
pub fn validate_channel(channel: Option<&str>) -> Option<String> {
    match channel {
        Some(channel) if !ORDER_CHANNELS.contains(&channel) => Some(format!(
            "must be absent or one of {}, got {channel:?}",
            ORDER_CHANNELS.join(", ")
        )),
        _ => None,
    }
}

/// 1 to `max_chars` characters, none of them a control character.
fn check_text(text: &str, max_chars: usize) -> Option<String> {
    if text.is_empty() {
        return Some(format!("must not be empty: 1 to {max_chars} characters"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Some(format!(
            "must be at most {max_chars} characters, got {chars}"
        ));
    }
    text.chars()
        .find(|c| c.is_control())
        .map(|c| format!("must not contain control characters, found {c:?}"))
}
