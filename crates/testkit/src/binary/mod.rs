//! The real `myelin` binary: `myelin serve` as a child process ([`Node`]), several at once
//! ([`Cluster`], [`ClusterPlan`]), what a test sees of a running cluster (its leader, when it
//! has formed and converged, the history check), a network in which nodes can be partitioned
//! ([`Network`]), and its one-shot tool commands ([`Binary::run`]).
//!
//! A node listens on ports the OS chooses (port 0, learned from its log lines) on the loopback
//! address it is given — 127.0.0.1, 127.0.0.2, ... all reach this machine on Linux without any
//! setup, so several nodes run side by side, each on its own address as on its own host.

mod cluster;
mod cluster_watch;
mod log;
mod netns;
mod node;
mod process;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use cluster::{Cluster, ClusterPlan, INTERNAL_PORT, loopback_nodes};
pub use cluster_watch::{
    RaftState, append_eventually, assert_converged_histories, in_context, leader_of, wait_for_last_token,
    wait_for_leader, wait_for_log, wait_until_converged, wait_until_formed, wait_until_joined,
};
pub use netns::Network;
pub use node::{Node, NodeOptions};
pub use process::{PROCESS_TIMEOUT, Process, run_to_end};

/// Names the `myelin` binary to test, overriding the one the test passes (for example a release
/// build); tests of crates other than the CLI find the binary only through it.
pub const BIN_VAR: &str = "MYELIN_BIN";

/// The `myelin` executable the tests run.
#[derive(Debug, Clone)]
pub struct Binary {
    path: PathBuf,
}

impl Binary {
    /// `default` (the CLI's tests pass `env!("CARGO_BIN_EXE_myelin")`), unless [`BIN_VAR`]
    /// names another.
    pub fn new(default: impl Into<PathBuf>) -> Binary {
        let path = std::env::var_os(BIN_VAR)
            .filter(|value| !value.is_empty())
            .map_or_else(|| default.into(), PathBuf::from);
        Binary { path }
    }

    /// The binary [`BIN_VAR`] names; panics saying so when it is not set.
    pub fn from_env() -> Binary {
        let path = std::env::var_os(BIN_VAR)
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| panic!("set {BIN_VAR} to the myelin binary to test (e.g. target/debug/myelin)"));
        Binary {
            path: PathBuf::from(path),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Options for a `myelin serve` of this binary, to adjust and start.
    pub fn node(&self) -> NodeOptions {
        NodeOptions::new(self.clone())
    }

    /// Runs `myelin <args>` to its end (stdin closed) and returns what it printed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// [`Binary::run`] with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(String, String)]) -> Output {
        Command::new(&self.path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {} ({BIN_VAR}): {error}", self.path.display()))
    }
}

/// The flags every `myelin serve` the kit starts gets: listen on `address` only, on ports the
/// OS chooses (learned from the log), with segments of `segment_size` so that no test
/// pre-allocates 256 MiB files.
fn serve_flags(address: IpAddr, segment_size: &str) -> [String; 5] {
    [
        format!("--set=myelin.bind-address={address}"),
        "--set=axoniq.axonserver.port=0".to_string(),
        "--set=server.port=0".to_string(),
        format!("--set=axoniq.axonserver.event.segment-size={segment_size}"),
        format!("--set=axoniq.axonserver.snapshot.segment-size={segment_size}"),
    ]
}

/// A run's exit code, stdout and stderr, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `n`th loopback address, `127.0.0.<n>` (`n` from 1): node `n`'s own address.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}
