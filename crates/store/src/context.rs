//! `ContextStore`: the event store and snapshot store of one Axon context, each with its own
//! writer thread and index thread.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use myelin_format::event::EventFields;
use myelin_format::segment::SegmentKind;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::holds::DeletionHolds;
use crate::log::{Cursor, SegmentLog};
use crate::metrics::StoreMetrics;
use crate::recovery::open_log;
use crate::validate::{SequenceValidator, SnapshotValidator};
use crate::writer::{Appended, PreparedEvent, PreparedSnapshot, Request, Validator, Writer};

/// A pending append: resolves once the transaction is durable (or rejected).
/// Await it from async code, or call [`AppendTicket::wait`] from a plain thread.
pub struct AppendTicket(oneshot::Receiver<Result<Appended>>);

impl AppendTicket {
    /// Blocks the calling thread until the append is decided. Safe on any thread, including
    /// an async runtime's (where it blocks that worker: await the ticket there instead).
    pub fn wait(self) -> Result<Appended> {
        // Inside a tokio task, the oneshot counts against the task's cooperative budget; once
        // that is spent it answers Pending (and wakes itself) until the task yields to the
        // runtime, which a blocked thread never does: opt out, or `wait` spins forever.
        block_on(tokio::task::unconstrained(self))
    }
}

/// Polls a future to completion on this thread, parking between wake-ups. Unlike tokio's
/// `blocking_recv` it does not refuse to run inside a runtime, so `Drop` may call it.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unparker(std::thread::Thread);
    impl std::task::Wake for Unparker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

impl Future for AppendTicket {
    type Output = Result<Appended>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// One segment family with its writer.
struct Family {
    log: Arc<SegmentLog>,
    requests: Mutex<Option<SyncSender<Request>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Family {
    fn open(
        kind: SegmentKind,
        dir: &Path,
        config: &StoreConfig,
        context: &str,
        validator: impl FnOnce(&Arc<SegmentLog>) -> Box<dyn Validator>,
    ) -> Result<Family> {
        config.validate()?;
        let (log, start) = open_log(kind, dir, config)?;
        let log = Arc::new(log);
        let (requests, requests_rx) = sync_channel(config.queue_capacity);
        let (indexer, indexer_rx) = std::sync::mpsc::channel();
        let writer = Writer::new(log.clone(), start, validator(&log), indexer);
        let name = format!("{context}-{}", kind.data_suffix());
        let spawn_error = |e| StoreError::io(dir, e);
        let writer_thread = std::thread::Builder::new()
            .name(format!("writer-{name}"))
            .spawn(move || writer.run(requests_rx))
            .map_err(spawn_error)?;
        let weak = Arc::downgrade(&log);
        let indexer_thread = std::thread::Builder::new()
            .name(format!("indexer-{name}"))
            .spawn(move || crate::indexer::run_indexer(weak, indexer_rx))
            .map_err(spawn_error)?;
        Ok(Family {
            log,
            requests: Mutex::new(Some(requests)),
            threads: Mutex::new(vec![writer_thread, indexer_thread]),
        })
    }

    fn submit(&self, request: Request) -> Result<()> {
        let sender = self.requests.lock().clone().ok_or(StoreError::Closed)?;
        sender.send(request).map_err(|_| StoreError::Closed)
    }

    /// Queues a transaction for the writer. Refusals here are counted here; the writer counts
    /// the ones it answers.
    fn append(&self, events: Result<Vec<PreparedEvent>>) -> Result<AppendTicket> {
        let submitted = events.and_then(|events| {
            self.log.check_writable()?;
            let (reply, ticket) = oneshot::channel();
            self.submit(Request::Append { events, reply })?;
            Ok(AppendTicket(ticket))
        });
        if submitted.is_err() {
            self.log.counters.failed(1);
        }
        submitted
    }

    fn shutdown(&self) -> Result<()> {
        let (reply, ticket) = oneshot::channel();
        let synced = self
            .submit(Request::Sync { reply })
            .and_then(|()| AppendTicket(ticket).wait());
        // Dropping the sender ends the writer, whose end drops the indexer's sender.
        self.requests.lock().take();
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
        match synced {
            Err(StoreError::Closed) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// The active segment of a family as a backup may copy it right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSegmentFile {
    pub path: PathBuf,
    /// Bytes from the start of the file (header included) up to the end of the last
    /// transaction known to be on disk. Everything below is whole transactions and never
    /// changes again; what follows may be a batch being written.
    pub committed_bytes: u64,
}

pub struct ContextStore {
    name: String,
    events: Family,
    snapshots: Family,
    /// Which registry of deletion holds this store obeys; see [`ContextStore::deletions_held`].
    deletion_holds: RwLock<Arc<DeletionHolds>>,
}

impl ContextStore {
    /// Opens (recovering if needed) the stores of `name` in Axon's layout:
    /// `events_dir` holds `*.events`, `snapshots_dir` holds `*.snapshots` (may be the same).
    pub fn open(
        name: &str,
        events_dir: PathBuf,
        snapshots_dir: PathBuf,
        events: StoreConfig,
        snapshots: StoreConfig,
    ) -> Result<Arc<ContextStore>> {
        let sequence_cache = events.sequence_cache_entries;
        let events = Family::open(SegmentKind::Events, &events_dir, &events, name, |log| {
            Box::new(SequenceValidator::new(log.clone(), sequence_cache))
        })?;
        let event_log = events.log.clone();
        let snapshots = Family::open(SegmentKind::Snapshots, &snapshots_dir, &snapshots, name, |_| {
            Box::new(SnapshotValidator::new(event_log))
        })?;
        Ok(Arc::new(ContextStore {
            name: name.to_string(),
            events,
            snapshots,
            deletion_holds: RwLock::new(DeletionHolds::global()),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends one transaction. The events are checked here (valid `Event` messages);
    /// sequence numbers are checked by the writer, atomically for the whole transaction.
    pub fn append(&self, events: Vec<Bytes>) -> Result<AppendTicket> {
        self.events.append(prepare(SegmentKind::Events, events))
    }

    /// Appends one transaction of events already checked by [`PreparedEvent::event`] (as the
    /// gRPC layer does while they arrive, so each event is walked once).
    pub fn append_prepared(&self, events: Vec<PreparedEvent>) -> Result<AppendTicket> {
        self.events.append(Ok(events))
    }

    /// Appends a snapshot (its `snapshot` flag is whatever the client sent).
    pub fn append_snapshot(&self, snapshot: Bytes) -> Result<AppendTicket> {
        self.snapshots.append(prepare(SegmentKind::Snapshots, vec![snapshot]))
    }

    /// Appends a snapshot already checked by [`PreparedEvent::snapshot`].
    pub fn append_prepared_snapshot(&self, snapshot: PreparedSnapshot) -> Result<AppendTicket> {
        self.snapshots.append(Ok(vec![snapshot.into_inner()]))
    }

    /// Last token, -1 when empty.
    pub fn last_token(&self) -> i64 {
        self.events.log.head() as i64 - 1
    }

    /// First token still stored (0 unless the oldest segments were removed).
    pub fn first_token(&self) -> i64 {
        self.events.log.first_token() as i64
    }

    /// The token the next event will get.
    pub fn head(&self) -> u64 {
        self.events.log.head()
    }

    /// The token the next snapshot will get.
    pub fn snapshot_head(&self) -> u64 {
        self.snapshots.log.head()
    }

    /// Reads up to `max_events` events from `cursor`, never past the last durable event.
    pub fn read_events(&self, cursor: &mut Cursor, max_events: usize, out: &mut Vec<(u64, Bytes)>) -> Result<()> {
        let before = out.len();
        let result = self.events.log.read(cursor, max_events, out);
        // Counted even after an error: what reached `out` before it is the caller's.
        self.events.log.counters.read(out.len() - before);
        result
    }

    /// Reads up to `max` snapshots from `cursor` in token order, never past the last durable
    /// one (a cluster sends them to a member that lacks them).
    pub fn read_snapshots(&self, cursor: &mut Cursor, max: usize, out: &mut Vec<(u64, Bytes)>) -> Result<()> {
        let before = out.len();
        let result = self.snapshots.log.read(cursor, max, out);
        self.snapshots.log.counters.read(out.len() - before);
        result
    }

    /// ListAggregateEvents: events with `initial_sequence <= seq <= max_sequence`
    /// (`max_sequence <= 0`: no upper bound). With `allow_snapshots`, the latest snapshot at or
    /// after `initial_sequence` comes first and only later events follow.
    pub fn aggregate_events(
        &self,
        aggregate: &str,
        initial_sequence: i64,
        max_sequence: i64,
        allow_snapshots: bool,
        min_token: i64,
    ) -> Result<Vec<Bytes>> {
        let last = if max_sequence <= 0 { i64::MAX } else { max_sequence };
        let min_token = u64::try_from(min_token).unwrap_or(0);
        let mut out = Vec::new();
        let mut first = initial_sequence;
        if allow_snapshots {
            let upper = last.saturating_add(1);
            let latest = self
                .snapshots
                .log
                .aggregate_events_descending(aggregate, initial_sequence, upper, 1)?;
            if let Some(snapshot) = latest.into_iter().next() {
                let fields = EventFields::parse(&snapshot)
                    .map_err(|e| StoreError::corrupt(self.snapshots.log.dir().to_path_buf(), 0, e))?;
                first = fields.aggregate_sequence_number.saturating_add(1);
                out.push(snapshot);
            }
        }
        let events = self.events.log.aggregate_events(aggregate, first, last, min_token)?;
        self.snapshots.log.counters.read(out.len());
        self.events.log.counters.read(events.len());
        out.extend(events);
        Ok(out)
    }

    /// ListAggregateSnapshots: `initial_sequence <= seq < max_sequence`, highest first, at most
    /// `max_results` (0 = all).
    pub fn aggregate_snapshots(
        &self,
        aggregate: &str,
        initial_sequence: i64,
        max_sequence: i64,
        max_results: usize,
    ) -> Result<Vec<Bytes>> {
        let snapshots =
            self.snapshots
                .log
                .aggregate_events_descending(aggregate, initial_sequence, max_sequence, max_results)?;
        self.snapshots.log.counters.read(snapshots.len());
        Ok(snapshots)
    }

    /// Highest sequence number of an aggregate's events, -1 if it has none.
    pub fn highest_sequence(&self, aggregate: &str) -> Result<i64> {
        Ok(self.events.log.highest_sequence(aggregate)?.unwrap_or(-1))
    }

    /// GetTokenAt (see `SegmentLog::token_at`).
    pub fn token_at(&self, instant_ms: i64) -> Result<i64> {
        self.events.log.token_at(instant_ms)
    }

    /// Calls `listener` with the new head after every event commit (on the writer thread).
    pub fn on_commit(&self, listener: Box<dyn Fn(u64) + Send + Sync>) {
        self.events.log.on_commit(listener);
    }

    /// Why appends are refused, if they are.
    pub fn poisoned(&self) -> Option<String> {
        self.events.log.poisoned().or_else(|| self.snapshots.log.poisoned())
    }

    /// Closed segments ready for backup (data, index and bloom files), and the active segment.
    pub fn segment_files(&self, kind: SegmentKind) -> (Vec<(u64, Vec<PathBuf>)>, PathBuf) {
        let log = self.log(kind);
        (log.closed_files(), log.active_path())
    }

    /// The active segment of `kind` and how much of it is committed and synced, read at once.
    pub fn active_segment(&self, kind: SegmentKind) -> ActiveSegmentFile {
        let (path, committed_bytes) = self.log(kind).active_synced();
        ActiveSegmentFile { path, committed_bytes }
    }

    /// Bytes of the active segment file of `kind` up to its last committed, synced transaction
    /// (see [`ActiveSegmentFile::committed_bytes`]).
    pub fn active_committed_len(&self, kind: SegmentKind) -> u64 {
        self.active_segment(kind).committed_bytes
    }

    /// Whether a deletion hold (a backup lease) is live: every operation that deletes or
    /// rewrites a file the backup listing answers (compaction, retention, the cluster's log
    /// cleaning) must call this first and leave the files alone while it says true.
    ///
    /// The registry is [`DeletionHolds::global`] unless [`ContextStore::set_deletion_holds`]
    /// chose another. A process-wide default rather than a parameter of `open`: a store opened
    /// anywhere in the server (configuration, `POST /v1/context`, tests, tools) obeys the
    /// server's leases without being wired to them, and forgetting to wire one cannot make it
    /// delete under a running backup.
    pub fn deletions_held(&self) -> bool {
        self.deletion_holds.read().is_held(std::time::Instant::now())
    }

    /// Makes this store obey `holds` instead of the process-wide registry (tests run several
    /// servers in one process, each with its own leases).
    pub fn set_deletion_holds(&self, holds: Arc<DeletionHolds>) {
        *self.deletion_holds.write() = holds;
    }

    /// The registry of deletion holds this store obeys.
    pub fn deletion_holds(&self) -> Arc<DeletionHolds> {
        self.deletion_holds.read().clone()
    }

    /// Closed segments of `kind`, whether or not their index files are written yet.
    pub fn closed_segment_count(&self, kind: SegmentKind) -> usize {
        self.log(kind).closed_segment_count()
    }

    /// Counters since the process started and the current size of both stores. Cheap enough
    /// for every scrape: atomic loads, plus one `stat` per file of a closed segment found at
    /// startup, the first time only.
    pub fn metrics(&self) -> StoreMetrics {
        StoreMetrics {
            events: self.events.log.metrics(),
            snapshots: self.snapshots.log.metrics(),
        }
    }

    fn log(&self, kind: SegmentKind) -> &SegmentLog {
        match kind {
            SegmentKind::Events => &self.events.log,
            SegmentKind::Snapshots => &self.snapshots.log,
        }
    }

    /// Finishes queued appends, syncs, and stops the writer and index threads.
    pub fn shutdown(&self) -> Result<()> {
        let events = self.events.shutdown();
        let snapshots = self.snapshots.shutdown();
        events.and(snapshots)
    }
}

impl Drop for ContextStore {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Checks each event and reads its indexed fields, on the caller's thread.
fn prepare(kind: SegmentKind, events: Vec<Bytes>) -> Result<Vec<PreparedEvent>> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| {
            PreparedEvent::prepare(kind, bytes).map_err(|e| StoreError::InvalidEvent {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_with_a_setting_out_of_range_is_refused_before_any_file_is_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("default");
        let bad = StoreConfig {
            max_batch_bytes: 0,
            ..StoreConfig::default()
        };
        let opened = ContextStore::open("default", data.clone(), data.clone(), bad, StoreConfig::default());
        match opened {
            Err(StoreError::InvalidArgument(message)) => assert!(message.contains("max_batch_bytes"), "{message}"),
            Err(other) => panic!("expected InvalidArgument, got {other}"),
            Ok(_) => panic!("a store opened with max_batch_bytes = 0"),
        }
        assert!(!data.exists(), "nothing was created");
    }
}
