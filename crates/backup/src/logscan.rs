//! Reads a replication-log segment (Axon EE's log-entry framing, `myelin_format::raftlog`)
//! entry by entry, every CRC checked, to learn which log indexes it holds and where its last
//! valid entry ends — the log's counterpart of [`crate::scan`].
//!
//! A segment is named after the index of its first entry; entries carry no index, so the
//! indexes a file holds follow from its name and how many valid entries it has. Terms never
//! decrease along a Raft log: an entry whose term is lower than the one before it is damage.

use std::io::{self, Read};
use std::path::Path;

use myelin_format::raftlog::{self, MAX_SEGMENT_BYTES, Scanner, Stop};

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEnding {
    /// The closing marker (-1): the log goes on in the next file.
    Closed,
    /// A zero size field: the end of what was written.
    End,
    /// The file ended right after an entry, with no marker (a copy cut at an entry boundary).
    EndOfFile,
    /// The bytes at `offset` are not a valid entry (or the header is bad, `offset` 0).
    Damaged { offset: u64, reason: String },
}

/// What a scan of one log segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogScan {
    /// The index of the first entry: the file's name.
    pub first_index: u64,
    /// Valid entries, from the first.
    pub entries: u64,
    /// Byte offset just past the last valid entry (the header alone: 5).
    pub valid_len: u64,
    /// Term of the first and of the last valid entry.
    pub first_term: Option<u64>,
    pub last_term: Option<u64>,
    pub ending: LogEnding,
}

impl LogScan {
    /// Index of the last valid entry, `None` when the file holds none.
    pub fn last_index(&self) -> Option<u64> {
        (self.entries > 0).then(|| self.first_index + self.entries - 1)
    }

    /// The index the next file must start at for the log to be contiguous.
    pub fn next_index(&self) -> u64 {
        self.first_index + self.entries
    }
}

/// Scans the log segment at `path`, whose first entry has index `first_index`. A file longer
/// than a segment can be (2 GiB) is refused before it is read.
pub fn scan_log_file(path: &Path, first_index: u64) -> io::Result<LogScan> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_SEGMENT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes: longer than any log segment ({MAX_SEGMENT_BYTES})"),
        ));
    }
    // Segments are read whole: the framing is checked over a slice, and a segment is at most
    // a few MiB in practice (16 MiB by default).
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_SEGMENT_BYTES).read_to_end(&mut bytes)?;
    Ok(scan_log(&bytes, first_index))
}

/// Scans a log segment's bytes.
pub fn scan_log(bytes: &[u8], first_index: u64) -> LogScan {
    let mut scan = LogScan {
        first_index,
        entries: 0,
        valid_len: 0,
        first_term: None,
        last_term: None,
        ending: LogEnding::EndOfFile,
    };
    if bytes.len() < raftlog::HEADER_LEN {
        scan.ending = LogEnding::Damaged {
            offset: 0,
            reason: format!(
                "file header truncated: {} of {} bytes",
                bytes.len(),
                raftlog::HEADER_LEN
            ),
        };
        return scan;
    }
    if let Err(damage) = raftlog::check_header(bytes) {
        scan.ending = LogEnding::Damaged {
            offset: 0,
            reason: format!("invalid file header: {damage}"),
        };
        return scan;
    }
    scan.valid_len = raftlog::HEADER_LEN as u64;
    let mut scanner = Scanner::new(bytes);
    for entry in scanner.by_ref() {
        if let Some(previous) = scan.last_term
            && entry.term < previous
        {
            scan.ending = LogEnding::Damaged {
                offset: entry.offset as u64,
                reason: format!("term {} after term {previous}: terms never decrease", entry.term),
            };
            return scan;
        }
        scan.first_term.get_or_insert(entry.term);
        scan.last_term = Some(entry.term);
        scan.entries += 1;
        scan.valid_len = entry.end() as u64;
    }
    scan.ending = match scanner.stop() {
        Some(Stop::Closed { .. }) => LogEnding::Closed,
        // The scanner reports fewer than 4 bytes left as the end; exactly none left is a copy
        // cut right after an entry.
        Some(Stop::End { offset }) if *offset >= bytes.len() => LogEnding::EndOfFile,
        // A file with fewer than 4 bytes after its last entry has no room for a marker (Axon
        // then closes it without one); those bytes are zeros, anything else is damage.
        Some(Stop::End { offset })
            if bytes.len() - offset < raftlog::MARKER_LEN
                && bytes.get(*offset..).unwrap_or_default().iter().any(|b| *b != 0) =>
        {
            LogEnding::Damaged {
                offset: *offset as u64,
                reason: format!("{} stray bytes after the last entry", bytes.len() - offset),
            }
        }
        Some(Stop::End { .. }) | None => LogEnding::End,
        Some(Stop::Damaged { offset, reason }) => LogEnding::Damaged {
            offset: *offset as u64,
            reason: reason.to_string(),
        },
    };
    scan
}

#[cfg(test)]
mod tests {
    use super::*;
    use myelin_format::raftlog::{EntryType, encode_entry, encode_header};

    fn segment(terms: &[u64], marker: Option<i32>) -> Vec<u8> {
        let mut out = encode_header().to_vec();
        for (i, term) in terms.iter().enumerate() {
            encode_entry(
                *term,
                EntryType::SerializedObject,
                format!("entry {i}").as_bytes(),
                &mut out,
            )
            .expect("encodes");
        }
        if let Some(marker) = marker {
            out.extend_from_slice(&marker.to_be_bytes());
        }
        out
    }

    #[test]
    fn a_closed_segment_holds_its_entries_and_ends_with_the_marker() {
        let mut bytes = segment(&[1, 1, 2], Some(-1));
        bytes.extend_from_slice(&[0u8; 100]);
        let scan = scan_log(&bytes, 10);
        assert_eq!(scan.ending, LogEnding::Closed);
        assert_eq!((scan.entries, scan.last_index(), scan.next_index()), (3, Some(12), 13));
        assert_eq!((scan.first_term, scan.last_term), (Some(1), Some(2)));
    }

    #[test]
    fn an_active_copy_ends_at_zero_or_at_the_end_of_the_file() {
        let scan = scan_log(&segment(&[3], Some(0)), 1);
        assert_eq!((scan.ending, scan.entries), (LogEnding::End, 1));
        let bytes = segment(&[3, 3], None);
        let scan = scan_log(&bytes, 1);
        assert_eq!(
            (scan.ending, scan.valid_len),
            (LogEnding::EndOfFile, bytes.len() as u64)
        );
        let empty = scan_log(&segment(&[], Some(0)), 7);
        assert_eq!((empty.entries, empty.last_index(), empty.next_index()), (0, None, 7));
    }

    #[test]
    fn a_flipped_byte_a_cut_entry_or_a_term_going_back_is_damage() {
        let whole = segment(&[1, 1], Some(-1));
        let first_end = scan_log(&segment(&[1], None), 1).valid_len as usize;
        for at in first_end + 17..whole.len() - 8 {
            let mut bytes = whole.clone();
            bytes[at] ^= 0x01;
            let scan = scan_log(&bytes, 1);
            assert!(matches!(scan.ending, LogEnding::Damaged { .. }), "flip at {at}");
            assert_eq!(scan.entries, 1, "flip at {at}");
        }
        let scan = scan_log(&whole[..whole.len() - 9], 1);
        assert!(matches!(scan.ending, LogEnding::Damaged { .. }), "{scan:?}");
        let scan = scan_log(&segment(&[2, 1], Some(-1)), 1);
        assert!(matches!(scan.ending, LogEnding::Damaged { ref reason, .. } if reason.contains("never decrease")));
        assert_eq!(scan.entries, 1);
        let mut bad_header = whole.clone();
        bad_header[0] = 1;
        assert!(matches!(
            scan_log(&bad_header, 1).ending,
            LogEnding::Damaged { offset: 0, .. }
        ));
        assert!(matches!(
            scan_log(&whole[..3], 1).ending,
            LogEnding::Damaged { offset: 0, .. }
        ));
    }
}
