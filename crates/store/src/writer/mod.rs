//! The single writer of a segment family: group commit with adaptive batching.
//!
//! Appends queue on a bounded channel. The writer thread takes them one at a time, validates
//! and encodes each into the batch buffer, and flushes the batch when the policy
//! (`batching`, pure code) says so: it writes the batch, syncs once, publishes it to readers
//! and only then acknowledges every append in it. While a sync is in flight, new appends pile
//! up in the queue and form the next batch: the busier the store, the larger the batches.
//!
//! One job per file: `batching` decides, this file executes (the loop, staging, the commit
//! protocol's writes and syncs), `publish` makes a durable batch visible, `roll` makes room in
//! a new segment, `completions` delivers the replies, `prepared` is what an append carries.

mod batching;
mod completions;
mod prepared;
mod publish;
mod roll;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::Instant;

use myelin_format::segment::{
    EncodedTransaction, MARKER_BYTES, MAX_TRANSACTION_BYTES, encode_transaction, transaction_bytes,
};
use tokio::sync::oneshot;
use tracing::debug;

use crate::config::{Durability, MAX_SEGMENT_BYTES};
use crate::error::{Result, StoreError};
use crate::io::{sync_data, write_all_at};
use crate::log::SegmentLog;
use crate::recovery::WriterStart;
use crate::segments::ClosedSegment;
use batching::{BatchPolicy, Decision, Flushed, Pending};
use completions::{Acks, Completions};
pub use prepared::{Appended, PreparedEvent, PreparedSnapshot};

pub(crate) enum Request {
    Append {
        events: Vec<PreparedEvent>,
        reply: oneshot::Sender<Result<Appended>>,
    },
    /// Acknowledged once everything queued before it is durable.
    Sync { reply: oneshot::Sender<Result<Appended>> },
}

/// Checks a transaction against what is stored and pending. Runs on the writer thread, in
/// commit order, so checks and writes can never interleave.
pub(crate) trait Validator: Send {
    fn validate(&mut self, events: &[PreparedEvent]) -> Result<()>;
    /// Everything validated so far is published: forget per-batch state.
    fn published(&mut self);
}

type Reply = oneshot::Sender<Result<Appended>>;
/// A reply due once the current batch is durable.
struct Waiting {
    reply: Reply,
    at: Appended,
    /// An empty transaction (counted if it fails), not a sync request.
    append: bool,
}

struct Staged {
    events: Vec<PreparedEvent>,
    encoded: EncodedTransaction,
    first_token: u64,
    reply: oneshot::Sender<Result<Appended>>,
}

pub(crate) struct Writer {
    log: Arc<SegmentLog>,
    validator: Box<dyn Validator>,
    indexer: Sender<Arc<ClosedSegment>>,
    file: Arc<File>,
    path: Arc<Path>,
    capacity: u64,
    /// End of published data in the active file; the batch buffer starts here.
    end: u64,
    /// Token of the next event staged.
    next_token: u64,
    buf: Vec<u8>,
    staged: Vec<Staged>,
    /// Replies to send once the current batch is durable (syncs; empty transactions).
    waiting: Vec<Waiting>,
    multi_block: bool,
    completions: Completions,
    policy: BatchPolicy,
    /// When the first transaction of the batch being collected was staged.
    batch_started: Option<Instant>,
    /// The queue was found empty since the last request was taken.
    queue_seen_empty: bool,
    unsynced_since: Option<Instant>,
    /// The active file ends in its roll marker but its successor could not be created yet
    /// (disk full): nothing more goes into it, and the next append tries to create it again.
    successor_pending: bool,
}

impl Writer {
    pub fn new(
        log: Arc<SegmentLog>,
        start: WriterStart,
        validator: Box<dyn Validator>,
        indexer: Sender<Arc<ClosedSegment>>,
    ) -> Self {
        let next_token = log.head();
        let completions = Completions::start(format!("acks-{}", log.kind.data_suffix()));
        let policy = BatchPolicy::new(&log.config, Instant::now());
        Writer {
            log,
            validator,
            indexer,
            file: start.file,
            path: start.path,
            capacity: start.capacity,
            end: start.end,
            next_token,
            buf: Vec::new(),
            staged: Vec::new(),
            waiting: Vec::new(),
            multi_block: false,
            completions,
            policy,
            batch_started: None,
            queue_seen_empty: false,
            unsynced_since: None,
            successor_pending: false,
        }
    }

    /// Carries out the policy's decisions until every sender is gone, then flushes and syncs
    /// what is left. Every wait here is one the policy chose: a blocking receive when there is
    /// nothing to do, or a receive bounded by the instant it named.
    pub fn run(mut self, requests: Receiver<Request>) {
        loop {
            let request = match self.policy.decide(&self.pending(), Instant::now()) {
                Decision::Flush => {
                    self.flush();
                    // What keeps this loop from spinning: a flush always empties the batch,
                    // whether it succeeded or failed.
                    debug_assert!(self.staged.is_empty() && self.waiting.is_empty() && self.buf.is_empty());
                    continue;
                }
                Decision::SyncWritten => {
                    self.sync_interval_data();
                    continue;
                }
                Decision::TakeQueued => match requests.try_recv() {
                    Ok(request) => request,
                    Err(TryRecvError::Empty) => {
                        self.queue_seen_empty = true;
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                },
                // `recv_timeout` returns `Timeout` only once its own deadline, taken after
                // ours, has passed: the next decision sees the bound reached.
                Decision::WaitUntil(deadline) => {
                    match requests.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                Decision::Idle => match requests.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            self.queue_seen_empty = false;
            self.handle(request);
        }
        self.flush();
        self.sync_interval_data();
        self.completions.finish();
    }

    /// What the policy decides on.
    fn pending(&self) -> Pending {
        Pending {
            transactions: self.staged.len(),
            bytes: self.buf.len(),
            waiters: self.waiting.len(),
            started: self.batch_started,
            unsynced_since: self.unsynced_since,
            queue_seen_empty: self.queue_seen_empty,
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Sync { reply } => self.wait_for_batch(reply, false),
            Request::Append { events, reply } => self.stage(events, reply),
        }
    }

    /// Validates and encodes one transaction into the batch. A rejection is answered here.
    fn stage(&mut self, events: Vec<PreparedEvent>, reply: oneshot::Sender<Result<Appended>>) {
        match self.try_stage(events) {
            Ok(Some((events, encoded, first_token))) => {
                if self.staged.is_empty() {
                    self.batch_started = Some(Instant::now());
                }
                self.staged.push(Staged {
                    events,
                    encoded,
                    first_token,
                    reply,
                });
            }
            Ok(None) => self.wait_for_batch(reply, true),
            Err(e) => {
                debug!(error = %e, "append rejected");
                self.log.counters.failed(1);
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A sync or an empty transaction: answered with the current head once the batch is durable.
    fn wait_for_batch(&mut self, reply: Reply, append: bool) {
        let at = Appended {
            first_token: self.next_token,
            count: 0,
        };
        self.waiting.push(Waiting { reply, at, append });
    }

    #[allow(clippy::type_complexity)]
    fn try_stage(
        &mut self,
        events: Vec<PreparedEvent>,
    ) -> Result<Option<(Vec<PreparedEvent>, EncodedTransaction, u64)>> {
        self.log.check_writable()?;
        if events.is_empty() {
            return Ok(None);
        }
        let bytes = transaction_bytes(events.iter().map(|e| e.bytes.len()));
        // The format's own limit too: encoding must not fail after validation recorded the
        // transaction's sequence numbers.
        let limit = self.log.config.max_transaction_bytes.min(MAX_TRANSACTION_BYTES);
        if bytes > limit {
            return Err(StoreError::TransactionTooLarge { bytes, limit });
        }
        // Room first: a failed roll must not leave this transaction's sequence numbers
        // recorded by the validator.
        if self.successor_pending || self.end + (self.buf.len() + bytes + MARKER_BYTES) as u64 > self.capacity {
            self.make_room(bytes)?;
        }
        self.validator.validate(&events)?;
        let encoded =
            encode_transaction(&events, &mut self.buf).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        self.multi_block |= encoded.blocks > 1;
        // Tokens are gapless: each staged transaction starts where the one before it ends, the
        // first where the published head is.
        debug_assert_eq!(
            self.next_token,
            self.staged
                .last()
                .map_or(self.log.head(), |s| s.first_token + s.events.len() as u64)
        );
        debug_assert!(self.end + self.buf.len() as u64 + MARKER_BYTES as u64 <= self.capacity);
        let first_token = self.next_token;
        self.next_token += events.len() as u64;
        Ok(Some((events, encoded, first_token)))
    }

    /// Writes the batch, makes it durable, publishes it and acknowledges everything in it.
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let started = Instant::now();
            let (transactions, bytes) = (self.staged.len(), self.buf.len());
            match self.write_batch() {
                Ok(()) => self.publish(),
                Err(e) => {
                    self.fail_batch(e);
                    return;
                }
            }
            let ended = Instant::now();
            self.policy.flushed(Flushed {
                transactions,
                bytes,
                started,
                ended,
            });
        }
        self.batch_started = None;
        if self
            .policy
            .sync_after_flush(self.unsynced_since, self.waiting.len(), Instant::now())
        {
            self.sync_interval_data();
        }
        let log = &self.log;
        let mut failed_appends = 0;
        let done: Acks = self
            .waiting
            .drain(..)
            .map(|waiting| {
                let result = log.check_writable().map(|()| waiting.at);
                failed_appends += u64::from(waiting.append && result.is_err());
                (waiting.reply, result)
            })
            .collect();
        log.counters.failed(failed_appends);
        self.completions.complete(done);
    }

    /// A batch could not be written or synced: the store is poisoned and every reply in the
    /// batch says so. Nothing of it was published.
    fn fail_batch(&mut self, error: StoreError) {
        self.log.poison(error.to_string());
        let reason = self.log.poisoned().unwrap_or_else(|| error.to_string());
        let appends = self.staged.len() + self.waiting.iter().filter(|w| w.append).count();
        self.log.counters.failed(appends as u64);
        let failed = self.staged.drain(..).map(|staged| staged.reply);
        let failed = failed.chain(self.waiting.drain(..).map(|waiting| waiting.reply));
        let failed = failed.map(|reply| (reply, Err(StoreError::Poisoned(reason.clone()))));
        self.completions.complete(failed.collect());
        self.buf.clear();
        self.multi_block = false;
        self.batch_started = None;
    }

    /// The commit protocol (docs/FORMAT.md): everything but the batch's first size field,
    /// then that field, so a reader of the file sees the batch whole or not at all. A batch
    /// with a multi-block transaction syncs before writing the size field too, so a crash can
    /// never leave part of that transaction valid.
    fn write_batch(&mut self) -> Result<()> {
        self.check_batch_bounds()?;
        let io = |e| StoreError::io(self.path.to_path_buf(), e);
        let Some((size_field, rest)) = self.buf.split_at_checked(MARKER_BYTES) else {
            return Err(self.inconsistent(format!("a batch of {} bytes has no size field", self.buf.len())));
        };
        write_all_at(&self.file, rest, self.end + MARKER_BYTES as u64).map_err(io)?;
        if self.multi_block {
            self.sync_active().map_err(io)?;
        }
        write_all_at(&self.file, size_field, self.end).map_err(io)?;
        match self.log.config.durability {
            Durability::Fsync => self.sync_active().map_err(io)?,
            Durability::Interval { .. } => {
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
        }
        Ok(())
    }

    /// The batch, and a roll marker after it, end inside the active file, and every offset
    /// in it fits an `i32` (what Axon and the index expect). `try_stage` makes room so this
    /// always holds; checked for real anyway, once per batch, because a violation would write
    /// past the file's end or index offsets that wrap.
    fn check_batch_bounds(&self) -> Result<()> {
        let batch_end = self.end + self.buf.len() as u64;
        if batch_end + MARKER_BYTES as u64 > self.capacity || self.capacity > MAX_SEGMENT_BYTES {
            return Err(self.inconsistent(format!(
                "a batch ending at {batch_end} does not fit a segment of {} bytes (at most {MAX_SEGMENT_BYTES})",
                self.capacity
            )));
        }
        Ok(())
    }

    fn inconsistent(&self, reason: String) -> StoreError {
        StoreError::Inconsistent {
            dir: self.log.dir.clone(),
            reason: format!("{}: {reason}", self.path.display()),
        }
    }

    fn sync_interval_data(&mut self) {
        if self.unsynced_since.take().is_none() {
            return;
        }
        match self.sync_active() {
            // Everything published so far is in the active file below `self.end`.
            Ok(()) => self.log.segments.read().active.view.write().synced_end = self.end,
            Err(e) => self.log.poison(format!("fsync of {} failed: {e}", self.path.display())),
        }
    }

    /// `fdatasync` of the active file, timed for the metrics. A failed sync is timed too: a
    /// disk that takes seconds to fail is worth seeing.
    fn sync_active(&self) -> std::io::Result<()> {
        let started = Instant::now();
        let result = sync_data(&self.file);
        self.log.counters.synced(started.elapsed().as_secs_f64());
        result
    }
}
