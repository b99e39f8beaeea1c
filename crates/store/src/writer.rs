//! The single writer of a segment family: group commit with adaptive batching.
//!
//! Appends queue on a bounded channel. The writer takes one, validates and encodes it into the
//! batch buffer, and keeps taking more while the queue is non-empty — until the time since the
//! last flush reaches that flush's duration plus `flush_delay` (KurrentDB's rule), or the batch
//! reaches `max_batch_bytes`. Then it writes the batch, syncs once, publishes it to readers and
//! only then acknowledges every append in it. While a sync is in flight, new appends pile up in
//! the queue and form the next batch: the busier the store, the larger the batches.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use myelin_format::index::{IndexPosition, SeekEntry};
use myelin_format::segment::{
    BLOCK_HEADER_BYTES, CRC_BYTES, EVENT_LEN_BYTES, EncodedTransaction, FILE_HEADER_BYTES, FileHeader, MARKER_BYTES,
    MAX_TRANSACTION_BYTES, ROLL_MARKER, SegmentKind, encode_transaction, transaction_bytes,
};
use myelin_format::validate::{InvalidEvent, validate_event};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::config::Durability;
use crate::error::{Result, StoreError};
use crate::io::{create_preallocated, parent, sync_data, sync_dir, temp_path, write_all_at};
use crate::log::{SegmentLog, is_indexed};
use crate::metrics::BatchCounts;
use crate::recovery::WriterStart;
use crate::segments::{ActiveSegment, ActiveView, ClosedSegment, MemoryIndex, bloom_of};

/// An event checked to be a whole `Event` message, with the fields the writer needs, read in
/// the same pass on the caller's thread. Only [`PreparedEvent::event`] and
/// [`PreparedEvent::snapshot`] (and the store's own `append`) make one, all through that check,
/// so the store holds nothing a protobuf decoder would refuse.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub(crate) bytes: Bytes,
    pub(crate) aggregate: Box<str>,
    pub(crate) sequence: i64,
    pub(crate) timestamp: i64,
    /// Goes into the aggregate index (and, for events, is sequence-checked).
    pub(crate) indexed: bool,
}

impl PreparedEvent {
    /// An event for the event store ([`crate::ContextStore::append_prepared`]); refused when
    /// the bytes are not a valid `Event` message.
    pub fn event(bytes: Bytes) -> std::result::Result<PreparedEvent, InvalidEvent> {
        PreparedEvent::prepare(SegmentKind::Events, bytes)
    }

    /// A snapshot for the snapshot store ([`crate::ContextStore::append_prepared_snapshot`]);
    /// refused when the bytes are not a valid `Event` message.
    pub fn snapshot(bytes: Bytes) -> std::result::Result<PreparedSnapshot, InvalidEvent> {
        PreparedEvent::prepare(SegmentKind::Snapshots, bytes).map(PreparedSnapshot)
    }

    pub(crate) fn prepare(kind: SegmentKind, bytes: Bytes) -> std::result::Result<PreparedEvent, InvalidEvent> {
        let fields = validate_event(&bytes)?;
        let indexed = is_indexed(kind, &fields);
        let aggregate = fields.aggregate_identifier.into();
        let (sequence, timestamp) = (fields.aggregate_sequence_number, fields.timestamp);
        Ok(PreparedEvent {
            bytes,
            aggregate,
            sequence,
            timestamp,
            indexed,
        })
    }

    /// The event's bytes, as the client encoded it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// A snapshot checked and read as [`PreparedEvent::snapshot`] does: its own type, because
/// what the store indexes differs between events and snapshots.
#[derive(Debug, Clone)]
pub struct PreparedSnapshot(PreparedEvent);

impl PreparedSnapshot {
    pub(crate) fn into_inner(self) -> PreparedEvent {
        self.0
    }
}

impl AsRef<[u8]> for PreparedEvent {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Where an acknowledged transaction landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Token of the transaction's first event (the head, for an empty transaction).
    pub first_token: u64,
    pub count: u64,
}

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
/// Why a roll failed: the active file could not be closed (poisons the store), or its
/// successor could not be created (retried by the next append).
enum Rolling {
    Active(StoreError),
    NewFile(StoreError),
}

/// Creates a pre-allocated segment file; a partly created file is removed again, so a retry
/// (or a restart) starts clean. A full disk is reported as [`StoreError::NoSpace`].
fn create_segment(path: &Path, size: u64) -> Result<Arc<File>, Rolling> {
    match create_preallocated(path, size, &FileHeader::CURRENT.encode()) {
        Ok(file) => Ok(Arc::new(file)),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(Rolling::NewFile(e.into_no_space()))
        }
    }
}

/// Batches with at most this many replies are acknowledged by the writer itself.
const DIRECT_ACKS_MAX: usize = 4;
/// The replies of one batch, each with its outcome.
type Acks = Vec<(Reply, Result<Appended>)>;

/// Wakes the appenders of finished batches on its own thread, so the writer can start the next
/// batch (and its `fdatasync`) instead of waking dozens of threads one `futex` at a time.
struct Completions {
    sender: Option<Sender<Acks>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Completions {
    fn start(name: String) -> Completions {
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
    fn complete(&self, batch: Acks) {
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
    fn finish(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

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
    last_flush: Duration,
    last_flush_end: Instant,
    /// When the first transaction of the batch being collected was staged.
    batch_started: Instant,
    /// Transactions the last flushed batch carried.
    last_batch_transactions: usize,
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
            last_flush: Duration::ZERO,
            last_flush_end: Instant::now(),
            successor_pending: false,
            batch_started: Instant::now(),
            last_batch_transactions: 0,
            unsynced_since: None,
        }
    }

    pub fn run(mut self, requests: Receiver<Request>) {
        loop {
            let busy = !self.staged.is_empty() || !self.waiting.is_empty();
            let request = if busy {
                match requests.try_recv() {
                    Ok(request) => request,
                    Err(TryRecvError::Empty) => match self.wait_for_siblings(&requests) {
                        Some(request) => request,
                        None => {
                            self.flush();
                            continue;
                        }
                    },
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match self.idle_wait(&requests) {
                    Next::Request(request) => request,
                    Next::Timeout => continue,
                    Next::Closed => break,
                }
            };
            self.handle(request);
            let batch_full = self.buf.len() >= self.log.config.max_batch_bytes;
            let waited_enough = self.last_flush_end.elapsed() >= self.last_flush + self.log.config.flush_delay;
            if batch_full || waited_enough {
                self.flush();
            }
        }
        self.flush();
        self.sync_interval_data();
        self.completions.finish();
    }

    /// The queue is empty, but the batch carries fewer transactions than the last one: the
    /// appenders acknowledged a moment ago are likely about to send their next transactions.
    /// Waits for them at most `flush_delay` from the batch's start instead of syncing a
    /// half-empty batch (PostgreSQL's `commit_delay` with `commit_siblings`, adaptively). A
    /// lone appender never waits: its last batch held one transaction.
    fn wait_for_siblings(&mut self, requests: &Receiver<Request>) -> Option<Request> {
        if self.staged.len() >= self.last_batch_transactions {
            return None;
        }
        let left = self.log.config.flush_delay.checked_sub(self.batch_started.elapsed())?;
        requests.recv_timeout(left).ok()
    }

    /// Blocks for the next request; in interval mode wakes up to sync written data in time.
    fn idle_wait(&mut self, requests: &Receiver<Request>) -> Next {
        let (Durability::Interval { interval }, Some(since)) = (self.log.config.durability, self.unsynced_since) else {
            return requests.recv().map_or(Next::Closed, Next::Request);
        };
        match requests.recv_timeout(interval.saturating_sub(since.elapsed())) {
            Ok(request) => Next::Request(request),
            Err(RecvTimeoutError::Timeout) => {
                self.sync_interval_data();
                Next::Timeout
            }
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
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
                    self.batch_started = Instant::now();
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
        let first_token = self.next_token;
        self.next_token += events.len() as u64;
        Ok(Some((events, encoded, first_token)))
    }

    /// The transaction does not fit in the active segment: flush what is staged, then roll to
    /// a new segment (or, if the active one is still empty, replace it with a larger one).
    ///
    /// A failure to write or sync the active file poisons the store. A failure to create the
    /// new file (a full disk, above all) does not: the active file is left whole, the append
    /// that needed the room fails with the error, and the next append tries again.
    fn make_room(&mut self, tx_bytes: usize) -> Result<()> {
        self.flush();
        self.log.check_writable()?;
        let needed = (FILE_HEADER_BYTES + tx_bytes + MARKER_BYTES) as u64;
        let size = self.log.config.segment_size_bytes.max(needed);
        let result = if self.end == FILE_HEADER_BYTES as u64 && !self.successor_pending {
            self.replace_empty_active(size)
        } else {
            self.roll(size)
        };
        match result {
            Err(Rolling::Active(e)) => {
                self.log.poison(format!("segment roll failed: {e}"));
                Err(e)
            }
            Err(Rolling::NewFile(e)) => {
                warn!(file = %self.path.display(), error = %e, "cannot create the next segment; appends fail until it can be");
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// Closes the active segment with its roll marker (once), then creates its successor and
    /// makes it the active one. Recovery treats a newest file that ends in a roll marker as
    /// closed and creates the successor itself, so a crash between the two steps is safe.
    fn roll(&mut self, size: u64) -> Result<(), Rolling> {
        if !self.successor_pending {
            fail::fail_point!("store::roll", |_| Err(Rolling::Active(StoreError::io(
                self.path.to_path_buf(),
                std::io::Error::from_raw_os_error(libc::EIO)
            ))));
            let io = |e| Rolling::Active(StoreError::io(self.path.to_path_buf(), e));
            write_all_at(&self.file, &ROLL_MARKER.to_be_bytes(), self.end).map_err(io)?;
            self.sync_active().map_err(io)?;
            self.unsynced_since = None;
            self.successor_pending = true;
        }
        let path: Arc<Path> = self.log.dir.join(self.log.kind.file_name(self.next_token)).into();
        let file = create_segment(&path, size)?;
        self.successor_pending = false;
        let active = empty_active(self.next_token, path.clone(), file.clone(), size);
        let closed = {
            let mut segments = self.log.segments.write();
            let old = std::mem::replace(&mut segments.active, active);
            let mut view = old.view.write();
            let memory = MemoryIndex {
                map: std::mem::take(&mut view.index),
                seek: std::mem::take(&mut view.seek),
            };
            let closed = ClosedSegment::new(old.first_token, view.count, view.first_timestamp, old.path.clone());
            closed.set_data_file_bytes(old.file_bytes);
            *closed.bloom.write() = Some(Arc::new(bloom_of(
                &memory.map,
                self.log.config.bloom_false_positive_rate,
            )));
            *closed.memory_index.write() = Some(Arc::new(memory));
            let closed = Arc::new(closed);
            segments.closed.push(closed.clone());
            closed
        };
        debug!(closed = closed.first_token, next = self.next_token, "rolled segment");
        let _ = self.indexer.send(closed);
        self.file = file;
        self.path = path;
        self.capacity = size;
        self.end = FILE_HEADER_BYTES as u64;
        Ok(())
    }

    /// Axon's rule for a transaction larger than a segment: the empty active file is replaced
    /// by one big enough to hold it. The larger file is made under a temporary name and renamed
    /// over the old one, so a failure leaves the old file in place.
    fn replace_empty_active(&mut self, size: u64) -> Result<(), Rolling> {
        let path = self.path.clone();
        let tmp = temp_path(&path);
        let file = create_segment(&tmp, size)?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Rolling::NewFile(StoreError::io(path.to_path_buf(), e).into_no_space()));
        }
        // The name now holds the larger file: it is the active one whatever happens next.
        let active = empty_active(self.next_token, path.clone(), file.clone(), size);
        self.log.segments.write().active = active;
        self.file = file;
        self.capacity = size;
        // A failed directory sync is a failed sync: poison (the rename may not be durable).
        sync_dir(parent(&path)).map_err(Rolling::Active)
    }

    /// Writes the batch, makes it durable, publishes it and acknowledges everything in it.
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let started = Instant::now();
            match self.write_batch() {
                Ok(()) => self.publish(),
                Err(e) => {
                    self.log.poison(e.to_string());
                    let reason = self.log.poisoned().unwrap_or_else(|| e.to_string());
                    let appends = self.staged.len() + self.waiting.iter().filter(|w| w.append).count();
                    self.log.counters.failed(appends as u64);
                    let failed = self.staged.drain(..).map(|staged| staged.reply);
                    let failed = failed.chain(self.waiting.drain(..).map(|waiting| waiting.reply));
                    let failed = failed.map(|reply| (reply, Err(StoreError::Poisoned(reason.clone()))));
                    self.completions.complete(failed.collect());
                    self.buf.clear();
                    self.multi_block = false;
                    return;
                }
            }
            self.last_flush = started.elapsed();
            self.last_flush_end = Instant::now();
        }
        if let Durability::Interval { interval } = self.log.config.durability {
            let overdue = self.unsynced_since.is_some_and(|since| since.elapsed() >= interval);
            if overdue || !self.waiting.is_empty() {
                self.sync_interval_data();
            }
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

    /// The commit protocol (docs/FORMAT.md): everything but the batch's first size field,
    /// then that field, so a reader of the file sees the batch whole or not at all. A batch
    /// with a multi-block transaction syncs before writing the size field too, so a crash can
    /// never leave part of that transaction valid.
    fn write_batch(&mut self) -> Result<()> {
        let io = |e| StoreError::io(self.path.to_path_buf(), e);
        let (size_field, rest) = self.buf.split_at(MARKER_BYTES);
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

    /// Makes the durable batch visible: index entries, seek samples, end and count, then the
    /// head (readers check the head first, so everything below it is already in place).
    fn publish(&mut self) {
        let start = self.end;
        let interval = self.log.config.seek_interval_bytes;
        let active = self.log.segments.read().active.clone();
        let mut batch = BatchCounts {
            transactions: self.staged.len() as u64,
            events: 0,
            event_bytes: 0,
            written_bytes: self.buf.len() as u64,
        };
        {
            let mut view = active.view.write();
            for staged in &self.staged {
                let tx_start = start + staged.encoded.start as u64;
                let block_first_events = &staged.encoded.block_first_events;
                for &first_event in block_first_events {
                    let offset =
                        tx_start + u64::from(staged.encoded.event_offsets[first_event]) - BLOCK_HEADER_BYTES as u64;
                    if view
                        .seek
                        .last()
                        .is_none_or(|s| offset >= u64::from(s.offset) + interval)
                    {
                        view.seek.push(SeekEntry {
                            token: staged.first_token + first_event as u64,
                            offset: offset as u32,
                        });
                    }
                }
                let mut block = 0;
                for (i, event) in staged.events.iter().enumerate() {
                    while block_first_events.get(block + 1).is_some_and(|first| *first <= i) {
                        block += 1;
                    }
                    if view.first_timestamp == i64::MIN {
                        view.first_timestamp = event.timestamp;
                    }
                    if !event.indexed {
                        continue;
                    }
                    let block_first = block_first_events[block];
                    let block =
                        tx_start + u64::from(staged.encoded.event_offsets[block_first]) - BLOCK_HEADER_BYTES as u64;
                    let position = IndexPosition {
                        block: block as u32,
                        position: (tx_start + u64::from(staged.encoded.event_offsets[i])) as u32,
                        sequence: event.sequence,
                    };
                    match view.index.get_mut(&*event.aggregate) {
                        Some(positions) => positions.push(position),
                        None => {
                            view.index.insert(event.aggregate.clone(), vec![position]);
                        }
                    }
                }
                view.count += staged.events.len() as u64;
                batch.events += staged.events.len() as u64;
                batch.event_bytes += event_bytes(&staged.encoded, staged.events.len());
                debug_assert_eq!(
                    event_bytes(&staged.encoded, staged.events.len()),
                    staged.events.iter().map(|e| e.bytes.len() as u64).sum::<u64>()
                );
            }
            view.end = start + self.buf.len() as u64;
            if self.log.config.durability == Durability::Fsync {
                // write_batch synced it.
                view.synced_end = view.end;
            }
            self.end = view.end;
        }
        self.log.set_head(self.next_token);
        self.validator.published();
        self.log.counters.committed(&batch);
        // A batch that filled `max_batch_bytes` had more waiting than it could take: nobody
        // is straggling, so the next batch should not wait for anyone.
        self.last_batch_transactions = if self.buf.len() >= self.log.config.max_batch_bytes {
            0
        } else {
            self.staged.len()
        };
        let done = self.staged.drain(..).map(|staged| {
            let appended = Appended {
                first_token: staged.first_token,
                count: staged.events.len() as u64,
            };
            (staged.reply, Ok(appended))
        });
        self.completions.complete(done.collect());
        self.buf.clear();
        self.multi_block = false;
    }
}

/// Serialized event bytes of an encoded transaction: its length without the block framing
/// (per block a header and a CRC, per event a length prefix), so nothing is summed per event.
fn event_bytes(encoded: &EncodedTransaction, events: usize) -> u64 {
    let framing = encoded.blocks * (BLOCK_HEADER_BYTES + CRC_BYTES) + events * EVENT_LEN_BYTES;
    (encoded.len - framing) as u64
}

/// A freshly created, empty active segment of `file_bytes` (pre-allocated).
fn empty_active(first_token: u64, path: Arc<Path>, file: Arc<File>, file_bytes: u64) -> Arc<ActiveSegment> {
    // `create_preallocated` synced the header.
    let view = ActiveView {
        end: FILE_HEADER_BYTES as u64,
        synced_end: FILE_HEADER_BYTES as u64,
        first_timestamp: i64::MIN,
        ..ActiveView::default()
    };
    Arc::new(ActiveSegment {
        first_token,
        path,
        file,
        file_bytes,
        view: parking_lot::RwLock::new(view),
    })
}

enum Next {
    Request(Request),
    Timeout,
    Closed,
}
