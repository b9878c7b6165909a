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
use schemas::{OrderChangeKind, OrderCreated, OrderLine, OrderUpdated, StockAdjusted};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::Object;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use uuid::Uuid;

use crate::validation::{AdjustmentDraft, ChangeDraft, LineDraft, OrderDraft};
use crate::views::{OrderStatusView, status_name};

fn text(description: &str, min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .description(Some(description))
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

/// The schema of a stock delta (0 is refused; JSON Schema cannot say "not 0" simply,
/// the description does).
pub fn delta_schema() -> Object {
    integer(
        "Units added (positive) or removed (negative); never 0.",
        -MAX_ABS_STOCK_DELTA,
        MAX_ABS_STOCK_DELTA,
    )
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
    pub quantity: Option<i64>,
    /// Price of one unit in minor units.
    #[schema(required = true, schema_with = unit_price_schema)]
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
