//! ListEvents: the tracking stream.
//!
//! One task per stream owns the request stream, the store cursor, the permits and the
//! blacklist; it sends batches of events into a small bounded channel that the response stream
//! drains one message at a time. Rules (AXON_COMPAT §3):
//!
//! * the first request positions the stream (`tracking_token` = first token to send; negative
//!   means the first token); later requests only add permits and blacklist entries;
//! * never more events than permits granted; a blacklisted event uses none and is skipped,
//!   except that after a long run of skips one is sent anyway (upstream's rule, see
//!   [`crate::blacklist`]);
//! * at the head, wait for the next commit (the store's commit listener) and go on: a
//!   tracking stream never ends on its own;
//! * the client half-closing ends the response stream with OK (the Python clients wait for
//!   it); the client cancelling drops the response stream, the task notices at once
//!   (`closed()`), and everything it held is freed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::Bytes;
use myelin_proto::grpc::event::GetEventsRequest;
use myelin_store::Cursor;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use crate::blacklist::Blacklist;
use crate::codec::RawEventWithToken;
use crate::error::{ToStatus, request_error};
use myelin_node::{Context, NodeError};

/// Events per batch at most: one `spawn_blocking` read and one channel message.
const BATCH_EVENTS_MAX: usize = 1024;
/// A batch stops growing once its events reach this many bytes (plus at most one event).
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Events asked of the store per read call while a batch fills.
const READ_EVENTS_MAX: usize = 128;
/// Batches between the reading task and the response stream: bounds memory per stream to
/// about this many times `BATCH_BYTES_MAX`.
const CHANNEL_BATCHES: usize = 4;

type Batch = Vec<(u64, Bytes)>;

/// Starts the task for one ListEvents call and returns its response stream.
pub fn start(
    context: Arc<Context>,
    requests: Streaming<GetEventsRequest>,
    stopping: watch::Receiver<bool>,
) -> EventStream {
    let (batches, receiver) = mpsc::channel(CHANNEL_BATCHES);
    context.tracking_stream_opened();
    let tracker = Tracker {
        commits: context.commits(),
        context,
        requests,
        batches,
        stopping,
        position: None,
        permits: 0,
        blacklist: Blacklist::default(),
    };
    tokio::spawn(tracker.run());
    EventStream {
        receiver,
        current: Vec::new().into_iter(),
    }
}

/// The response stream: flattens the task's batches into messages.
pub struct EventStream {
    receiver: mpsc::Receiver<Result<Batch, Status>>,
    current: std::vec::IntoIter<(u64, Bytes)>,
}

impl Stream for EventStream {
    type Item = Result<RawEventWithToken, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some((token, event)) = self.current.next() {
                let token = token as i64;
                return Poll::Ready(Some(Ok(RawEventWithToken { token, event })));
            }
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => self.current = batch.into_iter(),
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

struct Tracker {
    context: Arc<Context>,
    commits: watch::Receiver<u64>,
    requests: Streaming<GetEventsRequest>,
    batches: mpsc::Sender<Result<Batch, Status>>,
    stopping: watch::Receiver<bool>,
    /// `None` until the first request has positioned the stream.
    position: Option<Cursor>,
    permits: u64,
    blacklist: Blacklist,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.context.tracking_stream_closed();
    }
}

/// Why the task stops.
enum End {
    /// Client half-closed, cancelled, or went away: end the response stream (OK if it is
    /// still being read).
    Quietly,
    /// Report this to the client as the stream's status.
    Fail(Status),
}

impl From<NodeError> for End {
    fn from(error: NodeError) -> Self {
        End::Fail(error.to_status())
    }
}

impl Tracker {
    async fn run(mut self) {
        if let End::Fail(status) = self.serve().await {
            // A client that stopped reading has a full channel; it gets no status then, and
            // the connection going away tells it the rest.
            let _ = self.batches.try_send(Err(status));
        }
    }

    async fn serve(&mut self) -> End {
        loop {
            if *self.stopping.borrow() {
                return NodeError::ShuttingDown.into();
            }
            // Requests that have already arrived go first, so a half-close ends the stream
            // now rather than after the permits are used up.
            while let Some(request) = self.ready_request() {
                match request {
                    Ok(Some(request)) => self.apply(request),
                    Ok(None) => return End::Quietly,
                    Err(status) => return End::Fail(request_error(status)),
                }
            }
            // Mark the current commit as seen *before* reading the head, so that a commit
            // landing after the read still wakes the wait below.
            self.commits.borrow_and_update();
            let readable = self.permits > 0
                && self
                    .position
                    .as_ref()
                    .is_some_and(|cursor| cursor.next_token() < self.context.store().head());
            if readable {
                let batch = match self.read_batch().await {
                    Ok(batch) => batch,
                    Err(error) => return error.into(),
                };
                if !batch.is_empty() {
                    tokio::select! {
                        sent = self.batches.send(Ok(batch)) => if sent.is_err() {
                            return End::Quietly;
                        },
                        _ = crate::stopped(&mut self.stopping) => return NodeError::ShuttingDown.into(),
                    }
                }
                continue;
            }
            let waiting_for_commit = self.permits > 0 && self.position.is_some();
            tokio::select! {
                request = self.requests.message() => match request {
                    Ok(Some(request)) => self.apply(request),
                    // Half-close (or cancel, which tonic reports the same way): end the
                    // response stream with OK.
                    Ok(None) => return End::Quietly,
                    // A request that could not be read (too large, malformed).
                    Err(status) => return End::Fail(request_error(status)),
                },
                changed = self.commits.changed(), if waiting_for_commit => {
                    if changed.is_err() {
                        return NodeError::ShuttingDown.into();
                    }
                }
                _ = self.batches.closed() => return End::Quietly,
                _ = crate::stopped(&mut self.stopping) => return NodeError::ShuttingDown.into(),
            }
        }
    }

    /// A request that has already arrived, without waiting: `Some(Ok(None))` is the half-close.
    fn ready_request(&mut self) -> Option<Result<Option<GetEventsRequest>, Status>> {
        let mut cx = TaskContext::from_waker(Waker::noop());
        match Pin::new(&mut self.requests).poll_next(&mut cx) {
            Poll::Ready(request) => Some(request.transpose()),
            Poll::Pending => None,
        }
    }

    fn apply(&mut self, request: GetEventsRequest) {
        if self.position.is_none() {
            let first = self.context.store().first_token().max(0);
            let start = if request.tracking_token < 0 {
                first
            } else {
                request.tracking_token.max(first)
            };
            self.position = Some(Cursor::new(start as u64));
        }
        if request.number_of_permits > 0 {
            self.permits = self.permits.saturating_add(request.number_of_permits as u64);
        }
        self.blacklist.extend(&request.blacklist);
    }

    /// Reads up to the permits (and the batch bounds) off the async threads, then drops
    /// blacklisted events. A blacklisted event uses no permit.
    async fn read_batch(&mut self) -> Result<Batch, NodeError> {
        let Some(mut cursor) = self.position.take() else {
            return Ok(Vec::new());
        };
        let store = self.context.store().clone();
        let wanted = usize::try_from(self.permits)
            .unwrap_or(usize::MAX)
            .min(BATCH_EVENTS_MAX);
        let read = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let result = loop {
                let before = batch.len();
                let ask = (wanted - batch.len()).min(READ_EVENTS_MAX);
                if let Err(e) = store.read_events(&mut cursor, ask, &mut batch) {
                    break Err(e);
                }
                bytes += batch[before..].iter().map(|(_, e)| e.len()).sum::<usize>();
                if batch.len() == before || batch.len() >= wanted || bytes >= BATCH_BYTES_MAX {
                    break Ok(());
                }
            };
            (cursor, batch, result)
        })
        .await;
        let (cursor, mut batch, result) =
            read.map_err(|e| NodeError::Internal(format!("tracking read failed: {e}")))?;
        self.position = Some(cursor);
        result.map_err(NodeError::read)?;
        if !self.blacklist.is_empty() {
            batch.retain(|(_, event)| self.blacklist.admit(event));
        }
        debug_assert!(batch.len() as u64 <= self.permits);
        self.permits -= batch.len() as u64;
        Ok(batch)
    }
}
