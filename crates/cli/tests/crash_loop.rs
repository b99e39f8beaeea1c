//! The crash loop (issue 6): the real binary, concurrent gRPC writers that log every
//! acknowledged event to an fsynced file, `kill -9` at random moments — with segments rolling
//! every few transactions and, now and then, a multi-block transaction of more than 32767
//! events in flight — then restart and check: every acknowledged event present with identical
//! content, tokens contiguous, per-aggregate sequences contiguous, no transaction partly
//! visible, every block of every segment valid.
//!
//! `MYELIN_CRASH_ROUNDS` sets the number of rounds (default 30, the short variant the test
//! command runs; docs/RELIABILITY.md records the long one).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use myelin_format::segment::SegmentKind;
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::{Event, ReadHighestSequenceNrRequest};
use myelin_testkit::binary::{Binary, Node};
use myelin_testkit::client::{events_between, last_token};
use parking_lot::Mutex;
use prost::Message;

const WRITERS: usize = 4;
/// More than one block can hold (32767 events): the transaction spans blocks.
const HUGE_TRANSACTION_EVENTS: usize = 33_000;

/// The binary under test (or the one `MYELIN_BIN` names).
fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

/// A small deterministic generator (xorshift), so a failing round can be replayed by its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An event of transaction `tx` (of `size` events) of `aggregate`.
fn tx_event(aggregate: &str, sequence: i64, tx: &str, size: usize, payload: usize) -> Event {
    Event {
        message_identifier: format!("{tx}:{size}:{sequence}"),
        aggregate_identifier: aggregate.to_string(),
        aggregate_sequence_number: sequence,
        aggregate_type: "Crash".to_string(),
        timestamp: 1_700_000_000_000 + sequence,
        payload: Some(SerializedObject {
            r#type: "CrashEvent".to_string(),
            revision: String::new(),
            data: format!("{aggregate}/{sequence}/{}", "x".repeat(payload)).into_bytes(),
        }),
        ..Event::default()
    }
}

/// Acknowledged events: every one in an fsynced log file (one line per event), and in memory
/// until a check has found it in the store.
struct Acked {
    pending: Mutex<Vec<Event>>,
    total: AtomicUsize,
    log: Mutex<std::fs::File>,
}

impl Acked {
    fn record(&self, events: &[Event]) {
        {
            let mut log = self.log.lock();
            for event in events {
                writeln!(
                    log,
                    "{} {} {}",
                    event.aggregate_identifier, event.aggregate_sequence_number, event.message_identifier
                )
                .expect("ack log");
            }
            log.sync_data().expect("ack log fsync");
        }
        self.pending.lock().extend_from_slice(events);
        self.total.fetch_add(events.len(), Ordering::Relaxed);
    }
}

/// Writers until the server dies under them; each continues its aggregate where the store is.
/// Kills the server at a random moment; returns the transactions acknowledged.
async fn write_until_killed(server: Node, acked: &Arc<Acked>, round: usize, random: &mut Random) -> usize {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut client = server.client().await;
        let acked = acked.clone();
        let aggregate = format!("writer-{w}");
        let huge = w == 0 && round % 5 == 4;
        let seed = random.next() | 1;
        tasks.push(tokio::spawn(async move {
            let mut random = Random(seed);
            let request = ReadHighestSequenceNrRequest {
                aggregate_id: aggregate.clone(),
                from_sequence_nr: 0,
            };
            let Ok(highest) = client.read_highest_sequence_nr(request).await else {
                return 0;
            };
            let mut sequence = highest.into_inner().to_sequence_nr + 1;
            let mut transactions = 0usize;
            for t in 0.. {
                let size = if huge && t == 1 {
                    HUGE_TRANSACTION_EVENTS
                } else {
                    1 + random.below(5) as usize
                };
                let payload = if size > 1000 {
                    8
                } else {
                    40 + random.below(400) as usize
                };
                let tx = format!("r{round}w{w}t{t}");
                let events: Vec<Event> = (0..size)
                    .map(|i| tx_event(&aggregate, sequence + i as i64, &tx, size, payload))
                    .collect();
                match client.append_event(tokio_stream::iter(events.clone())).await {
                    Ok(_) => {
                        acked.record(&events);
                        sequence += size as i64;
                        transactions += 1;
                    }
                    // The server was killed: whatever was in flight may or may not be stored.
                    Err(_) => return transactions,
                }
            }
            transactions
        }));
    }
    // Kill at a random moment: early (connections opening), during rolls, during the huge
    // multi-block transaction.
    tokio::time::sleep(Duration::from_millis(20 + random.below(400))).await;
    server.kill();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("writer");
    }
    total
}

/// What the checks so far established about the history: the store must keep exactly these
/// events at these tokens.
#[derive(Default)]
struct Verified {
    /// A hash of each verified event's bytes, by token.
    hashes: Vec<u64>,
    /// Per aggregate, the sequence number its next event must have.
    next_sequence: HashMap<String, i64>,
}

fn event_hash(event: &Event) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    event.encode_to_vec().hash(&mut hasher);
    hasher.finish()
}

/// Events of the verified prefix a check re-reads: events just before the new ones and a few
/// random windows (`SPOT_WINDOWS` of `SPOT_WINDOW_EVENTS`), or all of it on a full check.
const SPOT_WINDOWS: usize = 4;
const SPOT_WINDOW_EVENTS: i64 = 256;
/// Every this many rounds the whole history is re-read (and after the last round).
const FULL_CHECK_EVERY: usize = 100;

/// The checks after a restart, incremental so a long run does not re-read an ever longer
/// history every round: the events added since the last check are checked in full (tokens
/// contiguous, sequences contiguous, transactions whole, every acknowledgement since the last
/// check present and identical); the verified prefix is spot-checked against its hashes, and
/// re-read whole every `FULL_CHECK_EVERY` rounds and at the end.
async fn check(
    server: &Node,
    acked: &Acked,
    verified: &mut Verified,
    round: usize,
    full: bool,
    random: &mut Random,
) -> usize {
    let mut client = server.client().await;
    let last = last_token(&mut client).await;
    let known = verified.hashes.len() as i64;
    assert!(
        last + 1 >= known,
        "round {round}: the store ends at token {last}, {known} events were verified before"
    );
    let mut windows = Vec::new();
    if full {
        windows.push((0, known - 1));
    } else if known > 0 {
        windows.push(((known - SPOT_WINDOW_EVENTS).max(0), known - 1));
        for _ in 0..SPOT_WINDOWS {
            let from = random.below(known as u64) as i64;
            windows.push((from, (from + SPOT_WINDOW_EVENTS - 1).min(known - 1)));
        }
    }
    for (from, to) in windows {
        for (token, event) in events_between(&mut client, from, to).await {
            assert_eq!(
                event_hash(&event),
                verified.hashes[token as usize],
                "round {round}: the event at token {token} changed: {event:?}"
            );
        }
    }

    let new = events_between(&mut client, known, last).await;
    let mut transactions: HashMap<String, (usize, usize)> = HashMap::new();
    for (index, (token, event)) in new.iter().enumerate() {
        assert_eq!(*token, known + index as i64, "round {round}: tokens contiguous");
        let expected = verified
            .next_sequence
            .entry(event.aggregate_identifier.clone())
            .or_insert(0);
        assert_eq!(
            event.aggregate_sequence_number, *expected,
            "round {round}: {} sequences contiguous",
            event.aggregate_identifier
        );
        *expected += 1;
        let mut parts = event.message_identifier.split(':');
        let tx = parts.next().expect("tx").to_string();
        let size: usize = parts.next().expect("size").parse().expect("size");
        transactions.entry(tx).or_insert((size, 0)).1 += 1;
        verified.hashes.push(event_hash(event));
    }
    // Transactions never straddle checks: each commits whole, after the previous check's read.
    for (tx, (size, seen)) in &transactions {
        assert_eq!(
            seen, size,
            "round {round}: transaction {tx} is partly visible ({seen} of {size})"
        );
    }
    // Acknowledged since the last check, so written after its read: among the new events.
    let stored: HashMap<(&str, i64), &Event> = new
        .iter()
        .map(|(_, e)| ((e.aggregate_identifier.as_str(), e.aggregate_sequence_number), e))
        .collect();
    for event in acked.pending.lock().drain(..) {
        let key = (event.aggregate_identifier.as_str(), event.aggregate_sequence_number);
        let found = stored
            .get(&key)
            .unwrap_or_else(|| panic!("round {round}: acknowledged {key:?} is missing"));
        assert_eq!(**found, event, "round {round}: acknowledged {key:?} changed");
    }
    verified.hashes.len()
}

/// Every block of every segment file parses with a valid CRC; closed segments end with their
/// roll marker.
fn check_segments(dir: &Path) {
    for kind in [SegmentKind::Events, SegmentKind::Snapshots] {
        let mut segments: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
            .expect("context dir")
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let number = kind.parse_file_name(path.file_name()?.to_str()?)?;
                Some((number, path))
            })
            .collect();
        segments.sort();
        let last = segments.len().saturating_sub(1);
        for (i, (number, path)) in segments.iter().enumerate() {
            let scan = myelin_backup::scan::scan_file(path, *number).expect("readable");
            let ending_ok = if i < last {
                scan.ending == myelin_backup::scan::Ending::Rolled
            } else {
                matches!(scan.ending, myelin_backup::scan::Ending::End)
            };
            assert!(ending_ok, "{}: {:?}", path.display(), scan.ending);
            if i < last {
                assert_eq!(
                    segments[i + 1].0,
                    number + scan.events,
                    "{} is followed by its successor",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop() {
    let rounds: usize = std::env::var("MYELIN_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("MYELIN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let acked = Arc::new(Acked {
        pending: Mutex::new(Vec::new()),
        total: AtomicUsize::new(0),
        log: Mutex::new(std::fs::File::create(root.path().join("acked.log")).expect("ack log")),
    });
    let mut random = Random(seed);
    let mut spot = Random(seed ^ 0x5851_f42d_4c95_7f2d);
    let mut verified = Verified::default();
    let mut total_transactions = 0;
    let started = std::time::Instant::now();
    for round in 0..rounds {
        let server = myelin()
            .node()
            .data_dir(&data)
            .log_file(root.path().join(format!("round-{round}.log")))
            .start();
        let full = round % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1;
        let stored = check(&server, &acked, &mut verified, round, full, &mut spot).await;
        total_transactions += write_until_killed(server, &acked, round, &mut random).await;
        if round % 50 == 49 {
            println!(
                "round {}: {stored} events verified, {:.0} s",
                round + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // A last start: recovery after the last kill, the same checks over the whole history, then
    // a clean stop.
    let server = myelin()
        .node()
        .data_dir(&data)
        .log_file(root.path().join("final.log"))
        .start();
    let final_count = check(&server, &acked, &mut verified, rounds, true, &mut spot).await;
    server.stop();
    check_segments(&data.join("default"));
    let acked_events = acked.total.load(Ordering::Relaxed);
    assert!(
        total_transactions > rounds,
        "writers made progress: {total_transactions} transactions"
    );
    println!(
        "crash loop: {rounds} rounds (seed {seed}), {total_transactions} acknowledged transactions, \
         {acked_events} acknowledged events, {final_count} stored events, all present and whole"
    );
}
