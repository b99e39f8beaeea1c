//! Files Myelin writes are readable by Axon Server: decoded here by a small reader written
//! from the format description alone (AXON_COMPAT §5), sharing no code with `myelin-format`
//! — its own CRC-32, its own protobuf walk.

use std::path::Path;

use myelin_proto::grpc::event::Event;
use myelin_testkit::events::event_with_payload as event;
use myelin_testkit::store::{append, open, small_config};

/// Bitwise CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as java.util.zip.CRC32.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// What an Axon reader gets out of one segment file.
struct SegmentContents {
    events: Vec<Vec<u8>>,
    rolled: bool,
}

fn read_segment(path: &Path) -> SegmentContents {
    let bytes = std::fs::read(path).expect("segment file");
    assert_eq!(bytes[0], 2, "file version");
    assert_eq!(be_i32(&bytes[1..5]), 0, "flags");
    let mut at = 5;
    let mut events = Vec::new();
    loop {
        let size = be_i32(&bytes[at..]);
        if size == 0 {
            assert!(bytes[at..].iter().all(|b| *b == 0), "zeros after the end marker");
            return SegmentContents { events, rolled: false };
        }
        if size == -1 {
            return SegmentContents { events, rolled: true };
        }
        assert!(size > 0);
        assert_eq!(bytes[at + 4], 2, "transaction version");
        let count = i16::from_be_bytes([bytes[at + 5], bytes[at + 6]]);
        assert!(count > 0);
        let area = &bytes[at + 7..at + 7 + size as usize];
        let crc = be_i32(&bytes[at + 7 + size as usize..]) as u32;
        assert_eq!(crc, crc32(area), "block CRC");
        let mut p = 0;
        for _ in 0..count {
            let len = be_i32(&area[p..]) as usize;
            events.push(area[p + 4..p + 4 + len].to_vec());
            p += 4 + len;
        }
        assert_eq!(p, area.len(), "size field = sum of 4 + len");
        at += 7 + size as usize + 4;
    }
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0;
    let mut shift = 0;
    loop {
        let b = bytes[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// (aggregate id, sequence, payload data) walked out of protobuf by hand.
fn decode_event(bytes: &[u8]) -> (String, i64, Vec<u8>) {
    let (mut id, mut seq, mut data) = (String::new(), 0i64, Vec::new());
    let mut at = 0;
    while at < bytes.len() {
        let tag = varint(bytes, &mut at);
        match (tag >> 3, tag & 7) {
            (3, 0) => seq = varint(bytes, &mut at) as i64,
            (_, 0) => {
                varint(bytes, &mut at);
            }
            (field, 2) => {
                let len = varint(bytes, &mut at) as usize;
                let value = &bytes[at..at + len];
                if field == 2 {
                    id = String::from_utf8(value.to_vec()).expect("utf-8 aggregate id");
                }
                if field == 6 {
                    // SerializedObject: field 3 is data.
                    let mut q = 0;
                    while q < value.len() {
                        let t = varint(value, &mut q);
                        let l = varint(value, &mut q) as usize;
                        if t >> 3 == 3 {
                            data = value[q..q + l].to_vec();
                        }
                        q += l;
                    }
                }
                at += len;
            }
            (field, wire) => panic!("unexpected field {field} wire type {wire}"),
        }
    }
    (id, seq, data)
}

#[test]
fn an_independent_reader_decodes_what_myelin_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment_size = 8192u64;
    let mut written: Vec<Event> = Vec::new();
    {
        let store = open(dir.path(), small_config(segment_size));
        for i in 0..120i64 {
            let tx: Vec<Event> = (0..(i % 3 + 1))
                .map(|k| event(&format!("agg-{i}"), k, &[i as u8; 50]))
                .collect();
            append(&store, &tx).expect("appends");
            written.extend(tx);
        }
        let big: Vec<Event> = (0..33_000).map(|s| event("big", s, b"")).collect();
        append(&store, &big).expect("appends");
        written.extend(big);
        store.shutdown().expect("shuts down");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".events"))
        .collect();
    names.sort();
    assert!(names.len() > 3);
    let mut token = 0u64;
    let mut decoded = Vec::new();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(name.len(), 20 + ".events".len());
        assert_eq!(
            name[..20].parse::<u64>().expect("digits"),
            token,
            "file named after its first token"
        );
        let path = dir.path().join(name);
        let contents = read_segment(&path);
        let last = i == names.len() - 1;
        assert_eq!(contents.rolled, !last, "closed segments end in -1");
        let len = std::fs::metadata(&path).expect("meta").len();
        assert!(len >= segment_size, "pre-allocated to the segment size");
        token += contents.events.len() as u64;
        decoded.extend(contents.events);
    }
    assert_eq!(decoded.len(), written.len());
    for (raw, event) in decoded.iter().zip(&written) {
        let (id, seq, data) = decode_event(raw);
        assert_eq!(
            (id.as_str(), seq),
            (event.aggregate_identifier.as_str(), event.aggregate_sequence_number)
        );
        assert_eq!(Some(data), event.payload.as_ref().map(|p| p.data.clone()));
    }
}
