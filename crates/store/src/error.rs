//! The store's one error type. The API layer maps each variant to an AXONIQ code in one table.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// Sequence check failed; the whole transaction was rejected.
    #[error("Invalid sequence number {actual} for aggregate {aggregate}, expected {expected}")]
    InvalidSequence {
        aggregate: String,
        actual: i64,
        expected: i64,
    },
    /// A snapshot newer than the aggregate's events.
    #[error(
        "Invalid sequence number while storing snapshot. Highest aggregate {aggregate} sequence number: {highest}, snapshot sequence {snapshot}."
    )]
    InvalidSnapshotSequence {
        aggregate: String,
        highest: i64,
        snapshot: i64,
    },
    /// The bytes given as an event are not a valid `Event` message.
    #[error("event {index} is not a valid Event message: {reason}")]
    InvalidEvent { index: usize, reason: String },
    #[error("transaction of {bytes} bytes exceeds the limit of {limit} bytes")]
    TransactionTooLarge { bytes: usize, limit: usize },
    /// A write or sync failed earlier; the store takes no more appends until restarted.
    #[error("event store is read-only after an I/O failure ({0}); restart after fixing the cause")]
    Poisoned(String),
    /// The store is shutting down.
    #[error("event store is closed")]
    Closed,
    /// Stored data failed a check: never served, always reported with its place.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    #[error("I/O error on {file}: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    /// The disk (or the user's quota) is full: a new segment file could not be created.
    /// Nothing was written; appends succeed again once space is freed.
    #[error("no space left to create {file} ({source}); appends resume once disk space is freed")]
    NoSpace { file: PathBuf, source: std::io::Error },
    /// Files on disk do not line up (a missing or extra segment, wrong counts).
    #[error("inconsistent store in {dir}: {reason}")]
    Inconsistent { dir: PathBuf, reason: String },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
}

impl StoreError {
    pub(crate) fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            file: file.into(),
            source,
        }
    }

    /// An I/O error that says the disk or quota is full becomes [`StoreError::NoSpace`].
    pub(crate) fn into_no_space(self) -> Self {
        match self {
            StoreError::Io { file, source }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
            {
                StoreError::NoSpace { file, source }
            }
            other => other,
        }
    }

    /// A read inside [`crate::nonblocking`] gave up rather than wait for the disk.
    pub(crate) fn is_would_block(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock)
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, offset: u64, reason: impl ToString) -> Self {
        StoreError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
