//! The load generator against the real `myelin` binary, at tiny sizes (about 15 s): every
//! workload runs out of process over the Axon gRPC API and prints sane result lines. Figures
//! are not checked — timings belong in benchmarks — only that the runs happen and report.
//!
//! Which `myelin` binary: `$MYELIN_BIN` if set, else the one next to this crate's
//! `myelin-load` in the same target directory. `cargo nextest run --workspace` (as
//! `scripts/test-all` runs it) builds that one, because the CLI crate has integration tests.
//! Run alone (`cargo nextest run -p myelin-bench`), cargo does not build other packages'
//! binaries: the test then builds it with `cargo build -p myelin` when it is missing (an
//! existing one may be older than the sources; `cargo build -p myelin` first to be sure).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use myelin_bench::load::record::Record;
use myelin_testkit::binary::{Binary, Node};

const LOAD: &str = env!("CARGO_BIN_EXE_myelin-load");

fn myelin_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MYELIN_BIN") {
        return PathBuf::from(path);
    }
    let sibling = Path::new(LOAD).with_file_name("myelin");
    if !sibling.exists() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "myelin", "--bin", "myelin"])
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p myelin failed");
    }
    assert!(sibling.exists(), "no myelin binary at {}", sibling.display());
    sibling
}

/// `myelin serve` on 127.0.0.1 with ports chosen by the OS; killed when dropped. Small
/// segments: the run writes a few MB, not the default 256 MiB files.
fn start_server() -> Node {
    Binary::new(myelin_binary()).node().segment_size("4MB").start()
}

fn run(server: &Node, args: &[&str]) -> Vec<Record> {
    let output: Output = Command::new(LOAD)
        .args(&args[..1])
        .args([
            "--system",
            "myelin",
            "--target",
            &server.grpc_address().to_string(),
            "--server-pid",
            &server.pid().to_string(),
        ])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("myelin-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "myelin-load {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let records: Vec<Record> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a record ({e}): {line}")))
        .collect();
    assert!(!records.is_empty(), "no result from {args:?}");
    for record in &records {
        assert_sane(record);
    }
    records
}

fn assert_sane(r: &Record) {
    assert_eq!(r.system, "myelin");
    assert!(r.events > 0 && r.operations > 0, "{r:?}");
    assert!(r.events_per_sec > 0.0 && r.seconds > 0.0, "{r:?}");
    assert!(!r.latency.is_empty(), "{r:?}");
    for (op, l) in &r.latency {
        if l.count == 0 {
            continue;
        }
        assert!(
            0.0 < l.p50_ms && l.p50_ms <= l.p99_ms && l.p99_ms <= l.p999_ms && l.p999_ms <= l.max_ms,
            "{op}: {l:?}"
        );
    }
    let cpu = r.server_cpu_percent.expect("server CPU measured");
    assert!(cpu.is_finite() && cpu >= 0.0, "{r:?}");
    assert!(r.server_peak_memory_bytes.is_some_and(|m| m > 0), "{r:?}");
    assert_eq!(r.server_processes, Some(1));
    assert!(r.client_peak_rss_bytes > 0);
}

#[test]
fn every_workload_runs_against_the_real_server() {
    let server = start_server();
    let window = ["--seconds", "1.5", "--warmup-seconds", "0.3"];

    // The store is empty: the tracking read fills it first (a load record), then reads it all.
    let tracked = run(&server, &["track", "--events", "3000", "--load-clients", "2"]);
    assert_eq!(tracked.len(), 2, "a load record, then the tracking read: {tracked:?}");
    assert_eq!((tracked[0].workload.as_str(), tracked[0].events), ("load", 3000));
    assert_eq!((tracked[1].workload.as_str(), tracked[1].events), ("track", 3000));

    for events_per_tx in ["1", "100"] {
        let mut args = vec!["append", "--clients", "3", "--events-per-tx", events_per_tx];
        args.extend(window);
        let record = &run(&server, &args)[0];
        assert_eq!((record.workload.as_str(), record.clients), ("append", 3));
        assert_eq!(record.events, record.operations * u64::from(record.events_per_tx));
    }

    let loaded = run(
        &server,
        &[
            "load",
            "--events",
            "5000",
            "--aggregates",
            "500",
            "--clients",
            "4",
            "--events-per-tx",
            "100",
        ],
    );
    assert_eq!((loaded[0].workload.as_str(), loaded[0].events), ("load", 5000));

    let mut args = vec![
        "aggregates",
        "--clients",
        "2",
        "--aggregates",
        "500",
        "--events-per-aggregate",
        "10",
    ];
    args.extend(window);
    let reads = &run(&server, &args)[0];
    assert_eq!(reads.events, reads.operations * 10);

    let mut args = vec!["mixed", "--writers", "1", "--readers", "1", "--aggregates", "500"];
    args.extend(window);
    let mixed = &run(&server, &args)[0];
    for key in ["append_events_per_sec", "reads_per_sec", "tail_events_per_sec"] {
        assert!(mixed.extra.get(key).is_some_and(|v| *v > 0.0), "{key}: {mixed:?}");
    }
}

#[test]
fn a_server_that_is_not_there_is_named() {
    let output = Command::new(LOAD)
        .args([
            "append",
            "--system",
            "myelin",
            "--target",
            "127.0.0.1:1",
            "--seconds",
            "1",
        ])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("myelin-load runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot connect to myelin at http://127.0.0.1:1"),
        "{stderr}"
    );
}
