//! Axon Server's segment file format, byte for byte.
//!
//! ```text
//! file   := header block* (END | ROLL) zero-fill
//! header := u8 version  i32 flags                      (5 bytes)
//! block  := i32 size  u8 version  i16 count            (7 bytes)
//!           count × (i32 len, len bytes protobuf Event)
//!           u32 crc32(IEEE) of the count × (len, bytes) area
//! END    := i32 0      ROLL := i32 -1
//! ```
//!
//! All integers are big-endian. `size` is the byte length of the event area (the sum of
//! `4 + len`), excluding the block header and the CRC. Tokens are positional: the first event
//! of a file has the token in the file's name, every following event the next one.

use thiserror::Error;

/// Bytes of the file header: `u8 version`, `i32 flags`.
pub const FILE_HEADER_BYTES: usize = 5;
/// Bytes of a block header: `i32 size`, `u8 version`, `i16 count`.
pub const BLOCK_HEADER_BYTES: usize = 7;
/// Bytes of the CRC that closes every block.
pub const CRC_BYTES: usize = 4;
/// Bytes of the length prefix in front of every event.
pub const EVENT_LEN_BYTES: usize = 4;
/// Bytes of the `size` field alone: the end and roll markers are this long.
pub const MARKER_BYTES: usize = 4;
/// The file and transaction version Axon Server writes today.
pub const CURRENT_VERSION: u8 = 2;
/// A block holds at most `i16::MAX` events; larger transactions span several blocks.
pub const MAX_EVENTS_PER_BLOCK: usize = i16::MAX as usize;
/// The `size` value that says "the rest of this segment moved to the next file".
pub const ROLL_MARKER: i32 = -1;
/// The `size` value that says "nothing written here yet".
pub const END_MARKER: i32 = 0;
/// The largest encoded transaction: its blocks must fit in one file whose offsets are `i32`.
pub const MAX_TRANSACTION_BYTES: usize = i32::MAX as usize - FILE_HEADER_BYTES - MARKER_BYTES;

/// Which of the two segment families a file belongs to. Both share the block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    Events,
    Snapshots,
}

impl SegmentKind {
    /// Suffix of the segment data file, as Axon Server names it.
    pub fn data_suffix(self) -> &'static str {
        match self {
            SegmentKind::Events => "events",
            SegmentKind::Snapshots => "snapshots",
        }
    }

    /// Suffix of Myelin's aggregate index file. Distinct from Axon's `.index`/`.sindex`
    /// (MapDB files) so the two servers never overwrite each other's side files.
    pub fn index_suffix(self) -> &'static str {
        match self {
            SegmentKind::Events => "mindex",
            SegmentKind::Snapshots => "msindex",
        }
    }

    /// Suffix of Myelin's bloom filter file (Axon's are `.bloom`/`.sbloom`).
    pub fn bloom_suffix(self) -> &'static str {
        match self {
            SegmentKind::Events => "mbloom",
            SegmentKind::Snapshots => "msbloom",
        }
    }

    /// Index byte used in Myelin's index file header.
    pub fn code(self) -> u8 {
        match self {
            SegmentKind::Events => 0,
            SegmentKind::Snapshots => 1,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(SegmentKind::Events),
            1 => Some(SegmentKind::Snapshots),
            _ => None,
        }
    }

    /// `00000000000000001234.events`: 20-digit zero-padded first token.
    pub fn file_name(self, first_token: u64) -> String {
        format!("{first_token:020}.{}", self.data_suffix())
    }

    pub fn index_file_name(self, first_token: u64) -> String {
        format!("{first_token:020}.{}", self.index_suffix())
    }

    pub fn bloom_file_name(self, first_token: u64) -> String {
        format!("{first_token:020}.{}", self.bloom_suffix())
    }

    /// The first token named by `file_name` when it is a data file of this kind.
    pub fn parse_file_name(self, file_name: &str) -> Option<u64> {
        parse_numbered(file_name, self.data_suffix())
    }

    /// The first token named by `file_name` when it is one of Myelin's index files of this kind.
    pub fn parse_index_file_name(self, file_name: &str) -> Option<u64> {
        parse_numbered(file_name, self.index_suffix())
    }

    /// The first token named by `file_name` when it is one of Myelin's bloom files of this kind.
    pub fn parse_bloom_file_name(self, file_name: &str) -> Option<u64> {
        parse_numbered(file_name, self.bloom_suffix())
    }
}

fn parse_numbered(file_name: &str, suffix: &str) -> Option<u64> {
    let (digits, rest) = file_name.split_at_checked(20)?;
    if rest.strip_prefix('.')? != suffix || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What is wrong with a block, relative to the start of the block.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("invalid block size {0}")]
    InvalidSize(i32),
    #[error("unsupported version {0} (accepted: 0, 2)")]
    InvalidVersion(u8),
    #[error("invalid event count {0} (accepted: 1..=32767)")]
    InvalidCount(i16),
    #[error("event {index} has invalid length {len} at block offset {offset}")]
    InvalidEventLength { index: usize, len: i32, offset: usize },
    #[error("event lengths add up to {actual} bytes but the block size says {declared}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("transaction of {0} bytes is larger than a segment file can hold")]
    TransactionTooLarge(usize),
    #[error("a transaction needs at least one event")]
    EmptyTransaction,
}

/// The 5-byte file header. Axon Server's tests wrote files with version 0 and arbitrary flags;
/// readers accept versions 0 and 2 and ignore the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub version: u8,
    pub flags: i32,
}

impl FileHeader {
    /// What Myelin writes, and what Axon Server writes by default.
    pub const CURRENT: FileHeader = FileHeader {
        version: CURRENT_VERSION,
        flags: 0,
    };

    pub fn encode(&self) -> [u8; FILE_HEADER_BYTES] {
        let mut out = [0u8; FILE_HEADER_BYTES];
        out[0] = self.version;
        out[1..5].copy_from_slice(&self.flags.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BlockError> {
        let header = bytes.get(..FILE_HEADER_BYTES).ok_or(BlockError::Truncated {
            needed: FILE_HEADER_BYTES,
            available: bytes.len(),
        })?;
        let version = header[0];
        check_version(version)?;
        Ok(FileHeader {
            version,
            flags: read_i32(&header[1..5]),
        })
    }
}

fn check_version(version: u8) -> Result<(), BlockError> {
    match version {
        0 | CURRENT_VERSION => Ok(()),
        other => Err(BlockError::InvalidVersion(other)),
    }
}

fn read_i32(bytes: &[u8]) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    i32::from_be_bytes(raw)
}

/// What the 4 bytes at a block position say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStart {
    /// `0`: nothing written here (yet).
    End,
    /// `-1`: the segment continues in the next file.
    Rolled,
    /// A positive size: a block whose event area is this many bytes.
    Block(usize),
}

/// Reads the size field at the start of `bytes`.
pub fn read_block_start(bytes: &[u8]) -> Result<BlockStart, BlockError> {
    let raw = bytes.get(..MARKER_BYTES).ok_or(BlockError::Truncated {
        needed: MARKER_BYTES,
        available: bytes.len(),
    })?;
    match read_i32(raw) {
        END_MARKER => Ok(BlockStart::End),
        ROLL_MARKER => Ok(BlockStart::Rolled),
        size if size > 0 => Ok(BlockStart::Block(size as usize)),
        size => Err(BlockError::InvalidSize(size)),
    }
}

/// A decoded, checksum-verified block borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    pub version: u8,
    pub count: usize,
    /// The `count × (len, bytes)` area the CRC covers.
    pub area: &'a [u8],
}

impl<'a> BlockView<'a> {
    /// Bytes the whole block occupies in the file: header, area and CRC.
    pub fn total_bytes(&self) -> usize {
        block_bytes(self.area.len())
    }

    /// The events of this block, each with its offset from the start of the block
    /// (the offset of its length prefix, which is what indexes record).
    pub fn events(&self) -> BlockEvents<'a> {
        BlockEvents {
            area: self.area,
            cursor: 0,
        }
    }
}

/// Bytes a block with an event area of `area_bytes` occupies.
pub const fn block_bytes(area_bytes: usize) -> usize {
    BLOCK_HEADER_BYTES + area_bytes + CRC_BYTES
}

/// Iterator over `(offset from block start, event bytes)`. Only built over verified areas.
#[derive(Debug, Clone)]
pub struct BlockEvents<'a> {
    area: &'a [u8],
    cursor: usize,
}

impl<'a> BlockEvents<'a> {
    /// Iterates the event area of a block already verified by [`decode_block`]. On bytes that
    /// were not verified it stops early instead of reading out of bounds.
    pub fn over_verified_area(area: &'a [u8]) -> Self {
        BlockEvents { area, cursor: 0 }
    }
}

impl<'a> Iterator for BlockEvents<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let len_bytes = self.area.get(self.cursor..self.cursor + EVENT_LEN_BYTES)?;
        // A negative length (only in bytes that were never verified) ends the iteration: cast
        // to usize it would wrap the end of the event past the area (found by fuzzing).
        let len = usize::try_from(read_i32(len_bytes)).ok()?;
        let start = self.cursor + EVENT_LEN_BYTES;
        let end = start.checked_add(len)?;
        let event = self.area.get(start..end)?;
        let offset = BLOCK_HEADER_BYTES + self.cursor;
        self.cursor = end;
        Some((offset, event))
    }
}

/// Decodes and verifies the block at the start of `bytes`.
///
/// Returns `Ok(None)` for the end and roll markers (use [`read_block_start`] to tell them apart).
/// Every structural check happens before the checksum, so a hostile buffer can never make the
/// iterator over the events read out of bounds.
pub fn decode_block(bytes: &[u8]) -> Result<Option<BlockView<'_>>, BlockError> {
    let size = match read_block_start(bytes)? {
        BlockStart::End | BlockStart::Rolled => return Ok(None),
        BlockStart::Block(size) => size,
    };
    let total = block_bytes(size);
    if bytes.len() < total {
        return Err(BlockError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let version = bytes[4];
    check_version(version)?;
    let count = i16::from_be_bytes([bytes[5], bytes[6]]);
    if count <= 0 {
        return Err(BlockError::InvalidCount(count));
    }
    let area = &bytes[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + size];
    let mut cursor = 0usize;
    for index in 0..count as usize {
        let Some(len_bytes) = area.get(cursor..cursor + EVENT_LEN_BYTES) else {
            return Err(BlockError::LengthMismatch {
                declared: size,
                actual: cursor + EVENT_LEN_BYTES,
            });
        };
        let len = read_i32(len_bytes);
        if len < 0 {
            return Err(BlockError::InvalidEventLength {
                index,
                len,
                offset: BLOCK_HEADER_BYTES + cursor,
            });
        }
        cursor += EVENT_LEN_BYTES + len as usize;
        if cursor > size {
            return Err(BlockError::LengthMismatch {
                declared: size,
                actual: cursor,
            });
        }
    }
    if cursor != size {
        return Err(BlockError::LengthMismatch {
            declared: size,
            actual: cursor,
        });
    }
    let stored = u32::from_be_bytes([bytes[total - 4], bytes[total - 3], bytes[total - 2], bytes[total - 1]]);
    let computed = crc32fast::hash(area);
    if stored != computed {
        return Err(BlockError::Checksum { stored, computed });
    }
    Ok(Some(BlockView {
        version,
        count: count as usize,
        area,
    }))
}

/// Bytes the blocks of a transaction of events with these lengths occupy.
pub fn transaction_bytes<I: IntoIterator<Item = usize>>(event_lens: I) -> usize {
    let mut events = 0usize;
    let mut area = 0usize;
    for len in event_lens {
        events += 1;
        area += EVENT_LEN_BYTES + len;
    }
    area + block_count(events) * (BLOCK_HEADER_BYTES + CRC_BYTES)
}

/// The event counts of the blocks of a transaction of `events` events: full blocks of
/// [`MAX_EVENTS_PER_BLOCK`], then a last block that is never full (a multiple of 32767 ends with
/// 32766 + 1). In files Myelin writes, a full block therefore always means the transaction goes
/// on in the next block, which lets recovery drop a damaged multi-block transaction whole (the
/// format itself records no transaction boundaries). Readers see ordinary blocks.
pub fn block_event_counts(events: usize) -> impl Iterator<Item = usize> {
    let last_full = events > 0 && events.is_multiple_of(MAX_EVENTS_PER_BLOCK);
    let full = events / MAX_EVENTS_PER_BLOCK - usize::from(last_full);
    let rest = events - full * MAX_EVENTS_PER_BLOCK;
    let tail = if last_full {
        [MAX_EVENTS_PER_BLOCK - 1, 1]
    } else {
        [rest, 0]
    };
    std::iter::repeat_n(MAX_EVENTS_PER_BLOCK, full).chain(tail.into_iter().filter(|n| *n > 0))
}

/// How many blocks a transaction of `events` events takes (see [`block_event_counts`]).
pub fn block_count(events: usize) -> usize {
    events.div_ceil(MAX_EVENTS_PER_BLOCK) + usize::from(events > 0 && events.is_multiple_of(MAX_EVENTS_PER_BLOCK))
}

/// The layout of one encoded transaction inside an output buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedTransaction {
    /// Offset in the output buffer where the first block starts.
    pub start: usize,
    /// Bytes of all blocks together.
    pub len: usize,
    /// Number of blocks: more than one only for transactions of 32767 events or more.
    pub blocks: usize,
    /// Index of the first event of each block, ascending (`blocks` entries).
    pub block_first_events: Vec<usize>,
    /// Offset of each event's length prefix, relative to `start`, in event order.
    pub event_offsets: Vec<u32>,
}

/// Appends the blocks of a transaction made of `events` to `out`, every size filled in.
///
/// Writing the first size field last is the caller's business (it knows where the bytes go);
/// see `docs/FORMAT.md` for the commit protocol.
pub fn encode_transaction<E: AsRef<[u8]>>(events: &[E], out: &mut Vec<u8>) -> Result<EncodedTransaction, BlockError> {
    if events.is_empty() {
        return Err(BlockError::EmptyTransaction);
    }
    let len = transaction_bytes(events.iter().map(|e| e.as_ref().len()));
    if len > MAX_TRANSACTION_BYTES {
        return Err(BlockError::TransactionTooLarge(len));
    }
    let start = out.len();
    out.reserve(len);
    let mut event_offsets = Vec::with_capacity(events.len());
    let mut blocks = 0;
    let mut block_first_events = Vec::with_capacity(block_count(events.len()));
    let mut rest = events;
    for count in block_event_counts(events.len()) {
        let (chunk, after) = rest.split_at(count);
        rest = after;
        block_first_events.push(events.len() - chunk.len() - rest.len());
        blocks += 1;
        let block_start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, CURRENT_VERSION]);
        out.extend_from_slice(&(chunk.len() as i16).to_be_bytes());
        let area_start = out.len();
        for event in chunk {
            let event = event.as_ref();
            event_offsets.push((out.len() - start) as u32);
            out.extend_from_slice(&(event.len() as i32).to_be_bytes());
            out.extend_from_slice(event);
        }
        let area_len = out.len() - area_start;
        let crc = crc32fast::hash(&out[area_start..]);
        out.extend_from_slice(&crc.to_be_bytes());
        out[block_start..block_start + 4].copy_from_slice(&(area_len as i32).to_be_bytes());
    }
    debug_assert_eq!(out.len() - start, len);
    Ok(EncodedTransaction {
        start,
        len,
        blocks,
        block_first_events,
        event_offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, BlockError> {
        let mut events = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let block = decode_block(&bytes[pos..])?.expect("a block, not a marker");
            events.extend(block.events().map(|(_, e)| e.to_vec()));
            pos += block.total_bytes();
        }
        Ok(events)
    }

    #[test]
    fn file_names_are_twenty_digits() {
        assert_eq!(SegmentKind::Events.file_name(14), "00000000000000000014.events");
        assert_eq!(
            SegmentKind::Snapshots.parse_file_name("00000000000000000462.snapshots"),
            Some(462)
        );
        assert_eq!(
            SegmentKind::Events.parse_file_name("00000000000000000462.snapshots"),
            None
        );
        assert_eq!(SegmentKind::Events.parse_file_name("0000000000000000046.events"), None);
        assert_eq!(SegmentKind::Events.parse_file_name("0000000000000000046x.events"), None);
        assert_eq!(
            SegmentKind::Events.parse_index_file_name("00000000000000000001.mindex"),
            Some(1)
        );
    }

    #[test]
    fn header_round_trip_and_versions() {
        assert_eq!(
            FileHeader::decode(&FileHeader::CURRENT.encode()),
            Ok(FileHeader::CURRENT)
        );
        let v0 = FileHeader::decode(&[0, 0x7c, 0x42, 0xab, 0xad]).expect("version 0 accepted");
        assert_eq!(v0.version, 0);
        assert_eq!(FileHeader::decode(&[3, 0, 0, 0, 0]), Err(BlockError::InvalidVersion(3)));
        assert!(matches!(FileHeader::decode(&[2, 0]), Err(BlockError::Truncated { .. })));
    }

    #[test]
    fn markers() {
        assert_eq!(read_block_start(&[0, 0, 0, 0]), Ok(BlockStart::End));
        assert_eq!(read_block_start(&[0xff; 4]), Ok(BlockStart::Rolled));
        assert_eq!(
            read_block_start(&[0xff, 0xff, 0xff, 0xfe]),
            Err(BlockError::InvalidSize(-2))
        );
        assert!(decode_block(&[0xff; 4]).expect("roll marker").is_none());
    }

    #[test]
    fn a_transaction_never_ends_with_a_full_block() {
        const MAX: usize = MAX_EVENTS_PER_BLOCK;
        let cases: [(usize, &[usize]); 7] = [
            (0, &[]),
            (1, &[1]),
            (MAX - 1, &[MAX - 1]),
            (MAX, &[MAX - 1, 1]),
            (MAX + 5, &[MAX, 5]),
            (2 * MAX, &[MAX, MAX - 1, 1]),
            (2 * MAX + 1, &[MAX, MAX, 1]),
        ];
        for (events, expected) in cases {
            let counts: Vec<usize> = block_event_counts(events).collect();
            assert_eq!(counts, expected, "{events} events");
            assert_eq!(block_count(events), expected.len(), "{events} events");
        }
        let events: Vec<Vec<u8>> = (0..MAX).map(|i| vec![i as u8; 2]).collect();
        let mut out = Vec::new();
        let tx = encode_transaction(&events, &mut out).expect("encodes");
        assert_eq!(tx.blocks, 2);
        assert_eq!(tx.block_first_events, vec![0, MAX - 1]);
        assert_eq!(tx.len, out.len());
        assert_eq!(tx.len, transaction_bytes(events.iter().map(Vec::len)));
        assert_eq!(decode_all(&out).expect("decodes"), events);
    }

    #[test]
    fn large_transaction_splits_into_blocks() {
        let events: Vec<Vec<u8>> = (0..MAX_EVENTS_PER_BLOCK + 5).map(|i| vec![i as u8; 3]).collect();
        let mut out = Vec::new();
        let tx = encode_transaction(&events, &mut out).expect("encodes");
        assert_eq!(tx.blocks, 2);
        assert_eq!(tx.len, out.len());
        assert_eq!(decode_all(&out).expect("decodes"), events);
        let first = decode_block(&out).expect("ok").expect("block");
        assert_eq!(first.count, MAX_EVENTS_PER_BLOCK);
    }

    #[test]
    fn corruption_is_reported() {
        let mut out = Vec::new();
        encode_transaction(&[b"hello".to_vec()], &mut out).expect("encodes");
        let mut flipped = out.clone();
        flipped[12] ^= 1;
        assert!(matches!(decode_block(&flipped), Err(BlockError::Checksum { .. })));
        let mut bad_len = out.clone();
        bad_len[7..11].copy_from_slice(&100i32.to_be_bytes());
        assert!(matches!(decode_block(&bad_len), Err(BlockError::LengthMismatch { .. })));
        let mut neg = out.clone();
        neg[7..11].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(decode_block(&neg), Err(BlockError::InvalidEventLength { .. })));
        let mut zero_count = out.clone();
        zero_count[5..7].copy_from_slice(&0i16.to_be_bytes());
        assert_eq!(decode_block(&zero_count).err(), Some(BlockError::InvalidCount(0)));
        assert!(matches!(
            decode_block(&out[..out.len() - 1]),
            Err(BlockError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(txs in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20), 1..10)) {
            let mut out = Vec::new();
                        for tx in &txs {
                let encoded = encode_transaction(tx, &mut out).expect("encodes");
                prop_assert_eq!(encoded.event_offsets.len(), tx.len());
            }
            let flat: Vec<Vec<u8>> = txs.iter().flatten().cloned().collect();
            prop_assert_eq!(decode_all(&out).expect("decodes"), flat);
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_block(&bytes);
            let _ = FileHeader::decode(&bytes);
        }
    }
}
