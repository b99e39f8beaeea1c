//! `io.axoniq.axonserver.grpc.command.CommandService` over the router of `myelin-routing`
//! (MESSAGING.md §2): `OpenStream` for handlers, `Dispatch` for senders. Thin: this file turns
//! stream messages into router calls and acknowledges instructions that carry an id, as Axon
//! Server SE does (an ack itself is never acknowledged); where commands go is the router's
//! business.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use myelin_node::NodeError;
use myelin_proto::grpc::command::command_provider_inbound::Request as ToHandler;
use myelin_proto::grpc::command::command_provider_outbound::Request as FromHandler;
use myelin_proto::grpc::command::{Command, CommandProviderInbound, CommandProviderOutbound, CommandResponse};
use myelin_proto::server::CommandService;
use myelin_routing::stats::MessageStats;
use myelin_routing::{CommandRouter, Routing, StreamId};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::contexts::context_name;
use crate::error::ToStatus;
use crate::handler_stream::{HandlerProtocol, serve};

/// Messages waiting for a handler that reads slowly; beyond that its pump waits (the handler's
/// permits bound what is queued in the router).
const OUTBOUND_QUEUE_MAX: usize = 64;

pub struct Commands {
    router: Arc<CommandRouter>,
    stats: Arc<MessageStats>,
    node_name: String,
    stopping: watch::Receiver<bool>,
}

impl Commands {
    pub fn new(routing: &Routing, node_name: String, stopping: watch::Receiver<bool>) -> Commands {
        Commands {
            router: routing.commands.clone(),
            stats: routing.command_stats.clone(),
            node_name,
            stopping,
        }
    }
}

type HandlerStream = Pin<Box<dyn Stream<Item = Result<CommandProviderInbound, Status>> + Send>>;

#[tonic::async_trait]
impl CommandService for Commands {
    type OpenStreamStream = HandlerStream;

    async fn open_stream(
        &self,
        request: Request<Streaming<CommandProviderOutbound>>,
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

    async fn dispatch(&self, request: Request<Command>) -> Result<Response<CommandResponse>, Status> {
        let context = context_name(request.metadata().as_ref()).to_string();
        let command = request.into_inner();
        let name = command.name.clone();
        let started = Instant::now();
        let answered = self.router.dispatch(&context, command);
        let mut stopping = self.stopping.clone();
        let answer = tokio::select! {
            answer = answered => answer
                .map_err(|_| NodeError::Internal("the command router went away".into()).to_status())?,
            _ = crate::stopped(&mut stopping) => return Err(NodeError::ShuttingDown.to_status()),
        };
        self.stats
            .record(&context, &name, &answer.error_code, started.elapsed());
        Ok(Response::new(answer))
    }
}

/// One handler's `OpenStream`, served by [`serve`]: when it ends, the router forgets the stream
/// (its queued commands go elsewhere, the ones it had get Axon code 4001).
struct HandlerConnection {
    router: Arc<CommandRouter>,
    context: String,
    outbound: mpsc::Sender<CommandProviderInbound>,
    /// Named when it first subscribes or grants permits (SE: `<client id>.<uuid>`).
    stream: Option<StreamId>,
}

impl HandlerConnection {
    /// Applies one message; answers whether its kind is one the stream takes.
    fn handle(&mut self, message: CommandProviderOutbound) -> bool {
        match message.request {
            Some(FromHandler::Subscribe(subscription)) => {
                let stream = self.stream(&subscription.client_id, &subscription.component_name);
                self.router
                    .subscribe(&stream, &subscription.command, subscription.load_factor);
                true
            }
            Some(FromHandler::Unsubscribe(subscription)) => {
                if let Some(stream) = &self.stream {
                    self.router.unsubscribe(stream, &subscription.command);
                }
                true
            }
            Some(FromHandler::FlowControl(flow)) => {
                let stream = self.stream(&flow.client_id, "");
                self.router.add_permits(&stream, flow.permits);
                true
            }
            Some(FromHandler::CommandResponse(response)) => {
                match &self.stream {
                    Some(stream) => self.router.respond(stream, response),
                    None => {
                        debug!(command = %response.request_identifier, "an answer on a stream that has no commands")
                    }
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

fn ack(id: String, supported: bool, node_name: &str) -> CommandProviderInbound {
    CommandProviderInbound {
        request: Some(ToHandler::Ack(crate::instruction_ack(id, supported, node_name))),
        instruction_id: String::new(),
    }
}

impl HandlerProtocol for HandlerConnection {
    type In = CommandProviderOutbound;
    type Out = CommandProviderInbound;

    fn instruction_id(message: &CommandProviderOutbound) -> &str {
        &message.instruction_id
    }

    fn is_ack(message: &CommandProviderOutbound) -> bool {
        matches!(message.request, Some(FromHandler::Ack(_)))
    }

    fn handle(&mut self, message: CommandProviderOutbound) -> bool {
        HandlerConnection::handle(self, message)
    }

    fn ack(id: String, supported: bool, node_name: &str) -> CommandProviderInbound {
        ack(id, supported, node_name)
    }

    fn disconnect(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.router.disconnect(&stream);
        }
    }
}
