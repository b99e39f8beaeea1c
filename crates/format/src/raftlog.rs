//! Axon Server EE's Raft log-entry segment files, byte for byte.
//!
//! ```text
//! file   := header entry* [END | CLOSED] zero-fill
//! header := u8 version=0  i32 flags=0                                  (5 bytes)
//! entry  := i32 N  u8 version=0  i64 term  i32 type  N bytes  i32 crc  (N + 21 bytes)
//! END    := i32 0       nothing written here yet
//! CLOSED := i32 -1      the log goes on in the next file
//! ```
//!
//! All integers are big-endian. `crc` is the CRC-32 (IEEE) of the N data bytes only: the size,
//! version, term and type of an entry are not covered by it. The entry's index is not stored:
//! a file is named after the index of its first entry (`%020d.log`) and every following entry
//! has the next index.
//!
//! This module only encodes and decodes bytes. Deciding whether damage at the end of a file is
//! a torn write or corruption, and where the files live, is the caller's business
//! (`myelin-cluster`'s log store; see `docs/FORMAT.md`, "Raft log-entry segments").

use std::ops::Range;

use thiserror::Error;

/// Bytes of the file header: `u8 version`, `i32 flags`.
pub const HEADER_LEN: usize = 5;
/// Bytes an entry takes besides its data: size (4), version (1), term (8), type (4), CRC (4).
pub const ENTRY_OVERHEAD: usize = 21;
/// Bytes of a size field alone, which is all an end marker is.
pub const MARKER_LEN: usize = 4;
/// The size value that says "nothing written here yet": an open file is zero-filled.
pub const END_OF_DATA: i32 = 0;
/// The size value that says "this file is closed, the log goes on in the next one".
pub const END_OF_SEGMENT: i32 = -1;
/// The only file version Axon Server writes (and Myelin reads).
pub const FILE_VERSION: u8 = 0;
/// The only entry version Axon Server writes (and Myelin reads).
pub const ENTRY_VERSION: u8 = 0;
/// The data of every [`EntryType::DummyEntry`].
pub const DUMMY_DATA: &[u8] = b"X";
/// Ending of a segment file's name.
pub const FILE_SUFFIX: &str = ".log";
/// Digits of the first index in a file name.
pub const FILE_NAME_DIGITS: usize = 20;

/// Bytes of a segment that no entry can use: the header, and room for the end marker after
/// the last entry. An entry is refused when `N + 21 > segment size - 9` (Axon's rule).
pub const SEGMENT_RESERVED_BYTES: u64 = (HEADER_LEN + MARKER_LEN) as u64;
/// The smallest segment that holds an entry of one data byte (a dummy entry).
pub const MIN_SEGMENT_BYTES: u64 = SEGMENT_RESERVED_BYTES + ENTRY_OVERHEAD as u64 + DUMMY_DATA.len() as u64;
/// The largest segment: positions and sizes are Java `int`s in Axon Server.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// Where an entry's data starts, from the start of the entry.
pub const ENTRY_DATA_OFFSET: usize = 17;
/// Offsets of the other fields inside an entry, from its start.
const VERSION_AT: usize = 4;
const TERM_AT: usize = 5;
const TYPE_AT: usize = 13;
const DATA_AT: usize = ENTRY_DATA_OFFSET;

const _: () = assert!(SEGMENT_RESERVED_BYTES == 9);
const _: () = assert!(DATA_AT + MARKER_LEN == ENTRY_OVERHEAD);
const _: () = assert!(TERM_AT == VERSION_AT + 1 && TYPE_AT == TERM_AT + 8 && DATA_AT == TYPE_AT + 4);
const _: () = assert!(MIN_SEGMENT_BYTES < MAX_SEGMENT_BYTES);

/// What an entry holds: the number of the `Entry.data` oneof case of Axon's `cluster.proto`
/// whose protobuf bytes are the entry's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// `SerializedObject`: an application entry (events, snapshots, control commands).
    SerializedObject,
    /// `Config`: a new cluster configuration.
    Config,
    /// `LeaderElected`: the first entry of a new leader's term.
    LeaderElected,
    /// `DummyEntry`: a placeholder, data [`DUMMY_DATA`].
    DummyEntry,
}

impl EntryType {
    /// Every type, in code order.
    pub const ALL: [EntryType; 4] = [
        EntryType::SerializedObject,
        EntryType::Config,
        EntryType::LeaderElected,
        EntryType::DummyEntry,
    ];

    /// The `i32` written in the entry's type field.
    pub const fn code(self) -> i32 {
        match self {
            EntryType::SerializedObject => 3,
            EntryType::Config => 4,
            EntryType::LeaderElected => 5,
            EntryType::DummyEntry => 6,
        }
    }

    /// The type written as `code`; `None` for any other number.
    pub const fn from_code(code: i32) -> Option<EntryType> {
        match code {
            3 => Some(EntryType::SerializedObject),
            4 => Some(EntryType::Config),
            5 => Some(EntryType::LeaderElected),
            6 => Some(EntryType::DummyEntry),
            _ => None,
        }
    }
}

impl From<EntryType> for i32 {
    fn from(kind: EntryType) -> i32 {
        kind.code()
    }
}

impl TryFrom<i32> for EntryType {
    type Error = Damage;

    fn try_from(code: i32) -> Result<EntryType, Damage> {
        EntryType::from_code(code).ok_or(Damage::UnknownType(code))
    }
}

/// Why bytes are not a valid header or entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Damage {
    #[error("unsupported file version {0} (accepted: 0)")]
    FileVersion(u8),
    #[error("unsupported file flags {0:#x} (accepted: 0; other flags mean transformed entries)")]
    FileFlags(i32),
    #[error("invalid entry size {0} (accepted: 0 for the end, -1 for a closed file, or positive)")]
    InvalidSize(i32),
    #[error("unsupported entry version {0} (accepted: 0)")]
    EntryVersion(u8),
    #[error("negative term {0}")]
    NegativeTerm(i64),
    #[error("unknown entry type {0} (accepted: 3 to 6)")]
    UnknownType(i32),
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

/// Why an entry cannot be encoded at all (whether it fits a segment is [`fits_segment`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("term {0} does not fit the format's i64")]
    TermTooLarge(u64),
    #[error("{0} data bytes do not fit the format's i32 size")]
    DataTooLarge(usize),
    /// A size of 0 means "nothing written here": an entry needs at least one data byte.
    #[error("an entry needs at least one data byte (a size of 0 marks the end of the data)")]
    EmptyData,
}

/// The file header Myelin writes: version 0, flags 0 (Axon Server's default). All zeros, so a
/// pre-allocated, zero-filled file already reads as an empty segment.
pub const fn encode_header() -> [u8; HEADER_LEN] {
    [FILE_VERSION, 0, 0, 0, 0]
}

/// Checks the file header at the start of `segment`.
pub fn check_header(segment: &[u8]) -> Result<(), Damage> {
    let header = segment.get(..HEADER_LEN).ok_or(Damage::Truncated {
        needed: HEADER_LEN,
        available: segment.len(),
    })?;
    let version = byte_at(header, 0).unwrap_or(FILE_VERSION);
    if version != FILE_VERSION {
        return Err(Damage::FileVersion(version));
    }
    match i32_at(header, 1) {
        Some(0) | None => Ok(()),
        Some(flags) => Err(Damage::FileFlags(flags)),
    }
}

/// Bytes an entry with `data_len` data bytes takes in a file.
pub const fn entry_len(data_len: usize) -> usize {
    data_len.saturating_add(ENTRY_OVERHEAD)
}

/// The largest entry (data and overhead) a segment of `segment_size_bytes` accepts.
pub const fn max_entry_len(segment_size_bytes: u64) -> u64 {
    segment_size_bytes.saturating_sub(SEGMENT_RESERVED_BYTES)
}

/// Whether an entry of `data_len` data bytes may be written to a log whose segments are
/// `segment_size_bytes` long (Axon's `PAYLOAD_TOO_LARGE` rule).
pub const fn fits_segment(data_len: usize, segment_size_bytes: u64) -> bool {
    (entry_len(data_len) as u64) <= max_entry_len(segment_size_bytes)
}

/// Appends one entry to `out` and returns the bytes it took (`data.len() + 21`). Writes
/// nothing on error.
pub fn encode_entry(term: u64, kind: EntryType, data: &[u8], out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    if data.is_empty() {
        return Err(EncodeError::EmptyData);
    }
    let term = i64::try_from(term).map_err(|_| EncodeError::TermTooLarge(term))?;
    let size = i32::try_from(data.len())
        .ok()
        .filter(|_| i32::try_from(entry_len(data.len())).is_ok())
        .ok_or(EncodeError::DataTooLarge(data.len()))?;
    out.reserve(entry_len(data.len()));
    out.extend_from_slice(&size.to_be_bytes());
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&kind.code().to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    Ok(entry_len(data.len()))
}

/// The 4 bytes that close a segment.
pub const fn encode_end_of_segment() -> [u8; MARKER_LEN] {
    END_OF_SEGMENT.to_be_bytes()
}

/// One verified entry, borrowed from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub term: u64,
    pub kind: EntryType,
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// Bytes the entry takes in the file.
    pub fn len(&self) -> usize {
        entry_len(self.data.len())
    }

    /// Never true: even an entry without data has its 21 bytes of framing.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What the bytes at an entry position hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// A complete entry whose CRC matches.
    Entry(Entry<'a>),
    /// Size `0`, or fewer than 4 bytes left: nothing written here.
    End,
    /// Size `-1`: the file is closed.
    Closed,
}

/// Reads the entry (or marker) at the start of `bytes`, checking every field and the CRC.
pub fn read_entry(bytes: &[u8]) -> Result<Slot<'_>, Damage> {
    let Some(size) = i32_at(bytes, 0) else {
        return Ok(Slot::End);
    };
    let data_len = match size {
        END_OF_DATA => return Ok(Slot::End),
        END_OF_SEGMENT => return Ok(Slot::Closed),
        size => usize::try_from(size).map_err(|_| Damage::InvalidSize(size))?,
    };
    let truncated = |needed: usize| Damage::Truncated {
        needed,
        available: bytes.len(),
    };
    let (Some(version), Some(term), Some(code)) = (
        byte_at(bytes, VERSION_AT),
        i64_at(bytes, TERM_AT),
        i32_at(bytes, TYPE_AT),
    ) else {
        return Err(truncated(entry_len(data_len)));
    };
    if version != ENTRY_VERSION {
        return Err(Damage::EntryVersion(version));
    }
    let term = u64::try_from(term).map_err(|_| Damage::NegativeTerm(term))?;
    let kind = EntryType::try_from(code)?;
    let data_end = DATA_AT + data_len;
    let (Some(data), Some(stored)) = (bytes.get(DATA_AT..data_end), i32_at(bytes, data_end)) else {
        return Err(truncated(entry_len(data_len)));
    };
    // The CRC is an unsigned value stored in an `int`.
    let stored = stored as u32;
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(Damage::Checksum { stored, computed });
    }
    Ok(Slot::Entry(Entry { term, kind, data }))
}

/// One entry found by a [`Scanner`], located in the scanned buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedEntry {
    /// Where the entry starts (its size field).
    pub offset: usize,
    pub term: u64,
    pub kind: EntryType,
    /// Where its data lies in the scanned buffer.
    pub data: Range<usize>,
}

impl ScannedEntry {
    /// Bytes the entry takes in the file.
    pub fn len(&self) -> usize {
        entry_len(self.data.len())
    }

    /// Never true: even an entry without data has its 21 bytes of framing.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Where the next entry (or marker) starts.
    pub fn end(&self) -> usize {
        self.offset + self.len()
    }
}

/// Why a [`Scanner`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Size `0`, or fewer than 4 bytes left, at `offset`: the end of what was written.
    End { offset: usize },
    /// Size `-1` at `offset`: the file is closed.
    Closed { offset: usize },
    /// The bytes at `offset` are not a valid entry. A torn write or corruption: the scanner
    /// cannot tell which, the caller can (it knows whether the file was still being written).
    Damaged { offset: usize, reason: Damage },
}

impl Stop {
    /// Where the scan stopped.
    pub fn offset(&self) -> usize {
        match self {
            Stop::End { offset } | Stop::Closed { offset } | Stop::Damaged { offset, .. } => *offset,
        }
    }
}

/// Walks the entries of a segment's bytes from the first entry position, verifying each one,
/// until the end, the closing marker or the first damage; then [`stop`](Scanner::stop) says
/// which. Does not check the file header (see [`check_header`]).
#[derive(Debug, Clone)]
pub struct Scanner<'a> {
    segment: &'a [u8],
    offset: usize,
    stop: Option<Stop>,
}

impl<'a> Scanner<'a> {
    /// A scan of a whole segment file's bytes, from offset [`HEADER_LEN`].
    pub fn new(segment: &'a [u8]) -> Scanner<'a> {
        Scanner::starting_at(segment, HEADER_LEN)
    }

    /// A scan from `offset`, which must be an entry position of `segment`.
    pub fn starting_at(segment: &'a [u8], offset: usize) -> Scanner<'a> {
        Scanner {
            segment,
            offset,
            stop: None,
        }
    }

    /// Why the scan ended; `None` while entries may follow.
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Where the next entry would start: after the last entry yielded.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl Iterator for Scanner<'_> {
    type Item = ScannedEntry;

    fn next(&mut self) -> Option<ScannedEntry> {
        if self.stop.is_some() {
            return None;
        }
        let offset = self.offset;
        let rest = self.segment.get(offset..).unwrap_or_default();
        let stop = match read_entry(rest) {
            Ok(Slot::Entry(entry)) => {
                let data_start = offset + DATA_AT;
                let scanned = ScannedEntry {
                    offset,
                    term: entry.term,
                    kind: entry.kind,
                    data: data_start..data_start + entry.data.len(),
                };
                self.offset = scanned.end();
                return Some(scanned);
            }
            Ok(Slot::End) => Stop::End { offset },
            Ok(Slot::Closed) => Stop::Closed { offset },
            Err(reason) => Stop::Damaged { offset, reason },
        };
        self.stop = Some(stop);
        None
    }
}

/// The first offset in `from..` of `segment` where a complete, valid entry starts, trying every
/// byte position. Lets a caller tell whether valid data follows damage.
pub fn find_entry(segment: &[u8], from: usize) -> Option<usize> {
    (from..segment.len().saturating_sub(ENTRY_OVERHEAD - 1))
        .find(|&offset| matches!(segment.get(offset..).map(read_entry), Some(Ok(Slot::Entry(_)))))
}

/// `00000000000000000001.log`: the first index of the file, zero-padded to 20 digits.
pub fn file_name(first_index: u64) -> String {
    format!("{first_index:020}{FILE_SUFFIX}")
}

/// The first index named by a segment file name; `None` for any name that is not exactly
/// 20 digits and `.log`.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let (digits, suffix) = name.split_at_checked(FILE_NAME_DIGITS)?;
    if suffix != FILE_SUFFIX || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn byte_at(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

fn i32_at(bytes: &[u8], at: usize) -> Option<i32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(i32::from_be_bytes(raw))
}

fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(i64::from_be_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Written = (u64, EntryType, Vec<u8>);

    fn segment_of(entries: &[Written]) -> (Vec<u8>, Vec<usize>) {
        let mut out = encode_header().to_vec();
        let mut offsets = Vec::new();
        for (term, kind, data) in entries {
            offsets.push(out.len());
            encode_entry(*term, *kind, data, &mut out).unwrap();
        }
        (out, offsets)
    }

    fn scan(bytes: &[u8]) -> (Vec<Written>, Stop) {
        let mut scanner = Scanner::new(bytes);
        let entries = scanner
            .by_ref()
            .map(|entry| (entry.term, entry.kind, bytes[entry.data].to_vec()))
            .collect();
        (entries, scanner.stop().cloned().expect("a stop after the last entry"))
    }

    fn any_entry() -> impl Strategy<Value = Written> {
        (
            0..=i64::MAX as u64,
            prop::sample::select(EntryType::ALL.to_vec()),
            prop::collection::vec(any::<u8>(), 1..40),
        )
    }

    #[test]
    fn one_entry_of_each_type_has_exactly_the_bytes_of_axons_layout() {
        let mut out = encode_header().to_vec();
        encode_entry(1, EntryType::SerializedObject, b"\x0a\x03abc", &mut out).unwrap();
        encode_entry(2, EntryType::Config, b"\x0a\x00", &mut out).unwrap();
        encode_entry(3, EntryType::LeaderElected, b"\x0a\x02n1", &mut out).unwrap();
        encode_entry(0x0102_0304_0506_0708, EntryType::DummyEntry, DUMMY_DATA, &mut out).unwrap();
        out.extend_from_slice(&encode_end_of_segment());
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // header: version 0, flags 0
            0x00, 0x00, 0x00, 0x00, 0x00,
            // SerializedObject: size 5, version 0, term 1, type 3, data, CRC-32 0x5442d882
            0x00, 0x00, 0x00, 0x05, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x03,
            0x0a, 0x03, b'a', b'b', b'c',
            0x54, 0x42, 0xd8, 0x82,
            // Config: size 2, version 0, term 2, type 4, data, CRC-32 0xbb36fa75
            0x00, 0x00, 0x00, 0x02, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
            0x00, 0x00, 0x00, 0x04,
            0x0a, 0x00,
            0xbb, 0x36, 0xfa, 0x75,
            // LeaderElected: size 4, version 0, term 3, type 5, data, CRC-32 0xe7ddad05
            0x00, 0x00, 0x00, 0x04, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
            0x00, 0x00, 0x00, 0x05,
            0x0a, 0x02, b'n', b'1',
            0xe7, 0xdd, 0xad, 0x05,
            // DummyEntry: size 1, version 0, term 0x0102030405060708, type 6, "X", CRC-32 0xb7b2364b
            0x00, 0x00, 0x00, 0x01, 0x00,
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
            0x00, 0x00, 0x00, 0x06,
            b'X',
            0xb7, 0xb2, 0x36, 0x4b,
            // closed: the log goes on in the next file
            0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(out, expected);
        let (entries, stop) = scan(&out);
        assert_eq!(
            entries,
            vec![
                (1, EntryType::SerializedObject, b"\x0a\x03abc".to_vec()),
                (2, EntryType::Config, b"\x0a\x00".to_vec()),
                (3, EntryType::LeaderElected, b"\x0a\x02n1".to_vec()),
                (0x0102_0304_0506_0708, EntryType::DummyEntry, b"X".to_vec()),
            ]
        );
        assert_eq!(
            stop,
            Stop::Closed {
                offset: expected.len() - 4
            }
        );
    }

    #[test]
    fn entry_types_are_axons_oneof_numbers_and_no_others() {
        let codes: Vec<i32> = EntryType::ALL.iter().map(|kind| i32::from(*kind)).collect();
        assert_eq!(codes, vec![3, 4, 5, 6]);
        for kind in EntryType::ALL {
            assert_eq!(EntryType::try_from(kind.code()), Ok(kind));
        }
        for code in [i32::MIN, -1, 0, 1, 2, 7, i32::MAX] {
            assert_eq!(EntryType::try_from(code), Err(Damage::UnknownType(code)));
        }
    }

    #[test]
    fn file_names_are_twenty_digits_and_dot_log() {
        assert_eq!(file_name(1), "00000000000000000001.log");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.log");
        assert_eq!(parse_file_name("00000000000000000001.log"), Some(1));
        assert_eq!(parse_file_name("18446744073709551615.log"), Some(u64::MAX));
        for name in [
            "0000000000000000001.log",
            "000000000000000000001.log",
            "0000000000000000000x.log",
            "00000000000000000001.index",
            "00000000000000000001.log.tmp",
            "99999999999999999999.log",
            "+0000000000000000001.log",
            "",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn a_header_is_version_zero_without_flags() {
        assert_eq!(check_header(&encode_header()), Ok(()));
        assert_eq!(check_header(&[1, 0, 0, 0, 0]), Err(Damage::FileVersion(1)));
        assert_eq!(check_header(&[0, 0, 0, 0, 1]), Err(Damage::FileFlags(1)));
        assert!(matches!(check_header(&[0, 0]), Err(Damage::Truncated { .. })));
    }

    #[test]
    fn the_segment_size_limit_is_axons_payload_too_large_rule() {
        assert_eq!(max_entry_len(100), 91);
        assert!(fits_segment(70, 100));
        assert!(!fits_segment(71, 100));
        assert!(fits_segment(DUMMY_DATA.len(), MIN_SEGMENT_BYTES));
        assert!(!fits_segment(DUMMY_DATA.len() + 1, MIN_SEGMENT_BYTES));
    }

    #[test]
    fn a_term_beyond_i64_or_an_entry_without_data_cannot_be_encoded() {
        let mut out = Vec::new();
        assert_eq!(
            encode_entry(1 << 63, EntryType::DummyEntry, DUMMY_DATA, &mut out),
            Err(EncodeError::TermTooLarge(1 << 63))
        );
        assert_eq!(
            encode_entry(1, EntryType::Config, b"", &mut out),
            Err(EncodeError::EmptyData)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let (good, _) = segment_of(&[(4, EntryType::SerializedObject, b"data".to_vec())]);
        let damaged = |at: usize, bytes: &[u8]| {
            let mut segment = good.clone();
            segment[at..at + bytes.len()].copy_from_slice(bytes);
            scan(&segment).1
        };
        let at = HEADER_LEN;
        assert_eq!(
            damaged(at, &(-2i32).to_be_bytes()),
            Stop::Damaged {
                offset: at,
                reason: Damage::InvalidSize(-2)
            }
        );
        assert_eq!(
            damaged(at + VERSION_AT, &[1]),
            Stop::Damaged {
                offset: at,
                reason: Damage::EntryVersion(1)
            }
        );
        assert_eq!(
            damaged(at + TERM_AT, &[0x80]),
            Stop::Damaged {
                offset: at,
                reason: Damage::NegativeTerm(i64::MIN + 4)
            }
        );
        assert_eq!(
            damaged(at + TYPE_AT, &7i32.to_be_bytes()),
            Stop::Damaged {
                offset: at,
                reason: Damage::UnknownType(7)
            }
        );
        assert_eq!(
            damaged(at, &1000i32.to_be_bytes()),
            Stop::Damaged {
                offset: at,
                reason: Damage::Truncated {
                    needed: 1021,
                    available: good.len() - at
                }
            }
        );
        assert!(matches!(
            damaged(at + DATA_AT, b"D"),
            Stop::Damaged { offset, reason: Damage::Checksum { .. } } if offset == at
        ));
    }

    #[test]
    fn fewer_than_four_bytes_or_a_zero_size_is_the_end() {
        let (good, _) = segment_of(&[(1, EntryType::DummyEntry, DUMMY_DATA.to_vec())]);
        for tail in [&[][..], &[0xab], &[0xab, 0xcd, 0xef], &[0, 0, 0, 0, 0xff]] {
            let mut segment = good.clone();
            segment.extend_from_slice(tail);
            assert_eq!(
                scan(&segment),
                (
                    vec![(1, EntryType::DummyEntry, b"X".to_vec())],
                    Stop::End { offset: good.len() }
                )
            );
        }
    }

    #[test]
    fn a_valid_entry_is_found_after_garbage() {
        let (good, offsets) = segment_of(&[
            (1, EntryType::DummyEntry, DUMMY_DATA.to_vec()),
            (1, EntryType::SerializedObject, b"payload".to_vec()),
        ]);
        let mut segment = good.clone();
        segment[offsets[0] + DATA_AT] = b'Y';
        assert_eq!(find_entry(&segment, offsets[0]), Some(offsets[1]));
        assert_eq!(find_entry(&segment, offsets[1] + 1), None);
        assert_eq!(find_entry(&[0; 64], 0), None);
    }

    proptest! {
        #[test]
        fn entries_read_back_as_written(entries in prop::collection::vec(any_entry(), 0..20), closed: bool) {
            let (mut segment, offsets) = segment_of(&entries);
            let end = segment.len();
            if closed {
                segment.extend_from_slice(&encode_end_of_segment());
            }
            segment.extend_from_slice(&[0; 16]);
            let (read, stop) = scan(&segment);
            prop_assert_eq!(read, entries);
            let expected = if closed { Stop::Closed { offset: end } } else { Stop::End { offset: end } };
            prop_assert_eq!(stop, expected);
            let scanned: Vec<usize> = Scanner::new(&segment).map(|entry| entry.offset).collect();
            prop_assert_eq!(scanned, offsets);
        }

        #[test]
        fn a_segment_cut_anywhere_reads_as_a_prefix_of_its_entries(
            entries in prop::collection::vec(any_entry(), 1..8),
            zero_filled: bool,
        ) {
            let (segment, offsets) = segment_of(&entries);
            for cut in 0..=segment.len() {
                let mut bytes = segment[..cut].to_vec();
                if zero_filled {
                    bytes.resize(segment.len() + 8, 0);
                }
                let (read, stop) = scan(&bytes);
                // An entry survives when its bytes do: cut off, or zero-filled where it had zeros
                // (a CRC may end in a zero byte).
                let whole = offsets
                    .iter()
                    .zip(&entries)
                    .take_while(|(offset, entry)| {
                        let span = **offset..**offset + entry_len(entry.2.len());
                        bytes.get(span.clone()) == segment.get(span)
                    })
                    .count();
                prop_assert_eq!(&read[..], &entries[..whole]);
                let stop_at = offsets.get(whole).copied().unwrap_or(segment.len());
                prop_assert_eq!(stop.offset(), stop_at);
                let left = cut.saturating_sub(stop_at);
                let is_end = matches!(stop, Stop::End { .. });
                if left == 0 || (left < MARKER_LEN && !zero_filled) {
                    prop_assert!(is_end, "cut at {}: {:?}", cut, stop);
                } else if left >= MARKER_LEN {
                    prop_assert!(matches!(stop, Stop::Damaged { .. }), "cut at {}: {:?}", cut, stop);
                }
            }
        }

        #[test]
        fn any_flipped_bit_of_data_or_checksum_is_caught(
            entries in prop::collection::vec(any_entry(), 1..6),
            which: prop::sample::Index,
            bit in 0..8u8,
        ) {
            let (segment, offsets) = segment_of(&entries);
            let victim = which.index(entries.len());
            let data_len = entries[victim].2.len();
            let start = offsets[victim] + DATA_AT;
            for at in start..start + data_len + 4 {
                let mut bytes = segment.clone();
                bytes[at] ^= 1 << bit;
                let (read, stop) = scan(&bytes);
                prop_assert_eq!(&read[..], &entries[..victim]);
                let is_checksum = matches!(stop, Stop::Damaged { offset, reason: Damage::Checksum { .. } } if offset == offsets[victim]);
                prop_assert!(is_checksum, "flipped byte {} gave {:?}", at, stop);
            }
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128), from in 0..140usize) {
            let _ = check_header(&bytes);
            let _ = scan(&bytes);
            let _ = Scanner::starting_at(&bytes, from).count();
            let _ = find_entry(&bytes, from);
        }
    }
}
