//! A private network in which the tests can cut nodes off from each other: each node in a
//! network namespace of its own, as on a host of its own, all joined by a bridge, which the
//! test reaches through one more link; a partition is a pair of `ip rule ... prohibit` rules.
//!
//! ```text
//!   test (host)  198.18.x.1 ──┐
//!                             │  <ns>-hub: bridge
//!   <ns>-0  node 198.18.x.11 ─┤
//!   <ns>-1  node 198.18.x.12 ─┤
//!   <ns>-2  node 198.18.x.13 ─┘
//! ```
//!
//! Why not loopback addresses on the host, which need no setup: there a `prohibit` rule never
//! matches, because the kernel's first rule (`0: from all lookup local`) delivers every local
//! address before any rule one may add (measured: `ip rule add from 127.9.9.1 to 127.9.9.2
//! prohibit` left connections open), and moving that rule is a change to the whole machine,
//! shared with other tests and people. Nor several addresses in one namespace: a connection's
//! source address is chosen by the route, not by the process, so every node's outgoing
//! connections leave from the same address, and no rule can tell one node's traffic from
//! another's (measured: cutting `.11` off also cut `.12` from `.13`). With a namespace per node
//! the rule `from A to B prohibit` in A's namespace refuses at once (`connect` fails with
//! EACCES) and stops established connections from carrying data; the same rule the other way
//! in B's namespace makes the cut symmetric; the test still reaches every node. Deleting the
//! rules heals the partition.
//!
//! Everything is unique to the run: namespace and link names carry the test's pid and a random
//! tag, the addresses are a /24 of 198.18.0.0/15 (the benchmarking range, never routed) not in
//! use on the host, and rules live in the run's own namespaces, numbered from 100. [`Network`]'s
//! `Drop` removes the rules, the namespaces and the host's link, also when the test fails;
//! namespaces left by a test process that was killed (so never dropped) are deleted by the next
//! run, and the nodes still running in them ended. The host gets no rule and no setting, only
//! the one link.
//!
//! It needs root (`ip netns`, `ip rule`). Without it, [`Network::create`] panics saying so: a
//! partition test must fail where it cannot run, never pass without having partitioned.

use std::ffi::OsString;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output, Stdio};

/// Namespaces this kit creates are named `<prefix><pid>-<tag>-<node or hub>`.
const NAMESPACE_PREFIX: &str = "myelin-test-";
/// The first partition rule's priority; the kernel's own rules are 0, 32766 and 32767.
const FIRST_RULE_PRIORITY: u32 = 100;
const LAST_RULE_PRIORITY: u32 = 32_000;
/// The host's end is `.1` of the subnet; node `i` (from 0) is `.11 + i`.
const FIRST_NODE_HOST: u8 = 11;
/// Subnets tried before giving up on finding a free one.
const SUBNET_ATTEMPTS: usize = 64;
/// The bridge, inside the hub namespace (names there are the namespace's own).
const BRIDGE: &str = "bridge0";

const _: () = assert!(FIRST_RULE_PRIORITY < LAST_RULE_PRIORITY);

/// The namespaces, the bridge and the links of `count` nodes; deleted when dropped.
#[derive(Debug)]
pub struct Network {
    /// `<prefix><pid>-<tag>`; the namespaces are this plus `-hub`, `-0`, `-1`, ...
    name: String,
    host_link: String,
    addresses: Vec<IpAddr>,
    /// Partition rules in place, as (node, priority).
    rules: Vec<(usize, u32)>,
    next_priority: u32,
}

impl Network {
    /// Creates the network of `count` nodes; panics when not run as root or when `ip` fails,
    /// saying which command failed.
    #[track_caller]
    pub fn create(count: u8) -> Network {
        require_root();
        delete_abandoned_namespaces();
        assert!(
            count > 0 && count <= u8::MAX - FIRST_NODE_HOST,
            "1 to 244 nodes, not {count}"
        );
        let tag = format!(
            "{:06x}",
            RandomState::new().hash_one(std::process::id()) as u32 & 0xff_ffff
        );
        let subnet = free_subnet();
        let address = |host: u8| Ipv4Addr::new(198, subnet.0, subnet.1, host);
        // From here on, `Drop` cleans up whatever was made, also when a step fails.
        let network = Network {
            name: format!("{NAMESPACE_PREFIX}{}-{tag}", std::process::id()),
            host_link: format!("my{tag}h"),
            addresses: (0..count).map(|i| IpAddr::V4(address(FIRST_NODE_HOST + i))).collect(),
            rules: Vec::new(),
            next_priority: FIRST_RULE_PRIORITY,
        };
        let hub = network.hub();
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", BRIDGE, "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", BRIDGE, "up"]);
        // The host's link into the hub.
        let uplink = format!("my{tag}u");
        ip(&[
            "link",
            "add",
            &network.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &uplink,
        ]);
        network.plug_into_hub(&uplink);
        ip(&["addr", "add", &format!("{}/24", address(1)), "dev", &network.host_link]);
        ip(&["link", "set", &network.host_link, "up"]);
        // One namespace per node, each with one link into the hub.
        for (i, node) in network.addresses.iter().enumerate() {
            let namespace = network.namespace(i);
            let (outer, inner) = (format!("my{tag}a{i}"), format!("my{tag}b{i}"));
            ip(&["netns", "add", &namespace]);
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            network.plug_into_hub(&outer);
            ip(&["link", "set", &inner, "netns", &namespace]);
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
            ip(&["-n", &namespace, "addr", "add", &format!("{node}/24"), "dev", &inner]);
            ip(&["-n", &namespace, "link", "set", &inner, "up"]);
        }
        network
    }

    /// The node addresses, each in its own namespace; all reachable from the test.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    /// The command node `node` (from 0) must be started under to run in its namespace
    /// (`ip netns exec`, which execs the program itself, so its pid is the program's).
    pub fn launcher(&self, node: usize) -> Vec<OsString> {
        ["ip", "netns", "exec", &self.namespace(node)]
            .into_iter()
            .map(OsString::from)
            .collect()
    }

    /// The namespace of node `node` (from 0), for messages and manual inspection.
    pub fn namespace(&self, node: usize) -> String {
        format!("{}-{node}", self.name)
    }

    /// Cuts node `a` off from node `b` (positions, from 0), both ways, and checks with the
    /// kernel's own route lookup that a packet from either to the other is refused.
    #[track_caller]
    pub fn block(&mut self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let priority = self.next_priority;
            assert!(
                priority <= LAST_RULE_PRIORITY,
                "more partition rules than this kit numbers"
            );
            self.next_priority += 1;
            let namespace = self.namespace(from);
            let (source, target) = (self.addresses[from].to_string(), self.addresses[to].to_string());
            let priority_text = priority.to_string();
            ip(&[
                "-n",
                &namespace,
                "rule",
                "add",
                "from",
                &source,
                "to",
                &target,
                "prohibit",
                "priority",
                &priority_text,
            ]);
            self.rules.push((from, priority));
            let lookup = run_ip(&["-n", &namespace, "route", "get", &target, "from", &source]);
            assert!(
                !lookup.status.success(),
                "after `ip rule add from {source} to {target} prohibit` in {namespace}, the route lookup still \
                 succeeds: {}",
                String::from_utf8_lossy(&lookup.stdout)
            );
        }
    }

    /// Cuts node `node` (its position, from 0) off from every other node; the test still
    /// reaches it.
    #[track_caller]
    pub fn isolate(&mut self, node: usize) {
        assert!(node < self.addresses.len(), "there is no node {node}");
        for other in 0..self.addresses.len() {
            if other != node {
                self.block(node, other);
            }
        }
    }

    /// Removes every partition rule.
    #[track_caller]
    pub fn heal(&mut self) {
        for (node, priority) in std::mem::take(&mut self.rules) {
            let namespace = self.namespace(node);
            let removed = run_ip(&["-n", &namespace, "rule", "del", "priority", &priority.to_string()]);
            assert!(
                removed.status.success(),
                "cannot remove the rule of priority {priority} in {namespace}: {}",
                String::from_utf8_lossy(&removed.stderr)
            );
        }
    }

    /// The partition rules in place, per node, as `ip rule` lists them (for messages).
    pub fn rules(&self) -> String {
        (0..self.addresses.len())
            .map(|node| {
                let listed = run_ip(&["-n", &self.namespace(node), "rule", "list"]);
                format!("{}:\n{}", self.namespace(node), String::from_utf8_lossy(&listed.stdout))
            })
            .collect()
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.name)
    }

    /// Moves `link` into the hub namespace, onto the bridge, up.
    #[track_caller]
    fn plug_into_hub(&self, link: &str) {
        let hub = self.hub();
        ip(&["link", "set", link, "netns", &hub]);
        ip(&["-n", &hub, "link", "set", link, "master", BRIDGE]);
        ip(&["-n", &hub, "link", "set", link, "up"]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Best effort, without panicking while a test unwinds. The rules go with the
        // namespaces, but remove them first so that nothing stays partitioned should a
        // namespace live on (a process the test failed to stop still in it).
        for (node, priority) in std::mem::take(&mut self.rules) {
            let _ = run_ip(&[
                "-n",
                &self.namespace(node),
                "rule",
                "del",
                "priority",
                &priority.to_string(),
            ]);
        }
        let namespaces = (0..self.addresses.len())
            .map(|node| self.namespace(node))
            .chain([self.hub()]);
        for namespace in namespaces {
            let deleted = run_ip(&["netns", "del", &namespace]);
            if !deleted.status.success() {
                eprintln!(
                    "cannot delete the network namespace {namespace}: {}",
                    String::from_utf8_lossy(&deleted.stderr).trim()
                );
            }
        }
        // Normally gone with its peer in the hub; not when that was never moved there.
        let _ = run_ip(&["link", "del", &self.host_link]);
    }
}

/// Panics unless the effective user is root.
#[track_caller]
fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("unknown");
    assert!(
        euid == "0",
        "this test partitions nodes with `ip netns` and `ip rule`, which needs root, but it runs as \
         effective uid {euid}: run it as root (it does not skip, so that a partition test never \
         passes without partitioning)"
    );
}

/// Deletes namespaces of this kit whose test process no longer exists (it was killed, so
/// nothing of it was dropped), ending the processes still in them.
fn delete_abandoned_namespaces() {
    let listed = run_ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NAMESPACE_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            // Nodes the dead test started may still run in it: they are its, so end them.
            let inside = run_ip(&["netns", "pids", name]);
            for node in String::from_utf8_lossy(&inside.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", node]).status();
            }
            eprintln!("deleting the network namespace {name}, left by test process {pid}");
            let _ = run_ip(&["netns", "del", name]);
        }
    }
}

/// A 198.18.0.0/15 /24 that no address of the host is in, as its second and third octets.
#[track_caller]
fn free_subnet() -> (u8, u8) {
    let used = String::from_utf8_lossy(&run_ip(&["-4", "-o", "addr", "show"]).stdout).into_owned();
    let random = RandomState::new();
    for attempt in 0..SUBNET_ATTEMPTS {
        let pick = random.hash_one((std::process::id(), attempt));
        let subnet = (18 + (pick % 2) as u8, (pick >> 8) as u8);
        if !used.contains(&format!(" 198.{}.{}.", subnet.0, subnet.1)) {
            return subnet;
        }
    }
    panic!("no free /24 in 198.18.0.0/15 after {SUBNET_ATTEMPTS} attempts; addresses in use:\n{used}")
}

fn run_ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run `ip` (iproute2) for the test network: {error}"))
}

/// Runs `ip args`; panics with its error when it fails.
#[track_caller]
fn ip(args: &[&str]) {
    let output = run_ip(args);
    assert!(
        output.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
