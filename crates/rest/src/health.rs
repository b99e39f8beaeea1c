//! `/actuator/health` in Spring Boot's shape (what Axon Server answers), with Axon's extra
//! `WARN` level: the liveness and readiness probes, free disk space per data directory (WARN
//! below the configured threshold), each context's event store (DOWN when it refuses
//! appends after a failed write or sync), and the live backup leases.
//!
//! The overall status is the worst component's; DOWN answers 503 so that load balancers and
//! Kubernetes probes act on the status code alone.

use std::collections::BTreeMap;
use std::path::Path;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::SharedState;

/// A health status, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Up,
    Warn,
    Down,
}

impl Status {
    fn http(self) -> StatusCode {
        match self {
            Status::Down => StatusCode::SERVICE_UNAVAILABLE,
            Status::Up | Status::Warn => StatusCode::OK,
        }
    }
}

/// One part of the health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Component {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub details: Option<Value>,
}

/// The health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: Status,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, Component>,
}

/// The process is alive. Always open, even with access control on.
#[utoipa::path(
    get,
    path = "/actuator/health/liveness",
    tag = "status",
    security(()),
    responses((status = OK, description = "Success", body = Health))
)]
pub async fn liveness() -> Json<Health> {
    Json(Health {
        status: Status::Up,
        components: BTreeMap::new(),
    })
}

/// Whether this node should receive traffic: DOWN while any context refuses appends.
#[utoipa::path(
    get,
    path = "/actuator/health/readiness",
    tag = "status",
    responses((status = OK, description = "Success", body = Health), (status = SERVICE_UNAVAILABLE, description = "A component is DOWN", body = Health))
)]
pub async fn readiness(State(state): State<SharedState>) -> (StatusCode, Json<Health>) {
    let store = event_stores(&state);
    let status = store.status;
    let health = Health {
        status,
        components: BTreeMap::from([("eventStore".to_string(), store)]),
    };
    (status.http(), Json(health))
}

/// Every component's health.
#[utoipa::path(
    get,
    path = "/actuator/health",
    tag = "status",
    responses((status = OK, description = "Success", body = Health), (status = SERVICE_UNAVAILABLE, description = "A component is DOWN", body = Health))
)]
pub async fn health(State(state): State<SharedState>) -> (StatusCode, Json<Health>) {
    let stores = event_stores(&state);
    let readiness = Component {
        status: stores.status,
        details: None,
    };
    let mut components = BTreeMap::from([
        (
            "livenessState".to_string(),
            Component {
                status: Status::Up,
                details: None,
            },
        ),
        ("readinessState".to_string(), readiness),
        ("eventStore".to_string(), stores),
        ("diskSpace".to_string(), disk_space(&state)),
        ("backupLease".to_string(), backup_leases(&state)),
    ]);
    if let Ok(cluster) = state.node.cluster() {
        components.insert("raft".to_string(), raft(&cluster.status()));
    }
    let status = components.values().map(|c| c.status).max().unwrap_or(Status::Up);
    (status.http(), Json(Health { status, components }))
}

fn event_stores(state: &SharedState) -> Component {
    let mut status = Status::Up;
    let mut details = serde_json::Map::new();
    for name in state.node.contexts().names() {
        let Some(context) = state.node.contexts().get(&name) else {
            continue;
        };
        let store = context.store();
        let poisoned = store.poisoned();
        if poisoned.is_some() {
            status = Status::Down;
        }
        details.insert(
            name,
            json!({
                "status": if poisoned.is_some() { "DOWN" } else { "UP" },
                "lastToken": store.last_token(),
                "trackingStreams": context.tracking_streams(),
                "error": poisoned,
            }),
        );
    }
    // Contexts whose stores could not be opened at startup.
    for (name, reason) in state.node.contexts().failures() {
        status = Status::Down;
        details.insert(name, json!({ "status": "DOWN", "error": reason }));
    }
    Component {
        status,
        details: Some(Value::Object(details)),
    }
}

/// Each replication group as this node sees it: its state and role there, the term, the
/// leader, how far its log and applied index reach, and on the leader each member's lag. A
/// group without a leader takes no writes: WARN (reads still work).
fn raft(groups: &[myelin_node::GroupStatusInfo]) -> Component {
    let mut status = Status::Up;
    let mut details = serde_json::Map::new();
    for group in groups {
        if group.leader.is_none() {
            status = status.max(Status::Warn);
        }
        let lag: serde_json::Map<String, Value> =
            group.lag.iter().map(|(node, lag)| (node.clone(), json!(lag))).collect();
        details.insert(
            group.group.clone(),
            json!({
                "status": if group.leader.is_some() { "UP" } else { "WARN" },
                "state": group.state,
                "role": group.role,
                "term": group.term,
                "leader": group.leader,
                "lastLogIndex": group.last_log_index,
                "appliedIndex": group.applied_index,
                "replicationLag": lag,
            }),
        );
    }
    Component {
        status,
        details: Some(Value::Object(details)),
    }
}

/// The live backup leases (always UP: a lease only holds back deletions).
fn backup_leases(state: &SharedState) -> Component {
    let leases: Vec<Value> = state
        .deletion_holds
        .live(std::time::Instant::now())
        .into_iter()
        .map(|(id, remaining)| {
            // Rounded up: a live lease never shows 0 seconds left.
            let seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
            json!({ "id": id, "remainingSeconds": seconds })
        })
        .collect();
    Component {
        status: Status::Up,
        details: Some(json!({ "count": leases.len(), "leases": leases })),
    }
}

fn disk_space(state: &SharedState) -> Component {
    let threshold = state.config.disk_space_threshold;
    let mut status = Status::Up;
    let mut details = serde_json::Map::new();
    for dir in &state.config.data_dirs {
        let entry = match free_space(dir) {
            Ok((total, free)) => {
                let low = free < threshold;
                if low {
                    status = status.max(Status::Warn);
                }
                json!({
                    "status": if low { "WARN" } else { "UP" },
                    "total": total,
                    "free": free,
                    "threshold": threshold,
                })
            }
            Err(error) => {
                status = status.max(Status::Warn);
                json!({ "status": "WARN", "error": error.to_string(), "threshold": threshold })
            }
        };
        details.insert(dir.to_string_lossy().into_owned(), entry);
    }
    Component {
        status,
        details: Some(Value::Object(details)),
    }
}

/// Total and available bytes of the file system holding `path` (its nearest existing parent).
// The crate denies unsafe code; statvfs has no safe wrapper in std.
#[allow(unsafe_code)]
pub fn free_space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no existing directory"))?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and stats points to writable memory of
    // the right type; statvfs fills it completely when it returns 0.
    let result = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stats = unsafe { stats.assume_init() };
    // The field types differ between platforms (u64 here, u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    let (fragment, blocks, available) = (stats.f_frsize as u64, stats.f_blocks as u64, stats.f_bavail as u64);
    Ok((blocks.saturating_mul(fragment), available.saturating_mul(fragment)))
}
