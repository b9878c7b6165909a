//! Reads through the pipeline's ViewService (a fake one here: the pipeline is built
//! elsewhere; Kafka and the registry stay real), and graceful shutdown with a request in
//! flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ingress::proto::view_service_server::{ViewService, ViewServiceServer};
use ingress::proto::{
    Freshness, GetInventoryRequest, GetInventoryResponse, GetOrderRequest, GetOrderViewRequest,
    GetOrderViewResponse, ListInventoryRequest, ListInventoryResponse, OrderStatus, OrderView,
    ViewChange, WatchChangesRequest,
};
use schemas::{OrderChangeKind, OrderUpdated};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::common::{TestApp, TestEnv};

/// A ViewService that knows some orders and answers after `delay`.
#[derive(Clone)]
struct FakeViews {
    orders: HashMap<String, OrderView>,
    delay: Duration,
}

#[tonic::async_trait]
impl ViewService for FakeViews {
    async fn get_inventory(
        &self,
        _: Request<GetInventoryRequest>,
    ) -> Result<Response<GetInventoryResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_inventory(
        &self,
        _: Request<ListInventoryRequest>,
    ) -> Result<Response<ListInventoryResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderViewRequest>,
    ) -> Result<Response<GetOrderViewResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(GetOrderViewResponse {
            order: self.orders.get(&request.get_ref().order_id).cloned(),
            freshness: Some(Freshness {
                epoch: 42,
                as_of_ms: 1_767_323_045_678,
            }),
        }))
    }

    type WatchChangesStream = tokio_stream::Empty<Result<ViewChange, Status>>;

    async fn watch_changes(
        &self,
        _: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

async fn serve_fake(views: FakeViews) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ViewServiceServer::new(views))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn paid(order_id: Uuid) -> OrderView {
    OrderView {
        order_id: order_id.to_string(),
        status: OrderStatus::Paid as i32,
        total_minor: 4498,
        currency: "SEK".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_status_and_currency_come_from_the_view() {
    let env = TestEnv::new().await;
    let known = Uuid::new_v4();
    let views = serve_fake(FakeViews {
        orders: HashMap::from([(known.to_string(), paid(known))]),
        delay: Duration::ZERO,
    })
    .await;
    let mut config = env.config();
    config.views.endpoint = format!("http://{views}");
    let app = TestApp::spawn(config).await;

    let (status, body) = app.get_json(&format!("/v1/orders/{known}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"order_id": known, "status": "PAID", "total_minor": 4498, "currency": "SEK", "epoch": 42, "as_of_ms": 1_767_323_045_678_i64})
    );
    let unknown = Uuid::new_v4();
    let (status, body) = app.get_json(&format!("/v1/orders/{unknown}")).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (404, Some("/problems/not-found"))
    );

    let mut orders = app.orders().await;
    let answer = orders
        .get_order(GetOrderRequest {
            order_id: known.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.order.unwrap().status, OrderStatus::Paid as i32);
    assert_eq!(answer.freshness.unwrap().epoch, 42);
    let status = orders
        .get_order(GetOrderRequest {
            order_id: unknown.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // A cancellation without a currency takes the order's currency from the view.
    let response = app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/orders/{known}"),
            &json!({"status": "CANCELLED"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let change: Value = response.json().await.unwrap();
    assert_eq!(change["currency"], "SEK");
    let records = env.records(&env.topics.order_updated).await;
    assert_eq!(records.len(), 1);
    let event: OrderUpdated = env.decode(&records[0]).await;
    assert_eq!(
        (event.kind, event.currency.as_str()),
        (OrderChangeKind::Cancelled, "SEK")
    );
    // ... and for an order the view does not know, it is 404 and nothing is published.
    let response = app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/orders/{unknown}"),
            &json!({"status": "CANCELLED"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(env.watermarks().await[1], 1);

    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let env = TestEnv::new().await;
    let known = Uuid::new_v4();
    let views = serve_fake(FakeViews {
        orders: HashMap::from([(known.to_string(), paid(known))]),
        delay: Duration::from_millis(800),
    })
    .await;
    let mut config = env.config();
    config.views.endpoint = format!("http://{views}");
    config.views.timeout = Duration::from_secs(5);
    let mut app = TestApp::spawn(config).await;

    // A request that takes 800 ms is in flight when shutdown starts...
    let url = format!("{}/v1/orders/{known}", app.rest);
    let http = app.http.clone();
    let in_flight = tokio::spawn(async move { http.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    app.trigger_shutdown();

    // ...and still gets its answer.
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    app.join().await.expect("clean shutdown");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "run waited for the request"
    );

    // Nothing listens any more.
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", app.rest))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "new connections are refused after shutdown"
    );
    env.cleanup().await;
}
