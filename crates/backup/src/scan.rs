//! Reads a segment file block by block, checking every block's CRC, to learn which tokens it
//! holds and where its last complete transaction ends — without trusting anything else.
//!
//! A segment file is the 5-byte file header, then blocks (a 4-byte size, version, event count,
//! the events, a CRC32), then a 0 (nothing written yet: an active segment) or -1 (the segment
//! continues in the next file: a closed segment). Each block is one transaction, except that a
//! transaction of more than 32767 events spans several consecutive blocks.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use myelin_format::segment::{
    BLOCK_HEADER_BYTES, BlockStart, CRC_BYTES, FILE_HEADER_BYTES, FileHeader, MARKER_BYTES, decode_block,
    read_block_start,
};

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The roll marker (-1): a closed segment, complete.
    Rolled,
    /// A zero size field: the end of what was written (an active segment).
    End,
    /// The file ended exactly after a block, with no marker (a copy cut at a block boundary).
    EndOfFile,
    /// The bytes after `valid_len` are not a complete, valid block: a write that was cut off,
    /// or damage. `reason` says what was found.
    Damaged { offset: u64, reason: String },
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Token of the first event: the segment's number (its file name).
    pub first_token: u64,
    /// Events in the valid blocks.
    pub events: u64,
    /// Byte offset just past the last valid block (the file header alone: 5).
    pub valid_len: u64,
    /// Offsets just past each valid block, in order: the places a restore may cut.
    pub block_ends: Vec<(u64, u64)>,
    pub ending: Ending,
}

impl Scan {
    /// Token of the last event in the valid blocks, or `None` when there is none.
    pub fn last_token(&self) -> Option<u64> {
        (self.events > 0).then(|| self.first_token + self.events - 1)
    }
}

/// Scans the file at `path`, a segment whose first token is `first_token`.
pub fn scan_file(path: &Path, first_token: u64) -> io::Result<Scan> {
    let file = File::open(path)?;
    scan(BufReader::with_capacity(256 * 1024, file), first_token)
}

/// Scans a segment from `reader`. I/O errors are errors; anything wrong with the bytes
/// themselves ends the scan with [`Ending::Damaged`].
pub fn scan(mut reader: impl Read, first_token: u64) -> io::Result<Scan> {
    let mut result = Scan {
        first_token,
        events: 0,
        valid_len: 0,
        block_ends: Vec::new(),
        ending: Ending::EndOfFile,
    };
    let mut header = [0u8; FILE_HEADER_BYTES];
    let read = read_full(&mut reader, &mut header)?;
    if read < FILE_HEADER_BYTES {
        result.ending = Ending::Damaged {
            offset: 0,
            reason: format!("file header truncated: {read} of {FILE_HEADER_BYTES} bytes"),
        };
        return Ok(result);
    }
    if let Err(error) = FileHeader::decode(&header) {
        result.ending = Ending::Damaged {
            offset: 0,
            reason: format!("invalid file header: {error}"),
        };
        return Ok(result);
    }
    result.valid_len = FILE_HEADER_BYTES as u64;
    let mut block = Vec::new();
    loop {
        let offset = result.valid_len;
        let mut size = [0u8; MARKER_BYTES];
        let read = read_full(&mut reader, &mut size)?;
        if read == 0 {
            result.ending = Ending::EndOfFile;
            return Ok(result);
        }
        if read < MARKER_BYTES {
            result.ending = damaged(offset, format!("size field truncated: {read} of {MARKER_BYTES} bytes"));
            return Ok(result);
        }
        let area = match read_block_start(&size) {
            Ok(BlockStart::End) => {
                result.ending = Ending::End;
                return Ok(result);
            }
            Ok(BlockStart::Rolled) => {
                result.ending = Ending::Rolled;
                return Ok(result);
            }
            Ok(BlockStart::Block(area)) => area,
            Err(error) => {
                result.ending = damaged(offset, error.to_string());
                return Ok(result);
            }
        };
        let total = BLOCK_HEADER_BYTES + area + CRC_BYTES;
        block.clear();
        block.extend_from_slice(&size);
        // Grows only as bytes arrive: a damaged size field can announce up to 2 GiB, which
        // must not be allocated up front for a file that is not that long (found by fuzzing).
        let want = (total - MARKER_BYTES) as u64;
        let read = (&mut reader).take(want).read_to_end(&mut block)?;
        if read < total - MARKER_BYTES {
            result.ending = damaged(
                offset,
                format!("block truncated: {} of {total} bytes", read + MARKER_BYTES),
            );
            return Ok(result);
        }
        match decode_block(&block) {
            Ok(Some(view)) => {
                result.events += view.count as u64;
                result.valid_len = offset + total as u64;
                result.block_ends.push((result.valid_len, result.events));
            }
            // The size field was positive, so this cannot be a marker; treat it as damage rather
            // than trust it.
            Ok(None) => {
                result.ending = damaged(offset, "a marker where a block was announced".to_string());
                return Ok(result);
            }
            Err(error) => {
                result.ending = damaged(offset, error.to_string());
                return Ok(result);
            }
        }
    }
}

fn damaged(offset: u64, reason: String) -> Ending {
    Ending::Damaged { offset, reason }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use myelin_format::segment::encode_transaction;

    fn segment(transactions: &[usize], marker: i32) -> Vec<u8> {
        let mut out = FileHeader::CURRENT.encode().to_vec();
        for (t, &count) in transactions.iter().enumerate() {
            let events: Vec<Vec<u8>> = (0..count).map(|e| format!("t{t}e{e}").into_bytes()).collect();
            encode_transaction(&events, &mut out).expect("encodes");
        }
        out.extend_from_slice(&marker.to_be_bytes());
        out
    }

    #[test]
    fn closed_and_active_segments() {
        let closed = segment(&[1, 3, 2], -1);
        let scan = scan(&closed[..], 100).expect("scan");
        assert_eq!(scan.ending, Ending::Rolled);
        assert_eq!(scan.events, 6);
        assert_eq!(scan.last_token(), Some(105));
        assert_eq!(scan.block_ends.len(), 3);
        assert_eq!(scan.valid_len as usize, closed.len() - 4);

        let mut active = segment(&[2], 0);
        active.extend_from_slice(&[0u8; 64]);
        let scan = super::scan(&active[..], 7).expect("scan");
        assert_eq!(scan.ending, Ending::End);
        assert_eq!((scan.events, scan.last_token()), (2, Some(8)));
    }

    #[test]
    fn empty_segment_has_no_last_token() {
        let bytes = segment(&[], 0);
        let scan = scan(&bytes[..], 0).expect("scan");
        assert_eq!(scan.ending, Ending::End);
        assert_eq!(scan.last_token(), None);
        assert_eq!(scan.valid_len, 5);
    }

    #[test]
    fn every_cut_and_flip_in_the_last_block_is_caught() {
        let full = segment(&[1, 2], -1);
        let whole = scan(&full[..], 0).expect("scan");
        let first_end = whole.block_ends[0].0 as usize;
        for cut in first_end + 1..full.len() - 4 {
            let scan = scan(&full[..cut], 0).expect("scan");
            assert!(
                matches!(scan.ending, Ending::Damaged { .. }),
                "cut at {cut}: {:?}",
                scan.ending
            );
            assert_eq!(scan.valid_len as usize, first_end, "cut at {cut}");
            assert_eq!(scan.events, 1);
        }
        for flip in first_end + 4..full.len() - 4 {
            let mut bytes = full.clone();
            bytes[flip] ^= 0x10;
            let scan = scan(&bytes[..], 0).expect("scan");
            assert!(matches!(scan.ending, Ending::Damaged { .. }), "flip at {flip}");
            assert_eq!(scan.events, 1, "flip at {flip}");
        }
    }

    #[test]
    fn bad_header_is_damage_at_zero() {
        let mut bytes = segment(&[1], 0);
        bytes[0] = 9;
        assert!(matches!(
            scan(&bytes[..], 0).expect("scan").ending,
            Ending::Damaged { offset: 0, .. }
        ));
        assert!(matches!(
            scan(&bytes[..3], 0).expect("scan").ending,
            Ending::Damaged { offset: 0, .. }
        ));
    }
}
