//! `io.axoniq.axonserver.grpc.event.EventStore` over [`myelin_store::ContextStore`].
//!
//! The service is routed by hand rather than through the generated `EventStoreServer`, because
//! the generated trait fixes every event-carrying message to the decoded `Event` type, and
//! events here travel as the stored bytes ([`crate::codec`]). The routing is the same as the
//! generated code's: one path per rpc, each handled by `tonic::server::Grpc` with its codec,
//! except AppendEvent, which reads its request body itself ([`crate::request_messages`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use myelin_proto::grpc::event::{
    Confirmation, ConfirmationWithConsistencyMarker, GetAggregateEventsRequest, GetAggregateSnapshotsRequest,
    GetEventsRequest, GetFirstTokenRequest, GetLastTokenRequest, GetTokenAtRequest, ReadHighestSequenceNrRequest,
    ReadHighestSequenceNrResponse, TrackingToken,
};
use myelin_store::{PreparedEvent, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status, Streaming};
use tower::service_fn;

use crate::codec::{AxonCodec, IncomingSnapshot, RawEvent, WireDecode, WireEncode, malformed_event};
use crate::contexts::context_name;
use crate::error::{ToStatus, status, unary_request_error};
use crate::list_events;
use crate::request_messages::{ReadError, RequestMessages, check_request_encoding, one_message_response};
use myelin_node::{Context, Contexts, NodeError};

const SERVICE_NAME: &str = "io.axoniq.axonserver.grpc.event.EventStore";

/// AppendEvent's answer, `ConfirmationWithConsistencyMarker { success: true }`, framed.
static APPEND_CONFIRMED: LazyLock<Bytes> = LazyLock::new(|| {
    let message = ConfirmationWithConsistencyMarker {
        success: true,
        consistency_marker: None,
    };
    let encoded = prost::Message::encode_to_vec(&message);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    Bytes::from(framed)
});

/// Limits the event store enforces on requests.
#[derive(Debug, Clone, Copy)]
pub struct EventStoreLimits {
    /// Largest message accepted (`axoniq.axonserver.max-message-size`, 4 MiB); larger ones are
    /// refused with RESOURCE_EXHAUSTED before they are decoded.
    pub max_message_bytes: usize,
    /// Largest transaction an AppendEvent stream may collect before it is refused. The store
    /// checks its own limit exactly; this one keeps a runaway stream from filling memory first.
    pub max_transaction_bytes: usize,
    /// Bytes of unfinished transactions (AppendEvent streams not yet half-closed) held in
    /// memory across every stream and connection. A stream that would go over is refused at
    /// once with RESOURCE_EXHAUSTED (Axon's TOO_MANY_REQUESTS) rather than waiting:
    /// waiting streams could hold the whole budget while none of them can finish.
    pub max_pending_append_bytes: usize,
}

impl Default for EventStoreLimits {
    fn default() -> Self {
        EventStoreLimits {
            max_message_bytes: 4 * 1024 * 1024,
            max_transaction_bytes: 32 * 1024 * 1024,
            max_pending_append_bytes: 512 * 1024 * 1024,
        }
    }
}

/// The EventStore gRPC service; add it to a tonic router.
#[derive(Clone)]
pub struct EventStoreService {
    shared: Arc<Shared>,
}

struct Shared {
    contexts: Arc<Contexts>,
    limits: EventStoreLimits,
    /// One permit per byte of unfinished transactions (`max_pending_append_bytes`).
    pending_append_bytes: Arc<Semaphore>,
    /// Becomes true when the server starts to shut down: tracking streams end then.
    stopping: watch::Receiver<bool>,
}

impl EventStoreService {
    pub fn new(contexts: Arc<Contexts>, limits: EventStoreLimits, stopping: watch::Receiver<bool>) -> Self {
        EventStoreService {
            shared: Arc::new(Shared {
                contexts,
                pending_append_bytes: Arc::new(Semaphore::new(
                    limits.max_pending_append_bytes.min(Semaphore::MAX_PERMITS),
                )),
                limits,
                stopping,
            }),
        }
    }
}

impl NamedService for EventStoreService {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for EventStoreService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.route(request).await) })
    }
}

impl Shared {
    async fn route(self: Arc<Self>, request: http::Request<Body>) -> http::Response<Body> {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_string();
        let s = &self;
        match method.as_str() {
            // Read off the body directly rather than through tonic (`request_messages`).
            "AppendEvent" => s.append_event(request).await.unwrap_or_else(Status::into_http),
            "AppendSnapshot" => {
                let handler = service_fn(|r| s.append_snapshot(r));
                let response = s.grpc::<Confirmation, IncomingSnapshot>().unary(handler, request).await;
                unary_request_error(response)
            }
            "ListAggregateEvents" => {
                let handler = service_fn(|r| s.list_aggregate_events(r));
                let response = s
                    .grpc::<RawEvent, GetAggregateEventsRequest>()
                    .server_streaming(handler, request)
                    .await;
                unary_request_error(response)
            }
            "ListAggregateSnapshots" => {
                let handler = service_fn(|r| s.list_aggregate_snapshots(r));
                let response = s
                    .grpc::<RawEvent, GetAggregateSnapshotsRequest>()
                    .server_streaming(handler, request)
                    .await;
                unary_request_error(response)
            }
            "ListEvents" => {
                let handler = service_fn(|r| s.list_events(r));
                s.grpc::<_, GetEventsRequest>().streaming(handler, request).await
            }
            "ReadHighestSequenceNr" => {
                let handler = service_fn(|r| s.read_highest_sequence_nr(r));
                let response = s
                    .grpc::<_, ReadHighestSequenceNrRequest>()
                    .unary(handler, request)
                    .await;
                unary_request_error(response)
            }
            "GetFirstToken" => {
                let handler = service_fn(|r| s.get_first_token(r));
                let response = s.grpc::<_, GetFirstTokenRequest>().unary(handler, request).await;
                unary_request_error(response)
            }
            "GetLastToken" => {
                let handler = service_fn(|r| s.get_last_token(r));
                let response = s.grpc::<_, GetLastTokenRequest>().unary(handler, request).await;
                unary_request_error(response)
            }
            "GetTokenAt" => {
                let handler = service_fn(|r| s.get_token_at(r));
                let response = s.grpc::<_, GetTokenAtRequest>().unary(handler, request).await;
                unary_request_error(response)
            }
            // Axon's ad-hoc query language over the event store.
            "QueryEvents" => {
                NodeError::Unsupported("QueryEvents (ad-hoc event queries) is not supported by Myelin".into())
                    .to_status()
                    .into_http()
            }
            other => Status::unimplemented(format!("unknown method {other} of {SERVICE_NAME}")).into_http(),
        }
    }

    fn grpc<E: WireEncode, D: WireDecode>(&self) -> Grpc<AxonCodec<E, D>> {
        // Outgoing messages are not limited: an event stored under a larger limit must stay
        // readable.
        Grpc::new(AxonCodec::default())
            .max_decoding_message_size(self.limits.max_message_bytes)
            .max_encoding_message_size(usize::MAX)
    }

    fn context<T>(&self, request: &Request<T>) -> Result<Arc<Context>, Status> {
        self.contexts
            .resolve(context_name(request.metadata().as_ref()))
            .map_err(status)
    }

    /// One stream = one transaction, stored when the client half-closes. A stream that ends
    /// any other way (cancel, reset, a bad message) stores nothing: the events are only
    /// collected here until then.
    async fn append_event(&self, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
        check_request_encoding(request.headers())?;
        let context = self.contexts.resolve(context_name(request.headers())).map_err(status)?;
        let mut messages = RequestMessages::new(request.into_body(), self.limits.max_message_bytes);
        let mut events: Vec<PreparedEvent> = Vec::new();
        let mut transaction_bytes = 0usize;
        // Held until the transaction is stored (or refused): the events stay in memory until then.
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(message) = messages.next().await.map_err(|e| match e {
            ReadError::Framing(status) => status,
            ReadError::Interrupted => Status::cancelled("the append stream was cancelled; nothing was stored"),
        })? {
            let event = PreparedEvent::event(message).map_err(malformed_event)?;
            let event_bytes = event.bytes().len();
            // As the store counts: a 4-byte length before each event.
            transaction_bytes = transaction_bytes.saturating_add(4 + event_bytes);
            if transaction_bytes > self.limits.max_transaction_bytes {
                return Err(NodeError::write(StoreError::TransactionTooLarge {
                    bytes: transaction_bytes,
                    limit: self.limits.max_transaction_bytes,
                })
                .to_status());
            }
            let more = u32::try_from(4 + event_bytes)
                .ok()
                .and_then(|bytes| self.pending_append_bytes.clone().try_acquire_many_owned(bytes).ok());
            match (more, held.as_mut()) {
                (Some(more), Some(held)) => held.merge(more),
                (Some(more), None) => held = Some(more),
                (None, _) => {
                    return Err(NodeError::TooManyRequests(format!(
                        "the server holds {} MiB of unfinished transactions, its limit; retry later",
                        self.limits.max_pending_append_bytes >> 20
                    ))
                    .to_status());
                }
            }
            events.push(event);
        }
        self.contexts
            .append_events(&context, events)
            .await
            .map_err(|e| e.to_status())?;
        Ok(one_message_response(APPEND_CONFIRMED.clone()))
    }

    async fn append_snapshot(&self, request: Request<IncomingSnapshot>) -> Result<Response<Confirmation>, Status> {
        let context = self.context(&request)?;
        let IncomingSnapshot(snapshot) = request.into_inner();
        self.contexts
            .append_snapshot(&context, snapshot)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Confirmation { success: true }))
    }

    async fn list_aggregate_events(
        &self,
        request: Request<GetAggregateEventsRequest>,
    ) -> Result<Response<impl Stream<Item = Result<RawEvent, Status>> + Send + 'static>, Status> {
        let context = self.context(&request)?;
        let r = request.into_inner();
        let events = blocking_read(&context, move |store| {
            store.aggregate_events(
                &r.aggregate_id,
                r.initial_sequence,
                r.max_sequence,
                r.allow_snapshots,
                r.min_token,
            )
        })
        .await?;
        Ok(Response::new(event_stream(events)))
    }

    async fn list_aggregate_snapshots(
        &self,
        request: Request<GetAggregateSnapshotsRequest>,
    ) -> Result<Response<impl Stream<Item = Result<RawEvent, Status>> + Send + 'static>, Status> {
        let context = self.context(&request)?;
        let r = request.into_inner();
        // Upstream answers a negative max_sequence with nothing; max_results <= 0 means all.
        let snapshots = if r.max_sequence < 0 {
            Vec::new()
        } else {
            let max_results = usize::try_from(r.max_results).unwrap_or(0);
            blocking_read(&context, move |store| {
                store.aggregate_snapshots(&r.aggregate_id, r.initial_sequence, r.max_sequence, max_results)
            })
            .await?
        };
        Ok(Response::new(event_stream(snapshots)))
    }

    async fn list_events(
        &self,
        request: Request<Streaming<GetEventsRequest>>,
    ) -> Result<Response<list_events::EventStream>, Status> {
        let context = self.context(&request)?;
        let stream = list_events::start(context, request.into_inner(), self.stopping.clone());
        Ok(Response::new(stream))
    }

    async fn read_highest_sequence_nr(
        &self,
        request: Request<ReadHighestSequenceNrRequest>,
    ) -> Result<Response<ReadHighestSequenceNrResponse>, Status> {
        let context = self.context(&request)?;
        let aggregate = request.into_inner().aggregate_id;
        let to_sequence_nr = blocking_read(&context, move |store| store.highest_sequence(&aggregate)).await?;
        Ok(Response::new(ReadHighestSequenceNrResponse { to_sequence_nr }))
    }

    async fn get_first_token(&self, request: Request<GetFirstTokenRequest>) -> Result<Response<TrackingToken>, Status> {
        let context = self.context(&request)?;
        Ok(Response::new(TrackingToken {
            token: context.store().first_token(),
        }))
    }

    async fn get_last_token(&self, request: Request<GetLastTokenRequest>) -> Result<Response<TrackingToken>, Status> {
        let context = self.context(&request)?;
        Ok(Response::new(TrackingToken {
            token: context.store().last_token(),
        }))
    }

    async fn get_token_at(&self, request: Request<GetTokenAtRequest>) -> Result<Response<TrackingToken>, Status> {
        let context = self.context(&request)?;
        let instant = request.into_inner().instant;
        let token = blocking_read(&context, move |store| store.token_at(instant)).await?;
        Ok(Response::new(TrackingToken { token }))
    }
}

/// Runs a store read (index and segment I/O): on this thread when everything it needs is in
/// memory or the page cache (no thread switch), else on the blocking pool.
async fn blocking_read<T: Send + 'static>(
    context: &Context,
    read: impl Fn(&myelin_store::ContextStore) -> myelin_store::Result<T> + Send + 'static,
) -> Result<T, Status> {
    let store = context.store().clone();
    if let Some(result) = myelin_store::nonblocking(|| read(&store)) {
        return result.map_err(|e| NodeError::read(e).to_status());
    }
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|e| NodeError::Internal(format!("store read task failed: {e}")).to_status())?
        .map_err(|e| NodeError::read(e).to_status())
}

fn event_stream(events: Vec<Bytes>) -> impl Stream<Item = Result<RawEvent, Status>> + Send + 'static {
    tokio_stream::iter(events.into_iter().map(|event| Ok(RawEvent(event))))
}
