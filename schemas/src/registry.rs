//! The embedded schema history of every subject, as the registry is to receive it.
//!
//! Each topic's `.avsc` files are compiled into the binary, oldest first, and turned into
//! *registration text* once, on first use: the file parsed and written back as compact
//! JSON with the keys of every object in sorted order. Why not the file as it is? Its
//! whitespace is formatting, not schema, and a registry that compares texts would see a
//! re-indented file as a new version. Why not Avro's Parsing Canonical Form? It strips
//! `doc`, `default` and logical types, which are exactly what the registry must keep
//! (a default is what makes a new field backward compatible). Why sort the keys
//! ourselves instead of trusting `serde_json::to_string`? Its key order depends on
//! whether *any* crate in the build enables serde_json's `preserve_order` feature, and
//! Cargo unifies features across a workspace: the same schema could then be registered
//! with two different texts by two binaries. Sorting here makes the text a function of
//! the file alone.
//!
//! [`registry_subjects`] lists every subject with its whole history, for the command that
//! registers schemas: registering the versions in order, under BACKWARD compatibility,
//! replays exactly the evolution the tests check.

use std::sync::LazyLock;

use apache_avro::Schema;

use crate::{
    Event, OrderCreated, OrderUpdated, PaymentCompleted, PaymentFailed, StockAdjusted, StockUpdated,
};

/// The versions of one subject, in registration order, and its newest schema parsed.
pub(crate) struct History {
    texts: LazyLock<Vec<String>>,
    newest: LazyLock<Schema>,
}

impl History {
    /// Registration texts, oldest first.
    pub(crate) fn texts(&'static self) -> &'static [String] {
        &self.texts
    }

    /// Registration text of the newest version.
    pub(crate) fn newest_text(&'static self) -> &'static str {
        self.texts().last().map_or("", String::as_str)
    }

    /// The newest version, parsed.
    pub(crate) fn schema(&'static self) -> &'static Schema {
        &self.newest
    }
}

/// Declares the [`History`] of one topic from its `.avsc` files, oldest first.
macro_rules! history {
    ($name:ident, $topic:literal, [$($version:literal),+ $(,)?]) => {
        pub(crate) static $name: History = History {
            texts: LazyLock::new(|| {
                vec![$(registration_text(include_str!(concat!(
                    "../avro/", $topic, "/", $version, ".avsc"
                )))),+]
            }),
            newest: LazyLock::new(|| parse(concat!($topic, " newest"), $name.newest_text())),
        };
    };
}

history!(ORDER_CREATED, "order-service.order.created", ["v1", "v2"]);
history!(ORDER_UPDATED, "order-service.order.updated", ["v1"]);
history!(
    PAYMENT_COMPLETED,
    "payment-service.payment.completed",
    ["v1"]
);
history!(PAYMENT_FAILED, "payment-service.payment.failed", ["v1"]);
history!(STOCK_ADJUSTED, "inventory-service.stock.adjusted", ["v1"]);
history!(STOCK_UPDATED, "inventory-service.stock.updated", ["v1"]);

/// Parses an embedded schema. The files are compiled in, so a failure is a bug of this
/// crate that every test run finds, never a runtime condition.
fn parse(what: &str, text: &str) -> Schema {
    match Schema::parse_str(text) {
        Ok(schema) => schema,
        Err(error) => panic!("embedded Avro schema {what} does not parse: {error}"),
    }
}

/// The registration text of an embedded `.avsc`: compact JSON, object keys sorted.
fn registration_text(avsc: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(avsc) {
        Ok(json) => {
            let mut out = String::with_capacity(avsc.len());
            write_sorted(&json, &mut out);
            out
        }
        Err(error) => panic!("embedded .avsc is not JSON: {error}"),
    }
}

/// Writes `json` compactly with the keys of every object sorted, independently of
/// serde_json's `preserve_order` feature.
fn write_sorted(json: &serde_json::Value, out: &mut String) {
    match json {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_sorted(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        // Scalars have one compact form whatever the features.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// One registry subject with every version of its schema, for registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectHistory {
    /// The subject, `<topic>-value` (TopicNameStrategy).
    pub subject: String,
    /// The topic whose record values the subject describes.
    pub topic: &'static str,
    /// The CloudEvents `ce_type` of the topic's events, e.g. `order.created`.
    pub event_type: &'static str,
    /// The registration text (compact JSON) of every version, oldest (v1) first; the last
    /// one equals the event type's [`Event::schema_text`].
    pub versions: Vec<&'static str>,
}

impl SubjectHistory {
    /// The registration text of the newest version.
    pub fn newest(&self) -> &'static str {
        self.versions.last().copied().unwrap_or_default()
    }
}

fn subject<E: Event>(history: &'static History) -> SubjectHistory {
    SubjectHistory {
        subject: E::subject(),
        topic: E::TOPIC,
        event_type: E::TYPE,
        versions: history.texts().iter().map(String::as_str).collect(),
    }
}

/// Every subject of the pipeline (one per event topic, six in all) with its full
/// history, for the command that registers the schemas. Register each subject's versions
/// in order; the registry then holds the same history the evolution tests check.
pub fn registry_subjects() -> Vec<SubjectHistory> {
    vec![
        subject::<OrderCreated>(&ORDER_CREATED),
        subject::<OrderUpdated>(&ORDER_UPDATED),
        subject::<PaymentCompleted>(&PAYMENT_COMPLETED),
        subject::<PaymentFailed>(&PAYMENT_FAILED),
        subject::<StockAdjusted>(&STOCK_ADJUSTED),
        subject::<StockUpdated>(&STOCK_UPDATED),
    ]
}
