//! The log's file primitives: positional reads and writes, `fdatasync`, and the creation of a
//! segment file. Each step that changes a file has a failpoint (feature `failpoints`):
//! `cluster::log::write` (every `pwrite`, zeroing included), `cluster::log::sync` (every
//! `fdatasync`) and `cluster::log::create` (a new segment file). `return` fails the step with
//! EIO, `return(enospc)` with ENOSPC, as fsutil's failpoints do.
//!
//! No memory maps: every access is a `pread`/`pwrite` on a shared `File`, so readers and the
//! writer never share mutable memory and a failed write is an error, not a signal.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use myelin_format::raftlog;

use super::error::LogError;

/// Turns an active failpoint into fsutil's injected I/O error.
macro_rules! failpoint {
    ($name:expr) => {
        fail::fail_point!($name, |arg| Err(myelin_fsutil::injected_error(arg)))
    };
}

/// Zeros are written in pieces of this size, so zeroing a large tail needs no large buffer.
const ZERO_CHUNK_BYTES: usize = 64 * 1024;

/// `pwrite` of all of `bytes` at `offset`.
pub(crate) fn write_at(path: &Path, file: &File, bytes: &[u8], offset: u64) -> Result<(), LogError> {
    let write = || -> io::Result<()> {
        failpoint!("cluster::log::write");
        file.write_all_at(bytes, offset)
    };
    write().map_err(|e| LogError::io(path, e))
}

/// Writes zeros over `[from, to)`.
pub(crate) fn zero_range(path: &Path, file: &File, from: u64, to: u64) -> Result<(), LogError> {
    let zeros = [0u8; ZERO_CHUNK_BYTES];
    let mut at = from;
    while at < to {
        let len = usize::try_from(to - at)
            .unwrap_or(ZERO_CHUNK_BYTES)
            .min(ZERO_CHUNK_BYTES);
        write_at(path, file, zeros.get(..len).unwrap_or(&zeros), at)?;
        at += len as u64;
    }
    Ok(())
}

/// `fdatasync`: the file's data, and the metadata needed to read it back. Segment files are
/// created at their full length, so after creation this never has a size to persist.
pub(crate) fn sync_data(path: &Path, file: &File) -> Result<(), LogError> {
    let sync = || -> io::Result<()> {
        failpoint!("cluster::log::sync");
        file.sync_data()
    };
    sync().map_err(|e| LogError::io(path, e))
}

/// `fsync` of data and metadata (a length changed, or a file was created).
pub(crate) fn sync_all(path: &Path, file: &File) -> Result<(), LogError> {
    myelin_fsutil::sync_all(file).map_err(|e| LogError::io(path, e))
}

/// Makes the directory's entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    myelin_fsutil::sync_dir(dir).map_err(|e| LogError::io(dir, e))
}

/// Exactly `len` bytes at `offset`; a file that ends first is an error.
pub(crate) fn read_at(path: &Path, file: &File, offset: u64, len: usize) -> Result<Vec<u8>, LogError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| LogError::io(path, e))?;
    Ok(buf)
}

/// The whole file, from its start.
pub(crate) fn read_whole(path: &Path, file: &File, len: u64) -> Result<Vec<u8>, LogError> {
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut reader = file;
    reader.read_to_end(&mut buf).map_err(|e| LogError::io(path, e))?;
    Ok(buf)
}

/// Opens an existing segment file for reading and writing.
pub(crate) fn open_segment(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(path, e))
}

/// Creates a new segment file of `size_bytes` (sparse, reading as zeros, so its length never
/// changes again and later `fdatasync`s have no metadata to write), writes the header, and
/// makes the file and its directory entry durable before anything is written into it. Fails
/// if the file exists.
pub(crate) fn create_segment(path: &Path, size_bytes: u64) -> Result<File, LogError> {
    let create = || -> io::Result<File> {
        failpoint!("cluster::log::create");
        OpenOptions::new().read(true).write(true).create_new(true).open(path)
    };
    let file = create().map_err(|e| LogError::io(path, e))?;
    file.set_len(size_bytes).map_err(|e| LogError::io(path, e))?;
    write_at(path, &file, &raftlog::encode_header(), 0)?;
    sync_all(path, &file)?;
    sync_dir(myelin_fsutil::parent(path))?;
    Ok(file)
}

/// Lengthens a segment file to `size_bytes` (zeros), durably.
pub(crate) fn grow(path: &Path, file: &File, size_bytes: u64) -> Result<(), LogError> {
    file.set_len(size_bytes).map_err(|e| LogError::io(path, e))?;
    sync_all(path, file)
}

/// Deletes a file and syncs its directory.
pub(crate) fn remove_durably(path: &Path) -> Result<(), LogError> {
    myelin_fsutil::remove_file_durably(path).map_err(|e| LogError::io(path, e))
}
