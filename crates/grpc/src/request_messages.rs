//! The messages of a client-streaming request, read straight off the HTTP/2 body.
//!
//! AppendEvent is the call whose request carries many messages (a transaction's events), and
//! tonic's `Streaming` copies every DATA frame into a buffer of its own before cutting the
//! messages out of it: in a profile of 100-event transactions, the framing took as much of the
//! server's CPU as checking the events. Here a message that lies inside one DATA frame is a
//! slice of that frame (no copy), and only a message split across frames is gathered.
//!
//! The answers to bad framing are tonic's, as relabelled by [`crate::error`] (the compression
//! flag, the size limit checked from the length prefix alone, a body ending inside a message);
//! `tests/hostile.rs` pins each of them. A body that fails (the client cancelled or reset the
//! stream) is told apart from one that ended: only a half-close may commit a transaction.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame};
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::metadata::MetadataValue;

use crate::error::ToStatus;
use myelin_node::NodeError;

/// Compression flag and length before every gRPC message.
const HEADER_BYTES: usize = 5;

/// Why no next message could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not gRPC messages this server takes.
    Framing(Status),
    /// The body failed: the client cancelled or reset the stream, or the connection broke.
    Interrupted,
}

pub struct RequestMessages<B> {
    body: B,
    /// Received bytes not handed out yet, all from the last DATA frame.
    chunk: Bytes,
    /// A message (with its header) begun in an earlier DATA frame, being gathered.
    partial: BytesMut,
    max_message_bytes: usize,
}

impl<B> RequestMessages<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    pub fn new(body: B, max_message_bytes: usize) -> Self {
        RequestMessages {
            body,
            chunk: Bytes::new(),
            partial: BytesMut::new(),
            max_message_bytes,
        }
    }

    /// The next message; `None` once the client half-closed the stream between messages.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(message) = self.take().map_err(ReadError::Framing)? {
                return Ok(Some(message));
            }
            match std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    // Request trailers carry nothing gRPC uses.
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
                Some(Err(_)) => return Err(ReadError::Interrupted),
                None if self.chunk.is_empty() && self.partial.is_empty() => return Ok(None),
                None => {
                    return Err(ReadError::Framing(
                        NodeError::InvalidArgument("malformed request: the stream ended inside a message".into())
                            .to_status(),
                    ));
                }
            }
        }
    }

    /// A whole message out of what was received, if there is one. Leaves `chunk` empty when
    /// it returns `None`: whatever is left is gathered in `partial`.
    fn take(&mut self) -> Result<Option<Bytes>, Status> {
        if self.partial.is_empty() && self.chunk.len() >= HEADER_BYTES {
            let total = HEADER_BYTES + self.message_len(&self.chunk[..HEADER_BYTES])?;
            if self.chunk.len() >= total {
                let message = self.chunk.slice(HEADER_BYTES..total);
                self.chunk.advance(total);
                return Ok(Some(message));
            }
        }
        if self.chunk.is_empty() {
            return Ok(None);
        }
        // Gathering: the header first, then as much of the message as has come.
        if self.partial.len() < HEADER_BYTES {
            let n = (HEADER_BYTES - self.partial.len()).min(self.chunk.len());
            self.partial.extend_from_slice(&self.chunk[..n]);
            self.chunk.advance(n);
            if self.partial.len() < HEADER_BYTES {
                return Ok(None);
            }
        }
        let total = HEADER_BYTES + self.message_len(&self.partial[..HEADER_BYTES])?;
        self.partial.reserve(total - self.partial.len());
        let n = (total - self.partial.len()).min(self.chunk.len());
        self.partial.extend_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        if self.partial.len() < total {
            return Ok(None);
        }
        Ok(Some(self.partial.split().freeze().slice(HEADER_BYTES..)))
    }

    /// The length a message header announces, refused when compressed or over the limit.
    fn message_len(&self, header: &[u8]) -> Result<usize, Status> {
        match header[0] {
            0 => {}
            // The gRPC spec's answer to a compressed message without a grpc-encoding (none is
            // ever accepted here: see `check_request_encoding`).
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ));
            }
            flag => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
                )));
            }
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > self.max_message_bytes {
            return Err(NodeError::MessageTooLarge(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes",
                self.max_message_bytes
            ))
            .to_status());
        }
        Ok(len)
    }
}

/// Refuses a request compressed with anything but `identity`, as tonic does: UNIMPLEMENTED,
/// naming what this server accepts.
pub fn check_request_encoding(headers: &HeaderMap) -> Result<(), Status> {
    let Some(encoding) = headers.get("grpc-encoding") else {
        return Ok(());
    };
    if encoding.as_bytes() == b"identity" {
        return Ok(());
    }
    let name = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
    let mut status = Status::unimplemented(format!("Content is compressed with `{name}` which isn't supported"));
    status
        .metadata_mut()
        .insert("grpc-accept-encoding", MetadataValue::from_static("identity"));
    Err(status)
}

/// A successful answer carrying one message already framed (`[0, length, message]`), with
/// the headers and trailers tonic gives a unary answer.
pub fn one_message_response(framed: Bytes) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(OneMessage {
        message: Some(framed),
        done: false,
    }));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// The body of [`one_message_response`]: the message, then `grpc-status: 0`.
struct OneMessage {
    message: Option<Bytes>,
    done: bool,
}

impl Body for OneMessage {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        self.done = true;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    // No exact size hint: hyper would turn it into a `content-length` header, which tonic's
    // answers never carried.
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A body handing out the given frames, then ending or failing.
    struct Frames {
        frames: VecDeque<Bytes>,
        fails: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.frames.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None if self.fails => Poll::Ready(Some(Err(Status::cancelled("reset")))),
                None => Poll::Ready(None),
            }
        }
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn reader(frames: Vec<Vec<u8>>, fails: bool) -> RequestMessages<Frames> {
        let frames = frames.into_iter().map(Bytes::from).collect();
        RequestMessages::new(Frames { frames, fails }, 1000)
    }

    async fn read_all(mut messages: RequestMessages<Frames>) -> Result<Vec<Bytes>, ReadError> {
        let mut out = Vec::new();
        while let Some(message) = messages.next().await? {
            out.push(message);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn messages_come_out_whole_however_the_frames_cut_them() {
        let messages: Vec<Vec<u8>> = vec![b"first".to_vec(), Vec::new(), vec![7; 300], b"last".to_vec()];
        let wire: Vec<u8> = messages.iter().flat_map(|m| framed(m)).collect();
        // Every way of cutting the bytes into two frames, and into frames of every size.
        let mut cuts: Vec<Vec<Vec<u8>>> = (0..=wire.len())
            .map(|at| vec![wire[..at].to_vec(), wire[at..].to_vec()])
            .collect();
        cuts.extend((1..=wire.len()).map(|size| wire.chunks(size).map(<[u8]>::to_vec).collect()));
        for frames in cuts {
            let read = read_all(reader(frames.clone(), false)).await.expect("reads");
            assert_eq!(
                read,
                messages,
                "frames of {:?} bytes",
                frames.iter().map(Vec::len).collect::<Vec<_>>()
            );
        }
    }

    #[tokio::test]
    async fn a_message_inside_one_frame_is_a_slice_of_it() {
        let frame = Bytes::from([framed(b"one"), framed(b"two")].concat());
        let range = frame.as_ptr_range();
        let mut messages = RequestMessages::new(
            Frames {
                frames: VecDeque::from([frame.clone()]),
                fails: false,
            },
            1000,
        );
        let one = messages.next().await.expect("reads").expect("a message");
        assert_eq!(&one[..], b"one");
        assert!(range.contains(&one.as_ptr()), "not copied");
    }

    #[tokio::test]
    async fn framing_errors_get_tonics_answers() {
        let status = |result: Result<Vec<Bytes>, ReadError>| match result {
            Err(ReadError::Framing(status)) => status,
            other => panic!("expected a framing error, got {other:?}"),
        };
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        let s = status(read_all(reader(vec![compressed.clone()], false)).await);
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(s.message().contains("compressed-flag"), "{s:?}");
        compressed[0] = 7;
        let s = status(read_all(reader(vec![compressed], false)).await);
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(s.message().contains("compression flag: 7"), "{s:?}");
        // Over the limit, from the header alone (the message never comes).
        let s = status(read_all(reader(vec![vec![0, 0, 0, 3, 233]], false)).await);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("found 1001 bytes, the limit is: 1000 bytes"),
            "{s:?}"
        );
        // Ends inside a header, inside a message.
        for cut in [vec![0, 0, 0], framed(b"abc")[..6].to_vec()] {
            let s = status(read_all(reader(vec![cut], false)).await);
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(s.message().contains("ended inside a message"), "{s:?}");
        }
    }

    #[tokio::test]
    async fn a_failed_body_is_an_interruption_not_an_end() {
        let mut messages = reader(vec![framed(b"kept?")], true);
        assert_eq!(messages.next().await.expect("first").as_deref(), Some(&b"kept?"[..]));
        assert!(matches!(messages.next().await, Err(ReadError::Interrupted)));
    }

    #[test]
    fn only_identity_encoding_is_accepted() {
        let mut headers = HeaderMap::new();
        assert!(check_request_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert!(check_request_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        let status = check_request_encoding(&headers).expect_err("gzip");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").map(|v| v.to_str().ok()),
            Some(Some("identity"))
        );
    }
}
