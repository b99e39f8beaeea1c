//! Myelin's test kit: the one copy of what the integration tests of every crate share.
//!
//! - [`fixtures`]: the one place that finds Axon Server's own files (outside the repository).
//! - [`events`]: event builders — aggregate events, snapshots, events of no aggregate, encoded.
//! - [`store`]: opening a store in a directory, appending, reading everything back.
//! - [`client`]: gRPC client calls the tests repeat (last token, the whole history, ...).
//! - [`history`]: the cluster tests' oracle, judging every node's history against what the
//!   writers were acknowledged.
//! - [`load`]: writers appending through the nodes of a cluster, recording each id's outcome.
//! - [`binary`]: the real `myelin serve` process, one or several at once, each on its own
//!   loopback address, with ports chosen by the OS, its own data directory and a kept log.
//! - [`grpc`] (feature `grpc`): the gRPC server in-process, over stores in a temporary directory.
//! - [`rest`] (feature `rest`): the REST router in-process, over real stores and a control DB.
//! - [`s3`] (feature `s3`): a local S3-compatible server for the backup tests.
//!
//! Test code only: it is a dev-dependency of the crates it tests and never a dependency of
//! production code, and it must not be used from `#[cfg(test)]` unit tests inside a crate's
//! `src/` (that would build a second copy of the crate). Like a failed assertion, a harness that
//! cannot do its job panics, saying what it expected; that is why it calls `expect` freely.

#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod binary;
#[cfg(feature = "client")]
pub mod client;
pub mod events;
pub mod fixtures;
pub mod history;
#[cfg(feature = "client")]
pub mod load;
pub mod store;
pub mod tidy;

#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "rest")]
pub mod rest;
#[cfg(feature = "s3")]
pub mod s3;

use std::path::{Path, PathBuf};

/// The workspace's root directory (this crate lives in `<root>/crates/testkit`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.join("../.."))
}
