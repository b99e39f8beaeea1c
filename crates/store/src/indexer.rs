//! Building indexes: scanning a segment into an aggregate map, writing index and bloom files
//! (temp file, fsync, rename, directory fsync), and the background thread that does so for
//! segments the writer has just closed.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Weak};

use myelin_format::BlockError;
use myelin_format::bloom::Bloom;
use myelin_format::event::EventFields;
use myelin_format::index::{IndexPosition, IndexSummary, SeekEntry, encode_index};
use myelin_format::segment::{FILE_HEADER_BYTES, MAX_EVENTS_PER_BLOCK, SegmentKind};
use tracing::{error, info};

use crate::config::MAX_SEGMENT_BYTES;
use crate::error::{Result, StoreError};
use crate::io::write_atomically;
use crate::log::{SegmentLog, is_indexed};
use crate::reader::{BlockRead, ChunkReader, VerifiedBlock};
use crate::segments::{AggregateMap, ClosedSegment, bloom_of};

/// Why a scan stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    End,
    Rolled,
    Limit,
    Invalid(BlockError),
}

/// Everything a scan of a segment learns.
#[derive(Debug)]
pub(crate) struct Scan {
    pub first_token: u64,
    pub map: AggregateMap,
    pub seek: Vec<SeekEntry>,
    /// Offset just past the last valid block.
    pub end: u64,
    pub count: u64,
    pub first_timestamp: i64,
    pub stop: Stop,
    /// Where the run of full blocks (32767 events each) that ends the valid data starts, with
    /// its first token. Myelin never ends a transaction with a full block, so such a run is an
    /// unfinished multi-block transaction if damage follows it.
    pub trailing_full_blocks: Option<(u64, u64)>,
}

impl Scan {
    /// Adds one verified block: seek sample, index entries, count and end. The sampling rule
    /// is the writer's, so a rebuilt index equals the one written at close.
    fn add_block(
        &mut self,
        kind: SegmentKind,
        block: &VerifiedBlock,
        seek_interval_bytes: u64,
        path: &Path,
    ) -> Result<()> {
        if self
            .seek
            .last()
            .is_none_or(|s| block.offset >= u64::from(s.offset) + seek_interval_bytes)
        {
            debug_assert!(block.offset + block.total_bytes() <= MAX_SEGMENT_BYTES);
            self.seek.push(SeekEntry {
                token: self.first_token + self.count,
                offset: block.offset as u32,
            });
        }
        for (rel, event) in block.events() {
            let position = block.offset + u64::from(rel);
            let fields =
                EventFields::parse(&event).map_err(|e| StoreError::corrupt(path.to_path_buf(), position, e))?;
            if self.first_timestamp == i64::MIN {
                self.first_timestamp = fields.timestamp;
            }
            if is_indexed(kind, &fields) {
                let entry = IndexPosition {
                    block: block.offset as u32,
                    position: position as u32,
                    sequence: fields.aggregate_sequence_number,
                };
                match self.map.get_mut(fields.aggregate_identifier) {
                    Some(positions) => positions.push(entry),
                    None => {
                        self.map.insert(fields.aggregate_identifier.into(), vec![entry]);
                    }
                }
            }
        }
        if block.count == MAX_EVENTS_PER_BLOCK {
            self.trailing_full_blocks
                .get_or_insert((block.offset, self.first_token + self.count));
        } else {
            self.trailing_full_blocks = None;
        }
        self.count += block.count as u64;
        self.end += block.total_bytes();
        Ok(())
    }
}

/// Reads every valid block of a segment from its header up to `limit`.
pub(crate) fn scan_segment(
    kind: SegmentKind,
    file: Arc<File>,
    path: Arc<Path>,
    first_token: u64,
    limit: u64,
    seek_interval_bytes: u64,
) -> Result<Scan> {
    // Offsets go into the index as 32-bit numbers (and Axon reads them as Java ints): a file
    // longer than any segment can be would index wrapped offsets, so it is refused whole.
    if limit > MAX_SEGMENT_BYTES {
        return Err(StoreError::corrupt(
            path.to_path_buf(),
            MAX_SEGMENT_BYTES,
            format!("a segment file of {limit} bytes, longer than any segment ({MAX_SEGMENT_BYTES})"),
        ));
    }
    let mut reader = ChunkReader::new(file, path.clone());
    let mut scan = Scan {
        first_token,
        map: AggregateMap::default(),
        seek: Vec::new(),
        end: FILE_HEADER_BYTES as u64,
        count: 0,
        first_timestamp: i64::MIN,
        stop: Stop::Limit,
        trailing_full_blocks: None,
    };
    loop {
        match reader.block_at(scan.end, limit)? {
            BlockRead::Block(block) => scan.add_block(kind, &block, seek_interval_bytes, &path)?,
            BlockRead::End => {
                scan.stop = Stop::End;
                break;
            }
            BlockRead::Rolled => {
                scan.stop = Stop::Rolled;
                break;
            }
            BlockRead::Limit => {
                scan.stop = Stop::Limit;
                break;
            }
            BlockRead::Invalid(e) => {
                scan.stop = Stop::Invalid(e);
                break;
            }
        }
    }
    Ok(scan)
}

/// Writes the index and bloom files of a closed segment from its map; returns their bytes.
pub(crate) fn write_index_files(
    log: &SegmentLog,
    first_token: u64,
    event_count: u64,
    first_timestamp: i64,
    map: &AggregateMap,
    seek: &[SeekEntry],
    bloom: &Bloom,
) -> Result<u64> {
    let summary = IndexSummary {
        kind: log.kind,
        first_token,
        event_count,
        first_timestamp,
    };
    let bytes = encode_index(summary, map, seek);
    let index_path = log.dir.join(log.kind.index_file_name(first_token));
    write_atomically(&index_path, &bytes, "store::write_index")?;
    let bloom_path = log.dir.join(log.kind.bloom_file_name(first_token));
    let bloom = bloom.encode();
    write_atomically(&bloom_path, &bloom, "store::write_bloom")?;
    Ok((bytes.len() + bloom.len()) as u64)
}

/// Rebuilds both index files of a closed segment from the segment itself.
pub(crate) fn rebuild_index_files(log: &SegmentLog, segment: &ClosedSegment) -> Result<()> {
    // Never from a read that must not block (it would not get here: the index loads give up
    // first), and never because such a read gave up.
    crate::io::check_may_block(&segment.path)?;
    let (scan, bloom) = scan_closed(log, segment.first_token, &segment.path)?;
    if scan.count != segment.event_count {
        return Err(StoreError::corrupt(
            segment.path.to_path_buf(),
            scan.end,
            format!("segment holds {} events, {} expected", scan.count, segment.event_count),
        ));
    }
    install_index(log, segment, &scan, bloom)?;
    info!(file = %segment.path.display(), events = scan.count, "rebuilt index");
    Ok(())
}

/// Writes the index and bloom files of a closed segment from a complete scan of it, and hands
/// readers the bloom; the segment then counts as indexed (and listable for backup).
pub(crate) fn install_index(log: &SegmentLog, segment: &ClosedSegment, scan: &Scan, bloom: Bloom) -> Result<()> {
    let side_file_bytes = write_index_files(
        log,
        segment.first_token,
        scan.count,
        scan.first_timestamp,
        &scan.map,
        &scan.seek,
        &bloom,
    )?;
    segment.set_side_file_bytes(side_file_bytes);
    *segment.bloom.write() = Some(Arc::new(bloom));
    segment.index_verified.store(true, Ordering::Release);
    segment.indexed.store(true, Ordering::Release);
    Ok(())
}

/// Scans a closed segment completely: it must end in a roll or end marker.
pub(crate) fn scan_closed(log: &SegmentLog, first_token: u64, path: &Arc<Path>) -> Result<(Scan, Bloom)> {
    let file = File::open(path).map_err(|e| StoreError::io(path.to_path_buf(), e))?;
    let len = file
        .metadata()
        .map_err(|e| StoreError::io(path.to_path_buf(), e))?
        .len();
    let scan = scan_segment(
        log.kind,
        Arc::new(file),
        path.clone(),
        first_token,
        len,
        log.config.seek_interval_bytes,
    )?;
    if let Stop::Invalid(e) = &scan.stop {
        return Err(StoreError::corrupt(path.to_path_buf(), scan.end, e));
    }
    let bloom = bloom_of(&scan.map, log.config.bloom_false_positive_rate);
    Ok((scan, bloom))
}

/// The background indexer: writes index files for segments the writer closed, then drops
/// their in-memory index. A failure leaves the memory index in place (reads keep working) and
/// the segment out of backup listings; the next start rebuilds the files.
pub(crate) fn run_indexer(log: Weak<SegmentLog>, closed: Receiver<Arc<ClosedSegment>>) {
    while let Ok(segment) = closed.recv() {
        let Some(log) = log.upgrade() else { return };
        let Some(memory) = segment.memory_index.read().clone() else {
            continue;
        };
        let Some(bloom) = segment.bloom.read().clone() else {
            continue;
        };
        match write_index_files(
            &log,
            segment.first_token,
            segment.event_count,
            segment.first_timestamp,
            &memory.map,
            &memory.seek,
            &bloom,
        ) {
            Ok(side_file_bytes) => {
                segment.set_side_file_bytes(side_file_bytes);
                segment.index_verified.store(true, Ordering::Release);
                segment.indexed.store(true, Ordering::Release);
                *segment.memory_index.write() = None;
            }
            Err(e) => error!(error = %e, segment = segment.first_token, "writing index files failed; kept in memory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_file_longer_than_any_segment_is_refused_not_indexed_with_wrapped_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: Arc<Path> = dir.path().join(SegmentKind::Events.file_name(0)).into();
        let file = File::create(&path).expect("create");
        // Sparse: no disk space is used.
        file.set_len(MAX_SEGMENT_BYTES + 1).expect("set_len");
        let scanned = scan_segment(
            SegmentKind::Events,
            Arc::new(file),
            path,
            0,
            MAX_SEGMENT_BYTES + 1,
            4096,
        );
        match scanned {
            Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("longer than any segment"), "{reason}"),
            other => panic!("expected a corrupt-data error, got {other:?}"),
        }
    }
}
