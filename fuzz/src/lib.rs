//! The bodies of Myelin's fuzz targets, one module per target, each a `run(&[u8])` that panics
//! only when an invariant is broken (a decoder must never panic: an error is a fine answer).
//!
//! Every module here uses nothing but std and the crate under test (plus what that crate's
//! tests already have: `event_validate` uses prost and myelin-proto, as myelin-grpc does), so the crate's `tests/fuzz_regressions.rs` includes the same file with
//! `#[path]` and replays the committed inputs through exactly this code on stable Rust.

pub mod backup_manifest;
pub mod backup_scan;
pub mod bloom_file;
pub mod committed;
pub mod event_validate;
pub mod index_file;
pub mod raft_log;
pub mod recovery;
pub mod segment_block;
