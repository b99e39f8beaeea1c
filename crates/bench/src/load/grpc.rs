//! The append path of the gRPC adapters, on the `h2` crate directly rather than through tonic.
//!
//! Why: the load generator shares the machine's CPUs with the server it measures. A tonic
//! call goes through the channel's buffer task, hyper's client and a task that pipes the
//! request body, each a wake-up and a thread hop; with 64 closed-loop clients on 2 vCPUs the
//! generator took as much CPU per transaction as the server did, and every store's appends
//! were bounded by the sum. Here a call is the client's own task writing HEADERS and one DATA
//! frame into the connection and reading the answer, with only the connection task besides.
//! The bytes on the wire are gRPC's, the same for every store: `POST` to `/<service>/<method>`
//! with `content-type: application/grpc` and `te: trailers`, each message prefixed by its
//! compressed flag (0) and its big-endian length, and the call's outcome in `grpc-status`.
//! Every gRPC store (Myelin, UmaDB) is driven through this same code.

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::net::TcpStream;

/// Bytes before each message: the compressed flag and the big-endian length.
const MESSAGE_HEADER_BYTES: usize = 5;
/// Receive windows large enough that a response is never held back by flow control.
const WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// One HTTP/2 connection to a gRPC server.
pub struct GrpcConnection {
    send: SendRequest<Bytes>,
    /// `http://host:port`, the scheme and authority every request carries.
    base: String,
}

impl GrpcConnection {
    /// Connects to `address` (`host:port`) and starts the connection's task.
    pub async fn connect(address: &str) -> Result<GrpcConnection> {
        let tcp = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await
            .with_context(|| format!("HTTP/2 handshake with {address}"))?;
        // Ends when the connection closes (the client dropped, or the server went away: the
        // next call then fails with the reason).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(GrpcConnection {
            send,
            base: format!("http://{address}"),
        })
    }

    /// The URI of `/<service>/<method>` on this connection's server.
    pub fn method_uri(&self, path: &str) -> Result<Uri> {
        format!("{}{path}", self.base)
            .parse()
            .with_context(|| format!("bad gRPC method path {path:?}"))
    }

    /// Sends `body` (messages framed by [`put_message`]) as the whole request stream and
    /// returns the single response message, decoded as `R`. Any status but OK is an error
    /// naming the gRPC status code and message.
    pub async fn call<R: Message + Default>(&mut self, uri: &Uri, body: Bytes) -> Result<R> {
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .context("HTTP/2 connection")?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(())
            .context("building the request")?;
        let (response, mut stream) = self.send.send_request(request, false).context("opening a stream")?;
        stream.send_data(body, true).context("sending the request")?;
        let response = response.await.context("waiting for the response headers")?;
        let (parts, mut received) = response.into_parts();
        ensure!(
            parts.status == StatusCode::OK,
            "HTTP status {} instead of 200",
            parts.status
        );
        // A trailers-only response (an error before any message) carries the status here.
        if parts.headers.contains_key("grpc-status") {
            check_status(&parts.headers)?;
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.context("reading the response")?;
            let _ = received.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = received
            .trailers()
            .await
            .context("reading the response trailers")?
            .unwrap_or_default();
        check_status(&trailers)?;
        let mut message = take_message(&mut data)?.ok_or_else(|| anyhow!("the response has no message"))?;
        ensure!(data.is_empty(), "the response has more than one message");
        R::decode(&mut message).context("decoding the response message")
    }
}

/// Appends `message` to `body` as one gRPC message (uncompressed).
pub fn put_message(body: &mut BytesMut, message: &impl Message) {
    let len = message.encoded_len();
    body.reserve(MESSAGE_HEADER_BYTES + len);
    body.put_u8(0);
    // Messages here are far below 4 GiB (the generator's events are at most 1 MiB each).
    body.put_u32(len as u32);
    // Cannot fail: the buffer was just reserved and grows anyway.
    let _ = message.encode(body);
}

/// Takes the next whole message off the front of `data`, if one is there.
fn take_message(data: &mut BytesMut) -> Result<Option<Bytes>> {
    if data.len() < MESSAGE_HEADER_BYTES {
        ensure!(data.is_empty(), "a truncated gRPC message header");
        return Ok(None);
    }
    let compressed = data[0];
    ensure!(compressed == 0, "a compressed response message (none was asked for)");
    let len = (&data[1..MESSAGE_HEADER_BYTES]).get_u32() as usize;
    ensure!(
        data.len() >= MESSAGE_HEADER_BYTES + len,
        "a truncated gRPC message: {len} bytes announced, {} there",
        data.len() - MESSAGE_HEADER_BYTES
    );
    data.advance(MESSAGE_HEADER_BYTES);
    Ok(Some(data.split_to(len).freeze()))
}

/// OK, or the status code and message the server sent.
fn check_status(headers: &HeaderMap) -> Result<()> {
    let code = headers
        .get("grpc-status")
        .ok_or_else(|| anyhow!("the response has no grpc-status"))?
        .to_str()
        .unwrap_or("?");
    if code == "0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    bail!("gRPC status {code}: {message}")
}

/// gRPC's `grpc-message` is percent-encoded UTF-8.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use myelin_proto::grpc::event::TrackingToken;

    use super::*;

    #[test]
    fn messages_are_framed_and_taken_back() {
        let mut body = BytesMut::new();
        put_message(&mut body, &TrackingToken { token: 300 });
        put_message(&mut body, &TrackingToken { token: 0 });
        assert_eq!(&body[..5], &[0, 0, 0, 0, 3]);
        let first = take_message(&mut body).expect("well formed").expect("a message");
        assert_eq!(TrackingToken::decode(first).expect("a token").token, 300);
        let second = take_message(&mut body).expect("well formed").expect("a message");
        assert!(second.is_empty());
        assert!(take_message(&mut body).expect("well formed").is_none());
    }

    #[test]
    fn truncated_and_compressed_messages_are_refused() {
        let mut short = BytesMut::from(&[0u8, 0, 0, 0, 9, 1, 2][..]);
        assert!(take_message(&mut short).is_err());
        let mut header = BytesMut::from(&[0u8, 0, 0][..]);
        assert!(take_message(&mut header).is_err());
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert!(take_message(&mut compressed).is_err());
    }

    #[test]
    fn status_messages_are_percent_decoded() {
        assert_eq!(percent_decode(b"[AXONIQ-2000] bad%20seq%25"), "[AXONIQ-2000] bad seq%");
        assert_eq!(percent_decode(b"50%"), "50%");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "3".parse().expect("ascii"));
        headers.insert("grpc-message", "no%20good".parse().expect("ascii"));
        assert_eq!(
            check_status(&headers).expect_err("status 3").to_string(),
            "gRPC status 3: no good"
        );
        headers.insert("grpc-status", "0".parse().expect("ascii"));
        assert!(check_status(&headers).is_ok());
    }
}
