//! Myelin's node layer: the core of one node, which every API serves from.
//!
//! * [`Node`] ([`lifecycle`]) owns the node's identity, its control database and its contexts,
//!   and every change to which contexts it serves: open at start, create, roll back, delete
//!   (with the in-use and backup-lease checks), shut down.
//! * [`Contexts`] ([`contexts`]) is the registry of open contexts the APIs resolve requests
//!   against.
//! * [`NodeIdentity`] ([`identity`]) is the one description of this node.
//! * [`codes`] is the one catalogue of Axon's error codes and [`NodeError`] ([`error`]) the one
//!   table from an error to a code, a gRPC status and an HTTP status.
//!
//! This crate is transport-neutral: it must never depend on tonic, axum or hyper. The `grpc`
//! and `rest` crates are thin adapters over it; clustering and command/query routing build on
//! it (docs/ARCHITECTURE.md, "Where does a change go").

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod cluster;
pub mod codes;
pub mod contexts;
pub mod error;
pub mod identity;
pub mod lifecycle;
pub mod replication_log;
pub mod write;

pub use cluster::{AdminFuture, ClusterAdmin, ClusterNodeInfo, GroupMemberInfo, GroupStatusInfo, ReplicationGroupInfo};
pub use codes::{ErrorCode, GrpcCode};
pub use contexts::{ClientGuard, Context, Contexts, DEFAULT_CONTEXT};
pub use error::{Answer, NodeError, Operation};
pub use identity::NodeIdentity;
pub use lifecycle::{DeleteContext, Node, Provisioner, StoreLayout};
pub use replication_log::{LogCleaning, ReplicationLogFiles, ReplicationLogs};
pub use write::{WriteFuture, WritePath};
