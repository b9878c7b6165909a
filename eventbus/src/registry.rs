//! A client for the Confluent-compatible API of the schema registry (Apicurio Registry 3
//! serves it under `/apis/ccompat/v7`), with the two caches the hot paths need.
//!
//! - **Producing** needs the id of the event's schema under its subject
//!   (`<topic>-value`): looked up once per subject with `POST /subjects/{subject}` and
//!   cached. Schemas are registered by the project (`make schemas`, [`register_all`]),
//!   not by services, unless [`RegistryConfig::auto_register`] is on.
//! - **Consuming** needs the writer schema of every schema id seen in a wire header:
//!   `GET /schemas/ids/{id}`, parsed once and cached (ids are immutable in the registry,
//!   so the cache never needs invalidation). A 404 is [`BusError::UnknownSchema`], a
//!   data fault; an unreachable registry is an infrastructure fault and retried.
//!
//! Start-up checks: [`RegistryClient::ensure_registered`] (one event type) and
//! [`RegistryClient::ensure_all`] fail fast with an error that says what to run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use reqwest::{Method, StatusCode};
use schemas::SchemaError;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::RegistryConfig;
use crate::error::{BusError, REGISTER_HINT, chain};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// One version of a subject, as the registry returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number under the subject (1, 2, ...).
    pub version: u32,
    /// The global schema id (what the wire header carries).
    pub id: u32,
    /// The schema text.
    pub schema: String,
}

/// The registry's answer to a compatibility test.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compatibility {
    /// Whether the schema may be registered as the subject's next version.
    pub is_compatible: bool,
    /// The registry's reasons, when it gives them.
    pub messages: Vec<String>,
}

/// What [`register_all`] did with one schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The subject.
    pub subject: String,
    /// The position of the schema in the subject's history (1-based, file order).
    pub file_version: usize,
    /// The global schema id.
    pub id: u32,
    /// `false` if it was registered already (nothing changed).
    pub created: bool,
}

/// A schema an event type writes: subject and schema text, without the type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRef {
    /// The subject, `<topic>-value`.
    pub subject: String,
    /// The newest schema text of the event type.
    pub schema: &'static str,
}

impl SchemaRef {
    /// The subject and newest schema of `E`.
    pub fn of<E: schemas::Event>() -> Self {
        SchemaRef {
            subject: E::subject(),
            schema: E::schema_text(),
        }
    }

    /// The newest schema of `E`, written to another topic (tests use unique topics).
    pub fn of_on_topic<E: schemas::Event>(topic: &str) -> Self {
        SchemaRef {
            subject: format!("{topic}-value"),
            schema: E::schema_text(),
        }
    }
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct CompatibilityResponse {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigResponse {
    compatibility_level: String,
}

/// A failed request: the HTTP status (if any) and the registry's error code and text.
struct Failure {
    status: Option<StatusCode>,
    code: Option<i64>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Failure {
    fn is_not_found(&self) -> bool {
        self.status == Some(StatusCode::NOT_FOUND)
    }

    fn into_error(self, operation: String) -> BusError {
        BusError::Registry {
            operation,
            status: self.status.map(|s| s.as_u16()),
            message: match self.code {
                Some(code) => format!("{} (error code {code})", self.message),
                None => self.message,
            },
            source: self.source,
        }
    }
}

/// A subject name, `<topic>-value`.
pub type Subject = String;

/// A compatibility level as the registry spells it (`BACKWARD`, `NONE`, ...).
pub type CompatibilityLevel = String;

/// A client of the registry's Confluent-compatible API, with id and schema caches.
/// Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    config: RegistryConfig,
    ids_by_subject: Arc<Mutex<HashMap<(String, String), u32>>>,
    schemas_by_id: Arc<Mutex<HashMap<u32, Arc<Schema>>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for the registry described by `config`. Does not connect yet.
    pub fn new(config: &RegistryConfig) -> Result<Self, BusError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| BusError::Registry {
                operation: "build http client".into(),
                status: None,
                message: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        Ok(RegistryClient {
            http,
            base: config.ccompat_base(),
            config: config.clone(),
            ids_by_subject: Arc::default(),
            schemas_by_id: Arc::default(),
        })
    }

    /// The base URL of the Confluent-compatible API.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of a schema by id, for CloudEvents `ce_dataschema`.
    pub fn schema_url(&self, id: u32) -> String {
        format!("{}/schemas/ids/{id}", self.base)
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, Failure> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some(user) = &self.config.username {
            request = request.basic_auth(
                user,
                self.config
                    .password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned()),
            );
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| Failure {
            status: None,
            code: None,
            message: chain(&e),
            source: Some(Box::new(e)),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| Failure {
            status: Some(status),
            code: None,
            message: chain(&e),
            source: Some(Box::new(e)),
        })?;
        if !status.is_success() {
            let parsed: Option<ErrorResponse> = serde_json::from_slice(&bytes).ok();
            let text = String::from_utf8_lossy(&bytes);
            return Err(Failure {
                status: Some(status),
                code: parsed.as_ref().and_then(|p| p.error_code),
                message: parsed
                    .and_then(|p| p.message)
                    .unwrap_or_else(|| truncate(text.trim(), 300).to_owned()),
                source: None,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Failure {
            status: Some(status),
            code: None,
            message: format!(
                "unexpected answer ({e}): {}",
                truncate(&String::from_utf8_lossy(&bytes), 300)
            ),
            source: Some(Box::new(e)),
        })
    }

    /// `POST /subjects/{subject}/versions`: registers `schema` (Avro) under `subject`
    /// and returns its global id. Registering the newest version again changes nothing.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, BusError> {
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        match self
            .request::<IdResponse>(Method::POST, &path, Some(body))
            .await
        {
            Ok(r) => Ok(r.id),
            Err(f) if f.status == Some(StatusCode::CONFLICT) => Err(BusError::Incompatible {
                subject: subject.to_owned(),
                message: f.message,
                hint: REGISTER_HINT,
            }),
            Err(f) => Err(f.into_error(format!("POST {path}"))),
        }
    }

    /// `POST /subjects/{subject}`: the version under which `schema` is registered, or
    /// `None` if it is not (or the subject does not exist).
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<SubjectVersion>, BusError> {
        let path = format!("/subjects/{}", encode(subject));
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        match self
            .request::<SubjectVersion>(Method::POST, &path, Some(body))
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(f) if f.is_not_found() => Ok(None),
            Err(f) => Err(f.into_error(format!("POST {path}"))),
        }
    }

    /// `GET /schemas/ids/{id}`: the schema text of a global id.
    pub async fn schema_text(&self, id: u32) -> Result<String, BusError> {
        let path = format!("/schemas/ids/{id}");
        match self
            .request::<SchemaResponse>(Method::GET, &path, None)
            .await
        {
            Ok(r) => Ok(r.schema),
            Err(f) if f.is_not_found() => Err(BusError::UnknownSchema { id }),
            Err(f) => Err(f.into_error(format!("GET {path}"))),
        }
    }

    /// The parsed writer schema of a global id, fetched once and cached.
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, BusError> {
        if let Some(s) = lock(&self.schemas_by_id).get(&id) {
            return Ok(s.clone());
        }
        let text = self.schema_text(id).await?;
        let schema = Schema::parse_str(&text)
            .map_err(|e| BusError::Codec(SchemaError::Avro(Box::new(e))))?;
        let schema = Arc::new(schema);
        lock(&self.schemas_by_id).insert(id, schema.clone());
        Ok(schema)
    }

    /// The id to write for `schema` under `subject`: cached after the first lookup.
    /// Registers it if [`RegistryConfig::auto_register`] is on, else fails with
    /// [`BusError::NotRegistered`].
    pub async fn id_for(&self, subject: &str, schema: &str) -> Result<u32, BusError> {
        let key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = lock(&self.ids_by_subject).get(&key) {
            return Ok(*id);
        }
        let id = match self.lookup(subject, schema).await? {
            Some(v) => v.id,
            None if self.config.auto_register => self.register(subject, schema).await?,
            None => {
                return Err(BusError::NotRegistered {
                    subject: subject.to_owned(),
                    hint: REGISTER_HINT,
                });
            }
        };
        lock(&self.ids_by_subject).insert(key, id);
        Ok(id)
    }

    /// `GET /subjects`: every subject.
    pub async fn subjects(&self) -> Result<Vec<Subject>, BusError> {
        self.request(Method::GET, "/subjects", None)
            .await
            .map_err(|f| f.into_error("GET /subjects".into()))
    }

    /// `GET /subjects/{subject}/versions`: the version numbers, oldest first; empty if
    /// the subject does not exist.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, BusError> {
        let path = format!("/subjects/{}/versions", encode(subject));
        match self.request::<Vec<u32>>(Method::GET, &path, None).await {
            Ok(mut v) => {
                v.sort_unstable();
                Ok(v)
            }
            Err(f) if f.is_not_found() => Ok(Vec::new()),
            Err(f) => Err(f.into_error(format!("GET {path}"))),
        }
    }

    /// `GET /subjects/{subject}/versions/{version}`; `version` is a number or `latest`.
    pub async fn subject_version(
        &self,
        subject: &str,
        version: &str,
    ) -> Result<Option<SubjectVersion>, BusError> {
        let path = format!("/subjects/{}/versions/{}", encode(subject), encode(version));
        match self
            .request::<SubjectVersion>(Method::GET, &path, None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(f) if f.is_not_found() => Ok(None),
            Err(f) => Err(f.into_error(format!("GET {path}"))),
        }
    }

    /// `POST /compatibility/subjects/{subject}/versions/latest`: whether `schema` may be
    /// registered as the next version under the subject's compatibility level. A subject
    /// without versions accepts anything.
    pub async fn test_compatibility(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Compatibility, BusError> {
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            encode(subject)
        );
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        match self
            .request::<CompatibilityResponse>(Method::POST, &path, Some(body))
            .await
        {
            Ok(r) => Ok(Compatibility {
                is_compatible: r.is_compatible,
                messages: r.messages,
            }),
            Err(f) if f.is_not_found() => Ok(Compatibility {
                is_compatible: true,
                messages: Vec::new(),
            }),
            Err(f) => Err(f.into_error(format!("POST {path}"))),
        }
    }

    /// `GET /config` (global) or `GET /config/{subject}`: the compatibility level.
    /// A subject without its own level answers `None`.
    pub async fn config(
        &self,
        subject: Option<&str>,
    ) -> Result<Option<CompatibilityLevel>, BusError> {
        let path = match subject {
            Some(s) => format!("/config/{}", encode(s)),
            None => "/config".to_owned(),
        };
        match self
            .request::<ConfigResponse>(Method::GET, &path, None)
            .await
        {
            Ok(r) => Ok(Some(r.compatibility_level)),
            Err(f) if f.is_not_found() => Ok(None),
            Err(f) => Err(f.into_error(format!("GET {path}"))),
        }
    }

    /// `PUT /config` or `PUT /config/{subject}`: sets the compatibility level
    /// (`BACKWARD`, `BACKWARD_TRANSITIVE`, `FULL`, `NONE`, ...).
    pub async fn set_config(&self, subject: Option<&str>, level: &str) -> Result<(), BusError> {
        let path = match subject {
            Some(s) => format!("/config/{}", encode(s)),
            None => "/config".to_owned(),
        };
        self.request::<serde_json::Value>(
            Method::PUT,
            &path,
            Some(json!({ "compatibility": level })),
        )
        .await
        .map(|_| ())
        .map_err(|f| f.into_error(format!("PUT {path}")))
    }

    /// `DELETE /subjects/{subject}` (and with `permanent=true` after it): removes a
    /// subject. For tests' clean-up; a missing subject is not an error.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<(), BusError> {
        let path = format!("/subjects/{}", encode(subject));
        match self
            .request::<serde_json::Value>(Method::DELETE, &path, None)
            .await
        {
            Ok(_) => {}
            Err(f) if f.is_not_found() => return Ok(()),
            Err(f) => return Err(f.into_error(format!("DELETE {path}"))),
        }
        if permanent {
            let path = format!("{path}?permanent=true");
            match self
                .request::<serde_json::Value>(Method::DELETE, &path, None)
                .await
            {
                Ok(_) => {}
                Err(f) if f.is_not_found() => {}
                Err(f) => return Err(f.into_error(format!("DELETE {path}"))),
            }
        }
        Ok(())
    }

    /// Registers every version of a subject's history in order, skipping versions that
    /// are registered already; idempotent.
    pub async fn register_history(
        &self,
        subject: &str,
        history: &[&str],
    ) -> Result<Vec<Registration>, BusError> {
        let mut done = Vec::with_capacity(history.len());
        for (i, schema) in history.iter().enumerate() {
            let (id, created) = match self.lookup(subject, schema).await? {
                Some(v) => (v.id, false),
                None => (self.register(subject, schema).await?, true),
            };
            done.push(Registration {
                subject: subject.to_owned(),
                file_version: i + 1,
                id,
                created,
            });
        }
        Ok(done)
    }

    /// The start-up check for one event type a service writes: its newest schema is
    /// registered under its subject and compatible with the subject's versions.
    pub async fn ensure_registered<E: schemas::Event>(&self) -> Result<u32, BusError> {
        self.ensure(&SchemaRef::of::<E>()).await
    }

    /// The start-up check for every schema a service writes; stops at the first failure.
    /// Returns the ids, in order.
    pub async fn ensure_all(&self, schemas: &[SchemaRef]) -> Result<Vec<u32>, BusError> {
        let mut ids = Vec::with_capacity(schemas.len());
        for s in schemas {
            ids.push(self.ensure(s).await?);
        }
        Ok(ids)
    }

    /// The start-up check for one schema; see [`RegistryClient::ensure_registered`].
    pub async fn ensure(&self, schema: &SchemaRef) -> Result<u32, BusError> {
        match self.lookup(&schema.subject, schema.schema).await? {
            Some(found) => {
                // Registered. If a newer version exists, it must still be able to read
                // what we write, which the registry's compatibility test answers.
                let latest = self.subject_version(&schema.subject, "latest").await?;
                if latest.as_ref().is_some_and(|l| l.version != found.version) {
                    let c = self
                        .test_compatibility(&schema.subject, schema.schema)
                        .await?;
                    if !c.is_compatible {
                        return Err(BusError::Incompatible {
                            subject: schema.subject.clone(),
                            message: format!(
                                "registered as version {} but the latest version {} cannot be followed by it: {}",
                                found.version,
                                latest.map(|l| l.version).unwrap_or_default(),
                                c.messages.join("; ")
                            ),
                            hint: REGISTER_HINT,
                        });
                    }
                }
                lock(&self.ids_by_subject)
                    .insert((schema.subject.clone(), schema.schema.to_owned()), found.id);
                Ok(found.id)
            }
            None => {
                let c = self
                    .test_compatibility(&schema.subject, schema.schema)
                    .await?;
                if c.is_compatible {
                    Err(BusError::NotRegistered {
                        subject: schema.subject.clone(),
                        hint: REGISTER_HINT,
                    })
                } else {
                    Err(BusError::Incompatible {
                        subject: schema.subject.clone(),
                        message: format!(
                            "not registered, and not compatible: {}",
                            c.messages.join("; ")
                        ),
                        hint: REGISTER_HINT,
                    })
                }
            }
        }
    }
}

/// Registers every subject of the project (`schemas::registry_subjects()`), every version
/// in order; idempotent. What `make schemas` / `busctl schemas register` run.
pub async fn register_all(client: &RegistryClient) -> Result<Vec<Registration>, BusError> {
    let mut done = Vec::new();
    for subject in schemas::registry_subjects() {
        done.extend(
            client
                .register_history(&subject.subject, &subject.versions)
                .await?,
        );
    }
    Ok(done)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Percent-encodes a path segment (subjects may contain `.` and `-`, which are fine, but
/// also anything else a user chooses).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            encode("order-service.order.created-value"),
            "order-service.order.created-value"
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
