//! A typed client of the running services: ingress over REST and gRPC, the pipeline's
//! views over gRPC. Used by the demo, the load generator and the end-to-end test, so all
//! three speak to the services exactly as a user would.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;
use tonic::transport::Channel;

use crate::proto;
use crate::proto::inventory_admin_service_client::InventoryAdminServiceClient;
use crate::proto::order_service_client::OrderServiceClient;
use crate::proto::view_service_client::ViewServiceClient;

/// Which ingress API a request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Api {
    /// `POST /v1/...` JSON.
    Rest,
    /// `orderpipeline.v1.OrderService` / `InventoryAdminService`.
    Grpc,
}

/// Where the services listen.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Ingress REST base, e.g. `http://127.0.0.1:8080`.
    pub ingress_rest: String,
    /// Ingress gRPC, e.g. `http://127.0.0.1:50051`.
    pub ingress_grpc: String,
    /// Pipeline views REST base, e.g. `http://127.0.0.1:8090`.
    pub views_rest: String,
    /// Pipeline views gRPC, e.g. `http://127.0.0.1:50052`.
    pub views_grpc: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            ingress_rest: "http://127.0.0.1:8080".into(),
            ingress_grpc: "http://127.0.0.1:50051".into(),
            views_rest: "http://127.0.0.1:8090".into(),
            views_grpc: "http://127.0.0.1:50052".into(),
        }
    }
}

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    /// SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Unit price, minor units.
    pub unit_price_minor: i64,
}

/// What ingress answered for a created order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The order id (UUID text).
    pub order_id: String,
    /// The total the server computed.
    pub total_minor: i64,
}

/// An order as the pipeline's view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    /// CREATED, PAID, PAYMENT_FAILED or CANCELLED.
    pub status: String,
    /// Current total.
    pub total_minor: i64,
}

/// A SKU's numbers in the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    /// On hand.
    pub on_hand: i64,
    /// Reserved by open orders.
    pub reserved: i64,
    /// on_hand - reserved.
    pub available: i64,
    /// Version (grows).
    pub version: i64,
}

/// A REST call answered with a status other than the expected one.
#[derive(Debug)]
pub struct StatusError {
    /// The call (`POST /v1/orders`).
    pub what: &'static str,
    /// The status.
    pub status: reqwest::StatusCode,
    /// The body (a problem document).
    pub body: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.what, self.status, self.body)
    }
}

impl std::error::Error for StatusError {}

/// How a failed call should be treated by a client that retries the way a real one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 503 / UNAVAILABLE: the service could not get the write acknowledged in time, or
    /// writes are refused (too few in-sync replicas). Retry later with the same key.
    Unavailable,
    /// 409 / ABORTED: the first request with this key is still in flight. Retry later
    /// with the same key (the answer will be the first request's).
    InProgress,
    /// The service could not be reached (refused connection, reset, timeout): retry.
    Unreachable,
    /// Anything else (a 4xx, a 5xx other than 503): retrying the same request is useless.
    Final,
}

impl Refusal {
    /// Classifies a client error.
    pub fn of(error: &anyhow::Error) -> Refusal {
        if let Some(e) = error.downcast_ref::<StatusError>() {
            return match e.status.as_u16() {
                503 => Refusal::Unavailable,
                409 => Refusal::InProgress,
                _ => Refusal::Final,
            };
        }
        if let Some(status) = error.downcast_ref::<tonic::Status>() {
            // tonic reports a refused connect as UNAVAILABLE and a connection reset under
            // a call as UNKNOWN, both with the transport error as the source.
            let transport = std::error::Error::source(status)
                .is_some_and(|s| s.is::<tonic::transport::Error>())
                || status.message().contains("transport error")
                || status.message().contains("connect error");
            return match status.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown if transport => {
                    Refusal::Unreachable
                }
                tonic::Code::Unavailable => Refusal::Unavailable,
                tonic::Code::Aborted => Refusal::InProgress,
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Refusal::Unreachable,
                _ => Refusal::Final,
            };
        }
        if let Some(e) = error.downcast_ref::<reqwest::Error>()
            && (e.is_connect() || e.is_timeout() || e.is_request())
        {
            return Refusal::Unreachable;
        }
        Refusal::Final
    }

    /// Whether a real client retries the same request (same idempotency key).
    pub fn is_retryable(self) -> bool {
        self != Refusal::Final
    }
}

/// The client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Endpoints,
    orders: OrderServiceClient<Channel>,
    admin: InventoryAdminServiceClient<Channel>,
    views: ViewServiceClient<Channel>,
}

#[derive(Deserialize)]
struct OrderAnswer {
    order_id: String,
    total_minor: i64,
}

impl Client {
    /// Connects lazily to every endpoint (nothing is sent until the first call).
    pub fn new(endpoints: Endpoints) -> anyhow::Result<Self> {
        let channel = |url: &str| -> anyhow::Result<Channel> {
            Ok(Channel::from_shared(url.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .connect_lazy())
        };
        let ingress = channel(&endpoints.ingress_grpc)?;
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            orders: OrderServiceClient::new(ingress.clone()),
            admin: InventoryAdminServiceClient::new(ingress),
            views: ViewServiceClient::new(channel(&endpoints.views_grpc)?),
            endpoints,
        })
    }

    /// Places an order; `key` is the idempotency key.
    pub async fn create_order(
        &self,
        api: Api,
        key: &str,
        customer_id: &str,
        currency: &str,
        lines: &[Line],
    ) -> anyhow::Result<Created> {
        match api {
            Api::Rest => {
                let resp = self
                    .http
                    .post(format!("{}/v1/orders", self.endpoints.ingress_rest))
                    .header("Idempotency-Key", key)
                    .json(
                        &json!({"customer_id": customer_id, "currency": currency, "lines": lines}),
                    )
                    .send()
                    .await?;
                let status = resp.status();
                if status != 201 {
                    return Err(StatusError {
                        what: "POST /v1/orders",
                        status,
                        body: resp.text().await.unwrap_or_default(),
                    }
                    .into());
                }
                let a: OrderAnswer = resp.json().await?;
                Ok(Created {
                    order_id: a.order_id,
                    total_minor: a.total_minor,
                })
            }
            Api::Grpc => {
                let order = self
                    .orders
                    .clone()
                    .create_order(proto::CreateOrderRequest {
                        request_id: key.into(),
                        customer_id: customer_id.into(),
                        currency: currency.into(),
                        lines: lines.iter().map(to_proto_line).collect(),
                    })
                    .await?
                    .into_inner()
                    .order
                    .context("CreateOrder answered without an order")?;
                Ok(Created {
                    order_id: order.order_id,
                    total_minor: order.total_minor,
                })
            }
        }
    }

    /// Replaces an order's lines.
    pub async fn change_lines(
        &self,
        api: Api,
        key: &str,
        order_id: &str,
        currency: &str,
        lines: &[Line],
    ) -> anyhow::Result<()> {
        match api {
            Api::Rest => {
                self.patch(key, order_id, json!({"lines": lines, "currency": currency}))
                    .await
            }
            Api::Grpc => {
                self.orders
                    .clone()
                    .update_order(proto::UpdateOrderRequest {
                        request_id: key.into(),
                        order_id: order_id.into(),
                        lines: lines.iter().map(to_proto_line).collect(),
                        currency: Some(currency.into()),
                    })
                    .await?;
                Ok(())
            }
        }
    }

    /// Cancels an order.
    pub async fn cancel(
        &self,
        api: Api,
        key: &str,
        order_id: &str,
        currency: &str,
    ) -> anyhow::Result<()> {
        match api {
            Api::Rest => {
                self.patch(
                    key,
                    order_id,
                    json!({"status": "CANCELLED", "currency": currency}),
                )
                .await
            }
            Api::Grpc => {
                self.orders
                    .clone()
                    .cancel_order(proto::CancelOrderRequest {
                        request_id: key.into(),
                        order_id: order_id.into(),
                        currency: Some(currency.into()),
                    })
                    .await?;
                Ok(())
            }
        }
    }

    async fn patch(
        &self,
        key: &str,
        order_id: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<()> {
        let resp = self
            .http
            .patch(format!(
                "{}/v1/orders/{order_id}",
                self.endpoints.ingress_rest
            ))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "PATCH /v1/orders/{order_id}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Adds (or removes) stock.
    pub async fn adjust(
        &self,
        api: Api,
        key: &str,
        sku: &str,
        delta: i64,
        reason: &str,
    ) -> anyhow::Result<()> {
        match api {
            Api::Rest => {
                let resp = self
                    .http
                    .post(format!(
                        "{}/v1/inventory/adjustments",
                        self.endpoints.ingress_rest
                    ))
                    .header("Idempotency-Key", key)
                    .json(&json!({"sku": sku, "delta": delta, "reason": reason}))
                    .send()
                    .await?;
                let status = resp.status();
                if !status.is_success() {
                    bail!(
                        "POST /v1/inventory/adjustments: {status}: {}",
                        resp.text().await.unwrap_or_default()
                    );
                }
                Ok(())
            }
            Api::Grpc => {
                self.admin
                    .clone()
                    .adjust_stock(proto::AdjustStockRequest {
                        request_id: key.into(),
                        sku: sku.into(),
                        delta,
                        reason: reason.into(),
                    })
                    .await?;
                Ok(())
            }
        }
    }

    /// The whole inventory view (all pages) and the epoch it reflects.
    pub async fn inventory(
        &self,
    ) -> anyhow::Result<(u64, std::collections::BTreeMap<String, Level>)> {
        let mut out = std::collections::BTreeMap::new();
        let mut token = String::new();
        let mut epoch = 0;
        loop {
            let page = self
                .views
                .clone()
                .list_inventory(proto::ListInventoryRequest {
                    page_size: 1000,
                    page_token: token,
                })
                .await?
                .into_inner();
            epoch = page.freshness.map(|f| f.epoch).unwrap_or(epoch);
            for l in page.levels {
                out.insert(
                    l.sku,
                    Level {
                        on_hand: l.on_hand,
                        reserved: l.reserved,
                        available: l.available,
                        version: l.version,
                    },
                );
            }
            if page.next_page_token.is_empty() {
                return Ok((epoch, out));
            }
            token = page.next_page_token;
        }
    }

    /// One order from the view (`None` when the view does not hold it).
    pub async fn order(&self, order_id: &str) -> anyhow::Result<Option<OrderState>> {
        let resp = self
            .views
            .clone()
            .get_order(proto::GetOrderViewRequest {
                order_id: order_id.into(),
            })
            .await?
            .into_inner();
        Ok(resp.order.map(|o| OrderState {
            status: status_name(o.status).to_string(),
            total_minor: o.total_minor,
        }))
    }
}

/// The docs/design.md name of a proto order status.
pub fn status_name(status: i32) -> &'static str {
    match proto::OrderStatus::try_from(status) {
        Ok(proto::OrderStatus::Created) => "CREATED",
        Ok(proto::OrderStatus::Paid) => "PAID",
        Ok(proto::OrderStatus::PaymentFailed) => "PAYMENT_FAILED",
        Ok(proto::OrderStatus::Cancelled) => "CANCELLED",
        _ => "UNKNOWN",
    }
}

fn to_proto_line(l: &Line) -> proto::OrderLine {
    proto::OrderLine {
        sku: l.sku.clone(),
        quantity: l.quantity,
        unit_price_minor: l.unit_price_minor,
    }
}
