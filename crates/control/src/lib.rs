//! Myelin's control database: everything a server must remember that is not an event or a snapshot.
//!
//! It holds what Axon Server keeps in its H2 "controldb":
//! * contexts (name, creation time, metadata),
//! * users for HTTP basic authentication (argon2id password hashes) and their role grants,
//! * applications for token authentication (only the SHA-256 of each token) and their grants,
//! * the history of backups taken (which segments and tokens each one covered),
//! * the Raft state of each replication group (Axon EE's `rg_state`): the vote, the committed,
//!   applied and purged log positions, and the membership applied last,
//! * the cluster's configuration, which the `_admin` group replicates and each node applies here:
//!   the nodes and their addresses, the replication groups with their members and roles (Axon's
//!   role numbers), and the group of each context,
//! * this node's identity in its cluster, and the cluster a restored backup came from (which the
//!   node must not rejoin).
//!
//! The crate does not depend on the Raft library: log positions are (term, index) pairs, a vote is
//! (term, node, committed) and a membership is JSON text it stores without reading.
//!
//! It is one SQLite file, [`DB_FILE_NAME`], in the control directory. The settings follow from what
//! the data is for:
//! * `journal_mode=WAL`: readers (authentication on every request, the online backup) never block
//!   the writer and the writer never blocks them.
//! * `synchronous=FULL`: in WAL mode `NORMAL` may lose the last commits on power failure; a user
//!   that was told "created", a backup that was recorded or a Raft vote about to be answered must
//!   survive, and writes here are rare.
//! * `foreign_keys=ON`: role grants go away with their user or application.
//! * `busy_timeout`: another connection (an online backup, an operator's `sqlite3` shell) holding a
//!   lock briefly must cause a wait, not an error.
//!
//! The schema is versioned in `PRAGMA user_version`; migrations live in code and run at open. A file
//! from a newer build is refused ([`ControlError::SchemaTooNew`]) rather than half understood.
//!
//! This crate must never store a clear-text password or token, never panic on input from a
//! client, and never change data when it reports an error for bad input.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod access;
mod applications;
mod backup_zip;
mod backups;
mod cluster_config;
mod cluster_identity;
mod contexts;
mod db;
mod error;
mod raft_state;
mod schema;
mod users;
mod validate;

pub use access::{AccessControl, Grant, Principal, PrincipalKind, Right, Role};
pub use applications::ApplicationRecord;
pub use backups::BackupRecord;
pub use cluster_config::{ClusterNode, REPLICATION_ROLES, ReplicationGroupRecord, replication_role_name};
pub use cluster_identity::ClusterIdentity;
pub use contexts::ContextRecord;
pub use db::{ControlDb, DB_FILE_NAME, now_ms};
pub use error::{ControlError, Result};
pub use raft_state::{LogPosition, RaftState, Vote};
pub use users::UserRecord;
pub use validate::{ADMIN_GROUP, validate_context_name, validate_replication_group_name};
