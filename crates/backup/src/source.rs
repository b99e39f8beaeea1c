//! The server side of a backup: Axon's backup endpoints (which a real Axon Server answers too),
//! Myelin's lease and file endpoints when the server has them, and fetching a listed file —
//! by reading its path when this machine can (Axon's model), else over HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use myelin_format::segment::SegmentKind;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::manifest::hex;

/// Header carrying an access token (Axon's name).
const ACCESS_TOKEN_HEADER: &str = "AxonIQ-Access-Token";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server refused the credentials ({status}) for {url}: pass an admin token with --token")]
    Unauthorised { url: String, status: StatusCode },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url} answered something unexpected: {reason}")]
    Unexpected { url: String, reason: String },
    #[error("cannot copy {from}: {reason}")]
    Copy { from: String, reason: String },
    /// The bytes received are not the ones the server hashed: a log's active segment that Raft
    /// truncated while it was streamed, or damage on the way. Listing and fetching again helps
    /// in the first case.
    #[error("{url}: the received bytes do not match the server's digest (got {got}, server says {expected})")]
    DigestMismatch { url: String, got: String, expected: String },
    /// The server no longer serves a file it listed: an active segment that rolled since.
    #[error(
        "{url} is no longer served (the segment rolled since it was listed, or this is not a Myelin server: use --fetch local)"
    )]
    NotServed { url: String },
}

pub type Result<T> = std::result::Result<T, SourceError>;

/// How listed files are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchMode {
    /// Read the listed path when it exists here, else stream it.
    Auto,
    /// Always read the listed path (Axon's model; works against a real Axon Server).
    Local,
    /// Always stream over HTTP (Myelin only).
    Stream,
}

/// `/v1/backup/eventstore`'s answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventStoreListing {
    pub last_closed_segment: i64,
    pub filenames: Vec<String>,
}

/// A live lease.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub id: String,
    pub expires_at: i64,
}

/// A fetched file: where it was written locally, its size and SHA-256.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub size: u64,
    pub sha256: String,
}

/// The server a backup reads from.
#[derive(Debug, Clone)]
pub struct Server {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    mode: FetchMode,
}

pub fn type_name(kind: SegmentKind) -> &'static str {
    match kind {
        SegmentKind::Events => "EVENT",
        SegmentKind::Snapshots => "SNAPSHOT",
    }
}

impl Server {
    pub fn new(url: &str, token: Option<String>, mode: FetchMode) -> Result<Server> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SourceError::Unexpected {
                url: base,
                reason: "the server URL must start with http:// or https://".to_string(),
            });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SourceError::Unreachable {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Server {
            base,
            token,
            client,
            mode,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.header(ACCESS_TOKEN_HEADER, token),
            None => request,
        }
    }

    /// Sends, and turns transport failures and refusals into clear errors. `Ok(None)` for 404.
    async fn send(&self, request: reqwest::RequestBuilder, path: &str) -> Result<Option<reqwest::Response>> {
        let url = format!("{}{path}", self.base);
        let response = request.send().await.map_err(|e| SourceError::Unreachable {
            url: url.clone(),
            reason: without_url(&e),
        })?;
        match response.status() {
            status if status.is_success() => Ok(Some(response)),
            StatusCode::NOT_FOUND => Ok(None),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(SourceError::Unauthorised { url, status })
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(SourceError::Status {
                    url,
                    status,
                    body: body.chars().take(500).collect(),
                })
            }
        }
    }

    async fn json<T: for<'de> Deserialize<'de>>(&self, response: reqwest::Response, path: &str) -> Result<T> {
        response.json().await.map_err(|e| SourceError::Unexpected {
            url: format!("{}{path}", self.base),
            reason: without_url(&e),
        })
    }

    fn not_found(&self, path: &str) -> SourceError {
        SourceError::Unexpected {
            url: format!("{}{path}", self.base),
            reason: "404 Not Found".to_string(),
        }
    }

    /// The contexts the server serves (`/v1/public/context`).
    pub async fn contexts(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Context {
            context: String,
        }
        let path = "/v1/public/context";
        let response = self
            .send(self.request(Method::GET, path), path)
            .await?
            .ok_or_else(|| self.not_found(path))?;
        let contexts: Vec<Context> = self.json(response, path).await?;
        let mut names: Vec<String> = contexts
            .into_iter()
            .map(|c| c.context)
            .filter(|name| !name.starts_with('_'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The server's version and node name from `/v1/public/me`, when it says.
    pub async fn identity(&self) -> Result<(Option<String>, Option<String>)> {
        #[derive(Deserialize)]
        struct Me {
            version: Option<String>,
            name: Option<String>,
        }
        let path = "/v1/public/me";
        match self.send(self.request(Method::GET, path), path).await? {
            Some(response) => {
                let me: Me = self.json(response, path).await?;
                Ok((me.version, me.name))
            }
            None => Ok((None, None)),
        }
    }

    /// Takes a lease, or `None` when the server has no lease endpoint (Axon Server).
    pub async fn lease(&self, ttl_seconds: u64) -> Result<Option<Lease>> {
        let path = "/v1/backup/lease";
        let request = self
            .request(Method::POST, path)
            .json(&serde_json::json!({ "ttlSeconds": ttl_seconds }));
        match self.send(request, path).await? {
            Some(response) => Ok(Some(self.json(response, path).await?)),
            None => Ok(None),
        }
    }

    /// Renews a lease; `false` when the server no longer knows it.
    pub async fn renew(&self, id: &str, ttl_seconds: u64) -> Result<bool> {
        let path = format!("/v1/backup/lease/{id}");
        let request = self
            .request(Method::POST, &path)
            .json(&serde_json::json!({ "ttlSeconds": ttl_seconds }));
        Ok(self.send(request, &path).await?.is_some())
    }

    pub async fn release(&self, id: &str) -> Result<()> {
        let path = format!("/v1/backup/lease/{id}");
        self.send(self.request(Method::DELETE, &path), &path).await?;
        Ok(())
    }

    /// Takes the control-database backup; answers the zip's path on the server.
    pub async fn control_db_backup(&self) -> Result<String> {
        for path in ["/v1/backup/createControlDbBackup", "/createControlDbBackup"] {
            if let Some(response) = self.send(self.request(Method::POST, path), path).await? {
                let text = response.text().await.map_err(|e| SourceError::Unexpected {
                    url: format!("{}{path}", self.base),
                    reason: without_url(&e),
                })?;
                return Ok(text.trim().to_string());
            }
        }
        Err(self.not_found("/createControlDbBackup"))
    }

    /// A replication group's log-entry segments: closed ones newest first, then the active one
    /// (Myelin; Axon EE lists closed ones only). `[]` when the server has no such endpoint (SE)
    /// or does not know the name.
    pub async fn log_filenames(&self, context: &str) -> Result<Vec<String>> {
        let path = format!("/v1/backup/log/filenames?context={}", encode(context));
        match self.send(self.request(Method::GET, &path), &path).await? {
            Some(response) => self.json(response, &path).await,
            None => Ok(Vec::new()),
        }
    }

    pub async fn eventstore(&self, context: &str, kind: SegmentKind, marker: i64) -> Result<EventStoreListing> {
        let path = format!(
            "/v1/backup/eventstore?targetContext={}&type={}&lastClosedSegmentBackedUp={marker}",
            encode(context),
            type_name(kind)
        );
        let response = self
            .send(self.request(Method::GET, &path), &path)
            .await?
            .ok_or_else(|| self.not_found(&path))?;
        self.json(response, &path).await
    }

    /// Copies the listed file `listed` (a path on the server) of `context`/`kind` to `local`,
    /// returning its size and SHA-256. `control_db` marks the control-database zip.
    pub async fn fetch(&self, listed: &str, stream_path: &str, local: &Path) -> Result<Fetched> {
        let readable = Path::new(listed).is_file();
        match (self.mode, readable) {
            (FetchMode::Local, _) | (FetchMode::Auto, true) => copy_local(Path::new(listed), local).await,
            (FetchMode::Stream, _) | (FetchMode::Auto, false) => self.download(stream_path, local).await,
        }
    }

    /// Streams `path` from the server into `local`.
    async fn download(&self, path: &str, local: &Path) -> Result<Fetched> {
        let response =
            self.send(self.request(Method::GET, path), path)
                .await?
                .ok_or_else(|| SourceError::NotServed {
                    url: format!("{}{path}", self.base),
                })?;
        let expected = response
            .headers()
            .get("repr-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_repr_digest);
        let copy_error = |reason: String| SourceError::Copy {
            from: format!("{}{path}", self.base),
            reason,
        };
        let mut file = tokio::fs::File::create(local)
            .await
            .map_err(|e| copy_error(format!("cannot create {}: {e}", local.display())))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| copy_error(without_url(&e)))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| copy_error(format!("cannot write {}: {e}", local.display())))?;
        }
        // Not a crash-safe write, nor need it be: a staging file is scratch, read back and
        // uploaded by this run and deleted with the staging directory; after a crash nothing
        // reads it. The fsync is for this run: a failed write-back (EIO, ENOSPC) surfaces here,
        // before the file is uploaded under the digest taken from the stream.
        crate::fsync::sync_all(file)
            .await
            .map_err(|e| copy_error(format!("cannot sync {}: {e}", local.display())))?;
        let sha256 = hex(&hasher.finalize());
        if let Some(expected) = expected
            && expected != sha256
        {
            return Err(SourceError::DigestMismatch {
                url: format!("{}{path}", self.base),
                got: sha256,
                expected,
            });
        }
        Ok(Fetched { size, sha256 })
    }
}

/// Copies a file this machine can read, hashing it on the way.
async fn copy_local(from: &Path, to: &Path) -> Result<Fetched> {
    let (from, to): (PathBuf, PathBuf) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let error = |reason: String| SourceError::Copy {
            from: from.display().to_string(),
            reason,
        };
        let mut input = std::fs::File::open(&from).map_err(|e| error(e.to_string()))?;
        let mut output =
            std::fs::File::create(&to).map_err(|e| error(format!("cannot create {}: {e}", to.display())))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match input.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(error(e.to_string())),
            };
            hasher.update(&buffer[..n]);
            output
                .write_all(&buffer[..n])
                .map_err(|e| error(format!("cannot write {}: {e}", to.display())))?;
            size += n as u64;
        }
        // A staging file: synced for this run's sake, not renamed (see `download`).
        myelin_fsutil::sync_all(&output).map_err(|e| error(format!("cannot sync {}: {e}", to.display())))?;
        Ok(Fetched {
            size,
            sha256: hex(&hasher.finalize()),
        })
    })
    .await
    .map_err(|e| SourceError::Copy {
        from: "a local file".to_string(),
        reason: e.to_string(),
    })?
}

/// `sha-256=:<base64>:` → lower-case hex.
fn parse_repr_digest(value: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = value
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("sha-256=:"))?
        .strip_suffix(':')?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    Some(hex(&bytes))
}

/// Percent-encodes a query value or a path segment.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// reqwest's errors repeat the URL, which our messages already name.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_digest_parses() {
        // SHA-256 of "" in base64.
        let header = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";
        assert_eq!(
            parse_repr_digest(header).as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(parse_repr_digest("md5=:abc:"), None);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("a b&c"), "a%20b%26c");
        assert_eq!(encode("default"), "default");
    }
}
