//! What the load generator needs of an event store, and the events every store is sent.
//!
//! All adapters send the same event: an Axon-style domain event of one aggregate at one
//! sequence number, with a unique identifier, the aggregate and payload type names, a
//! timestamp and a payload of `payload_bytes` bytes. Each store keeps it in its own shape
//! (an Axon `Event` protobuf, an UmaDB event tagged `aggregate:<id>`, a row of Axon's JDBC
//! event table), but the payload bytes, identifiers and names are the same everywhere.

use std::future::Future;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

/// The payload type of every event (Axon's `payload.type`, UmaDB's `event_type`).
pub const PAYLOAD_TYPE: &str = "io.myelin.bench.SomethingHappened";
/// Axon's aggregate type of every event.
pub const AGGREGATE_TYPE: &str = "BenchAggregate";
pub const PAYLOAD_REVISION: &str = "1";
/// The largest payload accepted: UmaDB keeps an event in one 4 KiB page where it can, and
/// nothing the issue asks for is larger than 2 KiB.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Which store a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemKind {
    Myelin,
    Umadb,
    Postgres,
}

impl SystemKind {
    /// The name in result records.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Myelin => "myelin",
            SystemKind::Umadb => "umadb",
            SystemKind::Postgres => "postgres",
        }
    }
}

/// One event of a transaction: the rest of its content comes from the client's [`EventSource`].
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub aggregate: &'a str,
    pub sequence: i64,
}

/// Who a client is: its number within the run and the payload size it sends.
#[derive(Debug, Clone, Copy)]
pub struct ClientSpec {
    pub index: u32,
    pub payload_bytes: usize,
}

/// A connection to an event store. One client is one connection (one HTTP/2 connection, one
/// PostgreSQL session) and does one thing at a time, as a closed-loop client does.
pub trait Client: Send + 'static {
    /// Appends one transaction durably: all events or none, in order. Returns once the store
    /// has acknowledged it (every store here syncs to disk before acknowledging).
    fn append(&mut self, events: &[NewEvent<'_>]) -> impl Future<Output = Result<()>> + Send;

    /// Reads the first `count` events of the store in order, calling `seen` with the number
    /// of events of every message or page as it arrives. Returns the number read.
    fn read_all(&mut self, count: u64, seen: &mut (dyn FnMut(u64) + Send)) -> impl Future<Output = Result<u64>> + Send;

    /// Reads every event of one aggregate, in sequence order. Returns how many there were.
    fn read_aggregate(&mut self, aggregate: &str) -> impl Future<Output = Result<u64>> + Send;

    /// Follows the store from its current end until `until`, calling `seen` as new events
    /// arrive. Returns the number seen.
    fn tail(&mut self, until: Instant, seen: &mut (dyn FnMut(u64) + Send)) -> impl Future<Output = Result<u64>> + Send;

    /// How many events the store holds.
    fn event_count(&mut self) -> impl Future<Output = Result<u64>> + Send;
}

/// An event store to connect to.
pub trait System: Send + Sync + 'static {
    type Client: Client;

    fn kind(&self) -> SystemKind;

    /// Opens one connection. Errors name the store and its address.
    fn connect(&self, spec: ClientSpec) -> impl Future<Output = Result<Self::Client>> + Send;
}

/// The content every adapter puts into its events: the payload, unique identifiers and the
/// timestamp.
pub struct EventSource {
    payload: Vec<u8>,
    nonce: u32,
    client: u32,
    counter: u64,
}

impl EventSource {
    pub fn new(spec: ClientSpec) -> Self {
        // Not all zeros and not one repeated byte, so nothing on the way to the disk can
        // shortcut the write (zero detection, compression).
        let payload = (0..spec.payload_bytes)
            .map(|i| (i.wrapping_mul(31) % 251) as u8)
            .collect();
        EventSource {
            payload,
            nonce: process_nonce(),
            client: spec.index,
            counter: 0,
        }
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// A new identifier in UUID form (UmaDB parses it; PostgreSQL's column is unique), unique
    /// across clients, runs and processes.
    pub fn next_identifier(&mut self) -> String {
        let n = self.counter;
        self.counter += 1;
        event_identifier(self.nonce, self.client, n)
    }
}

/// `NNNNNNNN-CCCC-4CCC-aHHH-LLLLLLLLLLLL`: process nonce, client number, event counter.
pub fn event_identifier(nonce: u32, client: u32, counter: u64) -> String {
    format!(
        "{nonce:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (client >> 12) & 0xffff,
        client & 0xfff,
        (counter >> 48) & 0xfff,
        counter & 0xffff_ffff_ffff
    )
}

/// Differs between processes started at different times, so identifiers of two runs against
/// one store do not collide.
pub fn process_nonce() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
    nanos.rotate_left(7) ^ std::process::id().wrapping_mul(0x9e37_79b9)
}

pub fn now_ms() -> i64 {
    crate::event::now_ms()
}

/// `2026-11-25T10:20:30.123Z` for milliseconds since the Unix epoch, as Axon's JDBC engine
/// stores `time_stamp` (ISO-8601 text).
pub fn iso8601_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_uuid_shaped_and_distinct() {
        let a = event_identifier(0xdead_beef, 3, 0);
        let b = event_identifier(0xdead_beef, 3, 1);
        let c = event_identifier(0xdead_beef, 4, 0);
        assert_eq!(a, "deadbeef-0000-4003-a000-000000000000");
        assert_eq!(a.len(), 36);
        assert!(a != b && a != c && b != c);
        let parts: Vec<usize> = event_identifier(u32::MAX, u32::MAX, u64::MAX)
            .split('-')
            .map(str::len)
            .collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }

    #[test]
    fn timestamps_in_iso_8601() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_utc(1_795_602_030_456), "2026-11-25T10:20:30.456Z");
    }

    #[test]
    fn every_client_sends_the_same_payload() {
        let a = EventSource::new(ClientSpec {
            index: 0,
            payload_bytes: 200,
        });
        let b = EventSource::new(ClientSpec {
            index: 9,
            payload_bytes: 200,
        });
        assert_eq!(a.payload(), b.payload());
        assert_eq!(a.payload().len(), 200);
    }
}
