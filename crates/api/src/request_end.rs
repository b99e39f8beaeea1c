//! Telling a client's half-close from a client's cancel.
//!
//! tonic's server-side `Streaming` reports a request body that was reset with CANCEL as a
//! normal end of stream (`Ok(None)`), exactly like a half-close. For AppendEvent the difference
//! is everything: a half-close commits the transaction, a cancel must store nothing. So the
//! request body is wrapped before tonic sees it, and the wrapper records whether the body
//! really ended (the client sent END_STREAM) — the only case in which an append may commit.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http;

/// Set once the request body has ended cleanly. Found in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct RequestEnd(Arc<AtomicBool>);

impl RequestEnd {
    /// Whether the client half-closed the request stream (rather than cancelling or failing).
    pub fn half_closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Wraps `request`'s body so that the returned [`RequestEnd`] (also put in the request's
/// extensions) learns whether the body ended cleanly.
pub fn watch<B>(mut request: http::Request<B>) -> http::Request<EndWatch<B>> {
    let end = RequestEnd::default();
    request.extensions_mut().insert(end.clone());
    request.map(|inner| EndWatch { inner, end })
}

pub struct EndWatch<B> {
    inner: B,
    end: RequestEnd,
}

impl<B: Body + Unpin> Body for EndWatch<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.end.0.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
