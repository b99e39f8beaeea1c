//! A gRPC codec that moves events as the bytes the client sent.
//!
//! The store keeps every event exactly as the client encoded it, and hands it back as a
//! `Bytes` slice of its read buffer. Decoding such an event into `Event` and re-encoding it
//! would cost an allocation per string and per metadata entry, and would drop any field the
//! client sent that our `.proto` does not know. So event-carrying messages go out through
//! [`RawEvent`] and [`RawEventWithToken`], which write the stored bytes straight into the frame
//! (one copy), and come in as slices of the receive buffer (no copy at all), checked without
//! being decoded: [`IncomingSnapshot`] here, AppendEvent's events in
//! [`crate::request_messages`]. Every other message goes through prost as usual.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use myelin_format::validate::InvalidEvent;
use myelin_store::{PreparedEvent, PreparedSnapshot};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::error::ToStatus;
use myelin_node::NodeError;

/// A stored `Event` message as bytes, on its way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent(pub Bytes);

/// The `Event` of an AppendSnapshot call: checked to be a well-formed `Event` (so nothing
/// unreadable is ever stored), and the fields the store indexes read, in one pass
/// ([`PreparedEvent::snapshot`]); the store takes it without walking it again. (AppendEvent's
/// events come off the request body directly: [`crate::request_messages`].)
#[derive(Debug, Clone)]
pub struct IncomingSnapshot(pub PreparedSnapshot);

/// `EventWithToken{1 token, 2 event}` with the event as bytes: wire-identical to the generated
/// message, whose field 2 is an embedded `Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEventWithToken {
    pub token: i64,
    pub event: Bytes,
}

/// What this codec can write.
pub trait WireEncode: Send + 'static {
    fn encode_to(self, buf: &mut EncodeBuf<'_>);
}

/// What this codec can read.
pub trait WireDecode: Sized + Send + 'static {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl<M: Message + Send + 'static> WireEncode for M {
    fn encode_to(self, buf: &mut EncodeBuf<'_>) {
        // Only fails when the buffer cannot grow, and `EncodeBuf` always can.
        let _ = self.encode(buf);
    }
}

impl<M: Message + Default + Send + 'static> WireDecode for M {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        M::decode(buf).map_err(|e| malformed(std::any::type_name::<M>(), e))
    }
}

impl WireEncode for RawEvent {
    fn encode_to(self, buf: &mut EncodeBuf<'_>) {
        buf.put_slice(&self.0);
    }
}

impl WireDecode for IncomingSnapshot {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        PreparedEvent::snapshot(bytes)
            .map(IncomingSnapshot)
            .map_err(malformed_event)
    }
}

/// INVALID_ARGUMENT for bytes that are not a valid `Event`.
pub(crate) fn malformed_event(error: InvalidEvent) -> Status {
    NodeError::InvalidArgument(format!("malformed Event message: {error}")).to_status()
}

impl RawEventWithToken {
    pub fn encoded_len(&self) -> usize {
        let token = if self.token != 0 {
            1 + encoded_len_varint(self.token as u64)
        } else {
            0
        };
        token + 1 + encoded_len_varint(self.event.len() as u64) + self.event.len()
    }

    /// Writes the message as prost would: a zero token is the proto3 default and is left out.
    pub fn put(&self, buf: &mut impl BufMut) {
        if self.token != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(self.token as u64, buf);
        }
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(self.event.len() as u64, buf);
        buf.put_slice(&self.event);
    }
}

impl WireEncode for RawEventWithToken {
    fn encode_to(self, buf: &mut EncodeBuf<'_>) {
        buf.reserve(self.encoded_len());
        self.put(buf);
    }
}

fn malformed(what: &str, error: prost::DecodeError) -> Status {
    let what = what.rsplit("::").next().unwrap_or(what);
    NodeError::InvalidArgument(format!("malformed {what} message: {error}")).to_status()
}

/// A codec writing `E` and reading `D`, where either may be a raw event type or a prost message.
pub struct AxonCodec<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for AxonCodec<E, D> {
    fn default() -> Self {
        AxonCodec(PhantomData)
    }
}

pub struct AxonEncoder<E>(PhantomData<fn() -> E>);
pub struct AxonDecoder<D>(PhantomData<fn() -> D>);

impl<E: WireEncode, D: WireDecode> Codec for AxonCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = AxonEncoder<E>;
    type Decoder = AxonDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        AxonEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        AxonDecoder(PhantomData)
    }
}

impl<E: WireEncode> Encoder for AxonEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_to(dst);
        Ok(())
    }
}

impl<D: WireDecode> Decoder for AxonDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode_from(src).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use myelin_proto::grpc::SerializedObject;
    use myelin_proto::grpc::event::{Event, EventWithToken};

    use super::*;

    fn event() -> Event {
        Event {
            message_identifier: "m".into(),
            aggregate_identifier: "a".into(),
            aggregate_sequence_number: 3,
            aggregate_type: "T".into(),
            timestamp: 42,
            payload: Some(SerializedObject {
                r#type: "p".into(),
                revision: "1".into(),
                data: vec![1, 2, 3],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn raw_event_with_token_is_wire_identical_to_prost() {
        for token in [0, 1, 300, i64::MAX] {
            for event in [event(), Event::default()] {
                let expected = EventWithToken {
                    token,
                    event: Some(event.clone()),
                }
                .encode_to_vec();
                let raw = RawEventWithToken {
                    token,
                    event: event.encode_to_vec().into(),
                };
                let mut out = Vec::new();
                raw.put(&mut out);
                assert_eq!(out, expected, "token {token}");
                assert_eq!(raw.encoded_len(), expected.len());
            }
        }
    }
}
