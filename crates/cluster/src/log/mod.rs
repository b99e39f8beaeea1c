//! The Raft log of one replication group on disk: Axon Server EE's log-entry segment files
//! (framing in `myelin_format::raftlog`), one directory per group. Plain records, no openraft
//! types: the openraft storage adapter maps its entries onto [`Record`]s.
//!
//! * [`segments`]: the store — append, sync, read, truncate, compaction, reset.
//! * `recovery`: opening a directory after a crash.
//! * `io`: the file primitives, with the `cluster::log::*` failpoints.
//! * `error`: [`LogError`].

mod error;
mod io;
mod recovery;
pub mod segments;
mod store;

pub use error::LogError;
pub use myelin_format::raftlog::EntryType;
pub use segments::{FIRST_INDEX, LogSegments, PendingSync, Record, SegmentFiles, SyncDone};
pub use store::{CleaningGate, ClosedSegment, LogStore};
