//! `SegmentLog`: one segment family (events or snapshots) of one context — the shared state
//! readers use and the single writer publishes into.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;
use myelin_format::bloom::Bloom;
use myelin_format::event::EventFields;
use myelin_format::index::{IndexPosition, SeekEntry};
use myelin_format::segment::{FILE_HEADER_BYTES, SegmentKind};
use parking_lot::{Mutex, RwLock};
use tracing::warn;

use crate::closed_index::LoadedIndex;
use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::metrics::{FamilyCounters, FamilyMetrics};
use crate::reader::ChunkReader;
use crate::segments::{ClosedSegment, Located, OpenFiles, Segments};
use crate::verified::VerifiedBlocks;

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

/// Loaded index tables, bounded by bytes and by count (each holds its file open).
struct IndexCache {
    entries: LruCache<u64, Arc<LoadedIndex>>,
    bytes: usize,
    limit_bytes: usize,
    limit_entries: usize,
}

impl IndexCache {
    fn get(&mut self, first_token: u64) -> Option<Arc<LoadedIndex>> {
        self.entries.get(&first_token).cloned()
    }

    fn put(&mut self, first_token: u64, index: Arc<LoadedIndex>) {
        self.bytes += index.memory_bytes();
        if let Some(old) = self.entries.put(first_token, index) {
            self.bytes -= old.memory_bytes();
        }
        while (self.bytes > self.limit_bytes || self.entries.len() > self.limit_entries) && self.entries.len() > 1 {
            match self.entries.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.memory_bytes(),
                None => break,
            }
        }
    }
}

/// Whether an event of this family goes into the aggregate index.
pub(crate) fn is_indexed(kind: SegmentKind, fields: &EventFields<'_>) -> bool {
    match kind {
        // Axon indexes "domain events": those with an aggregate type.
        SegmentKind::Events => fields.is_domain_event(),
        SegmentKind::Snapshots => !fields.aggregate_identifier.is_empty(),
    }
}

/// A position in the token stream for tracking reads.
pub struct Cursor {
    next_token: u64,
    /// Segment first token, block offset and the token of that block.
    resume: Option<(u64, u64, u64)>,
    reader: Option<(u64, ChunkReader)>,
}

impl Cursor {
    pub fn new(next_token: u64) -> Self {
        Cursor {
            next_token,
            resume: None,
            reader: None,
        }
    }

    /// The token the next read starts at.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }
}

/// One aggregate's events in one segment, found through the indexes.
struct Found {
    segment: Located,
    positions: Vec<IndexPosition>,
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
            index_cache: Mutex::new(IndexCache {
                entries: LruCache::unbounded(),
                bytes: 0,
                limit_bytes,
                limit_entries: open_segment_files,
            }),
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

    /// Reads up to `max_events` events from the cursor's position, never past the head.
    pub fn read(&self, cursor: &mut Cursor, max_events: usize, out: &mut Vec<(u64, Bytes)>) -> Result<()> {
        let head = self.head();
        let wanted = out.len() + max_events;
        while out.len() < wanted && cursor.next_token < head {
            let (located, first_segment) = {
                let segments = self.segments.read();
                (segments.locate(cursor.next_token), segments.first_token())
            };
            cursor.next_token = cursor.next_token.max(first_segment);
            let progressed = self.read_segment(located, cursor, wanted, out)?;
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    /// Reads from one segment; false when it had nothing more (the active one at its end).
    fn read_segment(
        &self,
        located: Located,
        cursor: &mut Cursor,
        wanted: usize,
        out: &mut Vec<(u64, Bytes)>,
    ) -> Result<bool> {
        let (segment_first, path, file, limit, end_token) = match &located {
            Located::Active(active) => {
                let view = active.view.read();
                (
                    active.first_token,
                    active.path.clone(),
                    active.file.clone(),
                    view.end,
                    active.first_token + view.count,
                )
            }
            Located::Closed(closed) => {
                let (file, len) = self.open_files.get(closed)?;
                (closed.first_token, closed.path.clone(), file, len, closed.end_token())
            }
        };
        let (mut offset, mut token) = match cursor.resume {
            Some((segment, offset, token)) if segment == segment_first && token <= cursor.next_token => (offset, token),
            _ => self.seek(&located, cursor.next_token)?,
        };
        if !matches!(&cursor.reader, Some((segment, _)) if *segment == segment_first) {
            cursor.reader = Some((segment_first, ChunkReader::new(file, path.clone())));
        }
        let Some((_, reader)) = cursor.reader.as_mut() else {
            return Ok(false);
        };
        let start_len = out.len();
        while out.len() < wanted && token < end_token {
            let Some(block) = reader.expect_block(offset, limit)? else {
                return Err(StoreError::corrupt(
                    path.to_path_buf(),
                    offset,
                    format!("segment ends at token {token}, expected events up to {end_token}"),
                ));
            };
            let count = block.count as u64;
            if token + count > cursor.next_token {
                let skip = cursor.next_token.saturating_sub(token) as usize;
                for (i, (_, event)) in block.events().enumerate().skip(skip) {
                    if out.len() >= wanted {
                        break;
                    }
                    out.push((token + i as u64, event));
                    cursor.next_token = token + i as u64 + 1;
                }
            }
            if cursor.next_token >= token + count {
                offset += block.total_bytes();
                token += count;
            }
            cursor.resume = Some((segment_first, offset, token));
        }
        if token >= end_token {
            cursor.next_token = cursor.next_token.max(end_token);
        }
        Ok(out.len() > start_len || matches!(located, Located::Closed(_)))
    }

    /// The block to start reading from to reach `token`: the last sampled block at or before it.
    fn seek(&self, located: &Located, token: u64) -> Result<(u64, u64)> {
        let entries: Vec<SeekEntry>;
        let (first, seek): (u64, &[SeekEntry]) = match located {
            Located::Active(active) => {
                entries = active.view.read().seek.clone();
                (active.first_token, &entries)
            }
            Located::Closed(closed) => {
                entries = match closed.memory_index.read().as_ref() {
                    Some(memory) => memory.seek.clone(),
                    None => match self.load_index(closed) {
                        Ok(index) => index.seek().to_vec(),
                        Err(e) if e.is_would_block() => return Err(e),
                        Err(e) => {
                            warn!(error = %e, "no usable index, reading segment from its start");
                            Vec::new()
                        }
                    },
                };
                (closed.first_token, &entries)
            }
        };
        let i = seek.partition_point(|s| s.token <= token);
        Ok(match i.checked_sub(1).map(|i| seek[i]) {
            Some(entry) => (u64::from(entry.offset), entry.token),
            None => (FILE_HEADER_BYTES as u64, first),
        })
    }

    /// Loads (and caches) the index table of a closed segment, rebuilding the index files
    /// from the segment if they are missing or damaged.
    pub(crate) fn load_index(&self, segment: &ClosedSegment) -> Result<Arc<LoadedIndex>> {
        if let Some(index) = self.index_cache.lock().get(segment.first_token) {
            return Ok(index);
        }
        let path = self.dir.join(self.kind.index_file_name(segment.first_token));
        crate::io::check_may_block(&path)?;
        let index = match LoadedIndex::open(&path, &segment.index_verified) {
            Ok(index) => index,
            Err(reason) => {
                warn!(file = %path.display(), %reason, "index file unusable, rebuilding it from the segment");
                crate::indexer::rebuild_index_files(self, segment)?;
                LoadedIndex::open(&path, &segment.index_verified)
                    .map_err(|reason| StoreError::corrupt(path.clone(), 0, reason))?
            }
        };
        let index = Arc::new(index);
        self.index_cache.lock().put(segment.first_token, index.clone());
        Ok(index)
    }

    fn bloom(&self, segment: &ClosedSegment) -> Result<Arc<Bloom>> {
        if let Some(bloom) = segment.bloom.read().as_ref() {
            return Ok(bloom.clone());
        }
        let path = self.dir.join(self.kind.bloom_file_name(segment.first_token));
        crate::io::check_may_block(&path)?;
        let loaded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Bloom::decode(&bytes).map_err(|e| e.to_string()));
        let bloom = match loaded {
            Ok(bloom) => bloom,
            Err(reason) => {
                warn!(file = %path.display(), %reason, "bloom file unusable, rebuilding it");
                crate::indexer::rebuild_index_files(self, segment)?;
                if let Some(bloom) = segment.bloom.read().as_ref() {
                    return Ok(bloom.clone());
                }
                return Err(StoreError::corrupt(path, 0, "bloom file could not be rebuilt"));
            }
        };
        let bloom = Arc::new(bloom);
        *segment.bloom.write() = Some(bloom.clone());
        Ok(bloom)
    }

    /// Positions of `aggregate` in a closed segment (empty when absent).
    fn closed_positions(&self, segment: &ClosedSegment, aggregate: &str) -> Result<Vec<IndexPosition>> {
        if let Some(memory) = segment.memory_index.read().as_ref() {
            return Ok(memory.map.get(aggregate).cloned().unwrap_or_default());
        }
        if !self.bloom(segment)?.may_contain(aggregate) {
            return Ok(Vec::new());
        }
        self.load_index(segment)?.lookup(aggregate)
    }

    /// The aggregate's positions segment by segment, newest segment first, until `enough`
    /// says the positions found so far reach back far enough.
    fn find(&self, aggregate: &str, min_token: u64, enough: impl Fn(&[IndexPosition]) -> bool) -> Result<Vec<Found>> {
        // The active segment's positions are read under the segments lock: a roll (which takes
        // that lock to move the active index into the closed list) must not happen between
        // taking the segment lists and reading the active index, or the positions of the
        // segment that just rolled would be in neither (and a just-acknowledged event missed).
        let (closed, active, active_positions) = {
            let segments = self.segments.read();
            let positions = segments.active.view.read().index.get(aggregate).cloned();
            (
                segments.closed.clone(),
                segments.active.clone(),
                positions.unwrap_or_default(),
            )
        };
        let mut found = Vec::new();
        if !active_positions.is_empty() {
            let done = enough(&active_positions);
            found.push(Found {
                segment: Located::Active(active),
                positions: active_positions,
            });
            if done {
                return Ok(found);
            }
        }
        for segment in closed.iter().rev() {
            if segment.end_token() <= min_token {
                break;
            }
            let positions = self.closed_positions(segment, aggregate)?;
            if positions.is_empty() {
                continue;
            }
            let done = enough(&positions);
            found.push(Found {
                segment: Located::Closed(segment.clone()),
                positions,
            });
            if done {
                break;
            }
        }
        Ok(found)
    }

    /// Highest sequence number of `aggregate`, through the indexes (never a scan).
    pub fn highest_sequence(&self, aggregate: &str) -> Result<Option<i64>> {
        let found = self.find(aggregate, 0, |_| true)?;
        Ok(found.first().and_then(|f| f.positions.iter().map(|p| p.sequence).max()))
    }

    /// Events of `aggregate` with `first_seq <= sequence <= last_seq`, ascending.
    pub fn aggregate_events(
        &self,
        aggregate: &str,
        first_seq: i64,
        last_seq: i64,
        min_token: u64,
    ) -> Result<Vec<Bytes>> {
        let found = self.find(aggregate, min_token, |p| {
            p.first().is_some_and(|p| p.sequence <= first_seq)
        })?;
        let mut events = Vec::new();
        for f in found.into_iter().rev() {
            let positions: Vec<IndexPosition> = f
                .positions
                .into_iter()
                .filter(|p| p.sequence >= first_seq && p.sequence <= last_seq)
                .collect();
            events.extend(self.read_positions(&f.segment, aggregate, &positions)?);
        }
        Ok(events)
    }

    /// Events of `aggregate` with `min_seq <= sequence < max_seq`, highest sequence first,
    /// at most `max_results` (0 = all). Used for snapshots, where sequences need not ascend.
    pub fn aggregate_events_descending(
        &self,
        aggregate: &str,
        min_seq: i64,
        max_seq: i64,
        max_results: usize,
    ) -> Result<Vec<Bytes>> {
        let found = self.find(aggregate, 0, |_| false)?;
        let mut candidates: Vec<(i64, usize, IndexPosition)> = Vec::new();
        for (i, f) in found.iter().enumerate() {
            candidates.extend(
                f.positions
                    .iter()
                    .filter(|p| p.sequence >= min_seq && p.sequence < max_seq)
                    .map(|p| (p.sequence, i, *p)),
            );
        }
        // Highest sequence first; for equal sequences the newest write wins.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.position.cmp(&a.2.position)));
        candidates.dedup_by_key(|c| c.0);
        if max_results > 0 {
            candidates.truncate(max_results);
        }
        let mut out = Vec::with_capacity(candidates.len());
        for (_, i, position) in candidates {
            out.extend(self.read_positions(&found[i].segment, aggregate, &[position])?);
        }
        Ok(out)
    }

    /// Reads the events at `positions`, checking that each is the event the index promised.
    /// A block is read whole and its CRC checked the first time this process reads it here;
    /// after that ([`VerifiedBlocks`]) only the event is read, within the block's event area.
    fn read_positions(&self, segment: &Located, aggregate: &str, positions: &[IndexPosition]) -> Result<Vec<Bytes>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let (segment_first, path, file, limit) = match segment {
            Located::Active(active) => (
                active.first_token,
                active.path.clone(),
                active.file.clone(),
                active.view.read().end,
            ),
            Located::Closed(closed) => {
                let (file, len) = self.open_files.get(closed)?;
                (closed.first_token, closed.path.clone(), file, len)
            }
        };
        let mut reader = ChunkReader::positioned(file.clone(), path.clone());
        let mut out = Vec::with_capacity(positions.len());
        let mut current: Option<crate::reader::VerifiedBlock> = None;
        let verified = self.verified.get_all(segment_first, positions.iter().map(|p| p.block));
        for (p, verified) in positions.iter().zip(verified) {
            let block_offset = u64::from(p.block);
            let event = if let Some(block) = current.as_ref().filter(|b| b.offset == block_offset) {
                event_in_block(block, p)
            } else if let Some(block_bytes) = verified {
                read_event(&file, &path, p, block_bytes, limit, &self.event_read_guess)?
            } else {
                current = reader.expect_block(block_offset, limit)?;
                current.as_ref().and_then(|block| {
                    let block_bytes = u32::try_from(block.total_bytes()).ok()?;
                    self.verified.insert(segment_first, p.block, block_bytes);
                    event_in_block(block, p)
                })
            };
            let Some(event) = event else {
                return Err(StoreError::corrupt(
                    path.to_path_buf(),
                    u64::from(p.position),
                    "index points at no event: rebuild the index (delete the index file)",
                ));
            };
            let fields = EventFields::parse(&event)
                .map_err(|e| StoreError::corrupt(path.to_path_buf(), u64::from(p.position), e))?;
            if fields.aggregate_identifier != aggregate || fields.aggregate_sequence_number != p.sequence {
                return Err(StoreError::corrupt(
                    path.to_path_buf(),
                    u64::from(p.position),
                    format!(
                        "index says {aggregate}#{}, event is {}#{}",
                        p.sequence, fields.aggregate_identifier, fields.aggregate_sequence_number
                    ),
                ));
            }
            out.push(event);
        }
        Ok(out)
    }

    /// Axon's GetTokenAt: the newest segment whose first event is at or before `instant_ms`,
    /// then the first token in it at or after the instant (or the next segment's first token).
    pub fn token_at(&self, instant_ms: i64) -> Result<i64> {
        let head = self.head();
        let (closed, active) = {
            let segments = self.segments.read();
            (segments.closed.clone(), segments.active.clone())
        };
        let first = closed.first().map_or(active.first_token, |s| s.first_token);
        if head == first {
            return Ok(-1);
        }
        let active_ts = active.view.read().first_timestamp;
        let mut starts: Vec<(u64, i64)> = closed.iter().map(|s| (s.first_token, s.first_timestamp)).collect();
        if active.first_token < head {
            starts.push((active.first_token, active_ts));
        }
        let Some(&(segment_first, _)) = starts.iter().rev().find(|(_, ts)| *ts <= instant_ms) else {
            return Ok(first as i64);
        };
        let mut cursor = Cursor::new(segment_first);
        let segment_end = starts
            .iter()
            .find(|(f, _)| *f > segment_first)
            .map_or(head, |(f, _)| *f);
        let mut batch = Vec::new();
        while cursor.next_token() < segment_end {
            batch.clear();
            self.read(&mut cursor, 1024, &mut batch)?;
            if batch.is_empty() {
                break;
            }
            for (token, event) in &batch {
                if *token >= segment_end {
                    break;
                }
                let fields = EventFields::parse(event).map_err(|e| StoreError::corrupt(self.dir.clone(), *token, e))?;
                if fields.timestamp >= instant_ms {
                    return Ok(*token as i64);
                }
            }
        }
        Ok(segment_end as i64)
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
        let open_files = (self.open_files.len() + self.index_cache.lock().entries.len()) as u64;
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

/// The event of a whole, verified block that `position` points at.
fn event_in_block(block: &crate::reader::VerifiedBlock, position: &IndexPosition) -> Option<Bytes> {
    let rel = position.position.checked_sub(position.block)?;
    block.events().find(|(offset, _)| *offset == rel).map(|(_, e)| e)
}

/// What [`read_event`] reads before it knows an event's length: a little more than the events
/// read lately, so that most events take one `pread` and little beyond them is copied.
/// Grows at once to fit a larger event, shrinks slowly towards smaller ones.
pub(crate) struct EventReadGuess(AtomicU32);

impl EventReadGuess {
    /// Before any event was read.
    const INITIAL_BYTES: u32 = 1024;
    /// Room left beyond the event sizes seen, and the granule of the guess.
    const SLACK_BYTES: u32 = 128;
    const MAX_BYTES: u32 = 64 * 1024;

    pub fn new() -> Self {
        EventReadGuess(AtomicU32::new(Self::INITIAL_BYTES))
    }

    fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed) as usize
    }

    /// Learns from an event that needed `needed` bytes (length prefix included).
    fn learn(&self, needed: usize) {
        let wanted = u32::try_from(needed)
            .unwrap_or(u32::MAX)
            .saturating_add(Self::SLACK_BYTES)
            .next_multiple_of(Self::SLACK_BYTES)
            .min(Self::MAX_BYTES);
        let guess = self.0.load(Ordering::Relaxed);
        // Both are whole granules, and so is every step: a sixteenth of the way, at least one.
        let next = if wanted >= guess {
            wanted
        } else {
            let gap = guess - wanted;
            guess - (gap / 16).next_multiple_of(Self::SLACK_BYTES).min(gap)
        };
        if next != guess {
            // Racing readers may overwrite each other's update: any of them is a fine guess.
            self.0.store(next, Ordering::Relaxed);
        }
    }
}

/// Reads the event whose length prefix is at `position.position`, inside the verified block of
/// `block_bytes` bytes at `position.block`. `None` when the index points outside the block's
/// event area or the length runs past it.
fn read_event(
    file: &std::fs::File,
    path: &Path,
    position: &IndexPosition,
    block_bytes: u32,
    limit: u64,
    guess: &EventReadGuess,
) -> Result<Option<Bytes>> {
    use myelin_format::segment::{BLOCK_HEADER_BYTES, CRC_BYTES, EVENT_LEN_BYTES};
    let block = u64::from(position.block);
    let area_start = block + BLOCK_HEADER_BYTES as u64;
    let area_end = (block + u64::from(block_bytes))
        .saturating_sub(CRC_BYTES as u64)
        .min(limit);
    let at = u64::from(position.position);
    if at < area_start || at + EVENT_LEN_BYTES as u64 > area_end {
        return Ok(None);
    }
    let available = (area_end - at) as usize;
    let mut buf = bytes::BytesMut::zeroed(available.min(guess.bytes()));
    let io_error = |e| StoreError::io(path.to_path_buf(), e);
    let read = crate::io::read_at_most(file, &mut buf, at).map_err(io_error)?;
    if read < buf.len() {
        return Err(StoreError::corrupt(
            path.to_path_buf(),
            at,
            format!("file ends inside a verified block ({read} of {} bytes read)", buf.len()),
        ));
    }
    let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Ok(length) = usize::try_from(length) else {
        return Ok(None);
    };
    let end = EVENT_LEN_BYTES + length;
    if end > available {
        return Ok(None);
    }
    guess.learn(end);
    if end > buf.len() {
        let have = buf.len();
        buf.resize(end, 0);
        let read = crate::io::read_at_most(file, &mut buf[have..], at + have as u64).map_err(io_error)?;
        if read < end - have {
            return Err(StoreError::corrupt(
                path.to_path_buf(),
                at,
                "file ends inside a verified block",
            ));
        }
    }
    Ok(Some(buf.freeze().slice(EVENT_LEN_BYTES..end)))
}

#[cfg(test)]
mod tests {
    use super::EventReadGuess;

    #[test]
    fn the_event_read_guess_grows_at_once_and_shrinks_slowly() {
        let guess = EventReadGuess::new();
        assert_eq!(guess.bytes(), 1024);
        guess.learn(3000);
        assert_eq!(
            guess.bytes(),
            3200,
            "a larger event: its size, slack added, in granules"
        );
        guess.learn(300);
        assert_eq!(guess.bytes(), 2944, "one smaller event moves it a sixteenth of the way");
        for _ in 0..200 {
            guess.learn(300);
        }
        assert_eq!(guess.bytes(), 512, "settles just above the events read lately");
        guess.learn(1 << 30);
        assert_eq!(guess.bytes(), 64 * 1024, "bounded: a huge event takes a second read");
    }
}
