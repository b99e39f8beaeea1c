//! Tracking reads: events in token order from a [`Cursor`], never past the head.

use bytes::Bytes;
use myelin_format::index::SeekEntry;
use myelin_format::segment::FILE_HEADER_BYTES;
use tracing::warn;

use super::SegmentLog;
use crate::error::{Result, StoreError};
use crate::reader::ChunkReader;
use crate::segments::Located;

/// A position in the token stream for tracking reads.
pub struct Cursor {
    next_token: u64,
    /// Segment first token, block offset and the token of that block.
    resume: Option<(u64, u64, u64)>,
    reader: Option<(u64, ChunkReader)>,
}

impl Cursor {
    pub fn new(next_token: u64) -> Self {
        Cursor {
            next_token,
            resume: None,
            reader: None,
        }
    }

    /// The token the next read starts at.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }
}

impl SegmentLog {
    /// Reads up to `max_events` events from the cursor's position, never past the head.
    pub fn read(&self, cursor: &mut Cursor, max_events: usize, out: &mut Vec<(u64, Bytes)>) -> Result<()> {
        let head = self.head();
        let wanted = out.len() + max_events;
        while out.len() < wanted && cursor.next_token < head {
            let (located, first_segment) = {
                let segments = self.segments.read();
                (segments.locate(cursor.next_token), segments.first_token())
            };
            cursor.next_token = cursor.next_token.max(first_segment);
            let progressed = self.read_segment(located, cursor, wanted, out)?;
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    /// Reads from one segment; false when it had nothing more (the active one at its end).
    fn read_segment(
        &self,
        located: Located,
        cursor: &mut Cursor,
        wanted: usize,
        out: &mut Vec<(u64, Bytes)>,
    ) -> Result<bool> {
        let (segment_first, path, file, limit, end_token) = match &located {
            Located::Active(active) => {
                let view = active.view.read();
                (
                    active.first_token,
                    active.path.clone(),
                    active.file.clone(),
                    view.end,
                    active.first_token + view.count,
                )
            }
            Located::Closed(closed) => {
                let (file, len) = self.open_files.get(closed)?;
                (closed.first_token, closed.path.clone(), file, len, closed.end_token())
            }
        };
        let (mut offset, mut token) = match cursor.resume {
            Some((segment, offset, token)) if segment == segment_first && token <= cursor.next_token => (offset, token),
            _ => self.seek(&located, cursor.next_token)?,
        };
        if !matches!(&cursor.reader, Some((segment, _)) if *segment == segment_first) {
            cursor.reader = Some((segment_first, ChunkReader::new(file, path.clone())));
        }
        let Some((_, reader)) = cursor.reader.as_mut() else {
            return Ok(false);
        };
        let start_len = out.len();
        while out.len() < wanted && token < end_token {
            let Some(block) = reader.expect_block(offset, limit)? else {
                return Err(StoreError::corrupt(
                    path.to_path_buf(),
                    offset,
                    format!("segment ends at token {token}, expected events up to {end_token}"),
                ));
            };
            let count = block.count as u64;
            // Blocks never straddle a segment's end: one that does means the segment holds
            // more events than its index (or the writer) counted, and serving them would give
            // two events the same token.
            if token + count > end_token {
                return Err(StoreError::corrupt(
                    path.to_path_buf(),
                    offset,
                    format!("block of {count} events at token {token} runs past the segment's end at {end_token}"),
                ));
            }
            if token + count > cursor.next_token {
                let skip = cursor.next_token.saturating_sub(token) as usize;
                for (i, (_, event)) in block.events().enumerate().skip(skip) {
                    if out.len() >= wanted {
                        break;
                    }
                    out.push((token + i as u64, event));
                    cursor.next_token = token + i as u64 + 1;
                }
            }
            if cursor.next_token >= token + count {
                offset += block.total_bytes();
                token += count;
            }
            cursor.resume = Some((segment_first, offset, token));
        }
        if token >= end_token {
            cursor.next_token = cursor.next_token.max(end_token);
        }
        Ok(out.len() > start_len || matches!(located, Located::Closed(_)))
    }

    /// The block to start reading from to reach `token`: the last sampled block at or before it.
    fn seek(&self, located: &Located, token: u64) -> Result<(u64, u64)> {
        let entries: Vec<SeekEntry>;
        let (first, seek): (u64, &[SeekEntry]) = match located {
            Located::Active(active) => {
                entries = active.view.read().seek.clone();
                (active.first_token, &entries)
            }
            Located::Closed(closed) => {
                entries = match closed.memory_index.read().as_ref() {
                    Some(memory) => memory.seek.clone(),
                    None => match self.load_index(closed) {
                        Ok(index) => index.seek().to_vec(),
                        Err(e) if e.is_would_block() => return Err(e),
                        Err(e) => {
                            warn!(error = %e, "no usable index, reading segment from its start");
                            Vec::new()
                        }
                    },
                };
                (closed.first_token, &entries)
            }
        };
        let i = seek.partition_point(|s| s.token <= token);
        Ok(match i.checked_sub(1).map(|i| seek[i]) {
            Some(entry) => (u64::from(entry.offset), entry.token),
            None => (FILE_HEADER_BYTES as u64, first),
        })
    }
}
