//! This crate is the one place that renames a file into place or fsyncs one: a test fails if
//! any other crate's production code calls `std::fs::rename` or `File::sync_all` itself, so a
//! new crash-safe write cannot quietly bring back a private copy of the sequence without the
//! failpoints. (`sync_data`, the store's per-batch `fdatasync` of its active segment, is not a
//! crash-safe file replacement and stays the store's.)
//!
//! Exempt: the disk probe of the benchmark crate, whose job is to time a raw fsync.

use myelin_testkit::tidy::production_sources;

const FORBIDDEN: &[&str] = &["fs::rename(", ".sync_all()"];
const EXEMPT: &[&str] = &["crates/fsutil/", "crates/bench/src/probe.rs"];

#[test]
fn only_fsutil_renames_or_fsyncs_files_in_production_code() {
    let sources = production_sources(&[]);
    assert!(sources.len() > 50, "the walk found too few files: {}", sources.len());
    let mut offenders = Vec::new();
    for source in &sources {
        if EXEMPT.iter().any(|exempt| source.path.starts_with(exempt)) {
            continue;
        }
        for (number, line) in source.text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if FORBIDDEN.iter().any(|call| code.contains(call)) {
                offenders.push(format!("{}:{}: {}", source.path, number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "crash-safe file operations outside myelin-fsutil (use its AtomicFile, write_atomically, rename, sync_all):\n{}",
        offenders.join("\n")
    );
}
