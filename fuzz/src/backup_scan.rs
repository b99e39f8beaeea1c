//! Fuzz body: bytes as a segment file in a backup, through `myelin_backup::scan` (what
//! `myelin backup`, `verify` and `restore` read every copied segment with).
//!
//! The scan must never panic and must agree exactly with a walk of the same bytes by
//! `myelin_format::segment`'s decoder: the same valid length, events, block ends, and the same
//! ending at the same offset.

use myelin_backup::scan::{Ending, scan};
use myelin_format::segment::{BlockStart, FILE_HEADER_BYTES, FileHeader, block_bytes, decode_block, read_block_start};

pub fn run(data: &[u8]) {
    let found = scan(data, 0).expect("reading from memory never fails");
    let expected = walk(data);
    assert_eq!(found.valid_len, expected.valid_len, "valid length");
    assert_eq!(found.events, expected.events, "events");
    assert_eq!(found.block_ends, expected.block_ends, "block ends");
    match (&found.ending, &expected.ending) {
        (Ending::Damaged { offset, .. }, Ending::Damaged { offset: at, .. }) => assert_eq!(offset, at, "damage offset"),
        (found, expected) => assert_eq!(found, expected, "ending"),
    }
}

/// The scan's answer, worked out with the format crate on the whole buffer.
fn walk(data: &[u8]) -> myelin_backup::scan::Scan {
    let mut result = myelin_backup::scan::Scan {
        first_token: 0,
        events: 0,
        valid_len: 0,
        block_ends: Vec::new(),
        ending: Ending::EndOfFile,
    };
    let damaged = |offset: usize| Ending::Damaged {
        offset: offset as u64,
        reason: String::new(),
    };
    if FileHeader::decode(data).is_err() {
        result.ending = damaged(0);
        return result;
    }
    let mut pos = FILE_HEADER_BYTES;
    result.valid_len = pos as u64;
    loop {
        let rest = &data[pos..];
        if rest.is_empty() {
            result.ending = Ending::EndOfFile;
            return result;
        }
        let size = match read_block_start(rest) {
            Ok(BlockStart::End) => {
                result.ending = Ending::End;
                return result;
            }
            Ok(BlockStart::Rolled) => {
                result.ending = Ending::Rolled;
                return result;
            }
            Ok(BlockStart::Block(size)) => size,
            Err(_) => {
                result.ending = damaged(pos);
                return result;
            }
        };
        let Some(block) = rest.get(..block_bytes(size)) else {
            result.ending = damaged(pos);
            return result;
        };
        match decode_block(block) {
            Ok(Some(view)) => {
                result.events += view.count as u64;
                pos += block.len();
                result.valid_len = pos as u64;
                result.block_ends.push((result.valid_len, result.events));
            }
            _ => {
                result.ending = damaged(pos);
                return result;
            }
        }
    }
}
