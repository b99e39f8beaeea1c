//! What Linux tells a process about itself: peak and current resident memory, and the write
//! counters of the store's writer threads (how many `pwrite`s and bytes), read from `/proc`.

// Syscalls with no safe wrapper in std (each `unsafe` block says why it is sound).
#![allow(unsafe_code)]

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow};

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`), in bytes.
pub fn status_bytes(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .ok_or_else(|| anyhow!("{field} missing from /proc/self/status"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing {field}: {line:?}"))?;
    Ok(kib * 1024)
}

pub fn peak_rss_bytes() -> Result<u64> {
    status_bytes("VmHWM")
}

pub fn rss_bytes() -> Result<u64> {
    status_bytes("VmRSS")
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0), so a later peak belongs to what follows.
pub fn reset_peak_rss() -> Result<()> {
    fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS through /proc/self/clear_refs")
}

/// Counters summed over this process's threads whose name starts with a prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCounters {
    /// Write system calls (`syscw`: write, pwrite, writev, …).
    pub write_calls: u64,
    /// Bytes passed to them (`wchar`).
    pub write_bytes: u64,
    /// Time on a CPU (`schedstat`).
    pub cpu_ns: u64,
    /// Time runnable but waiting for a CPU (`schedstat`).
    pub runqueue_ns: u64,
}

impl ThreadCounters {
    pub fn since(self, earlier: ThreadCounters) -> ThreadCounters {
        ThreadCounters {
            write_calls: self.write_calls.saturating_sub(earlier.write_calls),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            runqueue_ns: self.runqueue_ns.saturating_sub(earlier.runqueue_ns),
        }
    }
}

/// Sums `/proc/self/task/*/{io,schedstat}` over threads named `prefix…` (names are cut to 15
/// bytes by the kernel, so the store's `writer-<context>-events` may read as
/// `writer-<context>-`). `None` when the kernel has no per-task accounting.
pub fn thread_counters(prefix: &str) -> Option<ThreadCounters> {
    let tasks = fs::read_dir("/proc/self/task").ok()?;
    let mut total = ThreadCounters::default();
    let mut seen = false;
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(name) = fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let task = read_task(&dir)?;
        total.write_calls += task.write_calls;
        total.write_bytes += task.write_bytes;
        total.cpu_ns += task.cpu_ns;
        total.runqueue_ns += task.runqueue_ns;
        seen = true;
    }
    seen.then_some(total)
}

fn read_task(dir: &Path) -> Option<ThreadCounters> {
    let io = fs::read_to_string(dir.join("io")).ok()?;
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let schedstat = fs::read_to_string(dir.join("schedstat")).ok()?;
    let mut sched = schedstat.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some(ThreadCounters {
        write_calls: field("syscw")?,
        write_bytes: field("wchar")?,
        cpu_ns: sched.next()??,
        runqueue_ns: sched.next()??,
    })
}

/// CPU time (user + system) of the whole process so far.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Warns when `dir` is on a filesystem where `fdatasync` costs nothing (tmpfs, ramfs):
/// figures measured there say nothing about a disk.
pub fn warn_if_memory_backed(dir: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return;
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as i64;
    if kind == TMPFS_MAGIC || kind == RAMFS_MAGIC {
        eprintln!(
            "warning: {} is memory-backed (tmpfs/ramfs): fdatasync is free there, figures are not a disk's",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_figures() {
        // Current first: the peak only grows, so read after it, it can never be below it.
        let now = rss_bytes().expect("VmRSS");
        let peak = peak_rss_bytes().expect("VmHWM");
        assert!(peak >= now && now > 0, "peak {peak} < current {now}");
    }

    #[test]
    fn counts_writes_of_named_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let handle = std::thread::Builder::new()
            .name("probe-io-test".into())
            .spawn(move || {
                std::fs::write(&path, [1u8; 1000]).expect("write");
                thread_counters("probe-io-test")
            })
            .expect("spawn");
        let counters = handle.join().expect("join");
        if let Some(c) = counters {
            assert!(c.write_calls >= 1 && c.write_bytes >= 1000, "{c:?}");
        }
        assert!(process_cpu_ns() > 0);
    }
}
