//! Users for HTTP basic authentication. Passwords are stored only as argon2id PHC strings.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::access::Grant;
use crate::db::{ControlDb, normalize_grants, stored_grant, stored_grants, write_tx};
use crate::error::{ControlError, Result};
use crate::validate::validate_name;

/// A user as the API shows it: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub name: String,
    pub roles: Vec<Grant>,
}

/// Salt length in bytes; the PHC recommendation.
const SALT_BYTES: usize = 16;

impl ControlDb {
    /// Creates the user or replaces its password and roles (Axon's `POST /v1/users`).
    pub fn upsert_user(&self, name: &str, password: &str, roles: &[Grant]) -> Result<()> {
        validate_name("user", name)?;
        if password.is_empty() {
            return Err(ControlError::Invalid(format!(
                "password of user {name:?} must not be empty"
            )));
        }
        let roles = normalize_grants(roles)?;
        // Hashing takes tens of milliseconds by design: do it before taking the connection.
        let password_hash = hash_password(password)?;
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        tx.execute(
            "INSERT INTO users (name, password_hash) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash",
            params![name, password_hash],
        )?;
        tx.execute("DELETE FROM user_roles WHERE user = ?1", [name])?;
        {
            let mut insert = tx.prepare("INSERT INTO user_roles (user, context, role) VALUES (?1, ?2, ?3)")?;
            for grant in &roles {
                insert.execute(params![name, grant.context, grant.role.as_str()])?;
            }
        }
        tx.commit()?;
        self.users_changed();
        Ok(())
    }

    /// Every user with its roles, sorted by name.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let conn = self.lock();
        let mut users: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
        let mut statement = conn.prepare("SELECT name FROM users")?;
        for name in statement.query_map([], |row| row.get::<_, String>(0))? {
            users.insert(name?, Vec::new());
        }
        let mut statement = conn.prepare("SELECT user, context, role FROM user_roles")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (user, context, role) = row?;
            let grant = stored_grant(&user, context, &role)?;
            let grants = users
                .get_mut(&user)
                .ok_or_else(|| ControlError::Corrupt(format!("role granted to unknown user {user:?}")))?;
            grants.push(grant);
        }
        Ok(users
            .into_iter()
            .map(|(name, mut roles)| {
                roles.sort();
                UserRecord { name, roles }
            })
            .collect())
    }

    /// Deletes the user and its roles. Returns whether it existed.
    pub fn delete_user(&self, name: &str) -> Result<bool> {
        let deleted = self.lock().execute("DELETE FROM users WHERE name = ?1", [name])?;
        self.users_changed();
        Ok(deleted == 1)
    }

    /// The user if `password` is its password (argon2id verification), else `None`.
    ///
    /// An unknown user costs the same argon2 run as a wrong password, so response times do not
    /// reveal which user names exist.
    pub fn verify_user(&self, name: &str, password: &str) -> Result<Option<UserRecord>> {
        // Read hash and roles together, then verify without holding the connection.
        let stored = {
            let conn = self.lock();
            match password_hash_of(&conn, name)? {
                Some(hash) => Some((hash, roles_of(&conn, name)?)),
                None => None,
            }
        };
        let Some((stored_hash, roles)) = stored else {
            if let Some(dummy) = dummy_hash() {
                let _ = verify_password(password, dummy, name);
            }
            return Ok(None);
        };
        if !verify_password(password, &stored_hash, name)? {
            return Ok(None);
        }
        Ok(Some(UserRecord {
            name: name.into(),
            roles,
        }))
    }
}

fn password_hash_of(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT password_hash FROM users WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()?)
}

fn roles_of(conn: &Connection, name: &str) -> Result<Vec<Grant>> {
    stored_grants(conn, "SELECT context, role FROM user_roles WHERE user = ?1", name)
}

/// argon2id (the crate's default algorithm and parameters) with a fresh random salt, as a PHC
/// string that records algorithm, parameters and salt for verification.
fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|e| ControlError::Crypto(format!("no random salt: {e}")))?;
    let hash = Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| ControlError::Crypto(format!("password hashing failed: {e}")))?;
    Ok(hash.to_string())
}

/// `Ok(false)` for a wrong password; an error only when the stored hash cannot be used.
fn verify_password(password: &str, stored_hash: &str, user: &str) -> Result<bool> {
    let parsed = PasswordHash::new(stored_hash)
        .map_err(|e| ControlError::Corrupt(format!("password hash of user {user:?} is not a PHC string: {e}")))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(ControlError::Corrupt(format!(
            "password hash of user {user:?} cannot be verified: {e}"
        ))),
    }
}

/// A hash of a password nobody knows, verified against when the user does not exist.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("myelin: no such user").ok())
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::db::tests::open_temp;

    fn stored_hash(db: &ControlDb, name: &str) -> String {
        password_hash_of(&db.lock(), name).expect("query").expect("present")
    }

    #[test]
    fn password_is_stored_as_argon2id_phc() {
        let (_dir, db) = open_temp();
        db.upsert_user("alice", "correct horse", &[]).expect("upsert");
        let hash = stored_hash(&db, "alice");
        assert_ne!(hash, "correct horse");
        assert!(!hash.contains("correct horse"));
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        PasswordHash::new(&hash).expect("valid PHC string");

        // A fresh salt each time: the same password never gives the same hash.
        db.upsert_user("bob", "correct horse", &[]).expect("upsert");
        assert_ne!(stored_hash(&db, "bob"), hash);
    }

    #[test]
    fn verify_right_and_wrong_password() {
        let (_dir, db) = open_temp();
        let roles = [Grant::new("orders", Role::Write), Grant::new("*", Role::Read)];
        db.upsert_user("alice", "s3cret", &roles).expect("upsert");
        let user = db.verify_user("alice", "s3cret").expect("verify").expect("valid");
        assert_eq!(user.name, "alice");
        assert_eq!(
            user.roles,
            vec![Grant::new("*", Role::Read), Grant::new("orders", Role::Write)]
        );
        assert_eq!(db.verify_user("alice", "S3cret").expect("verify"), None);
        assert_eq!(db.verify_user("alice", "").expect("verify"), None);
        assert_eq!(db.verify_user("nobody", "s3cret").expect("verify"), None);
    }

    #[test]
    fn upsert_replaces_password_and_roles() {
        let (_dir, db) = open_temp();
        db.upsert_user("alice", "one", &[Grant::new("*", Role::Admin)])
            .expect("upsert");
        let generation = db.users_generation();
        db.upsert_user(
            "alice",
            "two",
            &[Grant::new("a", Role::Read), Grant::new("a", Role::Read)],
        )
        .expect("upsert");
        assert!(db.users_generation() > generation);
        assert_eq!(db.verify_user("alice", "one").expect("verify"), None);
        let user = db.verify_user("alice", "two").expect("verify").expect("valid");
        assert_eq!(
            user.roles,
            vec![Grant::new("a", Role::Read)],
            "replaced and deduplicated"
        );
        assert_eq!(db.users().expect("users").len(), 1);
    }

    #[test]
    fn users_lists_sorted_without_hashes() {
        let (_dir, db) = open_temp();
        db.upsert_user("zed", "pw", &[Grant::new("*", Role::Read)])
            .expect("upsert");
        db.upsert_user("amy", "pw", &[]).expect("upsert");
        let users = db.users().expect("users");
        assert_eq!(
            users,
            vec![
                UserRecord {
                    name: "amy".into(),
                    roles: vec![]
                },
                UserRecord {
                    name: "zed".into(),
                    roles: vec![Grant::new("*", Role::Read)]
                },
            ]
        );
        let json = serde_json::to_string(&users).expect("json");
        assert!(!json.contains("argon2"), "{json}");
    }

    #[test]
    fn bad_users_are_rejected_and_store_nothing() {
        let (_dir, db) = open_temp();
        let cases: [(&str, &str, Vec<Grant>); 5] = [
            ("", "pw", vec![]),
            ("bad\nname", "pw", vec![]),
            (&"u".repeat(256), "pw", vec![]),
            ("alice", "", vec![]),
            ("alice", "pw", vec![Grant::new("not a context", Role::Read)]),
        ];
        for (name, password, roles) in &cases {
            let result = db.upsert_user(name, password, roles);
            assert!(
                matches!(result, Err(ControlError::Invalid(_))),
                "{name:?} {password:?}: {result:?}"
            );
        }
        assert!(db.users().expect("users").is_empty());
        assert_eq!(db.users_generation(), 0, "rejected input changes nothing");
    }

    #[test]
    fn delete_user_removes_roles() {
        let (_dir, db) = open_temp();
        db.upsert_user("alice", "pw", &[Grant::new("*", Role::Admin)])
            .expect("upsert");
        assert!(db.delete_user("alice").expect("delete"));
        assert!(!db.delete_user("alice").expect("delete again"));
        assert!(db.users().expect("users").is_empty());
        let grants: i64 = db
            .lock()
            .query_row("SELECT count(*) FROM user_roles", [], |r| r.get(0))
            .expect("count");
        assert_eq!(grants, 0, "ON DELETE CASCADE");
        assert_eq!(db.verify_user("alice", "pw").expect("verify"), None);
    }

    #[test]
    fn corrupt_hash_is_an_error_not_a_login() {
        let (_dir, db) = open_temp();
        db.upsert_user("alice", "pw", &[]).expect("upsert");
        db.lock()
            .execute("UPDATE users SET password_hash = 'pw' WHERE name = 'alice'", [])
            .expect("corrupt");
        assert!(matches!(db.verify_user("alice", "pw"), Err(ControlError::Corrupt(_))));
    }
}
