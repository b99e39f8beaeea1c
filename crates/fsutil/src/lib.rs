//! Crash-safe file operations: the one copy of "write a temporary file, fsync it, rename it over
//! the destination, fsync the directory", and the directory syncs that make a create, rename or
//! delete survive a power loss.
//!
//! Every crate that writes a file which must survive a crash (the store's index and bloom files,
//! the control database's backups, the backup tool's targets and restores) goes through here, so
//! the sequence is written, reviewed and fault-tested once.
//!
//! The guarantee of [`AtomicFile::commit`] and [`write_atomically`]: after a crash at any point,
//! the destination holds either its old content (or is absent, if it was) or the complete new
//! content, never a mixture; once the call returns `Ok`, the new content survives a power loss.
//! A temporary file may be left behind by a crash (never by an error: it is removed); its name
//! ends in [`TEMP_SUFFIX`] so readers can skip it.
//!
//! Each step has a failpoint (feature `failpoints`): `fsutil::create`, `fsutil::write`,
//! `fsutil::fsync`, `fsutil::rename`, `fsutil::sync_dir`. `return` makes the step fail with EIO,
//! `return(enospc)` with ENOSPC.
//!
//! This crate must never know what the files hold, and never swallow an error: a failed fsync
//! is returned to the caller, which decides whether the store can go on.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The ending of every temporary file this crate creates.
pub const TEMP_SUFFIX: &str = ".tmp";
/// The destination's name is cut to this many bytes in a temporary name, so that the temporary
/// name (with its dots, pid, counter and suffix) stays within the usual 255-byte limit of a name.
const TEMP_NAME_PART_BYTES_MAX: usize = 200;
/// Temporary names tried before giving up. A name is taken only by a file a crashed process
/// left: its pid may be ours again (pid 1 in every container), and a deterministic program
/// reaches the same counter for the same destination, so the next counter value is tried.
const TEMP_CREATE_ATTEMPTS_MAX: u32 = 16;

/// The I/O error an active failpoint stands for: `return` gives EIO, `return(enospc)` ENOSPC.
/// Every crate that injects file-system faults (this one, the store) answers with it, so a
/// test configures them all the same way.
pub fn injected_error(argument: Option<String>) -> io::Error {
    let code = match argument.as_deref() {
        Some("enospc") => libc::ENOSPC,
        _ => libc::EIO,
    };
    io::Error::from_raw_os_error(code)
}

/// Turns an active failpoint into an [`injected_error`].
macro_rules! failpoint {
    ($name:expr) => {
        fail::fail_point!($name, |arg| Err(injected_error(arg)))
    };
}

/// A new file that replaces `destination` only when [`commit`](AtomicFile::commit)ted.
///
/// Created next to the destination (a rename is atomic only within one file system), under a
/// name no other writer uses at the same time. Dropped without a commit, the temporary file is
/// removed and the destination is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    destination: PathBuf,
    temp_path: PathBuf,
    /// `None` once committed.
    file: Option<File>,
}

impl AtomicFile {
    /// Creates the temporary file for `destination`, whose directory must exist.
    pub fn create(destination: &Path) -> io::Result<AtomicFile> {
        let open = |temp_path: &Path| -> io::Result<File> {
            failpoint!("fsutil::create");
            OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(temp_path)
        };
        let mut attempts = 1;
        loop {
            let temp_path = unique_temp_path(destination)?;
            match open(&temp_path) {
                Ok(file) => {
                    return Ok(AtomicFile {
                        destination: destination.to_path_buf(),
                        temp_path,
                        file: Some(file),
                    });
                }
                // Never removed: on a volume shared between containers it may be another
                // live writer's, with the same pid in its own namespace.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < TEMP_CREATE_ATTEMPTS_MAX => {
                    attempts += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The temporary file, to fill.
    pub fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the atomic file was already committed"))
    }

    /// Where the content goes until the commit.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Makes the written content the destination's, durably: fsync the file, rename it over
    /// the destination, fsync the directory. On error the destination keeps its old content
    /// (unless only the directory sync failed: then it may hold either) and the temporary file
    /// is removed.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file()?;
        file.flush()?;
        sync_all(file)?;
        self.file = None;
        rename(&self.temp_path, &self.destination)?;
        // Renamed: nothing left for Drop to remove.
        self.temp_path = PathBuf::new();
        sync_dir(parent(&self.destination))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        failpoint!("fsutil::write");
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.temp_path.as_os_str().is_empty() {
            return;
        }
        self.file = None;
        if let Err(error) = std::fs::remove_file(&self.temp_path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.temp_path.display(), %error, "could not remove a temporary file");
        }
    }
}

/// Replaces `destination` with `bytes`, atomically and durably (see the crate docs).
pub fn write_atomically(destination: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(destination)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Replaces `destination` with what `fill` writes, atomically and durably.
pub fn write_atomically_with(
    destination: &Path,
    fill: impl FnOnce(&mut AtomicFile) -> io::Result<()>,
) -> io::Result<()> {
    let mut file = AtomicFile::create(destination)?;
    fill(&mut file)?;
    file.commit()
}

/// `fsync` of a file: its data and all its metadata.
pub fn sync_all(file: &File) -> io::Result<()> {
    failpoint!("fsutil::fsync");
    file.sync_all()
}

/// Makes the entries of `dir` (files created, renamed or deleted in it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    failpoint!("fsutil::sync_dir");
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` (atomic within one file system). Not yet durable: sync the
/// directory, or use [`rename_durably`].
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    failpoint!("fsutil::rename");
    std::fs::rename(from, to)
}

/// Renames `from` to `to` and syncs the directories involved, so the rename survives a crash.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    rename(from, to)?;
    let (from_dir, to_dir) = (parent(from), parent(to));
    sync_dir(to_dir)?;
    if from_dir != to_dir {
        sync_dir(from_dir)?;
    }
    Ok(())
}

/// Deletes `path` and syncs its directory. A missing file counts as deleted.
pub fn remove_file_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// `mkdir -p` that survives a crash: every directory it creates is synced into its parent.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut existing = dir;
    while !existing.is_dir() {
        missing.push(existing);
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if existing == Path::new(".") && !existing.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no existing ancestor directory",
            ));
        }
    }
    for created in missing.iter().rev() {
        match std::fs::create_dir(created) {
            Ok(()) => {}
            // Another writer created it meanwhile; syncing its parent again is harmless.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => {}
            Err(error) => return Err(error),
        }
        sync_dir(parent(created))?;
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Whether a file name has exactly the shape of this crate's temporary files,
/// `.<name>.<pid>.<n>.tmp`: strict, for directories where a name of someone else's may end in
/// `.tmp` (a backup target holding whatever keys it is given).
pub fn is_temp_file_name(name: &str) -> bool {
    temp_file_destination(name).is_some()
}

/// The `<name>` of one of this crate's temporary file names, `.<name>.<pid>.<n>.tmp` (the
/// destination's file name, cut to its first 200 bytes); `None` for any other name.
pub fn temp_file_destination(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let mut parts = rest.rsplitn(3, '.');
    let is_number = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(pid), Some(base)) if !base.is_empty() && is_number(pid) && is_number(n) => Some(base),
        _ => None,
    }
}

/// `.<name>.<pid>.<n>.tmp` beside `destination`: unique among this process's writers (the
/// counter) and among processes (the pid), and hidden from a plain `ls`.
fn unique_temp_path(destination: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = destination
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the destination has no file name"))?;
    let mut cut = name.len().min(TEMP_NAME_PART_BYTES_MAX);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let base = name.get(..cut).unwrap_or(name);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(".{base}.{}.{n}{TEMP_SUFFIX}", std::process::id());
    debug_assert!(is_temp_file_name(&temp_name), "{temp_name}");
    Ok(parent(destination).join(temp_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_file_replaces_the_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        std::fs::write(&path, b"old").expect("write");
        write_atomically(&path, b"new").expect("atomic write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("list").count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_dropped_file_leaves_the_destination_and_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        std::fs::write(&path, b"old").expect("write");
        let mut file = AtomicFile::create(&path).expect("create");
        file.write_all(b"half").expect("write");
        let temp_name = file
            .temp_path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(temp_file_destination(temp_name), Some("index"));
        drop(file);
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_failed_fill_leaves_the_destination_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("zip");
        let result = write_atomically_with(&path, |file| {
            file.write_all(b"part")?;
            Err(io::Error::other("the source went away"))
        });
        assert!(result.is_err());
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    fn directories_are_created_with_their_missing_ancestors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        create_dir_all_durably(&deep).expect("mkdir -p");
        assert!(deep.is_dir());
        create_dir_all_durably(&deep).expect("again: nothing to do");
    }

    #[test]
    fn two_writers_of_one_destination_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shared");
        let first = AtomicFile::create(&path).expect("first");
        let second = AtomicFile::create(&path).expect("second");
        assert_ne!(first.temp_path(), second.temp_path());
    }

    #[test]
    fn a_long_destination_name_still_gets_a_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 253 bytes: a legal name, too long to take a temporary name's additions whole.
        let name = format!("{}x", "é".repeat(126));
        let path = dir.path().join(&name);
        write_atomically(&path, b"content").expect("atomic write of a long name");
        assert_eq!(std::fs::read(&path).expect("read"), b"content");
    }

    #[test]
    fn a_temporary_name_left_by_a_crashed_process_is_stepped_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        // What a crashed process with our pid would have left under the next counter values.
        let next = AtomicFile::create(&path).expect("probe");
        let probe_name = next.temp_path().to_path_buf();
        drop(next);
        let (prefix, counter) = probe_name
            .to_str()
            .and_then(|probe| probe.strip_suffix(TEMP_SUFFIX))
            .and_then(|probe| probe.rsplit_once('.'))
            .expect("a counter in the temporary name");
        let counter: u64 = counter.parse().expect("a numeric counter");
        // Tests running beside this one take counter values too: leave a few, fewer than the
        // attempts allowed.
        for stale in counter + 1..=counter + 8 {
            std::fs::write(format!("{prefix}.{stale}{TEMP_SUFFIX}"), b"stale").expect("write stale");
        }
        write_atomically(&path, b"new").expect("atomic write past stale temporary files");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn only_names_of_this_crates_shape_are_temporary_file_names() {
        for name in [".index.1.0.tmp", ".a.b.4242.17.tmp"] {
            assert!(is_temp_file_name(name), "{name}");
        }
        for name in [
            "index.tmp",
            ".index.tmp",
            "..1.0.tmp",
            ".index.1.x.tmp",
            ".index.1.0.tmp.x",
            "index.1.0.tmp",
        ] {
            assert!(!is_temp_file_name(name), "{name}");
        }
    }

    #[test]
    fn removing_a_missing_file_is_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        remove_file_durably(&dir.path().join("never-there")).expect("missing counts as removed");
    }
}
