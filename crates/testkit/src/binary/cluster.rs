//! Several `myelin serve` processes at once, each on its own loopback address with its own data
//! directory: the ground the cluster tests stand on.

use std::ops::Index;

use super::{Binary, Node, NodeOptions, loopback};

/// Options for `count` nodes of `binary`, node `i` (from 0) on `127.0.0.<i + 1>`, each with
/// its own data directory; adjust them before [`Cluster::start`].
pub fn loopback_nodes(binary: &Binary, count: u8) -> Vec<NodeOptions> {
    (0..count)
        .map(|i| binary.node().address(loopback(i.saturating_add(1))))
        .collect()
}

/// Running nodes, started together; every one is killed when the cluster is dropped.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts one node per options, all processes at once, then waits until each listens;
    /// panics, keeping the logs, when one does not start.
    #[track_caller]
    pub fn start(options: impl IntoIterator<Item = NodeOptions>) -> Cluster {
        let starting: Vec<_> = options.into_iter().map(NodeOptions::spawn).collect();
        let mut nodes = Vec::with_capacity(starting.len());
        // A loop, not a closure, so that a failure is reported at the test's line.
        for node in starting {
            nodes.push(node.wait_until_listening());
        }
        Cluster { nodes }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// SIGTERM to every node at once, then waits for each: all must exit cleanly.
    #[track_caller]
    pub fn stop(mut self) {
        for node in &mut self.nodes {
            node.terminate();
        }
        for node in self.nodes {
            node.wait_for_clean_exit();
        }
    }

    /// The nodes, to stop or kill one by one.
    pub fn into_nodes(self) -> Vec<Node> {
        self.nodes
    }
}

impl Index<usize> for Cluster {
    type Output = Node;

    fn index(&self, index: usize) -> &Node {
        &self.nodes[index]
    }
}
