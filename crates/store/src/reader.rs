//! Reading blocks out of a segment file through a reusable chunk buffer.
//!
//! Every block handed out has passed [`myelin_format::segment::decode_block`]: structure and
//! CRC. Events are handed out as `Bytes` slices of the chunk, so a tracking read copies each
//! byte once, from the page cache into the chunk.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use myelin_format::segment::{
    BLOCK_HEADER_BYTES, BlockError, BlockEvents, BlockStart, MARKER_BYTES, decode_block, read_block_start,
};

use crate::error::{Result, StoreError};
use crate::io::read_at_most;

/// Bytes read per `pread` by sequential (tracking) reads when the block at hand is smaller.
const SEQUENTIAL_CHUNK_BYTES: usize = 256 * 1024;
/// The same for reads of single blocks through an index: little beyond the block is wanted.
const POSITIONED_CHUNK_BYTES: usize = 4 * 1024;

/// A checksum-verified block.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedBlock {
    /// File offset of the block's size field.
    pub offset: u64,
    /// The whole block: header, events, CRC.
    pub bytes: Bytes,
    pub count: usize,
}

impl VerifiedBlock {
    pub fn total_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// `(offset of the length prefix from the block start, event bytes)` in order.
    pub fn events(&self) -> impl Iterator<Item = (u32, Bytes)> + '_ {
        let area = &self.bytes[BLOCK_HEADER_BYTES..self.bytes.len() - 4];
        BlockEvents::over_verified_area(area).map(move |(offset, event)| {
            let start = offset + myelin_format::segment::EVENT_LEN_BYTES;
            (offset as u32, self.bytes.slice(start..start + event.len()))
        })
    }
}

/// What sits at a block position.
#[derive(Debug)]
pub(crate) enum BlockRead {
    Block(VerifiedBlock),
    /// Size 0: end of written data.
    End,
    /// Size -1: continued in the next file.
    Rolled,
    /// The limit (file end or committed end) was reached exactly.
    Limit,
    /// Something that is not a valid block.
    Invalid(BlockError),
}

pub(crate) struct ChunkReader {
    file: Arc<File>,
    path: Arc<Path>,
    chunk: Bytes,
    chunk_start: u64,
    min_read_bytes: usize,
}

impl ChunkReader {
    /// A reader for scanning forward through a segment.
    pub fn new(file: Arc<File>, path: Arc<Path>) -> Self {
        ChunkReader {
            file,
            path,
            chunk: Bytes::new(),
            chunk_start: 0,
            min_read_bytes: SEQUENTIAL_CHUNK_BYTES,
        }
    }

    /// A reader for blocks found through an index, here and there in the file.
    pub fn positioned(file: Arc<File>, path: Arc<Path>) -> Self {
        ChunkReader {
            min_read_bytes: POSITIONED_CHUNK_BYTES,
            ..ChunkReader::new(file, path)
        }
    }

    /// Makes the chunk cover `[offset, offset + len)` (clipped at `limit`); returns the bytes
    /// available from `offset`.
    fn fill(&mut self, offset: u64, len: usize, limit: u64) -> Result<Bytes> {
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        let want_end = (offset + len as u64).min(limit);
        if offset >= self.chunk_start && want_end <= chunk_end {
            let from = (offset - self.chunk_start) as usize;
            return Ok(self.chunk.slice(from..));
        }
        let read_len = (len.max(self.min_read_bytes) as u64).min(limit.saturating_sub(offset)) as usize;
        let mut buf = BytesMut::zeroed(read_len);
        let n = read_at_most(&self.file, &mut buf, offset).map_err(|e| StoreError::io(self.path.to_path_buf(), e))?;
        buf.truncate(n);
        self.chunk = buf.freeze();
        self.chunk_start = offset;
        Ok(self.chunk.clone())
    }

    /// Reads and verifies the block at `offset`, never looking at bytes at or past `limit`.
    pub fn block_at(&mut self, offset: u64, limit: u64) -> Result<BlockRead> {
        if offset >= limit {
            return Ok(BlockRead::Limit);
        }
        let head = self.fill(offset, MARKER_BYTES, limit)?;
        let size = match read_block_start(&head) {
            Ok(BlockStart::End) => return Ok(BlockRead::End),
            Ok(BlockStart::Rolled) => return Ok(BlockRead::Rolled),
            Ok(BlockStart::Block(size)) => size,
            Err(e) => return Ok(BlockRead::Invalid(e)),
        };
        let total = myelin_format::segment::block_bytes(size);
        let bytes = self.fill(offset, total, limit)?;
        match decode_block(&bytes) {
            Ok(Some(view)) => {
                let count = view.count;
                Ok(BlockRead::Block(VerifiedBlock {
                    offset,
                    bytes: bytes.slice(..total),
                    count,
                }))
            }
            Ok(None) => Ok(BlockRead::End),
            Err(e) => Ok(BlockRead::Invalid(e)),
        }
    }

    /// Like [`Self::block_at`] but anything other than a block is corruption at `offset`,
    /// except the markers, which are returned as `None`.
    pub fn expect_block(&mut self, offset: u64, limit: u64) -> Result<Option<VerifiedBlock>> {
        match self.block_at(offset, limit)? {
            BlockRead::Block(block) => Ok(Some(block)),
            BlockRead::End | BlockRead::Rolled | BlockRead::Limit => Ok(None),
            BlockRead::Invalid(e) => Err(StoreError::corrupt(self.path.to_path_buf(), offset, e)),
        }
    }
}
