//! Myelin's storage engine: Axon-compatible event and snapshot stores, one pair per context.
//!
//! * Files are Axon Server's segment format (`myelin-format`), so data moves between the two
//!   servers in both directions.
//! * Every append is acknowledged only after `fdatasync` (group commit, `writer`), unless the
//!   operator chose Axon's interval mode.
//! * Startup scans only the active segment (`recovery`); closed segments are trusted through
//!   their index headers and verified block by block (CRC) when they are read: by tracking
//!   reads every time, by aggregate reads the first time this process reads a block
//!   (`verified`).
//! * A failed write or sync poisons the store: no more appends, reads go on; a sync is never
//!   retried because the kernel may already have dropped the dirty pages.
//!
//! This crate must never depend on a network layer (tonic, axum): it is plain threads and
//! files, usable from async code through [`AppendTicket`] and commit listeners.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

mod closed_index;
mod config;
mod context;
mod error;
mod holds;
mod indexer;
mod io;
mod log;
mod metrics;
mod reader;
mod recovery;
mod segments;
mod validate;
mod verified;
mod writer;

pub use config::{Durability, StoreConfig};
pub use context::{ActiveSegmentFile, AppendTicket, ContextStore};
pub use error::{Result, StoreError};
pub use holds::{DeletionHolds, HOLDS_MAX};
pub use io::nonblocking;
pub use log::Cursor;
pub use metrics::{
    BATCH_BYTES_BOUNDS, BATCH_TRANSACTIONS_BOUNDS, FSYNC_SECONDS_BOUNDS, FamilyMetrics, Histogram, HistogramSnapshot,
    StoreMetrics,
};
pub use myelin_format::segment::SegmentKind;
pub use writer::{Appended, PreparedEvent, PreparedSnapshot};
