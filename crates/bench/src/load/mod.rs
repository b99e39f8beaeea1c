//! The load generator behind `myelin-load`: the same workloads against event stores running in
//! other processes, so the figures belong to the server and not to a harness sharing its
//! process.
//!
//! * [`system`] — what every store must offer (connect, append a transaction, read the whole
//!   stream, read one aggregate, follow new events) and the events all of them are sent.
//! * [`myelin`], [`umadb`], [`postgres`] — the adapters: Myelin over the Axon gRPC API, UmaDB
//!   over its own gRPC API, PostgreSQL with the event table of Axon Framework's JDBC engine.
//! * [`grpc`] — the lean gRPC client both gRPC adapters call through (`h2` directly, so the
//!   generator takes little of the CPUs it shares with the server).
//! * [`disk`] — the physical limit: `pwrite` + `fdatasync` of the same bytes ([`crate::probe`]).
//! * [`workload`] — closed-loop appends, loading a store, the tracking read, random aggregate
//!   reads and a mixed run, each producing a [`record::Record`].
//! * [`server`] — the server's CPU time and peak memory, read from `/proc/<pid>` (and its
//!   child processes, for PostgreSQL).
//! * [`report`] — markdown tables and the plot, built from the JSON lines of many runs.

pub mod disk;
pub mod grpc;
pub mod myelin;
pub mod postgres;
pub mod record;
pub mod report;
pub mod rng;
pub mod server;
pub mod system;
pub mod umadb;
pub mod workload;

/// The generated messages of UmaDB's gRPC API (`proto/umadb.proto`, package `umadb.v1`).
pub mod umadb_proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/umadb.v1.rs"));
}
