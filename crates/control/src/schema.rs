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

pub(crate) const MIGRATIONS: &[&str] = &[V1];
