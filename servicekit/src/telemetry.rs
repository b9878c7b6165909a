//! Logging: one `tracing` subscriber set-up for every service.
//!
//! Why here: the services had three set-ups that disagreed on the config shape and on
//! whether JSON lines carry span context. Now every service logs the same way:
//!
//! - the filter is `RUST_LOG` when set (an operator turns up one module without a new
//!   config file), else the config's `telemetry.filter`;
//! - `format = "text"` is for people, `format = "json"` writes one JSON object per line
//!   for log collectors, with the event's fields flattened, `timestamp`, `level`,
//!   `target`, the `service` name, and the enclosing spans under `spans`. The fields a
//!   log store correlates on ([`CORRELATION_FIELDS`]: `order_id`, `trace_id`,
//!   `span_id`, `topic`, `partition`, `offset`) are also lifted from the enclosing
//!   spans to the top level, innermost span first, unless the event sets them itself:
//!   a query for `order_id:=X` then finds every line logged inside the order's span.
//!   A service turns JSON on with `<SERVICE>__TELEMETRY__FORMAT=json` (e.g.
//!   `PAYMENT__TELEMETRY__FORMAT=json`) or `[telemetry] format = "json"`;
//! - lines go to stderr, so that stdout stays free for what a command prints
//!   (`--print-config`).
//!
//! librdkafka's own log lines arrive through eventbus's client context under the target
//! `librdkafka`, so `librdkafka=warn` in the filter quiets them.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The `[telemetry]` section of every service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            filter: "info,librdkafka=warn".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter (from `RUST_LOG` or the config) does not parse.
    #[error("log filter {filter:?} (from {from}): {source}")]
    Filter {
        /// The directive.
        filter: String,
        /// `RUST_LOG` or `telemetry.filter`.
        from: &'static str,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is installed already.
    #[error("a logger is already installed: {0}")]
    AlreadyInstalled(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The filter: `RUST_LOG` when set and not empty, else `config.filter`. A malformed
/// `RUST_LOG` is an error rather than silently ignored.
pub fn filter(config: &TelemetryConfig) -> Result<EnvFilter, TelemetryError> {
    let (filter, from) = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => (value, "RUST_LOG"),
        _ => (config.filter.clone(), "telemetry.filter"),
    };
    EnvFilter::try_new(&filter).map_err(|source| TelemetryError::Filter {
        filter,
        from,
        source,
    })
}

/// Installs the global subscriber for `service_name`. Fails if the filter does not
/// parse or a subscriber is installed already.
pub fn init(config: &TelemetryConfig, service_name: &str) -> Result<(), crate::Error> {
    let filter = filter(config)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::new(service_name))
            .try_init(),
    };
    Ok(result.map_err(TelemetryError::AlreadyInstalled)?)
}

/// The JSON lines a service logs, kept in memory: for tests that assert on what a service
/// logs in the format `init` gives it in production. Clones share one buffer; it is the
/// subscriber's writer (`MakeWriter`).
#[derive(Clone, Debug, Default)]
pub struct CapturedLines(Arc<Mutex<Vec<u8>>>);

impl CapturedLines {
    /// Installs the JSON format of `service_name`, filtered by `filter` (an `EnvFilter`
    /// directive, not overridden by `RUST_LOG`), as the process's logger, writing here.
    /// Fails if the filter does not parse or a logger is installed already.
    pub fn install(service_name: &str, filter: &str) -> Result<CapturedLines, crate::Error> {
        let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
            filter: filter.to_owned(),
            from: "CapturedLines::install",
            source,
        })?;
        let captured = CapturedLines::default();
        tracing_subscriber::fmt()
            .with_env_filter(env_filter)
            .with_writer(captured.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::new(service_name))
            .try_init()
            .map_err(TelemetryError::AlreadyInstalled)?;
        Ok(captured)
    }

    /// Every line written so far that is a JSON object, in order.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl std::io::Write for CapturedLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLines {
    type Writer = CapturedLines;

    fn make_writer(&'a self) -> CapturedLines {
        self.clone()
    }
}

/// The span fields that become top-level members of a JSON line (see the module docs).
pub const CORRELATION_FIELDS: &[&str] = &[
    "order_id",
    "trace_id",
    "span_id",
    "topic",
    "partition",
    "offset",
];

/// The JSON line format: like tracing-subscriber's flattened JSON, plus a `service`
/// field on every line (the built-in formatter has no static fields) and the
/// [`CORRELATION_FIELDS`] of the enclosing spans at the top level.
#[derive(Debug, Clone)]
pub struct JsonLines {
    service: String,
}

impl JsonLines {
    /// Lines naming `service`.
    pub fn new(service: &str) -> Self {
        JsonLines {
            service: service.to_owned(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert("target".into(), Value::String(metadata.target().to_owned()));
        line.insert("service".into(), Value::String(self.service.clone()));
        let mut fields = FieldVisitor(Map::new());
        event.record(&mut fields);
        for (name, value) in fields.0 {
            // An event field never overwrites the line's own members.
            line.entry(name).or_insert(value);
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut object = Map::new();
                    object.insert("name".into(), Value::String(span.name().to_owned()));
                    let extensions = span.extensions();
                    if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                        && let Ok(Value::Object(fields)) =
                            serde_json::from_str::<Value>(formatted.as_str())
                    {
                        object.extend(fields);
                    }
                    Value::Object(object)
                })
                .collect();
            // Innermost first: the nearest span's value wins, the event's own wins over all.
            for span in spans.iter().rev() {
                if let Value::Object(fields) = span {
                    for name in CORRELATION_FIELDS {
                        if let Some(value) = fields.get(*name) {
                            line.entry(*name).or_insert_with(|| value.clone());
                        }
                    }
                }
            }
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Array(spans));
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields as JSON values.
struct FieldVisitor(Map<String, Value>);

impl tracing::field::Visit for FieldVisitor {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_lines_keep_json_objects_and_refuse_a_bad_filter() {
        use std::io::Write;
        let mut captured = CapturedLines::default();
        captured
            .write_all(b"{\"message\":\"a\"}\nnot json\n{\"message\":\"b\"}\n")
            .unwrap();
        let messages: Vec<Value> = captured
            .lines()
            .iter()
            .map(|l| l["message"].clone())
            .collect();
        assert_eq!(messages, vec![Value::from("a"), Value::from("b")]);
        // A filter that does not parse fails before anything is installed.
        let error = CapturedLines::install("order-service", "info,[[").unwrap_err();
        assert!(error.to_string().contains("[["), "{error}");
    }

    #[test]
    fn json_lines_carry_the_service_fields_and_spans() {
        let buffer = CapturedLines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::new("order-service"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", route = "/v1/orders");
            let _entered = span.enter();
            tracing::warn!(attempt = 3, ok = false, "publish slow");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["service"], "order-service");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "publish slow");
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["ok"], false);
        assert_eq!(line["spans"][0]["name"], "request");
        assert_eq!(line["spans"][0]["route"], "/v1/orders");
        assert!(line["timestamp"].as_str().unwrap().contains('T'));
    }

    #[test]
    fn correlation_fields_of_spans_are_lifted_to_the_top_level() {
        let buffer = CapturedLines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::new("payment-service"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let record = tracing::info_span!(
                "record",
                topic = "orders",
                partition = 3,
                offset = 42,
                trace_id = "outer"
            );
            let _record = record.enter();
            let order = tracing::info_span!(
                "order",
                order_id = "0b8f2c1e-5d7a-4e8e-9a55-3c1f0f6f0a11",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                customer = "c-1"
            );
            let _order = order.enter();
            tracing::info!("payment settled");
            tracing::info!(offset = 7, "an event's own field wins");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let first = &lines[0];
        assert_eq!(first["order_id"], "0b8f2c1e-5d7a-4e8e-9a55-3c1f0f6f0a11");
        // The innermost span's trace id, not the outer one's.
        assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(first["topic"], "orders");
        assert_eq!(first["partition"], 3);
        assert_eq!(first["offset"], 42);
        // Only the correlation fields are lifted; the others stay in `spans`.
        assert!(first.get("customer").is_none(), "{first}");
        assert_eq!(first["spans"][1]["customer"], "c-1");
        assert_eq!(lines[1]["offset"], 7);
        assert_eq!(lines[1]["message"], "an event's own field wins");
    }

    #[test]
    fn the_config_filter_is_validated() {
        // RUST_LOG is not set by the test runner (and not by this crate's tests).
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        assert!(filter(&TelemetryConfig::default()).is_ok());
        let bad = TelemetryConfig {
            filter: "info,[broken".to_owned(),
            ..TelemetryConfig::default()
        };
        let error = filter(&bad).unwrap_err().to_string();
        assert!(error.contains("telemetry.filter"), "{error}");
    }

    #[test]
    fn formats_parse_from_lowercase_names_only() {
        let json: TelemetryConfig = serde_json::from_str(r#"{"format":"json"}"#).unwrap();
        assert_eq!(json.format, LogFormat::Json);
        assert_eq!(json.filter, TelemetryConfig::default().filter);
        assert!(serde_json::from_str::<TelemetryConfig>(r#"{"format":"yaml"}"#).is_err());
        assert!(serde_json::from_str::<TelemetryConfig>(r#"{"json":true}"#).is_err());
    }
}
