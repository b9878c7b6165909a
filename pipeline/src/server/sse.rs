//! `GET /v1/stream`: server-sent events, one `stock` or `order` event per changed row of
//! each committed epoch (absolute values with the epoch), the current views first with
//! `?snapshot=true`, and `lagged` when a reader fell behind the broadcast channel.

use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;

use super::AppState;
use super::rest::{OrderJson, ProblemJson, StockJson, problem};
use crate::views::Delta;

/// `?snapshot=true`: send the current views first.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Send the current views (every SKU and order) before the changes.
    #[serde(default)]
    snapshot: bool,
}

fn sse_events(delta: &Delta) -> Vec<SseEvent> {
    let mut events = Vec::with_capacity(delta.stock.len() + delta.orders.len());
    for change in &delta.stock {
        let mut data =
            serde_json::to_value(StockJson::new(&change.sku, change.level, change.version))
                .unwrap_or_default();
        data["epoch"] = json!(delta.epoch);
        events.push(SseEvent::default().event("stock").data(data.to_string()));
    }
    for change in &delta.orders {
        let data = match &change.view {
            Some(view) => {
                let mut data =
                    serde_json::to_value(OrderJson::new(change.order_id, view)).unwrap_or_default();
                data["epoch"] = json!(delta.epoch);
                data
            }
            None => json!({
                "order_id": uuid::Uuid::from_u128(change.order_id).to_string(),
                "removed": true,
                "epoch": delta.epoch,
            }),
        };
        events.push(SseEvent::default().event("order").data(data.to_string()));
    }
    events
}

/// The changes of every committed epoch, as server-sent events.
///
/// `event: stock` and `event: order` carry one changed row each (absolute values, with
/// `epoch`); `event: lagged` means the client fell behind and should re-read the
/// snapshot. The stream ends when the job stops.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "inventory",
    params(StreamQuery),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed query (`snapshot` is `true` or `false`).", body = ProblemJson, content_type = "application/problem+json"),
    )
)]
pub(super) async fn stream(
    State(app): AppState,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let (state, shutdown) = app;
    match query {
        Ok(Query(query)) => events(state, shutdown, &query).into_response(),
        Err(rejection) => problem(
            StatusCode::BAD_REQUEST,
            "Invalid query",
            rejection.body_text(),
            None,
        ),
    }
}

fn events(
    state: super::ApiState,
    shutdown: crate::Shutdown,
    query: &StreamQuery,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    // Subscribe before reading the snapshot, so that no change falls in between (a
    // change may then be sent twice, which is harmless for absolute values).
    let receiver = state.views.subscribe();
    let snapshot = if query.snapshot {
        sse_events(&state.views.read().snapshot())
    } else {
        Vec::new()
    };
    let changes = BroadcastStream::new(receiver).flat_map(|item| {
        let events = match item {
            Ok(delta) => sse_events(&delta),
            Err(lagged) => vec![
                SseEvent::default()
                    .event("lagged")
                    .data(json!({ "detail": lagged.to_string() }).to_string()),
            ],
        };
        futures::stream::iter(events)
    });
    let events = futures::stream::iter(snapshot)
        .chain(changes)
        .map(Ok)
        .take_until(async move { shutdown.wait().await });
    Sse::new(events).keep_alive(KeepAlive::default())
}
