//! Myelin's gRPC API: Axon Server's gRPC services over the stores.
//!
//! * [`serve`] runs the gRPC listener: `EventStore` ([`event_store`]) and `PlatformService`
//!   ([`platform`]) for the contexts in a [`Contexts`] registry, picked per request by the
//!   `AxonIQ-Context` header.
//! * `CommandService` ([`commands`]) adapts the command router of the `myelin-routing` crate:
//!   handlers subscribe on `OpenStream`, senders `Dispatch`; `QueryService` ([`queries`]) the
//!   same for queries (`Query`; subscription queries not yet).
//! * With a node to administer, the same listener serves `ReplicationGroupAdminService` and
//!   `ContextAdminService` ([`admin`]).
//! * The HTTP listener (REST API) is the `myelin-rest` crate's.
//! * Every error reaches clients through one table ([`error`]): gRPC status, the
//!   `AxonIQ-ErrorCode` trailer and Axon's `"[<code>] message"` text, from the node's one table.
//! * Events travel as the bytes the client sent, in and out ([`codec`]); the tracking stream
//!   ([`list_events`]) never decodes one.
//!
//! This crate is a thin adapter. It must never hold data of its own (every byte a client can
//! read comes from the store), never decide durability or ordering (the store does), and never
//! let a client's request change anything before the whole request is known (an AppendEvent
//! stream is stored only when it is complete).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod access;
pub mod admin;
pub mod blacklist;
pub mod codec;
pub mod commands;
pub mod contexts;
pub mod error;
pub mod event_store;
mod handler_stream;
pub mod list_events;
pub mod platform;
pub mod queries;
pub mod request_messages;
pub mod server;

pub use admin::AdminNode;
pub use error::ToStatus;
pub use event_store::{EventStoreLimits, EventStoreService};
pub use myelin_node::{Context, Contexts, NodeError, NodeIdentity};
pub use server::{GrpcConfig, ServeError, serve, serve_with_config};

/// Completes when the server starts stopping (or is gone).
/// The acknowledgement of the instruction `id`: success, or Axon code 1002 with SE's words for a
/// kind the stream does not take (platform, command and query streams alike).
pub(crate) fn instruction_ack(id: String, supported: bool, node_name: &str) -> myelin_proto::grpc::InstructionAck {
    let error = (!supported).then(|| myelin_proto::grpc::ErrorMessage {
        message: "Unsupported instruction".into(),
        location: node_name.to_string(),
        details: vec!["Unsupported instruction".into()],
        error_code: myelin_node::ErrorCode::UnsupportedInstruction.id().into(),
    });
    myelin_proto::grpc::InstructionAck {
        instruction_id: id,
        success: supported,
        error,
    }
}

pub(crate) async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once the server has stopped.
    let _ = stopping.wait_for(|stopping| *stopping).await;
}
