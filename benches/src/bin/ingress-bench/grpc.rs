//! The gRPC rows: `CreateOrder` (one unary call per order) and `CreateOrders` (one
//! bidirectional stream, each order acknowledged after `acks=all`), at the same number
//! of orders in flight as the HTTP rows.
//!
//! Both send the order wrk posts (`benches/wrk/post_order.lua`) over one HTTP/2
//! connection. A unary call is a request of its own (headers, a stream id, trailers);
//! in the stream an order is one length-prefixed message each way, which is the saving
//! internal high-volume clients are offered. Latency is request sent → its reply read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::proto::create_orders_reply::Result as Outcome;
use benches::proto::order_service_client::OrderServiceClient;
use benches::proto::{CreateOrderRequest, OrderLine};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::baselines::closed_loops;
use crate::figures::Figures;

/// wrk's order as a gRPC request (no request id, as wrk sends no Idempotency-Key).
fn request() -> CreateOrderRequest {
    let line = |sku: &str, quantity, unit_price_minor| OrderLine {
        sku: sku.to_owned(),
        quantity,
        unit_price_minor,
    };
    CreateOrderRequest {
        request_id: String::new(),
        customer_id: "bench-customer".to_owned(),
        currency: "EUR".to_owned(),
        lines: vec![line("SKU-1", 2, 1999), line("SKU-2", 1, 500)],
    }
}

/// One channel (one HTTP/2 connection) to ingress's gRPC address.
pub(crate) async fn connect(endpoint: &str) -> anyhow::Result<OrderServiceClient<Channel>> {
    Ok(OrderServiceClient::connect(endpoint.to_owned()).await?)
}

/// `CreateOrder`, `in_flight` calls at a time on one connection, for `seconds`.
pub(crate) async fn unary(
    client: &OrderServiceClient<Channel>,
    in_flight: usize,
    seconds: u64,
) -> anyhow::Result<Figures> {
    let client = client.clone();
    closed_loops(in_flight, seconds, move || {
        let mut client = client.clone();
        async move {
            client
                .create_order(request())
                .await
                .is_ok_and(|r| r.into_inner().order.is_some())
        }
    })
    .await
}

/// `CreateOrders`: one call, `in_flight` orders outstanding, for `seconds`.
pub(crate) async fn streamed(
    client: &OrderServiceClient<Channel>,
    in_flight: usize,
    seconds: u64,
) -> anyhow::Result<Figures> {
    let window = Arc::new(Semaphore::new(in_flight));
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let (requests, rx) = mpsc::channel(in_flight);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let sender = {
        let (window, sent) = (window.clone(), sent.clone());
        tokio::spawn(async move {
            let mut index = 0u64;
            while Instant::now() < deadline {
                let Ok(permit) = window.clone().acquire_owned().await else {
                    break;
                };
                permit.forget();
                sent.lock().await.insert(index, Instant::now());
                if requests.send(request()).await.is_err() {
                    break;
                }
                index += 1;
            }
            // Dropping `requests` half-closes the call.
        })
    };
    let mut replies = client
        .clone()
        .create_orders(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (mut latencies, mut failures) = (Vec::new(), 0u64);
    while let Some(reply) = replies.message().await? {
        let at = sent.lock().await.remove(&reply.index);
        window.add_permits(1);
        match (reply.result, at) {
            (Some(Outcome::Order(_)), Some(at)) => latencies.push(at.elapsed()),
            _ => failures += 1,
        }
    }
    sender.await?;
    Ok(Figures::of(latencies, started.elapsed(), failures))
}
