//! Contexts: the named event stores this server hosts.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::db::{ControlDb, now_ms, write_tx};
use crate::error::{ControlError, Result};
use crate::validate::validate_context_name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextRecord {
    pub name: String,
    pub created_at_ms: i64,
    pub metadata: BTreeMap<String, String>,
}

const SELECT_CONTEXT: &str = "SELECT name, created_at_ms, metadata FROM contexts";

impl ControlDb {
    /// Creates a context; [`ControlError::AlreadyExists`] if one has that name.
    pub fn create_context(&self, name: &str, metadata: &BTreeMap<String, String>) -> Result<ContextRecord> {
        validate_context_name(name)?;
        let metadata_json = serde_json::to_string(metadata)
            .map_err(|e| ControlError::Invalid(format!("context metadata cannot be stored: {e}")))?;
        let created_at_ms = now_ms();
        let inserted = self.lock().execute(
            "INSERT INTO contexts (name, created_at_ms, metadata) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, created_at_ms, metadata_json],
        )?;
        if inserted == 0 {
            return Err(ControlError::AlreadyExists {
                kind: "context",
                name: name.into(),
            });
        }
        Ok(ContextRecord {
            name: name.into(),
            created_at_ms,
            metadata: metadata.clone(),
        })
    }

    /// Creates the context unless it exists (contexts named in configuration). Returns whether
    /// it was created by this call.
    pub fn ensure_context(&self, name: &str) -> Result<bool> {
        validate_context_name(name)?;
        let inserted = self.lock().execute(
            "INSERT INTO contexts (name, created_at_ms, metadata) VALUES (?1, ?2, '{}') ON CONFLICT (name) DO NOTHING",
            params![name, now_ms()],
        )?;
        Ok(inserted == 1)
    }

    /// Every context, sorted by name.
    pub fn contexts(&self) -> Result<Vec<ContextRecord>> {
        let conn = self.lock();
        let mut statement = conn.prepare(&format!("{SELECT_CONTEXT} ORDER BY name"))?;
        let rows = statement.query_map([], raw_context)?;
        let mut contexts = Vec::new();
        for row in rows {
            contexts.push(parse_context(row?)?);
        }
        Ok(contexts)
    }

    pub fn context(&self, name: &str) -> Result<Option<ContextRecord>> {
        let raw = self
            .lock()
            .query_row(&format!("{SELECT_CONTEXT} WHERE name = ?1"), [name], raw_context)
            .optional()?;
        raw.map(parse_context).transpose()
    }

    /// Deletes the context and every user and application grant naming it, in one transaction.
    /// Returns whether the context existed. Event data on disk is not this crate's business.
    pub fn delete_context(&self, name: &str) -> Result<bool> {
        // A name that could never have been created names nothing (and "*" must not match grants).
        if validate_context_name(name).is_err() {
            return Ok(false);
        }
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        tx.execute("DELETE FROM user_roles WHERE context = ?1", [name])?;
        tx.execute("DELETE FROM application_roles WHERE context = ?1", [name])?;
        let deleted = tx.execute("DELETE FROM contexts WHERE name = ?1", [name])?;
        tx.commit()?;
        self.users_changed();
        Ok(deleted == 1)
    }
}

type RawContext = (String, i64, String);

fn raw_context(row: &Row<'_>) -> rusqlite::Result<RawContext> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn parse_context((name, created_at_ms, metadata): RawContext) -> Result<ContextRecord> {
    let metadata = serde_json::from_str(&metadata)
        .map_err(|e| ControlError::Corrupt(format!("metadata of context {name:?} is not a JSON string map: {e}")))?;
    Ok(ContextRecord {
        name,
        created_at_ms,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Grant, Role};
    use crate::db::tests::open_temp;

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn create_get_list() {
        let (_dir, db) = open_temp();
        let meta = metadata(&[("event.index-format", "JUMP_SKIP_INDEX"), ("owner", "ops")]);
        let created = db.create_context("orders", &meta).expect("create");
        assert_eq!(created.name, "orders");
        assert_eq!(created.metadata, meta);
        assert!(created.created_at_ms > 0);
        assert_eq!(db.context("orders").expect("get"), Some(created.clone()));
        assert_eq!(db.context("missing").expect("get"), None);

        db.create_context("billing", &BTreeMap::new()).expect("create");
        db.create_context("default", &BTreeMap::new()).expect("create");
        let names: Vec<_> = db.contexts().expect("list").into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["billing", "default", "orders"]);
    }

    #[test]
    fn duplicate_context_is_already_exists_and_keeps_original() {
        let (_dir, db) = open_temp();
        db.create_context("orders", &metadata(&[("a", "1")])).expect("create");
        let err = db.create_context("orders", &metadata(&[("a", "2")])).err();
        assert!(
            matches!(err, Some(ControlError::AlreadyExists { kind: "context", ref name }) if name == "orders"),
            "{err:?}"
        );
        let kept = db.context("orders").expect("get").expect("present");
        assert_eq!(kept.metadata, metadata(&[("a", "1")]));
    }

    #[test]
    fn bad_context_names_are_rejected_and_store_nothing() {
        let (_dir, db) = open_temp();
        for bad in ["", "_admin", "has space", "a/b", &"x".repeat(256)] {
            assert!(matches!(
                db.create_context(bad, &BTreeMap::new()),
                Err(ControlError::Invalid(_))
            ));
            assert!(matches!(db.ensure_context(bad), Err(ControlError::Invalid(_))));
        }
        assert!(db.contexts().expect("list").is_empty());
    }

    #[test]
    fn ensure_context_reports_creation_once() {
        let (_dir, db) = open_temp();
        assert!(db.ensure_context("default").expect("ensure"));
        assert!(!db.ensure_context("default").expect("ensure"));
        let record = db.context("default").expect("get").expect("present");
        assert!(record.metadata.is_empty());
    }

    #[test]
    fn delete_context_removes_its_grants_only() {
        let (_dir, db) = open_temp();
        db.ensure_context("orders").expect("ensure");
        db.ensure_context("billing").expect("ensure");
        let grants = [
            Grant::new("orders", Role::Read),
            Grant::new("billing", Role::Write),
            Grant::new("*", Role::Read),
        ];
        db.upsert_user("alice", "pw", &grants).expect("user");
        db.create_application("app", "", &grants).expect("app");

        assert!(db.delete_context("orders").expect("delete"));
        assert!(!db.delete_context("orders").expect("delete again"));
        assert!(!db.delete_context("never-existed").expect("delete unknown"));
        assert!(!db.delete_context("*").expect("delete star"));
        assert_eq!(db.context("orders").expect("get"), None);
        assert!(db.context("billing").expect("get").is_some());

        let expected = vec![Grant::new("*", Role::Read), Grant::new("billing", Role::Write)];
        assert_eq!(db.users().expect("users")[0].roles, expected);
        assert_eq!(db.applications().expect("apps")[0].roles, expected);
    }

    #[test]
    fn corrupt_metadata_is_reported_not_served() {
        let (_dir, db) = open_temp();
        db.ensure_context("orders").expect("ensure");
        db.lock()
            .execute("UPDATE contexts SET metadata = 'not json' WHERE name = 'orders'", [])
            .expect("corrupt");
        assert!(matches!(db.context("orders"), Err(ControlError::Corrupt(_))));
        assert!(matches!(db.contexts(), Err(ControlError::Corrupt(_))));
    }
}
