//! Where backups are stored: a local directory or S3-compatible object storage, behind one
//! [`Target`] trait so that `backup`, `verify` and `restore` never care which.
//!
//! # Keys
//! A key is a relative, '/'-separated path such as `contexts/default/events/active.events` or
//! `manifests/000003.json`. [`validate_key`] rejects a key that is empty, absolute, ends with '/',
//! has an empty, `.` or `..` component or one shaped like the local directory's temporary files
//! (`.<name>.<16 hex digits>.tmp`), or contains a backslash or an ASCII control character (NUL
//! included). So a key always names a place inside the target, and the same object on both kinds
//! of target. A key naming something that is not an object (a local directory) reads as absent.
//!
//! # Guarantees
//! * **Atomic visibility.** `put_file` and `put_bytes` replace an object as a whole: a reader of
//!   the key sees the previous object or the complete new one, never a partial one. Locally the
//!   bytes go to a temporary file beside the destination, which is renamed over it once complete;
//!   on S3 a PUT, or a multipart upload above [`MULTIPART_THRESHOLD_BYTES`], becomes visible only
//!   when it completes (a failed multipart upload is aborted).
//! * **Durability (local directory).** When a put returns, the file's bytes are fsynced, the
//!   rename is fsynced in its directory, and every directory the put created is fsynced in its
//!   parent: the object survives a power loss. `delete` fsyncs the directory too. A failed fsync
//!   is reported, never retried (the kernel may already have dropped the dirty pages). On S3,
//!   durability is the service's once a request succeeds.
//! * **No debris.** A failed local put removes its temporary file; temporary files left by a
//!   crash are never listed. `get_to_file` creates the local file only once the object was found.
//! * **Bounded memory.** Files travel in bounded pieces: `put_file` reads at most
//!   [`MULTIPART_THRESHOLD_BYTES`] into memory for a single PUT and streams larger files in
//!   [`MULTIPART_PART_BYTES`] parts; `get_to_file` streams. Only `put_bytes` and `get_bytes`
//!   hold a whole object (they are for manifests).
//!
//! One difference remains: S3 holds objects `a` and `a/b` side by side, a directory cannot (the
//! second put fails). The backup layout never needs both.

use std::fmt;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Files up to this size go to S3 in a single PUT; larger ones as a multipart upload.
pub const MULTIPART_THRESHOLD_BYTES: u64 = 64 * 1024 * 1024;
/// Size of each multipart part but the last (S3 requires at least 5 MiB).
pub const MULTIPART_PART_BYTES: usize = 16 * 1024 * 1024;
/// Parts in flight at once during a multipart upload: with the part being filled, this bounds an
/// upload's memory at `(MULTIPART_PARTS_IN_FLIGHT_MAX + 1) * MULTIPART_PART_BYTES`.
const MULTIPART_PARTS_IN_FLIGHT_MAX: usize = 2;
/// Reads from local files are done in pieces of this size.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Hex digits of the random part of a temporary file name.
const TEMP_RANDOM_DIGITS: usize = 16;
/// The name part of a temporary file is cut to this many bytes so that the temporary name stays
/// within the usual 255-byte limit of a file name.
const TEMP_NAME_PART_BYTES_MAX: usize = 200;
/// Attempts at finding an unused temporary name (a collision needs two equal 64-bit randoms).
const TEMP_CREATE_ATTEMPTS_MAX: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{key:?} not found in backup target {target}")]
    NotFound { target: String, key: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} {key:?} in backup target {target}: {source}")]
    ObjectStore {
        op: &'static str,
        target: String,
        key: String,
        /// Boxed: object_store's error is large, and every `Result` of this module would carry it.
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("invalid backup target {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
}

pub type Result<T> = std::result::Result<T, TargetError>;

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TargetError + 'a {
    move |source| TargetError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An object in a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

#[async_trait::async_trait]
pub trait Target: Send + Sync + fmt::Debug {
    /// Human-readable location, e.g. "/backups/prod" or "s3://bucket/prefix".
    fn describe(&self) -> String;
    /// Stores the local file under `key`, replacing any object there, atomically (see the module
    /// documentation).
    async fn put_file(&self, key: &str, local: &Path) -> Result<()>;
    /// Stores `bytes` under `key`, replacing any object there, atomically.
    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<()>;
    /// The whole object, or `None` when absent.
    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>>;
    /// Streams the object into `local` (created or truncated) and fsyncs it; answers its size.
    /// [`TargetError::NotFound`] when absent, and then `local` is left untouched.
    async fn get_to_file(&self, key: &str, local: &Path) -> Result<u64>;
    /// Every object whose key starts with `prefix` (a plain string prefix; "" lists all), sorted
    /// by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes the object; `false` when it was absent.
    async fn delete(&self, key: &str) -> Result<bool>;
}

/// Checks the rules of the module documentation; every [`Target`] method calls it first.
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |reason| {
        Err(TargetError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.starts_with('/') {
        return invalid("absolute (starts with '/'); keys are relative to the target");
    }
    if key.ends_with('/') {
        return invalid("ends with '/'; a key names an object, not a directory");
    }
    validate_characters(key)?;
    for component in key.split('/') {
        validate_component(key, component)?;
    }
    Ok(())
}

/// A list prefix follows the key rules, except that it may be empty, end with '/', or end with a
/// partial component (which is only compared as a string).
fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let invalid = |reason| {
        Err(TargetError::InvalidKey {
            key: prefix.to_string(),
            reason,
        })
    };
    if prefix.starts_with('/') {
        return invalid("absolute (starts with '/'); prefixes are relative to the target");
    }
    validate_characters(prefix)?;
    let (directories, last) = split_last_component(prefix);
    if let Some(directories) = directories {
        for component in directories.split('/') {
            validate_component(prefix, component)?;
        }
    }
    if last == ".." {
        return invalid("has a '..' component");
    }
    Ok(())
}

fn validate_characters(key: &str) -> Result<()> {
    let invalid = |reason| {
        Err(TargetError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.contains('\\') {
        return invalid("contains a backslash; components are separated by '/'");
    }
    if key.contains('\0') {
        return invalid("contains a NUL character");
    }
    if key.chars().any(|c| c.is_ascii_control()) {
        return invalid("contains a control character");
    }
    Ok(())
}

fn validate_component(key: &str, component: &str) -> Result<()> {
    let invalid = |reason| {
        Err(TargetError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    match component {
        "" => invalid("has an empty component ('//')"),
        "." => invalid("has a '.' component"),
        ".." => invalid("has a '..' component"),
        _ if is_temp_name(component) => invalid("has a component named like a temporary file (.<name>.<hex>.tmp)"),
        _ => Ok(()),
    }
}

/// `("a/b", "c")` for "a/b/c", `(None, "c")` for "c", `(Some("a"), "")` for "a/".
fn split_last_component(path: &str) -> (Option<&str>, &str) {
    match path.rfind('/') {
        Some(slash) => (Some(&path[..slash]), &path[slash + 1..]),
        None => (None, path),
    }
}

/// Whether a file name is one of [`temp_name`]'s: `.<name>.<16 hex digits>.tmp`.
fn is_temp_name(name: &str) -> bool {
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

/// Opens a target from what the user typed: `s3://bucket[/prefix]` is S3, configured from the
/// usual environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for S3-compatible servers, plain http allowed when
/// that URL is `http://`); any other spec without "://" is a local directory, created if missing.
pub fn open_target(spec: &str) -> Result<Box<dyn Target>> {
    if spec.is_empty() {
        return Err(TargetError::InvalidSpec {
            spec: spec.to_string(),
            reason: "empty".to_string(),
        });
    }
    if let Some(rest) = spec.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = check_s3_location(spec, bucket, prefix)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if endpoint.is_some_and(|endpoint| endpoint.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        return build_s3(spec, builder, bucket, prefix);
    }
    if spec.contains("://") {
        return Err(TargetError::InvalidSpec {
            spec: spec.to_string(),
            reason: "unsupported scheme: use s3://bucket[/prefix] or a local directory".to_string(),
        });
    }
    dir_target(Path::new(spec))
}

/// Checks a bucket name and a prefix; answers the prefix without its trailing '/'.
fn check_s3_location<'a>(spec: &str, bucket: &str, prefix: &'a str) -> Result<&'a str> {
    let invalid = |reason: &str| {
        Err(TargetError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        })
    };
    if bucket.is_empty() {
        return invalid("no bucket: use s3://bucket[/prefix]");
    }
    // AWS's rules are stricter (lowercase only for new buckets); this keeps out what cannot be a
    // bucket on any S3-compatible service, such as '/', ':', '@' or spaces.
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return invalid("a bucket name has only letters, digits, '-', '.' and '_'");
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if !prefix.is_empty()
        && let Err(error) = validate_key(prefix)
    {
        return invalid(&format!("bad prefix: {error}"));
    }
    Ok(prefix)
}

/// An S3 target with explicit settings (tests, explicit configuration). `endpoint` is the URL of
/// an S3-compatible server (path-style requests; `http://` allowed), `None` for AWS itself.
pub fn s3_target(
    bucket: &str,
    prefix: &str,
    endpoint: Option<&str>,
    region: &str,
    access_key: &str,
    secret_key: &str,
) -> Result<Box<dyn Target>> {
    let spec = format!("s3://{bucket}/{prefix}");
    let prefix = check_s3_location(&spec, bucket, prefix)?;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_access_key_id(access_key)
        .with_secret_access_key(secret_key);
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    build_s3(&spec, builder, bucket, prefix)
}

fn build_s3(spec: &str, builder: AmazonS3Builder, bucket: &str, prefix: &str) -> Result<Box<dyn Target>> {
    let store = builder.build().map_err(|error| TargetError::InvalidSpec {
        spec: spec.to_string(),
        reason: error.to_string(),
    })?;
    Ok(Box::new(S3Target {
        store: Arc::new(store),
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    }))
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

// --- local directory ---------------------------------------------------------------------------

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

// --- S3 ----------------------------------------------------------------------------------------

struct S3Target {
    store: Arc<AmazonS3>,
    bucket: String,
    /// No leading or trailing '/'; empty for the whole bucket.
    prefix: String,
}

impl fmt::Debug for S3Target {
    // Not derived: the store's configuration holds the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target").field("location", &self.describe()).finish()
    }
}

impl S3Target {
    fn path_of(&self, key: &str) -> Result<ObjectPath> {
        validate_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|_| TargetError::InvalidKey {
            key: key.to_string(),
            reason: "not a valid object path",
        })
    }

    /// The key of an object of this target, `None` for one outside the prefix.
    fn key_of<'a>(&self, location: &'a ObjectPath) -> Option<&'a str> {
        let full = location.as_ref();
        if self.prefix.is_empty() {
            return Some(full);
        }
        full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }

    fn error(&self, op: &'static str, key: &str) -> impl FnOnce(object_store::Error) -> TargetError + '_ {
        let key = key.to_string();
        move |source| match source {
            object_store::Error::NotFound { .. } => TargetError::NotFound {
                target: self.describe(),
                key,
            },
            source => TargetError::ObjectStore {
                op,
                target: self.describe(),
                key,
                source: Box::new(source),
            },
        }
    }

    async fn put_multipart(&self, key: &str, path: &ObjectPath, local: &Path, file: tokio::fs::File) -> Result<()> {
        let expected_bytes = file.metadata().await.map_err(io_error("inspect", local))?.len();
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(self.error("start upload of", key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
        match self.feed(&mut writer, key, local, file, expected_bytes).await {
            Ok(()) => writer
                .finish()
                .await
                .map(drop)
                .map_err(self.error("complete upload of", key)),
            Err(error) => {
                // Parts already sent are billed until aborted; a failed abort is only logged
                // since the upload never completes either way (a lifecycle rule cleans it).
                if let Err(abort_error) = writer.abort().await {
                    tracing::warn!(key, %abort_error, "could not abort a failed multipart upload");
                }
                Err(error)
            }
        }
    }

    /// Sends the file's bytes to the upload, at most [`MULTIPART_PARTS_IN_FLIGHT_MAX`] parts at once.
    async fn feed(
        &self,
        writer: &mut WriteMultipart,
        key: &str,
        local: &Path,
        mut file: tokio::fs::File,
        expected_bytes: u64,
    ) -> Result<()> {
        let mut buffer = vec![0u8; READ_CHUNK_BYTES];
        let mut sent_bytes = 0u64;
        loop {
            let read = file.read(&mut buffer).await.map_err(io_error("read", local))?;
            if read == 0 {
                break;
            }
            writer
                .wait_for_capacity(MULTIPART_PARTS_IN_FLIGHT_MAX)
                .await
                .map_err(self.error("upload part of", key))?;
            writer.write(&buffer[..read]);
            sent_bytes += read as u64;
        }
        if sent_bytes != expected_bytes {
            return Err(changed_during_upload(local, expected_bytes, sent_bytes));
        }
        Ok(())
    }
}

fn changed_during_upload(local: &Path, expected_bytes: u64, read_bytes: u64) -> TargetError {
    TargetError::Io {
        op: "upload",
        path: local.to_path_buf(),
        source: io::Error::other(format!(
            "the file changed during the upload ({expected_bytes} bytes at the start, {read_bytes} read)"
        )),
    }
}

#[async_trait::async_trait]
impl Target for S3Target {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn put_file(&self, key: &str, local: &Path) -> Result<()> {
        let path = self.path_of(key)?;
        let mut file = tokio::fs::File::open(local).await.map_err(io_error("open", local))?;
        let size_bytes = file.metadata().await.map_err(io_error("inspect", local))?.len();
        if size_bytes > MULTIPART_THRESHOLD_BYTES {
            return self.put_multipart(key, &path, local, file).await;
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size_bytes).unwrap_or(0));
        // `take` keeps memory bounded should the file grow meanwhile.
        (&mut file)
            .take(size_bytes + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(io_error("read", local))?;
        if bytes.len() as u64 != size_bytes {
            return Err(changed_during_upload(local, size_bytes, bytes.len() as u64));
        }
        self.store
            .put(&path, Bytes::from(bytes).into())
            .await
            .map(drop)
            .map_err(self.error("upload", key))
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        self.store
            .put(&path, bytes.into())
            .await
            .map(drop)
            .map_err(self.error("upload", key))
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path_of(key)?;
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.error("download", key)(error)),
        };
        result.bytes().await.map(Some).map_err(self.error("download", key))
    }

    async fn get_to_file(&self, key: &str, local: &Path) -> Result<u64> {
        let path = self.path_of(key)?;
        let result = self.store.get(&path).await.map_err(self.error("download", key))?;
        let expected_bytes = result.meta.size;
        let mut file = tokio::fs::File::create(local)
            .await
            .map_err(io_error("create", local))?;
        let mut stream = result.into_stream();
        let mut written_bytes = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(self.error("download", key))? {
            file.write_all(&chunk).await.map_err(io_error("write", local))?;
            written_bytes += chunk.len() as u64;
        }
        if written_bytes != expected_bytes {
            return Err(TargetError::ObjectStore {
                op: "download",
                target: self.describe(),
                key: key.to_string(),
                source: Box::new(object_store::Error::Generic {
                    store: "S3",
                    source: format!("received {written_bytes} bytes of an object of {expected_bytes}").into(),
                }),
            });
        }
        file.sync_all().await.map_err(io_error("fsync", local))?;
        Ok(written_bytes)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        validate_prefix(prefix)?;
        // object_store lists by whole components: list the directory of the prefix's complete
        // components, then compare the last, partial one as a string.
        let directory = match split_last_component(prefix) {
            (Some(directories), _) if self.prefix.is_empty() => directories.to_string(),
            (Some(directories), _) => format!("{}/{directories}", self.prefix),
            (None, _) => self.prefix.clone(),
        };
        let directory = (!directory.is_empty())
            .then(|| ObjectPath::parse(&directory))
            .transpose()
            .map_err(|_| TargetError::InvalidKey {
                key: prefix.to_string(),
                reason: "not a valid object path",
            })?;
        let metas: Vec<_> = self
            .store
            .list(directory.as_ref())
            .try_collect()
            .await
            .map_err(self.error("list", prefix))?;
        let mut objects: Vec<_> = metas
            .iter()
            .filter_map(|meta| {
                let key = self.key_of(&meta.location)?;
                (key.starts_with(prefix) && validate_key(key).is_ok()).then(|| ObjectInfo {
                    key: key.to_string(),
                    size: meta.size,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let path = self.path_of(key)?;
        // S3 answers a DELETE of a missing key with success: ask first. Two concurrent deletes
        // may both answer true; nothing here relies on the answer being exclusive.
        match self.store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(error) => return Err(self.error("inspect", key)(error)),
        }
        self.store.delete(&path).await.map_err(self.error("delete", key))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for key in [
            "a",
            "a/b",
            "contexts/default/events/00000000000000000000.events",
            ".keep",
            "a/..b",
            "a b",
        ] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
        for key in [
            "",
            "/a",
            "a/",
            "a//b",
            "./a",
            "a/./b",
            "../a",
            "a/..",
            "a\\b",
            "a\0b",
            "a\nb",
            ".x.0123456789abcdef.tmp",
        ] {
            assert!(
                matches!(validate_key(key), Err(TargetError::InvalidKey { .. })),
                "{key:?}"
            );
        }
    }

    #[test]
    fn prefixes() {
        for prefix in ["", "a", "a/", "a/b", "contexts/def", "a/."] {
            assert!(validate_prefix(prefix).is_ok(), "{prefix}");
        }
        for prefix in ["/", "/a", "a//", "../", "a/..", "./a", "a\\b"] {
            assert!(validate_prefix(prefix).is_err(), "{prefix:?}");
        }
    }

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

    #[test]
    fn s3_locations() {
        assert_eq!(check_s3_location("s", "b", "").ok(), Some(""));
        assert_eq!(check_s3_location("s", "b", "p/q/").ok(), Some("p/q"));
        assert_eq!(check_s3_location("s", "Legacy_Bucket.1", "p").ok(), Some("p"));
        for (bucket, prefix) in [
            ("", "p"),
            ("b/c", ""),
            ("b c", ""),
            ("u@b", ""),
            ("b", "/p"),
            ("b", "../x"),
            ("b", "p//q"),
        ] {
            assert!(
                matches!(
                    check_s3_location("s", bucket, prefix),
                    Err(TargetError::InvalidSpec { .. })
                ),
                "{bucket:?} {prefix:?}"
            );
        }
    }
}
