//! File primitives with the durability rules in one place: positioned writes, `fdatasync`,
//! directory sync after create/rename, zero pre-allocation, atomic replace. Every operation
//! that can fail in production has a failpoint (the `failpoints` feature) so tests can make it
//! fail on purpose.
//!
//! The crash-safe sequences themselves (temp file, fsync, rename, directory fsync) are
//! `myelin-fsutil`'s, the one copy every crate uses; this module only puts the store's own
//! failpoints (`store::sync_dir`, `store::write_index`, ...) and error type around them, so
//! tests that name those failpoints see them fire at the same steps as before.

// posix_fallocate, lseek(SEEK_DATA/SEEK_HOLE) and preadv2(RWF_NOWAIT) have no safe wrapper in
// std; each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// Turns an active failpoint into an I/O error (fsutil's: `return` EIO, `return(enospc)` ENOSPC).
macro_rules! failpoint {
    ($name:expr) => {
        fail::fail_point!($name, |arg| Err(myelin_fsutil::injected_error(arg)))
    };
}

pub(crate) fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    failpoint!("store::write");
    file.write_all_at(bytes, offset)
}

/// `fdatasync`: file data and the metadata needed to read it back.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    failpoint!("store::fsync");
    file.sync_data()
}

/// Reads exactly `buf.len()` bytes at `offset`, or fewer when the file ends first. Inside
/// [`nonblocking`], reads only what the page cache holds and fails with `WouldBlock` otherwise.
pub(crate) fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let read = if NONBLOCKING.get() == Nonblocking::Off {
            file.read_at(&mut buf[done..], offset + done as u64)
        } else {
            read_cached(file, &mut buf[done..], offset + done as u64)
        };
        match read {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Whether this thread is inside [`nonblocking`], and whether something there would have
/// blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nonblocking {
    Off,
    On,
    WouldHaveBlocked,
}

thread_local! {
    static NONBLOCKING: std::cell::Cell<Nonblocking> = const { std::cell::Cell::new(Nonblocking::Off) };
}

/// Runs `read` on this thread only as far as it can go without waiting for the disk: file
/// reads are served from the page cache (`preadv2` with `RWF_NOWAIT`), and anything that would
/// open a file or load an index gives up. `None` when something would have blocked: whatever
/// `read` returned then (a result or an error) is dropped, and the caller runs the read again
/// on a thread that may block. Lets an async server answer reads of cached data on its own
/// threads instead of paying two thread switches per read.
pub fn nonblocking<T>(read: impl FnOnce() -> Result<T>) -> Option<Result<T>> {
    let outer = NONBLOCKING.replace(Nonblocking::On);
    let result = read();
    let blocked = NONBLOCKING.replace(outer) == Nonblocking::WouldHaveBlocked;
    if blocked { None } else { Some(result) }
}

/// Whether this thread may block on I/O; when it may not, records that the read in progress
/// must be redone where it can (see [`nonblocking`]) and returns the error to give up with.
pub(crate) fn check_may_block(path: &Path) -> Result<()> {
    if NONBLOCKING.get() == Nonblocking::Off {
        return Ok(());
    }
    NONBLOCKING.set(Nonblocking::WouldHaveBlocked);
    Err(StoreError::io(path, io::Error::from(io::ErrorKind::WouldBlock)))
}

/// One `preadv2(RWF_NOWAIT)`: what the page cache holds, `WouldBlock` when that is nothing.
/// Also `WouldBlock` where the flag is not supported: the read is then simply redone.
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::fd::AsRawFd;
        let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, which outlives the call; a valid, owned descriptor.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Err(error);
        }
        if !matches!(error.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP)) {
            return Err(error);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (file, buf, offset);
    NONBLOCKING.set(Nonblocking::WouldHaveBlocked);
    Err(io::Error::from(io::ErrorKind::WouldBlock))
}

/// Opens a closed segment's data file for reading without updating its access time where the
/// kernel allows it (`O_NOATIME`: the file's owner only): an aggregate read `pread`s one event
/// at a time, and each read would otherwise check, and now and then write, the inode's atime.
pub(crate) fn open_for_reading(path: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            opened => return opened,
        }
    }
    File::open(path)
}

/// Makes a directory entry (a created or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let sync = || -> io::Result<()> {
        failpoint!("store::sync_dir");
        myelin_fsutil::sync_dir(dir)
    };
    sync().map_err(|e| StoreError::io(dir, e))
}

/// Creates a new segment file of `size_bytes` zeros (space reserved up front so later
/// `fdatasync`s need not allocate), writes `header` at its start and makes it durable,
/// including its directory entry. Fails if the file exists.
pub(crate) fn create_preallocated(path: &Path, size_bytes: u64, header: &[u8]) -> Result<File> {
    let create = || -> io::Result<File> {
        failpoint!("store::create_segment");
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        preallocate(&file, size_bytes)?;
        file.write_all_at(header, 0)?;
        myelin_fsutil::sync_all(&file)?;
        Ok(file)
    };
    let file = create().map_err(|e| StoreError::io(path, e))?;
    sync_dir(parent(path))?;
    Ok(file)
}

fn preallocate(file: &File, size_bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(size_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
    // SAFETY: plain syscall on a valid, owned descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate (tmpfs on old kernels, some FUSE): a sparse file
        // reads as zeros just the same.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(size_bytes),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

pub(crate) fn parent(path: &Path) -> &Path {
    myelin_fsutil::parent(path)
}

/// Writes `bytes` to `path` atomically and durably (`myelin_fsutil::write_atomically`: temp
/// file, fsync, rename, directory fsync). `failpoint_name` fails the whole write before it
/// starts; `store::sync_dir` fails it after the rename, as a failed directory sync would.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], failpoint_name: &str) -> Result<()> {
    let write = || -> io::Result<()> {
        fail::fail_point!(failpoint_name, |_| Err(io::Error::from_raw_os_error(libc::EIO)));
        myelin_fsutil::write_atomically(path, bytes)
    };
    write().map_err(|e| StoreError::io(path, e))?;
    let dir = parent(path);
    let synced = || -> io::Result<()> {
        failpoint!("store::sync_dir");
        Ok(())
    };
    synced().map_err(|e| StoreError::io(dir, e))
}

/// The name an empty active segment's larger replacement is created under (recovery removes
/// it if a crash leaves it behind).
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(myelin_fsutil::TEMP_SUFFIX);
    path.with_file_name(name)
}

/// The parts of `[from, to)` of `file` that may hold data, in order. Everything outside them is
/// a hole, which reads as zeros. Uses `SEEK_DATA`/`SEEK_HOLE`: on ext4 and xfs a pre-allocated
/// (unwritten) extent counts as a hole, so a mostly empty active segment yields one short
/// region instead of hundreds of megabytes to read. The answer may include zeros (a file
/// system without hole reporting gives back `[from, to)` whole), never exclude data.
pub(crate) fn data_regions(file: &File, from: u64, to: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let whole = vec![(from, to)];
    if from >= to {
        return Vec::new();
    }
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: lseek on a descriptor this File owns for its whole lifetime; it only moves
        // the file offset, which nothing here relies on (all reads and writes are positioned).
        let result = unsafe { libc::lseek(fd, offset, whence) };
        if result >= 0 {
            return Ok(Some(result as u64));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(error)
        }
    };
    let mut regions = Vec::new();
    let mut at = from;
    while at < to {
        let start = match seek(at, libc::SEEK_DATA) {
            Ok(Some(start)) => start,
            Ok(None) => break,
            Err(_) => return whole,
        };
        if start >= to {
            break;
        }
        let end = match seek(start, libc::SEEK_HOLE) {
            Ok(Some(end)) => end.min(to),
            Ok(None) => to,
            Err(_) => return whole,
        };
        if end <= start {
            return whole;
        }
        regions.push((start, end));
        at = end;
    }
    regions
}
