//! Record headers: CloudEvents (Kafka protocol binding, binary mode), W3C trace context,
//! and an owned header list that is easy to filter and rebuild.
//!
//! In binary mode every CloudEvents attribute is its own `ce_<name>` header and the
//! record value is the event data as is (here: the Confluent-framed Avro datum), so any
//! consumer can route on `ce_type` without decoding the value. `traceparent` carries the
//! W3C trace context of the hop that produced the record.
//!
//! Trace continuation is written here once, for every service: a hop that consumes a
//! record and produces others (payment, the pipeline) calls
//! [`TraceParent::next_hop_from`] with the input's headers and writes the result on what
//! it produces and as `trace_id` / `span_id` in its log lines
//! ([`TraceParent::trace_id_hex`]): the same trace id, a new span id, so one order is one
//! trace end to end. A missing or malformed `traceparent` starts a new trace (the W3C
//! spec's rule), it never fails the record.
//!
//! rdkafka's `OwnedHeaders` can only be appended to; [`HeaderList`] is a plain list of
//! `(name, bytes)` that the DLQ and redrive code filter and rebuild from scratch, so old
//! `dlq.*` or `redrive.*` headers are never carried onto a new record.

use rand::RngCore;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// CloudEvents `specversion` header.
pub const CE_SPECVERSION: &str = "ce_specversion";
/// CloudEvents `id` header: the event's own id.
pub const CE_ID: &str = "ce_id";
/// CloudEvents `source` header: who produced the event, e.g. `/order-service`.
pub const CE_SOURCE: &str = "ce_source";
/// CloudEvents `type` header, e.g. `order.created`.
pub const CE_TYPE: &str = "ce_type";
/// CloudEvents `time` header: RFC 3339, UTC, milliseconds.
pub const CE_TIME: &str = "ce_time";
/// CloudEvents `dataschema` header: the registry URL of the writer schema.
pub const CE_DATASCHEMA: &str = "ce_dataschema";
/// The data's media type (CloudEvents `datacontenttype` in binary mode).
pub const CONTENT_TYPE: &str = "content-type";
/// W3C trace context of the producing hop.
pub const TRACEPARENT: &str = "traceparent";
/// The CloudEvents version written.
pub const SPECVERSION: &str = "1.0";
/// The content type of Avro data in the Confluent wire format.
pub const AVRO_CONTENT_TYPE: &str = "application/avro";

/// Owned record headers in order: `(name, value)`. Names may repeat, as in Kafka.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, Vec<u8>)>);

impl HeaderList {
    /// An empty list.
    pub fn new() -> Self {
        HeaderList(Vec::new())
    }

    /// Copies the headers of a received record.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> Self {
        let Some(headers) = headers else {
            return HeaderList::new();
        };
        HeaderList(
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect(),
        )
    }

    /// Appends a header.
    pub fn push(&mut self, name: impl Into<String>, value: impl AsRef<[u8]>) {
        self.0.push((name.into(), value.as_ref().to_vec()));
    }

    /// Appends a header (builder style).
    pub fn with(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.push(name, value);
        self
    }

    /// The last value of a header (the last one wins, as in most Kafka tooling).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The last value of a header as UTF-8 text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The headers whose names do not start with any of `prefixes`.
    pub fn without_prefixes(&self, prefixes: &[&str]) -> HeaderList {
        HeaderList(
            self.0
                .iter()
                .filter(|(n, _)| !prefixes.iter().any(|p| n.starts_with(p)))
                .cloned()
                .collect(),
        )
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// Sets `name` to `value`, replacing earlier values.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.remove(name);
        self.push(name, value);
    }

    /// Appends every header of `other`.
    pub fn extend(&mut self, other: HeaderList) {
        self.0.extend(other.0);
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The rdkafka form, for producing.
    pub fn to_owned_headers(&self) -> OwnedHeaders {
        self.0.iter().fold(
            OwnedHeaders::new_with_capacity(self.0.len()),
            |acc, (n, v)| {
                acc.insert(Header {
                    key: n.as_str(),
                    value: Some(v.as_slice()),
                })
            },
        )
    }
}

impl<N: Into<String>, V: AsRef<[u8]>> FromIterator<(N, V)> for HeaderList {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        HeaderList(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.as_ref().to_vec()))
                .collect(),
        )
    }
}

/// A W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The id of the span that produced the record (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// A new trace with a new span, sampled.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        while span_id == [0; 8] {
            rng.fill_bytes(&mut span_id);
        }
        TraceParent {
            trace_id,
            span_id,
            flags: 1,
        }
    }

    /// The same trace, a new span id: for the next hop.
    pub fn child(&self) -> Self {
        let mut next = TraceParent::generate();
        next.trace_id = self.trace_id;
        next.flags = self.flags;
        next
    }

    /// The context a hop writes on what it produces for an input that carried
    /// `traceparent` (a header value, if any): a child span of it, or a new trace when
    /// the input had none or a malformed one.
    pub fn next_hop(traceparent: Option<&str>) -> Self {
        traceparent
            .and_then(TraceParent::parse)
            .map_or_else(TraceParent::generate, |parent| parent.child())
    }

    /// [`TraceParent::next_hop`] for a Kafka record's headers.
    pub fn next_hop_from<H: Headers>(headers: Option<&H>) -> Self {
        TraceParent::from_headers(headers)
            .map_or_else(TraceParent::generate, |parent| parent.child())
    }

    /// The valid `traceparent` among a Kafka record's headers, if any.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> Option<Self> {
        headers?
            .iter()
            .find(|h| h.key == TRACEPARENT)
            .and_then(|h| std::str::from_utf8(h.value?).ok())
            .and_then(TraceParent::parse)
    }

    /// The trace id as 32 lowercase hex digits: the `trace_id` of log lines.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span id as 16 lowercase hex digits: the `span_id` of log lines.
    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }

    /// Parses a version-00 `traceparent`; `None` if malformed (the caller then starts a
    /// new trace, as the W3C spec asks).
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else {
            return None;
        };
        if *version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let is_lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            self.flags
        )
    }
}

/// Formats UTC milliseconds since the epoch as RFC 3339 with milliseconds:
/// `2025-01-31T12:34:56.789Z`.
pub fn rfc3339_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The CloudEvents binary-mode attributes of one event.
#[derive(Debug, Clone)]
pub struct CloudEventAttributes<'a> {
    /// `ce_id`.
    pub id: &'a str,
    /// `ce_source`.
    pub source: &'a str,
    /// `ce_type`.
    pub event_type: &'a str,
    /// `ce_time`, as UTC milliseconds.
    pub time_ms: i64,
    /// `ce_dataschema`, if known.
    pub dataschema: Option<&'a str>,
}

impl CloudEventAttributes<'_> {
    /// The headers: `ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`,
    /// optional `ce_dataschema`, `content-type`, and `traceparent`.
    pub fn to_headers(&self, traceparent: &TraceParent) -> HeaderList {
        let mut h = HeaderList::new()
            .with(CE_SPECVERSION, SPECVERSION)
            .with(CE_ID, self.id)
            .with(CE_SOURCE, self.source)
            .with(CE_TYPE, self.event_type)
            .with(CE_TIME, rfc3339_millis(self.time_ms));
        if let Some(schema) = self.dataschema {
            h.push(CE_DATASCHEMA, schema);
        }
        h.push(CONTENT_TYPE, AVRO_CONTENT_TYPE);
        h.push(TRACEPARENT, traceparent.to_string());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_735_689_599_999),
            "2024-12-31T23:59:59.999Z"
        );
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let t = TraceParent::generate();
        let text = t.to_string();
        assert_eq!(text.len(), 55);
        assert!(text.starts_with("00-") && text.ends_with("-01"));
        assert_eq!(TraceParent::parse(&text), Some(t));
        let child = t.child();
        assert_eq!(child.trace_id, t.trace_id);
        assert_ne!(child.span_id, t.span_id);
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let w3c = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(TraceParent::parse(w3c).unwrap().to_string(), w3c);
    }

    #[test]
    fn the_next_hop_continues_a_valid_trace_and_starts_one_otherwise() {
        let w3c = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let parent = TraceParent::parse(w3c).unwrap();
        let next = TraceParent::next_hop(Some(w3c));
        assert_eq!(next.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(next.span_id, parent.span_id, "a new span for the new hop");
        assert_eq!(
            next.flags, 0,
            "the sampling decision travels with the trace"
        );
        assert_eq!(next.span_id_hex().len(), 16);

        // From Kafka headers: the same, and a malformed header starts a new trace.
        let headers = HeaderList::new()
            .with("ce_type", "order.created")
            .with(TRACEPARENT, w3c)
            .to_owned_headers();
        assert_eq!(TraceParent::from_headers(Some(&headers)), Some(parent));
        assert_eq!(
            TraceParent::next_hop_from(Some(&headers)).trace_id,
            parent.trace_id
        );
        let malformed = HeaderList::new()
            .with(
                TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            )
            .to_owned_headers();
        assert_eq!(TraceParent::from_headers(Some(&malformed)), None);
        let fresh = TraceParent::next_hop_from(Some(&malformed));
        assert_ne!(
            fresh.trace_id, parent.trace_id,
            "a malformed header is not continued"
        );
        assert_ne!(fresh.trace_id, [0; 16]);
        let none: Option<&OwnedHeaders> = None;
        assert_eq!(TraceParent::from_headers(none), None);
        assert_ne!(TraceParent::next_hop(None).trace_id, [0; 16]);
        assert_ne!(
            TraceParent::next_hop(Some("garbage")).trace_id,
            parent.trace_id
        );
    }

    #[test]
    fn header_list_filters_and_converts() {
        let mut h: HeaderList = [
            ("a", "1"),
            ("dlq.x", "2"),
            ("redrive.from", "3"),
            ("a", "4"),
        ]
        .into_iter()
        .collect();
        assert_eq!(h.get_str("a"), Some("4"));
        let kept = h.without_prefixes(&["dlq.", "redrive."]);
        assert_eq!(kept.0.len(), 2);
        h.set("a", "5");
        assert_eq!(h.0.iter().filter(|(n, _)| n == "a").count(), 1);
        let owned = h.to_owned_headers();
        assert_eq!(owned.count(), 3);
        let back = HeaderList::from_headers(Some(&owned));
        assert_eq!(back, h);
    }

    #[test]
    fn cloud_event_headers_are_complete() {
        let tp = TraceParent::generate();
        let h = CloudEventAttributes {
            id: "e-1",
            source: "/order-service",
            event_type: "order.created",
            time_ms: 0,
            dataschema: None,
        }
        .to_headers(&tp);
        for (name, value) in [
            (CE_SPECVERSION, "1.0"),
            (CE_ID, "e-1"),
            (CE_SOURCE, "/order-service"),
            (CE_TYPE, "order.created"),
            (CE_TIME, "1970-01-01T00:00:00.000Z"),
            (CONTENT_TYPE, AVRO_CONTENT_TYPE),
        ] {
            assert_eq!(h.get_str(name), Some(value), "{name}");
        }
        assert_eq!(h.get_str(TRACEPARENT), Some(tp.to_string().as_str()));
    }
}
