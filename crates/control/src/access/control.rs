//! [`AccessControl`]: authenticates tokens and HTTP basic credentials into [`Principal`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Grant, Principal, PrincipalKind, Role};
use crate::db::ControlDb;
use crate::error::Result;

/// How long a verified password is trusted without running argon2 again.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
/// Verified credentials kept at most; beyond this the entry closest to expiry is dropped.
const BASIC_CACHE_ENTRIES_MAX: usize = 1024;

/// Authentication for the gRPC and HTTP layers. `Send + Sync`; share it in an `Arc`.
pub struct AccessControl {
    enabled: bool,
    /// SHA-256 of the configured tokens: comparing digests makes every comparison the same length.
    token_digest: Option<[u8; 32]>,
    admin_token_digest: Option<[u8; 32]>,
    db: Arc<ControlDb>,
    basic_cache: Mutex<BasicCache>,
}

/// Shows whether access control is on and which tokens are configured, never a secret.
impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("enabled", &self.enabled)
            .field("token", &self.token_digest.is_some())
            .field("admin_token", &self.admin_token_digest.is_some())
            .finish_non_exhaustive()
    }
}

impl AccessControl {
    /// `token` is Axon's `axoniq.axonserver.accesscontrol.token` (read and write on every context),
    /// `admin_token` its `axoniq.axonserver.accesscontrol.admin-token` (global admin). An empty
    /// string counts as not configured, so that an empty presented token can never match.
    pub fn new(enabled: bool, token: Option<String>, admin_token: Option<String>, db: Arc<ControlDb>) -> AccessControl {
        let digest = |token: Option<String>| token.filter(|t| !t.is_empty()).map(|t| sha256(t.as_bytes()));
        AccessControl {
            enabled,
            token_digest: digest(token),
            admin_token_digest: digest(admin_token),
            db,
            basic_cache: Mutex::new(BasicCache::default()),
        }
    }

    /// Whether requests must authenticate. The `authenticate_*` methods work either way.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The principal a token belongs to: the configured admin token, the configured token, then
    /// application tokens. `Ok(None)` for an unknown token.
    pub fn authenticate_token(&self, token: &str) -> Result<Option<Principal>> {
        if token.is_empty() {
            return Ok(None);
        }
        let presented = sha256(token.as_bytes());
        // Both configured tokens are always compared, so timing does not tell which one exists.
        let is_admin = matches_digest(self.admin_token_digest.as_ref(), &presented);
        let is_token = matches_digest(self.token_digest.as_ref(), &presented);
        if is_admin {
            return Ok(Some(Principal {
                name: "admin-token".into(),
                kind: PrincipalKind::AdminToken,
                grants: vec![Grant::new(Grant::ANY_CONTEXT, Role::Admin)],
            }));
        }
        if is_token {
            return Ok(Some(Principal {
                name: "token".into(),
                kind: PrincipalKind::Token,
                grants: vec![
                    Grant::new(Grant::ANY_CONTEXT, Role::Read),
                    Grant::new(Grant::ANY_CONTEXT, Role::Write),
                ],
            }));
        }
        Ok(self.db.verify_token(token)?.map(|app| Principal {
            name: app.name,
            kind: PrincipalKind::Application,
            grants: app.roles,
        }))
    }

    /// HTTP basic authentication against the users table. `Ok(None)` for an unknown user or a
    /// wrong password.
    ///
    /// argon2 is slow by design, so successful checks are cached for a minute, keyed by the SHA-256
    /// of user and password (never the password itself). Any change to users or grants empties the
    /// cache, so a changed password or a deleted user stops working at once. Failures are not
    /// cached: guessing must stay expensive.
    pub fn authenticate_basic(&self, user: &str, password: &str) -> Result<Option<Principal>> {
        let key = cache_key(user, password);
        // Read before verifying: if users change while argon2 runs, the result is not cached.
        let generation = self.db.users_generation();
        if let Some(principal) = self.basic_cache.lock().get(&key, generation, Instant::now()) {
            return Ok(Some(principal));
        }
        let Some(record) = self.db.verify_user(user, password)? else {
            return Ok(None);
        };
        let principal = Principal {
            name: record.name,
            kind: PrincipalKind::User,
            grants: record.roles,
        };
        let mut cache = self.basic_cache.lock();
        if self.db.users_generation() == generation {
            cache.insert(key, principal.clone(), generation, Instant::now());
        }
        Ok(Some(principal))
    }

    #[cfg(test)]
    fn cached_entries(&self) -> usize {
        self.basic_cache.lock().entries.len()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn matches_digest(configured: Option<&[u8; 32]>, presented: &[u8; 32]) -> bool {
    configured.is_some_and(|digest| bool::from(digest.ct_eq(presented)))
}

/// The user name is length-prefixed so that ("ab", "c") and ("a", "bc") differ.
fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((user.len() as u64).to_le_bytes());
    hasher.update(user.as_bytes());
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

#[derive(Default)]
struct BasicCache {
    /// The users generation the entries were verified under.
    generation: u64,
    entries: HashMap<[u8; 32], CachedPrincipal>,
}

struct CachedPrincipal {
    principal: Principal,
    expires_at: Instant,
}

impl BasicCache {
    fn get(&mut self, key: &[u8; 32], generation: u64, now: Instant) -> Option<Principal> {
        self.sync_generation(generation);
        match self.entries.get(key) {
            Some(entry) if entry.expires_at > now => Some(entry.principal.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: [u8; 32], principal: Principal, generation: u64, now: Instant) {
        self.sync_generation(generation);
        if self.entries.len() >= BASIC_CACHE_ENTRIES_MAX {
            self.entries.retain(|_, entry| entry.expires_at > now);
        }
        if self.entries.len() >= BASIC_CACHE_ENTRIES_MAX {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.expires_at)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let expires_at = now + BASIC_CACHE_TTL;
        self.entries.insert(key, CachedPrincipal { principal, expires_at });
        debug_assert!(self.entries.len() <= BASIC_CACHE_ENTRIES_MAX);
    }

    fn sync_generation(&mut self, generation: u64) {
        if self.generation != generation {
            self.entries.clear();
            self.generation = generation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Right;
    use crate::db::tests::open_temp;

    fn access(token: Option<&str>, admin_token: Option<&str>) -> (tempfile::TempDir, Arc<ControlDb>, AccessControl) {
        let (dir, db) = open_temp();
        let db = Arc::new(db);
        let access = AccessControl::new(true, token.map(String::from), admin_token.map(String::from), db.clone());
        (dir, db, access)
    }

    #[test]
    fn access_control_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AccessControl>();
    }

    #[test]
    fn enabled_flag_is_reported() {
        let (_dir, db) = open_temp();
        let db = Arc::new(db);
        assert!(AccessControl::new(true, None, None, db.clone()).enabled());
        assert!(!AccessControl::new(false, None, None, db).enabled());
    }

    #[test]
    fn configured_tokens() {
        let (_dir, _db, access) = access(Some("client-secret"), Some("admin-secret"));
        let admin = access.authenticate_token("admin-secret").expect("auth").expect("admin");
        assert_eq!(admin.kind, PrincipalKind::AdminToken);
        assert!(admin.allows(None, Right::Admin));
        assert!(admin.allows(Some("any"), Right::Write));

        let client = access
            .authenticate_token("client-secret")
            .expect("auth")
            .expect("token");
        assert_eq!(client.kind, PrincipalKind::Token);
        assert!(client.allows(Some("any"), Right::Read));
        assert!(client.allows(Some("any"), Right::Write));
        assert!(!client.allows(None, Right::Admin));
        assert!(!client.allows(Some("any"), Right::Admin));

        for unknown in ["", "client-secre", "client-secret ", "admin-secretx", "x"] {
            assert!(
                access.authenticate_token(unknown).expect("auth").is_none(),
                "{unknown:?}"
            );
        }
    }

    #[test]
    fn unconfigured_and_empty_tokens_match_nothing() {
        let (_dir, _db, access) = access(Some(""), None);
        assert!(access.authenticate_token("").expect("auth").is_none());
        assert!(access.authenticate_token("anything").expect("auth").is_none());
    }

    #[test]
    fn application_tokens() {
        let (_dir, db, access) = access(Some("client-secret"), None);
        let token = db
            .create_application("billing", "", &[Grant::new("orders", Role::Read)])
            .expect("create");
        let principal = access.authenticate_token(&token).expect("auth").expect("known");
        assert_eq!(principal.kind, PrincipalKind::Application);
        assert_eq!(principal.name, "billing");
        assert!(principal.allows(Some("orders"), Right::Read));
        assert!(!principal.allows(Some("orders"), Right::Write));
        db.delete_application("billing").expect("delete");
        assert!(access.authenticate_token(&token).expect("auth").is_none());
    }

    #[test]
    fn basic_auth_and_cache() {
        let (_dir, db, access) = access(None, None);
        db.upsert_user("alice", "pw1", &[Grant::new("*", Role::Admin)])
            .expect("upsert");
        assert!(access.authenticate_basic("alice", "wrong").expect("auth").is_none());
        assert!(access.authenticate_basic("bob", "pw1").expect("auth").is_none());
        assert_eq!(access.cached_entries(), 0, "failures are not cached");

        let principal = access.authenticate_basic("alice", "pw1").expect("auth").expect("ok");
        assert_eq!(principal.kind, PrincipalKind::User);
        assert!(principal.allows(None, Right::Admin));
        assert_eq!(access.cached_entries(), 1);
        // A hit returns the same principal.
        assert_eq!(
            access.authenticate_basic("alice", "pw1").expect("auth"),
            Some(principal)
        );
        assert_eq!(access.cached_entries(), 1);
    }

    #[test]
    fn changed_password_stops_working_at_once() {
        let (_dir, db, access) = access(None, None);
        db.upsert_user("alice", "old", &[Grant::new("*", Role::Read)])
            .expect("upsert");
        assert!(access.authenticate_basic("alice", "old").expect("auth").is_some());
        assert_eq!(access.cached_entries(), 1);

        db.upsert_user("alice", "new", &[Grant::new("*", Role::Write)])
            .expect("upsert");
        assert!(access.authenticate_basic("alice", "old").expect("auth").is_none());
        let principal = access
            .authenticate_basic("alice", "new")
            .expect("auth")
            .expect("new works");
        assert_eq!(
            principal.grants,
            vec![Grant::new("*", Role::Write)],
            "new grants, not cached ones"
        );
    }

    #[test]
    fn deleted_user_stops_working_at_once() {
        let (_dir, db, access) = access(None, None);
        db.upsert_user("alice", "pw", &[]).expect("upsert");
        assert!(access.authenticate_basic("alice", "pw").expect("auth").is_some());
        assert!(db.delete_user("alice").expect("delete"));
        assert!(access.authenticate_basic("alice", "pw").expect("auth").is_none());
    }

    #[test]
    fn deleted_context_grants_are_not_served_from_cache() {
        let (_dir, db, access) = access(None, None);
        db.ensure_context("orders").expect("ensure");
        db.upsert_user("alice", "pw", &[Grant::new("orders", Role::Read)])
            .expect("upsert");
        let before = access.authenticate_basic("alice", "pw").expect("auth").expect("ok");
        assert!(before.allows(Some("orders"), Right::Read));
        db.delete_context("orders").expect("delete");
        let after = access.authenticate_basic("alice", "pw").expect("auth").expect("ok");
        assert!(!after.allows(Some("orders"), Right::Read));
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let principal = Principal {
            name: "p".into(),
            kind: PrincipalKind::User,
            grants: vec![],
        };
        let now = Instant::now();
        let mut cache = BasicCache::default();
        for i in 0..BASIC_CACHE_ENTRIES_MAX + 10 {
            cache.insert(cache_key(&i.to_string(), "pw"), principal.clone(), 0, now);
        }
        assert_eq!(cache.entries.len(), BASIC_CACHE_ENTRIES_MAX);

        let key = cache_key("x", "pw");
        cache.insert(key, principal.clone(), 0, now);
        assert!(cache.get(&key, 0, now + BASIC_CACHE_TTL / 2).is_some());
        assert!(cache.get(&key, 0, now + BASIC_CACHE_TTL).is_none(), "expired");
        cache.insert(key, principal, 0, now);
        assert!(cache.get(&key, 1, now).is_none(), "new generation empties the cache");
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn cache_keys_separate_user_and_password() {
        assert_ne!(cache_key("ab", "c"), cache_key("a", "bc"));
        assert_ne!(cache_key("a", "b"), cache_key("a", "c"));
    }
}
