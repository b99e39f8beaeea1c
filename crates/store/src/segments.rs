//! The in-memory picture of one segment family (events or snapshots) of one context: closed
//! segments with their indexes, and the active segment with what has been published of it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lru::LruCache;

use myelin_format::bloom::Bloom;
use myelin_format::index::{IndexPosition, SeekEntry};
use parking_lot::{Mutex, RwLock};

use crate::error::{Result, StoreError};

/// Hash maps on the write path: foldhash is several times faster than SipHash and still
/// seeded per process, so client-chosen aggregate ids cannot be used to flood one bucket.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Aggregate id → its events in this segment, in token order.
pub(crate) type AggregateMap = FastMap<Box<str>, Vec<IndexPosition>>;

/// What readers may see of the active segment: only durable, published data.
#[derive(Debug, Default)]
pub(crate) struct ActiveView {
    pub index: AggregateMap,
    /// Sampled block starts, ascending.
    pub seek: Vec<SeekEntry>,
    /// File offset just past the last published block.
    pub end: u64,
    /// File offset just past the last block known to be on disk (synced): `end` in fsync
    /// mode; in interval mode it trails `end` until the next sync. Backups copy up to here.
    pub synced_end: u64,
    /// Events published in this segment.
    pub count: u64,
    /// Timestamp of the first event (`i64::MIN` while empty).
    pub first_timestamp: i64,
}

#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub first_token: u64,
    pub path: Arc<Path>,
    pub file: Arc<File>,
    /// Length of the file (pre-allocated): what it occupies on disk.
    pub file_bytes: u64,
    pub view: RwLock<ActiveView>,
}

/// A closed segment's index while its files are being written, or after they failed to be.
#[derive(Debug)]
pub(crate) struct MemoryIndex {
    pub map: AggregateMap,
    pub seek: Vec<SeekEntry>,
}

#[derive(Debug)]
pub(crate) struct ClosedSegment {
    pub first_token: u64,
    pub event_count: u64,
    pub first_timestamp: i64,
    pub path: Arc<Path>,
    /// Length of the data file, [`UNKNOWN_BYTES`] until the writer closes the segment or the
    /// metrics (or a read) look it up: recovery does not `stat` every closed segment. A closed
    /// segment never changes size, so one `fstat` serves every later read.
    data_file_bytes: AtomicU64,
    /// Index plus bloom file length, [`UNKNOWN_BYTES`] until written or looked up.
    side_file_bytes: AtomicU64,
    /// Loaded on first lookup (or built at close).
    pub bloom: RwLock<Option<Arc<Bloom>>>,
    /// Present until the index file is durable; lookups use it instead of the file.
    pub memory_index: RwLock<Option<Arc<MemoryIndex>>>,
    /// Index and bloom files are complete and durable: the segment may be listed for backup.
    pub indexed: AtomicBool,
    /// This process checked the index file's CRC (or wrote the file): reloads skip the check.
    pub index_verified: AtomicBool,
}

impl ClosedSegment {
    pub fn new(first_token: u64, event_count: u64, first_timestamp: i64, path: Arc<Path>) -> Self {
        ClosedSegment {
            first_token,
            event_count,
            first_timestamp,
            path,
            data_file_bytes: AtomicU64::new(UNKNOWN_BYTES),
            side_file_bytes: AtomicU64::new(UNKNOWN_BYTES),
            bloom: RwLock::new(None),
            memory_index: RwLock::new(None),
            indexed: AtomicBool::new(false),
            index_verified: AtomicBool::new(false),
        }
    }

    /// The token after this segment's last event: the next segment's name.
    pub fn end_token(&self) -> u64 {
        self.first_token + self.event_count
    }

    /// Opens the data file for reading, with its length.
    fn open(&self) -> Result<(File, u64)> {
        let io = |e| StoreError::io(self.path.to_path_buf(), e);
        let file = crate::io::open_for_reading(&self.path).map_err(io)?;
        let len = match self.data_file_bytes.load(Ordering::Relaxed) {
            UNKNOWN_BYTES => {
                let len = file.metadata().map_err(io)?.len();
                self.data_file_bytes.store(len, Ordering::Relaxed);
                len
            }
            known => known,
        };
        Ok((file, len))
    }

    pub fn is_indexed(&self) -> bool {
        self.indexed.load(Ordering::Acquire)
    }

    /// The writer knows the length of the file it just closed.
    pub fn set_data_file_bytes(&self, bytes: u64) {
        self.data_file_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Called whenever the index and bloom files are (re)written.
    pub fn set_side_file_bytes(&self, bytes: u64) {
        self.side_file_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Bytes of the data, index and bloom files, for the metrics. A length not known yet is
    /// looked up once (one `stat` per file, then cached). Index files still being written count
    /// as 0; a file that cannot be `stat`ed counts as 0 and is looked up again next time.
    pub fn disk_bytes(&self, side_paths: impl FnOnce() -> [PathBuf; 2]) -> u64 {
        let data = cached_len(&self.data_file_bytes, || file_len(&self.path));
        if !self.is_indexed() {
            return data;
        }
        let side = cached_len(&self.side_file_bytes, || {
            let [index, bloom] = side_paths().map(|path| file_len(&path));
            Some(index? + bloom?)
        });
        data + side
    }
}

/// Closed segment data files open for reading, at most `capacity` at a time (least recently
/// used closed first). Without a bound a long-lived server reading its whole history keeps one
/// descriptor per segment and eventually fails every `open` with EMFILE. An evicted file stays
/// open until the last reader holding it (a tracking stream's cursor) lets go.
pub(crate) struct OpenFiles {
    entries: Mutex<LruCache<u64, (Arc<File>, u64)>>,
    capacity: usize,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> Self {
        OpenFiles {
            entries: Mutex::new(LruCache::unbounded()),
            capacity: capacity.max(1),
        }
    }

    /// The segment's data file and its length, opened unless it already is.
    pub fn get(&self, segment: &ClosedSegment) -> Result<(Arc<File>, u64)> {
        if let Some((file, len)) = self.entries.lock().get(&segment.first_token) {
            return Ok((file.clone(), *len));
        }
        crate::io::check_may_block(&segment.path)?;
        // Opened outside the lock: a concurrent open of the same file is harmless (one wins).
        let (file, len) = segment.open()?;
        let file = Arc::new(file);
        let mut entries = self.entries.lock();
        entries.put(segment.first_token, (file.clone(), len));
        while entries.len() > self.capacity {
            entries.pop_lru();
        }
        Ok((file, len))
    }

    /// Files currently held open by the cache.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

impl std::fmt::Debug for OpenFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFiles")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// "Not looked up yet" for file lengths (no file is this long).
const UNKNOWN_BYTES: u64 = u64::MAX;

/// The cached length, else `look_up` (cached when it succeeds; a concurrent writer of the
/// files, which knows the length better, is not overwritten).
fn cached_len(cache: &AtomicU64, look_up: impl FnOnce() -> Option<u64>) -> u64 {
    let cached = cache.load(Ordering::Relaxed);
    if cached != UNKNOWN_BYTES {
        return cached;
    }
    let Some(len) = look_up() else { return 0 };
    let _ = cache.compare_exchange(UNKNOWN_BYTES, len, Ordering::Relaxed, Ordering::Relaxed);
    len
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Builds a bloom filter over the aggregates of a map.
pub(crate) fn bloom_of(map: &AggregateMap, false_positive_rate: f64) -> Bloom {
    let mut bloom = Bloom::with_capacity(map.len(), false_positive_rate);
    for id in map.keys() {
        bloom.insert(id);
    }
    bloom
}

/// The segments of one family. Closed ones ascend by first token; the active one is last.
#[derive(Debug)]
pub(crate) struct Segments {
    pub closed: Vec<Arc<ClosedSegment>>,
    pub active: Arc<ActiveSegment>,
}

/// Where a token lives.
pub(crate) enum Located {
    Closed(Arc<ClosedSegment>),
    Active(Arc<ActiveSegment>),
}

impl Segments {
    pub fn first_token(&self) -> u64 {
        self.closed.first().map_or(self.active.first_token, |s| s.first_token)
    }

    /// The segment holding `token`, which must be at or after the first token.
    pub fn locate(&self, token: u64) -> Located {
        if token >= self.active.first_token {
            return Located::Active(self.active.clone());
        }
        let i = self.closed.partition_point(|s| s.first_token <= token);
        match i.checked_sub(1).and_then(|i| self.closed.get(i)) {
            Some(segment) => Located::Closed(segment.clone()),
            // Before the first segment: the caller clamps tokens, so this is the oldest one.
            None => match self.closed.first() {
                Some(first) => Located::Closed(first.clone()),
                None => Located::Active(self.active.clone()),
            },
        }
    }
}
