//! The local directory target: an object is a file at its key's path below the root, written
//! through `myelin-fsutil`'s temporary file, fsync, rename and directory fsync (see the parent
//! module for the guarantees).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use myelin_fsutil::AtomicFile;

use super::{
    ObjectInfo, READ_CHUNK_BYTES, Result, Target, TargetError, io_error, split_last_component, validate_key,
    validate_prefix,
};

/// Hex digits of the random part of the temporary names used before `myelin-fsutil`.
const LEGACY_TEMP_RANDOM_DIGITS: usize = 16;

/// Whether a file name is a put's temporary file, never an object: `myelin-fsutil`'s
/// `.<name>.<pid>.<n>.tmp`, or `.<name>.<16 hex digits>.tmp`, the name versions before it used,
/// which a crash of such a version may have left in a target.
pub(super) fn is_temp_name(name: &str) -> bool {
    myelin_fsutil::is_temp_file_name(name) || is_legacy_temp_name(name)
}

fn is_legacy_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|rest| rest.strip_suffix(".tmp")) else {
        return false;
    };
    let Some(dot) = rest.len().checked_sub(LEGACY_TEMP_RANDOM_DIGITS + 1) else {
        return false;
    };
    rest.as_bytes()[dot] == b'.' && rest.as_bytes()[dot + 1..].iter().all(u8::is_ascii_hexdigit)
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
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            myelin_fsutil::create_dir_all_durably(&root).map_err(io_error("create directory", &root))?;
        }
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
        fill: impl FnOnce(&mut AtomicFile, &Path) -> Result<()> + Send + 'static,
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
            // Not an atomic write: the trait promises a plain download into `local`, which the
            // callers that need atomicity (restore) give as their own temporary file.
            let mut destination = File::create(&local).map_err(io_error("create", &local))?;
            let size_bytes = copy(&mut source, &path, &mut destination, &local)?;
            myelin_fsutil::sync_all(&destination).map_err(io_error("fsync", &local))?;
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
            let directory = myelin_fsutil::parent(&path);
            myelin_fsutil::sync_dir(directory).map_err(io_error("fsync directory", directory))?;
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

fn copy(source: &mut File, source_path: &Path, destination: &mut impl Write, destination_path: &Path) -> Result<u64> {
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

/// Writes `destination` through `myelin-fsutil`'s temporary file in its directory: fill, fsync,
/// rename, fsync the directory. Parent directories are created durably first. A failure removes
/// the temporary file and leaves the old object.
fn write_atomically(destination: &Path, fill: impl FnOnce(&mut AtomicFile, &Path) -> Result<()>) -> Result<()> {
    let directory = myelin_fsutil::parent(destination);
    myelin_fsutil::create_dir_all_durably(directory).map_err(io_error("create directory", directory))?;
    let mut temp = AtomicFile::create(destination).map_err(io_error("create a temporary file for", destination))?;
    let temp_path = temp.temp_path().to_path_buf();
    fill(&mut temp, &temp_path)?;
    // One error for the three steps: fsutil does not say which failed, and the remedy (look at
    // the disk holding the target) is the same for each.
    temp.commit()
        .map_err(io_error("fsync and rename into place", destination))
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

    /// The name of the temporary file a put of `name` writes.
    fn temp_name_of_a_put(dir: &Path, name: &str) -> String {
        let temp = AtomicFile::create(&dir.join(name)).expect("temporary file");
        let temp_name = temp
            .temp_path()
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string);
        temp_name.expect("a UTF-8 temporary name")
    }

    #[test]
    fn temp_names_are_recognised_and_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = temp_name_of_a_put(dir.path(), "00000000000000000000.events");
        let second = temp_name_of_a_put(dir.path(), "00000000000000000000.events");
        assert_ne!(first, second);
        assert!(is_temp_name(&first) && is_temp_name(&second));
        // The longest UTF-8 name a file system takes (254 bytes) still gets a recognised one.
        assert!(is_temp_name(&temp_name_of_a_put(dir.path(), &"é".repeat(127))));
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

    #[test]
    fn temp_names_left_by_versions_before_fsutil_are_still_recognised() {
        assert!(is_temp_name(".00000000000000000000.events.0123456789abcdef.tmp"));
        assert!(is_temp_name(".x.0123456789ABCDEF.tmp"));
    }

    #[tokio::test]
    async fn temporary_files_of_either_shape_are_never_listed_but_a_tmp_object_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir_target(dir.path()).expect("dir target");
        target
            .put_bytes("a/object.tmp", Bytes::from_static(b"mine"))
            .await
            .expect("an object whose name merely ends in .tmp");
        // What a crash in the middle of a put leaves, today and before fsutil.
        std::fs::write(dir.path().join("a/.object.4242.7.tmp"), b"partial").expect("write");
        std::fs::write(dir.path().join("a/.object.0123456789abcdef.tmp"), b"partial").expect("write");
        let listed = target.list("").await.expect("list");
        let keys: Vec<_> = listed.iter().map(|object| object.key.as_str()).collect();
        assert_eq!(keys, ["a/object.tmp"]);
    }
}
