//! Opening a log directory after a clean stop or a crash: find the segment files, check every
//! closed segment whole, and cut a torn write off the end of the active one.
//!
//! What may be found, and why each answer is safe, is drawn in `docs/FORMAT.md` ("Raft
//! log-entry segments", crash cases). In short: the only bytes a crash can leave half-written
//! are those written since the last sync of the active (newest) segment, which were never
//! reported durable. Anything else that does not read back as written is corruption, and the
//! log refuses to open rather than serve or drop acknowledged entries.

use std::fs::File;
use std::path::{Path, PathBuf};

use myelin_format::raftlog::{self, HEADER_LEN, MARKER_LEN, MAX_SEGMENT_BYTES, Scanner, Stop};

use super::error::LogError;
use super::io;
use super::segments::{FIRST_INDEX, Segment};

/// The smallest unit a disk writes whole. A write torn by a power loss leaves each sector
/// either new or as it was (zeros, beyond the synced end); 512 bytes is the smallest sector,
/// so this also holds on disks with larger ones.
const SECTOR_BYTES: usize = 512;

/// The segments of a log directory, checked and ready to append to.
pub(super) struct Recovered {
    /// The closed segments, oldest first.
    pub closed: Vec<Segment>,
    /// The newest segment, ready for appends.
    pub active: Segment,
    /// The term of the last entry, if there is one.
    pub last_term: Option<u64>,
}

/// Opens the segments of `dir` (which exists), recovering the active one; creates the first
/// segment (index 1) of an empty directory.
pub(super) fn recover(dir: &Path, segment_size_bytes: u64) -> Result<Recovered, LogError> {
    let listed = list_segments(dir)?;
    let Some(((newest_first, newest_path), closed)) = listed.split_last() else {
        let path = dir.join(raftlog::file_name(FIRST_INDEX));
        let file = io::create_segment(&path, segment_size_bytes)?;
        return Ok(Recovered {
            closed: Vec::new(),
            active: Segment::empty(FIRST_INDEX, path, file, segment_size_bytes),
            last_term: None,
        });
    };
    let mut segments = Vec::with_capacity(listed.len());
    let mut last_term = None;
    let next_firsts = listed.iter().skip(1).map(|(first, _)| *first);
    for ((first, path), next_first) in closed.iter().zip(next_firsts) {
        segments.push(check_closed(*first, path, next_first, &mut last_term)?);
    }
    let (mut active, closed_by_marker) =
        recover_active(*newest_first, newest_path, segment_size_bytes, &mut last_term)?;
    if closed_by_marker {
        // A crash between closing the file and creating the next one (or a failed creation):
        // finish the roll.
        let next_index = active.next_index();
        let path = dir.join(raftlog::file_name(next_index));
        let file = io::create_segment(&path, segment_size_bytes)?;
        segments.push(std::mem::replace(
            &mut active,
            Segment::empty(next_index, path, file, segment_size_bytes),
        ));
    }
    // A crashed process's last directory changes may still be in the page cache only.
    io::sync_dir(dir)?;
    Ok(Recovered {
        closed: segments,
        active,
        last_term,
    })
}

/// The segment files of `dir` by first index, ascending. Removes fsutil's temporary files,
/// which only a crash leaves behind; ignores every other name (Axon's `.index` files among
/// them).
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut segments = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = raftlog::parse_file_name(name) {
            segments.push((first, entry.path()));
        } else if myelin_fsutil::is_temp_file_name(name) {
            tracing::info!(path = %entry.path().display(), "removing a temporary file left by a crash");
            io::remove_durably(&entry.path())?;
        }
    }
    segments.sort_unstable_by_key(|(first, _)| *first);
    Ok(segments)
}

/// Opens a closed segment and checks all of it: header, every entry and its CRC, terms that
/// never decrease, and exactly as many entries as reach the next segment's first index.
fn check_closed(first: u64, path: &Path, next_first: u64, last_term: &mut Option<u64>) -> Result<Segment, LogError> {
    let (file, len) = open_checked(path)?;
    if len < HEADER_LEN as u64 {
        return Err(LogError::corrupt(
            path,
            0,
            format!("a closed segment of {len} bytes, shorter than the header"),
        ));
    }
    let bytes = io::read_whole(path, &file, len)?;
    raftlog::check_header(&bytes).map_err(|damage| LogError::corrupt(path, 0, damage))?;
    let mut scanner = Scanner::new(&bytes);
    let offsets = entry_offsets(path, &mut scanner, last_term)?;
    let stop_offset = scanner.offset();
    if let Some(Stop::Damaged { offset, reason }) = scanner.stop() {
        return Err(LogError::corrupt(
            path,
            *offset as u64,
            format!("in a closed segment: {reason}"),
        ));
    }
    let expected = next_first - first;
    if offsets.len() as u64 != expected {
        return Err(LogError::corrupt(
            path,
            stop_offset as u64,
            format!(
                "the segment holds {} entries from index {first}, but the next segment starts at index {next_first}",
                offsets.len()
            ),
        ));
    }
    Ok(Segment::new(first, path.to_path_buf(), file, offsets, stop_offset, len))
}

/// Opens the active segment and makes it appendable. Returns it, and whether it ends in the
/// closing marker (then the next segment still has to be created).
fn recover_active(
    first: u64,
    path: &Path,
    segment_size_bytes: u64,
    last_term: &mut Option<u64>,
) -> Result<(Segment, bool), LogError> {
    let (file, len) = open_checked(path)?;
    if len < HEADER_LEN as u64 {
        // Creation makes the file durable before anything is written into it, so a file this
        // short never held an entry: its creation was cut short.
        tracing::warn!(path = %path.display(), len, "finishing the creation of a log segment a crash interrupted");
        io::write_at(path, &file, &raftlog::encode_header(), 0)?;
        io::grow(path, &file, segment_size_bytes)?;
        return Ok((
            Segment::empty(first, path.to_path_buf(), file, segment_size_bytes),
            false,
        ));
    }
    let bytes = io::read_whole(path, &file, len)?;
    // Written and synced when the file was created, before any entry: damage is corruption.
    raftlog::check_header(&bytes).map_err(|damage| LogError::corrupt(path, 0, damage))?;
    let mut scanner = Scanner::new(&bytes);
    let offsets = entry_offsets(path, &mut scanner, last_term)?;
    let end = scanner.offset();
    let mut closed = false;
    match scanner.stop() {
        Some(Stop::Closed { offset }) if offsets.is_empty() => {
            return Err(LogError::corrupt(
                path,
                *offset as u64,
                "a segment closed before its first entry",
            ));
        }
        Some(Stop::Closed { .. }) => closed = true,
        Some(Stop::End { offset }) => {
            if let Some(last) = last_nonzero(&bytes, *offset) {
                // The size field of the first lost entry reads zero, later bytes did reach the disk.
                cut_torn_tail(path, &file, *offset, last + 1, "a zero size field before written bytes")?;
            }
        }
        Some(Stop::Damaged { offset, reason }) => {
            let last = last_nonzero(&bytes, *offset).unwrap_or(*offset);
            let written = bytes.get(..=last).unwrap_or(&bytes);
            if let Some(valid) = raftlog::find_entry(written, offset + 1)
                && !lost_sector_between(&bytes, *offset, valid)
            {
                return Err(LogError::corrupt(
                    path,
                    *offset as u64,
                    format!(
                        "{reason}, and a valid entry follows at offset {valid} with no lost sector between: \
                         not a torn write"
                    ),
                ));
            }
            cut_torn_tail(path, &file, *offset, last + 1, reason)?;
        }
        None => {}
    }
    // Whatever a crashed process left in the page cache becomes durable before the log builds
    // on it (a follower must not report entries a power loss could still take away).
    io::sync_all(path, &file)?;
    Ok((Segment::new(first, path.to_path_buf(), file, offsets, end, len), closed))
}

/// Opens a segment file and reads its length, which must be one a segment can have.
fn open_checked(path: &Path) -> Result<(File, u64), LogError> {
    let file = io::open_segment(path)?;
    let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    if len > MAX_SEGMENT_BYTES {
        return Err(LogError::corrupt(
            path,
            MAX_SEGMENT_BYTES,
            format!("a segment of {len} bytes, longer than the format's {MAX_SEGMENT_BYTES}"),
        ));
    }
    Ok((file, len))
}

/// The offsets of the entries a scan yields, checking that terms never decrease (the CRC does
/// not cover the term; a Raft log's terms only grow).
fn entry_offsets(path: &Path, scanner: &mut Scanner<'_>, last_term: &mut Option<u64>) -> Result<Vec<u32>, LogError> {
    let mut offsets = Vec::new();
    for entry in scanner {
        if let Some(previous) = *last_term
            && entry.term < previous
        {
            return Err(LogError::corrupt(
                path,
                entry.offset as u64,
                format!(
                    "term {} after term {previous}: a Raft log's terms never decrease",
                    entry.term
                ),
            ));
        }
        *last_term = Some(entry.term);
        let offset = u32::try_from(entry.offset)
            .map_err(|_| LogError::corrupt(path, entry.offset as u64, "an entry beyond the format's offsets"))?;
        offsets.push(offset);
    }
    Ok(offsets)
}

/// Zeroes `[from, to)` of the active segment: the remains of a write that never completed.
fn cut_torn_tail(
    path: &Path,
    file: &File,
    from: usize,
    to: usize,
    reason: impl std::fmt::Display,
) -> Result<(), LogError> {
    tracing::warn!(
        path = %path.display(),
        offset = from,
        bytes = to.saturating_sub(from),
        %reason,
        "cutting off the torn end of the active log segment (never reported durable)"
    );
    io::zero_range(path, file, from as u64, to as u64)
}

/// The position of the last non-zero byte at or after `from`.
fn last_nonzero(bytes: &[u8], from: usize) -> Option<usize> {
    let tail = bytes.get(from..)?;
    tail.iter().rposition(|b| *b != 0).map(|at| from + at)
}

/// Whether the damage in `[damaged, valid)` can be a torn write: whether some sector there reads
/// as zeros where a write was lost. A lost sector reads zero from the damaged entry onwards; it
/// shows as a whole zero sector inside the range, as zeros from `damaged` to the end of its
/// sector (the lost sector held the high bytes of the damaged entry's size), or as zeros from
/// a sector's start up to a valid entry whose size field straddles the sector's end. Bit rot in
/// acknowledged data shows none of these (except by chance, in data that has them anyway).
fn lost_sector_between(bytes: &[u8], damaged: usize, valid: usize) -> bool {
    let mut sector = damaged - damaged % SECTOR_BYTES;
    while sector < valid {
        let from = sector.max(damaged);
        let to = (sector + SECTOR_BYTES).min(valid);
        let zeros = bytes.get(from..to).is_some_and(|part| part.iter().all(|b| *b == 0));
        if zeros && (from == damaged || to - from + MARKER_LEN > SECTOR_BYTES) {
            return true;
        }
        sector += SECTOR_BYTES;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_zero_sector_between_damage_and_a_valid_entry_is_a_lost_write() {
        let mut bytes = vec![1u8; 4 * SECTOR_BYTES];
        assert!(!lost_sector_between(&bytes, 100, 3 * SECTOR_BYTES));
        bytes[SECTOR_BYTES..2 * SECTOR_BYTES].fill(0);
        assert!(lost_sector_between(&bytes, 100, 3 * SECTOR_BYTES));
        assert!(
            !lost_sector_between(&bytes, 100, 2 * SECTOR_BYTES - 10),
            "part of a sector is no evidence"
        );
    }

    #[test]
    fn zeros_from_the_damage_to_its_sector_end_are_a_lost_write() {
        let mut bytes = vec![1u8; 2 * SECTOR_BYTES];
        bytes[SECTOR_BYTES - 2..SECTOR_BYTES].fill(0);
        assert!(lost_sector_between(&bytes, SECTOR_BYTES - 2, SECTOR_BYTES + 40));
        assert!(!lost_sector_between(&bytes, SECTOR_BYTES - 3, SECTOR_BYTES + 40));
    }

    #[test]
    fn zeros_up_to_a_valid_entry_straddling_a_sector_end_are_a_lost_write() {
        let mut bytes = vec![1u8; 3 * SECTOR_BYTES];
        let valid = 2 * SECTOR_BYTES - 2;
        bytes[SECTOR_BYTES..valid].fill(0);
        assert!(lost_sector_between(&bytes, 100, valid));
        let mut short = vec![1u8; 3 * SECTOR_BYTES];
        short[SECTOR_BYTES..SECTOR_BYTES + 40].fill(0);
        assert!(!lost_sector_between(&short, 100, SECTOR_BYTES + 40));
    }

    #[test]
    fn the_last_nonzero_byte_is_found_from_an_offset() {
        assert_eq!(last_nonzero(&[0, 3, 0, 4, 0, 0], 0), Some(3));
        assert_eq!(last_nonzero(&[0, 3, 0, 4, 0, 0], 4), None);
        assert_eq!(last_nonzero(&[1], 5), None);
    }
}
