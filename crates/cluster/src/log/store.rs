//! openraft's log storage over the log-entry segments: entries are encoded in Axon's framing
//! (`codec`), written and fdatasync'ed before openraft hears they are stored, and the vote, the
//! commit and purge points live in the control database (CLUSTER.md §10.4).
//!
//! * The vote is written in its own SQLite transaction (`synchronous=FULL`) before
//!   `save_vote` returns: a vote a node answered is never forgotten by a crash.
//! * The commit point is optional to openraft; it is kept in memory and recorded by the
//!   group's flusher once per `sync-interval`.
//! * A purge records the new purge point first, then deletes whole closed segments, never past
//!   the applied position the control database holds (so a backup's log always reaches back to
//!   what its control database says was applied; CLUSTER.md §10.8).
//!
//! **Indexes.** openraft numbers its log from 0 (its first membership entry); Axon's log, and
//! so its file names, from 1. Entry `i` of openraft is entry `i + 1` on disk: the files read as
//! Axon's, and this adapter is the only place that knows.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use myelin_control::{ControlDb, LogPosition, RaftState};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, EntryPayload, RaftLogReader, StorageIOError};
use parking_lot::{Mutex, RwLock};

use super::segments::{LogSegments, Record};
use crate::codec;
use crate::types::{Entry, LogId, StorageError, StoredMembership, TypeConfig, Vote};

/// A closed segment as the log cleaner sees it (indexes are openraft's).
#[derive(Debug, Clone)]
pub struct ClosedSegment {
    pub first_index: u64,
    pub last_index: u64,
    pub path: std::path::PathBuf,
    pub modified: Option<std::time::SystemTime>,
}

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

/// When deleting log files is allowed: never while a backup lease is live, nor while a
/// cleaning pause (after a control-database backup) lasts. Shared by every group of a node.
#[derive(Debug)]
pub struct CleaningGate {
    holds: Arc<myelin_store::DeletionHolds>,
    paused_until: Mutex<Option<std::time::Instant>>,
}

impl CleaningGate {
    pub fn new(holds: Arc<myelin_store::DeletionHolds>) -> CleaningGate {
        CleaningGate {
            holds,
            paused_until: Mutex::new(None),
        }
    }

    /// Holds deletions back until at least `now + duration`.
    pub fn pause(&self, duration: std::time::Duration) {
        let until = std::time::Instant::now() + duration;
        let mut paused = self.paused_until.lock();
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// Whether log files may be deleted now.
    pub fn allows_deletion(&self) -> bool {
        let now = std::time::Instant::now();
        !self.holds.is_held(now) && self.paused_until.lock().is_none_or(|until| until <= now)
    }
}

struct Inner {
    group: String,
    gate: Arc<CleaningGate>,
    segments: RwLock<LogSegments>,
    control: Arc<ControlDb>,
    /// The last vote saved (also in the control database): names the leader of its term,
    /// which the term's first entry records.
    vote: Mutex<Option<Vote>>,
    purged: Mutex<Option<LogId>>,
    /// A commit point not yet recorded: `Some(committed)` when it changed.
    committed: Mutex<Option<Option<LogId>>>,
}

/// The on-disk (Axon) index of openraft's index `index`.
fn disk(index: u64) -> u64 {
    index + 1
}

/// openraft's index of the on-disk index `index` (never 0 on disk).
fn raft(index: u64) -> u64 {
    index.saturating_sub(1)
}

/// Files go only as far as the recorded applied position (the entries openraft would re-apply
/// after a crash must still be there), and only when no backup holds them back.
fn remove_purged_files(inner: &Inner) -> Result<Vec<std::path::PathBuf>, String> {
    let Some(purged) = *inner.purged.lock() else {
        return Ok(Vec::new());
    };
    if !inner.gate.allows_deletion() {
        return Ok(Vec::new());
    }
    let applied = inner
        .control
        .raft_state(&inner.group)
        .map_err(|e| e.to_string())?
        .and_then(|state| state.applied);
    let Some(applied) = applied else {
        return Ok(Vec::new());
    };
    let through = purged.index.min(applied.index);
    inner
        .segments
        .write()
        .remove_closed_through(disk(through))
        .map_err(|e| e.to_string())
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn to_position(log_id: &LogId) -> LogPosition {
    LogPosition {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

fn from_position(position: &LogPosition) -> LogId {
    codec::log_id(position.term, position.index)
}

impl LogStore {
    /// Opens (recovering) the log of `group` in `dir`.
    pub async fn open(
        dir: &Path,
        segment_size_bytes: u64,
        control: Arc<ControlDb>,
        group: &str,
        gate: Arc<CleaningGate>,
    ) -> Result<LogStore, std::io::Error> {
        let dir = dir.to_path_buf();
        let segments = tokio::task::spawn_blocking(move || LogSegments::open(&dir, segment_size_bytes))
            .await
            .map_err(io_error)?
            .map_err(io_error)?;
        let state = control.raft_state(group).map_err(io_error)?.unwrap_or_default();
        let vote = state.vote.as_ref().map(|v| {
            let node = v.node.as_deref().and_then(|n| n.parse::<u64>().ok());
            let mut vote = match node {
                Some(node) => Vote::new(v.term, node),
                None => Vote {
                    leader_id: openraft::LeaderId {
                        term: v.term,
                        voted_for: None,
                    },
                    committed: false,
                },
            };
            vote.committed = v.committed;
            vote
        });
        Ok(LogStore {
            inner: Arc::new(Inner {
                group: group.to_string(),
                gate,
                segments: RwLock::new(segments),
                control,
                vote: Mutex::new(vote),
                purged: Mutex::new(state.purged.as_ref().map(from_position)),
                committed: Mutex::new(None),
            }),
        })
    }

    /// What the control database recorded as applied, with the membership at that point.
    pub fn recorded_applied(&self) -> Result<(Option<LogId>, StoredMembership), String> {
        let state: RaftState = self
            .inner
            .control
            .raft_state(&self.inner.group)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let membership = match &state.membership {
            Some(json) => serde_json::from_str(json).map_err(|e| format!("recorded membership: {e}"))?,
            None => StoredMembership::default(),
        };
        Ok((state.applied.as_ref().map(from_position), membership))
    }

    /// The commit point changed since the last call, if it did.
    pub fn take_committed(&self) -> Option<Option<LogId>> {
        self.inner.committed.lock().take()
    }

    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// The segment files now: closed ones newest first, the active one, and how much of it is
    /// synced.
    pub fn files(&self) -> myelin_node::ReplicationLogFiles {
        let segments = self.inner.segments.read();
        let files = segments.files();
        myelin_node::ReplicationLogFiles {
            group: self.inner.group.clone(),
            closed: files.closed.into_iter().map(|(_, path)| path).collect(),
            active: files.active.1,
            active_synced_bytes: segments.active_synced_len(),
        }
    }

    /// The closed segments, oldest first: openraft's first and last index in each, its path and
    /// when it was last written.
    pub fn closed_segments(&self) -> Vec<ClosedSegment> {
        let files = self.inner.segments.read().files();
        let mut closed: Vec<(u64, std::path::PathBuf)> = files.closed;
        closed.reverse();
        let mut next_first = closed.iter().skip(1).map(|(first, _)| *first).collect::<Vec<_>>();
        next_first.push(files.active.0);
        closed
            .into_iter()
            .zip(next_first)
            .map(|((first, path), next)| ClosedSegment {
                first_index: raft(first),
                last_index: raft(next.saturating_sub(1)),
                modified: std::fs::metadata(&path).and_then(|m| m.modified()).ok(),
                path,
            })
            .collect()
    }

    /// The purge point openraft last set.
    pub fn purged(&self) -> Option<LogId> {
        *self.inner.purged.lock()
    }

    /// Deletes the closed segment files whose entries are all purged and applied (as the
    /// control database records), if the cleaning gate allows it now. Answers what it deleted.
    pub fn remove_purged_files(&self) -> Result<Vec<std::path::PathBuf>, String> {
        remove_purged_files(&self.inner)
    }

    /// Reads `[start, end)`, decoded.
    fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let records = self
            .inner
            .segments
            .read()
            .read(disk(start), disk(end))
            .map_err(|e| StorageError::from(StorageIOError::read_logs(AnyError::error(e.to_string()))))?;
        records
            .into_iter()
            .map(|r| {
                let index = raft(r.index);
                codec::decode(index, r.term, r.kind.code(), &r.data)
                    .map_err(|e| StorageIOError::read_log_at_index(index, AnyError::error(e.to_string())).into())
            })
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (first, next) = {
            let segments = self.inner.segments.read();
            (segments.first_index().map(raft), raft(segments.next_index()))
        };
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        // Purged entries may still be on disk (files go later, and never past the recorded
        // applied position), but they are gone as far as openraft is concerned.
        let first = match *self.inner.purged.lock() {
            Some(purged) => first.max(purged.index + 1),
            None => first,
        };
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => first,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(i) => i + 1,
            Bound::Excluded(i) => *i,
            Bound::Unbounded => next,
        }
        .min(next);
        if start >= end {
            return Ok(Vec::new());
        }
        self.read(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged = *self.inner.purged.lock();
        let last = {
            let segments = self.inner.segments.read();
            segments
                .last_index()
                .zip(segments.last_term())
                .map(|(index, term)| codec::log_id(term, raft(index)))
        };
        // A purge may reach past the last entry present (after a snapshot): the log then ends
        // at the purge point.
        let last_log_id = match (last, purged) {
            (Some(last), Some(purged)) if purged.index >= last.index => Some(purged),
            (last, purged) => last.or(purged),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let record = myelin_control::Vote {
            term: vote.leader_id.term,
            node: vote.leader_id.voted_for.map(|id| id.to_string()),
            committed: vote.committed,
        };
        let control = self.inner.control.clone();
        let group = self.inner.group.clone();
        tokio::task::spawn_blocking(move || control.save_vote(&group, &record))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::error(e.to_string()))))?
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::error(e.to_string()))))?;
        *self.inner.vote.lock() = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(*self.inner.vote.lock())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.inner.committed.lock() = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let state = self
            .inner
            .control
            .raft_state(&self.inner.group)
            .map_err(|e| StorageError::from(StorageIOError::read(AnyError::error(e.to_string()))))?;
        Ok(state.and_then(|s| s.committed).as_ref().map(from_position))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let vote = *self.inner.vote.lock();
        let mut records = Vec::new();
        for entry in entries {
            // The first entry of a term names its leader: the one this node voted for (or
            // followed) in that term, by its id, as Axon records its own node ids there.
            let leader = match (&entry.payload, vote) {
                (EntryPayload::Blank, Some(v)) if v.leader_id.term == entry.log_id.leader_id.term => {
                    v.leader_id.voted_for.map(|id| id.to_string()).unwrap_or_default()
                }
                _ => String::new(),
            };
            let (kind, data) = codec::encode(&entry, &leader).map_err(|e| {
                StorageError::from(StorageIOError::write_log_entry(
                    entry.log_id,
                    AnyError::error(e.to_string()),
                ))
            })?;
            let kind = super::EntryType::from_code(kind).ok_or_else(|| {
                StorageError::from(StorageIOError::write_log_entry(
                    entry.log_id,
                    AnyError::error(format!("entry type {kind}")),
                ))
            })?;
            records.push(Record {
                index: disk(entry.log_id.index),
                term: entry.log_id.leader_id.term,
                kind,
                data,
            });
        }
        let inner = self.inner.clone();
        let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
            // Written under the lock, fdatasync'ed outside it: replication tasks keep reading
            // while the disk syncs.
            let pending = {
                let mut segments = inner.segments.write();
                // A log with nothing left to read (empty, or purged through its end)
                // continues wherever openraft's does (after a snapshot, past its purge
                // point): its next file starts there.
                let purged_through = inner.purged.lock().map(|p| disk(p.index));
                let nothing_left = match (segments.last_index(), purged_through) {
                    (None, _) => true,
                    (Some(last), Some(purged)) => purged >= last,
                    (Some(_), None) => false,
                };
                if let Some(first) = records.first()
                    && nothing_left
                    && first.index != segments.next_index()
                {
                    segments.reset(first.index).map_err(|e| e.to_string())?;
                }
                segments.append(&records).map_err(|e| e.to_string())?;
                segments.pending_sync().map_err(|e| e.to_string())?
            };
            let done = pending.run();
            inner
                .segments
                .write()
                .finish_sync(done)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(message) => {
                callback.log_io_completed(Err(io_error(&message)));
                Err(StorageIOError::write_logs(AnyError::error(message)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .segments
                .write()
                .truncate_from(disk(log_id.index))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|message| StorageIOError::write_logs(AnyError::error(message)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            // The purge point first: a file is only ever deleted once its entries are known
            // purged (CLUSTER.md §10.8).
            inner
                .control
                .save_purged(&inner.group, to_position(&log_id))
                .map_err(|e| e.to_string())?;
            *inner.purged.lock() = Some(log_id);
            remove_purged_files(&inner).map(|_| ())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|message| StorageIOError::write_logs(AnyError::error(message)).into())
    }
}
