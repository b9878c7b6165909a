//! Dead-letter records: what goes to `<service>.dlq`, and how to read it back.
//!
//! A dead-letter record keeps the original **key** and **value** byte for byte and the
//! original record's **own headers**, and adds one fresh set of `dlq.*` headers that
//! say where it came from and why it failed:
//!
//! | header | value |
//! |---|---|
//! | `dlq.original.topic` / `.partition` / `.offset` | where the record was |
//! | `dlq.original.timestamp` | its timestamp, ms since the epoch (absent if it had none) |
//! | `dlq.original.key` | its key as UTF-8, or hex with `dlq.original.key.encoding: hex` |
//! | `dlq.consumer.group` | the group that gave up |
//! | `dlq.error.class` | an [`ErrorClass`]: `undecodable`, `unknown-schema`, `schema-invalid`, `handler-fatal`, `retries-exhausted` |
//! | `dlq.error.message` | one line, at most [`MAX_ERROR_MESSAGE`] bytes, no backtrace |
//! | `dlq.attempts` | handler attempts made (0 if the record never reached the handler) |
//! | `dlq.first.failure.ms` / `dlq.last.failure.ms` | when it failed first and last |
//!
//! Headers are rebuilt, never appended to: any `dlq.*` header already on the record
//! (a record that was dead-lettered, redriven and failed again) is dropped first, so
//! records do not grow with every round trip. The error message is the current one,
//! bounded, so it cannot accumulate either.

use crate::headers::HeaderList;

/// Prefix of every dead-letter header.
pub const PREFIX: &str = "dlq.";
/// Original topic.
pub const ORIGINAL_TOPIC: &str = "dlq.original.topic";
/// Original partition.
pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
/// Original offset.
pub const ORIGINAL_OFFSET: &str = "dlq.original.offset";
/// Original timestamp (ms).
pub const ORIGINAL_TIMESTAMP: &str = "dlq.original.timestamp";
/// Original key (UTF-8, or hex; see [`ORIGINAL_KEY_ENCODING`]).
pub const ORIGINAL_KEY: &str = "dlq.original.key";
/// `hex` when [`ORIGINAL_KEY`] is hex-encoded; absent for UTF-8.
pub const ORIGINAL_KEY_ENCODING: &str = "dlq.original.key.encoding";
/// Consumer group that dead-lettered the record.
pub const CONSUMER_GROUP: &str = "dlq.consumer.group";
/// Error class.
pub const ERROR_CLASS: &str = "dlq.error.class";
/// Error message (bounded).
pub const ERROR_MESSAGE: &str = "dlq.error.message";
/// Handler attempts.
pub const ATTEMPTS: &str = "dlq.attempts";
/// First failure time (ms).
pub const FIRST_FAILURE_MS: &str = "dlq.first.failure.ms";
/// Last failure time (ms).
pub const LAST_FAILURE_MS: &str = "dlq.last.failure.ms";

/// Upper bound of `dlq.error.message`, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// The largest record any project topic accepts: Kafka's default `max.message.bytes`,
/// which deploy/topics.toml keeps for every topic but the DLQs.
pub const MAX_INPUT_RECORD_BYTES: usize = 1_048_588;

/// The largest dead-letter record, and what a producer that writes dead letters must
/// allow (`message.max.bytes`) and a DLQ topic must accept (`max.message.bytes`, set in
/// deploy/topics.toml): a dead letter is its original (key, value, headers: at most
/// [`MAX_INPUT_RECORD_BYTES`]) plus the `dlq.*` headers, which repeat the key (at most as
/// large again) and add bounded text (the message at most [`MAX_ERROR_MESSAGE`], the rest
/// numbers and names): twice the input limit plus 64 KiB. With the defaults (librdkafka's
/// 1,000,000 bytes, the topic's 1,048,588) a record of about 1 MiB could not be
/// dead-lettered at all: the transaction that carried it failed every time, and the
/// pipeline stopped on it (tests/garbage.rs in benches).
pub const MAX_RECORD_BYTES: usize = 2 * MAX_INPUT_RECORD_BYTES + 65_536;

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The value is not Confluent-framed Avro, or the datum does not decode.
    Undecodable,
    /// The schema id in the header is not in the registry.
    UnknownSchema,
    /// The event decodes but does not fit the reader's type or breaks its domain rules.
    SchemaInvalid,
    /// The handler returned a fatal error.
    HandlerFatal,
    /// The handler returned a retriable error on every allowed attempt.
    RetriesExhausted,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Undecodable,
        ErrorClass::UnknownSchema,
        ErrorClass::SchemaInvalid,
        ErrorClass::HandlerFatal,
        ErrorClass::RetriesExhausted,
    ];

    /// The header and metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Undecodable => "undecodable",
            ErrorClass::UnknownSchema => "unknown-schema",
            ErrorClass::SchemaInvalid => "schema-invalid",
            ErrorClass::HandlerFatal => "handler-fatal",
            ErrorClass::RetriesExhausted => "retries-exhausted",
        }
    }

    /// Parses a header value.
    pub fn parse(text: &str) -> Option<Self> {
        ErrorClass::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a dead-letter record says about the original and the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Original topic.
    pub topic: String,
    /// Original partition.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
    /// Original timestamp, ms.
    pub timestamp_ms: Option<i64>,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// The consumer group.
    pub group: String,
    /// Why.
    pub class: ErrorClass,
    /// The error, already one bounded line (see [`bounded_message`]).
    pub message: String,
    /// Handler attempts made.
    pub attempts: u32,
    /// First failure, ms.
    pub first_failure_ms: i64,
    /// Last failure, ms.
    pub last_failure_ms: i64,
}

impl DeadLetter {
    /// The headers of the dead-letter record: the original record's headers without any
    /// `dlq.*` header, then this record's `dlq.*` set.
    pub fn headers(&self, original: &HeaderList) -> HeaderList {
        let mut h = original.without_prefixes(&[PREFIX]);
        h.push(ORIGINAL_TOPIC, &self.topic);
        h.push(ORIGINAL_PARTITION, self.partition.to_string());
        h.push(ORIGINAL_OFFSET, self.offset.to_string());
        if let Some(ts) = self.timestamp_ms {
            h.push(ORIGINAL_TIMESTAMP, ts.to_string());
        }
        if let Some(key) = &self.key {
            match std::str::from_utf8(key) {
                Ok(text) => h.push(ORIGINAL_KEY, text),
                Err(_) => {
                    h.push(ORIGINAL_KEY, hex::encode(key));
                    h.push(ORIGINAL_KEY_ENCODING, "hex");
                }
            }
        }
        h.push(CONSUMER_GROUP, &self.group);
        h.push(ERROR_CLASS, self.class.as_str());
        h.push(ERROR_MESSAGE, bounded_message(&self.message));
        h.push(ATTEMPTS, self.attempts.to_string());
        h.push(FIRST_FAILURE_MS, self.first_failure_ms.to_string());
        h.push(LAST_FAILURE_MS, self.last_failure_ms.to_string());
        h
    }

    /// Reads the `dlq.*` headers of a dead-letter record back; `None` if the record has
    /// no `dlq.original.topic` (it is not a dead-letter record).
    pub fn from_headers(h: &HeaderList) -> Option<DeadLetter> {
        let num = |name: &str| h.get_str(name).and_then(|v| v.parse::<i64>().ok());
        let key = h.get(ORIGINAL_KEY).map(|k| {
            if h.get_str(ORIGINAL_KEY_ENCODING) == Some("hex") {
                hex::decode(k).unwrap_or_else(|_| k.to_vec())
            } else {
                k.to_vec()
            }
        });
        Some(DeadLetter {
            topic: h.get_str(ORIGINAL_TOPIC)?.to_owned(),
            partition: num(ORIGINAL_PARTITION)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(-1),
            offset: num(ORIGINAL_OFFSET).unwrap_or(-1),
            timestamp_ms: num(ORIGINAL_TIMESTAMP),
            key,
            group: h.get_str(CONSUMER_GROUP).unwrap_or_default().to_owned(),
            class: h
                .get_str(ERROR_CLASS)
                .and_then(ErrorClass::parse)
                .unwrap_or(ErrorClass::HandlerFatal),
            message: h.get_str(ERROR_MESSAGE).unwrap_or_default().to_owned(),
            attempts: num(ATTEMPTS)
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
            first_failure_ms: num(FIRST_FAILURE_MS).unwrap_or(0),
            last_failure_ms: num(LAST_FAILURE_MS).unwrap_or(0),
        })
    }
}

/// An error message as one line of at most [`MAX_ERROR_MESSAGE`] bytes: every run of
/// whitespace (line breaks, tabs) becomes one space, so a backtrace cannot hide in it,
/// and a cut is marked with `…`.
pub fn bounded_message(message: &str) -> String {
    let one_line = message
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let one_line = one_line.as_str();
    if one_line.len() <= MAX_ERROR_MESSAGE {
        return one_line.to_owned();
    }
    let marker = "…";
    let mut end = MAX_ERROR_MESSAGE - marker.len();
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &one_line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter() -> DeadLetter {
        DeadLetter {
            topic: "order-service.order.created".into(),
            partition: 3,
            offset: 42,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"order-1".to_vec()),
            group: "payment-service".into(),
            class: ErrorClass::RetriesExhausted,
            message: "card processor timed out\n  at frame 1\n  at frame 2".into(),
            attempts: 5,
            first_failure_ms: 10,
            last_failure_ms: 20,
        }
    }

    #[test]
    fn headers_are_complete_and_round_trip() {
        let original: HeaderList = [("ce_id", "e1"), ("traceparent", "00-x")]
            .into_iter()
            .collect();
        let h = letter().headers(&original);
        for (name, value) in [
            (ORIGINAL_TOPIC, "order-service.order.created"),
            (ORIGINAL_PARTITION, "3"),
            (ORIGINAL_OFFSET, "42"),
            (ORIGINAL_TIMESTAMP, "1700000000000"),
            (ORIGINAL_KEY, "order-1"),
            (CONSUMER_GROUP, "payment-service"),
            (ERROR_CLASS, "retries-exhausted"),
            (
                ERROR_MESSAGE,
                "card processor timed out at frame 1 at frame 2",
            ),
            (ATTEMPTS, "5"),
            (FIRST_FAILURE_MS, "10"),
            (LAST_FAILURE_MS, "20"),
            ("ce_id", "e1"),
            ("traceparent", "00-x"),
        ] {
            assert_eq!(h.get_str(name), Some(value), "{name}");
        }
        assert_eq!(h.get(ORIGINAL_KEY_ENCODING), None);
        assert_eq!(
            DeadLetter::from_headers(&h).unwrap().message,
            h.get_str(ERROR_MESSAGE).unwrap()
        );
        let mut back = DeadLetter::from_headers(&h).unwrap();
        back.message = letter().message;
        assert_eq!(back, letter());
    }

    #[test]
    fn headers_do_not_pile_up_on_resend() {
        let original: HeaderList = [("ce_id", "e1")].into_iter().collect();
        let once = letter().headers(&original);
        let twice = letter().headers(&once);
        let thrice = letter().headers(&twice);
        assert_eq!(once.0.len(), twice.0.len());
        assert_eq!(twice, thrice);
        assert_eq!(thrice.0.iter().filter(|(n, _)| n == ERROR_CLASS).count(), 1);
    }

    #[test]
    fn binary_keys_are_hex_and_absent_fields_are_absent() {
        let mut l = letter();
        l.key = Some(vec![0xff, 0x00, 0x10]);
        l.timestamp_ms = None;
        let h = l.headers(&HeaderList::new());
        assert_eq!(h.get_str(ORIGINAL_KEY), Some("ff0010"));
        assert_eq!(h.get_str(ORIGINAL_KEY_ENCODING), Some("hex"));
        assert_eq!(h.get(ORIGINAL_TIMESTAMP), None);
        assert_eq!(
            DeadLetter::from_headers(&h).unwrap().key,
            Some(vec![0xff, 0x00, 0x10])
        );
        l.key = None;
        assert_eq!(l.headers(&HeaderList::new()).get(ORIGINAL_KEY), None);
    }

    #[test]
    fn messages_are_bounded_single_lines() {
        let long = "é".repeat(2000);
        let b = bounded_message(&long);
        assert!(b.len() <= MAX_ERROR_MESSAGE, "{}", b.len());
        assert!(b.ends_with('…'));
        assert_eq!(bounded_message("a\nb\r\n\tc"), "a b c");
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
    }
}
