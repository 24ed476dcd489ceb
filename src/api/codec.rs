//! A gRPC codec whose responses are already encoded: the read cache keeps the bytes a
//! `GetImageSpecResponse` is sent as, and a hit writes them out as they are.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// A protobuf message's encoding, sent as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

/// Decodes requests of type `U` with prost; writes [`Encoded`] responses byte for byte.
#[derive(Debug)]
pub struct EncodedResponseCodec<U> {
    _request: PhantomData<U>,
}

impl<U> Default for EncodedResponseCodec<U> {
    fn default() -> Self {
        Self {
            _request: PhantomData,
        }
    }
}

impl<U: Message + Default + Send + 'static> Codec for EncodedResponseCodec<U> {
    type Encode = Encoded;
    type Decode = U;
    type Encoder = EncodedEncoder;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Copies an [`Encoded`] message into the frame.
#[derive(Debug, Default)]
pub struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}
