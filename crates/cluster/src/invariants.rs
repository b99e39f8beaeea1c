//! What must hold between a stopped node's Raft state in the control database and its log on
//! disk, however it stopped (CLUSTER.md §10.8, §11 item 8). The cluster tests and the
//! leader-kill loop check a SIGKILLed node with it before it restarts.
//!
//! In openraft's numbering (a file index − 1), per group:
//! * the last entry's term is at most the vote's term: a node stores entries of a term only
//!   after it voted in that term or followed its leader, and the vote is durable first;
//! * committed ≤ the last entry, or the purge point when the log is empty: a node counts an
//!   entry committed only once it holds it durably (a leader fsyncs before it replicates, a
//!   follower's commit index is capped at what it matched);
//! * purged ≤ applied: the cleaner purges only what the control database records as applied;
//! * the first entry − 1 ≤ applied: every entry after the applied position is still there to
//!   be re-applied at start;
//! * purged ≥ the first entry − 1: a file goes only after the purge point covering it was
//!   recorded.
//!
//! "Applied ≤ what the event store holds durably" is not checkable from these two alone; the
//! history checks after the restart (tokens gapless and identical on every node) catch a breach
//! of it, since an entry recorded as applied but lost by the store would never be re-applied.

use std::path::Path;

use myelin_control::ControlDb;

use crate::log::LogSegments;

/// The broken relations of every group of the node whose control database is `control` and
/// whose logs are under `log_folder`, each as a sentence naming the group. Opening a log
/// recovers its tail, as a restart does.
pub fn check_stopped_node(
    control: &ControlDb,
    log_folder: &Path,
    segment_size_bytes: u64,
) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for group in control.raft_groups().map_err(|e| e.to_string())? {
        let Some(state) = control.raft_state(&group).map_err(|e| e.to_string())? else {
            continue;
        };
        let dir = log_folder.join(&group);
        if !dir.is_dir() {
            if state.applied.is_some() {
                problems.push(format!(
                    "group {group}: entries are recorded as applied but there is no log"
                ));
            }
            continue;
        }
        let log = LogSegments::open(&dir, segment_size_bytes).map_err(|e| format!("group {group}: {e}"))?;
        // openraft's indexes: the file index − 1; "none" as −1.
        let index = |disk: Option<u64>| disk.map_or(-1, |i| i128::from(i) - 1);
        let first = index(log.first_index());
        let last = index(log.last_index());
        let at = |p: Option<myelin_control::LogPosition>| p.map_or(-1, |p| i128::from(p.index));
        let (committed, applied, purged) = (at(state.committed), at(state.applied), at(state.purged));
        let vote_term = state.vote.as_ref().map(|v| v.term);
        if let Some(term) = log.last_term()
            && vote_term.is_none_or(|vote| term > vote)
        {
            problems.push(format!(
                "group {group}: the log holds an entry of term {term}, but the recorded vote is {}",
                state.vote.map_or("none".to_string(), |v| v.to_string())
            ));
        }
        if committed > last.max(purged) {
            problems.push(format!(
                "group {group}: committed through {committed}, but the log ends at {last} (purged through {purged})"
            ));
        }
        if purged > applied {
            problems.push(format!(
                "group {group}: purged through {purged}, but applied only through {applied}"
            ));
        }
        if log.first_index().is_some() && first - 1 > applied {
            problems.push(format!(
                "group {group}: the log starts at {first}, but entries are applied only through {applied}"
            ));
        }
        if log.first_index().is_some() && purged < first - 1 {
            problems.push(format!(
                "group {group}: the log starts at {first}, but it is recorded purged only through {purged}"
            ));
        }
    }
    Ok(problems)
}
