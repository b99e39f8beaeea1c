//! One `myelin serve` process: its options ([`NodeOptions`]), its start (ports from its log),
//! a clean stop by SIGTERM, a SIGKILL, and a kill when dropped.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use super::{BIN_VAR, Binary, log, loopback, serve_flags};

/// Generous: opening a store may rebuild indexes, and test machines are slow and shared.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A clean stop closes every context; more than this is a hang.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const GRPC_LINE: &str = "gRPC listening on ";
const HTTP_LINE: &str = "HTTP listening on ";

/// How to start one node; [`Binary::node`] makes one with the defaults: 127.0.0.1, a data
/// directory and log of its own, segments of 16 KB.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    binary: Binary,
    address: IpAddr,
    data_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    segment_size: String,
    settings: Vec<String>,
    env: Vec<(OsString, OsString)>,
    launcher: Vec<OsString>,
}

impl NodeOptions {
    pub fn new(binary: Binary) -> NodeOptions {
        NodeOptions {
            binary,
            address: loopback(1),
            data_dir: None,
            log_file: None,
            segment_size: "16KB".to_string(),
            settings: Vec::new(),
            env: Vec::new(),
            launcher: Vec::new(),
        }
    }

    /// The address both listeners bind to (`myelin.bind-address`).
    pub fn address(mut self, address: IpAddr) -> Self {
        self.address = address;
        self
    }

    /// The data directory (`--data`); by default one of the node's own, deleted with it. A
    /// directory given here outlives the node, so a later node can start on the same data.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Where the node's stderr goes; by default a file of the node's own.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// The event and snapshot segment size, as the setting takes it (`16KB`, `1MB`).
    pub fn segment_size(mut self, size: impl Into<String>) -> Self {
        self.segment_size = size.into();
        self
    }

    /// One more `KEY=VALUE` setting (`--set`); these come after the harness's own, so they win.
    pub fn setting(mut self, key_value: impl Into<String>) -> Self {
        self.settings.push(key_value.into());
        self
    }

    /// [`NodeOptions::setting`] for each of `settings`.
    pub fn settings<S: Into<String>>(mut self, settings: impl IntoIterator<Item = S>) -> Self {
        self.settings.extend(settings.into_iter().map(Into::into));
        self
    }

    /// An environment variable of the process (it inherits the test's environment).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A command the binary is started under, e.g. `ip netns exec <namespace>` (see
    /// [`Network::launcher`](super::Network::launcher)). It must exec the binary, not fork
    /// it, so that the process the kit signals is the node.
    pub fn launcher(mut self, command: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.launcher = command.into_iter().map(Into::into).collect();
        self
    }

    /// Starts the node and waits until both listeners are up; panics, keeping its log, when
    /// it does not start.
    #[track_caller]
    pub fn start(self) -> Node {
        self.spawn().wait_until_listening()
    }

    /// Starts the process without waiting for it (so that several start at once).
    pub(super) fn spawn(self) -> Starting {
        let own_dir = tempfile::Builder::new()
            .prefix("myelin-node-")
            .tempdir()
            .expect("a temporary directory for the node");
        let data_dir = self.data_dir.unwrap_or_else(|| own_dir.path().join("data"));
        let log_path = self.log_file.unwrap_or_else(|| own_dir.path().join("myelin.log"));
        let log_file = std::fs::File::create(&log_path)
            .unwrap_or_else(|error| panic!("cannot create the log file {}: {error}", log_path.display()));
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(self.binary.path());
                command
            }
            None => Command::new(self.binary.path()),
        };
        let child = command
            .arg("serve")
            .arg("--data")
            .arg(&data_dir)
            .args(serve_flags(self.address, &self.segment_size))
            .args(self.settings.iter().map(|setting| format!("--set={setting}")))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // An empty working directory: no stray axonserver.properties is read.
            .current_dir(own_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {} (set {BIN_VAR} to choose another binary): {error}",
                    self.binary.path().display()
                )
            });
        Starting {
            process: Process {
                child,
                address: self.address,
                data_dir,
                log_path,
                kept_log: None,
                ended: false,
                _own_dir: own_dir,
            },
            deadline: Instant::now() + START_TIMEOUT,
        }
    }
}

/// A node whose listeners may not be up yet.
pub(super) struct Starting {
    process: Process,
    deadline: Instant,
}

impl Starting {
    /// Waits until the log names both listening addresses; panics, keeping the log, when the
    /// process exits first or the deadline passes.
    #[track_caller]
    pub(super) fn wait_until_listening(mut self) -> Node {
        loop {
            let text = std::fs::read_to_string(&self.process.log_path).unwrap_or_default();
            // Whole lines only: a line still being written could end in half a port number.
            let text = text
                .get(..text.rfind('\n').map_or(0, |end| end + 1))
                .unwrap_or_default();
            if let (Some(grpc), Some(http)) = (logged_address(text, GRPC_LINE), logged_address(text, HTTP_LINE)) {
                return Node {
                    process: self.process,
                    grpc,
                    http,
                };
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                self.process.ended = true;
                self.process.fail(&format!("exited ({status}) before it listened"));
            }
            if Instant::now() > self.deadline {
                self.process.fail(&format!("did not listen within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// The address on the last line with `prefix`; panics when that line's address does not parse
/// (the log's wording changed, which every harness user must hear about).
fn logged_address(log: &str, prefix: &str) -> Option<SocketAddr> {
    let line = log.lines().rev().find(|line| line.contains(prefix))?;
    let after = line.split(prefix).nth(1).unwrap_or_default();
    let address = after.split_whitespace().next().unwrap_or_default();
    Some(
        address
            .parse()
            .unwrap_or_else(|error| panic!("not an address in the log line {line:?}: {error}")),
    )
}

/// A running `myelin serve`; killed (SIGKILL) when dropped, its log kept when the test is
/// failing.
#[derive(Debug)]
pub struct Node {
    process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Node {
    /// The address the node was told to bind to.
    pub fn address(&self) -> IpAddr {
        self.process.address
    }

    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http
    }

    /// `http://<gRPC address>`, for a gRPC client.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://<HTTP address>`, for the REST API.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The process id (for its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.process.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.process.log_path
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log_path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", self.process.log_path.display()))
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.grpc_url())
            .expect("endpoint")
            .connect()
            .await
            .unwrap_or_else(|error| panic!("gRPC connects to {}: {error}", self.grpc))
    }

    pub async fn client(&self) -> EventStoreClient<Channel> {
        EventStoreClient::new(self.channel().await)
    }

    /// SIGTERM and wait: the node must exit, and exit cleanly (status 0); else the test fails
    /// with its log kept.
    #[track_caller]
    pub fn stop(mut self) {
        self.process.terminate();
        self.process.wait_for_clean_exit();
    }

    /// SIGKILL: the node gets no chance to flush or sync anything.
    pub fn kill(mut self) {
        self.process.kill();
    }

    /// The first half of [`Node::stop`], so that several nodes stop at once.
    pub(super) fn terminate(&mut self) {
        self.process.terminate();
    }

    /// The second half of [`Node::stop`].
    #[track_caller]
    pub(super) fn wait_for_clean_exit(mut self) {
        self.process.wait_for_clean_exit();
    }
}

/// The child process and what belongs to it.
#[derive(Debug)]
struct Process {
    child: Child,
    address: IpAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    kept_log: Option<PathBuf>,
    /// Reaped: nothing is left to kill.
    ended: bool,
    /// The working directory, and the data and log when the options named none.
    _own_dir: TempDir,
}

impl Process {
    /// Sends SIGTERM; a failure to send shows as the process not exiting.
    fn terminate(&self) {
        if self.ended {
            return;
        }
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|status| status.success());
        if !sent {
            eprintln!("kill -TERM {pid} failed");
        }
    }

    #[track_caller]
    fn wait_for_clean_exit(&mut self) {
        let status = self.wait(STOP_TIMEOUT);
        match status {
            Some(status) if status.success() => {}
            Some(status) => self.fail(&format!("exited with {status} after SIGTERM")),
            None => self.fail(&format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM")),
        }
    }

    /// Waits up to `timeout` for the exit; `None` if the process is still running.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.ended = true;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Ok(None) => return None,
                Err(error) => panic!("cannot wait for myelin (pid {}): {error}", self.child.id()),
            }
        }
    }

    fn kill(&mut self) {
        if !self.ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.ended = true;
        }
    }

    fn keep_log(&mut self) -> PathBuf {
        if let Some(kept) = &self.kept_log {
            return kept.clone();
        }
        let kept = log::keep(&self.log_path, self.child.id());
        self.kept_log = Some(kept.clone());
        kept
    }

    /// Kills the process, keeps its log and fails the test with the log's end; `what` the
    /// process did is said of `myelin on <address> (pid <pid>)`.
    #[track_caller]
    fn fail(&mut self, what: &str) -> ! {
        self.kill();
        let kept = self.keep_log();
        panic!(
            "myelin on {} (pid {}) {what}; its log is kept at {}, ending with:\n{}",
            self.address,
            self.child.id(),
            kept.display(),
            log::tail(&kept)
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.keep_log();
        }
    }
}
