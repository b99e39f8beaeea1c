//! The Raft log of one replication group: a directory of Axon Server EE log-entry segment
//! files (`myelin_format::raftlog`), appended with positional writes and made durable with
//! `fdatasync`, separately, so that readers never wait for a sync.
//!
//! * Files: `%020d.log`, named after the index of their first entry; the newest is the active
//!   segment, every older one is closed (complete, never written again except by a
//!   truncation). New files are created at the full segment size (sparse zeros), so
//!   appending never changes a file's length and an `fdatasync` has no metadata to write.
//! * Memory: the offset of every entry (4 bytes an entry), built by scanning the files at open.
//!   No `.index` side files (Axon's are MapDB files).
//! * Durability: [`LogSegments::append`] writes; [`LogSegments::sync`] (or
//!   [`pending_sync`](LogSegments::pending_sync), [`PendingSync::run`] without the lock,
//!   [`finish_sync`](LogSegments::finish_sync)) makes everything appended so far durable.
//!   Reads see appended entries before they are synced. A roll syncs the file it closes before
//!   the next one exists, so only the active segment ever holds unsynced entries.
//! * Failure: an I/O error while changing the files poisons the log: what reached the disk is
//!   unknown until it is reopened, which recovers it (see `recovery`).
//!
//! Plain records only: mapping openraft's entries onto them is the caller's business.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use myelin_format::raftlog::{self, EntryType, HEADER_LEN, MARKER_LEN, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, Slot};

use super::error::LogError;
use super::io;
use super::recovery;

/// The index of the first entry of a new log: its first file is `00000000000000000001.log`.
pub const FIRST_INDEX: u64 = 1;

/// One log entry: Raft's index and term, Axon's entry type, and that type's protobuf bytes
/// (for [`EntryType::DummyEntry`], `"X"`). The index is not stored in the file: it is the
/// entry's position after its file's first index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub index: u64,
    pub term: u64,
    pub kind: EntryType,
    pub data: Bytes,
}

/// One segment file and where its entries are.
#[derive(Debug)]
pub(super) struct Segment {
    first_index: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where each entry starts: entry `first_index + k` at `offsets[k]`. The format's offsets
    /// are Java `int`s, so `u32` holds them all.
    offsets: Vec<u32>,
    /// Where the last entry ends: the next entry, or the closing marker, goes here.
    end: u64,
    /// The file's length. Nothing is written at or past it.
    capacity: u64,
}

impl Segment {
    pub(super) fn new(
        first_index: u64,
        path: PathBuf,
        file: File,
        offsets: Vec<u32>,
        end: usize,
        capacity: u64,
    ) -> Segment {
        debug_assert!(offsets.first().is_none_or(|first| *first as usize == HEADER_LEN));
        debug_assert!(end as u64 <= capacity);
        Segment {
            first_index,
            path,
            file: Arc::new(file),
            offsets,
            end: end as u64,
            capacity,
        }
    }

    /// A segment without entries.
    pub(super) fn empty(first_index: u64, path: PathBuf, file: File, capacity: u64) -> Segment {
        Segment::new(first_index, path, file, Vec::new(), HEADER_LEN, capacity)
    }

    /// The index the next entry written here would get.
    pub(super) fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    fn last_index(&self) -> Option<u64> {
        if self.offsets.is_empty() {
            None
        } else {
            Some(self.next_index() - 1)
        }
    }

    /// Where entry `index` starts, if it is in this segment.
    fn offset_of(&self, index: u64) -> Option<u64> {
        let ordinal = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        self.offsets.get(ordinal).map(|offset| u64::from(*offset))
    }

    /// Where entry `index` ends, if it is in this segment.
    fn end_of(&self, index: u64) -> Option<u64> {
        match self.offset_of(index.checked_add(1)?) {
            Some(next) => Some(next),
            None if self.last_index() == Some(index) => Some(self.end),
            None => None,
        }
    }

    /// Whether `bytes` more fit after the last entry, leaving room for the closing marker.
    fn fits(&self, bytes: u64) -> bool {
        self.end + bytes + MARKER_LEN as u64 <= self.capacity
    }
}

/// The segment files of a log, as [`LogSegments::files`] lists them (absolute paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFiles {
    /// `(first index, path)` of every closed segment, newest first. Complete: a backup copies
    /// them whole.
    pub closed: Vec<(u64, PathBuf)>,
    /// `(first index, path)` of the active segment. Only its first
    /// [`active_synced_len`](LogSegments::active_synced_len) bytes are durable entries.
    pub active: (u64, PathBuf),
}

/// One replication group's log directory, open for appending. Wrap it in
/// `Arc<parking_lot::RwLock<_>>`: reads take `&self`, changes `&mut self`, and the only slow
/// step of an append (the sync) can run without the lock.
#[derive(Debug)]
pub struct LogSegments {
    dir: PathBuf,
    segment_size_bytes: u64,
    /// Complete segments, oldest first, each holding at least one entry.
    closed: Vec<Segment>,
    /// The newest segment, where entries are appended.
    active: Segment,
    /// The term of the last entry, if there is one.
    last_term: Option<u64>,
    /// The last index known durable (with every one before it).
    synced_index: Option<u64>,
    /// Bytes of the active file known durable: up to the end of its last synced entry.
    active_synced_len: u64,
    /// Counts truncations and resets, so that a sync begun before one does not claim entries
    /// written after it.
    epoch: u64,
    /// Why the log accepts no more changes, after a failed write or sync.
    poisoned: Option<String>,
}

/// A sync taken under the lock ([`LogSegments::pending_sync`]) to run without it
/// ([`PendingSync::run`]): the active file, and how far the log reached when it was taken.
#[derive(Debug)]
pub struct PendingSync {
    path: PathBuf,
    /// `None` when everything is durable already.
    file: Option<Arc<File>>,
    through_index: Option<u64>,
    segment_first_index: u64,
    end: u64,
    epoch: u64,
}

impl PendingSync {
    /// The last index this sync makes durable (`None`: the log is empty).
    pub fn through_index(&self) -> Option<u64> {
        self.through_index
    }

    /// Whether there is anything to sync.
    pub fn is_needed(&self) -> bool {
        self.file.is_some()
    }

    /// `fdatasync`s the active file (needs no lock). Hand the outcome to
    /// [`LogSegments::finish_sync`].
    pub fn run(self) -> SyncDone {
        let result = match &self.file {
            Some(file) => io::sync_data(&self.path, file),
            None => Ok(()),
        };
        SyncDone { pending: self, result }
    }
}

/// The outcome of a [`PendingSync`], for [`LogSegments::finish_sync`].
#[derive(Debug)]
#[must_use = "give it to LogSegments::finish_sync: a failed sync must poison the log"]
pub struct SyncDone {
    pending: PendingSync,
    result: Result<(), LogError>,
}

impl LogSegments {
    /// Opens (creating it durably if missing) the log directory `dir`, whose new segments are
    /// `segment_size_bytes` long, and recovers it: every closed segment is checked whole, a
    /// torn write at the end of the active one is cut off, and anything else that does not
    /// read back as written is [`LogError::Corrupt`]. An empty directory gets its first
    /// segment, `00000000000000000001.log`.
    pub fn open(dir: impl AsRef<Path>, segment_size_bytes: u64) -> Result<LogSegments, LogError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_size_bytes) {
            return Err(LogError::InvalidSegmentSize {
                bytes: segment_size_bytes,
                min: MIN_SEGMENT_BYTES,
                max: MAX_SEGMENT_BYTES,
            });
        }
        let dir = std::path::absolute(dir.as_ref()).map_err(|e| LogError::io(dir.as_ref(), e))?;
        myelin_fsutil::create_dir_all_durably(&dir).map_err(|e| LogError::io(&dir, e))?;
        let recovered = recovery::recover(&dir, segment_size_bytes)?;
        let mut log = LogSegments {
            dir,
            segment_size_bytes,
            closed: recovered.closed,
            active_synced_len: recovered.active.end,
            active: recovered.active,
            last_term: recovered.last_term,
            synced_index: None,
            epoch: 0,
            poisoned: None,
        };
        // Recovery synced the active file: everything found is durable.
        log.synced_index = log.last_index();
        Ok(log)
    }

    /// The log's directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The length new segment files are created with.
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size_bytes
    }

    /// The index of the oldest entry; `None` when the log holds none.
    pub fn first_index(&self) -> Option<u64> {
        self.last_index()?;
        Some(self.closed.first().unwrap_or(&self.active).first_index)
    }

    /// The index of the newest entry; `None` when the log holds none.
    pub fn last_index(&self) -> Option<u64> {
        self.active
            .last_index()
            .or_else(|| self.closed.last().and_then(Segment::last_index))
    }

    /// The term of the newest entry; `None` when the log holds none.
    pub fn last_term(&self) -> Option<u64> {
        self.last_term
    }

    /// The index the next appended entry must have.
    pub fn next_index(&self) -> u64 {
        self.active.next_index()
    }

    /// The last index known durable, with every entry before it; `None` when no entry is.
    pub fn synced_index(&self) -> Option<u64> {
        self.synced_index
    }

    /// Bytes of the active file that hold durable entries: the header and every entry up to
    /// the last synced one. A backup copies this much of the active file.
    pub fn active_synced_len(&self) -> u64 {
        self.active_synced_len
    }

    /// Whether a failed write or sync stopped the log from accepting changes.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The segment files (absolute paths).
    pub fn files(&self) -> SegmentFiles {
        SegmentFiles {
            closed: self
                .closed
                .iter()
                .rev()
                .map(|segment| (segment.first_index, segment.path.clone()))
                .collect(),
            active: (self.active.first_index, self.active.path.clone()),
        }
    }

    /// Appends `records`, whose indexes must run on from [`next_index`](Self::next_index) and
    /// whose terms must not decrease. Writes them (visible to reads at once) but does not make
    /// them durable: see [`sync`](Self::sync). Every record is checked before anything is
    /// written, so a refused batch changes nothing; a failed write poisons the log.
    pub fn append(&mut self, records: &[Record]) -> Result<(), LogError> {
        self.check_writable()?;
        self.check_records(records)?;
        let written = self.write_records(records);
        self.poison_on_error(written)
    }

    /// Makes everything appended so far durable (`fdatasync` of the active file) and returns
    /// the last durable index. Holds `&mut self` throughout; to sync without holding a lock,
    /// use [`pending_sync`](Self::pending_sync) and [`finish_sync`](Self::finish_sync).
    pub fn sync(&mut self) -> Result<Option<u64>, LogError> {
        let pending = self.pending_sync()?;
        let done = pending.run();
        self.finish_sync(done)
    }

    /// What a sync of everything appended so far has to do. Run it without the lock.
    pub fn pending_sync(&self) -> Result<PendingSync, LogError> {
        self.check_writable()?;
        let needed = self.active.end > self.active_synced_len;
        Ok(PendingSync {
            path: self.active.path.clone(),
            file: needed.then(|| Arc::clone(&self.active.file)),
            through_index: self.last_index(),
            segment_first_index: self.active.first_index,
            end: self.active.end,
            epoch: self.epoch,
        })
    }

    /// Records the outcome of a [`PendingSync`] and returns the last durable index. A failed
    /// sync poisons the log: the kernel may have dropped the pages it could not write, so a
    /// later sync that succeeds would not mean they are on disk.
    pub fn finish_sync(&mut self, done: SyncDone) -> Result<Option<u64>, LogError> {
        let SyncDone { pending, result } = done;
        self.poison_on_error(result)?;
        self.check_writable()?;
        // After a truncation or reset the synced entries may be gone, and the ones in their
        // place were not synced by this: the truncation synced what it kept itself.
        if pending.epoch == self.epoch {
            self.synced_index = self.synced_index.max(pending.through_index);
            if pending.segment_first_index == self.active.first_index {
                self.active_synced_len = self.active_synced_len.max(pending.end);
            }
        }
        Ok(self.synced_index)
    }

    /// The records with indexes in `from..to_exclusive` that the log holds (appended, synced
    /// or not), in order. Every entry's CRC is verified: damage is [`LogError::Corrupt`].
    pub fn read(&self, from: u64, to_exclusive: u64) -> Result<Vec<Record>, LogError> {
        let Some(first) = self.first_index() else {
            return Ok(Vec::new());
        };
        let from = from.max(first);
        let to = to_exclusive.min(self.next_index());
        let mut records = Vec::with_capacity(usize::try_from(to.saturating_sub(from)).unwrap_or(0).min(1024));
        let mut index = from;
        while index < to {
            let segment = self.segment_of(index).ok_or(LogError::OutOfRange {
                index,
                first,
                next: self.next_index(),
            })?;
            let until = to.min(segment.next_index());
            read_entries(segment, index, until, &mut records)?;
            index = until;
        }
        Ok(records)
    }

    /// The record at `index`; `None` when the log does not hold it.
    pub fn entry(&self, index: u64) -> Result<Option<Record>, LogError> {
        Ok(self.read(index, index.saturating_add(1))?.pop())
    }

    /// Removes the entries from `index` on (inclusive), durably: later segments are deleted,
    /// newest first, and the tail of the segment that keeps entries is zeroed and synced (it
    /// becomes the active segment). Truncating from the first index empties the log, whose
    /// next index is then `index`. Nothing to do when `index` is past the last entry; an
    /// `index` before the first entry is [`LogError::OutOfRange`].
    pub fn truncate_from(&mut self, index: u64) -> Result<(), LogError> {
        self.check_writable()?;
        let next = self.next_index();
        if index >= next {
            return Ok(());
        }
        let first = self.first_index().unwrap_or(next);
        if index < first {
            return Err(LogError::OutOfRange { index, first, next });
        }
        let last_term = match index.checked_sub(1).filter(|kept| *kept >= first) {
            Some(kept) => self.entry(kept)?.map(|record| record.term),
            None => None,
        };
        let truncated = self.truncate_files(index);
        self.poison_on_error(truncated)?;
        self.last_term = last_term;
        // Closed segments were synced when they were closed, the active one just now.
        self.synced_index = self.last_index();
        self.active_synced_len = self.active.end;
        self.epoch += 1;
        Ok(())
    }

    /// Deletes the closed segments whose entries all have indexes up to `index`, oldest first
    /// and durably, and returns their paths. Never deletes the active segment.
    pub fn remove_closed_through(&mut self, index: u64) -> Result<Vec<PathBuf>, LogError> {
        self.check_writable()?;
        let mut removed = Vec::new();
        while let Some(oldest) = self.closed.first()
            && oldest.last_index().is_some_and(|last| last <= index)
        {
            let path = oldest.path.clone();
            let result = io::remove_durably(&path);
            self.poison_on_error(result)?;
            self.closed.remove(0);
            removed.push(path);
        }
        Ok(removed)
    }

    /// Deletes every segment and starts an empty log whose next entry is `next_index`, in a
    /// new file of that name (after installing a snapshot that ends at `next_index - 1`).
    /// Segments are deleted newest first, then the new file is created: a crash part-way
    /// leaves a shorter log, or an empty one at index 1, and the caller, which recorded the
    /// snapshot first, resets again.
    pub fn reset(&mut self, next_index: u64) -> Result<(), LogError> {
        self.check_writable()?;
        let reset = self.reset_files(next_index);
        self.poison_on_error(reset)?;
        self.last_term = None;
        self.synced_index = None;
        self.active_synced_len = self.active.end;
        self.epoch += 1;
        Ok(())
    }

    fn check_writable(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(cause) => Err(LogError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    fn poison_on_error<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(error) = &result
            && self.poisoned.is_none()
        {
            tracing::error!(dir = %self.dir.display(), %error, "the Raft log accepts no more changes until it is reopened");
            self.poisoned = Some(error.to_string());
        }
        result
    }

    /// Refuses a batch the log cannot take, before anything is written.
    fn check_records(&self, records: &[Record]) -> Result<(), LogError> {
        let mut expected = self.next_index();
        let mut previous_term = self.last_term;
        let max_bytes = raftlog::max_entry_len(self.segment_size_bytes);
        for record in records {
            let index = record.index;
            let invalid = |reason: String| LogError::InvalidRecord { index, reason };
            if index != expected {
                return Err(LogError::OutOfOrder { index, expected });
            }
            if record.data.is_empty() {
                return Err(invalid("an entry needs at least one data byte".into()));
            }
            if i64::try_from(record.term).is_err() {
                return Err(invalid(format!("term {} does not fit the format's i64", record.term)));
            }
            if let Some(previous) = previous_term
                && record.term < previous
            {
                return Err(invalid(format!(
                    "term {} after term {previous}: a Raft log's terms never decrease",
                    record.term
                )));
            }
            let entry_bytes = raftlog::entry_len(record.data.len()) as u64;
            if entry_bytes > max_bytes {
                return Err(LogError::TooLarge {
                    index,
                    entry_bytes,
                    max_bytes,
                });
            }
            previous_term = Some(record.term);
            expected = expected
                .checked_add(1)
                .ok_or_else(|| invalid("the last index a log can hold".into()))?;
        }
        Ok(())
    }

    /// Encodes and writes checked records, as few `pwrite`s as the segments allow.
    fn write_records(&mut self, records: &[Record]) -> Result<(), LogError> {
        let mut batch = Batch::default();
        for record in records {
            let entry_bytes = raftlog::entry_len(record.data.len()) as u64;
            if !self.active.fits(batch.bytes.len() as u64 + entry_bytes) {
                self.write_batch(&mut batch)?;
                self.make_room()?;
            }
            let offset = self.active.end + batch.bytes.len() as u64;
            let offset = u32::try_from(offset).map_err(|_| LogError::TooLarge {
                index: record.index,
                entry_bytes,
                max_bytes: raftlog::max_entry_len(self.segment_size_bytes),
            })?;
            raftlog::encode_entry(record.term, record.kind, &record.data, &mut batch.bytes).map_err(|error| {
                LogError::InvalidRecord {
                    index: record.index,
                    reason: error.to_string(),
                }
            })?;
            batch.offsets.push(offset);
            batch.last_term = Some(record.term);
        }
        self.write_batch(&mut batch)
    }

    /// Writes the encoded entries at the end of the active segment, then makes them readable.
    fn write_batch(&mut self, batch: &mut Batch) -> Result<(), LogError> {
        if batch.bytes.is_empty() {
            return Ok(());
        }
        let active = &mut self.active;
        io::write_at(&active.path, &active.file, &batch.bytes, active.end)?;
        active.offsets.append(&mut batch.offsets);
        active.end += batch.bytes.len() as u64;
        batch.bytes.clear();
        if let Some(term) = batch.last_term.take() {
            self.last_term = Some(term);
        }
        Ok(())
    }

    /// Makes the active segment able to take an entry that did not fit: an empty one (a short
    /// file reopened) is lengthened to the segment size, which every accepted entry fits;
    /// otherwise the log rolls to a new segment.
    fn make_room(&mut self) -> Result<(), LogError> {
        if self.active.offsets.is_empty() {
            let size_bytes = self.segment_size_bytes.max(self.active.capacity);
            io::grow(&self.active.path, &self.active.file, size_bytes)?;
            self.active.capacity = size_bytes;
            return Ok(());
        }
        self.roll()
    }

    /// Closes the active segment (the `-1` marker when there is room for it) and starts the
    /// next one, named after the next index. The closed file is synced before the new one
    /// exists: after a crash, every segment but the newest is complete.
    fn roll(&mut self) -> Result<(), LogError> {
        let closing = &self.active;
        if closing.end + MARKER_LEN as u64 <= closing.capacity {
            io::write_at(
                &closing.path,
                &closing.file,
                &raftlog::encode_end_of_segment(),
                closing.end,
            )?;
        }
        io::sync_data(&closing.path, &closing.file)?;
        self.synced_index = self.synced_index.max(closing.last_index());
        self.active_synced_len = closing.end;
        let next_index = closing.next_index();
        let path = self.dir.join(raftlog::file_name(next_index));
        let file = io::create_segment(&path, self.segment_size_bytes)?;
        let next = Segment::empty(next_index, path, file, self.segment_size_bytes);
        let closed = std::mem::replace(&mut self.active, next);
        self.active_synced_len = self.active.end;
        self.closed.push(closed);
        Ok(())
    }

    fn truncate_files(&mut self, index: u64) -> Result<(), LogError> {
        // Newest first: a crash part-way leaves a log that is only longer than asked for, and
        // still contiguous. The oldest segment stays, emptied, to keep the next index.
        while self.active.first_index >= index
            && let Some(previous) = self.closed.pop()
        {
            let removed = std::mem::replace(&mut self.active, previous);
            io::remove_durably(&removed.path)?;
        }
        let active = &mut self.active;
        let from = active.offset_of(index).unwrap_or(active.end);
        // The removed entries, and the closing marker if this segment had been closed.
        let to = (active.end + MARKER_LEN as u64).min(active.capacity);
        io::zero_range(&active.path, &active.file, from, to)?;
        io::sync_data(&active.path, &active.file)?;
        let kept = usize::try_from(index.saturating_sub(active.first_index)).unwrap_or(usize::MAX);
        active.offsets.truncate(kept);
        active.end = from;
        Ok(())
    }

    fn reset_files(&mut self, next_index: u64) -> Result<(), LogError> {
        io::remove_durably(&self.active.path)?;
        while let Some(segment) = self.closed.pop() {
            io::remove_durably(&segment.path)?;
        }
        let path = self.dir.join(raftlog::file_name(next_index));
        let file = io::create_segment(&path, self.segment_size_bytes)?;
        self.active = Segment::empty(next_index, path, file, self.segment_size_bytes);
        Ok(())
    }

    /// The segment holding entry `index`.
    fn segment_of(&self, index: u64) -> Option<&Segment> {
        let segment = if index >= self.active.first_index {
            &self.active
        } else {
            let after = self.closed.partition_point(|segment| segment.first_index <= index);
            self.closed.get(after.checked_sub(1)?)?
        };
        (index < segment.next_index()).then_some(segment)
    }
}

/// Entries encoded for one `pwrite`.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    last_term: Option<u64>,
}

/// Reads entries `from..to` of one segment with one `pread`, verifying each.
fn read_entries(segment: &Segment, from: u64, to: u64, out: &mut Vec<Record>) -> Result<(), LogError> {
    let missing = || LogError::OutOfRange {
        index: from,
        first: segment.first_index,
        next: segment.next_index(),
    };
    let start = segment.offset_of(from).ok_or_else(missing)?;
    let end = segment.end_of(to - 1).ok_or_else(missing)?;
    let len = usize::try_from(end - start).map_err(|_| missing())?;
    let bytes = Bytes::from(io::read_at(&segment.path, &segment.file, start, len)?);
    for index in from..to {
        let (Some(offset), Some(entry_end)) = (segment.offset_of(index), segment.end_of(index)) else {
            return Err(missing());
        };
        let corrupt = |reason: String| LogError::corrupt(&segment.path, offset, reason);
        let relative = (offset - start) as usize;
        let entry_len = (entry_end - offset) as usize;
        let slot = bytes.get(relative..relative + entry_len).unwrap_or_default();
        match raftlog::read_entry(slot) {
            Ok(Slot::Entry(entry)) if entry.len() == entry_len => out.push(Record {
                index,
                term: entry.term,
                kind: entry.kind,
                data: bytes.slice_ref(entry.data),
            }),
            Ok(Slot::Entry(entry)) => {
                return Err(corrupt(format!(
                    "entry {index} takes {} bytes where {entry_len} were written",
                    entry.len()
                )));
            }
            Ok(Slot::End | Slot::Closed) => return Err(corrupt(format!("entry {index} is missing"))),
            Err(damage) => return Err(corrupt(format!("entry {index}: {damage}"))),
        }
    }
    Ok(())
}
