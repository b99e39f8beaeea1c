//! The server's side of a run, read from `/proc`: CPU time (user + system) of the server
//! process and all its descendants over the measured window, and its peak memory.
//!
//! PostgreSQL serves each session from a process of its own, so a server is a process tree:
//! CPU is summed over the tree (processes that appear during the window count from zero). A
//! process that ends inside the window takes its time with it (its parent's `cutime` is no
//! help: it also collects sessions of earlier runs that the server reaps late, which once
//! showed PostgreSQL at 1400% of a core on two). The workloads therefore keep their clients,
//! and so their server sessions, connected until the figures are taken.
//! Memory: for a single process, `VmHWM` after resetting it at the start of the window
//! (`/proc/<pid>/clear_refs`), which is exact. For a tree, the largest value seen by a sampler
//! every [`SAMPLE_INTERVAL`] of the private memory of every process (`RssAnon`) plus the
//! largest shared part of any one of them (`RssFile + RssShmem`), so PostgreSQL's shared
//! buffers count once. Summing `Pss` (`smaps_rollup`) would be exact, but it walks the page
//! tables of every process: with 262 PostgreSQL processes each mapping 1 GB of shared buffers
//! one sample took 0.5–1.4 s on two busy vCPUs, time taken from the server being measured.
//!
//! The CPU share is taken over the time between the two readings of the counters (each taken
//! at the midpoint of its walk over `/proc`), not the nominal window.

// Syscalls with no safe wrapper in std (each `unsafe` block says why it is sound).
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// How often the memory of a process tree is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// Processes in a server's tree at most (a bound on the walk; PostgreSQL with 256 sessions
/// has about 262).
const TREE_PROCESSES_MAX: usize = 4096;

/// CPU and memory of the server over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerFigures {
    /// Busy time as a percentage of one core (200 = two cores busy).
    pub cpu_percent: f64,
    pub peak_memory_bytes: u64,
    /// Processes in the tree at the end.
    pub processes: usize,
    /// Whether the peak is a sampled estimate over a tree rather than `VmHWM`.
    pub memory_sampled: bool,
}

/// A window being measured; [`Window::finish`] ends it.
pub struct Window {
    pid: u32,
    cpu: CpuReading,
    sampler: Option<(Arc<AtomicBool>, Arc<AtomicU64>, JoinHandle<()>)>,
}

/// The CPU counters of a tree, and when they were read.
struct CpuReading {
    at: Instant,
    ticks: HashMap<u32, u64>,
    processes: usize,
}

fn read_cpu(pid: u32) -> Result<CpuReading> {
    let before = Instant::now();
    let tree = process_tree(pid)?;
    let ticks = cpu_ticks(&tree);
    let after = Instant::now();
    Ok(CpuReading {
        at: before + (after - before) / 2,
        ticks,
        processes: tree.len(),
    })
}

/// Starts measuring server `pid`: takes the CPU counters of its tree and resets or starts
/// tracking its peak memory.
pub fn start(pid: u32) -> Result<Window> {
    let cpu = read_cpu(pid)?;
    let sampler = if cpu.processes == 1 {
        // Needs the right to write the server's clear_refs (same user, or root); without it
        // the peak since the server started is reported, which is still an upper bound.
        let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
        None
    } else {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::Builder::new()
                .name("server-memory".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(tree) = process_tree(pid) {
                            peak.fetch_max(tree_memory_bytes(&tree), Ordering::Relaxed);
                        }
                        std::thread::sleep(SAMPLE_INTERVAL);
                    }
                })
                .context("starting the memory sampler thread")?
        };
        Some((stop, peak, handle))
    };
    Ok(Window { pid, cpu, sampler })
}

impl Window {
    pub fn finish(self) -> Result<ServerFigures> {
        let end = read_cpu(self.pid)?;
        let busy_ticks: u64 = end
            .ticks
            .iter()
            .map(|(pid, ticks)| ticks.saturating_sub(self.cpu.ticks.get(pid).copied().unwrap_or(0)))
            .sum();
        let elapsed = end.at.saturating_duration_since(self.cpu.at);
        let busy = busy_ticks as f64 / clock_ticks_per_sec();
        let cpu_percent = if elapsed.is_zero() {
            0.0
        } else {
            100.0 * busy / elapsed.as_secs_f64()
        };
        let (peak_memory_bytes, memory_sampled) = match self.sampler {
            None => (status_kib(self.pid, "VmHWM")? * 1024, false),
            Some((stop, peak, handle)) => {
                stop.store(true, Ordering::Relaxed);
                let _ = handle.join();
                let last = process_tree(self.pid).map(|tree| tree_memory_bytes(&tree)).unwrap_or(0);
                (peak.load(Ordering::Relaxed).max(last), true)
            }
        };
        Ok(ServerFigures {
            cpu_percent,
            peak_memory_bytes,
            processes: end.processes,
            memory_sampled,
        })
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `pid` and every process descending from it.
pub fn process_tree(pid: u32) -> Result<Vec<u32>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("server process {pid} is not running (no /proc/{pid}/stat)"))?;
    parse_stat(&stat).ok_or_else(|| anyhow!("cannot parse /proc/{pid}/stat"))?;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").context("listing /proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(fields) = parse_stat(&text) {
            children.entry(fields.ppid).or_default().push(child);
        }
    }
    let mut tree = vec![pid];
    let mut seen: HashSet<u32> = HashSet::from([pid]);
    let mut next = 0;
    while next < tree.len() && tree.len() < TREE_PROCESSES_MAX {
        for &child in children.get(&tree[next]).map_or(&[][..], Vec::as_slice) {
            if seen.insert(child) {
                tree.push(child);
            }
        }
        next += 1;
    }
    Ok(tree)
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(StatFields {
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
    })
}

fn cpu_ticks(tree: &[u32]) -> HashMap<u32, u64> {
    tree.iter()
        .filter_map(|pid| {
            let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((*pid, parse_stat(&text)?.cpu_ticks))
        })
        .collect()
}

/// A `kB` field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    kib_field(&status, field).ok_or_else(|| anyhow!("{field} missing from /proc/{pid}/status"))
}

fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Private memory of every process plus the largest shared part of any one, in bytes
/// (processes that vanished count as zero).
fn tree_memory_bytes(tree: &[u32]) -> u64 {
    let mut private_kib = 0u64;
    let mut shared_kib = 0u64;
    for pid in tree {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        private_kib += kib_field(&status, "RssAnon").unwrap_or(0);
        let shared = kib_field(&status, "RssFile").unwrap_or(0) + kib_field(&status, "RssShmem").unwrap_or(0);
        shared_kib = shared_kib.max(shared);
    }
    (private_kib + shared_kib) * 1024
}

/// CPU time and peak memory of this process, for the client's side of a run.
pub struct OwnWindow {
    started: Instant,
    cpu_ns: u64,
}

pub fn start_own() -> OwnWindow {
    let _ = crate::procfs::reset_peak_rss();
    OwnWindow {
        started: Instant::now(),
        cpu_ns: crate::procfs::process_cpu_ns(),
    }
}

impl OwnWindow {
    /// (CPU as a percentage of one core, peak RSS in bytes).
    pub fn finish(self) -> (f64, u64) {
        let busy = crate::procfs::process_cpu_ns().saturating_sub(self.cpu_ns) as f64 / 1e9;
        let secs = self.started.elapsed().as_secs_f64();
        let percent = if secs > 0.0 { 100.0 * busy / secs } else { 0.0 };
        (percent, crate::procfs::peak_rss_bytes().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let text = "1234 (my (odd) name) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 40 7 3 20 0 9 0 100 1000 50";
        assert_eq!(
            parse_stat(text),
            Some(StatFields {
                ppid: 77,
                cpu_ticks: 290
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn measures_a_child_process_tree() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5; wait"])
            .spawn()
            .expect("sh starts");
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(200));
        let tree = process_tree(pid).expect("tree");
        assert!(tree.len() >= 2 && tree[0] == pid, "{tree:?}");
        let window = start(pid).expect("start");
        let figures = window.finish().expect("finish");
        assert!(figures.memory_sampled && figures.peak_memory_bytes > 0, "{figures:?}");
        assert!(figures.cpu_percent >= 0.0);
        for pid in tree.iter().rev() {
            // SAFETY: plain syscall; these are our own children.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = child.wait();
    }
}
