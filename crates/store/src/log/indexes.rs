//! Closed segments' index and bloom files as readers use them: loaded on first use, cached
//! within the configured bounds, rebuilt from the segment when missing or damaged.

use std::sync::Arc;

use lru::LruCache;
use myelin_format::bloom::Bloom;
use myelin_format::index::IndexPosition;
use tracing::warn;

use super::SegmentLog;
use crate::closed_index::LoadedIndex;
use crate::error::{Result, StoreError};
use crate::segments::ClosedSegment;

/// Loaded index tables, bounded by bytes and by count (each holds its file open).
pub(super) struct IndexCache {
    entries: LruCache<u64, Arc<LoadedIndex>>,
    bytes: usize,
    limit_bytes: usize,
    limit_entries: usize,
}

impl IndexCache {
    pub(super) fn new(limit_bytes: usize, limit_entries: usize) -> Self {
        IndexCache {
            entries: LruCache::unbounded(),
            bytes: 0,
            limit_bytes,
            limit_entries,
        }
    }

    /// Index tables held (each with its file open).
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

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

impl SegmentLog {
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
    pub(super) fn closed_positions(&self, segment: &ClosedSegment, aggregate: &str) -> Result<Vec<IndexPosition>> {
        if let Some(memory) = segment.memory_index.read().as_ref() {
            return Ok(memory.map.get(aggregate).cloned().unwrap_or_default());
        }
        if !self.bloom(segment)?.may_contain(aggregate) {
            return Ok(Vec::new());
        }
        self.load_index(segment)?.lookup(aggregate)
    }
}
