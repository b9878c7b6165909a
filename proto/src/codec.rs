//! The protobuf codec of every generated service: tonic's prost codec, except that a
//! message that does not decode is INVALID_ARGUMENT instead of INTERNAL.
//!
//! tonic (following grpc's `statuscodes.md`) reports a server-side parse failure as
//! INTERNAL, which reads as "the server is broken" and is retried or paged on by
//! clients. For this API an undecodable request is the client's mistake, exactly like
//! malformed JSON on the REST side (400), so it is INVALID_ARGUMENT, and the server's
//! error metrics and alerts on INTERNAL keep meaning "our bug". build.rs points
//! tonic-prost-build at [`StrictCodec`] with `codec_path`; the generated clients use it
//! too, where it makes no difference for well-formed answers.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// A [`Codec`] for prost messages: encodes `T`, decodes `U`; decode failures are
/// INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { _type: PhantomData }
    }
}

/// Decodes `U`; a malformed message is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!("malformed protobuf message: {error}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
