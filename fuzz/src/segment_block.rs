//! Fuzz body: Axon segment bytes through `myelin_format::segment` and `myelin_format::event`.
//!
//! The input is read as a segment file (file header, then blocks) when it starts with a valid
//! header, else as blocks from byte 0. Checked:
//! * no decoder panics or reads out of bounds, on verified and unverified bytes alike;
//! * a block rejected only for its checksum decodes once the checksum is made right (every
//!   structural check comes before the CRC, so the fuzzer can get past it);
//! * an accepted block re-encodes to the same bytes (the version byte aside: 0 is read, 2 is
//!   written), with the same event offsets the decoder reported.

use myelin_format::event::EventFields;
use myelin_format::segment::{
    BLOCK_HEADER_BYTES, BlockError, BlockEvents, BlockStart, BlockView, CRC_BYTES, CURRENT_VERSION, EVENT_LEN_BYTES,
    FILE_HEADER_BYTES, FileHeader, MAX_EVENTS_PER_BLOCK, decode_block, encode_transaction, read_block_start,
};

pub fn run(data: &[u8]) {
    let start = match FileHeader::decode(data) {
        Ok(header) => {
            assert_eq!(header.encode(), data[..FILE_HEADER_BYTES], "file header round trip");
            FILE_HEADER_BYTES
        }
        Err(_) => 0,
    };
    let _ = read_block_start(data);
    unverified_events(data);
    let _ = EventFields::parse(data);
    walk_blocks(data, start);
}

/// `BlockEvents::over_verified_area` promises to stop early, not to read out of bounds.
fn unverified_events(data: &[u8]) {
    for (offset, event) in BlockEvents::over_verified_area(data) {
        let start = offset - BLOCK_HEADER_BYTES + EVENT_LEN_BYTES;
        assert!(start + event.len() <= data.len(), "event reaches past the area");
        assert_eq!(
            event.as_ptr(),
            data[start..].as_ptr(),
            "event is not where its offset says"
        );
    }
}

fn walk_blocks(data: &[u8], mut pos: usize) {
    while pos < data.len() {
        let rest = &data[pos..];
        let total = match decode_block(rest) {
            Ok(Some(view)) => {
                check_block(&rest[..view.total_bytes()], &view);
                view.total_bytes()
            }
            Ok(None) => break,
            Err(BlockError::Checksum { .. }) => {
                let size = match read_block_start(rest) {
                    Ok(BlockStart::Block(size)) => size,
                    other => panic!("checksum error on a block start that reads {other:?}"),
                };
                let total = BLOCK_HEADER_BYTES + size + CRC_BYTES;
                let mut fixed = rest[..total].to_vec();
                let crc = crc32fast::hash(&fixed[BLOCK_HEADER_BYTES..total - CRC_BYTES]);
                fixed[total - CRC_BYTES..].copy_from_slice(&crc.to_be_bytes());
                let view = decode_block(&fixed)
                    .expect("only the checksum was wrong")
                    .expect("a block, not a marker");
                check_block(&fixed, &view);
                total
            }
            Err(_) => break,
        };
        pos += total;
    }
}

/// `block` is exactly the bytes of the block `view` was decoded from.
fn check_block(block: &[u8], view: &BlockView<'_>) {
    assert_eq!(view.total_bytes(), block.len());
    assert_eq!(view.area.len() + BLOCK_HEADER_BYTES + CRC_BYTES, block.len());
    assert!((1..=MAX_EVENTS_PER_BLOCK).contains(&view.count));
    let events: Vec<(usize, &[u8])> = view.events().collect();
    assert_eq!(events.len(), view.count, "iterator yields the declared count");
    let mut expected_offset = BLOCK_HEADER_BYTES;
    for (offset, event) in &events {
        assert_eq!(*offset, expected_offset, "events are back to back");
        expected_offset += EVENT_LEN_BYTES + event.len();
        if let Ok(fields) = EventFields::parse(event) {
            let _ = fields.is_domain_event();
        }
    }
    assert_eq!(
        expected_offset,
        BLOCK_HEADER_BYTES + view.area.len(),
        "events fill the area"
    );

    let payloads: Vec<&[u8]> = events.iter().map(|(_, e)| *e).collect();
    let mut encoded = Vec::new();
    let tx = encode_transaction(&payloads, &mut encoded).expect("a decoded block re-encodes");
    assert_eq!(tx.blocks, 1);
    assert_eq!(encoded.len(), block.len());
    assert_eq!(encoded[..4], block[..4], "size field");
    assert_eq!(encoded[4], CURRENT_VERSION);
    assert_eq!(encoded[5..], block[5..], "count, events and CRC");
    let offsets: Vec<u32> = events.iter().map(|(offset, _)| *offset as u32).collect();
    assert_eq!(tx.event_offsets, offsets);
}
