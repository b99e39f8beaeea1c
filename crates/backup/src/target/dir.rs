//! The local directory target: an object is a file at its key's path below the root, written
//! through a temporary file and renamed into place (see the parent module for the guarantees).

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{
    ObjectInfo, READ_CHUNK_BYTES, Result, Target, TargetError, io_error, split_last_component, validate_key,
    validate_prefix,
};

/// Hex digits of the random part of a temporary file name.
const TEMP_RANDOM_DIGITS: usize = 16;
/// The name part of a temporary file is cut to this many bytes so that the temporary name stays
/// within the usual 255-byte limit of a file name.
const TEMP_NAME_PART_BYTES_MAX: usize = 200;
/// Attempts at finding an unused temporary name (a collision needs two equal 64-bit randoms).
const TEMP_CREATE_ATTEMPTS_MAX: u32 = 8;

/// Whether a file name is one of [`temp_name`]'s: `.<name>.<16 hex digits>.tmp`.
pub(super) fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|rest| rest.strip_suffix(".tmp")) else {
        return false;
    };
    let Some(dot) = rest.len().checked_sub(TEMP_RANDOM_DIGITS + 1) else {
        return false;
    };
    rest.as_bytes()[dot] == b'.' && rest.as_bytes()[dot + 1..].iter().all(u8::is_ascii_hexdigit)
}

/// A fresh temporary name for a file to be renamed to `name`.
fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // A random seed per call (RandomState is seeded from the OS) mixed with a process-wide
    // counter and the pid: distinct across threads, processes and runs without another crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let random = hasher.finish();
    let mut cut = name.len().min(TEMP_NAME_PART_BYTES_MAX);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let temp = format!(".{}.{random:0width$x}.tmp", &name[..cut], width = TEMP_RANDOM_DIGITS);
    debug_assert!(is_temp_name(&temp), "{temp}");
    temp
}

/// A local directory target at `path`, created (durably) if missing.
pub fn dir_target(path: &Path) -> Result<Box<dyn Target>> {
    let root = std::path::absolute(path).map_err(io_error("resolve", path))?;
    match fs::metadata(&root) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(TargetError::InvalidSpec {
                spec: path.display().to_string(),
                reason: "exists and is not a directory".to_string(),
            });
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => create_dirs_durably(&root)?,
        Err(error) => return Err(io_error("inspect", &root)(error)),
    }
    Ok(Box::new(DirTarget { root }))
}

#[derive(Debug)]
struct DirTarget {
    root: PathBuf,
}

impl DirTarget {
    fn path_of(&self, key: &str) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(key.split('/'));
        path
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => Err(TargetError::Io {
                    op: "access",
                    path: self.root.clone(),
                    source: io::Error::other(error),
                }),
            },
        }
    }

    async fn put_with(
        &self,
        key: &str,
        fill: impl FnOnce(&mut File, &Path) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        validate_key(key)?;
        let destination = self.path_of(key);
        self.blocking(move || write_atomically(&destination, fill)).await
    }
}

#[async_trait::async_trait]
impl Target for DirTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn put_file(&self, key: &str, local: &Path) -> Result<()> {
        let local = local.to_path_buf();
        self.put_with(key, move |temp, temp_path| {
            let mut source = File::open(&local).map_err(io_error("open", &local))?;
            copy(&mut source, &local, temp, temp_path)?;
            Ok(())
        })
        .await
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_with(key, move |temp, temp_path| {
            temp.write_all(&bytes).map_err(io_error("write", temp_path))
        })
        .await
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        validate_key(key)?;
        let path = self.path_of(key);
        self.blocking(move || {
            let Some((mut file, _)) = open_object(&path)? else {
                return Ok(None);
            };
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io_error("read", &path))?;
            Ok(Some(Bytes::from(bytes)))
        })
        .await
    }

    async fn get_to_file(&self, key: &str, local: &Path) -> Result<u64> {
        validate_key(key)?;
        let path = self.path_of(key);
        let local = local.to_path_buf();
        let (target, key) = (self.describe(), key.to_string());
        self.blocking(move || {
            let Some((mut source, metadata)) = open_object(&path)? else {
                return Err(TargetError::NotFound { target, key });
            };
            // Creating `local` truncates it: if it is the object's own file, that would destroy it.
            if fs::metadata(&local).is_ok_and(|existing| is_same_file(&existing, &metadata)) {
                let source = io::Error::new(io::ErrorKind::InvalidInput, format!("is the file of object {key:?}"));
                return Err(TargetError::Io {
                    op: "download to",
                    path: local,
                    source,
                });
            }
            let mut destination = File::create(&local).map_err(io_error("create", &local))?;
            let size_bytes = copy(&mut source, &path, &mut destination, &local)?;
            destination.sync_all().map_err(io_error("fsync", &local))?;
            Ok(size_bytes)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_string();
        self.blocking(move || list_dir(&root, &prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let path = self.path_of(key);
        self.blocking(move || {
            match fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_dir() => return Ok(false),
                Ok(_) => {}
                Err(error) if is_absent(&error) => return Ok(false),
                Err(error) => return Err(io_error("inspect", &path)(error)),
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if is_absent(&error) => return Ok(false),
                Err(error) => return Err(io_error("delete", &path)(error)),
            }
            sync_parent(&path)?;
            Ok(true)
        })
        .await
    }
}

/// NotFound, or ENOTDIR: a component of the path is a file, so nothing is there either.
fn is_absent(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// Opens the file of an object; `None` when nothing (or a directory) is there.
fn open_object(path: &Path) -> Result<Option<(File, fs::Metadata)>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if is_absent(&error) => return Ok(None),
        Err(error) => return Err(io_error("open", path)(error)),
    };
    let metadata = file.metadata().map_err(io_error("inspect", path))?;
    Ok(metadata.is_file().then_some((file, metadata)))
}

fn is_same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn copy(source: &mut File, source_path: &Path, destination: &mut File, destination_path: &Path) -> Result<u64> {
    // Not io::copy: an error must name the file that failed, source or destination.
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut copied_bytes = 0u64;
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => return Ok(copied_bytes),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error("read", source_path)(error)),
        };
        destination
            .write_all(&buffer[..read])
            .map_err(io_error("write", destination_path))?;
        copied_bytes += read as u64;
    }
}

/// Removes a temporary file unless disarmed (on success it was renamed away).
struct TempFileGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TempFileGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(error) = fs::remove_file(self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "could not remove a temporary file");
        }
    }
}

/// Writes `destination` through a temporary file in its directory: fill, fsync, rename, fsync
/// the directory. Parent directories are created durably first.
fn write_atomically(destination: &Path, fill: impl FnOnce(&mut File, &Path) -> Result<()>) -> Result<()> {
    let (Some(directory), Some(name)) = (destination.parent(), destination.file_name().and_then(|n| n.to_str())) else {
        // Unreachable for a validated key below an absolute root; an error all the same.
        let source = io::Error::new(io::ErrorKind::InvalidInput, "no parent directory or file name");
        return Err(TargetError::Io {
            op: "write",
            path: destination.to_path_buf(),
            source,
        });
    };
    create_dirs_durably(directory)?;
    let (temp_path, mut temp) = create_temp(directory, name)?;
    let mut guard = TempFileGuard {
        path: &temp_path,
        armed: true,
    };
    fill(&mut temp, &temp_path)?;
    temp.sync_all().map_err(io_error("fsync", &temp_path))?;
    drop(temp);
    fs::rename(&temp_path, destination).map_err(io_error("rename into place", destination))?;
    guard.armed = false;
    sync_dir(directory)
}

fn create_temp(directory: &Path, name: &str) -> Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let path = directory.join(temp_name(name));
        match File::options().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < TEMP_CREATE_ATTEMPTS_MAX => {
                attempts += 1;
            }
            Err(error) => return Err(io_error("create", &path)(error)),
        }
    }
}

/// `mkdir -p`, then fsync every created directory's entry in its parent.
fn create_dirs_durably(directory: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut existing = directory;
    while !existing.is_dir() {
        missing.push(existing);
        existing = existing.parent().ok_or_else(|| TargetError::Io {
            op: "create directory",
            path: directory.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no existing ancestor"),
        })?;
    }
    for created in missing.iter().rev() {
        match fs::create_dir(created) {
            Ok(()) => {}
            // Another put created it meanwhile; fsyncing its parent again is harmless.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => {}
            Err(error) => return Err(io_error("create directory", created)(error)),
        }
        sync_parent(created)?;
    }
    Ok(())
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn sync_dir(directory: &Path) -> Result<()> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("fsync directory", directory))
}

/// Walks the directory named by the prefix's complete components; skips temporary files,
/// symbolic links and names that are not valid keys (never listed, so every listed key works with
/// the other methods).
fn list_dir(root: &Path, prefix: &str) -> Result<Vec<ObjectInfo>> {
    let mut objects = Vec::new();
    let start_key = match split_last_component(prefix) {
        (Some(directories), _) => format!("{directories}/"),
        (None, _) => String::new(),
    };
    let mut pending = vec![start_key];
    while let Some(directory_key) = pending.pop() {
        let mut directory = root.to_path_buf();
        directory.extend(directory_key.split('/').filter(|component| !component.is_empty()));
        let entries = match fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if is_absent(&error) => continue,
            Err(error) => return Err(io_error("list", &directory)(error)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("list", &directory))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            let key = format!("{directory_key}{name}");
            if is_temp_name(&name) || validate_key(&key).is_err() {
                continue;
            }
            let file_type = entry.file_type().map_err(io_error("inspect", &entry.path()))?;
            if file_type.is_dir() {
                let directory_prefix = format!("{key}/");
                // Descend only where keys can still match the prefix.
                if directory_prefix.starts_with(prefix) || prefix.starts_with(&directory_prefix) {
                    pending.push(directory_prefix);
                }
            } else if file_type.is_file() && key.starts_with(prefix) {
                let metadata = match entry.metadata() {
                    Ok(metadata) => metadata,
                    // Deleted or replaced while listing: a rename leaves the new file to a later
                    // listing, a delete leaves nothing.
                    Err(error) if is_absent(&error) => continue,
                    Err(error) => return Err(io_error("inspect", &entry.path())(error)),
                };
                objects.push(ObjectInfo {
                    key,
                    size: metadata.len(),
                });
            }
        }
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_unique() {
        let first = temp_name("00000000000000000000.events");
        let second = temp_name("00000000000000000000.events");
        assert_ne!(first, second);
        assert!(is_temp_name(&first) && is_temp_name(&second));
        assert!(is_temp_name(&temp_name(&"é".repeat(200))));
        for name in [
            "x.tmp",
            ".x.tmp",
            ".x.0123456789abcdeg.tmp",
            "x.0123456789abcdef.tmp",
            ".0123456789abcdef.tmp",
        ] {
            assert!(!is_temp_name(name), "{name}");
        }
    }
}
