//! Table-driven: every invalid request on both APIs gets its specific error (status or
//! code, problem type, the exact field paths), and nothing is published.

use ingress::proto::{
    AdjustStockRequest, CancelOrderRequest, CreateOrderRequest, OrderLine, UpdateOrderRequest,
};
use prost::bytes::{Buf, BufMut};
use serde_json::{Value, json};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt;

use crate::common::{TestApp, TestEnv, order_json};

/// What a REST case sends.
enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
    None,
}

struct RestCase {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    body: Body,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    problem_type: &'static str,
    fields: Vec<&'static str>,
}

fn line(sku: &str, quantity: i64, price: i64) -> Value {
    json!({"sku": sku, "quantity": quantity, "unit_price_minor": price})
}

fn order_with(lines: Vec<Value>) -> Value {
    json!({"customer_id": "c-1", "currency": "EUR", "lines": lines})
}

fn case(name: &'static str, body: Value, fields: Vec<&'static str>) -> RestCase {
    RestCase {
        name,
        method: reqwest::Method::POST,
        path: "/v1/orders".into(),
        body: Body::Json(body),
        headers: vec![],
        status: 400,
        problem_type: "/problems/validation",
        fields,
    }
}

fn rest_cases() -> Vec<RestCase> {
    let mut cases = vec![
        case(
            "missing fields",
            json!({}),
            vec!["customer_id", "currency", "lines"],
        ),
        case(
            "null fields are missing",
            json!({"customer_id": null, "currency": null, "lines": null}),
            vec!["customer_id", "currency", "lines"],
        ),
        case(
            "missing line fields",
            order_with(vec![json!({})]),
            vec![
                "lines[0].sku",
                "lines[0].quantity",
                "lines[0].unit_price_minor",
            ],
        ),
        case("no lines", order_with(vec![]), vec!["lines"]),
        case(
            "zero quantity",
            order_with(vec![line("SKU-1", 0, 100)]),
            vec!["lines[0].quantity"],
        ),
        case(
            "negative quantity, second line",
            order_with(vec![line("SKU-1", 1, 100), line("SKU-2", -3, 100)]),
            vec!["lines[1].quantity"],
        ),
        case(
            "quantity too large",
            order_with(vec![line("SKU-1", 10_001, 100)]),
            vec!["lines[0].quantity"],
        ),
        case(
            "zero price",
            order_with(vec![line("SKU-1", 1, 0)]),
            vec!["lines[0].unit_price_minor"],
        ),
        case(
            "negative price",
            order_with(vec![line("SKU-1", 1, -1)]),
            vec!["lines[0].unit_price_minor"],
        ),
        case(
            "bad SKU (lower case)",
            order_with(vec![line("sku-1", 1, 1)]),
            vec!["lines[0].sku"],
        ),
        case(
            "bad SKU (space)",
            order_with(vec![line("SKU 1", 1, 1)]),
            vec!["lines[0].sku"],
        ),
        case(
            "lowercase currency",
            json!({"customer_id": "c", "currency": "eur", "lines": [line("SKU-1", 1, 1)]}),
            vec!["currency"],
        ),
        case(
            "unknown currency",
            json!({"customer_id": "c", "currency": "XYZ", "lines": [line("SKU-1", 1, 1)]}),
            vec!["currency"],
        ),
        case(
            "customer id too long",
            json!({"customer_id": "c".repeat(129), "currency": "EUR", "lines": [line("SKU-1", 1, 1)]}),
            vec!["customer_id"],
        ),
        case(
            "customer id with a control character",
            json!({"customer_id": "c\u{7}", "currency": "EUR", "lines": [line("SKU-1", 1, 1)]}),
            vec!["customer_id"],
        ),
        case(
            "101 lines",
            order_with((0..101).map(|_| line("SKU-1", 1, 1)).collect()),
            vec!["lines"],
        ),
        case(
            "overflowing total",
            order_with(vec![
                line("SKU-1", 10_000, i64::MAX),
                line("SKU-2", 10_000, i64::MAX),
            ]),
            vec![
                "lines[0].unit_price_minor",
                "lines[1].unit_price_minor",
                "total_minor",
            ],
        ),
        case(
            "every violation at once",
            json!({"currency": "eur", "lines": [line("x", 0, 0)]}),
            vec![
                "customer_id",
                "currency",
                "lines[0].sku",
                "lines[0].quantity",
                "lines[0].unit_price_minor",
            ],
        ),
        case(
            "unknown field",
            json!({"customer_id": "c", "currency": "EUR", "lines": [line("SKU-1", 1, 1)], "total_minor": 1}),
            vec!["total_minor"],
        ),
        case(
            "unknown field in a line",
            order_with(vec![
                json!({"sku": "SKU-1", "quantity": 1, "unit_price_minor": 1, "colour": "red"}),
            ]),
            vec!["lines[0].colour"],
        ),
        case(
            "wrong type",
            order_with(vec![
                json!({"sku": "SKU-1", "quantity": "two", "unit_price_minor": 1}),
            ]),
            vec!["lines[0].quantity"],
        ),
        case("not an object", json!([1, 2]), vec![""]),
    ];
    let raw = |name, content_type: &'static str, body: &[u8], status, problem_type| RestCase {
        name,
        method: reqwest::Method::POST,
        path: "/v1/orders".into(),
        body: Body::Raw(content_type, body.to_vec()),
        headers: vec![],
        status,
        problem_type,
        fields: vec![],
    };
    cases.push(raw(
        "malformed JSON",
        "application/json",
        b"{\"customer_id\": ",
        400,
        "/problems/malformed-json",
    ));
    cases.push(raw(
        "trailing garbage",
        "application/json",
        br#"{"customer_id": "c"} x"#,
        400,
        "/problems/malformed-json",
    ));
    cases.push(raw(
        "wrong content type",
        "text/plain",
        order_json("c").to_string().as_bytes(),
        415,
        "/problems/unsupported-media-type",
    ));
    let big = format!(r#"{{"customer_id": "{}"}}"#, "c".repeat(70 * 1024));
    cases.push(raw(
        "body too large",
        "application/json",
        big.as_bytes(),
        413,
        "/problems/payload-too-large",
    ));
    cases.push(RestCase {
        name: "no content type",
        body: Body::None,
        status: 415,
        problem_type: "/problems/unsupported-media-type",
        ..case("", json!({}), vec![])
    });
    cases.push(RestCase {
        name: "bad idempotency key",
        headers: vec![("idempotency-key", "has space")],
        fields: vec!["Idempotency-Key"],
        ..case("", order_json("c"), vec![])
    });
    // PATCH and GET: bad UUIDs in the path, and the shape of a change.
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let patch = |name, path: String, body: Value, fields| RestCase {
        name,
        method: reqwest::Method::PATCH,
        path,
        ..case("", body, fields)
    };
    cases.push(patch(
        "bad UUID in path",
        "/v1/orders/not-a-uuid".into(),
        json!({"status": "CANCELLED", "currency": "EUR"}),
        vec!["order_id"],
    ));
    cases.push(patch(
        "nil UUID in path, with a bad body",
        "/v1/orders/00000000-0000-0000-0000-000000000000".into(),
        json!({"status": "PAID"}),
        vec!["order_id", "status"],
    ));
    cases.push(patch(
        "lines and status at once",
        format!("/v1/orders/{id}"),
        json!({"status": "CANCELLED", "lines": [line("SKU-1", 1, 1)], "currency": "EUR"}),
        vec!["lines", "status"],
    ));
    cases.push(patch(
        "neither lines nor status",
        format!("/v1/orders/{id}"),
        json!({}),
        vec!["lines", "status"],
    ));
    cases.push(patch(
        "invalid new lines",
        format!("/v1/orders/{id}"),
        json!({"lines": [line("SKU-1", 0, 1)], "currency": "usd"}),
        vec!["currency", "lines[0].quantity"],
    ));
    cases.push(RestCase {
        name: "GET with a bad UUID",
        method: reqwest::Method::GET,
        path: "/v1/orders/1234".into(),
        body: Body::None,
        ..case("", json!({}), vec!["order_id"])
    });
    let adjust = |name, body: Value, fields| RestCase {
        name,
        path: "/v1/inventory/adjustments".into(),
        ..case("", body, fields)
    };
    cases.push(adjust(
        "adjustment missing fields",
        json!({}),
        vec!["sku", "delta", "reason"],
    ));
    cases.push(adjust(
        "adjustment of 0",
        json!({"sku": "SKU-1", "delta": 0, "reason": "restock"}),
        vec!["delta"],
    ));
    cases.push(adjust(
        "adjustment too large, empty reason, bad sku",
        json!({"sku": "-A", "delta": 1_000_000_001_i64, "reason": ""}),
        vec!["sku", "delta", "reason"],
    ));
    cases.push(RestCase {
        name: "unknown route",
        path: "/v1/nothing".into(),
        status: 404,
        problem_type: "/problems/not-found",
        ..case("", json!({}), vec![])
    });
    cases.push(RestCase {
        name: "wrong method",
        method: reqwest::Method::DELETE,
        path: "/v1/orders".into(),
        status: 405,
        problem_type: "/problems/method-not-allowed",
        ..case("", json!({}), vec![])
    });
    cases
}

/// What a gRPC case sends.
enum Call {
    Create(CreateOrderRequest),
    Update(UpdateOrderRequest),
    Cancel(CancelOrderRequest),
    Adjust(AdjustStockRequest),
    /// Raw bytes to a method (malformed protobuf).
    Raw(&'static str, Vec<u8>),
}

struct GrpcCase {
    name: &'static str,
    call: Call,
    code: Code,
    fields: Vec<&'static str>,
}

fn pline(sku: &str, quantity: i64, unit_price_minor: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price_minor,
    }
}

fn create(customer: &str, currency: &str, lines: Vec<OrderLine>) -> Call {
    Call::Create(CreateOrderRequest {
        request_id: String::new(),
        customer_id: customer.into(),
        currency: currency.into(),
        lines,
    })
}

fn grpc_cases() -> Vec<GrpcCase> {
    let invalid = |name, call, fields| GrpcCase {
        name,
        call,
        code: Code::InvalidArgument,
        fields,
    };
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8".to_owned();
    vec![
        invalid(
            "empty request",
            create("", "", vec![]),
            vec!["customer_id", "currency", "lines"],
        ),
        invalid(
            "zero quantity",
            create("c", "EUR", vec![pline("SKU-1", 0, 1)]),
            vec!["lines[0].quantity"],
        ),
        invalid(
            "negative quantity and price",
            create("c", "EUR", vec![pline("SKU-1", -1, -1)]),
            vec!["lines[0].quantity", "lines[0].unit_price_minor"],
        ),
        invalid(
            "bad SKU",
            create("c", "EUR", vec![pline("bad sku", 1, 1)]),
            vec!["lines[0].sku"],
        ),
        invalid(
            "missing SKU",
            create("c", "EUR", vec![pline("", 1, 1)]),
            vec!["lines[0].sku"],
        ),
        invalid(
            "lowercase currency",
            create("c", "eur", vec![pline("SKU-1", 1, 1)]),
            vec!["currency"],
        ),
        invalid(
            "101 lines",
            create("c", "EUR", (0..101).map(|_| pline("SKU-1", 1, 1)).collect()),
            vec!["lines"],
        ),
        invalid(
            "quantity beyond int32",
            create("c", "EUR", vec![pline("SKU-1", 1 << 40, 1)]),
            vec!["lines[0].quantity"],
        ),
        invalid(
            "overflowing total",
            create(
                "c",
                "EUR",
                vec![
                    pline("SKU-1", 10_000, i64::MAX),
                    pline("SKU-1", 10_000, i64::MAX),
                ],
            ),
            vec![
                "lines[0].unit_price_minor",
                "lines[1].unit_price_minor",
                "total_minor",
            ],
        ),
        invalid(
            "bad request_id",
            Call::Create(CreateOrderRequest {
                request_id: "has space".into(),
                customer_id: "c".into(),
                currency: "EUR".into(),
                lines: vec![pline("SKU-1", 1, 1)],
            }),
            vec!["request_id"],
        ),
        invalid(
            "update with a bad UUID and bad lines",
            Call::Update(UpdateOrderRequest {
                request_id: String::new(),
                order_id: "nope".into(),
                lines: vec![pline("SKU-1", 0, 1)],
                currency: Some("EUR".into()),
            }),
            vec!["order_id", "lines[0].quantity"],
        ),
        invalid(
            "update without lines",
            Call::Update(UpdateOrderRequest {
                request_id: String::new(),
                order_id: id.clone(),
                lines: vec![],
                currency: Some("EUR".into()),
            }),
            vec!["lines"],
        ),
        invalid(
            "cancel with a bad UUID and currency",
            Call::Cancel(CancelOrderRequest {
                request_id: String::new(),
                order_id: "67E55044".into(),
                currency: Some("E".into()),
            }),
            vec!["order_id", "currency"],
        ),
        invalid(
            "adjustment of 0 without reason",
            Call::Adjust(AdjustStockRequest {
                request_id: String::new(),
                sku: "SKU-1".into(),
                delta: 0,
                reason: String::new(),
            }),
            vec!["delta", "reason"],
        ),
        // Field 4 (lines), length-delimited, claiming 127 bytes that are not there.
        invalid(
            "malformed protobuf",
            Call::Raw(
                "/orderpipeline.v1.OrderService/CreateOrder",
                vec![0x22, 0x7f, 0x0a],
            ),
            vec![],
        ),
        invalid(
            "truncated varint",
            Call::Raw(
                "/orderpipeline.v1.InventoryAdminService/AdjustStock",
                vec![0x18, 0xff, 0xff],
            ),
            vec![],
        ),
        GrpcCase {
            name: "message too large",
            call: create(&"c".repeat(70 * 1024), "EUR", vec![pline("SKU-1", 1, 1)]),
            code: Code::OutOfRange,
            fields: vec![],
        },
    ]
}

/// Sends and receives raw bytes, to put malformed protobuf on the wire.
#[derive(Default, Clone)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_their_specific_errors_and_publish_nothing() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.config()).await;
    let before = env.watermarks().await;
    assert_eq!(before, [0, 0, 0]);
    let mut failures = Vec::new();

    for case in rest_cases() {
        let mut request = app
            .http
            .request(case.method.clone(), format!("{}{}", app.rest, case.path));
        request = match case.body {
            Body::Json(value) => request
                .header("content-type", "application/json")
                .body(value.to_string()),
            Body::Raw(content_type, bytes) => {
                request.header("content-type", content_type).body(bytes)
            }
            Body::None => request,
        };
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or("?"))
                    .collect()
            })
            .unwrap_or_default();
        let ok = status == case.status
            && content_type.as_deref() == Some("application/problem+json")
            && body["type"] == case.problem_type
            && body["status"] == case.status
            && body["title"].is_string()
            && body["detail"].is_string()
            && fields == case.fields
            && body["errors"].as_array().is_none_or(|errors| {
                errors
                    .iter()
                    .all(|e| e["description"].as_str().is_some_and(|d| !d.is_empty()))
            });
        if !ok {
            failures.push(format!(
                "REST {}: want {} {} {:?}, got {status} {content_type:?} {body}",
                case.name, case.status, case.problem_type, case.fields
            ));
        }
    }

    let mut orders = app.orders().await;
    let mut admin = app.admin().await;
    let mut raw = tonic::client::Grpc::new(app.channel().await);
    for case in grpc_cases() {
        let status = match case.call {
            Call::Create(r) => orders.create_order(r).await.err(),
            Call::Update(r) => orders.update_order(r).await.err(),
            Call::Cancel(r) => orders.cancel_order(r).await.err(),
            Call::Adjust(r) => admin.adjust_stock(r).await.err(),
            Call::Raw(method, bytes) => {
                raw.ready().await.unwrap();
                raw.unary(
                    tonic::Request::new(bytes),
                    http::uri::PathAndQuery::from_static(method),
                    RawCodec,
                )
                .await
                .err()
            }
        };
        let Some(status) = status else {
            failures.push(format!("gRPC {}: succeeded", case.name));
            continue;
        };
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        if status.code() != case.code || fields != case.fields {
            failures.push(format!(
                "gRPC {}: want {:?} {:?}, got {:?} {fields:?} ({})",
                case.name,
                case.code,
                case.fields,
                status.code(),
                status.message()
            ));
        }
    }

    // Nothing was published for any of them.
    assert_eq!(
        env.watermarks().await,
        before,
        "a refused request published something"
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.stop().await.unwrap();
    env.cleanup().await;
}
