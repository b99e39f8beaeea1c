//! The schema as a list of migrations. Migration `i` takes the database from `PRAGMA user_version`
//! `i` to `i + 1`, in one transaction. Append only: a released migration is never edited, because
//! databases in the field have already run it.

/// Version 1: the initial schema.
///
/// Grants do not reference `contexts`: a grant may name `*` (every context) or a context that is
/// created later, as Axon Server allows. `delete_context` removes the grants naming it explicitly.
const V1: &str = "
CREATE TABLE contexts (
    name TEXT PRIMARY KEY NOT NULL,
    created_at_ms INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE TABLE users (
    name TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL
) STRICT;

CREATE TABLE user_roles (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    context TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('ADMIN', 'READ', 'WRITE', 'USE_CONTEXT')),
    PRIMARY KEY (user, context, role)
) STRICT;
CREATE INDEX user_roles_context ON user_roles(context);

CREATE TABLE applications (
    name TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE application_roles (
    application TEXT NOT NULL REFERENCES applications(name) ON DELETE CASCADE,
    context TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('ADMIN', 'READ', 'WRITE', 'USE_CONTEXT')),
    PRIMARY KEY (application, context, role)
) STRICT;
CREATE INDEX application_roles_context ON application_roles(context);

CREATE TABLE backups (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    context TEXT,
    segment_type TEXT,
    last_closed_segment INTEGER,
    last_token INTEGER,
    detail TEXT
) STRICT;
CREATE INDEX backups_time ON backups(time_ms);
CREATE INDEX backups_context_time ON backups(context, time_ms);

CREATE TABLE replication_groups (
    name TEXT PRIMARY KEY NOT NULL,
    commit_index INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
";

/// Version 2: the Raft state of each replication group, and the cluster's configuration.
///
/// `replication_groups` is rebuilt rather than altered, because V1 declared `commit_index NOT
/// NULL` and "nothing known committed yet" must be NULL, as every other position here is. Its new
/// shape mirrors Axon EE's `rg_state`: the vote (`current_term`, `voted_for`, `vote_committed`),
/// the committed, applied and purged log positions (index and term, both NULL or both set), the
/// membership applied last (opaque JSON, set exactly when applied is) and `updated_at_ms`. The
/// CHECKs repeat, as a second line, the rules the API enforces before writing.
///
/// A V1 row keeps its name and `updated_at_ms` but not its `commit_index`: V1 stored no term, so
/// the index names no log position, and a missing committed position is always safe (Raft learns
/// it again from the leader). No released build wrote these rows anyway.
///
/// The cluster's configuration (what the `_admin` group replicates to every node) is new: the
/// nodes, the replication groups and their members with Axon's role numbers, and each context's
/// group (NULL for a context created before clustering: it is in the group of its own name).
/// `cluster_identity` is node-local: the cluster this node belongs to and, after a restore, the
/// cluster its backup came from.
const V2: &str = "
CREATE TABLE replication_groups_v2 (
    name TEXT PRIMARY KEY NOT NULL,
    current_term INTEGER CHECK (current_term >= 0),
    voted_for TEXT,
    vote_committed INTEGER CHECK (vote_committed IN (0, 1)),
    commit_index INTEGER CHECK (commit_index >= 0),
    commit_term INTEGER CHECK (commit_term >= 0),
    last_applied_index INTEGER CHECK (last_applied_index >= 0),
    last_applied_term INTEGER CHECK (last_applied_term >= 0),
    last_membership TEXT,
    last_purged_index INTEGER CHECK (last_purged_index >= 0),
    last_purged_term INTEGER CHECK (last_purged_term >= 0),
    updated_at_ms INTEGER NOT NULL,
    CHECK ((current_term IS NULL) = (vote_committed IS NULL)),
    CHECK (voted_for IS NULL OR current_term IS NOT NULL),
    CHECK ((commit_index IS NULL) = (commit_term IS NULL)),
    CHECK ((last_applied_index IS NULL) = (last_applied_term IS NULL)),
    CHECK ((last_applied_index IS NULL) = (last_membership IS NULL)),
    CHECK ((last_purged_index IS NULL) = (last_purged_term IS NULL))
) STRICT;
INSERT INTO replication_groups_v2 (name, updated_at_ms) SELECT name, updated_at_ms FROM replication_groups;
DROP TABLE replication_groups;
ALTER TABLE replication_groups_v2 RENAME TO replication_groups;

CREATE TABLE cluster_nodes (
    name TEXT PRIMARY KEY NOT NULL,
    internal_host_name TEXT NOT NULL,
    internal_port INTEGER NOT NULL CHECK (internal_port BETWEEN 1 AND 65535),
    host_name TEXT NOT NULL,
    grpc_port INTEGER NOT NULL CHECK (grpc_port BETWEEN 1 AND 65535),
    http_port INTEGER NOT NULL CHECK (http_port BETWEEN 1 AND 65535)
) STRICT;

CREATE TABLE replication_group_configs (
    name TEXT PRIMARY KEY NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE replication_group_members (
    replication_group TEXT NOT NULL REFERENCES replication_group_configs(name) ON DELETE CASCADE,
    node TEXT NOT NULL REFERENCES cluster_nodes(name),
    role INTEGER NOT NULL CHECK (role IN (0, 2, 3, 4, 5)),
    PRIMARY KEY (replication_group, node)
) STRICT;
CREATE INDEX replication_group_members_node ON replication_group_members(node);

ALTER TABLE contexts ADD COLUMN replication_group TEXT REFERENCES replication_group_configs(name);

CREATE TABLE cluster_identity (
    singleton INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    cluster_id TEXT NOT NULL,
    node_name TEXT NOT NULL,
    restored_from TEXT
) STRICT;
";

pub(crate) const MIGRATIONS: &[&str] = &[V1, V2];

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::db::{ControlDb, DB_FILE_NAME};

    /// A database file as a V1 build leaves it (rollback journal, as a file fresh from SQLite),
    /// with a row in every table.
    fn v1_file(dir: &std::path::Path) {
        let conn = Connection::open(dir.join(DB_FILE_NAME)).expect("raw open");
        conn.execute_batch(V1).expect("V1");
        conn.pragma_update(None, "user_version", 1).expect("version");
        conn.execute_batch(
            "INSERT INTO contexts VALUES ('orders', 1000, '{\"owner\":\"ops\"}');
             INSERT INTO users VALUES ('alice', 'not-a-real-hash');
             INSERT INTO user_roles VALUES ('alice', 'orders', 'READ');
             INSERT INTO applications VALUES ('app', 'billing', zeroblob(32), 2000);
             INSERT INTO application_roles VALUES ('app', '*', 'WRITE');
             INSERT INTO backups (time_ms, kind, context) VALUES (3000, 'eventstore', 'orders');
             INSERT INTO replication_groups VALUES ('orders', 42, 4000);",
        )
        .expect("rows");
    }

    fn count(db: &ControlDb, table: &str) -> i64 {
        db.lock()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))
            .expect("count")
    }

    #[test]
    fn migrating_a_v1_file_keeps_its_rows_and_adds_the_cluster_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        v1_file(dir.path());
        let db = ControlDb::open(dir.path()).expect("open migrates");
        assert_eq!(db.schema_version().expect("version"), 2);

        let orders = db.context("orders").expect("context").expect("kept");
        assert_eq!((orders.created_at_ms, orders.metadata["owner"].as_str()), (1000, "ops"));
        for table in ["users", "user_roles", "applications", "application_roles", "backups"] {
            assert_eq!(count(&db, table), 1, "{table}");
        }
        for table in [
            "cluster_nodes",
            "replication_group_configs",
            "replication_group_members",
            "cluster_identity",
        ] {
            assert_eq!(count(&db, table), 0, "{table}");
        }
        let group: (Option<String>, i64) = db
            .lock()
            .query_row(
                "SELECT (SELECT replication_group FROM contexts WHERE name = 'orders'), updated_at_ms
                 FROM replication_groups WHERE name = 'orders'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("group row kept");
        assert_eq!(group, (None, 4000), "a context from before clustering names no group");
        // V1's commit index had no term: it names no log position, so nothing is known committed.
        let commit: (Option<i64>, Option<i64>) = db
            .lock()
            .query_row(
                "SELECT commit_index, commit_term FROM replication_groups WHERE name = 'orders'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("commit columns");
        assert_eq!(commit, (None, None));
    }
}
