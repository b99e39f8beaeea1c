//! The gRPC adapters' client, on the `h2` crate directly rather than through tonic.
//!
//! Why: the load generator shares the machine's CPUs with the server it measures. A tonic
//! call goes through the channel's buffer task, hyper's client and a task that pipes the
//! request body, each a wake-up and a thread hop; with 64 closed-loop clients on 2 vCPUs the
//! generator took as much CPU per transaction as the server did, and every store's appends
//! were bounded by the sum. Here a call is the client's own task writing HEADERS and DATA
//! frames into the connection and reading the answer, with only the connection task besides.
//! The bytes on the wire are gRPC's, the same for every store: `POST` to `/<service>/<method>`
//! with `content-type: application/grpc` and `te: trailers`, each message prefixed by its
//! compressed flag (0) and its big-endian length, and the call's outcome in `grpc-status`.
//! Every gRPC store (Myelin, UmaDB) is driven through this same code, and the adapters decode
//! of each response only what they check (a token, a position, a sequence number), each store
//! alike.

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
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

    /// Opens a call and sends `first` (messages framed by [`put_message`]); with
    /// `end_of_stream` the request stream ends there, else [`GrpcCall::send`] may add more.
    /// Fails when the server refuses the call outright.
    pub async fn open(&mut self, uri: &Uri, first: Bytes, end_of_stream: bool) -> Result<GrpcCall> {
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
        let (response, mut send) = self.send.send_request(request, false).context("opening a stream")?;
        send.send_data(first, end_of_stream).context("sending the request")?;
        let response = response.await.context("waiting for the response headers")?;
        let (parts, received) = response.into_parts();
        ensure!(
            parts.status == StatusCode::OK,
            "HTTP status {} instead of 200",
            parts.status
        );
        // A trailers-only response (an error, or OK with no message) carries the status here.
        let ended = parts.headers.contains_key("grpc-status");
        if ended {
            check_status(&parts.headers)?;
        }
        Ok(GrpcCall {
            send,
            received,
            buffer: BytesMut::new(),
            ended,
        })
    }

    /// Sends `body` as the whole request stream and returns the single response message,
    /// decoded as `R`. Any status but OK is an error naming the gRPC status code and message.
    pub async fn call<R: Message + Default>(&mut self, uri: &Uri, body: Bytes) -> Result<R> {
        let mut call = self.open(uri, body, true).await?;
        let mut message = call
            .next_message()
            .await?
            .ok_or_else(|| anyhow!("the response has no message"))?;
        ensure!(
            call.next_message().await?.is_none(),
            "the response has more than one message"
        );
        R::decode(&mut message).context("decoding the response message")
    }
}

/// One call in progress. Dropping it before the server ends the call cancels the call
/// (RST_STREAM), as a tonic client does when its response stream is dropped.
pub struct GrpcCall {
    send: SendStream<Bytes>,
    received: RecvStream,
    /// Received bytes not yet taken as whole messages.
    buffer: BytesMut,
    /// The server ended the call with OK.
    ended: bool,
}

impl GrpcCall {
    /// Sends more request messages on a call opened without `end_of_stream`.
    pub fn send(&mut self, body: Bytes) -> Result<()> {
        self.send
            .send_data(body, false)
            .context("sending on the request stream")
    }

    /// The next response message, or `None` once the server has ended the call with OK.
    pub async fn next_message(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(message) = take_message(&mut self.buffer)? {
                return Ok(Some(message));
            }
            if self.ended {
                ensure!(
                    self.buffer.is_empty(),
                    "the response ends inside a message ({} bytes left)",
                    self.buffer.len()
                );
                return Ok(None);
            }
            match self.received.data().await {
                Some(chunk) => {
                    let chunk = chunk.context("reading the response")?;
                    let _ = self.received.flow_control().release_capacity(chunk.len());
                    self.buffer.extend_from_slice(&chunk);
                }
                None => {
                    let trailers = self
                        .received
                        .trailers()
                        .await
                        .context("reading the response trailers")?
                        .unwrap_or_default();
                    check_status(&trailers)?;
                    self.ended = true;
                }
            }
        }
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

/// One message as a whole request body.
pub fn framed(message: &impl Message) -> Bytes {
    let mut body = BytesMut::new();
    put_message(&mut body, message);
    body.freeze()
}

/// Takes the next whole message off the front of `data`, if it has arrived whole.
fn take_message(data: &mut BytesMut) -> Result<Option<Bytes>> {
    if data.len() < MESSAGE_HEADER_BYTES {
        return Ok(None);
    }
    let compressed = data[0];
    ensure!(compressed == 0, "a compressed response message (none was asked for)");
    let len = (&data[1..MESSAGE_HEADER_BYTES]).get_u32() as usize;
    if data.len() < MESSAGE_HEADER_BYTES + len {
        return Ok(None);
    }
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
    fn partial_messages_wait_and_compressed_ones_are_refused() {
        let mut short = BytesMut::from(&[0u8, 0, 0, 0, 3, 1, 2][..]);
        assert!(take_message(&mut short).expect("well formed").is_none());
        short.extend_from_slice(&[3]);
        let whole = take_message(&mut short).expect("well formed").expect("whole now");
        assert_eq!(&whole[..], &[1, 2, 3]);
        let mut header = BytesMut::from(&[0u8, 0, 0][..]);
        assert!(take_message(&mut header).expect("well formed").is_none());
        assert_eq!(header.len(), 3, "nothing taken");
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
