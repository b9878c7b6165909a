//! Extractors whose every rejection is a [`Problem`], never axum's `text/plain`.
//!
//! * [`ApiJson`]: `Content-Type` must be JSON (415), the body must fit the limit (413),
//!   be well-formed JSON (400 `malformed-json`), and have the body's shape: an object
//!   (an array is refused, though serde would read it as a tuple), no unknown field, the
//!   right types; a shape error is 400 `validation` with the field's path
//!   (`lines[0].quantity`), found with `serde_path_to_error`.
//! * [`IdempotencyKeyHeader`]: the optional `Idempotency-Key` header, checked.
//! * [`OrderIdPath`]: the `{order_id}` path parameter as text; it is validated with the
//!   body so that one answer lists every violation.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::Problem;
use crate::validation::IdempotencyKey;

/// The `Idempotency-Key` header name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

/// The body limit, as the router was configured (an extension set by the router), so the
/// 413 document can say it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Whether the headers declare a JSON body (`application/json`, `application/*+json`,
/// parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> Result<(), Problem> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(Problem::unsupported_media_type(None));
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(Problem::unsupported_media_type(Some(text)))
    }
}

/// serde_json's message without its " at line L column C" suffix (the position is given
/// separately, or is meaningless for a field error that has a path).
fn message_without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(index) => text[..index].to_owned(),
        None => text,
    }
}

/// The problem of a body that serde_json refused: a shape error (unknown field, wrong
/// type) names the field; a syntax error is `malformed-json` with the position.
fn json_problem(path: &str, error: &serde_json::Error) -> Problem {
    match error.classify() {
        serde_json::error::Category::Data => {
            // "." is the root: the body itself has the wrong shape (an array, say).
            let field = if path == "." { "" } else { path };
            Problem::field(field, message_without_position(error))
        }
        _ => Problem::malformed_json(format!(
            "{} (line {}, column {}).",
            message_without_position(error),
            error.line(),
            error.column()
        )),
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let instance = request.uri().path().to_owned();
        is_json(request.headers()).map_err(|p| p.at(&instance))?;
        let limit = request.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::payload_too_large(limit).at(&instance)
                } else {
                    Problem::malformed_json(format!(
                        "The body could not be read: {}",
                        rejection.body_text()
                    ))
                    .at(&instance)
                }
            })?;
        // serde's derived structs also accept a JSON array (as a tuple); the API's bodies
        // are objects only.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(
                Problem::field("", "the body must be a JSON object, got an array").at(&instance),
            );
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            json_problem(&path, &error.into_inner()).at(&instance)
        })?;
        // Trailing characters after the value are malformed JSON too.
        deserializer
            .end()
            .map_err(|error| json_problem(".", &error).at(&instance))?;
        Ok(ApiJson(value))
    }
}

/// The optional, checked `Idempotency-Key` header. A value in quotes (the structured
/// field form of the IETF draft) is accepted too.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKeyHeader(None));
        };
        let problem = |description: String| {
            Problem::field("Idempotency-Key", description).at(parts.uri.path())
        };
        let text = value
            .to_str()
            .map_err(|_| problem("may only contain visible ASCII characters".to_owned()))?;
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        IdempotencyKey::parse(text)
            .map(|key| IdempotencyKeyHeader(Some(key)))
            .map_err(|violation| problem(violation.description))
    }
}

/// The `traceparent` header, if any (validated by eventbus when used).
#[derive(Debug, Clone)]
pub struct TraceParentHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for TraceParentHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(TraceParentHeader(
            parts
                .headers
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// The `{order_id}` path parameter, as text.
#[derive(Debug, Clone)]
pub struct OrderIdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for OrderIdPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| OrderIdPath(id))
            .map_err(|rejection| {
                Problem::field("order_id", rejection.body_text()).at(parts.uri.path())
            })
    }
}
