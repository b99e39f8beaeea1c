//! `SegmentLog`: one segment family (events or snapshots) of one context — the shared state
//! readers use and the single writer publishes into.
//!
//! This file holds the family's state (head, poison, commit listeners, file listings, metrics);
//! each kind of read lives in its own file: `tracking` (token order, through a [`Cursor`]),
//! `aggregate` (one aggregate's events through the indexes), `token` (GetTokenAt), with
//! `indexes` (closed segments' index and bloom files, cached) and `event_read` (one event at an
//! index position) beneath them.

mod aggregate;
mod event_read;
mod indexes;
mod token;
mod tracking;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use myelin_format::event::EventFields;
use myelin_format::segment::SegmentKind;
use parking_lot::{Mutex, RwLock};

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::metrics::{FamilyCounters, FamilyMetrics};
use crate::segments::{OpenFiles, Segments};
use crate::verified::VerifiedBlocks;
use event_read::EventReadGuess;
use indexes::IndexCache;

pub use tracking::Cursor;

type CommitListener = Box<dyn Fn(u64) + Send + Sync>;

pub(crate) struct SegmentLog {
    pub kind: SegmentKind,
    pub dir: PathBuf,
    pub config: StoreConfig,
    pub segments: RwLock<Segments>,
    /// The token the next published event gets: everything below it is durable and readable.
    head: AtomicU64,
    poison: Mutex<Option<String>>,
    index_cache: Mutex<IndexCache>,
    /// Closed segment data files open for reading.
    pub(crate) open_files: OpenFiles,
    listeners: Mutex<Vec<CommitListener>>,
    /// Blocks aggregate reads have checked; see `read_positions`.
    verified: VerifiedBlocks,
    event_read_guess: EventReadGuess,
    /// Counted by the writer per batch and by `ContextStore` per read; see `metrics`.
    pub counters: FamilyCounters,
}

/// Whether an event of this family goes into the aggregate index.
pub(crate) fn is_indexed(kind: SegmentKind, fields: &EventFields<'_>) -> bool {
    match kind {
        // Axon indexes "domain events": those with an aggregate type.
        SegmentKind::Events => fields.is_domain_event(),
        SegmentKind::Snapshots => !fields.aggregate_identifier.is_empty(),
    }
}

impl SegmentLog {
    pub fn new(kind: SegmentKind, dir: PathBuf, config: StoreConfig, segments: Segments) -> Self {
        let head = segments.active.first_token + segments.active.view.read().count;
        let limit_bytes = config.index_cache_bytes;
        let open_segment_files = config.open_segment_files;
        let verified = VerifiedBlocks::new(config.verified_block_entries);
        SegmentLog {
            kind,
            dir,
            config,
            segments: RwLock::new(segments),
            head: AtomicU64::new(head),
            poison: Mutex::new(None),
            index_cache: Mutex::new(IndexCache::new(limit_bytes, open_segment_files)),
            open_files: OpenFiles::new(open_segment_files),
            listeners: Mutex::new(Vec::new()),
            verified,
            event_read_guess: EventReadGuess::new(),
            counters: FamilyCounters::new(),
        }
    }

    /// The token the next event gets; every token below is readable.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    pub fn first_token(&self) -> u64 {
        self.segments.read().first_token()
    }

    pub(crate) fn set_head(&self, head: u64) {
        self.head.store(head, Ordering::Release);
        for listener in self.listeners.lock().iter() {
            listener(head);
        }
    }

    /// Registers a callback run (on the writer thread, so it must be quick) after every commit
    /// with the new head.
    pub fn on_commit(&self, listener: CommitListener) {
        self.listeners.lock().push(listener);
    }

    pub fn poisoned(&self) -> Option<String> {
        self.poison.lock().clone()
    }

    pub(crate) fn poison(&self, reason: String) {
        let mut poison = self.poison.lock();
        if poison.is_none() {
            tracing::error!(dir = %self.dir.display(), %reason, "store poisoned: appends refused until restart");
            *poison = Some(reason);
        }
    }

    pub fn check_writable(&self) -> Result<()> {
        match self.poisoned() {
            Some(reason) => Err(StoreError::Poisoned(reason)),
            None => Ok(()),
        }
    }

    /// Paths of closed segments whose index files are durable, with those index files.
    pub fn closed_files(&self) -> Vec<(u64, Vec<PathBuf>)> {
        let segments = self.segments.read();
        segments
            .closed
            .iter()
            .filter(|s| s.is_indexed())
            .map(|s| {
                let files = vec![
                    s.path.to_path_buf(),
                    self.dir.join(self.kind.index_file_name(s.first_token)),
                    self.dir.join(self.kind.bloom_file_name(s.first_token)),
                ];
                (s.first_token, files)
            })
            .collect()
    }

    pub fn closed_segment_count(&self) -> usize {
        self.segments.read().closed.len()
    }

    /// The counters, plus segment count and bytes on disk from the lengths the segments know
    /// (a closed segment found at startup is `stat`ed once, the first time it is asked).
    pub fn metrics(&self) -> FamilyMetrics {
        let (closed, active_bytes) = {
            let segments = self.segments.read();
            (segments.closed.clone(), segments.active.file_bytes)
        };
        let closed_bytes: u64 = closed
            .iter()
            .map(|segment| {
                segment.disk_bytes(|| {
                    [
                        self.dir.join(self.kind.index_file_name(segment.first_token)),
                        self.dir.join(self.kind.bloom_file_name(segment.first_token)),
                    ]
                })
            })
            .sum();
        let segments = closed.len() as u64 + 1;
        let last_token = self.head() as i64 - 1;
        let poisoned = self.poisoned().is_some();
        let open_files = (self.open_files.len() + self.index_cache.lock().len()) as u64;
        FamilyMetrics {
            open_files,
            ..self
                .counters
                .snapshot(segments, closed_bytes + active_bytes, last_token, poisoned)
        }
    }

    pub fn active_path(&self) -> PathBuf {
        self.segments.read().active.path.to_path_buf()
    }

    /// The active segment's path with the offset just past its last synced transaction, read
    /// together: a segment rolled in between cannot pair one file with another's length.
    pub fn active_synced(&self) -> (PathBuf, u64) {
        let segments = self.segments.read();
        let active = &segments.active;
        let synced_end = active.view.read().synced_end;
        (active.path.to_path_buf(), synced_end)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
