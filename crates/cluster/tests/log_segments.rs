//! The Raft log's segment files through the public API: exact bytes on disk, rolling,
//! reopening, every torn tail a crash can leave, corruption refused, truncation, compaction,
//! reset, the sync protocol, and a model test of random operations.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use myelin_cluster::log::{EntryType, LogError, LogSegments, Record};
use myelin_format::raftlog::{self, Scanner};
use proptest::prelude::*;

fn record(index: u64, term: u64, kind: EntryType, data: &[u8]) -> Record {
    Record {
        index,
        term,
        kind,
        data: Bytes::copy_from_slice(data),
    }
}

/// `count` serialized-object records from `first`, each `len` bytes of data naming its index.
fn records(first: u64, count: u64, term: u64, len: usize) -> Vec<Record> {
    (first..first + count)
        .map(|index| {
            let mut data = format!("entry {index} ").into_bytes();
            data.resize(len.max(1), b'.');
            record(index, term, EntryType::SerializedObject, &data)
        })
        .collect()
}

fn everything(log: &LogSegments) -> Vec<Record> {
    log.read(0, u64::MAX).expect("read the whole log")
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(raftlog::file_name(first_index))
}

/// `(offset, length)` of every entry of a segment file.
fn entry_spans(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).expect("read segment");
    Scanner::new(&bytes).map(|entry| (entry.offset, entry.len())).collect()
}

fn write_bytes_at(path: &Path, offset: usize, bytes: &[u8]) {
    let mut content = std::fs::read(path).expect("read");
    content[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, content).expect("write");
}

fn zero_from(path: &Path, offset: usize) {
    let mut content = std::fs::read(path).expect("read");
    content[offset..].fill(0);
    std::fs::write(path, content).expect("write");
}

fn expect_corrupt(result: Result<LogSegments, LogError>, file: &Path) -> (u64, String) {
    match result {
        Err(LogError::Corrupt { path, offset, reason }) => {
            assert_eq!(path, file, "the damaged file is named ({reason})");
            (offset, reason)
        }
        Err(other) => panic!("expected Corrupt for {}, got {other}", file.display()),
        Ok(_) => panic!("{} opened despite its damage", file.display()),
    }
}

#[test]
fn a_small_log_has_exactly_axons_bytes_and_file_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 64).expect("open the log");
    log.append(&[
        record(1, 1, EntryType::SerializedObject, b"\x0a\x03abc"),
        record(2, 2, EntryType::Config, b"\x0a\x00"),
        record(3, 3, EntryType::LeaderElected, b"\x0a\x02n1"),
        record(4, 3, EntryType::DummyEntry, b"X"),
    ])
    .expect("append");
    log.sync().expect("sync");
    assert_eq!(
        file_names(dir.path()),
        vec!["00000000000000000001.log", "00000000000000000003.log"]
    );

    #[rustfmt::skip]
    let mut first: Vec<u8> = vec![
        0x00, 0x00, 0x00, 0x00, 0x00,                         // header: version 0, flags 0
        0x00, 0x00, 0x00, 0x05, 0x00,                         // size 5, version 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,       // term 1
        0x00, 0x00, 0x00, 0x03,                               // SerializedObject
        0x0a, 0x03, b'a', b'b', b'c',
        0x54, 0x42, 0xd8, 0x82,                               // CRC-32 of the data
        0x00, 0x00, 0x00, 0x02, 0x00,                         // size 2, version 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,       // term 2
        0x00, 0x00, 0x00, 0x04,                               // Config
        0x0a, 0x00,
        0xbb, 0x36, 0xfa, 0x75,
        0xff, 0xff, 0xff, 0xff,                               // closed: entry 3 did not fit
    ];
    first.resize(64, 0);
    #[rustfmt::skip]
    let mut second: Vec<u8> = vec![
        0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
        0x00, 0x00, 0x00, 0x05,                               // LeaderElected
        0x0a, 0x02, b'n', b'1',
        0xe7, 0xdd, 0xad, 0x05,
        0x00, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
        0x00, 0x00, 0x00, 0x06,                               // DummyEntry
        b'X',
        0xb7, 0xb2, 0x36, 0x4b,
    ];
    second.resize(64, 0);
    assert_eq!(
        std::fs::read(segment_path(dir.path(), 1)).expect("read the file"),
        first
    );
    assert_eq!(
        std::fs::read(segment_path(dir.path(), 3)).expect("read the file"),
        second
    );

    let files = log.files();
    assert_eq!(files.closed, vec![(1, segment_path(dir.path(), 1))]);
    assert_eq!(files.active, (3, segment_path(dir.path(), 3)));
    assert!(files.active.1.is_absolute());
    assert_eq!(log.active_synced_len(), 52);
}

#[test]
fn an_empty_directory_becomes_a_log_that_starts_at_index_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = dir.path().join("groups/default");
    let log = LogSegments::open(&group, 1024).expect("open the log");
    assert_eq!(
        (log.first_index(), log.last_index(), log.last_term()),
        (None, None, None)
    );
    assert_eq!(log.next_index(), 1);
    assert_eq!(log.synced_index(), None);
    assert_eq!(file_names(&group), vec!["00000000000000000001.log"]);
    assert_eq!(
        std::fs::metadata(segment_path(&group, 1)).expect("file metadata").len(),
        1024
    );
    assert!(everything(&log).is_empty());
}

#[test]
fn a_segment_size_the_format_cannot_use_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for size in [0, 30, 1 << 31] {
        assert!(matches!(
            LogSegments::open(dir.path(), size),
            Err(LogError::InvalidSegmentSize { .. })
        ));
    }
    assert!(LogSegments::open(dir.path(), 31).is_ok());
}

#[test]
fn entries_roll_across_segments_and_read_back_the_same_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 200).expect("open the log");
    let mut written = Vec::new();
    let mut next = 1;
    for (batch, len) in [(1u64, 10usize), (7, 30), (3, 100), (12, 1), (1, 170), (5, 45)] {
        let batch = records(next, batch, next / 4 + 1, len);
        log.append(&batch).expect("append");
        next += batch.len() as u64;
        written.extend(batch);
    }
    assert_eq!(everything(&log), written, "readable before any sync");
    assert!(log.files().closed.len() >= 5, "{:?}", log.files());
    log.sync().expect("sync");
    assert_eq!(log.synced_index(), Some(next - 1));

    let log = LogSegments::open(dir.path(), 200).expect("open the log");
    assert_eq!(everything(&log), written);
    assert_eq!(log.first_index(), Some(1));
    assert_eq!(log.last_index(), Some(next - 1));
    assert_eq!(log.last_term(), written.last().map(|r| r.term));
    assert_eq!(log.synced_index(), Some(next - 1));
    for from in 1..next {
        for to in from..=next {
            let expected: Vec<_> = written[(from - 1) as usize..(to - 1) as usize].to_vec();
            assert_eq!(log.read(from, to).expect("read entries"), expected, "{from}..{to}");
        }
        assert_eq!(
            log.entry(from).expect("read an entry").as_ref(),
            written.get((from - 1) as usize)
        );
    }
    assert_eq!(log.entry(0).expect("read an entry"), None);
    assert_eq!(log.entry(next).expect("read an entry"), None);
    // Every closed file's name is the index after the previous file's last entry.
    let files = log.files();
    let mut expected_first = 1;
    for (first, path) in files.closed.iter().rev() {
        assert_eq!(*first, expected_first);
        expected_first += entry_spans(path).len() as u64;
    }
    assert_eq!(files.active.0, expected_first);
}

#[test]
fn a_batch_the_log_cannot_take_is_refused_whole_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 100).expect("open the log");
    log.append(&records(1, 2, 5, 10)).expect("append");
    let before = everything(&log);
    let good = records(3, 1, 5, 10).remove(0);
    let cases: Vec<(Vec<Record>, &str)> = vec![
        (records(4, 1, 5, 10), "OutOfOrder"),
        (vec![good.clone(), records(5, 1, 5, 10).remove(0)], "OutOfOrder"),
        (records(3, 1, 4, 10), "InvalidRecord"),
        (vec![record(3, 5, EntryType::Config, b"")], "InvalidRecord"),
        (records(3, 1, 1 << 63, 10), "InvalidRecord"),
        (vec![good.clone(), records(4, 1, 5, 71).remove(0)], "TooLarge"),
    ];
    for (batch, expected) in cases {
        let error = log.append(&batch).expect_err(expected);
        let name = format!("{error:?}");
        assert!(name.starts_with(expected), "{expected}: {name}");
        assert_eq!(everything(&log), before);
        assert!(!log.is_poisoned());
    }
    // The largest entry a 100-byte segment takes: 100 - 9 = 91 bytes, 70 of them data.
    log.append(&records(3, 1, 5, 70)).expect("append");
    assert_eq!(log.next_index(), 4);
}

/// A log of two segments whose active one holds entries 4, 5 and 6, all synced.
fn log_with_active_entries(dir: &Path) -> (Vec<Record>, PathBuf) {
    let mut log = LogSegments::open(dir, 120).expect("open the log");
    let written = records(1, 6, 2, 12);
    log.append(&written).expect("append");
    log.sync().expect("sync");
    assert_eq!(log.files().active.0, 4, "{:?}", log.files());
    (written, log.files().active.1)
}

/// Reopening keeps exactly entries 1..=5 and appending goes on at 6.
fn assert_recovered_without_the_last_entry(dir: &Path, written: &[Record], what: &str) {
    let mut log = LogSegments::open(dir, 120).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(everything(&log), written[..5].to_vec(), "{what}");
    assert_eq!(log.next_index(), 6, "{what}");
    assert_eq!(log.synced_index(), Some(5), "{what}");
    let again = records(6, 3, 3, 20);
    log.append(&again).expect("append");
    log.sync().expect("sync");
    drop(log);
    let log = LogSegments::open(dir, 120).expect("open the log");
    let mut expected = written[..5].to_vec();
    expected.extend(again);
    assert_eq!(everything(&log), expected, "{what}: after appending again");
}

#[test]
fn a_write_torn_anywhere_in_the_last_entry_loses_only_that_entry() {
    let template = tempfile::tempdir().expect("tempdir");
    let (_, active) = log_with_active_entries(template.path());
    let (last_offset, last_len) = *entry_spans(&active).last().expect("a last entry");
    for cut in last_offset..last_offset + last_len {
        for shortened_file in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (written, active) = log_with_active_entries(dir.path());
            if shortened_file {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&active)
                    .expect("open the file")
                    .set_len(cut as u64)
                    .expect("shorten the file");
            } else {
                zero_from(&active, cut);
            }
            assert_recovered_without_the_last_entry(
                dir.path(),
                &written,
                &format!("cut at {cut}, file shortened: {shortened_file}"),
            );
        }
    }
}

#[test]
fn a_garbled_byte_in_the_last_entry_loses_only_that_entry() {
    let template = tempfile::tempdir().expect("tempdir");
    let (_, active) = log_with_active_entries(template.path());
    let (last_offset, last_len) = *entry_spans(&active).last().expect("a last entry");
    // The term (bytes 5..13 of an entry) is not covered by the format's CRC; the rest is.
    let covered = (last_offset..last_offset + last_len).filter(|at| !(last_offset + 5..last_offset + 13).contains(at));
    for at in covered {
        let dir = tempfile::tempdir().expect("tempdir");
        let (written, active) = log_with_active_entries(dir.path());
        let byte = std::fs::read(&active).expect("read the file")[at];
        write_bytes_at(&active, at, &[byte ^ 0xa5]);
        assert_recovered_without_the_last_entry(dir.path(), &written, &format!("byte {at} garbled"));
    }
}

#[test]
fn a_size_field_written_without_its_entry_loses_only_that_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (written, active) = log_with_active_entries(dir.path());
    let (last_offset, _) = *entry_spans(&active).last().expect("a last entry");
    zero_from(&active, last_offset + 4);
    assert_recovered_without_the_last_entry(dir.path(), &written, "size without data");
}

#[test]
fn a_lost_sector_in_the_last_batch_cuts_the_log_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 16 * 1024).expect("open the log");
    let written = records(1, 30, 1, 200);
    log.append(&written).expect("append");
    let active = log.files().active.1;
    drop(log);
    // Pages of one unsynced write reach the disk in any order: the sector at 2048 never did.
    let spans = entry_spans(&active);
    write_bytes_at(&active, 2048, &[0; 512]);
    let kept = spans.iter().take_while(|(offset, len)| offset + len <= 2048).count();
    let log = LogSegments::open(dir.path(), 16 * 1024).expect("open the log");
    assert_eq!(everything(&log), written[..kept].to_vec());
    let bytes = std::fs::read(&active).expect("read the file");
    assert!(
        bytes[spans[kept].0..].iter().all(|b| *b == 0),
        "the torn write is zeroed"
    );
}

#[test]
fn a_damaged_entry_followed_by_valid_ones_in_the_active_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, active) = log_with_active_entries(dir.path());
    let spans = entry_spans(&active);
    let (middle, _) = spans[1];
    write_bytes_at(&active, middle + 20, b"!");
    let before = std::fs::read(&active).expect("read the file");
    let (offset, reason) = expect_corrupt(LogSegments::open(dir.path(), 120), &active);
    assert_eq!(offset, middle as u64, "{reason}");
    assert_eq!(
        std::fs::read(&active).expect("read the file"),
        before,
        "nothing is cut off"
    );
}

#[test]
fn damage_in_a_closed_segment_is_refused_never_skipped() {
    type Damage = fn(&Path, &[(usize, usize)]);
    let damages: [(&str, Damage); 6] = [
        ("a flipped data bit", |path, spans| {
            let at = spans[1].0 + 18;
            let byte = std::fs::read(path).expect("read the file")[at];
            write_bytes_at(path, at, &[byte ^ 1]);
        }),
        ("a truncated file", |path, spans| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open the file");
            file.set_len((spans[2].0 + 3) as u64).expect("shorten the file");
        }),
        ("a zeroed entry", |path, spans| {
            let (offset, len) = spans[1];
            write_bytes_at(path, offset, &vec![0; len]);
        }),
        ("the last entry zeroed", |path, spans| {
            let (offset, len) = *spans.last().expect("a last entry");
            write_bytes_at(path, offset, &vec![0; len]);
        }),
        ("a term lower than the one before", |path, spans| {
            write_bytes_at(path, spans[1].0 + 5, &[0; 8]);
        }),
        ("an empty file", |path, _| {
            std::fs::write(path, b"").expect("write the file");
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
        log.append(&records(1, 9, 2, 12)).expect("append");
        log.sync().expect("sync");
        let (_, closed) = log.files().closed.last().cloned().expect("a closed segment");
        drop(log);
        damage(&closed, &entry_spans(&closed));
        let (_, reason) = expect_corrupt(LogSegments::open(dir.path(), 120), &closed);
        assert!(!reason.is_empty(), "{what}");
    }
}

#[test]
fn a_missing_middle_segment_is_a_gap_the_log_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 12, 2, 12)).expect("append");
    log.sync().expect("sync");
    let files = log.files();
    assert!(files.closed.len() >= 3, "{files:?}");
    drop(log);
    std::fs::remove_file(&files.closed[1].1).expect("remove a segment");
    let before_gap = &files.closed[2].1;
    let (_, reason) = expect_corrupt(LogSegments::open(dir.path(), 120), before_gap);
    assert!(reason.contains("next segment starts"), "{reason}");
}

#[test]
fn reads_verify_every_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 9, 2, 12)).expect("append");
    let (_, closed) = log.files().closed.last().cloned().expect("a closed segment");
    let spans = entry_spans(&closed);
    write_bytes_at(&closed, spans[1].0 + 20, b"?");
    assert!(matches!(log.read(1, 10), Err(LogError::Corrupt { path, .. }) if path == closed));
    assert_eq!(
        log.read(1, 2).expect("read entries").len(),
        1,
        "the entries before the damage still read"
    );
}

#[test]
fn a_newest_file_closed_by_its_marker_gets_its_successor_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (written, active) = log_with_active_entries(dir.path());
    let (offset, len) = *entry_spans(&active).last().expect("a last entry");
    write_bytes_at(&active, offset + len, &raftlog::encode_end_of_segment());
    let log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(everything(&log), written);
    assert_eq!(log.files().active.0, 7);
    assert_eq!(log.files().closed[0].1, active);
    drop(log);

    // A crash right after creating the successor, before its length and header were durable.
    std::fs::write(segment_path(dir.path(), 7), b"").expect("write the file");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(everything(&log), written);
    assert_eq!(
        std::fs::metadata(segment_path(dir.path(), 7))
            .expect("file metadata")
            .len(),
        120
    );
    log.append(&records(7, 1, 2, 12)).expect("append");
    assert_eq!(log.files().active.0, 7);
}

#[test]
fn temporary_files_are_removed_and_foreign_files_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(LogSegments::open(dir.path(), 120).expect("open the log"));
    let foreign = [
        "00000000000000000001.index",
        "notes.txt",
        "0000000000000000001.log",
        "1.log",
    ];
    for name in foreign {
        std::fs::write(dir.path().join(name), b"not ours").expect("write the file");
    }
    std::fs::write(dir.path().join(".00000000000000000001.log.77.0.tmp"), b"crashed").expect("write the file");
    let log = LogSegments::open(dir.path(), 120).expect("open the log");
    let mut expected: Vec<String> = foreign.iter().map(|name| name.to_string()).collect();
    expected.push("00000000000000000001.log".into());
    expected.sort();
    assert_eq!(file_names(dir.path()), expected);
    assert_eq!(log.next_index(), 1);
}

#[test]
fn a_short_active_file_as_a_backup_copies_it_is_a_whole_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (written, active) = log_with_active_entries(dir.path());
    let log = LogSegments::open(dir.path(), 120).expect("open the log");
    let synced_len = log.active_synced_len();
    drop(log);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .expect("open the file");
    file.set_len(synced_len).expect("set the file length");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(everything(&log), written);
    log.append(&records(7, 2, 3, 12)).expect("append");
    assert_eq!(log.files().active.0, 7, "no room left in the short file: rolled");
    assert_eq!(log.read(7, 9).expect("read entries"), records(7, 2, 3, 12));
}

#[test]
fn truncating_in_the_active_segment_zeroes_its_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (written, active) = log_with_active_entries(dir.path());
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    let spans = entry_spans(&active);
    log.truncate_from(5).expect("truncate");
    assert_eq!(everything(&log), written[..4].to_vec());
    assert_eq!(
        (log.next_index(), log.last_term(), log.synced_index()),
        (5, Some(2), Some(4))
    );
    assert_eq!(log.active_synced_len(), spans[1].0 as u64);
    let bytes = std::fs::read(&active).expect("read the file");
    assert!(bytes[spans[1].0..].iter().all(|b| *b == 0));
    log.append(&records(5, 1, 3, 12)).expect("append");
    drop(log);
    let log = LogSegments::open(dir.path(), 120).expect("open the log");
    let mut expected = written[..4].to_vec();
    expected.extend(records(5, 1, 3, 12));
    assert_eq!(everything(&log), expected);
}

#[test]
fn truncating_in_a_closed_segment_deletes_the_later_ones_and_reopens_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    let written = records(1, 12, 2, 12);
    log.append(&written).expect("append");
    let files = log.files();
    let (oldest_first, oldest) = files.closed.last().cloned().expect("a closed segment");
    assert_eq!(oldest_first, 1);
    log.truncate_from(2).expect("truncate");
    assert_eq!(everything(&log), written[..1].to_vec());
    assert_eq!(log.files().closed, vec![]);
    assert_eq!(log.files().active, (1, oldest.clone()));
    assert_eq!(file_names(dir.path()), vec!["00000000000000000001.log"]);
    let kept_end = entry_spans(&oldest)[0].1 + 5;
    let bytes = std::fs::read(&oldest).expect("read the file");
    assert!(
        bytes[kept_end..].iter().all(|b| *b == 0),
        "entries and the closing marker zeroed"
    );
    log.append(&records(2, 12, 3, 12)).expect("append");
    drop(log);
    let log = LogSegments::open(dir.path(), 120).expect("open the log");
    let mut expected = written[..1].to_vec();
    expected.extend(records(2, 12, 3, 12));
    assert_eq!(everything(&log), expected);
}

#[test]
fn truncating_at_a_segment_start_reopens_the_segment_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    let written = records(1, 12, 2, 12);
    log.append(&written).expect("append");
    let files = log.files();
    let (start, _) = files.closed[0];
    let (_, before) = files.closed[1].clone();
    log.truncate_from(start).expect("truncate");
    assert_eq!(log.next_index(), start);
    assert_eq!(log.files().active.1, before);
    assert_eq!(everything(&log), written[..(start - 1) as usize].to_vec());
    let end: usize = entry_spans(&before).iter().map(|(_, len)| len).sum::<usize>() + 5;
    assert_eq!(
        &std::fs::read(&before).expect("read the file")[end..end + 4],
        &[0; 4],
        "the closing marker is gone"
    );
    log.append(&records(start, 1, 2, 12)).expect("append");
    assert_eq!(
        log.files().active.0,
        start,
        "the full segment rolled again to the same name"
    );
    drop(log);
    assert_eq!(
        everything(&LogSegments::open(dir.path(), 120).expect("open the log")),
        written[..start as usize].to_vec()
    );
}

#[test]
fn truncating_everything_leaves_an_empty_log_that_goes_on_at_that_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 12, 2, 12)).expect("append");
    log.truncate_from(1).expect("truncate");
    assert_eq!(
        (log.first_index(), log.last_index(), log.last_term()),
        (None, None, None)
    );
    assert_eq!(log.next_index(), 1);
    assert_eq!(file_names(dir.path()), vec!["00000000000000000001.log"]);
    drop(log);
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(log.next_index(), 1);
    log.append(&records(1, 1, 1, 12)).expect("append");
    assert_eq!(everything(&log), records(1, 1, 1, 12));
}

#[test]
fn truncating_outside_the_log_does_nothing_or_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 12, 2, 12)).expect("append");
    log.truncate_from(13).expect("truncate");
    log.truncate_from(99).expect("truncate");
    assert_eq!(log.next_index(), 13);
    let removed = log.remove_closed_through(5).expect("remove closed segments");
    assert!(!removed.is_empty());
    let first = log.first_index().expect("a first index");
    assert!(matches!(
        log.truncate_from(first - 1),
        Err(LogError::OutOfRange { first: f, next: 13, .. }) if f == first
    ));
    assert!(!log.is_poisoned());
}

#[test]
fn compaction_removes_whole_closed_segments_and_never_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    let written = records(1, 14, 2, 12);
    log.append(&written).expect("append");
    let files = log.files();
    let oldest_last = files.closed[files.closed.len() - 2].0 - 1;
    assert!(
        log.remove_closed_through(oldest_last - 1)
            .expect("remove closed segments")
            .is_empty(),
        "a segment goes whole or not at all"
    );
    let removed = log.remove_closed_through(oldest_last).expect("remove closed segments");
    assert_eq!(removed, vec![files.closed.last().expect("a last entry").1.clone()]);
    assert_eq!(log.first_index(), Some(oldest_last + 1));

    let removed = log.remove_closed_through(u64::MAX).expect("remove closed segments");
    assert_eq!(removed.len(), files.closed.len() - 1);
    assert!(removed.iter().all(|path| !path.exists()));
    assert_eq!(log.files().closed, vec![]);
    assert_eq!(log.files().active, files.active);
    assert!(files.active.1.exists());
    assert_eq!(log.first_index(), Some(files.active.0));
    assert_eq!(everything(&log), written[(files.active.0 - 1) as usize..].to_vec());
    drop(log);
    let log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(everything(&log), written[(files.active.0 - 1) as usize..].to_vec());
}

#[test]
fn a_reset_starts_an_empty_log_at_the_given_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 12, 2, 12)).expect("append");
    log.reset(500).expect("reset");
    assert_eq!(file_names(dir.path()), vec!["00000000000000000500.log"]);
    assert_eq!(
        (log.first_index(), log.last_index(), log.last_term()),
        (None, None, None)
    );
    assert_eq!(log.next_index(), 500);
    assert!(matches!(
        log.append(&records(1, 1, 1, 5)),
        Err(LogError::OutOfOrder { expected: 500, .. })
    ));
    drop(log);
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    assert_eq!(log.next_index(), 500, "the new start survives a restart");
    log.append(&records(500, 3, 1, 12)).expect("append");
    assert_eq!(everything(&log), records(500, 3, 1, 12));
    log.reset(3).expect("reset");
    assert_eq!(file_names(dir.path()), vec!["00000000000000000003.log"]);
}

#[test]
fn entries_are_durable_only_once_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogSegments::open(dir.path(), 120).expect("open the log");
    log.append(&records(1, 2, 1, 12)).expect("append");
    assert_eq!(log.synced_index(), None);
    assert_eq!(log.active_synced_len(), 5);
    assert_eq!(log.sync().expect("sync"), Some(2));
    assert_eq!(log.active_synced_len(), 5 + 2 * 33);
    log.append(&records(3, 4, 1, 12)).expect("append");
    assert_eq!(log.files().active.0, 4);
    assert_eq!(log.synced_index(), Some(3), "a roll syncs the segment it closes");
    assert_eq!(log.active_synced_len(), 5);

    // The sync runs without the lock; a truncation meanwhile keeps its own word.
    let pending = log.pending_sync().expect("take a pending sync");
    assert!(pending.is_needed());
    assert_eq!(pending.through_index(), Some(6));
    log.append(&records(7, 1, 1, 12)).expect("append");
    let done = pending.run();
    assert_eq!(log.finish_sync(done).expect("finish the sync"), Some(6));
    assert_eq!(log.sync().expect("sync"), Some(7));
    assert!(!log.pending_sync().expect("take a pending sync").is_needed());

    let pending = log.pending_sync().expect("take a pending sync");
    log.truncate_from(5).expect("truncate");
    log.append(&records(5, 2, 2, 12)).expect("append");
    let done = pending.run();
    assert_eq!(
        log.finish_sync(done).expect("finish the sync"),
        Some(4),
        "the truncation synced what it kept"
    );
    assert_eq!(log.sync().expect("sync"), Some(6));
}

#[test]
fn the_log_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<LogSegments>();
    shared::<std::sync::Arc<parking_lot::RwLock<LogSegments>>>();
}

#[derive(Debug, Clone)]
enum Op {
    Append { count: u64, len: usize, new_term: bool },
    Sync,
    TruncateFrom(prop::sample::Index),
    RemoveClosedThrough(prop::sample::Index),
    Reset(u64),
    Reopen,
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..6u64, 1..80usize, any::<bool>()).prop_map(|(count, len, new_term)| Op::Append { count, len, new_term }),
        1 => Just(Op::Sync),
        2 => any::<prop::sample::Index>().prop_map(Op::TruncateFrom),
        1 => any::<prop::sample::Index>().prop_map(Op::RemoveClosedThrough),
        1 => (0..4u64).prop_map(Op::Reset),
        2 => Just(Op::Reopen),
    ]
}

const MODEL_SEGMENT_BYTES: u64 = 150;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_appends_truncations_and_reopens_equal_a_vec(ops in prop::collection::vec(any_op(), 1..25)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogSegments::open(dir.path(), MODEL_SEGMENT_BYTES).expect("open the log");
        let mut model: Vec<Record> = Vec::new();
        let mut next = 1u64;
        let mut term = 1u64;
        for op in ops {
            match op {
                Op::Append { count, len, new_term } => {
                    term += u64::from(new_term);
                    let batch = records(next, count, term, len);
                    log.append(&batch).expect("append");
                    next += count;
                    model.extend(batch);
                }
                Op::Sync => {
                    prop_assert_eq!(log.sync().expect("sync"), model.last().map(|r| r.index));
                }
                Op::TruncateFrom(at) => {
                    let first = model.first().map_or(next, |r| r.index);
                    let index = first + at.index((next - first + 1) as usize) as u64;
                    log.truncate_from(index).expect("truncate");
                    model.retain(|r| r.index < index);
                    next = next.min(index);
                }
                Op::RemoveClosedThrough(at) => {
                    let first = model.first().map_or(next, |r| r.index);
                    let index = first + at.index((next - first + 1) as usize) as u64;
                    let active = log.files().active;
                    let removed = log.remove_closed_through(index).expect("remove closed segments");
                    prop_assert!(!removed.contains(&active.1));
                    prop_assert!(active.1.exists());
                    let new_first = log.first_index().unwrap_or(next);
                    prop_assert!(new_first == first || new_first <= index + 1, "{} removed through {}", new_first, index);
                    model.retain(|r| r.index >= new_first);
                }
                Op::Reset(gap) => {
                    next += gap;
                    log.reset(next).expect("reset");
                    model.clear();
                }
                Op::Reopen => {
                    drop(log);
                    log = LogSegments::open(dir.path(), MODEL_SEGMENT_BYTES).expect("open the log");
                }
            }
            prop_assert_eq!(everything(&log), model.clone());
            prop_assert_eq!(log.next_index(), next);
            prop_assert_eq!(log.first_index(), model.first().map(|r| r.index));
            prop_assert_eq!(log.last_index(), model.last().map(|r| r.index));
            prop_assert_eq!(log.last_term(), model.last().map(|r| r.term));
            prop_assert!(log.synced_index() <= log.last_index());
        }
    }
}
