//! Sending the replies of a finished batch: a few on the writer thread itself, many on a
//! thread of their own.

use std::sync::mpsc::Sender;

use super::{Appended, Reply};
use crate::error::Result;

/// Batches with at most this many replies are acknowledged by the writer itself: handing a
/// lone client's reply to another thread would add a wake-up and a thread switch to its ack.
const DIRECT_ACKS_MAX: usize = 4;
/// The replies of one batch, each with its outcome.
pub(super) type Acks = Vec<(Reply, Result<Appended>)>;

/// Wakes the appenders of finished batches on its own thread, so the writer can start the next
/// batch (and its `fdatasync`) instead of waking dozens of threads one `futex` at a time.
pub(super) struct Completions {
    sender: Option<Sender<Acks>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Completions {
    pub(super) fn start(name: String) -> Completions {
        let (sender, receiver) = std::sync::mpsc::channel::<Acks>();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                for batch in receiver {
                    for (reply, result) in batch {
                        let _ = reply.send(result);
                    }
                }
            })
            .ok();
        Completions {
            sender: thread.as_ref().map(|_| sender),
            thread,
        }
    }

    /// Hands the replies over; a few (or all, without a completion thread) are sent right
    /// here, where a hand-off would only add a thread switch to each acknowledgement.
    pub(super) fn complete(&self, batch: Acks) {
        if batch.is_empty() {
            return;
        }
        let unsent = match &self.sender {
            Some(_) if batch.len() <= DIRECT_ACKS_MAX => batch,
            Some(sender) => match sender.send(batch) {
                Ok(()) => return,
                Err(failed) => failed.0,
            },
            None => batch,
        };
        for (reply, result) in unsent {
            let _ = reply.send(result);
        }
    }

    /// Delivers everything handed over so far, then stops the thread.
    pub(super) fn finish(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
