//! Every step of the crash-safe write fails on purpose, and the destination is never left
//! half-written: it keeps its old content and no temporary file stays behind.
//!
//! Failpoints are process-wide; `FailScenario` runs these tests one at a time.

use std::io::Write;
use std::path::Path;

use fail::FailScenario;
use myelin_fsutil::{AtomicFile, create_dir_all_durably, rename_durably, write_atomically};

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn fails_with(failpoint: &str, action: &str, expected_errno: i32) {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    std::fs::write(&path, b"old content").expect("write");
    fail::cfg(failpoint, action).expect("configure failpoint");
    let error = write_atomically(&path, b"new content").expect_err("the step fails");
    fail::remove(failpoint);
    scenario.teardown();
    assert_eq!(error.raw_os_error(), Some(expected_errno), "{failpoint}: {error}");
    assert_eq!(std::fs::read(&path).expect("read"), b"old content", "{failpoint}");
    assert_eq!(
        entries(dir.path()),
        vec!["index".to_string()],
        "{failpoint}: no temporary file left"
    );
}

#[test]
fn a_failed_create_leaves_the_old_content() {
    fails_with("fsutil::create", "return", libc::EIO);
}

#[test]
fn a_failed_write_leaves_the_old_content() {
    fails_with("fsutil::write", "return(enospc)", libc::ENOSPC);
}

#[test]
fn a_failed_fsync_leaves_the_old_content() {
    fails_with("fsutil::fsync", "return", libc::EIO);
}

#[test]
fn a_failed_rename_leaves_the_old_content() {
    fails_with("fsutil::rename", "return", libc::EIO);
}

#[test]
fn a_failed_directory_sync_is_reported_after_the_rename() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    std::fs::write(&path, b"old content").expect("write");
    fail::cfg("fsutil::sync_dir", "return").expect("configure failpoint");
    let mut file = AtomicFile::create(&path).expect("create");
    file.write_all(b"new content").expect("write");
    let error = file.commit().expect_err("the directory sync fails");
    fail::remove("fsutil::sync_dir");
    scenario.teardown();
    // The rename happened, but is not known to be durable: the caller must hear of it.
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    assert_eq!(std::fs::read(&path).expect("read"), b"new content");
    assert_eq!(entries(dir.path()), vec!["index".to_string()]);
}

#[test]
fn a_failed_directory_sync_fails_a_durable_mkdir_and_rename() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    fail::cfg("fsutil::sync_dir", "return").expect("configure failpoint");
    let mkdir = create_dir_all_durably(&dir.path().join("a/b"));
    std::fs::write(dir.path().join("from"), b"x").expect("write");
    let rename = rename_durably(&dir.path().join("from"), &dir.path().join("to"));
    fail::remove("fsutil::sync_dir");
    scenario.teardown();
    assert!(mkdir.is_err());
    assert!(rename.is_err());
}
