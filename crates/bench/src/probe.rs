//! The disk's own limit for the store's write pattern: sequential `pwrite`s of one batch into
//! a pre-allocated file, each followed by `fdatasync`, one at a time. The store cannot do
//! better at the same batch size, so its figures are read against these.
//!
//! Files are created the way the store creates segments (`posix_fallocate`, header, `fsync`,
//! directory `fsync`), because writing into pre-allocated but unwritten extents is what makes
//! `fdatasync` commit file-system metadata on ext4/xfs; a probe that overwrote old data would
//! measure a cheaper operation than the store performs. When a file is full the probe moves
//! to a new one, as the store rolls segments, and that time counts. Full files are kept until
//! the run ends, as the store keeps its segments: deleting them would hand their page-cache
//! pages straight back to the next writes, which on a VM whose fresh memory is costly to touch
//! made the probe up to 6× faster than any writer that keeps its data (about 0.2 ms instead of
//! 1.1 ms per 1 MB `pwrite` on the machine in docs/BENCHMARKS.md).

// Syscalls with no safe wrapper in std (each `unsafe` block says why it is sound).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::stats::{Samples, Summary, rate_per_sec};

/// The store's default segment size: the probe's files are as large.
pub const FILE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub dir: PathBuf,
    pub batch_bytes: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbeResult {
    pub batch_bytes: usize,
    pub writes: u64,
    pub elapsed: Duration,
    /// `fdatasync` alone, per write.
    pub sync: Summary,
}

impl ProbeResult {
    pub fn writes_per_sec(&self) -> f64 {
        rate_per_sec(self.writes, self.elapsed)
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.writes_per_sec() * self.batch_bytes as f64 / 1e6
    }
}

pub fn run(config: &ProbeConfig) -> Result<ProbeResult> {
    if config.batch_bytes == 0 || config.batch_bytes as u64 > FILE_BYTES / 2 {
        bail!(
            "--batch-bytes must be between 1 and {} (got {})",
            FILE_BYTES / 2,
            config.batch_bytes
        );
    }
    let dir = config.dir.join("probe");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::procfs::warn_if_memory_backed(&dir);
    let result = measure(&dir, config);
    let cleanup = std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()));
    let result = result?;
    cleanup?;
    Ok(result)
}

fn measure(dir: &Path, config: &ProbeConfig) -> Result<ProbeResult> {
    let buf: Vec<u8> = (0..config.batch_bytes).map(|i| (i % 251) as u8 | 1).collect();
    let batch = config.batch_bytes as u64;
    let mut file_number = 0u64;
    let mut file = create_preallocated(dir, file_number)?;
    // Past the 5-byte header, like the store's first batch.
    let mut offset = 5u64;
    let mut sync = Samples::with_capacity(1 << 16);
    let mut writes = 0u64;
    let started = Instant::now();
    while started.elapsed() < config.duration {
        if offset + batch > FILE_BYTES {
            file_number += 1;
            file = create_preallocated(dir, file_number)?;
            offset = 5;
        }
        file.write_all_at(&buf, offset).context("probe pwrite")?;
        let before_sync = Instant::now();
        file.sync_data().context("probe fdatasync")?;
        sync.record(before_sync.elapsed());
        offset += batch;
        writes += 1;
    }
    let elapsed = started.elapsed();
    Ok(ProbeResult {
        batch_bytes: config.batch_bytes,
        writes,
        elapsed,
        sync: sync.summary(),
    })
}

fn file_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("probe-{number:06}.dat"))
}

fn create_preallocated(dir: &Path, number: u64) -> Result<File> {
    let path = file_path(dir, number);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let len = libc::off_t::try_from(FILE_BYTES).context("file size")?;
    // SAFETY: plain syscall on a valid, owned descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => {}
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(FILE_BYTES).context("sizing the probe file")?,
        code => {
            return Err(std::io::Error::from_raw_os_error(code)).context(format!("posix_fallocate {}", path.display()));
        }
    }
    file.write_all_at(&[2, 0, 0, 0, 0], 0)
        .context("writing the probe file header")?;
    file.sync_all().context("fsync of the new probe file")?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context("fsync of the probe directory")?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_writes_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ProbeConfig {
            dir: dir.path().to_path_buf(),
            batch_bytes: 4096,
            duration: Duration::from_millis(50),
        };
        let result = run(&config).expect("probe");
        assert!(result.writes > 0);
        assert_eq!(result.sync.count, result.writes);
        assert!(!dir.path().join("probe").exists());
    }

    #[test]
    fn rejects_an_empty_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ProbeConfig {
            dir: dir.path().to_path_buf(),
            batch_bytes: 0,
            duration: Duration::from_millis(1),
        };
        let error = run(&config).expect_err("must fail").to_string();
        assert!(error.contains("--batch-bytes"), "{error}");
    }
}
