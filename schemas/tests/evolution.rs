//! The schema history: every subject is backward-transitive compatible, the check can
//! fail, and the registration list matches the files on disk and the Rust types.

mod common;

use std::{collections::BTreeMap, path::Path};

use apache_avro::{
    Schema,
    schema_compatibility::{Compatibility, SchemaCompatibility},
    types::Value,
};
use schemas::{
    Event, OrderCreated, OrderUpdated, PaymentCompleted, PaymentFailed, StockAdjusted,
    StockUpdated, registry_subjects,
};
use serde_json::json;

/// Backward transitive: every version reads data written with itself and with every
/// earlier version, with no possible resolution failure (`Full`, not `Partial`).
fn check_backward_transitive(versions: &[Schema]) -> Result<(), String> {
    for (r, reader) in versions.iter().enumerate() {
        for (w, writer) in versions[..=r].iter().enumerate() {
            match SchemaCompatibility::can_read(writer, reader) {
                Ok(Compatibility::Full) => {}
                other => {
                    return Err(format!(
                        "v{} cannot read data written with v{}: {other:?}",
                        r + 1,
                        w + 1
                    ));
                }
            }
        }
    }
    Ok(())
}

fn parse_all(texts: &[&str]) -> Vec<Schema> {
    texts
        .iter()
        .map(|t| Schema::parse_str(t).unwrap())
        .collect()
}

#[test]
fn every_subject_is_backward_transitive() {
    for subject in registry_subjects() {
        let versions = parse_all(&subject.versions);
        check_backward_transitive(&versions).unwrap_or_else(|e| panic!("{}: {e}", subject.subject));
    }
    // order.created really has two versions, so the loop above did check an evolution.
    let created = registry_subjects()
        .into_iter()
        .find(|s| s.topic == OrderCreated::TOPIC)
        .unwrap();
    assert_eq!(created.versions.len(), 2);
}

/// The newest order.created schema with `field` appended.
fn order_created_plus(field: serde_json::Value) -> Schema {
    let mut json: serde_json::Value = serde_json::from_str(OrderCreated::schema_text()).unwrap();
    json["fields"].as_array_mut().unwrap().push(field);
    Schema::parse_str(&json.to_string()).unwrap()
}

#[test]
fn the_check_refuses_incompatible_changes() {
    let newest = OrderCreated::schema().clone();

    // A new required field without a default: old data has no value for it.
    let required = order_created_plus(json!({"name": "priority", "type": "int", "doc": "d"}));
    let error = check_backward_transitive(&[newest.clone(), required]).unwrap_err();
    assert!(
        error.contains("v2 cannot read data written with v1"),
        "{error}"
    );

    // The same field with a default is fine: this is how v2 added `channel`.
    let defaulted =
        order_created_plus(json!({"name": "priority", "type": "int", "default": 0, "doc": "d"}));
    check_backward_transitive(&[newest.clone(), defaulted]).unwrap();

    // Narrowing a type: a long written by old producers does not fit an int.
    let mut json: serde_json::Value = serde_json::from_str(OrderCreated::schema_text()).unwrap();
    let total = json["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "total_minor")
        .unwrap();
    total["type"] = json!("int");
    let narrowed = Schema::parse_str(&json.to_string()).unwrap();
    assert!(check_backward_transitive(&[newest.clone(), narrowed]).is_err());

    // Transitivity matters: v3 compatible with v2 but not with v1 is refused.
    let v1 = parse_all(&registry_subjects()[0].versions[..1]).remove(0);
    let mut json: serde_json::Value = serde_json::from_str(OrderCreated::schema_text()).unwrap();
    for field in json["fields"].as_array_mut().unwrap() {
        if field["name"] == "channel" {
            field.as_object_mut().unwrap().remove("default");
            field["type"] = json!("string");
        }
    }
    let v3 = Schema::parse_str(&json.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(&v1, &v3).is_err());
    let error = check_backward_transitive(&[v1, newest, v3]).unwrap_err();
    assert!(
        error.contains("v3 cannot read data written with v1"),
        "{error}"
    );
}

#[test]
fn registry_subjects_cover_exactly_the_six_topics() {
    let subjects = registry_subjects();
    let topics: Vec<_> = subjects.iter().map(|s| s.topic).collect();
    assert_eq!(
        topics,
        [
            "order-service.order.created",
            "order-service.order.updated",
            "payment-service.payment.completed",
            "payment-service.payment.failed",
            "inventory-service.stock.adjusted",
            "inventory-service.stock.updated",
        ]
    );
    fn expect<E: Event>(subjects: &[schemas::SubjectHistory]) {
        let subject = subjects.iter().find(|s| s.topic == E::TOPIC).unwrap();
        assert_eq!(subject.subject, format!("{}-value", E::TOPIC));
        assert_eq!(subject.subject, E::subject());
        assert_eq!(subject.event_type, E::TYPE);
        assert_eq!(subject.newest(), E::schema_text());
        assert_eq!(*subject.versions.last().unwrap(), E::schema_text());
        // schema() is the newest text, parsed.
        assert_eq!(
            E::schema().canonical_form(),
            Schema::parse_str(E::schema_text())
                .unwrap()
                .canonical_form()
        );
    }
    expect::<OrderCreated>(&subjects);
    expect::<OrderUpdated>(&subjects);
    expect::<PaymentCompleted>(&subjects);
    expect::<PaymentFailed>(&subjects);
    expect::<StockAdjusted>(&subjects);
    expect::<StockUpdated>(&subjects);
}

#[test]
fn registered_versions_are_exactly_the_files_on_disk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
    let mut on_disk: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for topic in std::fs::read_dir(&root).unwrap() {
        let topic = topic.unwrap();
        let mut files: Vec<String> = std::fs::read_dir(topic.path())
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort_by_key(|f| {
            f.strip_prefix('v')
                .and_then(|f| f.strip_suffix(".avsc"))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("not vN.avsc: {f}"))
        });
        let texts = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                assert_eq!(
                    f,
                    &format!("v{}.avsc", i + 1),
                    "versions are v1, v2, ... without gaps"
                );
                std::fs::read_to_string(topic.path().join(f)).unwrap()
            })
            .collect();
        on_disk.insert(topic.file_name().into_string().unwrap(), texts);
    }

    let subjects = registry_subjects();
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        {
            let mut topics: Vec<_> = subjects.iter().map(|s| s.topic.to_owned()).collect();
            topics.sort();
            topics
        }
        .iter()
        .collect::<Vec<_>>()
    );
    for subject in &subjects {
        let files = &on_disk[subject.topic];
        assert_eq!(files.len(), subject.versions.len(), "{}", subject.topic);
        for (file, registered) in files.iter().zip(&subject.versions) {
            let file: serde_json::Value = serde_json::from_str(file).unwrap();
            let registered_json: serde_json::Value = serde_json::from_str(registered).unwrap();
            assert_eq!(file, registered_json, "{}", subject.topic);
            // Compact: no formatting whitespace survives.
            assert!(!registered.contains('\n') && !registered.contains("\": "));
        }
    }
}

#[test]
fn registration_text_is_compact_with_sorted_keys() {
    let text = StockUpdated::schema_text();
    assert!(
        text.starts_with(r#"{"doc":"The current stock numbers of one SKU"#),
        "{text}"
    );
    assert!(text.contains(
        r#"{"doc":"Stock keeping unit: 1 to 64 characters of A-Z, 0-9, '_' and '-', starting with a letter or a digit. Also the Kafka key.","name":"sku","type":"string"}"#
    ));
    assert!(text.ends_with(
        r#"],"name":"StockUpdated","namespace":"orderpipeline.events","type":"record"}"#
    ));
    // Defaults and logical types survive (Parsing Canonical Form would strip them).
    let created = OrderCreated::schema_text();
    assert!(created.contains(r#""default":null"#));
    assert!(created.contains(r#""logicalType":"timestamp-millis""#));
    assert!(created.contains(r#""logicalType":"uuid""#));
}

/// Every record and every field of every version has a doc, and every named type is in
/// the pipeline's namespace.
#[test]
fn everything_is_documented_and_namespaced() {
    fn walk(json: &serde_json::Value, at: &str) {
        match json {
            serde_json::Value::Object(map) => {
                if matches!(
                    map.get("type").and_then(|t| t.as_str()),
                    Some("record" | "enum")
                ) {
                    let name = map["name"].as_str().unwrap();
                    let doc = map.get("doc").and_then(|d| d.as_str()).unwrap_or("");
                    assert!(!doc.is_empty(), "{at}: type {name} has no doc");
                    if let Some(ns) = map.get("namespace") {
                        assert_eq!(ns, "orderpipeline.events", "{at}: {name}");
                    }
                }
                if let Some(fields) = map.get("fields").and_then(|f| f.as_array()) {
                    for field in fields {
                        let name = field["name"].as_str().unwrap();
                        let doc = field.get("doc").and_then(|d| d.as_str()).unwrap_or("");
                        assert!(!doc.is_empty(), "{at}: field {name} has no doc");
                        walk(&field["type"], &format!("{at}.{name}"));
                    }
                }
                if let Some(items) = map.get("items") {
                    walk(items, at);
                }
            }
            serde_json::Value::Array(union) => union.iter().for_each(|v| walk(v, at)),
            _ => {}
        }
    }
    for subject in registry_subjects() {
        for (i, text) in subject.versions.iter().enumerate() {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(json["namespace"], "orderpipeline.events");
            walk(&json, &format!("{} v{}", subject.topic, i + 1));
        }
    }
}

/// The Rust types mirror the newest schemas field by field, in order.
#[test]
fn rust_types_mirror_the_newest_schemas() {
    fn check<E: Event + serde::Serialize>(sample: E) {
        let Value::Record(fields) = apache_avro::to_value(&sample).unwrap() else {
            panic!("{} is not a record", E::TYPE)
        };
        let rust: Vec<_> = fields.iter().map(|(n, _)| n.as_str()).collect();
        let Schema::Record(record) = E::schema() else {
            panic!("{} schema is not a record", E::TYPE)
        };
        let avro: Vec<_> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(rust, avro, "{}", E::TYPE);
    }
    check(common::order_created());
    check(common::order_updated());
    check(common::payment_completed());
    check(common::payment_failed());
    check(common::stock_adjusted());
    check(common::stock_updated());
}

#[test]
fn ids_use_the_uuid_logical_type_and_times_timestamp_millis() {
    let Schema::Record(record) = PaymentCompleted::schema() else {
        panic!()
    };
    for field in &record.fields {
        match field.name.as_str() {
            "event_id" | "order_id" | "payment_id" => {
                assert!(matches!(field.schema, Schema::Uuid(_)), "{}", field.name)
            }
            "completed_at" => assert_eq!(field.schema, Schema::TimestampMillis),
            _ => {}
        }
    }
}
