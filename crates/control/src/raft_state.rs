//! The Raft state of each replication group, one `replication_groups` row per group: the vote, the
//! committed, applied and purged log positions, and the membership applied last (Axon EE keeps
//! the same in its `rg_state` table).
//!
//! This crate knows nothing of openraft: a log id is a [`LogPosition`] (term, index), a vote is a
//! [`Vote`] (term, node name, committed flag) and a membership is JSON text it does not read.
//!
//! Durability: every function here is one SQLite transaction on the connection that runs WAL with
//! `synchronous=FULL`, so the WAL is fsynced at commit and a call that returned `Ok` survives a
//! crash or power loss. When to call them is the cluster layer's choice (ARCHITECTURE.md
//! decision 16): the vote before the vote is answered; committed and applied coalesced; applied
//! only once the event store holds what was applied.
//!
//! Every write checks that the state only moves forward, and otherwise fails with
//! [`ControlError::Regression`] and changes nothing:
//! * the vote only grows in Raft's vote order ([`Vote::may_replace`]);
//! * committed, applied and purged never go back ([`LogPosition::is_at_or_after`]); committed
//!   never becomes "none" once set;
//! * purged may lead the applied position stored here: openraft purges what it has applied in
//!   memory, and applied is recorded lazily. What must never pass the stored applied position
//!   is the deletion of log files, which is the log store's rule (CLUSTER.md §10.8).
//!
//! Only [`ControlDb::clear_raft_log_state`] and [`ControlDb::delete_replication_group_state`] move
//! the state back, to nothing. Reads check the same relations and report a row that breaks them as
//! [`ControlError::Corrupt`].

use std::cmp::Ordering;
use std::fmt;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::db::{ControlDb, now_ms, write_tx};
use crate::error::{ControlError, Result};
use crate::validate::{validate_name, validate_replication_group_name};

/// A position in a replication group's Raft log: an entry's index and the term it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogPosition {
    pub term: u64,
    pub index: u64,
}

impl LogPosition {
    pub const fn new(term: u64, index: u64) -> LogPosition {
        LogPosition { term, index }
    }

    /// Whether one log can hold `self` at or after `earlier`: the same position, or a later index
    /// in a term no lower. (In a Raft log an index has one term, and terms never decrease along
    /// the log; the same index in another term is a different, conflicting entry.)
    pub fn is_at_or_after(&self, earlier: &LogPosition) -> bool {
        self == earlier || (self.index > earlier.index && self.term >= earlier.term)
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(term {}, index {})", self.term, self.index)
    }
}

/// A node's vote in a replication group: the term, the node voted for (or none), and whether the
/// vote is committed (a quorum granted it: that node is the term's leader).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vote {
    pub term: u64,
    pub node: Option<String>,
    pub committed: bool,
}

impl Vote {
    /// Whether `self` may replace `stored`, i.e. `self >= stored` in Raft's (partial) vote order,
    /// the order openraft's standard mode uses:
    /// * a higher term always wins, a lower one never;
    /// * in the same term, a vote for a node outranks no vote, and the same vote may become
    ///   committed but never uncommitted again;
    /// * in the same term, a vote for another node is refused, except a committed one over an
    ///   uncommitted one: that node won the election without this node's vote.
    pub fn may_replace(&self, stored: &Vote) -> bool {
        match self.term.cmp(&stored.term) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => match (&self.node, &stored.node) {
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => self.committed >= stored.committed,
                (Some(new), Some(old)) if new == old => self.committed >= stored.committed,
                (Some(_), Some(_)) => self.committed && !stored.committed,
            },
        }
    }
}

impl fmt::Display for Vote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let committed = if self.committed { "committed" } else { "uncommitted" };
        match &self.node {
            Some(node) => write!(f, "(term {}, for {node:?}, {committed})", self.term),
            None => write!(f, "(term {}, for no node, {committed})", self.term),
        }
    }
}

/// What a replication group's row holds; `None` wherever nothing was saved yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftState {
    pub vote: Option<Vote>,
    pub committed: Option<LogPosition>,
    pub applied: Option<LogPosition>,
    /// The membership applied last (opaque JSON); set exactly when `applied` is.
    pub membership: Option<String>,
    /// The log is purged up to and including this position.
    pub purged: Option<LogPosition>,
}

const SELECT_STATE: &str = "SELECT current_term, voted_for, vote_committed, commit_term, commit_index,
        last_applied_term, last_applied_index, last_membership, last_purged_term, last_purged_index
    FROM replication_groups WHERE name = ?1";

impl ControlDb {
    /// The group's Raft state; `None` if it has no row (nothing was ever saved for it).
    pub fn raft_state(&self, group: &str) -> Result<Option<RaftState>> {
        validate_replication_group_name(group)?;
        read_state(&self.lock(), group)
    }

    /// Saves the group's vote, durably before it returns: call it before answering the vote.
    /// [`ControlError::Regression`] unless `vote` may replace the stored one ([`Vote::may_replace`]).
    pub fn save_vote(&self, group: &str, vote: &Vote) -> Result<()> {
        let term = sql_u64(group, "vote term", vote.term)?;
        if let Some(node) = &vote.node {
            validate_name("node", node)?;
        }
        self.update_state(group, |tx, state| {
            if let Some(stored) = &state.vote
                && !vote.may_replace(stored)
            {
                return Err(ControlError::Regression(format!(
                    "group {group:?}: vote {vote} may not replace the stored vote {stored}"
                )));
            }
            tx.execute(
                "UPDATE replication_groups SET current_term = ?2, voted_for = ?3, vote_committed = ?4,
                     updated_at_ms = ?5 WHERE name = ?1",
                params![group, term, vote.node, i64::from(vote.committed), now_ms()],
            )?;
            Ok(())
        })
    }

    /// Saves the highest position known committed, also in the `commit_index` column Axon's tools
    /// know. It never goes back, and never from a position to `None`: only
    /// [`ControlDb::clear_raft_log_state`] forgets it.
    pub fn save_committed(&self, group: &str, committed: Option<LogPosition>) -> Result<()> {
        let columns = sql_position(group, "committed", committed)?;
        self.update_state(group, |tx, state| {
            if let Some(stored) = state.committed
                && !committed.is_some_and(|new| new.is_at_or_after(&stored))
            {
                return Err(ControlError::Regression(format!(
                    "group {group:?}: committed position {} is not at or after the stored {stored}",
                    describe(committed)
                )));
            }
            tx.execute(
                "UPDATE replication_groups SET commit_term = ?2, commit_index = ?3, updated_at_ms = ?4
                 WHERE name = ?1",
                params![group, columns.0, columns.1, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Saves the last applied position and the membership in force there, together. It never goes
    /// back. `membership` must be JSON; this crate does not look inside.
    pub fn save_applied(&self, group: &str, applied: LogPosition, membership: &str) -> Result<()> {
        let (term, index) = sql_position(group, "applied", Some(applied))?;
        if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(membership) {
            return Err(ControlError::Invalid(format!(
                "membership of group {group:?} must be JSON: {error}"
            )));
        }
        self.update_state(group, |tx, state| {
            if let Some(stored) = state.applied
                && !applied.is_at_or_after(&stored)
            {
                return Err(ControlError::Regression(format!(
                    "group {group:?}: applied position {applied} is not at or after the stored {stored}"
                )));
            }
            tx.execute(
                "UPDATE replication_groups SET last_applied_term = ?2, last_applied_index = ?3,
                     last_membership = ?4, updated_at_ms = ?5 WHERE name = ?1",
                params![group, term, index, membership, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Saves the position the log is purged up to (inclusive). It never goes back. It may lead
    /// the applied position stored here (see the module doc).
    pub fn save_purged(&self, group: &str, purged: LogPosition) -> Result<()> {
        let (term, index) = sql_position(group, "purged", Some(purged))?;
        self.update_state(group, |tx, state| {
            if let Some(stored) = state.purged
                && !purged.is_at_or_after(&stored)
            {
                return Err(ControlError::Regression(format!(
                    "group {group:?}: purged position {purged} is not at or after the stored {stored}"
                )));
            }
            tx.execute(
                "UPDATE replication_groups SET last_purged_term = ?2, last_purged_index = ?3, updated_at_ms = ?4
                 WHERE name = ?1",
                params![group, term, index, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Forgets the group's vote, committed, applied and purged positions and membership, keeping
    /// its row: for a restored node that re-seeds a new cluster with the events it holds. Returns
    /// whether the group had a row.
    pub fn clear_raft_log_state(&self, group: &str) -> Result<bool> {
        let cleared = self.lock().execute(
            "UPDATE replication_groups SET current_term = NULL, voted_for = NULL, vote_committed = NULL,
                 commit_term = NULL, commit_index = NULL, last_applied_term = NULL, last_applied_index = NULL,
                 last_membership = NULL, last_purged_term = NULL, last_purged_index = NULL, updated_at_ms = ?2
             WHERE name = ?1",
            params![group, now_ms()],
        )?;
        Ok(cleared == 1)
    }

    /// Deletes the group's row (the node no longer hosts the group). Returns whether it existed.
    pub fn delete_replication_group_state(&self, group: &str) -> Result<bool> {
        let deleted = self
            .lock()
            .execute("DELETE FROM replication_groups WHERE name = ?1", [group])?;
        Ok(deleted == 1)
    }

    /// The groups with a Raft state row, sorted.
    pub fn raft_groups(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT name FROM replication_groups ORDER BY name")?;
        let names = statement.query_map([], |row| row.get(0))?;
        Ok(names.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs `change` in one write transaction, on the group's row (created empty if missing) and
    /// its current state. An error from `change` rolls everything back, the new row included.
    fn update_state(&self, group: &str, change: impl FnOnce(&Transaction<'_>, &RaftState) -> Result<()>) -> Result<()> {
        validate_replication_group_name(group)?;
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        tx.execute(
            "INSERT INTO replication_groups (name, updated_at_ms) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![group, now_ms()],
        )?;
        let state = read_state(&tx, group)?
            .ok_or_else(|| ControlError::Corrupt(format!("replication group {group:?} has no row after insert")))?;
        change(&tx, &state)?;
        tx.commit()?;
        Ok(())
    }
}

/// The columns of a `replication_groups` row as stored, before any check.
struct RawState {
    current_term: Option<i64>,
    voted_for: Option<String>,
    vote_committed: Option<i64>,
    commit_term: Option<i64>,
    commit_index: Option<i64>,
    applied_term: Option<i64>,
    applied_index: Option<i64>,
    membership: Option<String>,
    purged_term: Option<i64>,
    purged_index: Option<i64>,
}

fn read_state(conn: &Connection, group: &str) -> Result<Option<RaftState>> {
    let raw = conn
        .query_row(SELECT_STATE, [group], |row| {
            Ok(RawState {
                current_term: row.get(0)?,
                voted_for: row.get(1)?,
                vote_committed: row.get(2)?,
                commit_term: row.get(3)?,
                commit_index: row.get(4)?,
                applied_term: row.get(5)?,
                applied_index: row.get(6)?,
                membership: row.get(7)?,
                purged_term: row.get(8)?,
                purged_index: row.get(9)?,
            })
        })
        .optional()?;
    raw.map(|raw| parse_state(group, raw)).transpose()
}

/// Builds the state from its columns, checking the relations every write keeps.
fn parse_state(group: &str, raw: RawState) -> Result<RaftState> {
    let corrupt = |what: &str| ControlError::Corrupt(format!("replication group {group:?}: {what}"));
    let vote = match (raw.current_term, raw.vote_committed) {
        (None, None) if raw.voted_for.is_none() => None,
        (Some(term), Some(committed @ (0 | 1))) => Some(Vote {
            term: stored_u64(group, term)?,
            node: raw.voted_for,
            committed: committed == 1,
        }),
        _ => return Err(corrupt("the vote's term, node and committed flag disagree")),
    };
    let committed = stored_position(group, "committed", raw.commit_term, raw.commit_index)?;
    let applied = stored_position(group, "applied", raw.applied_term, raw.applied_index)?;
    let purged = stored_position(group, "purged", raw.purged_term, raw.purged_index)?;
    if applied.is_some() != raw.membership.is_some() {
        return Err(corrupt(
            "the applied position and the membership are not stored together",
        ));
    }
    Ok(RaftState {
        vote,
        committed,
        applied,
        membership: raw.membership,
        purged,
    })
}

fn stored_position(group: &str, what: &str, term: Option<i64>, index: Option<i64>) -> Result<Option<LogPosition>> {
    match (term, index) {
        (None, None) => Ok(None),
        (Some(term), Some(index)) => Ok(Some(LogPosition::new(
            stored_u64(group, term)?,
            stored_u64(group, index)?,
        ))),
        _ => Err(ControlError::Corrupt(format!(
            "replication group {group:?}: the {what} position has a term or an index but not both"
        ))),
    }
}

fn stored_u64(group: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| {
        ControlError::Corrupt(format!(
            "replication group {group:?} stores the negative number {value}"
        ))
    })
}

/// A term or index as SQLite stores it (a signed 64-bit integer).
fn sql_u64(group: &str, what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        ControlError::Invalid(format!(
            "{what} {value} of group {group:?} is above {}, the largest the control database stores",
            i64::MAX
        ))
    })
}

/// The (term, index) columns of a position, both NULL for `None`.
fn sql_position(group: &str, what: &str, position: Option<LogPosition>) -> Result<(Option<i64>, Option<i64>)> {
    match position {
        None => Ok((None, None)),
        Some(position) => Ok((
            Some(sql_u64(group, &format!("{what} term"), position.term)?),
            Some(sql_u64(group, &format!("{what} index"), position.index)?),
        )),
    }
}

fn describe(position: Option<LogPosition>) -> String {
    position.map_or_else(|| "none".to_string(), |position| position.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::open_temp;

    fn at(term: u64, index: u64) -> LogPosition {
        LogPosition::new(term, index)
    }

    fn vote(term: u64, node: Option<&str>, committed: bool) -> Vote {
        Vote {
            term,
            node: node.map(str::to_string),
            committed,
        }
    }

    fn state(db: &ControlDb, group: &str) -> RaftState {
        db.raft_state(group).expect("read").expect("row")
    }

    const MEMBERSHIP: &str = r#"{"log_id":{"term":1,"index":1},"voters":["a","b","c"]}"#;

    #[test]
    fn a_group_never_saved_has_no_state_and_is_not_listed() {
        let (_dir, db) = open_temp();
        assert_eq!(db.raft_state("orders").expect("read"), None);
        assert!(db.raft_groups().expect("groups").is_empty());
    }

    #[test]
    fn each_save_round_trips_and_leaves_the_other_fields_alone() {
        let (_dir, db) = open_temp();
        db.save_vote("_admin", &vote(3, Some("node-1"), false)).expect("vote");
        assert_eq!(
            state(&db, "_admin"),
            RaftState {
                vote: Some(vote(3, Some("node-1"), false)),
                ..RaftState::default()
            }
        );
        db.save_applied("_admin", at(2, 10), MEMBERSHIP).expect("applied");
        db.save_committed("_admin", Some(at(3, 12))).expect("committed");
        db.save_purged("_admin", at(1, 4)).expect("purged");
        db.save_vote("_admin", &vote(3, Some("node-1"), true))
            .expect("vote committed");
        assert_eq!(
            state(&db, "_admin"),
            RaftState {
                vote: Some(vote(3, Some("node-1"), true)),
                committed: Some(at(3, 12)),
                applied: Some(at(2, 10)),
                membership: Some(MEMBERSHIP.to_string()),
                purged: Some(at(1, 4)),
            }
        );
        db.save_committed("default", None).expect("nothing committed yet");
        assert_eq!(state(&db, "default"), RaftState::default());
        assert_eq!(db.raft_groups().expect("groups"), ["_admin", "default"]);
    }

    #[test]
    fn the_commit_index_column_axon_tools_read_follows_save_committed() {
        let (_dir, db) = open_temp();
        let commit_index = |db: &ControlDb| -> Option<i64> {
            db.lock()
                .query_row(
                    "SELECT commit_index FROM replication_groups WHERE name = 'g'",
                    [],
                    |row| row.get(0),
                )
                .expect("select")
        };
        db.save_committed("g", None).expect("none");
        assert_eq!(commit_index(&db), None);
        db.save_committed("g", Some(at(2, 42))).expect("committed");
        assert_eq!(commit_index(&db), Some(42));
    }

    #[test]
    fn the_state_survives_closing_and_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected = RaftState {
            vote: Some(vote(7, None, false)),
            committed: Some(at(7, 100)),
            applied: Some(at(7, 90)),
            membership: Some(MEMBERSHIP.into()),
            purged: Some(at(6, 50)),
        };
        {
            let db = ControlDb::open(dir.path()).expect("open");
            db.save_vote("g", &vote(7, None, false)).expect("vote");
            db.save_committed("g", Some(at(7, 100))).expect("committed");
            db.save_applied("g", at(7, 90), MEMBERSHIP).expect("applied");
            db.save_purged("g", at(6, 50)).expect("purged");
        }
        let db = ControlDb::open(dir.path()).expect("reopen");
        assert_eq!(state(&db, "g"), expected);
    }

    #[test]
    fn log_positions_order_like_entries_of_one_log() {
        assert!(at(1, 5).is_at_or_after(&at(1, 5)));
        assert!(at(1, 6).is_at_or_after(&at(1, 5)));
        assert!(at(2, 6).is_at_or_after(&at(1, 5)));
        assert!(!at(1, 4).is_at_or_after(&at(1, 5)), "a lower index");
        assert!(
            !at(2, 5).is_at_or_after(&at(1, 5)),
            "the same index in another term conflicts"
        );
        assert!(!at(1, 6).is_at_or_after(&at(2, 5)), "a lower term further on");
    }

    #[test]
    fn votes_order_like_raft_votes() {
        let cases = [
            // (new, stored, may replace)
            (vote(2, None, false), vote(1, Some("a"), true), true),
            (vote(1, Some("a"), true), vote(2, None, false), false),
            (vote(1, Some("a"), false), vote(1, None, false), true),
            (vote(1, Some("a"), false), vote(1, None, true), true),
            (vote(1, None, false), vote(1, Some("a"), false), false),
            (vote(1, None, true), vote(1, None, false), true),
            (vote(1, None, false), vote(1, None, true), false),
            (vote(1, Some("a"), false), vote(1, Some("a"), false), true),
            (vote(1, Some("a"), true), vote(1, Some("a"), false), true),
            (vote(1, Some("a"), false), vote(1, Some("a"), true), false),
            (vote(1, Some("b"), false), vote(1, Some("a"), false), false),
            (vote(1, Some("b"), true), vote(1, Some("a"), false), true),
            (vote(1, Some("b"), false), vote(1, Some("a"), true), false),
        ];
        for (new, stored, expected) in cases {
            assert_eq!(new.may_replace(&stored), expected, "{new} over {stored}");
        }
    }

    /// Saves the state every refusal test starts from, and returns it.
    fn saved(db: &ControlDb) -> RaftState {
        db.save_vote("g", &vote(5, Some("a"), true)).expect("vote");
        db.save_applied("g", at(4, 20), MEMBERSHIP).expect("applied");
        db.save_committed("g", Some(at(5, 30))).expect("committed");
        db.save_purged("g", at(3, 10)).expect("purged");
        state(db, "g")
    }

    fn assert_regression(result: Result<()>, words: &str) {
        match result {
            Err(ControlError::Regression(message)) => assert!(message.contains(words), "{message}"),
            other => panic!("expected a refusal mentioning {words:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_vote_that_may_not_replace_the_stored_one_is_refused_and_changes_nothing() {
        let (_dir, db) = open_temp();
        let before = saved(&db);
        assert_regression(db.save_vote("g", &vote(4, Some("a"), true)), "may not replace");
        assert_regression(db.save_vote("g", &vote(5, Some("b"), true)), "may not replace");
        assert_regression(db.save_vote("g", &vote(5, Some("a"), false)), "may not replace");
        assert_regression(db.save_vote("g", &vote(5, None, false)), "may not replace");
        assert_eq!(state(&db, "g"), before);
    }

    #[test]
    fn a_committed_position_is_never_lowered_nor_forgotten_by_a_save() {
        let (_dir, db) = open_temp();
        let before = saved(&db);
        assert_regression(db.save_committed("g", Some(at(5, 29))), "committed position");
        assert_regression(db.save_committed("g", Some(at(6, 30))), "committed position");
        assert_regression(db.save_committed("g", None), "committed position none");
        assert_eq!(state(&db, "g"), before);
        db.save_committed("g", Some(at(5, 30)))
            .expect("the same position again");
        db.save_committed("g", Some(at(6, 31))).expect("further on");
    }

    #[test]
    fn an_applied_position_is_never_lowered_and_keeps_its_membership() {
        let (_dir, db) = open_temp();
        let before = saved(&db);
        assert_regression(db.save_applied("g", at(4, 19), "{}"), "applied position");
        assert_regression(db.save_applied("g", at(3, 21), "{}"), "applied position");
        assert_regression(db.save_applied("g", at(5, 20), "{}"), "applied position");
        assert_eq!(state(&db, "g"), before);
        db.save_applied("g", at(4, 21), "{}").expect("further on");
        let after = state(&db, "g");
        assert_eq!(
            (after.applied, after.membership.as_deref()),
            (Some(at(4, 21)), Some("{}"))
        );
    }

    #[test]
    fn a_purged_position_is_never_lowered() {
        let (_dir, db) = open_temp();
        let before = saved(&db);
        assert_regression(db.save_purged("g", at(3, 9)), "purged position");
        assert_regression(db.save_purged("g", at(2, 11)), "purged position");
        assert_eq!(state(&db, "g"), before);
    }

    #[test]
    fn a_purged_position_may_lead_the_stored_applied_one() {
        let (_dir, db) = open_temp();
        db.save_purged("g", at(4, 21))
            .expect("ahead of the recorded applied position");
        assert_eq!(state(&db, "g").purged, Some(at(4, 21)));
        db.save_purged("new", at(1, 1))
            .expect("a group with nothing applied yet");
        assert_eq!(
            db.raft_state("new").expect("read").and_then(|s| s.purged),
            Some(at(1, 1))
        );
    }

    #[test]
    fn clearing_forgets_the_log_state_and_lets_it_start_over() {
        let (_dir, db) = open_temp();
        saved(&db);
        assert!(db.clear_raft_log_state("g").expect("clear"));
        assert_eq!(state(&db, "g"), RaftState::default());
        assert!(!db.clear_raft_log_state("unknown").expect("clear unknown"));
        db.save_vote("g", &vote(1, Some("a"), false))
            .expect("a lower term after a clear");
        db.save_applied("g", at(1, 1), MEMBERSHIP)
            .expect("a lower applied after a clear");
        db.save_committed("g", Some(at(1, 1)))
            .expect("a lower committed after a clear");
    }

    #[test]
    fn deleting_a_group_state_removes_its_row() {
        let (_dir, db) = open_temp();
        saved(&db);
        db.save_committed("other", None).expect("other");
        assert!(db.delete_replication_group_state("g").expect("delete"));
        assert!(!db.delete_replication_group_state("g").expect("delete again"));
        assert_eq!(db.raft_state("g").expect("read"), None);
        assert_eq!(db.raft_groups().expect("groups"), ["other"]);
    }

    #[test]
    fn bad_input_is_invalid_and_stores_nothing() {
        let (_dir, db) = open_temp();
        let invalid = |result: Result<()>| assert!(matches!(result, Err(ControlError::Invalid(_))), "{result:?}");
        for group in ["", "_other", "a/b", "a b"] {
            invalid(db.save_vote(group, &vote(1, None, false)));
            invalid(db.save_committed(group, None));
            assert!(matches!(db.raft_state(group), Err(ControlError::Invalid(_))));
        }
        let huge = u64::MAX;
        invalid(db.save_vote("g", &vote(huge, None, false)));
        invalid(db.save_vote("g", &vote(1, Some("bad\nnode"), false)));
        invalid(db.save_committed("g", Some(at(1, huge))));
        invalid(db.save_applied("g", at(huge, 1), MEMBERSHIP));
        invalid(db.save_applied("g", at(1, 1), "not json"));
        invalid(db.save_purged("g", at(1, huge)));
        assert!(db.raft_groups().expect("groups").is_empty());
    }

    #[test]
    fn the_database_itself_refuses_rows_that_break_the_rules() {
        let (_dir, db) = open_temp();
        saved(&db);
        let conn = db.lock();
        for update in [
            "UPDATE replication_groups SET last_purged_term = NULL",
            "UPDATE replication_groups SET last_applied_index = NULL, last_applied_term = NULL",
            "UPDATE replication_groups SET last_membership = NULL",
            "UPDATE replication_groups SET commit_term = NULL",
            "UPDATE replication_groups SET vote_committed = 2",
            "UPDATE replication_groups SET current_term = NULL",
            "UPDATE replication_groups SET commit_index = -1",
        ] {
            assert!(conn.execute(update, []).is_err(), "{update}");
        }
    }

    #[test]
    fn a_row_that_breaks_the_rules_is_reported_not_served() {
        let (_dir, db) = open_temp();
        saved(&db);
        {
            let conn = db.lock();
            conn.pragma_update(None, "ignore_check_constraints", true)
                .expect("pragma");
            conn.execute("UPDATE replication_groups SET last_membership = NULL", [])
                .expect("corrupt");
        }
        assert!(matches!(db.raft_state("g"), Err(ControlError::Corrupt(_))));
        assert!(matches!(
            db.save_committed("g", Some(at(9, 99))),
            Err(ControlError::Corrupt(_))
        ));
    }
}
