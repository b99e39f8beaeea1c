//! The tracking stream (ListEvents): positioning, permits, blacklist, tailing, half-close.

use std::time::Duration;

use myelin_grpc::GrpcConfig;
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{Event, EventWithToken, GetEventsRequest, PayloadDescription};
use myelin_testkit::client::{append, error_code, last_token, request_stream};
use myelin_testkit::events::{client_event as event, loose_event};
use myelin_testkit::grpc::{start, start_with};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// How long a test waits to be sure that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

fn open(token: i64, permits: i64) -> GetEventsRequest {
    GetEventsRequest {
        tracking_token: token,
        number_of_permits: permits,
        client_id: "test".into(),
        component_name: "test".into(),
        processor: "p".into(),
        ..Default::default()
    }
}

async fn next(stream: &mut Streaming<EventWithToken>) -> EventWithToken {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event in time")
        .expect("no error")
        .expect("stream still open")
}

async fn tokens(stream: &mut Streaming<EventWithToken>, count: usize) -> Vec<i64> {
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(next(stream).await.token);
    }
    tokens
}

async fn assert_quiet(stream: &mut Streaming<EventWithToken>) {
    if let Ok(message) = tokio::time::timeout(QUIET, stream.message()).await {
        panic!("expected nothing, got {message:?}");
    }
}

async fn loose(client: &mut EventStoreClient<Channel>, range: std::ops::Range<i64>) {
    append(client, range.map(|n| loose_event("Tick", n)).collect())
        .await
        .expect("append");
}

#[tokio::test]
async fn from_last_token_plus_one_returns_exactly_the_new_events() {
    let server = start().await;
    let mut client = server.event_store().await;
    loose(&mut client, 0..10).await;
    let start = last_token(&mut client).await + 1;
    let (requests, stream) = request_stream();
    requests.send(open(start, 1000)).await.expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    assert_quiet(&mut tracked).await;
    loose(&mut client, 10..13).await;
    let got: Vec<(i64, Option<Event>)> = {
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = next(&mut tracked).await;
            got.push((e.token, e.event));
        }
        got
    };
    let expected: Vec<(i64, Option<Event>)> = (10..13).map(|n| (n, Some(loose_event("Tick", n)))).collect();
    assert_eq!(got, expected);
    assert_quiet(&mut tracked).await;
    drop(requests);
    server.stop().await;
}

#[tokio::test]
async fn permits_bound_what_is_sent_and_later_tokens_are_ignored() {
    let server = start().await;
    let mut client = server.event_store().await;
    loose(&mut client, 0..20).await;
    let (requests, stream) = request_stream();
    requests.send(open(5, 3)).await.expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    assert_eq!(tokens(&mut tracked, 3).await, vec![5, 6, 7]);
    assert_quiet(&mut tracked).await;
    // dendrite repeats a stale token, Java sends none: neither repositions.
    requests.send(open(0, 4)).await.expect("send");
    assert_eq!(tokens(&mut tracked, 4).await, vec![8, 9, 10, 11]);
    assert_quiet(&mut tracked).await;
    requests
        .send(GetEventsRequest {
            number_of_permits: 100,
            ..Default::default()
        })
        .await
        .expect("send");
    assert_eq!(tokens(&mut tracked, 8).await, (12..20).collect::<Vec<_>>());
    // Permits left over carry on into live events.
    loose(&mut client, 20..22).await;
    assert_eq!(tokens(&mut tracked, 2).await, vec![20, 21]);
    drop(requests);
    assert!(tracked.message().await.expect("OK").is_none());
    server.stop().await;
}

#[tokio::test]
async fn negative_token_starts_at_the_first_event() {
    let server = start().await;
    let mut client = server.event_store().await;
    loose(&mut client, 0..3).await;
    let (requests, stream) = request_stream();
    requests.send(open(-1, 10)).await.expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    assert_eq!(tokens(&mut tracked, 3).await, vec![0, 1, 2]);
    drop(requests);
    server.stop().await;
}

#[tokio::test]
async fn half_close_ends_the_stream_with_ok() {
    let server = start().await;
    let mut client = server.event_store().await;
    // Before any request, at the head, and with events still permitted.
    let (requests, stream) = request_stream::<GetEventsRequest>();
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    drop(requests);
    assert!(next_or_end(&mut tracked).await.is_none());

    loose(&mut client, 0..2).await;
    let (requests, stream) = request_stream();
    requests.send(open(0, 10)).await.expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    assert_eq!(tokens(&mut tracked, 2).await, vec![0, 1]);
    drop(requests);
    assert!(next_or_end(&mut tracked).await.is_none());
    assert_eq!(server.contexts.get("default").expect("context").tracking_streams(), 0);
    server.stop().await;
}

async fn next_or_end(stream: &mut Streaming<EventWithToken>) -> Option<EventWithToken> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer in time")
        .expect("status OK")
}

#[tokio::test]
async fn two_tailing_streams_see_the_same_order() {
    let server = start().await;
    let mut client = server.event_store().await;
    let mut streams = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (requests, stream) = request_stream();
        requests.send(open(0, 10_000)).await.expect("send");
        streams.push(client.list_events(stream).await.expect("ListEvents").into_inner());
        senders.push(requests);
    }
    // Concurrent writers, transactions of 1..3 events, rolling several 8 KiB segments.
    let writers = 4;
    let transactions = 30;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let aggregate = format!("agg-{writer}");
            let mut sequence = 0;
            let mut count = 0;
            for t in 0..transactions {
                let size = 1 + t % 3;
                let events: Vec<Event> = (0..size).map(|i| event(&aggregate, sequence + i)).collect();
                sequence += size;
                count += size as usize;
                append(&mut client, events).await.expect("append");
            }
            count
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("writer");
    }
    let mut seen: Vec<Vec<(i64, Event)>> = Vec::new();
    for stream in &mut streams {
        let mut events = Vec::with_capacity(total);
        for _ in 0..total {
            let e = next(stream).await;
            events.push((e.token, e.event.expect("event")));
        }
        seen.push(events);
    }
    assert_eq!(seen[0], seen[1]);
    let tokens: Vec<i64> = seen[0].iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, (0..total as i64).collect::<Vec<_>>());
    // Per aggregate, sequences arrive in order.
    for writer in 0..writers {
        let aggregate = format!("agg-{writer}");
        let sequences: Vec<i64> = seen[0]
            .iter()
            .filter(|(_, e)| e.aggregate_identifier == aggregate)
            .map(|(_, e)| e.aggregate_sequence_number)
            .collect();
        assert_eq!(sequences, (0..sequences.len() as i64).collect::<Vec<_>>());
    }
    drop(senders);
    server.stop().await;
}

#[tokio::test]
async fn blacklisted_payload_types_are_skipped() {
    let server = start().await;
    let mut client = server.event_store().await;
    let mixed: Vec<Event> = (0..6)
        .map(|n| loose_event(if n % 2 == 0 { "Noise" } else { "Signal" }, n))
        .collect();
    append(&mut client, mixed).await.expect("append");
    let (requests, stream) = request_stream();
    requests
        .send(GetEventsRequest {
            blacklist: vec![PayloadDescription {
                r#type: "Noise".into(),
                revision: String::new(),
            }],
            ..open(0, 2)
        })
        .await
        .expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    // Blacklisted events use no permits: two permits, two Signals.
    assert_eq!(tokens(&mut tracked, 2).await, vec![1, 3]);
    assert_quiet(&mut tracked).await;
    requests.send(open(0, 5)).await.expect("send");
    assert_eq!(tokens(&mut tracked, 1).await, vec![5]);
    assert_quiet(&mut tracked).await;
    drop(requests);
    server.stop().await;
}

#[tokio::test]
async fn cancelled_streams_are_released() {
    let server = start().await;
    let mut client = server.event_store().await;
    loose(&mut client, 0..5).await;
    // Open and abandon many streams, as clients do.
    for _ in 0..50 {
        let (requests, stream) = request_stream();
        requests.send(open(0, 2)).await.expect("send");
        let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
        assert_eq!(tokens(&mut tracked, 1).await, vec![0]);
        drop(tracked);
        drop(requests);
    }
    // Every abandoned stream's task has ended and let go of its reader.
    let context = server.contexts.get("default").expect("context");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while context.tracking_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} streams still open",
            context.tracking_streams()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last_token(&mut client).await, 4);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let server = start_with(GrpcConfig::default(), &["default"]).await;
    let mut client = server.event_store().await;
    let (requests, stream) = request_stream();
    requests.send(open(0, 10)).await.expect("send");
    let mut tracked = client.list_events(stream).await.expect("ListEvents").into_inner();
    assert_quiet(&mut tracked).await;
    let stopping = tokio::spawn(server.stop());
    let status = tokio::time::timeout(Duration::from_secs(10), tracked.message())
        .await
        .expect("ends in time")
        .expect_err("UNAVAILABLE");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(error_code(&status), Some("AXONIQ-9500"));
    stopping.await.expect("server stopped");
    drop(requests);
}
