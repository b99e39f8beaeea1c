//! The S3 target: objects in a bucket of AWS S3 or an S3-compatible server, below an optional
//! prefix; large files go up as multipart uploads (see the parent module for the guarantees).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    MULTIPART_PART_BYTES, MULTIPART_THRESHOLD_BYTES, ObjectInfo, READ_CHUNK_BYTES, Result, Target, TargetError,
    io_error, split_last_component, validate_key, validate_prefix,
};

/// Parts in flight at once during a multipart upload: with the part being filled, this bounds an
/// upload's memory at `(MULTIPART_PARTS_IN_FLIGHT_MAX + 1) * MULTIPART_PART_BYTES`.
const MULTIPART_PARTS_IN_FLIGHT_MAX: usize = 2;

/// The S3 target of `s3://<location>` (`location` is `bucket[/prefix]`), configured from the
/// environment as [`open_target`](super::open_target) describes.
pub(super) fn s3_target_from_env(spec: &str, location: &str) -> Result<Box<dyn Target>> {
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let prefix = check_s3_location(spec, bucket, prefix)?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    if endpoint.is_some_and(|endpoint| endpoint.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    build_s3(spec, builder, bucket, prefix)
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
        // Not an atomic write: the trait promises a plain download into `local`, which the
        // callers that need atomicity (restore) give as their own temporary file.
        crate::fsync::sync_all(file).await.map_err(io_error("fsync", local))?;
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
