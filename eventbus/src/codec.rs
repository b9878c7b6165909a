//! Events to record values and back, in the Confluent wire format.
//!
//! A value is `0x00` (magic byte), the writer schema's global registry id as 4 bytes
//! big-endian, then the Avro binary datum. Any Confluent-compatible client can read it.
//!
//! Encoding validates before anything leaves the process: first the event's domain
//! rules ([`schemas::Event::validate`]), then the schema (`to_avro` refuses a value that
//! does not fit). Both failures are [`BusError::Invalid`] with field-level violations.
//!
//! Decoding goes by the *writer* schema id in the header: the writer schema is fetched
//! from the registry (cached) and the datum is resolved into the reader's newest
//! schema, so old records stay readable after a schema evolves. A failure is classified
//! by [`ErrorClass`] for the DLQ.

use schemas::{Event, FieldViolation, SchemaError, Violations};

use crate::dlq::ErrorClass;
use crate::error::{BusError, Fault};
use crate::registry::RegistryClient;

/// The first byte of every Confluent-framed value.
pub const MAGIC: u8 = 0;

/// Frames an Avro datum: magic byte, schema id (big-endian), datum.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a Confluent-framed value into schema id and datum.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), BusError> {
    match value {
        [MAGIC, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [] => Err(BusError::Decode(
            "empty value: not in the Confluent wire format".into(),
        )),
        [first, ..] if *first != MAGIC => Err(BusError::Decode(format!(
            "first byte is 0x{first:02x}, not the Confluent magic byte 0x00"
        ))),
        _ => Err(BusError::Decode(format!(
            "value of {} bytes is shorter than the 5-byte Confluent header",
            value.len()
        ))),
    }
}

/// Validates `event` and encodes it as an Avro datum (no framing); nothing else.
pub fn validate_and_encode<E: Event>(event: &E) -> Result<Vec<u8>, BusError> {
    event.validate()?;
    event.to_avro().map_err(|e| {
        BusError::Invalid(Violations(vec![FieldViolation {
            field: format!("<{}>", E::TYPE),
            description: format!("does not fit the Avro schema of {}: {e}", E::subject()),
        }]))
    })
}

/// What record values decode into: one [`Event`] type, or a service's own enum over
/// several (implement this for it to consume several topics with one runner).
pub trait Consumable: Sized + Send + 'static {
    /// The topics a runner subscribes to unless told otherwise.
    fn default_topics() -> Vec<String>;
    /// Decodes an Avro datum of `topic` written with `writer`.
    fn decode(topic: &str, writer: &apache_avro::Schema, datum: &[u8])
    -> Result<Self, SchemaError>;
    /// The domain rules; a received event that breaks them is dead-lettered.
    fn validate(&self) -> Result<(), Violations>;
}

impl<E: Event> Consumable for E {
    fn default_topics() -> Vec<String> {
        vec![E::TOPIC.to_owned()]
    }
    fn decode(
        _topic: &str,
        writer: &apache_avro::Schema,
        datum: &[u8],
    ) -> Result<Self, SchemaError> {
        E::from_avro(writer, datum)
    }
    fn validate(&self) -> Result<(), Violations> {
        Event::validate(self)
    }
}

/// Why a record could not become an event.
#[derive(Debug)]
pub struct DecodeFailure {
    /// The DLQ class, if the record is at fault; `None` for an infrastructure failure
    /// (registry unreachable), which is retried instead.
    pub class: Option<ErrorClass>,
    /// The error.
    pub error: BusError,
}

/// The one rule about a record's key that a consumer checks before its value: there is
/// one. Every event is keyed (by its order id, or its SKU: the topic table of DESIGN.md),
/// which is what puts all records of one order on one partition; a record without a key
/// (absent or empty) lands on an arbitrary partition, where the per-partition state of a
/// consumer (payment's settled orders) does not see its order's other records. It is
/// dead-lettered as `schema-invalid` (the record breaks its contract, retrying cannot
/// help) before its value is even looked at.
pub fn check_key(key: Option<&[u8]>) -> Result<(), DecodeFailure> {
    match key {
        Some(key) if !key.is_empty() => Ok(()),
        _ => Err(DecodeFailure {
            class: Some(ErrorClass::SchemaInvalid),
            error: BusError::Invalid(Violations(vec![FieldViolation {
                field: "<record key>".to_owned(),
                description: "must be present: events are keyed by their order id or SKU"
                    .to_owned(),
            }])),
        }),
    }
}

/// Decodes a record value of `topic` into `C`: framing, writer schema by id (cached),
/// Avro resolution, domain rules. Returns the event and its writer schema id.
pub async fn decode<C: Consumable>(
    registry: &RegistryClient,
    topic: &str,
    value: Option<&[u8]>,
) -> Result<(C, u32), DecodeFailure> {
    let data = |class: ErrorClass, error: BusError| DecodeFailure {
        class: Some(class),
        error,
    };
    let value = value.ok_or_else(|| {
        data(
            ErrorClass::Undecodable,
            BusError::Decode("record has no value".into()),
        )
    })?;
    let (id, datum) = unframe(value).map_err(|e| data(ErrorClass::Undecodable, e))?;
    let writer = registry
        .writer_schema(id)
        .await
        .map_err(|error| match error.fault() {
            Fault::Infrastructure => DecodeFailure { class: None, error },
            _ if matches!(error, BusError::UnknownSchema { .. }) => {
                data(ErrorClass::UnknownSchema, error)
            }
            _ => data(ErrorClass::Undecodable, error),
        })?;
    let event = C::decode(topic, &writer, datum).map_err(|e| {
        let class = match e {
            SchemaError::Avro(_) => ErrorClass::Undecodable,
            _ => ErrorClass::SchemaInvalid,
        };
        data(class, BusError::Codec(e))
    })?;
    event
        .validate()
        .map_err(|v| data(ErrorClass::SchemaInvalid, BusError::Invalid(v)))?;
    Ok((event, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_a_key_is_schema_invalid() {
        assert!(check_key(Some(b"order-1")).is_ok());
        for missing in [None, Some(&b""[..])] {
            let failure = check_key(missing).unwrap_err();
            assert_eq!(failure.class, Some(ErrorClass::SchemaInvalid));
            assert_eq!(failure.error.fault(), Fault::Data);
            assert!(
                failure.error.to_string().contains("record key"),
                "{}",
                failure.error
            );
        }
    }

    #[test]
    fn frame_round_trip_and_rejects() {
        let framed = frame(0x0102_0304, b"datum");
        assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
        let (id, datum) = unframe(&framed).unwrap();
        assert_eq!((id, datum), (0x0102_0304, &b"datum"[..]));
        assert_eq!(unframe(&[0, 0, 0, 0, 7]).unwrap(), (7, &b""[..]));
        for bad in [&b""[..], &[1, 0, 0, 0, 1, 2][..], &[0, 0, 0][..]] {
            let e = unframe(bad).unwrap_err();
            assert_eq!(e.fault(), Fault::Data, "{e}");
        }
    }
}
