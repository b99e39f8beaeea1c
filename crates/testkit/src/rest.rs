//! The REST router in-process: real stores and a real control database in a temporary
//! directory, called without a socket, and the answers read whole.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use myelin_control::{AccessControl, ControlDb};
use myelin_node::{Node, NodeIdentity, StoreLayout};
use myelin_rest::{RestConfig, RestState, SharedState};
use myelin_store::{ContextStore, DeletionHolds, StoreConfig};
use tempfile::TempDir;
use tower::ServiceExt;

/// Answers larger than this fail the test (the largest, a backup file, is a few MiB).
const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

pub const ADMIN_TOKEN: &str = "admin-secret-token";
pub const TOKEN: &str = "read-write-secret-token";

/// The stores' configuration: segments of [`SEGMENT_BYTES`](crate::store::SEGMENT_BYTES).
pub fn store_config() -> StoreConfig {
    crate::store::small_segments()
}

/// Stores under `<root>/<kind>/<context>` like the server lays them out, obeying this test
/// server's own deletion holds (not the process-wide ones other tests may hold).
pub struct DirProvisioner {
    pub layout: StoreLayout,
}

impl DirProvisioner {
    pub fn dirs(&self, name: &str) -> (PathBuf, PathBuf) {
        let [events, snapshots] = self.layout.context_dirs(name);
        (events, snapshots)
    }
}

/// The router over context `default`, a control database and this harness's deletion holds,
/// all under one temporary directory (`dir`).
pub struct Rest {
    pub state: SharedState,
    pub router: Router,
    pub provisioner: Arc<DirProvisioner>,
    pub dir: TempDir,
}

/// What a test may change of the harness.
pub struct Options {
    pub access_control: bool,
    pub disk_space_threshold: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access_control: false,
            disk_space_threshold: 1,
        }
    }
}

/// The harness with the default [`Options`]: access control off.
pub fn rest() -> Rest {
    rest_with(Options::default())
}

pub fn rest_with(options: Options) -> Rest {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().canonicalize().expect("absolute temp dir");
    let control = Arc::new(ControlDb::open(&root.join("control")).expect("control db"));
    let holds = Arc::new(DeletionHolds::new());
    let layout = StoreLayout {
        events_dir: root.join("events"),
        snapshots_dir: root.join("snapshots"),
        events: store_config(),
        snapshots: store_config(),
        deletion_holds: holds.clone(),
    };
    let provisioner = Arc::new(DirProvisioner { layout: layout.clone() });
    let identity = NodeIdentity {
        name: "node-1".to_string(),
        ..NodeIdentity::default()
    };
    let node = Arc::new(Node::new(identity, control.clone(), Arc::new(layout)));
    node.open_contexts(&["default".to_string()]).expect("default opens");
    let access = Arc::new(AccessControl::new(
        options.access_control,
        Some(TOKEN.to_string()),
        Some(ADMIN_TOKEN.to_string()),
        control.clone(),
    ));
    let state = Arc::new(RestState {
        node,
        access,
        deletion_holds: holds,
        config: RestConfig {
            controldb_backup_location: root.join("backups"),
            data_dirs: vec![root.clone()],
            disk_space_threshold: options.disk_space_threshold,
        },
        routing: None,
    });
    Rest {
        router: myelin_rest::router(state.clone()),
        state,
        provisioner,
        dir,
    }
}

/// A response, its body read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Rest {
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), ANSWER_BYTES_MAX)
            .await
            .expect("body");
        Answer { status, headers, body }
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, &[], None).await
    }

    pub async fn post(&self, uri: &str, body: Option<serde_json::Value>) -> Answer {
        self.call(Method::POST, uri, &[], body).await
    }

    pub async fn delete(&self, uri: &str) -> Answer {
        self.call(Method::DELETE, uri, &[], None).await
    }

    pub fn store(&self, name: &str) -> Arc<ContextStore> {
        self.state.node.contexts().get(name).expect("context").store().clone()
    }

    /// Shuts the node down, every store with it (on a plain thread: shutdown blocks).
    pub fn shutdown(&self) {
        let node = self.state.node.clone();
        std::thread::spawn(move || node.shutdown())
            .join()
            .expect("shutdown thread")
            .expect("every store shuts down");
    }
}

/// A test that failed before `shutdown` still shuts the stores down.
impl Drop for Rest {
    fn drop(&mut self) {
        let node = self.state.node.clone();
        let _ = std::thread::spawn(move || node.shutdown()).join();
    }
}

/// A documented path with its parameters filled in: names that exist nowhere for `{name}`,
/// `{id}`, `{file}` and `{node}`, a real context (and group: `{group}`) and type, so that the
/// file endpoints get as far as looking the file up. A parameter without a value here fails
/// loudly.
pub fn fill_placeholders(path: &str) -> String {
    let filled = path
        .replace("{name}", "missing-name")
        .replace("{id}", "missing-name")
        .replace("{context}", "default")
        .replace("{group}", "default")
        .replace("{type}", "EVENT")
        .replace("{file}", "missing-name")
        .replace("{seconds}", "3600")
        .replace("{node}", "missing-name");
    assert!(
        !filled.contains('{'),
        "{path}: give the new path parameter a value in fill_placeholders"
    );
    filled
}
