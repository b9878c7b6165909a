//! RFC 9457 problem details: every error of the REST API, and only that shape.
//!
//! A client deals with one error format whatever went wrong: a field violation, a body
//! that is not JSON, a wrong media type, an oversized body, an unknown route, Kafka being
//! down. axum's own rejections answer `text/plain`, so every extractor of this API maps
//! its rejection here (see [`super::extract`]) and the router's fallbacks do too.
//!
//! Members: `type` (a URI reference naming the kind of problem, stable, for code to
//! switch on), `title` (its short human summary, the same for every occurrence),
//! `status`, `detail` (this occurrence), `instance` (the request path) and, for
//! validation problems, `errors`: every violated rule as `{field, description}`, with
//! the same paths as the gRPC `BadRequest` details and the events' own validation.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::Violations;
use serde::Serialize;
use utoipa::ToSchema;

use crate::commands::CommandError;

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem, as `type` URI references (relative to the API's base URL).
pub mod types {
    /// The request breaks the validation rules; see `errors`.
    pub const VALIDATION: &str = "/problems/validation";
    /// The body is not well-formed JSON.
    pub const MALFORMED_JSON: &str = "/problems/malformed-json";
    /// The body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "/problems/unsupported-media-type";
    /// The body is larger than the limit.
    pub const PAYLOAD_TOO_LARGE: &str = "/problems/payload-too-large";
    /// No such route, or no such order.
    pub const NOT_FOUND: &str = "/problems/not-found";
    /// The route exists, the method does not.
    pub const METHOD_NOT_ALLOWED: &str = "/problems/method-not-allowed";
    /// The idempotency key was used with a different request.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "/problems/idempotency-key-reused";
    /// A request with the same idempotency key is in progress.
    pub const REQUEST_IN_PROGRESS: &str = "/problems/request-in-progress";
    /// A dependency is unavailable; retry after `Retry-After` seconds.
    pub const UNAVAILABLE: &str = "/problems/unavailable";
    /// A dependency answered something unusable.
    pub const BAD_GATEWAY: &str = "/problems/bad-gateway";
    /// Something went wrong on our side.
    pub const INTERNAL: &str = "/problems/internal";
}

/// One violated rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ProblemField {
    /// Path of the field, e.g. `lines[2].quantity`, or a header name.
    pub field: String,
    /// What is wrong.
    pub description: String,
}

/// An RFC 9457 problem document (the JSON shape; see [`Problem`] for the response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument {
    /// URI reference naming the kind of problem (see the `/problems/...` list).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// The request path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// Every violated rule (validation problems only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<Duration>,
}

/// A problem as an error value and a response: a boxed [`ProblemDocument`], so that
/// `Result<_, Problem>` stays small on the happy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(Box<ProblemDocument>);

impl std::ops::Deref for Problem {
    type Target = ProblemDocument;
    fn deref(&self) -> &ProblemDocument {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDocument {
        &mut self.0
    }
}

impl Problem {
    /// A problem of kind `problem_type`.
    pub fn new(
        status: StatusCode,
        problem_type: &str,
        title: &str,
        detail: impl Into<String>,
    ) -> Self {
        Problem(Box::new(ProblemDocument {
            problem_type: problem_type.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: String::new(),
            errors: Vec::new(),
            retry_after: None,
        }))
    }

    /// The document.
    pub fn document(&self) -> &ProblemDocument {
        &self.0
    }

    /// Sets `instance` (the request path).
    pub fn at(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// 400 listing every violation.
    pub fn validation(violations: Violations) -> Self {
        let count = violations.len();
        let mut problem = Problem::new(
            StatusCode::BAD_REQUEST,
            types::VALIDATION,
            "Your request is not valid.",
            format!("{count} field(s) break the rules; see `errors`."),
        );
        problem.errors = violations
            .0
            .into_iter()
            .map(|v| ProblemField {
                field: v.field,
                description: v.description,
            })
            .collect();
        problem
    }

    /// 400 for one field (a header, a path parameter, a JSON type error).
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = Violations::default();
        v.push(field, description);
        Problem::validation(v)
    }

    /// 400: the body is not JSON.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            types::MALFORMED_JSON,
            "The request body is not well-formed JSON.",
            detail,
        )
    }

    /// 415.
    pub fn unsupported_media_type(found: Option<&str>) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            types::UNSUPPORTED_MEDIA_TYPE,
            "The request body must be application/json.",
            match found {
                Some(found) => format!("Content-Type is {found:?}; send application/json."),
                None => "Content-Type is missing; send application/json.".to_owned(),
            },
        )
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            types::PAYLOAD_TOO_LARGE,
            "The request body is too large.",
            format!("The body must be at most {limit} bytes."),
        )
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            types::NOT_FOUND,
            "Not found.",
            detail,
        )
    }

    /// 405.
    pub fn method_not_allowed(method: &str) -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            types::METHOD_NOT_ALLOWED,
            "Method not allowed.",
            format!("{method} is not allowed on this route."),
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            types::UNAVAILABLE,
            "Service temporarily unavailable.",
            detail,
        );
        problem.retry_after = Some(retry_after);
        problem
    }

    /// 500, without internals.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            types::INTERNAL,
            "Internal error.",
            "The request could not be processed; the error was logged.",
        )
    }
}

impl From<CommandError> for Problem {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Invalid(violations) => Problem::validation(violations),
            CommandError::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                types::IDEMPOTENCY_KEY_REUSED,
                "idempotency-key reused with a different request",
                "This Idempotency-Key was used before with a different request; use a new key for a new request.",
            ),
            CommandError::InProgress => {
                let mut problem = Problem::new(
                    StatusCode::CONFLICT,
                    types::REQUEST_IN_PROGRESS,
                    "A request with this idempotency key is in progress.",
                    "The first request with this Idempotency-Key has not finished; retry shortly with the same key.",
                );
                problem.retry_after = Some(Duration::from_secs(1));
                problem
            }
            CommandError::NotFound(detail) => Problem::not_found(detail),
            CommandError::Unavailable {
                detail,
                retry_after,
                ..
            } => Problem::unavailable(detail, retry_after),
            CommandError::BadUpstream { detail, .. } => Problem::new(
                StatusCode::BAD_GATEWAY,
                types::BAD_GATEWAY,
                "Bad answer from a dependency.",
                detail,
            ),
            CommandError::Internal(detail) => {
                tracing::debug!("internal error answered as 500: {detail}");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = retry_after {
            let seconds = after.as_secs().max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
