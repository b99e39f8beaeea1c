//! Several `myelin serve` processes at once, each on its own loopback address with its own data
//! directory: the ground the cluster tests stand on.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Index;
use std::path::PathBuf;

use tempfile::TempDir;

use super::{Binary, Network, Node, NodeOptions, loopback};

/// The internal port every node of a planned cluster uses, each on its own address.
pub const INTERNAL_PORT: u16 = 8224;

/// A cluster formed by `autocluster.*`: per node, its options (own loopback address, own data
/// directory that outlives the process, so a node can be restarted on its data) and where its
/// data lives. The addresses are `127.a.b.1..n` for a random `a.b`, so that clusters of tests
/// running at once never share an address, and every node uses internal port 8224.
pub struct ClusterPlan {
    pub options: Vec<NodeOptions>,
    pub data_dirs: Vec<PathBuf>,
    /// Each node's own loopback address.
    pub addresses: Vec<IpAddr>,
    /// Holds every node's data; deleted with the plan.
    pub dir: TempDir,
}

impl ClusterPlan {
    /// `count` nodes named `node-1`.., the first initialising the cluster with `contexts`.
    pub fn autocluster(binary: &Binary, count: u8, contexts: &str) -> ClusterPlan {
        ClusterPlan::autocluster_at(binary, &random_loopback_addresses(count), contexts)
    }

    /// [`ClusterPlan::autocluster`] with node `i` in `network`'s namespace `i`, on its address,
    /// so that the test can partition them.
    pub fn autocluster_in(binary: &Binary, network: &Network, contexts: &str) -> ClusterPlan {
        let mut plan = ClusterPlan::autocluster_at(binary, network.addresses(), contexts);
        plan.options = plan
            .options
            .into_iter()
            .enumerate()
            .map(|(i, options)| options.launcher(network.launcher(i)))
            .collect();
        plan
    }

    /// One node per address, `node-1` on the first, which initialises the cluster.
    pub fn autocluster_at(binary: &Binary, addresses: &[IpAddr], contexts: &str) -> ClusterPlan {
        ClusterPlan::new(binary, addresses, |first| {
            vec![
                format!("axoniq.axonserver.autocluster.first={first}:{INTERNAL_PORT}"),
                format!("axoniq.axonserver.autocluster.contexts={contexts}"),
            ]
        })
    }

    /// `count` nodes named `node-1`.. that form no cluster by themselves: they start with
    /// `myelin.cluster.enabled`, waiting for `POST /v1/context/init` on one and `POST
    /// /v1/cluster` on the others.
    pub fn cluster_enabled(binary: &Binary, count: u8) -> ClusterPlan {
        ClusterPlan::new(binary, &random_loopback_addresses(count), |_| {
            vec!["myelin.cluster.enabled=true".to_string()]
        })
    }

    /// A node per address with the harness's settings plus `extra` (given the first node's
    /// address).
    fn new(binary: &Binary, addresses: &[IpAddr], extra: impl Fn(IpAddr) -> Vec<String>) -> ClusterPlan {
        let dir = tempfile::Builder::new()
            .prefix("myelin-cluster-")
            .tempdir()
            .expect("a temporary directory for the cluster");
        let first = *addresses.first().expect("at least one node");
        let mut options = Vec::new();
        let mut data_dirs = Vec::new();
        for (i, address) in addresses.iter().enumerate() {
            let data = dir.path().join(format!("node-{}", i + 1));
            let mut settings = vec![
                format!("axoniq.axonserver.name=node-{}", i + 1),
                format!("axoniq.axonserver.hostname={address}"),
                format!("axoniq.axonserver.internal-hostname={address}"),
                format!("axoniq.axonserver.internal-port={INTERNAL_PORT}"),
                format!(
                    "axoniq.axonserver.replication.log-storage-folder={}",
                    data.join("log").display()
                ),
            ];
            settings.extend(extra(first));
            options.push(
                binary
                    .node()
                    .address(*address)
                    .data_dir(data.join("data"))
                    .settings(settings),
            );
            data_dirs.push(data);
        }
        ClusterPlan {
            options,
            data_dirs,
            addresses: addresses.to_vec(),
            dir,
        }
    }
}

/// `127.a.b.1..=count` for a random `a.b`, so that clusters of tests running at once never
/// share an address.
fn random_loopback_addresses(count: u8) -> Vec<IpAddr> {
    let random = RandomState::new().hash_one(std::process::id());
    let (a, b) = (1 + (random % 250) as u8, 1 + ((random >> 8) % 250) as u8);
    (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, a, b, i + 1)))
        .collect()
}

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
