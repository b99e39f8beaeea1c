//! gRPC client calls the tests repeat, against any server (in-process or the real binary):
//! append a transaction, the last token, the whole history, a request stream fed by hand.

use std::time::Duration;

use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{Event, GetEventsRequest, GetLastTokenRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
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
