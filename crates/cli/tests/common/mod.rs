//! The real `myelin` binary for the CLI's integration tests: a server on 127.0.0.1 with ports
//! chosen by the OS (killed when dropped), the tool commands, and event helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{Event, GetEventsRequest, GetLastTokenRequest};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_myelin");

/// A `myelin serve` process on 127.0.0.1 with ports chosen by the OS; killed when dropped.
pub struct Server {
    child: Child,
    pub grpc: String,
    pub http: String,
    log: PathBuf,
}

impl Server {
    pub fn start(data: &Path, log: &Path) -> Server {
        Server::start_with(data, log, "16KB")
    }

    pub fn start_with(data: &Path, log: &Path, segment_size: &str) -> Server {
        Server::start_with_settings(data, log, segment_size, &[])
    }

    /// `settings`: extra `KEY=VALUE` properties.
    pub fn start_with_settings(data: &Path, log: &Path, segment_size: &str, settings: &[&str]) -> Server {
        let log_file = std::fs::File::create(log).expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--data"])
            .arg(data)
            .args(settings.iter().map(|setting| format!("--set={setting}")))
            .args([
                "--set",
                "myelin.bind-address=127.0.0.1",
                "--set",
                "axoniq.axonserver.port=0",
                "--set",
                "server.port=0",
            ])
            .arg(format!("--set=axoniq.axonserver.event.segment-size={segment_size}"))
            .arg(format!("--set=axoniq.axonserver.snapshot.segment-size={segment_size}"))
            .current_dir(data.parent().expect("parent"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("myelin starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut grpc, mut http) = (None, None);
        while Instant::now() < deadline && (grpc.is_none() || http.is_none()) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text.lines() {
                if let Some(address) = line.split("gRPC listening on ").nth(1) {
                    grpc = Some(address.trim().to_string());
                }
                if let Some(address) = line.split("HTTP listening on ").nth(1) {
                    http = Some(address.trim().to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut server = Server {
            child,
            grpc: grpc.unwrap_or_default(),
            http: http.unwrap_or_default(),
            log: log.to_path_buf(),
        };
        if server.grpc.is_empty() || server.http.is_empty() {
            let _ = server.child.kill();
            panic!(
                "server did not start:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        server
    }

    /// The server's process id (for its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub async fn client(&self) -> EventStoreClient<Channel> {
        EventStoreClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("gRPC connects")
    }

    /// SIGKILL: the server gets no chance to flush or sync anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the server must stop cleanly.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait");
        assert!(
            status.success(),
            "server exit {status}:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tool(args: &[&str]) -> Output {
    tool_with(args, &[])
}

pub fn tool_with(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("myelin tool runs")
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn event(aggregate: &str, sequence: i64, snapshot: bool) -> Event {
    Event {
        message_identifier: format!("{aggregate}/{sequence}/{snapshot}"),
        aggregate_identifier: aggregate.to_string(),
        aggregate_sequence_number: sequence,
        aggregate_type: "Drill".to_string(),
        timestamp: 1_700_000_000_000 + sequence,
        payload: Some(SerializedObject {
            r#type: "DrillEvent".to_string(),
            revision: String::new(),
            data: vec![b'p'; 150 + (sequence as usize % 7) * 40],
        }),
        snapshot,
        ..Event::default()
    }
}

/// Every event of the store, in token order, as (token, event).
pub async fn history(client: &mut EventStoreClient<Channel>) -> Vec<(i64, Event)> {
    let last = last_token(client).await;
    events_between(client, 0, last).await
}

pub async fn last_token(client: &mut EventStoreClient<Channel>) -> i64 {
    client
        .get_last_token(GetLastTokenRequest {})
        .await
        .expect("last token")
        .into_inner()
        .token
}

/// The events with tokens `from..=to`, in token order, as (token, event).
pub async fn events_between(client: &mut EventStoreClient<Channel>, from: i64, to: i64) -> Vec<(i64, Event)> {
    if to < from {
        return Vec::new();
    }
    let request = GetEventsRequest {
        tracking_token: from,
        number_of_permits: to - from + 1,
        ..GetEventsRequest::default()
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(request).await.expect("request");
    let mut stream = client
        .list_events(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("list")
        .into_inner();
    let mut events = Vec::new();
    while (events.len() as i64) <= to - from {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("events arrive")
            .expect("stream ok")
            .expect("not ended");
        events.push((next.token, next.event.expect("event")));
    }
    drop(sender);
    events
}
