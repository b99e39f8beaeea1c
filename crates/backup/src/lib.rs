//! `myelin backup`, `myelin verify`, `myelin restore`: Axon Server's backup procedure done in
//! one command, checked end to end, and laid back down — to its end or to a token. The design,
//! the target layout and the manifest are in docs/BACKUP.md.
//!
//! * [`source`]: the server (Axon's backup endpoints, Myelin's lease and file endpoints).
//! * [`target`]: where backups go (a directory or S3-compatible storage).
//! * [`scan`]: reads a segment block by block, every CRC checked; [`logscan`] does the same
//!   for a replication group's log-entry segments.
//! * [`controldb`]: what a control-database zip says of the cluster (identity, Raft state).
//! * [`manifest`], [`run`], [`verify`], [`restore`].

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod controldb;
mod fsync;
pub mod logscan;
pub mod manifest;
pub mod restore;
pub mod run;
pub mod scan;
pub mod source;
pub mod target;
pub mod verify;
