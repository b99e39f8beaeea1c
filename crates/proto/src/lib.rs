//! Wire types and gRPC service stubs of the Axon Server API, for Myelin.
//!
//! This crate is generated code and nothing else: the protobuf messages and
//! (with the `services` feature) the tonic client/server scaffolding for Axon
//! Server's public gRPC API,
//! built at compile time from Myelin's own `.proto` files in `proto/`. Those
//! files are written to be wire-compatible with the upstream API (release
//! 2026.1.0): package names, message and field names, field numbers, types,
//! enum values, and service/rpc names with their streaming kinds all match.
//!
//! It must never contain behaviour. Server logic lives in other crates.
//!
//! # Layout
//!
//! Modules mirror the protobuf packages under `io.axoniq.axonserver.grpc`:
//!
//! | module                  | package                               | file               |
//! |-------------------------|---------------------------------------|--------------------|
//! | [`grpc`]                | `io.axoniq.axonserver.grpc`           | `common.proto`     |
//! | [`grpc::event`]         | `io.axoniq.axonserver.grpc.event`     | `event.proto`      |
//! | [`grpc::event::dcb`]    | `io.axoniq.axonserver.grpc.event.dcb` | `dcb.proto`        |
//! | [`grpc::control`]       | `io.axoniq.axonserver.grpc.control`   | `control.proto`    |
//! | [`grpc::command`]       | `io.axoniq.axonserver.grpc.command`   | `command.proto`    |
//! | [`grpc::query`]         | `io.axoniq.axonserver.grpc.query`     | `query.proto`      |
//! | [`grpc::admin`]         | `io.axoniq.axonserver.grpc.admin`     | `admin.proto`      |
//! | [`grpc::streams`]       | `io.axoniq.axonserver.grpc.streams`   | `streams.proto`    |
//! | [`grpc::license`]       | `io.axoniq.axonserver.grpc.license`   | `license.proto`    |
//!
//! So an event is [`grpc::event::Event`], and the event store's server trait
//! is `grpc::event::event_store_server::EventStore`. The [`server`] module
//! re-exports every service's server trait and wrapper under one roof.
//!
//! `google.protobuf.Empty` maps to `()`.
//!
//! One package is Myelin's own: [`myelin::cluster`] (`myelin/cluster.proto`), the node-to-node
//! protocol of a cluster and the messages its Raft log entries carry.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]
// Generated oneofs mirror Axon's messages as they are; boxing a variant would change the API.
// (tonic's generator adds this allowance itself; prost's, used without the services, does not.)
#![allow(clippy::large_enum_variant)]

/// The generated code of one protobuf package (what `tonic::include_proto!` does, without
/// needing tonic when the `services` feature is off).
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// Package `io.axoniq.axonserver.grpc`: shared types (`common.proto`), with
/// the other packages as submodules.
pub mod grpc {
    include_proto!("io.axoniq.axonserver.grpc");

    /// Package `io.axoniq.axonserver.grpc.event`: the aggregate-based event
    /// store, event scheduler and event transformation services.
    pub mod event {
        include_proto!("io.axoniq.axonserver.grpc.event");

        /// Package `io.axoniq.axonserver.grpc.event.dcb`: the DCB event store,
        /// snapshot store and scheduler.
        pub mod dcb {
            include_proto!("io.axoniq.axonserver.grpc.event.dcb");
        }
    }

    /// Package `io.axoniq.axonserver.grpc.control`: `PlatformService`
    /// (connection set-up and the instruction stream).
    pub mod control {
        include_proto!("io.axoniq.axonserver.grpc.control");
    }

    /// Package `io.axoniq.axonserver.grpc.command`: `CommandService`.
    pub mod command {
        include_proto!("io.axoniq.axonserver.grpc.command");
    }

    /// Package `io.axoniq.axonserver.grpc.query`: `QueryService`.
    pub mod query {
        include_proto!("io.axoniq.axonserver.grpc.query");
    }

    /// Package `io.axoniq.axonserver.grpc.admin`: administration services.
    pub mod admin {
        include_proto!("io.axoniq.axonserver.grpc.admin");
    }

    /// Package `io.axoniq.axonserver.grpc.streams`: persistent event streams.
    pub mod streams {
        include_proto!("io.axoniq.axonserver.grpc.streams");
    }

    /// Package `io.axoniq.axonserver.grpc.license`: `LicenseService`.
    pub mod license {
        include_proto!("io.axoniq.axonserver.grpc.license");
    }
}

/// Server traits and their tonic service wrappers, gathered in one place.
///
/// Each pair is the trait to implement (e.g. [`server::EventStore`]) and the
/// wrapper that turns an implementation into a tonic service
/// (e.g. [`server::EventStoreServer`]). Only with the `services` feature.
#[cfg(feature = "services")]
pub mod server {
    pub use crate::grpc::command::command_service_server::{CommandService, CommandServiceServer};
    pub use crate::grpc::control::platform_service_server::{PlatformService, PlatformServiceServer};
    pub use crate::grpc::event::dcb::dcb_event_scheduler_server::{DcbEventScheduler, DcbEventSchedulerServer};
    pub use crate::grpc::event::dcb::dcb_event_store_server::{DcbEventStore, DcbEventStoreServer};
    pub use crate::grpc::event::dcb::dcb_snapshot_store_server::{DcbSnapshotStore, DcbSnapshotStoreServer};
    pub use crate::grpc::event::dcb::snapshotted_dcb_event_store_server::{
        SnapshottedDcbEventStore, SnapshottedDcbEventStoreServer,
    };
    pub use crate::grpc::event::event_scheduler_server::{EventScheduler, EventSchedulerServer};
    pub use crate::grpc::event::event_store_server::{EventStore, EventStoreServer};
    pub use crate::grpc::event::event_transformation_service_server::{
        EventTransformationService, EventTransformationServiceServer,
    };
    pub use crate::grpc::query::query_service_server::{QueryService, QueryServiceServer};
    pub use crate::grpc::streams::persistent_stream_service_server::{
        PersistentStreamService, PersistentStreamServiceServer,
    };
}

/// Myelin's own packages.
pub mod myelin {
    /// Package `myelin.cluster`: the node-to-node protocol on the internal port and the
    /// messages stored in Raft log entries (`myelin/cluster.proto`).
    pub mod cluster {
        include_proto!("myelin.cluster");
    }
}

/// gRPC metadata key naming the context a call is for (`AxonIQ-Context` on
/// the wire; HTTP/2 header names are lower case).
pub const CONTEXT_METADATA_KEY: &str = "axoniq-context";

/// gRPC metadata key carrying the access token (`AxonIQ-Access-Token`).
pub const ACCESS_TOKEN_METADATA_KEY: &str = "axoniq-access-token";

// The wire tests call the generated services; the workspace's tests build this crate with them.
#[cfg(all(test, feature = "services"))]
mod wire_tests;
