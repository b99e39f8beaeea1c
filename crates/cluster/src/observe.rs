//! What an operator sees of a group in the log: every change of its leader or of this node's
//! state in it. (The status the health and metrics endpoints show is `admin::views`'.)

use std::sync::Arc;

use openraft::ServerState;
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
