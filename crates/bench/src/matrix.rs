//! The whole table: every (appenders, events per transaction) cell as a store run, next to
//! the probe at the batch size that cell would reach if every appender's transaction went
//! into one `fdatasync`.
//!
//! A shared virtual disk has noisy minutes, so with `repeat > 1` the whole matrix is run that
//! many times over (not each cell back to back, so one noisy stretch cannot own a cell) and
//! each cell shows its median store run and median probe, with the range of the per-pass
//! ratios beside them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::probe::{self, ProbeConfig, ProbeResult};
use crate::stats::Millis;
use crate::store_run::{self, StoreRunConfig, StoreRunResult, Waiter};

pub const APPENDERS: [usize; 3] = [1, 16, 64];
pub const EVENTS_PER_TX: [usize; 2] = [1, 100];
/// The probe size quoted as "the disk's fdatasync latency".
pub const REFERENCE_BATCH_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct MatrixConfig {
    pub dir: PathBuf,
    pub duration: Duration,
    pub warmup: Duration,
    pub payload_bytes: usize,
    pub waiter: Waiter,
    /// Passes over the whole matrix.
    pub repeat: usize,
}

/// One pass of one cell: the store run and the probe right after it.
pub struct Pass {
    pub store: StoreRunResult,
    pub probe: ProbeResult,
}

impl Pass {
    /// The probe's writes/s as events/s: each write stands for one batch holding one
    /// transaction from every appender.
    pub fn probe_events_per_sec(&self) -> f64 {
        probe_events_per_sec(&self.probe, &self.store)
    }

    pub fn ratio(&self) -> f64 {
        ratio(self.store.events_per_sec(), self.probe_events_per_sec())
    }
}

fn probe_events_per_sec(probe: &ProbeResult, store: &StoreRunResult) -> f64 {
    probe.writes_per_sec() * (store.appenders * store.events_per_tx) as f64
}

fn ratio(store: f64, probe: f64) -> f64 {
    if probe > 0.0 { store / probe } else { 0.0 }
}

pub struct Cell {
    pub passes: Vec<Pass>,
}

impl Cell {
    /// The pass whose store run is the median by events/s (the upper middle one when the
    /// number of passes is even).
    pub fn median_store(&self) -> &StoreRunResult {
        let mut runs: Vec<&StoreRunResult> = self.passes.iter().map(|p| &p.store).collect();
        runs.sort_by(|a, b| a.events_per_sec().total_cmp(&b.events_per_sec()));
        runs[runs.len() / 2]
    }

    /// The median probe by writes/s (upper middle, as for the store).
    pub fn median_probe(&self) -> &ProbeResult {
        median_probe(self.passes.iter().map(|p| &p.probe).collect())
    }

    pub fn probe_events_per_sec(&self) -> f64 {
        probe_events_per_sec(self.median_probe(), self.median_store())
    }

    /// Median store events/s over median probe events/s.
    pub fn ratio(&self) -> f64 {
        ratio(self.median_store().events_per_sec(), self.probe_events_per_sec())
    }

    /// Lowest and highest ratio of a single pass.
    pub fn ratio_range(&self) -> (f64, f64) {
        self.passes
            .iter()
            .map(Pass::ratio)
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), r| (lo.min(r), hi.max(r)))
    }
}

fn median_probe(mut probes: Vec<&ProbeResult>) -> &ProbeResult {
    probes.sort_by(|a, b| a.writes_per_sec().total_cmp(&b.writes_per_sec()));
    probes[probes.len() / 2]
}

pub struct Matrix {
    pub references: Vec<ProbeResult>,
    pub cells: Vec<Cell>,
    pub waiter: Waiter,
}

/// Runs every cell `repeat` times, printing progress to stderr.
pub fn run(config: &MatrixConfig) -> Result<Matrix> {
    let shape: Vec<(usize, usize)> = APPENDERS
        .iter()
        .flat_map(|a| EVENTS_PER_TX.iter().map(move |e| (*a, *e)))
        .collect();
    let mut cells: Vec<Cell> = shape.iter().map(|_| Cell { passes: Vec::new() }).collect();
    let mut references = Vec::new();
    for pass in 1..=config.repeat.max(1) {
        eprintln!("pass {pass}: probe at {REFERENCE_BATCH_BYTES} bytes ...");
        let reference = probe::run(&ProbeConfig {
            dir: config.dir.clone(),
            batch_bytes: REFERENCE_BATCH_BYTES,
            duration: config.duration,
        })?;
        eprintln!("  {}", crate::describe_probe(&reference));
        references.push(reference);
        for (cell, (appenders, events_per_tx)) in cells.iter_mut().zip(&shape) {
            cell.passes.push(run_pass(config, *appenders, *events_per_tx)?);
        }
    }
    Ok(Matrix {
        references,
        cells,
        waiter: config.waiter,
    })
}

fn run_pass(config: &MatrixConfig, appenders: usize, events_per_tx: usize) -> Result<Pass> {
    eprintln!("store: {appenders} appenders x {events_per_tx} events/tx ...");
    let store = store_run::run(&StoreRunConfig {
        dir: config.dir.clone(),
        appenders,
        events_per_tx,
        payload_bytes: config.payload_bytes,
        duration: config.duration,
        warmup: config.warmup,
        waiter: config.waiter,
    })?;
    eprintln!("  {}", crate::describe_store(&store));
    let batch_bytes = store.full_batch_bytes();
    eprintln!("probe at {batch_bytes} bytes ...");
    let probe = probe::run(&ProbeConfig {
        dir: config.dir.clone(),
        batch_bytes,
        duration: config.duration,
    })?;
    eprintln!("  {}", crate::describe_probe(&probe));
    Ok(Pass { store, probe })
}

impl Matrix {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let r = median_probe(self.references.iter().collect());
        let passes = self.references.len();
        let _ = writeln!(
            out,
            "Appenders: {:?}. Passes: {passes} (medians shown). Probe at {} bytes: {:.0} writes/s, \
             fdatasync p50 {} / p99 {}\n",
            self.waiter,
            r.batch_bytes,
            r.writes_per_sec(),
            Millis(r.sync.p50),
            Millis(r.sync.p99)
        );
        let _ = writeln!(
            out,
            "| appenders | events/tx | store events/s | store tx/s | store p50 | store p99 | store p99.9 \
             | store bytes/fdatasync (measured) | probe batch bytes | probe writes/s | probe events/s-equiv. \
             | store/probe | store/probe range | writer on CPU | cores busy |"
        );
        let _ = writeln!(
            out,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for cell in &self.cells {
            let s = cell.median_store();
            let p = cell.median_probe();
            let measured = s.batch_bytes().map_or("n/a".to_string(), |b| format!("{b:.0}"));
            let writer_cpu = s
                .writer_cpu_shares()
                .map_or("n/a".to_string(), |(cpu, _)| format!("{:.0}%", cpu * 100.0));
            let (lo, hi) = cell.ratio_range();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2}–{:.2} | {} | {:.2} |",
                s.appenders,
                s.events_per_tx,
                s.events_per_sec(),
                s.transactions_per_sec(),
                Millis(s.latency.p50),
                Millis(s.latency.p99),
                Millis(s.latency.p999),
                measured,
                p.batch_bytes,
                p.writes_per_sec(),
                cell.probe_events_per_sec(),
                cell.ratio(),
                lo,
                hi,
                writer_cpu,
                s.cores_busy(),
            );
        }
        out
    }
}
