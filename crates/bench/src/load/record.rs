//! One result: a JSON object per line in the results file, the input of the report.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// The figures of one run of one workload against one system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `append`, `load`, `track`, `aggregates`, `mixed`.
    pub workload: String,
    /// `myelin`, `umadb`, `postgres`, or `disk` for the write+fdatasync probe.
    pub system: String,
    /// Concurrent clients (for `mixed`: writers + readers + tailer; for `disk`: transactions
    /// per `fdatasync`).
    pub clients: u32,
    pub events_per_tx: u32,
    pub payload_bytes: u32,
    /// Length of the measured window.
    pub seconds: f64,
    /// Events appended or read in the window.
    pub events: u64,
    /// Transactions (appends), aggregate reads, or `fdatasync`s in the window.
    pub operations: u64,
    pub events_per_sec: f64,
    pub operations_per_sec: f64,
    /// Latency per operation kind (`append`, `read_aggregate`, `fdatasync`, `track_1000`).
    pub latency: BTreeMap<String, Latency>,
    /// Workload-specific figures (`append_events_per_sec`, `read_events_per_sec`, …).
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
    /// The server's CPU over the window, percent of one core (none for the probe).
    pub server_cpu_percent: Option<f64>,
    /// `VmHWM` of a single-process server; for a process tree (PostgreSQL) the largest sampled
    /// sum of every process's private memory plus the largest shared part (see `server.rs`).
    pub server_peak_memory_bytes: Option<u64>,
    pub server_processes: Option<u32>,
    pub client_cpu_percent: f64,
    pub client_peak_rss_bytes: u64,
    /// Events in the store when the run began.
    pub store_events_before: Option<u64>,
    /// Free text from `--label`.
    #[serde(default)]
    pub label: Option<String>,
    /// Seconds since the Unix epoch when the record was written.
    pub written_at: u64,
}

/// Latency percentiles of one kind of operation, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl From<Summary> for Latency {
    fn from(s: Summary) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        Latency {
            count: s.count,
            mean_ms: ms(s.mean),
            p50_ms: ms(s.p50),
            p99_ms: ms(s.p99),
            p999_ms: ms(s.p999),
            max_ms: ms(s.max),
        }
    }
}

impl Record {
    /// A one-line summary for people watching a run.
    pub fn describe(&self) -> String {
        let latency: Vec<String> = self
            .latency
            .iter()
            .map(|(op, l)| format!("{op} p50 {:.3} p99 {:.3} p99.9 {:.3} ms", l.p50_ms, l.p99_ms, l.p999_ms))
            .collect();
        let server = match (self.server_cpu_percent, self.server_peak_memory_bytes) {
            (Some(cpu), Some(mem)) => format!("; server CPU {cpu:.0}%, peak memory {:.0} MiB", mem as f64 / 1048576.0),
            _ => String::new(),
        };
        format!(
            "{} {} clients={} events/tx={} payload={} B: {:.0} events/s, {:.0} ops/s; {}{server}; client CPU {:.0}%",
            self.workload,
            self.system,
            self.clients,
            self.events_per_tx,
            self.payload_bytes,
            self.events_per_sec,
            self.operations_per_sec,
            latency.join(", "),
            self.client_cpu_percent
        )
    }

    /// Appends the record as one JSON line.
    pub fn append_to(&self, path: &Path) -> Result<()> {
        let line = serde_json::to_string(self).context("encoding the result")?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
    }
}

/// Reads every record of a results file (blank lines are skipped; a bad line is an error that
/// names it).
pub fn read_all(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a result record", path.display(), n + 1))
        })
        .collect()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
