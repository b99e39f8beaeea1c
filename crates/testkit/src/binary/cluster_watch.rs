//! What a test sees of a running cluster: each node's Raft state from its log, the leader, the
//! moment the cluster has formed, converged histories and the history checker over them.

use std::time::{Duration, Instant};

use myelin_proto::grpc::event::{Event, GetLastTokenRequest};

use super::Node;
use crate::client::{events_between, last_token};
use crate::history::{NodeHistory, Outcomes, Summary};

/// What a node last logged of its part in a replication group: the line
/// `raft state group=<g> leader=Some(<id>) term=<t> state=<Leader|Follower|...>` that the
/// cluster writes on every change (`myelin_cluster::observe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftState {
    pub term: u64,
    /// The leader's Raft id, if the node knows one.
    pub leader: Option<u64>,
    /// openraft's server state, as logged (`Leader`, `Follower`, `Candidate`, `Learner`).
    pub state: String,
}

impl RaftState {
    /// The state in the last `raft state` line of `log` for `group`, if any.
    pub fn last_in(log: &str, group: &str) -> Option<RaftState> {
        log.lines()
            .rev()
            .filter(|line| line.contains("raft state"))
            .find_map(|line| {
                let fields: Vec<(&str, &str)> = line
                    .split_whitespace()
                    .filter_map(|field| field.split_once('='))
                    .collect();
                let value = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
                if value("group") != Some(group) {
                    return None;
                }
                let leader = value("leader")?;
                Some(RaftState {
                    term: value("term")?.parse().ok()?,
                    leader: leader
                        .strip_prefix("Some(")
                        .and_then(|id| id.strip_suffix(')'))
                        .and_then(|id| id.parse().ok()),
                    state: value("state")?.to_string(),
                })
            })
    }

    pub fn is_leader(&self) -> bool {
        self.state == "Leader"
    }
}

impl Node {
    /// What this node last logged of its part in `group`.
    pub fn raft_state(&self, group: &str) -> Option<RaftState> {
        RaftState::last_in(&self.log(), group)
    }
}

/// The position in `nodes` of the node that last logged itself leader of `group` in the
/// highest term (an isolated old leader may still think it leads, in an older term).
pub fn leader_of(nodes: &[&Node], group: &str) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| node.raft_state(group).filter(RaftState::is_leader).map(|s| (s.term, i)))
        .max()
        .map(|(_, i)| i)
}

/// [`leader_of`], waiting up to `timeout` for there to be one.
pub async fn wait_for_leader(nodes: &[&Node], group: &str, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(leader) = leader_of(nodes, group) {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no node logged itself leader of {group} within {timeout:?}; nodes: {:?}",
            nodes
                .iter()
                .map(|n| (n.address(), n.raft_state(group)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each of `joiners` logged that it joined the cluster (its join returned: it is a
/// voter of `_admin` and of every group of `autocluster.contexts`, each membership change
/// committed in full). A node restarted on its data reopens its groups instead and logs no
/// join.
pub async fn wait_until_joined(joiners: &[&Node], timeout: Duration) {
    const JOINED: &str = "joined the cluster";
    let deadline = Instant::now() + timeout;
    for node in joiners {
        while !node.log().contains(JOINED) {
            assert!(
                Instant::now() < deadline,
                "{} did not log `{JOINED}` within {timeout:?}",
                node.address()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until every node of `nodes` is a voter of `group` (it logged itself `Leader` or
/// `Follower`, not `Learner`) and all name the same leader in the same term: the cluster has
/// formed, and losing one node leaves a majority (once no membership change is under way: see
/// [`wait_until_joined`]). Answers the leader's position.
pub async fn wait_until_formed(nodes: &[&Node], group: &str, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let states: Vec<Option<RaftState>> = nodes.iter().map(|n| n.raft_state(group)).collect();
        let voters = states
            .iter()
            .flatten()
            .filter(|s| s.state == "Leader" || s.state == "Follower")
            .count();
        let agree = states
            .windows(2)
            .all(|pair| matches!(pair, [Some(a), Some(b)] if a.term == b.term && a.leader == b.leader));
        if voters == nodes.len()
            && agree
            && let Some(leader) = states.iter().position(|s| s.as_ref().is_some_and(RaftState::is_leader))
        {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not all become voters of {group} under one leader within {timeout:?}: {:?}",
            nodes
                .iter()
                .zip(&states)
                .map(|(n, s)| (n.address(), s))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the nodes have converged ([`wait_until_converged`]), reads each one's history up
/// to the token they agree on and runs the [history checker](crate::history) over them;
/// panics with its violations, naming the nodes' logs. Writers must be paused (or stopped):
/// an acknowledgement after the nodes converged would not be in what is read.
pub async fn assert_converged_histories(nodes: &[&Node], outcomes: &Outcomes, timeout: Duration) -> Summary {
    let last = wait_until_converged(nodes, timeout).await;
    let mut histories = Vec::with_capacity(nodes.len());
    for node in nodes {
        let events = events_between(&mut node.client().await, 0, last).await;
        histories.push((node.address().to_string(), events));
    }
    let views: Vec<NodeHistory<'_>> = histories
        .iter()
        .map(|(node, events)| NodeHistory::new(node, events))
        .collect();
    match crate::history::check(&views, outcomes) {
        Ok(summary) => summary,
        Err(violations) => panic!(
            "{violations}\nlogs: {}",
            nodes
                .iter()
                .map(|n| n.log_path().display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Waits until every node answers the same last token twice in a row `SETTLED` apart, and
/// answers it; panics after `timeout`, naming each node's last token.
pub async fn wait_until_converged(nodes: &[&Node], timeout: Duration) -> i64 {
    const SETTLED: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + timeout;
    let mut previous: Option<Vec<i64>> = None;
    loop {
        let mut tokens = Vec::with_capacity(nodes.len());
        for node in nodes {
            tokens.push(last_token(&mut node.client().await).await);
        }
        let same = tokens.windows(2).all(|pair| pair[0] == pair[1]);
        if same && previous.as_ref() == Some(&tokens) {
            return tokens[0];
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not converge within {timeout:?}: last tokens {:?} on {:?}",
            tokens,
            nodes.iter().map(|n| n.address()).collect::<Vec<_>>()
        );
        previous = Some(tokens);
        tokio::time::sleep(SETTLED).await;
    }
}

/// `request` addressed to `context` (Axon's `AxonIQ-Context` header).
pub fn in_context<T>(request: T, context: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("axoniq-context", context.parse().expect("a context name is ASCII"));
    request
}

/// Appends one transaction of `context` through `node`, retrying while the cluster forms,
/// elects or a member catches up, for up to `timeout`. A retry refused for its sequence
/// (OUT_OF_RANGE) after an attempt that failed means that attempt stored it; the history check
/// afterwards confirms every event is there once.
pub async fn append_eventually(node: &Node, context: &str, events: Vec<Event>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut failed_before = false;
    loop {
        let answer = node
            .client()
            .await
            .append_event(in_context(tokio_stream::iter(events.clone()), context))
            .await;
        match answer {
            Ok(_) => return,
            Err(status) if failed_before && status.code() == tonic::Code::OutOfRange => return,
            Err(status) if Instant::now() < deadline => {
                eprintln!("append to {context} through {} not yet: {status}", node.address());
                failed_before = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!(
                "append to {context} through {} failed: {status}\n{}",
                node.address(),
                node.log()
            ),
        }
    }
}

/// Waits up to `timeout` until `node` holds `context` up to token `last` (a node still
/// starting, or that has not created the context yet, is asked again).
pub async fn wait_for_last_token(node: &Node, context: &str, last: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = node
            .client()
            .await
            .get_last_token(in_context(GetLastTokenRequest {}, context))
            .await
            .map(|reply| reply.into_inner().token);
        if answer.as_ref().is_ok_and(|token| *token == last) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context} on {} stayed at {answer:?}, expected token {last}\n{}",
            node.address(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to `timeout` until `node`'s log has a line containing `needle`.
pub async fn wait_for_log(node: &Node, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !node.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{} never logged {needle:?}\n{}",
            node.address(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::RaftState;

    #[test]
    fn the_last_raft_state_line_of_the_group_is_the_nodes_state() {
        let log = "\
2026-12-06T10:00:00Z  INFO myelin_cluster::observe: raft state group=_admin leader=Some(7) term=1 state=Leader
2026-12-06T10:00:00Z  INFO myelin_cluster::observe: raft state group=default leader=None term=1 state=Candidate
2026-12-06T10:00:01Z  INFO myelin_cluster::observe: raft state group=default leader=Some(42) term=3 state=Follower
2026-12-06T10:00:01Z  INFO myelin_cluster::observe: raft state group=default2 leader=Some(1) term=9 state=Leader
";
        assert_eq!(
            RaftState::last_in(log, "default"),
            Some(RaftState {
                term: 3,
                leader: Some(42),
                state: "Follower".into()
            })
        );
        assert!(RaftState::last_in(log, "_admin").is_some_and(|s| s.is_leader()));
        assert_eq!(RaftState::last_in(log, "other"), None);
    }
}
