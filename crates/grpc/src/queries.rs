//! `io.axoniq.axonserver.grpc.query.QueryService` over the query router of `myelin-routing`
//! (MESSAGING.md §3): `OpenStream` for handlers, `Query` for senders. Thin, as
//! [`crate::commands`]: stream messages become router calls, instructions with an id are
//! acknowledged (an ack itself never is); `Subscription` for subscription queries, their
//! answers released by the sender's permits.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use myelin_node::{ErrorCode, NodeError};
use myelin_proto::grpc::query::query_provider_inbound::Request as ToHandler;
use myelin_proto::grpc::query::query_provider_outbound::Request as FromHandler;
use myelin_proto::grpc::query::subscription_query_request::Request as Subscription;
use myelin_proto::grpc::query::{
    QueryProviderInbound, QueryProviderOutbound, QueryRequest, QueryResponse, SubscriptionQueryRequest,
    SubscriptionQueryResponse,
};
use myelin_proto::server::QueryService;
use myelin_routing::queries::SubscriptionRefused;
use myelin_routing::stats::MessageStats;
use myelin_routing::{QueryRouter, Routing, StreamId};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::contexts::context_name;
use crate::error::ToStatus;
use crate::handler_stream::{HandlerProtocol, serve};

/// Messages waiting for a handler that reads slowly; beyond that its pump waits.
const OUTBOUND_QUEUE_MAX: usize = 64;

pub struct Queries {
    router: Arc<QueryRouter>,
    stats: Arc<MessageStats>,
    node_name: String,
    stopping: watch::Receiver<bool>,
}

impl Queries {
    pub fn new(routing: &Routing, node_name: String, stopping: watch::Receiver<bool>) -> Queries {
        Queries {
            router: routing.queries.clone(),
            stats: routing.query_stats.clone(),
            node_name,
            stopping,
        }
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for Queries {
    type OpenStreamStream = Boxed<QueryProviderInbound>;

    async fn open_stream(
        &self,
        request: Request<Streaming<QueryProviderOutbound>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        let context = context_name(request.metadata().as_ref()).to_string();
        let (outbound, receiver) = mpsc::channel(OUTBOUND_QUEUE_MAX);
        let connection = HandlerConnection {
            router: self.router.clone(),
            context,
            outbound: outbound.clone(),
            stream: None,
        };
        tokio::spawn(serve(
            connection,
            request.into_inner(),
            outbound,
            self.node_name.clone(),
            self.stopping.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver).map(Ok))))
    }

    type QueryStream = Boxed<QueryResponse>;

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let context = context_name(request.metadata().as_ref()).to_string();
        let mut query = request.into_inner();
        if query.message_identifier.is_empty() {
            query.message_identifier = myelin_routing::ids::uuid();
        }
        let id = query.message_identifier.clone();
        let name = query.query.clone();
        let answers = self.router.query(&context, query);
        Ok(Response::new(Box::pin(Answers {
            answers,
            router: self.router.clone(),
            id,
            ended: false,
            stats: self.stats.clone(),
            context,
            name,
            started: Instant::now(),
            outcome: None,
        })))
    }

    type SubscriptionStream = Boxed<SubscriptionQueryResponse>;

    async fn subscription(
        &self,
        request: Request<Streaming<SubscriptionQueryRequest>>,
    ) -> Result<Response<Self::SubscriptionStream>, Status> {
        let context = context_name(request.metadata().as_ref()).to_string();
        let (outbound, receiver) = mpsc::channel(OUTBOUND_QUEUE_MAX);
        let connection = SubscriptionConnection {
            router: self.router.clone(),
            context,
            inbound: request.into_inner(),
            outbound,
            stopping: self.stopping.clone(),
        };
        tokio::spawn(connection.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// A sender's `Subscription` stream (MESSAGING.md §3.5): its subscription queries, and the
/// handlers' answers to them released one per permit (permits add up; the first message is
/// usually `flow_control`). Answers beyond the permits wait, up to [`MAX_WAITING_ANSWERS`];
/// a sender that lets more pile up loses the stream (RESOURCE_EXHAUSTED).
struct SubscriptionConnection {
    router: Arc<QueryRouter>,
    context: String,
    inbound: Streaming<SubscriptionQueryRequest>,
    outbound: mpsc::Sender<Result<SubscriptionQueryResponse, Status>>,
    stopping: watch::Receiver<bool>,
}

/// Answers waiting for permits on one subscription stream before the stream is failed.
const MAX_WAITING_ANSWERS: usize = 10_000;

impl SubscriptionConnection {
    async fn run(mut self) {
        let (answers, mut answered) = mpsc::unbounded_channel();
        let mut permits: i64 = 0;
        let mut waiting: VecDeque<SubscriptionQueryResponse> = VecDeque::new();
        let mut subscribed: Vec<String> = Vec::new();
        'stream: loop {
            tokio::select! {
                message = self.inbound.message() => {
                    let Ok(Some(message)) = message else {
                        break;
                    };
                    if let Err(status) = self.handle(message, &answers, &mut permits, &mut subscribed) {
                        let _ = self.outbound.send(Err(status)).await;
                        break;
                    }
                }
                Some(answer) = answered.recv() => {
                    waiting.push_back(answer);
                    if waiting.len() > MAX_WAITING_ANSWERS {
                        let refused = NodeError::Routing {
                            code: ErrorCode::TooManyRequests,
                            message: format!(
                                "more than {MAX_WAITING_ANSWERS} subscription query answers wait for permits"
                            ),
                        };
                        let _ = self.outbound.send(Err(refused.to_status())).await;
                        break;
                    }
                }
                _ = crate::stopped(&mut self.stopping) => break,
            }
            while permits > 0 {
                let Some(answer) = waiting.pop_front() else {
                    break;
                };
                if self.outbound.send(Ok(answer)).await.is_err() {
                    break 'stream;
                }
                permits -= 1;
            }
        }
        for id in subscribed {
            self.router.unsubscribe_query(&id);
        }
    }

    #[allow(deprecated)]
    fn handle(
        &self,
        message: SubscriptionQueryRequest,
        answers: &mpsc::UnboundedSender<SubscriptionQueryResponse>,
        permits: &mut i64,
        subscribed: &mut Vec<String>,
    ) -> Result<(), Status> {
        let refused = |refused: SubscriptionRefused| {
            let code = match refused {
                SubscriptionRefused::NoHandler(_) => ErrorCode::NoHandlerForQuery,
                SubscriptionRefused::NotSubscribed(_) | SubscriptionRefused::Duplicate(_) => {
                    ErrorCode::QueryDispatchError
                }
            };
            NodeError::Routing {
                code,
                message: refused.to_string(),
            }
            .to_status()
        };
        match message.request {
            Some(Subscription::FlowControl(flow)) => {
                *permits = permits.saturating_add(flow.number_of_permits.max(0));
            }
            Some(Subscription::Subscribe(query)) => {
                let id = query.subscription_identifier.clone();
                self.router
                    .subscribe_query(&self.context, query, answers.clone())
                    .map_err(refused)?;
                subscribed.push(id);
            }
            Some(Subscription::GetInitialResult(query)) => {
                if !subscribed.contains(&query.subscription_identifier) {
                    return Err(refused(SubscriptionRefused::NotSubscribed(
                        query.subscription_identifier,
                    )));
                }
                self.router.initial_result(query).map_err(refused)?;
            }
            Some(Subscription::Unsubscribe(query)) => {
                self.router.unsubscribe_query(&query.subscription_identifier);
                subscribed.retain(|id| *id != query.subscription_identifier);
            }
            None => {}
        }
        Ok(())
    }
}

/// A `Query` call's answers; dropped before they ended (the sender cancelled), it cancels the
/// query on the handlers.
struct Answers {
    answers: mpsc::Receiver<QueryResponse>,
    router: Arc<QueryRouter>,
    id: String,
    ended: bool,
    /// Counted when the call ends: ok after a success, else the first error code.
    stats: Arc<MessageStats>,
    context: String,
    name: String,
    started: Instant,
    outcome: Option<String>,
}

impl Stream for Answers {
    type Item = Result<QueryResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.answers.poll_recv(cx) {
            Poll::Ready(Some(answer)) => {
                let success = answer.error_code.is_empty();
                let failed_so_far = self.outcome.as_deref().is_some_and(|outcome| !outcome.is_empty());
                if self.outcome.is_none() || (success && failed_so_far) {
                    self.outcome = Some(answer.error_code.clone());
                }
                Poll::Ready(Some(Ok(answer)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        if !self.ended {
            self.router.cancel(&self.id);
        }
        // A sender that cancelled before any answer counts as cancelled.
        let outcome = self.outcome.as_deref().unwrap_or("CANCELLED");
        self.stats
            .record(&self.context, &self.name, outcome, self.started.elapsed());
    }
}

/// One handler's `OpenStream`.
struct HandlerConnection {
    router: Arc<QueryRouter>,
    context: String,
    outbound: mpsc::Sender<QueryProviderInbound>,
    stream: Option<StreamId>,
}

impl HandlerConnection {
    fn handle(&mut self, message: QueryProviderOutbound) -> bool {
        match message.request {
            Some(FromHandler::Subscribe(subscription)) => {
                let stream = self.stream(&subscription.client_id, &subscription.component_name);
                self.router
                    .subscribe(&stream, &subscription.query, &subscription.component_name);
                true
            }
            Some(FromHandler::Unsubscribe(subscription)) => {
                if let Some(stream) = &self.stream {
                    self.router.unsubscribe(stream, &subscription.query);
                }
                true
            }
            Some(FromHandler::FlowControl(flow)) => {
                let stream = self.stream(&flow.client_id, "");
                self.router.add_permits(&stream, flow.permits);
                true
            }
            Some(FromHandler::QueryResponse(response)) => {
                if let Some(stream) = &self.stream {
                    self.router.respond(stream, response);
                }
                true
            }
            Some(FromHandler::QueryComplete(complete)) => {
                if let Some(stream) = &self.stream {
                    self.router.complete(stream, &complete.request_id);
                }
                true
            }
            Some(FromHandler::SubscriptionQueryResponse(response)) => {
                if let Some(stream) = &self.stream {
                    self.router.subscription_response(stream, response);
                }
                true
            }
            Some(FromHandler::Ack(_)) => true,
            None => false,
        }
    }

    fn stream(&mut self, client_id: &str, component: &str) -> StreamId {
        self.stream
            .get_or_insert_with(|| {
                self.router
                    .connect(&self.context, client_id, component, self.outbound.clone())
            })
            .clone()
    }
}

fn ack(id: String, supported: bool, node_name: &str) -> QueryProviderInbound {
    QueryProviderInbound {
        request: Some(ToHandler::Ack(crate::instruction_ack(id, supported, node_name))),
        instruction_id: String::new(),
    }
}

impl HandlerProtocol for HandlerConnection {
    type In = QueryProviderOutbound;
    type Out = QueryProviderInbound;

    fn instruction_id(message: &QueryProviderOutbound) -> &str {
        &message.instruction_id
    }

    fn is_ack(message: &QueryProviderOutbound) -> bool {
        matches!(message.request, Some(FromHandler::Ack(_)))
    }

    fn handle(&mut self, message: QueryProviderOutbound) -> bool {
        HandlerConnection::handle(self, message)
    }

    fn ack(id: String, supported: bool, node_name: &str) -> QueryProviderInbound {
        ack(id, supported, node_name)
    }

    fn disconnect(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.router.disconnect(&stream);
        }
    }
}
