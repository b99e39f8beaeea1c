//! `myelin` as an operator runs it: any command line, a clean environment, a working directory
//! of the test's choosing, and its log lines streamed to the test as they are written — for the
//! tests of start-up, logging and signals themselves, which [`Node`](super::Node) takes care of
//! for every other test.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Binary, serve_flags};

/// Generous: opening a store may rebuild indexes, and CI machines are slow.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

impl Binary {
    /// `myelin <args>` with a clean environment (only `RUST_LOG=info`), working in `cwd`,
    /// segments kept small so a test does not pre-allocate 256 MiB files, listening on free
    /// ports of 127.0.0.1 only; stderr piped for [`Process`].
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(self.path());
        command
            .args(args)
            .args(serve_flags(IpAddr::V4(Ipv4Addr::LOCALHOST), "1MB"))
            .current_dir(cwd)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }
}

/// A running `myelin` whose log lines arrive as they are written. Killed when dropped.
pub struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    /// Spawns `command`, whose stderr must be piped ([`Binary::command`] does).
    pub fn start(mut command: Command) -> Process {
        let mut child = command.spawn().expect("myelin starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until `count` log lines containing `needle` have appeared.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no {count}× `{needle}` in the log within {PROCESS_TIMEOUT:?}; log so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// The log lines seen so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Sends signal `name` (`TERM`, `INT`, ...) to the process.
    #[track_caller]
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its status and the whole log.
    #[track_caller]
    pub fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("myelin did not exit; log so far:\n{}", self.seen.join("\n"));
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end and returns its status and stderr.
pub fn run_to_end(command: &mut Command) -> (ExitStatus, String) {
    let output = command.output().expect("myelin runs");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}
