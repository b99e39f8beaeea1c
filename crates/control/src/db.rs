//! [`ControlDb`]: opening the file, connection settings, migrations, and the helpers every table
//! module shares.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::access::{Grant, Role};
use crate::error::{ControlError, Result};
use crate::schema::MIGRATIONS;

/// The database file's name inside the control directory.
pub const DB_FILE_NAME: &str = "myelin-controldb.sqlite3";

/// How long a statement waits for a lock held by another connection before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The control database. `Send + Sync`: share it in an `Arc`. Every call runs SQLite (and, for
/// users, argon2) synchronously, so async callers should use a blocking thread.
///
/// One connection behind a mutex serves all calls: the data is small and writes are rare, so the
/// simplicity is worth more than concurrent readers. Online backups use their own read-only
/// connection so that they never hold this mutex.
pub struct ControlDb {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Bumped after every committed change to users or their grants; [`crate::AccessControl`]
    /// drops its cache of verified passwords when it sees a new value.
    users_generation: AtomicU64,
    /// One online backup at a time, so two never pick the same file name.
    pub(crate) backup_lock: Mutex<()>,
}

impl ControlDb {
    /// Creates `dir` if needed, opens or creates `dir/DB_FILE_NAME` and applies pending migrations.
    pub fn open(dir: &Path) -> Result<ControlDb> {
        fs::create_dir_all(dir)?;
        let path = fs::canonicalize(dir)?.join(DB_FILE_NAME);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Refuse a newer file before any pragma below can rewrite its header.
        check_version(user_version(&conn)?)?;
        configure(&conn, &path)?;
        migrate(&mut conn)?;
        tracing::debug!(path = %path.display(), version = MIGRATIONS.len(), "control database open");
        Ok(ControlDb {
            conn: Mutex::new(conn),
            path,
            users_generation: AtomicU64::new(0),
            backup_lock: Mutex::new(()),
        })
    }

    /// The absolute path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32> {
        user_version(&self.conn.lock())
    }

    /// A counter that changes after every committed change to users or their role grants
    /// (including grants removed by [`ControlDb::delete_context`]). Caches of authenticated users
    /// compare it to know when to forget what they hold.
    pub fn users_generation(&self) -> u64 {
        self.users_generation.load(Ordering::Acquire)
    }

    pub(crate) fn users_changed(&self) {
        self.users_generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }
}

/// Begins a write transaction that takes the write lock at once: a deferred one that reads first
/// could fail with SQLITE_BUSY on upgrade instead of waiting for the busy timeout.
pub(crate) fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

fn configure(conn: &Connection, path: &Path) -> Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ControlError::Io(io::Error::other(format!(
            "{} cannot use the WAL journal (SQLite kept {mode:?}); put the control directory on a local file system",
            path.display()
        ))));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let supported = supported_version()?;
    // Each pass applies one migration; the bound makes a version that never advances an error.
    for _ in 0..=MIGRATIONS.len() {
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let tx = write_tx(conn)?;
        let version = user_version(&tx)?;
        check_version(version)?;
        if version == supported {
            tx.commit()?;
            return Ok(());
        }
        let index =
            usize::try_from(version).map_err(|_| ControlError::Corrupt("schema version out of range".into()))?;
        let sql = MIGRATIONS
            .get(index)
            .ok_or_else(|| ControlError::Corrupt(format!("no migration from schema version {version}")))?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(from = version, to = version + 1, "control database schema migrated");
    }
    Err(ControlError::Corrupt(
        "schema version did not advance during migration".into(),
    ))
}

fn supported_version() -> Result<u32> {
    u32::try_from(MIGRATIONS.len()).map_err(|_| ControlError::Corrupt("too many migrations".into()))
}

fn check_version(found: u32) -> Result<()> {
    let supported = supported_version()?;
    if found > supported {
        return Err(ControlError::SchemaTooNew { found, supported });
    }
    Ok(())
}

pub(crate) fn user_version(conn: &Connection) -> Result<u32> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    u32::try_from(version).map_err(|_| ControlError::Corrupt(format!("schema version {version} is negative")))
}

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970 rather than a panic.
/// Milliseconds since the Unix epoch (0 if the clock is before it), the time unit of every
/// timestamp the control database and the backup tools record.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The grants of `owner`, sorted, read with `query` (one `?1` parameter, selecting context
/// and role from a grant table).
pub(crate) fn stored_grants(conn: &Connection, query: &str, owner: &str) -> Result<Vec<Grant>> {
    let mut statement = conn.prepare(query)?;
    let rows = statement.query_map([owner], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
    let mut grants = Vec::new();
    for row in rows {
        let (context, role) = row?;
        grants.push(stored_grant(owner, context, &role)?);
    }
    grants.sort();
    Ok(grants)
}

/// Parses a role read back from a grant table; the CHECK constraint makes failure a corruption.
pub(crate) fn stored_grant(owner: &str, context: String, role: &str) -> Result<Grant> {
    let role: Role = role
        .parse()
        .map_err(|_| ControlError::Corrupt(format!("unknown role {role:?} granted to {owner:?}")))?;
    Ok(Grant { context, role })
}

/// Sorted, duplicate-free grants with every context checked, ready to store.
pub(crate) fn normalize_grants(grants: &[Grant]) -> Result<Vec<Grant>> {
    for grant in grants {
        crate::validate::validate_grant_context(&grant.context)?;
    }
    let mut grants = grants.to_vec();
    grants.sort();
    grants.dedup();
    Ok(grants)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn open_temp() -> (tempfile::TempDir, ControlDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = ControlDb::open(dir.path()).expect("open");
        (dir, db)
    }

    #[test]
    fn fresh_open_is_latest_version_with_durable_settings() {
        let (dir, db) = open_temp();
        assert_eq!(db.schema_version().expect("version"), MIGRATIONS.len() as u32);
        assert!(db.path().is_absolute());
        assert_eq!(db.path(), dir.path().canonicalize().expect("canon").join(DB_FILE_NAME));
        let conn = db.lock();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("sync");
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).expect("fk");
        assert_eq!(fk, 1);
    }

    #[test]
    fn open_creates_missing_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b/c");
        let db = ControlDb::open(&nested).expect("open");
        assert!(nested.join(DB_FILE_NAME).is_file());
        assert!(db.path().starts_with(nested.canonicalize().expect("canon")));
    }

    #[test]
    fn reopen_keeps_data_and_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = ControlDb::open(dir.path()).expect("open");
            db.ensure_context("kept").expect("ensure");
        }
        let db = ControlDb::open(dir.path()).expect("reopen");
        assert_eq!(db.schema_version().expect("version"), MIGRATIONS.len() as u32);
        assert!(db.context("kept").expect("context").is_some());
    }

    #[test]
    fn newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DB_FILE_NAME);
        let future = MIGRATIONS.len() as i64 + 1;
        {
            let conn = Connection::open(&path).expect("raw open");
            conn.pragma_update(None, "user_version", future).expect("set version");
        }
        match ControlDb::open(dir.path()) {
            Err(ControlError::SchemaTooNew { found, supported }) => {
                assert_eq!(i64::from(found), future);
                assert_eq!(supported as usize, MIGRATIONS.len());
            }
            Err(other) => panic!("expected SchemaTooNew, got {other}"),
            Ok(_) => panic!("expected SchemaTooNew, got an open database"),
        }
        let conn = Connection::open(&path).expect("raw open");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("mode");
        assert_ne!(mode, "wal", "a refused file must not be switched to WAL");
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .expect("count");
        assert_eq!(tables, 0, "a refused file must not be migrated");
    }

    #[test]
    fn partially_migrated_file_is_completed() {
        // A file at version 0 with no tables (e.g. created by a crash right after open) migrates.
        let dir = tempfile::tempdir().expect("tempdir");
        Connection::open(dir.path().join(DB_FILE_NAME)).expect("raw open");
        let db = ControlDb::open(dir.path()).expect("open");
        assert_eq!(db.schema_version().expect("version"), MIGRATIONS.len() as u32);
    }

    #[test]
    fn control_db_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ControlDb>();
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
