//! Fuzz body: Raft log-entry segment bytes through `myelin_format::raftlog`.
//!
//! The input is scanned as a segment file (entries from offset 5) and as bare entries from
//! byte 0. Checked:
//! * no decoder panics or reads out of bounds;
//! * scanned entries are back to back, their data lies inside the input, and each re-encodes
//!   to exactly the bytes it was read from; the stop is where the last entry ends;
//! * an entry refused only for its CRC reads once the CRC is made right (every structural check
//!   comes before the CRC, so the fuzzer can get past it);
//! * `find_entry` only finds offsets where a valid entry starts;
//! * a file name that parses formats back to itself.

use myelin_format::raftlog::{
    Damage, ENTRY_OVERHEAD, HEADER_LEN, Scanner, Slot, Stop, check_header, encode_entry, file_name, find_entry,
    parse_file_name, read_entry,
};

pub fn run(data: &[u8]) {
    let _ = check_header(data);
    scan(data, HEADER_LEN);
    scan(data, 0);
    if let Some(offset) = find_entry(data, 0) {
        assert!(
            matches!(read_entry(&data[offset..]), Ok(Slot::Entry(_))),
            "find_entry found no entry at {offset}"
        );
    }
    if let Some(index) = std::str::from_utf8(data).ok().and_then(parse_file_name) {
        assert_eq!(file_name(index).as_bytes(), data, "file name round trip");
    }
}

fn scan(data: &[u8], from: usize) {
    let mut scanner = Scanner::starting_at(data, from);
    let mut expected_offset = from;
    for entry in scanner.by_ref() {
        assert_eq!(entry.offset, expected_offset, "entries are back to back");
        assert_eq!(entry.data.start, entry.offset + 17);
        assert_eq!(entry.len(), entry.data.len() + ENTRY_OVERHEAD);
        let bytes = &data[entry.offset..entry.end()];
        let mut encoded = Vec::new();
        encode_entry(entry.term, entry.kind, &data[entry.data.clone()], &mut encoded).expect("a read entry re-encodes");
        assert_eq!(encoded, bytes, "re-encoded entry");
        expected_offset = entry.end();
    }
    let stop = scanner.stop().expect("a stop once the entries end").clone();
    assert_eq!(
        stop.offset(),
        expected_offset,
        "the scan stops where the last entry ends"
    );
    if let Stop::Damaged {
        offset,
        reason: Damage::Checksum { .. },
    } = stop
    {
        let size = i32::from_be_bytes(data[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        let end = offset + size + ENTRY_OVERHEAD;
        let mut fixed = data[offset..end].to_vec();
        let crc = crc32fast::hash(&fixed[17..end - offset - 4]);
        fixed[end - offset - 4..].copy_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(read_entry(&fixed), Ok(Slot::Entry(_))),
            "only the checksum was wrong"
        );
    }
}
