//! The report built from a fixed results file (`tests/data/results.jsonl`): the tables, the
//! ratios and targets, the median of repeated runs, and the section written between markers.

use std::path::Path;
use std::process::{Command, Stdio};

use myelin_bench::load::record;
use myelin_bench::load::report::{END_MARKER, START_MARKER, render};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/results.jsonl")
}

#[test]
fn renders_tables_with_ratios_and_targets() {
    let records = record::read_all(&fixture()).expect("fixture parses");
    let text = render(&records, "Machine: a test.", Some("bench/append-scaling.png"));

    assert!(text.starts_with("## Side by side"), "{text}");
    assert!(text.contains("Machine: a test."));
    assert!(text.contains("![Durable append throughput against clients](bench/append-scaling.png)"));
    // Summary rows: systems side by side, then Myelin's ratios. 64 × 1 was run three times
    // (10, 60,000 and 99,999 events/s): the median run is shown.
    assert!(
        text.contains("| 64 | 60,000 | 20,000 | 8,000 | 250,000 | 3.00× | 7.50× | 15.00× | 0.24× |"),
        "{text}"
    );
    assert!(
        text.contains("| 64 | 800,000 | 300,000 | 100,000 | 1,000,000 | 2.67× | 8.00× | 2.00× | 0.80× |"),
        "{text}"
    );
    // Detail rows: latency, server CPU (also per transaction: 50% of a core at 3,000 tx/s)
    // and memory; the disk has no server.
    assert!(
        text.contains("| 1 | Myelin | 3,000 | 3,000 | 1.00 / 2.00 / 3.00 | 50% | 167 µs | 64 MiB | 20% |"),
        "{text}"
    );
    assert!(
        text.contains("| 1 | disk limit | 4,000 | 4,000 | 1.00 / 2.00 / 3.00 | — | — | — | 20% |"),
        "{text}"
    );
    // Server CPU per transaction, relative: the fixture's servers all run at 50%, so these
    // are the throughput ratios inverted.
    assert!(
        text.contains(
            "| (not a target) server CPU per transaction: UmaDB ÷ Myelin, PostgreSQL ÷ Myelin | 64 clients × 1 event(s), 200 B | 3.00× / 7.50× | |"
        ),
        "{text}"
    );
    // Targets.
    assert!(
        text.contains("| append ≥ 2× UmaDB | 64 clients × 1 event(s), 200 B | 3.00× | met |"),
        "{text}"
    );
    assert!(
        text.contains(
            "| 100-event transactions ≥ 80% of the disk limit (one transaction per fdatasync) | 1 client, 200 B | 38% | **missed** |"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "| 100-event transactions ≥ 80% of the disk limit (one transaction per fdatasync) | 64 clients, 200 B | 200% | met |"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "| … strictest reading (one transaction of every client per fdatasync) | 64 clients, 200 B | 80% | met |"
        ),
        "{text}"
    );
    assert!(
        text.contains("| tracking read ≥ 1M events/s | Myelin | 2,500,000 events/s | met |"),
        "{text}"
    );
    assert!(
        text.contains("| tracking read ahead of UmaDB | Myelin ÷ UmaDB | 2.08× | met |"),
        "{text}"
    );
    // The read workloads.
    assert!(
        text.contains("| Myelin | 25,000,000 | 200 B | 2,500,000 | 0.40 / 0.90 / 1.50 |"),
        "{text}"
    );
    assert!(
        text.contains("| UmaDB | 16 | 1,000,000 | 100,000 | 2,400 | 24,000 | 0.50 / 2.00 / 4.00 | 50% | 208 µs |"),
        "{text}"
    );
    assert!(text.contains("| PostgreSQL | 8 | 8 | 1 | 5,000 |"), "{text}");
    assert!(text.contains("### Loading the stores"));
}

#[test]
fn the_command_writes_between_markers_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = dir.path().join("BENCHMARKS.md");
    std::fs::write(&doc, "# Benchmarks\n\nEarlier figures stay.\n").expect("write");
    let preamble = dir.path().join("preamble.md");
    std::fs::write(&preamble, "Run on a test machine.\n").expect("write");
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_myelin-load"))
            .args(["report", "--results"])
            .arg(fixture())
            .arg("--preamble")
            .arg(&preamble)
            .arg("--into")
            .arg(&doc)
            .stdin(Stdio::null())
            .output()
            .expect("myelin-load runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let text = std::fs::read_to_string(&doc).expect("read");
    assert!(text.starts_with("# Benchmarks\n\nEarlier figures stay.\n\n<!-- bench-compare:start -->\n"));
    assert_eq!(text.matches(START_MARKER).count(), 1, "run twice, one section");
    assert!(text.trim_end().ends_with(END_MARKER));
    assert!(text.contains("Run on a test machine."));
}

#[test]
fn a_bad_results_line_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let results = dir.path().join("r.jsonl");
    std::fs::write(&results, "\n{\"workload\": 1}\n").expect("write");
    let error = record::read_all(&results).expect_err("must fail").to_string();
    assert!(error.contains("line 2"), "{error}");
}
