//! QueryService over gRPC, as the Java connector drives it (MESSAGING.md §3): a handler
//! subscribes on `OpenStream`, grants permits, answers and completes; the sender's `Query`
//! stream carries the answers and ends OK, or carries AXONIQ-5000 when nobody handles the query.

use std::time::Duration;

use myelin_proto::grpc::FlowControl;
use myelin_proto::grpc::query::query_provider_inbound::Request as ToHandler;
use myelin_proto::grpc::query::query_provider_outbound::Request as FromHandler;
use myelin_proto::grpc::query::query_service_client::QueryServiceClient;
use myelin_proto::grpc::query::subscription_query_request::Request as SubscriptionRequest;
use myelin_proto::grpc::query::subscription_query_response::Response as SubscriptionAnswer;
use myelin_proto::grpc::query::{
    QueryComplete, QueryProviderInbound, QueryProviderOutbound, QueryRequest, QueryResponse, QuerySubscription,
    QueryUpdate, SubscriptionQuery, SubscriptionQueryRequest, SubscriptionQueryResponse,
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
async fn a_query_nobody_handles_answers_5000_and_ends_ok_and_so_does_a_subscription_stream_with_5000() {
    let server = start().await;
    let mut sender = QueryServiceClient::new(server.channel().await);
    let request = QueryRequest {
        message_identifier: "q1".into(),
        query: "Nobody".into(),
        ..QueryRequest::default()
    };
    let mut answers = sender.query(request.clone()).await.expect("Query").into_inner();
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

    let (subscriptions, stream) = request_stream::<SubscriptionQueryRequest>();
    let mut updates = sender.subscription(stream).await.expect("Subscription").into_inner();
    subscriptions
        .send(subscription(SubscriptionRequest::Subscribe(SubscriptionQuery {
            subscription_identifier: "sub-1".into(),
            query_request: Some(request),
            ..SubscriptionQuery::default()
        })))
        .await
        .expect("open");
    let failed = tokio::time::timeout(Duration::from_secs(5), updates.message())
        .await
        .expect("fails in time")
        .expect_err("no handler fails the stream");
    assert!(failed.message().contains("AXONIQ-5000"), "{}", failed.message());
    server.stop().await;
}

fn subscription(request: SubscriptionRequest) -> SubscriptionQueryRequest {
    SubscriptionQueryRequest { request: Some(request) }
}

/// The subscription-query request a handler received.
async fn subscription_request(stream: &mut Streaming<QueryProviderInbound>) -> SubscriptionRequest {
    match next(stream).await {
        ToHandler::SubscriptionQueryRequest(request) => request.request.expect("a request"),
        other => panic!("expected a subscription query request, got {other:?}"),
    }
}

fn update(id: &str, payload: &str) -> QueryProviderOutbound {
    QueryProviderOutbound {
        request: Some(FromHandler::SubscriptionQueryResponse(SubscriptionQueryResponse {
            message_identifier: payload.into(),
            subscription_identifier: id.into(),
            response: Some(SubscriptionAnswer::Update(QueryUpdate {
                message_identifier: payload.into(),
                ..QueryUpdate::default()
            })),
        })),
        instruction_id: String::new(),
    }
}

#[tokio::test]
#[allow(deprecated)]
async fn a_subscription_query_reaches_the_handler_and_its_answers_come_back_one_per_permit() {
    let server = start().await;
    let (requests, stream) = request_stream();
    let mut handler = QueryServiceClient::new(server.channel().await)
        .open_stream(stream)
        .await
        .expect("OpenStream")
        .into_inner();
    let query_subscription = QuerySubscription {
        message_id: "s1".into(),
        query: "CardSummaries".into(),
        component_name: "projection".into(),
        client_id: "handler-1".into(),
        ..QuerySubscription::default()
    };
    send(&requests, "s1", FromHandler::Subscribe(query_subscription)).await;
    assert!(matches!(next(&mut handler).await, ToHandler::Ack(ack) if ack.success));

    let mut sender = QueryServiceClient::new(server.channel().await);
    let (subscriptions, stream) = request_stream::<SubscriptionQueryRequest>();
    let mut updates = sender.subscription(stream).await.expect("Subscription").into_inner();
    let query = SubscriptionQuery {
        subscription_identifier: "sub-1".into(),
        query_request: Some(QueryRequest {
            message_identifier: "sub-1".into(),
            query: "CardSummaries".into(),
            ..QueryRequest::default()
        }),
        ..SubscriptionQuery::default()
    };
    let permits = |n| {
        subscription(SubscriptionRequest::FlowControl(SubscriptionQuery {
            number_of_permits: n,
            ..SubscriptionQuery::default()
        }))
    };
    subscriptions.send(permits(1)).await.expect("open");
    subscriptions
        .send(subscription(SubscriptionRequest::Subscribe(query.clone())))
        .await
        .expect("open");
    match subscription_request(&mut handler).await {
        SubscriptionRequest::Subscribe(got) => assert_eq!(got.subscription_identifier, "sub-1"),
        other => panic!("expected a subscribe, got {other:?}"),
    }
    // AF 4.13's initial result: asked on the same stream, answered by the handler.
    subscriptions
        .send(subscription(SubscriptionRequest::GetInitialResult(query.clone())))
        .await
        .expect("open");
    assert!(matches!(
        subscription_request(&mut handler).await,
        SubscriptionRequest::GetInitialResult(_)
    ));
    let initial = SubscriptionQueryResponse {
        message_identifier: "initial".into(),
        subscription_identifier: "sub-1".into(),
        response: Some(SubscriptionAnswer::InitialResult(QueryResponse {
            message_identifier: "initial".into(),
            request_identifier: "sub-1".into(),
            ..QueryResponse::default()
        })),
    };
    requests
        .send(QueryProviderOutbound {
            request: Some(FromHandler::SubscriptionQueryResponse(initial)),
            instruction_id: String::new(),
        })
        .await
        .expect("open");
    requests.send(update("sub-1", "update-1")).await.expect("open");
    let received = |message: Option<SubscriptionQueryResponse>| message.expect("open").message_identifier;
    let first = tokio::time::timeout(Duration::from_secs(5), updates.message())
        .await
        .expect("in time")
        .expect("status OK");
    assert_eq!(received(first), "initial");
    // One permit was granted: the update waits for the next.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), updates.message())
            .await
            .is_err(),
        "nothing beyond the permits"
    );
    subscriptions.send(permits(5)).await.expect("open");
    let second = tokio::time::timeout(Duration::from_secs(5), updates.message())
        .await
        .expect("in time")
        .expect("status OK");
    assert_eq!(received(second), "update-1");

    // An answer for a subscription nobody has makes the handler unsubscribe it.
    requests.send(update("sub-unknown", "stray")).await.expect("open");
    match subscription_request(&mut handler).await {
        SubscriptionRequest::Unsubscribe(got) => assert_eq!(got.subscription_identifier, "sub-unknown"),
        other => panic!("expected an unsubscribe, got {other:?}"),
    }
    // The sender unsubscribes: the handler is told.
    subscriptions
        .send(subscription(SubscriptionRequest::Unsubscribe(query)))
        .await
        .expect("open");
    match subscription_request(&mut handler).await {
        SubscriptionRequest::Unsubscribe(got) => assert_eq!(got.subscription_identifier, "sub-1"),
        other => panic!("expected an unsubscribe, got {other:?}"),
    }
    server.stop().await;
}
