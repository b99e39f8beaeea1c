//! `io.axoniq.axonserver.grpc.control.PlatformService`: where a client connects, and the
//! instruction stream that keeps the connection alive.
//!
//! A single node always answers "stay on this connection". On the instruction stream every
//! inbound instruction that carries an `instruction_id` is acknowledged, because the Java
//! connector treats a heartbeat without an ack as a dead server and reconnects in a loop.
//! Instructions Axon Server SE does not handle get `success=false` with UNSUPPORTED_INSTRUCTION, as
//! there.

use std::sync::Arc;
use std::time::Duration;

use myelin_proto::grpc::control::platform_inbound_instruction::Request as Inbound;
use myelin_proto::grpc::control::platform_outbound_instruction::Request as Outbound;
use myelin_proto::grpc::control::{
    ClientIdentification, Heartbeat, NodeInfo, PlatformInboundInstruction, PlatformInfo, PlatformOutboundInstruction,
};

use myelin_proto::server::PlatformService;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::contexts::context_name;
use crate::error::{ToStatus, request_error};
use myelin_node::{ClientGuard, Contexts, NodeError, NodeIdentity};

/// Outbound instructions waiting for a slow client; beyond that the stream's task waits.
const OUTBOUND_QUEUE_MAX: usize = 32;

/// NodeInfo, as GetPlatformServer tells clients about `node`.
fn node_info(node: &NodeIdentity) -> NodeInfo {
    NodeInfo {
        host_name: node.host_name.clone(),
        grpc_port: i32::from(node.grpc_port),
        http_port: i32::from(node.http_port),
        version: node.version,
        node_name: node.name.clone(),
    }
}

pub struct Platform {
    contexts: Arc<Contexts>,
    node: NodeIdentity,
    heartbeat_interval: Duration,
    stopping: watch::Receiver<bool>,
    /// The node, when it may be clustered: GetPlatformServer may then point elsewhere.
    cluster: Option<Arc<myelin_node::Node>>,
}

impl Platform {
    pub fn new(
        contexts: Arc<Contexts>,
        node: NodeIdentity,
        heartbeat_interval: Duration,
        stopping: watch::Receiver<bool>,
        cluster: Option<Arc<myelin_node::Node>>,
    ) -> Self {
        Platform {
            contexts,
            node,
            heartbeat_interval,
            stopping,
            cluster,
        }
    }
}

#[tonic::async_trait]
impl PlatformService for Platform {
    /// This node, unless it is a cluster node whose role in the context's group does not serve
    /// clients (a backup): then a member that does, and the client reconnects there.
    async fn get_platform_server(
        &self,
        request: Request<ClientIdentification>,
    ) -> Result<Response<PlatformInfo>, Status> {
        let elsewhere = self.cluster.as_ref().and_then(|node| {
            let cluster = node.cluster().ok()?;
            cluster.client_node_for(context_name(request.metadata().as_ref()))
        });
        let info = match elsewhere {
            Some(other) => PlatformInfo {
                primary: Some(NodeInfo {
                    host_name: other.host_name,
                    grpc_port: i32::from(other.grpc_port),
                    http_port: i32::from(other.http_port),
                    version: self.node.version,
                    node_name: other.name,
                }),
                same_connection: false,
            },
            None => PlatformInfo {
                primary: Some(node_info(&self.node)),
                same_connection: true,
            },
        };
        Ok(Response::new(info))
    }

    type OpenStreamStream = ReceiverStream<Result<PlatformOutboundInstruction, Status>>;

    async fn open_stream(
        &self,
        request: Request<Streaming<PlatformInboundInstruction>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        let (outbound, receiver) = mpsc::channel(OUTBOUND_QUEUE_MAX);
        // The client counts as connected to its context (deleting it then needs force) for as
        // long as the stream runs.
        let client = self
            .contexts
            .client_connected(context_name(request.metadata().as_ref()));
        let stream = InstructionStream {
            _client: client,
            inbound: request.into_inner(),
            outbound,
            node_name: self.node.name.clone(),
            heartbeat_interval: self.heartbeat_interval,
            stopping: self.stopping.clone(),
        };
        tokio::spawn(stream.run());
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

struct InstructionStream {
    _client: ClientGuard,
    inbound: Streaming<PlatformInboundInstruction>,
    outbound: mpsc::Sender<Result<PlatformOutboundInstruction, Status>>,
    node_name: String,
    heartbeat_interval: Duration,
    stopping: watch::Receiver<bool>,
}

impl InstructionStream {
    /// Ends when the client half-closes (the response stream then completes with OK), when
    /// it goes away, or when the server stops.
    async fn run(mut self) {
        let start = tokio::time::Instant::now() + self.heartbeat_interval;
        let mut heartbeats = tokio::time::interval_at(start, self.heartbeat_interval);
        heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reply = tokio::select! {
                instruction = self.inbound.message() => match instruction {
                    Ok(Some(instruction)) => match answer(instruction, &self.node_name) {
                        Some(reply) => reply,
                        None => continue,
                    },
                    Ok(None) => return,
                    Err(status) => {
                        let _ = self.outbound.try_send(Err(request_error(status)));
                        return;
                    }
                },
                _ = heartbeats.tick() => PlatformOutboundInstruction {
                    instruction_id: String::new(),
                    request: Some(Outbound::Heartbeat(Heartbeat {})),
                },
                _ = self.outbound.closed() => return,
                _ = crate::stopped(&mut self.stopping) => {
                    let _ = self.outbound.try_send(Err(NodeError::ShuttingDown.to_status()));
                    return;
                }
            };
            if self.outbound.send(Ok(reply)).await.is_err() {
                return;
            }
        }
    }
}

/// The acknowledgement for one inbound instruction, if it asks for one.
fn answer(instruction: PlatformInboundInstruction, node_name: &str) -> Option<PlatformOutboundInstruction> {
    if instruction.instruction_id.is_empty() {
        return None;
    }
    let supported = matches!(
        instruction.request,
        Some(
            Inbound::Register(_)
                | Inbound::Heartbeat(_)
                | Inbound::Ack(_)
                | Inbound::Result(_)
                | Inbound::EventProcessorInfo(_)
                // Accepted and ignored: this node's topology never changes under a client.
                | Inbound::SubscribeTopologyChanges(_)
                | Inbound::UnsubscribeTopologyChanges(_)
        )
    );
    Some(PlatformOutboundInstruction {
        instruction_id: String::new(),
        request: Some(Outbound::Ack(crate::instruction_ack(
            instruction.instruction_id,
            supported,
            node_name,
        ))),
    })
}

#[cfg(test)]
mod tests {
    use myelin_proto::grpc::InstructionAck;
    use myelin_proto::grpc::control::{SubscribeTopologyChanges, platform_inbound_instruction};

    use super::*;

    fn ack_of(reply: Option<PlatformOutboundInstruction>) -> Option<InstructionAck> {
        match reply?.request? {
            Outbound::Ack(ack) => Some(ack),
            _ => None,
        }
    }

    #[test]
    fn acks_only_instructions_with_an_id() {
        let heartbeat = |id: &str| PlatformInboundInstruction {
            instruction_id: id.into(),
            request: Some(platform_inbound_instruction::Request::Heartbeat(Heartbeat {})),
        };
        assert!(answer(heartbeat(""), "n").is_none());
        let ack = ack_of(answer(heartbeat("h1"), "n")).expect("an ack");
        assert_eq!(
            (ack.instruction_id.as_str(), ack.success, ack.error),
            ("h1", true, None)
        );
    }

    #[test]
    fn topology_subscriptions_are_accepted() {
        let ack = ack_of(answer(
            PlatformInboundInstruction {
                instruction_id: "t1".into(),
                request: Some(platform_inbound_instruction::Request::SubscribeTopologyChanges(
                    SubscribeTopologyChanges {},
                )),
            },
            "node-1",
        ))
        .expect("an ack");
        assert!(ack.success && ack.error.is_none());
    }

    #[test]
    fn unsupported_instructions_get_1002() {
        let ack = ack_of(answer(
            PlatformInboundInstruction {
                instruction_id: "x".into(),
                request: None,
            },
            "node-1",
        ))
        .expect("an ack");
        assert!(!ack.success);
        let error = ack.error.expect("an error");
        assert_eq!(error.error_code, "AXONIQ-1002");
        assert_eq!(error.location, "node-1");
    }
}
