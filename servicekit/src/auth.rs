//! Bearer API keys, stored as SHA-256 hashes, for axum (a tower layer) and tonic (an
//! interceptor).
//!
//! Why hashes: the config (a file in a ConfigMap, a Helm value) then holds nothing that
//! opens the API; the key itself lives only with its client. A key is a random string of
//! enough entropy (32 random bytes, hex) that an unsalted SHA-256 is as good as a slow
//! password hash, and checking it costs one hash per request.
//!
//! ```toml
//! [security]
//! api_keys = [{ name = "dashboard", sha256 = "<64 hex digits>" }]
//! ```
//!
//! Making a key and its hash, either with the `api-key` tool of this crate
//! (`cargo run -p servicekit --bin api-key`) or with coreutils:
//!
//! ```text
//! KEY=$(openssl rand -hex 32)
//! printf %s "$KEY" | sha256sum      # the sha256 value; note: no trailing newline hashed
//! ```
//!
//! Clients send `Authorization: Bearer <key>` (HTTP) or the `authorization: Bearer <key>`
//! metadata (gRPC). The presented key is hashed and compared with *every* configured hash
//! in constant time, so neither the answer time nor the order of the list tells which
//! hash came close. Keys are never logged; a rejection is logged (at DEBUG) with the path
//! and the reason only, an acceptance records the key's *name* in the request extensions
//! ([`ApiKeyName`]).
//!
//! `/healthz`, `/readyz` and `/metrics` stay open (see [`OPEN_PATHS`]) so that probes and
//! Prometheus need no key; services leave gRPC health unintercepted for the same reason.
//! With no keys configured, everything is open (the local default).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tonic::service::interceptor::InterceptedService;

/// Paths that never need a key: liveness, readiness, metrics.
pub const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The problem document `type` of a 401.
pub const UNAUTHORIZED_TYPE: &str = "/problems/unauthorized";

/// One configured key: a name (for logs and metrics) and the SHA-256 of the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Who holds the key (`dashboard`, `ingress`): shows in logs, never the key.
    pub name: String,
    /// Lowercase or uppercase hex of SHA-256 over the key's bytes (64 digits).
    pub sha256: String,
}

/// Why a key list is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A key has an empty name.
    #[error("api_keys[{index}]: the name is empty")]
    EmptyName {
        /// Position in the list.
        index: usize,
    },
    /// Two keys have the same name.
    #[error("api_keys[{index}]: the name {name:?} is used twice")]
    DuplicateName {
        /// Position in the list.
        index: usize,
        /// The name.
        name: String,
    },
    /// A hash is not 64 hex digits.
    #[error(
        "api_keys[{index}] ({name}): sha256 must be 64 hex digits (the SHA-256 of the key, not the key)"
    )]
    BadHash {
        /// Position in the list.
        index: usize,
        /// The key's name.
        name: String,
    },
    /// Two names share one hash (one key given to two clients).
    #[error("api_keys[{index}] ({name}): the same hash as an earlier key")]
    DuplicateHash {
        /// Position in the list.
        index: usize,
        /// The key's name.
        name: String,
    },
}

/// The hex SHA-256 of `key`: the value to put in `sha256`.
pub fn hash_key(key: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()))
}

/// A new random key: 32 bytes from the operating system's generator, as 64 hex digits.
pub fn generate_key() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The name of the key a request was let in with (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyName(pub Arc<str>);

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No `Authorization` header (or metadata).
    Missing,
    /// A header that is not `Bearer <key>`.
    Malformed,
    /// A key that matches none.
    Unknown,
}

impl Rejection {
    /// A short text for the client and the logs (never containing the key).
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "no API key: send `Authorization: Bearer <key>`",
            Rejection::Malformed => "the Authorization header is not `Bearer <key>`",
            Rejection::Unknown => "the API key is not valid",
        }
    }
}

/// The checked key list. Cheap to clone. Empty means "no authentication".
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<[(Arc<str>, [u8; 32])]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl ApiKeys {
    /// Checks the entries: names non-empty and unique, hashes 64 hex digits and unique.
    pub fn new(entries: &[ApiKeyEntry]) -> Result<Self, AuthError> {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut keys = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let name = entry.name.trim();
            if name.is_empty() {
                return Err(AuthError::EmptyName { index });
            }
            if !names.insert(name.to_owned()) {
                return Err(AuthError::DuplicateName {
                    index,
                    name: name.to_owned(),
                });
            }
            let mut digest = [0u8; 32];
            if entry.sha256.len() != 64 || hex::decode_to_slice(&entry.sha256, &mut digest).is_err()
            {
                return Err(AuthError::BadHash {
                    index,
                    name: name.to_owned(),
                });
            }
            if !hashes.insert(digest) {
                return Err(AuthError::DuplicateHash {
                    index,
                    name: name.to_owned(),
                });
            }
            keys.push((Arc::from(name), digest));
        }
        Ok(ApiKeys { keys: keys.into() })
    }

    /// Whether no key is configured (authentication off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The configured names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(name, _)| &**name)
    }

    /// The name of the key `presented`, if it is one. Compares with every hash, in
    /// constant time each, without stopping at a match.
    pub fn verify(&self, presented: &str) -> Option<Arc<str>> {
        let digest = ring::digest::digest(&ring::digest::SHA256, presented.as_bytes());
        let mut found = None;
        for (name, stored) in self.keys.iter() {
            if bool::from(stored.as_slice().ct_eq(digest.as_ref())) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Checks an `Authorization` value (`Bearer <key>`, scheme case-insensitive).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Arc<str>, Rejection> {
        let value = authorization.ok_or(Rejection::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| Rejection::Malformed)?;
        let (scheme, key) = value.trim().split_once(' ').ok_or(Rejection::Malformed)?;
        let key = key.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
            return Err(Rejection::Malformed);
        }
        self.verify(key).ok_or(Rejection::Unknown)
    }

    /// The tower layer for an axum router, with [`OPEN_PATHS`] open.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer {
            keys: self.clone(),
            open: Arc::from(OPEN_PATHS.map(str::to_owned).as_slice()),
        }
    }

    /// The tonic interceptor (`UNAUTHENTICATED` without a valid key).
    pub fn interceptor(&self) -> GrpcAuth {
        GrpcAuth { keys: self.clone() }
    }

    /// `service` behind [`ApiKeys::interceptor`], ready for `Server::add_service`.
    pub fn guard<S>(&self, service: S) -> InterceptedService<S, GrpcAuth> {
        InterceptedService::new(service, self.interceptor())
    }
}

/// A tower layer requiring a key on every path but the open ones. Add it to an axum
/// router with `.layer(keys.layer())`, outermost, so that it runs before the handlers.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    keys: ApiKeys,
    open: Arc<[String]>,
}

impl AuthLayer {
    /// The same layer with these paths open instead of [`OPEN_PATHS`] (exact matches).
    pub fn with_open_paths(mut self, paths: &[&str]) -> Self {
        self.open = paths.iter().map(|p| (*p).to_owned()).collect();
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            keys: self.keys.clone(),
            open: self.open.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    keys: ApiKeys,
    open: Arc<[String]>,
}

impl<S, B> tower::Service<Request<B>> for Auth<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if self.keys.is_empty() || self.open.iter().any(|open| open == path) {
            return Box::pin(self.inner.call(request));
        }
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match self.keys.check(authorization) {
            Ok(name) => {
                request.extensions_mut().insert(ApiKeyName(name));
                Box::pin(self.inner.call(request))
            }
            Err(rejection) => {
                tracing::debug!(
                    path,
                    reason = rejection.reason(),
                    "request refused: API key"
                );
                let response = unauthorized(rejection, path);
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// The 401: `WWW-Authenticate: Bearer` (RFC 6750, with `error="invalid_token"` when a
/// key was sent) and an RFC 9457 problem document.
pub fn unauthorized(rejection: Rejection, path: &str) -> Response<Body> {
    let challenge = match rejection {
        Rejection::Missing => "Bearer",
        Rejection::Malformed => "Bearer error=\"invalid_request\"",
        Rejection::Unknown => "Bearer error=\"invalid_token\"",
    };
    let body = serde_json::json!({
        "type": UNAUTHORIZED_TYPE,
        "title": "Unauthorized",
        "status": 401,
        "detail": rejection.reason(),
        "instance": path,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The tonic interceptor: `UNAUTHENTICATED` unless the `authorization` metadata holds a
/// valid `Bearer` key. Wrap each protected service with [`ApiKeys::guard`]; leave
/// `grpc.health.v1.Health` unwrapped for probes.
#[derive(Clone, Debug)]
pub struct GrpcAuth {
    keys: ApiKeys,
}

impl tonic::service::Interceptor for GrpcAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if self.keys.is_empty() {
            return Ok(request);
        }
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match self.keys.check(authorization) {
            Ok(name) => {
                request.extensions_mut().insert(ApiKeyName(name));
                Ok(request)
            }
            Err(rejection) => {
                tracing::debug!(reason = rejection.reason(), "gRPC call refused: API key");
                Err(tonic::Status::unauthenticated(rejection.reason()))
            }
        }
    }
}

/// The client side: a key this service *sends* (to another service's API), read from
/// config or the environment. Its `Debug` never shows it and it does not serialize, so
/// `--print-config` and logs stay clean. As a tonic interceptor it adds
/// `authorization: Bearer <key>` (marked sensitive) to every call.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct ClientKey(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl ClientKey {
    /// The key `key`; fails if it cannot be a header value (control characters).
    pub fn new(key: &str) -> Result<Self, InvalidClientKey> {
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidClientKey);
        }
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {key}")
                .parse()
                .map_err(|_| InvalidClientKey)?;
        value.set_sensitive(true);
        Ok(ClientKey(value))
    }

    /// The `Authorization` header value, `Bearer <key>` (marked sensitive).
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_bytes(self.0.as_bytes())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }
}

impl TryFrom<String> for ClientKey {
    type Error = InvalidClientKey;
    fn try_from(key: String) -> Result<Self, Self::Error> {
        ClientKey::new(&key)
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey([redacted])")
    }
}

/// A key with characters a header cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an API key must be non-empty visible ASCII (it is sent as an HTTP header)")]
pub struct InvalidClientKey;

impl tonic::service::Interceptor for ClientKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            ApiKeyEntry {
                name: "dashboard".into(),
                sha256: hash_key("k-dashboard"),
            },
            ApiKeyEntry {
                name: "ingress".into(),
                sha256: hash_key("k-ingress").to_uppercase(),
            },
        ])
        .unwrap()
    }

    #[test]
    fn the_hash_is_what_sha256sum_prints() {
        // printf %s abc | sha256sum
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let key = generate_key().unwrap();
        assert_eq!(key.len(), 64);
        assert_ne!(key, generate_key().unwrap());
    }

    #[test]
    fn keys_are_found_by_their_hash_only() {
        let keys = keys();
        assert_eq!(keys.verify("k-dashboard").as_deref(), Some("dashboard"));
        assert_eq!(keys.verify("k-ingress").as_deref(), Some("ingress"));
        assert_eq!(keys.verify("k-other"), None);
        assert_eq!(
            keys.verify(&hash_key("k-dashboard")),
            None,
            "the hash is no key"
        );
        assert!(!format!("{keys:?}").contains(&hash_key("k-dashboard")));
    }

    #[test]
    fn headers_must_be_bearer() {
        let keys = keys();
        assert_eq!(
            keys.check(Some(b"Bearer k-dashboard")).as_deref(),
            Ok("dashboard")
        );
        assert_eq!(
            keys.check(Some(b"bearer  k-ingress ")).as_deref(),
            Ok("ingress")
        );
        assert_eq!(keys.check(None), Err(Rejection::Missing));
        assert_eq!(
            keys.check(Some(b"Basic k-dashboard")),
            Err(Rejection::Malformed)
        );
        assert_eq!(keys.check(Some(b"k-dashboard")), Err(Rejection::Malformed));
        assert_eq!(keys.check(Some(b"Bearer ")), Err(Rejection::Malformed));
        assert_eq!(keys.check(Some(b"Bearer \xff")), Err(Rejection::Malformed));
        assert_eq!(keys.check(Some(b"Bearer nope")), Err(Rejection::Unknown));
    }

    #[test]
    fn bad_key_lists_are_refused() {
        let entry = |name: &str, sha256: &str| ApiKeyEntry {
            name: name.into(),
            sha256: sha256.into(),
        };
        let good = hash_key("a");
        assert_eq!(
            ApiKeys::new(&[entry(" ", &good)]).unwrap_err(),
            AuthError::EmptyName { index: 0 }
        );
        assert!(matches!(
            ApiKeys::new(&[entry("a", &good), entry("a", &hash_key("b"))]),
            Err(AuthError::DuplicateName { index: 1, .. })
        ));
        assert!(matches!(
            ApiKeys::new(&[entry("a", "a-plain-key")]),
            Err(AuthError::BadHash { index: 0, .. })
        ));
        assert!(matches!(
            ApiKeys::new(&[entry("a", &"zz".repeat(32))]),
            Err(AuthError::BadHash { .. })
        ));
        assert!(matches!(
            ApiKeys::new(&[entry("a", &good), entry("b", &good.to_uppercase())]),
            Err(AuthError::DuplicateHash { index: 1, .. })
        ));
        let message = ApiKeys::new(&[entry("dash", "secret")])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("dash") && !message.contains("secret"),
            "{message}"
        );
    }

    #[test]
    fn the_interceptor_wants_a_valid_key() {
        let mut interceptor = keys().interceptor();
        let status = interceptor.call(tonic::Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer wrong".parse().unwrap());
        let status = interceptor.call(request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer k-ingress".parse().unwrap());
        let request = interceptor.call(request).unwrap();
        assert_eq!(
            request.extensions().get::<ApiKeyName>().map(|n| &*n.0),
            Some("ingress")
        );
        // No keys: open.
        let mut open = ApiKeys::default().interceptor();
        assert!(open.call(tonic::Request::new(())).is_ok());
    }

    #[test]
    fn a_client_key_passes_the_server_check_and_never_prints() {
        let mut client: ClientKey = serde_json::from_str("\"k-dashboard\"").unwrap();
        assert_eq!(format!("{client:?}"), "ClientKey([redacted])");
        let request = client.call(tonic::Request::new(())).unwrap();
        let mut server = keys().interceptor();
        assert!(server.call(request).is_ok());
        assert!(serde_json::from_str::<ClientKey>("\"bad\\u0007key\"").is_err());
        assert_eq!(ClientKey::new("a\nb").unwrap_err(), InvalidClientKey);
    }
}
