//! The client of the pipeline's ViewService (`proto/orderpipeline/v1/views.proto`), for
//! `GET /v1/orders/{id}` / `GetOrder` and for the currency of order changes.
//!
//! The views live in the pipeline, not here: ingress keeps no order state, so a status
//! read is a call to the pipeline with a short deadline. The connection is lazy (made on
//! the first call, re-made after failures by tonic's channel), so ingress starts and
//! serves orders while the pipeline is down; the reads then fail fast with
//! [`ViewsError::Unavailable`], which the APIs answer honestly with 503 / UNAVAILABLE
//! rather than a guess or a hang.
//!
//! When the views API has TLS and API keys (the pipeline's `[server.security]`), set
//! `views.endpoint` to its `https://` URL, `views.ca_cert` to the CA of its certificate
//! and `views.api_key` to the key to send.

use std::time::Duration;

use servicekit::auth::ClientKey;
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use uuid::Uuid;

use crate::IngressError;
use crate::config::ViewsConfig;
use crate::proto::view_service_client::ViewServiceClient;
use crate::proto::{GetOrderViewRequest, OrderStatus};

/// Why a view read failed (nested in [`crate::commands::CommandError`] as its cause).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ViewsError {
    /// The pipeline did not answer in time: retry later.
    #[error("views unavailable: no answer within {0:?}")]
    Timeout(Duration),
    /// The pipeline is down, starting, or overloaded: retry later.
    #[error("views unavailable: {0}")]
    Unavailable(#[source] tonic::Status),
    /// The pipeline refused the call in a way retrying cannot fix (a bug on one side,
    /// or the API key).
    #[error("views refused the call: {0}")]
    Refused(#[source] tonic::Status),
    /// The pipeline answered something unusable (a bug on one side).
    #[error("views answered badly: {0}")]
    BadAnswer(String),
    /// The pipeline answered an order id that is not a UUID (a bug on one side).
    #[error("views answered badly: order id {text:?} is not a UUID")]
    BadOrderId {
        /// The id as answered.
        text: String,
        /// The UUID parser's explanation.
        #[source]
        source: uuid::Error,
    },
}

impl ViewsError {
    /// Whether asking again later can help.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ViewsError::Timeout(_) | ViewsError::Unavailable(_))
    }
}

/// Adds the configured API key, if any, to every call.
#[derive(Debug, Clone)]
pub struct ViewsAuth(Option<ClientKey>);

impl Interceptor for ViewsAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match &mut self.0 {
            Some(key) => key.call(request),
            None => Ok(request),
        }
    }
}

/// An order as the pipeline's view has it, and the epoch the answer reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderStatusView {
    /// The order.
    pub order_id: Uuid,
    /// CREATED, PAID, PAYMENT_FAILED or CANCELLED.
    pub status: OrderStatus,
    /// Current total in minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The closed epoch the answer reflects.
    pub epoch: u64,
    /// Wall-clock time of that epoch, UTC milliseconds.
    pub as_of_ms: i64,
}

/// The JSON/API name of a status (`CREATED`, ...), without the proto prefix.
pub fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Unspecified => "UNSPECIFIED",
        OrderStatus::Created => "CREATED",
        OrderStatus::Paid => "PAID",
        OrderStatus::PaymentFailed => "PAYMENT_FAILED",
        OrderStatus::Cancelled => "CANCELLED",
    }
}

/// A client of the ViewService. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ViewsClient {
    client: ViewServiceClient<InterceptedService<Channel, ViewsAuth>>,
    timeout: Duration,
}

impl ViewsClient {
    /// A lazily connecting client; fails only on an unusable endpoint URL or CA file.
    pub fn new(config: &ViewsConfig) -> Result<Self, IngressError> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(IngressError::ViewsEndpoint)?
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout);
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|source| IngressError::ViewsCaCert {
                path: path.clone(),
                source,
            })?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(IngressError::ViewsEndpoint)?;
        }
        let channel = endpoint.connect_lazy();
        Ok(ViewsClient {
            client: ViewServiceClient::with_interceptor(channel, ViewsAuth(config.api_key.clone())),
            timeout: config.timeout,
        })
    }

    /// The order's view; `None` when the view does not hold the order.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderStatusView>, ViewsError> {
        let mut request = tonic::Request::new(GetOrderViewRequest {
            order_id: order_id.to_string(),
        });
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        let call = tokio::time::timeout(self.timeout, client.get_order(request)).await;
        let response = match call {
            Err(_) => return Err(ViewsError::Timeout(self.timeout)),
            Ok(Err(status)) => {
                return match status.code() {
                    Code::NotFound => Ok(None),
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Unknown => Err(ViewsError::Unavailable(status)),
                    _ => Err(ViewsError::Refused(status)),
                };
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let freshness = response.freshness.unwrap_or_default();
        let Some(order) = response.order else {
            return Ok(None);
        };
        let status = OrderStatus::try_from(order.status)
            .ok()
            .filter(|s| *s != OrderStatus::Unspecified)
            .ok_or_else(|| {
                ViewsError::BadAnswer(format!("unknown order status {}", order.status))
            })?;
        let answered_id =
            Uuid::try_parse(&order.order_id).map_err(|source| ViewsError::BadOrderId {
                text: order.order_id.clone(),
                source,
            })?;
        if answered_id != order_id {
            return Err(ViewsError::BadAnswer(format!(
                "asked for order {order_id}, got {answered_id}"
            )));
        }
        Ok(Some(OrderStatusView {
            order_id,
            status,
            total_minor: order.total_minor,
            currency: order.currency,
            epoch: freshness.epoch,
            as_of_ms: freshness.as_of_ms,
        }))
    }
}
