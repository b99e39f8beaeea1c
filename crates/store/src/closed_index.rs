//! A closed segment's index file as the store uses it: the hash table and seek samples in
//! memory (16 bytes per aggregate), entries read with `pread` on demand. The whole file's CRC
//! is verified once per process, the first time it is opened.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use myelin_format::index::{
    HEADER_BYTES, IndexHeader, IndexLayout, IndexPosition, IndexTable, SeekEntry, decode_seek, entry_positions,
};

use crate::error::{Result, StoreError};
use crate::io::read_at_most;

/// Bytes read at a time while verifying an index file's checksum.
const VERIFY_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub(crate) struct LoadedIndex {
    layout: IndexLayout,
    table: IndexTable,
    seek: Vec<SeekEntry>,
    file: File,
    path: PathBuf,
}

impl LoadedIndex {
    /// Opens `path`; verifies its checksum unless `verified` says this process already did (or
    /// wrote the file itself). An `Err` means the file is missing or damaged: rebuild it.
    pub fn open(path: &Path, verified: &AtomicBool) -> std::result::Result<LoadedIndex, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        let file_len = usize::try_from(file_len).map_err(|e| e.to_string())?;
        let mut header = [0u8; HEADER_BYTES];
        read_exact(&file, &mut header, 0)?;
        let header = IndexHeader::decode(&header).map_err(|e| e.to_string())?;
        let layout = IndexLayout::new(header, file_len).map_err(|e| e.to_string())?;
        if !verified.load(Ordering::Acquire) {
            verify_checksum(&file, &layout)?;
            verified.store(true, Ordering::Release);
        }
        let mut table = vec![0u8; layout.table.len()];
        read_exact(&file, &mut table, layout.table.start as u64)?;
        let table = IndexTable::new(&layout, table).map_err(|e| e.to_string())?;
        let mut seek = vec![0u8; layout.seek.len()];
        read_exact(&file, &mut seek, layout.seek.start as u64)?;
        let seek = decode_seek(&seek);
        Ok(LoadedIndex {
            layout,
            table,
            seek,
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn seek(&self) -> &[SeekEntry] {
        &self.seek
    }

    /// Bytes this index holds in memory.
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.seek.len() * std::mem::size_of::<SeekEntry>()
    }

    /// The positions of `aggregate_id` in the segment; empty when absent.
    pub fn lookup(&self, aggregate_id: &str) -> Result<Vec<IndexPosition>> {
        let damaged = |offset: usize, reason: String| StoreError::corrupt(self.path.clone(), offset as u64, reason);
        let candidates = self
            .table
            .candidates(aggregate_id)
            .map_err(|e| damaged(self.layout.table.start, e.to_string()))?;
        for range in candidates {
            let mut entry = vec![0u8; range.len()];
            read_exact(&self.file, &mut entry, range.start as u64).map_err(|e| damaged(range.start, e))?;
            match entry_positions(&entry, aggregate_id) {
                Ok(Some(positions)) => return Ok(positions),
                Ok(None) => continue,
                Err(e) => return Err(damaged(range.start, e.to_string())),
            }
        }
        Ok(Vec::new())
    }
}

fn read_exact(file: &File, buf: &mut [u8], offset: u64) -> std::result::Result<(), String> {
    match read_at_most(file, buf, offset) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(format!(
            "file ends after {} of {} bytes at offset {offset}",
            n,
            buf.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Streams the file through CRC-32 and compares with the stored checksum.
fn verify_checksum(file: &File, layout: &IndexLayout) -> std::result::Result<(), String> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; VERIFY_CHUNK_BYTES];
    let mut at = 0usize;
    while at < layout.crc {
        let len = (layout.crc - at).min(buf.len());
        read_exact(file, &mut buf[..len], at as u64)?;
        hasher.update(&buf[..len]);
        at += len;
    }
    let mut stored = [0u8; 4];
    read_exact(file, &mut stored, layout.crc as u64)?;
    let (stored, computed) = (u32::from_be_bytes(stored), hasher.finalize());
    if stored != computed {
        return Err(format!(
            "index checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(())
}
