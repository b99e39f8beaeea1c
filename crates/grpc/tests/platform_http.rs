//! PlatformService and HTTP/2 keep-alive pings.

use std::time::Duration;

use myelin_grpc::{GrpcConfig, NodeIdentity};
use myelin_proto::grpc::InstructionAck;
use myelin_proto::grpc::control::platform_inbound_instruction::Request as Inbound;
use myelin_proto::grpc::control::platform_outbound_instruction::Request as Outbound;
use myelin_proto::grpc::control::platform_service_client::PlatformServiceClient;
use myelin_proto::grpc::control::{
    ClientIdentification, EventProcessorInfo, Heartbeat, PlatformInboundInstruction, PlatformOutboundInstruction,
};
use myelin_testkit::client::request_stream;
use myelin_testkit::grpc::{start, start_with};
use tokio::net::TcpStream;
use tonic::Streaming;

async fn next(stream: &mut Streaming<PlatformOutboundInstruction>) -> Option<PlatformOutboundInstruction> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer in time")
        .expect("status OK")
}

/// The next ack, skipping the server's own heartbeats.
async fn next_ack(stream: &mut Streaming<PlatformOutboundInstruction>) -> InstructionAck {
    loop {
        match next(stream).await.expect("stream open").request {
            Some(Outbound::Ack(ack)) => return ack,
            Some(Outbound::Heartbeat(_)) => continue,
            other => panic!("unexpected instruction {other:?}"),
        }
    }
}

fn inbound(id: &str, request: Option<Inbound>) -> PlatformInboundInstruction {
    PlatformInboundInstruction {
        instruction_id: id.into(),
        request,
    }
}

#[tokio::test]
async fn get_platform_server_says_same_connection() {
    let node = NodeIdentity {
        name: "node-a".into(),
        host_name: "myelin.local".into(),
        grpc_port: 0,
        http_port: 8024,
        version: 0,
        ..NodeIdentity::default()
    };
    let config = GrpcConfig {
        node,
        ..GrpcConfig::default()
    };
    let server = start_with(config, &["default"]).await;
    let mut client = PlatformServiceClient::new(server.channel().await);
    let info = client
        .get_platform_server(ClientIdentification {
            client_id: "c1".into(),
            component_name: "test".into(),
            ..Default::default()
        })
        .await
        .expect("GetPlatformServer")
        .into_inner();
    assert!(info.same_connection);
    let primary = info.primary.expect("primary");
    assert_eq!(primary.node_name, "node-a");
    assert_eq!(primary.host_name, "myelin.local");
    assert_eq!(primary.grpc_port, i32::from(server.address.port()), "the bound port");
    assert_eq!(primary.http_port, 8024);
    server.stop().await;
}

#[tokio::test]
async fn open_stream_acks_instructions_and_sends_heartbeats() {
    let config = GrpcConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..GrpcConfig::default()
    };
    let server = start_with(config, &["default"]).await;
    let mut client = PlatformServiceClient::new(server.channel().await);
    let (instructions, stream) = request_stream();
    let register = Inbound::Register(ClientIdentification {
        client_id: "c1".into(),
        component_name: "test".into(),
        ..Default::default()
    });
    instructions.send(inbound("r-1", Some(register))).await.expect("send");
    let mut outbound = client.open_stream(stream).await.expect("OpenStream").into_inner();
    let ack = next_ack(&mut outbound).await;
    assert_eq!((ack.instruction_id.as_str(), ack.success), ("r-1", true));

    // Heartbeats without an id need no answer; with one they are acked.
    instructions
        .send(inbound("", Some(Inbound::Heartbeat(Heartbeat {}))))
        .await
        .expect("send");
    instructions
        .send(inbound("hb-1", Some(Inbound::Heartbeat(Heartbeat {}))))
        .await
        .expect("send");
    let ack = next_ack(&mut outbound).await;
    assert_eq!((ack.instruction_id.as_str(), ack.success), ("hb-1", true));

    instructions
        .send(inbound(
            "epi-1",
            Some(Inbound::EventProcessorInfo(EventProcessorInfo::default())),
        ))
        .await
        .expect("send");
    assert!(next_ack(&mut outbound).await.success);

    // An instruction this server does not know (here: none set) with an id.
    instructions.send(inbound("u-1", None)).await.expect("send");
    let ack = next_ack(&mut outbound).await;
    assert_eq!(ack.instruction_id, "u-1");
    assert!(!ack.success);
    assert_eq!(ack.error.expect("error").error_code, "AXONIQ-1002");

    // The server's own heartbeat.
    loop {
        if let Some(Outbound::Heartbeat(_)) = next(&mut outbound).await.expect("open").request {
            break;
        }
    }

    // Half-close: the stream completes with OK.
    drop(instructions);
    while let Some(instruction) = next(&mut outbound).await {
        assert!(matches!(instruction.request, Some(Outbound::Heartbeat(_))));
    }
    server.stop().await;
}

/// Clients ping about once a second; a burst far denser than that must not earn a GOAWAY.
#[tokio::test]
async fn frequent_client_pings_are_answered_not_punished() {
    let server = start().await;
    let tcp = TcpStream::connect(server.address).await.expect("connect");
    let (h2, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut ping_pong = connection.ping_pong().expect("ping handle");
    let driver = tokio::spawn(connection);
    for _ in 0..50 {
        tokio::time::timeout(Duration::from_secs(5), ping_pong.ping(h2::Ping::opaque()))
            .await
            .expect("pong in time")
            .expect("pong, not GOAWAY");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The connection still carries requests.
    let mut h2 = h2.ready().await.expect("connection usable");
    let request = http::Request::post(format!(
        "http://{}/io.axoniq.axonserver.grpc.event.EventStore/GetLastToken",
        server.address
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (response, mut body) = h2.send_request(request, false).expect("send");
    // An empty GetLastTokenRequest: uncompressed flag + zero length.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("data");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        data.extend_from_slice(&chunk.expect("chunk"));
    }
    let trailers = body.trailers().await.expect("trailers").expect("grpc status");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    // TrackingToken{token: -1}: field 1 varint of -1 (10 bytes), behind the 5-byte prefix.
    assert_eq!(data.len(), 5 + 11);
    drop(h2);
    drop(ping_pong);
    driver.abort();
    server.stop().await;
}
