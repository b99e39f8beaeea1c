//! Hostile input on the gRPC API (issue 6): oversized messages, malformed protobuf and gRPC
//! framing, invalid UTF-8, absurd numbers, thousands of abandoned streams.
//!
//! Every call has a timeout (a hang fails the test), every rejection must be a clear error
//! (the right gRPC code, and Axon's `AxonIQ-ErrorCode` trailer where Myelin decides the
//! answer), and at the end of each test the store holds exactly what the well-formed calls
//! wrote, byte for byte.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use myelin_grpc::{EventStoreLimits, GrpcConfig};
use myelin_proto::grpc::control::{ClientIdentification, PlatformInboundInstruction};
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{
    ConfirmationWithConsistencyMarker, Event, EventWithToken, GetAggregateEventsRequest, GetAggregateSnapshotsRequest,
    GetEventsRequest, GetFirstTokenRequest, GetLastTokenRequest, GetTokenAtRequest, PayloadDescription,
    QueryEventsRequest, ReadHighestSequenceNrRequest,
};
use myelin_proto::grpc::{MetaDataValue, SerializedObject, meta_data_value};
use myelin_testkit::client::{RawCodec, append, error_code, last_token, request_stream};
use myelin_testkit::events::{client_event as event, client_snapshot as snapshot, loose_event};
use myelin_testkit::grpc::{start, start_with};
use prost::Message;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::codegen::http;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

/// Longest any single call may take before the test calls it a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream must stay silent to count as "sends nothing".
const QUIET: Duration = Duration::from_millis(300);
const EVENT_STORE: &str = "io.axoniq.axonserver.grpc.event.EventStore";
const PLATFORM: &str = "io.axoniq.axonserver.grpc.control.PlatformService";

// --- calls with raw message bytes ---------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

/// One rpc: where it lives, its shape, and whether some bytes are a valid request of its type.
#[derive(Clone, Copy)]
struct Rpc {
    service: &'static str,
    name: &'static str,
    shape: Shape,
    decodes: fn(&[u8]) -> bool,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn decodes<M: Message + Default>(bytes: &[u8]) -> bool {
    M::decode(bytes).is_ok()
}

/// Every rpc a client can reach: the whole EventStore service, and PlatformService.
/// QueryEvents is answered UNIMPLEMENTED before anything is read.
fn rpcs() -> Vec<Rpc> {
    use Shape::*;
    let rpc = |service, name, shape, decodes| Rpc {
        service,
        name,
        shape,
        decodes,
    };
    vec![
        rpc(EVENT_STORE, "AppendEvent", ClientStreaming, decodes::<Event>),
        rpc(EVENT_STORE, "AppendSnapshot", Unary, decodes::<Event>),
        rpc(
            EVENT_STORE,
            "ListAggregateEvents",
            ServerStreaming,
            decodes::<GetAggregateEventsRequest>,
        ),
        rpc(
            EVENT_STORE,
            "ListAggregateSnapshots",
            ServerStreaming,
            decodes::<GetAggregateSnapshotsRequest>,
        ),
        rpc(EVENT_STORE, "ListEvents", Bidi, decodes::<GetEventsRequest>),
        rpc(
            EVENT_STORE,
            "ReadHighestSequenceNr",
            Unary,
            decodes::<ReadHighestSequenceNrRequest>,
        ),
        rpc(EVENT_STORE, "GetFirstToken", Unary, decodes::<GetFirstTokenRequest>),
        rpc(EVENT_STORE, "GetLastToken", Unary, decodes::<GetLastTokenRequest>),
        rpc(EVENT_STORE, "GetTokenAt", Unary, decodes::<GetTokenAtRequest>),
        rpc(EVENT_STORE, "QueryEvents", Bidi, decodes::<QueryEventsRequest>),
        rpc(PLATFORM, "GetPlatformServer", Unary, decodes::<ClientIdentification>),
        rpc(PLATFORM, "OpenStream", Bidi, decodes::<PlatformInboundInstruction>),
    ]
}

fn rpc(name: &str) -> Rpc {
    rpcs()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rpc {name}"))
}

/// `future`, or a failed test if it takes longer than [`CALL_TIMEOUT`].
async fn timed<T>(what: impl std::fmt::Debug, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what:?}: no answer within {CALL_TIMEOUT:?} (a hang)"),
    }
}

async fn drain(mut stream: Streaming<Bytes>) -> Result<Vec<Bytes>, Status> {
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

/// Calls `rpc` with `messages` (a unary or server-streaming rpc gets the first one; a
/// streaming request is half-closed after the last) and collects the replies up to the
/// stream's end. Never waits longer than [`CALL_TIMEOUT`].
async fn call_raw(channel: &Channel, rpc: Rpc, messages: Vec<Bytes>) -> Result<Vec<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let path: http::uri::PathAndQuery = format!("/{}/{}", rpc.service, rpc.name).parse().expect("path");
    let call = async move {
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
        let first = messages.first().cloned().unwrap_or_default();
        match rpc.shape {
            Shape::Unary => grpc
                .unary(Request::new(first), path, RawCodec)
                .await
                .map(|r| vec![r.into_inner()]),
            Shape::ServerStreaming => {
                let stream = grpc.server_streaming(Request::new(first), path, RawCodec).await?;
                drain(stream.into_inner()).await
            }
            Shape::ClientStreaming => grpc
                .client_streaming(Request::new(tokio_stream::iter(messages)), path, RawCodec)
                .await
                .map(|r| vec![r.into_inner()]),
            Shape::Bidi => {
                let stream = grpc
                    .streaming(Request::new(tokio_stream::iter(messages)), path, RawCodec)
                    .await?;
                drain(stream.into_inner()).await
            }
        }
    };
    timed(rpc, call).await
}

/// A status Myelin decided: the code, the `AxonIQ-ErrorCode` trailer and the
/// `[AXONIQ-xxxx] ` prefix of the description all agree.
#[track_caller]
fn assert_axon_error(status: &Status, code: Code, axon_code: &str, context: &dyn std::fmt::Debug) {
    assert_eq!(status.code(), code, "{context:?}: {status:?}");
    assert_eq!(error_code(status), Some(axon_code), "{context:?}: {status:?}");
    assert!(
        status.message().starts_with(&format!("[{axon_code}] ")),
        "{context:?}: {status:?}"
    );
}

/// A valid request of `rpc`'s type of exactly `size` bytes: a small message plus an unknown
/// length-delimited field (number 999; unknown fields are skipped by every decoder).
fn request_of_size(rpc: Rpc, size: usize) -> Bytes {
    let base: Vec<u8> = match rpc.name {
        "AppendEvent" | "AppendSnapshot" => loose_event("Big", 0).encode_to_vec(),
        "ListEvents" => open(0, 1).encode_to_vec(),
        _ => Vec::new(),
    };
    let total = |padding: usize| base.len() + 2 + prost::encoding::encoded_len_varint(padding as u64) + padding;
    let padding = (0..size)
        .find(|p| total(*p) == size)
        .unwrap_or_else(|| panic!("{rpc:?}: no request of exactly {size} bytes"));
    let mut buf = BytesMut::from(base.as_slice());
    prost::encoding::encode_key(999, prost::encoding::WireType::LengthDelimited, &mut buf);
    prost::encoding::encode_varint(padding as u64, &mut buf);
    buf.put_bytes(b'p', padding);
    assert_eq!(buf.len(), size, "{rpc:?}");
    assert!((rpc.decodes)(&buf), "{rpc:?}: the padded request is valid");
    buf.freeze()
}

// --- raw HTTP/2, for framing no gRPC library would send --------------------------------------

/// An HTTP/2 connection driven by a task of its own.
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    driver: JoinHandle<()>,
}

async fn h2_connect(address: SocketAddr) -> H2 {
    let tcp = TcpStream::connect(address).await.expect("connect");
    h2_handshake(tcp).await
}

async fn h2_handshake(tcp: TcpStream) -> H2 {
    let (send, connection) = timed("h2 handshake", h2::client::handshake(tcp))
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    H2 { send, driver }
}

impl H2 {
    /// Opens a gRPC call; the returned stream sends its request body.
    async fn open(
        &mut self,
        address: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let mut request = http::Request::post(format!("http://{address}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("request");
        let send = self.send.clone();
        let mut send = timed("h2 ready", send.ready()).await.expect("connection usable");
        send.send_request(request, false).expect("send request")
    }
}

/// A gRPC length-prefixed message: flag, big-endian length, bytes.
fn frame(flag: u8, message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(flag);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
    buf.freeze()
}

/// The call's final status (trailers-only or after the body), and the reply messages' bytes.
async fn h2_status(response: h2::client::ResponseFuture) -> (Status, Vec<u8>) {
    let response = response.await.expect("an HTTP/2 response");
    assert_eq!(response.status(), 200, "gRPC answers are HTTP 200");
    if let Some(status) = Status::from_header_map(response.headers()) {
        return (status, Vec::new());
    }
    let mut body = response.into_body();
    let data = h2_data(&mut body).await;
    let trailers = body.trailers().await.expect("trailers").expect("a grpc-status trailer");
    let status = Status::from_header_map(&trailers).expect("grpc-status");
    (status, data)
}

/// Every DATA byte of a response body, up to its trailers.
async fn h2_data(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    data
}

// --- the store's content ----------------------------------------------------------------------

fn open(token: i64, permits: i64) -> GetEventsRequest {
    GetEventsRequest {
        tracking_token: token,
        number_of_permits: permits,
        client_id: "hostile".into(),
        component_name: "hostile".into(),
        processor: "p".into(),
        ..Default::default()
    }
}

/// Every event from token 0 to the last, through ListEvents (and half-closed after).
async fn stored_events(client: &mut EventStoreClient<Channel>) -> Vec<EventWithToken> {
    let last = last_token(client).await;
    let count = usize::try_from(last + 1).expect("a token count");
    let (requests, stream) = request_stream();
    requests.send(open(0, last + 1)).await.expect("send");
    let mut tracked = timed("ListEvents", client.list_events(stream))
        .await
        .expect("ListEvents")
        .into_inner();
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let event = timed("ListEvents message", tracked.message())
            .await
            .expect("no error")
            .expect("stream open");
        events.push(event);
    }
    drop(requests);
    let end = timed("ListEvents end", tracked.message()).await.expect("ends with OK");
    assert!(end.is_none(), "no event past the last token: {end:?}");
    events
}

/// The store holds exactly `expected`, in this order, with tokens 0, 1, 2, ...
async fn assert_store_is(client: &mut EventStoreClient<Channel>, expected: &[Event]) {
    let stored = stored_events(client).await;
    assert_eq!(stored.len(), expected.len(), "number of stored events");
    for (token, (stored, expected)) in stored.iter().zip(expected).enumerate() {
        assert_eq!(stored.token, token as i64);
        assert_eq!(stored.event.as_ref(), Some(expected), "token {token}");
    }
}

async fn highest(client: &mut EventStoreClient<Channel>, aggregate: &str) -> i64 {
    timed(
        "ReadHighestSequenceNr",
        client.read_highest_sequence_nr(ReadHighestSequenceNrRequest {
            aggregate_id: aggregate.to_string(),
            from_sequence_nr: 0,
        }),
    )
    .await
    .expect("ReadHighestSequenceNr")
    .into_inner()
    .to_sequence_nr
}

/// Appends one transaction and records it in `written`.
async fn append_ok(client: &mut EventStoreClient<Channel>, written: &mut Vec<Event>, events: Vec<Event>) {
    timed("AppendEvent", append(client, events.clone()))
        .await
        .expect("a well-formed append");
    written.extend(events);
}

// --- malformed protobuf and gRPC framing ------------------------------------------------------

/// Bytes that are not a protobuf message of any type, and a few that may be of some.
fn junk() -> Vec<(&'static str, Bytes)> {
    let mut random = Vec::with_capacity(256);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..256 {
        // xorshift64: the same bytes every run.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push((x >> 56) as u8);
    }
    let mut overlong_varint = vec![0x08];
    overlong_varint.extend([0xff; 10]);
    overlong_varint.push(0x01);
    vec![
        ("length past the end", Bytes::from_static(&[0x0a, 100, b'x'])),
        ("wire type 7", Bytes::from_static(&[0x0f, 0x01])),
        ("wire type 6", Bytes::from_static(&[0x0e, 0x01])),
        ("field number 0", Bytes::from_static(&[0x00, 0x01])),
        ("varint over 10 bytes", overlong_varint.into()),
        ("varint cut off", Bytes::from_static(&[0x08, 0xff, 0xff])),
        ("group never closed", Bytes::from_static(&[0x0b, 0x08, 0x01])),
        ("group end without start", Bytes::from_static(&[0x0c])),
        ("fixed64 cut off", Bytes::from_static(&[0x09, 0x01, 0x02])),
        ("length varint of 2^63", {
            let mut b = vec![0x0a];
            b.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
            b.into()
        }),
        ("random bytes", random.into()),
        ("text", Bytes::from_static(b"{\"aggregateIdentifier\": \"x\"}")),
    ]
}

/// Malformed request bytes on every rpc: INVALID_ARGUMENT with AXONIQ-0001 whenever the bytes
/// are not a message of the rpc's request type, never a hang or a server fault, and nothing
/// stored. Bytes that happen to be a valid message get a normal answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument_on_every_rpc() {
    let server = start().await;
    let mut client = server.event_store().await;
    let mut written = Vec::new();
    append_ok(&mut client, &mut written, (0..3).map(|s| event("order-1", s)).collect()).await;
    let channel = server.channel().await;
    let mut rejected = 0;
    for rpc in rpcs() {
        for (what, bytes) in junk() {
            let context = (rpc, what);
            let answer = call_raw(&channel, rpc, vec![bytes.clone()]).await;
            if rpc.name == "QueryEvents" {
                let status = answer.expect_err("QueryEvents is not supported");
                assert_axon_error(&status, Code::Unimplemented, "AXONIQ-1002", &context);
            } else if (rpc.decodes)(&bytes) {
                // A valid message after all: any answer but a server fault.
                if let Err(status) = answer {
                    assert!(
                        !matches!(status.code(), Code::Internal | Code::Unknown | Code::DataLoss),
                        "{context:?}: {status:?}"
                    );
                }
            } else {
                let status = answer.expect_err("malformed");
                assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &context);
                assert!(status.message().contains("malformed"), "{context:?}: {status:?}");
                rejected += 1;
            }
        }
    }
    assert!(rejected >= 100, "only {rejected} rejections");

    // Malformed after well-formed messages on the same stream.
    let good: Vec<Bytes> = (3..5).map(|s| event("order-1", s).encode_to_vec().into()).collect();
    for (what, bytes) in junk().into_iter().filter(|(_, b)| !decodes::<Event>(b)) {
        let mut messages = good.clone();
        messages.push(bytes);
        let status = call_raw(&channel, rpc("AppendEvent"), messages)
            .await
            .expect_err("a transaction with a malformed event");
        assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &what);
    }
    for (what, bytes) in junk().into_iter().filter(|(_, b)| !decodes::<GetEventsRequest>(b)) {
        let messages = vec![open(0, 100).encode_to_vec().into(), bytes];
        let status = call_raw(&channel, rpc("ListEvents"), messages)
            .await
            .expect_err("a tracking stream with a malformed request");
        assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &what);
    }
    // The server still serves, on the same connection and a new one.
    assert_eq!(highest(&mut client, "order-1").await, 2);
    let mut fresh = server.event_store().await;
    append_ok(&mut fresh, &mut written, vec![event("order-1", 3)]).await;
    assert_store_is(&mut client, &written).await;
    server.stop().await;
}

/// AppendEvent's answer is written by Myelin itself (not tonic's encoder), so its wire form is
/// pinned here: what tonic sent — HTTP 200, `content-type: application/grpc` and no
/// `content-length`, one `ConfirmationWithConsistencyMarker { success: true }`, `grpc-status: 0`
/// in the trailers. The transaction comes in DATA frames of 7 bytes, cut mid-message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_event_answers_on_the_wire_as_tonic_did() {
    let server = start().await;
    let address = server.address;
    let mut h2 = h2_connect(address).await;
    let append_path = format!("/{EVENT_STORE}/AppendEvent");
    let wire: Vec<u8> = (0..3)
        .flat_map(|sequence| frame(0, &event("wire-1", sequence).encode_to_vec()).to_vec())
        .collect();
    let (response, mut body) = h2.open(address, &append_path, &[]).await;
    for piece in wire.chunks(7) {
        body.send_data(Bytes::copy_from_slice(piece), false).expect("send");
    }
    body.send_data(Bytes::new(), true).expect("half-close");
    let response = timed("append answer", response).await.expect("an HTTP/2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..])
    );
    assert!(
        response.headers().get("content-length").is_none(),
        "{:?}",
        response.headers()
    );
    assert!(
        response.headers().get("grpc-status").is_none(),
        "not a trailers-only answer"
    );
    let mut reply = response.into_body();
    let data = h2_data(&mut reply).await;
    let confirmation = ConfirmationWithConsistencyMarker {
        success: true,
        consistency_marker: None,
    };
    assert_eq!(data, frame(0, &confirmation.encode_to_vec()).to_vec());
    let trailers = reply.trailers().await.expect("trailers").expect("trailers sent");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    let mut client = server.event_store().await;
    assert_eq!(highest(&mut client, "wire-1").await, 2, "all three events stored");
    server.stop().await;
}

/// gRPC framing no library would send, by hand over HTTP/2: every call gets a status promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_frames_get_a_clear_status() {
    let server = start().await;
    let address = server.address;
    let mut client = server.event_store().await;
    let mut written = Vec::new();
    append_ok(&mut client, &mut written, vec![event("order-1", 0)]).await;
    let mut h2 = h2_connect(address).await;
    let append_path = format!("/{EVENT_STORE}/AppendEvent");
    let valid = event("order-1", 1).encode_to_vec();

    // Compressed flag without a grpc-encoding: the gRPC spec says INTERNAL, naming the flag.
    for path in [append_path.clone(), format!("/{EVENT_STORE}/GetLastToken")] {
        let (response, mut body) = h2.open(address, &path, &[]).await;
        body.send_data(frame(1, &valid), true).expect("send");
        let (status, _) = timed(&path, h2_status(response)).await;
        assert_eq!(status.code(), Code::Internal, "{path}: {status:?}");
        assert!(status.message().contains("compressed-flag"), "{path}: {status:?}");
    }
    // A flag that is neither 0 nor 1.
    for path in [append_path.clone(), format!("/{EVENT_STORE}/GetTokenAt")] {
        let (response, mut body) = h2.open(address, &path, &[]).await;
        body.send_data(frame(7, &valid), true).expect("send");
        let (status, _) = timed(&path, h2_status(response)).await;
        assert_eq!(status.code(), Code::Internal, "{path}: {status:?}");
        assert!(status.message().contains("compression flag"), "{path}: {status:?}");
    }
    // A compression the server does not speak.
    let (response, mut body) = h2.open(address, &append_path, &[("grpc-encoding", "br")]).await;
    body.send_data(frame(1, &valid), true).expect("send");
    let (status, _) = timed("grpc-encoding br", h2_status(response)).await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // The stream ends inside a message: the message is incomplete, so it is malformed input.
    for path in [
        append_path.clone(),
        format!("/{EVENT_STORE}/ListEvents"),
        format!("/{EVENT_STORE}/GetLastToken"),
        format!("/{EVENT_STORE}/ListAggregateEvents"),
        format!("/{PLATFORM}/OpenStream"),
    ] {
        let whole = frame(0, &valid);
        let (response, mut body) = h2.open(address, &path, &[]).await;
        body.send_data(whole.slice(..whole.len() - 3), true).expect("send");
        let (status, _) = timed(&path, h2_status(response)).await;
        assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &path);
        // Half a length prefix.
        let (response, mut body) = h2.open(address, &path, &[]).await;
        body.send_data(Bytes::from_static(&[0, 0, 0]), true).expect("send");
        let (status, _) = timed(&path, h2_status(response)).await;
        assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &path);
    }
    // A unary call without its request message.
    for name in [
        "GetLastToken",
        "AppendSnapshot",
        "ListAggregateEvents",
        "GetPlatformServer",
    ] {
        let service = if name == "GetPlatformServer" {
            PLATFORM
        } else {
            EVENT_STORE
        };
        let path = format!("/{service}/{name}");
        let (response, mut body) = h2.open(address, &path, &[]).await;
        body.send_data(Bytes::new(), true).expect("send");
        let (status, _) = timed(&path, h2_status(response)).await;
        assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &path);
    }
    // A length prefix of 4 GiB - 1 whose bytes never come, on a stream left open: refused
    // from the prefix alone, at once.
    for name in ["AppendEvent", "ListEvents", "AppendSnapshot", "GetTokenAt"] {
        let path = format!("/{EVENT_STORE}/{name}");
        let (response, mut body) = h2.open(address, &path, &[]).await;
        body.send_data(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]), false)
            .expect("send");
        let (status, _) = timed(&path, h2_status(response)).await;
        assert_axon_error(&status, Code::ResourceExhausted, "AXONIQ-2001", &path);
        drop(body);
    }
    // Unknown rpcs and services.
    for path in [
        format!("/{EVENT_STORE}/NoSuchRpc"),
        format!("/{EVENT_STORE}/"),
        "/io.axoniq.axonserver.grpc.NoSuchService/Call".to_string(),
        "/".to_string(),
    ] {
        let (response, mut body) = h2.open(address, &path, &[]).await;
        body.send_data(frame(0, &valid), true).expect("send");
        let (status, _) = timed(&path, h2_status(response)).await;
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
    // Two messages on a unary call: the first is the request (as grpc-java and tonic do), the
    // second is read and dropped; a malformed second one is refused like any malformed input.
    let path = format!("/{EVENT_STORE}/AppendSnapshot");
    let (response, mut body) = h2.open(address, &path, &[]).await;
    let mut two = BytesMut::new();
    two.put(frame(0, &snapshot("order-1", 0).encode_to_vec()));
    two.put(frame(0, &[0x0f, 0x01]));
    body.send_data(two.freeze(), true).expect("send");
    let (status, _) = timed(&path, h2_status(response)).await;
    assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &path);

    // Nothing above changed anything; the connection and the server still serve.
    let (response, mut body) = h2.open(address, &format!("/{EVENT_STORE}/GetLastToken"), &[]).await;
    body.send_data(frame(0, &[]), true).expect("send");
    let (status, reply) = timed("GetLastToken", h2_status(response)).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    let reply = myelin_proto::grpc::event::TrackingToken::decode(&reply[5..]).expect("TrackingToken");
    assert_eq!(reply.token, 0);
    let no_snapshots = client
        .list_aggregate_snapshots(GetAggregateSnapshotsRequest {
            aggregate_id: "order-1".into(),
            max_sequence: i64::MAX,
            ..Default::default()
        })
        .await
        .expect("ListAggregateSnapshots")
        .into_inner();
    let snapshots: Vec<Event> = timed("snapshots", async {
        let mut stream = no_snapshots;
        let mut out = Vec::new();
        while let Some(s) = stream.message().await.expect("snapshot") {
            out.push(s);
        }
        out
    })
    .await;
    assert!(snapshots.is_empty(), "no snapshot was stored: {snapshots:?}");
    assert_store_is(&mut client, &written).await;
    h2.driver.abort();
    server.stop().await;
}

// --- invalid UTF-8 ----------------------------------------------------------------------------

/// Byte sequences that are not UTF-8, each 4 bytes long (the length of the markers they
/// replace, so every length prefix stays right).
const NOT_UTF8: [(&str, [u8; 4]); 6] = [
    ("0xff bytes", [0xff, 0xfe, 0xfd, 0xfc]),
    ("overlong '/'", [0xc0, 0xaf, b'a', b'a']),
    ("UTF-16 surrogate", [0xed, 0xa0, 0x80, b'a']),
    ("above U+10FFFF", [0xf4, 0x90, 0x80, 0x80]),
    ("lone continuation byte", [b'a', 0x80, b'a', b'a']),
    ("cut-off sequence", [b'a', b'a', b'a', 0xe2]),
];

/// Replaces the one occurrence of `marker` in `bytes` with `with` (same length).
fn replace_marker(bytes: &[u8], marker: &str, with: &[u8; 4]) -> Bytes {
    assert_eq!(marker.len(), 4);
    let at: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == marker.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "marker {marker} occurs once");
    let mut out = bytes.to_vec();
    out[at[0]..at[0] + 4].copy_from_slice(with);
    out.into()
}

/// An event whose every string field holds a distinct 4-byte marker.
fn marked_event() -> Event {
    let mut meta_data = std::collections::HashMap::new();
    meta_data.insert(
        "MKEY".to_string(),
        MetaDataValue {
            data: Some(meta_data_value::Data::TextValue("MTXT".into())),
        },
    );
    meta_data.insert(
        "blob".to_string(),
        MetaDataValue {
            data: Some(meta_data_value::Data::BytesValue(SerializedObject {
                r#type: "MBTY".into(),
                revision: "MBRV".into(),
                data: vec![0xff, 0xfe],
            })),
        },
    );
    Event {
        message_identifier: "MSID".into(),
        aggregate_identifier: "AGID".into(),
        aggregate_sequence_number: 0,
        aggregate_type: "AGTY".into(),
        timestamp: 1,
        payload: Some(SerializedObject {
            r#type: "PLTY".into(),
            revision: "PLRV".into(),
            // Bytes fields may hold anything: not a UTF-8 question.
            data: vec![0xff, 0xfe, 0xc0, 0xaf],
        }),
        meta_data,
        snapshot: false,
    }
}

const EVENT_MARKERS: [&str; 9] = ["MSID", "AGID", "AGTY", "PLTY", "PLRV", "MKEY", "MTXT", "MBTY", "MBRV"];

/// Protobuf strings must be UTF-8: an event or request with a string field that is not is
/// refused with INVALID_ARGUMENT (AXONIQ-0001), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_string_fields_is_refused() {
    let server = start().await;
    let mut client = server.event_store().await;
    let channel = server.channel().await;
    let mut written = Vec::new();
    // The marked event itself is fine (bytes fields hold non-UTF-8), and stored.
    append_ok(&mut client, &mut written, vec![marked_event()]).await;
    let marked = marked_event().encode_to_vec();
    let mut refused = 0;
    for marker in EVENT_MARKERS {
        for (what, bad) in NOT_UTF8 {
            let context = (marker, what);
            let bytes = replace_marker(&marked, marker, &bad);
            assert!(!decodes::<Event>(&bytes), "{context:?}");
            // Alone, and after a valid event of the same transaction.
            let good: Bytes = event("order-1", 0).encode_to_vec().into();
            for messages in [vec![bytes.clone()], vec![good, bytes.clone()]] {
                let status = call_raw(&channel, rpc("AppendEvent"), messages)
                    .await
                    .expect_err("not UTF-8");
                assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &context);
                assert!(status.message().contains("UTF-8"), "{context:?}: {status:?}");
                refused += 1;
            }
            let status = call_raw(&channel, rpc("AppendSnapshot"), vec![bytes])
                .await
                .expect_err("not UTF-8");
            assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &context);
            refused += 1;
        }
    }
    // Requests: every string field a read request carries.
    let requests: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "ListAggregateEvents",
            GetAggregateEventsRequest {
                aggregate_id: "AGID".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            "AGID",
        ),
        (
            "ListAggregateSnapshots",
            GetAggregateSnapshotsRequest {
                aggregate_id: "AGID".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            "AGID",
        ),
        (
            "ReadHighestSequenceNr",
            ReadHighestSequenceNrRequest {
                aggregate_id: "AGID".into(),
                from_sequence_nr: 0,
            }
            .encode_to_vec(),
            "AGID",
        ),
        (
            "ListEvents",
            GetEventsRequest {
                client_id: "CLID".into(),
                ..open(0, 10)
            }
            .encode_to_vec(),
            "CLID",
        ),
        (
            "ListEvents",
            GetEventsRequest {
                blacklist: vec![PayloadDescription {
                    r#type: "BLTY".into(),
                    revision: String::new(),
                }],
                ..open(0, 10)
            }
            .encode_to_vec(),
            "BLTY",
        ),
        (
            "GetPlatformServer",
            ClientIdentification {
                client_id: "CLID".into(),
                component_name: "c".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            "CLID",
        ),
    ];
    for (name, request, marker) in requests {
        for (what, bad) in NOT_UTF8 {
            let context = (name, marker, what);
            let bytes = replace_marker(&request, marker, &bad);
            let status = call_raw(&channel, rpc(name), vec![bytes]).await.expect_err("not UTF-8");
            assert_axon_error(&status, Code::InvalidArgument, "AXONIQ-0001", &context);
            refused += 1;
        }
    }
    assert_eq!(refused, 9 * 6 * 3 + 6 * 6);
    assert_eq!(highest(&mut client, "order-1").await, -1, "nothing of order-1 stored");
    assert_store_is(&mut client, &written).await;
    server.stop().await;
}

// --- oversized messages -----------------------------------------------------------------------

/// A message over `axoniq.axonserver.max-message-size` is refused on every rpc with
/// RESOURCE_EXHAUSTED and AXONIQ-2001 (tonic's own code, OUT_OF_RANGE, would read to an Axon
/// client as a sequence error); one of exactly the limit is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_resource_exhausted_on_every_rpc() {
    const LIMIT: usize = 64 * 1024;
    let config = GrpcConfig {
        limits: EventStoreLimits {
            max_message_bytes: LIMIT,
            ..EventStoreLimits::default()
        },
        ..GrpcConfig::default()
    };
    let server = start_with(config, &["default"]).await;
    let mut client = server.event_store().await;
    let channel = server.channel().await;
    let mut written = Vec::new();
    append_ok(&mut client, &mut written, vec![event("order-1", 0)]).await;
    for rpc in rpcs().into_iter().filter(|r| r.name != "QueryEvents") {
        for size in [LIMIT + 1, LIMIT + 1000, 2 * LIMIT, 1024 * 1024] {
            let big = request_of_size(rpc, size);
            let status = call_raw(&channel, rpc, vec![big.clone()]).await.expect_err("too large");
            assert_axon_error(&status, Code::ResourceExhausted, "AXONIQ-2001", &(rpc, size));
            if matches!(rpc.shape, Shape::ClientStreaming | Shape::Bidi) {
                // After a valid first message too.
                let first = request_of_size(rpc, 100);
                let status = call_raw(&channel, rpc, vec![first, big]).await.expect_err("too large");
                assert_axon_error(&status, Code::ResourceExhausted, "AXONIQ-2001", &(rpc, size));
            }
        }
    }
    // Exactly at the limit: served.
    let at_limit = request_of_size(rpc("GetLastToken"), LIMIT);
    let reply = call_raw(&channel, rpc("GetLastToken"), vec![at_limit])
        .await
        .expect("a message of exactly the limit");
    assert_eq!(reply.len(), 1);
    let fits = request_of_size(rpc("AppendEvent"), LIMIT);
    let fits_event = Event::decode(fits.as_ref()).expect("an Event");
    call_raw(&channel, rpc("AppendEvent"), vec![fits])
        .await
        .expect("an event of exactly the limit");
    written.push(fits_event);
    assert_store_is(&mut client, &written).await;
    server.stop().await;
}

// --- absurd numbers ---------------------------------------------------------------------------

async fn list_aggregate(client: &mut EventStoreClient<Channel>, request: GetAggregateEventsRequest) -> Vec<i64> {
    let context = format!("{request:?}");
    let context = &context[..context.len().min(200)];
    timed(context, async {
        let mut stream = client
            .list_aggregate_events(request)
            .await
            .expect("ListAggregateEvents")
            .into_inner();
        let mut sequences = Vec::new();
        while let Some(event) = stream.message().await.expect("an event") {
            sequences.push(event.aggregate_sequence_number);
        }
        sequences
    })
    .await
}

async fn list_snapshots(client: &mut EventStoreClient<Channel>, request: GetAggregateSnapshotsRequest) -> Vec<i64> {
    timed(format!("{request:?}"), async {
        let mut stream = client
            .list_aggregate_snapshots(request)
            .await
            .expect("ListAggregateSnapshots")
            .into_inner();
        let mut sequences = Vec::new();
        while let Some(event) = stream.message().await.expect("a snapshot") {
            sequences.push(event.aggregate_sequence_number);
        }
        sequences
    })
    .await
}

async fn token_at(client: &mut EventStoreClient<Channel>, instant: i64) -> i64 {
    timed(
        ("GetTokenAt", instant),
        client.get_token_at(GetTokenAtRequest { instant }),
    )
    .await
    .expect("GetTokenAt")
    .into_inner()
    .token
}

/// A tracking stream fed by hand.
struct Tracker {
    requests: tokio::sync::mpsc::Sender<GetEventsRequest>,
    stream: Streaming<EventWithToken>,
}

impl Tracker {
    async fn open(client: &mut EventStoreClient<Channel>, first: GetEventsRequest) -> Tracker {
        let (requests, stream) = request_stream();
        requests.send(first).await.expect("send");
        let stream = timed("ListEvents", client.list_events(stream))
            .await
            .expect("ListEvents opens")
            .into_inner();
        Tracker { requests, stream }
    }

    async fn more(&self, permits: i64) {
        self.requests
            .send(GetEventsRequest {
                number_of_permits: permits,
                ..Default::default()
            })
            .await
            .expect("send");
    }

    async fn tokens(&mut self, count: usize) -> Vec<i64> {
        let mut tokens = Vec::with_capacity(count);
        for _ in 0..count {
            let event = timed("a tracked event", self.stream.message())
                .await
                .expect("no error")
                .expect("stream open");
            tokens.push(event.token);
        }
        tokens
    }

    async fn assert_quiet(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.stream.message()).await {
            panic!("expected nothing, got {message:?}");
        }
    }

    /// Half-closes: the stream must end with OK, sending nothing more.
    async fn close(self) {
        let Tracker { requests, mut stream } = self;
        drop(requests);
        let end = timed("half-closed ListEvents", stream.message())
            .await
            .expect("ends with OK");
        assert!(end.is_none(), "{end:?}");
    }
}

/// Permits of 0, negative and i64::MAX; tokens of i64::MIN, -1, i64::MAX and far past the head;
/// absurd instants, sequences, ids and limits: each gets AXON_COMPAT's semantics or a clear
/// error, never a hang or a server fault, and nothing but the well-formed appends is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_numbers_get_the_documented_answers() {
    let server = start().await;
    let mut client = server.event_store().await;
    let mut written = Vec::new();
    for s in 0..10 {
        append_ok(&mut client, &mut written, vec![event("order-1", s)]).await;
    }
    append_ok(
        &mut client,
        &mut written,
        (0..5).map(|n| loose_event("Tick", n)).collect(),
    )
    .await;
    timed("AppendSnapshot", client.append_snapshot(snapshot("order-1", 4)))
        .await
        .expect("snapshot");
    let head = last_token(&mut client).await + 1;
    assert_eq!(head, 15);

    // --- ListEvents permits: 0 and negative grant nothing (and take nothing back); the
    // stream waits; huge ones saturate.
    for permits in [0, -1, i64::MIN] {
        let mut tracker = Tracker::open(&mut client, open(0, permits)).await;
        tracker.assert_quiet().await;
        tracker.more(2).await;
        assert_eq!(tracker.tokens(2).await, vec![0, 1], "permits {permits}");
        tracker.more(permits).await;
        tracker.more(1).await;
        assert_eq!(tracker.tokens(1).await, vec![2], "permits {permits}");
        tracker.assert_quiet().await;
        tracker.close().await;
    }
    let mut tracker = Tracker::open(&mut client, open(0, i64::MAX)).await;
    assert_eq!(tracker.tokens(15).await, (0..15).collect::<Vec<_>>());
    tracker.more(i64::MAX).await;
    tracker.more(i64::MAX).await;
    tracker.assert_quiet().await;
    append_ok(&mut client, &mut written, vec![loose_event("Tick", 5)]).await;
    assert_eq!(tracker.tokens(1).await, vec![15], "tails with saturated permits");
    tracker.close().await;

    // --- ListEvents tokens: negative means the first token; past the head means waiting for
    // that token (a tracking stream tails), and sends nothing before it.
    for token in [i64::MIN, -1, -1_000_000_000_000] {
        let mut tracker = Tracker::open(&mut client, open(token, 3)).await;
        assert_eq!(tracker.tokens(3).await, vec![0, 1, 2], "token {token}");
        tracker.close().await;
    }
    let head = last_token(&mut client).await + 1;
    let mut at_head = Tracker::open(&mut client, open(head, 10)).await;
    let mut far = Vec::new();
    for token in [head + 1, head + 1_000_000_000_000, i64::MAX - 1, i64::MAX] {
        far.push(Tracker::open(&mut client, open(token, i64::MAX)).await);
    }
    at_head.assert_quiet().await;
    append_ok(&mut client, &mut written, vec![loose_event("Tick", 6)]).await;
    assert_eq!(at_head.tokens(1).await, vec![head]);
    at_head.close().await;
    for mut tracker in far {
        tracker.assert_quiet().await;
        tracker.close().await;
    }
    // Later requests' tokens are ignored, however absurd.
    let mut tracker = Tracker::open(&mut client, open(0, 1)).await;
    assert_eq!(tracker.tokens(1).await, vec![0]);
    for token in [i64::MIN, i64::MAX] {
        tracker.requests.send(open(token, 1)).await.expect("send");
    }
    assert_eq!(tracker.tokens(2).await, vec![1, 2]);
    tracker.close().await;

    // --- GetTokenAt: before everything, the first token; after everything, the next token.
    let head = last_token(&mut client).await + 1;
    for instant in [i64::MIN, -1, 0, 1] {
        assert_eq!(token_at(&mut client, instant).await, 0, "instant {instant}");
    }
    assert_eq!(token_at(&mut client, i64::MAX).await, head);
    assert_eq!(token_at(&mut client, i64::MAX - 1).await, head);

    // --- ListAggregateEvents: sequences and tokens of any size.
    let all: Vec<i64> = (0..10).collect();
    let request = |initial_sequence, max_sequence| GetAggregateEventsRequest {
        aggregate_id: "order-1".into(),
        initial_sequence,
        max_sequence,
        ..Default::default()
    };
    for (initial, max, expected) in [
        (i64::MIN, 0, all.clone()),
        (-1, -1, all.clone()),
        (0, i64::MIN, all.clone()),
        (0, i64::MAX, all.clone()),
        (i64::MIN, i64::MAX, all.clone()),
        (5, i64::MAX, (5..10).collect()),
        (i64::MAX, 0, vec![]),
        (i64::MAX, i64::MAX, vec![]),
        (7, 3, vec![]),
        (3, 3, vec![3]),
        (10, 0, vec![]),
    ] {
        let got = list_aggregate(&mut client, request(initial, max)).await;
        assert_eq!(got, expected, "initial {initial}, max {max}");
    }
    for min_token in [i64::MIN, -1, 0] {
        let got = list_aggregate(
            &mut client,
            GetAggregateEventsRequest {
                min_token,
                ..request(0, 0)
            },
        )
        .await;
        assert_eq!(got, all, "min_token {min_token}");
    }
    // min_token only lets the search skip closed segments that end before it: a hint, so a
    // huge one answers the events of the segments it cannot rule out, in order.
    for min_token in [i64::MAX, 1_000_000_000_000] {
        let got = list_aggregate(
            &mut client,
            GetAggregateEventsRequest {
                min_token,
                ..request(0, 0)
            },
        )
        .await;
        assert!(all.ends_with(&got), "min_token {min_token}: {got:?}");
    }
    for (initial, expected) in [(i64::MIN, vec![4, 5, 6, 7, 8, 9]), (i64::MAX, vec![])] {
        let got = list_aggregate(
            &mut client,
            GetAggregateEventsRequest {
                allow_snapshots: true,
                ..request(initial, i64::MAX)
            },
        )
        .await;
        assert_eq!(got, expected, "with snapshots from {initial}");
    }

    // --- ListAggregateSnapshots: max_results <= 0 is unlimited, max_sequence <= 0 is nothing.
    let snapshots = |initial_sequence, max_sequence, max_results| GetAggregateSnapshotsRequest {
        aggregate_id: "order-1".into(),
        initial_sequence,
        max_sequence,
        max_results,
    };
    for (initial, max, results, expected) in [
        (i64::MIN, i64::MAX, i32::MIN, vec![4]),
        (0, i64::MAX, -1, vec![4]),
        (0, i64::MAX, i32::MAX, vec![4]),
        (i64::MAX, i64::MAX, 0, vec![]),
        (0, 0, 0, vec![]),
        (0, i64::MIN, 0, vec![]),
        (0, -1, 10, vec![]),
        (5, 4, 10, vec![]),
    ] {
        let got = list_snapshots(&mut client, snapshots(initial, max, results)).await;
        assert_eq!(got, expected, "snapshots {initial}..{max}, {results} results");
    }

    // --- ReadHighestSequenceNr: ids of any shape are just unknown aggregates.
    let huge_id = "x".repeat(3 * 1024 * 1024);
    for id in ["", "\0", "../../etc/passwd", "漢字 ✓", huge_id.as_str()] {
        assert_eq!(highest(&mut client, id).await, -1, "id of {} bytes", id.len());
        let got = list_aggregate(
            &mut client,
            GetAggregateEventsRequest {
                aggregate_id: id.to_string(),
                ..Default::default()
            },
        )
        .await;
        assert!(got.is_empty());
    }
    for from_sequence_nr in [i64::MIN, -1, i64::MAX] {
        let got = timed(
            "ReadHighestSequenceNr",
            client.read_highest_sequence_nr(ReadHighestSequenceNrRequest {
                aggregate_id: "order-1".into(),
                from_sequence_nr,
            }),
        )
        .await
        .expect("ReadHighestSequenceNr")
        .into_inner()
        .to_sequence_nr;
        assert_eq!(got, 9, "from {from_sequence_nr}");
    }

    // --- QueryEvents: unsupported, whatever is asked.
    for request in [
        QueryEventsRequest::default(),
        QueryEventsRequest {
            query: "aggregateIdentifier = \"x\" | limit(9223372036854775807)".into(),
            number_of_permits: i64::MIN,
            live_events: true,
            ..Default::default()
        },
        QueryEventsRequest {
            query: "\0".repeat(100_000),
            number_of_permits: i64::MAX,
            ..Default::default()
        },
    ] {
        let status = timed("QueryEvents", client.query_events(tokio_stream::iter(vec![request])))
            .await
            .expect_err("unsupported");
        assert_axon_error(&status, Code::Unimplemented, "AXONIQ-1002", &"QueryEvents");
    }

    // --- Context headers naming no context (paths, huge, empty): NOT_FOUND with AXONIQ-6000,
    // or the default context for an empty one.
    let long_context = "c".repeat(8 * 1024);
    for context in [
        "..",
        "../../etc",
        "/",
        "default/../default",
        "DEFAULT",
        long_context.as_str(),
    ] {
        for header in ["axoniq-context", "context"] {
            let mut request = Request::new(GetLastTokenRequest {});
            request
                .metadata_mut()
                .insert(header, context.parse().expect("ASCII metadata"));
            let status = timed(("context", header), client.get_last_token(request))
                .await
                .expect_err("no such context");
            assert_axon_error(
                &status,
                Code::NotFound,
                "AXONIQ-6000",
                &(header, &context[..context.len().min(20)]),
            );
        }
    }
    let mut request = Request::new(GetLastTokenRequest {});
    request
        .metadata_mut()
        .insert("axoniq-context", "".parse().expect("empty"));
    let last = timed("empty context", client.get_last_token(request))
        .await
        .expect("the default context")
        .into_inner()
        .token;
    assert_eq!(last, last_token(&mut client).await);
    // A megabyte of headers: HTTP/2 itself refuses it (h2 answers the CONTINUATION flood with
    // GOAWAY ENHANCE_YOUR_CALM, ending that connection); the client reconnects and goes on.
    let mut request = Request::new(GetLastTokenRequest {});
    let huge = "h".repeat(1024 * 1024);
    request
        .metadata_mut()
        .insert("axoniq-context", huge.parse().expect("ASCII metadata"));
    let status = timed("huge headers", client.get_last_token(request))
        .await
        .expect_err("headers too large");
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(last_token(&mut client).await, last);

    // --- Appends with absurd sequence numbers and snapshots beyond the events: refused whole.
    for (aggregate, sequences) in [
        ("order-1", vec![i64::MAX]),
        ("order-1", vec![i64::MIN]),
        ("order-1", vec![-1]),
        ("order-1", vec![10 + 1_000_000_000_000]),
        ("order-1", vec![10, i64::MAX]),
        ("order-1", vec![10, 11, 11]),
        ("fresh", vec![-1]),
        ("fresh", vec![i64::MIN]),
        ("fresh", vec![1]),
        ("fresh", vec![0, i64::MIN]),
    ] {
        let events = sequences
            .iter()
            .map(|s| Event {
                aggregate_sequence_number: *s,
                ..event(aggregate, 0)
            })
            .collect();
        let status = timed("AppendEvent", append(&mut client, events))
            .await
            .expect_err("bad sequence");
        assert_axon_error(&status, Code::OutOfRange, "AXONIQ-2000", &(aggregate, &sequences));
    }
    for sequence in [10, i64::MAX] {
        let beyond = Event {
            aggregate_sequence_number: sequence,
            ..snapshot("order-1", 0)
        };
        let status = timed("AppendSnapshot", client.append_snapshot(beyond))
            .await
            .expect_err("beyond the events");
        assert_axon_error(&status, Code::OutOfRange, "AXONIQ-2000", &sequence);
    }
    assert_eq!(highest(&mut client, "fresh").await, -1);
    assert_eq!(highest(&mut client, "order-1").await, 9);
    assert_eq!(
        list_snapshots(&mut client, snapshots(0, i64::MAX, 0)).await,
        vec![4],
        "no snapshot stored by the refused ones"
    );
    assert_store_is(&mut client, &written).await;
    server.stop().await;
}

// --- thousands of abandoned streams -----------------------------------------------------------

const ABANDON_CONNECTIONS: usize = 20;
/// Per connection, of each kind (ListEvents and AppendEvent).
const ABANDON_STREAMS_PER_CONNECTION: usize = 100;

/// How a connection's streams are abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandon {
    /// RST_STREAM(CANCEL) on each stream, then the connection is dropped.
    ResetStreams,
    /// The TCP connection is reset (SO_LINGER 0): no GOAWAY, no RST_STREAM.
    ResetConnection,
    /// The socket is closed (FIN) without GOAWAY.
    CloseSocket,
}

/// Thousands of ListEvents and AppendEvent streams, opened (some events sent on each append,
/// trackers granted unlimited permits but never read), then abandoned: by stream resets, by
/// TCP resets and by closed sockets. Afterwards every tracking stream and every task is gone,
/// nothing of the abandoned appends is stored, and the server serves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_abandoned_streams_are_released() {
    let server = start().await;
    let address = server.address;
    let mut client = server.event_store().await;
    let mut written = Vec::new();
    // Enough events that unread trackers fill their flow-control windows.
    for chunk in 0..4 {
        let events = (0..25).map(|s| event("order-1", chunk * 25 + s)).collect();
        append_ok(&mut client, &mut written, events).await;
    }
    let context = server.contexts.get("default").expect("context");
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline_tasks = metrics.num_alive_tasks();

    let mut connections = Vec::new();
    for c in 0..ABANDON_CONNECTIONS {
        let tcp = TcpStream::connect(address).await.expect("connect");
        let how = [Abandon::ResetStreams, Abandon::ResetConnection, Abandon::CloseSocket][c % 3];
        if how == Abandon::ResetConnection {
            tcp.set_zero_linger().expect("SO_LINGER 0");
        }
        let mut h2 = h2_handshake(tcp).await;
        let mut calls = Vec::new();
        for s in 0..ABANDON_STREAMS_PER_CONNECTION {
            let (response, mut body) = h2.open(address, &format!("/{EVENT_STORE}/ListEvents"), &[]).await;
            body.send_data(frame(0, &open(0, i64::MAX).encode_to_vec()), false)
                .expect("send");
            calls.push((response, body));
            let (response, mut body) = h2.open(address, &format!("/{EVENT_STORE}/AppendEvent"), &[]).await;
            let aggregate = format!("abandoned-{c}-{s}");
            let mut events = BytesMut::new();
            for sequence in 0..3 {
                events.put(frame(0, &event(&aggregate, sequence).encode_to_vec()));
            }
            body.send_data(events.freeze(), false).expect("send");
            calls.push((response, body));
        }
        connections.push((how, h2, calls));
    }
    let streams = ABANDON_CONNECTIONS * ABANDON_STREAMS_PER_CONNECTION;
    // Every stream reached the server: each tracker is counted, and each call runs as a task
    // (plus a task per tracker).
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    while context.tracking_streams() < streams || metrics.num_alive_tasks() < baseline_tasks + 3 * streams {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {streams} trackers open, {} tasks over the baseline of {baseline_tasks}",
            context.tracking_streams(),
            metrics.num_alive_tasks().saturating_sub(baseline_tasks)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Appends wait for their half-close, which never comes: nothing is stored yet.
    assert_eq!(last_token(&mut client).await, 99);

    for (how, h2, calls) in connections {
        match how {
            Abandon::ResetStreams => {
                // Dropping a call's handles resets its stream; with every handle gone the
                // connection then ends by itself.
                drop(calls);
                drop(h2.send);
                timed("the connection to end", h2.driver).await.expect("driver");
            }
            Abandon::ResetConnection | Abandon::CloseSocket => {
                // The connection is dropped unpolled: no GOAWAY, no RST_STREAM, just the socket.
                h2.driver.abort();
                let _ = h2.driver.await;
                drop(calls);
                drop(h2.send);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    while context.tracking_streams() > 0 || metrics.num_alive_tasks() > baseline_tasks + 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} trackers and {} tasks over the baseline of {baseline_tasks} still alive",
            context.tracking_streams(),
            metrics.num_alive_tasks().saturating_sub(baseline_tasks)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing of the abandoned appends, and the server serves as before.
    for aggregate in ["abandoned-0-0", "abandoned-1-50", "abandoned-19-99"] {
        assert_eq!(highest(&mut client, aggregate).await, -1, "{aggregate}");
    }
    let mut fresh = server.event_store().await;
    append_ok(&mut fresh, &mut written, vec![event("order-1", 100)]).await;
    let mut tracker = Tracker::open(&mut fresh, open(100, 1)).await;
    assert_eq!(tracker.tokens(1).await, vec![100]);
    tracker.close().await;
    assert_store_is(&mut client, &written).await;
    server.stop().await;
}
