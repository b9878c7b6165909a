//! Avro datums in and out, shared by every [`Event`](crate::Event) impl.
//!
//! The path is serde → [`apache_avro::types::Value`] → bytes and back, through the
//! generic datum writer and reader (the non-deprecated forms of `to_avro_datum` and
//! `from_avro_datum` in apache-avro 0.22). Going through a `Value` costs one allocation
//! per field, but it is the only path of apache-avro 0.22 that performs *schema
//! resolution* when decoding (its schema-aware deserializer does not resolve yet), and
//! resolution is the whole point: a consumer built with order.created v2 must read v1
//! bytes.
//!
//! The writer validates every value against the schema before writing, so a Rust value
//! that the schema cannot express (an enum symbol the schema lacks, say) is an error, not
//! corrupt bytes on a topic. The reader insists that the datum is consumed exactly: a
//! datum that ends early or has bytes left over was not written with the schema it is
//! read with, and decoding it anyway would produce a plausible but wrong event.

use apache_avro::{Schema, reader::datum::GenericDatumReader, writer::datum::GenericDatumWriter};
use serde::{Serialize, de::DeserializeOwned};

use crate::SchemaError;

fn avro(error: apache_avro::Error) -> SchemaError {
    SchemaError::Avro(Box::new(error))
}

/// Encodes `event` as a bare Avro datum (no header, no framing) with `schema`.
pub(crate) fn encode<T: Serialize>(event: &T, schema: &Schema) -> Result<Vec<u8>, SchemaError> {
    let value = apache_avro::to_value(event).map_err(avro)?;
    GenericDatumWriter::builder(schema)
        .build()
        .map_err(avro)?
        .write_value_to_vec(value)
        .map_err(avro)
}

/// Decodes a bare Avro datum written with `writer` and resolves it into `reader` (the
/// newest schema, which the Rust type `T` mirrors).
///
/// The datum must be consumed exactly: bytes left over mean that `writer` is not the
/// schema the bytes were written with.
pub(crate) fn decode<T: DeserializeOwned>(
    writer: &Schema,
    reader: &Schema,
    datum: &[u8],
) -> Result<T, SchemaError> {
    let mut input = ExactInput {
        rest: datum,
        overrun: false,
    };
    let decoded = GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .map_err(avro)?
        .read_value(&mut input);
    // Checked before the decoder's own result: it turns some reads past the end into
    // values (see `ExactInput`), and when it does fail, "truncated" is the useful cause.
    if input.overrun {
        return Err(SchemaError::Shape {
            type_name: std::any::type_name::<T>(),
            message: format!(
                "the {}-byte datum ends early: it is truncated, or the writer schema does not describe it",
                datum.len()
            ),
        });
    }
    let value = decoded.map_err(avro)?;
    if !input.rest.is_empty() {
        return Err(SchemaError::Shape {
            type_name: std::any::type_name::<T>(),
            message: format!(
                "{} of {} bytes left over after the datum: the writer schema does not describe these bytes",
                input.rest.len(),
                datum.len()
            ),
        });
    }
    apache_avro::from_value::<T>(&value).map_err(|error| SchemaError::Value {
        type_name: std::any::type_name::<T>(),
        source: Box::new(error),
    })
}

/// The datum as a reader that remembers whether the decoder asked for bytes past its end.
///
/// apache-avro 0.22 is lenient at the end of its input: a string cut short decodes as
/// null, and a union index that is missing decodes as index 0 (null). A datum truncated
/// just before an optional field would then decode "successfully" with that field
/// `None`. A complete datum never needs a byte past its end, so any such request proves
/// the datum is incomplete, whatever the decoder made of it.
struct ExactInput<'a> {
    rest: &'a [u8],
    overrun: bool,
}

impl std::io::Read for ExactInput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.overrun = true;
        }
        let n = buf.len().min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        buf[..n].copy_from_slice(head);
        self.rest = tail;
        Ok(n)
    }
}

/// Serde adapter for [`uuid::Uuid`] fields: always the lowercase hyphenated text.
///
/// `Uuid`'s own serde impl writes 16 raw bytes to formats that say they are not human
/// readable, and apache-avro says exactly that by default (a process-wide switch that any
/// crate may flip). Bytes do not fit the schemas' `{"type": "string", "logicalType":
/// "uuid"}`, so the event types pin the text form here, whatever the switch says and
/// whatever other format (JSON, bincode) the types are used with.
pub(crate) mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use uuid::Uuid;

    pub(crate) fn serialize<S: Serializer>(id: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = Uuid::encode_buffer();
        serializer.serialize_str(id.hyphenated().encode_lower(&mut buffer))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Uuid, D::Error> {
        let text = String::deserialize(deserializer)?;
        Uuid::try_parse(&text).map_err(|error| D::Error::custom(format!("not a UUID: {error}")))
    }
}
