//! Routing of commands and queries between the clients of a context, with Axon Server's semantics
//! (docs/ARCHITECTURE.md, decision 22; MESSAGING.md §2): handlers subscribe command names on
//! their `CommandService.OpenStream`, a dispatched command goes to one of them — the only one,
//! or the one a consistent hash of its routing key picks — through that handler's priority
//! queue, released as the handler grants permits, and the handler's answer goes back to the
//! dispatcher. Every failure is a `CommandResponse` with Axon's code and exact message.
//!
//! Pure parts ([`ring`], [`queue`]) are tested on their own; [`commands::CommandRouter`] holds
//! the state and knows nothing of gRPC (the `myelin-grpc` crate adapts it).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::unwrap_used, clippy::panic))]

pub mod commands;
mod handlers;
pub mod ids;
pub mod queries;
pub mod queue;
pub mod ring;
pub mod stats;

pub use commands::{CommandRouter, RouterLimits, StreamId};
pub use queries::{QueryLimits, QueryRouter};

use std::sync::Arc;

/// A node's routers and what they counted, shared by the gRPC services that feed them and the
/// REST API that reports on them.
#[derive(Debug, Clone)]
pub struct Routing {
    pub commands: Arc<CommandRouter>,
    pub queries: Arc<QueryRouter>,
    pub command_stats: Arc<stats::MessageStats>,
    pub query_stats: Arc<stats::MessageStats>,
}

impl Routing {
    /// Routers with `commands` and `queries` limits. Must be called inside a Tokio runtime.
    pub fn new(commands: RouterLimits, queries: QueryLimits) -> Routing {
        Routing {
            commands: CommandRouter::new(commands),
            queries: QueryRouter::new(queries),
            command_stats: Arc::default(),
            query_stats: Arc::default(),
        }
    }
}
