//! Applications for token authentication. Only the SHA-256 of each token is stored; the clear
//! token is returned once, when created or rotated.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::access::Grant;
use crate::db::{ControlDb, normalize_grants, now_ms, stored_grants, write_tx};
use crate::error::{ControlError, Result};
use crate::validate::validate_name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationRecord {
    pub name: String,
    pub description: String,
    pub roles: Vec<Grant>,
    pub created_at_ms: i64,
}

/// Random bytes per token: 256 bits, so tokens cannot be guessed and their plain SHA-256 (no
/// salt, no slow hash) is safe to store.
const TOKEN_BYTES: usize = 32;
/// Longest description in UTF-8 bytes.
const DESCRIPTION_BYTES_MAX: usize = 4096;
/// Presented tokens longer than this are not ours (ours are 43 characters); no need to hash them.
const PRESENTED_TOKEN_BYTES_MAX: usize = 1024;

type TokenHash = [u8; 32];

impl ControlDb {
    /// Creates an application and returns its clear-text token, which is not stored and cannot
    /// be shown again. [`ControlError::AlreadyExists`] if the name is taken.
    pub fn create_application(&self, name: &str, description: &str, roles: &[Grant]) -> Result<String> {
        validate_name("application", name)?;
        if description.len() > DESCRIPTION_BYTES_MAX {
            return Err(ControlError::Invalid(format!(
                "description of application {name:?} is {} bytes long; at most {DESCRIPTION_BYTES_MAX} are allowed",
                description.len()
            )));
        }
        let roles = normalize_grants(roles)?;
        let (token, token_hash) = new_token()?;
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let inserted = tx.execute(
            "INSERT INTO applications (name, description, token_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![name, description, token_hash, now_ms()],
        )?;
        if inserted == 0 {
            return Err(ControlError::AlreadyExists {
                kind: "application",
                name: name.into(),
            });
        }
        {
            let mut insert =
                tx.prepare("INSERT INTO application_roles (application, context, role) VALUES (?1, ?2, ?3)")?;
            for grant in &roles {
                insert.execute(params![name, grant.context, grant.role.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(token)
    }

    /// Every application with its roles, sorted by name. Tokens are not included (not stored).
    pub fn applications(&self) -> Result<Vec<ApplicationRecord>> {
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT name, description, created_at_ms FROM applications ORDER BY name")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        let mut applications = Vec::new();
        for row in rows {
            let (name, description, created_at_ms): (String, String, i64) = row?;
            let roles = roles_of(&conn, &name)?;
            applications.push(ApplicationRecord {
                name,
                description,
                roles,
                created_at_ms,
            });
        }
        Ok(applications)
    }

    /// Deletes the application and its roles; its token stops working. Returns whether it existed.
    pub fn delete_application(&self, name: &str) -> Result<bool> {
        let deleted = self
            .lock()
            .execute("DELETE FROM applications WHERE name = ?1", [name])?;
        Ok(deleted == 1)
    }

    /// Gives the application a new token and returns it; the old one stops working at once.
    pub fn rotate_token(&self, name: &str) -> Result<String> {
        let (token, token_hash) = new_token()?;
        let updated = self.lock().execute(
            "UPDATE applications SET token_hash = ?1 WHERE name = ?2",
            params![token_hash, name],
        )?;
        if updated == 0 {
            return Err(ControlError::NotFound {
                kind: "application",
                name: name.into(),
            });
        }
        Ok(token)
    }

    /// The application whose token this is, or `None`.
    ///
    /// The presented token is hashed and compared with every stored hash in constant time, with
    /// no early exit, so timing reveals neither whether nor where a hash matched.
    pub fn verify_token(&self, token: &str) -> Result<Option<ApplicationRecord>> {
        if token.is_empty() || token.len() > PRESENTED_TOKEN_BYTES_MAX {
            return Ok(None);
        }
        let presented = hash_token(token);
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT rowid, token_hash FROM applications")?;
        let rows = statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))?;
        let mut found = Choice::from(0);
        let mut found_rowid = 0i64;
        for row in rows {
            let (rowid, stored) = row?;
            let stored: TokenHash = stored
                .try_into()
                .map_err(|_| ControlError::Corrupt(format!("token hash of application row {rowid} is not 32 bytes")))?;
            let matches = stored.ct_eq(&presented);
            found_rowid.conditional_assign(&rowid, matches);
            found |= matches;
        }
        if !bool::from(found) {
            return Ok(None);
        }
        application_by_rowid(&conn, found_rowid)
    }
}

fn application_by_rowid(conn: &Connection, rowid: i64) -> Result<Option<ApplicationRecord>> {
    let row = conn
        .query_row(
            "SELECT name, description, created_at_ms FROM applications WHERE rowid = ?1",
            [rowid],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((name, description, created_at_ms)) = row else {
        return Ok(None);
    };
    let roles = roles_of(conn, &name)?;
    Ok(Some(ApplicationRecord {
        name,
        description,
        roles,
        created_at_ms,
    }))
}

fn roles_of(conn: &Connection, name: &str) -> Result<Vec<Grant>> {
    stored_grants(
        conn,
        "SELECT context, role FROM application_roles WHERE application = ?1",
        name,
    )
}

/// 32 random bytes as URL-safe base64 without padding (43 characters), and its hash.
fn new_token() -> Result<(String, TokenHash)> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ControlError::Crypto(format!("no random token: {e}")))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    Ok((token, hash))
}

fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::db::tests::open_temp;

    #[test]
    fn token_is_returned_once_and_only_its_hash_is_stored() {
        let (_dir, db) = open_temp();
        let token = db
            .create_application("billing", "Billing service", &[Grant::new("orders", Role::UseContext)])
            .expect("create");
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );

        let stored: Vec<u8> = db
            .lock()
            .query_row("SELECT token_hash FROM applications", [], |r| r.get(0))
            .expect("hash");
        assert_eq!(stored, hash_token(&token).to_vec());

        // Checkpoint so every byte is in the main file, then grep the files for the token.
        db.lock()
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .expect("checkpoint");
        let dir = db.path().parent().expect("dir");
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(!contains(&bytes, token.as_bytes()), "clear token found on disk");
        }
        let main_file = std::fs::read(db.path()).expect("read db");
        assert!(
            contains(&main_file, b"Billing service"),
            "the grep must see the table's content"
        );

        let app = db.verify_token(&token).expect("verify").expect("known");
        assert_eq!(app.name, "billing");
        assert_eq!(app.description, "Billing service");
        assert_eq!(app.roles, vec![Grant::new("orders", Role::UseContext)]);
        assert!(app.created_at_ms > 0);
        assert_eq!(db.applications().expect("list"), vec![app]);
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn tokens_differ_and_identify_their_application() {
        let (_dir, db) = open_temp();
        let a = db.create_application("a", "", &[]).expect("a");
        let b = db
            .create_application("b", "", &[Grant::new("*", Role::Read)])
            .expect("b");
        let c = db.create_application("c", "", &[]).expect("c");
        assert!(a != b && b != c && a != c);
        assert_eq!(db.verify_token(&a).expect("verify").expect("a").name, "a");
        assert_eq!(db.verify_token(&b).expect("verify").expect("b").name, "b");
        assert_eq!(db.verify_token(&c).expect("verify").expect("c").name, "c");
        let mut tampered = b.clone();
        tampered.pop();
        for unknown in [String::new(), tampered, "x".repeat(2000), format!("{b} ")] {
            assert_eq!(db.verify_token(&unknown).expect("verify"), None);
        }
    }

    #[test]
    fn rotate_invalidates_old_token() {
        let (_dir, db) = open_temp();
        let old = db.create_application("app", "", &[]).expect("create");
        let new = db.rotate_token("app").expect("rotate");
        assert_ne!(old, new);
        assert_eq!(db.verify_token(&old).expect("verify"), None);
        assert_eq!(db.verify_token(&new).expect("verify").expect("known").name, "app");
        let err = db.rotate_token("missing").err();
        assert!(
            matches!(err, Some(ControlError::NotFound { kind: "application", ref name }) if name == "missing"),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_and_bad_applications_are_rejected() {
        let (_dir, db) = open_temp();
        let token = db.create_application("app", "first", &[]).expect("create");
        let err = db.create_application("app", "second", &[]).err();
        assert!(
            matches!(
                err,
                Some(ControlError::AlreadyExists {
                    kind: "application",
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(
            db.verify_token(&token).expect("verify").expect("kept").description,
            "first"
        );

        for (name, description, roles) in [
            ("", "", vec![]),
            ("tab\tname", "", vec![]),
            ("x", &*"d".repeat(DESCRIPTION_BYTES_MAX + 1), vec![]),
            ("x", "", vec![Grant::new("", Role::Read)]),
        ] {
            assert!(matches!(
                db.create_application(name, description, &roles),
                Err(ControlError::Invalid(_))
            ));
        }
        assert_eq!(db.applications().expect("list").len(), 1);
    }

    #[test]
    fn delete_application() {
        let (_dir, db) = open_temp();
        let token = db
            .create_application("app", "", &[Grant::new("*", Role::Admin)])
            .expect("create");
        assert!(db.delete_application("app").expect("delete"));
        assert!(!db.delete_application("app").expect("delete again"));
        assert_eq!(db.verify_token(&token).expect("verify"), None);
        let grants: i64 = db
            .lock()
            .query_row("SELECT count(*) FROM application_roles", [], |r| r.get(0))
            .expect("count");
        assert_eq!(grants, 0, "ON DELETE CASCADE");
    }
}
