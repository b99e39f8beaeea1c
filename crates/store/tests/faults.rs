//! Injected I/O failures (the `failpoints` feature): a failed fsync poisons the store.
#![cfg(feature = "failpoints")]

mod common;

use common::*;
use myelin_store::StoreError;

#[test]
fn failed_fsync_poisons_the_store_but_reads_continue() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    append(&store, &[event("a", 0, b"durable")]).expect("appends");

    fail::cfg("store::fsync", "return").expect("failpoint");
    let err = append(&store, &[event("a", 1, b"lost")]).expect_err("fsync fails");
    assert!(matches!(err, StoreError::Poisoned(_)), "{err}");
    fail::remove("store::fsync");

    // Never retried: the store stays read-only although the disk "recovered".
    let err = append(&store, &[event("b", 0, b"x")]).expect_err("poisoned");
    assert!(matches!(err, StoreError::Poisoned(_)));
    assert!(store.poisoned().is_some());
    // Nothing unsynced was published; what was durable is still served.
    assert_eq!(store.last_token(), 0);
    assert_eq!(read_all(&store).len(), 1);
    assert_eq!(store.highest_sequence("a").expect("reads"), 0);
    drop(store);
    scenario.teardown();
}

#[test]
fn failed_write_poisons_the_store() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    fail::cfg("store::write", "return(enospc)").expect("failpoint");
    let err = append(&store, &[event("a", 0, b"x")]).expect_err("write fails");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    fail::remove("store::write");
    assert!(matches!(
        append(&store, &[event("a", 0, b"x")]),
        Err(StoreError::Poisoned(_))
    ));
    assert_eq!(store.last_token(), -1);
    drop(store);
    scenario.teardown();
}
