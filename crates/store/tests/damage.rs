//! The torn- and corrupted-file matrix (issue 6): the active segment cut at every byte of its
//! last block or flipped there, damage deeper in the active segment, in closed segments, and in
//! their index and bloom files.
//!
//! Each case starts from a stopped store written once (a [`Template`] held in memory) and
//! copied into a fresh directory, so the matrix is exhaustive where that is cheap and a fixed,
//! deterministic sample where it is not. What every case asserts: the store serves exactly the
//! events that were written (minus a torn last transaction at the end of the active segment),
//! or fails with `StoreError::Corrupt` naming the damaged file and block. Never altered bytes,
//! never a panic. A matrix runs all its cases and then lists every one that failed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};

use myelin_format::segment::{
    BLOCK_HEADER_BYTES, FILE_HEADER_BYTES, MAX_EVENTS_PER_BLOCK, SegmentKind, block_bytes, decode_block,
};
use myelin_proto::grpc::event::Event;
use myelin_store::{ContextStore, Cursor, StoreConfig, StoreError};
use myelin_testkit::events::{decode_all as decode, event_with_payload as event};
use myelin_testkit::store::{append, small_config};
use prost::Message;

// ---------------------------------------------------------------------------------------------
// Stores, templates and layouts
// ---------------------------------------------------------------------------------------------

/// A small torn-write window (4 KiB and a bit), so damage can be placed beyond it cheaply.
fn window_config(segment_size_bytes: u64) -> StoreConfig {
    StoreConfig {
        max_batch_bytes: 2048,
        max_transaction_bytes: 2048,
        ..small_config(segment_size_bytes)
    }
}

/// Opens a store; snapshots (never written here) get small files, so copies stay cheap.
fn try_open(dir: &Path, config: &StoreConfig) -> myelin_store::Result<Arc<ContextStore>> {
    let snapshots = StoreConfig {
        segment_size_bytes: 4096,
        ..config.clone()
    };
    ContextStore::open("default", dir.into(), dir.into(), config.clone(), snapshots)
}

/// A directory for one case. Every case copies a store and the store syncs what it writes; on
/// a disk those syncs are most of the matrix's time and test nothing here (no case crashes the
/// machine; the crash tests run elsewhere), so copies live in memory where Linux offers it.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

fn segment_name(first_token: u64) -> String {
    SegmentKind::Events.file_name(first_token)
}

/// An event whose timestamp follows its token, so `token_at` has a monotone stream to search.
fn event_at(aggregate: &str, sequence: i64, token: u64, payload_bytes: usize) -> Event {
    let mut e = event(aggregate, sequence, &vec![(token % 251) as u8; payload_bytes]);
    e.timestamp = 1_700_000_000_000 + 10 * token as i64;
    e
}

/// Transactions of `sizes` events each, aggregates taken round-robin from `aggregates` (each
/// with its own consecutive sequence numbers).
fn transactions(aggregates: &[&str], sizes: &[usize], payload_bytes: usize) -> Vec<Vec<Event>> {
    let mut sequences: BTreeMap<&str, i64> = BTreeMap::new();
    let mut token = 0u64;
    sizes
        .iter()
        .map(|size| {
            (0..*size)
                .map(|_| {
                    let aggregate = aggregates[token as usize % aggregates.len()];
                    let sequence = sequences.entry(aggregate).or_insert(0);
                    let e = event_at(aggregate, *sequence, token, payload_bytes);
                    *sequence += 1;
                    token += 1;
                    e
                })
                .collect()
        })
        .collect()
}

/// Events with their tokens, as a tracking read from 0 returns them.
fn numbered(txs: &[Vec<Event>]) -> Vec<(u64, Event)> {
    txs.iter()
        .flatten()
        .cloned()
        .enumerate()
        .map(|(t, e)| (t as u64, e))
        .collect()
}

fn of_aggregate(events: &[(u64, Event)], aggregate: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|(_, e)| e.aggregate_identifier == aggregate)
        .map(|(_, e)| e.clone())
        .collect()
}

/// A stopped store's files, kept in memory and copied into a fresh directory per case.
struct Template {
    config: StoreConfig,
    files: Vec<(String, Vec<u8>)>,
}

type Damage = Box<dyn FnOnce(Vec<u8>) -> Option<Vec<u8>>>;

impl Template {
    /// Appends `txs` (one transaction each) to a new store and stops it.
    fn write(config: &StoreConfig, txs: &[Vec<Event>]) -> Template {
        let dir = scratch_dir();
        let store = try_open(dir.path(), config).expect("opens");
        for tx in txs {
            append(&store, tx).expect("appends");
        }
        store.shutdown().expect("shuts down");
        drop(store);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|entry| {
                let entry = entry.expect("entry");
                let name = entry.file_name().into_string().expect("utf-8 name");
                (name, std::fs::read(entry.path()).expect("read"))
            })
            .collect();
        files.sort();
        Template {
            config: config.clone(),
            files,
        }
    }

    fn file(&self, name: &str) -> &[u8] {
        let found = self.files.iter().find(|(n, _)| n == name);
        &found.unwrap_or_else(|| panic!("template has no {name}")).1
    }

    /// First tokens of the event segments, ascending.
    fn segments(&self) -> Vec<u64> {
        let mut names: Vec<u64> = self
            .files
            .iter()
            .filter_map(|(name, _)| SegmentKind::Events.parse_file_name(name))
            .collect();
        names.sort_unstable();
        names
    }

    /// A copy of the store in a fresh directory, with `damage` applied to the file `name`
    /// (`None` from `damage` deletes that file).
    fn instance_with(&self, name: &str, damage: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>) -> tempfile::TempDir {
        let dir = scratch_dir();
        let mut damage = Some(damage);
        for (file, bytes) in &self.files {
            let bytes = match damage.take_if(|_| file == name) {
                Some(damage) => match damage(bytes.clone()) {
                    Some(bytes) => bytes,
                    None => continue,
                },
                None => bytes.clone(),
            };
            std::fs::write(dir.path().join(file), bytes).expect("write");
        }
        assert!(damage.is_none(), "template has no {name}");
        dir
    }

    fn instance(&self) -> tempfile::TempDir {
        let dir = scratch_dir();
        for (file, bytes) in &self.files {
            std::fs::write(dir.path().join(file), bytes).expect("write");
        }
        dir
    }
}

/// A block of a segment file: `[start, end)` and its event count.
#[derive(Debug, Clone, Copy)]
struct Block {
    start: u64,
    end: u64,
    count: usize,
}

impl Block {
    fn contains(&self, offset: u64) -> bool {
        (self.start..self.end).contains(&offset)
    }

    /// Its size field, version, count and CRC: where every bit is worth flipping.
    fn is_framing(&self, offset: u64) -> bool {
        offset < self.start + BLOCK_HEADER_BYTES as u64 || offset >= self.end - 4
    }
}

/// The valid blocks of a segment file from its header on, decoded with the format crate.
fn blocks_of(bytes: &[u8]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut at = FILE_HEADER_BYTES;
    while let Ok(Some(block)) = decode_block(&bytes[at..]) {
        let end = at + block_bytes(block.area.len());
        blocks.push(Block {
            start: at as u64,
            end: end as u64,
            count: block.count,
        });
        at = end;
    }
    blocks
}

fn flipped(mut bytes: Vec<u8>, offset: u64, bit: u8) -> Vec<u8> {
    bytes[offset as usize] ^= 1 << bit;
    bytes
}

fn truncated(mut bytes: Vec<u8>, len: u64) -> Vec<u8> {
    bytes.truncate(len as usize);
    bytes
}

/// All 8 bits of a block's framing bytes, one bit (rotating with the offset) elsewhere.
fn bits_for(block: &Block, offset: u64) -> Range<u8> {
    if block.is_framing(offset) {
        0..8
    } else {
        one_bit(offset)
    }
}

fn one_bit(offset: u64) -> Range<u8> {
    let bit = (offset % 8) as u8;
    bit..bit + 1
}

/// The one single-bit flip that leaves a block valid: its version byte 2 becoming 0 (version
/// 0 is accepted, as Axon Server's own test files use it). No event byte changes.
fn is_harmless_flip(original: &[u8], block: &Block, offset: u64, bit: u8) -> bool {
    offset == block.start + 4 && matches!(original[offset as usize] ^ (1 << bit), 0 | 2)
}

// ---------------------------------------------------------------------------------------------
// Reads and checks
// ---------------------------------------------------------------------------------------------

/// Tracking read from `token` until the head or the first error; what came before the error
/// is returned with it.
fn read_until_error(store: &ContextStore, token: u64) -> (Vec<(u64, Event)>, Option<StoreError>) {
    let mut cursor = Cursor::new(token);
    let mut out = Vec::new();
    loop {
        let mut batch = Vec::new();
        let result = store.read_events(&mut cursor, 1000, &mut batch);
        let progressed = !batch.is_empty();
        out.extend(
            batch
                .into_iter()
                .map(|(t, b)| (t, Event::decode(b).expect("a served event decodes"))),
        );
        if let Err(e) = result {
            return (out, Some(e));
        }
        if !progressed {
            return (out, None);
        }
    }
}

fn aggregate_read(store: &ContextStore, aggregate: &str, first_sequence: i64) -> myelin_store::Result<Vec<Event>> {
    store
        .aggregate_events(aggregate, first_sequence, 0, false, 0)
        .map(|bytes| decode(&bytes))
}

#[track_caller]
fn assert_corrupt_at(err: &StoreError, file: &Path, offset: u64, case: &str) {
    match err {
        StoreError::Corrupt {
            file: named,
            offset: at,
            ..
        } => {
            assert_eq!(named, file, "{case}: wrong file named ({err})");
            assert_eq!(*at, offset, "{case}: wrong offset named ({err})");
        }
        other => panic!(
            "{case}: expected corruption in {} at {offset}, got {other}",
            file.display()
        ),
    }
}

/// Tracking and aggregate reads serve exactly `expected`.
#[track_caller]
fn check_serves(store: &ContextStore, expected: &[(u64, Event)], aggregates: &[&str], case: &str) {
    let (events, err) = read_until_error(store, 0);
    assert!(err.is_none(), "{case}: tracking read failed: {err:?}");
    assert!(
        events == expected,
        "{case}: tracking read returned {} events, not the {} expected ones",
        events.len(),
        expected.len()
    );
    for aggregate in aggregates {
        let read = aggregate_read(store, aggregate, 0).unwrap_or_else(|e| panic!("{case}: aggregate read: {e}"));
        assert!(
            read == of_aggregate(expected, aggregate),
            "{case}: aggregate read of {aggregate} differs"
        );
    }
}

/// Opens `dir`, checks it serves exactly `expected`, appends one more event and checks that
/// survives a restart too.
fn check_recovers(dir: &Path, config: &StoreConfig, expected: &[(u64, Event)], aggregates: &[&str], case: &str) {
    let store = try_open(dir, config).unwrap_or_else(|e| panic!("{case}: does not reopen: {e}"));
    check_serves(&store, expected, aggregates, case);
    let next = store.highest_sequence("agg").expect("reads") + 1;
    let after = event_at("agg", next, expected.len() as u64, 3);
    append(&store, std::slice::from_ref(&after)).unwrap_or_else(|e| panic!("{case}: append after recovery: {e}"));
    store.shutdown().expect("shuts down");
    drop(store);
    let store = try_open(dir, config).unwrap_or_else(|e| panic!("{case}: does not reopen after the append: {e}"));
    let mut all = expected.to_vec();
    all.push((expected.len() as u64, after));
    check_serves(
        &store,
        &all,
        aggregates,
        &format!("{case}, after an append and a restart"),
    );
    store.shutdown().expect("shuts down");
}

/// Runs the cases of a matrix, going on after a failure, and fails at the end listing every
/// case that failed (each one's message is printed as it fails): a matrix is read as a whole.
struct Matrix {
    cases: usize,
    failed: Vec<String>,
}

impl Matrix {
    fn new() -> Self {
        Matrix {
            cases: 0,
            failed: Vec::new(),
        }
    }

    fn case(&mut self, case: String, check: impl FnOnce(&str)) {
        self.cases += 1;
        if std::panic::catch_unwind(AssertUnwindSafe(|| check(&case))).is_err() {
            self.failed.push(case);
        }
    }

    /// The number of cases run, all of which passed.
    fn finish(self) -> usize {
        assert!(
            self.failed.is_empty(),
            "{} of {} cases failed: {:#?}",
            self.failed.len(),
            self.cases,
            self.failed
        );
        self.cases
    }
}

/// Log lines written while `f` runs on this thread (recovery and read-path rebuilds log on the
/// caller's thread).
fn with_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    (out, text)
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

const TORN_WRITE_WARNING: &str = "truncating an interrupted last write";

/// The WARN recovery logs when it cuts off a torn write at `offset` of `file`.
#[track_caller]
fn assert_torn_write_warning(logs: &str, file: &Path, offset: u64, case: &str) {
    let line = logs.lines().find(|line| line.contains(TORN_WRITE_WARNING));
    let named = line.is_some_and(|line| {
        line.contains(" WARN ")
            && line.contains(&format!("offset={offset} "))
            && line.contains(&file.display().to_string())
    });
    assert!(
        named,
        "{case}: no WARN naming {} and offset {offset}: {logs}",
        file.display()
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Truncating the active segment
// ---------------------------------------------------------------------------------------------

/// Every length from the end of the previous block to the end of the last one: the last
/// transaction survives only whole, everything before it always survives, and the store takes
/// appends afterwards, which survive another restart.
#[test]
fn truncating_the_last_block_at_every_offset_keeps_the_transactions_before_it() {
    let config = window_config(16 * 1024);
    let txs = transactions(&["agg"], &[2, 3, 1, 3], 30);
    let template = Template::write(&config, &txs);
    let segment = segment_name(0);
    let blocks = blocks_of(template.file(&segment));
    assert_eq!(blocks.len(), txs.len(), "one block per transaction");
    let last = blocks[blocks.len() - 1];
    let before = numbered(&txs[..txs.len() - 1]);
    let all = numbered(&txs);
    let mut matrix = Matrix::new();
    for cut in last.start..=last.end {
        matrix.case(format!("cut at {cut}"), |case| {
            let dir = template.instance_with(&segment, |bytes| Some(truncated(bytes, cut)));
            let expected = if cut == last.end { &all } else { &before };
            check_recovers(dir.path(), &config, expected, &["agg"], case);
        });
    }
    assert_eq!(matrix.finish() as u64, last.end - last.start + 1);
}

/// Two small transactions, then one of 32767 + 5 events, written as two blocks (the first one
/// full). Its events are small and not domain events, to keep scanning it cheap.
fn multi_block_template() -> (Template, [Block; 2], Vec<Vec<Event>>) {
    let config = StoreConfig {
        max_batch_bytes: 2048,
        max_transaction_bytes: 1024 * 1024,
        ..small_config(1024 * 1024)
    };
    let mut txs = transactions(&["agg"], &[2, 1], 30);
    let big: Vec<Event> = (0..MAX_EVENTS_PER_BLOCK + 5)
        .map(|i| Event {
            timestamp: 1_700_000_000_000 + i as i64,
            ..Event::default()
        })
        .collect();
    txs.push(big);
    let template = Template::write(&config, &txs);
    let blocks = blocks_of(template.file(&segment_name(0)));
    assert_eq!(blocks.len(), 4, "two small transactions, then one in two blocks");
    assert_eq!((blocks[2].count, blocks[3].count), (MAX_EVENTS_PER_BLOCK, 5));
    (template, [blocks[2], blocks[3]], txs)
}

/// Lengths in `[from, to)`: every one within 16 bytes of either end (size fields, headers,
/// length prefixes, CRCs) and a fixed stride in between.
fn sampled_cuts(from: u64, to: u64) -> Vec<u64> {
    let mut cuts: Vec<u64> = (from..(from + 16).min(to))
        .chain(to.saturating_sub(16).max(from)..to)
        .chain((from..to).step_by(40_009))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Cuts the active segment at each of `cuts` (all inside the multi-block transaction): all of
/// that transaction must go, everything before it must stay.
fn check_multi_block_cuts(template: &Template, txs: &[Vec<Event>], cuts: &[u64]) -> usize {
    let before = numbered(&txs[..2]);
    let mut matrix = Matrix::new();
    for &cut in cuts {
        matrix.case(format!("cut at {cut}"), |case| {
            let dir = template.instance_with(&segment_name(0), |bytes| Some(truncated(bytes, cut)));
            check_recovers(dir.path(), &template.config, &before, &["agg"], case);
        });
    }
    matrix.finish()
}

/// Cut inside the first block of a two-block transaction: all of it is dropped.
#[test]
fn truncating_the_first_block_of_a_multi_block_transaction_drops_all_of_it() {
    let (template, [first, _], txs) = multi_block_template();
    let cuts = sampled_cuts(first.start, first.end);
    assert!(cuts.len() > 32);
    check_multi_block_cuts(&template, &txs, &cuts);
}

/// Cut at the end of the first block or inside the second: the first block is whole and valid
/// by itself, and the format records no transaction boundaries; but Myelin never ends a
/// transaction with a full block (FORMAT.md), so a full block cut short means an unfinished
/// transaction and recovery drops it too. (A crash cannot produce this: the writer syncs the
/// later blocks before the first block's size field; a lost or damaged tail can.)
///
/// A cut exactly at the end of the full block (or inside the leading zero bytes of the next
/// size field) leaves a file that ends cleanly after a full block: Axon Server can write that
/// as a complete transaction, so recovery keeps it (FORMAT.md, "Recovery"); those lengths are
/// not part of this test. From the first non-zero byte of the second block on, every cut is.
#[test]
fn truncating_a_later_block_of_a_multi_block_transaction_drops_all_of_it() {
    let (template, [first, second], txs) = multi_block_template();
    let bytes = template.file(&segment_name(0));
    let first_nonzero = (first.end..second.end)
        .find(|at| bytes[*at as usize] != 0)
        .expect("the second block has a size");
    let cuts = sampled_cuts(first_nonzero + 1, second.end);
    check_multi_block_cuts(&template, &txs, &cuts);
}

// ---------------------------------------------------------------------------------------------
// 2. Bit flips in the last block of the active segment
// ---------------------------------------------------------------------------------------------

/// `bits` of every byte of the last block: recovery takes the damage for a torn write (it lies
/// within the window of one interrupted batch and nothing valid follows), zeroes it with a WARN
/// naming file and offset, and serves exactly the transactions before it.
fn check_flips_in_last_block(bits: Range<u8>) {
    let config = window_config(16 * 1024);
    let txs = transactions(&["agg"], &[2, 3, 1, 2], 8);
    let template = Template::write(&config, &txs);
    let segment = segment_name(0);
    let original = template.file(&segment).to_vec();
    let blocks = blocks_of(&original);
    let last = blocks[blocks.len() - 1];
    let before = numbered(&txs[..txs.len() - 1]);
    let all = numbered(&txs);
    let mut matrix = Matrix::new();
    for offset in last.start..last.end {
        for bit in bits.clone() {
            matrix.case(format!("bit {bit} of byte {offset}"), |case| {
                let dir = template.instance_with(&segment, |bytes| Some(flipped(bytes, offset, bit)));
                let path = dir.path().join(&segment);
                let (store, logs) = with_logs(|| try_open(dir.path(), &config));
                let store = store.unwrap_or_else(|e| panic!("{case}: does not reopen: {e}"));
                if is_harmless_flip(&original, &last, offset, bit) {
                    check_serves(&store, &all, &["agg"], case);
                    assert!(!logs.contains(" WARN "), "{case}: {logs}");
                } else {
                    check_serves(&store, &before, &["agg"], case);
                    assert_torn_write_warning(&logs, &path, last.start, case);
                    let bytes = std::fs::read(&path).expect("segment");
                    assert!(
                        bytes[last.start as usize..last.end as usize].iter().all(|b| *b == 0),
                        "{case}: the torn block was not zeroed"
                    );
                }
                store.shutdown().expect("shuts down");
            });
        }
    }
    assert_eq!(matrix.finish() as u64, (last.end - last.start) * bits.len() as u64);
    // Appending after such a recovery works and survives a restart.
    let dir = template.instance_with(&segment, |bytes| Some(flipped(bytes, last.end - 1, 0)));
    check_recovers(dir.path(), &config, &before, &["agg"], "after a flipped CRC");
}

#[test]
fn a_flipped_bit_in_the_last_block_is_cut_off_as_a_torn_write_bits_0_to_3() {
    check_flips_in_last_block(0..4);
}

#[test]
fn a_flipped_bit_in_the_last_block_is_cut_off_as_a_torn_write_bits_4_to_7() {
    check_flips_in_last_block(4..8);
}

// ---------------------------------------------------------------------------------------------
// 3. Bit flips deeper in the active segment
// ---------------------------------------------------------------------------------------------

/// 200 one-event transactions in the active segment, about 19 KiB: far more than the 4 KiB
/// torn-write window of [`window_config`].
fn deep_template() -> (Template, Vec<Block>, Vec<Vec<Event>>) {
    let config = window_config(64 * 1024);
    let txs = transactions(&["agg"], &[1; 200], 30);
    let template = Template::write(&config, &txs);
    let blocks = blocks_of(template.file(&segment_name(0)));
    assert_eq!(blocks.len(), 200);
    (template, blocks, txs)
}

/// Flips across three blocks far from the end (the first block, one near it and one in the
/// middle; every bit of their size fields, versions, counts and CRCs, one bit of each event
/// byte): the context refuses to start, naming the file and the block.
#[test]
fn a_flipped_bit_in_acknowledged_data_refuses_to_start_naming_the_block() {
    let (template, blocks, txs) = deep_template();
    let segment = segment_name(0);
    let original = template.file(&segment).to_vec();
    let config = &template.config;
    let end = blocks[blocks.len() - 1].end;
    let mut matrix = Matrix::new();
    for (index, block) in [(0, blocks[0]), (9, blocks[9]), (100, blocks[100])] {
        assert!(end - block.start > config.torn_write_window_bytes());
        for offset in block.start..block.end {
            for bit in bits_for(&block, offset) {
                matrix.case(format!("block {index}, bit {bit} of byte {offset}"), |case| {
                    let dir = template.instance_with(&segment, |bytes| Some(flipped(bytes, offset, bit)));
                    let result = try_open(dir.path(), config);
                    if is_harmless_flip(&original, &block, offset, bit) {
                        let store = result.unwrap_or_else(|e| panic!("{case}: {e}"));
                        check_serves(&store, &numbered(&txs), &["agg"], case);
                    } else {
                        let err = result
                            .err()
                            .unwrap_or_else(|| panic!("{case}: opened despite the damage"));
                        assert_corrupt_at(&err, &dir.path().join(&segment), block.start, case);
                    }
                });
            }
        }
    }
    let flips = matrix.finish();
    assert!(flips > 300, "{flips}");

    // The damage stays in its context: another one in another directory serves as usual.
    let damaged = template.instance_with(&segment, |bytes| Some(flipped(bytes, blocks[9].start + 20, 3)));
    assert!(try_open(damaged.path(), config).is_err());
    let other = template.instance();
    let store = try_open(other.path(), config).expect("another context opens");
    check_serves(&store, &numbered(&txs), &["agg"], "another context");
}

/// Where the torn-write window ends: damage to the last block followed by stray bytes that
/// reach exactly the window's length from the damaged block is one interrupted write, cut off
/// with a WARN; one byte further it cannot be, and the context refuses to start.
#[test]
fn the_torn_write_window_separates_truncation_from_refusal() {
    let (template, blocks, txs) = deep_template();
    let segment = segment_name(0);
    let last = blocks[blocks.len() - 1];
    let window = template.config.torn_write_window_bytes();
    let damaged = |reach: u64| {
        template.instance_with(&segment, |bytes| {
            let mut bytes = flipped(bytes, last.end - 1, 0);
            bytes[(last.start + reach - 1) as usize] = 0x55;
            Some(bytes)
        })
    };

    let dir = damaged(window);
    let (store, logs) = with_logs(|| try_open(dir.path(), &template.config));
    let store = store.expect("damage reaching the window's length is a torn write");
    assert_torn_write_warning(&logs, &dir.path().join(&segment), last.start, "within the window");
    check_serves(&store, &numbered(&txs[..199]), &["agg"], "within the window");
    drop(store);

    let dir = damaged(window + 1);
    let err = try_open(dir.path(), &template.config)
        .err()
        .expect("damage beyond the window refuses to start");
    assert_corrupt_at(&err, &dir.path().join(&segment), last.start, "beyond the window");
}

// ---------------------------------------------------------------------------------------------
// 4. Bit flips in a closed segment
// ---------------------------------------------------------------------------------------------

/// 120 one-event transactions in 4 KiB segments (about 31 per segment).
fn closed_template() -> (Template, Vec<u64>, Vec<Vec<Event>>) {
    let config = window_config(4096);
    let txs = transactions(&["agg"], &[1; 120], 64);
    let template = Template::write(&config, &txs);
    let names = template.segments();
    assert!(names.len() >= 4, "{names:?}");
    (template, names, txs)
}

/// Flips at `offsets` (each with its bits) of the second closed segment. Startup does not read
/// closed segments, so it succeeds; a read touching the damaged block fails with the file and
/// the block's offset, having served only correct events before it; reads of other segments
/// go on. Damage outside every block (file header, roll marker, padding) changes no event, so
/// it may go unnoticed, but the events must then be served exactly.
fn check_closed_segment_flips(offsets: &[(u64, Range<u8>)]) -> usize {
    let (template, names, txs) = closed_template();
    let all = numbered(&txs);
    let target = names[1];
    let next = names[2];
    let segment = segment_name(target);
    let original = template.file(&segment).to_vec();
    let blocks = blocks_of(&original);
    let mut matrix = Matrix::new();
    for (offset, bits) in offsets {
        let offset = *offset;
        for bit in bits.clone() {
            matrix.case(format!("bit {bit} of byte {offset} of {segment}"), |case| {
                let dir = template.instance_with(&segment, |bytes| Some(flipped(bytes, offset, bit)));
                let path = dir.path().join(&segment);
                let store = try_open(dir.path(), &template.config)
                    .unwrap_or_else(|e| panic!("{case}: closed segments are not read at startup, yet: {e}"));
                let damaged = blocks
                    .iter()
                    .find(|b| b.contains(offset))
                    .filter(|b| !is_harmless_flip(&original, b, offset, bit));

                let (events, err) = read_until_error(&store, 0);
                assert!(
                    events[..] == all[..events.len()],
                    "{case}: tracking read served wrong events"
                );
                match (damaged, err) {
                    (Some(block), Some(err)) => {
                        assert_corrupt_at(&err, &path, block.start, &format!("{case}, tracking read"));
                        let before: usize = blocks
                            .iter()
                            .take_while(|b| b.start < block.start)
                            .map(|b| b.count)
                            .sum();
                        assert_eq!(
                            events.len() as u64,
                            target + before as u64,
                            "{case}: events before the damage"
                        );
                    }
                    (Some(_), None) => panic!("{case}: a tracking read over the damaged block succeeded"),
                    (None, None) => assert_eq!(events.len(), all.len(), "{case}"),
                    (None, Some(StoreError::Corrupt { file, .. })) => assert_eq!(file, path, "{case}"),
                    (None, Some(other)) => panic!("{case}: {other}"),
                }

                match (damaged, aggregate_read(&store, "agg", 0)) {
                    (Some(block), Err(err)) => {
                        assert_corrupt_at(&err, &path, block.start, &format!("{case}, aggregate read"))
                    }
                    (Some(_), Ok(_)) => panic!("{case}: an aggregate read over the damaged block succeeded"),
                    (None, Ok(events)) => assert!(events == of_aggregate(&all, "agg"), "{case}: aggregate read"),
                    (None, Err(StoreError::Corrupt { file, .. })) => assert_eq!(file, path, "{case}"),
                    (None, Err(other)) => panic!("{case}: {other}"),
                }

                // The segments after the damaged one are served as usual.
                let (later, err) = read_until_error(&store, next);
                assert!(err.is_none(), "{case}: reading later segments: {err:?}");
                assert!(later[..] == all[next as usize..], "{case}: later segments");
                let later = aggregate_read(&store, "agg", next as i64).unwrap_or_else(|e| panic!("{case}: {e}"));
                assert!(
                    later[..] == of_aggregate(&all, "agg")[next as usize..],
                    "{case}: later aggregate events"
                );
                store.shutdown().expect("shuts down");
            });
        }
    }
    matrix.finish()
}

/// The file header (every bit of its 5 bytes), the roll marker (every bit) and the padding
/// after it.
#[test]
fn flips_outside_the_blocks_of_a_closed_segment_never_serve_wrong_events() {
    let (template, names, _) = closed_template();
    let segment = template.file(&segment_name(names[1])).to_vec();
    let blocks = blocks_of(&segment);
    let marker = blocks[blocks.len() - 1].end;
    assert_eq!(
        &segment[marker as usize..marker as usize + 4],
        &[0xff; 4],
        "roll marker"
    );
    let mut offsets: Vec<(u64, Range<u8>)> = (0..FILE_HEADER_BYTES as u64).map(|o| (o, 0..8)).collect();
    offsets.extend((marker..marker + 4).map(|o| (o, 0..8)));
    offsets.extend([(marker + 4, 0..8), (segment.len() as u64 - 1, 0..8)]);
    assert_eq!(check_closed_segment_flips(&offsets), 11 * 8);
}

/// Every byte of the segment's first, middle and last block (every bit of their framing, one
/// bit of each event byte): reads touching the block fail naming file and block offset.
#[test]
fn flips_in_the_blocks_of_a_closed_segment_fail_reads_naming_the_block() {
    let (template, names, _) = closed_template();
    let blocks = blocks_of(template.file(&segment_name(names[1])));
    let mut offsets = Vec::new();
    for block in [blocks[0], blocks[blocks.len() / 2], blocks[blocks.len() - 1]] {
        offsets.extend((block.start..block.end).map(|offset| (offset, bits_for(&block, offset))));
    }
    let flips = check_closed_segment_flips(&offsets);
    assert!(flips > 400, "{flips}");
}

// ---------------------------------------------------------------------------------------------
// 5. Index and bloom files of a closed segment
// ---------------------------------------------------------------------------------------------

const AGGREGATES: [&str; 2] = ["agg", "other"];

/// 100 events in 4 KiB segments, two aggregates interleaved.
fn index_template() -> (Template, Vec<u64>, Vec<(u64, Event)>) {
    let config = window_config(4096);
    let txs = transactions(&AGGREGATES, &[1; 100], 100);
    let template = Template::write(&config, &txs);
    let names = template.segments();
    assert!(names.len() >= 4, "{names:?}");
    (template, names, numbered(&txs))
}

/// What `token_at` answers for instants around the second segment (it uses the first
/// timestamps the index headers give).
fn token_at_answers(store: &ContextStore, names: &[u64]) -> Vec<i64> {
    let instant = |token: u64| 1_700_000_000_000 + 10 * token as i64;
    [names[1] - 1, names[1], names[1] + 1, names[2] - 1, names[2]]
        .into_iter()
        .map(|t| store.token_at(instant(t)).expect("token_at"))
        .collect()
}

/// Each of `cases` damages the side file `name` of the second segment. The store opens, every
/// read is exact, both side files are afterwards the bytes a fresh build writes, and (every
/// `recheck`th case) a second start uses them without rebuilding anything.
fn check_side_file_damage(cases: Vec<(String, Damage)>, name: &str, recheck: usize) -> usize {
    let (template, names, all) = index_template();
    let index_name = SegmentKind::Events.index_file_name(names[1]);
    let bloom_name = SegmentKind::Events.bloom_file_name(names[1]);
    let answers = {
        let dir = template.instance();
        let store = try_open(dir.path(), &template.config).expect("opens");
        token_at_answers(&store, &names)
    };
    let mut matrix = Matrix::new();
    for (i, (case, damage)) in cases.into_iter().enumerate() {
        matrix.case(format!("{name}: {case}"), |case| {
            let dir = template.instance_with(name, damage);
            let (store, logs) = with_logs(|| {
                let store =
                    try_open(dir.path(), &template.config).unwrap_or_else(|e| panic!("{case}: does not open: {e}"));
                for aggregate in AGGREGATES {
                    let read =
                        aggregate_read(&store, aggregate, 0).unwrap_or_else(|e| panic!("{case}: {aggregate}: {e}"));
                    assert!(
                        read == of_aggregate(&all, aggregate),
                        "{case}: aggregate read of {aggregate}"
                    );
                }
                store
            });
            // Every damage here is found (at startup, or by the checksum when a read loads the
            // file); the byte comparison below shows the rebuild is right.
            assert!(logs.contains("rebuil"), "{case}: nothing was rebuilt: {logs}");
            // Starting inside the segment goes through its seek table.
            let from = names[1] + 3;
            let (events, err) = read_until_error(&store, from);
            assert!(err.is_none(), "{case}: tracking read from {from}: {err:?}");
            assert!(events[..] == all[from as usize..], "{case}: tracking read from {from}");
            assert_eq!(token_at_answers(&store, &names), answers, "{case}: token_at");
            store.shutdown().expect("shuts down");
            drop(store);
            for side in [&index_name, &bloom_name] {
                let now = std::fs::read(dir.path().join(side)).unwrap_or_else(|e| panic!("{case}: {side}: {e}"));
                assert!(
                    now == template.file(side),
                    "{case}: {side} is not what a fresh build writes"
                );
            }
            if i % recheck == 0 {
                let ((store, reads), logs) = with_logs(|| {
                    let store = try_open(dir.path(), &template.config).expect("reopens");
                    let reads: Vec<Vec<Event>> = AGGREGATES
                        .iter()
                        .map(|a| aggregate_read(&store, a, 0).expect("reads"))
                        .collect();
                    (store, reads)
                });
                for (aggregate, read) in AGGREGATES.iter().zip(reads) {
                    assert!(
                        read == of_aggregate(&all, aggregate),
                        "{case}: second start, {aggregate}"
                    );
                }
                assert!(!logs.contains("rebuil"), "{case}: rebuilt again: {logs}");
                store.shutdown().expect("shuts down");
            }
        });
    }
    matrix.finish()
}

fn flip_cases(len: usize, bits: impl Fn(u64) -> Range<u8>) -> Vec<(String, Damage)> {
    let mut cases: Vec<(String, Damage)> = Vec::new();
    for offset in 0..len as u64 {
        for bit in bits(offset) {
            cases.push((
                format!("bit {bit} of byte {offset}"),
                Box::new(move |bytes| Some(flipped(bytes, offset, bit))),
            ));
        }
    }
    cases
}

/// Cut to lengths around the header, the middle and the checksum; deleted; one byte longer.
fn length_cases(len: usize) -> Vec<(String, Damage)> {
    let len = len as u64;
    let mut lengths = vec![0, 1, 8, 23, 24, 47, 48, 49, len / 2, len - 5, len - 4, len - 1];
    lengths.retain(|l| *l < len);
    lengths.sort_unstable();
    lengths.dedup();
    let mut cases: Vec<(String, Damage)> = lengths
        .into_iter()
        .map(|l| -> (String, Damage) {
            (
                format!("truncated to {l} bytes"),
                Box::new(move |bytes| Some(truncated(bytes, l))),
            )
        })
        .collect();
    cases.push(("deleted".into(), Box::new(|_| None)));
    cases.push((
        "grown by a byte".into(),
        Box::new(|mut bytes: Vec<u8>| {
            bytes.push(0);
            Some(bytes)
        }),
    ));
    cases
}

/// One bit of every byte of an index file (the bit rotating with the offset).
#[test]
fn every_flipped_byte_of_an_index_file_is_rebuilt_from_the_segment() {
    let (template, names, _) = index_template();
    let name = SegmentKind::Events.index_file_name(names[1]);
    let len = template.file(&name).len();
    assert_eq!(check_side_file_damage(flip_cases(len, one_bit), &name, 16), len);
}

/// Every bit of a bloom file.
#[test]
fn every_flipped_bit_of_a_bloom_file_is_rebuilt_from_the_segment() {
    let (template, names, _) = index_template();
    let name = SegmentKind::Events.bloom_file_name(names[1]);
    let len = template.file(&name).len();
    assert_eq!(check_side_file_damage(flip_cases(len, |_| 0..8), &name, 16), len * 8);
}

#[test]
fn truncated_deleted_or_grown_index_and_bloom_files_are_rebuilt() {
    let (template, names, _) = index_template();
    for name in [
        SegmentKind::Events.index_file_name(names[1]),
        SegmentKind::Events.bloom_file_name(names[1]),
    ] {
        let cases = length_cases(template.file(&name).len());
        check_side_file_damage(cases, &name, 1);
    }
}
