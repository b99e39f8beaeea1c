//! What the command and the query router keep per handler stream, and the task that sends a
//! stream's queued messages while the handler grants permits (Axon Server SE's
//! `FlowControlQueues` and its dispatcher per client stream).

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use tokio::sync::{Notify, mpsc};

use crate::commands::StreamId;
use crate::queue::PriorityQueue;

/// A handler stream: who it is, what it subscribed, its queue of `T` waiting for permits and
/// where its messages `O` go.
pub(crate) struct Handler<T, O> {
    pub context: String,
    pub client_id: String,
    pub component: String,
    pub names: HashSet<String>,
    pub queue: PriorityQueue<T>,
    pub outbound: mpsc::Sender<O>,
    /// Messages the handler still takes: granted by it, one spent per message sent.
    permits: i64,
    wake: Arc<Notify>,
}

impl<T, O> Handler<T, O> {
    pub fn new(
        context: &str,
        client_id: &str,
        component: &str,
        queue_capacity: usize,
        outbound: mpsc::Sender<O>,
    ) -> Handler<T, O> {
        Handler {
            context: context.to_string(),
            client_id: client_id.to_string(),
            component: component.to_string(),
            names: HashSet::new(),
            queue: PriorityQueue::new(queue_capacity),
            outbound,
            permits: 0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The handler grants `permits` more (they add up, as in SE).
    pub fn grant(&mut self, permits: i64) {
        self.permits = self.permits.saturating_add(permits.max(0));
        self.wake_if_ready();
    }

    /// Queues `item`, or hands it back when the queue is full for its priority.
    pub fn enqueue(&mut self, priority: i64, item: T) -> Result<(), T> {
        self.queue.push(priority, item)?;
        self.wake_if_ready();
        Ok(())
    }

    /// The next queued item, spending a permit, if the handler has one.
    pub fn take(&mut self) -> Option<T> {
        if self.permits <= 0 {
            return None;
        }
        let next = self.queue.pop()?;
        self.permits -= 1;
        Some(next)
    }

    /// Ends the stream's pump (call once the handler is out of the router).
    pub fn stop(&self) {
        self.wake.notify_one();
    }

    fn wake_if_ready(&self) {
        if self.permits > 0 && !self.queue.is_empty() {
            self.wake.notify_one();
        }
    }
}

/// A router whose handler streams a [`pump`] serves.
pub(crate) trait Source: Send + Sync + 'static {
    type Out: Send + 'static;

    /// The next message for `stream`, `Ok(None)` when it has nothing to send now, `Err(())`
    /// when the stream is gone.
    fn next_for(&self, stream: &StreamId) -> Result<Option<Self::Out>, ()>;
}

/// Names a new handler stream of `context` (`<client id>.<uuid>`, as SE), hands it to `keep`
/// and starts its pump. Must be called inside a Tokio runtime.
pub(crate) fn start<S: Source, T>(
    router: &Arc<S>,
    keep: impl FnOnce(StreamId, Handler<T, S::Out>),
    (context, client_id, component): (&str, &str, &str),
    queue_capacity: usize,
    outbound: mpsc::Sender<S::Out>,
) -> StreamId {
    let id = StreamId::new(format!("{client_id}.{}", crate::ids::uuid()));
    let handler = Handler::new(context, client_id, component, queue_capacity, outbound.clone());
    let wake = handler.wake.clone();
    keep(id.clone(), handler);
    tokio::spawn(pump(Arc::downgrade(router), id.clone(), wake, outbound));
    id
}

/// Sends `stream`'s queued messages while it has permits; ends with the stream or the router.
async fn pump<S: Source>(router: Weak<S>, stream: StreamId, wake: Arc<Notify>, outbound: mpsc::Sender<S::Out>) {
    loop {
        let next = {
            let Some(router) = router.upgrade() else {
                return;
            };
            match router.next_for(&stream) {
                Ok(next) => next,
                Err(()) => return,
            }
        };
        match next {
            // A stream that cannot take it any more is ending: its disconnect answers what it
            // had.
            Some(message) => {
                if outbound.send(message).await.is_err() {
                    return;
                }
            }
            None => wake.notified().await,
        }
    }
}
