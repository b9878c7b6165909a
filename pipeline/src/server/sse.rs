//! `GET /v1/stream`: server-sent events, one `stock` or `order` event per changed row of
//! each committed epoch (absolute values with the epoch), the current views first with
//! `?snapshot=true`, and `lagged` when a reader fell behind the broadcast channel.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;

use super::AppState;
use super::rest::{OrderJson, StockJson};
use crate::views::Delta;

/// `?snapshot=true`: send the current views first.
#[derive(Deserialize)]
pub(super) struct StreamQuery {
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

pub(super) async fn stream(
    State((state, shutdown)): AppState,
    Query(query): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
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
