//! The gRPC `orderpipeline.v1.ViewService`: the same views as REST, every answer with
//! its `Freshness` (the committed epoch), paged listing, and `WatchChanges`, the gRPC
//! twin of the event stream.

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response as GrpcResponse, Status};

use super::ApiState;
use crate::Shutdown;
use crate::logic::{OrderId, OrderStatus, OrderView, StockLevel};
use crate::proto;
use crate::proto::view_service_server::ViewService;
use crate::views::Delta;

/// The gRPC `ViewService` over the views.
pub(super) struct GrpcViews {
    pub(super) state: ApiState,
    pub(super) shutdown: Shutdown,
}

fn freshness(as_of: Option<u64>) -> Option<proto::Freshness> {
    let epoch = as_of.unwrap_or(0);
    Some(proto::Freshness {
        epoch,
        as_of_ms: i64::try_from(epoch).unwrap_or(i64::MAX),
    })
}

fn proto_level(sku: &str, level: StockLevel, version: u64) -> proto::StockLevel {
    proto::StockLevel {
        sku: sku.to_owned(),
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available,
        version: i64::try_from(version).unwrap_or(i64::MAX),
    }
}

fn proto_order(order_id: OrderId, view: &OrderView) -> proto::OrderView {
    let status = match view.status {
        OrderStatus::Created => proto::OrderStatus::Created,
        OrderStatus::Paid => proto::OrderStatus::Paid,
        OrderStatus::PaymentFailed => proto::OrderStatus::PaymentFailed,
        OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
    };
    proto::OrderView {
        order_id: uuid::Uuid::from_u128(order_id).to_string(),
        status: status as i32,
        total_minor: view.total_minor,
        currency: view.currency.clone(),
    }
}

fn proto_changes(delta: &Delta, stock: bool, orders: bool) -> Vec<proto::ViewChange> {
    let fresh = freshness(Some(delta.epoch));
    let mut out = Vec::new();
    if stock {
        out.extend(delta.stock.iter().map(|c| proto::ViewChange {
            change: Some(proto::view_change::Change::Stock(proto_level(
                &c.sku, c.level, c.version,
            ))),
            freshness: fresh,
        }));
    }
    if orders {
        out.extend(delta.orders.iter().filter_map(|c| {
            c.view.as_ref().map(|view| proto::ViewChange {
                change: Some(proto::view_change::Change::Order(proto_order(
                    c.order_id, view,
                ))),
                freshness: fresh,
            })
        }));
    }
    out
}

type ChangeStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<proto::ViewChange, Status>> + Send + 'static>>;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

#[tonic::async_trait]
impl ViewService for GrpcViews {
    async fn get_inventory(
        &self,
        request: Request<proto::GetInventoryRequest>,
    ) -> Result<GrpcResponse<proto::GetInventoryResponse>, Status> {
        let sku = request.into_inner().sku;
        if let Some(why) = schemas::validate_sku(&sku) {
            return Err(Status::invalid_argument(format!("sku: {why}")));
        }
        if !self.state.views.is_ready() {
            return Err(Status::unavailable("the views are being rebuilt"));
        }
        let views = self.state.views.read();
        let (level, version) = views.sku(&sku);
        Ok(GrpcResponse::new(proto::GetInventoryResponse {
            level: Some(proto_level(&sku, level, version)),
            freshness: freshness(views.as_of),
        }))
    }

    async fn list_inventory(
        &self,
        request: Request<proto::ListInventoryRequest>,
    ) -> Result<GrpcResponse<proto::ListInventoryResponse>, Status> {
        let request = request.into_inner();
        let size = match usize::try_from(request.page_size).unwrap_or(MAX_PAGE) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            let bytes = hex::decode(&request.page_token)
                .map_err(|_| Status::invalid_argument("page_token: not a token of this API"))?;
            Some(
                String::from_utf8(bytes)
                    .map_err(|_| Status::invalid_argument("page_token: not a token of this API"))?,
            )
        };
        if !self.state.views.is_ready() {
            return Err(Status::unavailable("the views are being rebuilt"));
        }
        let views = self.state.views.read();
        let range = match &after {
            Some(after) => views.stock.range::<str, _>((
                std::ops::Bound::Excluded(after.as_str()),
                std::ops::Bound::Unbounded,
            )),
            None => views.stock.range::<str, _>(..),
        };
        let mut levels: Vec<proto::StockLevel> = range
            .take(size + 1)
            .map(|(sku, level)| proto_level(sku, *level, views.sku(sku).1))
            .collect();
        let next_page_token = if levels.len() > size {
            levels.truncate(size);
            levels
                .last()
                .map(|l| hex::encode(&l.sku))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(GrpcResponse::new(proto::ListInventoryResponse {
            levels,
            next_page_token,
            freshness: freshness(views.as_of),
        }))
    }

    async fn get_order(
        &self,
        request: Request<proto::GetOrderViewRequest>,
    ) -> Result<GrpcResponse<proto::GetOrderViewResponse>, Status> {
        let id = request.into_inner().order_id;
        // The same rule as REST, ingress and the events: hyphenated, not the nil UUID.
        let order_id = schemas::validation::parse_id(&id)
            .map_err(|e| Status::invalid_argument(format!("order_id: {id:?}: {e}")))?
            .as_u128();
        if !self.state.views.is_ready() {
            return Err(Status::unavailable("the views are being rebuilt"));
        }
        let views = self.state.views.read();
        Ok(GrpcResponse::new(proto::GetOrderViewResponse {
            order: views
                .orders
                .get(&order_id)
                .map(|v| proto_order(order_id, v)),
            freshness: freshness(views.as_of),
        }))
    }

    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<proto::WatchChangesRequest>,
    ) -> Result<GrpcResponse<Self::WatchChangesStream>, Status> {
        let request = request.into_inner();
        let kinds: Vec<proto::ViewKind> = request
            .kinds
            .iter()
            .map(|k| proto::ViewKind::try_from(*k).unwrap_or(proto::ViewKind::Unspecified))
            .collect();
        if kinds.contains(&proto::ViewKind::Unspecified) {
            return Err(Status::invalid_argument(
                "kinds: unknown or unspecified view kind",
            ));
        }
        let all = kinds.is_empty();
        let stock = all || kinds.contains(&proto::ViewKind::Stock);
        let orders = all || kinds.contains(&proto::ViewKind::Orders);
        let receiver = self.state.views.subscribe();
        let snapshot = if request.snapshot {
            proto_changes(&self.state.views.read().snapshot(), stock, orders)
        } else {
            Vec::new()
        };
        let changes = BroadcastStream::new(receiver).flat_map(move |item| {
            let items: Vec<Result<proto::ViewChange, Status>> = match item {
                Ok(delta) => proto_changes(&delta, stock, orders)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Err(lagged) => vec![Err(Status::data_loss(format!(
                    "the watcher fell behind ({lagged}); watch again with snapshot = true"
                )))],
            };
            futures::stream::iter(items)
        });
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::iter(snapshot.into_iter().map(Ok))
            .chain(changes)
            .take_until(async move { shutdown.wait().await });
        Ok(GrpcResponse::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fill, state};
    use super::*;

    #[tokio::test]
    async fn grpc_pages_validates_and_reports_freshness() {
        let state = state();
        let grpc = GrpcViews {
            state: state.clone(),
            shutdown: Shutdown::new(),
        };
        let unavailable = grpc
            .get_inventory(Request::new(proto::GetInventoryRequest { sku: "A".into() }))
            .await
            .unwrap_err();
        assert_eq!(unavailable.code(), tonic::Code::Unavailable);
        fill(&state.views);
        let invalid = grpc
            .get_inventory(Request::new(proto::GetInventoryRequest {
                sku: "a b".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

        let first = grpc
            .list_inventory(Request::new(proto::ListInventoryRequest {
                page_size: 1,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.levels.len(), 1);
        assert_eq!(first.levels[0].sku, "A");
        assert_eq!(first.freshness.map(|f| f.epoch), Some(1_000));
        let second = grpc
            .list_inventory(Request::new(proto::ListInventoryRequest {
                page_size: 1,
                page_token: first.next_page_token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.levels[0].sku, "B");
        assert!(second.next_page_token.is_empty());

        let order = grpc
            .get_order(Request::new(proto::GetOrderViewRequest {
                order_id: uuid::Uuid::from_u128(42).to_string(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            order.order.map(|o| o.status),
            Some(proto::OrderStatus::Paid as i32)
        );
        let missing = grpc
            .get_order(Request::new(proto::GetOrderViewRequest {
                order_id: uuid::Uuid::from_u128(7).to_string(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(missing.order.is_none());
        assert_eq!(missing.freshness.map(|f| f.as_of_ms), Some(1_000));
    }
}
