//! Fault injection into the online backup. A separate test binary, so that failpoints configured
//! here can never fire in the unit tests running in parallel in the library's binary; within it,
//! `FailScenario` runs the tests one at a time.
#![cfg(feature = "failpoints")]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use fail::FailScenario;
use myelin_control::{ControlDb, ControlError, DB_FILE_NAME};
use parking_lot::Mutex;
use serde_json::Value;

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn contexts_in_backup(zip_path: &Path) -> Vec<String> {
    let mut archive = zip::ZipArchive::new(File::open(zip_path).expect("open zip")).expect("read zip");
    let out = tempfile::tempdir().expect("tempdir");
    archive.extract(out.path()).expect("extract");
    let conn = rusqlite::Connection::open(out.path().join(DB_FILE_NAME)).expect("open copy");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(integrity, "ok");
    let mut statement = conn
        .prepare("SELECT name FROM contexts ORDER BY name")
        .expect("prepare");
    statement
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

#[test]
fn injected_error_leaves_no_partial_zip() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ControlDb::open(&dir.path().join("control")).expect("open");
    db.ensure_context("orders").expect("ensure");
    let location = dir.path().join("backups");

    fail::cfg("control::backup", "return").expect("configure failpoint");
    let result = db.backup_zip(&location, Value::Null);
    assert!(matches!(result, Err(ControlError::Io(_))), "{result:?}");
    assert!(location.is_dir(), "the failure came after the zip was written");
    assert_eq!(
        file_names(&location),
        Vec::<String>::new(),
        "no partial zip or temporary file left"
    );

    fail::remove("control::backup");
    let zip_path = db.backup_zip(&location, Value::Null).expect("backup after the fault");
    assert_eq!(file_names(&location).len(), 1);
    assert_eq!(contexts_in_backup(&zip_path), ["orders"]);
    scenario.teardown();
}

#[test]
fn copy_error_leaves_nothing_either() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ControlDb::open(&dir.path().join("control")).expect("open");
    let location = dir.path().join("backups");
    fail::cfg("control::backup_copy", "return").expect("configure failpoint");
    assert!(db.backup_zip(&location, Value::Null).is_err());
    assert_eq!(file_names(&location), Vec::<String>::new());
    // The database itself is untouched and still writable.
    db.ensure_context("after").expect("write after failed backup");
    scenario.teardown();
}

/// The backup is paused between two copy steps. Writes on another thread must complete meanwhile
/// (the copy holds no lock writers need), must not appear in the backup (the copy is one snapshot,
/// taken when the call started), and must not make the copy start over.
#[test]
fn writers_proceed_while_copying_and_the_copy_is_one_snapshot() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(ControlDb::open(&dir.path().join("control")).expect("open"));
    // Big enough (about 2 MiB) to need several copy steps of 256 pages.
    let bulky: BTreeMap<String, String> = [("padding".to_string(), "x".repeat(16 * 1024))].into();
    let before: Vec<String> = (0..128).map(|i| format!("before{i:03}")).collect();
    for name in &before {
        db.create_context(name, &bulky).expect("create");
    }
    let location = dir.path().join("backups");

    let (reached_tx, reached_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let steps = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicBool::new(false));
    let (steps_in_callback, released_in_callback) = (steps.clone(), released.clone());
    fail::cfg_callback("control::backup_copy", move || {
        // Pause before the second step: the first one has copied part of the file.
        if steps_in_callback.fetch_add(1, Ordering::SeqCst) != 1 {
            return;
        }
        reached_tx.send(()).expect("signal pause");
        // If the writer were blocked by the backup, "go" would never come: time out instead of
        // hanging, and let the assertion below report it.
        let go = go_rx.lock().recv_timeout(Duration::from_secs(20));
        released_in_callback.store(go.is_ok(), Ordering::SeqCst);
    })
    .expect("configure callback");

    let backup = {
        let (db, location) = (db.clone(), location.clone());
        std::thread::spawn(move || db.backup_zip(&location, Value::Null))
    };
    reached_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("backup reached its second step");
    // Change pages both already copied and still to copy.
    assert!(db.delete_context("before000").expect("delete while the backup copies"));
    db.create_context("during", &bulky)
        .expect("write while the backup copies");
    go_tx.send(()).expect("release backup");
    let zip_path = backup.join().expect("backup thread").expect("backup");

    assert!(released.load(Ordering::SeqCst), "the writes waited for the backup");
    assert!(steps.load(Ordering::SeqCst) >= 3, "the copy took several steps");
    assert_eq!(contexts_in_backup(&zip_path), before);
    assert!(db.context("during").expect("get").is_some());
    scenario.teardown();
}
