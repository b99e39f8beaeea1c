//! Axon Server's backup endpoints, with upstream's paths, parameter names and answers.
//!
//! A consistent backup takes, in this order: the control database (`createControlDbBackup`),
//! the replication-log segments (`/v1/backup/log/filenames`; a single node has none), then per
//! context and type the closed segments past the last one already copied, plus the active
//! segment, copied afresh every time and never used as the incremental marker.
//!
//! Listings come from the store, which includes a closed segment only once its data, index and
//! bloom files are complete and synced; a segment being rolled is never listed half-written.
//! Every request is written to the control database's backup history.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use myelin_control::BackupRecord;
use myelin_control::now_ms;
use myelin_store::{ContextStore, SegmentKind};
use serde::Serialize;
use utoipa::ToSchema;

use crate::SharedState;
use crate::error::{ErrorBody, RestError, blocking};
use crate::extract::Query;

/// How long log cleaning pauses after a control-database backup (Axon: the next cleaning runs
/// an hour later; its docs ask for the log to be copied within 30 minutes).
const LOG_CLEANING_PAUSE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The values `type` accepts (case-insensitive).
pub const SEGMENT_TYPES: &[&str] = &["EVENT", "SNAPSHOT"];

type Params = Query<HashMap<String, String>>;

/// The `type` parameter: EVENT or SNAPSHOT, any case; required.
pub fn segment_type(params: &HashMap<String, String>) -> Result<SegmentKind, RestError> {
    let value = params
        .get("type")
        .ok_or_else(|| RestError::bad_parameter("type", "Missing required parameter 'type'", SEGMENT_TYPES))?;
    parse_segment_type(value)
}

/// A `type` value: EVENT or SNAPSHOT, any case.
pub fn parse_segment_type(value: &str) -> Result<SegmentKind, RestError> {
    match value.to_ascii_uppercase().as_str() {
        "EVENT" => Ok(SegmentKind::Events),
        "SNAPSHOT" => Ok(SegmentKind::Snapshots),
        _ => Err(RestError::bad_parameter(
            "type",
            format!("Invalid value '{value}' for parameter 'type'"),
            SEGMENT_TYPES,
        )),
    }
}

/// An integer parameter with a default: 64-bit for segment numbers, 32-bit for versions, as
/// the OpenAPI document (and Axon's Java signature) says — a version beyond 32 bits is refused,
/// not silently accepted.
fn integer<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &'static str,
    default: T,
) -> Result<T, RestError> {
    match params.get(name) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| {
            let bits = std::mem::size_of::<T>() * 8;
            RestError::bad_parameter(
                name,
                format!("Invalid value '{value}' for parameter '{name}': expected a {bits}-bit integer"),
                &["an integer"],
            )
        }),
    }
}

fn context_param<'a>(params: &'a HashMap<String, String>, name: &str) -> &'a str {
    params
        .get(name)
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or(myelin_node::DEFAULT_CONTEXT)
}

pub(crate) fn type_name(kind: SegmentKind) -> &'static str {
    match kind {
        SegmentKind::Events => "EVENT",
        SegmentKind::Snapshots => "SNAPSHOT",
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Closed segments with a segment number (first token) above `marker`: each data file followed
/// by its index and bloom files, oldest first. Also returns the newest closed segment's number.
fn closed_after(store: &ContextStore, kind: SegmentKind, marker: i64) -> (Vec<String>, i64, String) {
    let (closed, active) = store.segment_files(kind);
    let last_closed = closed
        .last()
        .map(|(first, _)| i64::try_from(*first).unwrap_or(i64::MAX))
        .unwrap_or(-1);
    let files = closed
        .into_iter()
        .filter(|(first, _)| i64::try_from(*first).map_or(true, |first| first > marker))
        .flat_map(|(_, files)| files)
        .map(|path| path_text(&path))
        .collect();
    (files, last_closed, path_text(&active))
}

async fn record(state: &SharedState, record: BackupRecord) -> Result<(), RestError> {
    let control = state.node.control().clone();
    blocking(move || Ok(control.record_backup(&record)?)).await
}

/// The history row of a segment listing: what was answered, and the last event token then.
fn listing_record(
    request: &str,
    context: &str,
    store: &ContextStore,
    kind: SegmentKind,
    last_closed: i64,
    detail: String,
) -> BackupRecord {
    BackupRecord {
        time_ms: now_ms(),
        kind: request.to_string(),
        context: Some(context.to_string()),
        segment_type: Some(type_name(kind).to_string()),
        last_closed_segment: Some(last_closed),
        last_token: (kind == SegmentKind::Events).then(|| store.last_token()),
        detail: Some(detail),
    }
}

/// Closed segment files past a marker (deprecated upstream, kept for existing scripts).
#[utoipa::path(
    get,
    path = "/v1/backup/filenames",
    tag = "backup",
    params(
        ("context" = Option<String>, Query, description = "Context, default `default`"),
        ("type" = String, Query, description = "EVENT or SNAPSHOT, case-insensitive", pattern = r"^([Ee][Vv][Ee][Nn][Tt]|[Ss][Nn][Aa][Pp][Ss][Hh][Oo][Tt])$"),
        ("lastSegmentBackedUp" = Option<i64>, Query, description = "Segment number already backed up, default -1"),
        ("lastVersionBackedUp" = Option<i32>, Query, description = "Version of that segment, default 0"),
    ),
    responses(
        (status = OK, description = "Absolute paths of the closed segment files (data, index, bloom) past the marker; [] for an unknown context", body = Vec<String>),
        (status = BAD_REQUEST, description = "Bad or missing parameter", body = ErrorBody),
    )
)]
pub async fn filenames(
    State(state): State<SharedState>,
    Query(params): Params,
) -> Result<Json<Vec<String>>, RestError> {
    let kind = segment_type(&params)?;
    let marker = integer(&params, "lastSegmentBackedUp", -1i64)?;
    integer(&params, "lastVersionBackedUp", 0i32)?;
    let name = context_param(&params, "context");
    let Some(context) = state.node.contexts().get(name) else {
        return Ok(Json(Vec::new()));
    };
    let store = context.store();
    let (files, last_closed, _) = closed_after(store, kind, marker);
    let detail = format!("lastSegmentBackedUp={marker}, {} files", files.len());
    record(
        &state,
        listing_record("filenames", name, store, kind, last_closed, detail),
    )
    .await?;
    Ok(Json(files))
}

/// The answer of `/v1/backup/eventstore`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventStoreBackup {
    /// Segment number (first token) of the newest closed segment, or -1. Use it as the next
    /// run's `lastClosedSegmentBackedUp`.
    pub last_closed_segment: i64,
    /// The active segment first (copy it every time, overwriting the previous copy), then the
    /// closed segment files past the marker.
    pub filenames: Vec<String>,
}

/// The files to back up for one context and type.
#[utoipa::path(
    get,
    path = "/v1/backup/eventstore",
    tag = "backup",
    params(
        ("targetContext" = Option<String>, Query, description = "Context, default `default`"),
        ("type" = String, Query, description = "EVENT or SNAPSHOT, case-insensitive", pattern = r"^([Ee][Vv][Ee][Nn][Tt]|[Ss][Nn][Aa][Pp][Ss][Hh][Oo][Tt])$"),
        ("lastClosedSegmentBackedUp" = Option<i64>, Query, description = "lastClosedSegment of the previous backup, default -1"),
        ("lastClosedVersionBackedUp" = Option<i32>, Query, description = "Version of that segment, default 0"),
    ),
    responses(
        (status = OK, description = "Success", body = EventStoreBackup),
        (status = BAD_REQUEST, description = "Bad or missing parameter", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "Unknown context (AxonIQ-ErrorCode of NO_EVENTSTORE)", body = ErrorBody),
    )
)]
pub async fn eventstore(
    State(state): State<SharedState>,
    Query(params): Params,
) -> Result<Json<EventStoreBackup>, RestError> {
    let kind = segment_type(&params)?;
    let marker = integer(&params, "lastClosedSegmentBackedUp", -1i64)?;
    integer(&params, "lastClosedVersionBackedUp", 0i32)?;
    let name = context_param(&params, "targetContext");
    let context = state
        .node
        .contexts()
        .get(name)
        .ok_or_else(|| RestError::Node(myelin_node::NodeError::ContextNotFound(name.to_string())))?;
    let store = context.store();
    let (closed, last_closed, active) = closed_after(store, kind, marker);
    let mut filenames = Vec::with_capacity(closed.len() + 1);
    filenames.push(active);
    filenames.extend(closed);
    let detail = format!("lastClosedSegmentBackedUp={marker}, {} files", filenames.len());
    record(
        &state,
        listing_record("eventstore", name, store, kind, last_closed, detail),
    )
    .await?;
    Ok(Json(EventStoreBackup {
        last_closed_segment: last_closed,
        filenames,
    }))
}

/// Closed replication-log segments. A single node keeps no replication log, so this is `[]`.
#[utoipa::path(
    get,
    path = "/v1/backup/log/filenames",
    tag = "backup",
    params(("context" = Option<String>, Query, description = "Context (replication group), default `default`")),
    responses(
        (status = OK, description = "Absolute paths of the group's log-entry segments: closed ones newest first, then the active one; [] on a single node or a node outside the group", body = Vec<String>),
        (status = NOT_FOUND, description = "No replication group or context of that name", body = ErrorBody)
    )
)]
pub async fn log_filenames(
    State(state): State<SharedState>,
    Query(params): Params,
) -> Result<Json<Vec<String>>, RestError> {
    let name = context_param(&params, "context").to_string();
    // The history records only names it can hold (a context name), so a replication group
    // such as `_admin` is recorded without one.
    let context = myelin_control::validate_context_name(&name).ok().map(|()| name.clone());
    let (files, detail) = match state.node.replication_logs() {
        None => (
            Vec::new(),
            format!("single node: no replication log (requested {name:?})"),
        ),
        Some(logs) => match logs.log_files(&name)? {
            None => (
                Vec::new(),
                format!("replication group of {name:?} not hosted on this node"),
            ),
            Some(files) => {
                // Closed segments newest first (Axon's order), then the active one: the list
                // replaces the previous log backup entirely.
                let mut listed: Vec<String> = files.closed.iter().map(|p| path_text(p)).collect();
                listed.push(path_text(&files.active));
                let detail = format!("group {}: {} files", files.group, listed.len());
                (listed, detail)
            }
        },
    };
    record(
        &state,
        BackupRecord {
            time_ms: now_ms(),
            kind: "log".to_string(),
            context,
            segment_type: None,
            last_closed_segment: None,
            last_token: None,
            detail: Some(detail),
        },
    )
    .await?;
    Ok(Json(files))
}

/// Axon Server SE's path for the control-database backup.
#[utoipa::path(
    post,
    path = "/createControlDbBackup",
    tag = "backup",
    responses((status = OK, description = "Absolute path of the new controldb<epochMillis>.zip", body = String, content_type = "text/plain"))
)]
pub async fn create_control_db_backup(State(state): State<SharedState>) -> Result<impl IntoResponse, RestError> {
    control_db_backup(state).await
}

/// Axon Server EE's path for the control-database backup.
#[utoipa::path(
    post,
    path = "/v1/backup/createControlDbBackup",
    tag = "backup",
    responses((status = OK, description = "Absolute path of the new controldb<epochMillis>.zip", body = String, content_type = "text/plain"))
)]
pub async fn create_control_db_backup_v1(State(state): State<SharedState>) -> Result<impl IntoResponse, RestError> {
    control_db_backup(state).await
}

/// Takes the control-database backup: an online copy (consistent while the server keeps
/// writing) zipped with a descriptor of what the event stores held at that moment.
async fn control_db_backup(state: SharedState) -> Result<impl IntoResponse, RestError> {
    // On a cluster node, log cleaning pauses for an hour *before* the copy is taken (Axon
    // restarts its cleaning schedule only afterwards): the log segments a script copies next
    // cannot be compacted away under it, with or without a lease.
    if let Some(logs) = state.node.replication_logs() {
        logs.pause_log_cleaning(LOG_CLEANING_PAUSE);
    }
    let last_tokens: BTreeMap<String, i64> = state
        .node
        .contexts()
        .names()
        .into_iter()
        .filter_map(|name| Some((name.clone(), state.node.contexts().get(&name)?.store().last_token())))
        .collect();
    let descriptor = serde_json::json!({
        "serverVersion": env!("CARGO_PKG_VERSION"),
        "node": state.node.identity().name,
        "lastTokens": last_tokens,
    });
    let control = state.node.control().clone();
    let location = state.config.controldb_backup_location.clone();
    let path = blocking(move || Ok(control.backup_zip(&location, descriptor)?)).await?;
    let path = path_text(&path);
    record(
        &state,
        BackupRecord {
            time_ms: now_ms(),
            kind: "controldb".to_string(),
            context: None,
            segment_type: None,
            last_closed_segment: None,
            last_token: None,
            detail: Some(path.clone()),
        },
    )
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], path))
}

/// What a forced log cleaning did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogCleaningJson {
    pub replication_group: String,
    /// The last log index purged (openraft's numbering: the file of entry `i` starts at `i + 1`).
    pub purged_through: Option<u64>,
    /// Absolute paths of the segment files deleted now.
    pub deleted: Vec<String>,
}

/// Runs the log cleaning of a replication group now (Axon EE's internal `cleanLogEntries`):
/// closed segments whose entries are all applied and that were written more than `seconds`
/// ago are purged; their files are deleted unless a backup lease is live or a control-DB
/// backup was taken less than an hour ago.
#[utoipa::path(
    post,
    path = "/internal/raft/context/{context}/cleanLogEntries/{seconds}",
    tag = "backup",
    params(
        ("context" = String, Path, description = "Replication group, or a context of it"),
        ("seconds" = u64, Path, description = "Keep segments written less than this many seconds ago")
    ),
    responses(
        (status = OK, description = "What the cleaning did", body = LogCleaningJson),
        (status = BAD_REQUEST, description = "`seconds` is not a whole number of seconds", body = ErrorBody),
        (status = NOT_FOUND, description = "No such replication group on this node (none at all on a single node)", body = ErrorBody)
    )
)]
pub async fn clean_log_entries(
    State(state): State<SharedState>,
    crate::extract::Path((context, seconds)): crate::extract::Path<(String, u64)>,
) -> Result<Json<LogCleaningJson>, RestError> {
    // A single node has no replication group at all: whatever the name, there is none.
    let logs = state.node.replication_logs().ok_or_else(|| {
        RestError::Node(myelin_node::NodeError::Cluster {
            code: myelin_node::ErrorCode::ContextNotFound,
            message: format!("no replication group {context}: this node is not part of a cluster"),
        })
    })?;
    let cleaned = logs
        .clean_log_entries(&context, std::time::Duration::from_secs(seconds))
        .await?;
    Ok(Json(LogCleaningJson {
        replication_group: cleaned.group,
        purged_through: cleaned.purged_through,
        deleted: cleaned.deleted.iter().map(|p| path_text(p)).collect(),
    }))
}
