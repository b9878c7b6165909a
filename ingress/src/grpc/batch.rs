//! `CreateOrders`: many orders over one bidirectional stream, for internal high-volume
//! clients (the unary `CreateOrder` costs an HTTP/2 request per order; a stream costs one
//! message).
//!
//! Each request is exactly a `CreateOrder`: the same validation, idempotency key, event
//! and durability (its reply is sent only after Kafka acknowledged the order with
//! `acks=all`). Up to [`WINDOW`] requests of one call are in progress at once; the next
//! request is read only when one of them has finished, so a fast client is slowed by
//! HTTP/2 flow control instead of filling the server's memory. Replies go out as their
//! orders finish, so they carry the request's `index` (and `request_id`).
//!
//! A refused order is a reply with a [`CreateOrdersError`]: the code and details the
//! unary call would have answered (built by [`super::status_of`], so the two cannot
//! drift), and the call goes on. Only a request that cannot be decoded ends the call,
//! with the decoder's INVALID_ARGUMENT, after the replies of the requests before it. When
//! the client goes away, the orders still in progress are dropped like cancelled unary
//! calls: each was published or not, and a retry with its `request_id` finds out which.

use std::pin::Pin;
use std::time::Instant;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};
use tonic_types::StatusExt;

use super::{GrpcApi, context_of, order_draft, order_out, request_key, status_of, traceparent};
use crate::proto::{
    CreateOrderRequest, CreateOrdersError, CreateOrdersReply, FieldViolation,
    create_orders_reply::Result as Outcome,
};

/// Requests of one call in progress at once.
pub const WINDOW: usize = 256;

/// The reply stream of `CreateOrders`.
pub type CreateOrdersStream =
    Pin<Box<dyn Stream<Item = Result<CreateOrdersReply, Status>> + Send + 'static>>;

/// A refused request as a reply's error: what the unary call would have answered.
fn error_of(status: &Status) -> CreateOrdersError {
    let details = status.get_error_details();
    CreateOrdersError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        field_violations: details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        retry_after_ms: details
            .retry_info()
            .and_then(|info| info.retry_delay)
            .map_or(0, |delay| {
                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
            }),
    }
}

impl GrpcApi {
    /// One request of the stream, handled as `CreateOrder`.
    async fn create_one(
        &self,
        index: u64,
        message: CreateOrderRequest,
        traceparent: Option<String>,
    ) -> CreateOrdersReply {
        let started = Instant::now();
        let request_id = message.request_id.clone();
        let result = async {
            let key = request_key(&message.request_id)?;
            let ctx = context_of(traceparent, key);
            let answer = self
                .commands
                .create_order(order_draft(message), &ctx)
                .await
                .map_err(status_of)?;
            Ok(order_out(&answer.event))
        }
        .await;
        self.observe("CreateOrders", started, &result);
        CreateOrdersReply {
            index,
            request_id,
            result: Some(match result {
                Ok(order) => Outcome::Order(order),
                Err(status) => Outcome::Error(error_of(&status)),
            }),
        }
    }

    /// Reads the call's requests, at most [`WINDOW`] in progress, and streams the
    /// replies as they finish (see the module docs).
    pub(super) fn create_orders_stream(
        &self,
        request: Request<Streaming<CreateOrderRequest>>,
    ) -> CreateOrdersStream {
        let traceparent = traceparent(&request);
        let mut input = request.into_inner();
        let (replies, rx) = mpsc::channel(WINDOW);
        let api = self.clone();
        tokio::spawn(async move {
            let mut in_progress = FuturesUnordered::new();
            let mut next_index = 0u64;
            let mut reading = true;
            let mut end = None;
            loop {
                tokio::select! {
                    next = input.message(), if reading && in_progress.len() < WINDOW => match next {
                        Ok(Some(message)) => {
                            in_progress.push(api.create_one(next_index, message, traceparent.clone()));
                            next_index += 1;
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            // Undecodable (INVALID_ARGUMENT from the strict codec) or a
                            // broken transport (then nobody reads the answer).
                            reading = false;
                            end = Some(status);
                        }
                    },
                    Some(reply) = in_progress.next(), if !in_progress.is_empty() => {
                        if replies.send(Ok(reply)).await.is_err() {
                            // The client is gone: what is still in progress is dropped.
                            return;
                        }
                    }
                    else => break,
                }
            }
            if let Some(status) = end {
                let _ = replies.send(Err(status)).await;
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}
