//! Records each group's applied and commit positions in the control database, at most once per
//! `replication.sync-interval` (Axon records its raft state once a second too; the vote is the
//! exception and is written before it is answered, in the log store).
//!
//! The applied position is only ever one the state machine reached after the event stores had
//! fsynced what it applied, so the control database never claims more than the stores hold.

use std::sync::Arc;
use std::time::Duration;

use myelin_control::{ControlDb, LogPosition};
use tracing::warn;

use crate::group::Group;
use crate::log::LogStore;

/// Starts the flusher of `group`; it ends when the group's Raft has stopped.
pub fn spawn(group: Arc<Group>, log: LogStore, control: Arc<ControlDb>, interval_ms: u64) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(interval_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            record(&group, &log, &control);
            if group.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            if Arc::strong_count(&group) == 1 {
                // The cluster let go of the group: record once more and stop.
                record(&group, &log, &control);
                return;
            }
        }
    });
}

/// Records what has changed now (at shutdown, say).
pub fn flush_now(group: &Group, control: &ControlDb) {
    if let Some((applied, membership)) = group.position.take() {
        save_applied(group, control, applied, &membership);
    }
}

fn record(group: &Group, log: &LogStore, control: &ControlDb) {
    if let Some(committed) = log.take_committed() {
        let position = committed.map(|c| LogPosition {
            term: c.leader_id.term,
            index: c.index,
        });
        if let Err(e) = control.save_committed(&group.name, position) {
            warn!(group = %group.name, "cannot record the commit index: {e}");
        }
    }
    flush_now(group, control);
}

fn save_applied(
    group: &Group,
    control: &ControlDb,
    applied: crate::types::LogId,
    membership: &crate::types::StoredMembership,
) {
    let json = match serde_json::to_string(membership) {
        Ok(json) => json,
        Err(e) => {
            warn!(group = %group.name, "cannot encode the membership: {e}");
            return;
        }
    };
    let position = LogPosition {
        term: applied.leader_id.term,
        index: applied.index,
    };
    if let Err(e) = control.save_applied(&group.name, position, &json) {
        warn!(group = %group.name, "cannot record the applied index: {e}");
    }
}
