//! `io.axoniq.axonserver.grpc.query.QueryService` over the query router of `myelin-routing`
//! (MESSAGING.md §3): `OpenStream` for handlers, `Query` for senders. Thin, as
//! [`crate::commands`]: stream messages become router calls, instructions with an id are
//! acknowledged (an ack itself never is). Subscription queries are not served yet:
//! `Subscription` answers UNIMPLEMENTED with AXONIQ-1002.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use myelin_node::NodeError;
use myelin_proto::grpc::query::query_provider_inbound::Request as ToHandler;
use myelin_proto::grpc::query::query_provider_outbound::Request as FromHandler;
use myelin_proto::grpc::query::{
    QueryProviderInbound, QueryProviderOutbound, QueryRequest, QueryResponse, SubscriptionQueryRequest,
    SubscriptionQueryResponse,
};
use myelin_proto::server::QueryService;
use myelin_routing::{QueryRouter, StreamId};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::contexts::context_name;
use crate::error::ToStatus;

/// Messages waiting for a handler that reads slowly; beyond that its pump waits.
const OUTBOUND_QUEUE_MAX: usize = 64;

pub struct Queries {
    router: Arc<QueryRouter>,
    node_name: String,
    stopping: watch::Receiver<bool>,
}

impl Queries {
    pub fn new(router: Arc<QueryRouter>, node_name: String, stopping: watch::Receiver<bool>) -> Queries {
        Queries {
            router,
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
            node_name: self.node_name.clone(),
            inbound: request.into_inner(),
            outbound,
            stream: None,
            stopping: self.stopping.clone(),
        };
        tokio::spawn(connection.run());
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
        let answers = self.router.query(&context, query);
        Ok(Response::new(Box::pin(Answers {
            answers,
            router: self.router.clone(),
            id,
            ended: false,
        })))
    }

    type SubscriptionStream = Boxed<SubscriptionQueryResponse>;

    async fn subscription(
        &self,
        _request: Request<Streaming<SubscriptionQueryRequest>>,
    ) -> Result<Response<Self::SubscriptionStream>, Status> {
        Err(NodeError::Unsupported("subscription queries are not supported yet".into()).to_status())
    }
}

/// A `Query` call's answers; dropped before they ended (the sender cancelled), it cancels the
/// query on the handlers.
struct Answers {
    answers: mpsc::UnboundedReceiver<QueryResponse>,
    router: Arc<QueryRouter>,
    id: String,
    ended: bool,
}

impl Stream for Answers {
    type Item = Result<QueryResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.answers.poll_recv(cx) {
            Poll::Ready(Some(answer)) => Poll::Ready(Some(Ok(answer))),
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
    }
}

/// One handler's `OpenStream`.
struct HandlerConnection {
    router: Arc<QueryRouter>,
    context: String,
    node_name: String,
    inbound: Streaming<QueryProviderOutbound>,
    outbound: mpsc::Sender<QueryProviderInbound>,
    stream: Option<StreamId>,
    stopping: watch::Receiver<bool>,
}

impl HandlerConnection {
    async fn run(mut self) {
        loop {
            let message = tokio::select! {
                message = self.inbound.message() => message,
                _ = crate::stopped(&mut self.stopping) => break,
            };
            let Ok(Some(message)) = message else {
                break;
            };
            let id = message.instruction_id.clone();
            let is_ack = matches!(message.request, Some(FromHandler::Ack(_)));
            let supported = self.handle(message);
            if !id.is_empty() && !is_ack && self.outbound.send(ack(id, supported, &self.node_name)).await.is_err() {
                break;
            }
        }
        if let Some(stream) = self.stream.take() {
            self.router.disconnect(&stream);
        }
    }

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
            // No subscription query is ever sent to a handler yet, so there is nothing to route.
            Some(FromHandler::SubscriptionQueryResponse(_)) | Some(FromHandler::Ack(_)) => true,
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
