//! The gRPC API (tonic): `OrderService` and `InventoryAdminService` from
//! `proto/orderpipeline/v1/orders.proto`, with reflection and the standard health
//! service.
//!
//! The services only translate, like the REST handlers: message → draft,
//! [`crate::commands`] decides, answer or [`Status`]. Errors map as follows:
//!
//! | outcome | code | details |
//! |---|---|---|
//! | invalid request | INVALID_ARGUMENT | `google.rpc.BadRequest`, every field violation, same paths as REST |
//! | undecodable protobuf | INVALID_ARGUMENT | (see [`proto::codec`]) |
//! | `request_id` reused with another request | FAILED_PRECONDITION | `google.rpc.PreconditionFailure` (type `IDEMPOTENCY`, subject `request_id`) |
//! | same `request_id` still in progress | ABORTED | `google.rpc.RetryInfo` |
//! | order unknown to the view | NOT_FOUND | |
//! | Kafka or the pipeline unavailable | UNAVAILABLE | `google.rpc.RetryInfo` |
//! | bad answer from the pipeline | UNKNOWN | |
//! | bug or setup fault | INTERNAL | no internals |
//!
//! `CreateOrders` (a stream of `CreateOrder`s, see [`batch`]) answers each refused
//! order with the same code and details inside its reply, and goes on.
//!
//! The idempotency key is the `request_id` field; the same key over REST and gRPC is
//! the same key (the answer is the same event, rendered for each API).

pub mod batch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::commands::{Channel, CommandError, Commands, RequestContext};
use crate::metrics::Metrics;
use crate::proto::inventory_admin_service_server::InventoryAdminService;
use crate::proto::order_service_server::OrderService;
use crate::proto::{
    AdjustStockRequest, AdjustStockResponse, CancelOrderRequest, CancelOrderResponse,
    CreateOrderRequest, CreateOrderResponse, Freshness, GetOrderRequest, GetOrderResponse, Order,
    OrderChange, OrderChangeKind, OrderLine, OrderStatus, OrderView, UpdateOrderRequest,
    UpdateOrderResponse,
};
use crate::validation::{
    AdjustmentDraft, CANCELLED, ChangeDraft, IdempotencyKey, LineDraft, OrderDraft,
};

/// The status of a command error.
pub fn status_of(error: CommandError) -> Status {
    match error {
        CommandError::Invalid(violations) => {
            let mut details = ErrorDetails::new();
            for v in &violations.0 {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid request: {violations}"),
                details,
            )
        }
        CommandError::KeyReused => Status::with_error_details(
            Code::FailedPrecondition,
            "request_id reused with a different request",
            ErrorDetails::with_precondition_failure_violation(
                "IDEMPOTENCY",
                "request_id",
                "this request_id was used before with a different request; use a new one for a new request",
            ),
        ),
        CommandError::InProgress => Status::with_error_details(
            Code::Aborted,
            "a request with this request_id is still being processed; retry shortly",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
        ),
        CommandError::NotFound(detail) => Status::not_found(detail),
        CommandError::Unavailable {
            detail,
            retry_after,
            ..
        } => Status::with_error_details(
            Code::Unavailable,
            detail,
            ErrorDetails::with_retry_info(Some(retry_after)),
        ),
        CommandError::BadUpstream { detail, .. } => Status::unknown(detail),
        CommandError::Internal(detail) => {
            tracing::debug!("internal error answered as INTERNAL: {detail}");
            Status::internal("the request could not be processed; the error was logged")
        }
    }
}

/// The idempotency key from a `request_id` field: empty means none.
fn request_key(request_id: &str) -> Result<Option<IdempotencyKey>, Status> {
    if request_id.is_empty() {
        return Ok(None);
    }
    IdempotencyKey::parse(request_id)
        .map(Some)
        .map_err(|violation| {
            let description = violation.description;
            Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid request: request_id {description}"),
                ErrorDetails::with_bad_request_violation("request_id", description),
            )
        })
}

/// The caller's W3C `traceparent` metadata.
fn traceparent<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn context_of(traceparent: Option<String>, key: Option<IdempotencyKey>) -> RequestContext {
    RequestContext {
        channel: Channel::Grpc,
        key,
        traceparent,
    }
}

fn context<T>(request: &Request<T>, key: Option<IdempotencyKey>) -> RequestContext {
    context_of(traceparent(request), key)
}

/// proto3 strings have no presence: an empty string is "not given", which the shared
/// validation reports as required (or checks as text, for fields where empty is a
/// value the rules describe better).
fn given(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn line_drafts(lines: Vec<OrderLine>) -> Option<Vec<LineDraft>> {
    Some(
        lines
            .into_iter()
            .map(|line| LineDraft {
                sku: given(line.sku),
                quantity: Some(line.quantity),
                unit_price_minor: Some(line.unit_price_minor),
            })
            .collect(),
    )
}

fn lines_out(lines: &[schemas::OrderLine]) -> Vec<OrderLine> {
    lines
        .iter()
        .map(|line| OrderLine {
            sku: line.sku.clone(),
            quantity: i64::from(line.quantity),
            unit_price_minor: line.unit_price_minor,
        })
        .collect()
}

/// A `CreateOrder` request as the shared use case's draft.
fn order_draft(message: CreateOrderRequest) -> OrderDraft {
    OrderDraft {
        customer_id: given(message.customer_id),
        currency: given(message.currency),
        lines: line_drafts(message.lines),
    }
}

/// A published order.created as the API's `Order`.
fn order_out(event: &schemas::OrderCreated) -> Order {
    Order {
        order_id: event.order_id.to_string(),
        status: OrderStatus::Created as i32,
        customer_id: event.customer_id.clone(),
        currency: event.currency.clone(),
        lines: lines_out(&event.lines),
        total_minor: event.total_minor,
        created_at_ms: event.created_at,
    }
}

fn change_out(event: &schemas::OrderUpdated) -> OrderChange {
    OrderChange {
        order_id: event.order_id.to_string(),
        kind: match event.kind {
            schemas::OrderChangeKind::LinesChanged => OrderChangeKind::LinesChanged,
            schemas::OrderChangeKind::Cancelled => OrderChangeKind::Cancelled,
        } as i32,
        revision: event.revision,
        lines: lines_out(&event.lines),
        currency: event.currency.clone(),
        total_minor: event.total_minor,
        updated_at_ms: event.updated_at,
    }
}

/// Both services over the shared use cases.
#[derive(Clone)]
pub struct GrpcApi {
    commands: Arc<Commands>,
    metrics: Metrics,
}

impl GrpcApi {
    /// The services over `commands`.
    pub fn new(commands: Arc<Commands>, metrics: Metrics) -> Self {
        GrpcApi { commands, metrics }
    }

    /// Counts and times one call.
    fn observe<T>(&self, method: &str, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics
            .grpc_duration
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .grpc_requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }

    async fn create_order_inner(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<CreateOrderResponse, Status> {
        let key = request_key(&request.get_ref().request_id)?;
        let ctx = context(&request, key);
        let answer = self
            .commands
            .create_order(order_draft(request.into_inner()), &ctx)
            .await
            .map_err(status_of)?;
        Ok(CreateOrderResponse {
            order: Some(order_out(&answer.event)),
        })
    }

    async fn change_inner(
        &self,
        request_id: &str,
        ctx_of: impl FnOnce(Option<IdempotencyKey>) -> RequestContext,
        draft: ChangeDraft,
    ) -> Result<OrderChange, Status> {
        let key = request_key(request_id)?;
        let ctx = ctx_of(key);
        let answer = self
            .commands
            .change_order(draft, &ctx)
            .await
            .map_err(status_of)?;
        Ok(change_out(&answer.event))
    }
}

#[tonic::async_trait]
impl OrderService for GrpcApi {
    type CreateOrdersStream = batch::CreateOrdersStream;

    async fn create_orders(
        &self,
        request: Request<tonic::Streaming<CreateOrderRequest>>,
    ) -> Result<Response<Self::CreateOrdersStream>, Status> {
        Ok(Response::new(self.create_orders_stream(request)))
    }

    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let started = Instant::now();
        let result = self.create_order_inner(request).await;
        self.observe("CreateOrder", started, &result);
        result.map(Response::new)
    }

    async fn update_order(
        &self,
        request: Request<UpdateOrderRequest>,
    ) -> Result<Response<UpdateOrderResponse>, Status> {
        let started = Instant::now();
        let ctx = |key| context(&request, key);
        let message = request.get_ref().clone();
        let draft = ChangeDraft {
            order_id: Some(message.order_id),
            lines: line_drafts(message.lines),
            status: None,
            currency: message.currency,
        };
        let result = self
            .change_inner(&message.request_id, ctx, draft)
            .await
            .map(|change| UpdateOrderResponse {
                change: Some(change),
            });
        self.observe("UpdateOrder", started, &result);
        result.map(Response::new)
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let started = Instant::now();
        let ctx = |key| context(&request, key);
        let message = request.get_ref().clone();
        let draft = ChangeDraft {
            order_id: Some(message.order_id),
            lines: None,
            status: Some(CANCELLED.to_owned()),
            currency: message.currency,
        };
        let result = self
            .change_inner(&message.request_id, ctx, draft)
            .await
            .map(|change| CancelOrderResponse {
                change: Some(change),
            });
        self.observe("CancelOrder", started, &result);
        result.map(Response::new)
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let started = Instant::now();
        let result = self
            .commands
            .order_status(&request.get_ref().order_id)
            .await
            .map_err(status_of)
            .map(|view| GetOrderResponse {
                order: Some(OrderView {
                    order_id: view.order_id.to_string(),
                    status: view.status as i32,
                    total_minor: view.total_minor,
                    currency: view.currency,
                }),
                freshness: Some(Freshness {
                    epoch: view.epoch,
                    as_of_ms: view.as_of_ms,
                }),
            });
        self.observe("GetOrder", started, &result);
        result.map(Response::new)
    }
}

#[tonic::async_trait]
impl InventoryAdminService for GrpcApi {
    async fn adjust_stock(
        &self,
        request: Request<AdjustStockRequest>,
    ) -> Result<Response<AdjustStockResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let key = request_key(&request.get_ref().request_id)?;
            let ctx = context(&request, key);
            let message = request.into_inner();
            let draft = AdjustmentDraft {
                sku: given(message.sku),
                delta: Some(message.delta),
                reason: given(message.reason),
            };
            let answer = self
                .commands
                .adjust_stock(draft, &ctx)
                .await
                .map_err(status_of)?;
            let event = answer.event;
            Ok(AdjustStockResponse {
                adjustment_id: event.event_id.to_string(),
                sku: event.sku,
                delta: event.delta,
                reason: event.reason,
                adjusted_at_ms: event.adjusted_at,
            })
        }
        .await;
        self.observe("AdjustStock", started, &result);
        result.map(Response::new)
    }
}
