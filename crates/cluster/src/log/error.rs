//! The one error of the log store: what failed, and where on disk.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a log operation failed. Every variant that concerns a file names it.
#[derive(Debug, Error)]
pub enum LogError {
    /// A file operation failed. When it happened while changing the files, the log is
    /// poisoned as well (see [`LogError::Poisoned`]).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file holds bytes that are not what the log wrote: damage in a closed segment, damage
    /// in the active one that a torn write cannot explain, a gap or overlap between segments.
    /// Never repaired silently; the replication group must be rebuilt from its peers.
    #[error("{path}: corrupt at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// An entry larger than a segment accepts (Axon's `PAYLOAD_TOO_LARGE`).
    #[error("entry {index} takes {entry_bytes} bytes, more than the {max_bytes} a segment accepts")]
    TooLarge {
        index: u64,
        entry_bytes: u64,
        max_bytes: u64,
    },
    /// An appended entry's index is not the one that comes next.
    #[error("entry {index} appended where entry {expected} comes next")]
    OutOfOrder { index: u64, expected: u64 },
    /// An entry the format cannot hold or Raft never writes (no data, a term that decreases
    /// or does not fit an `i64`).
    #[error("entry {index}: {reason}")]
    InvalidRecord { index: u64, reason: String },
    /// An index outside the log where the operation needs one inside it.
    #[error("index {index} is outside the log, which holds {first}..{next}")]
    OutOfRange { index: u64, first: u64, next: u64 },
    /// A segment size the format cannot use.
    #[error("segment size {bytes} bytes is outside the accepted {min}..={max}")]
    InvalidSegmentSize { bytes: u64, min: u64, max: u64 },
    /// A write or sync failed earlier: what reached the disk is unknown until the log is
    /// reopened (and recovered), so no further change is accepted. Reads still work.
    #[error("the log accepts no more changes after an I/O error ({cause}); reopen it to recover")]
    Poisoned { cause: String },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl ToString) -> LogError {
        LogError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.to_string(),
        }
    }
}
