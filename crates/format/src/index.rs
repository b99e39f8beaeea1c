//! Myelin's aggregate index file (`.mindex` / `.msindex`), one per closed segment.
//!
//! ```text
//! header (48 bytes)
//! 0   8  magic "MYELNIDX"
//! 8   1  format version (1)
//! 9   1  segment kind (0 events, 1 snapshots)
//! 10  2  reserved (0)
//! 12  4  u32 aggregate count A
//! 16  8  u64 segment first token
//! 24  8  u64 events in the segment (all of them, indexed or not)
//! 32  8  i64 timestamp of the segment's first event (i64::MIN when empty)
//! 40  4  u32 seek entry count S
//! 44  4  reserved (0)
//! table: A × (u64 hash, u32 entry offset, u32 entry length), sorted by hash
//! entries: u16 id length, id bytes, u32 n, n × (u32 block, u32 position, i64 sequence)
//! seek: S × (u64 token, u32 block offset), ascending
//! u32 crc32 of everything before
//! ```
//! `block` is the file offset of the block holding the event (so a read can verify the block's
//! CRC), `position` the offset of the event's length prefix. The seek table holds a sparse
//! sample of block starts so a tracking read can start mid-segment without scanning it. The
//! header alone (no CRC) is enough to check continuity at startup; the whole file is verified
//! when it is first loaded.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;

use thiserror::Error;

use crate::bloom::aggregate_hash;
use crate::segment::SegmentKind;

const MAGIC: &[u8; 8] = b"MYELNIDX";
const VERSION: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 48;
const TABLE_ENTRY_BYTES: usize = 16;
const POSITION_BYTES: usize = 16;
const SEEK_BYTES: usize = 12;
const CRC_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexError {
    #[error("index file is {0} bytes, too short")]
    Truncated(usize),
    #[error("not a Myelin index file (bad magic)")]
    Magic,
    #[error("unsupported index format version {0}")]
    Version(u8),
    #[error("unknown segment kind {0}")]
    Kind(u8),
    #[error("index checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("index entry {0} is out of bounds")]
    Entry(usize),
}

/// Where and what one index entry says: an event of an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexPosition {
    pub block: u32,
    pub position: u32,
    pub sequence: i64,
}

/// The fixed header: cheap to read for every closed segment at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub kind: SegmentKind,
    pub aggregate_count: u32,
    pub first_token: u64,
    pub event_count: u64,
    pub first_timestamp: i64,
    pub seek_count: u32,
}

impl IndexHeader {
    pub fn decode(bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() < HEADER_BYTES {
            return Err(IndexError::Truncated(bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err(IndexError::Magic);
        }
        if bytes[8] != VERSION {
            return Err(IndexError::Version(bytes[8]));
        }
        let kind = SegmentKind::from_code(bytes[9]).ok_or(IndexError::Kind(bytes[9]))?;
        Ok(IndexHeader {
            kind,
            aggregate_count: be_u32(&bytes[12..16]),
            first_token: be_u64(&bytes[16..24]),
            event_count: be_u64(&bytes[24..32]),
            first_timestamp: be_u64(&bytes[32..40]) as i64,
            seek_count: be_u32(&bytes[40..44]),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.kind.code());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.aggregate_count.to_be_bytes());
        out.extend_from_slice(&self.first_token.to_be_bytes());
        out.extend_from_slice(&self.event_count.to_be_bytes());
        out.extend_from_slice(&self.first_timestamp.to_be_bytes());
        out.extend_from_slice(&self.seek_count.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[..8]);
    u64::from_be_bytes(raw)
}

/// Serialises an aggregate → positions map into the index file format.
pub fn encode_index<S: BuildHasher>(
    header_fields: IndexSummary,
    entries: &HashMap<Box<str>, Vec<IndexPosition>, S>,
    seek: &[SeekEntry],
) -> Vec<u8> {
    let mut sorted: Vec<(u64, &Box<str>, &Vec<IndexPosition>)> = entries
        .iter()
        .map(|(id, positions)| (aggregate_hash(id), id, positions))
        .collect();
    sorted.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let header = IndexHeader {
        kind: header_fields.kind,
        aggregate_count: sorted.len() as u32,
        first_token: header_fields.first_token,
        event_count: header_fields.event_count,
        first_timestamp: header_fields.first_timestamp,
        seek_count: seek.len() as u32,
    };
    let table_bytes = sorted.len() * TABLE_ENTRY_BYTES;
    let entry_bytes: usize = sorted
        .iter()
        .map(|(_, id, p)| 2 + index_key(id).len() + 4 + p.len() * POSITION_BYTES)
        .sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + table_bytes + entry_bytes + seek.len() * SEEK_BYTES + CRC_BYTES);
    header.encode(&mut out);
    let mut offset = HEADER_BYTES + table_bytes;
    for (hash, id, positions) in &sorted {
        let len = 2 + index_key(id).len() + 4 + positions.len() * POSITION_BYTES;
        out.extend_from_slice(&hash.to_be_bytes());
        out.extend_from_slice(&(offset as u32).to_be_bytes());
        out.extend_from_slice(&(len as u32).to_be_bytes());
        offset += len;
    }
    for (_, id, positions) in &sorted {
        // Aggregate ids longer than u16::MAX bytes are truncated in the key; lookups compare the
        // truncated form, so such ids still resolve (the event itself is checked on read).
        let key = index_key(id);
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(positions.len() as u32).to_be_bytes());
        for p in positions.iter() {
            out.extend_from_slice(&p.block.to_be_bytes());
            out.extend_from_slice(&p.position.to_be_bytes());
            out.extend_from_slice(&p.sequence.to_be_bytes());
        }
    }
    for s in seek {
        out.extend_from_slice(&s.token.to_be_bytes());
        out.extend_from_slice(&s.offset.to_be_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A sampled block start: the block at file `offset` begins with event `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeekEntry {
    pub token: u64,
    pub offset: u32,
}

/// The per-segment facts stored in an index header besides the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSummary {
    pub kind: SegmentKind,
    pub first_token: u64,
    pub event_count: u64,
    pub first_timestamp: i64,
}

/// Where the sections of an index file lie, checked against the file's length. Lets a reader
/// keep only the hash table in memory and `pread` single entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLayout {
    pub header: IndexHeader,
    /// The sorted `(hash, offset, length)` table.
    pub table: Range<usize>,
    /// Entries: every table offset must point in here.
    pub entries: Range<usize>,
    /// The seek samples.
    pub seek: Range<usize>,
    /// Offset of the CRC (= everything it covers).
    pub crc: usize,
}

impl IndexLayout {
    pub fn new(header: IndexHeader, file_len: usize) -> Result<Self, IndexError> {
        let truncated = IndexError::Truncated(file_len);
        let crc = file_len
            .checked_sub(CRC_BYTES)
            .filter(|c| *c >= HEADER_BYTES)
            .ok_or(truncated.clone())?;
        let table_end = (header.aggregate_count as usize)
            .checked_mul(TABLE_ENTRY_BYTES)
            .and_then(|t| t.checked_add(HEADER_BYTES))
            .ok_or(truncated.clone())?;
        let seek_bytes = (header.seek_count as usize)
            .checked_mul(SEEK_BYTES)
            .ok_or(truncated.clone())?;
        let seek_start = crc
            .checked_sub(seek_bytes)
            .filter(|s| *s >= table_end)
            .ok_or(truncated)?;
        Ok(IndexLayout {
            header,
            table: HEADER_BYTES..table_end,
            entries: table_end..seek_start,
            seek: seek_start..crc,
            crc,
        })
    }
}

/// The key an aggregate id is stored under (ids longer than `u16::MAX` bytes are truncated;
/// the event read through the index is always checked against the full id).
fn index_key(aggregate_id: &str) -> &[u8] {
    &aggregate_id.as_bytes()[..aggregate_id.len().min(u16::MAX as usize)]
}

/// The hash table of an index file, held in memory (16 bytes per aggregate).
#[derive(Debug, Clone)]
pub struct IndexTable {
    bytes: Vec<u8>,
    entries: Range<usize>,
}

impl IndexTable {
    pub fn new(layout: &IndexLayout, bytes: Vec<u8>) -> Result<Self, IndexError> {
        if bytes.len() != layout.table.len() {
            return Err(IndexError::Truncated(bytes.len()));
        }
        Ok(IndexTable {
            bytes,
            entries: layout.entries.clone(),
        })
    }

    pub fn memory_bytes(&self) -> usize {
        self.bytes.len()
    }

    fn len(&self) -> usize {
        self.bytes.len() / TABLE_ENTRY_BYTES
    }

    fn row(&self, i: usize) -> (u64, usize, usize) {
        let t = &self.bytes[i * TABLE_ENTRY_BYTES..(i + 1) * TABLE_ENTRY_BYTES];
        (be_u64(&t[..8]), be_u32(&t[8..12]) as usize, be_u32(&t[12..16]) as usize)
    }

    /// File ranges of the entries that may hold `aggregate_id` (those with its hash), or an
    /// error naming the row when one points outside the entry section.
    pub fn candidates(&self, aggregate_id: &str) -> Result<Vec<Range<usize>>, IndexError> {
        let hash = aggregate_hash(aggregate_id);
        let first = {
            let (mut lo, mut hi) = (0, self.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.row(mid).0 < hash {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let mut out = Vec::new();
        for i in first..self.len() {
            let (row_hash, offset, len) = self.row(i);
            if row_hash != hash {
                break;
            }
            let range = offset..offset.checked_add(len).ok_or(IndexError::Entry(i))?;
            if range.start < self.entries.start || range.end > self.entries.end {
                return Err(IndexError::Entry(i));
            }
            out.push(range);
        }
        Ok(out)
    }
}

/// Splits an entry into its id and positions; `None` when it is malformed.
fn split_entry(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    let id_len = usize::from(u16::from_be_bytes([*entry.first()?, *entry.get(1)?]));
    let id = entry.get(2..2 + id_len)?;
    let n = be_u32(entry.get(2 + id_len..6 + id_len)?) as usize;
    let positions = entry.get(6 + id_len..)?;
    (positions.len() == n.checked_mul(POSITION_BYTES)?).then_some((id, positions))
}

fn decode_positions(bytes: &[u8]) -> Vec<IndexPosition> {
    bytes
        .chunks_exact(POSITION_BYTES)
        .map(|c| IndexPosition {
            block: be_u32(&c[..4]),
            position: be_u32(&c[4..8]),
            sequence: be_u64(&c[8..]) as i64,
        })
        .collect()
}

/// The positions in `entry` if it is the entry of `aggregate_id`; `Err` if it is malformed.
pub fn entry_positions(entry: &[u8], aggregate_id: &str) -> Result<Option<Vec<IndexPosition>>, IndexError> {
    let (id, positions) = split_entry(entry).ok_or(IndexError::Entry(0))?;
    Ok((id == index_key(aggregate_id)).then(|| decode_positions(positions)))
}

/// Decodes the seek section.
pub fn decode_seek(bytes: &[u8]) -> Vec<SeekEntry> {
    bytes
        .chunks_exact(SEEK_BYTES)
        .map(|c| SeekEntry {
            token: be_u64(&c[..8]),
            offset: be_u32(&c[8..]),
        })
        .collect()
}

/// Checks the CRC at the end of a whole index file held in memory.
pub fn verify_checksum(bytes: &[u8]) -> Result<(), IndexError> {
    let content_len = bytes
        .len()
        .checked_sub(CRC_BYTES)
        .ok_or(IndexError::Truncated(bytes.len()))?;
    let stored = be_u32(&bytes[content_len..]);
    let computed = crc32fast::hash(&bytes[..content_len]);
    if stored != computed {
        return Err(IndexError::Checksum { stored, computed });
    }
    Ok(())
}

/// A whole index file in memory, checksum-verified and with every entry checked. The store
/// keeps only the [`IndexTable`] and reads entries on demand; this form serves rebuilds, tests
/// and fuzzing.
#[derive(Debug, Clone)]
pub struct IndexFile {
    layout: IndexLayout,
    table: IndexTable,
    bytes: Vec<u8>,
}

impl IndexFile {
    pub fn decode(bytes: Vec<u8>) -> Result<Self, IndexError> {
        let header = IndexHeader::decode(&bytes)?;
        let layout = IndexLayout::new(header, bytes.len())?;
        verify_checksum(&bytes)?;
        let table = IndexTable::new(&layout, bytes[layout.table.clone()].to_vec())?;
        let file = IndexFile { layout, table, bytes };
        for i in 0..file.table.len() {
            let (_, offset, len) = file.table.row(i);
            let entry = offset
                .checked_add(len)
                .filter(|end| offset >= file.layout.entries.start && *end <= file.layout.entries.end)
                .and_then(|end| split_entry(&file.bytes[offset..end]));
            entry.ok_or(IndexError::Entry(i))?;
        }
        Ok(file)
    }

    pub fn header(&self) -> &IndexHeader {
        &self.layout.header
    }

    pub fn layout(&self) -> &IndexLayout {
        &self.layout
    }

    pub fn table(&self) -> &IndexTable {
        &self.table
    }

    /// The positions of `aggregate_id` in this segment, in write order; empty when absent.
    pub fn lookup(&self, aggregate_id: &str) -> Vec<IndexPosition> {
        let candidates = self.table.candidates(aggregate_id).unwrap_or_default();
        candidates
            .into_iter()
            .find_map(|range| entry_positions(&self.bytes[range], aggregate_id).ok().flatten())
            .unwrap_or_default()
    }

    /// The sampled block starts, ascending by token.
    pub fn seek_entries(&self) -> Vec<SeekEntry> {
        decode_seek(&self.bytes[self.layout.seek.clone()])
    }

    /// Every aggregate in this index with its positions (for rebuilding blooms and tests).
    pub fn aggregates(&self) -> impl Iterator<Item = (String, Vec<IndexPosition>)> + '_ {
        (0..self.table.len()).filter_map(|i| {
            let (_, offset, len) = self.table.row(i);
            let (id, positions) = split_entry(self.bytes.get(offset..offset + len)?)?;
            Some((String::from_utf8_lossy(id).into_owned(), decode_positions(positions)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> IndexSummary {
        IndexSummary {
            kind: SegmentKind::Events,
            first_token: 462,
            event_count: 462,
            first_timestamp: 7,
        }
    }

    #[test]
    fn round_trip_and_lookup() {
        let mut entries = HashMap::new();
        for a in 0..500 {
            let positions = (0..(a % 7) + 1)
                .map(|s| IndexPosition {
                    block: a as u32,
                    position: (a * 100 + s) as u32,
                    sequence: s as i64,
                })
                .collect();
            entries.insert(format!("aggregate-{a}").into_boxed_str(), positions);
        }
        let seek = [
            SeekEntry { token: 462, offset: 5 },
            SeekEntry {
                token: 500,
                offset: 9000,
            },
        ];
        let bytes = encode_index(summary(), &entries, &seek);
        let header = IndexHeader::decode(&bytes).expect("header");
        assert_eq!(header.first_token, 462);
        assert_eq!(header.aggregate_count, 500);
        let index = IndexFile::decode(bytes).expect("decodes");
        for (id, positions) in &entries {
            assert_eq!(&index.lookup(id), positions);
        }
        assert!(index.lookup("missing").is_empty());
        assert_eq!(index.aggregates().count(), 500);
        assert_eq!(index.seek_entries(), seek);
    }

    #[test]
    fn damage_is_detected() {
        let mut entries = HashMap::new();
        entries.insert(
            "a".into(),
            vec![IndexPosition {
                block: 5,
                position: 12,
                sequence: 0,
            }],
        );
        let bytes = encode_index(summary(), &entries, &[SeekEntry { token: 462, offset: 5 }]);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(IndexFile::decode(damaged).is_err(), "flip at {i} undetected");
        }
        assert!(IndexFile::decode(bytes[..bytes.len() - 1].to_vec()).is_err());
        assert_eq!(IndexFile::decode(vec![0; 3]).err(), Some(IndexError::Truncated(3)));
    }
}
