//! EventStore rpcs through a tonic client against a real server (AXON_COMPAT §3).

use std::time::Duration;

use myelin_grpc::{EventStoreLimits, GrpcConfig};
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::{
    Event, GetAggregateEventsRequest, GetAggregateSnapshotsRequest, GetEventsRequest, GetFirstTokenRequest,
    GetTokenAtRequest, QueryEventsRequest, ReadHighestSequenceNrRequest,
};
use myelin_testkit::client::{append, error_code, last_token, request_stream};
use myelin_testkit::events::{client_event as event, client_snapshot as snapshot, loose_event};
use myelin_testkit::grpc::{start, start_with};
use tonic::{Code, Request};

async fn aggregate_events(
    client: &mut myelin_proto::grpc::event::event_store_client::EventStoreClient<tonic::transport::Channel>,
    request: GetAggregateEventsRequest,
) -> Vec<Event> {
    let mut stream = client
        .list_aggregate_events(request)
        .await
        .expect("ListAggregateEvents")
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("aggregate event") {
        events.push(event);
    }
    events
}

async fn snapshots(
    client: &mut myelin_proto::grpc::event::event_store_client::EventStoreClient<tonic::transport::Channel>,
    request: GetAggregateSnapshotsRequest,
) -> Vec<i64> {
    let mut stream = client
        .list_aggregate_snapshots(request)
        .await
        .expect("ListAggregateSnapshots")
        .into_inner();
    let mut sequences = Vec::new();
    while let Some(event) = stream.message().await.expect("snapshot") {
        sequences.push(event.aggregate_sequence_number);
    }
    sequences
}

#[tokio::test]
async fn events_round_trip_field_equal() {
    let server = start().await;
    let mut client = server.event_store().await;
    assert_eq!(last_token(&mut client).await, -1);
    let first = client
        .get_first_token(GetFirstTokenRequest {})
        .await
        .expect("GetFirstToken");
    assert_eq!(first.into_inner().token, 0);

    let sent = vec![
        event("order-1", 0),
        event("order-1", 1),
        loose_event("Tick", 7),
        event("order-1", 2),
    ];
    append(&mut client, sent.clone()).await.expect("append");
    assert_eq!(last_token(&mut client).await, 3);

    let read = aggregate_events(
        &mut client,
        GetAggregateEventsRequest {
            aggregate_id: "order-1".into(),
            ..Default::default()
        },
    )
    .await;
    let expected: Vec<Event> = sent.iter().filter(|e| !e.aggregate_type.is_empty()).cloned().collect();
    assert_eq!(read, expected);
    assert!(read[0].message_identifier.is_empty());

    // Bounds: initial_sequence and an inclusive max_sequence.
    let read = aggregate_events(
        &mut client,
        GetAggregateEventsRequest {
            aggregate_id: "order-1".into(),
            initial_sequence: 1,
            max_sequence: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(read, vec![event("order-1", 1)]);
    let unknown = aggregate_events(
        &mut client,
        GetAggregateEventsRequest {
            aggregate_id: "nobody".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(unknown.is_empty());

    // The tracking stream hands out the same events with their tokens.
    let (requests, stream) = request_stream();
    requests
        .send(GetEventsRequest {
            tracking_token: 0,
            number_of_permits: 100,
            ..Default::default()
        })
        .await
        .expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    for (token, expected) in sent.iter().enumerate() {
        let got = tracked.message().await.expect("tracked").expect("an event");
        assert_eq!(got.token, token as i64);
        assert_eq!(got.event.as_ref(), Some(expected));
    }
    drop(requests);
    assert!(tracked.message().await.expect("ends with OK").is_none());
    server.stop().await;
}

#[tokio::test]
async fn empty_append_succeeds_and_stores_nothing() {
    let server = start().await;
    let mut client = server.event_store().await;
    append(&mut client, Vec::new()).await.expect("empty transaction");
    assert_eq!(last_token(&mut client).await, -1);
    server.stop().await;
}

#[tokio::test]
async fn cancelled_append_stores_nothing() {
    let server = start().await;
    let mut client = server.event_store().await;
    let (events, stream) = request_stream();
    let mut appending = client.clone();
    let call = tokio::spawn(async move { appending.append_event(stream).await });
    events.send(event("order-1", 0)).await.expect("send");
    events.send(event("order-1", 1)).await.expect("send");
    // Let both events reach the server, then cancel the call without half-closing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    assert!(call.await.is_err(), "the call was cancelled");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(last_token(&mut client).await, -1);
    // The aggregate is still new: its first event is sequence 0.
    append(&mut client, vec![event("order-1", 0)]).await.expect("append");
    assert_eq!(last_token(&mut client).await, 0);
    drop(events);
    server.stop().await;
}

#[tokio::test]
async fn conflicting_sequence_is_out_of_range_and_atomic() {
    let server = start().await;
    let mut client = server.event_store().await;
    append(&mut client, vec![event("order-1", 0), event("order-1", 1)])
        .await
        .expect("append");

    let status = append(&mut client, vec![event("other", 0), event("order-1", 1)])
        .await
        .expect_err("duplicate sequence");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status.message(),
        "[AXONIQ-2000] Invalid sequence number 1 for aggregate order-1, expected 2"
    );
    assert_eq!(error_code(&status), Some("AXONIQ-2000"));
    // Nothing of the rejected transaction was stored.
    assert_eq!(last_token(&mut client).await, 1);
    let highest = client
        .read_highest_sequence_nr(ReadHighestSequenceNrRequest {
            aggregate_id: "other".into(),
            from_sequence_nr: 0,
        })
        .await
        .expect("ReadHighestSequenceNr");
    assert_eq!(highest.into_inner().to_sequence_nr, -1);

    // A gap inside one transaction is rejected too.
    let status = append(&mut client, vec![event("order-1", 2), event("order-1", 4)])
        .await
        .expect_err("gap");
    assert_eq!(
        status.message(),
        "[AXONIQ-2000] Invalid sequence number 4 for aggregate order-1, expected 3"
    );
    server.stop().await;
}

#[tokio::test]
async fn read_highest_sequence_nr() {
    let server = start().await;
    let mut client = server.event_store().await;
    let events: Vec<Event> = (0..5).map(|s| event("order-9", s)).collect();
    append(&mut client, events).await.expect("append");
    let highest = |id: &str| ReadHighestSequenceNrRequest {
        aggregate_id: id.into(),
        from_sequence_nr: 0,
    };
    let known = client
        .read_highest_sequence_nr(highest("order-9"))
        .await
        .expect("known");
    assert_eq!(known.into_inner().to_sequence_nr, 4);
    let unknown = client
        .read_highest_sequence_nr(highest("nobody"))
        .await
        .expect("unknown");
    assert_eq!(unknown.into_inner().to_sequence_nr, -1);
    server.stop().await;
}

#[tokio::test]
async fn snapshots_follow_axon_rules() {
    let server = start().await;
    let mut client = server.event_store().await;

    let status = client
        .append_snapshot(snapshot("order-1", 0))
        .await
        .expect_err("no events yet");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status.message(),
        "[AXONIQ-2000] Invalid sequence number while storing snapshot. Highest aggregate order-1 sequence number: -1, snapshot sequence 0."
    );
    assert_eq!(error_code(&status), Some("AXONIQ-2000"));

    append(&mut client, (0..6).map(|s| event("order-1", s)).collect())
        .await
        .expect("append");
    let status = client
        .append_snapshot(snapshot("order-1", 6))
        .await
        .expect_err("ahead of events");
    assert_eq!(
        status.message(),
        "[AXONIQ-2000] Invalid sequence number while storing snapshot. Highest aggregate order-1 sequence number: 5, snapshot sequence 6."
    );
    for sequence in [1, 3] {
        let reply = client
            .append_snapshot(snapshot("order-1", sequence))
            .await
            .expect("snapshot");
        assert!(reply.into_inner().success);
    }
    // Snapshots never get a token.
    assert_eq!(last_token(&mut client).await, 5);

    let all = GetAggregateSnapshotsRequest {
        aggregate_id: "order-1".into(),
        initial_sequence: 0,
        max_sequence: i64::MAX,
        max_results: 0,
    };
    assert_eq!(snapshots(&mut client, all.clone()).await, vec![3, 1]);
    let limited = GetAggregateSnapshotsRequest {
        max_results: 1,
        ..all.clone()
    };
    assert_eq!(snapshots(&mut client, limited).await, vec![3]);
    let below_three = GetAggregateSnapshotsRequest {
        max_sequence: 3,
        ..all.clone()
    };
    assert_eq!(snapshots(&mut client, below_three).await, vec![1]);
    let none = GetAggregateSnapshotsRequest {
        max_sequence: 0,
        ..all.clone()
    };
    assert!(snapshots(&mut client, none).await.is_empty());
    let negative = GetAggregateSnapshotsRequest {
        max_sequence: -1,
        ..all
    };
    assert!(snapshots(&mut client, negative).await.is_empty());

    // With allow_snapshots: the latest snapshot, then only the events after it.
    let read = aggregate_events(
        &mut client,
        GetAggregateEventsRequest {
            aggregate_id: "order-1".into(),
            allow_snapshots: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(read[0], snapshot("order-1", 3));
    assert_eq!(read[1..], [event("order-1", 4), event("order-1", 5)]);
    server.stop().await;
}

#[tokio::test]
async fn get_token_at_follows_timestamps() {
    let server = start().await;
    let mut client = server.event_store().await;
    let token_at = |instant| GetTokenAtRequest { instant };
    assert_eq!(
        client
            .get_token_at(token_at(0))
            .await
            .expect("empty")
            .into_inner()
            .token,
        -1
    );
    let events: Vec<Event> = (0..5)
        .map(|n| Event {
            timestamp: 1000 * (n + 1),
            ..loose_event("Tick", n)
        })
        .collect();
    append(&mut client, events).await.expect("append");
    for (instant, token) in [(0, 0), (1000, 0), (2500, 2), (5000, 4)] {
        let got = client
            .get_token_at(token_at(instant))
            .await
            .expect("GetTokenAt")
            .into_inner()
            .token;
        assert_eq!(got, token, "instant {instant}");
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_context_is_not_found() {
    let server = start_with(GrpcConfig::default(), &["default", "second"]).await;
    let mut client = server.event_store().await;

    let mut request = Request::new(GetFirstTokenRequest {});
    request
        .metadata_mut()
        .insert("axoniq-context", "nope".parse().expect("ascii"));
    let status = client.get_first_token(request).await.expect_err("unknown context");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "[AXONIQ-6000] No event store found for context nope");
    assert_eq!(error_code(&status), Some("AXONIQ-6000"));

    let mut request = Request::new(tokio_stream::iter(vec![event("a", 0)]));
    request
        .metadata_mut()
        .insert("axoniq-context", "nope".parse().expect("ascii"));
    let status = client.append_event(request).await.expect_err("unknown context");
    assert_eq!(status.code(), Code::NotFound);

    let (_requests, stream) = request_stream::<GetEventsRequest>();
    let mut request = Request::new(stream);
    request
        .metadata_mut()
        .insert("axoniq-context", "nope".parse().expect("ascii"));
    let status = client.list_events(request).await.expect_err("unknown context");
    assert_eq!(error_code(&status), Some("AXONIQ-6000"));

    // Both headers route: AxonIQ-Context, then the legacy Context.
    let mut request = Request::new(tokio_stream::iter(vec![event("a", 0), event("a", 1)]));
    request
        .metadata_mut()
        .insert("axoniq-context", "second".parse().expect("ascii"));
    client.append_event(request).await.expect("append to second");
    let mut request = Request::new(myelin_proto::grpc::event::GetLastTokenRequest {});
    request
        .metadata_mut()
        .insert("context", "second".parse().expect("ascii"));
    assert_eq!(
        client.get_last_token(request).await.expect("last").into_inner().token,
        1
    );
    assert_eq!(last_token(&mut client).await, -1, "default is untouched");
    server.stop().await;
}

#[tokio::test]
async fn oversized_message_is_resource_exhausted() {
    let config = GrpcConfig {
        limits: EventStoreLimits {
            max_message_bytes: 64 * 1024,
            ..EventStoreLimits::default()
        },
        ..GrpcConfig::default()
    };
    let server = start_with(config, &["default"]).await;
    let mut client = server.event_store().await;
    let big = Event {
        payload: Some(SerializedObject {
            r#type: "Big".into(),
            revision: String::new(),
            data: vec![7; 100 * 1024],
        }),
        ..loose_event("Big", 0)
    };
    let status = append(&mut client, vec![big.clone()]).await.expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(error_code(&status), Some("AXONIQ-2001"));
    let status = client.append_snapshot(big).await.expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(last_token(&mut client).await, -1);
    // A unary request of another kind, and a tracking request.
    let huge_id = "x".repeat(100 * 1024);
    let status = client
        .read_highest_sequence_nr(ReadHighestSequenceNrRequest {
            aggregate_id: huge_id.clone(),
            from_sequence_nr: 0,
        })
        .await
        .expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let (requests, stream) = request_stream();
    requests
        .send(GetEventsRequest {
            client_id: huge_id,
            number_of_permits: 1,
            ..Default::default()
        })
        .await
        .expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents opens").into_inner();
    let status = tracked.message().await.expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted);
    drop(requests);
    // Just under the limit is fine.
    let fits = Event {
        payload: Some(SerializedObject {
            r#type: "Fits".into(),
            revision: String::new(),
            data: vec![7; 60 * 1024],
        }),
        ..loose_event("Fits", 1)
    };
    append(&mut client, vec![fits]).await.expect("fits");
    server.stop().await;
}

#[tokio::test]
async fn oversized_transaction_is_refused() {
    let config = GrpcConfig {
        limits: EventStoreLimits {
            max_transaction_bytes: 16 * 1024,
            ..EventStoreLimits::default()
        },
        ..GrpcConfig::default()
    };
    let server = start_with(config, &["default"]).await;
    let mut client = server.event_store().await;
    let events: Vec<Event> = (0..100).map(|s| event("order-1", s)).collect();
    let status = append(&mut client, events).await.expect_err("too large");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_code(&status), Some("AXONIQ-2001"));
    assert_eq!(last_token(&mut client).await, -1);
    server.stop().await;
}

/// Unfinished transactions are held in memory; all streams together get a budget, and a
/// stream that would go over is refused at once (AXONIQ-1900) instead of piling up.
#[tokio::test]
async fn unfinished_transactions_share_a_memory_budget() {
    let config = GrpcConfig {
        limits: EventStoreLimits {
            max_pending_append_bytes: 64 * 1024,
            ..EventStoreLimits::default()
        },
        ..GrpcConfig::default()
    };
    let server = start_with(config, &["default"]).await;
    let big = |aggregate: &str, sequence: i64| Event {
        payload: Some(SerializedObject {
            r#type: "Big".into(),
            revision: String::new(),
            data: vec![3; 20 * 1024],
        }),
        ..event(aggregate, sequence)
    };
    // A stream holding 40 KiB, not half-closed.
    let mut holder = server.event_store().await;
    let (requests, stream) = request_stream();
    requests.send(big("holder", 0)).await.expect("send");
    requests.send(big("holder", 1)).await.expect("send");
    let held = tokio::spawn(async move { holder.append_event(stream).await });
    // Another 40 KiB does not fit beside it (once the server holds the first stream's events).
    let mut other = server.event_store().await;
    let mut stored_before = 0;
    let refusal = loop {
        let aggregate = format!("other-{stored_before}");
        match append(&mut other, vec![big(&aggregate, 0), big(&aggregate, 1)]).await {
            Ok(()) => stored_before += 1,
            Err(status) => break status,
        }
        assert!(stored_before < 50, "the holder's events never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert_eq!(error_code(&refusal), Some("AXONIQ-1900"));
    // Once the holder finishes, its budget is free again.
    drop(requests);
    held.await.expect("task").expect("the holder's transaction commits");
    append(&mut other, vec![big("after", 0), big("after", 1)])
        .await
        .expect("fits again");
    assert_eq!(last_token(&mut other).await, 2 * stored_before + 3);
    server.stop().await;
}

#[tokio::test]
async fn malformed_event_is_invalid_argument() {
    let server = start().await;
    let channel = server.channel().await;
    // Field 1 (string) claiming 100 bytes with 1 present: not an Event.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/io.axoniq.axonserver.grpc.event.EventStore/AppendSnapshot");
    let codec = myelin_testkit::client::RawCodec;
    let status = grpc
        .unary::<bytes::Bytes, bytes::Bytes, _>(
            Request::new(bytes::Bytes::from_static(&[0x0a, 100, b'x'])),
            path,
            codec,
        )
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_code(&status), Some("AXONIQ-0001"));
    server.stop().await;
}

#[tokio::test]
async fn query_events_is_unimplemented() {
    let server = start().await;
    let mut client = server.event_store().await;
    let status = client
        .query_events(tokio_stream::iter(vec![QueryEventsRequest::default()]))
        .await
        .expect_err("not supported");
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(error_code(&status), Some("AXONIQ-1002"));
    assert!(status.message().starts_with("[AXONIQ-1002] "), "{}", status.message());
    server.stop().await;
}
