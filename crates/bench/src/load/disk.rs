//! The physical limit next to the stores: [`crate::probe`] (sequential `pwrite` +
//! `fdatasync` into pre-allocated files, as a log-structured store writes) with the bytes a
//! round of transactions carries: `clients × events_per_tx × payload_bytes` per `fdatasync`.
//!
//! With one client that is one transaction per `fdatasync`, the most a store that syncs every
//! transaction on its own can reach. With N clients it is the batch a perfectly synchronised
//! group commit would make (one transaction from every client in each `fdatasync`): the
//! strictest reading of "the disk's limit at this concurrency". Only payload bytes count,
//! not the framing, identifiers and indexes a store adds, so the limit errs on the high side.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use super::record::{Latency, Record, now_unix};
use crate::probe::{self, ProbeConfig};

#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub dir: PathBuf,
    pub clients: usize,
    pub events_per_tx: usize,
    pub payload_bytes: usize,
    pub duration: Duration,
}

pub fn run(config: &DiskConfig) -> Result<Record> {
    ensure!(
        config.clients > 0 && config.events_per_tx > 0 && config.payload_bytes > 0,
        "--clients, --events-per-tx and --payload-bytes must be at least 1"
    );
    let batch_bytes = config
        .clients
        .checked_mul(config.events_per_tx)
        .and_then(|n| n.checked_mul(config.payload_bytes))
        .context("batch size overflows")?;
    let own = super::server::start_own();
    let result = probe::run(&ProbeConfig {
        dir: config.dir.clone(),
        batch_bytes,
        duration: config.duration,
    })?;
    let (client_cpu_percent, client_peak_rss_bytes) = own.finish();
    let events_per_write = (config.clients * config.events_per_tx) as u64;
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(Record {
        workload: "append".to_string(),
        system: "disk".to_string(),
        clients: as_u32(config.clients),
        events_per_tx: as_u32(config.events_per_tx),
        payload_bytes: as_u32(config.payload_bytes),
        seconds: result.elapsed.as_secs_f64(),
        events: result.writes * events_per_write,
        operations: result.writes,
        events_per_sec: result.writes_per_sec() * events_per_write as f64,
        operations_per_sec: result.writes_per_sec(),
        latency: [("fdatasync".to_string(), Latency::from(result.sync))].into(),
        extra: [("batch_bytes".to_string(), batch_bytes as f64)].into(),
        server_cpu_percent: None,
        server_peak_memory_bytes: None,
        server_processes: None,
        client_cpu_percent,
        client_peak_rss_bytes,
        store_events_before: None,
        label: None,
        written_at: now_unix(),
    })
}
