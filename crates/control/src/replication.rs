//! Replication state per group, for the cluster work: the highest log index known committed.

use rusqlite::{OptionalExtension, params};

use crate::db::{ControlDb, now_ms};
use crate::error::{ControlError, Result};
use crate::validate::validate_name;

impl ControlDb {
    /// Records the commit index of a replication group (created on first use). Indexes are
    /// never negative; whether they only grow is the replication layer's rule to keep.
    pub fn set_commit_index(&self, group: &str, index: i64) -> Result<()> {
        validate_name("replication group", group)?;
        if index < 0 {
            return Err(ControlError::Invalid(format!(
                "commit index of group {group:?} must be at least 0, got {index}"
            )));
        }
        self.lock().execute(
            "INSERT INTO replication_groups (name, commit_index, updated_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET commit_index = excluded.commit_index,
                                              updated_at_ms = excluded.updated_at_ms",
            params![group, index, now_ms()],
        )?;
        Ok(())
    }

    pub fn commit_index(&self, group: &str) -> Result<Option<i64>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT commit_index FROM replication_groups WHERE name = ?1",
                [group],
                |row| row.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::open_temp;

    #[test]
    fn set_and_get_commit_index() {
        let (_dir, db) = open_temp();
        assert_eq!(db.commit_index("_admin").expect("get"), None);
        db.set_commit_index("_admin", 0).expect("set");
        assert_eq!(db.commit_index("_admin").expect("get"), Some(0));
        db.set_commit_index("_admin", 42).expect("set");
        db.set_commit_index("orders", 7).expect("set");
        assert_eq!(db.commit_index("_admin").expect("get"), Some(42));
        assert_eq!(db.commit_index("orders").expect("get"), Some(7));
    }

    #[test]
    fn bad_commit_index_is_rejected() {
        let (_dir, db) = open_temp();
        db.set_commit_index("g", 5).expect("set");
        assert!(matches!(db.set_commit_index("g", -1), Err(ControlError::Invalid(_))));
        assert!(matches!(db.set_commit_index("", 1), Err(ControlError::Invalid(_))));
        assert!(matches!(db.set_commit_index("a\nb", 1), Err(ControlError::Invalid(_))));
        assert_eq!(db.commit_index("g").expect("get"), Some(5));
    }
}
