//! Online backup of the control database into a zip, while the server keeps writing.
//!
//! The copy uses SQLite's online backup API from a separate read-only connection that first opens
//! a read transaction. In WAL mode that transaction pins one snapshot: the copy is consistent as of
//! that moment, writers on the main connection carry on (they append to the WAL), and the backup
//! never restarts because nothing it reads can change under it. The main connection's mutex is
//! not held at all while copying.
//!
//! The zip is written through `myelin-fsutil`'s atomic file: under a hidden temporary name in the
//! target directory, synced, renamed into place and the directory synced, so a crash leaves either
//! no backup or a complete one (plus, at worst, hidden `.controldb*.tmp` files).

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use myelin_fsutil::AtomicFile;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::db::{BUSY_TIMEOUT, ControlDb, DB_FILE_NAME, now_ms, user_version};
use crate::error::{ControlError, Result};

/// The JSON entry beside the database file in the zip.
const DESCRIPTOR_NAME: &str = "descriptor.json";
/// Pages copied per backup step; bounds the work of one call into SQLite.
const PAGES_PER_STEP: i32 = 256;
/// Busy or locked steps tolerated (10 ms apart) before giving up.
const BUSY_RETRIES_MAX: u32 = 500;
const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// File names tried (one millisecond apart) when a backup of the same millisecond exists.
const NAME_ATTEMPTS_MAX: i64 = 1000;

impl ControlDb {
    /// A consistent online copy of the database, zipped as `<location>/controldb<epochMillis>.zip`
    /// with the database file (named [`DB_FILE_NAME`]) and `descriptor.json`: the `descriptor`
    /// object given (or `{}` for `null`) plus `createdAt` (the millis in the file name) and
    /// `schemaVersion`. Creates `location` if missing and returns the zip's absolute path.
    ///
    /// Other threads may keep writing meanwhile; every change committed before this call is in
    /// the copy. One backup runs at a time per database.
    pub fn backup_zip(&self, location: &Path, descriptor: Value) -> Result<PathBuf> {
        let mut descriptor = match descriptor {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(ControlError::Invalid(format!(
                    "backup descriptor must be a JSON object, got {other}"
                )));
            }
        };
        let _one_at_a_time = self.backup_lock.lock();
        myelin_fsutil::create_dir_all_durably(location)?;
        let location = fs::canonicalize(location)?;
        let created_at_ms = unused_millis(&location)?;
        let final_path = location.join(format!("controldb{created_at_ms}.zip"));

        // The copy is scratch, zipped and then removed: never renamed, so not an atomic file.
        let mut temporaries = Temporaries::default();
        let copy_path = temporaries.add(location.join(format!(".controldb{created_at_ms}.sqlite3.tmp")));
        temporaries.add(location.join(format!(".controldb{created_at_ms}.sqlite3.tmp-journal")));
        temporaries.remove_all(); // leftovers of a crash at the same millisecond

        let schema_version = self.copy_snapshot(&copy_path)?;
        descriptor.insert("createdAt".into(), created_at_ms.into());
        descriptor.insert("schemaVersion".into(), schema_version.into());
        // Dropped on an error, it removes its temporary file: no partial zip is ever left.
        let mut zip = AtomicFile::create(&final_path)?;
        write_zip(zip.file()?, &copy_path, &Value::Object(descriptor), created_at_ms)?;
        zip.commit()?;
        tracing::info!(path = %final_path.display(), "control database backed up");
        Ok(final_path)
    }

    /// Copies one snapshot of the database to `dest`; returns the snapshot's schema version.
    fn copy_snapshot(&self, dest: &Path) -> Result<u32> {
        let source = Connection::open_with_flags(
            self.path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        source.busy_timeout(BUSY_TIMEOUT)?;
        // Start the read transaction now: everything committed before this call is in it.
        source.execute_batch("BEGIN DEFERRED")?;
        source.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        let schema_version = user_version(&source)?;

        let mut copy = Connection::open(dest)?;
        {
            let backup = Backup::new(&source, &mut copy)?;
            run_backup(&backup)?;
        }
        // The copied header says WAL; make the archived file a self-contained rollback-journal
        // database, so it opens anywhere without a -wal file.
        let mode: String = copy.pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(ControlError::Io(io::Error::other(format!(
                "backup copy kept journal mode {mode:?}"
            ))));
        }
        copy.close().map_err(|(_, e)| e)?;
        source.execute_batch("COMMIT")?;
        Ok(schema_version)
    }
}

/// Steps until done. With the source's snapshot pinned, every step must shrink what remains; a
/// step that does not would mean the backup restarted, and looping on it could never end.
fn run_backup(backup: &Backup<'_, '_>) -> Result<()> {
    let mut remaining_before = i32::MAX;
    let mut busy_retries = 0;
    loop {
        fail::fail_point!("control::backup_copy", |_| Err(ControlError::Io(io::Error::other(
            "failpoint control::backup_copy"
        ))));
        match backup.step(PAGES_PER_STEP)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {
                let remaining = backup.progress().remaining;
                if remaining >= remaining_before {
                    return Err(ControlError::Io(io::Error::other(
                        "control database backup restarted although its snapshot was pinned",
                    )));
                }
                remaining_before = remaining;
            }
            StepResult::Busy | StepResult::Locked => {
                busy_retries += 1;
                if busy_retries > BUSY_RETRIES_MAX {
                    return Err(ControlError::Io(io::Error::other(
                        "control database backup stayed busy; another connection holds a lock",
                    )));
                }
                std::thread::sleep(BUSY_RETRY_PAUSE);
            }
            other => {
                return Err(ControlError::Io(io::Error::other(format!(
                    "unexpected backup step result {other:?}"
                ))));
            }
        }
    }
}

/// Writes the zip into `file`; the caller syncs and renames it.
fn write_zip(file: &mut File, db_copy: &Path, descriptor: &Value, created_at_ms: i64) -> Result<()> {
    let mut zip = ZipWriter::new(BufWriter::new(file));
    let mut copy = File::open(db_copy)?;
    let copy_bytes = copy.metadata()?.len();
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(zip_time(created_at_ms));
    zip.start_file(DB_FILE_NAME, options.large_file(copy_bytes >= u64::from(u32::MAX)))?;
    io::copy(&mut copy, &mut zip)?;
    zip.start_file(DESCRIPTOR_NAME, options)?;
    serde_json::to_writer_pretty(&mut zip, descriptor).map_err(io::Error::other)?;
    zip.finish()?.into_inner().map_err(io::IntoInnerError::into_error)?;
    // Written whole, not yet synced: where a failed fsync would strike.
    fail::fail_point!("control::backup", |_| Err(ControlError::Io(io::Error::other(
        "failpoint control::backup"
    ))));
    Ok(())
}

/// The first `controldb<ms>.zip` name not taken, starting now.
fn unused_millis(location: &Path) -> Result<i64> {
    let now = now_ms();
    for offset in 0..NAME_ATTEMPTS_MAX {
        let millis = now.saturating_add(offset);
        if !location.join(format!("controldb{millis}.zip")).try_exists()? {
            return Ok(millis);
        }
    }
    Err(ControlError::AlreadyExists {
        kind: "backup",
        name: format!("{}/controldb{now}.zip", location.display()),
    })
}

/// Zip entries carry a DOS time (no zone); UTC is used. Out of range (before 1980) gives 1980.
fn zip_time(epoch_ms: i64) -> DateTime {
    let seconds = epoch_ms.div_euclid(1000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let time = (
        u16::try_from(year),
        u8::try_from(second_of_day / 3600),
        u8::try_from(second_of_day % 3600 / 60),
        u8::try_from(second_of_day % 60),
    );
    match time {
        (Ok(year), Ok(hour), Ok(minute), Ok(second)) => {
            DateTime::from_date_and_time(year, month, day, hour, minute, second).unwrap_or_default()
        }
        _ => DateTime::default(),
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (year, u8::try_from(month).unwrap_or(1), u8::try_from(day).unwrap_or(1))
}

/// Files removed when dropped (on success they are gone already: renamed or never created).
#[derive(Default)]
struct Temporaries(Vec<PathBuf>);

impl Temporaries {
    fn add(&mut self, path: PathBuf) -> PathBuf {
        self.0.push(path.clone());
        path
    }

    fn remove_all(&self) {
        for path in &self.0 {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary backup file"),
            }
        }
    }
}

impl Drop for Temporaries {
    fn drop(&mut self) {
        self.remove_all();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::backups::BackupRecord;
    use crate::db::tests::open_temp;
    use crate::schema::MIGRATIONS;

    /// Extracts the zip into a fresh directory; returns it, the database path and the descriptor.
    fn unpack(zip_path: &Path) -> (tempfile::TempDir, PathBuf, Value) {
        let mut archive = zip::ZipArchive::new(File::open(zip_path).expect("open zip")).expect("read zip");
        let mut names: Vec<_> = archive
            .file_names()
            .map(|n| n.expect("entry name").into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [DESCRIPTOR_NAME, DB_FILE_NAME]);
        let mut json = String::new();
        archive
            .by_name(DESCRIPTOR_NAME)
            .expect("descriptor")
            .read_to_string(&mut json)
            .expect("read descriptor");
        let descriptor: Value = serde_json::from_str(&json).expect("descriptor is JSON");
        let out = tempfile::tempdir().expect("tempdir");
        archive.extract(out.path()).expect("extract");
        let db_path = out.path().join(DB_FILE_NAME);
        (out, db_path, descriptor)
    }

    fn integrity(conn: &Connection) -> String {
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity")
    }

    fn is_backup_name(name: &str) -> bool {
        name.strip_prefix("controldb")
            .and_then(|rest| rest.strip_suffix(".zip"))
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    }

    #[test]
    fn backup_during_concurrent_writes_holds_everything_committed_before() {
        let (_dir, db) = open_temp();
        let db = Arc::new(db);
        let target = tempfile::tempdir().expect("tempdir");
        let location = target.path().join("backups/control");
        let committed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));

        let writer = {
            let (db, committed, stop) = (db.clone(), committed.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..100_000usize {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    db.ensure_context(&format!("w{i}")).expect("write context");
                    db.record_backup(&BackupRecord {
                        time_ms: i as i64,
                        kind: "log".into(),
                        context: Some(format!("w{i}")),
                        segment_type: None,
                        last_closed_segment: None,
                        last_token: Some(i as i64),
                        detail: None,
                    })
                    .expect("write backup record");
                    committed.store(i + 1, Ordering::SeqCst);
                }
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while committed.load(Ordering::SeqCst) < 20 {
            assert!(std::time::Instant::now() < deadline, "writer made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        let committed_before = committed.load(Ordering::SeqCst);
        let descriptor = serde_json::json!({"node": "myelin-1", "reason": "test"});
        let zip_path = db.backup_zip(&location, descriptor).expect("backup");
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer thread");

        assert!(zip_path.is_absolute(), "{}", zip_path.display());
        assert_eq!(
            zip_path.parent(),
            Some(location.canonicalize().expect("canon").as_path())
        );
        let name = zip_path.file_name().and_then(|n| n.to_str()).expect("file name");
        assert!(is_backup_name(name), "{name}");
        let entries: Vec<_> = fs::read_dir(&location)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries, [std::ffi::OsString::from(name)], "no temporary files left");

        let (_out, db_path, descriptor) = unpack(&zip_path);
        assert_eq!(descriptor["node"], "myelin-1");
        assert_eq!(descriptor["reason"], "test");
        assert_eq!(descriptor["schemaVersion"], MIGRATIONS.len());
        let created_at = descriptor["createdAt"].as_i64().expect("createdAt is a number");
        assert_eq!(name, format!("controldb{created_at}.zip"));

        let conn = Connection::open(&db_path).expect("open copy");
        assert_eq!(integrity(&conn), "ok");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "delete", "the archived file needs no -wal file");
        for i in 0..committed_before {
            let context: i64 = conn
                .query_row(
                    "SELECT count(*) FROM contexts WHERE name = ?1",
                    [format!("w{i}")],
                    |r| r.get(0),
                )
                .expect("query");
            assert_eq!(context, 1, "context w{i} committed before the backup is missing");
            let record: i64 = conn
                .query_row("SELECT count(*) FROM backups WHERE last_token = ?1", [i as i64], |r| {
                    r.get(0)
                })
                .expect("query");
            assert_eq!(record, 1, "backup record {i} committed before the backup is missing");
        }
    }

    #[test]
    fn copy_opens_as_a_control_db() {
        let (_dir, db) = open_temp();
        db.upsert_user("alice", "pw", &[]).expect("user");
        let target = tempfile::tempdir().expect("tempdir");
        let zip_path = db.backup_zip(target.path(), Value::Null).expect("backup");
        let (out, _db_path, descriptor) = unpack(&zip_path);
        assert_eq!(descriptor.as_object().expect("object").len(), 2, "{descriptor}");
        let restored = ControlDb::open(out.path()).expect("open restored");
        assert!(restored.verify_user("alice", "pw").expect("verify").is_some());
    }

    #[test]
    fn successive_backups_get_distinct_names() {
        let (_dir, db) = open_temp();
        let target = tempfile::tempdir().expect("tempdir");
        let first = db.backup_zip(target.path(), Value::Null).expect("backup");
        let second = db.backup_zip(target.path(), Value::Null).expect("backup");
        let third = db.backup_zip(target.path(), Value::Null).expect("backup");
        assert!(first != second && second != third && first != third);
        assert!(first.is_file() && second.is_file() && third.is_file());
    }

    #[test]
    fn non_object_descriptor_is_rejected_before_writing() {
        let (_dir, db) = open_temp();
        let target = tempfile::tempdir().expect("tempdir");
        let location = target.path().join("never-created");
        for bad in [serde_json::json!([1]), serde_json::json!("x"), serde_json::json!(3)] {
            assert!(matches!(db.backup_zip(&location, bad), Err(ControlError::Invalid(_))));
        }
        assert!(!location.exists());
    }

    #[test]
    fn location_that_is_a_file_is_an_io_error() {
        let (_dir, db) = open_temp();
        let target = tempfile::tempdir().expect("tempdir");
        let file = target.path().join("plain-file");
        fs::write(&file, b"x").expect("write");
        assert!(matches!(db.backup_zip(&file, Value::Null), Err(ControlError::Io(_))));
    }

    #[test]
    fn zip_times_are_utc_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2024-02-29 13:14:15 UTC; DOS times count seconds in steps of two.
        let time = zip_time(1_709_212_455_000);
        assert_eq!(
            (
                time.year(),
                time.month(),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            ),
            (2024, 2, 29, 13, 14, 14)
        );
        assert_eq!(
            zip_time(0),
            DateTime::default(),
            "before 1980 falls back to the DOS epoch"
        );
    }
}
