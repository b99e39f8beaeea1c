//! A real S3-compatible server on 127.0.0.1 for the backup tests: moto, started by
//! `scripts/s3-test-server` (which creates its Python venv on first use), killed when dropped.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Settings the server accepts (moto takes any credentials; object_store needs some).
pub const S3_REGION: &str = "us-east-1";
pub const S3_ACCESS_KEY: &str = "myelin-test";
pub const S3_SECRET_KEY: &str = "myelin-test-secret";

/// How long the server may take to answer. The first start ever also creates the Python venv
/// and installs moto from PyPI (one to two minutes here); later ones take a few seconds.
const START_TIMEOUT: Duration = Duration::from_secs(270);
/// Starts retried when another process took the port between choosing it and moto binding it.
const START_ATTEMPTS_MAX: u32 = 5;
const LOG_TAIL_BYTES: usize = 4000;

/// moto, started by `scripts/s3-test-server`; killed (and reaped) when dropped, also when the
/// test panics.
pub struct S3TestServer {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

enum Start {
    Ready,
    PortTaken,
}

impl S3TestServer {
    /// Panics, never skips, when the server cannot be started: the S3 target is tested or the
    /// test fails.
    pub async fn start() -> S3TestServer {
        require_python3();
        let script = crate::workspace_root().join("scripts").join("s3-test-server");
        for _ in 0..START_ATTEMPTS_MAX {
            let port = free_port();
            let log_dir = tempfile::tempdir().expect("temporary directory for the S3 server's log");
            let log_path = log_dir.path().join("s3-test-server.log");
            let log = File::create(&log_path).expect("S3 server log file");
            let child = {
                use std::os::unix::process::CommandExt;
                Command::new(&script)
                    .arg(port.to_string())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("S3 server log file"))
                    .stderr(log)
                    // Its own process group, so that Drop also ends a pip install still running.
                    .process_group(0)
                    .spawn()
                    .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()))
            };
            let mut server = S3TestServer {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                log_path,
                _log_dir: log_dir,
            };
            match server.wait_until_ready().await {
                Start::Ready => return server,
                Start::PortTaken => continue,
            }
        }
        panic!("could not start the S3 test server: {START_ATTEMPTS_MAX} ports in a row were taken");
    }

    async fn wait_until_ready(&mut self) -> Start {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("S3 server status") {
                let log = self.log_tail();
                if log.contains("Address already in use") || log.contains("is in use by another program") {
                    return Start::PortTaken;
                }
                self.fail(&format!("scripts/s3-test-server exited ({status}) before answering"));
            }
            // moto answers ListBuckets to anyone; checking the body makes sure it is moto that
            // answers on this port, not a process that took the port meanwhile.
            if let Ok(response) = client.get(&self.endpoint).send().await
                && response.status().is_success()
                && response
                    .text()
                    .await
                    .is_ok_and(|body| body.contains("ListAllMyBucketsResult"))
            {
                return Start::Ready;
            }
            if started.elapsed() > START_TIMEOUT {
                self.fail(&format!(
                    "scripts/s3-test-server did not answer within {START_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a bucket (object_store cannot): moto takes a plain, unsigned `PUT /<bucket>`.
    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap_or_else(|error| panic!("create bucket {bucket}: {error}"));
        assert!(
            response.status().is_success(),
            "create bucket {bucket}: {}",
            response.status()
        );
    }

    /// The ETag of an object as the server reports it (a multipart upload's ends in `-<parts>`).
    pub async fn etag(&self, bucket: &str, object_path: &str) -> String {
        let response = reqwest::Client::new()
            .head(format!("{}/{bucket}/{object_path}", self.endpoint))
            .send()
            .await
            .unwrap_or_else(|error| panic!("HEAD {object_path}: {error}"));
        assert!(
            response.status().is_success(),
            "HEAD {object_path}: {}",
            response.status()
        );
        let etag = response.headers().get("etag").expect("an ETag header");
        etag.to_str().expect("an ASCII ETag").trim_matches('"').to_string()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(LOG_TAIL_BYTES)..];
        String::from_utf8_lossy(tail).into_owned()
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}; its output ends with:\n{}", self.log_tail())
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        // The whole group (the script, or pip while installing, or moto once exec'ed), then the
        // child itself in case `kill` is missing; then reap it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _: std::io::Result<ExitStatus> = self.child.wait();
    }
}

fn require_python3() {
    let found = Command::new("python3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "python3 is required by this test: scripts/s3-test-server runs moto, a local S3 server, in a Python venv \
         (install python3 with its venv and pip modules)"
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}
