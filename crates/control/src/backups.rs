//! The history of backups: what each one covered, so the next one can copy only what is new and an
//! operator can see when a context was last backed up.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::db::ControlDb;
use crate::error::{ControlError, Result};
use crate::validate::validate_context_name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    pub time_ms: i64,
    /// One of [`BackupRecord::KINDS`].
    pub kind: String,
    pub context: Option<String>,
    /// `EVENT` or `SNAPSHOT`, for segment backups.
    pub segment_type: Option<String>,
    pub last_closed_segment: Option<i64>,
    pub last_token: Option<i64>,
    pub detail: Option<String>,
}

impl BackupRecord {
    /// The REST backup requests, and `restore`: a backup laid down by `myelin restore`.
    pub const KINDS: [&'static str; 5] = ["filenames", "eventstore", "controldb", "log", "restore"];
    pub const SEGMENT_TYPES: [&'static str; 2] = ["EVENT", "SNAPSHOT"];

    fn validate(&self) -> Result<()> {
        if self.time_ms < 0 {
            return Err(ControlError::Invalid(format!(
                "backup timeMs must be at least 0, got {}",
                self.time_ms
            )));
        }
        if !Self::KINDS.contains(&self.kind.as_str()) {
            return Err(ControlError::Invalid(format!(
                "backup kind {:?} must be one of {:?}",
                self.kind,
                Self::KINDS
            )));
        }
        if let Some(context) = &self.context {
            validate_context_name(context)?;
        }
        if let Some(segment_type) = &self.segment_type
            && !Self::SEGMENT_TYPES.contains(&segment_type.as_str())
        {
            return Err(ControlError::Invalid(format!(
                "backup segmentType {segment_type:?} must be one of {:?}",
                Self::SEGMENT_TYPES
            )));
        }
        Ok(())
    }
}

impl ControlDb {
    pub fn record_backup(&self, record: &BackupRecord) -> Result<()> {
        record.validate()?;
        self.lock().execute(
            "INSERT INTO backups (time_ms, kind, context, segment_type, last_closed_segment, last_token, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                record.time_ms,
                record.kind,
                record.context,
                record.segment_type,
                record.last_closed_segment,
                record.last_token,
                record.detail
            ],
        )?;
        Ok(())
    }

    /// At most `limit` records, newest first (ties: most recently recorded first).
    pub fn backups(&self, limit: usize) -> Result<Vec<BackupRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT time_ms, kind, context, segment_type, last_closed_segment, last_token, detail
             FROM backups ORDER BY time_ms DESC, id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([limit], |row| {
            Ok(BackupRecord {
                time_ms: row.get(0)?,
                kind: row.get(1)?,
                context: row.get(2)?,
                segment_type: row.get(3)?,
                last_closed_segment: row.get(4)?,
                last_token: row.get(5)?,
                detail: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The time of the newest backup of any kind naming `context`.
    pub fn last_backup_ms(&self, context: &str) -> Result<Option<i64>> {
        Ok(self.lock().query_row(
            "SELECT max(time_ms) FROM backups WHERE context = ?1",
            [context],
            |row| row.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::open_temp;

    fn record(time_ms: i64, kind: &str, context: Option<&str>) -> BackupRecord {
        BackupRecord {
            time_ms,
            kind: kind.into(),
            context: context.map(String::from),
            segment_type: None,
            last_closed_segment: None,
            last_token: None,
            detail: None,
        }
    }

    #[test]
    fn records_round_trip_newest_first() {
        let (_dir, db) = open_temp();
        let full = BackupRecord {
            time_ms: 2_000,
            kind: "eventstore".into(),
            context: Some("orders".into()),
            segment_type: Some("SNAPSHOT".into()),
            last_closed_segment: Some(1_000),
            last_token: Some(1_234),
            detail: Some("/backups/orders".into()),
        };
        db.record_backup(&record(1_000, "controldb", None)).expect("record");
        db.record_backup(&full).expect("record");
        db.record_backup(&record(3_000, "log", Some("orders"))).expect("record");
        db.record_backup(&record(3_000, "filenames", Some("billing")))
            .expect("record");

        let all = db.backups(10).expect("list");
        let order: Vec<_> = all.iter().map(|r| (r.time_ms, r.kind.as_str())).collect();
        assert_eq!(
            order,
            [
                (3_000, "filenames"),
                (3_000, "log"),
                (2_000, "eventstore"),
                (1_000, "controldb")
            ]
        );
        assert_eq!(all[2], full);
        assert_eq!(db.backups(2).expect("list").len(), 2);
        assert!(db.backups(0).expect("list").is_empty());
        assert_eq!(db.backups(usize::MAX).expect("list").len(), 4);
    }

    #[test]
    fn last_backup_per_context() {
        let (_dir, db) = open_temp();
        assert_eq!(db.last_backup_ms("orders").expect("last"), None);
        db.record_backup(&record(5_000, "eventstore", Some("orders")))
            .expect("record");
        db.record_backup(&record(7_000, "log", Some("orders"))).expect("record");
        db.record_backup(&record(9_000, "eventstore", Some("billing")))
            .expect("record");
        db.record_backup(&record(9_500, "controldb", None)).expect("record");
        assert_eq!(db.last_backup_ms("orders").expect("last"), Some(7_000));
        assert_eq!(db.last_backup_ms("billing").expect("last"), Some(9_000));
        assert_eq!(db.last_backup_ms("other").expect("last"), None);
    }

    #[test]
    fn bad_records_are_rejected() {
        let (_dir, db) = open_temp();
        let mut bad_segment = record(1, "eventstore", Some("orders"));
        bad_segment.segment_type = Some("event".into());
        for bad in [
            record(-1, "log", None),
            record(1, "everything", None),
            record(1, "", None),
            record(1, "log", Some("bad name")),
            bad_segment,
        ] {
            assert!(
                matches!(db.record_backup(&bad), Err(ControlError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(db.backups(10).expect("list").is_empty());
    }

    #[test]
    fn json_field_names_are_camel_case() {
        let json = serde_json::to_value(record(1, "log", Some("c"))).expect("json");
        for field in [
            "timeMs",
            "kind",
            "context",
            "segmentType",
            "lastClosedSegment",
            "lastToken",
            "detail",
        ] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
    }
}
