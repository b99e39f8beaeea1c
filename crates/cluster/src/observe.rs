//! What an operator sees of a group: leader changes in the log, and a status snapshot for the
//! health and metrics endpoints.

use std::sync::Arc;

use openraft::ServerState;
use serde::Serialize;
use tracing::info;

use crate::group::Group;

/// Logs every change of a group's leader or of this node's state in it.
pub fn spawn_leader_log(group: Arc<Group>) {
    let mut metrics = group.raft.metrics();
    let name = group.name.clone();
    drop(group);
    tokio::spawn(async move {
        let mut last: Option<(Option<u64>, u64, ServerState)> = None;
        loop {
            let now = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.current_term, m.state)
            };
            if last != Some(now) {
                info!(group = %name, leader = ?now.0, term = now.1, state = ?now.2, "raft state");
                last = Some(now);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// One group as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub state: String,
    pub term: u64,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Per member (by name), the index it is known to hold; only on the leader.
    pub replication: Vec<(String, Option<u64>)>,
}

impl GroupStatus {
    pub fn of(group: &Group) -> GroupStatus {
        let m = group.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let name_of = |id: &u64| {
            membership
                .get_node(id)
                .map(|member| member.name.clone())
                .unwrap_or_else(|| id.to_string())
        };
        GroupStatus {
            group: group.name.clone(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader.as_ref().map(name_of),
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            replication: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, matched)| (name_of(id), matched.map(|l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
