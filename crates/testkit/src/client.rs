//! gRPC client calls the tests repeat, against any server (in-process or the real binary):
//! append a transaction, the last token, the whole history, a request stream fed by hand, and
//! a codec that sends and receives raw message bytes (for malformed and hostile input).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};

use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{Event, GetEventsRequest, GetLastTokenRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// How long a read of the history waits for the next event before the test fails.
const NEXT_EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests a hand-fed stream holds before the sender waits.
const REQUEST_STREAM_CAPACITY: usize = 16;

/// Appends one transaction; the answer must say it succeeded.
pub async fn append(client: &mut EventStoreClient<Channel>, events: Vec<Event>) -> Result<(), tonic::Status> {
    let reply = client.append_event(tokio_stream::iter(events)).await?.into_inner();
    assert!(reply.success);
    Ok(())
}

/// The store's last token (-1 when empty).
pub async fn last_token(client: &mut EventStoreClient<Channel>) -> i64 {
    client
        .get_last_token(GetLastTokenRequest {})
        .await
        .expect("GetLastToken")
        .into_inner()
        .token
}

/// Every event of the store, in token order, as (token, event).
pub async fn history(client: &mut EventStoreClient<Channel>) -> Vec<(i64, Event)> {
    let last = last_token(client).await;
    events_between(client, 0, last).await
}

/// The events with tokens `from..=to`, in token order, as (token, event).
pub async fn events_between(client: &mut EventStoreClient<Channel>, from: i64, to: i64) -> Vec<(i64, Event)> {
    if to < from {
        return Vec::new();
    }
    let request = GetEventsRequest {
        tracking_token: from,
        number_of_permits: to - from + 1,
        ..GetEventsRequest::default()
    };
    let (sender, receiver) = mpsc::channel(1);
    sender.send(request).await.expect("request");
    let mut stream = client
        .list_events(ReceiverStream::new(receiver))
        .await
        .expect("list")
        .into_inner();
    let mut events = Vec::new();
    while (events.len() as i64) <= to - from {
        let next = tokio::time::timeout(NEXT_EVENT_TIMEOUT, stream.message())
            .await
            .expect("events arrive")
            .expect("stream ok")
            .expect("not ended");
        events.push((next.token, next.event.expect("event")));
    }
    // Keeping the sender until here keeps the stream open while it is read.
    drop(sender);
    events
}

/// A request stream the test feeds by hand.
pub fn request_stream<T>() -> (mpsc::Sender<T>, ReceiverStream<T>) {
    let (sender, receiver) = mpsc::channel(REQUEST_STREAM_CAPACITY);
    (sender, ReceiverStream::new(receiver))
}

/// Axon's error code in a status's `AxonIQ-ErrorCode` metadata, if any.
pub fn error_code(status: &tonic::Status) -> Option<&str> {
    status.metadata().get("axoniq-errorcode")?.to_str().ok()
}

/// A codec that sends messages as the bytes given and hands replies back undecoded: for calls
/// whose requests are deliberately not what the rpc's type says.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// [`RawCodec`]'s encoder.
#[derive(Debug)]
pub struct RawEncoder;

/// [`RawCodec`]'s decoder.
#[derive(Debug)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
