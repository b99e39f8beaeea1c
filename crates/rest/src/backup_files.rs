//! `GET /v1/backup/files/{context}/{type}/{file}`: the bytes of a file the backup listing
//! answers, for a backup tool that cannot read the server's disks (docs/BACKUP.md, "Where
//! bytes come from").
//!
//! * Only a name the listing would answer right now is served: a closed segment's data, index
//!   or bloom file, or the active segment's data file. The name is compared with the listed
//!   paths' file names and the listed path is opened; no path is ever built from the request,
//!   so nothing outside the data directories (nor an unlisted file inside them) can be named.
//! * Closed files never change: they honour one `Range`, and their SHA-256 (`Repr-Digest`,
//!   RFC 9530, always of the whole file) is computed once and cached.
//! * The active segment is served up to its last committed, synced transaction at the time of
//!   the request — whole transactions only, bytes that never change again — with the digest of
//!   exactly that prefix. It ignores `Range` (answering the whole prefix with 200 and
//!   `Accept-Ranges: none`): two requests may see different lengths, so a range of one would
//!   not continue the other.
//!
//! `GET /v1/backup/files/log/{group}/{file}` does the same for a cluster node's log-entry
//! segments (CLUSTER.md §10.7): only a file `/v1/backup/log/filenames` lists right now; closed
//! ones whole or in a range, the active one up to its last synced entry.
//!
//! Bodies are streamed in chunks from an open file; nothing is loaded whole into memory.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use myelin_store::{ActiveSegmentFile, ContextStore, SegmentKind};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use crate::SharedState;
use crate::backup::{parse_segment_type, type_name};
use crate::error::{ErrorBody, RestError, blocking};
use crate::extract::Path;

/// RFC 9530's header carrying the digest of the whole representation.
pub const REPR_DIGEST_HEADER: &str = "repr-digest";
/// Present (`true`) on answers that serve the active segment's committed prefix.
pub const ACTIVE_SEGMENT_HEADER: &str = "x-myelin-active-segment";

/// Bytes read from disk per chunk, both to hash and to send.
const CHUNK_BYTES: usize = 64 * 1024;
/// Digests of closed files remembered (about 150 bytes each).
const DIGESTS_MAX: usize = 8192;

/// A listed file a request may name.
#[derive(Debug)]
enum Listed {
    Closed(PathBuf),
    Active(ActiveSegmentFile),
}

/// The listed file of `kind` named `name`, if the listing would answer it now.
fn find_listed(store: &ContextStore, kind: SegmentKind, name: &str) -> Option<Listed> {
    let wanted = OsStr::new(name);
    let (closed, _) = store.segment_files(kind);
    let closed = closed
        .into_iter()
        .flat_map(|(_, files)| files)
        .find(|path| path.file_name() == Some(wanted));
    if let Some(path) = closed {
        return Some(Listed::Closed(path));
    }
    let active = store.active_segment(kind);
    (active.path.file_name() == Some(wanted)).then_some(Listed::Active(active))
}

/// The bytes of a file, as the OpenAPI document describes them.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(pub Vec<u8>);

/// A file the backup listing answers.
#[utoipa::path(
    get,
    path = "/v1/backup/files/{context}/{type}/{file}",
    tag = "backup",
    params(
        ("context" = String, Path, description = "Context"),
        ("type" = String, Path, description = "EVENT or SNAPSHOT, case-insensitive", pattern = r"^([Ee][Vv][Ee][Nn][Tt]|[Ss][Nn][Aa][Pp][Ss][Hh][Oo][Tt])$"),
        ("file" = String, Path, description = "File name (no directory) of a closed segment's data, index or bloom file, or of the active segment, as the listing answers it"),
        ("Range" = Option<String>, Header, description = "One range (`bytes=a-b`, `bytes=a-`, `bytes=-n`); closed files only"),
    ),
    responses(
        (status = OK, description = "The whole file; for the active segment, its committed prefix", content_type = "application/octet-stream", body = FileBytes, headers(
            ("Repr-Digest" = String, description = "`sha-256=:<base64>:`, the SHA-256 of exactly the bytes answered (RFC 9530)"),
            ("Accept-Ranges" = String, description = "`bytes` for closed files, `none` for the active segment"),
            ("X-Myelin-Active-Segment" = String, description = "`true` when the active segment's committed prefix is answered"),
        )),
        (status = PARTIAL_CONTENT, description = "The requested range of a closed file", content_type = "application/octet-stream", body = FileBytes, headers(
            ("Content-Range" = String, description = "`bytes <first>-<last>/<length>`"),
            ("Repr-Digest" = String, description = "`sha-256=:<base64>:` of the whole file (RFC 9530)"),
        )),
        (status = BAD_REQUEST, description = "Bad type", body = ErrorBody),
        (status = NOT_FOUND, description = "Not a file the listing answers now (a rolled active segment: list again)", body = ErrorBody),
        (status = RANGE_NOT_SATISFIABLE, description = "The range lies outside the file (`Content-Range: bytes */<length>`)", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Unknown context (AxonIQ-ErrorCode of NO_EVENTSTORE)", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<SharedState>,
    Path((context, kind, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let kind = parse_segment_type(&kind)?;
    let store = state
        .node
        .contexts()
        .get(&context)
        .ok_or_else(|| RestError::Node(myelin_node::NodeError::ContextNotFound(context.clone())))?
        .store()
        .clone();
    let listed = find_listed(&store, kind, &name).ok_or_else(|| {
        RestError::NotFound(format!(
            "{name} is not a file the backup listing of context {context}, type {} answers",
            type_name(kind)
        ))
    })?;
    match listed {
        Listed::Closed(path) => {
            let range = headers.get(header::RANGE).and_then(|value| value.to_str().ok());
            closed_file(path, range.map(str::to_string)).await
        }
        Listed::Active(active) => active_file(active.path, active.committed_bytes).await,
    }
}

/// A replication group's log-entry segment, as `/v1/backup/log/filenames` lists it now.
///
/// The active segment is answered up to `active_synced_bytes`: the end of the last entry known
/// to be on disk, always an entry boundary. Unlike an event segment's committed prefix, those
/// bytes may still change: Raft truncates entries a new leader does not have, and a follower's
/// synced entries may be such entries. A truncation between the digest and the body shows as a
/// body that does not match `Repr-Digest`; the client lists and downloads again.
#[utoipa::path(
    get,
    path = "/v1/backup/files/log/{group}/{file}",
    tag = "backup",
    params(
        ("group" = String, Path, description = "Replication group (`_admin` included), or a context of it"),
        ("file" = String, Path, description = "File name (no directory) of a log-entry segment, as /v1/backup/log/filenames answers it"),
        ("Range" = Option<String>, Header, description = "One range (`bytes=a-b`, `bytes=a-`, `bytes=-n`); closed segments only"),
    ),
    responses(
        (status = OK, description = "A closed segment whole; the active one up to its last synced entry", content_type = "application/octet-stream", body = FileBytes, headers(
            ("Repr-Digest" = String, description = "`sha-256=:<base64>:`, the SHA-256 of exactly the bytes answered (RFC 9530)"),
            ("Accept-Ranges" = String, description = "`bytes` for closed segments, `none` for the active one"),
            ("X-Myelin-Active-Segment" = String, description = "`true` when the active segment's synced prefix is answered"),
        )),
        (status = PARTIAL_CONTENT, description = "The requested range of a closed segment", content_type = "application/octet-stream", body = FileBytes, headers(
            ("Content-Range" = String, description = "`bytes <first>-<last>/<length>`"),
            ("Repr-Digest" = String, description = "`sha-256=:<base64>:` of the whole file (RFC 9530)"),
        )),
        (status = NOT_FOUND, description = "Not a file the log listing answers now (a rolled active segment: list again), no such group, or not a cluster node", body = ErrorBody),
        (status = RANGE_NOT_SATISFIABLE, description = "The range lies outside the file (`Content-Range: bytes */<length>`)", body = ErrorBody),
    )
)]
pub async fn download_log(
    State(state): State<SharedState>,
    Path((group, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    // `/v1/backup/files/log/...` is also where the event route of a context named `log` lives;
    // such a context keeps its files reachable when the second segment is a segment type.
    if state.node.contexts().get("log").is_some() && parse_segment_type(&group).is_ok() {
        return download(State(state), Path(("log".to_string(), group, name)), headers).await;
    }
    let logs = state.node.replication_logs().ok_or_else(|| {
        RestError::NotFound("this node is not part of a cluster: it keeps no replication log".to_string())
    })?;
    let files = logs
        .log_files(&group)?
        .ok_or_else(|| RestError::NotFound(format!("this node holds no log of replication group {group}")))?;
    let wanted = OsStr::new(&name);
    if let Some(path) = files.closed.iter().find(|path| path.file_name() == Some(wanted)) {
        let range = headers.get(header::RANGE).and_then(|value| value.to_str().ok());
        return closed_file(path.clone(), range.map(str::to_string)).await;
    }
    if files.active.file_name() == Some(wanted) {
        return active_file(files.active, files.active_synced_bytes).await;
    }
    Err(RestError::NotFound(format!(
        "{name} is not a file the log listing of replication group {} answers",
        files.group
    )))
}

/// A control-database backup zip, for backups taken from another machine. Only names of the
/// form `controldb<digits>.zip` in the configured backup location are served.
#[utoipa::path(
    get,
    path = "/v1/backup/controldb/{file}",
    tag = "backup",
    params(
        ("file" = String, Path, description = "`controldb<epochMillis>.zip`, as createControlDbBackup answered it"),
        ("Range" = Option<String>, Header, description = "One range (`bytes=a-b`, `bytes=a-`, `bytes=-n`)"),
    ),
    responses(
        (status = OK, description = "The zip", content_type = "application/octet-stream", body = FileBytes, headers(
            ("Repr-Digest" = String, description = "`sha-256=:<base64>:` of the whole file (RFC 9530)"),
        )),
        (status = PARTIAL_CONTENT, description = "The requested range", content_type = "application/octet-stream", body = FileBytes),
        (status = NOT_FOUND, description = "No such control-database backup", body = ErrorBody),
        (status = RANGE_NOT_SATISFIABLE, description = "The range lies outside the file", body = ErrorBody),
    )
)]
pub async fn control_db_zip(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let digits = name
        .strip_prefix("controldb")
        .and_then(|rest| rest.strip_suffix(".zip"));
    let valid = digits.is_some_and(|d| !d.is_empty() && d.len() <= 20 && d.bytes().all(|b| b.is_ascii_digit()));
    let path = state.config.controldb_backup_location.join(&name);
    if !valid || !path.is_file() {
        return Err(RestError::NotFound(format!(
            "{name} is not a control-database backup of this server"
        )));
    }
    let range = headers.get(header::RANGE).and_then(|value| value.to_str().ok());
    closed_file(path, range.map(str::to_string)).await
}

/// Serves a closed file, whole or the requested range.
async fn closed_file(path: PathBuf, range: Option<String>) -> Result<Response, RestError> {
    let name = file_name(&path);
    let (file, len, digest) = blocking(move || {
        let file = open_served(&path)?;
        let metadata = file.metadata().map_err(|e| io_error(&path, e))?;
        let key = DigestKey {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec()),
            path: path.clone(),
        };
        let digest = match cached_digest(&key) {
            Some(digest) => digest,
            None => {
                let digest = sha256_prefix(&file, metadata.len()).map_err(|e| io_error(&path, e))?;
                remember_digest(key, digest);
                digest
            }
        };
        Ok((file, metadata.len(), digest))
    })
    .await?;
    let (status, start, count) = match parse_range(range.as_deref(), len) {
        RangeRequest::Whole => (StatusCode::OK, 0, len),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeRequest::Unsatisfiable => return Err(RestError::RangeNotSatisfiable { len }),
    };
    let mut response = stream(file, start, count).await?;
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        headers.insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {start}-{}/{len}", start + count - 1))?,
        );
    }
    describe(headers, &name, &digest)?;
    Ok(response)
}

/// Serves the active segment's first `committed` bytes: hashed first, then streamed from the
/// same open file (an event segment's committed bytes never change, so both reads see the same
/// bytes; for a log segment see [`download_log`]).
async fn active_file(path: PathBuf, committed: u64) -> Result<Response, RestError> {
    let name = file_name(&path);
    let (file, digest) = blocking(move || {
        let file = open_served(&path)?;
        let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        if len < committed {
            return Err(RestError::Internal(format!(
                "{} is {len} bytes, shorter than its {committed} committed bytes",
                path.display()
            )));
        }
        let digest = sha256_prefix(&file, committed).map_err(|e| io_error(&path, e))?;
        Ok((file, digest))
    })
    .await?;
    let mut response = stream(file, 0, committed).await?;
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    headers.insert(ACTIVE_SEGMENT_HEADER, HeaderValue::from_static("true"));
    // The next request may see more: no cache may answer it with this one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    describe(headers, &name, &digest)?;
    Ok(response)
}

/// A 200 answer streaming `count` bytes of `file` from `start`.
async fn stream(file: File, start: u64, count: u64) -> Result<Response, RestError> {
    let mut file = tokio::fs::File::from_std(file);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| RestError::Internal(format!("cannot seek to {start}: {e}")))?;
    let mut response = Response::new(Body::new(FileBody {
        file,
        remaining: count,
        buf: vec![0; CHUNK_BYTES.min(usize::try_from(count).unwrap_or(CHUNK_BYTES))],
    }));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// The headers every served file carries besides length and type.
fn describe(headers: &mut HeaderMap, name: &str, digest: &[u8; 32]) -> Result<(), RestError> {
    let digest = base64::engine::general_purpose::STANDARD.encode(digest);
    headers.insert(REPR_DIGEST_HEADER, header_value(format!("sha-256=:{digest}:"))?);
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(format!("attachment; filename=\"{name}\""))?,
    );
    Ok(())
}

fn header_value(value: String) -> Result<HeaderValue, RestError> {
    HeaderValue::try_from(value).map_err(|e| RestError::Internal(format!("invalid header value: {e}")))
}

/// The listed path's file name (segment file names are digits and a suffix).
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Opens a listed file to serve it: never through a symbolic link in its last component, and
/// only if it is a regular file. A listed name replaced by a link to somewhere else is not
/// followed out of the data directory, and a FIFO (whose open and reads would block a thread
/// forever) is not read; both answer 404. `O_NONBLOCK` is what keeps the open of a FIFO from
/// blocking; on a regular file it changes nothing.
fn open_served(path: &std::path::Path) -> Result<File, RestError> {
    use std::os::unix::fs::OpenOptionsExt;
    let refused =
        |what: &str| RestError::NotFound(format!("{} is {what}: only regular files are served", file_name(path)));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("a symbolic link"),
            _ => io_error(path, e),
        })?;
    let metadata = file.metadata().map_err(|e| io_error(path, e))?;
    if !metadata.is_file() {
        return Err(refused("not a regular file"));
    }
    Ok(file)
}

fn io_error(path: &std::path::Path, error: std::io::Error) -> RestError {
    RestError::Internal(format!("cannot read {}: {error}", path.display()))
}

/// SHA-256 of the first `len` bytes of `file`, read in chunks at explicit offsets (the file's
/// cursor stays where it is). A file shorter than `len` is an error, never a shorter digest.
fn sha256_prefix(file: &File, len: u64) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset).unwrap_or(CHUNK_BYTES).min(CHUNK_BYTES);
        let read = match file.read_at(&mut buf[..want], offset) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("file ends at {offset}, expected {len} bytes"),
                ));
            }
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..read]);
        offset += read as u64;
    }
    Ok(hasher.finalize().into())
}

/// What a `Range` header asks of a file of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range, or one this server ignores (several ranges, another unit, malformed: RFC 9110
    /// lets a server answer those with the whole representation).
    Whole,
    /// Bytes `start..=end`, both within the file.
    Part { start: u64, end: u64 },
    /// A well-formed range no byte of the file satisfies (416).
    Unsatisfiable,
}

/// Parses one `bytes=a-b`, `bytes=a-` or `bytes=-n` range against a file of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Whole;
    };
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return RangeRequest::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    if first.is_empty() {
        // bytes=-n: the last n bytes.
        return match number(last) {
            None => RangeRequest::Whole,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(suffix) => RangeRequest::Part {
                start: len.saturating_sub(suffix),
                end: len - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return RangeRequest::Whole;
    };
    // bytes=a- (to the end) or bytes=a-b (b past the end means the end).
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return RangeRequest::Whole,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part {
        start,
        end: end.min(len - 1),
    }
}

/// Identifies one version of one file: a closed file never changes, and a file replaced under
/// the same name (an index rebuilt through a rename) gets a new inode and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DigestKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    path: PathBuf,
}

/// Digests of closed files already hashed, oldest evicted first.
#[derive(Default)]
struct DigestCache {
    digests: HashMap<DigestKey, [u8; 32]>,
    order: VecDeque<DigestKey>,
}

/// One cache for the process: keys name a file version exactly, so every server state in the
/// process (tests run several) can share it, and the handler needs nothing wired in.
fn digest_cache() -> &'static Mutex<DigestCache> {
    static CACHE: OnceLock<Mutex<DigestCache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn cached_digest(key: &DigestKey) -> Option<[u8; 32]> {
    digest_cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .digests
        .get(key)
        .copied()
}

fn remember_digest(key: DigestKey, digest: [u8; 32]) {
    let mut cache = digest_cache().lock().unwrap_or_else(PoisonError::into_inner);
    if cache.digests.insert(key.clone(), digest).is_none() {
        cache.order.push_back(key);
    }
    while cache.order.len() > DIGESTS_MAX {
        if let Some(oldest) = cache.order.pop_front() {
            cache.digests.remove(&oldest);
        }
    }
}

/// Streams `remaining` bytes of a file from its current position, a chunk at a time. A file
/// that ends early fails the body (the connection is cut), so a client never takes a short
/// answer for a whole one: `Content-Length` promised more.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining)
            .unwrap_or(this.buf.len())
            .min(this.buf.len());
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        ready!(Pin::new(&mut this.file).poll_read(cx, &mut read))?;
        let filled = read.filled();
        if filled.is_empty() {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ended {} bytes early", this.remaining),
            ))));
        }
        this.remaining -= filled.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(filled)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Part { start, end }
    }

    #[test]
    fn ranges() {
        let len = 100;
        let cases = [
            (None, RangeRequest::Whole),
            (Some("bytes=0-9"), part(0, 9)),
            (Some("bytes=10-19"), part(10, 19)),
            (Some("bytes=90-"), part(90, 99)),
            (Some("bytes=90-500"), part(90, 99)),
            (Some("bytes=99-99"), part(99, 99)),
            (Some("bytes=-10"), part(90, 99)),
            (Some("bytes=-500"), part(0, 99)),
            (Some("BYTES = 5 - 6"), part(5, 6)),
            (Some("bytes=100-"), RangeRequest::Unsatisfiable),
            (Some("bytes=100-200"), RangeRequest::Unsatisfiable),
            (Some("bytes=-0"), RangeRequest::Unsatisfiable),
            // Ignored: answered whole.
            (Some("bytes=9-1"), RangeRequest::Whole),
            (Some("bytes=0-1,5-6"), RangeRequest::Whole),
            (Some("items=0-1"), RangeRequest::Whole),
            (Some("bytes=abc"), RangeRequest::Whole),
            (Some("bytes=-"), RangeRequest::Whole),
            (Some("bytes=+1-2"), RangeRequest::Whole),
            (Some("bytes=1-x"), RangeRequest::Whole),
            (Some("garbage"), RangeRequest::Whole),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_range(header, len), expected, "{header:?}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-1"), 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn the_digest_cache_is_bounded() {
        let key = |i: u64| DigestKey {
            dev: u64::MAX,
            ino: i,
            len: 1,
            mtime_ns: 0,
            path: PathBuf::from("/nonexistent/digest-cache-test"),
        };
        for i in 0..(DIGESTS_MAX as u64 + 10) {
            remember_digest(key(i), [1; 32]);
        }
        assert_eq!(cached_digest(&key(0)), None, "the oldest was evicted");
        assert_eq!(cached_digest(&key(DIGESTS_MAX as u64 + 9)), Some([1; 32]));
        let cache = digest_cache().lock().unwrap_or_else(PoisonError::into_inner);
        assert!(cache.digests.len() <= DIGESTS_MAX && cache.order.len() <= DIGESTS_MAX);
    }

    #[test]
    fn prefix_digest_refuses_a_short_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").expect("write");
        let file = File::open(&path).expect("open");
        let whole = sha256_prefix(&file, 3).expect("digest");
        let expected: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(whole, expected);
        let two: [u8; 32] = Sha256::digest(b"ab").into();
        assert_eq!(sha256_prefix(&file, 2).expect("digest"), two);
        assert!(sha256_prefix(&file, 4).is_err());
    }
}
