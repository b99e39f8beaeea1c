//! CommandService over gRPC, as the Java connector drives it (MESSAGING.md §2): a handler
//! subscribes on `OpenStream` (each instruction acknowledged), grants permits, receives the
//! command and answers; the sender's `Dispatch` gets that answer, or Axon's error inside a
//! `CommandResponse` with status OK.

use std::time::Duration;

use myelin_proto::grpc::FlowControl;
use myelin_proto::grpc::command::command_provider_inbound::Request as ToHandler;
use myelin_proto::grpc::command::command_provider_outbound::Request as FromHandler;
use myelin_proto::grpc::command::command_service_client::CommandServiceClient;
use myelin_proto::grpc::command::{
    Command, CommandProviderInbound, CommandProviderOutbound, CommandResponse, CommandSubscription,
};
use myelin_testkit::client::request_stream;
use myelin_testkit::grpc::{TestServer, start};
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

struct Handler {
    requests: mpsc::Sender<CommandProviderOutbound>,
    replies: Streaming<CommandProviderInbound>,
}

impl Handler {
    async fn open(server: &TestServer) -> Handler {
        let (requests, stream) = request_stream();
        let replies = CommandServiceClient::new(server.channel().await)
            .open_stream(stream)
            .await
            .expect("OpenStream")
            .into_inner();
        Handler { requests, replies }
    }

    async fn send(&self, instruction_id: &str, request: FromHandler) {
        self.requests
            .send(CommandProviderOutbound {
                request: Some(request),
                instruction_id: instruction_id.into(),
            })
            .await
            .expect("stream open");
    }

    async fn next(&mut self) -> ToHandler {
        tokio::time::timeout(Duration::from_secs(10), self.replies.message())
            .await
            .expect("a message in time")
            .expect("status OK")
            .expect("stream open")
            .request
            .expect("a request")
    }

    /// Subscribes `command` as the connector does (instruction id = message id) and checks the ack.
    async fn subscribe(&mut self, id: &str, command: &str) {
        let subscription = CommandSubscription {
            message_id: id.into(),
            command: command.into(),
            component_name: "handlers".into(),
            client_id: "handler-1".into(),
            load_factor: 100,
        };
        self.send(id, FromHandler::Subscribe(subscription)).await;
        match self.next().await {
            ToHandler::Ack(ack) => assert_eq!((ack.instruction_id.as_str(), ack.success), (id, true)),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

async fn dispatcher(server: &TestServer) -> CommandServiceClient<Channel> {
    CommandServiceClient::new(server.channel().await)
}

fn command(id: &str, name: &str) -> Command {
    Command {
        message_identifier: id.into(),
        name: name.into(),
        client_id: "sender".into(),
        component_name: "senders".into(),
        ..Command::default()
    }
}

#[tokio::test]
async fn a_command_round_trips_through_a_subscribed_handler() {
    let server = start().await;
    let mut handler = Handler::open(&server).await;
    handler.subscribe("s1", "RegisterCard").await;
    handler
        .send(
            "",
            FromHandler::FlowControl(FlowControl {
                client_id: "handler-1".into(),
                permits: 5000,
            }),
        )
        .await;
    let mut sender = dispatcher(&server).await;
    let dispatched = tokio::spawn(async move { sender.dispatch(command("c1", "RegisterCard")).await });
    let received = match handler.next().await {
        ToHandler::Command(command) => command,
        other => panic!("expected a command, got {other:?}"),
    };
    assert_eq!(
        (received.message_identifier.as_str(), received.name.as_str()),
        ("c1", "RegisterCard")
    );
    assert_eq!(received.client_id, "sender");
    handler
        .send(
            "",
            FromHandler::CommandResponse(CommandResponse {
                message_identifier: "r1".into(),
                request_identifier: "c1".into(),
                ..CommandResponse::default()
            }),
        )
        .await;
    let response = dispatched.await.expect("task").expect("status OK").into_inner();
    assert_eq!(
        (response.message_identifier.as_str(), response.error_code.as_str()),
        ("r1", "")
    );
    server.stop().await;
}

#[tokio::test]
async fn without_a_handler_or_after_unsubscribe_the_answer_is_4000_with_status_ok() {
    let server = start().await;
    let mut sender = dispatcher(&server).await;
    let none = sender
        .dispatch(command("c1", "Nobody"))
        .await
        .expect("status OK")
        .into_inner();
    assert_eq!(none.error_code, "AXONIQ-4000");
    assert_eq!(
        none.error_message.as_ref().map(|m| m.message.as_str()),
        Some("No Handler for command: Nobody")
    );
    assert_eq!(none.request_identifier, "c1");

    let mut handler = Handler::open(&server).await;
    handler.subscribe("s1", "Gone").await;
    let unsubscription = CommandSubscription {
        message_id: "u1".into(),
        command: "Gone".into(),
        client_id: "handler-1".into(),
        ..CommandSubscription::default()
    };
    handler.send("u1", FromHandler::Unsubscribe(unsubscription)).await;
    match handler.next().await {
        ToHandler::Ack(ack) => assert!(ack.success && ack.instruction_id == "u1"),
        other => panic!("expected an ack, got {other:?}"),
    }
    let gone = sender
        .dispatch(command("c2", "Gone"))
        .await
        .expect("status OK")
        .into_inner();
    assert_eq!(
        gone.error_message.as_ref().map(|m| m.message.as_str()),
        Some("No Handler for command: Gone")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_handler_that_disconnects_mid_command_fails_it_with_4001() {
    let server = start().await;
    let mut handler = Handler::open(&server).await;
    handler.subscribe("s1", "Slow").await;
    handler
        .send(
            "f1",
            FromHandler::FlowControl(FlowControl {
                client_id: "handler-1".into(),
                permits: 1,
            }),
        )
        .await;
    assert!(matches!(handler.next().await, ToHandler::Ack(ack) if ack.success));
    let mut sender = dispatcher(&server).await;
    let dispatched = tokio::spawn(async move { sender.dispatch(command("c1", "Slow")).await });
    assert!(matches!(handler.next().await, ToHandler::Command(_)));
    drop(handler);
    let response = dispatched.await.expect("task").expect("status OK").into_inner();
    assert_eq!(response.error_code, "AXONIQ-4001");
    assert_eq!(
        response.error_message.as_ref().map(|m| m.message.as_str()),
        Some("Connection lost while executing command on: handler-1")
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_instruction_gets_a_1002_ack_and_an_ack_gets_none() {
    let server = start().await;
    let mut handler = Handler::open(&server).await;
    handler
        .requests
        .send(CommandProviderOutbound {
            request: None,
            instruction_id: "x1".into(),
        })
        .await
        .expect("open");
    match handler.next().await {
        ToHandler::Ack(ack) => {
            assert!(!ack.success);
            assert_eq!(ack.error.map(|e| e.error_code), Some("AXONIQ-1002".to_string()));
        }
        other => panic!("expected an ack, got {other:?}"),
    }
    handler
        .send(
            "a1",
            FromHandler::Ack(myelin_proto::grpc::InstructionAck {
                instruction_id: "whatever".into(),
                success: true,
                error: None,
            }),
        )
        .await;
    // No answer to the ack: the next message is the subscription's own ack.
    handler.subscribe("s2", "Any").await;
    server.stop().await;
}
