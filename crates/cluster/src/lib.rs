//! Replication as in Axon Server Enterprise, on openraft: one Raft group per replication group
//! plus `_admin`, log-entry segments in Axon's framing, the raft state in the control database,
//! node roles, formation and the admin operations.
//!
//! This crate must never acknowledge a write before it is committed under the role rules, never
//! let a token be assigned twice, and never delete a log segment a backup may still need.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]
// openraft's storage traits fix the error type (`StorageError`, some 200 bytes); the helpers
// that build one for them return it as is rather than boxing and unboxing at every call.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod backup;
pub mod cleaner;
pub mod cluster;
pub mod codec;
pub mod config;
mod flush;
pub mod formation;
pub mod gate;
pub mod group;
pub mod invariants;
pub mod log;
pub mod machine;
pub mod network;
pub mod observe;
pub mod recovery;
pub mod role;
pub mod service;
pub mod transfer;
pub mod types;

pub use cluster::{ADMIN_GROUP, ClusterNode};
pub use config::{ClusterConfig, ReplicationConfig};
pub use formation::Formation;
pub use role::Role;
pub use service::service;
