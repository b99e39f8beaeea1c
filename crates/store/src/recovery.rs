//! Opening a segment family at startup. Only the active (newest) segment is scanned, so
//! restart time does not grow with the store; closed segments are checked through the headers
//! of their index files (rebuilt from the segment when missing or damaged).
//!
//! The crash cases and why each is safe are in `docs/FORMAT.md` ("Recovery").

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use myelin_format::event::EventFields;
use myelin_format::index::IndexHeader;
use myelin_format::segment::{FILE_HEADER_BYTES, FileHeader, MARKER_BYTES, SegmentKind, decode_block};
use parking_lot::RwLock;
use tracing::{info, warn};

use crate::config::{Durability, StoreConfig};
use crate::error::{Result, StoreError};
use crate::indexer::{Scan, Stop, install_index, scan_closed, scan_segment};
use crate::io::{create_preallocated, data_regions, read_at_most, sync_data, write_all_at};
use crate::log::SegmentLog;
use crate::reader::{BlockRead, ChunkReader};
use crate::segments::{ActiveSegment, ActiveView, ClosedSegment, Segments, bloom_of};

/// What the writer needs to continue where the previous run stopped.
pub(crate) struct WriterStart {
    pub file: Arc<File>,
    pub path: Arc<Path>,
    pub end: u64,
    pub capacity: u64,
}

pub(crate) fn open_log(kind: SegmentKind, dir: &Path, config: &StoreConfig) -> Result<(SegmentLog, WriterStart)> {
    myelin_fsutil::create_dir_all_durably(dir).map_err(|e| StoreError::io(dir, e))?;
    let names = list_segments(kind, dir)?;
    let (closed_names, active_first) = match names.split_last() {
        Some((last, rest)) => (rest.to_vec(), *last),
        None => (Vec::new(), 0),
    };
    let active_path: Arc<Path> = dir.join(kind.file_name(active_first)).into();
    let mut active = open_active(kind, &active_path, active_first, config)?;

    let mut closed = Vec::with_capacity(closed_names.len() + 1);
    let log_for_index = |segments: Segments| SegmentLog::new(kind, dir.to_path_buf(), config.clone(), segments);

    // The newest file ended in a roll marker: it is closed, and its successor must be created.
    let mut rolled: Option<(u64, Scan)> = None;
    if matches!(active.scan.stop, Stop::Rolled) {
        // No writer rolls a segment before its first event (an empty one is replaced, see
        // FORMAT.md), and the successor of such a file would be the file itself: the store
        // would append over the marker and whatever follows it (found by fuzzing).
        if active.scan.count == 0 {
            return Err(StoreError::corrupt(
                active_path.to_path_buf(),
                active.scan.end,
                "roll marker before the segment's first event",
            ));
        }
        let next = active_first + active.scan.count;
        info!(file = %active_path.display(), next, "newest segment was rolled; creating its successor");
        rolled = Some((active_first, std::mem::replace(&mut active.scan, empty_scan())));
        let path: Arc<Path> = dir.join(kind.file_name(next)).into();
        active = open_active(kind, &path, next, config)?;
    }

    // A temporary log lets closed segments share the index-writing code with runtime.
    let placeholder = Segments {
        closed: Vec::new(),
        active: active.segment.clone(),
    };
    let scratch = log_for_index(placeholder);
    // Each closed segment ends where the next file (closed or the newest) begins.
    let successors = closed_names
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(active_first));
    for (first, next_first) in closed_names.iter().copied().zip(successors) {
        closed.push(open_closed(&scratch, first, next_first)?);
    }
    if let Some((first, scan)) = rolled {
        let path: Arc<Path> = dir.join(kind.file_name(first)).into();
        let segment = ClosedSegment::new(first, scan.count, scan.first_timestamp, path);
        install_index(
            &scratch,
            &segment,
            &scan,
            bloom_of(&scan.map, config.bloom_false_positive_rate),
        )?;
        closed.push(Arc::new(segment));
    }
    check_continuity(dir, kind, &closed, active.segment.first_token)?;
    drop(scratch);

    let writer = WriterStart {
        file: active.segment.file.clone(),
        path: active.segment.path.clone(),
        end: active.segment.view.read().end,
        capacity: active.capacity,
    };
    let log = log_for_index(Segments {
        closed,
        active: active.segment,
    });
    info!(
        dir = %dir.display(),
        kind = kind.data_suffix(),
        first_token = log.first_token(),
        head = log.head(),
        "opened"
    );
    Ok((log, writer))
}

fn empty_scan() -> Scan {
    Scan {
        first_token: 0,
        map: Default::default(),
        seek: Vec::new(),
        end: FILE_HEADER_BYTES as u64,
        count: 0,
        first_timestamp: i64::MIN,
        stop: Stop::End,
        trailing_full_blocks: None,
    }
}

/// A temp file of an interrupted index or bloom write (`myelin-fsutil`'s
/// `.<number>.<suffix>.<pid>.<n>.tmp`), or of an interrupted replacement of an empty active
/// segment by a larger one (`<number>.<suffix>.tmp`, also how older versions named index
/// temp files).
fn is_leftover_temp(kind: SegmentKind, name: &str) -> bool {
    let stem = if name.starts_with('.') {
        myelin_fsutil::temp_file_destination(name)
    } else {
        name.strip_suffix(myelin_fsutil::TEMP_SUFFIX)
    };
    let Some(stem) = stem else {
        return false;
    };
    let Some((number, suffix)) = stem.split_once('.') else {
        return false;
    };
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && [kind.data_suffix(), kind.index_suffix(), kind.bloom_suffix()].contains(&suffix)
}

/// First tokens of the data files of `kind` in `dir`, ascending. Leftover temp files of
/// interrupted index writes and segment replacements are removed.
fn list_segments(kind: SegmentKind, dir: &Path) -> Result<Vec<u64>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = kind.parse_file_name(name) {
            names.push(first);
        } else if is_leftover_temp(kind, name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    names.sort_unstable();
    Ok(names)
}

struct OpenedActive {
    segment: Arc<ActiveSegment>,
    capacity: u64,
    scan: Scan,
}

fn open_active(kind: SegmentKind, path: &Arc<Path>, first_token: u64, config: &StoreConfig) -> Result<OpenedActive> {
    let exists = path.exists();
    let file = if exists {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path.to_path_buf(), e))?
    } else {
        create_preallocated(path, config.segment_size_bytes, &FileHeader::CURRENT.encode())?
    };
    let capacity = file
        .metadata()
        .map_err(|e| StoreError::io(path.to_path_buf(), e))?
        .len();
    let file = Arc::new(file);
    repair_header(&file, path, capacity)?;
    let scan_file = || {
        scan_segment(
            kind,
            file.clone(),
            path.clone(),
            first_token,
            capacity,
            config.seek_interval_bytes,
        )
    };
    let mut scan = scan_file()?;
    if !matches!(scan.stop, Stop::Rolled) && repair_tail(&file, path, first_token, &scan, capacity, config)? < scan.end
    {
        // Full blocks of an unfinished transaction were cut off with the damage: scan again.
        scan = scan_file()?;
    }
    let view = ActiveView {
        index: Default::default(),
        seek: Vec::new(),
        end: scan.end,
        // What recovery found in the file (after an unclean stop in interval mode, possibly
        // only in the page cache: as durable as anything this process will ever serve of it).
        synced_end: scan.end,
        count: scan.count,
        first_timestamp: scan.first_timestamp,
    };
    let segment = Arc::new(ActiveSegment {
        first_token,
        path: path.clone(),
        file,
        file_bytes: capacity,
        view: RwLock::new(view),
    });
    if !matches!(scan.stop, Stop::Rolled) {
        let mut view = segment.view.write();
        view.index = std::mem::take(&mut scan.map);
        view.seek = std::mem::take(&mut scan.seek);
    }
    Ok(OpenedActive {
        segment,
        capacity,
        scan,
    })
}

/// A segment whose creation was interrupted can be shorter than its header or all zeros;
/// give it a header. Anything else that is not a valid header is corruption.
fn repair_header(file: &File, path: &Path, capacity: u64) -> Result<()> {
    let mut header = [0u8; FILE_HEADER_BYTES];
    let n = read_at_most(file, &mut header, 0).map_err(|e| StoreError::io(path, e))?;
    if n == FILE_HEADER_BYTES && FileHeader::decode(&header).is_ok() {
        return Ok(());
    }
    if header[..n].iter().all(|b| *b == 0) && last_nonzero(file, path, 0, capacity)?.is_none() {
        warn!(file = %path.display(), "segment has no header (interrupted creation); writing one");
        write_all_at(file, &FileHeader::CURRENT.encode(), 0).map_err(|e| StoreError::io(path, e))?;
        sync_data(file).map_err(|e| StoreError::io(path, e))?;
        return Ok(());
    }
    let reason = FileHeader::decode(&header)
        .err()
        .map_or("short file".to_string(), |e| e.to_string());
    Err(StoreError::corrupt(
        path,
        0,
        format!("invalid segment header: {reason}"),
    ))
}

/// Offset of the last non-zero byte in `[from, to)`, reading backwards in chunks, and only
/// where the file system says data may be (holes, including pre-allocated extents never
/// written, read as zeros): reopening a store does not read its empty pre-allocated tail.
fn last_nonzero(file: &File, path: &Path, from: u64, to: u64) -> Result<Option<u64>> {
    const CHUNK: u64 = 1024 * 1024;
    let mut buf = vec![0u8; CHUNK as usize];
    for (region_start, region_end) in data_regions(file, from, to).into_iter().rev() {
        let mut end = region_end;
        while end > region_start {
            let start = end.saturating_sub(CHUNK).max(region_start);
            let len = (end - start) as usize;
            let n = read_at_most(file, &mut buf[..len], start).map_err(|e| StoreError::io(path, e))?;
            if let Some(i) = buf[..n].iter().rposition(|b| *b != 0) {
                return Ok(Some(start + i as u64));
            }
            end = start;
        }
    }
    Ok(None)
}

/// Decides what the bytes after the last valid block are. Zeros: a clean end. Damage that
/// one interrupted write could have left (it lies within the torn-write window): cut off with
/// a warning, it was never acknowledged — together with the full blocks just before it, the
/// start of a multi-block transaction (Myelin never ends a transaction with a full block).
/// Anything reaching further: corruption of acknowledged data, and this context refuses to
/// start. Returns where the valid data now ends.
fn repair_tail(
    file: &File,
    path: &Path,
    first_token: u64,
    scan: &Scan,
    capacity: u64,
    config: &StoreConfig,
) -> Result<u64> {
    let Some(last) = last_nonzero(file, path, scan.end, capacity)? else {
        return Ok(scan.end);
    };
    let damaged = last + 1 - scan.end;
    let reason = match &scan.stop {
        Stop::Invalid(e) => e.to_string(),
        _ => "uncommitted data after the end marker".to_string(),
    };
    if damaged > config.torn_write_window_bytes() {
        return Err(StoreError::corrupt(
            path,
            scan.end,
            format!("{reason}; {damaged} bytes of data follow, more than one interrupted write can leave"),
        ));
    }
    if config.durability == Durability::Fsync
        && let Some(valid) = valid_block_after_damage(file, path, scan.end, last)?
    {
        return Err(StoreError::corrupt(
            path,
            scan.end,
            format!(
                "{reason}; a valid block follows at offset {valid}: acknowledged data after damage, \
                 not an interrupted write"
            ),
        ));
    }
    // The unfinished transaction's first blocks, if the damage cut a multi-block one short.
    let (cut, first_dropped) = scan
        .trailing_full_blocks
        .unwrap_or((scan.end, first_token + scan.count));
    warn!(
        file = %path.display(),
        offset = cut,
        bytes = last + 1 - cut,
        dropped_tokens = %format!("{first_dropped}.."),
        %reason,
        "truncating an interrupted last write (never acknowledged)"
    );
    let zeros = vec![0u8; 1024 * 1024];
    let mut at = cut;
    while at <= last {
        let len = ((last + 1 - at) as usize).min(zeros.len());
        write_all_at(file, &zeros[..len], at).map_err(|e| StoreError::io(path, e))?;
        at += len as u64;
    }
    sync_data(file).map_err(|e| StoreError::io(path, e))?;
    Ok(cut)
}

/// Bytes of the smallest unit a disk writes whole: an interrupted write loses whole sectors.
const SECTOR_BYTES: u64 = 512;

/// Tells bit rot in acknowledged data from the torn last write when damage starts at
/// `damage_start` (and data reaches `last`): the offset of a valid block (checksum and all)
/// after the damage, unless the damage shows a lost sector. In fsync mode only the batch being
/// written when the process died can be torn, and it is the last thing in the file; a
/// well-formed block after the damage is therefore acknowledged data, and cutting the file
/// there would lose it. The exception is a batch whose pages reached the disk out of order:
/// its lost pages read as zeros (the file is pre-allocated with zeros and only appended to),
/// so an aligned all-zero sector between the damage and the valid block marks a torn write.
fn valid_block_after_damage(file: &File, path: &Path, damage_start: u64, last: u64) -> Result<Option<u64>> {
    let len = usize::try_from(last + 1 - damage_start).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; len];
    let n = read_at_most(file, &mut bytes, damage_start).map_err(|e| StoreError::io(path, e))?;
    bytes.truncate(n);
    // A size field of 0 at the damage is the torn batch whose first size field (written last)
    // never reached the disk: its blocks after it are valid and were never acknowledged.
    if bytes
        .get(..MARKER_BYTES)
        .is_some_and(|size| size.iter().all(|b| *b == 0))
    {
        return Ok(None);
    }
    for offset in 1..bytes.len() {
        if matches!(decode_block(&bytes[offset..]), Ok(Some(_))) {
            let valid = damage_start + offset as u64;
            return Ok((!has_zero_sector(&bytes[..offset], damage_start)).then_some(valid));
        }
    }
    Ok(None)
}

/// Whether `bytes`, which start at file offset `start`, contain a whole sector-aligned sector
/// of zeros.
fn has_zero_sector(bytes: &[u8], start: u64) -> bool {
    let first = start.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    let mut at = first;
    while at + SECTOR_BYTES <= start + bytes.len() as u64 {
        let from = (at - start) as usize;
        if bytes[from..from + SECTOR_BYTES as usize].iter().all(|b| *b == 0) {
            return true;
        }
        at += SECTOR_BYTES;
    }
    false
}

/// A closed segment: trust its index header if it is there and agrees, else rebuild.
///
/// The header is trusted without its file's checksum (that is checked when the index is first
/// loaded), so it must at least agree with what the directory says: the segment's events end
/// where the next file, `next_first`, begins. A damaged event count would otherwise fail the
/// continuity check and stop the context over a derived file that can be rebuilt; if the
/// rebuilt count disagrees too, a segment really is missing and continuity says so.
fn open_closed(log: &SegmentLog, first: u64, next_first: u64) -> Result<Arc<ClosedSegment>> {
    let kind = log.kind;
    let path: Arc<Path> = log.dir.join(kind.file_name(first)).into();
    let index_path = log.dir.join(kind.index_file_name(first));
    let bloom_path = log.dir.join(kind.bloom_file_name(first));
    if let Some(header) = read_index_header(&index_path)
        && header.kind == kind
        && header.first_token == first
        && first.checked_add(header.event_count) == Some(next_first)
        && bloom_path.exists()
        && first_timestamp_agrees(&path, &header)
    {
        let segment = ClosedSegment::new(first, header.event_count, header.first_timestamp, path);
        segment.indexed.store(true, Ordering::Release);
        return Ok(Arc::new(segment));
    }
    info!(file = %path.display(), "no valid index; rebuilding it from the segment");
    let (scan, bloom) = scan_closed(log, first, &path)?;
    let segment = ClosedSegment::new(first, scan.count, scan.first_timestamp, path);
    install_index(log, &segment, &scan, bloom)?;
    Ok(Arc::new(segment))
}

/// Whether the first timestamp an index header gives is that of the segment's first event.
/// GetTokenAt answers from these timestamps without loading the index (whose checksum would
/// catch the damage), so a damaged one would otherwise be served for as long as the file
/// stays. Only the first block is read (checksum verified): one small read per closed segment.
/// If that block cannot be read or is damaged, the header is trusted; reads report the damage.
fn first_timestamp_agrees(path: &Arc<Path>, header: &IndexHeader) -> bool {
    let Ok(file) = File::open(path) else {
        return true;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return true;
    };
    let mut reader = ChunkReader::positioned(Arc::new(file), path.clone());
    let Ok(BlockRead::Block(block)) = reader.block_at(FILE_HEADER_BYTES as u64, len) else {
        return true;
    };
    let first = block.events().next();
    match first.as_ref().and_then(|(_, event)| EventFields::parse(event).ok()) {
        Some(fields) => fields.timestamp == header.first_timestamp,
        None => true,
    }
}

fn read_index_header(path: &PathBuf) -> Option<IndexHeader> {
    let file = File::open(path).ok()?;
    let mut header = [0u8; myelin_format::index::HEADER_BYTES];
    let n = read_at_most(&file, &mut header, 0).ok()?;
    IndexHeader::decode(&header[..n]).ok()
}

/// Every segment must start where the previous one ends: no gap, no overlap.
fn check_continuity(dir: &Path, kind: SegmentKind, closed: &[Arc<ClosedSegment>], active_first: u64) -> Result<()> {
    let mut starts = closed
        .iter()
        .map(|s| s.first_token)
        .skip(1)
        .chain(std::iter::once(active_first));
    for segment in closed {
        let next = starts.next().unwrap_or(active_first);
        if segment.end_token() != next {
            return Err(StoreError::Inconsistent {
                dir: dir.to_path_buf(),
                reason: format!(
                    "{} holds tokens {}..{} but the next segment is {}",
                    kind.file_name(segment.first_token),
                    segment.first_token,
                    segment.end_token(),
                    kind.file_name(next),
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_temp_files_of_either_naming_are_recognised() {
        let kind = SegmentKind::Events;
        let index = kind.index_file_name(462);
        let data = kind.file_name(462);
        assert!(
            is_leftover_temp(kind, &format!(".{index}.4711.0.tmp")),
            "myelin-fsutil's"
        );
        assert!(is_leftover_temp(kind, &format!("{data}.tmp")), "a segment replacement");
        assert!(
            is_leftover_temp(kind, &format!("{index}.tmp")),
            "older versions' index temp"
        );
    }

    #[test]
    fn files_that_are_not_the_stores_temp_files_are_left_alone() {
        let kind = SegmentKind::Events;
        let index = kind.index_file_name(462);
        for name in [
            index.clone(),
            format!(".{index}.tmp"),
            format!(".{index}.x.0.tmp"),
            format!(".{index}.1.tmp"),
            ".notes.1.2.tmp".to_string(),
            "backup.tar.tmp".to_string(),
            format!("{}.tmp", SegmentKind::Snapshots.file_name(0)),
        ] {
            assert!(!is_leftover_temp(kind, &name), "{name}");
        }
    }
}
