//! Fuzz body: bytes as a Myelin index file (`.mindex` / `.msindex`), through both ways the
//! code reads one.
//!
//! * The store's way (`myelin_store`'s `LoadedIndex`): header, layout against the file length,
//!   hash table, seek section, then candidates and entries for lookups. The store verifies the
//!   CRC only once per process, so this path must be safe on bytes whose CRC was never checked.
//! * The whole-file way (`IndexFile::decode`), once as given and once with the CRC made right
//!   so the fuzzer gets past it. A decoded file's aggregates, re-encoded, must look up to
//!   exactly their positions.

use std::collections::HashMap;

use myelin_format::index::{
    HEADER_BYTES, IndexFile, IndexHeader, IndexLayout, IndexPosition, IndexSummary, IndexTable, decode_seek,
    encode_index, entry_positions, verify_checksum,
};

/// Bytes of one row of the hash table: `u64 hash, u32 offset, u32 length`.
const TABLE_ROW_BYTES: usize = 16;
/// Rows whose aggregate ids are looked up, per input (bounds the work per execution).
const LOOKUPS_MAX: usize = 64;

pub fn run(data: &[u8]) {
    let _ = verify_checksum(data);
    store_path(data);
    whole_file(data.to_vec());
    if let Some(content_len) = data.len().checked_sub(4) {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&fixed[..content_len]);
        fixed[content_len..].copy_from_slice(&crc.to_be_bytes());
        whole_file(fixed);
    }
}

/// What `LoadedIndex::open` and `LoadedIndex::lookup` do, with the file in memory.
fn store_path(data: &[u8]) {
    let Some(head) = data.get(..HEADER_BYTES) else {
        return;
    };
    let Ok(header) = IndexHeader::decode(head) else {
        return;
    };
    let Ok(layout) = IndexLayout::new(header, data.len()) else {
        return;
    };
    assert_eq!(layout.table.start, HEADER_BYTES);
    assert_eq!(layout.table.end, layout.entries.start);
    assert_eq!(layout.entries.end, layout.seek.start);
    assert_eq!(layout.seek.end, layout.crc);
    assert_eq!(layout.crc + 4, data.len());
    let table = IndexTable::new(&layout, data[layout.table.clone()].to_vec()).expect("the layout's table is accepted");
    assert_eq!(table.memory_bytes(), layout.table.len());
    let seek = decode_seek(&data[layout.seek.clone()]);
    assert_eq!(seek.len(), header.seek_count as usize);
    for id in ids_in_table(data, &layout.table)
        .iter()
        .map(String::as_str)
        .chain(["", "a"])
    {
        let Ok(ranges) = table.candidates(id) else {
            continue;
        };
        for range in ranges {
            assert!(
                layout.entries.start <= range.start && range.end <= layout.entries.end,
                "candidate outside the entry section"
            );
            let _ = entry_positions(&data[range], id);
        }
    }
}

/// The aggregate ids the first table rows point at, where they point at something readable.
fn ids_in_table(data: &[u8], table: &std::ops::Range<usize>) -> Vec<String> {
    data[table.clone()]
        .chunks_exact(TABLE_ROW_BYTES)
        .take(LOOKUPS_MAX)
        .filter_map(|row| {
            let offset = u32::from_be_bytes([row[8], row[9], row[10], row[11]]) as usize;
            let id_len = usize::from(u16::from_be_bytes([*data.get(offset)?, *data.get(offset + 1)?]));
            let id = data.get(offset + 2..offset + 2 + id_len)?;
            Some(String::from_utf8_lossy(id).into_owned())
        })
        .collect()
}

fn whole_file(bytes: Vec<u8>) {
    let Ok(file) = IndexFile::decode(bytes) else {
        return;
    };
    let header = *file.header();
    assert_eq!(file.seek_entries().len(), header.seek_count as usize);
    let aggregates: Vec<(String, Vec<IndexPosition>)> = file.aggregates().collect();
    assert_eq!(
        aggregates.len(),
        header.aggregate_count as usize,
        "every row was checked by decode"
    );
    for (id, _) in aggregates.iter().take(LOOKUPS_MAX) {
        let _ = file.lookup(id);
    }

    // Whatever the decoded file held, encoding it again must give a file that answers every
    // lookup with exactly the positions encoded (the last of duplicate ids wins in the map).
    let entries: HashMap<Box<str>, Vec<IndexPosition>> = aggregates
        .into_iter()
        .map(|(id, positions)| (id.into_boxed_str(), positions))
        .collect();
    let summary = IndexSummary {
        kind: header.kind,
        first_token: header.first_token,
        event_count: header.event_count,
        first_timestamp: header.first_timestamp,
    };
    let seek = file.seek_entries();
    let encoded = encode_index(summary, &entries, &seek);
    let again = IndexFile::decode(encoded).expect("an encoded index decodes");
    assert_eq!(again.header().kind, header.kind);
    assert_eq!(again.header().first_token, header.first_token);
    assert_eq!(again.header().event_count, header.event_count);
    assert_eq!(again.header().first_timestamp, header.first_timestamp);
    assert_eq!(again.header().aggregate_count as usize, entries.len());
    assert_eq!(again.seek_entries(), seek);
    for (id, positions) in entries.iter().take(LOOKUPS_MAX) {
        assert_eq!(&again.lookup(id), positions, "lookup of {id:?} after re-encoding");
    }
}
