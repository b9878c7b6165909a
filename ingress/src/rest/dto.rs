//! The JSON bodies of the REST API, and their OpenAPI schemas.
//!
//! Request bodies refuse unknown fields (`deny_unknown_fields`, rendered as
//! `additionalProperties: false`) and hold every field as an `Option`: a missing field
//! is then a validation violation listed with all the others (see
//! [`crate::validation`]), not serde's single "missing field" error. The OpenAPI schemas
//! still mark the fields required and not nullable, because that is what the server
//! accepts. The constraints in the schemas (lengths, ranges, patterns, the currency
//! list) are built from the `schemas::validation` constants by the `*_schema` functions
//! below, so the document cannot drift from the rules the server applies.

use schemas::validation::{
    ACTIVE_CURRENCIES, MAX_ABS_STOCK_DELTA, MAX_ADJUSTMENT_REASON_CHARS, MAX_CUSTOMER_ID_CHARS,
    MAX_QUANTITY, MAX_SKU_CHARS, MAX_UNIT_PRICE_MINOR, MIN_QUANTITY, MIN_UNIT_PRICE_MINOR,
};
use schemas::{
    MAX_LINES_PER_ORDER, OrderChangeKind, OrderCreated, OrderLine, OrderUpdated, StockAdjusted,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder,
    Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Object, Ref};
use uuid::Uuid;

use crate::validation::{AdjustmentDraft, ChangeDraft, LineDraft, OrderDraft};
use crate::views::{OrderStatusView, status_name};

/// No control characters (Unicode category Cc, what `char::is_control` finds): the
/// rule of every free text field, as a pattern (code points, as JSON Schema counts them).
pub const NO_CONTROL_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

fn text(description: &str, min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(NO_CONTROL_PATTERN))
        .description(Some(description))
}

/// An optional integer field that also takes a JSON number with a zero fraction
/// (`3.0`): JSON Schema's `integer` includes those, so a client (or a generator) that
/// writes every number as a float sends a valid integer. Other fractions, and numbers
/// beyond `i64`, are refused with the field's path like any other wrong type.
fn integer_field<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};
    struct Integer;
    impl<'de> Visitor<'de> for Integer {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Integer)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v).map(Some).map_err(|_| {
                E::invalid_value(Unexpected::Unsigned(v), &"an integer that fits in 64 bits")
            })
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            // -2^63 is exact in f64; 2^63 is the first value past i64::MAX.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
                #[allow(clippy::cast_possible_truncation)]
                Ok(Some(v as i64))
            } else {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
        }
    }
    deserializer.deserialize_option(Integer)
}

fn integer(description: &str, min: i64, max: i64) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .description(Some(description))
        .build()
}

/// The schema of a SKU.
pub fn sku_schema() -> Object {
    text(
        "Stock keeping unit: A-Z, 0-9, '_' and '-', starting with A-Z or 0-9.",
        1,
        MAX_SKU_CHARS,
    )
    .pattern(Some(format!(
        "^[A-Z0-9][A-Z0-9_-]{{0,{}}}$",
        MAX_SKU_CHARS - 1
    )))
    .examples(["SKU-1"])
    .build()
}

/// The schema of a currency: exactly the active ISO 4217 codes the server accepts.
pub fn currency_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ACTIVE_CURRENCIES))
        .description(Some("Active ISO 4217 currency code, upper case."))
        .examples(["EUR"])
        .build()
}

/// The schema of a customer id.
pub fn customer_id_schema() -> Object {
    text(
        "Id of the customer; no control characters.",
        1,
        MAX_CUSTOMER_ID_CHARS,
    )
    .examples(["customer-42"])
    .build()
}

/// The schema of a quantity.
pub fn quantity_schema() -> Object {
    integer(
        "Units ordered.",
        i64::from(MIN_QUANTITY),
        i64::from(MAX_QUANTITY),
    )
}

/// The schema of a unit price.
pub fn unit_price_schema() -> Object {
    integer(
        "Price of one unit in minor units of the order's currency (cents for EUR).",
        MIN_UNIT_PRICE_MINOR,
        MAX_UNIT_PRICE_MINOR,
    )
}

/// The schema of a stock delta: 0 is refused, so it is one of two ranges, the negative
/// and the positive one (`anyOf`), which every JSON Schema tool understands (`not` is
/// less widely supported by generators).
pub fn delta_schema() -> Schema {
    AnyOfBuilder::new()
        .item(integer("Units removed.", -MAX_ABS_STOCK_DELTA, -1))
        .item(integer("Units added.", 1, MAX_ABS_STOCK_DELTA))
        .description(Some(
            "Units added (positive) or removed (negative); never 0.",
        ))
        .build()
        .into()
}

/// The schema of an adjustment reason.
pub fn reason_schema() -> Object {
    text(
        "Why, e.g. restock or stocktake correction; no control characters.",
        1,
        MAX_ADJUSTMENT_REASON_CHARS,
    )
    .build()
}

/// The schema of the optional `status` of a change: only `CANCELLED` (or null, which is
/// the same as absent).
pub fn cancel_status_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([Some(crate::validation::CANCELLED), None]))
        .description(Some(
            "CANCELLED cancels the order. Not together with `lines`.",
        ))
        .build()
}

/// The schema of a `PATCH` body as the server accepts it: exactly one of the two changes,
/// `lines` (1 to 100, `status` absent or null) or `status: CANCELLED` (`lines` absent or
/// null). The derived schema of [`ChangeOrderBody`] can only say that each field is
/// optional, so the router puts this one in its place (`rest::api`).
pub fn change_order_schema() -> Schema {
    let null = || ObjectBuilder::new().schema_type(Type::Null).build();
    let lines = ArrayBuilder::new()
        .items(Ref::from_schema_name("LineBody"))
        .min_items(Some(1))
        .max_items(Some(MAX_LINES_PER_ORDER))
        .description(Some("The complete new lines."));
    let replace = ObjectBuilder::new()
        .title(Some("Replace the lines"))
        .property("lines", lines)
        .required("lines")
        .property("status", null())
        .property("currency", optional_currency_schema())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let cancel = ObjectBuilder::new()
        .title(Some("Cancel"))
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([crate::validation::CANCELLED]))
                .description(Some("Cancels the order.")),
        )
        .required("status")
        .property("lines", null())
        .property("currency", optional_currency_schema())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    OneOfBuilder::new()
        .item(replace)
        .item(cancel)
        .description(Some(
            "Either `lines` (replace the lines) or `status: CANCELLED` (cancel), never both. `currency`, when given, must be the order's.",
        ))
        .build()
        .into()
}

/// The schema of an optional currency (null is the same as absent).
pub fn optional_currency_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(
            ACTIVE_CURRENCIES.iter().map(|c| Some(*c)).chain([None]),
        ))
        .description(Some("Active ISO 4217 currency code, upper case."))
        .examples(["EUR"])
        .build()
}

/// One order line in a request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    /// Stock keeping unit.
    #[schema(required = true, schema_with = sku_schema)]
    pub sku: Option<String>,
    /// Units ordered.
    #[schema(required = true, schema_with = quantity_schema)]
    #[serde(default, deserialize_with = "integer_field")]
    pub quantity: Option<i64>,
    /// Price of one unit in minor units.
    #[schema(required = true, schema_with = unit_price_schema)]
    #[serde(default, deserialize_with = "integer_field")]
    pub unit_price_minor: Option<i64>,
}

impl From<LineBody> for LineDraft {
    fn from(line: LineBody) -> Self {
        LineDraft {
            sku: line.sku,
            quantity: line.quantity,
            unit_price_minor: line.unit_price_minor,
        }
    }
}

/// `POST /v1/orders`: a new order. The total is computed by the server.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderBody {
    /// Id of the customer.
    #[schema(required = true, schema_with = customer_id_schema)]
    pub customer_id: Option<String>,
    /// Currency of every amount.
    #[schema(required = true, schema_with = currency_schema)]
    pub currency: Option<String>,
    /// The lines.
    #[schema(required = true, nullable = false, min_items = 1, max_items = 100)]
    pub lines: Option<Vec<LineBody>>,
}

impl From<CreateOrderBody> for OrderDraft {
    fn from(body: CreateOrderBody) -> Self {
        OrderDraft {
            customer_id: body.customer_id,
            currency: body.currency,
            lines: body
                .lines
                .map(|lines| lines.into_iter().map(LineDraft::from).collect()),
        }
    }
}

/// `PATCH /v1/orders/{order_id}`: either `lines` (replace the lines) or
/// `status: CANCELLED` (cancel), never both.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeOrderBody {
    /// The complete new lines.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Option<Vec<LineBody>>,
    /// `CANCELLED`.
    #[schema(schema_with = cancel_status_schema)]
    pub status: Option<String>,
    /// The order's currency (must be the one it was created with). When absent, it is
    /// read from the pipeline's order view (503 while the pipeline is down, 404 for an
    /// order the view does not know).
    #[schema(schema_with = optional_currency_schema)]
    pub currency: Option<String>,
}

impl ChangeOrderBody {
    /// The draft of a change of `order_id`.
    pub fn into_draft(self, order_id: String) -> ChangeDraft {
        ChangeDraft {
            order_id: Some(order_id),
            lines: self
                .lines
                .map(|lines| lines.into_iter().map(LineDraft::from).collect()),
            status: self.status,
            currency: self.currency,
        }
    }
}

/// `POST /v1/inventory/adjustments`: add or remove stock on hand.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// The SKU.
    #[schema(required = true, schema_with = sku_schema)]
    pub sku: Option<String>,
    /// Units added or removed.
    #[schema(required = true, schema_with = delta_schema)]
    #[serde(default, deserialize_with = "integer_field")]
    pub delta: Option<i64>,
    /// Why.
    #[schema(required = true, schema_with = reason_schema)]
    pub reason: Option<String>,
}

impl From<AdjustmentBody> for AdjustmentDraft {
    fn from(body: AdjustmentBody) -> Self {
        AdjustmentDraft {
            sku: body.sku,
            delta: body.delta,
            reason: body.reason,
        }
    }
}

/// One order line in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineOut {
    /// Stock keeping unit.
    pub sku: String,
    /// Units ordered.
    pub quantity: i64,
    /// Price of one unit in minor units.
    pub unit_price_minor: i64,
}

impl From<&OrderLine> for LineOut {
    fn from(line: &OrderLine) -> Self {
        LineOut {
            sku: line.sku.clone(),
            quantity: i64::from(line.quantity),
            unit_price_minor: line.unit_price_minor,
        }
    }
}

/// `201` of `POST /v1/orders`: the accepted order, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderBody {
    /// Id of the order.
    pub order_id: Uuid,
    /// Always `CREATED`.
    #[schema(example = "CREATED")]
    pub status: String,
    /// The customer.
    pub customer_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The lines.
    pub lines: Vec<LineOut>,
    /// `Σ quantity × unit_price_minor`.
    pub total_minor: i64,
    /// When the order was accepted, UTC milliseconds.
    pub created_at_ms: i64,
}

impl From<&OrderCreated> for OrderBody {
    fn from(event: &OrderCreated) -> Self {
        OrderBody {
            order_id: event.order_id,
            status: "CREATED".to_owned(),
            customer_id: event.customer_id.clone(),
            currency: event.currency.clone(),
            lines: event.lines.iter().map(LineOut::from).collect(),
            total_minor: event.total_minor,
            created_at_ms: event.created_at,
        }
    }
}

/// `202` of `PATCH /v1/orders/{order_id}`: the change, as published. It takes effect in
/// the pipeline if the order is still `CREATED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeBody {
    /// Id of the order.
    pub order_id: Uuid,
    /// `LINES_CHANGED` or `CANCELLED`.
    #[schema(example = "LINES_CHANGED")]
    pub kind: String,
    /// Revision of the change (seconds since 2025-01-01, strictly increasing).
    pub revision: i32,
    /// The complete new lines; empty for a cancellation.
    pub lines: Vec<LineOut>,
    /// ISO 4217 code.
    pub currency: String,
    /// The new total; 0 for a cancellation.
    pub total_minor: i64,
    /// When the change was accepted, UTC milliseconds.
    pub updated_at_ms: i64,
}

impl From<&OrderUpdated> for ChangeBody {
    fn from(event: &OrderUpdated) -> Self {
        ChangeBody {
            order_id: event.order_id,
            kind: match event.kind {
                OrderChangeKind::LinesChanged => "LINES_CHANGED",
                OrderChangeKind::Cancelled => "CANCELLED",
            }
            .to_owned(),
            revision: event.revision,
            lines: event.lines.iter().map(LineOut::from).collect(),
            currency: event.currency.clone(),
            total_minor: event.total_minor,
            updated_at_ms: event.updated_at,
        }
    }
}

/// `202` of `POST /v1/inventory/adjustments`: the adjustment, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdjustmentOut {
    /// Id of the adjustment (the event id).
    pub adjustment_id: Uuid,
    /// The SKU.
    pub sku: String,
    /// Units added or removed.
    pub delta: i64,
    /// Why.
    pub reason: String,
    /// When it was accepted, UTC milliseconds.
    pub adjusted_at_ms: i64,
}

impl From<&StockAdjusted> for AdjustmentOut {
    fn from(event: &StockAdjusted) -> Self {
        AdjustmentOut {
            adjustment_id: event.event_id,
            sku: event.sku.clone(),
            delta: event.delta,
            reason: event.reason.clone(),
            adjusted_at_ms: event.adjusted_at,
        }
    }
}

/// `200` of `GET /v1/orders/{order_id}`: the order as the pipeline's view has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderStatusBody {
    /// Id of the order.
    pub order_id: Uuid,
    /// `CREATED`, `PAID`, `PAYMENT_FAILED` or `CANCELLED`.
    #[schema(example = "PAID")]
    pub status: String,
    /// Current total in minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The pipeline's closed epoch this answer reflects.
    pub epoch: u64,
    /// Wall-clock time of that epoch, UTC milliseconds.
    pub as_of_ms: i64,
}

impl From<&OrderStatusView> for OrderStatusBody {
    fn from(view: &OrderStatusView) -> Self {
        OrderStatusBody {
            order_id: view.order_id,
            status: status_name(view.status).to_owned(),
            total_minor: view.total_minor,
            currency: view.currency.clone(),
            epoch: view.epoch,
            as_of_ms: view.as_of_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(json: &str) -> Result<Option<i64>, String> {
        serde_json::from_str::<AdjustmentBody>(&format!(
            r#"{{"sku": "SKU-1", "reason": "r", {json}}}"#
        ))
        .map(|body| body.delta)
        .map_err(|e| e.to_string())
    }

    /// Found by schemathesis: `3.0` is an integer to JSON Schema (and to every client
    /// that writes numbers as floats), and was refused as "invalid type: floating point".
    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        assert_eq!(delta(r#""delta": 3"#), Ok(Some(3)));
        assert_eq!(delta(r#""delta": -3.0"#), Ok(Some(-3)));
        assert_eq!(delta(r#""delta": 1e3"#), Ok(Some(1000)));
        assert_eq!(delta(r#""delta": null"#), Ok(None));
        assert_eq!(
            delta(r#""delta": -9223372036854775808"#),
            Ok(Some(i64::MIN))
        );
        for refused in [
            r#""delta": 3.5"#,
            r#""delta": 1e19"#,
            r#""delta": 9223372036854775808"#,
            r#""delta": "3""#,
            r#""delta": true"#,
        ] {
            assert!(delta(refused).is_err(), "{refused}");
        }
        let missing: AdjustmentBody =
            serde_json::from_str(r#"{"sku": "SKU-1", "reason": "r"}"#).unwrap();
        assert_eq!(
            missing.delta, None,
            "absent is missing, reported as required"
        );
        let line: LineBody =
            serde_json::from_str(r#"{"sku": "A", "quantity": 2.0, "unit_price_minor": 5}"#)
                .unwrap();
        assert_eq!((line.quantity, line.unit_price_minor), (Some(2), Some(5)));
    }
}
