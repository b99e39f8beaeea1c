//! The control database's one error type. The API layer maps each variant to an AXONIQ code and an
//! HTTP status in one table.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("control database I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("control database backup archive error: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// `kind` is "context", "user", "application", "cluster node", "replication group" or "cluster identity".
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// Bad input from a caller: a name, role, password or record field. Nothing was changed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The file was written by a newer Myelin; opening it could lose data that build relies on.
    #[error(
        "control database schema version {found} is newer than the {supported} this build supports; \
         run a newer Myelin or restore an older control database backup"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    /// A write would move a replication group's Raft state backwards (its vote, or its committed,
    /// applied or purged position) or break an order between them. Nothing was changed. It means
    /// a bug or mixed-up restored files, never a client's bad input.
    #[error("replication state refused: {0}")]
    Regression(String),
    /// A stored value failed a check when read back (e.g. an unknown role): never served.
    #[error("control database holds invalid data: {0}")]
    Corrupt(String),
    /// Random number generation or password hashing failed (not a wrong password).
    #[error("control database crypto failure: {0}")]
    Crypto(String),
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;
