//! Byte formats of Myelin's files, and nothing else.
//!
//! * [`segment`]: Axon Server's event and snapshot segment files — file header, transaction
//!   blocks, CRC — byte for byte as Axon Server writes them (see `docs/FORMAT.md`).
//! * [`event`]: a zero-copy reader of the few protobuf `Event` fields the store needs
//!   (aggregate id, sequence number, type, timestamp) without decoding whole messages.
//! * [`validate`]: checks that bytes are a whole, valid `Event` message, without decoding it.
//! * [`index`] and [`bloom`]: Myelin's own per-segment aggregate index and bloom filter files.
//! * [`raftlog`]: Axon Server EE's Raft log-entry segment files — header, entries, end
//!   markers, CRC — byte for byte.
//!
//! This crate is pure: it encodes and decodes byte slices. It never opens files, never
//! decides when to sync, and never panics on hostile input — every decoder returns an error
//! naming what is wrong and where.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod bloom;
pub mod event;
pub mod index;
pub mod raftlog;
pub mod segment;
pub mod validate;

pub use event::{EventFields, EventFieldsError};
pub use segment::{
    BLOCK_HEADER_BYTES, BlockError, BlockView, CRC_BYTES, FILE_HEADER_BYTES, FileHeader, MAX_EVENTS_PER_BLOCK,
    ROLL_MARKER, SegmentKind, encode_transaction,
};
