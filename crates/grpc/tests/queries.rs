//! QueryService over gRPC, as the Java connector drives it (MESSAGING.md §3): a handler
//! subscribes on `OpenStream`, grants permits, answers and completes; the sender's `Query`
//! stream carries the answers and ends OK, or carries AXONIQ-5000 when nobody handles the query.

use std::time::Duration;

use myelin_proto::grpc::FlowControl;
use myelin_proto::grpc::query::query_provider_inbound::Request as ToHandler;
use myelin_proto::grpc::query::query_provider_outbound::Request as FromHandler;
use myelin_proto::grpc::query::query_service_client::QueryServiceClient;
use myelin_proto::grpc::query::{
    QueryComplete, QueryProviderInbound, QueryProviderOutbound, QueryRequest, QueryResponse, QuerySubscription,
    SubscriptionQueryRequest,
};
use myelin_testkit::client::request_stream;
use myelin_testkit::grpc::start;
use tokio::sync::mpsc;
use tonic::Streaming;

async fn next(stream: &mut Streaming<QueryProviderInbound>) -> ToHandler {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message in time")
        .expect("status OK")
        .expect("stream open")
        .request
        .expect("a request")
}

async fn send(requests: &mpsc::Sender<QueryProviderOutbound>, id: &str, request: FromHandler) {
    requests
        .send(QueryProviderOutbound {
            request: Some(request),
            instruction_id: id.into(),
        })
        .await
        .expect("stream open");
}

#[tokio::test]
async fn a_query_reaches_a_subscribed_handler_and_its_answers_come_back_before_the_stream_ends() {
    let server = start().await;
    let (requests, stream) = request_stream();
    let mut handler = QueryServiceClient::new(server.channel().await)
        .open_stream(stream)
        .await
        .expect("OpenStream")
        .into_inner();
    let subscription = QuerySubscription {
        message_id: "s1".into(),
        query: "FindCards".into(),
        result_name: "java.util.List".into(),
        component_name: "projection".into(),
        client_id: "handler-1".into(),
    };
    send(&requests, "s1", FromHandler::Subscribe(subscription)).await;
    assert!(matches!(next(&mut handler).await, ToHandler::Ack(ack) if ack.success && ack.instruction_id == "s1"));
    let permits = FlowControl {
        client_id: "handler-1".into(),
        permits: 5000,
    };
    send(&requests, "", FromHandler::FlowControl(permits)).await;

    let mut sender = QueryServiceClient::new(server.channel().await);
    let request = QueryRequest {
        message_identifier: "q1".into(),
        query: "FindCards".into(),
        ..QueryRequest::default()
    };
    let mut answers = sender.query(request).await.expect("Query").into_inner();
    let received = match next(&mut handler).await {
        ToHandler::Query(query) => query,
        other => panic!("expected a query, got {other:?}"),
    };
    assert_eq!(received.message_identifier, "q1");
    for item in ["first", "second"] {
        let answer = QueryResponse {
            message_identifier: item.into(),
            request_identifier: "q1".into(),
            ..QueryResponse::default()
        };
        send(&requests, "", FromHandler::QueryResponse(answer)).await;
    }
    let complete = QueryComplete {
        message_id: "c1".into(),
        request_id: "q1".into(),
    };
    send(&requests, "", FromHandler::QueryComplete(complete)).await;
    let mut got = Vec::new();
    while let Some(answer) = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("in time")
        .expect("status OK")
    {
        got.push(answer.message_identifier);
    }
    assert_eq!(got, ["first", "second"]);
    server.stop().await;
}

#[tokio::test]
async fn a_query_nobody_handles_answers_5000_and_ends_ok_and_subscription_queries_are_unimplemented() {
    let server = start().await;
    let mut sender = QueryServiceClient::new(server.channel().await);
    let request = QueryRequest {
        message_identifier: "q1".into(),
        query: "Nobody".into(),
        ..QueryRequest::default()
    };
    let mut answers = sender.query(request).await.expect("Query").into_inner();
    let first = answers.message().await.expect("status OK").expect("one answer");
    assert_eq!(first.error_code, "AXONIQ-5000");
    assert_eq!(
        first.error_message.map(|m| m.message),
        Some("No handler for query: Nobody".to_string())
    );
    assert!(
        answers.message().await.expect("status OK").is_none(),
        "then the stream ends"
    );

    let (_requests, stream) = request_stream::<SubscriptionQueryRequest>();
    let refused = sender.subscription(stream).await.expect_err("not served yet");
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert!(refused.message().contains("AXONIQ-1002"), "{}", refused.message());
    server.stop().await;
}
