//! A gRPC fuzz pass over every method of both APIs, on real processes (ingress and the
//! pipeline of a [`Stack`]): raw malformed protobuf bytes (sent with a codec that passes
//! bytes through, so no client library tidies them up) and well-formed messages with
//! boundary values. A client's mistake must be INVALID_ARGUMENT (or, for a message over
//! the size limit, OUT_OF_RANGE/RESOURCE_EXHAUSTED), never INTERNAL or UNKNOWN, and both
//! servers must still answer afterwards.

use std::time::Duration;

use benches::scenario::GatewayRules;
use benches::stack::{Stack, StackOptions};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Bytes in, bytes out: what is sent is exactly what the test wrote.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// Calls `path` with `body`; the status code, or `None` for an answer.
async fn call(channel: &Channel, path: &'static str, body: Vec<u8>) -> Option<Code> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the channel is ready");
    let request = tonic::Request::new(body);
    let path = PathAndQuery::from_static(path);
    if path.path().ends_with("WatchChanges") {
        // Server streaming: the status of the call, or of its first message.
        return match grpc.server_streaming(request, path, Raw).await {
            Ok(mut stream) => {
                match tokio::time::timeout(Duration::from_secs(1), stream.get_mut().message()).await
                {
                    Ok(Err(status)) => Some(status.code()),
                    _ => None,
                }
            }
            Err(status) => Some(status.code()),
        };
    }
    if path.path().ends_with("CreateOrders") {
        // Bidirectional streaming, one request: a message that cannot be decoded ends the
        // call with a status; a refused order is a reply carrying the unary call's code.
        let request = tonic::Request::new(tokio_stream::once(request.into_inner()));
        return match grpc.streaming(request, path, Raw).await {
            Ok(mut replies) => {
                match tokio::time::timeout(Duration::from_secs(5), replies.get_mut().message())
                    .await
                {
                    Ok(Err(status)) => Some(status.code()),
                    Ok(Ok(Some(bytes))) => {
                        let reply = proto::CreateOrdersReply::decode(bytes.as_slice())
                            .expect("a CreateOrdersReply");
                        match reply.result {
                            Some(proto::create_orders_reply::Result::Error(e)) => {
                                Some(Code::from(e.code))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
            Err(status) => Some(status.code()),
        };
    }
    grpc.unary(request, path, Raw).await.err().map(|s| s.code())
}

/// Malformed protobuf: every one of these fails to decode as any request message.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("all ones", vec![0xff; 16]),
        ("truncated varint", vec![0x08, 0x80]),
        ("length past the end", vec![0x0a, 0x10, b'a']),
        ("field number 0", vec![0x00, 0x01]),
        ("invalid UTF-8 in field 1", vec![0x0a, 0x02, 0xc3, 0x28]),
        ("wire type 7", vec![0x0f, 0x01]),
        ("group start without end", vec![0x0b]),
    ]
}

fn line(sku: &str, quantity: i64, unit_price_minor: i64) -> proto::OrderLine {
    proto::OrderLine {
        sku: sku.into(),
        quantity,
        unit_price_minor,
    }
}

/// Well-formed messages whose values break a rule: each is the client's mistake.
fn boundaries() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    const CREATE: &str = "/orderpipeline.v1.OrderService/CreateOrder";
    const UPDATE: &str = "/orderpipeline.v1.OrderService/UpdateOrder";
    const CANCEL: &str = "/orderpipeline.v1.OrderService/CancelOrder";
    const GET: &str = "/orderpipeline.v1.OrderService/GetOrder";
    const ADJUST: &str = "/orderpipeline.v1.InventoryAdminService/AdjustStock";
    const VIEW_SKU: &str = "/orderpipeline.v1.ViewService/GetInventory";
    const VIEW_ORDER: &str = "/orderpipeline.v1.ViewService/GetOrder";
    let create = |lines: Vec<proto::OrderLine>, request_id: &str, currency: &str| {
        proto::CreateOrderRequest {
            request_id: request_id.into(),
            customer_id: "c-1".into(),
            currency: currency.into(),
            lines,
        }
        .encode_to_vec()
    };
    let nil = "00000000-0000-0000-0000-000000000000";
    vec![
        ("create: empty", CREATE, Vec::new()),
        (
            "create: quantity i64::MAX",
            CREATE,
            create(vec![line("SKU-1", i64::MAX, 1)], "", "EUR"),
        ),
        (
            "create: price i64::MIN",
            CREATE,
            create(vec![line("SKU-1", 1, i64::MIN)], "", "EUR"),
        ),
        (
            "create: 101 lines",
            CREATE,
            create((0..101).map(|_| line("SKU-1", 1, 1)).collect(), "", "EUR"),
        ),
        (
            "create: request_id with a space",
            CREATE,
            create(vec![line("SKU-1", 1, 1)], "a b", "EUR"),
        ),
        (
            "create: request_id of 256 characters",
            CREATE,
            create(vec![line("SKU-1", 1, 1)], &"k".repeat(256), "EUR"),
        ),
        (
            "create: lower-case currency",
            CREATE,
            create(vec![line("SKU-1", 1, 1)], "", "eur"),
        ),
        (
            "create: SKU of 10,000 characters",
            CREATE,
            create(vec![line(&"S".repeat(10_000), 1, 1)], "", "EUR"),
        ),
        (
            "update: nil order id",
            UPDATE,
            proto::UpdateOrderRequest {
                order_id: nil.into(),
                lines: vec![line("SKU-1", 1, 1)],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "update: no lines",
            UPDATE,
            proto::UpdateOrderRequest {
                order_id: "0b6f1d7e-5d9c-4c8e-9a51-0d6f3f1c2a7b".into(),
                currency: Some("EUR".into()),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "cancel: simple-form id",
            CANCEL,
            proto::CancelOrderRequest {
                order_id: "0b6f1d7e5d9c4c8e9a510d6f3f1c2a7b".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "get: empty id",
            GET,
            proto::GetOrderRequest::default().encode_to_vec(),
        ),
        (
            "adjust: delta 0",
            ADJUST,
            proto::AdjustStockRequest {
                sku: "SKU-1".into(),
                delta: 0,
                reason: "r".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "adjust: delta i64::MIN",
            ADJUST,
            proto::AdjustStockRequest {
                sku: "SKU-1".into(),
                delta: i64::MIN,
                reason: "r".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "adjust: reason with a control character",
            ADJUST,
            proto::AdjustStockRequest {
                sku: "SKU-1".into(),
                delta: 1,
                reason: "a\u{7}".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "views: malformed SKU",
            VIEW_SKU,
            proto::GetInventoryRequest { sku: "-x".into() }.encode_to_vec(),
        ),
        (
            "views: nil order id",
            VIEW_ORDER,
            proto::GetOrderViewRequest {
                order_id: nil.into(),
            }
            .encode_to_vec(),
        ),
        (
            "views: not an order id",
            VIEW_ORDER,
            proto::GetOrderViewRequest {
                order_id: "x".into(),
            }
            .encode_to_vec(),
        ),
    ]
}

const CREATE_ORDERS: &str = "/orderpipeline.v1.OrderService/CreateOrders";
const INGRESS_METHODS: [&str; 6] = [
    "/orderpipeline.v1.OrderService/CreateOrder",
    CREATE_ORDERS,
    "/orderpipeline.v1.OrderService/UpdateOrder",
    "/orderpipeline.v1.OrderService/CancelOrder",
    "/orderpipeline.v1.OrderService/GetOrder",
    "/orderpipeline.v1.InventoryAdminService/AdjustStock",
];
const VIEW_METHODS: [&str; 4] = [
    "/orderpipeline.v1.ViewService/GetInventory",
    "/orderpipeline.v1.ViewService/ListInventory",
    "/orderpipeline.v1.ViewService/GetOrder",
    "/orderpipeline.v1.ViewService/WatchChanges",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_boundary_messages_are_invalid_argument_on_every_method() {
    let stack = Stack::start_with(
        GatewayRules::default(),
        &["-w", "1"],
        &StackOptions {
            only: vec!["pipeline", "ingress"],
            ..StackOptions::default()
        },
    )
    .await
    .expect("the stack starts");
    println!("stack prefix {}", stack.prefix);
    let connect = |url: String| async move {
        Channel::from_shared(url)
            .expect("a URL")
            .connect()
            .await
            .expect("connects")
    };
    let ingress = connect(stack.endpoints.ingress_grpc.clone()).await;
    let views = connect(stack.endpoints.views_grpc.clone()).await;

    let mut wrong = Vec::new();
    let mut calls = 0;
    for (methods, channel) in [
        (&INGRESS_METHODS[..], &ingress),
        (&VIEW_METHODS[..], &views),
    ] {
        for path in methods {
            for (what, bytes) in malformed() {
                calls += 1;
                let code = call(channel, path, bytes).await;
                if code != Some(Code::InvalidArgument) {
                    wrong.push(format!("{path} {what}: {code:?}"));
                }
            }
        }
    }
    for (what, path, bytes) in boundaries() {
        let channel = if path.contains("ViewService") {
            &views
        } else {
            &ingress
        };
        // Every CreateOrder mistake is also one inside a CreateOrders stream.
        let paths = if path.ends_with("/CreateOrder") {
            vec![path, CREATE_ORDERS]
        } else {
            vec![path]
        };
        for path in paths {
            calls += 1;
            let code = call(channel, path, bytes.clone()).await;
            if code != Some(Code::InvalidArgument) {
                wrong.push(format!("{path} {what}: {code:?}"));
            }
        }
    }
    // Over ingress's message limit (`grpc.max_message_bytes`): refused for its size
    // before it is decoded (OUT_OF_RANGE), not a server fault.
    for size in [100_000, 5 << 20] {
        let path = "/orderpipeline.v1.OrderService/CreateOrder";
        calls += 1;
        let big = proto::CreateOrderRequest {
            customer_id: "c".repeat(size),
            ..Default::default()
        }
        .encode_to_vec();
        let code = call(&ingress, path, big).await;
        if !matches!(
            code,
            Some(Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument)
        ) {
            wrong.push(format!("{path} message of {size} bytes: {code:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {calls} calls answered other than INVALID_ARGUMENT:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Both servers still serve a well-formed request.
    let list = proto::ListInventoryRequest::default().encode_to_vec();
    assert_eq!(
        call(&views, "/orderpipeline.v1.ViewService/ListInventory", list).await,
        None,
        "the views API still answers"
    );
    let get = proto::GetOrderRequest {
        order_id: uuid::Uuid::new_v4().to_string(),
    }
    .encode_to_vec();
    assert_eq!(
        call(&ingress, "/orderpipeline.v1.OrderService/GetOrder", get).await,
        Some(Code::NotFound),
        "ingress still answers"
    );
    println!("{calls} calls, every one refused as the client's mistake");
    stack.shutdown().await;
}
