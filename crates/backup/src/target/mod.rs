//! Where backups are stored: a local directory or S3-compatible object storage, behind one
//! [`Target`] trait so that `backup`, `verify` and `restore` never care which.
//!
//! # Keys
//! A key is a relative, '/'-separated path such as `contexts/default/events/active.events` or
//! `manifests/000003.json`. [`validate_key`] rejects a key that is empty, absolute, ends with '/',
//! has an empty, `.` or `..` component or one shaped like the local directory's temporary files
//! (`.<name>.<pid>.<n>.tmp`, and `.<name>.<16 hex digits>.tmp` from versions before
//! `myelin-fsutil`), or contains a backslash or an ASCII control character (NUL included). So a
//! key always names a place inside the target, and the same object on both kinds of target. A key
//! naming something that is not an object (a local directory) reads as absent.
//!
//! # Guarantees
//! * **Atomic visibility.** `put_file` and `put_bytes` replace an object as a whole: a reader of
//!   the key sees the previous object or the complete new one, never a partial one. Locally the
//!   bytes go to a temporary file beside the destination, which is renamed over it once complete
//!   (`myelin-fsutil`'s crash-safe write); on S3 a PUT, or a multipart upload above
//!   [`MULTIPART_THRESHOLD_BYTES`], becomes visible only when it completes (a failed multipart
//!   upload is aborted).
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
//!
//! The directory target is in `dir`, the S3 target in `s3`; this module holds what they share:
//! the trait, its errors, and the key rules.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

mod dir;
mod s3;

pub use dir::dir_target;
pub use s3::s3_target;

/// Files up to this size go to S3 in a single PUT; larger ones as a multipart upload.
pub const MULTIPART_THRESHOLD_BYTES: u64 = 64 * 1024 * 1024;
/// Size of each multipart part but the last (S3 requires at least 5 MiB).
pub const MULTIPART_PART_BYTES: usize = 16 * 1024 * 1024;
/// Reads from local files are done in pieces of this size.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

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
        _ if dir::is_temp_name(component) => {
            invalid("has a component named like a temporary file (.<name>.<pid>.<n>.tmp or .<name>.<hex>.tmp)")
        }
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
    if let Some(location) = spec.strip_prefix("s3://") {
        return s3::s3_target_from_env(spec, location);
    }
    if spec.contains("://") {
        return Err(TargetError::InvalidSpec {
            spec: spec.to_string(),
            reason: "unsupported scheme: use s3://bucket[/prefix] or a local directory".to_string(),
        });
    }
    dir_target(Path::new(spec))
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
            "a/.x.4242.0.tmp",
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
}
