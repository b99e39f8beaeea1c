//! The soak (issue 6): 64 clients on the real binary — half append transactions of 1–5 events,
//! half tail ListEvents from token 0 with permits topped up as they read — while the server's
//! resident memory and open file descriptors are sampled every second. Passes when no call
//! failed, every tailer saw every event in token order, and memory and descriptors stayed
//! bounded (no growth between the first and the second half of the run).
//!
//! `MYELIN_SOAK_SECONDS` sets the length (default 15, the variant the test command runs;
//! docs/RELIABILITY.md records the 10-minute run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use myelin_proto::grpc::event::GetEventsRequest;
use myelin_testkit::binary::{Binary, Node};
use myelin_testkit::client::last_token;
use myelin_testkit::events::drill_event as event;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const CLIENTS: usize = 64;
const APPENDERS: usize = CLIENTS / 2;
/// Permits a tailer asks for at first, and again each time it has read this many.
const PERMITS: i64 = 10_000;

/// The binary under test (or the one `MYELIN_BIN` names).
fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_bytes: u64,
    fds: usize,
    /// Closed segment files the stores hold open (the server's own metric): bounded by
    /// `myelin.open-segment-files`, they grow with the number of segments read up to that cap.
    segment_files: usize,
    /// Segment files on disk.
    segments: usize,
    threads: u64,
    appended: u64,
}

impl Sample {
    /// Descriptors other than closed segment files: listeners, connections, active segments.
    fn other_fds(&self) -> usize {
        self.fds.saturating_sub(self.segment_files)
    }
}

/// The sum over contexts and families of a gauge in the server's Prometheus text.
async fn gauge_sum(http: &reqwest::Client, url: &str, name: &str) -> usize {
    let text = http
        .get(format!("{url}/actuator/prometheus"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

async fn sample(server: &Node, http: &reqwest::Client, started: Instant, appended: u64) -> Sample {
    let pid = server.pid();
    let url = server.http_url();
    Sample {
        at: started.elapsed(),
        rss_bytes: status_field(pid, "VmRSS") * 1024,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).expect("proc fd").count(),
        segment_files: gauge_sum(http, &url, "myelin_open_segment_files").await,
        segments: gauge_sum(http, &url, "myelin_segments").await,
        threads: status_field(pid, "Threads"),
        appended,
    }
}

/// Appends until `until`; returns the events acknowledged.
async fn append_until(server_grpc: String, number: usize, until: Instant, appended: Arc<AtomicU64>) -> u64 {
    let mut client =
        myelin_proto::grpc::event::event_store_client::EventStoreClient::connect(format!("http://{server_grpc}"))
            .await
            .expect("connects");
    let aggregate = format!("soak-{number}");
    let mut sequence = 0i64;
    let mut mine = 0;
    while Instant::now() < until {
        let size = 1 + (sequence as usize + number) % 5;
        let events: Vec<_> = (0..size)
            .map(|i| event(&aggregate, sequence + i as i64, false))
            .collect();
        client
            .append_event(tokio_stream::iter(events))
            .await
            .unwrap_or_else(|e| panic!("appender {number} at {sequence}: {e}"));
        sequence += size as i64;
        mine += size as u64;
        appended.fetch_add(size as u64, Ordering::Relaxed);
    }
    mine
}

/// Tails from token 0 until it has read up to `last` (set once the appenders stopped); checks
/// tokens arrive in order without gaps; half-closes and expects the stream to end OK.
async fn tail(server_grpc: String, number: usize, mut last: watch::Receiver<i64>) -> u64 {
    let mut client =
        myelin_proto::grpc::event::event_store_client::EventStoreClient::connect(format!("http://{server_grpc}"))
            .await
            .expect("connects");
    let (requests, receiver) = mpsc::channel(4);
    requests
        .send(GetEventsRequest {
            tracking_token: 0,
            number_of_permits: PERMITS,
            client_id: format!("soak-tailer-{number}"),
            ..GetEventsRequest::default()
        })
        .await
        .expect("first request");
    let mut stream = client
        .list_events(ReceiverStream::new(receiver))
        .await
        .expect("list events")
        .into_inner();
    let mut next = 0i64;
    let mut since_permits = 0;
    loop {
        let done = *last.borrow_and_update();
        if done >= 0 && next > done {
            break;
        }
        let message = tokio::select! {
            message = tokio::time::timeout(Duration::from_secs(60), stream.message()) => message,
            // The appenders stopped: check whether everything has been read.
            _ = last.changed() => continue,
        };
        let message = message
            .unwrap_or_else(|_| panic!("tailer {number} waited 60 s at token {next}"))
            .unwrap_or_else(|e| panic!("tailer {number} at {next}: {e}"));
        let Some(message) = message else {
            panic!("tailer {number}: stream ended at {next}")
        };
        assert_eq!(message.token, next, "tailer {number}: tokens in order, no gaps");
        next += 1;
        since_permits += 1;
        if since_permits == PERMITS / 2 {
            since_permits = 0;
            let more = GetEventsRequest {
                number_of_permits: PERMITS / 2,
                ..GetEventsRequest::default()
            };
            requests.send(more).await.expect("more permits");
        }
    }
    drop(requests);
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = stream.message().await.transpose() {
            message.unwrap_or_else(|e| panic!("tailer {number} after half-close: {e}"));
        }
    })
    .await;
    assert!(end.is_ok(), "tailer {number}: half-close ends the stream");
    next as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let seconds: u64 = std::env::var("MYELIN_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    // Segments small enough to roll many times in a long run (descriptors must stay bounded).
    let server = myelin()
        .node()
        .data_dir(&data)
        .log_file(root.path().join("server.log"))
        .segment_size("4MB")
        .start();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let baseline = sample(&server, &http, started, 0).await;
    let until = started + Duration::from_secs(seconds);
    let appended = Arc::new(AtomicU64::new(0));
    let (last, last_seen) = watch::channel(-1i64);

    let appenders: Vec<_> = (0..APPENDERS)
        .map(|n| {
            tokio::spawn(append_until(
                server.grpc_address().to_string(),
                n,
                until,
                appended.clone(),
            ))
        })
        .collect();
    let tailers: Vec<_> = (0..CLIENTS - APPENDERS)
        .map(|n| tokio::spawn(tail(server.grpc_address().to_string(), n, last_seen.clone())))
        .collect();

    let mut samples = vec![baseline];
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(sample(&server, &http, started, appended.load(Ordering::Relaxed)).await);
    }
    let mut total = 0;
    for appender in appenders {
        total += appender.await.expect("appender");
    }
    let mut client = server.client().await;
    let last_token = last_token(&mut client).await;
    assert_eq!(
        last_token + 1,
        total as i64,
        "every acknowledged event stored, nothing more"
    );
    last.send_replace(last_token);
    for tailer in tailers {
        assert_eq!(tailer.await.expect("tailer"), total, "each tailer read every event");
    }
    let after = sample(&server, &http, started, total).await;
    server.stop();

    let half = samples.len() / 2;
    let max_of = |s: &[Sample], f: fn(&Sample) -> usize| s.iter().map(f).max().unwrap_or(0);
    let rss = |s: &Sample| s.rss_bytes as usize;
    let step = (samples.len() / 10).max(1);
    println!(
        "| elapsed s | RSS MiB | open fds | of which closed-segment files | segments | threads | events appended |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for s in samples.iter().step_by(step).chain(std::iter::once(&after)) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.at.as_secs(),
            s.rss_bytes >> 20,
            s.fds,
            s.segment_files,
            s.segments,
            s.threads,
            s.appended
        );
    }
    println!(
        "soak: {seconds} s, {CLIENTS} clients ({APPENDERS} appending, {} tailing), {total} events appended \
         ({:.0}/s), each tailer read all of them; RSS max {} MiB; fds baseline {}, max {}",
        CLIENTS - APPENDERS,
        total as f64 / seconds as f64,
        max_of(&samples, rss) >> 20,
        baseline.fds,
        max_of(&samples, |s| s.fds)
    );

    // Bounded: the second half of the run holds no more than the first half did, allowing for
    // allocator noise. Descriptors: closed segment files stay under their cap (data and index
    // files of two families, `myelin.open-segment-files` = 64 each); everything else
    // (listeners, connections, active segments) does not grow.
    let (first, second) = samples.split_at(half.max(1));
    let rss_limit = max_of(first, rss) + max_of(first, rss) / 4 + (32 << 20);
    assert!(
        max_of(second, rss) <= rss_limit,
        "resident memory grew: first half max {} MiB, second half max {} MiB",
        max_of(first, rss) >> 20,
        max_of(second, rss) >> 20
    );
    let segment_file_cap = 2 * 2 * 64;
    assert!(
        max_of(&samples, |s| s.segment_files) <= segment_file_cap,
        "closed segment files held open: {} (cap {segment_file_cap})",
        max_of(&samples, |s| s.segment_files)
    );
    assert!(
        max_of(second, Sample::other_fds) <= max_of(first, Sample::other_fds) + 8,
        "descriptors other than segment files grew: first half max {}, second half max {}",
        max_of(first, Sample::other_fds),
        max_of(second, Sample::other_fds)
    );
}
