//! Myelin's benchmarks, as a library shared by two binaries:
//!
//! * `myelin-bench` (`src/main.rs`) — in-process benchmarks of the storage engine: the disk's
//!   own limit ([`probe`]), durable appends into a real store ([`store_run`], [`matrix`]),
//!   appends through an in-process gRPC server ([`grpc_run`]) and memory ([`memory`]).
//! * `myelin-load` (`src/bin/myelin-load.rs`) — the load generator ([`load`]): the same
//!   workloads against a server running in another process (Myelin over the Axon gRPC API,
//!   UmaDB over its own gRPC API, PostgreSQL with Axon's JDBC event table), with the server's
//!   CPU and memory read from `/proc`, results as JSON lines, and the report built from them.
//!
//! Benchmarks report figures; they assert nothing about speed. This crate must never be a
//! dependency of the server: it measures Myelin from the outside, through its public API.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod event;
pub mod grpc_run;
pub mod load;
pub mod matrix;
pub mod memory;
pub mod probe;
pub mod procfs;
pub mod stats;
pub mod store_run;

use crate::probe::ProbeResult;
use crate::stats::Millis;
use crate::store_run::StoreRunResult;

pub fn describe_probe(r: &ProbeResult) -> String {
    format!(
        "probe {} bytes: {:.0} writes/s, {:.1} MB/s, fdatasync p50 {} p99 {} max {} ({} writes in {:.1} s)",
        r.batch_bytes,
        r.writes_per_sec(),
        r.mb_per_sec(),
        Millis(r.sync.p50),
        Millis(r.sync.p99),
        Millis(r.sync.max),
        r.writes,
        r.elapsed.as_secs_f64()
    )
}

pub fn describe_store(r: &StoreRunResult) -> String {
    let batches = match (r.batch_bytes(), r.batches_per_sec()) {
        (Some(bytes), Some(per_sec)) => format!("{per_sec:.0} fdatasync/s, {bytes:.0} bytes/fdatasync (measured)"),
        _ => "fdatasync count not observable".to_string(),
    };
    let cpu = match r.writer_cpu_shares() {
        Some((on_cpu, waiting)) => format!(
            "writer on CPU {:.0}%, waiting for a CPU {:.0}%; process {:.2} cores busy",
            on_cpu * 100.0,
            waiting * 100.0,
            r.cores_busy()
        ),
        None => format!("process {:.2} cores busy", r.cores_busy()),
    };
    format!(
        "store {} appenders x {} events/tx ({} bytes/event, {} bytes/tx): {:.0} events/s, {:.0} tx/s, \
         latency p50 {} p99 {} p99.9 {} max {}; {batches}; full batch would be {} bytes; {cpu}",
        r.appenders,
        r.events_per_tx,
        r.event_bytes,
        r.transaction_bytes(),
        r.events_per_sec(),
        r.transactions_per_sec(),
        Millis(r.latency.p50),
        Millis(r.latency.p99),
        Millis(r.latency.p999),
        Millis(r.latency.max),
        r.full_batch_bytes()
    )
}
