//! Writes and syncs of the Raft log fail on purpose: the log is poisoned (no further change,
//! reads still served) until it is reopened, and reopening recovers a log that holds every
//! entry that was reported durable.
//!
//! Failpoints are process-wide; `FailScenario` runs these tests one at a time.

use bytes::Bytes;
use fail::FailScenario;
use myelin_cluster::log::{EntryType, LogError, LogSegments, Record};

fn records(first: u64, count: u64) -> Vec<Record> {
    (first..first + count)
        .map(|index| Record {
            index,
            term: 1,
            kind: EntryType::SerializedObject,
            data: Bytes::from(format!("entry {index:04}")),
        })
        .collect()
}

fn everything(log: &LogSegments) -> Vec<Record> {
    log.read(0, u64::MAX).expect("read the whole log")
}

fn assert_poisoned<T: std::fmt::Debug>(result: Result<T, LogError>, what: &str) {
    assert!(matches!(result, Err(LogError::Poisoned { .. })), "{what}: {result:?}");
}

/// Every change is refused, reads still work.
fn assert_refuses_changes(log: &mut LogSegments, readable: &[Record]) {
    assert!(log.is_poisoned());
    let next = log.next_index();
    assert_poisoned(log.append(&records(next, 1)), "append");
    assert_poisoned(log.sync(), "sync");
    assert_poisoned(log.pending_sync(), "pending sync");
    assert_poisoned(log.truncate_from(1), "truncate");
    assert_poisoned(log.remove_closed_through(u64::MAX), "compaction");
    assert_poisoned(log.reset(100), "reset");
    assert_eq!(everything(log), readable);
}

fn io_errno(error: &LogError) -> Option<i32> {
    match error {
        LogError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

#[test]
fn a_failed_write_poisons_the_log_until_it_is_reopened() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 2)).expect("append");
    log.sync().expect("sync");
    fail::cfg("cluster::log::write", "return").expect("configure the failpoint");
    let error = log.append(&records(3, 1)).expect_err("append fails");
    fail::remove("cluster::log::write");
    assert_eq!(io_errno(&error), Some(libc::EIO), "{error}");
    assert_refuses_changes(&mut log, &records(1, 2));
    drop(log);
    scenario.teardown();

    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(everything(&log), records(1, 2));
    log.append(&records(3, 1)).expect("append");
    assert_eq!(log.sync().expect("sync"), Some(3));
}

#[test]
fn a_failed_sync_poisons_the_log_and_is_never_retried() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 1)).expect("append");
    log.sync().expect("sync");
    log.append(&records(2, 1)).expect("append");
    fail::cfg("cluster::log::sync", "return").expect("configure the failpoint");
    let error = log.sync().expect_err("sync fails");
    fail::remove("cluster::log::sync");
    assert_eq!(io_errno(&error), Some(libc::EIO), "{error}");
    assert_eq!(log.synced_index(), Some(1));
    assert_refuses_changes(&mut log, &records(1, 2));
    drop(log);
    scenario.teardown();

    // Only entry 1 was reported durable; entry 2 may or may not have reached the disk.
    let log = LogSegments::open(dir.path(), 120).expect("open the log");
    let recovered = everything(&log);
    assert!(
        recovered == records(1, 1) || recovered == records(1, 2),
        "{recovered:?}"
    );
}

#[test]
fn a_failed_sync_outside_the_lock_poisons_the_log_when_finished() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 1)).expect("append");
    let pending = log.pending_sync().expect("take a pending sync");
    fail::cfg("cluster::log::sync", "return(enospc)").expect("configure the failpoint");
    let done = pending.run();
    fail::remove("cluster::log::sync");
    let error = log.finish_sync(done).expect_err("finish the sync fails");
    assert_eq!(io_errno(&error), Some(libc::ENOSPC), "{error}");
    assert_eq!(log.synced_index(), None);
    assert_refuses_changes(&mut log, &records(1, 1));
    scenario.teardown();
}

#[test]
fn a_roll_that_cannot_create_the_next_segment_is_finished_by_reopening() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    // Three 33-byte entries fill a 120-byte segment; the fourth rolls.
    log.append(&records(1, 3)).expect("append");
    fail::cfg("cluster::log::create", "return(enospc)").expect("configure the failpoint");
    let error = log.append(&records(4, 2)).expect_err("append fails");
    fail::remove("cluster::log::create");
    assert_eq!(io_errno(&error), Some(libc::ENOSPC), "{error}");
    assert_eq!(
        log.synced_index(),
        Some(3),
        "the closed segment was synced before the roll went on"
    );
    assert_refuses_changes(&mut log, &records(1, 3));
    drop(log);
    scenario.teardown();

    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(everything(&log), records(1, 3));
    assert_eq!(
        log.files().active.0,
        4,
        "the closed segment's successor was created at open"
    );
    log.append(&records(4, 2)).expect("append");
    assert_eq!(log.sync().expect("sync"), Some(5));
}
